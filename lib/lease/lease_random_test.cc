// Randomized test: thousands of seeded random event sequences run through the
// library together with a small simulation of the owner's memory windows, the
// holders' mappings and the media. After every step it checks the protocol
// invariants (a)-(f) of docs/lease-protocol.md on the library's state and the
// simulation. Reproducible: the failing sequence's seed is printed; rerun it
// alone with DAXLEASE_LEASE_SEED=<seed> DAXLEASE_LEASE_RUNS=1.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "lib/lease/lease.h"

namespace daxlease::lease {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1'700'000'000);

uint64_t EnvOr(const char* name, uint64_t dflt) {
  const char* v = std::getenv(name);
  return v != nullptr ? std::strtoull(v, nullptr, 10) : dflt;
}

// What one holder (client + its agent) knows and holds.
struct Holder {
  uint64_t epoch = 0;   // epoch of the grant it uses; 0 = none
  bool mapped = false;  // has a mapping through a window
  bool crashed = false;
  std::set<int> pending;        // written, not flushed
  int failed = 0;               // writes/flushes the application saw fail
  bool revoked_notice = false;  // a "revoked" notice is on its way
};

// What the random sequences reached, summed over all runs, so the test fails
// if the generator stops exercising the interesting paths.
struct Coverage {
  int grants = 0, recalls_complete = 0, fences = 0, revocations = 0,
      epoch_bumps = 0, acked_writes = 0, failed_writes = 0, late_acks = 0;
};

class World {
 public:
  World(uint64_t seed, Coverage* cov) : rng_(seed), cov_(cov) {
    ids_ = {"h0", "h1", "h2", "h3"};
    s_.volume = "v";
    s_.config.grace = absl::Seconds(30);
  }

  // One random step; returns false when an invariant broke (gtest failure
  // already recorded).
  void RandomStep() {
    const std::string& id = ids_[Pick(ids_.size())];
    Holder& h = holders_[id];
    // Holder data-path steps (12-14) are drawn more often than the rest.
    size_t c = Pick(22);
    if (c >= 16) c = 12 + (c - 16) % 3;
    switch (c) {
      case 0:
        Do(Request{id, "node-" + id, "pod-" + id, Access::kReadWrite});
        break;
      case 1:
        if (const Lease* l = s_.Find(id);
            MayGrant(s_, id).ok() ||
            (l != nullptr && l->state == LeaseState::kGranted &&
             l->epoch == s_.epoch)) {  // a duplicate grant is a no-op
          Expect(Grant{id}, /*ok=*/true);
        } else {
          Expect(Grant{id}, /*ok=*/false);
        }
        break;
      case 2:
        Do(StartRecall{absl::StrCat("r", ++recall_seq_),
                       Pick(2) ? RecallReason::kReshape : RecallReason::kEvict,
                       absl::Seconds(10 + Pick(30))});
        break;
      case 3:
        HolderAnswers(id, h);
        break;
      case 4:
        if (const Lease* l = s_.Find(id); l != nullptr && !h.crashed) {
          Do(Progress{id, l->recall_id, l->epoch});
        }
        break;
      case 5:
        now_ += absl::Seconds(Pick(25));
        DoStep();
        break;
      case 6:
        OwnerFences();
        break;
      case 7:
        if (const Lease* l = s_.Find(id); l != nullptr && !h.crashed) {
          // The holder takes in its revocation notice, then acknowledges.
          if (h.revoked_notice) DropAll(h);
          h.revoked_notice = false;
          Do(RevocationAck{id, l->epoch});
        }
        break;
      case 8:
        if (const Lease* l = s_.Find(id);
            l != nullptr && !h.crashed && Pick(3) == 0) {
          Flush(id, h);  // release promises a flush, like an ack
          h.mapped = false;
          h.pending.clear();
          Do(Release{id, l->epoch});
          h.epoch = 0;
        }
        break;
      case 9:
        if (Pick(2)) {
          Do(BeginChange{Pick(2) ? ChangeKind::kReshape
                                 : ChangeKind::kMigrate});
        } else {
          Do(Resume{});
        }
        break;
      case 10:
        Do(ChangeDone{});
        break;
      case 11:
        Do(lease::Forget{id});
        break;
      case 12:
        Write(id, h);
        break;
      case 13:
        Flush(id, h);
        break;
      case 14:
        Connect(id, h);
        break;
      case 15:
        if (Pick(8) == 0)
          h.crashed = true;
        else
          StaleMessages(id);
        break;
    }
    CheckInvariants();
  }

  // Drives a running recall to its end: time passes the cap, the owner
  // fences; the recall must then be complete (e).
  void Finish() {
    if (s_.phase != VolumePhase::kRecalling) return;
    now_ = s_.recall->cap + absl::Seconds(1);
    DoStep();
    OwnerFences();
    DoStep();
    EXPECT_EQ(s_.phase, VolumePhase::kQuiesced)
        << "(e) recall did not complete after the cap and all fences";
    CheckInvariants();
  }

 private:
  size_t Pick(size_t n) {
    return std::uniform_int_distribution<size_t>(0, n - 1)(rng_);
  }

  // Applies and, when accepted, takes the new state and performs actions.
  bool Do(const Event& e) {
    absl::StatusOr<Outcome> o = Apply(s_, e, now_);
    if (!o.ok()) {
      // Refusals must be clean: a known code, and a message.
      EXPECT_NE(o.status().code(), absl::StatusCode::kInternal) << o.status();
      EXPECT_FALSE(o.status().message().empty());
      return false;
    }
    Take(*o, &e);
    return true;
  }

  void Expect(const Event& e, bool ok) {
    EXPECT_EQ(Do(e), ok) << "event index " << e.index();
  }

  void DoStep() {
    absl::StatusOr<Outcome> o = Step(s_, now_);
    ASSERT_TRUE(o.ok()) << o.status();
    Take(*o, nullptr);
    // Idempotent: a second Step at the same time changes nothing new.
    absl::StatusOr<Outcome> again = Step(s_, now_);
    ASSERT_TRUE(again.ok());
    for (const Action& a : again->actions) {
      EXPECT_EQ(a.kind, ActionKind::kFence) << "Step not idempotent";
    }
  }

  void Take(const Outcome& o, const Event* e) {
    // (c) grants only in Ready.
    for (const Action& a : o.actions) {
      if (a.kind == ActionKind::kNotifyGranted) {
        EXPECT_EQ(s_.phase, VolumePhase::kReady) << "(c) grant outside Ready";
        for (const Lease& l : s_.leases) {
          EXPECT_NE(l.state, LeaseState::kRecalling) << "(c)";
        }
      }
    }
    // (d) epochs only grow.
    EXPECT_GE(o.state.epoch, s_.epoch) << "(d)";
    // (f) media: the copy is taken when the change begins and becomes the
    // volume when it is done.
    if (s_.phase == VolumePhase::kQuiesced &&
        (o.state.phase == VolumePhase::kReshaping ||
         o.state.phase == VolumePhase::kMigrating)) {
      copy_ = durable_;
    }
    if ((s_.phase == VolumePhase::kReshaping ||
         s_.phase == VolumePhase::kMigrating) &&
        o.state.phase == VolumePhase::kReady) {
      durable_ = copy_;
    }
    s_ = o.state;
    for (const Action& a : o.actions) {
      cov_->grants += a.kind == ActionKind::kNotifyGranted;
      cov_->recalls_complete += a.kind == ActionKind::kRecallComplete;
      cov_->revocations += a.kind == ActionKind::kNotifyRevoked;
      cov_->epoch_bumps += a.kind == ActionKind::kEpochBumped;
      Holder& h = holders_[a.lease_id];
      const Lease* l = s_.Find(a.lease_id);
      switch (a.kind) {
        case ActionKind::kNotifyGranted:
          if (!h.crashed) {
            h.epoch = l->epoch;
            h.mapped = false;
          }
          break;
        case ActionKind::kNotifyRevoked:
          // The client reports "revoked"; unflushed writes fail visibly.
          if (!h.crashed) h.revoked_notice = true;
          break;
        default:
          break;
      }
    }
    (void)e;
  }

  void DropAll(Holder& h) {
    h.failed += static_cast<int>(h.pending.size());
    cov_->failed_writes += static_cast<int>(h.pending.size());
    h.pending.clear();
    h.mapped = false;
    h.epoch = 0;
  }

  // The owner: fresh read (CheckAccess) + never for a fenced epoch.
  void Connect(const std::string& id, Holder& h) {
    if (h.crashed || h.epoch == 0 || h.mapped) return;
    if (CheckAccess(s_, id, h.epoch).ok() && fenced_[id] < h.epoch) {
      window_[id] = h.epoch;
      h.mapped = true;
    } else {
      h.epoch = 0;  // refused: the client sees the error
    }
  }

  bool Reaches(const std::string& id, const Holder& h) {
    return h.mapped && h.epoch != 0 && window_[id] == h.epoch;
  }

  void Write(const std::string& id, Holder& h) {
    if (h.crashed || !h.mapped) return;
    if (Reaches(id, h)) {
      Landed(id, h);
      h.pending.insert(++write_seq_);
    } else {
      ++h.failed;  // access error, visible
      ++cov_->failed_writes;
      h.mapped = false;
    }
  }

  // Returns true if everything pending is now durable.
  bool Flush(const std::string& id, Holder& h) {
    if (h.pending.empty()) return true;
    if (Reaches(id, h)) {
      Landed(id, h);
      for (int w : h.pending) {
        durable_.insert(w);
        acked_.insert(w);  // the application's write ack
        ++cov_->acked_writes;
      }
      h.pending.clear();
      return true;
    }
    h.failed += static_cast<int>(h.pending.size());
    cov_->failed_writes += static_cast<int>(h.pending.size());
    h.pending.clear();
    return false;
  }

  // (a), (f): an access that lands must be under a live, unfenced epoch and
  // never while the volume is quiesced or changing.
  void Landed(const std::string& id, const Holder& h) {
    EXPECT_LT(fenced_[id], h.epoch) << "(a) access under fenced epoch";
    EXPECT_TRUE(s_.phase == VolumePhase::kReady ||
                s_.phase == VolumePhase::kRecalling)
        << "(f) access landed while " << Name(s_.phase);
  }

  // The holder answers its recall: flush, drop the mapping, ack.
  void HolderAnswers(const std::string& id, Holder& h) {
    const Lease* l = s_.Find(id);
    if (l == nullptr || h.crashed || l->state != LeaseState::kRecalling) return;
    bool flushed = Flush(id, h);
    h.mapped = false;
    std::string rid = l->recall_id;
    uint64_t ep = l->epoch;
    bool accepted = Do(HolderAck{id, rid, ep, flushed});
    if (accepted) h.epoch = 0;
    cov_->late_acks += !accepted;
  }

  void OwnerFences() {
    for (const std::string& id : LeasesToFence(s_)) {
      const Lease* l = s_.Find(id);
      if (window_[id] != 0 && window_[id] <= l->epoch) window_[id] = 0;
      fenced_[id] = std::max(fenced_[id], l->epoch);
      ASSERT_TRUE(Do(FenceConfirmed{id, l->epoch}));
      ++cov_->fences;
    }
  }

  // Stale and malformed messages must be refused without changing anything.
  void StaleMessages(const std::string& id) {
    const Lease* l = s_.Find(id);
    VolumeState before = s_;
    uint64_t old = l != nullptr && l->epoch > 0 ? l->epoch - 1 : 0;
    if (l != nullptr && l->epoch > 0) {
      EXPECT_FALSE(Do(HolderAck{id, l->recall_id, old, true}));
      EXPECT_FALSE(Do(Progress{id, l->recall_id, old}));
      EXPECT_FALSE(Do(FenceConfirmed{id, old}));
      EXPECT_TRUE(IsStaleEpoch(s_, id, old));
    }
    EXPECT_FALSE(Do(HolderAck{id, "no-such-recall", s_.epoch, true}));
    EXPECT_EQ(s_.phase, before.phase);
    EXPECT_EQ(s_.leases.size(), before.leases.size());
    for (size_t i = 0; i < s_.leases.size(); ++i) {
      EXPECT_EQ(s_.leases[i].state, before.leases[i].state);
    }
  }

  void CheckInvariants() {
    ASSERT_TRUE(Validate(s_).ok()) << Validate(s_);
    EXPECT_GE(s_.epoch, max_epoch_) << "(d)";
    max_epoch_ = s_.epoch;
    for (const Lease& l : s_.leases) {
      EXPECT_LE(l.epoch, s_.epoch) << "(d)";
      Holder& h = holders_[l.id];
      // (a) a fenced window is never open again; a fenced or revoked lease
      // gets no access.
      if (window_[l.id] != 0) {
        EXPECT_LT(fenced_[l.id], window_[l.id]) << "(a) " << l.id;
      }
      if (l.state == LeaseState::kRevoked || l.fencing()) {
        EXPECT_FALSE(CheckAccess(s_, l.id, l.epoch).ok()) << "(a)";
      }
      if (l.state == LeaseState::kRevoked) {
        EXPECT_FALSE(Reaches(l.id, h)) << "(a) revoked holder still reaches";
      }
    }
    // (b) no change while a lease holds access or a holder can reach memory.
    if (s_.phase == VolumePhase::kQuiesced ||
        s_.phase == VolumePhase::kReshaping ||
        s_.phase == VolumePhase::kMigrating) {
      for (const Lease& l : s_.leases) {
        EXPECT_FALSE(l.holds_access()) << "(b) " << l.id;
        EXPECT_FALSE(Reaches(l.id, holders_[l.id])) << "(b) " << l.id;
      }
    }
    // (c) no grant possible while not Ready.
    if (s_.phase != VolumePhase::kReady) {
      for (const Lease& l : s_.leases) {
        if (l.state == LeaseState::kPending) {
          EXPECT_EQ(MayGrant(s_, l.id).code(), absl::StatusCode::kUnavailable)
              << "(c)";
        }
      }
    }
    // (f) every acknowledged write is durable.
    for (int w : acked_) {
      EXPECT_TRUE(durable_.count(w))
          << "(f) acknowledged write " << w << " lost";
    }
  }

  std::mt19937_64 rng_;
  Coverage* cov_;
  std::vector<std::string> ids_;
  VolumeState s_;
  absl::Time now_ = kT0;
  int recall_seq_ = 0;
  int write_seq_ = 0;
  uint64_t max_epoch_ = 1;
  std::map<std::string, Holder> holders_;
  std::map<std::string, uint64_t> window_;  // owner: open window's epoch
  std::map<std::string, uint64_t> fenced_;  // owner: fenced up to epoch
  std::set<int> durable_, copy_, acked_;
};

TEST(LeaseRandom, InvariantsHoldOnRandomSequences) {
  const uint64_t base = EnvOr("DAXLEASE_LEASE_SEED", 20261125);
  const uint64_t runs = EnvOr("DAXLEASE_LEASE_RUNS", 5000);
  const int steps = 80;
  Coverage cov;
  for (uint64_t i = 0; i < runs; ++i) {
    const uint64_t seed = base + i;
    SCOPED_TRACE(absl::StrCat("seed ", seed, " (rerun: DAXLEASE_LEASE_SEED=",
                              seed, " DAXLEASE_LEASE_RUNS=1)"));
    World w(seed, &cov);
    for (int k = 0; k < steps; ++k) {
      w.RandomStep();
      if (::testing::Test::HasFailure()) return;
    }
    w.Finish();
    if (::testing::Test::HasFailure()) return;
  }
  if (runs < 1000) return;
  EXPECT_GT(cov.grants, 1000);
  EXPECT_GT(cov.recalls_complete, 500);
  EXPECT_GT(cov.fences, 100);
  EXPECT_GT(cov.revocations, 100);
  EXPECT_GT(cov.epoch_bumps, 100);
  EXPECT_GT(cov.acked_writes, 100);
  EXPECT_GT(cov.failed_writes, 10);
  EXPECT_GT(cov.late_acks, 10);
  std::printf(
      "coverage: grants=%d recalls_complete=%d fences=%d revocations=%d "
      "epoch_bumps=%d acked_writes=%d failed_writes=%d late_acks=%d\n",
      cov.grants, cov.recalls_complete, cov.fences, cov.revocations,
      cov.epoch_bumps, cov.acked_writes, cov.failed_writes, cov.late_acks);
}

}  // namespace
}  // namespace daxlease::lease
