// A shared volume across two simulated nodes (label twonode): created and
// staged on its owner node-a through real gRPC CSI calls, published there and
// on node-b (another node of the same fabric), and daxlease-io on each node,
// inside that node's network namespace, writes through the published
// directory what the other node reads back: on node-a through the local
// mapping, on node-b through the agents' TCP fabric over the veth.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <optional>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/api/label_value.h"
#include "nlohmann/json.hpp"
#include "tests/integration/plugin_harness.h"
#include "tests/testing/prereq.h"
#include "tests/twonode/daxlease_io_output.h"
#include "tests/twonode/two_node_cluster.h"
#include "tests/twonode/two_node_volume_test.h"

namespace daxlease::testing {
namespace {

using Json = nlohmann::json;

// What a `daxlease-io pattern` log says about the epochs: the last sequence
// number persisted at `epoch` and the first one persisted after it.
struct PatternLog {
  uint64_t last_at = 0;      // last "persisted seq=N ... epoch=<epoch>"
  uint64_t first_after = 0;  // first seq persisted at a later epoch (0: none)
};
PatternLog ReadPatternLog(const std::string& log, int64_t epoch) {
  PatternLog out;
  for (absl::string_view line : absl::StrSplit(log, '\n')) {
    const std::optional<PersistedLine> p = ParsePersistedLine(line);
    if (!p.has_value()) continue;
    if (p->epoch == epoch) out.last_at = p->seq;
    if (p->epoch > epoch && out.first_after == 0) out.first_after = p->seq;
  }
  return out;
}

class SharedVolumeTwoNodeTest : public TwoNodeVolumeTest {};

TEST_F(SharedVolumeTwoNodeTest,
       PublishedOnBothNodesEachReadsWhatTheOtherWrote) {
  auto& a = cluster_->a();
  auto& b = cluster_->b();
  const Json volume = CreateShared("shared");
  ASSERT_TRUE(volume.contains("volumeId")) << volume.dump();
  const std::string id = volume.at("volumeId");
  // Reachable from the whole fabric, and it says where it lives.
  EXPECT_EQ(volume.at("accessibleTopology")[0]["segments"].dump(),
            R"({"daxlease.io/fabric":"fabric-1"})");
  EXPECT_EQ(volume.at("volumeContext").value("daxlease.io/ownerNode", ""),
            "node-a");
  // The operator knows it: the DaxVolume the owner's agent recorded.
  auto dv = cluster_->Kubectl({"get", "daxvolume", id, "-o",
                               "jsonpath={.spec.ownerNode} {.spec.share}"});
  ASSERT_TRUE(dv.ok()) << dv.status();
  EXPECT_EQ(dv->stdout_text, "node-a true") << dv->stderr_text;

  const std::string on_a = StageAndPublish(a, volume, "pod-a");
  const std::string on_b = StageAndPublish(b, volume, "pod-b");
  ASSERT_FALSE(HasFailure());
  // The published directories: descriptor + agent socket on both, the
  // volume itself on the owner only.
  for (const std::string& dir : {on_a, on_b}) {
    Json d = Json::parse(ReadFile(dir + "/daxlease.json"), nullptr, false);
    ASSERT_FALSE(d.is_discarded()) << dir;
    EXPECT_EQ(d.value("volume", ""), id);
    EXPECT_EQ(d.value("ownerNode", ""), "node-a");
    EXPECT_EQ(::access((dir + "/agent.sock").c_str(), F_OK), 0) << dir;
  }
  EXPECT_TRUE(Json::parse(ReadFile(on_a + "/daxlease.json"))
                  .value("ownerLocal", false));
  EXPECT_EQ(::access((on_a + "/volume/.daxlease/data").c_str(), F_OK), 0);
  EXPECT_NE(::access((on_b + "/volume").c_str(), F_OK), 0);

  // node-a writes, node-b reads it over the fabric; and back.
  const std::string from_a = Pattern(64 * 1024, 11);
  const std::string from_b = Pattern(64 * 1024, 22);
  sys::CommandResult w = Io(a, {"write", on_a, "0"}, from_a);
  ASSERT_EQ(w.exit_code, 0) << w.stderr_text;
  sys::CommandResult r = Io(b, {"cat", on_b, "0", "65536"});
  ASSERT_EQ(r.exit_code, 0) << r.stderr_text;
  EXPECT_TRUE(r.stdout_text == from_a) << "node-b read other bytes";
  w = Io(b, {"write", on_b, "1048576"}, from_b);
  ASSERT_EQ(w.exit_code, 0) << w.stderr_text;
  r = Io(a, {"cat", on_a, "1048576", "65536"});
  ASSERT_EQ(r.exit_code, 0) << r.stderr_text;
  EXPECT_TRUE(r.stdout_text == from_b) << "node-a read other bytes";
  // Both landed in the owner's memory (the data file under the DAX mount).
  const std::string data = ReadFile(on_a + "/volume/.daxlease/data");
  ASSERT_GE(data.size(), 1048576u + 65536u);
  EXPECT_TRUE(data.substr(0, 65536) == from_a);
  EXPECT_TRUE(data.substr(1048576, 65536) == from_b);

  // Unpublish ends each pod's sessions and deletes its lease.
  for (auto* n : {&b, &a}) {
    Call(*n, "/csi.v1.Node/NodeUnpublishVolume",
         {{"volumeId", id}, {"targetPath", n == &a ? on_a : on_b}});
    EXPECT_THAT(MountsUnder(n == &a ? on_a : on_b), ::testing::IsEmpty())
        << n->name;
  }
  // A deleted lease that holds access is its holder's release: the
  // operator releases and forgets it without any recall (before, it stayed
  // DeletionBlocked and the owner refused to unstage until a recall).
  ASSERT_EQ(UntilNone({"get", "daxleases", "-l", api::VolumeLabelSelector(id),
                       "-o", "name"}),
            "")
      << "leases left";

  // Now the volume unstages on both nodes and is deleted with its
  // DaxVolume; nothing is left mounted.
  for (auto* n : {&b, &a}) {
    Call(*n, "/csi.v1.Node/NodeUnstageVolume",
         {{"volumeId", id},
          {"stagingTargetPath", n->kubelet_dir + "/staging/" + id}});
    EXPECT_THAT(MountsUnder(n->kubelet_dir + "/staging/" + id),
                ::testing::IsEmpty())
        << n->name;
  }
  Call(a, "/csi.v1.Controller/DeleteVolume", {{"volumeId", id}});
  EXPECT_EQ(
      UntilNone({"get", "daxvolumes", "--ignore-not-found", id, "-o", "name"}),
      "");
}

// A writer on the owner (daxlease-io pattern: checksummed blocks, each
// persisted) runs through a recall: both holders flush and release, the
// volume moves to the next epoch, the writer goes on there, and node-b,
// remotely, finds every block intact up to the writer's last persisted one.
TEST_F(SharedVolumeTwoNodeTest,
       OwnerWriterGoesOnThroughARecallAndNodeBVerifies) {
  auto& a = cluster_->a();
  auto& b = cluster_->b();
  const Json volume = CreateShared("recall");
  ASSERT_TRUE(volume.contains("volumeId"));
  const std::string id = volume.at("volumeId");
  const std::string on_a = StageAndPublish(a, volume, "writer");
  const std::string on_b = StageAndPublish(b, volume, "reader");
  ASSERT_FALSE(HasFailure());

  auto writer =
      NodeProcess::Start(a.netns, {IoBinary(), "pattern", on_a, "4096", "12"},
                         TestFile("writer-a.log"));
  ASSERT_TRUE(writer.ok()) << writer.status();
  auto log = [&] { return ReadFile((*writer)->log_path()); };
  ASSERT_TRUE(
      Until([&] { return absl::StrContains(log(), "persisted seq=100 "); },
            absl::Seconds(60)))
      << log();
  const std::string recall = Recall(id, 5);
  ASSERT_TRUE(Until(
      [&] {
        return Get("daxrecalls", recall, "{.status.phase}") == "Complete";
      },
      absl::Seconds(60)));
  EXPECT_EQ(Get("daxrecalls", recall, "{.status.released}"), "2");
  EXPECT_EQ(Get("daxrecalls", recall, "{.status.revoked}"), "");  // 0
  // The volume is written after the recall: wait for its new epoch.
  EXPECT_TRUE(
      Until([&] { return Get("daxvolumes", id, "{.status.epoch}") == "2"; },
            absl::Seconds(30)));

  absl::StatusOr<int> exited = (*writer)->Wait(absl::Seconds(60));
  ASSERT_TRUE(exited.ok()) << exited.status();
  EXPECT_TRUE(WIFEXITED(*exited) && WEXITSTATUS(*exited) == 0) << log();
  const std::string out = log();
  EXPECT_THAT(out, ::testing::HasSubstr(" epoch=2")) << "went on at epoch 2";
  const std::optional<uint64_t> seq = LastPersistedSeq(out);
  ASSERT_TRUE(seq.has_value()) << "no persisted line in the writer's log\n"
                               << out;

  sys::CommandResult v = Io(b, {"verify", on_b, "4096"});
  EXPECT_EQ(v.exit_code, 0) << v.stdout_text << v.stderr_text;
  EXPECT_THAT(v.stdout_text, ::testing::HasSubstr(" corrupt=0 "));
  const std::optional<VerifySummary> verified = ParseVerify(v.stdout_text);
  ASSERT_TRUE(verified.has_value()) << v.stdout_text << v.stderr_text;
  EXPECT_EQ(verified->maxseq, *seq) << v.stdout_text;
}

// A shared xfs volume grows four times under a writer on its owner node-a
// (local mapping) and one on node-b (remote, TCP fabric), each grow driven
// as the external-resizer drives it (ControllerExpandVolume on node-a again
// until OK), each with a kill -9 of node-a's daxlease-csi at another step:
// on the first "recall in progress", once the volume is Quiesced, in the
// middle of the call that completes the grow (once the agent has remapped),
// after the OK. Every grow ends Ready at the next epoch, larger, with its
// one Reshape recall released by both holders and nobody revoked; the
// writers go on at each epoch and never see an error; every block holds
// exactly what its writer last persisted there; after unpublish, unstage
// and delete nothing is left to force.
//
// Not here: kill -9 of node-b's agent (the remote holder's). The published
// directory's agent.sock is a bind mount of the agent's socket file, so a
// restarted agent (a new socket inode) is out of the pod's reach: the client
// never reconnects and is revoked at the recall's deadline (docs/csi.md).
TEST_F(SharedVolumeTwoNodeTest, GrowSurvivesKillNineOfThePluginAtEachStep) {
  auto& a = cluster_->a();
  auto& b = cluster_->b();
  const Json volume = CreateShared("grow", 320 << 20, 10, "xfs");
  ASSERT_TRUE(volume.contains("volumeId")) << volume.dump();
  const std::string id = volume.at("volumeId");
  const std::string on_a = StageAndPublish(a, volume, "grow-a");
  const std::string on_b = StageAndPublish(b, volume, "grow-b");
  ASSERT_FALSE(HasFailure());
  const std::string data_path = on_a + "/volume/.daxlease/data";
  const uint64_t half = std::filesystem::file_size(data_path) / kBlock / 2;
  ASSERT_GT(half, 1000u);

  std::unique_ptr<NodeProcess> writers[2] = {
      StartWriter(a, on_a, 3600, 0, half, "grow-writer-0"),
      StartWriter(b, on_b, 3600, half, half, "grow-writer-1")};
  ASSERT_TRUE(writers[0] != nullptr && writers[1] != nullptr);
  auto log = [&](int w) { return ReadFile(writers[w]->log_path()); };
  for (int w = 0; w < 2; ++w) {
    ASSERT_TRUE(
        Until([&] { return LastPersisted(log(w)) >= 50; }, absl::Seconds(60)))
        << log(w);
  }

  enum Kill { kCsiOnRecall, kCsiQuiesced, kCsiMidComplete, kCsiAfterOk };
  uint64_t size = 320 << 20;
  int64_t capacity = 0;
  uint64_t file_size = std::filesystem::file_size(data_path);
  for (Kill kill : {kCsiOnRecall, kCsiQuiesced, kCsiMidComplete, kCsiAfterOk}) {
    SCOPED_TRACE(absl::StrCat("kill step ", kill));
    const int64_t epoch = std::stoll(Get("daxvolumes", id, "{.status.epoch}"));
    const std::string recall = absl::StrCat(id, "-reshape-e", epoch);
    size += 16 << 20;
    const std::string req = Json{
        {"volumeId", id},
        {"capacityRange", {{"requiredBytes", std::to_string(size)}}},
        {"volumeCapability",
         Cap()}}.dump();
    bool killed = false;
    auto quiesced = [&] {
      return Until(
          [&] {
            return Get("daxvolumes", id, "{.status.phase}") == "Quiesced";
          },
          absl::Seconds(60));
    };
    absl::StatusOr<std::string> ans;
    bool recalling = false;  // a call answered "recall in progress"
    const absl::Time end = absl::Now() + absl::Seconds(120);
    while (absl::Now() < end) {
      if (kill == kCsiMidComplete && !killed && recalling) {
        // No call until the volume is Quiesced (it stays so until the
        // completing call): a call made as it turns Quiesced would complete
        // the grow unkilled.
        ASSERT_TRUE(quiesced()) << Get("daxvolumes", id, "{.status}");
        // The call that grows the data file and marks the volume, with the
        // plugin killed under it as soon as the agent has done its part.
        const std::string agent_log = a.agent->log_path();
        const size_t before = Count(ReadFile(agent_log), "agent.reshaped");
        std::thread call([&] {
          (void)CallJson(a.csi_channel,
                         "/csi.v1.Controller/ControllerExpandVolume", req);
        });
        EXPECT_TRUE(Until(
            [&] {
              return Count(ReadFile(agent_log), "agent.reshaped") > before;
            },
            absl::Seconds(60)));
        killed = true;
        absl::Status restarted = cluster_->RestartCsi(a);
        call.join();
        ASSERT_TRUE(restarted.ok()) << restarted;
        continue;
      }
      ans = CallJson(a.csi_channel, "/csi.v1.Controller/ControllerExpandVolume",
                     req);
      if (ans.ok()) {
        if (kill == kCsiAfterOk && !killed) {
          killed = true;
          ASSERT_TRUE(cluster_->RestartCsi(a).ok());
          continue;  // the retry must answer OK again without a recall
        }
        break;
      }
      if (absl::IsUnavailable(ans.status()) &&
          absl::StrContains(ans.status().message(), "recall in progress")) {
        recalling = true;
      }
      if (absl::IsUnavailable(ans.status()) &&
          absl::StrContains(ans.status().message(), "recall in progress") &&
          !killed) {
        switch (kill) {
          case kCsiOnRecall:
            killed = true;
            ASSERT_TRUE(cluster_->RestartCsi(a).ok());
            break;
          case kCsiQuiesced:
            ASSERT_TRUE(quiesced()) << Get("daxvolumes", id, "{.status}");
            killed = true;
            ASSERT_TRUE(cluster_->RestartCsi(a).ok());
            break;
          default:
            break;
        }
      }
      absl::SleepFor(absl::Milliseconds(100));
    }
    ASSERT_TRUE(ans.ok()) << ans.status();
    EXPECT_TRUE(killed);
    const Json done = Json::parse(*ans);
    EXPECT_EQ(done.value("capacityBytes", ""), std::to_string(size));
    ASSERT_TRUE(Until(
        [&] {
          return Get("daxvolumes", id, "{.status.phase} {.status.epoch}") ==
                 absl::StrCat("Ready ", epoch + 1);
        },
        absl::Seconds(60)))
        << Get("daxvolumes", id, "{.status}");
    EXPECT_EQ(Get("daxrecalls", recall, "{.status.phase}"), "Complete");
    EXPECT_EQ(Get("daxrecalls", recall, "{.status.released}"), "2");
    EXPECT_EQ(Get("daxrecalls", recall, "{.status.revoked}"), "");  // 0
    const int64_t grown =
        std::stoll(Get("daxvolumes", id, "{.status.capacityBytes}"));
    EXPECT_GT(grown, capacity);
    capacity = grown;
    // The data file grew by what the grown filesystem holds beside it: less
    // than the capacity (xfs keeps its log and metadata there).
    const uint64_t file = std::filesystem::file_size(data_path);
    EXPECT_GT(file, file_size);
    EXPECT_LE(file, static_cast<uint64_t>(capacity));
    file_size = file;
    for (int w = 0; w < 2; ++w) {
      ASSERT_TRUE(Until(
          [&] {
            return absl::StrContains(log(w),
                                     absl::StrCat(" epoch=", epoch + 1));
          },
          absl::Seconds(60)))
          << "writer " << w << " did not go on at epoch " << epoch + 1 << "\n"
          << log(w).substr(log(w).size() > 3000 ? log(w).size() - 3000 : 0);
    }
  }
  // One Reshape recall per grow: the retries found theirs.
  auto recalls = cluster_->Kubectl(
      {"get", "daxrecalls", "-o", "jsonpath={.items[*].metadata.name}"});
  ASSERT_TRUE(recalls.ok());
  EXPECT_EQ(Count(recalls->stdout_text, absl::StrCat(id, "-reshape-e")), 4u)
      << recalls->stdout_text;

  // The writers stop after the block in hand; neither saw an error.
  uint64_t last[2];
  for (int w = 0; w < 2; ++w) {
    const int status = writers[w]->Terminate(absl::Seconds(60));
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << log(w);
    EXPECT_EQ(Count(log(w), "error seq="), 0u) << log(w);
    last[w] = LastPersisted(log(w));
    EXPECT_GT(last[w], 50u);
  }
  // Every block of the grown data file: checksummed right (daxlease-io
  // verify, through node-b over the fabric), and holding the seq its writer
  // last persisted there (the headers, read on the owner): byte-exact.
  sys::CommandResult v = Io(b, {"verify", on_b, std::to_string(kBlock)});
  EXPECT_EQ(v.exit_code, 0) << v.stdout_text << v.stderr_text;
  EXPECT_THAT(v.stdout_text, ::testing::HasSubstr(" corrupt=0 "));
  const std::string data = ReadFile(data_path);
  EXPECT_EQ(data.size(), file_size);
  uint64_t wrong = 0, first_wrong = 0;
  for (uint64_t i = 0; i < data.size() / kBlock; ++i) {
    uint64_t want = 0;
    if (i < 2 * half) {
      const int w = i < half ? 0 : 1;
      want = PatternSeq(i, w * half, half, last[w]);
    }
    uint64_t seq = 0;  // the header's second word
    std::memcpy(&seq, data.data() + i * kBlock + 8, sizeof(seq));
    if (seq != want && wrong++ == 0) first_wrong = i;
  }
  EXPECT_EQ(wrong, 0u) << "first at block " << first_wrong;

  // Nothing left behind: unpublish, unstage, delete, and nothing of the
  // volume stays mounted or attached.
  TearDownVolumeAndExpectNothingLeft(id);
}

// A remote writer on node-b stops answering (SIGSTOP) during a recall: it is
// revoked at the deadline and fenced by the owner; nothing it sends after the
// fence lands in the owner's memory; once continued, its next call gets
// REVOKED, it reports its unpersisted bytes and exits 3 (alive until then).
TEST_F(SharedVolumeTwoNodeTest,
       StoppedRemoteWriterIsRevokedFencedAndToldOnContinue) {
  auto& a = cluster_->a();
  auto& b = cluster_->b();
  const Json volume = CreateShared("revoke");
  ASSERT_TRUE(volume.contains("volumeId"));
  const std::string id = volume.at("volumeId");
  const std::string on_a = StageAndPublish(a, volume, "owner");
  const std::string on_b = StageAndPublish(b, volume, "writer");
  ASSERT_FALSE(HasFailure());

  auto writer =
      NodeProcess::Start(b.netns, {IoBinary(), "pattern", on_b, "4096", "300"},
                         TestFile("writer-b.log"));
  ASSERT_TRUE(writer.ok()) << writer.status();
  auto log = [&] { return ReadFile((*writer)->log_path()); };
  ASSERT_TRUE(
      Until([&] { return absl::StrContains(log(), "persisted seq=50 "); },
            absl::Seconds(60)))
      << log();
  ASSERT_TRUE((*writer)->Signal(SIGSTOP).ok());
  const std::string recall = Recall(id, 2);
  ASSERT_TRUE(Until(
      [&] {
        return Get("daxrecalls", recall, "{.status.phase}") == "Complete";
      },
      absl::Seconds(60)));
  EXPECT_EQ(Get("daxrecalls", recall, "{.status.revoked}"), "1");
  // The owner confirmed the fence: with the recall channel the DaxRecall
  // records it (the leases the recall revoked, and those fenced); on the
  // status path the owner's agent writes fencedRecallID on the lease.
  if (cluster_->channel()) {
    const std::string revoked =
        Get("daxrecalls", recall, "{.status.revokedLeases[*]}");
    EXPECT_FALSE(revoked.empty());
    EXPECT_EQ(Get("daxrecalls", recall, "{.status.fencedLeases[*]}"), revoked);
  } else {
    const std::string recall_id =
        Get("daxrecalls", recall, "{.status.recallID}");
    auto fenced = cluster_->Kubectl(
        {"get", "daxleases", "-l", api::VolumeLabelSelector(id), "-o",
         "jsonpath={.items[*].status.fencedRecallID}"});
    ASSERT_TRUE(fenced.ok());
    EXPECT_THAT(fenced->stdout_text, ::testing::HasSubstr(recall_id));
  }

  const std::string data_path = on_a + "/volume/.daxlease/data";
  const std::string after_fence = ReadFile(data_path);
  ASSERT_TRUE((*writer)->Signal(SIGCONT).ok());
  absl::StatusOr<int> exited = (*writer)->Wait(absl::Seconds(60));
  ASSERT_TRUE(exited.ok()) << exited.status();
  EXPECT_TRUE(WIFEXITED(*exited) && WEXITSTATUS(*exited) == 3) << log();
  EXPECT_THAT(log(), ::testing::HasSubstr("revoked seq="));
  EXPECT_TRUE(ReadFile(data_path) == after_fence)
      << "a write after the fence landed";
  sys::CommandResult v = Io(a, {"verify", on_a, "4096"});
  EXPECT_EQ(v.exit_code, 0) << v.stdout_text << v.stderr_text;
  EXPECT_THAT(v.stdout_text, ::testing::HasSubstr(" corrupt=0 "));
}

// A snapshot of a shared volume with live holders is taken under a recall
// (reason Snapshot): a writer on the owner (its local mapping) and one on
// node-b (libdaxlease over the TCP fabric) write pattern blocks on disjoint
// ranges; CreateSnapshot answers UNAVAILABLE ("recall in progress") until
// both flushed and released, then copies while the volume is Quiesced and
// answers ready; both writers go on at epoch 2. The snapshot, restored into
// a new volume, holds exactly the blocks the writers had persisted before
// the recall: every block of each range is what the writer's last
// acknowledged sequence number there put in it, byte for byte, and nothing
// written after the resume.
TEST_F(SharedVolumeTwoNodeTest,
       SnapshotUnderRecallHoldsWhatBothWritersAcknowledged) {
  auto& a = cluster_->a();
  auto& b = cluster_->b();
  const Json volume = CreateShared("snap");
  ASSERT_TRUE(volume.contains("volumeId"));
  const std::string id = volume.at("volumeId");
  const std::string on_a = StageAndPublish(a, volume, "writer-a");
  const std::string on_b = StageAndPublish(b, volume, "writer-b");
  ASSERT_FALSE(HasFailure());

  constexpr uint64_t kCount = 4096;  // 16 MiB per writer
  struct Writer {
    const TwoNodeCluster::Node* node;
    std::string dir;
    uint64_t first;
    std::unique_ptr<NodeProcess> proc;
  };
  Writer writers[] = {{&a, on_a, 0, nullptr}, {&b, on_b, kCount, nullptr}};
  for (Writer& w : writers) {
    auto p = NodeProcess::Start(
        w.node->netns,
        {IoBinary(), "pattern", w.dir, absl::StrCat(kBlock), "20",
         absl::StrCat(w.first), absl::StrCat(kCount)},
        TestFile(absl::StrCat("pattern-", w.node->name, ".log")));
    ASSERT_TRUE(p.ok()) << p.status();
    w.proc = std::move(*p);
  }
  for (Writer& w : writers) {
    ASSERT_TRUE(Until(
        [&] {
          return absl::StrContains(ReadFile(w.proc->log_path()),
                                   "persisted seq=100 ");
        },
        absl::Seconds(60)))
        << w.node->name << ": " << ReadFile(w.proc->log_path());
  }

  // The external-snapshotter's loop: retry while the recall runs.
  const Json snap_req = {{"name", VolumeName("snap")}, {"sourceVolumeId", id}};
  Json snap;
  int unavailable = 0;
  std::string last_error;
  const absl::Time start = absl::Now();
  const absl::Time end = start + absl::Seconds(60);
  while (absl::Now() < end) {
    auto r = CallJson(a.csi_channel, "/csi.v1.Controller/CreateSnapshot",
                      snap_req.dump());
    if (r.ok()) {
      snap = Json::parse(*r).value("snapshot", Json::object());
      break;
    }
    last_error = r.status().ToString();
    ASSERT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << last_error;
    EXPECT_THAT(last_error, ::testing::HasSubstr("recall in progress"));
    ++unavailable;
    absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_TRUE(snap.contains("snapshotId")) << last_error;
  const absl::Duration took = absl::Now() - start;
  EXPECT_GE(unavailable, 1) << "answered before any recall";
  EXPECT_TRUE(snap.value("readyToUse", false));
  const std::string snap_id = snap.at("snapshotId");
  const std::string recall = absl::StrCat(id, "-snapshot-e1");
  EXPECT_EQ(Get("daxrecalls", recall, "{.spec.reason}"), "Snapshot");
  EXPECT_EQ(Get("daxrecalls", recall, "{.status.phase}"), "Complete");
  EXPECT_EQ(Get("daxrecalls", recall, "{.status.released}"), "2");
  EXPECT_EQ(Get("daxrecalls", recall, "{.status.revoked}"), "");  // 0
  EXPECT_TRUE(Until(
      [&] {
        return Get("daxvolumes", id, "{.status.phase} {.status.epoch}") ==
               "Ready 2";
      },
      absl::Seconds(30)))
      << Get("daxvolumes", id, "{.status}");

  // Both go on at epoch 2 and finish without an error.
  std::vector<PatternLog> logs;
  for (Writer& w : writers) {
    absl::StatusOr<int> exited = w.proc->Wait(absl::Seconds(60));
    ASSERT_TRUE(exited.ok()) << exited.status();
    const std::string log = ReadFile(w.proc->log_path());
    EXPECT_TRUE(WIFEXITED(*exited) && WEXITSTATUS(*exited) == 0)
        << w.node->name << ": "
        << log.substr(log.size() - std::min<size_t>(log.size(), 2000));
    logs.push_back(ReadPatternLog(log, 1));
    EXPECT_GT(logs.back().last_at, 0u) << w.node->name;
    EXPECT_GT(logs.back().first_after, 0u)
        << w.node->name << " did not go on at epoch 2";
  }

  // The snapshot's bytes: restored into a new shared volume on node-a and
  // published there. For each writer's range, `daxlease-io verify` checks
  // every block (its checksum over header and payload, its index) and says
  // the newest seq in it; each block's header (read from the data file)
  // holds the seq the writer's sequence 1..that left there. A block of the
  // right seq whose checksum holds is the writer's block byte for byte
  // (the payload is a function of seq and index).
  Json restored =
      Call(a, "/csi.v1.Controller/CreateVolume",
           {{"name", VolumeName("restore")},
            {"capacityRange", {{"requiredBytes", "67108864"}}},
            {"parameters", {{"daxlease.io/share", "true"}}},
            {"volumeContentSource", {{"snapshot", {{"snapshotId", snap_id}}}}},
            {"volumeCapabilities", Json::array({Cap()})}})
          .value("volume", Json::object());
  ASSERT_TRUE(restored.contains("volumeId")) << restored.dump();
  const std::string rid = restored.at("volumeId");
  const std::string on_r = StageAndPublish(a, restored, "restored");
  ASSERT_FALSE(HasFailure());
  const std::string data = ReadFile(on_r + "/volume/.daxlease/data");
  ASSERT_GE(data.size(), 2 * kCount * kBlock);
  for (size_t w = 0; w < 2; ++w) {
    const uint64_t first = writers[w].first;
    const std::string who = writers[w].node->name;
    sys::CommandResult v =
        Io(a, {"verify", on_r, std::to_string(kBlock), std::to_string(first),
               std::to_string(kCount)});
    EXPECT_EQ(v.exit_code, 0) << who << ": " << v.stdout_text << v.stderr_text;
    EXPECT_THAT(v.stdout_text, ::testing::HasSubstr(" corrupt=0 ")) << who;
    const std::optional<VerifySummary> verified = ParseVerify(v.stdout_text);
    ASSERT_TRUE(verified.has_value())
        << who << ": " << v.stdout_text << v.stderr_text;
    const uint64_t top = verified->maxseq;  // the last seq in the snapshot
    // Everything acknowledged before the recall is in it; nothing persisted
    // after the resume is (the first line logged at epoch 2 may be a write
    // persisted just before the recall).
    EXPECT_GE(top, logs[w].last_at) << who;
    EXPECT_LE(top, logs[w].first_after) << who;
    uint64_t wrong = 0, first_wrong = 0;
    for (uint64_t i = first; i < first + kCount; ++i) {
      uint64_t seq = 0;  // the header's second word
      std::memcpy(&seq, data.data() + i * kBlock + 8, sizeof(seq));
      if (seq != PatternSeq(i, first, kCount, top) && wrong++ == 0) {
        first_wrong = i;
      }
    }
    EXPECT_EQ(wrong, 0u) << who << ": first at block " << first_wrong
                         << " of top " << top;
    std::cout << "snapshot under recall: " << who << " acknowledged at epoch 1 "
              << logs[w].last_at << ", in the snapshot " << top
              << ", first at epoch 2 " << logs[w].first_after << "\n";
  }
  std::cout << "snapshot under recall: CreateSnapshot ready after "
            << absl::ToInt64Milliseconds(took) << " ms (" << unavailable
            << " UNAVAILABLE answers 100 ms apart)\n";

  TearDownVolumeAndExpectNothingLeft(rid);
  Call(a, "/csi.v1.Controller/DeleteSnapshot", {{"snapshotId", snap_id}});
}

}  // namespace
}  // namespace daxlease::testing
