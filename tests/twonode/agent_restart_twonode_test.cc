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
#include "tests/twonode/two_node_volume_test.h"

namespace daxlease::testing {
namespace {

using Json = nlohmann::json;

class AgentRestartTwoNodeTest : public TwoNodeVolumeTest {
 protected:
  // A shared volume on node-a, staged and published to a pod on node-a
  // (on_a_) and one on node-b (on_b_).
  void SetUpVolume(const std::string& suffix, uint64_t bytes,
                   const std::string& fs_type = "ext4") {
    const Json volume = CreateShared(suffix, bytes, 10, fs_type);
    ASSERT_TRUE(volume.contains("volumeId")) << volume.dump();
    id_ = volume.at("volumeId");
    on_a_ = StageAndPublish(cluster_->a(), volume, "pod-a");
    on_b_ = StageAndPublish(cluster_->b(), volume, "pod-b");
    ASSERT_FALSE(HasFailure());
    data_path_ = on_a_ + "/volume/.daxlease/data";
  }

  int64_t Epoch() { return TwoNodeVolumeTest::Epoch(id_); }

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

  Json volume_;
  std::string id_, on_a_, on_b_, data_path_;
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
      StartWriter(b, on_b_, 3600, 0, blocks, "writer-b");
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
                            /*input=*/"", /*timeout_ms=*/20000);
  EXPECT_EQ(v.exit_code, 0) << v.stdout_text << v.stderr_text;
  EXPECT_THAT(v.stdout_text, ::testing::HasSubstr(" corrupt=0 "));

  const uint64_t before = LastPersisted(log());
  const std::string recall = Recall(id_, 10);
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
  TearDownVolumeAndExpectNothingLeft(id_);
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
      StartWriter(a, on_a_, 3600, 0, half, "grow-writer-a"),
      StartWriter(b, on_b_, 3600, half, half, "grow-writer-b")};
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
  TearDownVolumeAndExpectNothingLeft(id_);
}

// Migrations paced at 8 MiB/s (a 64 MiB volume copies in about 8 s, so a
// kill lands mid-copy), with a 20 s stall timeout.
class MigrationAgentRestartTwoNodeTest : public AgentRestartTwoNodeTest {
 protected:
  TwoNodeOptions Options() const override {
    TwoNodeOptions o;
    o.operator_args = {"--resync=5s", "--migration-stall-timeout=20s"};
    o.agent_args = {"--migration-max-bytes-per-second=8388608"};
    return o;
  }

  std::string MediaOf(const TwoNodeCluster::Node& n) {
    return TwoNodeVolumeTest::MediaOf(n, id_);
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
      StartWriter(a, on_a_, 3600, 0, half, "migrate-writer-a"),
      StartWriter(b, on_b_, 3600, half, half, "migrate-writer-b")};
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
    const std::string name = Migrate(id_, to.name);
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
