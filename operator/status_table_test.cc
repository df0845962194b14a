#include "operator/status_table.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/api/conditions.h"

namespace daxlease::op {
namespace {

using testing::HasSubstr;
using testing::Not;

const absl::Time kNow = absl::FromUnixSeconds(1'700'000'000);

// The line of `out` that starts with `prefix` ("" if none).
std::string LineOf(const std::string& out, const std::string& prefix) {
  size_t at = out.rfind("\n" + prefix);
  if (at == std::string::npos) return "";
  size_t end = out.find('\n', at + 1);
  return out.substr(at + 1, end - at - 1);
}

// A Ready volume `vol-1` owned by `owner`.
api::DaxVolume ReadyVolume(const std::string& owner) {
  api::DaxVolume v;
  v.metadata.name = "vol-1";
  v.spec.owner_node = owner;
  v.status.phase = api::VolumePhase::kReady;
  return v;
}

// A migration `name` of vol-1 to `target`, in `phase`, from node-a.
api::DaxMigration MigrationOfVol1(const std::string& name,
                                  const std::string& target,
                                  api::MigrationPhase phase) {
  api::DaxMigration m;
  m.metadata.name = name;
  m.spec = {"vol-1", target};
  m.status.phase = phase;
  m.status.source_node = "node-a";
  return m;
}

TEST(StatusTableTest, TableColumnsAlign) {
  EXPECT_EQ(FormatTable({{"A", "BB"}, {"ccc", "d"}}), "A    BB\nccc  d\n");
}

TEST(StatusTableTest, TimeLeft) {
  EXPECT_EQ(TimeLeft(std::nullopt, kNow), "-");
  EXPECT_EQ(TimeLeft(kNow - absl::Seconds(1), kNow), "expired");
  EXPECT_EQ(TimeLeft(kNow + absl::Milliseconds(11200), kNow), "12s");
  EXPECT_EQ(TimeLeft(kNow + absl::Seconds(185), kNow), "3m05s");
}

TEST(StatusTableTest, ShowsVolumesLeasesAndRecallsInProgress) {
  api::DaxVolume v;
  v.metadata.name = "vol-1";
  v.spec.owner_node = "node-a";
  v.status.phase = api::VolumePhase::kRecalling;
  v.status.epoch = 4;
  v.status.holders = 2;
  v.status.active_recall = "r1";
  api::DaxLease l;
  l.metadata.name = "lease-x";
  l.spec = {"vol-1", "node-b", "ns/pod", api::Access::kReadWrite};
  l.status.state = api::LeaseState::kRecalling;
  l.status.epoch = 4;
  l.status.deadline = kNow + absl::Seconds(20);
  api::DaxLease other = l;
  other.metadata.name = "lease-of-other-volume";
  other.spec.volume = "vol-2";
  api::DaxRecall r;
  r.metadata.name = "r1";
  r.spec.volume = "vol-1";
  r.status.phase = api::RecallPhase::kRecalling;
  r.status.outstanding = 1;
  r.status.deadline = kNow + absl::Seconds(20);
  api::DaxRecall done = r;
  done.metadata.name = "r0";
  done.status.phase = api::RecallPhase::kComplete;

  std::string out = FormatStatus({v}, {l, other}, {r, done}, kNow);
  EXPECT_THAT(out, HasSubstr("vol-1"));
  EXPECT_THAT(out, HasSubstr("Recalling"));
  EXPECT_THAT(out, HasSubstr("lease-x"));
  EXPECT_THAT(out, Not(HasSubstr("lease-of-other-volume")));
  EXPECT_THAT(out, HasSubstr("Recalls in progress"));
  EXPECT_THAT(out, HasSubstr("20s"));
  EXPECT_THAT(out, Not(HasSubstr("r0")));
  EXPECT_EQ(FormatStatus({}, {}, {}, kNow), "No DaxVolumes found.\n");
}

// A finished migration whose losing side's media the plugin refuses to
// free shows FreeFailed in MEDIA and the condition's message (the plugin's
// error, the attempt) under the table; once freed, "freed" and no message.
TEST(StatusTableTest, ShowsMediaTheAgentCouldNotFreeYet) {
  api::DaxVolume v = ReadyVolume("node-b");
  api::DaxMigration done =
      MigrationOfVol1("m-done", "node-b", api::MigrationPhase::kComplete);
  done.status.conditions.push_back(
      {api::kSourceMediaFreedCondition, api::ConditionStatus::kFalse, 1, kNow,
       api::kMediaFreeFailedReason,
       "FreeMedia of /dev/dax0.1 on node-a refused (attempt 3): "
       "FAILED_PRECONDITION: /dev/dax0.1 is open; asked again in 4s"});
  api::DaxMigration failed =
      MigrationOfVol1("m-failed", "node-c", api::MigrationPhase::kFailed);
  failed.status.target_media_freed = true;
  api::DaxMigration running =
      MigrationOfVol1("m-running", "node-c", api::MigrationPhase::kCopying);

  std::string out = FormatStatus({v}, {}, {}, kNow, {done, failed, running});
  EXPECT_THAT(out, HasSubstr("MEDIA"));
  EXPECT_THAT(out, HasSubstr("FreeFailed"));
  EXPECT_THAT(out, HasSubstr("Media not freed yet:"));
  EXPECT_THAT(out, HasSubstr("m-done: SourceMediaFreed False (FreeFailed): "
                             "FreeMedia of /dev/dax0.1 on node-a refused "
                             "(attempt 3): FAILED_PRECONDITION"));
  EXPECT_THAT(out, Not(HasSubstr("m-failed: ")));
  EXPECT_THAT(LineOf(out, "m-done "), testing::EndsWith("FreeFailed"));
  EXPECT_THAT(LineOf(out, "m-failed "), testing::EndsWith("freed"));
  EXPECT_THAT(LineOf(out, "m-running "), testing::EndsWith("-"));

  done.status.conditions[0] = {
      api::kSourceMediaFreedCondition, api::ConditionStatus::kTrue,   1, kNow,
      api::kMediaFreedReason,          "freed on node-a at attempt 4"};
  done.status.source_media_freed = true;
  out = FormatStatus({v}, {}, {}, kNow, {done});
  EXPECT_THAT(out, Not(HasSubstr("FreeFailed")));
  EXPECT_THAT(out, Not(HasSubstr("Media not freed yet")));
  EXPECT_THAT(LineOf(out, "m-done "), testing::EndsWith("freed"));
}

// A migration pre-copying shows the pre-copy's progress; once copied in the
// pause, how much of it was read again there.
TEST(StatusTableTest, ShowsThePreCopyAndWhatThePauseReadAgain) {
  api::DaxVolume v = ReadyVolume("node-a");
  api::DaxMigration m =
      MigrationOfVol1("m-pre", "node-b", api::MigrationPhase::kPreCopying);
  m.status.bytes_total = 400;
  m.status.pre_copied_bytes = 100;
  std::string out = FormatStatus({v}, {}, {}, kNow, {m});
  EXPECT_THAT(LineOf(out, "m-pre "), HasSubstr("PreCopying"));
  EXPECT_THAT(LineOf(out, "m-pre "), HasSubstr("100/400 (25% pre-copied)"));
  m.status.phase = api::MigrationPhase::kSwitching;
  m.status.pre_copied_bytes = m.status.bytes_copied = 400;
  m.status.refetched_bytes = 16;
  m.status.target_checksum = "xxh3x16m:x";
  out = FormatStatus({v}, {}, {}, kNow, {m});
  EXPECT_THAT(LineOf(out, "m-pre "),
              HasSubstr("400/400 (100%), 16 read in the pause"));
}

}  // namespace
}  // namespace daxlease::op
