// ApplyAll must behave exactly like applying the events one by one with
// Apply (skipping refused ones): checked on seeded random states and random
// batches, plus a large recall end to end.
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "lib/lease/lease.h"

namespace daxlease::lease {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1'700'000'000);

void ExpectSameLease(const Lease& a, const Lease& b, const std::string& ctx) {
  EXPECT_EQ(a.id, b.id) << ctx;
  EXPECT_EQ(a.holder_node, b.holder_node) << ctx;
  EXPECT_EQ(a.holder_pod, b.holder_pod) << ctx;
  EXPECT_EQ(a.access, b.access) << ctx;
  EXPECT_EQ(a.state, b.state) << ctx << " lease " << a.id;
  EXPECT_EQ(a.epoch, b.epoch) << ctx << " lease " << a.id;
  EXPECT_EQ(a.recall_id, b.recall_id) << ctx << " lease " << a.id;
  EXPECT_EQ(a.deadline, b.deadline) << ctx << " lease " << a.id;
  EXPECT_EQ(a.reason, b.reason) << ctx << " lease " << a.id;
}

void ExpectSameState(const VolumeState& a, const VolumeState& b,
                     const std::string& ctx) {
  EXPECT_EQ(a.volume, b.volume) << ctx;
  EXPECT_EQ(a.phase, b.phase) << ctx;
  EXPECT_EQ(a.epoch, b.epoch) << ctx;
  ASSERT_EQ(a.recall.has_value(), b.recall.has_value()) << ctx;
  if (a.recall.has_value()) {
    EXPECT_EQ(a.recall->id, b.recall->id) << ctx;
    EXPECT_EQ(a.recall->reason, b.recall->reason) << ctx;
    EXPECT_EQ(a.recall->started_at, b.recall->started_at) << ctx;
    EXPECT_EQ(a.recall->grace, b.recall->grace) << ctx;
    EXPECT_EQ(a.recall->cap, b.recall->cap) << ctx;
  }
  ASSERT_EQ(a.leases.size(), b.leases.size()) << ctx;
  for (size_t i = 0; i < a.leases.size(); ++i) {
    ExpectSameLease(a.leases[i], b.leases[i], ctx);
  }
}

// Random events over a small set of lease IDs, with parameters drawn so that
// both accepted and refused events are common (right and stale epochs and
// recall IDs, unknown leases, empty IDs).
class Gen {
 public:
  explicit Gen(uint64_t seed) : rng_(seed) {}

  Event Next(const VolumeState& s) {
    const std::string id = LeaseId();
    const uint64_t epoch = Epoch(s, id);
    const std::string rid = RecallId(s, id);
    switch (Pick(13)) {
      case 0:
      case 1:
        return Request{id, absl::StrCat("n", id.empty() ? 0 : id.back() % 3),
                       "", Pick(2) ? Access::kReadOnly : Access::kReadWrite};
      case 2:
      case 3:
        return Grant{id};
      case 4:
        return StartRecall{Pick(3) == 0 ? "" : absl::StrCat("r", Pick(3)),
                           static_cast<RecallReason>(Pick(4)),
                           absl::Seconds(Pick(3) * 10)};
      case 5:
      case 6:
        return HolderAck{id, rid, epoch, Pick(4) != 0};
      case 7:
        return Progress{id, rid, epoch};
      case 8:
        return FenceConfirmed{id, epoch};
      case 9:
        return RevocationAck{id, epoch};
      case 10:
        return Release{id, epoch};
      case 11:
        switch (Pick(3)) {
          case 0:
            return BeginChange{Pick(2) ? ChangeKind::kReshape
                                       : ChangeKind::kMigrate};
          case 1:
            return ChangeDone{};
          default:
            return Resume{};
        }
      default:
        return Forget{id};
    }
  }

  int Pick(int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng_); }

 private:
  std::string LeaseId() {
    int k = Pick(21);
    if (k == 20) return "";
    return absl::StrCat("l", k % 10);
  }
  uint64_t Epoch(const VolumeState& s, const std::string& id) {
    const Lease* l = s.Find(id);
    if (l != nullptr && Pick(5) != 0) return l->epoch;
    return static_cast<uint64_t>(Pick(4));
  }
  std::string RecallId(const VolumeState& s, const std::string& id) {
    const Lease* l = s.Find(id);
    if (l != nullptr && Pick(5) != 0) return l->recall_id;
    return absl::StrCat("r", Pick(3));
  }

  std::mt19937_64 rng_;
};

TEST(LeaseApplyAll, SameAsApplyingOneByOneOnRandomSequences) {
  int accepted = 0, refused = 0, completes = 0;
  for (uint64_t seed = 1; seed <= 400; ++seed) {
    Gen gen(seed);
    VolumeState s;
    s.volume = "v";
    s.config.grace = absl::Seconds(20);
    absl::Time now = kT0;
    // A random reachable starting state (with Step so revokes happen).
    for (int i = 0, n = gen.Pick(60); i < n; ++i) {
      now += absl::Seconds(gen.Pick(15));
      auto o = Apply(s, gen.Next(s), now);
      if (o.ok()) s = o->state;
      if (gen.Pick(4) == 0) {
        auto st = Step(s, now);
        ASSERT_TRUE(st.ok()) << st.status();
        s = st->state;
      }
    }
    // A random batch, both ways. The generator looks at the sequential
    // state so parameters match the leases as the batch goes.
    std::vector<Event> batch;
    VolumeState seq = s;
    std::vector<Action> seq_actions;
    std::vector<absl::Status> seq_results;
    for (int i = 0, n = 1 + gen.Pick(80); i < n; ++i) {
      batch.push_back(gen.Next(seq));
      auto o = Apply(seq, batch.back(), now);
      seq_results.push_back(o.status());
      if (o.ok()) {
        seq = o->state;
        seq_actions.insert(seq_actions.end(), o->actions.begin(),
                           o->actions.end());
      }
    }
    absl::StatusOr<BatchOutcome> all = ApplyAll(s, batch, now);
    const std::string ctx = absl::StrCat("seed ", seed);
    ASSERT_TRUE(all.ok()) << ctx << ": " << all.status();
    ExpectSameState(all->state, seq, ctx);
    EXPECT_EQ(all->actions, seq_actions) << ctx;
    ASSERT_EQ(all->results.size(), batch.size()) << ctx;
    for (size_t i = 0; i < batch.size(); ++i) {
      EXPECT_EQ(all->results[i], seq_results[i]) << ctx << " event " << i;
      (seq_results[i].ok() ? accepted : refused)++;
    }
    for (const Action& a : seq_actions) {
      completes += a.kind == ActionKind::kRecallComplete;
    }
    if (::testing::Test::HasFailure()) return;
  }
  // The generator must exercise both outcomes and recall completion.
  EXPECT_GT(accepted, 2000);
  EXPECT_GT(refused, 2000);
  EXPECT_GT(completes, 50);
}

TEST(LeaseApplyAll, RefusesInvalidStateAndAppliesNothing) {
  VolumeState s;
  s.volume = "v";
  s.phase = VolumePhase::kRecalling;  // without a recall: invalid
  auto all = ApplyAll(s, {Request{"a", "n", "", Access::kReadWrite}}, kT0);
  EXPECT_EQ(all.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(LeaseApplyAll, EmptyBatchReturnsTheState) {
  VolumeState s;
  s.volume = "v";
  Lease a;
  a.id = "a";
  a.holder_node = "n";
  s.leases.push_back(a);
  auto all = ApplyAll(s, {}, kT0);
  ASSERT_TRUE(all.ok()) << all.status();
  ExpectSameState(all->state, s, "empty");
  EXPECT_TRUE(all->actions.empty());
  EXPECT_TRUE(all->results.empty());
}

// The operator's case: a thousand leases granted, recalled and acked, each
// step one batch; the last ack completes the recall, and only it.
TEST(LeaseApplyAll, ThousandLeaseRecallCompletesOnTheLastAck) {
  constexpr int kN = 1000;
  VolumeState s;
  s.volume = "v";
  std::vector<Event> requests, grants, acks;
  for (int i = 0; i < kN; ++i) {
    std::string id = absl::StrCat("l", i);
    requests.push_back(Request{id, "n", "", Access::kReadWrite});
    grants.push_back(Grant{id});
    acks.push_back(HolderAck{id, "r", 1, true});
  }
  for (const auto* batch : {&requests, &grants}) {
    auto o = ApplyAll(s, *batch, kT0);
    ASSERT_TRUE(o.ok()) << o.status();
    for (const absl::Status& st : o->results) ASSERT_TRUE(st.ok()) << st;
    s = o->state;
  }
  auto r =
      Apply(s, StartRecall{"r", RecallReason::kManual, absl::Seconds(5)}, kT0);
  ASSERT_TRUE(r.ok()) << r.status();
  s = r->state;
  acks.push_back(HolderAck{"l0", "r", 1, true});  // duplicate: no-op
  auto o = ApplyAll(s, acks, kT0 + absl::Seconds(1));
  ASSERT_TRUE(o.ok()) << o.status();
  for (const absl::Status& st : o->results) ASSERT_TRUE(st.ok()) << st;
  EXPECT_EQ(o->state.phase, VolumePhase::kQuiesced);
  ASSERT_EQ(o->actions.size(), static_cast<size_t>(kN + 1));
  EXPECT_EQ(o->actions[kN - 1], (Action{ActionKind::kReleased, "l999"}));
  EXPECT_EQ(o->actions[kN], (Action{ActionKind::kRecallComplete, ""}));
  EXPECT_TRUE(Validate(o->state).ok());
}

}  // namespace
}  // namespace daxlease::lease
