// One test per transition and per refusal of the lease state machine.
#include "lib/lease/lease.h"

#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace daxlease::lease {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

const absl::Time kT0 = absl::FromUnixSeconds(1'700'000'000);

// Applies `e` and expects success; returns the outcome.
Outcome Ok(const VolumeState& s, const Event& e, absl::Time now = kT0) {
  absl::StatusOr<Outcome> o = Apply(s, e, now);
  EXPECT_TRUE(o.ok()) << o.status();
  return o.ok() ? *o : Outcome{s, {}};
}

// Applies `e`, expects refusal with `code`; returns the message.
std::string Refused(const VolumeState& s, const Event& e, absl::StatusCode code,
                    absl::Time now = kT0) {
  absl::StatusOr<Outcome> o = Apply(s, e, now);
  EXPECT_FALSE(o.ok()) << "event accepted";
  if (o.ok()) return "";
  EXPECT_EQ(o.status().code(), code) << o.status();
  return std::string(o.status().message());
}

Outcome StepOk(const VolumeState& s, absl::Time now) {
  absl::StatusOr<Outcome> o = Step(s, now);
  EXPECT_TRUE(o.ok()) << o.status();
  return o.ok() ? *o : Outcome{s, {}};
}

Request Req(const std::string& id) {
  return Request{id, "node-" + id, "pod-" + id, Access::kReadWrite};
}

// Volume "v" at epoch 1 with leases a, b, c Granted.
VolumeState ThreeGranted() {
  VolumeState s;
  s.volume = "v";
  for (const char* id : {"a", "b", "c"}) {
    s = Ok(s, Req(id)).state;
    s = Ok(s, Grant{id}).state;
  }
  return s;
}

// ThreeGranted, then recall "r1" started at kT0.
VolumeState Recalling3() { return Ok(ThreeGranted(), StartRecall{"r1"}).state; }

// Recalling3, then `id` missed its deadline (fencing).
VolumeState Fencing(const std::string& id) {
  VolumeState s = Recalling3();
  for (const char* other : {"a", "b", "c"}) {
    if (other != id) s = Ok(s, HolderAck{other, "r1", 1, true}).state;
  }
  return StepOk(s, kT0 + absl::Seconds(30)).state;
}

// Everything released, volume Quiesced after recall r1.
VolumeState Quiesced() {
  VolumeState s = Recalling3();
  for (const char* id : {"a", "b", "c"}) {
    s = Ok(s, HolderAck{id, "r1", 1, true}).state;
  }
  EXPECT_EQ(s.phase, VolumePhase::kQuiesced);
  return s;
}

const Lease& L(const VolumeState& s, const std::string& id) {
  const Lease* l = s.Find(id);
  EXPECT_NE(l, nullptr) << id;
  static const Lease kNone;
  return l ? *l : kNone;
}

// ------------------------------------------------------------ Request

TEST(LeaseRequest, CreatesPendingLease) {
  VolumeState s;
  Outcome o = Ok(s, Request{"a", "n1", "p1", Access::kReadOnly});
  const Lease& l = L(o.state, "a");
  EXPECT_EQ(l.state, LeaseState::kPending);
  EXPECT_EQ(l.holder_node, "n1");
  EXPECT_EQ(l.access, Access::kReadOnly);
  EXPECT_EQ(l.epoch, 0u);
  EXPECT_THAT(o.actions, IsEmpty());
}

TEST(LeaseRequest, OnPendingIsNoOpButUpdatesAccess) {
  VolumeState s = Ok(VolumeState{}, Req("a")).state;
  Outcome o = Ok(s, Request{"a", "node-a", "pod-a", Access::kReadOnly});
  EXPECT_EQ(L(o.state, "a").state, LeaseState::kPending);
  EXPECT_EQ(L(o.state, "a").access, Access::kReadOnly);
  EXPECT_EQ(o.state.leases.size(), 1u);
}

TEST(LeaseRequest, ReleasedBecomesPendingAndClearsReason) {
  VolumeState s = Fencing("a");
  s = Ok(s, FenceConfirmed{"a", 1}).state;
  s = Ok(s, RevocationAck{"a", 1}).state;
  ASSERT_EQ(L(s, "a").reason, RevokeReason::kDeadlineExceeded);
  Outcome o = Ok(s, Req("a"));
  EXPECT_EQ(L(o.state, "a").state, LeaseState::kPending);
  EXPECT_EQ(L(o.state, "a").reason, RevokeReason::kNone);
}

TEST(LeaseRequest, RefusedWhileRevokedUntilAcknowledged) {
  VolumeState s = Ok(Fencing("a"), FenceConfirmed{"a", 1}).state;
  EXPECT_THAT(Refused(s, Req("a"), absl::StatusCode::kFailedPrecondition),
              HasSubstr("acknowledge the revocation"));
}

TEST(LeaseRequest, RefusedWhileHoldingAccess) {
  EXPECT_THAT(
      Refused(ThreeGranted(), Req("a"), absl::StatusCode::kFailedPrecondition),
      HasSubstr("already holds access"));
  Refused(Recalling3(), Req("a"), absl::StatusCode::kFailedPrecondition);
}

TEST(LeaseRequest, RefusedForAnotherHolder) {
  EXPECT_THAT(Refused(ThreeGranted(), Request{"a", "other", "pod-a"},
                      absl::StatusCode::kInvalidArgument),
              HasSubstr("belongs to node-a/pod-a"));
}

TEST(LeaseRequest, RefusedWithEmptyId) {
  Refused(VolumeState{}, Request{}, absl::StatusCode::kInvalidArgument);
}

// ------------------------------------------------------------ Grant

TEST(LeaseGrant, PendingBecomesGrantedAtVolumeEpoch) {
  VolumeState s = Ok(VolumeState{}, Req("a")).state;
  s.epoch = 7;
  Outcome o = Ok(s, Grant{"a"});
  EXPECT_EQ(L(o.state, "a").state, LeaseState::kGranted);
  EXPECT_EQ(L(o.state, "a").epoch, 7u);
  EXPECT_THAT(o.actions, ElementsAre(Action{ActionKind::kNotifyGranted, "a"}));
}

TEST(LeaseGrant, DuplicateIsNoOp) {
  Outcome o = Ok(ThreeGranted(), Grant{"a"});
  EXPECT_THAT(o.actions, IsEmpty());
  EXPECT_EQ(L(o.state, "a").state, LeaseState::kGranted);
}

TEST(LeaseGrant, RefusedForUnknownLease) {
  Refused(VolumeState{}, Grant{"x"}, absl::StatusCode::kNotFound);
}

TEST(LeaseGrant, RefusedUnlessPending) {
  VolumeState s = Ok(ThreeGranted(), Release{"a", 1}).state;
  EXPECT_THAT(Refused(s, Grant{"a"}, absl::StatusCode::kFailedPrecondition),
              HasSubstr("not Pending"));
}

TEST(LeaseGrant, RefusedRetryablyDuringRecall) {
  VolumeState s = Ok(Recalling3(), Req("d")).state;
  EXPECT_THAT(Refused(s, Grant{"d"}, absl::StatusCode::kUnavailable),
              HasSubstr("retry later"));
}

TEST(LeaseGrant, RefusedWhileQuiescedOrChanging) {
  VolumeState s = Ok(Quiesced(), Req("d")).state;
  Refused(s, Grant{"d"}, absl::StatusCode::kUnavailable);
  s = Ok(s, BeginChange{ChangeKind::kMigrate}).state;
  Refused(s, Grant{"d"}, absl::StatusCode::kUnavailable);
  s = Ok(s, ChangeDone{}).state;
  EXPECT_EQ(L(Ok(s, Grant{"d"}).state, "d").epoch, 2u);
}

// ------------------------------------------------------------ StartRecall

TEST(LeaseStartRecall, RecallsEveryGrantedLease) {
  VolumeState s = Ok(ThreeGranted(), Req("p")).state;
  Outcome o = Ok(s, StartRecall{"r1", RecallReason::kReshape});
  EXPECT_EQ(o.state.phase, VolumePhase::kRecalling);
  ASSERT_TRUE(o.state.recall.has_value());
  EXPECT_EQ(o.state.recall->id, "r1");
  EXPECT_EQ(o.state.recall->reason, RecallReason::kReshape);
  EXPECT_EQ(o.state.recall->cap, kT0 + absl::Seconds(120));
  for (const char* id : {"a", "b", "c"}) {
    const Lease& l = L(o.state, id);
    EXPECT_EQ(l.state, LeaseState::kRecalling);
    EXPECT_EQ(l.recall_id, "r1");
    EXPECT_EQ(l.deadline, kT0 + absl::Seconds(30));
  }
  EXPECT_EQ(L(o.state, "p").state, LeaseState::kPending);
  EXPECT_THAT(o.actions, ElementsAre(Action{ActionKind::kNotifyRecall, "a"},
                                     Action{ActionKind::kNotifyRecall, "b"},
                                     Action{ActionKind::kNotifyRecall, "c"}));
}

TEST(LeaseStartRecall, UsesPerRecallGrace) {
  Outcome o = Ok(ThreeGranted(),
                 StartRecall{"r1", RecallReason::kManual, absl::Seconds(5)});
  EXPECT_EQ(L(o.state, "a").deadline, kT0 + absl::Seconds(5));
}

TEST(LeaseStartRecall, GraceLongerThanCapRaisesTheCap) {
  Outcome o = Ok(ThreeGranted(),
                 StartRecall{"r1", RecallReason::kManual, absl::Seconds(300)});
  EXPECT_EQ(L(o.state, "a").deadline, kT0 + absl::Seconds(300));
  EXPECT_EQ(o.state.recall->cap, kT0 + absl::Seconds(300));
}

TEST(LeaseStartRecall, WithNoHolderCompletesAtOnce) {
  VolumeState s = Ok(VolumeState{}, Req("p")).state;
  Outcome o = Ok(s, StartRecall{"r1"});
  EXPECT_EQ(o.state.phase, VolumePhase::kQuiesced);
  EXPECT_THAT(o.actions, ElementsAre(Action{ActionKind::kRecallComplete, ""}));
}

TEST(LeaseStartRecall, SameIdIsNoOp) {
  VolumeState s = Recalling3();
  Outcome o = Ok(s, StartRecall{"r1"}, kT0 + absl::Seconds(10));
  EXPECT_THAT(o.actions, IsEmpty());
  EXPECT_EQ(L(o.state, "a").deadline, kT0 + absl::Seconds(30));
  Ok(Quiesced(), StartRecall{"r1"});
}

TEST(LeaseStartRecall, RefusedWhileAnotherRecallRuns) {
  EXPECT_THAT(Refused(Recalling3(), StartRecall{"r2"},
                      absl::StatusCode::kFailedPrecondition),
              HasSubstr("cannot start recall r2"));
  Refused(Quiesced(), StartRecall{"r2"}, absl::StatusCode::kFailedPrecondition);
}

TEST(LeaseStartRecall, RefusedWhenMalformed) {
  Refused(ThreeGranted(), StartRecall{""}, absl::StatusCode::kInvalidArgument);
  Refused(ThreeGranted(),
          StartRecall{"r", RecallReason::kManual, absl::Seconds(-1)},
          absl::StatusCode::kInvalidArgument);
}

// ------------------------------------------------------------ HolderAck

TEST(LeaseHolderAck, FlushedAckReleases) {
  Outcome o = Ok(Recalling3(), HolderAck{"a", "r1", 1, true});
  EXPECT_EQ(L(o.state, "a").state, LeaseState::kReleased);
  EXPECT_EQ(L(o.state, "a").reason, RevokeReason::kNone);
  EXPECT_EQ(o.state.phase, VolumePhase::kRecalling);
  EXPECT_THAT(o.actions, ElementsAre(Action{ActionKind::kReleased, "a"}));
}

TEST(LeaseHolderAck, LastAckCompletesRecall) {
  VolumeState s = Recalling3();
  s = Ok(s, HolderAck{"a", "r1", 1, true}).state;
  s = Ok(s, HolderAck{"b", "r1", 1, true}).state;
  Outcome o = Ok(s, HolderAck{"c", "r1", 1, true});
  EXPECT_EQ(o.state.phase, VolumePhase::kQuiesced);
  EXPECT_THAT(o.actions, ElementsAre(Action{ActionKind::kReleased, "c"},
                                     Action{ActionKind::kRecallComplete, ""}));
}

TEST(LeaseHolderAck, AckAfterDeadlineButBeforeStepIsAccepted) {
  Outcome o =
      Ok(Recalling3(), HolderAck{"a", "r1", 1, true}, kT0 + absl::Seconds(31));
  EXPECT_EQ(L(o.state, "a").state, LeaseState::kReleased);
}

TEST(LeaseHolderAck, UnflushedAckDecidesRevoke) {
  Outcome o = Ok(Recalling3(), HolderAck{"a", "r1", 1, false});
  EXPECT_EQ(L(o.state, "a").state, LeaseState::kRecalling);
  EXPECT_TRUE(L(o.state, "a").fencing());
  EXPECT_EQ(L(o.state, "a").reason, RevokeReason::kNotFlushed);
  EXPECT_THAT(o.actions, ElementsAre(Action{ActionKind::kFence, "a"}));
}

TEST(LeaseHolderAck, DuplicateIsNoOp) {
  VolumeState s = Ok(Recalling3(), HolderAck{"a", "r1", 1, true}).state;
  Outcome o = Ok(s, HolderAck{"a", "r1", 1, true});
  EXPECT_THAT(o.actions, IsEmpty());
}

TEST(LeaseHolderAck, RefusedWithStaleEpoch) {
  EXPECT_THAT(Refused(Recalling3(), HolderAck{"a", "r1", 0, true},
                      absl::StatusCode::kFailedPrecondition),
              HasSubstr("stale epoch 0"));
}

TEST(LeaseHolderAck, RefusedWithStaleRecallId) {
  EXPECT_THAT(Refused(Recalling3(), HolderAck{"a", "r0", 1, true},
                      absl::StatusCode::kFailedPrecondition),
              HasSubstr("stale recall ID r0"));
}

TEST(LeaseHolderAck, RefusedWhileFencing) {
  EXPECT_THAT(Refused(Fencing("a"), HolderAck{"a", "r1", 1, true},
                      absl::StatusCode::kFailedPrecondition),
              HasSubstr("too late"));
}

TEST(LeaseHolderAck, RefusedWhenRevoked) {
  VolumeState s = Ok(Fencing("a"), FenceConfirmed{"a", 1}).state;
  Refused(s, HolderAck{"a", "r1", 1, true},
          absl::StatusCode::kFailedPrecondition);
}

TEST(LeaseHolderAck, RefusedWithoutRecall) {
  Refused(ThreeGranted(), HolderAck{"a", "", 1, true},
          absl::StatusCode::kFailedPrecondition);
  Refused(ThreeGranted(), HolderAck{"a", "r1", 1, true},
          absl::StatusCode::kFailedPrecondition);
}

TEST(LeaseHolderAck, RefusedForUnknownLease) {
  Refused(Recalling3(), HolderAck{"x", "r1", 1, true},
          absl::StatusCode::kNotFound);
}

// ------------------------------------------------------------ Progress

TEST(LeaseProgress, ExtendsDeadline) {
  Outcome o = Ok(Recalling3(), Progress{"a", "r1", 1}, kT0 + absl::Seconds(20));
  EXPECT_EQ(L(o.state, "a").deadline, kT0 + absl::Seconds(50));
  EXPECT_EQ(L(o.state, "b").deadline, kT0 + absl::Seconds(30));
  EXPECT_THAT(o.actions,
              ElementsAre(Action{ActionKind::kDeadlineExtended, "a"}));
}

TEST(LeaseProgress, NeverPastTheCap) {
  VolumeState s = Recalling3();
  s = Ok(s, Progress{"a", "r1", 1}, kT0 + absl::Seconds(100)).state;
  EXPECT_EQ(L(s, "a").deadline, kT0 + absl::Seconds(120));
  Outcome o = Ok(s, Progress{"a", "r1", 1}, kT0 + absl::Seconds(110));
  EXPECT_EQ(L(o.state, "a").deadline, kT0 + absl::Seconds(120));
  EXPECT_THAT(o.actions, IsEmpty());
}

TEST(LeaseProgress, EarlyReportDoesNotShortenDeadline) {
  Outcome o = Ok(Recalling3(), Progress{"a", "r1", 1});
  EXPECT_EQ(L(o.state, "a").deadline, kT0 + absl::Seconds(30));
  EXPECT_THAT(o.actions, IsEmpty());
}

TEST(LeaseProgress, RefusedWhileFencingOrStale) {
  Refused(Fencing("a"), Progress{"a", "r1", 1},
          absl::StatusCode::kFailedPrecondition);
  Refused(Recalling3(), Progress{"a", "r0", 1},
          absl::StatusCode::kFailedPrecondition);
  Refused(Recalling3(), Progress{"a", "r1", 2},
          absl::StatusCode::kFailedPrecondition);
  Refused(ThreeGranted(), Progress{"a", "r1", 1},
          absl::StatusCode::kFailedPrecondition);
  Refused(Recalling3(), Progress{"x", "r1", 1}, absl::StatusCode::kNotFound);
}

// ------------------------------------------------------------ Step

TEST(LeaseStep, BeforeDeadlineDoesNothing) {
  VolumeState s = Recalling3();
  Outcome o = StepOk(s, kT0 + absl::Seconds(29));
  EXPECT_THAT(o.actions, IsEmpty());
  EXPECT_EQ(L(o.state, "a").state, LeaseState::kRecalling);
  EXPECT_FALSE(L(o.state, "a").fencing());
}

TEST(LeaseStep, DeadlineDecidesRevokeOfEveryUnackedLease) {
  VolumeState s = Ok(Recalling3(), HolderAck{"b", "r1", 1, true}).state;
  Outcome o = StepOk(s, kT0 + absl::Seconds(30));
  EXPECT_EQ(L(o.state, "a").reason, RevokeReason::kDeadlineExceeded);
  EXPECT_TRUE(L(o.state, "a").fencing());
  EXPECT_TRUE(L(o.state, "c").fencing());
  EXPECT_EQ(L(o.state, "b").state, LeaseState::kReleased);
  EXPECT_EQ(o.state.phase, VolumePhase::kRecalling);
  EXPECT_THAT(o.actions, ElementsAre(Action{ActionKind::kFence, "a"},
                                     Action{ActionKind::kFence, "c"}));
}

TEST(LeaseStep, ExtendedDeadlineIsHonoured) {
  VolumeState s =
      Ok(Recalling3(), Progress{"a", "r1", 1}, kT0 + absl::Seconds(20)).state;
  Outcome o = StepOk(s, kT0 + absl::Seconds(30));
  EXPECT_FALSE(L(o.state, "a").fencing());
  EXPECT_TRUE(L(o.state, "b").fencing());
  o = StepOk(o.state, kT0 + absl::Seconds(50));
  EXPECT_TRUE(L(o.state, "a").fencing());
}

TEST(LeaseStep, ReasksFenceUntilConfirmed) {
  Outcome o = StepOk(Fencing("a"), kT0 + absl::Seconds(40));
  EXPECT_THAT(o.actions, ElementsAre(Action{ActionKind::kFence, "a"}));
  EXPECT_EQ(L(o.state, "a").reason, RevokeReason::kDeadlineExceeded);
}

TEST(LeaseStep, RecallsGrantedLeaseLeftByACrash) {
  // The operator persisted the volume as Recalling but crashed before lease b.
  VolumeState s = Recalling3();
  Lease& b = *s.Find("b");
  b.state = LeaseState::kGranted;
  b.recall_id.clear();
  b.deadline = absl::InfiniteFuture();
  Outcome o = StepOk(s, kT0 + absl::Seconds(10));
  EXPECT_EQ(L(o.state, "b").state, LeaseState::kRecalling);
  EXPECT_EQ(L(o.state, "b").recall_id, "r1");
  EXPECT_EQ(L(o.state, "b").deadline, kT0 + absl::Seconds(40));
  EXPECT_THAT(o.actions, ElementsAre(Action{ActionKind::kNotifyRecall, "b"}));
}

TEST(LeaseStep, CompletesARecallWithNothingOutstanding) {
  // E.g. persisted leases all Released but the volume phase not yet Quiesced.
  VolumeState s = Quiesced();
  s.phase = VolumePhase::kRecalling;
  Outcome o = StepOk(s, kT0);
  EXPECT_EQ(o.state.phase, VolumePhase::kQuiesced);
  EXPECT_THAT(o.actions, ElementsAre(Action{ActionKind::kRecallComplete, ""}));
}

TEST(LeaseStep, IsIdempotentOnceFenced) {
  VolumeState s = Ok(Fencing("a"), FenceConfirmed{"a", 1}).state;
  Outcome o = StepOk(s, kT0 + absl::Seconds(1000));
  EXPECT_THAT(o.actions, IsEmpty());
  EXPECT_EQ(o.state.phase, VolumePhase::kQuiesced);
}

TEST(LeaseStep, RefusesInvalidState) {
  VolumeState s;
  s.epoch = 0;
  EXPECT_EQ(Step(s, kT0).status().code(), absl::StatusCode::kInvalidArgument);
}

// ------------------------------------------------------------ FenceConfirmed

TEST(LeaseFenceConfirmed, FencingBecomesRevokedAndCompletes) {
  Outcome o = Ok(Fencing("a"), FenceConfirmed{"a", 1});
  EXPECT_EQ(L(o.state, "a").state, LeaseState::kRevoked);
  EXPECT_EQ(L(o.state, "a").reason, RevokeReason::kDeadlineExceeded);
  EXPECT_EQ(o.state.phase, VolumePhase::kQuiesced);
  EXPECT_THAT(o.actions, ElementsAre(Action{ActionKind::kNotifyRevoked, "a"},
                                     Action{ActionKind::kRecallComplete, ""}));
}

TEST(LeaseFenceConfirmed, DuplicateIsNoOp) {
  VolumeState s = Ok(Fencing("a"), FenceConfirmed{"a", 1}).state;
  EXPECT_THAT(Ok(s, FenceConfirmed{"a", 1}).actions, IsEmpty());
}

TEST(LeaseFenceConfirmed, RefusedUnlessRevokeDecided) {
  EXPECT_THAT(Refused(Recalling3(), FenceConfirmed{"a", 1},
                      absl::StatusCode::kFailedPrecondition),
              HasSubstr("not being revoked"));
  Refused(ThreeGranted(), FenceConfirmed{"a", 1},
          absl::StatusCode::kFailedPrecondition);
  Refused(Quiesced(), FenceConfirmed{"a", 1},
          absl::StatusCode::kFailedPrecondition);
}

TEST(LeaseFenceConfirmed, RefusedWithStaleEpoch) {
  Refused(Fencing("a"), FenceConfirmed{"a", 0},
          absl::StatusCode::kFailedPrecondition);
  Refused(Fencing("a"), FenceConfirmed{"x", 1}, absl::StatusCode::kNotFound);
}

// ------------------------------------------------------------ RevocationAck

TEST(LeaseRevocationAck, RevokedBecomesReleasedKeepingReason) {
  VolumeState s = Ok(Fencing("a"), FenceConfirmed{"a", 1}).state;
  Outcome o = Ok(s, RevocationAck{"a", 1});
  EXPECT_EQ(L(o.state, "a").state, LeaseState::kReleased);
  EXPECT_EQ(L(o.state, "a").reason, RevokeReason::kDeadlineExceeded);
  EXPECT_THAT(o.actions, ElementsAre(Action{ActionKind::kReleased, "a"}));
}

TEST(LeaseRevocationAck, WorksAfterEpochBump) {
  VolumeState s = Ok(Fencing("a"), FenceConfirmed{"a", 1}).state;
  s = Ok(s, Resume{}).state;
  ASSERT_EQ(s.epoch, 2u);
  EXPECT_EQ(L(Ok(s, RevocationAck{"a", 1}).state, "a").state,
            LeaseState::kReleased);
}

TEST(LeaseRevocationAck, DuplicateIsNoOp) {
  VolumeState s = Ok(Fencing("a"), FenceConfirmed{"a", 1}).state;
  s = Ok(s, RevocationAck{"a", 1}).state;
  EXPECT_THAT(Ok(s, RevocationAck{"a", 1}).actions, IsEmpty());
}

TEST(LeaseRevocationAck, RefusedUnlessRevoked) {
  Refused(Fencing("a"), RevocationAck{"a", 1},
          absl::StatusCode::kFailedPrecondition);
  Refused(ThreeGranted(), RevocationAck{"a", 1},
          absl::StatusCode::kFailedPrecondition);
  Refused(Quiesced(), RevocationAck{"a", 1},
          absl::StatusCode::kFailedPrecondition);
  VolumeState s = Ok(Fencing("a"), FenceConfirmed{"a", 1}).state;
  Refused(s, RevocationAck{"a", 2}, absl::StatusCode::kFailedPrecondition);
  Refused(s, RevocationAck{"x", 1}, absl::StatusCode::kNotFound);
}

// ------------------------------------------------------------ Release

TEST(LeaseRelease, GrantedBecomesReleased) {
  Outcome o = Ok(ThreeGranted(), Release{"a", 1});
  EXPECT_EQ(L(o.state, "a").state, LeaseState::kReleased);
  EXPECT_THAT(o.actions, ElementsAre(Action{ActionKind::kReleased, "a"}));
}

TEST(LeaseRelease, PendingIsWithdrawn) {
  VolumeState s = Ok(VolumeState{}, Req("a")).state;
  EXPECT_EQ(L(Ok(s, Release{"a", 0}).state, "a").state, LeaseState::kReleased);
}

TEST(LeaseRelease, DuringRecallCountsAsFlushedAck) {
  VolumeState s = Recalling3();
  s = Ok(s, Release{"a", 1}).state;
  s = Ok(s, Release{"b", 1}).state;
  Outcome o = Ok(s, Release{"c", 1});
  EXPECT_EQ(o.state.phase, VolumePhase::kQuiesced);
  EXPECT_THAT(o.actions, ElementsAre(Action{ActionKind::kReleased, "c"},
                                     Action{ActionKind::kRecallComplete, ""}));
}

TEST(LeaseRelease, DuplicateIsNoOp) {
  VolumeState s = Ok(ThreeGranted(), Release{"a", 1}).state;
  EXPECT_THAT(Ok(s, Release{"a", 1}).actions, IsEmpty());
}

TEST(LeaseRelease, RefusedWhileFencingOrRevoked) {
  EXPECT_THAT(Refused(Fencing("a"), Release{"a", 1},
                      absl::StatusCode::kFailedPrecondition),
              HasSubstr("too late"));
  VolumeState s = Ok(Fencing("a"), FenceConfirmed{"a", 1}).state;
  Refused(s, Release{"a", 1}, absl::StatusCode::kFailedPrecondition);
}

TEST(LeaseRelease, RefusedWithStaleEpoch) {
  Refused(ThreeGranted(), Release{"a", 0},
          absl::StatusCode::kFailedPrecondition);
  Refused(ThreeGranted(), Release{"x", 1}, absl::StatusCode::kNotFound);
}

// ------------------------------------------------------------ volume changes

TEST(LeaseBeginChange, QuiescedBecomesReshapingOrMigrating) {
  EXPECT_EQ(Ok(Quiesced(), BeginChange{ChangeKind::kReshape}).state.phase,
            VolumePhase::kReshaping);
  EXPECT_EQ(Ok(Quiesced(), BeginChange{ChangeKind::kMigrate}).state.phase,
            VolumePhase::kMigrating);
}

TEST(LeaseBeginChange, RefusedUnlessQuiesced) {
  EXPECT_THAT(Refused(ThreeGranted(), BeginChange{},
                      absl::StatusCode::kFailedPrecondition),
              HasSubstr("needs a Quiesced volume"));
  Refused(Recalling3(), BeginChange{}, absl::StatusCode::kFailedPrecondition);
  Refused(Fencing("a"), BeginChange{}, absl::StatusCode::kFailedPrecondition);
  VolumeState s = Ok(Quiesced(), BeginChange{}).state;
  Refused(s, BeginChange{}, absl::StatusCode::kFailedPrecondition);
}

TEST(LeaseChangeDone, BackToReadyWithNewEpoch) {
  VolumeState s = Ok(Quiesced(), BeginChange{ChangeKind::kMigrate}).state;
  Outcome o = Ok(s, ChangeDone{});
  EXPECT_EQ(o.state.phase, VolumePhase::kReady);
  EXPECT_EQ(o.state.epoch, 2u);
  EXPECT_FALSE(o.state.recall.has_value());
  EXPECT_THAT(o.actions, ElementsAre(Action{ActionKind::kEpochBumped, ""}));
}

TEST(LeaseChangeDone, MigrationMovesTheOwnerWithTheEpoch) {
  VolumeState s = Ok(Quiesced(), BeginChange{ChangeKind::kMigrate}).state;
  const std::string before = s.owner_node;
  Outcome o = Ok(s, ChangeDone{"node-b"});
  EXPECT_EQ(o.state.owner_node, "node-b");
  EXPECT_NE(before, "node-b");
  EXPECT_EQ(o.state.phase, VolumePhase::kReady);
  EXPECT_EQ(o.state.epoch, s.epoch + 1);
  // Rolled back: the owner stays.
  EXPECT_EQ(Ok(s, ChangeDone{}).state.owner_node, before);
}

TEST(LeaseChangeDone, OnlyAMigrationMovesTheOwner) {
  VolumeState s = Ok(Quiesced(), BeginChange{ChangeKind::kReshape}).state;
  Refused(s, ChangeDone{"node-b"}, absl::StatusCode::kFailedPrecondition);
  Refused(Quiesced(), ChangeDone{"node-b"},
          absl::StatusCode::kFailedPrecondition);
}

TEST(LeaseChangeDone, RefusedWithoutChange) {
  Refused(ThreeGranted(), ChangeDone{}, absl::StatusCode::kFailedPrecondition);
  Refused(Recalling3(), ChangeDone{}, absl::StatusCode::kFailedPrecondition);
  Refused(Quiesced(), ChangeDone{}, absl::StatusCode::kFailedPrecondition);
}

TEST(LeaseResume, QuiescedBackToReadyWithNewEpoch) {
  Outcome o = Ok(Quiesced(), Resume{});
  EXPECT_EQ(o.state.phase, VolumePhase::kReady);
  EXPECT_EQ(o.state.epoch, 2u);
  EXPECT_THAT(o.actions, ElementsAre(Action{ActionKind::kEpochBumped, ""}));
}

TEST(LeaseResume, RefusedUnlessQuiesced) {
  Refused(ThreeGranted(), Resume{}, absl::StatusCode::kFailedPrecondition);
  Refused(Recalling3(), Resume{}, absl::StatusCode::kFailedPrecondition);
  VolumeState s = Ok(Quiesced(), BeginChange{}).state;
  Refused(s, Resume{}, absl::StatusCode::kFailedPrecondition);
}

// ------------------------------------------------------------ Forget

TEST(LeaseForget, DropsLeasesWithoutAccess) {
  VolumeState s = Ok(ThreeGranted(), Release{"a", 1}).state;
  s = Ok(s, Req("p")).state;
  s = Ok(s, Forget{"a"}).state;
  s = Ok(s, Forget{"p"}).state;
  EXPECT_EQ(s.Find("a"), nullptr);
  EXPECT_EQ(s.Find("p"), nullptr);
  EXPECT_EQ(s.leases.size(), 2u);
  VolumeState r = Ok(Fencing("a"), FenceConfirmed{"a", 1}).state;
  EXPECT_EQ(Ok(r, Forget{"a"}).state.Find("a"), nullptr);
}

TEST(LeaseForget, AbsentIsNoOp) { Ok(ThreeGranted(), Forget{"x"}); }

TEST(LeaseForget, RefusedWhileHoldingAccess) {
  Refused(ThreeGranted(), Forget{"a"}, absl::StatusCode::kFailedPrecondition);
  Refused(Recalling3(), Forget{"a"}, absl::StatusCode::kFailedPrecondition);
  Refused(Fencing("a"), Forget{"a"}, absl::StatusCode::kFailedPrecondition);
}

// ------------------------------------------------------------ Validate

TEST(LeaseValidate, AcceptsReachableStates) {
  EXPECT_TRUE(Validate(VolumeState{}).ok());
  EXPECT_TRUE(Validate(ThreeGranted()).ok());
  EXPECT_TRUE(Validate(Fencing("a")).ok());
  EXPECT_TRUE(Validate(Quiesced()).ok());
}

TEST(LeaseValidate, RefusesBrokenStates) {
  std::vector<VolumeState> bad;
  {
    VolumeState s;
    s.epoch = 0;
    bad.push_back(s);
  }
  {
    VolumeState s = ThreeGranted();
    s.recall = Recall();  // recall while Ready
    s.recall->id = "r";
    bad.push_back(s);
  }
  {
    VolumeState s = Recalling3();
    s.recall.reset();  // Recalling without a recall
    bad.push_back(s);
  }
  {
    VolumeState s = Recalling3();
    s.recall->id = "";
    bad.push_back(s);
  }
  {
    VolumeState s = ThreeGranted();
    s.leases[1].id = "a";  // duplicate
    bad.push_back(s);
  }
  {
    VolumeState s = ThreeGranted();
    s.leases[0].id = "";
    bad.push_back(s);
  }
  {
    VolumeState s = ThreeGranted();
    s.leases[0].epoch = 0;  // Granted at an old epoch
    bad.push_back(s);
  }
  {
    VolumeState s = Ok(VolumeState{}, Req("a")).state;
    s.leases[0].epoch = 9;  // from the future
    bad.push_back(s);
  }
  {
    VolumeState s = Quiesced();
    s.leases[0].state = LeaseState::kGranted;  // access while Quiesced
    bad.push_back(s);
  }
  {
    VolumeState s = ThreeGranted();
    s.leases[0].reason = RevokeReason::kNotFlushed;
    bad.push_back(s);
  }
  {
    VolumeState s = ThreeGranted();
    s.leases[0].state = LeaseState::kRecalling;  // Recalling while Ready
    bad.push_back(s);
  }
  {
    VolumeState s = Recalling3();
    s.leases[0].recall_id = "r0";
    bad.push_back(s);
  }
  {
    VolumeState s = Quiesced();
    s.leases[0].state = LeaseState::kRecalling;
    bad.push_back(s);
  }
  {
    VolumeState s = Quiesced();
    s.leases[0].state = LeaseState::kRevoked;  // no reason
    bad.push_back(s);
  }
  {
    VolumeState s = Ok(VolumeState{}, Req("a")).state;
    s.leases[0].reason = RevokeReason::kDeadlineExceeded;  // Pending + reason
    bad.push_back(s);
  }
  {
    VolumeState s;
    s.config.max_recall = absl::Seconds(1);  // below grace
    bad.push_back(s);
  }
  for (size_t i = 0; i < bad.size(); ++i) {
    absl::Status st = Validate(bad[i]);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << "case " << i;
    // And every entry point refuses it without touching it.
    EXPECT_EQ(Apply(bad[i], Resume{}, kT0).status().code(),
              absl::StatusCode::kInvalidArgument)
        << "case " << i;
    EXPECT_EQ(Step(bad[i], kT0).status().code(),
              absl::StatusCode::kInvalidArgument)
        << "case " << i;
  }
}

// A cancelled recall ends now: acked leases stay Released, the others are
// revoked by the next Step (as at their deadline) and fenced; then the volume
// is Quiesced. Another recall's ID is refused.
TEST(LeaseCancelRecall, OutstandingLeasesAreRevokedAtOnce) {
  VolumeState s = Ok(Recalling3(), HolderAck{"a", "r1", 1, true}).state;
  EXPECT_EQ(Apply(s, CancelRecall{"other"}, kT0).status().code(),
            absl::StatusCode::kFailedPrecondition);
  const absl::Time t = kT0 + absl::Seconds(1);  // long before the deadline
  s = Ok(s, CancelRecall{"r1"}, t).state;
  absl::StatusOr<Outcome> o = Step(s, t);
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_THAT(o->actions, ElementsAre(Action{ActionKind::kFence, "b"},
                                      Action{ActionKind::kFence, "c"}));
  s = o->state;
  EXPECT_EQ(s.Find("a")->state, LeaseState::kReleased);
  EXPECT_TRUE(s.Find("b")->fencing());
  s = Ok(s, FenceConfirmed{"b", 1}, t).state;
  s = Ok(s, FenceConfirmed{"c", 1}, t).state;
  EXPECT_EQ(s.phase, VolumePhase::kQuiesced);
  // Once over, cancelling again changes nothing.
  EXPECT_TRUE(Apply(s, CancelRecall{"r1"}, t).ok());
}

// ------------------------------------------------------------ decisions

TEST(LeaseDecisions, MayGrant) {
  VolumeState s = Ok(ThreeGranted(), Req("d")).state;
  EXPECT_TRUE(MayGrant(s, "d").ok());
  EXPECT_EQ(MayGrant(s, "a").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(MayGrant(s, "x").code(), absl::StatusCode::kNotFound);
  s = Ok(s, StartRecall{"r1"}).state;
  EXPECT_EQ(MayGrant(s, "d").code(), absl::StatusCode::kUnavailable);
}

// An unshared volume grants only to its owner node's leases; Grant refuses
// what MayGrant refuses and changes nothing.
TEST(LeaseDecisions, UnsharedVolumeGrantsOnlyOnItsOwnerNode) {
  VolumeState s;
  s.volume = "v";
  s.shared = false;
  s.owner_node = "owner";
  s = Ok(s, Request{"mine", "owner", "p1"}).state;
  s = Ok(s, Request{"theirs", "other", "p2"}).state;
  EXPECT_TRUE(MayGrant(s, "mine").ok());
  absl::Status no = MayGrant(s, "theirs");
  EXPECT_EQ(no.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(no.message(), testing::HasSubstr("not shared"));
  EXPECT_EQ(Apply(s, Grant{"theirs"}, kT0).status().code(),
            absl::StatusCode::kPermissionDenied);
  s.shared = true;
  EXPECT_TRUE(MayGrant(s, "theirs").ok());
}

TEST(LeaseDecisions, LeasesToRevokeAndFenceAndNextDeadline) {
  VolumeState s =
      Ok(Recalling3(), Progress{"b", "r1", 1}, kT0 + absl::Seconds(10)).state;
  s = Ok(s, HolderAck{"c", "r1", 1, true}).state;
  EXPECT_EQ(NextDeadline(s), kT0 + absl::Seconds(30));
  EXPECT_THAT(LeasesToRevoke(s, kT0 + absl::Seconds(29)), IsEmpty());
  EXPECT_THAT(LeasesToRevoke(s, kT0 + absl::Seconds(30)), ElementsAre("a"));
  EXPECT_THAT(LeasesToRevoke(s, kT0 + absl::Seconds(40)),
              ElementsAre("a", "b"));
  EXPECT_THAT(LeasesToFence(s), IsEmpty());
  s = StepOk(s, kT0 + absl::Seconds(30)).state;
  EXPECT_THAT(LeasesToFence(s), ElementsAre("a"));
  EXPECT_THAT(LeasesToRevoke(s, kT0 + absl::Seconds(30)), IsEmpty());
  EXPECT_EQ(NextDeadline(s), kT0 + absl::Seconds(40));
  EXPECT_EQ(NextDeadline(ThreeGranted()), absl::InfiniteFuture());
}

TEST(LeaseDecisions, RecallComplete) {
  EXPECT_FALSE(RecallComplete(ThreeGranted()));
  EXPECT_FALSE(RecallComplete(Recalling3()));
  EXPECT_FALSE(RecallComplete(Fencing("a")));  // fence not confirmed yet
  VolumeState s = Quiesced();
  EXPECT_FALSE(RecallComplete(s));  // already moved on
  s.phase = VolumePhase::kRecalling;
  EXPECT_TRUE(RecallComplete(s));
}

TEST(LeaseDecisions, IsStaleEpochAndRecall) {
  VolumeState s = Recalling3();
  EXPECT_FALSE(IsStaleEpoch(s, "a", 1));
  EXPECT_TRUE(IsStaleEpoch(s, "a", 0));
  EXPECT_TRUE(IsStaleEpoch(s, "x", 0));
  EXPECT_FALSE(IsStaleRecall(s, "a", "r1"));
  EXPECT_TRUE(IsStaleRecall(s, "a", "r0"));
  EXPECT_TRUE(IsStaleRecall(s, "x", "r1"));
  EXPECT_TRUE(IsStaleRecall(ThreeGranted(), "a", "r1"));
  VolumeState q = Ok(Quiesced(), Resume{}).state;
  EXPECT_TRUE(
      IsStaleEpoch(Ok(Ok(q, Req("a")).state, Grant{"a"}).state, "a", 1));
}

TEST(LeaseDecisions, CheckAccess) {
  EXPECT_TRUE(CheckAccess(ThreeGranted(), "a", 1).ok());
  EXPECT_TRUE(CheckAccess(Recalling3(), "a", 1).ok());  // flushing
  EXPECT_EQ(CheckAccess(ThreeGranted(), "a", 2).code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(CheckAccess(ThreeGranted(), "x", 1).code(),
            absl::StatusCode::kNotFound);
  absl::Status st = CheckAccess(Fencing("a"), "a", 1);
  EXPECT_EQ(st.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(st.message(), HasSubstr("being revoked"));
  st = CheckAccess(Ok(Fencing("a"), FenceConfirmed{"a", 1}).state, "a", 1);
  EXPECT_THAT(st.message(), HasSubstr("revoked (DeadlineExceeded)"));
  EXPECT_EQ(CheckAccess(Quiesced(), "a", 1).code(),
            absl::StatusCode::kPermissionDenied);
}

// A Snapshot recall holds the volume Quiesced for the copy (no grant), then
// resumes; Manual/Evict resume at once; Reshape/Migrate need their change.
TEST(WhatEndsRecall, SnapshotHoldsForTheCopyThenResumesAtTheNextEpoch) {
  EXPECT_EQ(WhatEndsRecall(RecallReason::kManual), QuiescedUntil::kResume);
  EXPECT_EQ(WhatEndsRecall(RecallReason::kEvict), QuiescedUntil::kResume);
  EXPECT_EQ(WhatEndsRecall(RecallReason::kSnapshot), QuiescedUntil::kAfterCopy);
  EXPECT_EQ(WhatEndsRecall(RecallReason::kReshape), QuiescedUntil::kChange);
  EXPECT_EQ(WhatEndsRecall(RecallReason::kMigrate), QuiescedUntil::kChange);

  VolumeState s;
  s.volume = "v";
  s.epoch = 4;
  Lease l;
  l.id = "l";
  l.holder_node = "n";
  l.holder_pod = "p";
  l.state = LeaseState::kGranted;
  l.epoch = 4;
  s.leases.push_back(l);
  const absl::Time t = absl::FromUnixSeconds(1000);
  auto o = Apply(s, StartRecall{"snap", RecallReason::kSnapshot}, t);
  ASSERT_TRUE(o.ok()) << o.status();
  o = Apply(o->state, HolderAck{"l", "snap", 4, true}, t);
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->state.phase, VolumePhase::kQuiesced);
  auto req = Apply(o->state, Request{"l", "n", "p"}, t);
  ASSERT_TRUE(req.ok()) << req.status();
  EXPECT_EQ(MayGrant(req->state, "l").code(), absl::StatusCode::kUnavailable)
      << "nothing is granted while the copy runs";
  o = Apply(req->state, Resume{}, t);
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->state.phase, VolumePhase::kReady);
  EXPECT_EQ(o->state.epoch, 5u);
  EXPECT_TRUE(MayGrant(o->state, "l").ok());
}

// ------------------------------------------------------------ WhenToCarryOut

// Each action of a whole recall, from the grant to the next epoch, and the
// record it waits for.
std::vector<std::pair<ActionKind, StoredFirst>> CarriedOut(
    const std::vector<Action>& actions) {
  std::vector<std::pair<ActionKind, StoredFirst>> out;
  for (const Action& a : actions) out.emplace_back(a.kind, WhenToCarryOut(a));
  return out;
}

TEST(WhenToCarryOut, HoldersAreAskedOnceTheRecallStartIsStored) {
  // Every holder of a recall is asked after the recall's own record, not
  // after the lease records that show it (they may lag).
  Outcome o = Ok(ThreeGranted(), StartRecall{"r1"});
  ASSERT_EQ(o.actions.size(), 3u);
  for (const Action& a : o.actions) {
    EXPECT_EQ(a.kind, ActionKind::kNotifyRecall);
    EXPECT_EQ(WhenToCarryOut(a), StoredFirst::kRecallStart) << a.lease_id;
  }
  // Also a lease Step recalls after a crash (the recall's start is stored).
  VolumeState s = Recalling3();
  Lease& b = *s.Find("b");
  b.state = LeaseState::kGranted;
  b.recall_id.clear();
  b.deadline = absl::InfiniteFuture();
  EXPECT_THAT(CarriedOut(StepOk(s, kT0).actions),
              ElementsAre(std::pair(ActionKind::kNotifyRecall,
                                    StoredFirst::kRecallStart)));
}

TEST(WhenToCarryOut, RevokesFencesOutcomeAndEpochWaitForTheirRecords) {
  VolumeState s;
  s.volume = "v";
  s = Ok(s, Req("a")).state;
  EXPECT_THAT(
      CarriedOut(Ok(s, Grant{"a"}).actions),
      ElementsAre(std::pair(ActionKind::kNotifyGranted, StoredFirst::kLease)));
  s = Recalling3();
  EXPECT_THAT(
      CarriedOut(
          Ok(s, Progress{"a", "r1", 1}, kT0 + absl::Seconds(20)).actions),
      ElementsAre(
          std::pair(ActionKind::kDeadlineExtended, StoredFirst::kLease)));
  EXPECT_THAT(
      CarriedOut(Ok(s, HolderAck{"a", "r1", 1, true}).actions),
      ElementsAre(std::pair(ActionKind::kReleased, StoredFirst::kLease)));
  // The deadline: the owner is asked to fence once the revoke is stored.
  EXPECT_THAT(CarriedOut(StepOk(Fencing("a"), kT0 + absl::Seconds(31)).actions),
              ElementsAre(std::pair(ActionKind::kFence, StoredFirst::kRevoke)));
  // The fence confirmed: the holder is told once Revoked is stored; the
  // outcome, then the epoch.
  Outcome fenced = Ok(Fencing("a"), FenceConfirmed{"a", 1});
  EXPECT_THAT(
      CarriedOut(fenced.actions),
      ElementsAre(
          std::pair(ActionKind::kNotifyRevoked, StoredFirst::kFenceConfirmed),
          std::pair(ActionKind::kRecallComplete, StoredFirst::kOutcome)));
  EXPECT_THAT(
      CarriedOut(Ok(fenced.state, Resume{}).actions),
      ElementsAre(std::pair(ActionKind::kEpochBumped, StoredFirst::kEpoch)));
  EXPECT_EQ(Name(StoredFirst::kRecallStart), "RecallStart");
}

// ------------------------------------------------------------ names

TEST(LeaseNames, RoundTrip) {
  for (LeaseState v :
       {LeaseState::kPending, LeaseState::kGranted, LeaseState::kRecalling,
        LeaseState::kReleased, LeaseState::kRevoked}) {
    EXPECT_EQ(*ParseLeaseState(Name(v)), v);
  }
  for (VolumePhase v :
       {VolumePhase::kReady, VolumePhase::kRecalling, VolumePhase::kQuiesced,
        VolumePhase::kReshaping, VolumePhase::kMigrating}) {
    EXPECT_EQ(*ParseVolumePhase(Name(v)), v);
  }
  for (Access v : {Access::kReadOnly, Access::kReadWrite}) {
    EXPECT_EQ(*ParseAccess(Name(v)), v);
  }
  for (RevokeReason v : {RevokeReason::kNone, RevokeReason::kDeadlineExceeded,
                         RevokeReason::kNotFlushed}) {
    EXPECT_EQ(*ParseRevokeReason(Name(v)), v);
  }
  for (RecallReason v :
       {RecallReason::kReshape, RecallReason::kMigrate, RecallReason::kEvict,
        RecallReason::kManual, RecallReason::kSnapshot}) {
    EXPECT_EQ(*ParseRecallReason(Name(v)), v);
  }
  EXPECT_EQ(Name(RecallReason::kSnapshot), "Snapshot");
  EXPECT_EQ(Name(ActionKind::kFence), "Fence");
  EXPECT_EQ(ParseLeaseState("granted").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseVolumePhase("Creating").status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace daxlease::lease
