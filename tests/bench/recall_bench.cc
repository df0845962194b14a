// recall_bench: one recall of N leases (N = 10, 100, 1000) on a real
// kube-apiserver, the daxlease-operator binary as a subprocess, and a
// simulated agent that acks every recalled lease as fast as it can (watch ->
// status patch, --agent-workers in flight). Measures the time from DaxRecall
// creation to status.phase Complete, the operator's peak RSS (VmHWM), the
// load average after each size, and first, before the operator starts, the
// API server's own write rate with a trivial client (the bound: a recall of
// N leases costs about 3N writes).
//
//   recall_bench [--kubeconfig PATH] [--sizes 10,100,1000] [--runs 5]
//                [--write-concurrency 16] [--agent-workers 16]
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

// One measured recall of n leases; returns milliseconds to Complete.
double RunOnce(k8s::KubeClient& c, int n, const std::string& tag,
               int agent_workers) {
  std::string vol = absl::StrCat("bench-", tag);
  api::DaxVolume v;
  v.metadata.name = vol;
  v.spec.size_bytes = 1 << 30;
  v.spec.owner_node = "owner";
  v.spec.share = true;
  if (!c.Create(api::DaxVolumeResource(), api::ToJson(v)).ok())
    Die("create volume");
  ParallelFor(n, 8, [&](int i) {
    api::DaxLease l;
    l.metadata.name = absl::StrCat(vol, "-l", i);
    l.spec = {vol, absl::StrCat("node-", i % 16), "", api::Access::kReadWrite};
    auto st = c.Create(api::DaxLeaseResource(), api::ToJson(l));
    if (!st.ok()) Die(st.status().ToString());
  });
  if (!k8s::testing::WaitFor(
          [&] {
            auto j = Get(c, api::DaxVolumeResource(), vol);
            if (!j || !(*j)["status"].is_object()) return false;
            return (*j)["status"].value("holders", 0) == n;
          },
          absl::Seconds(120))) {
    Die(absl::StrCat("leases of ", vol, " not granted"));
  }
  k8s::ListOptions one;
  one.limit = 1;
  auto list = c.List(api::DaxLeaseResource(), "", one);
  if (!list.ok()) Die(list.status().ToString());
  double ms = 0;
  {
    Agent agent(c, vol, list->resource_version, agent_workers);
    api::DaxRecall r;
    r.metadata.name = vol;
    r.spec = {vol, api::RecallReason::kManual, 60};
    absl::Time t0 = absl::Now();
    if (!c.Create(api::DaxRecallResource(), api::ToJson(r)).ok())
      Die("create recall");
    bool done = k8s::testing::WaitFor(
        [&] {
          auto j = Get(c, api::DaxRecallResource(), vol);
          if (!j || !(*j)["status"].is_object()) return false;
          return (*j)["status"].value("phase", "") == "Complete";
        },
        absl::Seconds(120));
    ms = absl::ToDoubleMilliseconds(absl::Now() - t0);
    if (!done) Die(absl::StrCat("recall ", vol, " did not complete"));
  }
  // Clean up so later runs list only their own objects.
  ParallelFor(n, 8, [&](int i) {
    std::string name = absl::StrCat(vol, "-l", i);
    (void)c.Patch(api::DaxLeaseResource(), "", name, k8s::PatchType::kMerge,
                  {{"metadata", {{"finalizers", nullptr}}}});
    (void)c.Delete(api::DaxLeaseResource(), "", name);
  });
  (void)c.Delete(api::DaxRecallResource(), "", vol);
  (void)c.Delete(api::DaxVolumeResource(), "", vol);
  return ms;
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

  int64_t rss_kib = -1;
  std::vector<std::vector<double>> results;
  std::vector<double> loads;
  {
    k8s::testing::ChildProcess op(
        {DAXLEASE_OPERATOR_BIN, "--kubeconfig=" + kubeconfig,
         "--leader-elect=false",
         absl::StrCat("--write-concurrency=", write_concurrency)},
        "recall-bench-operator");
    std::string tag0 = absl::StrCat(getpid());
    for (int n : sizes) {
      std::vector<double> ms;
      int reps = n >= 1000 ? std::max(1, runs / 2) : runs;
      for (int r = 0; r < reps; ++r) {
        ms.push_back(RunOnce(**client, n, absl::StrCat(tag0, "-", n, "-", r),
                             agent_workers));
        std::fprintf(stderr, "N=%d run %d: %.1f ms\n", n, r, ms.back());
      }
      results.push_back(ms);
      loads.push_back(LoadAverage1());
    }
    rss_kib = k8s::testing::PeakRssKib(op.pid());
    op.Kill(SIGTERM);
  }
  if (!cp_dir.empty()) {
    (void)std::system(absl::StrCat(DAXLEASE_SOURCE_DIR,
                                   "/tests/k8s/control-plane.sh stop ", cp_dir)
                          .c_str());
  }

  std::printf(
      "\nrecall: DaxRecall created -> status.phase Complete "
      "(simulated agent acks every lease)\n");
  std::printf(
      "API server alone (trivial client, 16 in flight, load %.2f): %.0f "
      "creates/s, %.0f status patches/s\n",
      load_rate, rate.creates_per_s, rate.patches_per_s);
  std::printf("%-6s %5s %12s %10s %10s %14s %6s %6s\n", "N", "runs",
              "median(ms)", "min(ms)", "max(ms)", "goal", "ok", "load1");
  bool all_ok = true;
  for (size_t i = 0; i < sizes.size(); ++i) {
    std::vector<double> ms = results[i];
    std::sort(ms.begin(), ms.end());
    double median = ms[ms.size() / 2];
    std::string goal = "-";
    bool ok = true;
    if (sizes[i] == 100) {
      goal = "median<100ms";
      ok = median < 100;
    } else if (sizes[i] == 1000) {
      goal = "<2000ms";
      ok = ms.back() < 2000;
    }
    all_ok &= ok;
    std::printf("%-6d %5zu %12.1f %10.1f %10.1f %14s %6s %6.2f\n", sizes[i],
                ms.size(), median, ms.front(), ms.back(), goal.c_str(),
                ok ? "yes" : "NO", loads[i]);
  }
  bool rss_ok = rss_kib >= 0 && rss_kib < 100 * 1024;
  std::printf("operator peak RSS (VmHWM): %.1f MiB (goal < 100 MiB) %s\n",
              rss_kib / 1024.0, rss_ok ? "yes" : "NO");
  return all_ok && rss_ok ? 0 : 3;
}

}  // namespace
}  // namespace daxlease::op

int main(int argc, char** argv) { return daxlease::op::Main(argc, argv); }
