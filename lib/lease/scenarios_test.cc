// The scenarios of docs/lease-protocol.md section 9, replayed through the
// library step by step, as the operator would drive it.
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/lease/lease.h"

namespace daxlease::lease {
namespace {

using ::testing::Contains;
using ::testing::ElementsAre;

const absl::Time kT0 = absl::FromUnixSeconds(1'700'000'000);
absl::Time At(int seconds) { return kT0 + absl::Seconds(seconds); }

// Drives one volume; every call must succeed unless stated.
class Volume {
 public:
  Volume() { s_.volume = "pmem-vol"; }
  const VolumeState& state() const { return s_; }
  const Lease& lease(const std::string& id) const { return *s_.Find(id); }

  std::vector<Action> On(const Event& e, absl::Time now) {
    absl::StatusOr<Outcome> o = Apply(s_, e, now);
    EXPECT_TRUE(o.ok()) << o.status();
    if (!o.ok()) return {};
    s_ = o->state;
    return o->actions;
  }
  absl::Status Refused(const Event& e, absl::Time now) {
    absl::StatusOr<Outcome> o = Apply(s_, e, now);
    EXPECT_FALSE(o.ok());
    return o.status();
  }
  std::vector<Action> Tick(absl::Time now) {
    absl::StatusOr<Outcome> o = Step(s_, now);
    EXPECT_TRUE(o.ok()) << o.status();
    s_ = o->state;
    return o->actions;
  }
  void Join(const std::string& id, absl::Time now) {
    On(Request{id, "node-" + id, "pod-" + id, Access::kReadWrite}, now);
    ASSERT_TRUE(MayGrant(s_, id).ok());
    On(Grant{id}, now);
  }

 private:
  VolumeState s_;
};

TEST(LeaseScenario, CleanReshape) {
  Volume v;
  for (const char* id : {"a", "b", "c"}) v.Join(id, At(0));
  EXPECT_EQ(v.On(StartRecall{"r1", RecallReason::kReshape}, At(0)).size(), 3u);
  v.On(HolderAck{"a", "r1", 1, true}, At(2));
  v.On(HolderAck{"b", "r1", 1, true}, At(3));
  EXPECT_THAT(v.On(HolderAck{"c", "r1", 1, true}, At(5)),
              Contains(Action{ActionKind::kRecallComplete, ""}));
  EXPECT_EQ(v.state().phase, VolumePhase::kQuiesced);
  v.On(BeginChange{ChangeKind::kReshape}, At(6));
  EXPECT_EQ(v.state().phase, VolumePhase::kReshaping);
  v.On(ChangeDone{}, At(20));
  EXPECT_EQ(v.state().phase, VolumePhase::kReady);
  EXPECT_EQ(v.state().epoch, 2u);
  for (const char* id : {"a", "b", "c"}) {
    v.Join(id, At(21));
    EXPECT_EQ(v.lease(id).epoch, 2u);
  }
}

TEST(LeaseScenario, SlowHolderWithProgressAndSilentHolder) {
  Volume v;
  for (const char* id : {"a", "b", "c"}) v.Join(id, At(0));
  v.On(StartRecall{"r1", RecallReason::kMigrate}, At(0));
  v.On(HolderAck{"a", "r1", 1, true}, At(1));
  v.On(Progress{"b", "r1", 1}, At(20));
  EXPECT_EQ(v.lease("b").deadline, At(50));
  EXPECT_EQ(NextDeadline(v.state()), At(30));
  // 30 s: c is silent -> fence; b has until 50 s.
  EXPECT_THAT(v.Tick(At(30)), ElementsAre(Action{ActionKind::kFence, "c"}));
  v.On(FenceConfirmed{"c", 1}, At(31));
  EXPECT_EQ(v.lease("c").state, LeaseState::kRevoked);
  EXPECT_EQ(v.lease("c").reason, RevokeReason::kDeadlineExceeded);
  EXPECT_EQ(v.state().phase, VolumePhase::kRecalling);  // b still flushing
  v.On(Progress{"b", "r1", 1}, At(45));
  EXPECT_EQ(v.lease("b").deadline, At(75));
  EXPECT_TRUE(v.Tick(At(60)).empty());
  EXPECT_THAT(v.On(HolderAck{"b", "r1", 1, true}, At(70)),
              Contains(Action{ActionKind::kRecallComplete, ""}));
}

TEST(LeaseScenario, CrashedHolderIsRevokedAndMustAcknowledge) {
  Volume v;
  for (const char* id : {"a", "b", "c"}) v.Join(id, At(0));
  v.On(StartRecall{"r1", RecallReason::kMigrate}, At(0));
  v.On(HolderAck{"a", "r1", 1, true}, At(1));
  v.On(HolderAck{"b", "r1", 1, true}, At(1));
  // c's node is gone.
  EXPECT_THAT(v.Tick(At(30)), ElementsAre(Action{ActionKind::kFence, "c"}));
  EXPECT_FALSE(RecallComplete(v.state()));  // not before the fence
  EXPECT_EQ(v.Refused(BeginChange{ChangeKind::kMigrate}, At(31)).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(CheckAccess(v.state(), "c", 1).code(),
            absl::StatusCode::kPermissionDenied);
  v.On(FenceConfirmed{"c", 1}, At(32));
  v.On(BeginChange{ChangeKind::kMigrate}, At(33));
  v.On(ChangeDone{}, At(90));
  EXPECT_EQ(v.state().epoch, 2u);
  // c comes back: its old ack is refused, its request too, until it
  // acknowledges the revocation.
  EXPECT_EQ(v.Refused(HolderAck{"c", "r1", 1, true}, At(100)).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(v.Refused(Request{"c", "node-c", "pod-c"}, At(100)).code(),
            absl::StatusCode::kFailedPrecondition);
  v.On(RevocationAck{"c", 1}, At(101));
  v.Join("c", At(102));
  EXPECT_EQ(v.lease("c").epoch, 2u);
  EXPECT_TRUE(IsStaleEpoch(v.state(), "c", 1));
}

TEST(LeaseScenario, RequestDuringRecallWaits) {
  Volume v;
  v.Join("a", At(0));
  v.On(StartRecall{"r1", RecallReason::kReshape}, At(0));
  v.On(Request{"d", "node-d", "pod-d"}, At(5));
  EXPECT_EQ(MayGrant(v.state(), "d").code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(v.Refused(Grant{"d"}, At(5)).code(),
            absl::StatusCode::kUnavailable);
  v.On(HolderAck{"a", "r1", 1, true}, At(6));
  EXPECT_EQ(v.state().phase, VolumePhase::kQuiesced);  // d does not block
  v.On(BeginChange{ChangeKind::kReshape}, At(7));
  v.On(ChangeDone{}, At(8));
  v.On(Grant{"d"}, At(9));
  EXPECT_EQ(v.lease("d").epoch, 2u);
}

TEST(LeaseScenario, UnflushedAckIsRevokedAtOnce) {
  Volume v;
  v.Join("a", At(0));
  v.On(StartRecall{"r1", RecallReason::kEvict}, At(0));
  EXPECT_THAT(v.On(HolderAck{"a", "r1", 1, false}, At(3)),
              ElementsAre(Action{ActionKind::kFence, "a"}));
  EXPECT_EQ(v.lease("a").reason, RevokeReason::kNotFlushed);
  v.On(FenceConfirmed{"a", 1}, At(4));
  EXPECT_EQ(v.lease("a").state, LeaseState::kRevoked);
  EXPECT_EQ(v.state().phase, VolumePhase::kQuiesced);
  v.On(Resume{}, At(5));
  EXPECT_EQ(v.state().epoch, 2u);
}

TEST(LeaseScenario, OperatorCrashMidRecallIsRepairedByStep) {
  Volume v;
  for (const char* id : {"a", "b"}) v.Join(id, At(0));
  v.On(StartRecall{"r1", RecallReason::kReshape}, At(0));
  // What a new leader reads back: the volume Recalling, lease b still
  // Granted (the crash came before its record was written).
  VolumeState rebuilt = v.state();
  Lease& b = *rebuilt.Find("b");
  b.state = LeaseState::kGranted;
  b.recall_id.clear();
  b.deadline = absl::InfiniteFuture();
  ASSERT_TRUE(Validate(rebuilt).ok());
  absl::StatusOr<Outcome> o = Step(rebuilt, At(12));
  ASSERT_TRUE(o.ok());
  EXPECT_THAT(o->actions, ElementsAre(Action{ActionKind::kNotifyRecall, "b"}));
  EXPECT_EQ(o->state.Find("b")->deadline, At(42));
  EXPECT_EQ(o->state.Find("a")->deadline, At(30));
}

}  // namespace
}  // namespace daxlease::lease
