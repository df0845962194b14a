// StepMigration: each phase's way on, the failures that roll back, and the
// crash repairs (docs/lease-protocol.md, "Migration").
#include "lib/lease/migration.h"

#include <variant>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace daxlease::lease {
namespace {

using ::testing::HasSubstr;

const absl::Time kT0 = absl::FromUnixSeconds(1'000'000);

// A shared volume on node-a with one granted lease.
VolumeState ReadyOnA() {
  VolumeState s;
  s.volume = "v";
  s.owner_node = "node-a";
  s = Apply(s, Request{"l", "node-b", "pod"}, kT0)->state;
  s = Apply(s, Grant{"l"}, kT0)->state;
  return s;
}

Migration ToB() {
  Migration m;
  m.id = "m1";
  m.target_node = "node-b";
  return m;
}

// Applies the step's volume event to `s`.
VolumeState After(const VolumeState& s, const MigrationStep& st) {
  if (!st.volume_event.has_value()) return s;
  auto o = Apply(s, *st.volume_event, kT0);
  EXPECT_TRUE(o.ok()) << o.status();
  return o.ok() ? o->state : s;
}

struct Flow {
  VolumeState vol = ReadyOnA();
  Migration m = ToB();
  std::string recall_name;
  // The tests below PreCopy* go through the pre-copy; the rest start at
  // the recall, as a migration without one does.
  MigrationConfig config = [] {
    MigrationConfig c;
    c.pre_copy = false;
    return c;
  }();

  MigrationStep Step(absl::Time now = kT0) {
    MigrationView v;
    v.volume = &vol;
    v.recall_name = vol.recall.has_value() ? recall_name : "";
    MigrationStep st = StepMigration(m, v, now, config);
    vol = After(vol, st);
    m = st.migration;
    return st;
  }
  // The recall the step asked for runs and every holder acks.
  void RecallRuns() {
    recall_name = m.recall;
    vol = Apply(vol, StartRecall{"uid-r", RecallReason::kMigrate}, kT0)->state;
    vol = Apply(vol, HolderAck{"l", "uid-r", vol.epoch, true}, kT0)->state;
    ASSERT_EQ(vol.phase, VolumePhase::kQuiesced);
  }
  void Copied(const std::string& src, const std::string& dst) {
    m.bytes_total = m.bytes_copied = 1 << 20;
    m.source_checksum = src;
    m.target_checksum = dst;
    m.last_progress = kT0;
  }
};

TEST(Migration, HappyPathMovesTheOwnerAtTheNextEpoch) {
  Flow r;
  MigrationStep st = r.Step();
  EXPECT_EQ(r.m.phase, MigrationPhase::kRecalling);
  EXPECT_EQ(st.create_recall, "v-migrate-e1");
  EXPECT_EQ(r.m.source_node, "node-a");
  EXPECT_EQ(r.m.epoch, 1u);
  r.RecallRuns();
  st = r.Step();
  EXPECT_EQ(r.m.phase, MigrationPhase::kCopying);
  EXPECT_EQ(r.vol.phase, VolumePhase::kMigrating);
  EXPECT_EQ(st.condition, "Progressing");
  // Copying: nothing moves until both checksums are there.
  r.m.bytes_total = 100;
  r.m.bytes_copied = 50;
  r.m.last_progress = kT0;
  st = r.Step(kT0 + absl::Seconds(5));
  EXPECT_EQ(r.m.phase, MigrationPhase::kCopying);
  EXPECT_THAT(st.message, HasSubstr("50 of 100"));
  r.Copied("sha256:x", "sha256:x");
  st = r.Step(kT0 + absl::Seconds(6));
  EXPECT_EQ(r.m.phase, MigrationPhase::kSwitching);
  EXPECT_EQ(r.vol.phase, VolumePhase::kReady);
  EXPECT_EQ(r.vol.epoch, 2u);
  EXPECT_EQ(r.vol.owner_node, "node-b");
  st = r.Step(kT0 + absl::Seconds(7));
  EXPECT_EQ(r.m.phase, MigrationPhase::kComplete);
  EXPECT_EQ(st.condition, "Succeeded");
  EXPECT_FALSE(st.volume_event.has_value());
}

TEST(Migration, ChecksumMismatchRollsBackToTheOldOwner) {
  Flow r;
  r.Step();
  r.RecallRuns();
  r.Step();
  r.Copied("xxh3x16m:x", "xxh3x16m:y");
  MigrationStep st = r.Step();
  EXPECT_EQ(r.m.phase, MigrationPhase::kFailed);
  EXPECT_EQ(st.reason, "ChecksumMismatch");
  EXPECT_EQ(r.vol.owner_node, "node-a");
  EXPECT_EQ(r.vol.phase, VolumePhase::kReady);
  EXPECT_EQ(r.vol.epoch, 2u);
}

// An agent of another version sums with another algorithm: the checksums
// never match, and the reason says so rather than suspecting the copy.
TEST(Migration, ChecksumsOfDifferentAlgorithmsRollBackWithTheirReason) {
  Flow r;
  r.Step();
  r.RecallRuns();
  r.Step();
  r.Copied("sha256x16m:0123", "xxh3x16m:4567");
  MigrationStep st = r.Step();
  EXPECT_EQ(r.m.phase, MigrationPhase::kFailed);
  EXPECT_EQ(st.condition, "Failed");
  EXPECT_EQ(st.reason, "ChecksumAlgorithmMismatch");
  EXPECT_THAT(st.message, HasSubstr("sums with sha256x16m"));
  EXPECT_THAT(st.message, HasSubstr("with xxh3x16m"));
  EXPECT_EQ(r.vol.owner_node, "node-a");
  EXPECT_EQ(r.vol.phase, VolumePhase::kReady);
  EXPECT_EQ(r.vol.epoch, 2u);
}

TEST(Migration, TargetFailureNamesItsReasonAndRollsBack) {
  Flow r;
  r.Step();
  r.RecallRuns();
  r.Step();
  r.m.target_failure = "InsufficientCapacity: 1 GiB wanted, 10 MiB free";
  MigrationStep st = r.Step();
  EXPECT_EQ(r.m.phase, MigrationPhase::kFailed);
  EXPECT_EQ(st.condition, "Failed");
  EXPECT_EQ(st.reason, "InsufficientCapacity");
  EXPECT_THAT(st.message, HasSubstr("stays on node-a"));
  EXPECT_EQ(r.vol.owner_node, "node-a");
  EXPECT_EQ(r.vol.phase, VolumePhase::kReady);
}

TEST(Migration, ATargetThatStopsReportingFailsAtTheStallTimeout) {
  Flow r;
  r.config.stall_timeout = absl::Seconds(10);
  r.Step();
  r.RecallRuns();
  MigrationStep st = r.Step();
  EXPECT_EQ(st.recheck_at, kT0 + absl::Seconds(10));
  st = r.Step(kT0 + absl::Seconds(10));
  EXPECT_EQ(r.m.phase, MigrationPhase::kCopying);
  st = r.Step(kT0 + absl::Seconds(11));
  EXPECT_EQ(r.m.phase, MigrationPhase::kFailed);
  EXPECT_EQ(st.reason, "TargetUnresponsive");
  EXPECT_EQ(r.vol.phase, VolumePhase::kReady);
  EXPECT_EQ(r.vol.owner_node, "node-a");
}

TEST(Migration, FailedWhileStillQuiescedResumes) {
  Flow r;
  r.Step();
  r.RecallRuns();
  r.m.phase = MigrationPhase::kFailed;  // written, the volume was not
  r.Step();
  EXPECT_EQ(r.vol.phase, VolumePhase::kReady);
  EXPECT_EQ(r.vol.owner_node, "node-a");
}

TEST(Migration, RefusesTheSameNodeAndUnsharedVolumes) {
  Flow same;
  same.m.target_node = "node-a";
  EXPECT_EQ(same.Step().reason, "SameNode");
  EXPECT_EQ(same.m.phase, MigrationPhase::kFailed);
  Flow unshared;
  unshared.vol.shared = false;
  EXPECT_EQ(unshared.Step().reason, "NotShared");
}

TEST(Migration, WaitsForABusyVolumeAndForAnEarlierMigration) {
  Flow r;
  r.vol = Apply(r.vol, StartRecall{"other"}, kT0)->state;
  MigrationStep st = r.Step();
  EXPECT_EQ(r.m.phase, MigrationPhase::kPending);
  EXPECT_EQ(st.reason, "WaitingForVolume");
  EXPECT_TRUE(st.create_recall.empty());
  Flow e;
  MigrationView v;
  v.volume = &e.vol;
  v.earlier_running = true;
  st = StepMigration(e.m, v, kT0, e.config);
  EXPECT_EQ(st.migration.phase, MigrationPhase::kPending);
  EXPECT_EQ(st.reason, "WaitingForEarlierMigration");
}

TEST(Migration, AdoptsItsRecallAfterALostWrite) {
  Flow r;
  r.recall_name = "v-migrate-e1";
  r.vol =
      Apply(r.vol, StartRecall{"uid-r", RecallReason::kMigrate}, kT0)->state;
  MigrationView v;
  v.volume = &r.vol;
  v.recall_name = r.recall_name;
  v.recall_for = "m1";
  MigrationStep st = StepMigration(r.m, v, kT0, r.config);
  EXPECT_EQ(st.migration.phase, MigrationPhase::kRecalling);
  EXPECT_EQ(st.migration.recall, "v-migrate-e1");
  EXPECT_EQ(st.migration.epoch, 1u);
}

TEST(Migration, SwitchLostAfterCompleteIsFinished) {
  Flow r;
  r.Step();
  r.RecallRuns();
  r.Step();
  r.Copied("sha256:x", "sha256:x");
  Migration copying = r.m;
  VolumeState migrating = r.vol;
  r.Step();
  ASSERT_EQ(r.m.phase, MigrationPhase::kSwitching);
  // Switching was stored, the volume write was not: the next pass switches.
  r.vol = migrating;
  MigrationStep st = r.Step();
  EXPECT_TRUE(st.volume_event.has_value());
  EXPECT_EQ(r.vol.owner_node, "node-b");
  EXPECT_EQ(r.vol.epoch, 2u);
  (void)copying;
}

TEST(Migration, AVolumeThatMovedOnWithoutTheRecallFails) {
  Flow r;
  r.Step();
  r.vol = Apply(r.vol, StartRecall{"x"}, kT0)->state;
  r.vol = Apply(r.vol, HolderAck{"l", "x", 1, true}, kT0)->state;
  r.vol = Apply(r.vol, Resume{}, kT0)->state;
  MigrationStep st = r.Step();
  EXPECT_EQ(r.m.phase, MigrationPhase::kFailed);
  EXPECT_EQ(st.reason, "RecallLost");
}

TEST(Migration, DeletedBeforeTheCopyIsVerifiedRollsBack) {
  Flow r;
  r.Step();
  r.RecallRuns();
  r.Step();
  ASSERT_EQ(r.vol.phase, VolumePhase::kMigrating);
  r.m.target_started = true;
  r.m.deleting = true;
  MigrationStep st = r.Step();
  EXPECT_EQ(r.m.phase, MigrationPhase::kFailed);
  EXPECT_EQ(st.reason, "Deleted");
  EXPECT_FALSE(st.forget);  // the rollback is not stored yet
  EXPECT_EQ(r.vol.phase, VolumePhase::kReady);
  EXPECT_EQ(r.vol.owner_node, "node-a");
  EXPECT_EQ(r.vol.epoch, 2u);
  EXPECT_FALSE(r.Step().forget);  // the target's media is not freed yet
  r.m.target_media_freed = true;
  EXPECT_TRUE(r.Step().forget);
}

TEST(Migration, DeletedWhileRecallingRollsBackOnceQuiesced) {
  Flow r;
  r.Step();
  r.recall_name = r.m.recall;
  r.vol =
      Apply(r.vol, StartRecall{"uid-r", RecallReason::kMigrate}, kT0)->state;
  r.m.deleting = true;
  MigrationStep st = r.Step();
  EXPECT_EQ(r.m.phase, MigrationPhase::kFailed);
  EXPECT_FALSE(st.forget);
  // The holder acks: Quiesced, then resumed on the old owner.
  r.vol = Apply(r.vol, HolderAck{"l", "uid-r", r.vol.epoch, true}, kT0)->state;
  ASSERT_EQ(r.vol.phase, VolumePhase::kQuiesced);
  st = r.Step();
  EXPECT_FALSE(st.forget);
  EXPECT_EQ(r.vol.phase, VolumePhase::kReady);
  EXPECT_EQ(r.vol.epoch, 2u);
  // The target never started: nothing to free.
  EXPECT_TRUE(r.Step().forget);
}

TEST(Migration, DeletedWithAVerifiedCopySwitchesThenWaitsForTheSource) {
  Flow r;
  r.Step();
  r.RecallRuns();
  r.Step();
  r.Copied("sha256:x", "sha256:x");
  r.m.deleting = true;
  r.Step();
  EXPECT_EQ(r.m.phase, MigrationPhase::kSwitching);
  EXPECT_EQ(r.vol.owner_node, "node-b");
  MigrationStep st = r.Step();
  EXPECT_EQ(r.m.phase, MigrationPhase::kComplete);
  EXPECT_FALSE(r.Step().forget);
  r.m.source_media_freed = true;
  EXPECT_TRUE(r.Step().forget);
  (void)st;
}

// The pre-copy runs while the volume stays Ready (no recall, no volume
// event); the target's report that it is done starts the recall, and the
// rest goes as without one.
TEST(Migration, PreCopyRunsBeforeTheRecallWhileTheVolumeStaysReady) {
  Flow r;
  r.config.pre_copy = true;
  MigrationStep st = r.Step();
  EXPECT_EQ(r.m.phase, MigrationPhase::kPreCopying);
  EXPECT_EQ(st.reason, "PreCopying");
  EXPECT_TRUE(st.create_recall.empty()) << "no recall while pre-copying";
  EXPECT_FALSE(st.volume_event.has_value());
  EXPECT_EQ(r.m.source_node, "node-a");
  EXPECT_EQ(r.m.epoch, 1u);
  EXPECT_EQ(r.m.started, kT0);
  EXPECT_EQ(r.vol.phase, VolumePhase::kReady);
  // Progress: it stays, and looks again by the stall deadline.
  r.m.bytes_total = 100;
  r.m.pre_copied_bytes = 40;
  r.m.last_progress = kT0 + absl::Seconds(10);
  st = r.Step(kT0 + absl::Seconds(11));
  EXPECT_EQ(r.m.phase, MigrationPhase::kPreCopying);
  EXPECT_THAT(st.message, HasSubstr("40 of 100"));
  EXPECT_EQ(st.recheck_at, kT0 + absl::Seconds(10) + r.config.stall_timeout +
                               absl::Seconds(1));
  EXPECT_EQ(r.vol.phase, VolumePhase::kReady);
  // Done: the recall starts.
  r.m.pre_copied_bytes = 100;
  st = r.Step(kT0 + absl::Seconds(12));
  EXPECT_EQ(r.m.phase, MigrationPhase::kRecalling);
  EXPECT_EQ(st.create_recall, "v-migrate-e1");
  EXPECT_THAT(st.message, HasSubstr("pre-copied 100 bytes"));
  r.RecallRuns();
  r.Step();
  EXPECT_EQ(r.m.phase, MigrationPhase::kCopying);
  r.Copied("xxh3x16m:x", "xxh3x16m:x");
  r.Step(kT0 + absl::Seconds(13));
  EXPECT_EQ(r.m.phase, MigrationPhase::kSwitching);
  EXPECT_EQ(r.vol.owner_node, "node-b");
}

// A pre-copy that fails, stalls or runs too long never fails the
// migration: the recall starts and the copy inside the pause is whole.
TEST(Migration, PreCopyFailureStallOrTimeoutFallsBackToTheRecall) {
  {
    Flow r;
    r.config.pre_copy = true;
    r.Step();
    r.m.pre_copy_failure = "InsufficientCapacity: no room";
    MigrationStep st = r.Step(kT0 + absl::Seconds(1));
    EXPECT_EQ(r.m.phase, MigrationPhase::kRecalling);
    EXPECT_EQ(st.condition, "Progressing");
    EXPECT_THAT(st.message, HasSubstr("the pre-copy failed"));
    EXPECT_EQ(st.create_recall, "v-migrate-e1");
  }
  {
    Flow r;
    r.config.pre_copy = true;
    r.Step();
    MigrationStep st = r.Step(kT0 + r.config.stall_timeout - absl::Seconds(1));
    EXPECT_EQ(r.m.phase, MigrationPhase::kPreCopying);
    st = r.Step(kT0 + r.config.stall_timeout + absl::Seconds(1));
    EXPECT_EQ(r.m.phase, MigrationPhase::kRecalling);
    EXPECT_THAT(st.message, HasSubstr("no pre-copy progress"));
  }
  {
    Flow r;
    r.config.pre_copy = true;
    r.config.pre_copy_timeout = absl::Seconds(30);
    r.Step();
    r.m.bytes_total = 100;
    r.m.pre_copied_bytes = 10;
    r.m.last_progress = kT0 + absl::Seconds(31);  // still moving
    MigrationStep st = r.Step(kT0 + absl::Seconds(31));
    EXPECT_EQ(r.m.phase, MigrationPhase::kRecalling);
    EXPECT_THAT(st.message, HasSubstr("ran past"));
  }
}

// Done pre-copying while another recall runs: it waits for the volume to be
// Ready, then recalls at the epoch the volume is at then.
TEST(Migration, PreCopyWaitsForTheVolumeThenRecallsAtItsEpoch) {
  Flow r;
  r.config.pre_copy = true;
  r.Step();
  r.vol = Apply(r.vol, StartRecall{"uid-x", RecallReason::kManual}, kT0)->state;
  r.m.bytes_total = r.m.pre_copied_bytes = 100;
  MigrationStep st = r.Step();
  EXPECT_EQ(r.m.phase, MigrationPhase::kPreCopying);
  EXPECT_EQ(st.reason, "WaitingForVolume");
  EXPECT_FALSE(st.volume_event.has_value()) << "not its recall to touch";
  r.vol = Apply(r.vol, HolderAck{"l", "uid-x", r.vol.epoch, true}, kT0)->state;
  r.vol = Apply(r.vol, Resume{}, kT0)->state;
  ASSERT_EQ(r.vol.phase, VolumePhase::kReady);
  st = r.Step();
  EXPECT_EQ(r.m.phase, MigrationPhase::kRecalling);
  EXPECT_EQ(r.m.epoch, r.vol.epoch);
  EXPECT_EQ(st.create_recall, MigrationRecallName("v", r.vol.epoch));
}

// Deleted while pre-copying: Failed (Deleted) with nothing to roll back; the
// finalizer goes once the target freed what it made.
TEST(Migration, DeletedWhilePreCopyingFailsAndForgetsOnceTheTargetFreed) {
  Flow r;
  r.config.pre_copy = true;
  r.Step();
  r.m.target_started = true;
  r.m.deleting = true;
  MigrationStep st = r.Step();
  EXPECT_EQ(r.m.phase, MigrationPhase::kFailed);
  EXPECT_EQ(st.reason, "Deleted");
  EXPECT_FALSE(st.volume_event.has_value());
  EXPECT_EQ(r.vol.phase, VolumePhase::kReady);
  EXPECT_EQ(r.vol.epoch, 1u);
  st = r.Step();
  EXPECT_FALSE(st.forget) << "the target's media is not freed yet";
  r.m.target_media_freed = true;
  st = r.Step();
  EXPECT_TRUE(st.forget);
}

// The operator crashed after creating the recall but before storing
// Recalling: the next pass adopts the recall instead of making another.
TEST(Migration, PreCopyingAdoptsItsRecallWhoseWriteWasLost) {
  Flow r;
  r.config.pre_copy = true;
  r.Step();
  r.vol =
      Apply(r.vol, StartRecall{"uid-r", RecallReason::kMigrate}, kT0)->state;
  MigrationView v;
  v.volume = &r.vol;
  v.recall_name = "v-migrate-e1";
  v.recall_for = "m1";
  MigrationStep st = StepMigration(r.m, v, kT0, r.config);
  EXPECT_EQ(st.migration.phase, MigrationPhase::kRecalling);
  EXPECT_EQ(st.migration.recall, "v-migrate-e1");
}

}  // namespace
}  // namespace daxlease::lease
