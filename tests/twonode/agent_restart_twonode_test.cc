// A node agent killed (kill -9) and started again while pods of its node
// hold a shared volume (label twonode): the pods' libdaxlease reconnects to
// the new agent through the published directory, keeps (or re-acquires) its
// lease, and loses no byte. On the two simulated nodes against the real API
// server, through the real CSI plugins' publish.
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/plugin_harness.h"
#include "tests/testing/prereq.h"
#include "tests/twonode/two_node_cluster.h"

namespace daxlease::testing {
namespace {

using Json = nlohmann::json;

class AgentRestartTwoNodeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why = TwoNodePrereqMissing();
    DAXLEASE_REQUIRE(why.empty(), why);
    auto c = TwoNodeCluster::Start(options_);
    ASSERT_TRUE(c.ok()) << c.status();
    cluster_ = std::move(*c);
  }

  void TearDown() override {
    if (HasFailure() && cluster_ != nullptr) {
      ADD_FAILURE() << "logs:\n" << cluster_->Logs();
    }
  }

  Json Call(const TwoNodeCluster::Node& node, const std::string& method,
            const Json& req) {
    auto r = CallJson(node.csi_channel, method, req.dump());
    EXPECT_TRUE(r.ok()) << node.name << " " << method << ": " << r.status();
    return r.ok() ? Json::parse(*r) : Json::object();
  }

  static Json Cap() {
    return {{"mount", Json::object()},
            {"accessMode", {{"mode", "MULTI_NODE_MULTI_WRITER"}}}};
  }

  // A shared volume on node-a, staged and published to a pod on node-a
  // (on_a_) and one on node-b (on_b_).
  void SetUpVolume(const std::string& suffix, uint64_t bytes,
                   const std::string& fs_type = "ext4") {
    auto& a = cluster_->a();
    auto& b = cluster_->b();
    Json created =
        Call(a, "/csi.v1.Controller/CreateVolume",
             {{"name", absl::StrCat("twonode-", suffix, "-", ::getpid())},
              {"capacityRange", {{"requiredBytes", std::to_string(bytes)}}},
              {"parameters",
               {{"daxlease.io/share", "true"},
                {"csi.storage.k8s.io/fstype", fs_type},
                {"daxlease.io/recallGraceSeconds", "10"}}},
              {"volumeCapabilities", Json::array({Cap()})}});
    ASSERT_TRUE(created.contains("volume")) << created.dump();
    volume_ = created.at("volume");
    id_ = volume_.at("volumeId");
    on_a_ = StageAndPublish(a, "pod-a");
    on_b_ = StageAndPublish(b, "pod-b");
    ASSERT_FALSE(HasFailure());
    data_path_ = on_a_ + "/volume/.daxlease/data";
  }

  std::string StageAndPublish(const TwoNodeCluster::Node& node,
                              const std::string& pod) {
    const std::string staging = node.kubelet_dir + "/staging/" + id_;
    const std::string target =
        absl::StrCat(node.kubelet_dir, "/pods/", pod, "/volume");
    Call(node, "/csi.v1.Node/NodeStageVolume",
         {{"volumeId", id_},
          {"stagingTargetPath", staging},
          {"volumeCapability", Cap()},
          {"volumeContext", volume_.value("volumeContext", Json::object())}});
    Json ctx = volume_.value("volumeContext", Json::object());
    ctx["csi.storage.k8s.io/pod.name"] = pod;
    ctx["csi.storage.k8s.io/pod.namespace"] = "default";
    ctx["csi.storage.k8s.io/pod.uid"] = absl::StrCat("uid-", pod);
    Call(node, "/csi.v1.Node/NodePublishVolume",
         {{"volumeId", id_},
          {"stagingTargetPath", staging},
          {"targetPath", target},
          {"volumeCapability", Cap()},
          {"volumeContext", ctx}});
    return target;
  }

  // daxlease-io ARGS inside `node`'s network namespace, attach timeout
  // `timeout_ms`.
  sys::CommandResult Io(const TwoNodeCluster::Node& node,
                        std::vector<std::string> args, int timeout_ms = 60000) {
    std::string cmd = IoBinary();
    for (const std::string& a : args) absl::StrAppend(&cmd, " '", a, "'");
    auto r = cluster_->RunIn(
        node, {"env", absl::StrCat("DAXLEASE_IO_TIMEOUT_MS=", timeout_ms),
               "bash", "-c", cmd});
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : sys::CommandResult{};
  }

  // A daxlease-io pattern writer on `node` over blocks [first, first +
  // count) of the volume published at `dir`, writing and persisting without
  // pause for up to an hour (the test stops it).
  std::unique_ptr<NodeProcess> StartWriter(const TwoNodeCluster::Node& node,
                                           const std::string& dir,
                                           uint64_t first, uint64_t count,
                                           const std::string& name) {
    auto p = NodeProcess::Start(
        node.netns,
        {"/usr/bin/env", "DAXLEASE_IO_TIMEOUT_MS=60000", IoBinary(), "pattern",
         dir, std::to_string(kBlock), "3600", std::to_string(first),
         std::to_string(count)},
        absl::StrCat(cluster_->dir(), "/", name, ".log"));
    EXPECT_TRUE(p.ok()) << p.status();
    return p.ok() ? std::move(*p) : nullptr;
  }

  std::string Get(const std::string& kind, const std::string& name,
                  const std::string& path) {
    auto r = cluster_->Kubectl(
        {"get", kind, name, "-o", absl::StrCat("jsonpath=", path)});
    return r.ok() ? r->stdout_text : "";
  }

  int64_t Epoch() {
    int64_t e = 0;
    (void)absl::SimpleAtoi(Get("daxvolumes", id_, "{.status.epoch}"), &e);
    return e;
  }

  // A DaxRecall of the volume (reason Manual); its name.
  std::string Recall(int grace) {
    const std::string file =
        absl::StrCat(cluster_->dir(), "/recall-", ++recalls_, ".json");
    std::ofstream(file) << Json{
        {"apiVersion", "daxlease.io/v1alpha1"},
        {"kind", "DaxRecall"},
        {"metadata", {{"generateName", "twonode-"}}},
        {"spec",
         {{"volume", id_},
          {"reason", "Manual"},
          {"graceSeconds",
           grace}}}}.dump();
    auto r = cluster_->Kubectl({"create", "-f", file, "-o", "name"});
    EXPECT_TRUE(r.ok() && r->exit_code == 0) << r->stderr_text;
    std::string name = r.ok() ? r->stdout_text : "";
    if (!name.empty() && name.back() == '\n') name.pop_back();
    return name.substr(name.find('/') + 1);
  }

  // Polls `kubectl ARGS` until it prints nothing (60 s); the last output.
  std::string UntilNone(const std::vector<std::string>& args) {
    const absl::Time end = absl::Now() + absl::Seconds(60);
    std::string out;
    do {
      auto r = cluster_->Kubectl(args);
      if (!r.ok()) return r.status().ToString();
      out = r->stdout_text + r->stderr_text;
      if (out.empty()) return out;
      absl::SleepFor(absl::Milliseconds(200));
    } while (absl::Now() < end);
    return out;
  }

  static bool Until(const std::function<bool()>& pred, absl::Duration timeout) {
    const absl::Time end = absl::Now() + timeout;
    while (absl::Now() < end) {
      if (pred()) return true;
      absl::SleepFor(absl::Milliseconds(100));
    }
    return pred();
  }

  static std::string ReadFile(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  // The end of a (long) log, for a failure's message.
  static std::string Tail(const std::string& log) {
    return log.substr(log.size() > 3000 ? log.size() - 3000 : 0);
  }

  static size_t Count(const std::string& text, const std::string& what) {
    size_t n = 0;
    for (size_t p = text.find(what); p != std::string::npos;
         p = text.find(what, p + what.size())) {
      ++n;
    }
    return n;
  }

  // The last "persisted seq=N" of a daxlease-io pattern log (0: none).
  static uint64_t LastPersisted(const std::string& log) {
    const size_t p = log.rfind("persisted seq=");
    uint64_t seq = 0;
    if (p == std::string::npos) return 0;
    (void)absl::SimpleAtoi(log.substr(p + 14, log.find(' ', p + 14) - p - 14),
                           &seq);
    return seq;
  }

  // The seq block `index` holds once a pattern writer over [first, first +
  // count) that started at 1 has persisted up to `last` (0: never written).
  static uint64_t PatternSeq(uint64_t index, uint64_t first, uint64_t count,
                             uint64_t last) {
    if (index < first || index >= first + count || last == 0) return 0;
    const uint64_t k = index - first;  // written at seq k+1, k+1+count, ...
    if (last < k + 1) return 0;
    return k + 1 + (last - k - 1) / count * count;
  }

  // Every block of the owner's data file holds the seq its writer last
  // persisted there: writers[w] wrote [ranges[w].first, +second).
  void ExpectBlocksExact(
      const std::vector<std::pair<uint64_t, uint64_t>>& ranges,
      const std::vector<uint64_t>& last) {
    const std::string data = ReadFile(data_path_);
    ASSERT_GT(data.size(), 0u) << data_path_;
    uint64_t wrong = 0, first_wrong = 0, want_at = 0, got_at = 0;
    for (uint64_t i = 0; i < data.size() / kBlock; ++i) {
      uint64_t want = 0;
      for (size_t w = 0; w < ranges.size(); ++w) {
        want |= PatternSeq(i, ranges[w].first, ranges[w].second, last[w]);
      }
      uint64_t seq = 0;  // the header's second word
      std::memcpy(&seq, data.data() + i * kBlock + 8, sizeof(seq));
      if (seq != want && wrong++ == 0) {
        first_wrong = i;
        want_at = want;
        got_at = seq;
      }
    }
    EXPECT_EQ(wrong, 0u) << "first at block " << first_wrong << ": seq "
                         << got_at << ", want " << want_at;
  }

  // Unpublish, unstage, delete; then the cluster's stop has nothing to
  // force.
  void TearDownVolumeAndExpectNothingLeft() {
    auto& a = cluster_->a();
    auto& b = cluster_->b();
    for (auto* n : {&b, &a}) {
      Call(*n, "/csi.v1.Node/NodeUnpublishVolume",
           {{"volumeId", id_}, {"targetPath", n == &a ? on_a_ : on_b_}});
    }
    ASSERT_EQ(
        UntilNone({"get", "daxleases", "-l",
                   absl::StrCat("daxlease.io/volume=", id_), "-o", "name"}),
        "")
        << "leases left";
    for (auto* n : {&b, &a}) {
      Call(*n, "/csi.v1.Node/NodeUnstageVolume",
           {{"volumeId", id_},
            {"stagingTargetPath", n->kubelet_dir + "/staging/" + id_}});
    }
    Call(a, "/csi.v1.Controller/DeleteVolume", {{"volumeId", id_}});
    EXPECT_EQ(UntilNone({"get", "daxvolumes", "--ignore-not-found", id_, "-o",
                         "name"}),
              "");
    const std::string dir = cluster_->dir();
    auto forced = cluster_->Stop();
    ASSERT_TRUE(forced.ok()) << forced.status();
    EXPECT_THAT(*forced, ::testing::IsEmpty());
    EXPECT_THAT(MountsUnder(dir), ::testing::IsEmpty());
    EXPECT_THAT(LoopDevicesBackedUnder(dir), ::testing::IsEmpty());
  }

  static constexpr uint64_t kBlock = 4096;
  TwoNodeOptions options_;
  std::unique_ptr<TwoNodeCluster> cluster_;
  Json volume_;
  std::string id_, on_a_, on_b_, data_path_;
  int recalls_ = 0;
};

// The holder node's agent (node-b: the pod there reaches the volume's
// memory on node-a through it) is killed with SIGKILL and started again
// under a running remote writer: a new client on node-b attaches through
// the same published directory; a recall then reaches the writer through
// the restarted agent, which acks it (released by both holders, nobody
// revoked); the writer goes on at the next epoch without an error; every
// block is what its writer last persisted. Before the published directory
// held the agent's socket directory, its agent.sock was a bind mount of the
// dead agent's socket file, and node-b's pods never reached the new one.
TEST_F(AgentRestartTwoNodeTest, RemoteHolderReconnectsToItsRestartedAgent) {
  auto& b = cluster_->b();
  SetUpVolume("restart", 64 << 20);
  ASSERT_FALSE(HasFailure());
  const uint64_t blocks = std::filesystem::file_size(data_path_) / kBlock;
  std::unique_ptr<NodeProcess> writer =
      StartWriter(b, on_b_, 0, blocks, "writer-b");
  ASSERT_NE(writer, nullptr);
  auto log = [&] { return ReadFile(writer->log_path()); };
  ASSERT_TRUE(
      Until([&] { return LastPersisted(log()) >= 50; }, absl::Seconds(60)))
      << Tail(log());

  const int64_t e = Epoch();
  ASSERT_TRUE(cluster_->RestartAgent(b, SIGKILL).ok());
  // A client that attaches now finds the new agent through the pod's
  // published directory (20 s: far more than a restart takes).
  sys::CommandResult v = Io(b, {"verify", on_b_, std::to_string(kBlock)},
                            /*timeout_ms=*/20000);
  EXPECT_EQ(v.exit_code, 0) << v.stdout_text << v.stderr_text;
  EXPECT_THAT(v.stdout_text, ::testing::HasSubstr(" corrupt=0 "));

  const uint64_t before = LastPersisted(log());
  const std::string recall = Recall(10);
  ASSERT_TRUE(Until(
      [&] {
        return Get("daxrecalls", recall, "{.status.phase}") == "Complete";
      },
      absl::Seconds(60)))
      << Get("daxrecalls", recall, "{.status}");
  EXPECT_EQ(Get("daxrecalls", recall, "{.status.released}"), "2");
  EXPECT_EQ(Get("daxrecalls", recall, "{.status.revoked}"), "");  // 0
  ASSERT_TRUE(Until(
      [&] {
        return Epoch() == e + 1 &&
               absl::StrContains(log(), absl::StrCat(" epoch=", e + 1, "\n"));
      },
      absl::Seconds(60)))
      << "the writer did not go on at epoch " << e + 1 << "\n"
      << Tail(log());
  EXPECT_GT(LastPersisted(log()), before);

  const int status = writer->Terminate(absl::Seconds(60));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << Tail(log());
  EXPECT_EQ(Count(log(), "error seq="), 0u) << Tail(log());
  ExpectBlocksExact({{0, blocks}}, {LastPersisted(log())});
  TearDownVolumeAndExpectNothingLeft();
}

// A shared xfs volume grows twice under a writer on its owner node-a
// (local mapping) and one on node-b (remote, TCP fabric), each grow driven
// as the external-resizer drives it (ControllerExpandVolume on node-a
// again until OK), with node-b's agent, the remote holder's, killed with
// SIGKILL and started again at another step: while the Reshape recall runs
// (the first "recall in progress"), and once the volume is Quiesced (the
// holder released, the grow under way). Each grow ends Ready at the next
// epoch, larger, with its one Reshape recall released by both holders and
// nobody revoked; both writers go on at each epoch and never see an error;
// every block holds exactly what its writer last persisted there; after
// unpublish, unstage and delete nothing is left to force.
TEST_F(AgentRestartTwoNodeTest, GrowSurvivesKillNineOfTheHolderAgent) {
  auto& a = cluster_->a();
  auto& b = cluster_->b();
  uint64_t size = 320 << 20;
  SetUpVolume("grow", size, "xfs");
  ASSERT_FALSE(HasFailure());
  const uint64_t half = std::filesystem::file_size(data_path_) / kBlock / 2;
  ASSERT_GT(half, 1000u);
  std::unique_ptr<NodeProcess> writers[2] = {
      StartWriter(a, on_a_, 0, half, "grow-writer-a"),
      StartWriter(b, on_b_, half, half, "grow-writer-b")};
  ASSERT_TRUE(writers[0] != nullptr && writers[1] != nullptr);
  auto log = [&](int w) { return ReadFile(writers[w]->log_path()); };
  for (int w = 0; w < 2; ++w) {
    ASSERT_TRUE(
        Until([&] { return LastPersisted(log(w)) >= 50; }, absl::Seconds(60)))
        << log(w);
  }

  enum Kill { kHolderAgentOnRecall, kHolderAgentQuiesced };
  int64_t capacity = 0;
  uint64_t data_bytes = std::filesystem::file_size(data_path_);
  for (Kill kill : {kHolderAgentOnRecall, kHolderAgentQuiesced}) {
    SCOPED_TRACE(absl::StrCat("kill step ", kill));
    const int64_t epoch = Epoch();
    const std::string recall = absl::StrCat(id_, "-reshape-e", epoch);
    size += 16 << 20;
    const std::string req = Json{
        {"volumeId", id_},
        {"capacityRange", {{"requiredBytes", std::to_string(size)}}},
        {"volumeCapability",
         Cap()}}.dump();
    bool killed = false;
    absl::StatusOr<std::string> ans;
    const absl::Time end = absl::Now() + absl::Seconds(120);
    while (absl::Now() < end) {
      ans = CallJson(a.csi_channel, "/csi.v1.Controller/ControllerExpandVolume",
                     req);
      if (ans.ok()) break;
      if (!killed && absl::IsUnavailable(ans.status()) &&
          absl::StrContains(ans.status().message(), "recall in progress")) {
        if (kill == kHolderAgentQuiesced) {
          ASSERT_TRUE(Until(
              [&] {
                return Get("daxvolumes", id_, "{.status.phase}") == "Quiesced";
              },
              absl::Seconds(60)))
              << Get("daxvolumes", id_, "{.status}");
        }
        killed = true;
        ASSERT_TRUE(cluster_->RestartAgent(b, SIGKILL).ok());
      }
      absl::SleepFor(absl::Milliseconds(100));
    }
    ASSERT_TRUE(ans.ok()) << ans.status();
    EXPECT_TRUE(killed);
    EXPECT_EQ(Json::parse(*ans).value("capacityBytes", ""),
              std::to_string(size));
    ASSERT_TRUE(Until(
        [&] {
          return Get("daxvolumes", id_, "{.status.phase} {.status.epoch}") ==
                 absl::StrCat("Ready ", epoch + 1);
        },
        absl::Seconds(60)))
        << Get("daxvolumes", id_, "{.status}");
    EXPECT_EQ(Get("daxrecalls", recall, "{.status.phase}"), "Complete");
    EXPECT_EQ(Get("daxrecalls", recall, "{.status.released}"), "2");
    EXPECT_EQ(Get("daxrecalls", recall, "{.status.revoked}"), "");  // 0
    const int64_t grown =
        std::stoll(Get("daxvolumes", id_, "{.status.capacityBytes}"));
    EXPECT_GT(grown, capacity);
    capacity = grown;
    // The owner's data file (the volume the holders map) grew with it.
    const uint64_t data_size = std::filesystem::file_size(data_path_);
    EXPECT_GT(data_size, data_bytes);
    data_bytes = data_size;
    for (int w = 0; w < 2; ++w) {
      ASSERT_TRUE(Until(
          [&] {
            return absl::StrContains(log(w),
                                     absl::StrCat(" epoch=", epoch + 1, "\n"));
          },
          absl::Seconds(60)))
          << "writer " << w << " did not go on at epoch " << epoch + 1 << "\n"
          << Tail(log(w));
    }
  }

  uint64_t last[2];
  for (int w = 0; w < 2; ++w) {
    const int status = writers[w]->Terminate(absl::Seconds(60));
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << Tail(log(w));
    EXPECT_EQ(Count(log(w), "error seq="), 0u);
    last[w] = LastPersisted(log(w));
  }
  ExpectBlocksExact({{0, half}, {half, half}}, {last[0], last[1]});
  TearDownVolumeAndExpectNothingLeft();
}

// Migrations paced at 8 MiB/s (a 64 MiB volume copies in about 8 s, so a
// kill lands mid-copy), with a 20 s stall timeout.
class MigrationAgentRestartTwoNodeTest : public AgentRestartTwoNodeTest {
 protected:
  MigrationAgentRestartTwoNodeTest() {
    options_.operator_args = {"--resync=5s", "--migration-stall-timeout=20s"};
    options_.agent_args = {"--migration-max-bytes-per-second=8388608"};
  }

  // `kubectl daxlease migrate VOLUME --to NODE`; the DaxMigration's name.
  std::string Migrate(const std::string& to) {
    auto r = sys::RunCommand({DAXLEASE_PLUGIN_BIN,
                              "--kubeconfig=" + cluster_->kubeconfig(),
                              "migrate", id_, "--to", to});
    EXPECT_TRUE(r.ok() && r->exit_code == 0)
        << (r.ok() ? r->stderr_text : r.status().ToString());
    if (!r.ok()) return "";
    const std::string& out = r->stdout_text;
    const size_t slash = out.find('/');
    const size_t space = out.find(' ');
    if (slash == std::string::npos || space == std::string::npos) return "";
    return out.substr(slash + 1, space - slash - 1);
  }

  std::string MediaOf(const TwoNodeCluster::Node& n) {
    return absl::StrCat(n.dir, "/agent/media/", id_, "/data");
  }
  // Whether `n` holds the volume's data: its agent's media, or (node-a)
  // the data file under the CSI staging mount.
  bool HasData(const TwoNodeCluster::Node& n) {
    return ::access(MediaOf(n).c_str(), F_OK) == 0 ||
           (&n == &cluster_->a() && ::access(data_path_.c_str(), F_OK) == 0);
  }
  TwoNodeCluster::Node& Owner() {
    return Get("daxvolumes", id_, "{.spec.ownerNode}") == "node-b"
               ? cluster_->b()
               : cluster_->a();
  }
};

// Three migrations under a busy local writer on node-a and a busy remote
// writer on node-b, an agent killed with SIGKILL and started again in each:
// the holder's (the target node, whose pod holds the volume through it)
// as soon as the migration exists (the recall is usually over by then:
// the phase at each kill is printed), the
// target's mid-copy, the source's (the owner, its pod's writer local) mid-copy.
// Each migration ends Complete (the agent restarted within the stall timeout
// picks the copy up again) or Failed and rolled back, and either way: the
// volume Ready at the next epoch on the node the phase says, nobody revoked by
// its recall, only that node holding data (no media leaked), both writers going
// on at that epoch (local ones turned remote and the reverse); at the end every
// block is what its writer last persisted, on the owner's media.
TEST_F(MigrationAgentRestartTwoNodeTest, KillNineOfEachAgentMidMigration) {
  auto& a = cluster_->a();
  auto& b = cluster_->b();
  SetUpVolume("migrate", 64 << 20);
  ASSERT_FALSE(HasFailure());
  const uint64_t half = std::filesystem::file_size(data_path_) / kBlock / 2;
  std::unique_ptr<NodeProcess> writers[2] = {
      StartWriter(a, on_a_, 0, half, "migrate-writer-a"),
      StartWriter(b, on_b_, half, half, "migrate-writer-b")};
  ASSERT_TRUE(writers[0] != nullptr && writers[1] != nullptr);
  auto log = [&](int w) { return ReadFile(writers[w]->log_path()); };
  for (int w = 0; w < 2; ++w) {
    ASSERT_TRUE(
        Until([&] { return LastPersisted(log(w)) >= 50; }, absl::Seconds(60)))
        << Tail(log(w));
  }

  enum Victim { kHolderOnRecall, kTargetMidCopy, kSourceMidCopy };
  for (Victim victim : {kHolderOnRecall, kTargetMidCopy, kSourceMidCopy}) {
    SCOPED_TRACE(absl::StrCat("victim ", victim));
    TwoNodeCluster::Node& from = Owner();
    TwoNodeCluster::Node& to = &from == &a ? b : a;
    const int64_t e = Epoch();
    const std::string name = Migrate(to.name);
    ASSERT_FALSE(name.empty());
    auto phase = [&] { return Get("daxmigrations", name, "{.status.phase}"); };
    if (victim == kHolderOnRecall) {
      // At once, while the operator starts the Migrate recall. (Its
      // holders ack within a fraction of a second: so far the phase read
      // just before the kill, printed, has always been Copying already.)
    } else {
      ASSERT_TRUE(Until(
          [&] {
            int64_t copied = 0;
            return phase() == "Copying" &&
                   absl::SimpleAtoi(
                       Get("daxmigrations", name, "{.status.bytesCopied}"),
                       &copied) &&
                   copied > 0;
          },
          absl::Seconds(60)))
          << Get("daxmigrations", name, "{.status}");
    }
    const std::string killed_at = phase();
    ASSERT_TRUE(
        cluster_->RestartAgent(victim == kSourceMidCopy ? from : to, SIGKILL)
            .ok());
    std::string done;
    ASSERT_TRUE(Until(
        [&] {
          done = phase();
          return done == "Complete" || done == "Failed";
        },
        absl::Seconds(120)))
        << "killed at " << killed_at << ": "
        << Get("daxmigrations", name, "{.status}");
    TwoNodeCluster::Node& owner = done == "Complete" ? to : from;
    TwoNodeCluster::Node& other = done == "Complete" ? from : to;
    EXPECT_TRUE(Until(
        [&] {
          return Get("daxvolumes", id_, "{.status.phase}") == "Ready" &&
                 Epoch() == e + 1;
        },
        absl::Seconds(60)))
        << "killed at " << killed_at << ", " << done << ": "
        << Get("daxvolumes", id_, "{.status}");
    EXPECT_EQ(Get("daxvolumes", id_, "{.spec.ownerNode}"), owner.name);
    const std::string recall = absl::StrCat(id_, "-migrate-e", e);
    EXPECT_EQ(Get("daxrecalls", recall, "{.status.phase}"), "Complete");
    EXPECT_EQ(Get("daxrecalls", recall, "{.status.revoked}"), "");  // 0
    EXPECT_TRUE(Until([&] { return HasData(owner) && !HasData(other); },
                      absl::Seconds(60)))
        << "data on " << owner.name << ": " << HasData(owner) << ", on "
        << other.name << ": " << HasData(other);
    for (int w = 0; w < 2; ++w) {
      ASSERT_TRUE(Until(
          [&] {
            return absl::StrContains(log(w),
                                     absl::StrCat(" epoch=", e + 1, "\n"));
          },
          absl::Seconds(60)))
          << "writer " << w << " did not go on at epoch " << e + 1 << "\n"
          << Tail(log(w));
    }
    std::cerr << "victim " << victim << " killed at " << killed_at << ": "
              << done << "\n";
  }

  uint64_t last[2];
  for (int w = 0; w < 2; ++w) {
    const int status = writers[w]->Terminate(absl::Seconds(60));
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << Tail(log(w));
    EXPECT_EQ(Count(log(w), "error seq="), 0u);
    last[w] = LastPersisted(log(w));
  }
  TwoNodeCluster::Node& owner = Owner();
  data_path_ =
      ::access(MediaOf(owner).c_str(), F_OK) == 0 ? MediaOf(owner) : data_path_;
  ExpectBlocksExact({{0, half}, {half, half}}, {last[0], last[1]});
}

}  // namespace
}  // namespace daxlease::testing
