// Migration across the two simulated nodes (label twonode): a shared volume
// created and staged on node-a, published there (a writer) and on node-b (a
// reader), moves to node-b with `kubectl daxlease migrate` and back while the
// writer keeps writing checksummed blocks. The DaxMigration runs its recall
// (reason Migrate), the target agent copies the data over the veth, both
// checksums match, the owner switches at the next epoch, the holders follow
// (the writer local -> remote -> local), the old media is freed, and node-b
// reads every block intact up to the writer's last persisted one.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
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

class MigrationTwoNodeTest : public TwoNodeVolumeTest {
 protected:
  TwoNodeOptions Options() const override {
    TwoNodeOptions o;
    o.operator_args = {"--resync=5s", "--migration-stall-timeout=20s"};
    if (!pre_copy_) o.operator_args.push_back("--migration-pre-copy=false");
    o.agent_args = agent_args_;
    return o;
  }

  void TearDown() override {
    writer_.reset();  // before its volume goes
    TwoNodeVolumeTest::TearDown();
  }

  // Waits for the migration to finish; its phase.
  std::string AwaitMigration(const std::string& name) {
    std::string phase;
    Until(
        [&] {
          phase = Get("daxmigrations", name, "{.status.phase}");
          return phase == "Complete" || phase == "Failed";
        },
        absl::Seconds(120));
    return phase;
  }

  // A shared 64 MiB volume `name` on node-a, published to a writer pod
  // there and a reader pod on node-b; a daxlease-io pattern writer on
  // node-a (on node-b, through the reader pod's mount, with `writer_on_b`)
  // for `seconds`, over its first `blocks` 4 KiB blocks (0: all of it),
  // started and past its 100th block.
  void SetUpVolumeAndWriter(int seconds, bool writer_on_b = false,
                            const std::string& name = "migrate",
                            int blocks = 0) {
    auto& a = cluster_->a();
    auto& b = cluster_->b();
    const Json volume = CreateShared(name, 64 << 20, 10);
    ASSERT_TRUE(volume.contains("volumeId")) << volume.dump();
    id_ = volume.at("volumeId");
    on_a_ = StageAndPublish(a, volume, "writer");
    on_b_ = StageAndPublish(b, volume, "reader");
    ASSERT_FALSE(HasFailure());
    source_data_ = on_a_ + "/volume/.daxlease/data";
    ASSERT_TRUE(Exists(source_data_));
    writer_blocks_ = blocks;
    writer_ = writer_on_b
                  ? StartWriter(b, on_b_, seconds, 0, blocks, "writer-b")
                  : StartWriter(a, on_a_, seconds, 0, blocks, "writer-a");
    ASSERT_NE(writer_, nullptr);
    ASSERT_TRUE(Until(
        [&] { return absl::StrContains(WriterLog(), "persisted seq=100 "); },
        absl::Seconds(60)))
        << WriterLog();
  }
  std::string WriterLog() { return ReadFile(writer_->log_path()); }

  // Whether `n` holds the volume's data: its agent's media, or (node-a)
  // the data file under the CSI staging mount.
  bool HasData(const TwoNodeCluster::Node& n) {
    return Exists(MediaOf(n, id_)) ||
           (&n == &cluster_->a() && Exists(source_data_));
  }

  // After a migration of the volume from `from` to `to` that began at
  // epoch `e` and ended in `phase`: the volume is Ready at e + 1 on the
  // node the phase says, only that node holds data (no media leaked), and
  // the writer goes on at e + 1.
  void ExpectSettled(const std::string& phase, TwoNodeCluster::Node& from,
                     TwoNodeCluster::Node& to, int64_t e) {
    TwoNodeCluster::Node& owner = phase == "Complete" ? to : from;
    TwoNodeCluster::Node& other = phase == "Complete" ? from : to;
    EXPECT_TRUE(Until(
        [&] {
          return Get("daxvolumes", id_, "{.status.phase}") == "Ready" &&
                 Epoch(id_) == e + 1;
        },
        absl::Seconds(30)))
        << Get("daxvolumes", id_, "{.status}");
    EXPECT_EQ(Get("daxvolumes", id_, "{.spec.ownerNode}"), owner.name);
    EXPECT_TRUE(Until([&] { return HasData(owner) && !HasData(other); },
                      absl::Seconds(30)))
        << "data on " << owner.name << ": " << HasData(owner) << ", on "
        << other.name << ": " << HasData(other);
    EXPECT_TRUE(Until(
        [&] {
          return absl::StrContains(WriterLog(),
                                   absl::StrCat(" epoch=", e + 1, "\n"));
        },
        absl::Seconds(60)))
        << WriterLog();
  }

  // Stops the writer (kill -9: it writes until then); then every block,
  // read on node-a, is intact (but the one it had in hand:
  // ExpectIntactButTheBlockInHand), and the newest is its last persisted
  // one (or the one after it, written but not yet persisted when it died).
  void StopWriterAndExpectEveryBlockIntact() {
    ASSERT_TRUE(writer_->running()) << WriterLog();
    writer_->Kill9();
    const std::string out = WriterLog();
    EXPECT_THAT(out, ::testing::Not(::testing::HasSubstr("error"))) << out;
    const std::optional<uint64_t> seq = LastPersistedSeq(out);
    ASSERT_TRUE(seq.has_value()) << "no persisted line in the writer's log\n"
                                 << out;
    sys::CommandResult v = Io(cluster_->a(), {"verify", on_a_, "4096"});
    ExpectIntactButTheBlockInHand(v, *seq);
    const std::optional<VerifySummary> verified = ParseVerify(v.stdout_text);
    ASSERT_TRUE(verified.has_value()) << v.stdout_text << v.stderr_text;
    EXPECT_THAT(verified->maxseq,
                ::testing::AnyOf(::testing::Eq(*seq), ::testing::Eq(*seq + 1)))
        << v.stdout_text;
  }
  // `v` (a verify of the whole volume after the writer was killed with
  // kill -9, its last persisted block `seq`) found no corrupt block, but
  // maybe the one block the writer had in hand: not persisted, and torn
  // when the kill landed in the middle of its memcpy into the mapping (or,
  // remote, of its fabric write, which the owner reads straight into the
  // region). Any other corrupt block is a defect.
  void ExpectIntactButTheBlockInHand(const sys::CommandResult& v,
                                     uint64_t seq) {
    const std::optional<VerifySummary> verified = ParseVerify(v.stdout_text);
    ASSERT_TRUE(verified.has_value() && verified->blocks > 0)
        << v.stdout_text << v.stderr_text;
    // The writer's block seq + 1 (it writes block i at (i - 1) modulo its
    // range, from block 0).
    const uint64_t range = writer_blocks_ > 0
                               ? static_cast<uint64_t>(writer_blocks_)
                               : verified->blocks;
    const uint64_t in_hand = seq % range;
    if (verified->corrupt == 1 &&
        verified->corrupt_at == std::vector<uint64_t>{in_hand}) {
      std::cout << "the writer died in the middle of block " << in_hand
                << " (seq " << seq + 1 << ", not persisted): torn\n";
      return;
    }
    EXPECT_EQ(v.exit_code, 0) << v.stdout_text << v.stderr_text;
    EXPECT_EQ(verified->corrupt, 0u)
        << v.stdout_text << "the block in hand at the kill: " << in_hand;
  }

  // Waits until the migration copies (Copying, some bytes copied).
  bool AwaitCopying(const std::string& name) {
    return Until(
        [&] {
          int64_t copied = 0;
          return Get("daxmigrations", name, "{.status.phase}") == "Copying" &&
                 absl::SimpleAtoi(
                     Get("daxmigrations", name, "{.status.bytesCopied}"),
                     &copied) &&
                 copied > 0;
        },
        absl::Seconds(60));
  }

  std::vector<std::string> agent_args_;
  // The operator's --migration-pre-copy (the default: on).
  bool pre_copy_ = true;
  std::string id_, on_a_, on_b_, source_data_;
  std::unique_ptr<NodeProcess> writer_;
  int writer_blocks_ = 0;  // the writer's range: its first blocks (0: all)
};

// Copies paced at 8 MiB/s (the 64 MiB volume's copy takes ~8 s), so a kill
// lands mid-copy. Without a pre-copy: these cases are about the copy inside
// the pause (after a pre-copy it holds only the chunks that changed, and may
// be over before the kill).
class MigrationFaultTwoNodeTest : public MigrationTwoNodeTest {
 protected:
  MigrationFaultTwoNodeTest() {
    agent_args_ = {"--migration-max-bytes-per-second=8388608"};
    pre_copy_ = false;
  }
};

TEST_F(MigrationTwoNodeTest, WriterAndRemoteReaderRunThroughAMigrationAndBack) {
  auto& a = cluster_->a();
  auto& b = cluster_->b();
  const Json volume = CreateShared("migrate", 64 << 20, 10);
  ASSERT_TRUE(volume.contains("volumeId")) << volume.dump();
  const std::string id = volume.at("volumeId");
  const std::string on_a = StageAndPublish(a, volume, "writer");
  const std::string on_b = StageAndPublish(b, volume, "reader");
  ASSERT_FALSE(HasFailure());
  const std::string source_data = on_a + "/volume/.daxlease/data";
  ASSERT_TRUE(Exists(source_data));

  std::unique_ptr<NodeProcess> writer = StartWriter(a, on_a, 45);
  ASSERT_NE(writer, nullptr);
  auto log = [&] { return ReadFile(writer->log_path()); };
  ASSERT_TRUE(
      Until([&] { return absl::StrContains(log(), "persisted seq=100 "); },
            absl::Seconds(60)))
      << log();

  // a -> b.
  const int64_t e0 = Epoch(id);
  const std::string to_b = Migrate(id, "node-b");
  ASSERT_FALSE(to_b.empty());
  ASSERT_EQ(AwaitMigration(to_b), "Complete")
      << Get("daxmigrations", to_b, "{.status}");
  const std::string recall = absl::StrCat(id, "-migrate-e", e0);
  EXPECT_EQ(Get("daxrecalls", recall, "{.spec.reason}"), "Migrate");
  EXPECT_EQ(Get("daxrecalls", recall, "{.status.phase}"), "Complete");
  EXPECT_EQ(Get("daxrecalls", recall, "{.status.revoked}"), "");  // 0
  EXPECT_EQ(Get("daxvolumes", id, "{.spec.ownerNode}"), "node-b");
  EXPECT_EQ(Epoch(id), e0 + 1);
  EXPECT_EQ(Get("daxmigrations", to_b, "{.status.sourceNode}"), "node-a");
  const std::string sum =
      Get("daxmigrations", to_b, "{.status.sourceChecksum}");
  EXPECT_THAT(sum, ::testing::StartsWith("xxh3x16m:"));
  EXPECT_EQ(Get("daxmigrations", to_b, "{.status.targetChecksum}"), sum);
  EXPECT_EQ(Get("daxmigrations", to_b, "{.status.bytesCopied}"),
            Get("daxmigrations", to_b, "{.status.bytesTotal}"));
  // Pre-copied whole before the recall.
  EXPECT_EQ(Get("daxmigrations", to_b, "{.status.preCopiedBytes}"),
            Get("daxmigrations", to_b, "{.status.bytesTotal}"));
  EXPECT_EQ(Get("daxmigrations", to_b, "{.status.preCopyFailure}"), "");
  EXPECT_EQ(Get("daxmigrations", to_b,
                "{.status.conditions[?(@.type==\"Succeeded\")].status}"),
            "True");
  // The media: node-b's made, node-a's freed once verified.
  EXPECT_TRUE(Exists(MediaOf(b, id)));
  EXPECT_TRUE(Until([&] { return !Exists(source_data); }, absl::Seconds(30)))
      << "node-a's data file is still there";
  // node-a's agent says so in its condition, beside the operator's.
  EXPECT_TRUE(Until(
      [&] {
        return Get("daxmigrations", to_b,
                   "{.status.conditions[?(@.type==\"SourceMediaFreed\")]"
                   ".reason}") == "Freed";
      },
      absl::Seconds(30)))
      << Get("daxmigrations", to_b, "{.status.conditions}");
  EXPECT_EQ(Get("daxmigrations", to_b,
                "{.status.conditions[?(@.type==\"SourceMediaFreed\")]"
                ".status}"),
            "True");
  auto st = sys::RunCommand(
      {PluginBinary(), "--kubeconfig=" + cluster_->kubeconfig(), "status", id});
  ASSERT_TRUE(st.ok());
  EXPECT_THAT(st->stdout_text, ::testing::HasSubstr(to_b));
  EXPECT_THAT(st->stdout_text, ::testing::HasSubstr("(100%)"));
  EXPECT_THAT(st->stdout_text, ::testing::HasSubstr("MEDIA"));
  EXPECT_THAT(st->stdout_text,
              ::testing::Not(::testing::HasSubstr("Media not freed yet")));
  // The writer goes on at the next epoch, now remote.
  ASSERT_TRUE(Until(
      [&] {
        return absl::StrContains(log(), absl::StrCat(" epoch=", e0 + 1, "\n"));
      },
      absl::Seconds(60)))
      << log();
  sys::CommandResult v = Io(b, {"verify", on_b, "4096"});
  EXPECT_EQ(v.exit_code, 0) << v.stdout_text << v.stderr_text;
  EXPECT_THAT(v.stdout_text, ::testing::HasSubstr(" corrupt=0 "));

  // b -> a: back to a's media dir.
  const std::string to_a = Migrate(id, "node-a");
  ASSERT_FALSE(to_a.empty());
  ASSERT_EQ(AwaitMigration(to_a), "Complete")
      << Get("daxmigrations", to_a, "{.status}");
  EXPECT_EQ(Get("daxvolumes", id, "{.spec.ownerNode}"), "node-a");
  EXPECT_EQ(Epoch(id), e0 + 2);
  EXPECT_TRUE(Exists(MediaOf(a, id)));
  EXPECT_TRUE(Until([&] { return !Exists(MediaOf(b, id)); }, absl::Seconds(30)))
      << "node-b's media is still there";
  ASSERT_TRUE(Until(
      [&] {
        return absl::StrContains(log(), absl::StrCat(" epoch=", e0 + 2, "\n"));
      },
      absl::Seconds(60)))
      << log();

  absl::StatusOr<int> exited = writer->Wait(absl::Seconds(90));
  ASSERT_TRUE(exited.ok()) << exited.status();
  EXPECT_TRUE(WIFEXITED(*exited) && WEXITSTATUS(*exited) == 0) << log();
  const std::string out = log();
  EXPECT_THAT(out, ::testing::Not(::testing::HasSubstr("error")));
  const std::optional<uint64_t> seq = LastPersistedSeq(out);
  ASSERT_TRUE(seq.has_value()) << "no persisted line in the writer's log\n"
                               << out;
  // Every block, read remotely from node-b.
  v = Io(b, {"verify", on_b, "4096"});
  EXPECT_EQ(v.exit_code, 0) << v.stdout_text << v.stderr_text;
  EXPECT_THAT(v.stdout_text, ::testing::HasSubstr(" corrupt=0 "));
  const std::optional<VerifySummary> verified = ParseVerify(v.stdout_text);
  ASSERT_TRUE(verified.has_value()) << v.stdout_text << v.stderr_text;
  EXPECT_EQ(verified->maxseq, *seq) << v.stdout_text;
}

// The pre-copy: the target copies the volume while it is still Ready, then
// the recall; inside the pause it reads again only the chunks whose digests
// differ from the source's. A writer that writes only the first 4 MiB (in
// the first 16 MiB chunk) leaves at most that chunk to read in the pause;
// the checksums match, and every block is intact.
TEST_F(MigrationTwoNodeTest, PreCopyLeavesOnlyTheWrittenChunkForThePause) {
  SetUpVolumeAndWriter(600, false, "precopy", (4 << 20) / 4096);
  ASSERT_FALSE(HasFailure());
  auto& a = cluster_->a();
  auto& b = cluster_->b();

  const int64_t e = Epoch(id_);
  const std::string name = Migrate(id_, "node-b");
  ASSERT_FALSE(name.empty());
  ASSERT_EQ(AwaitMigration(name), "Complete")
      << Get("daxmigrations", name, "{.status}");
  const std::string total = Get("daxmigrations", name, "{.status.bytesTotal}");
  EXPECT_EQ(Get("daxmigrations", name, "{.status.preCopiedBytes}"), total);
  EXPECT_FALSE(
      Get("daxmigrations", name, "{.status.preCopyMilliseconds}").empty());
  EXPECT_EQ(Get("daxmigrations", name, "{.status.preCopyFailure}"), "");
  int64_t refetched = 0;
  const std::string r = Get("daxmigrations", name, "{.status.refetchedBytes}");
  ASSERT_TRUE(r.empty() || absl::SimpleAtoi(r, &refetched)) << r;
  EXPECT_LE(refetched, int64_t{16} << 20)
      << "only the chunk the writer writes is read in the pause";
  EXPECT_EQ(Get("daxmigrations", name, "{.status.targetChecksum}"),
            Get("daxmigrations", name, "{.status.sourceChecksum}"));
  ExpectSettled("Complete", a, b, e);
  ASSERT_TRUE(writer_->running()) << WriterLog();
  writer_->Kill9();
  const std::string out = WriterLog();
  EXPECT_THAT(out, ::testing::Not(::testing::HasSubstr("error")));
  const std::optional<uint64_t> seq = LastPersistedSeq(out);
  ASSERT_TRUE(seq.has_value()) << "no persisted line in the writer's log\n"
                               << out;
  ExpectIntactButTheBlockInHand(Io(b, {"verify", on_b_, "4096"}), *seq);
}

}  // namespace
}  // namespace daxlease::testing

namespace daxlease::testing {
namespace {

// kill -9 mid-copy of each party in turn, with the writer running: the
// operator (a -> b), the source agent (b -> a), the target agent (a -> b).
// Each migration finishes (or rolls back to its old owner) at the next
// epoch; only the owner holds data afterwards; the writer goes on; every
// block is intact at the end.
TEST_F(MigrationFaultTwoNodeTest, KillNineMidCopyFinishesOrRollsBack) {
  SetUpVolumeAndWriter(600);
  ASSERT_FALSE(HasFailure());
  auto& a = cluster_->a();
  auto& b = cluster_->b();
  enum Victim { kOperator, kSource, kTarget };
  struct Step {
    TwoNodeCluster::Node* from;
    TwoNodeCluster::Node* to;
    Victim victim;
  };
  for (const Step& step : {Step{&a, &b, kOperator}, Step{&b, &a, kSource},
                           Step{&a, &b, kTarget}}) {
    SCOPED_TRACE(step.victim);
    const int64_t e = Epoch(id_);
    const std::string name = Migrate(id_, step.to->name);
    ASSERT_FALSE(name.empty());
    ASSERT_TRUE(AwaitCopying(name)) << Get("daxmigrations", name, "{.status}");
    switch (step.victim) {
      case kOperator:
        ASSERT_TRUE(cluster_->RestartOperator(9).ok());
        break;
      case kSource:
        ASSERT_TRUE(cluster_->RestartAgent(*step.from, 9).ok());
        break;
      case kTarget:
        ASSERT_TRUE(cluster_->RestartAgent(*step.to, 9).ok());
        break;
    }
    const std::string phase = AwaitMigration(name);
    ASSERT_TRUE(phase == "Complete" || phase == "Failed")
        << Get("daxmigrations", name, "{.status}");
    // An agent restarted within the stall timeout picks the copy up again.
    EXPECT_EQ(phase, "Complete") << Get("daxmigrations", name, "{.status}");
    ExpectSettled(phase, *step.from, *step.to, e);
    sys::CommandResult v = Io(a, {"verify", on_a_, "4096"});
    EXPECT_EQ(v.exit_code, 0) << v.stdout_text << v.stderr_text;
  }
  StopWriterAndExpectEveryBlockIntact();
}

// A target without room fails the migration (InsufficientCapacity) before
// any byte moves; a target that goes away mid-copy fails it at the stall
// timeout (TargetUnresponsive). Either way the volume is Ready again at the
// next epoch on node-a, the writer goes on, and node-b, back, frees what it
// made.
TEST_F(MigrationFaultTwoNodeTest, TargetWithoutRoomOrGoneFailsAndVolumeStays) {
  SetUpVolumeAndWriter(600);
  ASSERT_FALSE(HasFailure());
  auto& a = cluster_->a();
  auto& b = cluster_->b();
  // node-b's media directory: a 4 MiB tmpfs.
  const std::string media = b.dir + "/agent/media";
  ASSERT_TRUE(sys::RunCommandOk({"mkdir", "-p", media}).ok());
  ASSERT_TRUE(sys::RunCommandOk(
                  {"mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", media})
                  .ok());
  Defer([media] {
    if (!MountsUnder(media).empty()) {
      sys::RunCommand({"umount", "-l", media}).IgnoreError();
    }
  });
  int64_t e = Epoch(id_);
  std::string name = Migrate(id_, "node-b");
  ASSERT_EQ(AwaitMigration(name), "Failed")
      << Get("daxmigrations", name, "{.status}");
  EXPECT_EQ(Get("daxmigrations", name,
                "{.status.conditions[?(@.type==\"Failed\")].reason}"),
            "InsufficientCapacity");
  EXPECT_THAT(Get("daxmigrations", name,
                  "{.status.conditions[?(@.type==\"Failed\")].message}"),
              ::testing::HasSubstr("stays on node-a"));
  ExpectSettled("Failed", a, b, e);
  // node-b made nothing, and says so.
  EXPECT_TRUE(Until(
      [&] {
        return Get("daxmigrations", name,
                   "{.status.conditions[?(@.type==\"TargetMediaFreed\")]"
                   ".reason}") == "Freed";
      },
      absl::Seconds(30)))
      << Get("daxmigrations", name, "{.status.conditions}");
  ASSERT_TRUE(sys::RunCommandOk({"umount", media}).ok());

  // Gone mid-copy.
  e = Epoch(id_);
  name = Migrate(id_, "node-b");
  ASSERT_TRUE(AwaitCopying(name)) << Get("daxmigrations", name, "{.status}");
  b.agent->Kill9();
  ASSERT_EQ(AwaitMigration(name), "Failed")
      << Get("daxmigrations", name, "{.status}");
  EXPECT_EQ(Get("daxmigrations", name,
                "{.status.conditions[?(@.type==\"Failed\")].reason}"),
            "TargetUnresponsive");
  EXPECT_EQ(Get("daxvolumes", id_, "{.spec.ownerNode}"), "node-a");
  // Back: node-b's agent frees the media the failed copy left.
  EXPECT_TRUE(Exists(MediaOf(b, id_)));
  ASSERT_TRUE(cluster_->RestartAgent(b, 9).ok());
  ExpectSettled("Failed", a, b, e);
  StopWriterAndExpectEveryBlockIntact();
}

// A DaxMigration deleted mid-copy (the writer running) is rolled back, not
// forgotten: the volume is Ready again at the next epoch on node-a (not left
// Migrating), node-b frees the media it made, and only then the object
// goes. Deleted once its copy is verified, it finishes: owner node-b, node-a's
// data freed, then it goes. Every block is intact at the end.
TEST_F(MigrationFaultTwoNodeTest, DeletedMidFlowRollsBackOrFinishes) {
  SetUpVolumeAndWriter(600);
  ASSERT_FALSE(HasFailure());
  auto& a = cluster_->a();
  auto& b = cluster_->b();
  auto gone = [&](const std::string& name) {
    auto r = cluster_->Kubectl({"get", "daxmigrations", name, "-o", "name"});
    return r.ok() && r->exit_code != 0 &&
           absl::StrContains(r->stderr_text, "NotFound");
  };
  auto remove = [&](const std::string& name) {
    auto r =
        cluster_->Kubectl({"delete", "daxmigration", name, "--wait=false"});
    return r.ok() && r->exit_code == 0;
  };

  int64_t e = Epoch(id_);
  std::string name = Migrate(id_, "node-b");
  ASSERT_FALSE(name.empty());
  ASSERT_TRUE(AwaitCopying(name)) << Get("daxmigrations", name, "{.status}");
  ASSERT_TRUE(remove(name));
  ExpectSettled("Failed", a, b, e);
  EXPECT_TRUE(Until([&] { return gone(name); }, absl::Seconds(30)))
      << Get("daxmigrations", name, "{.status}");
  EXPECT_FALSE(Exists(MediaOf(b, id_)));

  // Deleted with its copy verified (both checksums written).
  e = Epoch(id_);
  name = Migrate(id_, "node-b");
  ASSERT_FALSE(name.empty());
  ASSERT_TRUE(Until(
      [&] {
        return !Get("daxmigrations", name, "{.status.targetChecksum}")
                    .empty() &&
               !Get("daxmigrations", name, "{.status.sourceChecksum}").empty();
      },
      absl::Seconds(60)))
      << Get("daxmigrations", name, "{.status}");
  ASSERT_TRUE(remove(name));
  ExpectSettled("Complete", a, b, e);
  EXPECT_TRUE(Until([&] { return gone(name); }, absl::Seconds(30)))
      << Get("daxmigrations", name, "{.status}");
  StopWriterAndExpectEveryBlockIntact();
}

}  // namespace
}  // namespace daxlease::testing

namespace daxlease::testing {
namespace {

// kill -9 at each step of a migration (node-a -> node-b), landed exactly
// there by a crash point (DAXLEASE_CRASH_POINT, lib/base/crash_point.h) in
// the operator, the source agent (node-a) or the target agent (node-b).
enum class Victim { kOperator, kSource, kTarget };
struct CrashCase {
  Victim victim;
  const char* point;
};

std::string CaseName(const ::testing::TestParamInfo<CrashCase>& info) {
  std::string name =
      absl::StrCat(info.param.victim == Victim::kOperator ? "Operator"
                   : info.param.victim == Victim::kSource ? "Source"
                                                          : "Target",
                   "_", info.param.point);
  std::replace(name.begin(), name.end(), '.', '_');
  return name;
}

void PrintTo(const CrashCase& c, std::ostream* os) { *os << c.point; }

class MigrationCrashPointTwoNodeTest
    : public MigrationFaultTwoNodeTest,
      public ::testing::WithParamInterface<CrashCase> {
 protected:
  // With the pre-copy (the default): its kill points are among the cases,
  // and the others land in the flow as it runs by default.
  MigrationCrashPointTwoNodeTest() { pre_copy_ = true; }
  // The kills that landed at `point` in `log`.
  static size_t KillsAt(const std::string& log, const std::string& point) {
    size_t n = 0;
    std::istringstream in(log);
    for (std::string line; std::getline(in, line);) {
      n += absl::StrContains(line, "base.crash_point") &&
           absl::StrContains(line, point);
    }
    return n;
  }
};

// The victim dies at its crash point during the migration and is started
// again without it (the operator by the cluster's watch, at once; an agent
// by the test, within the stall timeout). The migration then finishes at
// the next epoch (an agent restarted in time picks its part up again); only
// the new owner holds the volume's data (no media leaked on either node,
// nothing freed twice); the recall revoked nobody; the writer, on the node
// whose agent is not the victim (an agent's restart cuts its own holders
// off: docs/csi.md), goes on at the next epoch without an error; every
// block, read on node-a (remote after the move) and on node-b, is intact.
TEST_P(MigrationCrashPointTwoNodeTest, FinishesAfterTheKill) {
  const CrashCase& c = GetParam();
  auto& a = cluster_->a();
  auto& b = cluster_->b();
  TwoNodeCluster::Node* agent = c.victim == Victim::kSource   ? &a
                                : c.victim == Victim::kTarget ? &b
                                                              : nullptr;
  const std::string log = agent != nullptr ? agent->dir + "/agent.log"
                                           : cluster_->dir() + "/operator.log";
  const size_t kills = KillsAt(ReadFile(log), c.point);
  if (agent != nullptr) {
    ASSERT_TRUE(cluster_->RestartAgent(*agent, SIGKILL, c.point).ok());
  } else {
    ASSERT_TRUE(cluster_->RestartOperator(SIGKILL, c.point).ok());
  }
  auto armed = std::make_shared<bool>(true);
  Defer([this, agent, armed] {
    // A kill that never landed: the next test's daemons run without it.
    if (!*armed) return;
    if (agent != nullptr) {
      (void)cluster_->RestartAgent(*agent);
    } else {
      (void)cluster_->RestartOperator();
    }
  });
  SetUpVolumeAndWriter(600, /*writer_on_b=*/c.victim == Victim::kSource);
  ASSERT_FALSE(HasFailure());

  const int64_t e = Epoch(id_);
  const std::string name = Migrate(id_, "node-b");
  ASSERT_FALSE(name.empty());
  ASSERT_TRUE(Until([&] { return KillsAt(ReadFile(log), c.point) > kills; },
                    absl::Seconds(120)))
      << "no kill landed at " << c.point << "\n"
      << Tail(ReadFile(log)) << Get("daxmigrations", name, "{.status}");
  if (agent != nullptr) {
    ASSERT_TRUE(
        Until([&] { return !agent->agent->running(); }, absl::Seconds(10)));
    ASSERT_TRUE(cluster_->RestartAgent(*agent).ok());
  }  // else the cluster's watch started one without the crash point
  *armed = false;
  const std::string phase = AwaitMigration(name);
  EXPECT_EQ(phase, "Complete") << Get("daxmigrations", name, "{.status}");
  ExpectSettled(phase, a, b, e);
  // Not even an empty directory of the volume's on the node that lost.
  TwoNodeCluster::Node& other = phase == "Complete" ? a : b;
  EXPECT_FALSE(Exists(absl::StrCat(other.dir, "/agent/media/", id_)));
  const std::string recall = absl::StrCat(id_, "-migrate-e", e);
  EXPECT_EQ(Get("daxrecalls", recall, "{.status.phase}"), "Complete");
  EXPECT_EQ(Get("daxrecalls", recall, "{.status.revoked}"), "");  // 0
  EXPECT_EQ(
      UntilNone({"get", "daxleases", "-l", api::VolumeLabelSelector(id_), "-o",
                 "jsonpath={.items[?(@.status.state==\"Revoked\")]"
                 ".metadata.name}"}),
      "");
  sys::CommandResult v = Io(b, {"verify", on_b_, "4096"});
  EXPECT_EQ(v.exit_code, 0) << v.stdout_text << v.stderr_text;
  EXPECT_THAT(v.stdout_text, ::testing::HasSubstr(" corrupt=0 "));
  StopWriterAndExpectEveryBlockIntact();
}

INSTANTIATE_TEST_SUITE_P(
    EachStep, MigrationCrashPointTwoNodeTest,
    ::testing::Values(
        // Pre-copying (the volume Ready, no recall yet): the operator once
        // it stored PreCopying, the target half-way through the pre-copy
        // (restarted, it copies again) and once it reported it done (its
        // digests were in memory: the copy in the pause is whole).
        CrashCase{Victim::kOperator, "operator.migration.precopying"},
        CrashCase{Victim::kTarget, "agent.migration.mid_pre_copy"},
        CrashCase{Victim::kTarget, "agent.migration.pre_copied"},
        // Recall started.
        CrashCase{Victim::kOperator, "operator.migration.recall_created"},
        CrashCase{Victim::kSource, "agent.recall.released"},
        CrashCase{Victim::kTarget, "agent.recall.released"},
        // Media created on the target.
        CrashCase{Victim::kTarget, "agent.migration.media_created"},
        // Mid-copy.
        CrashCase{Victim::kTarget, "agent.migration.mid_copy"},
        CrashCase{Victim::kSource, "agent.migration.source_summed"},
        // Copy verified.
        CrashCase{Victim::kTarget, "agent.migration.copied"},
        CrashCase{Victim::kOperator, "operator.migration.switching"},
        // Owner switched.
        CrashCase{Victim::kOperator, "operator.migration.owner_switched"},
        CrashCase{Victim::kTarget, "agent.migration.serving"},
        // Old media freed.
        CrashCase{Victim::kSource, "agent.migration.source_freed"},
        CrashCase{Victim::kOperator, "operator.migration.complete"}),
    CaseName);

}  // namespace
}  // namespace daxlease::testing
