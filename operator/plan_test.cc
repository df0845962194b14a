#include "operator/plan.h"

#include <algorithm>
#include <map>
#include <memory>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/api/json.h"
#include "lib/api/label_value.h"

namespace daxlease::op {
namespace {

using api::LeaseState;
using api::RecallPhase;
using api::VolumePhase;
using testing::Contains;
using testing::ElementsAre;
using testing::Not;
using testing::StartsWith;

const absl::Time kT0 = absl::FromUnixSeconds(1'700'000'000);

api::DaxVolume Volume(int64_t epoch = 3, bool share = true) {
  api::DaxVolume v;
  v.metadata.name = "vol";
  v.metadata.uid = "vol-uid";
  v.spec.size_bytes = 1 << 20;
  v.spec.owner_node = "owner";
  v.spec.share = share;
  v.status.phase = VolumePhase::kReady;
  v.status.epoch = epoch;
  return v;
}

api::DaxLease Lease(const std::string& name, const std::string& node = "n") {
  api::DaxLease l;
  l.metadata.name = name;
  l.metadata.uid = name + "-uid";
  l.metadata.generation = 1;
  l.spec.volume = "vol";
  l.spec.holder_node = node;
  l.spec.access = api::Access::kReadWrite;
  return l;
}

api::DaxRecall Recall(const std::string& name,
                      std::optional<int64_t> grace = std::nullopt) {
  api::DaxRecall r;
  r.metadata.name = name;
  r.metadata.uid = name + "-uid";
  r.metadata.creation_timestamp = kT0;
  r.spec.volume = "vol";
  r.spec.grace_seconds = grace;
  return r;
}

World WorldOf(std::vector<api::DaxLease> leases,
              std::vector<api::DaxRecall> recalls = {},
              std::optional<api::DaxVolume> v = Volume()) {
  World w;
  w.volume_name = "vol";
  w.volume = std::move(v);
  w.leases.assign(leases.begin(), leases.end());
  w.recalls = std::move(recalls);
  return w;
}

const api::Condition& Cond(const std::vector<api::Condition>& cs,
                           const std::string& type) {
  static const api::Condition kNone;
  const api::Condition* c = api::FindCondition(cs, type);
  return c != nullptr ? *c : kNone;
}

// Runs plans until nothing changes (a real operator's passes), returning the
// settled world. Fails if it does not settle.
World Settle(World w, absl::Time now, PlanOptions opts = {}) {
  for (int i = 0; i < 10; ++i) {
    Plan p = ComputePlan(w, now, opts);
    if (p.desired.leases == w.leases && p.desired.recalls == w.recalls &&
        p.desired.volume == w.volume && p.desired.migrations == w.migrations) {
      return w;
    }
    w = std::move(p.desired);
  }
  ADD_FAILURE() << "plan did not settle";
  return w;
}

// Leases granted first, then the recalls created.
World Recalled(std::vector<api::DaxLease> leases,
               std::vector<api::DaxRecall> recalls) {
  World w = Settle(WorldOf(std::move(leases)), kT0);
  w.recalls = std::move(recalls);
  return Settle(w, kT0);
}

std::vector<LeaseState> States(const World& w) {
  std::vector<LeaseState> out;
  for (const auto& l : w.leases) out.push_back(l->status.state.value());
  return out;
}

bool HasFinalizer(const api::ObjectMeta& m, const std::string& f) {
  return std::find(m.finalizers.begin(), m.finalizers.end(), f) !=
         m.finalizers.end();
}

TEST(PlanTest, NewLeaseIsGrantedAtTheVolumeEpochWithFinalizer) {
  Plan p = ComputePlan(WorldOf({Lease("a")}), kT0, {});
  const api::DaxLease& l = p.desired.leases[0];
  EXPECT_EQ(l.status.state, LeaseState::kGranted);
  EXPECT_EQ(l.status.epoch, 3);
  EXPECT_TRUE(HasFinalizer(l.metadata, api::kLeaseFinalizer));
  const api::Condition& c = Cond(l.status.conditions, kLeaseGrantedCondition);
  EXPECT_EQ(c.status, api::ConditionStatus::kTrue);
  EXPECT_EQ(c.observed_generation, 1);
  EXPECT_EQ(c.last_transition_time, kT0);
  EXPECT_EQ(p.desired.volume->status.holders, 1);
  ASSERT_FALSE(p.events.empty());
  EXPECT_EQ(p.events[0].reason, "Granted");
  EXPECT_EQ(p.requeue_at, absl::InfiniteFuture());
}

TEST(PlanTest, VolumeWithoutStatusStartsReadyAtEpochOne) {
  api::DaxVolume v = Volume();
  v.status = {};
  Plan p = ComputePlan(WorldOf({Lease("a")}, {}, v), kT0, {});
  EXPECT_EQ(p.desired.volume->status.phase, VolumePhase::kReady);
  EXPECT_EQ(p.desired.volume->status.epoch, 1);
  EXPECT_EQ(p.desired.leases[0]->status.epoch, 1);
}

TEST(PlanTest, SettledWorldPlansNoChange) {
  World w = Recalled({Lease("a"), Lease("b")}, {Recall("r", 5)});
  Plan p = ComputePlan(w, kT0 + absl::Seconds(1), {});
  EXPECT_EQ(p.desired.leases, w.leases);
  EXPECT_EQ(p.desired.recalls, w.recalls);
  EXPECT_EQ(p.desired.volume, w.volume);
  EXPECT_TRUE(p.events.empty());
}

// The plan's working copy keeps every field of the world read but the
// display's pending leases. The binding below names every field, so a field
// added to World stops this test from compiling until it is filled here too.
TEST(PlanTest, WorldWithoutDisplayCopiesEveryOtherField) {
  World w;
  auto& [name, volume, leases, recalls, migrations, unreadable, high_water,
         display, answers] = w;
  name = "vol";
  volume = Volume(7);
  leases = {Lease("a"), Lease("b")};
  recalls = {Recall("r", 5)};
  migrations.emplace_back().metadata.name = "m";
  unreadable = {"DaxLease/c: bad"};
  high_water = 6;
  display = {"a", "b"};
  AgentAnswers released;
  released.released_recall_id = "r";
  answers = std::make_shared<const std::map<std::string, AgentAnswers>>(
      std::map<std::string, AgentAnswers>{{"a", released}});

  World copy = w.WithoutDisplay();
  EXPECT_TRUE(copy.display_pending.empty());
  EXPECT_EQ(w.display_pending.size(), 2u);  // the world read keeps its own
  EXPECT_TRUE(copy.leases[0].SharesWith(w.leases[0]));  // no lease copied
  EXPECT_EQ(copy.channel_answers, w.channel_answers);   // the same record
  World expected = w;
  expected.display_pending.clear();
  EXPECT_EQ(copy, expected);
  // Every filled field counts in the comparison.
  expected.epoch_high_water = 0;
  EXPECT_NE(copy, expected);
}

// The plan starts from that copy.
TEST(PlanTest, ThePlanStartsFromTheWorldWithoutItsDisplay) {
  World w = Recalled({Lease("a"), Lease("b")}, {Recall("r", 5)});
  w.display_pending = {"a"};
  w.epoch_high_water = 2;
  Plan p = ComputePlan(w, kT0 + absl::Seconds(1), {});
  EXPECT_EQ(p.desired, w.WithoutDisplay());
}

// A copy of a SharedLease shares it; an edit through one handle copies it
// first unless no other handle shares it, and never shows through another.
TEST(SharedLeaseTest, AnEditThroughOneHandleNeverShowsThroughAnother) {
  const api::DaxLease read = Lease("a");
  SharedLease a(read);
  SharedLease b = a;
  EXPECT_TRUE(b.SharesWith(a));
  b.Mutable().status.recall_id = "r";
  EXPECT_FALSE(b.SharesWith(a));
  EXPECT_EQ(*a, read);
  EXPECT_EQ(b->status.recall_id, "r");
  // b's copy is its own now: edited in place.
  const api::DaxLease* own = &*b;
  b.Mutable().status.epoch = 2;
  EXPECT_EQ(&*b, own);
  // Shared again, then edited: the other handle keeps what it had.
  SharedLease c = b;
  b.Mutable().status.epoch = 3;
  EXPECT_EQ(c->status.epoch, 2);
  EXPECT_EQ(b->status.epoch, 3);
  // Equal by value, whether shared or not.
  EXPECT_EQ(a, SharedLease(read));
  EXPECT_NE(a, b);
}

// A pass copies only the leases it changes: the others stay shared with the
// world it read (and so with the reader's cache), and the plan's edits never
// show in that world.
TEST(PlanTest, APassSharesTheLeasesItLeavesAndEditsOnlyItsOwnCopies) {
  World w = Settle(WorldOf({Lease("a"), Lease("b")}), kT0);
  w.leases.push_back(Lease("c"));  // new: the pass grants it
  const std::vector<api::DaxLease> as_read(w.leases.begin(), w.leases.end());
  Plan p = ComputePlan(w, kT0 + absl::Seconds(1), {});
  ASSERT_EQ(p.desired.leases.size(), 3u);
  EXPECT_TRUE(p.desired.leases[0].SharesWith(w.leases[0]));
  EXPECT_TRUE(p.desired.leases[1].SharesWith(w.leases[1]));
  EXPECT_FALSE(p.desired.leases[2].SharesWith(w.leases[2]));
  EXPECT_EQ(p.desired.leases[2]->status.state, LeaseState::kGranted);
  for (size_t i = 0; i < as_read.size(); ++i) {
    EXPECT_EQ(*w.leases[i], as_read[i]) << "the pass edited the world read";
  }
  // A recall changes every lease: each gets its own copy, the world read
  // still shows them Granted.
  World granted = std::move(p.desired);
  granted.recalls.push_back(Recall("r", 5));
  Plan r = ComputePlan(granted, kT0 + absl::Seconds(2), {});
  for (size_t i = 0; i < granted.leases.size(); ++i) {
    EXPECT_EQ(r.desired.leases[i]->status.state, LeaseState::kRecalling);
    EXPECT_EQ(granted.leases[i]->status.state, LeaseState::kGranted);
    EXPECT_FALSE(r.desired.leases[i].SharesWith(granted.leases[i]));
  }
}

TEST(PlanTest, RecallMarksEveryGrantedLeaseRecallingWithOneIdAndDeadline) {
  World w = Settle(WorldOf({Lease("a"), Lease("b"), Lease("c")}), kT0);
  w.recalls.push_back(Recall("r", 5));
  absl::Time t1 = kT0 + absl::Milliseconds(1500);
  Plan p = ComputePlan(w, t1, {});
  const api::DaxRecall& r = p.desired.recalls[0];
  EXPECT_EQ(r.status.phase, RecallPhase::kRecalling);
  EXPECT_EQ(r.status.recall_id, "r-uid");
  EXPECT_EQ(r.status.started_at, t1);
  EXPECT_EQ(r.status.deadline, t1 + absl::Seconds(5));
  EXPECT_EQ(r.status.outstanding, 3);
  EXPECT_TRUE(HasFinalizer(r.metadata, kRecallFinalizer));
  for (const api::DaxLease& l : p.desired.leases) {
    EXPECT_EQ(l.status.state, LeaseState::kRecalling);
    EXPECT_EQ(l.status.recall_id, "r-uid");
    EXPECT_EQ(l.status.deadline, t1 + absl::Seconds(5));
  }
  EXPECT_EQ(p.desired.volume->status.phase, VolumePhase::kRecalling);
  EXPECT_EQ(p.desired.volume->status.active_recall, "r");
  EXPECT_EQ(p.desired.volume->status.holders, 3);
  EXPECT_EQ(p.requeue_at, t1 + absl::Seconds(5));
}

// A recall as its creators make it: with its finalizer.
api::DaxRecall RecallWithFinalizer(const std::string& name, int64_t grace) {
  api::DaxRecall r = Recall(name, grace);
  r.metadata.finalizers = {kRecallFinalizer};
  return r;
}

// lib/lease says a holder may be asked once the recall's start is stored
// (WhenToCarryOut: kRecallStart): the pass that starts the recall names
// every holder to ask right after that write, and its recall write is the
// status alone (the creator put the finalizer on). Later passes read the
// leases Recalling (through the recall's record while the lease objects
// lag) and name nobody again: the relay asks from what they store.
TEST(PlanTest, HoldersAreAskedInThePassThatStoresTheRecallStart) {
  World w = Settle(WorldOf({Lease("a"), Lease("b"), Lease("c")}), kT0);
  w.recalls.push_back(RecallWithFinalizer("r", 5));
  const absl::Time t1 = kT0 + absl::Seconds(1);
  Plan p = ComputePlan(w, t1, {});
  ASSERT_EQ(p.desired.recalls[0].status.phase, RecallPhase::kRecalling);
  EXPECT_EQ(p.desired.recalls[0].status.deadline, t1 + absl::Seconds(5));
  EXPECT_THAT(p.ask_at_recall_start, ElementsAre("a", "b", "c"));
  EXPECT_EQ(p.desired.recalls[0].metadata, w.recalls[0].metadata)
      << "no finalizer write before the recall's start";
  for (const api::DaxLease& l : p.desired.leases) {
    EXPECT_EQ(l.status.state, LeaseState::kRecalling);
    EXPECT_EQ(l.status.deadline, t1 + absl::Seconds(5)) << "as asked";
  }
  EXPECT_EQ(p.tally.recalls_sent, 3);

  // The recall's start is stored, the volume's and the leases' writes are
  // not (they lag, or the pass was cut): the next pass reads the leases
  // through the recall, Recalling, and asks nobody again here.
  World stored = w;
  stored.recalls = p.desired.recalls;
  Plan next = ComputePlan(stored, t1 + absl::Milliseconds(1), {});
  EXPECT_TRUE(next.ask_at_recall_start.empty());
  EXPECT_THAT(States(next.desired),
              ElementsAre(LeaseState::kRecalling, LeaseState::kRecalling,
                          LeaseState::kRecalling));
  EXPECT_EQ(next.desired.volume->status.phase, VolumePhase::kRecalling);
  EXPECT_TRUE(ComputePlan(p.desired, t1, {}).ask_at_recall_start.empty());

  // A recall with no holder: nobody to ask.
  World none = Settle(WorldOf({}), kT0);
  none.recalls.push_back(RecallWithFinalizer("r", 5));
  EXPECT_TRUE(ComputePlan(none, t1, {}).ask_at_recall_start.empty());
}

// A recall created with its finalizer that never starts loses it: deleted
// while Pending (behind a running recall), or Failed because its migration
// is gone. One that runs keeps it until Complete.
TEST(PlanTest, ARecallThatNeverStartedLosesItsFinalizer) {
  World w = Recalled({Lease("a")}, {RecallWithFinalizer("r1", 5)});
  ASSERT_EQ(w.recalls[0].status.phase, RecallPhase::kRecalling);
  w.recalls.push_back(RecallWithFinalizer("r2", 5));
  w.recalls[1].metadata.creation_timestamp = kT0 + absl::Seconds(1);
  w = Settle(w, kT0 + absl::Seconds(1));
  ASSERT_EQ(w.recalls[1].status.phase, RecallPhase::kPending);
  EXPECT_TRUE(HasFinalizer(w.recalls[1].metadata, kRecallFinalizer));
  w.recalls[1].metadata.deletion_timestamp = kT0 + absl::Seconds(2);
  Plan p = ComputePlan(w, kT0 + absl::Seconds(2), {});
  EXPECT_FALSE(HasFinalizer(p.desired.recalls[1].metadata, kRecallFinalizer));
  EXPECT_TRUE(HasFinalizer(p.desired.recalls[0].metadata, kRecallFinalizer))
      << "the running one keeps it";

  // A Migrate recall whose migration is gone: Failed, and nothing holds it.
  World m = Settle(WorldOf({Lease("a")}), kT0);
  api::DaxRecall orphan = RecallWithFinalizer("vol-migrate-e3", 5);
  orphan.spec.reason = api::RecallReason::kMigrate;
  orphan.metadata.labels[api::kMigrationLabel] = "gone";
  m.recalls.push_back(orphan);
  Plan failed = ComputePlan(m, kT0, {});
  EXPECT_EQ(failed.desired.recalls[0].status.phase, RecallPhase::kFailed);
  EXPECT_FALSE(
      HasFinalizer(failed.desired.recalls[0].metadata, kRecallFinalizer));
  // One stored Failed with the finalizer (before this rule) loses it too.
  m.recalls[0].status.phase = RecallPhase::kFailed;
  EXPECT_FALSE(HasFinalizer(ComputePlan(m, kT0, {}).desired.recalls[0].metadata,
                            kRecallFinalizer));
  m.volume.reset();
  EXPECT_FALSE(HasFinalizer(ComputePlan(m, kT0, {}).desired.recalls[0].metadata,
                            kRecallFinalizer));
}

std::vector<std::string> Reasons(const Plan& p) {
  std::vector<std::string> out;
  for (const EventSpec& e : p.events) {
    out.push_back(absl::StrCat(e.kind, "/", e.reason));
  }
  return out;
}

// A recall of more than 10 leases records one summary event per pass and
// state on the volume, also in a pass where fewer than 10 of its leases
// move (acks arriving node by node); a small recall records one per lease.
TEST(PlanTest, ARecallOfManyLeasesIsOneSummaryEventPerPass) {
  std::vector<api::DaxLease> leases;
  for (int i = 0; i < 12; ++i) leases.push_back(Lease(absl::StrCat("l", i)));
  World w = Settle(WorldOf(leases), kT0);
  w.recalls.push_back(RecallWithFinalizer("r", 5));
  Plan start = ComputePlan(w, kT0, {});
  EXPECT_THAT(Reasons(start),
              testing::UnorderedElementsAre("DaxVolume/LeasesRecalling",
                                            "DaxRecall/Recalling",
                                            "DaxVolume/Recalling"));
  w = start.desired;
  for (int i = 0; i < 3; ++i)
    w.leases[i].Mutable().status.released_recall_id = "r-uid";
  Plan acks = ComputePlan(w, kT0 + absl::Seconds(1), {});
  ASSERT_THAT(Reasons(acks), ElementsAre("DaxVolume/LeasesReleased"));
  EXPECT_EQ(acks.events[0].message, "3 leases are now Released (l0, l1, l2)");
  EXPECT_EQ(acks.events[0].name, "vol");
  w = acks.desired;
  for (int i = 3; i < 12; ++i)
    w.leases[i].Mutable().status.released_recall_id = "r-uid";
  Plan rest = ComputePlan(w, kT0 + absl::Seconds(2), {});
  const std::vector<std::string> reasons = Reasons(rest);
  EXPECT_EQ(std::count(reasons.begin(), reasons.end(),
                       std::string("DaxVolume/LeasesReleased")),
            1);
  for (const EventSpec& e : rest.events) EXPECT_NE(e.kind, "DaxLease");

  // Three leases: one event each.
  World small = Recalled({Lease("a"), Lease("b"), Lease("c")},
                         {RecallWithFinalizer("r", 5)});
  small.leases[0].Mutable().status.released_recall_id = "r-uid";
  small.leases[1].Mutable().status.released_recall_id = "r-uid";
  Plan two = ComputePlan(small, kT0 + absl::Seconds(1), {});
  EXPECT_THAT(Reasons(two),
              ElementsAre("DaxLease/Released", "DaxLease/Released"));
}

TEST(PlanTest, GraceComesFromRecallElseVolumeElseDefault) {
  World w = Settle(WorldOf({Lease("a")}), kT0);
  w.recalls.push_back(Recall("r"));
  PlanOptions opts;
  opts.default_grace = absl::Seconds(11);
  EXPECT_EQ(ComputePlan(w, kT0, opts).desired.recalls[0].status.deadline,
            kT0 + absl::Seconds(11));
  w.volume->spec.recall_grace_seconds = 7;
  EXPECT_EQ(ComputePlan(w, kT0, opts).desired.recalls[0].status.deadline,
            kT0 + absl::Seconds(7));
  w.recalls[0].spec.grace_seconds = 2;
  EXPECT_EQ(ComputePlan(w, kT0, opts).desired.recalls[0].status.deadline,
            kT0 + absl::Seconds(2));
}

// The scenario at the plan level: three holders, two ack, one does
// not; revoke at the deadline; complete after the fence; epoch bumped.
TEST(PlanTest, TwoAckOneRevokedFencedThenCompleteAndEpochBumped) {
  World w = Settle(WorldOf({Lease("a"), Lease("b"), Lease("c")}), kT0);
  w.recalls.push_back(Recall("r", 5));
  w = Settle(w, kT0);
  w.leases[0].Mutable().status.released_recall_id = "r-uid";  // agents ack
  w.leases[1].Mutable().status.released_recall_id = "r-uid";
  w = Settle(w, kT0 + absl::Seconds(1));
  EXPECT_THAT(States(w),
              ElementsAre(LeaseState::kReleased, LeaseState::kReleased,
                          LeaseState::kRecalling));
  EXPECT_EQ(w.recalls[0].status.released, 2);
  EXPECT_EQ(w.recalls[0].status.outstanding, 1);

  Plan at_deadline = ComputePlan(w, kT0 + absl::Seconds(5), {});
  w = Settle(at_deadline.desired, kT0 + absl::Seconds(5));
  const api::DaxLease& c = w.leases[2];
  EXPECT_EQ(c.status.state, LeaseState::kRevoked);
  EXPECT_EQ(c.status.reason, "DeadlineExceeded");
  EXPECT_TRUE(c.status.fence_required);
  EXPECT_TRUE(HasFinalizer(c.metadata, api::kLeaseFinalizer));
  EXPECT_EQ(w.recalls[0].status.phase, RecallPhase::kRecalling);
  EXPECT_EQ(w.recalls[0].status.revoked, 1);
  EXPECT_EQ(
      Cond(w.recalls[0].status.conditions, kRecallCompleteCondition).reason,
      "WaitingForFence");
  EXPECT_EQ(w.volume->status.phase, VolumePhase::kRecalling);
  bool warned = false;
  for (const EventSpec& e : at_deadline.events) {
    warned |= e.name == "c" && e.warning && e.reason == "Revoked";
  }
  EXPECT_TRUE(warned);

  w.leases[2].Mutable().status.fenced_recall_id =
      "r-uid";  // owner agent fences
  w = Settle(w, kT0 + absl::Seconds(6));
  EXPECT_EQ(w.leases[2]->status.state, LeaseState::kRevoked);
  EXPECT_FALSE(w.leases[2]->status.fence_required);
  const api::DaxRecall& r = w.recalls[0];
  EXPECT_EQ(r.status.phase, RecallPhase::kComplete);
  EXPECT_EQ(r.status.completed_at, kT0 + absl::Seconds(6));
  EXPECT_EQ(r.status.released, 2);
  EXPECT_EQ(r.status.revoked, 1);
  EXPECT_EQ(r.status.outstanding, 0);
  EXPECT_FALSE(HasFinalizer(r.metadata, kRecallFinalizer));
  EXPECT_EQ(w.volume->status.phase, VolumePhase::kReady);
  EXPECT_EQ(w.volume->status.epoch, 4);
  EXPECT_EQ(w.volume->status.holders, 0);
  EXPECT_EQ(w.volume->status.active_recall, "");

  // Revoked is sticky until the holder acknowledges; then Released.
  w = Settle(w, kT0 + absl::Seconds(60));
  EXPECT_EQ(w.leases[2]->status.state, LeaseState::kRevoked);
  w.leases[2].Mutable().status.revocation_acknowledged = true;
  w = Settle(w, kT0 + absl::Seconds(61));
  EXPECT_EQ(w.leases[2]->status.state, LeaseState::kReleased);
  EXPECT_EQ(w.leases[2]->status.reason, "DeadlineExceeded");
}

// With the recall channel on, the plan reads the answers the channel took
// (World::channel_answers) and not the agent-written status fields, which
// any agent credential can write: a forged releasedRecallID releases
// nothing, a taken ack releases a lease whose object says nothing, and the
// lease read is neither edited nor copied to carry the answer.
TEST(PlanTest, ChannelAnswersReplaceTheAgentWrittenStatusFields) {
  World w = Settle(WorldOf({Lease("a"), Lease("b"), Lease("c")}), kT0);
  w.recalls.push_back(Recall("r", 5));
  w = Settle(w, kT0);
  w.leases[0].Mutable().status.released_recall_id = "r-uid";  // forged
  auto answers = std::make_shared<std::map<std::string, AgentAnswers>>();
  (*answers)["b"].released_recall_id = "r-uid";
  (*answers)["c"].released_recall_id = "another-recall";
  w.channel_answers = answers;
  const World read = w;
  Plan p = ComputePlan(w, kT0 + absl::Seconds(1), {});
  EXPECT_THAT(States(p.desired),
              ElementsAre(LeaseState::kRecalling, LeaseState::kReleased,
                          LeaseState::kRecalling));
  EXPECT_EQ(p.tally.releases, 1);
  EXPECT_TRUE(p.desired.leases[0].SharesWith(read.leases[0]))
      << "a lease the pass does not change stays shared";
  EXPECT_EQ(read.leases[1]->status.state, LeaseState::kRecalling);
  EXPECT_EQ(read.leases[1]->status.released_recall_id, "");

  // Revocation acknowledged on the channel, not in the status field.
  w = Settle(p.desired, kT0 + absl::Seconds(1));
  w.channel_answers = nullptr;
  w.leases[0].Mutable().status.released_recall_id = "";
  w = Settle(w, kT0 + absl::Seconds(5));
  (*answers)["a"].fenced_recall_id = "r-uid";
  (*answers)["c"].fenced_recall_id = "r-uid";
  w.channel_answers = answers;
  w = Settle(w, kT0 + absl::Seconds(6));
  ASSERT_EQ(w.leases[0]->status.state, LeaseState::kRevoked);
  EXPECT_FALSE(w.leases[0]->status.fence_required);
  w.leases[0].Mutable().status.revocation_acknowledged = true;  // forged
  w = Settle(w, kT0 + absl::Seconds(7));
  EXPECT_EQ(w.leases[0]->status.state, LeaseState::kRevoked);
  // Taken for another epoch than the lease's: not an acknowledgement.
  (*answers)["a"].revocation_acked_epoch = w.leases[0]->status.epoch + 1;
  w = Settle(w, kT0 + absl::Seconds(8));
  EXPECT_EQ(w.leases[0]->status.state, LeaseState::kRevoked);
  (*answers)["a"].revocation_acked_epoch = w.leases[0]->status.epoch;
  w = Settle(w, kT0 + absl::Seconds(8));
  EXPECT_EQ(w.leases[0]->status.state, LeaseState::kReleased);
}

// The tally (the operator's grant/revocation/fence counters) comes from
// lib/lease's actions: each step is counted in the pass that takes it and
// never again, however many passes re-ask the owner to fence.
TEST(PlanTest, TallyCountsEachProtocolStepOnceFromTheActions) {
  World w = WorldOf({Lease("a"), Lease("b")});
  Plan grant = ComputePlan(w, kT0, {});
  EXPECT_EQ(grant.tally.grants, 2);
  EXPECT_EQ(grant.tally.revocations, 0);
  w = Settle(grant.desired, kT0);
  EXPECT_EQ(ComputePlan(w, kT0, {}).tally.grants, 0);  // settled: nothing

  w.recalls.push_back(Recall("r", 5));
  Plan recall = ComputePlan(w, kT0, {});
  EXPECT_EQ(recall.tally.recalls_sent, 2);
  w = Settle(recall.desired, kT0);
  w.leases[0].Mutable().status.released_recall_id = "r-uid";
  Plan ack = ComputePlan(w, kT0 + absl::Seconds(1), {});
  EXPECT_EQ(ack.tally.releases, 1);
  EXPECT_EQ(ack.tally.revocations, 0);
  w = Settle(ack.desired, kT0 + absl::Seconds(1));

  Plan revoke = ComputePlan(w, kT0 + absl::Seconds(5), {});
  EXPECT_EQ(revoke.tally.revocations, 1);
  EXPECT_THAT(revoke.actions,
              testing::Contains(lease::Action{lease::ActionKind::kFence, "b"}));
  w = revoke.desired;
  // Later passes re-ask the owner to fence "b" (a kFence action each time);
  // the revocation was counted once.
  Plan again = ComputePlan(w, kT0 + absl::Seconds(6), {});
  EXPECT_THAT(again.actions,
              testing::Contains(lease::Action{lease::ActionKind::kFence, "b"}));
  EXPECT_EQ(again.tally.revocations, 0);
  EXPECT_EQ(again.tally.fences, 0);

  w.leases[1].Mutable().status.fenced_recall_id = "r-uid";  // the owner fenced
  Plan fenced = ComputePlan(w, kT0 + absl::Seconds(7), {});
  EXPECT_EQ(fenced.tally.fences, 1);
  EXPECT_EQ(fenced.tally.recalls_completed, 1);
  EXPECT_THAT(fenced.recall_durations, ElementsAre(absl::Seconds(7)));
  EXPECT_EQ(fenced.desired.recalls[0].status.phase, RecallPhase::kComplete);
}

TEST(PlanTest, NewLeaseDuringRecallWaitsThenIsGrantedAtTheNewEpoch) {
  World w = Recalled({Lease("a")}, {Recall("r", 5)});
  w.leases.push_back(Lease("new"));
  w = Settle(w, kT0 + absl::Seconds(1));
  const api::DaxLease& pending = w.leases[1];
  EXPECT_EQ(pending.status.state, LeaseState::kPending);
  const api::Condition& c =
      Cond(pending.status.conditions, kLeaseGrantedCondition);
  EXPECT_EQ(c.status, api::ConditionStatus::kFalse);
  EXPECT_EQ(c.reason, "RecallInProgress");
  EXPECT_THAT(c.message, testing::HasSubstr("r-uid"));

  w.leases[0].Mutable().status.released_recall_id = "r-uid";
  w = Settle(w, kT0 + absl::Seconds(2));
  EXPECT_EQ(w.recalls[0].status.phase, RecallPhase::kComplete);
  EXPECT_EQ(w.leases[1]->status.state, LeaseState::kGranted);
  EXPECT_EQ(w.leases[1]->status.epoch, 4);
}

TEST(PlanTest, StaleAckForAnotherRecallIsIgnored) {
  World w = Recalled({Lease("a")}, {Recall("r", 5)});
  w.leases[0].Mutable().status.released_recall_id = "old-recall";
  w = Settle(w, kT0 + absl::Seconds(1));
  EXPECT_EQ(w.leases[0]->status.state, LeaseState::kRecalling);
}

TEST(PlanTest, RecallWithNoHoldersCompletesAtOnce) {
  World w = Settle(WorldOf({}, {Recall("r", 5)}), kT0);
  EXPECT_EQ(w.recalls[0].status.phase, RecallPhase::kComplete);
  EXPECT_EQ(w.volume->status.epoch, 4);
  EXPECT_EQ(w.volume->status.phase, VolumePhase::kReady);
}

// A Reshape recall leaves the volume Quiesced (a new lease waits) until the
// owner agent marks the change done on the volume; then Ready at the next
// epoch with the new capacity, and the waiting lease is granted there. A
// mark naming another recall changes nothing.
TEST(PlanTest, ReshapeRecallWaitsQuiescedForTheOwnersMarkThenResumes) {
  api::DaxRecall reshape = Recall("vol-reshape-e3", 5);
  reshape.spec.reason = api::RecallReason::kReshape;
  World w = Recalled({Lease("a")}, {reshape});
  w.leases[0].Mutable().status.released_recall_id = "vol-reshape-e3-uid";
  w.leases.push_back(Lease("next"));
  w = Settle(w, kT0 + absl::Seconds(1));
  EXPECT_EQ(w.recalls[0].status.phase, RecallPhase::kComplete);
  EXPECT_EQ(w.volume->status.phase, VolumePhase::kQuiesced);
  EXPECT_EQ(w.volume->status.epoch, 3);
  EXPECT_EQ(w.volume->status.active_recall, "vol-reshape-e3");
  EXPECT_EQ(w.leases[1]->status.state, LeaseState::kPending);
  EXPECT_EQ(Cond(w.leases[1]->status.conditions, kLeaseGrantedCondition).reason,
            "VolumeNotReady");

  w.volume->metadata.annotations[api::kReshapedAnnotation] = "another";
  w = Settle(w, kT0 + absl::Seconds(2));
  EXPECT_EQ(w.volume->status.phase, VolumePhase::kQuiesced);

  w.volume->spec.size_bytes = 4 << 20;  // the agent grew the data
  w.volume->metadata.annotations[api::kReshapedAnnotation] = "vol-reshape-e3";
  Plan p = ComputePlan(w, kT0 + absl::Seconds(3), {});
  EXPECT_EQ(p.desired.volume->status.phase, VolumePhase::kReady);
  EXPECT_EQ(p.desired.volume->status.epoch, 4);
  EXPECT_EQ(p.desired.volume->status.capacity_bytes, 4 << 20);
  EXPECT_EQ(p.desired.leases[1]->status.state, LeaseState::kPending)
      << "not in the pass that moves the epoch";
  w = Settle(p.desired, kT0 + absl::Seconds(3));
  EXPECT_EQ(w.volume->status.phase, VolumePhase::kReady);
  EXPECT_EQ(w.volume->status.epoch, 4);
  EXPECT_EQ(w.volume->status.active_recall, "");
  EXPECT_EQ(w.leases[1]->status.state, LeaseState::kGranted);
  EXPECT_EQ(w.leases[1]->status.epoch, 4);
}

// A Snapshot recall also leaves the volume Quiesced (nothing granted while
// the copy runs) until the owner's mark names it; then Ready at the next
// epoch with the capacity unchanged (a snapshot changes no data).
TEST(PlanTest, SnapshotRecallWaitsQuiescedForTheCopyThenResumes) {
  api::DaxRecall snap = Recall("vol-snapshot-e3", 5);
  snap.spec.reason = api::RecallReason::kSnapshot;
  World w = Recalled({Lease("a")}, {snap});
  const int64_t capacity = w.volume->status.capacity_bytes;
  w.leases[0].Mutable().status.released_recall_id = "vol-snapshot-e3-uid";
  w.leases.push_back(Lease("next"));
  w = Settle(w, kT0 + absl::Seconds(1));
  EXPECT_EQ(w.recalls[0].status.phase, RecallPhase::kComplete);
  EXPECT_EQ(w.volume->status.phase, VolumePhase::kQuiesced);
  EXPECT_EQ(w.volume->status.epoch, 3);
  EXPECT_EQ(w.leases[1]->status.state, LeaseState::kPending);

  // Another recall's mark, or a Reshape mark of this one, is not the copy.
  w.volume->metadata.annotations[api::kSnapshottedAnnotation] = "another";
  w.volume->metadata.annotations[api::kReshapedAnnotation] = "vol-snapshot-e3";
  w = Settle(w, kT0 + absl::Seconds(2));
  EXPECT_EQ(w.volume->status.phase, VolumePhase::kQuiesced);
  EXPECT_EQ(w.volume->status.epoch, 3);

  w.volume->metadata.annotations[api::kSnapshottedAnnotation] =
      "vol-snapshot-e3";
  w = Settle(w, kT0 + absl::Seconds(3));
  EXPECT_EQ(w.volume->status.phase, VolumePhase::kReady);
  EXPECT_EQ(w.volume->status.epoch, 4);
  EXPECT_EQ(w.volume->status.active_recall, "");
  EXPECT_EQ(w.volume->status.capacity_bytes, capacity);
  EXPECT_EQ(w.leases[1]->status.state, LeaseState::kGranted);
  EXPECT_EQ(w.leases[1]->status.epoch, 4);
}

TEST(PlanTest, SecondRecallWaitsForTheFirst) {
  api::DaxRecall r2 = Recall("r2", 5);
  r2.metadata.creation_timestamp = kT0 + absl::Seconds(1);
  World w = Recalled({Lease("a")}, {Recall("r1", 5), r2});
  EXPECT_EQ(w.recalls[0].status.phase, RecallPhase::kRecalling);
  EXPECT_EQ(w.recalls[1].status.phase, RecallPhase::kPending);
  EXPECT_EQ(
      Cond(w.recalls[1].status.conditions, kRecallCompleteCondition).reason,
      "WaitingForVolume");
  w.leases[0].Mutable().status.released_recall_id = "r1-uid";
  w = Settle(w, kT0 + absl::Seconds(1));
  // r1 completes, the lease stays Released, so r2 completes at once too.
  EXPECT_EQ(w.recalls[0].status.phase, RecallPhase::kComplete);
  EXPECT_EQ(w.recalls[1].status.phase, RecallPhase::kComplete);
  EXPECT_EQ(w.volume->status.epoch, 5);
}

TEST(PlanTest, UnknownVolumeGetsConditionsNotCrashes) {
  World w = WorldOf({Lease("a")}, {Recall("r")}, std::nullopt);
  Plan p = ComputePlan(w, kT0, {});
  EXPECT_EQ(p.desired.leases[0]->status.state, LeaseState::kPending);
  EXPECT_EQ(Cond(p.desired.leases[0]->status.conditions, kLeaseGrantedCondition)
                .reason,
            "VolumeNotFound");
  EXPECT_EQ(p.desired.recalls[0].status.phase, RecallPhase::kPending);
  EXPECT_EQ(
      Cond(p.desired.recalls[0].status.conditions, kRecallCompleteCondition)
          .reason,
      "VolumeNotFound");
}

TEST(PlanTest, VolumeStillCreatingKeepsLeasesPending) {
  api::DaxVolume v = Volume();
  v.status.phase = VolumePhase::kCreating;
  World w = Settle(WorldOf({Lease("a")}, {}, v), kT0);
  EXPECT_EQ(w.leases[0]->status.state, LeaseState::kPending);
  EXPECT_EQ(Cond(w.leases[0]->status.conditions, kLeaseGrantedCondition).reason,
            "VolumeNotReady");
}

TEST(PlanTest, UnsharedVolumeRefusesOtherNodes) {
  World w = Settle(WorldOf({Lease("local", "owner"), Lease("remote", "other")},
                           {}, Volume(3, /*share=*/false)),
                   kT0);
  EXPECT_EQ(w.leases[0]->status.state, LeaseState::kGranted);
  EXPECT_EQ(w.leases[1]->status.state, LeaseState::kPending);
  EXPECT_EQ(Cond(w.leases[1]->status.conditions, kLeaseGrantedCondition).reason,
            "NotShared");
}

// A deleted lease that holds access is the holder's release (its agent
// deletes it at unpublish): written Released first with the finalizer kept,
// so the owner sees it and cuts the grant; forgotten in the next pass. A
// lease already Released goes at once.
TEST(PlanTest, DeletedLeaseIsReleasedThenForgotten) {
  World w = Recalled({Lease("a"), Lease("b")}, {Recall("r", 5)});
  w.leases[1].Mutable().status.released_recall_id = "r-uid";
  w = Settle(w, kT0);
  w.leases[0].Mutable().metadata.deletion_timestamp = kT0;  // Recalling
  w.leases[1].Mutable().metadata.deletion_timestamp = kT0;  // Released
  Plan p = ComputePlan(w, kT0, {});
  EXPECT_EQ(p.desired.leases[0]->status.state, LeaseState::kReleased);
  EXPECT_EQ(Cond(p.desired.leases[0]->status.conditions, kLeaseGrantedCondition)
                .message,
            "released by the holder (lease deleted)");
  EXPECT_TRUE(
      HasFinalizer(p.desired.leases[0]->metadata, api::kLeaseFinalizer));
  EXPECT_FALSE(
      HasFinalizer(p.desired.leases[1]->metadata, api::kLeaseFinalizer));
  p = ComputePlan(p.desired, kT0, {});
  EXPECT_FALSE(
      HasFinalizer(p.desired.leases[0]->metadata, api::kLeaseFinalizer));
}

// A lease being revoked is not the holder's to give back: deleting it waits
// for the owner's fence.
TEST(PlanTest, DeletedLeaseWaitingForItsFenceIsKept) {
  World w = Recalled({Lease("a")}, {Recall("r", 5)});
  w = Settle(w, kT0 + absl::Seconds(6));  // past the deadline: revoked
  ASSERT_TRUE(w.leases[0]->status.fence_required);
  w.leases[0].Mutable().metadata.deletion_timestamp = kT0 + absl::Seconds(6);
  Plan p = ComputePlan(w, kT0 + absl::Seconds(6), {});
  EXPECT_TRUE(
      HasFinalizer(p.desired.leases[0]->metadata, api::kLeaseFinalizer));
  EXPECT_EQ(p.desired.leases[0]->status.state, LeaseState::kRevoked);
  EXPECT_EQ(Cond(p.desired.leases[0]->status.conditions, kLeaseGrantedCondition)
                .reason,
            "DeletionBlocked");
}

// A volume without an epoch yet starts above the high-water mark of its name,
// and so does the lease granted in the same pass.
TEST(PlanTest, NewVolumeStartsAboveTheHighWaterMark) {
  World w = WorldOf({Lease("a")});
  w.volume->status.epoch = 0;
  w.epoch_high_water = 7;
  Plan p = ComputePlan(w, kT0, {});
  EXPECT_EQ(p.desired.volume->status.epoch, 8);
  EXPECT_EQ(p.desired.leases[0]->status.state, LeaseState::kGranted);
  EXPECT_EQ(p.desired.leases[0]->status.epoch, 8);
  EXPECT_TRUE(HasFinalizer(p.desired.volume->metadata, api::kVolumeFinalizer));
}

TEST(PlanTest, CrashAfterRecallCommittedRepairsGrantedLeases) {
  // The recall's status was written, the operator died before any lease.
  World w = Settle(WorldOf({Lease("a"), Lease("b")}), kT0);
  api::DaxRecall r = Recall("r", 5);
  r.status.phase = RecallPhase::kRecalling;
  r.status.recall_id = "r-uid";
  r.status.started_at = kT0;
  r.status.deadline = kT0 + absl::Seconds(5);
  w.recalls.push_back(r);
  w = Settle(w, kT0 + absl::Seconds(1));
  EXPECT_THAT(States(w),
              ElementsAre(LeaseState::kRecalling, LeaseState::kRecalling));
  EXPECT_EQ(w.leases[0]->status.recall_id, "r-uid");
  EXPECT_EQ(w.volume->status.phase, VolumePhase::kRecalling);
}

TEST(PlanTest, CrashAfterRecallCompleteBeforeVolumeBumpFinishes) {
  World w = Recalled({Lease("a")}, {Recall("r", 5)});
  w.leases[0].Mutable().status.released_recall_id = "r-uid";
  Plan p = ComputePlan(w, kT0, {});
  // Lease and recall written, volume write lost.
  World crashed = p.desired;
  crashed.volume = w.volume;
  ASSERT_EQ(crashed.volume->status.phase, VolumePhase::kRecalling);
  World done = Settle(crashed, kT0 + absl::Seconds(1));
  EXPECT_EQ(done.volume->status.phase, VolumePhase::kReady);
  EXPECT_EQ(done.volume->status.epoch, 4);
}

// A recall with no holders starts and completes in one pass. When that
// pass's volume write is lost, the volume still says Ready at the old epoch
// while the DaxRecall says Complete at that epoch. The epoch must still move
// on: a lease granted now at the recall's epoch would hold a mapping the
// recall was meant to end.
TEST(PlanTest, VolumeStillReadyAtACompleteRecallsEpochResumesAtTheNext) {
  World w = Settle(WorldOf({}), kT0);
  w.recalls.push_back(Recall("r", 5));
  Plan p = ComputePlan(w, kT0, {});
  ASSERT_EQ(p.desired.recalls[0].status.phase, RecallPhase::kComplete);
  ASSERT_EQ(p.desired.recalls[0].status.epoch, 3);
  World crashed = p.desired;
  crashed.volume = w.volume;  // the volume write was lost
  ASSERT_EQ(crashed.volume->status.phase, VolumePhase::kReady);
  crashed.leases.push_back(Lease("late"));
  Plan next = ComputePlan(crashed, kT0 + absl::Seconds(1), {});
  EXPECT_EQ(next.desired.leases[0]->status.state, LeaseState::kPending)
      << "no grant at the epoch of a completed recall";
  World done = Settle(crashed, kT0 + absl::Seconds(1));
  EXPECT_EQ(done.volume->status.phase, VolumePhase::kReady);
  EXPECT_EQ(done.volume->status.epoch, 4);
  EXPECT_EQ(done.leases[0]->status.state, LeaseState::kGranted);
  EXPECT_EQ(done.leases[0]->status.epoch, 4);
}

// The same lost write for a Snapshot recall: the volume is read as Quiesced
// for the copy, so the owner's snapshot mark can resume it (without the fix
// the snapshot waited for a volume that never quiesced).
TEST(PlanTest, VolumeStillReadyAtACompleteSnapshotRecallsEpochIsQuiesced) {
  World w = Settle(WorldOf({}), kT0);
  api::DaxRecall snap = Recall("vol-snapshot-e3", 5);
  snap.spec.reason = api::RecallReason::kSnapshot;
  w.recalls.push_back(snap);
  Plan p = ComputePlan(w, kT0, {});
  ASSERT_EQ(p.desired.recalls[0].status.phase, RecallPhase::kComplete);
  World crashed = p.desired;
  crashed.volume = w.volume;
  World q = Settle(crashed, kT0 + absl::Seconds(1));
  EXPECT_EQ(q.volume->status.phase, VolumePhase::kQuiesced);
  EXPECT_EQ(q.volume->status.epoch, 3);
  EXPECT_EQ(q.volume->status.active_recall, "vol-snapshot-e3");
  q.volume->metadata.annotations[api::kSnapshottedAnnotation] =
      "vol-snapshot-e3";
  World done = Settle(q, kT0 + absl::Seconds(2));
  EXPECT_EQ(done.volume->status.phase, VolumePhase::kReady);
  EXPECT_EQ(done.volume->status.epoch, 4);
}

// An old Complete recall at an earlier epoch changes nothing.
TEST(PlanTest, CompleteRecallOfAnEarlierEpochLeavesAReadyVolumeAlone) {
  World w = Settle(WorldOf({}, {Recall("r", 5)}), kT0);
  ASSERT_EQ(w.volume->status.epoch, 4);
  w.leases.push_back(Lease("a"));
  Plan p = ComputePlan(w, kT0 + absl::Seconds(1), {});
  EXPECT_EQ(p.desired.leases[0]->status.state, LeaseState::kGranted);
  EXPECT_EQ(p.desired.leases[0]->status.epoch, 4);
}

// The lease writes lag (the channel path, lease_display.h): only the
// recall's and the volume's writes are stored, the lease objects still say
// Granted at epoch 3. Each pass reads them through the DaxRecall's record;
// a leader that dies once the outcome is stored, before any lease object
// shows it, leaves a world its successor finishes with the revoked lease
// Revoked (never Granted again) and the others Released.
TEST(PlanTest, LaggingLeaseObjectsAreReadThroughTheRecallRecord) {
  const World granted =
      Settle(WorldOf({Lease("a"), Lease("b"), Lease("c")}), kT0);
  World w = granted;
  w.recalls.push_back(Recall("r", 5));
  // Only the recalls and the volume are stored, pass after pass.
  auto stored = [&](const Plan& p) {
    EXPECT_TRUE(p.durable_leases.empty());
    World next = p.desired;
    next.leases = granted.leases;  // the lease objects lag
    for (size_t i = 0; i < next.leases.size(); ++i) {
      next.leases[i].Mutable().status.released_recall_id =
          w.leases[i]->status.released_recall_id;
      next.leases[i].Mutable().status.fenced_recall_id =
          w.leases[i]->status.fenced_recall_id;
    }
    return next;
  };
  Plan start = ComputePlan(w, kT0, {});
  const api::DaxRecall& r0 = start.desired.recalls[0];
  EXPECT_EQ(r0.status.phase, RecallPhase::kRecalling);
  EXPECT_EQ(r0.status.epoch, 3);
  EXPECT_THAT(States(start.desired),
              ElementsAre(LeaseState::kRecalling, LeaseState::kRecalling,
                          LeaseState::kRecalling));
  w = stored(start);
  // Read through the record: Recalling, with the recall's deadline.
  Plan again = ComputePlan(w, kT0 + absl::Seconds(1), {});
  EXPECT_THAT(States(again.desired),
              ElementsAre(LeaseState::kRecalling, LeaseState::kRecalling,
                          LeaseState::kRecalling));
  EXPECT_EQ(again.desired.leases[2]->status.deadline, kT0 + absl::Seconds(5));
  EXPECT_EQ(again.desired.recalls, w.recalls) << "nothing new to record";
  EXPECT_TRUE(again.actions.empty());
  // Their Recalling was recorded (and its events made) by the start: a
  // pass reading it through the record records no lease transition again.
  EXPECT_THAT(Reasons(start), Contains("DaxLease/Recalling"));
  EXPECT_THAT(Reasons(again), Not(Contains(StartsWith("DaxLease/"))));
  // a and b ack (soft: on the channel), c is silent past its deadline.
  w.leases[0].Mutable().status.released_recall_id = "r-uid";
  w.leases[1].Mutable().status.released_recall_id = "r-uid";
  Plan deadline = ComputePlan(w, kT0 + absl::Seconds(5), {});
  EXPECT_THAT(States(deadline.desired),
              ElementsAre(LeaseState::kReleased, LeaseState::kReleased,
                          LeaseState::kRevoked));
  EXPECT_TRUE(deadline.desired.leases[2]->status.fence_required);
  EXPECT_THAT(Reasons(deadline), Contains("DaxLease/Released"));
  EXPECT_THAT(deadline.desired.recalls[0].status.revoked_leases,
              ElementsAre("c"));
  EXPECT_TRUE(deadline.desired.recalls[0].status.fenced_leases.empty());
  w = stored(deadline);
  // The acks were soft and this leader kept them; a successor would ask
  // again. The revoke is on the record: c is fencing whoever reads it.
  Plan read = ComputePlan(w, kT0 + absl::Seconds(5), {});
  EXPECT_TRUE(read.desired.leases[2]->status.fence_required);
  EXPECT_EQ(read.desired.leases[2]->status.state, LeaseState::kRevoked);
  // The owner confirms c's fence: Complete, c on fencedLeases, epoch 4.
  w.leases[2].Mutable().status.fenced_recall_id = "r-uid";
  Plan done = ComputePlan(w, kT0 + absl::Seconds(6), {});
  EXPECT_EQ(done.desired.recalls[0].status.phase, RecallPhase::kComplete);
  EXPECT_THAT(done.desired.recalls[0].status.fenced_leases, ElementsAre("c"));
  EXPECT_EQ(done.desired.recalls[0].status.released, 2);
  EXPECT_TRUE(HasFinalizer(done.desired.recalls[0].metadata, kRecallFinalizer))
      << "kept until the lease objects show the outcome";
  EXPECT_EQ(done.desired.volume->status.epoch, 4);
  EXPECT_EQ(done.desired.volume->status.phase, VolumePhase::kReady);
  // The leader dies here: a successor has no soft state at all.
  World successor = done.desired;
  successor.leases = granted.leases;
  successor.leases.push_back(Lease("d"));
  Plan first = ComputePlan(successor, kT0 + absl::Seconds(7), {});
  EXPECT_THAT(States(first.desired),
              ElementsAre(LeaseState::kReleased, LeaseState::kReleased,
                          LeaseState::kRevoked, LeaseState::kGranted));
  EXPECT_FALSE(first.desired.leases[2]->status.fence_required);
  EXPECT_EQ(first.desired.leases[2]->status.reason, "DeadlineExceeded");
  EXPECT_EQ(first.desired.leases[3]->status.epoch, 4);
  EXPECT_EQ(first.tally.grants, 1) << "d only: nobody is granted twice";
  EXPECT_TRUE(
      HasFinalizer(first.desired.recalls[0].metadata, kRecallFinalizer));
  // Once the lease objects show it, the record's finalizer goes; c stays
  // Revoked until its holder acknowledges.
  World settled = Settle(first.desired, kT0 + absl::Seconds(8));
  EXPECT_FALSE(HasFinalizer(settled.recalls[0].metadata, kRecallFinalizer));
  EXPECT_EQ(settled.leases[2]->status.state, LeaseState::kRevoked);
  EXPECT_EQ(settled.volume->status.epoch, 4);
}

// A Complete recall keeps its finalizer while any lease write of the
// volume is still pending (World::display_pending).
TEST(PlanTest, CompleteRecallKeepsFinalizerWhileLeaseDisplayIsPending) {
  World w = Recalled({Lease("a")}, {Recall("r", 5)});
  w.leases[0].Mutable().status.released_recall_id = "r-uid";
  w = Settle(w, kT0 + absl::Seconds(1));
  ASSERT_EQ(w.recalls[0].status.phase, RecallPhase::kComplete);
  ASSERT_FALSE(HasFinalizer(w.recalls[0].metadata, kRecallFinalizer));
  w.recalls[0].metadata.finalizers.push_back(kRecallFinalizer);
  w.display_pending.insert("a");
  Plan p = ComputePlan(w, kT0 + absl::Seconds(2), {});
  EXPECT_TRUE(HasFinalizer(p.desired.recalls[0].metadata, kRecallFinalizer));
  w.display_pending.clear();
  p = ComputePlan(w, kT0 + absl::Seconds(2), {});
  EXPECT_FALSE(HasFinalizer(p.desired.recalls[0].metadata, kRecallFinalizer));
}

// revokedLeases is bounded (kRecallRecordBytes); revokes beyond it are
// written on their lease objects before anyone is asked
// (Plan::durable_leases), and the object stays under etcd's request limit.
TEST(PlanTest, RevokesBeyondTheRecordBoundAreWrittenOnTheLease) {
  std::vector<api::DaxLease> leases;
  const size_t n = kRecallRecordBytes / 253 + 50;
  for (size_t i = 0; i < n; ++i) {
    std::string name = absl::StrCat("l", i, "-");
    name.resize(253, 'x');
    leases.push_back(Lease(name));
  }
  World w = Recalled(std::move(leases), {Recall("r", 5)});
  Plan p = ComputePlan(w, kT0 + absl::Seconds(5), {});
  const api::DaxRecall& r = p.desired.recalls[0];
  EXPECT_EQ(r.status.revoked, static_cast<int32_t>(n));
  EXPECT_FALSE(p.durable_leases.empty());
  EXPECT_EQ(r.status.revoked_leases.size() + p.durable_leases.size(), n);
  for (const std::string& d : p.durable_leases) {
    EXPECT_FALSE(std::binary_search(r.status.revoked_leases.begin(),
                                    r.status.revoked_leases.end(), d));
  }
  EXPECT_LT(api::ToJson(r).dump().size(), 1536u * 1024 / 2);
}

TEST(PlanTest, ClockJumpsForwardRevokesBackwardDoesNot) {
  World w = Recalled({Lease("a")}, {Recall("r", 5)});
  World back = Settle(w, kT0 - absl::Hours(1));
  EXPECT_EQ(back.leases[0]->status.state, LeaseState::kRecalling);
  World jumped = Settle(w, kT0 + absl::Hours(24));
  EXPECT_EQ(jumped.leases[0]->status.state, LeaseState::kRevoked);
  EXPECT_TRUE(jumped.leases[0]->status.fence_required);
}

TEST(PlanTest, InconsistentRecordsGetAVolumeConditionAndNoWrites) {
  // A Granted lease at an epoch the volume never had.
  World w = Settle(WorldOf({Lease("a")}), kT0);
  w.leases[0].Mutable().status.epoch = 99;
  Plan p = ComputePlan(w, kT0, {});
  EXPECT_EQ(p.desired.leases, w.leases);
  EXPECT_EQ(
      Cond(p.desired.volume->status.conditions, kVolumeReadyCondition).reason,
      "InvalidState");
}

}  // namespace
}  // namespace daxlease::op

namespace daxlease::op {
namespace {

// A DaxMigration through the plan: the recall it creates, the owner switch
// with the target's endpoint, Complete; the agents' reports played here.
TEST(PlanMigration, RecallCopySwitchComplete) {
  World w = Settle(WorldOf({Lease("l", "n")}), kT0);
  ASSERT_EQ(w.leases[0]->status.state, LeaseState::kGranted);
  api::DaxMigration m;
  m.metadata.name = "mig";
  m.metadata.uid = "mig-uid";
  m.spec.volume = "vol";
  m.spec.target_node = "target";
  w.migrations.push_back(m);

  // The finalizer is stored first, in a pass of its own.
  Plan p = ComputePlan(w, kT0, {});
  EXPECT_TRUE(p.create_recalls.empty());
  EXPECT_THAT(p.desired.migrations[0].metadata.finalizers,
              ElementsAre(kMigrationFinalizer));
  EXPECT_EQ(p.requeue_at, kT0);
  w = p.desired;
  // PreCopying: no recall yet, the volume stays Ready.
  p = ComputePlan(w, kT0, {});
  EXPECT_TRUE(p.create_recalls.empty());
  EXPECT_EQ(p.desired.migrations[0].status.phase,
            api::MigrationPhase::kPreCopying);
  EXPECT_EQ(p.desired.migrations[0].status.source_node, "owner");
  EXPECT_EQ(p.desired.migrations[0].status.started_at, kT0);
  EXPECT_EQ(p.desired.volume->status.phase, VolumePhase::kReady);
  w = p.desired;
  // The target reports the pre-copy done: the recall starts.
  w.migrations[0].status.bytes_total = 1 << 20;
  w.migrations[0].status.pre_copied_bytes = 1 << 20;
  p = ComputePlan(w, kT0, {});
  ASSERT_EQ(p.create_recalls.size(), 1u);
  const api::DaxRecall& r = p.create_recalls[0];
  EXPECT_EQ(r.metadata.name, "vol-migrate-e3");
  EXPECT_EQ(r.spec.reason, api::RecallReason::kMigrate);
  EXPECT_EQ(r.metadata.labels.at(api::kMigrationLabel), "mig");
  EXPECT_THAT(r.metadata.finalizers, ElementsAre(kRecallFinalizer))
      << "created with its finalizer: its start is one status write";
  EXPECT_EQ(p.desired.migrations[0].status.phase,
            api::MigrationPhase::kRecalling);
  EXPECT_EQ(p.desired.migrations[0].status.source_node, "owner");
  w = p.desired;
  // The recall exists now; the holder acks; the volume goes Migrating.
  api::DaxRecall stored = r;
  stored.metadata.uid = "rec-uid";
  stored.metadata.creation_timestamp = kT0;
  w.recalls.push_back(stored);
  w = ComputePlan(w, kT0, {}).desired;
  ASSERT_EQ(w.leases[0]->status.state, LeaseState::kRecalling);
  w.leases[0].Mutable().status.released_recall_id =
      w.leases[0]->status.recall_id;
  w = Settle(w, kT0);
  EXPECT_EQ(w.volume->status.phase, VolumePhase::kMigrating);
  EXPECT_EQ(w.migrations[0].status.phase, api::MigrationPhase::kCopying);
  EXPECT_EQ(Cond(w.migrations[0].status.conditions, "Progressing").reason,
            "Copying");
  // The agents report a verified copy: the owner switches with the endpoint.
  api::DaxMigrationStatus& st = w.migrations[0].status;
  st.bytes_total = st.bytes_copied = 1 << 20;
  st.source_checksum = st.target_checksum = "sha256:x";
  st.target_endpoint = "10.0.0.2:7390";
  st.last_progress_time = kT0;
  p = ComputePlan(w, kT0 + absl::Seconds(1), {});
  EXPECT_EQ(p.desired.volume->spec.owner_node, "target");
  EXPECT_EQ(
      p.desired.volume->metadata.annotations.at(api::kFabricEndpointAnnotation),
      "10.0.0.2:7390");
  EXPECT_EQ(p.desired.volume->status.phase, VolumePhase::kReady);
  EXPECT_EQ(p.desired.volume->status.epoch, 4);
  EXPECT_EQ(p.desired.migrations[0].status.phase,
            api::MigrationPhase::kSwitching);
  w = Settle(p.desired, kT0 + absl::Seconds(1));
  EXPECT_EQ(w.migrations[0].status.phase, api::MigrationPhase::kComplete);
  EXPECT_EQ(Cond(w.migrations[0].status.conditions, "Succeeded").status,
            api::ConditionStatus::kTrue);
}

// A migration whose target reported its pre-copy done: its first pass goes
// PreCopying, its next creates the recall.
api::DaxMigration PreCopied(api::DaxMigration m) {
  m.status.bytes_total = m.status.pre_copied_bytes = 1 << 20;
  return m;
}

// A migration of `vol` to "target" whose Migrate recall ran: the volume is
// Migrating at epoch 3, the migration Copying (with its finalizer).
World MigratingToTarget() {
  World w = Settle(WorldOf({}), kT0);
  api::DaxMigration m;
  m.metadata.name = "mig";
  m.spec.volume = "vol";
  m.spec.target_node = "target";
  m.metadata.finalizers = {kMigrationFinalizer};
  w.migrations.push_back(PreCopied(m));
  w = ComputePlan(w, kT0, {}).desired;  // PreCopying
  Plan p = ComputePlan(w, kT0, {});
  w = p.desired;
  api::DaxRecall stored = p.create_recalls.at(0);
  stored.metadata.uid = "rec-uid";
  w.recalls.push_back(stored);
  w = Settle(w, kT0);  // no holders: Quiesced at once, then Migrating
  EXPECT_EQ(w.volume->status.phase, VolumePhase::kMigrating);
  EXPECT_EQ(w.migrations[0].status.phase, api::MigrationPhase::kCopying);
  return w;
}

// A target failure rolls the volume back to its owner at the next epoch,
// with the target's reason on the Failed condition.
TEST(PlanMigration, TargetFailureRollsBack) {
  World w = MigratingToTarget();
  ASSERT_FALSE(::testing::Test::HasFailure());
  w.migrations[0].status.target_failure = "InsufficientCapacity: no room";
  w = Settle(w, kT0);
  EXPECT_EQ(w.migrations[0].status.phase, api::MigrationPhase::kFailed);
  EXPECT_EQ(Cond(w.migrations[0].status.conditions, "Failed").reason,
            "InsufficientCapacity");
  EXPECT_EQ(w.volume->status.phase, VolumePhase::kReady);
  EXPECT_EQ(w.volume->status.epoch, 4);
  EXPECT_EQ(w.volume->spec.owner_node, "owner");
}

bool Protected(const api::DaxMigration& m) {
  return std::find(m.metadata.finalizers.begin(), m.metadata.finalizers.end(),
                   kMigrationFinalizer) != m.metadata.finalizers.end();
}

// Deleted mid-copy: Failed (Deleted), the volume back on its owner at the
// next epoch; the finalizer stays until the target freed what it made.
TEST(PlanMigration, DeletedMidCopyRollsBackThenLetsGo) {
  World w = MigratingToTarget();
  api::DaxMigrationStatus& st = w.migrations[0].status;
  st.target_endpoint = "10.0.0.2:7390";
  st.bytes_total = 1 << 20;
  st.bytes_copied = 1 << 10;
  st.last_progress_time = kT0;
  w.migrations[0].metadata.deletion_timestamp = kT0;
  w = Settle(w, kT0);
  EXPECT_EQ(w.migrations[0].status.phase, api::MigrationPhase::kFailed);
  EXPECT_EQ(Cond(w.migrations[0].status.conditions, "Failed").reason,
            "Deleted");
  EXPECT_EQ(w.volume->status.phase, VolumePhase::kReady);
  EXPECT_EQ(w.volume->status.epoch, 4);
  EXPECT_EQ(w.volume->spec.owner_node, "owner");
  EXPECT_TRUE(Protected(w.migrations[0]));  // the target's media is there
  w.migrations[0].status.target_media_freed = true;
  Plan p = ComputePlan(w, kT0, {});
  EXPECT_FALSE(Protected(p.desired.migrations[0]));
}

// Deleted with every byte copied and both checksums equal: the switch is
// made; the finalizer goes once the source freed its media.
TEST(PlanMigration, DeletedWithAVerifiedCopyFinishesTheSwitch) {
  World w = MigratingToTarget();
  api::DaxMigrationStatus& st = w.migrations[0].status;
  st.bytes_total = st.bytes_copied = 1 << 20;
  st.source_checksum = st.target_checksum = "sha256:x";
  st.target_endpoint = "10.0.0.2:7390";
  st.last_progress_time = kT0;
  w.migrations[0].metadata.deletion_timestamp = kT0;
  w = Settle(w, kT0);
  EXPECT_EQ(w.migrations[0].status.phase, api::MigrationPhase::kComplete);
  EXPECT_EQ(w.volume->spec.owner_node, "target");
  EXPECT_EQ(w.volume->status.phase, VolumePhase::kReady);
  EXPECT_EQ(w.volume->status.epoch, 4);
  EXPECT_TRUE(Protected(w.migrations[0]));
  w.migrations[0].status.source_media_freed = true;
  Plan p = ComputePlan(w, kT0, {});
  EXPECT_FALSE(Protected(p.desired.migrations[0]));
}

// A migration named as `kubectl daxlease migrate` names one for a volume ID
// of 57 characters (longer than a label value): its recall's label is a
// label value that stands for the name, and a recall whose record on the
// migration was lost is still adopted through it (the migration then goes
// on to Copying, the recall is not failed as another migration's).
TEST(PlanMigration, LongNameIsLabelledWithALabelValueAndAdopted) {
  World w = Settle(WorldOf({}), kT0);
  const std::string name =
      std::string(40, 'p') + "-0123456789abcdef-to-target-abcd1234";
  api::DaxMigration m;
  m.metadata.name = name;
  m.spec.volume = "vol";
  m.spec.target_node = "target";
  m.metadata.finalizers = {kMigrationFinalizer};
  w.migrations.push_back(PreCopied(m));
  w = ComputePlan(w, kT0, {}).desired;  // PreCopying
  Plan p = ComputePlan(w, kT0, {});
  ASSERT_EQ(p.create_recalls.size(), 1u);
  api::DaxRecall stored = p.create_recalls[0];
  const std::string label = stored.metadata.labels.at(api::kMigrationLabel);
  EXPECT_LE(label.size(), 63u);
  EXPECT_EQ(label, api::LabelValueFor(name));
  // The recall is stored; the migration's write that named it is lost.
  stored.metadata.uid = "rec-uid";
  w.recalls.push_back(stored);
  w = Settle(w, kT0);
  EXPECT_EQ(w.migrations[0].status.recall, stored.metadata.name);
  EXPECT_EQ(w.migrations[0].status.phase, api::MigrationPhase::kCopying);
  EXPECT_EQ(w.volume->status.phase, VolumePhase::kMigrating);
  EXPECT_NE(w.recalls[0].status.phase, RecallPhase::kFailed);
}

// A DaxVolume made by hand with a name longer than a label value (72
// characters): its Migrate recall's volume label is a label value that
// stands for it, as the agent writes it on the volume's leases.
TEST(PlanMigration, LongVolumeNameIsLabelledWithALabelValue) {
  const std::string vol = "hand-made-" + std::string(62, 'v');
  api::DaxVolume v = Volume();
  v.metadata.name = vol;
  World w = WorldOf({}, {}, v);
  w.volume_name = vol;
  w = Settle(w, kT0);
  api::DaxMigration m;
  m.metadata.name = "mig";
  m.spec.volume = vol;
  m.spec.target_node = "target";
  m.metadata.finalizers = {kMigrationFinalizer};
  w.migrations.push_back(PreCopied(m));
  w = ComputePlan(w, kT0, {}).desired;  // PreCopying
  Plan p = ComputePlan(w, kT0, {});
  ASSERT_EQ(p.create_recalls.size(), 1u);
  const api::DaxRecall& r = p.create_recalls[0];
  EXPECT_EQ(r.spec.volume, vol);
  const std::string label = r.metadata.labels.at(api::kVolumeLabel);
  EXPECT_LE(label.size(), 63u);
  EXPECT_EQ(label, api::LabelValueFor(vol));
}

// A Migrate recall left behind by a migration that is gone never starts
// (nothing would end the change it was for).
TEST(PlanMigration, MigrateRecallWithoutItsMigrationDoesNotStart) {
  World w = Settle(WorldOf({Lease("l", "n")}), kT0);
  api::DaxRecall r;
  r.metadata.name = "vol-migrate-e3";
  r.metadata.uid = "rec-uid";
  r.metadata.labels[api::kMigrationLabel] = "gone";
  r.spec.volume = "vol";
  r.spec.reason = api::RecallReason::kMigrate;
  w.recalls.push_back(r);
  w = Settle(w, kT0);
  EXPECT_EQ(w.recalls[0].status.phase, RecallPhase::kFailed);
  EXPECT_EQ(Cond(w.recalls[0].status.conditions, "Complete").reason,
            "MigrationFinished");
  EXPECT_EQ(w.volume->status.phase, VolumePhase::kReady);
  EXPECT_EQ(w.leases[0]->status.state, LeaseState::kGranted);
}

}  // namespace
}  // namespace daxlease::op
