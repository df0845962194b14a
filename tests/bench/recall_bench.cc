// recall_bench: one recall of N leases (N = 10, 100, 1000, 10000) over 10
// simulated nodes, on a real kube-apiserver, the daxlease-operator binary as
// a subprocess, and simulated agents that ack every recalled lease as fast as
// they can, on each of two paths:
//   status:  the agents watch their leases and ack in DaxLease status
//            (releasedRecallID; --agent-workers patches in flight);
//   channel: the operator runs the recall channel (--channel-address) and 10
//            agents (lib/channel/sim_agent.h, pod-bound service-account
//            tokens) are asked in one message per node and ack in one report.
// Each recall starts once every lease object shows Granted (holders that
// use their grants). Set-up (not measured) creates the leases 16 at a time
// with the lease finalizer already on them, and polls the list of every
// lease at most every 0.2 ms x N, so the API server's time goes to the
// creates and the operator's grants; it prints its own times. Measures the time
// from DaxRecall creation to status.phase Complete (as a watch delivers it),
// the API writes of the whole recall (etcd revisions from the create until the
// volume is Ready at the next epoch; events included), the operator's peak
// RSS (VmHWM), the load average after each size, on the channel path the
// time from a silent holder's deadline to its lease stored Revoked and
// fenced (the owner's simulated agent confirms on the channel), and first,
// before the operator starts, the API server's own write rate with a
// trivial client.
//
//   recall_bench [--kubeconfig PATH] [--sizes 10,100,1000] [--runs 5]
//                [--paths status,channel] [--write-concurrency 16]
//                [--agent-workers 16] [--operator PATH]
//
// Without --kubeconfig (or $DAXLEASE_KUBECONFIG) it starts a private control
// plane with tests/k8s/control-plane.sh and stops it at the end.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "lib/api/json.h"
#include "lib/api/resources.h"
#include "lib/channel/leader_record.h"
#include "lib/channel/sim_agent.h"
#include "operator/reconciler.h"
#include "tests/k8s/k8s_testing.h"

namespace daxlease::op {
namespace {

using k8s::Json;

void Die(const std::string& msg) {
  std::fprintf(stderr, "recall_bench: %s\n", msg.c_str());
  std::exit(1);
}

// Runs fn(i) for i in [0, n) on `threads` threads.
void ParallelFor(int n, int threads, const std::function<void(int)>& fn) {
  std::atomic<int> next{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&] {
      for (int i = next++; i < n; i = next++) fn(i);
    });
  }
  for (auto& t : ts) t.join();
}

// The simulated agents: watch leases, ack each Recalling one of `volume`.
class Agent {
 public:
  Agent(k8s::KubeClient& c, std::string volume, std::string from_rv,
        int workers)
      : c_(c), volume_(std::move(volume)) {
    watcher_ = std::thread([this, from_rv] { Watch(from_rv); });
    for (int i = 0; i < workers; ++i) workers_.emplace_back([this] { Ack(); });
  }
  ~Agent() {
    cancel_.Cancel();
    {
      absl::MutexLock l(&mu_);
      stop_ = true;
    }
    watcher_.join();
    for (auto& t : workers_) t.join();
  }
  int acked() const { return acked_.load(); }

 private:
  void Watch(std::string rv) {
    while (!cancel_.cancelled()) {
      k8s::WatchOptions o;
      o.resource_version = rv;
      o.timeout_seconds = 60;
      (void)c_.Watch(
          api::DaxLeaseResource(), "", o,
          [&](const k8s::WatchEvent& ev) {
            rv = k8s::ResourceVersionOf(ev.object);
            if (ev.type == k8s::WatchEvent::Type::kBookmark) return true;
            Json spec = ev.object.value("spec", Json::object());
            Json st = ev.object.value("status", Json::object());
            if (!spec.is_object() || !st.is_object() ||
                spec.value("volume", "") != volume_ ||
                st.value("state", "") != "Recalling") {
              return true;
            }
            std::string id = st.value("recallID", "");
            std::string name = k8s::NameOf(ev.object);
            absl::MutexLock l(&mu_);
            if (seen_.insert(name).second) queue_.push_back({name, id});
            return true;
          },
          &cancel_);
    }
  }
  void Ack() {
    for (;;) {
      std::pair<std::string, std::string> item;
      {
        absl::MutexLock l(&mu_);
        mu_.Await(absl::Condition(
            +[](Agent* a) ABSL_EXCLUSIVE_LOCKS_REQUIRED(a->mu_) {
              return a->stop_ || !a->queue_.empty();
            },
            this));
        if (queue_.empty()) return;
        item = queue_.front();
        queue_.pop_front();
      }
      auto st = c_.Patch(
          api::DaxLeaseResource(), "", item.first, k8s::PatchType::kMerge,
          {{"status", {{"releasedRecallID", item.second}}}}, "status");
      if (st.ok()) ++acked_;
    }
  }

  k8s::KubeClient& c_;
  const std::string volume_;
  k8s::WatchCanceller cancel_;
  std::thread watcher_;
  std::vector<std::thread> workers_;
  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<std::pair<std::string, std::string>> queue_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> seen_ ABSL_GUARDED_BY(mu_);
  std::atomic<int> acked_{0};
};

std::optional<Json> Get(k8s::KubeClient& c, const k8s::Resource& r,
                        const std::string& name) {
  auto j = c.Get(r, "", name);
  if (!j.ok()) return std::nullopt;
  return *j;
}

constexpr int kNodes = 10;

// How often a check that lists every lease polls (0.2 ms per lease, 20 ms
// to 2 s): each poll at N = 10000 reads 10000 objects, which at WaitFor's
// 20 ms kept the API server listing instead of storing the operator's
// writes (set-up took over 6 minutes).
absl::Duration ListPoll(int n) {
  return std::clamp(absl::Microseconds(200) * n, absl::Milliseconds(20),
                    absl::Seconds(2));
}

bool WaitForEvery(const std::function<bool()>& pred, absl::Duration timeout,
                  absl::Duration every) {
  const absl::Time end = absl::Now() + timeout;
  while (absl::Now() < end) {
    if (pred()) return true;
    absl::SleepFor(every);
  }
  return pred();
}

// Whether all n lease objects of `vol` show status.state `state`.
bool AllLeasesShow(k8s::KubeClient& c, const std::string& vol, int n,
                   const std::string& state) {
  k8s::ListOptions o;
  o.limit = 1000;
  auto l = k8s::ListAll(c, api::DaxLeaseResource(), "", o);
  if (!l.ok()) return false;
  int shown = 0;
  for (const Json& obj : l->items) {
    if (api::OwningVolume(obj) != vol) continue;
    if (!obj.contains("status") || obj["status"].value("state", "") != state) {
      return false;
    }
    ++shown;
  }
  return shown == n;
}

// The store's revision now: every write to the API server moves it by one.
int64_t Revision(k8s::KubeClient& c) {
  k8s::ListOptions one;
  one.limit = 1;
  auto list = c.List(api::DaxVolumeResource(), "", one);
  if (!list.ok()) Die(list.status().ToString());
  int64_t rv = 0;
  if (!absl::SimpleAtoi(list->resource_version, &rv)) Die("resourceVersion");
  return rv;
}

struct Run {
  double ms = 0;
  int64_t writes = 0;        // until Ready at the next epoch
  int64_t writes_total = 0;  // until every lease object shows Released
  double display_ms = 0;     // recall created -> every lease shows Released
  absl::Time created_at;     // when the DaxRecall was created (to line up
                             // with the operator's log)
};

// One measured recall of n leases; `status_agent`: the agents ack in lease
// status (else the channel's agents, running already, ack).
Run RunOnce(k8s::KubeClient& c, int n, const std::string& tag,
            int agent_workers, bool status_agent) {
  std::string vol = absl::StrCat("bench-", tag);
  api::DaxVolume v;
  v.metadata.name = vol;
  v.spec.size_bytes = 1 << 30;
  v.spec.owner_node = "owner";
  v.spec.share = true;
  if (!c.Create(api::DaxVolumeResource(), api::ToJson(v)).ok())
    Die("create volume");
  // Set-up, not measured: as fast as the API server creates (16 in flight,
  // the client's pool of idle connections). Each lease is created with the
  // operator's lease finalizer already on it, so its grant is one status
  // write instead of a finalizer write and a status write (the recall is
  // the same either way: a granted lease carries the finalizer).
  const absl::Time setup0 = absl::Now();
  ParallelFor(n, 16, [&](int i) {
    api::DaxLease l;
    l.metadata.name = absl::StrCat(vol, "-l", i);
    l.metadata.finalizers = {api::kLeaseFinalizer};
    l.spec = {vol, absl::StrCat("node-", i % kNodes), "",
              api::Access::kReadWrite};
    k8s::Json obj = api::ToJson(l);
    obj.erase("status");
    auto st = c.Create(api::DaxLeaseResource(), obj);
    if (!st.ok()) Die(st.status().ToString());
  });
  const absl::Duration created = absl::Now() - setup0;
  const absl::Duration setup_timeout =
      std::max(absl::Seconds(120), absl::Milliseconds(60) * n);
  if (!k8s::testing::WaitFor(
          [&] {
            auto j = Get(c, api::DaxVolumeResource(), vol);
            if (!j || !(*j)["status"].is_object()) return false;
            return (*j)["status"].value("holders", 0) == n;
          },
          setup_timeout)) {
    Die(absl::StrCat("leases of ", vol, " not granted"));
  }
  const absl::Duration granted = absl::Now() - setup0;
  // A recall of holders that use their grants: a holder's agent learns of
  // its grant from its lease object, which on the channel path is written
  // after the volume (operator/lease_display.h), so the recall starts once
  // every lease object shows Granted.
  if (!WaitForEvery([&] { return AllLeasesShow(c, vol, n, "Granted"); },
                    setup_timeout, ListPoll(n))) {
    Die(absl::StrCat("leases of ", vol, " never showed Granted"));
  }
  std::fprintf(stderr,
               "set-up of %d leases: created in %.1f s (%.0f/s), volume "
               "shows them granted at %.1f s, every lease object at %.1f s\n",
               n, absl::ToDoubleSeconds(created),
               n / std::max(1e-3, absl::ToDoubleSeconds(created)),
               absl::ToDoubleSeconds(granted),
               absl::ToDoubleSeconds(absl::Now() - setup0));
  k8s::ListOptions one;
  one.limit = 1;
  auto list = c.List(api::DaxLeaseResource(), "", one);
  if (!list.ok()) Die(list.status().ToString());
  Run run;
  {
    std::optional<Agent> agent;
    if (status_agent) {
      agent.emplace(c, vol, list->resource_version, agent_workers);
    }
    api::DaxRecall r;
    r.metadata.name = vol;
    // As every creator makes it: with its finalizer (one write less).
    r.metadata.finalizers = {api::kRecallFinalizer};
    r.spec = {vol, api::RecallReason::kManual, 60};
    const int64_t rev0 = Revision(c);
    absl::Time t0 = absl::Now();
    auto created = c.Create(api::DaxRecallResource(), api::ToJson(r));
    if (!created.ok()) Die("create recall");
    // Watched (not polled, which would add its own load and round the
    // figure up to the poll interval): the time the watch delivers the
    // recall Complete.
    bool done = false;
    std::string rv = k8s::ResourceVersionOf(*created);
    absl::Time t_done;
    while (!done && absl::Now() - t0 < absl::Seconds(120)) {
      k8s::WatchOptions o;
      o.resource_version = rv;
      o.field_selector = "metadata.name=" + vol;
      o.timeout_seconds = 120;
      (void)c.Watch(api::DaxRecallResource(), "", o,
                    [&](const k8s::WatchEvent& ev) {
                      rv = k8s::ResourceVersionOf(ev.object);
                      if (ev.type == k8s::WatchEvent::Type::kBookmark) {
                        return true;
                      }
                      auto st = ev.object.find("status");
                      if (st != ev.object.end() && st->is_object() &&
                          st->value("phase", "") == "Complete") {
                        t_done = absl::Now();
                        done = true;
                        return false;
                      }
                      return true;
                    });
    }
    run.ms = absl::ToDoubleMilliseconds(t_done - t0);
    run.created_at = t0;
    if (!done) Die(absl::StrCat("recall ", vol, " did not complete"));
    if (!k8s::testing::WaitFor(
            [&] {
              auto j = Get(c, api::DaxVolumeResource(), vol);
              return j && (*j)["status"].is_object() &&
                     (*j)["status"].value("epoch", 0) == 2 &&
                     (*j)["status"].value("phase", "") == "Ready";
            },
            absl::Seconds(60))) {
      Die(absl::StrCat("volume ", vol, " not Ready at epoch 2"));
    }
    // Less the create of the recall itself and this read's own nothing.
    run.writes = Revision(c) - rev0 - 1;
    // On the channel path the lease objects show the outcome after the
    // volume moved on (operator/lease_display.h): wait for all of them.
    if (!WaitForEvery([&] { return AllLeasesShow(c, vol, n, "Released"); },
                      setup_timeout, ListPoll(n))) {
      Die(absl::StrCat("leases of ", vol, " never showed Released"));
    }
    run.display_ms = absl::ToDoubleMilliseconds(absl::Now() - t0);
    run.writes_total = Revision(c) - rev0 - 1;
  }
  // Clean up so later runs list only their own objects.
  ParallelFor(n, 16, [&](int i) {
    std::string name = absl::StrCat(vol, "-l", i);
    (void)c.Patch(api::DaxLeaseResource(), "", name, k8s::PatchType::kMerge,
                  {{"metadata", {{"finalizers", nullptr}}}});
    (void)c.Delete(api::DaxLeaseResource(), "", name);
  });
  (void)c.Delete(api::DaxRecallResource(), "", vol);
  (void)c.Delete(api::DaxVolumeResource(), "", vol);
  return run;
}

// A silent holder on the channel path: one lease on a node no agent speaks
// for, a recall with a 1 s grace; the time from the recall's deadline to the
// lease stored Revoked and fenced (the owner's agent confirmed the fence on
// the channel). Milliseconds, polled every 20 ms.
double DeadlineToFencedMs(k8s::KubeClient& c, const std::string& tag) {
  const std::string vol = absl::StrCat("silent-", tag);
  api::DaxVolume v;
  v.metadata.name = vol;
  v.spec.size_bytes = 1 << 30;
  v.spec.owner_node = "owner";
  v.spec.share = true;
  if (!c.Create(api::DaxVolumeResource(), api::ToJson(v)).ok())
    Die("create volume");
  api::DaxLease l;
  l.metadata.name = vol + "-l";
  l.spec = {vol, "node-silent", "", api::Access::kReadWrite};
  if (!c.Create(api::DaxLeaseResource(), api::ToJson(l)).ok())
    Die("create lease");
  auto lease = [&]() -> std::optional<api::DaxLease> {
    auto j = Get(c, api::DaxLeaseResource(), l.metadata.name);
    if (!j) return std::nullopt;
    auto t = api::FromJson<api::DaxLease>(*j);
    if (!t.ok()) return std::nullopt;
    return *t;
  };
  if (!k8s::testing::WaitFor(
          [&] {
            auto x = lease();
            return x && x->status.state == api::LeaseState::kGranted;
          },
          absl::Seconds(60))) {
    Die("silent lease not granted");
  }
  api::DaxRecall r;
  r.metadata.name = vol;
  r.metadata.finalizers = {api::kRecallFinalizer};
  r.spec = {vol, api::RecallReason::kManual, 1};
  if (!c.Create(api::DaxRecallResource(), api::ToJson(r)).ok())
    Die("create recall");
  std::optional<absl::Time> deadline;
  absl::Time fenced;
  // Fenced as stored: on the recall's record (fencedLeases), or on the
  // lease object, whichever is first (the lease object may lag).
  if (!k8s::testing::WaitFor(
          [&] {
            auto j = Get(c, api::DaxRecallResource(), vol);
            if (j) {
              auto rc = api::FromJson<api::DaxRecall>(*j);
              if (rc.ok() && rc->status.deadline.has_value()) {
                deadline = rc->status.deadline;
              }
              if (rc.ok() && std::count(rc->status.fenced_leases.begin(),
                                        rc->status.fenced_leases.end(),
                                        l.metadata.name) > 0) {
                fenced = absl::Now();
                return deadline.has_value();
              }
            }
            auto x = lease();
            if (!x) return false;
            if (x->status.state == api::LeaseState::kRevoked &&
                !x->status.fence_required) {
              fenced = absl::Now();
              return deadline.has_value();
            }
            return false;
          },
          absl::Seconds(60)) ||
      !deadline.has_value()) {
    Die("silent holder not fenced");
  }
  (void)c.Patch(api::DaxLeaseResource(), "", l.metadata.name,
                k8s::PatchType::kMerge,
                {{"metadata", {{"finalizers", nullptr}}}});
  (void)c.Delete(api::DaxLeaseResource(), "", l.metadata.name);
  (void)c.Delete(api::DaxRecallResource(), "", vol);
  (void)c.Delete(api::DaxVolumeResource(), "", vol);
  return absl::ToDoubleMilliseconds(fenced - *deadline);
}

// The API server's own write rate with a trivial client (no operator work):
// creates `objs` DaxLeases of an unused volume, then `writes` status merge
// patches spread over them, `inflight` at a time. This bounds any recall:
// one costs about 3N writes (N leases -> Recalling, N agent acks, N ->
// Released).
struct WriteRate {
  double creates_per_s = 0;
  double patches_per_s = 0;
};
WriteRate MeasureWriteRate(k8s::KubeClient& c, const std::string& tag, int objs,
                           int writes, int inflight) {
  const std::string vol = absl::StrCat("rate-", tag);
  auto name = [&](int i) { return absl::StrCat(vol, "-l", i); };
  WriteRate r;
  absl::Time t0 = absl::Now();
  ParallelFor(objs, inflight, [&](int i) {
    api::DaxLease l;
    l.metadata.name = name(i);
    l.spec = {vol, "node", "", api::Access::kReadWrite};
    auto st = c.Create(api::DaxLeaseResource(), api::ToJson(l));
    if (!st.ok()) Die(st.status().ToString());
  });
  r.creates_per_s = objs / absl::ToDoubleSeconds(absl::Now() - t0);
  t0 = absl::Now();
  ParallelFor(writes, inflight, [&](int i) {
    auto st = c.Patch(
        api::DaxLeaseResource(), "", name(i % objs), k8s::PatchType::kMerge,
        {{"status", {{"releasedRecallID", absl::StrCat(i)}}}}, "status");
    if (!st.ok()) Die(st.status().ToString());
  });
  r.patches_per_s = writes / absl::ToDoubleSeconds(absl::Now() - t0);
  ParallelFor(objs, inflight, [&](int i) {
    (void)c.Delete(api::DaxLeaseResource(), "", name(i));
  });
  return r;
}

double LoadAverage1() {
  double l = -1;
  if (FILE* f = std::fopen("/proc/loadavg", "r")) {
    if (std::fscanf(f, "%lf", &l) != 1) l = -1;
    std::fclose(f);
  }
  return l;
}

int Main(int argc, char** argv) {
  std::string kubeconfig;
  std::vector<int> sizes = {10, 100, 1000};
  int runs = 5;
  // At most the client's pool of idle connections (16), so no write opens a
  // new TLS connection.
  int write_concurrency = 16;
  int agent_workers = 16;
  // Another build's operator (a before/after comparison).
  std::string operator_bin = DAXLEASE_OPERATOR_BIN;
  std::vector<std::string> paths = {"status", "channel"};
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto val = [&](const char* f) -> std::optional<std::string> {
      std::string flag = f;
      if (a.rfind(flag + "=", 0) == 0) return a.substr(flag.size() + 1);
      if (a == flag && i + 1 < argc) return std::string(argv[++i]);
      return std::nullopt;
    };
    if (auto v = val("--kubeconfig")) {
      kubeconfig = *v;
    } else if (auto v = val("--sizes")) {
      sizes.clear();
      for (absl::string_view s : absl::StrSplit(*v, ',')) {
        int n;
        if (!absl::SimpleAtoi(s, &n) || n < 1) Die("bad --sizes");
        sizes.push_back(n);
      }
    } else if (auto v = val("--write-concurrency")) {
      if (!absl::SimpleAtoi(*v, &write_concurrency) || write_concurrency < 1) {
        Die("bad --write-concurrency");
      }
    } else if (auto v = val("--agent-workers")) {
      if (!absl::SimpleAtoi(*v, &agent_workers) || agent_workers < 1) {
        Die("bad --agent-workers");
      }
    } else if (auto v = val("--paths")) {
      paths = absl::StrSplit(*v, ',');
      for (const std::string& p : paths) {
        if (p != "status" && p != "channel") Die("bad --paths");
      }
    } else if (auto v = val("--operator")) {
      operator_bin = *v;
    } else if (auto v = val("--runs")) {
      if (!absl::SimpleAtoi(*v, &runs) || runs < 1) Die("bad --runs");
    } else {
      Die(absl::StrCat("unknown argument ", a));
    }
  }
  std::string cp_dir;
  if (kubeconfig.empty()) kubeconfig = k8s::testing::KubeconfigPath();
  if (kubeconfig.empty()) {
    cp_dir = absl::StrCat("/tmp/daxlease-recall-bench-", getpid());
    std::string cmd = absl::StrCat(
        DAXLEASE_SOURCE_DIR, "/tests/k8s/control-plane.sh start ", cp_dir);
    std::fprintf(stderr, "starting a control plane: %s\n", cmd.c_str());
    if (std::system(cmd.c_str()) != 0) Die("control plane did not start");
    kubeconfig = cp_dir + "/kubeconfig";
  }
  absl::Status crds = k8s::testing::InstallDaxleaseCrds(kubeconfig);
  if (!crds.ok()) Die(crds.ToString());
  auto client = k8s::testing::NewClient(kubeconfig);
  if (!client.ok()) Die(client.status().ToString());

  // Before the operator runs, so only the bench writes.
  const double load_rate = LoadAverage1();
  WriteRate rate =
      MeasureWriteRate(**client, absl::StrCat(getpid()), 200, 1000, 16);

  struct PathResult {
    std::string path;
    std::vector<std::vector<Run>> runs;  // per size
    std::vector<double> loads;
    int64_t rss_kib = -1;
    std::vector<double> fenced_ms;  // channel: deadline -> fenced
  };
  std::vector<PathResult> results;
  const std::string tag0 = absl::StrCat(getpid());
  for (const std::string& path : paths) {
    const bool channel = path == "channel";
    PathResult pr;
    pr.path = path;
    std::vector<std::string> argv = {
        operator_bin, "--kubeconfig=" + kubeconfig, "--leader-elect=false",
        absl::StrCat("--write-concurrency=", write_concurrency)};
    channel::RecordLocation record;
    std::string ns;
    if (channel) {
      auto made = k8s::testing::CreateTestNamespace(**client, "recall-bench-");
      if (!made.ok()) Die(made.status().ToString());
      ns = *made;
      record = {ns, "channel"};
      argv.push_back("--channel-address=127.0.0.1:0");
      argv.push_back(absl::StrCat("--channel-record=", ns, "/channel"));
      argv.push_back(
          absl::StrCat("--channel-agent-service-account=", ns, ":agent"));
    }
    k8s::testing::ChildProcess op(argv, "recall-bench-operator-" + path);
    std::vector<std::unique_ptr<channel::SimAgent>> agents;
    if (channel) {
      for (int i = 0; i < kNodes; ++i) {
        std::string node = absl::StrCat("node-", i);
        auto token = channel::MintAgentToken(**client, ns, "agent",
                                             "agent-" + node, node);
        if (!token.ok()) Die(token.status().ToString());
        channel::SimAgentOptions o;
        o.record = record;
        o.token = *token;
        agents.push_back(std::make_unique<channel::SimAgent>(**client, o));
      }
      bool up = k8s::testing::WaitFor(
          [&] {
            for (auto& a : agents) {
              if (a->client().node().empty()) return false;
            }
            return true;
          },
          absl::Seconds(60));
      if (!up) Die("agents did not connect to the channel\n" + op.Log());
    }
    for (int n : sizes) {
      std::vector<Run> rs;
      int reps = n >= 1000 ? std::max(1, runs / 2) : runs;
      if (n >= 10000) reps = 1;
      for (int r = 0; r < reps; ++r) {
        rs.push_back(RunOnce(
            **client, n, absl::StrCat(tag0, "-", path.substr(0, 1), n, "-", r),
            agent_workers, !channel));
        std::fprintf(stderr,
                     "%s N=%d run %d (created %s): %.1f ms, %lld writes; "
                     "leases shown after %.1f ms, %lld writes; load %.2f\n",
                     path.c_str(), n, r,
                     absl::FormatTime("%H:%M:%E3S", rs.back().created_at,
                                      absl::UTCTimeZone())
                         .c_str(),
                     rs.back().ms, static_cast<long long>(rs.back().writes),
                     rs.back().display_ms,
                     static_cast<long long>(rs.back().writes_total),
                     LoadAverage1());
      }
      pr.runs.push_back(rs);
      pr.loads.push_back(LoadAverage1());
    }
    if (channel) {
      // The owner's agent, which fences when asked.
      auto token = channel::MintAgentToken(**client, ns, "agent", "agent-owner",
                                           "owner");
      if (!token.ok()) Die(token.status().ToString());
      channel::SimAgentOptions o;
      o.record = record;
      o.token = *token;
      agents.push_back(std::make_unique<channel::SimAgent>(**client, o));
      for (int r = 0; r < runs; ++r) {
        pr.fenced_ms.push_back(
            DeadlineToFencedMs(**client, absl::StrCat(tag0, "-", r)));
        std::fprintf(stderr,
                     "silent holder run %d: deadline -> fenced %.1f ms\n", r,
                     pr.fenced_ms.back());
      }
    }
    pr.rss_kib = k8s::testing::PeakRssKib(op.pid());
    agents.clear();
    op.Kill(SIGTERM);
    results.push_back(std::move(pr));
  }
  if (!cp_dir.empty()) {
    (void)std::system(absl::StrCat(DAXLEASE_SOURCE_DIR,
                                   "/tests/k8s/control-plane.sh stop ", cp_dir)
                          .c_str());
  }

  std::printf(
      "\nrecall: DaxRecall created -> status.phase Complete, %d simulated "
      "nodes acking every lease at once; writes: the whole recall (until "
      "Ready at the next epoch), events included; total: until every lease "
      "object shows Released (shown after: ms from the create)\n",
      kNodes);
  std::printf(
      "API server alone (trivial client, 16 in flight, load %.2f): %.0f "
      "creates/s, %.0f status patches/s\n",
      load_rate, rate.creates_per_s, rate.patches_per_s);
  std::printf("%-8s %-6s %5s %11s %8s %9s %9s %12s %6s %9s %14s %4s %6s\n",
              "path", "N", "runs", "median(ms)", "p90(ms)", "min(ms)",
              "max(ms)", "writes/recall", "total", "shown(ms)", "goal", "ok",
              "load1");
  bool all_ok = true;
  bool rss_ok = true;
  for (const PathResult& pr : results) {
    for (size_t i = 0; i < sizes.size(); ++i) {
      std::vector<Run> rs = pr.runs[i];
      std::sort(rs.begin(), rs.end(),
                [](const Run& a, const Run& b) { return a.ms < b.ms; });
      const Run& med = rs[rs.size() / 2];
      // Nearest rank: the smallest run at or above 90% of them.
      const Run& p90 = rs[(rs.size() * 9 + 9) / 10 - 1];
      std::vector<int64_t> w;
      for (const Run& r : rs) w.push_back(r.writes);
      std::sort(w.begin(), w.end());
      // The goals of the recall channel (issue 11); the status path is
      // shown against them too.
      std::string goal = "-";
      bool ok = true;
      if (sizes[i] == 100) {
        goal = "median<50ms";
        ok = med.ms < 50;
      } else if (sizes[i] == 1000) {
        goal = "median<200ms";
        ok = med.ms < 200;
      } else if (sizes[i] == 10000) {
        goal = "median<2000ms";
        ok = med.ms < 2000;
      }
      if (pr.path == "channel") all_ok &= ok;
      std::printf(
          "%-8s %-6d %5zu %11.1f %8.1f %9.1f %9.1f %12lld %6lld %9.1f %14s "
          "%4s %6.2f\n",
          pr.path.c_str(), sizes[i], rs.size(), med.ms, p90.ms, rs.front().ms,
          rs.back().ms, static_cast<long long>(w[w.size() / 2]),
          static_cast<long long>(med.writes_total), med.display_ms,
          goal.c_str(), ok ? "yes" : "NO", pr.loads[i]);
    }
    if (!pr.fenced_ms.empty()) {
      std::vector<double> f = pr.fenced_ms;
      std::sort(f.begin(), f.end());
      bool fok = f[f.size() / 2] < 100;
      all_ok &= fok;
      std::printf(
          "%-8s silent holder, deadline -> fenced: median %.1f ms (min %.1f, "
          "max %.1f, %zu runs; 20 ms polling) goal <100ms %s\n",
          pr.path.c_str(), f[f.size() / 2], f.front(), f.back(), f.size(),
          fok ? "yes" : "NO");
    }
    // The goal is 100 MB (issue 11), 95.4 MiB.
    bool ok = pr.rss_kib >= 0 && pr.rss_kib * 1024 < 100'000'000;
    rss_ok &= ok;
    std::printf(
        "%-8s operator peak RSS (VmHWM): %.1f MiB = %.1f MB (goal < 100 MB) "
        "%s\n",
        pr.path.c_str(), pr.rss_kib / 1024.0, pr.rss_kib * 1024 / 1e6,
        ok ? "yes" : "NO");
  }
  return all_ok && rss_ok ? 0 : 3;
}

}  // namespace
}  // namespace daxlease::op

int main(int argc, char** argv) { return daxlease::op::Main(argc, argv); }
