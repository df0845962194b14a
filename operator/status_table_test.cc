#include "operator/status_table.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace daxlease::op {
namespace {

using testing::HasSubstr;
using testing::Not;

const absl::Time kNow = absl::FromUnixSeconds(1'700'000'000);

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

}  // namespace
}  // namespace daxlease::op
