// migration_bench: what a DaxMigration costs on the two simulated nodes
// (tests/twonode), against a plain copy of the same bytes between the same
// two nodes in the same run.
//
// A shared volume (default 1 GiB) is created on node-a, published on both
// nodes, filled (pseudo-random bytes through libdaxlease), and a
// daxlease-io pattern writer runs on each node (live holders) the whole
// time. Then, alternating direction (a -> b, b -> a, ...):
//   plain:     socat (4 MiB buffers) from the owner's data file on the
//              source node to a file on the target node, over the veth
//              (ends with the bytes in the target's page cache);
//   durable:   the same, then `sync FILE` (fsync) on the target: the peer
//              of a migration, whose target persists the copy before it
//              reports it;
//   direct:    socat to `dd oflag=direct conv=fdatasync` (4 MiB blocks) on
//              the target: written past the page cache and made durable,
//              as the migration's target writes a file media (O_DIRECT,
//              then fdatasync; docs/agent.md, "Migration");
//   migration: `kubectl daxlease migrate` equivalent (a DaxMigration),
//              until the volume is Ready at the next epoch on the target.
//              With the pre-copy (the operator's default): the target
//              copies the volume while it is Ready (preCopyMilliseconds),
//              then inside the pause reads again only the chunks whose
//              digests differ (refetchedBytes, copyMilliseconds).
// Prints per migration: bytes, copy time (the pre-copy's
// preCopyMilliseconds plus the target agent's copyMilliseconds: the fabric
// reads into its media) against the plain copy, copy + persist time
// (persist_ms from the target agent's log) against the durable copy and
// against the direct copy, the pause window (the DaxRecall's startedAt -> the
// volume seen Ready at the next epoch), and their medians. The goal (>= 0.8) is
// for the durable ratios: both sides end with the bytes on disk.
//
//   migration_bench [--size-mib M] [--iterations N] [--streams S]
//                   [--poll-ms P] [--pre-copy 0|1] [--settle-ms W]
//                   [--direct-writes 0|1]
//
// (S: the agents' --migration-streams, default 2; --pre-copy 0 runs the
// operator with --migration-pre-copy=false: the whole copy in the pause;
// --direct-writes 0 runs the agents with --migration-direct-writes=false:
// the target writes its media through the page cache, as before.)
// The pause window is broken down by when each step was first seen: the
// recall (its start -> Copying), the copy in the pause (copyMilliseconds;
// of it the source's digests, digests_ms of the target's log), persist+report
// (-> targetChecksum), waiting for the source's checksum, and the switch
// (-> Ready).
//
// The volume and the migration are polled every P ms (default 100) while it
// runs (every 500 ms during the pre-copy's first 90%), so the pause window
// and its parts are seen to within about P ms.
//
// Each of the four copies starts after the same settle (Settle below: the
// write-back of the step before drained, then W ms, default 3000), the
// peers' order rotates, and each line prints the 1-minute load before
// each copy and the CPU time of the receiving side: the target agent's copy
// streams (cpu_ms of its log) and the peers' receivers (/usr/bin/time).
//
// Needs what the twonode label needs (root, ip, socat, nsenter, the test
// control plane: DAXLEASE_KUBECONFIG, as tests/k8s/control-plane.sh starts
// it); without it, says why and exits 0.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "lib/api/json.h"
#include "lib/api/resources.h"
#include "lib/k8s/config.h"
#include "lib/k8s/rest_client.h"
#include "nlohmann/json.hpp"
#include "tests/integration/plugin_harness.h"
#include "tests/twonode/two_node_cluster.h"

namespace daxlease::bench {
namespace {

using Json = nlohmann::json;
using testing::CallJson;
using testing::NodeProcess;
using testing::TwoNodeCluster;

// Of an even count, the mean of the middle two (the upper one alone, as
// before, made the median of one run's two migrations its better one).
double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 == 1 ? v[m] : (v[m - 1] + v[m]) / 2;
}

// `field` (e.g. persist_ms) of the target agent's `event` line (default
// agent.migration_copied) for `migration` in the log at `path`; -1 when
// there is none.
int64_t CopiedField(const std::string& path, const std::string& migration,
                    const std::string& field,
                    const std::string& event = "agent.migration_copied") {
  std::ifstream in(path);
  int64_t ms = -1;
  const std::string tag = absl::StrCat(" migration=", migration, " ");
  const std::string ev = absl::StrCat("event=", event, " ");
  for (std::string line; std::getline(in, line);) {
    if (line.find(ev) == std::string::npos ||
        line.find(tag) == std::string::npos) {
      continue;
    }
    const std::string key = absl::StrCat(" ", field, "=");
    const size_t at = line.find(key);
    if (at == std::string::npos) continue;
    const size_t from = at + key.size();
    (void)absl::SimpleAtoi(line.substr(from, line.find(' ', from) - from), &ms);
  }
  return ms;
}

// The 1-minute load average (/proc/loadavg), printed beside each figure.
double LoadAverage() {
  std::ifstream in("/proc/loadavg");
  double load = -1;
  in >> load;
  return load;
}

// Dirty + Writeback of /proc/meminfo, in bytes.
int64_t UnwrittenBytes() {
  std::ifstream in("/proc/meminfo");
  int64_t total = 0;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("Dirty:", 0) != 0 && line.rfind("Writeback:", 0) != 0) {
      continue;
    }
    int64_t kb = 0;
    std::string num = line.substr(line.find(':') + 1);
    num = num.substr(0, num.find("kB"));
    absl::StripAsciiWhitespace(&num);
    if (absl::SimpleAtoi(num, &kb)) total += kb << 10;
  }
  return total;
}

// What every measured copy (plain, durable, migration) starts from: the
// write-back of the step before it done (at most 30 s), then `settle` of
// nothing. The settle is what makes the copies comparable on a VM whose
// balloon reports free memory to the host (virtio-balloon free page
// reporting, as on this host): memory freed less than about a second ago is
// handed out again without a host fault, older free memory costs one per
// page (measured: writing 1 GiB of new page cache took 0.8 s right after
// 1 GiB was freed, 4.5-10 s one second or more later). Each copy writes
// 1 GiB of new page cache on its target (a new file), and before the settle
// the plain copy ran right after the previous migration's source freed its
// media, the durable one right after the plain one freed its file, while
// the migration's target started writing one to two seconds after
// (operator, connect, media): the peers got the warm memory.
void Settle(absl::Duration settle) {
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (UnwrittenBytes() > (int64_t{64} << 20) && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(100));
  }
  absl::SleepFor(settle);
}

int Fail(const std::string& what) {
  std::fprintf(stderr, "migration_bench: %s\n", what.c_str());
  return 1;
}

Json Cap() {
  return {{"mount", Json::object()},
          {"accessMode", {{"mode", "MULTI_NODE_MULTI_WRITER"}}}};
}

int Main(int argc, char** argv) {
  int64_t size_mib = 1024;
  int iterations = 2;
  int streams = 2;  // the target agent's --migration-streams
  // How often the migration is polled. Every 10 ms (before) the bench's own
  // two GETs (TLS, the API server and etcd on the same two cores) ran only
  // while the migration did, not beside the peer copies, and took its CPU.
  int poll_ms = 100;
  int pre_copy = 1;
  int settle_ms = 3000;
  int direct_writes = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--size-mib") (void)absl::SimpleAtoi(argv[i + 1], &size_mib);
    if (a == "--iterations") (void)absl::SimpleAtoi(argv[i + 1], &iterations);
    if (a == "--streams") (void)absl::SimpleAtoi(argv[i + 1], &streams);
    if (a == "--poll-ms") (void)absl::SimpleAtoi(argv[i + 1], &poll_ms);
    if (a == "--pre-copy") (void)absl::SimpleAtoi(argv[i + 1], &pre_copy);
    if (a == "--settle-ms") (void)absl::SimpleAtoi(argv[i + 1], &settle_ms);
    if (a == "--direct-writes") {
      (void)absl::SimpleAtoi(argv[i + 1], &direct_writes);
    }
  }
  const std::string why = testing::TwoNodePrereqMissing();
  if (!why.empty()) {
    std::printf("migration_bench: skipped: %s\n", why.c_str());
    return 0;
  }
  testing::TwoNodeOptions o;
  o.operator_args = {"--resync=5s"};
  if (pre_copy == 0) o.operator_args.push_back("--migration-pre-copy=false");
  o.agent_args = {absl::StrCat("--migration-streams=", streams),
                  absl::StrCat("--migration-direct-writes=",
                               direct_writes != 0 ? "true" : "false")};
  auto c = TwoNodeCluster::Start(o);
  if (!c.ok()) return Fail(c.status().ToString());
  TwoNodeCluster& cl = **c;
  auto kcfg = k8s::LoadDefaultConfig(cl.kubeconfig());
  if (!kcfg.ok()) return Fail(kcfg.status().ToString());
  auto kube = k8s::RestKubeClient::Create(*kcfg);
  if (!kube.ok()) return Fail(kube.status().ToString());

  TwoNodeCluster::Node* nodes[2] = {&cl.a(), &cl.b()};
  // The volume: the file backend's image plus the filesystem's overhead.
  const int64_t bytes = (size_mib + size_mib / 16 + 64) << 20;
  auto created = CallJson(
      cl.a().csi_channel, "/csi.v1.Controller/CreateVolume",
      Json{{"name", absl::StrCat("migration-bench-", getpid())},
           {"capacityRange", {{"requiredBytes", std::to_string(bytes)}}},
           {"parameters",
            {{"daxlease.io/share", "true"},
             {"daxlease.io/recallGraceSeconds", "10"}}},
           {"volumeCapabilities", Json::array({Cap()})}}
          .dump());
  if (!created.ok()) return Fail(created.status().ToString());
  const Json volume = Json::parse(*created).at("volume");
  const std::string id = volume.at("volumeId");
  std::string dirs[2];
  for (int n = 0; n < 2; ++n) {
    const auto& node = *nodes[n];
    const std::string staging = node.kubelet_dir + "/staging/" + id;
    dirs[n] = absl::StrCat(node.kubelet_dir, "/pods/bench-", n, "/volume");
    Json ctx = volume.value("volumeContext", Json::object());
    auto st = CallJson(node.csi_channel, "/csi.v1.Node/NodeStageVolume",
                       Json{{"volumeId", id},
                            {"stagingTargetPath", staging},
                            {"volumeCapability", Cap()},
                            {"volumeContext", ctx}}
                           .dump());
    if (!st.ok()) return Fail(st.status().ToString());
    ctx["csi.storage.k8s.io/pod.name"] = absl::StrCat("bench-", n);
    ctx["csi.storage.k8s.io/pod.namespace"] = "default";
    ctx["csi.storage.k8s.io/pod.uid"] = absl::StrCat("uid-bench-", n);
    auto pub = CallJson(node.csi_channel, "/csi.v1.Node/NodePublishVolume",
                        Json{{"volumeId", id},
                             {"stagingTargetPath", staging},
                             {"targetPath", dirs[n]},
                             {"volumeCapability", Cap()},
                             {"volumeContext", ctx}}
                            .dump());
    if (!pub.ok()) return Fail(pub.status().ToString());
  }
  // Fill through the owner's holder (pseudo-random: nothing compresses).
  const std::string fill = cl.dir() + "/fill";
  {
    std::ofstream out(fill, std::ios::binary);
    std::mt19937_64 rng(42);
    std::vector<uint64_t> buf(1 << 17);
    for (int64_t m = 0; m < size_mib; ++m) {
      for (auto& x : buf) x = rng();
      out.write(reinterpret_cast<const char*>(buf.data()), 1 << 20);
    }
  }
  auto filled = cl.RunIn(cl.a(), {"bash", "-c",
                                  absl::StrCat(testing::IoBinary(), " write '",
                                               dirs[0], "' 0 <'", fill, "'")});
  if (!filled.ok() || filled->exit_code != 0) {
    return Fail(absl::StrCat("fill: ", filled.ok()
                                           ? filled->stderr_text
                                           : filled.status().ToString()));
  }
  unlink(fill.c_str());
  // Live holders: a pattern writer on each node for the whole run.
  std::unique_ptr<NodeProcess> writers[2];
  for (int n = 0; n < 2; ++n) {
    auto w = NodeProcess::Start(
        nodes[n]->netns,
        {testing::IoBinary(), "pattern", dirs[n], "4096", "100000"},
        absl::StrCat(cl.dir(), "/writer-", n, ".log"));
    if (!w.ok()) return Fail(w.status().ToString());
    writers[n] = std::move(*w);
  }
  absl::SleepFor(absl::Seconds(2));

  auto get = [&](const k8s::Resource& r, const std::string& name) {
    auto j = kube.value()->Get(r, "", name);
    return j.ok() ? *j : Json::object();
  };
  std::vector<double> copy_mbps, plain_mbps, ratio, pause_ms, total_ms;
  std::vector<double> durable_mbps, durable_peer_mbps, durable_ratio;
  std::vector<double> direct_peer_mbps, direct_ratio;
  std::vector<double> all_loads;
  std::vector<double> recall_part, after_copy_part, source_wait_part,
      switch_part, pre_copy_part, pause_copy_part, refetched_mib;
  int owner = 0;
  for (int it = 0; it < iterations * 2; ++it) {
    const int target = 1 - owner;
    Json vol = get(api::DaxVolumeResource(), id);
    const int64_t epoch = vol["status"].value("epoch", int64_t{0});
    // The owner's data file: under the staging mount (node-a at first) or
    // the agent's media after a migration.
    std::string data =
        absl::StrCat(nodes[owner]->dir, "/agent/media/", id, "/data");
    if (access(data.c_str(), F_OK) != 0) {
      data = absl::StrCat(dirs[owner], "/volume/.daxlease/data");
    }
    // The peers, owner -> target, over the veth: plain (socat into a file:
    // the page cache), durable (the same, then fsync of the file, as the
    // migration persists before it reports) and direct (socat to dd
    // writing with O_DIRECT, then fdatasync: as the migration's target
    // writes a file media).
    enum Peer { kPlain = 0, kDurable = 1, kDirect = 2 };
    static const char* const kPeerName[] = {"plain", "durable", "direct"};
    double peer_cpu_ms[3] = {-1, -1, -1};  // each peer's receiver's
    auto peer = [&](Peer kind) -> absl::StatusOr<std::pair<int64_t, double>> {
      const std::string sink = absl::StrCat(nodes[target]->dir, "/peer-copy");
      // The receiver's CPU time (user + system; direct: socat's and dd's),
      // against the target streams' cpu_ms.
      const std::string cpu_file =
          absl::StrCat(nodes[target]->dir, "/peer-cpu");
      std::string recv;
      if (kind == kDirect) {
        // dd writes its last, partial block (if any) without O_DIRECT.
        recv = absl::StrCat(
            "/usr/bin/time -f '%U %S' -o '", cpu_file,
            "' bash -c \"socat -u -b 4194304 TCP-LISTEN:7411,reuseaddr STDOUT "
            "| dd of='",
            sink,
            "' bs=4M iflag=fullblock oflag=direct conv=fdatasync "
            "status=none\"");
      } else {
        recv = absl::StrCat(
            "/usr/bin/time -f '%U %S' -o '", cpu_file,
            "' socat -u -b 4194304 TCP-LISTEN:7411,reuseaddr OPEN:'", sink,
            "',creat,trunc");
      }
      if (kind == kDurable) absl::StrAppend(&recv, " && sync '", sink, "'");
      auto listener =
          NodeProcess::Start(nodes[target]->netns, {"bash", "-c", recv},
                             absl::StrCat(cl.dir(), "/socat-listen.log"));
      if (!listener.ok()) return listener.status();
      // Listening before the clock starts (bash and socat start slowly on a
      // loaded machine).
      for (int i = 0; i < 200; ++i) {
        auto ss = cl.RunIn(*nodes[target], {"ss", "-Hltn", "sport = :7411"});
        if (ss.ok() && !ss->stdout_text.empty()) break;
        absl::SleepFor(absl::Milliseconds(50));
      }
      const absl::Time p0 = absl::Now();
      auto sent =
          cl.RunIn(*nodes[owner],
                   {"socat", "-u", "-b", "4194304", absl::StrCat("OPEN:", data),
                    absl::StrCat("TCP:", nodes[target]->addr, ":7411")});
      auto done = (*listener)->Wait(absl::Seconds(120));
      const double s = absl::ToDoubleSeconds(absl::Now() - p0);
      if (!sent.ok() || sent->exit_code != 0 || !done.ok() || *done != 0) {
        return absl::InternalError(absl::StrCat(
            kPeerName[kind], " copy failed: ",
            sent.ok() ? sent->stderr_text : sent.status().ToString(),
            (*listener)->LogTail()));
      }
      int64_t n = 0;
      {
        std::ifstream in(sink, std::ios::binary | std::ios::ate);
        n = in.tellg();
      }
      unlink(sink.c_str());
      {
        std::ifstream in(cpu_file);
        double user = 0, sys = 0;
        peer_cpu_ms[kind] = (in >> user >> sys) ? (user + sys) * 1e3 : -1;
      }
      return std::make_pair(n, s);
    };
    // Which peer goes first rotates (each after its settle). loads: before
    // each peer (by kind), then before the migration.
    std::vector<double> loads(3, -1);
    absl::StatusOr<std::pair<int64_t, double>> results[3];
    for (int k = 0; k < 3; ++k) {
      const Peer kind = static_cast<Peer>((it + k) % 3);
      Settle(absl::Milliseconds(settle_ms));
      loads[kind] = LoadAverage();
      results[kind] = peer(kind);
      if (!results[kind].ok()) return Fail(results[kind].status().ToString());
    }
    const auto& plain = results[kPlain];
    const auto& durable = results[kDurable];
    const auto& direct = results[kDirect];
    const int64_t plain_bytes = plain->first;
    const double plain_s = plain->second;

    // The migration.
    const std::string name = absl::StrCat(id, "-bench-", it);
    Json m = {{"apiVersion", "daxlease.io/v1alpha1"},
              {"kind", "DaxMigration"},
              {"metadata", {{"name", name}}},
              {"spec", {{"volume", id}, {"targetNode", nodes[target]->name}}}};
    Settle(absl::Milliseconds(settle_ms));
    loads.push_back(LoadAverage());
    auto mk = kube.value()->Create(api::DaxMigrationResource(), m);
    if (!mk.ok()) return Fail(mk.status().ToString());
    const absl::Time m0 = absl::Now();
    absl::Time ready = absl::InfiniteFuture();
    // When each step was first seen (the pause window's breakdown).
    absl::Time seen_copying = absl::InfiniteFuture();
    absl::Time seen_target_sum = absl::InfiniteFuture();
    absl::Time seen_source_sum = absl::InfiniteFuture();
    auto first = [](absl::Time& t) {
      if (t == absl::InfiniteFuture()) t = absl::Now();
    };
    while (absl::Now() - m0 < absl::Seconds(300)) {
      // The migration first: its steps, written before the volume turns
      // Ready, are then seen no later than the Ready (at most one poll
      // apart, the checksums' part of the window can be 0).
      const Json mst = get(api::DaxMigrationResource(), name)
                           .value("status", Json::object());
      const std::string phase = mst.value("phase", "");
      if (phase == "Copying" || phase == "Switching" || phase == "Complete") {
        first(seen_copying);
      }
      if (!mst.value("targetChecksum", "").empty()) first(seen_target_sum);
      if (!mst.value("sourceChecksum", "").empty()) first(seen_source_sum);
      vol = get(api::DaxVolumeResource(), id);
      if (vol["status"].value("epoch", int64_t{0}) > epoch &&
          vol["status"].value("phase", "") == "Ready") {
        ready = absl::Now();
        break;
      }
      // The pre-copy's first 90% (before the recall) needs no fine
      // timing: polled every 500 ms at least, so that the bench's GETs tax
      // the copy little more than they tax the peers (not polled).
      const int64_t of = mst.value("bytesTotal", int64_t{0});
      const bool pre_copying =
          (phase == "" || phase == "Pending" || phase == "PreCopying") &&
          (of == 0 || mst.value("preCopiedBytes", int64_t{0}) < of / 10 * 9);
      absl::SleepFor(absl::Milliseconds(
          pre_copying && pre_copy != 0 ? std::max(poll_ms, 500) : poll_ms));
    }
    if (ready == absl::InfiniteFuture()) return Fail("migration timed out");
    Json ms;
    for (int i = 0; i < 100; ++i) {
      ms = get(api::DaxMigrationResource(), name)["status"];
      if (ms.value("phase", "") == "Complete" ||
          ms.value("phase", "") == "Failed") {
        break;
      }
      absl::SleepFor(absl::Milliseconds(100));
    }
    if (ms.value("phase", "") != "Complete") {
      return Fail(absl::StrCat("migration ", name, ": ", ms.dump()));
    }
    Json rs = get(api::DaxRecallResource(), ms.value("recall", ""))["status"];
    auto started = api::ParseWireTime(rs.value("startedAt", ""));
    const double pause =
        started.ok() ? absl::ToDoubleMilliseconds(ready - *started) : -1;
    const int64_t total = ms.value("bytesTotal", int64_t{0});
    // The copy in the pause, and the pre-copy before it (0 without one):
    // together what moved the volume's bytes.
    const int64_t pause_copy = ms.value("copyMilliseconds", int64_t{0});
    const int64_t pre_ms = ms.value("preCopyMilliseconds", int64_t{0});
    const int64_t refetched = ms.value("refetchedBytes", int64_t{0});
    const std::string target_log =
        absl::StrCat(nodes[target]->dir, "/agent.log");
    const int64_t copy = std::max<int64_t>(1, pause_copy + pre_ms);
    const double cm = total / 1e6 / (copy / 1e3);
    const double pm = plain_bytes / 1e6 / plain_s;
    // Durable: the copy and the persist after it (the target's log says how
    // long that took) against socat and fsync.
    const int64_t persist = CopiedField(target_log, name, "persist_ms");
    const int64_t digests_ms = CopiedField(target_log, name, "digests_ms");
    const double dm = persist < 0 ? 0 : total / 1e6 / ((copy + persist) / 1e3);
    const double dpm = durable->first / 1e6 / durable->second;
    const double xpm = direct->first / 1e6 / direct->second;
    // recall: its start -> Copying seen; copy: the target's read loop;
    // persist+report: the rest until targetChecksum is seen; source sum:
    // waiting for sourceChecksum after that; switch: -> Ready seen.
    auto ms_between = [](absl::Time a, absl::Time b) {
      if (a == absl::InfiniteFuture() || b == absl::InfiniteFuture())
        return -1.0;
      return absl::ToDoubleMilliseconds(b - a);
    };
    const absl::Time sums = std::max(seen_target_sum, seen_source_sum);
    const double recall_ms =
        started.ok() ? ms_between(*started, seen_copying) : -1;
    const double after_copy_ms = ms_between(seen_copying, seen_target_sum) -
                                 static_cast<double>(pause_copy);
    const double source_wait_ms =
        std::max(0.0, ms_between(seen_target_sum, seen_source_sum));
    const double switch_ms = ms_between(sums, ready);
    recall_part.push_back(recall_ms);
    after_copy_part.push_back(after_copy_ms);
    source_wait_part.push_back(source_wait_ms);
    switch_part.push_back(switch_ms);
    pre_copy_part.push_back(static_cast<double>(pre_ms));
    pause_copy_part.push_back(static_cast<double>(pause_copy));
    refetched_mib.push_back(refetched / 1048576.0);
    // Where the pre-copy's stream time went (summed over the streams).
    auto pre = [&](const char* f) {
      return static_cast<long long>(
          CopiedField(target_log, name, f, "agent.migration_pre_copied"));
    };
    std::printf(
        "%s -> %s: pre-copy %lld ms (before the recall; streams' read %lld, "
        "hash %lld, write %lld, write-back %lld ms, on a CPU %lld ms), in the "
        "pause: %lld of %lld bytes read again (%lld chunks), source digests "
        "%lld ms\n",
        nodes[owner]->name.c_str(), nodes[target]->name.c_str(),
        static_cast<long long>(pre_ms), pre("read_ms"), pre("hash_ms"),
        pre("write_ms"), pre("writeback_ms"), pre("cpu_ms"),
        static_cast<long long>(refetched), static_cast<long long>(total),
        static_cast<long long>((refetched + (16 << 20) - 1) / (16 << 20)),
        static_cast<long long>(digests_ms));
    std::printf(
        "%s -> %s: %lld bytes, copy %lld ms (%.0f MB/s), plain %lld bytes "
        "%.0f ms (%.0f MB/s), ratio %.2f; copy+persist %lld ms (%.0f MB/s), "
        "durable %lld bytes %.0f ms (%.0f MB/s), ratio %.2f; direct (dd "
        "oflag=direct conv=fdatasync) %lld bytes %.0f ms (%.0f MB/s), ratio "
        "%.2f; pause (recall start -> Ready) "
        "%.0f ms (recall %.0f, copy in the pause %lld, persist+report %.0f, "
        "waiting for the source's checksum %.0f, switch -> Ready %.0f), "
        "migrate -> Ready %.0f ms; load %.1f %.1f %.1f %.1f (before plain, "
        "durable, direct, migration); on a CPU: the target's copy streams "
        "%lld ms, the plain, durable and direct receivers %.0f, %.0f, %.0f "
        "ms\n",
        nodes[owner]->name.c_str(), nodes[target]->name.c_str(),
        static_cast<long long>(total), static_cast<long long>(copy), cm,
        static_cast<long long>(plain_bytes), plain_s * 1e3, pm, cm / pm,
        static_cast<long long>(copy + persist), dm,
        static_cast<long long>(durable->first), durable->second * 1e3, dpm,
        dm / dpm, static_cast<long long>(direct->first), direct->second * 1e3,
        xpm, dm / xpm, pause, recall_ms, static_cast<long long>(pause_copy),
        after_copy_ms, source_wait_ms, switch_ms,
        absl::ToDoubleMilliseconds(ready - m0), loads[kPlain], loads[kDurable],
        loads[kDirect], loads[3],
        std::max<long long>(0, pre("cpu_ms")) +
            static_cast<long long>(CopiedField(target_log, name, "cpu_ms")),
        peer_cpu_ms[kPlain], peer_cpu_ms[kDurable], peer_cpu_ms[kDirect]);
    std::fflush(stdout);
    all_loads.insert(all_loads.end(), loads.begin(), loads.end());
    copy_mbps.push_back(cm);
    plain_mbps.push_back(pm);
    ratio.push_back(cm / pm);
    durable_mbps.push_back(dm);
    durable_peer_mbps.push_back(dpm);
    durable_ratio.push_back(dm / dpm);
    direct_peer_mbps.push_back(xpm);
    direct_ratio.push_back(dm / xpm);
    pause_ms.push_back(pause);
    total_ms.push_back(absl::ToDoubleMilliseconds(ready - m0));
    owner = target;
  }
  for (auto& w : writers) {
    if (!w->running())
      std::printf("a writer exited:\n%s\n", w->LogTail().c_str());
  }
  std::printf(
      "median over %zu migrations of %lld MiB (%d copy streams) with 2 live "
      "holders: copy %.0f MB/s, plain copy %.0f MB/s, ratio %.2f; "
      "copy+persist %.0f MB/s, durable copy (socat + fsync) %.0f MB/s, "
      "ratio %.2f (goal >= 0.8), direct copy (dd oflag=direct "
      "conv=fdatasync) %.0f MB/s, ratio %.2f; target writes %s; pause "
      "window %.0f ms (recall %.0f, copy in the pause %.0f, persist+report "
      "%.0f, waiting for the source's checksum %.0f, switch -> Ready %.0f), "
      "migrate -> Ready %.0f ms; pre-copy %.0f ms, read again in the pause "
      "%.0f MiB (pre-copy %s); settle %d ms before each copy, load "
      "%.1f-%.1f\n",
      ratio.size(), static_cast<long long>(size_mib), streams,
      Median(copy_mbps), Median(plain_mbps), Median(ratio),
      Median(durable_mbps), Median(durable_peer_mbps), Median(durable_ratio),
      Median(direct_peer_mbps), Median(direct_ratio),
      direct_writes != 0 ? "direct" : "buffered", Median(pause_ms),
      Median(recall_part), Median(pause_copy_part), Median(after_copy_part),
      Median(source_wait_part), Median(switch_part), Median(total_ms),
      Median(pre_copy_part), Median(refetched_mib),
      pre_copy != 0 ? "on" : "off", settle_ms,
      all_loads.empty() ? 0.0
                        : *std::min_element(all_loads.begin(), all_loads.end()),
      all_loads.empty()
          ? 0.0
          : *std::max_element(all_loads.begin(), all_loads.end()));
  return 0;
}

}  // namespace
}  // namespace daxlease::bench

int main(int argc, char** argv) { return daxlease::bench::Main(argc, argv); }
