#include "operator/plan.h"

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <set>
#include <tuple>
#include <utility>
#include <variant>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "lib/api/json.h"
#include "lib/api/label_value.h"
#include "lib/lease/lease.h"

namespace daxlease::op {
namespace {

using api::ConditionStatus;
using api::DaxLease;
using api::DaxRecall;
using api::DaxVolume;

constexpr absl::Duration kMaxRecall = absl::Seconds(120);
// Above this many leases changing the same way in one pass, one summary
// event is recorded on the volume instead of one per lease.
constexpr size_t kMaxLeaseEvents = 10;

bool HasFinalizer(const api::ObjectMeta& m, const std::string& f) {
  return std::find(m.finalizers.begin(), m.finalizers.end(), f) !=
         m.finalizers.end();
}
void AddFinalizer(api::ObjectMeta& m, const std::string& f) {
  if (!HasFinalizer(m, f)) m.finalizers.push_back(f);
}
void RemoveFinalizer(api::ObjectMeta& m, const std::string& f) {
  m.finalizers.erase(std::remove(m.finalizers.begin(), m.finalizers.end(), f),
                     m.finalizers.end());
}

bool RecallFinished(const DaxRecall& r) {
  return r.status.phase == api::RecallPhase::kComplete ||
         r.status.phase == api::RecallPhase::kFailed;
}

// The one place that knows how our states are written in the CRD (see
// plan.h): a lease whose revoke is decided shows Revoked + fenceRequired.
std::string CrdStateName(const lease::Lease& l) {
  if (l.fencing()) return "Revoked";
  return std::string(lease::Name(l.state));
}
absl::StatusOr<api::LeaseState> CrdState(const lease::Lease& l) {
  return api::ParseEnum<api::LeaseState>(CrdStateName(l));
}

// Reads the protocol view of one DaxLease that has a state.
absl::StatusOr<lease::Lease> LeaseFromCrd(const DaxLease& d) {
  lease::Lease l;
  l.id = d.metadata.name;
  const bool bound = d.status.bound_to.has_value();
  l.holder_node = bound ? d.status.bound_to->holder_node : d.spec.holder_node;
  l.holder_pod = bound ? d.status.bound_to->holder_pod : d.spec.holder_pod;
  auto access = lease::ParseAccess(api::EnumName(d.spec.access));
  if (!access.ok()) return access.status();
  l.access = *access;
  auto reason = lease::ParseRevokeReason(d.status.reason);
  l.reason = reason.ok() ? *reason : lease::RevokeReason::kNone;
  l.epoch = static_cast<uint64_t>(std::max<int64_t>(d.status.epoch, 0));
  l.recall_id = d.status.recall_id;
  l.deadline = d.status.deadline.value_or(absl::InfiniteFuture());
  if (*d.status.state == api::LeaseState::kRevoked) {
    if (d.status.fence_required) {
      l.state = lease::LeaseState::kRecalling;
      if (l.reason == lease::RevokeReason::kNone) {
        l.reason = lease::RevokeReason::kDeadlineExceeded;
      }
    } else {
      l.state = lease::LeaseState::kRevoked;
    }
    return l;
  }
  auto state = lease::ParseLeaseState(api::EnumName(*d.status.state));
  if (!state.ok()) return state.status();
  l.state = *state;
  if (l.state != lease::LeaseState::kRecalling &&
      l.state != lease::LeaseState::kReleased) {
    l.reason = lease::RevokeReason::kNone;
  }
  if (l.state != lease::LeaseState::kRecalling) {
    l.deadline = absl::InfiniteFuture();
  }
  return l;
}

class Planner {
 public:
  Planner(const World& w, absl::Time now, const PlanOptions& opts)
      : w_(w), now_(now), opts_(opts) {
    plan_.desired = w.WithoutDisplay();
  }

  Plan Run() {
    if (!w_.volume.has_value()) {
      VolumeMissing();
      StepMigrations();
    } else {
      const auto& phase = w_.volume->status.phase;
      if (phase == api::VolumePhase::kCreating ||
          phase == api::VolumePhase::kFailed) {
        VolumeNotServing();
        ProtectVolume(w_.unreadable.empty());
      } else if (BuildState()) {
        ApplyAgentSignals();
        ForgetDeletedLeases();
        CancelDeletedRecall();
        StartNextRecall();
        StepAndResume();
        StepMigrations();
        GrantPending();
        WriteLeases();
        WriteRecalls();
        WriteVolume();
        ProtectVolume(true);
        plan_.requeue_at = std::min(plan_.requeue_at, lease::NextDeadline(s_));
      } else {
        ProtectVolume(false);
      }
    }
    EmitTransitionEvents();
    Tally();
    CollectAsks();
    return std::move(plan_);
  }

 private:
  DaxVolume& Vol() { return *plan_.desired.volume; }
  int64_t Gen(const api::ObjectMeta& m) { return m.generation; }

  void SetCond(std::vector<api::Condition>& cs, const api::ObjectMeta& m,
               const char* type, bool ok, std::string reason,
               std::string message) {
    api::SetCondition(
        cs, {type, ok ? ConditionStatus::kTrue : ConditionStatus::kFalse,
             Gen(m), now_, std::move(reason), std::move(message)});
  }
  void LeaseCond(DaxLease& l, bool ok, std::string reason, std::string msg) {
    SetCond(l.status.conditions, l.metadata, kLeaseGrantedCondition, ok,
            std::move(reason), std::move(msg));
  }
  // On the desired lease at World index `i`.
  void LeaseCond(size_t i, bool ok, std::string reason, std::string msg) {
    EditLease(i, [&](DaxLease& l) {
      LeaseCond(l, ok, std::move(reason), std::move(msg));
    });
  }
  // Applies `edit` to the desired lease at World index `i`. The lease stays
  // shared with the world read (and the reader's cache) unless `edit`
  // changed it: a pass copies only the leases it changes.
  template <typename Edit>
  void EditLease(size_t i, Edit&& edit) {
    SharedLease& shared = plan_.desired.leases[i];
    DaxLease l = *shared;
    edit(l);
    if (!(l == *shared)) shared = SharedLease(std::move(l));
  }
  void RecallCond(DaxRecall& r, bool ok, std::string reason, std::string msg) {
    SetCond(r.status.conditions, r.metadata, kRecallCompleteCondition, ok,
            std::move(reason), std::move(msg));
  }

  // Leases and recalls of a volume the operator cannot serve wait, saying why;
  // a lease being deleted holds nothing the operator could fence, so it goes.
  void Waiting(const std::string& reason, const std::string& message) {
    for (size_t i = 0; i < plan_.desired.leases.size(); ++i) {
      EditLease(i, [&](DaxLease& l) {
        if (l.metadata.deletion_timestamp.has_value()) {
          RemoveFinalizer(l.metadata, api::kLeaseFinalizer);
          return;
        }
        if (!l.status.state.has_value()) {
          l.status.state = api::LeaseState::kPending;
        }
        if (l.status.state == api::LeaseState::kPending) {
          LeaseCond(l, false, reason, message);
        }
      });
    }
    for (DaxRecall& r : plan_.desired.recalls) {
      if (RecallFinished(r)) {
        ReleaseFailedRecall(r);
        continue;
      }
      if (!r.status.phase.has_value())
        r.status.phase = api::RecallPhase::kPending;
      if (r.status.phase == api::RecallPhase::kPending) {
        RecallCond(r, false, reason, message);
        if (r.metadata.deletion_timestamp.has_value()) {
          RemoveFinalizer(r.metadata, kRecallFinalizer);
        }
      }
    }
  }

  // A Failed recall never started (nothing answers it): the finalizer its
  // creator put on it goes.
  static void ReleaseFailedRecall(DaxRecall& r) {
    if (r.status.phase == api::RecallPhase::kFailed) {
      RemoveFinalizer(r.metadata, kRecallFinalizer);
    }
  }

  void VolumeMissing() {
    Waiting("VolumeNotFound",
            absl::StrCat("DaxVolume \"", w_.volume_name, "\" does not exist"));
  }

  void VolumeNotServing() {
    std::string phase = api::EnumName(*w_.volume->status.phase);
    Waiting("VolumeNotReady",
            absl::StrCat("DaxVolume \"", w_.volume_name, "\" is ", phase));
  }

  // Grace of a recall: its own, else the volume's, else the default; never
  // above the CRDs' maximum (an object stored before the CRD had one).
  absl::Duration GraceOf(const DaxRecall* r) const {
    auto bounded = [](int64_t s) {
      return absl::Seconds(std::clamp<int64_t>(s, 1, api::kMaxGraceSeconds));
    };
    if (r != nullptr && r->spec.grace_seconds.has_value()) {
      return bounded(*r->spec.grace_seconds);
    }
    if (w_.volume->spec.recall_grace_seconds.has_value()) {
      return bounded(*w_.volume->spec.recall_grace_seconds);
    }
    return opts_.default_grace;
  }

  lease::Recall RecallFromCrd(const DaxRecall& r) const {
    lease::Recall rc;
    rc.id = r.status.recall_id.empty() ? r.metadata.uid : r.status.recall_id;
    auto reason = lease::ParseRecallReason(api::EnumName(r.spec.reason));
    rc.reason = reason.ok() ? *reason : lease::RecallReason::kManual;
    rc.started_at = r.status.started_at.value_or(now_);
    rc.grace = r.status.deadline.has_value()
                   ? *r.status.deadline - rc.started_at
                   : GraceOf(&r);
    if (rc.grace <= absl::ZeroDuration()) rc.grace = absl::Seconds(1);
    rc.cap = rc.started_at + std::max(kMaxRecall, rc.grace);
    return rc;
  }

  int FindRecallByName(const std::string& name) const {
    for (size_t i = 0; i < w_.recalls.size(); ++i) {
      if (w_.recalls[i].metadata.name == name) return static_cast<int>(i);
    }
    return -1;
  }
  // The DaxRecall stored Complete at `epoch`, or -1.
  int CompleteRecallAtEpoch(uint64_t epoch) const {
    for (size_t i = 0; i < w_.recalls.size(); ++i) {
      const DaxRecall& r = w_.recalls[i];
      if (r.status.phase == api::RecallPhase::kComplete &&
          r.status.epoch == static_cast<int64_t>(epoch)) {
        return static_cast<int>(i);
      }
    }
    return -1;
  }
  int FindRecallById(const std::string& id) const {
    for (size_t i = 0; i < w_.recalls.size(); ++i) {
      const DaxRecall& r = w_.recalls[i];
      if (r.status.recall_id == id || r.metadata.uid == id) {
        return static_cast<int>(i);
      }
    }
    return -1;
  }

  // Builds s_ from the objects. False (with a volume condition) when the
  // objects do not form a state the protocol can reach.
  bool BuildState() {
    const DaxVolume& v = *w_.volume;
    s_.volume = w_.volume_name;
    // A volume without an epoch yet starts above every epoch an earlier
    // volume of its name reached (a holder of that one may still present
    // it). The same on every pass until the epoch is stored, so a lease
    // granted in this pass matches what the next pass reads.
    s_.epoch = static_cast<uint64_t>(
        v.status.epoch >= 1 ? v.status.epoch
                            : std::max<int64_t>(1, w_.epoch_high_water + 1));
    initial_epoch_ = s_.epoch;
    deleting_ = v.metadata.deletion_timestamp.has_value();
    s_.shared = v.spec.share;
    s_.owner_node = v.spec.owner_node;
    s_.config.grace = GraceOf(nullptr);
    s_.config.max_recall = std::max(kMaxRecall, s_.config.grace);

    // The running recall: the DaxRecall whose status says Recalling.
    for (size_t i = 0; i < w_.recalls.size(); ++i) {
      if (w_.recalls[i].status.phase == api::RecallPhase::kRecalling) {
        running_ = static_cast<int>(i);
        break;
      }
    }
    auto vphase = v.status.phase.value_or(api::VolumePhase::kReady);
    if (running_ >= 0) {
      s_.phase = lease::VolumePhase::kRecalling;
      s_.recall = RecallFromCrd(w_.recalls[running_]);
    } else if (vphase == api::VolumePhase::kRecalling ||
               vphase == api::VolumePhase::kQuiesced ||
               vphase == api::VolumePhase::kReshaping ||
               vphase == api::VolumePhase::kMigrating) {
      // Recalling with no running recall: it was written Complete and the
      // volume write was lost (or never made); finish from Quiesced.
      s_.phase = vphase == api::VolumePhase::kReshaping
                     ? lease::VolumePhase::kReshaping
                 : vphase == api::VolumePhase::kMigrating
                     ? lease::VolumePhase::kMigrating
                     : lease::VolumePhase::kQuiesced;
      int idx = FindRecallByName(v.status.active_recall);
      if (idx >= 0) {
        s_.recall = RecallFromCrd(w_.recalls[idx]);
      } else {
        lease::Recall gone;
        gone.id =
            v.status.active_recall.empty() ? "unknown" : v.status.active_recall;
        gone.started_at = now_;
        gone.cap = now_ + kMaxRecall;
        s_.recall = gone;
      }
    } else if (const int done = CompleteRecallAtEpoch(s_.epoch);
               vphase == api::VolumePhase::kReady && done >= 0) {
      // Ready, but a DaxRecall says it completed at this very epoch: the
      // pass that completed it (a recall with no holders starts and ends in
      // one pass) lost its volume write. The volume is Quiesced for that
      // recall, so the epoch moves on before anything is granted (and a
      // Snapshot or Reshape still waits for its owner's mark).
      s_.phase = lease::VolumePhase::kQuiesced;
      s_.recall = RecallFromCrd(w_.recalls[done]);
    }

    for (size_t i = 0; i < w_.recalls.size(); ++i) {
      const DaxRecall& r = w_.recalls[i];
      if (r.status.epoch < 1 ||
          (r.status.phase != api::RecallPhase::kRecalling &&
           r.status.phase != api::RecallPhase::kComplete)) {
        continue;
      }
      // One recall per epoch: each ends with the epoch moving on.
      auto [it, fresh] = recall_at_epoch_.emplace(r.status.epoch, i);
      if (!fresh && static_cast<int>(i) == running_) it->second = i;
    }

    if (!w_.unreadable.empty()) {
      std::string names;
      for (const std::string& u : w_.unreadable) {
        absl::StrAppend(&names, names.empty() ? "" : "; ", u);
      }
      const std::string msg = absl::StrCat(
          "cannot read objects of this volume (nothing moves until they are "
          "fixed or deleted): ",
          names);
      SetCond(Vol().status.conditions, Vol().metadata, kVolumeReadyCondition,
              false, "InvalidState", msg);
      plan_.events.push_back({"DaxVolume", v.metadata.name, v.metadata.uid,
                              true, "InvalidState", msg});
      return false;
    }
    for (size_t i = 0; i < w_.leases.size(); ++i) {
      const DaxLease& d = w_.leases[i];
      if (d.status.bound_to.has_value()) {
        const api::LeaseBinding& b = *d.status.bound_to;
        if (b.volume != d.spec.volume || b.holder_node != d.spec.holder_node ||
            b.holder_pod != d.spec.holder_pod) {
          spec_changed_[d.metadata.name] = absl::StrCat(
              "spec.volume/holderNode/holderPod are immutable: the lease "
              "stays bound to volume ",
              b.volume, ", node ", b.holder_node, ", pod ", b.holder_pod,
              "; create a new DaxLease instead");
        }
      } else if (d.status.state.has_value()) {
        // Recorded before boundTo existed: bind to the spec as it is now.
        EditLease(i, [&](DaxLease& out) {
          out.status.bound_to = api::LeaseBinding{
              d.spec.volume, d.spec.holder_node, d.spec.holder_pod};
        });
      }
      if (!d.status.state.has_value()) continue;
      absl::StatusOr<lease::Lease> l = LeaseFromCrd(d);
      if (!l.ok()) {
        LeaseCond(i, false, "InvalidState", std::string(l.status().message()));
        continue;
      }
      if (ReadThroughRecall(*l)) {
        if (auto read = CrdState(*l); read.ok() && *read != *d.status.state) {
          read_as_[i] = *read;
        }
      }
      s_.leases.push_back(*std::move(l));
      index_[d.metadata.name] = i;
    }
    for (const lease::Lease& l : s_.leases) {
      if (l.fencing()) fencing_when_read_.insert(l.id);
    }
    absl::Status valid = lease::Validate(s_);
    if (!valid.ok()) {
      SetCond(
          Vol().status.conditions, Vol().metadata, kVolumeReadyCondition, false,
          "InvalidState",
          absl::StrCat("lease records are inconsistent: ", valid.message()));
      plan_.events.push_back({"DaxVolume", v.metadata.name, v.metadata.uid,
                              true, "InvalidState",
                              std::string(valid.message())});
      return false;
    }
    return true;
  }

  // A lease whose object still says Granted or Recalling at the epoch a
  // recall ran at is read through that DaxRecall's record (plan.h): the
  // lease object lags, the recall does not. Returns whether it changed `l`.
  bool ReadThroughRecall(lease::Lease& l) {
    if (!l.holds_access()) return false;
    auto it = recall_at_epoch_.find(static_cast<int64_t>(l.epoch));
    if (it == recall_at_epoch_.end()) return false;
    const DaxRecall& r = w_.recalls[it->second];
    const std::string id =
        r.status.recall_id.empty() ? r.metadata.uid : r.status.recall_id;
    if (l.state == lease::LeaseState::kRecalling && l.recall_id != id) {
      return false;  // not this recall's: Validate says what is wrong
    }
    const bool complete = r.status.phase == api::RecallPhase::kComplete;
    const bool fenced = std::binary_search(r.status.fenced_leases.begin(),
                                           r.status.fenced_leases.end(), l.id);
    const bool revoked =
        fenced || std::binary_search(r.status.revoked_leases.begin(),
                                     r.status.revoked_leases.end(), l.id);
    const lease::Lease was = l;
    l.recall_id = id;
    if (revoked && l.reason == lease::RevokeReason::kNone) {
      // The channel takes no unflushed ack: a recorded revoke is a deadline.
      l.reason = lease::RevokeReason::kDeadlineExceeded;
    }
    if (fenced) {
      l.state = lease::LeaseState::kRevoked;
      l.deadline = absl::InfiniteFuture();
    } else if (complete && !revoked) {
      l.state = lease::LeaseState::kReleased;
      l.deadline = absl::InfiniteFuture();
    } else if (l.state == lease::LeaseState::kGranted) {
      l.state = lease::LeaseState::kRecalling;
      l.deadline = r.status.deadline.value_or(RecallFromCrd(r).started_at +
                                              RecallFromCrd(r).grace);
    }
    if (l.state == was.state && l.reason == was.reason &&
        l.recall_id == was.recall_id) {
      return false;
    }
    ++read_through_[it->second];
    return true;
  }

  // Applies one protocol event; a refusal leaves s_ as it was and, for a
  // lease event, says so on the lease.
  bool Apply(const lease::Event& e, int lease_index = -1) {
    absl::StatusOr<lease::Outcome> o = lease::Apply(s_, e, now_);
    if (!o.ok()) {
      if (lease_index >= 0) {
        LeaseCond(lease_index, false, "Refused",
                  std::string(o.status().message()));
      }
      return false;
    }
    Take(*std::move(o));
    return true;
  }

  // Every state change goes through here, so Plan::actions has them all.
  void Take(lease::Outcome o) {
    s_ = std::move(o.state);
    for (lease::Action& a : o.actions) plan_.actions.push_back(std::move(a));
  }

  void Tally() {
    ActionTally& t = plan_.tally;
    std::set<std::string> revoked;
    for (const lease::Action& a : plan_.actions) {
      switch (a.kind) {
        case lease::ActionKind::kNotifyGranted:
          ++t.grants;
          break;
        case lease::ActionKind::kNotifyRecall:
          ++t.recalls_sent;
          break;
        case lease::ActionKind::kReleased:
          ++t.releases;
          break;
        case lease::ActionKind::kFence:
          if (!fencing_when_read_.contains(a.lease_id) &&
              revoked.insert(a.lease_id).second) {
            ++t.revocations;
          }
          break;
        case lease::ActionKind::kNotifyRevoked:
          ++t.fences;
          break;
        case lease::ActionKind::kRecallComplete:
          ++t.recalls_completed;
          break;
        case lease::ActionKind::kDeadlineExtended:
        case lease::ActionKind::kEpochBumped:
          break;
      }
    }
  }

  // Plan::ask_at_recall_start: the holders lib/lease says may be asked once
  // the recall's start is stored, as the pass leaves their leases.
  void CollectAsks() {
    absl::flat_hash_set<absl::string_view> asked;
    for (const lease::Action& a : plan_.actions) {
      if (lease::WhenToCarryOut(a) == lease::StoredFirst::kRecallStart) {
        asked.insert(a.lease_id);
      }
    }
    if (asked.empty()) return;
    for (const lease::Lease& l : s_.leases) {
      // Not one answered or revoked in this same pass.
      if (asked.contains(l.id) && l.state == lease::LeaseState::kRecalling &&
          !l.fencing() && index_.contains(l.id)) {
        plan_.ask_at_recall_start.push_back(l.id);
      }
    }
  }

  // Applies a pass's worth of events (each with the index of the DaxLease it
  // concerns, or -1) in one lease::ApplyAll, the same as Apply() on each in
  // turn but O(events + leases) instead of O(events * leases). Returns each
  // event's result; a refusal is said on the lease, except Unavailable
  // (retry later) and PermissionDenied (not shared), which the caller
  // explains.
  std::vector<absl::Status> ApplyBatch(
      const std::vector<std::pair<lease::Event, int>>& batch) {
    std::vector<absl::Status> res(batch.size(),
                                  absl::InternalError("not applied"));
    if (batch.empty()) return res;
    std::vector<lease::Event> events;
    events.reserve(batch.size());
    for (const auto& [e, i] : batch) events.push_back(e);
    absl::StatusOr<lease::BatchOutcome> o = lease::ApplyAll(s_, events, now_);
    if (!o.ok()) return res;  // s_ was validated in BuildState
    for (size_t k = 0; k < batch.size(); ++k) {
      const absl::Status& st = res[k] = o->results[k];
      if (!st.ok() && !absl::IsUnavailable(st) &&
          !absl::IsPermissionDenied(st) && batch[k].second >= 0) {
        LeaseCond(batch[k].second, false, "Refused", std::string(st.message()));
      }
    }
    Take({std::move(o->state), std::move(o->actions)});
    return res;
  }

  // Lease ID -> position in s_.leases, valid until s_ changes (the keys
  // view the IDs in s_).
  using PositionMap = absl::flat_hash_map<absl::string_view, size_t>;
  PositionMap Positions() const {
    PositionMap pos;
    pos.reserve(s_.leases.size());
    for (size_t i = 0; i < s_.leases.size(); ++i) pos[s_.leases[i].id] = i;
    return pos;
  }
  const lease::Lease* FindIn(const PositionMap& pos,
                             const std::string& id) const {
    auto it = pos.find(id);
    return it == pos.end() ? nullptr : &s_.leases[it->second];
  }

  // What the agents said about `d` (World::channel_answers), by reference.
  struct Answers {
    const std::string& released_recall_id;
    const std::string& fenced_recall_id;
    bool revocation_acknowledged;
  };
  Answers AnswersOf(const DaxLease& d) const {
    if (w_.channel_answers == nullptr) {
      return {d.status.released_recall_id, d.status.fenced_recall_id,
              d.status.revocation_acknowledged};
    }
    static const AgentAnswers kNone;
    auto it = w_.channel_answers->find(d.metadata.name);
    const AgentAnswers& a =
        it == w_.channel_answers->end() ? kNone : it->second;
    return {a.released_recall_id, a.fenced_recall_id,
            a.revocation_acked_epoch != 0 &&
                a.revocation_acked_epoch == d.status.epoch};
  }

  // Each event concerns only its own lease, so all of them are computed from
  // the state as built and applied as one batch.
  void ApplyAgentSignals() {
    const auto pos = Positions();
    std::vector<std::pair<lease::Event, int>> batch;
    std::vector<std::pair<size_t, size_t>> requested;  // (batch, World) index
    for (size_t i = 0; i < w_.leases.size(); ++i) {
      const DaxLease& d = w_.leases[i];
      int idx = static_cast<int>(i);
      if (!d.status.state.has_value()) {
        if (d.metadata.deletion_timestamp.has_value()) continue;
        lease::Request req;
        req.lease_id = d.metadata.name;
        req.holder_node = d.spec.holder_node;
        req.holder_pod = d.spec.holder_pod;
        req.access = d.spec.access == api::Access::kReadOnly
                         ? lease::Access::kReadOnly
                         : lease::Access::kReadWrite;
        requested.emplace_back(batch.size(), i);
        batch.emplace_back(std::move(req), idx);
        continue;
      }
      const lease::Lease* l = FindIn(pos, d.metadata.name);
      if (l == nullptr) continue;
      const Answers a = AnswersOf(d);
      if (l->state == lease::LeaseState::kRecalling && !l->fencing() &&
          !a.released_recall_id.empty() &&
          a.released_recall_id == l->recall_id) {
        batch.emplace_back(
            lease::HolderAck{l->id, l->recall_id, l->epoch, true}, idx);
      } else if (l->fencing() && !a.fenced_recall_id.empty() &&
                 a.fenced_recall_id == l->recall_id) {
        batch.emplace_back(lease::FenceConfirmed{l->id, l->epoch}, idx);
      } else if (l->state == lease::LeaseState::kRevoked &&
                 a.revocation_acknowledged) {
        batch.emplace_back(lease::RevocationAck{l->id, l->epoch}, idx);
      }
    }
    std::vector<absl::Status> res = ApplyBatch(batch);
    for (const auto& [k, i] : requested) {
      if (!res[k].ok()) continue;
      const DaxLease& d = w_.leases[i];
      index_[d.metadata.name] = i;
      EditLease(i, [&](DaxLease& out) {
        out.status.bound_to = api::LeaseBinding{
            d.spec.volume, d.spec.holder_node, d.spec.holder_pod};
      });
    }
  }

  void ForgetDeletedLeases() {
    if (std::none_of(w_.leases.begin(), w_.leases.end(), [](const DaxLease& d) {
          return d.metadata.deletion_timestamp.has_value();
        })) {
      return;
    }
    const auto pos = Positions();
    std::vector<std::pair<lease::Event, int>> batch;
    for (size_t i = 0; i < w_.leases.size(); ++i) {
      const DaxLease& d = w_.leases[i];
      if (!d.metadata.deletion_timestamp.has_value()) continue;
      const lease::Lease* l = FindIn(pos, d.metadata.name);
      if (l != nullptr && l->holds_access()) {
        if (l->fencing()) {
          deletion_blocked_.insert(l->id);  // said in WriteLeases
        } else {
          // The holder's agent deletes its lease at unpublish, once its
          // clients have flushed and dropped their mappings: a release
          // (docs/operator.md, "Voluntary release"). Written Released in
          // this pass, so the owner sees it and cuts the grant; forgotten
          // (finalizer removed) in the next.
          batch.emplace_back(lease::Release{l->id, l->epoch},
                             static_cast<int>(i));
          released_by_delete_.insert(l->id);
        }
        continue;
      }
      if (l != nullptr) {
        batch.emplace_back(lease::Forget{l->id}, static_cast<int>(i));
      }
      EditLease(i, [](DaxLease& out) {
        RemoveFinalizer(out.metadata, api::kLeaseFinalizer);
      });
    }
    ApplyBatch(batch);
  }

  // A running recall whose DaxRecall is being deleted is cancelled, which
  // finishes it now (lib/lease's CancelRecall: leases that have not acked
  // are revoked and fenced); its finalizer goes once it is Complete.
  void CancelDeletedRecall() {
    if (running_ < 0 || !s_.recall.has_value()) return;
    const DaxRecall& r = w_.recalls[running_];
    if (!r.metadata.deletion_timestamp.has_value()) return;
    Apply(lease::CancelRecall{s_.recall->id});
  }

  // For a Migrate recall whose DaxMigration is gone or finished: why it
  // must not start ("" otherwise).
  std::string MigrationGoneFor(const DaxRecall& r) const {
    if (r.spec.reason != api::RecallReason::kMigrate) return "";
    auto l = r.metadata.labels.find(api::kMigrationLabel);
    if (l == r.metadata.labels.end()) return "";
    for (const api::DaxMigration& m : w_.migrations) {
      if (api::LabelValueFor(m.metadata.name) != l->second) continue;
      if (!lease::MigrationFinished(PhaseOf(m))) return "";
      return absl::StrCat("DaxMigration ", m.metadata.name, " is ",
                          api::EnumName(*m.status.phase));
    }
    return absl::StrCat("DaxMigration ", l->second, " no longer exists");
  }

  void StartNextRecall() {
    // Recalls in creation order; only one runs at a time.
    std::vector<size_t> order;
    for (size_t i = 0; i < w_.recalls.size(); ++i) {
      const DaxRecall& r = w_.recalls[i];
      if (RecallFinished(r) || static_cast<int>(i) == running_) continue;
      order.push_back(i);
    }
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      const auto& ma = w_.recalls[a].metadata;
      const auto& mb = w_.recalls[b].metadata;
      return std::tie(ma.creation_timestamp, ma.name) <
             std::tie(mb.creation_timestamp, mb.name);
    });
    for (size_t i : order) {
      DaxRecall& r = plan_.desired.recalls[i];
      if (!r.status.phase.has_value())
        r.status.phase = api::RecallPhase::kPending;
      if (r.metadata.deletion_timestamp.has_value()) {
        RemoveFinalizer(r.metadata, kRecallFinalizer);
        continue;
      }
      if (const std::string gone = MigrationGoneFor(r); !gone.empty()) {
        // Nothing would end it: the change it was for will not come.
        r.status.phase = api::RecallPhase::kFailed;
        RecallCond(r, false, "MigrationFinished", gone);
        ReleaseFailedRecall(r);
        continue;
      }
      if (s_.phase != lease::VolumePhase::kReady) {
        std::string why =
            s_.recall.has_value()
                ? absl::StrCat("waiting for recall ", s_.recall->id,
                               " of volume ", w_.volume_name, " (",
                               lease::Name(s_.phase), ")")
                : absl::StrCat("volume is ", lease::Name(s_.phase));
        RecallCond(r, false, "WaitingForVolume", why);
        continue;
      }
      lease::StartRecall start;
      start.recall_id =
          r.metadata.uid.empty() ? r.metadata.name : r.metadata.uid;
      auto reason = lease::ParseRecallReason(api::EnumName(r.spec.reason));
      start.reason = reason.ok() ? *reason : lease::RecallReason::kManual;
      start.grace = GraceOf(&r);
      s_.config.max_recall = std::max(s_.config.max_recall, start.grace);
      absl::StatusOr<lease::Outcome> o = lease::Apply(s_, start, now_);
      if (!o.ok()) {
        RecallCond(r, false, "Refused", std::string(o.status().message()));
        continue;
      }
      Take(*std::move(o));
      r.status.phase = api::RecallPhase::kRecalling;
      r.status.recall_id = start.recall_id;
      r.status.epoch = static_cast<int64_t>(s_.epoch);
      r.status.started_at = now_;
      r.status.deadline = now_ + start.grace;
      AddFinalizer(r.metadata, kRecallFinalizer);
    }
  }

  void StepAndResume() {
    absl::StatusOr<lease::Outcome> o = lease::Step(s_, now_);
    if (o.ok()) Take(*std::move(o));
    // A recall that changes nothing is over once quiesced: back to Ready at
    // the next epoch. Snapshot recalls stay Quiesced for the copy,
    // Reshape/Migrate recalls for the change that asked for them
    // (lease::WhatEndsRecall).
    if (s_.phase == lease::VolumePhase::kQuiesced && s_.recall.has_value()) {
      completed_id_ = s_.recall->id;
      if (lease::WhatEndsRecall(s_.recall->reason) ==
          lease::QuiescedUntil::kResume) {
        Apply(lease::Resume{});
      }
    }
    FinishSnapshot();
    FinishReshape();
  }

  // The DaxRecall name of the running recall (its ID when the object is
  // gone): what the owner agent's annotations name.
  std::string RunningRecallName() {
    const int idx = FindRecallById(s_.recall->id);
    return idx >= 0 ? w_.recalls[idx].metadata.name : s_.recall->id;
  }

  // A Snapshot recall's copy is taken once the owner agent says so on the
  // volume (api::kSnapshottedAnnotation = that recall's name): Ready at the
  // next epoch; holders are granted again in the next pass.
  void FinishSnapshot() {
    if (!s_.recall.has_value() || s_.phase != lease::VolumePhase::kQuiesced ||
        lease::WhatEndsRecall(s_.recall->reason) !=
            lease::QuiescedUntil::kAfterCopy) {
      return;
    }
    const auto& ann = w_.volume->metadata.annotations;
    auto it = ann.find(api::kSnapshottedAnnotation);
    if (it == ann.end() || it->second != RunningRecallName()) return;
    Apply(lease::Resume{});
  }

  // A Reshape recall's change is done once the owner agent says so on the
  // volume (api::kReshapedAnnotation = that recall's name: the data grew and
  // is mapped again): Reshaping, then Ready at the next epoch, with the new
  // capacity. Holders are granted again in the next pass.
  void FinishReshape() {
    if (!s_.recall.has_value() ||
        s_.recall->reason != lease::RecallReason::kReshape ||
        (s_.phase != lease::VolumePhase::kQuiesced &&
         s_.phase != lease::VolumePhase::kReshaping)) {
      return;
    }
    const auto& ann = w_.volume->metadata.annotations;
    auto it = ann.find(api::kReshapedAnnotation);
    if (it == ann.end() || it->second != RunningRecallName()) return;
    if (s_.phase == lease::VolumePhase::kQuiesced) {
      Apply(lease::BeginChange{lease::ChangeKind::kReshape});
    }
    if (Apply(lease::ChangeDone{})) {
      Vol().status.capacity_bytes = w_.volume->spec.size_bytes;
    }
  }

  static lease::MigrationPhase PhaseOf(const api::DaxMigration& m) {
    switch (m.status.phase.value_or(api::MigrationPhase::kPending)) {
      case api::MigrationPhase::kPending:
        return lease::MigrationPhase::kPending;
      case api::MigrationPhase::kPreCopying:
        return lease::MigrationPhase::kPreCopying;
      case api::MigrationPhase::kRecalling:
        return lease::MigrationPhase::kRecalling;
      case api::MigrationPhase::kCopying:
        return lease::MigrationPhase::kCopying;
      case api::MigrationPhase::kSwitching:
        return lease::MigrationPhase::kSwitching;
      case api::MigrationPhase::kComplete:
        return lease::MigrationPhase::kComplete;
      case api::MigrationPhase::kFailed:
        return lease::MigrationPhase::kFailed;
    }
    return lease::MigrationPhase::kPending;
  }

  static lease::Migration MigrationFromCrd(const api::DaxMigration& d) {
    lease::Migration m;
    m.id = d.metadata.name;
    m.target_node = d.spec.target_node;
    m.phase = PhaseOf(d);
    m.source_node = d.status.source_node;
    m.recall = d.status.recall;
    m.epoch = static_cast<uint64_t>(std::max<int64_t>(d.status.epoch, 0));
    m.bytes_total =
        static_cast<uint64_t>(std::max<int64_t>(d.status.bytes_total, 0));
    m.bytes_copied =
        static_cast<uint64_t>(std::max<int64_t>(d.status.bytes_copied, 0));
    m.source_checksum = d.status.source_checksum;
    m.target_checksum = d.status.target_checksum;
    m.target_failure = d.status.target_failure;
    m.last_progress =
        d.status.last_progress_time.value_or(absl::InfinitePast());
    m.target_started = !d.status.target_endpoint.empty();
    m.pre_copied_bytes =
        static_cast<uint64_t>(std::max<int64_t>(d.status.pre_copied_bytes, 0));
    m.pre_copy_failure = d.status.pre_copy_failure;
    m.started = d.status.started_at.value_or(absl::InfinitePast());
    m.source_media_freed = d.status.source_media_freed;
    m.target_media_freed = d.status.target_media_freed;
    m.deleting = d.metadata.deletion_timestamp.has_value();
    return m;
  }

  // Each DaxMigration of the volume, oldest first, takes one step of
  // lib/lease's migration protocol; the volume events it asks for are
  // applied to s_ here, so the leases and the volume written after carry
  // them (the migrations are written before the volume).
  void StepMigrations() {
    std::vector<size_t> order(w_.migrations.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      const auto& ma = w_.migrations[a].metadata;
      const auto& mb = w_.migrations[b].metadata;
      return std::tie(ma.creation_timestamp, ma.name) <
             std::tie(mb.creation_timestamp, mb.name);
    });
    bool earlier_running = false;
    for (size_t i : order) {
      api::DaxMigration& d = plan_.desired.migrations[i];
      const lease::Migration m = MigrationFromCrd(w_.migrations[i]);
      if (!m.deleting && !lease::MigrationFinished(m.phase) &&
          !HasFinalizer(d.metadata, kMigrationFinalizer)) {
        // Stored before the first step: a deletion from then on is seen
        // (and finished or rolled back) rather than leaving its recall.
        AddFinalizer(d.metadata, kMigrationFinalizer);
        plan_.requeue_at = now_;
        earlier_running = true;
        continue;
      }
      lease::MigrationView view;
      if (w_.volume.has_value()) {
        const auto vphase = w_.volume->status.phase;
        if (vphase == api::VolumePhase::kCreating ||
            vphase == api::VolumePhase::kFailed) {
          // The volume is not served: nothing moves, and nothing started.
          if (m.deleting && m.phase == lease::MigrationPhase::kPending) {
            RemoveFinalizer(d.metadata, kMigrationFinalizer);
          }
          continue;
        }
        view.volume = &s_;
        if (s_.recall.has_value()) {
          const int idx = FindRecallById(s_.recall->id);
          if (idx >= 0) {
            const DaxRecall& r = w_.recalls[idx];
            view.recall_name = r.metadata.name;
            auto l = r.metadata.labels.find(api::kMigrationLabel);
            if (l != r.metadata.labels.end()) {
              // The label stands for this migration's name, or another's.
              view.recall_for =
                  l->second == api::LabelValueFor(m.id) ? m.id : l->second;
            }
          } else {
            view.recall_name = s_.recall->id;
          }
        }
      }
      view.earlier_running = earlier_running;
      lease::MigrationStep st =
          lease::StepMigration(m, view, now_, opts_.migration);
      earlier_running |= !lease::MigrationFinished(st.migration.phase);
      if (st.volume_event.has_value() && view.volume != nullptr) {
        const auto* done = std::get_if<lease::ChangeDone>(&*st.volume_event);
        if (Apply(*st.volume_event) && done != nullptr &&
            !done->owner_node.empty()) {
          switched_endpoint_ = w_.migrations[i].status.target_endpoint;
        }
      }
      if (!st.create_recall.empty() && FindRecallByName(st.create_recall) < 0 &&
          w_.volume.has_value()) {
        DaxRecall r;
        r.metadata.name = st.create_recall;
        // Created with its finalizer: its start is then one status write.
        r.metadata.finalizers = {kRecallFinalizer};
        r.metadata.labels[api::kMigrationLabel] = api::LabelValueFor(m.id);
        r.metadata.labels[api::kVolumeLabel] =
            api::LabelValueFor(w_.volume_name);
        r.spec.volume = w_.volume_name;
        r.spec.reason = api::RecallReason::kMigrate;
        plan_.create_recalls.push_back(std::move(r));
      }
      WriteMigration(d, st);
      if (st.forget) RemoveFinalizer(d.metadata, kMigrationFinalizer);
      plan_.requeue_at = std::min(plan_.requeue_at, st.recheck_at);
    }
  }

  void WriteMigration(api::DaxMigration& d, const lease::MigrationStep& st) {
    const lease::Migration& m = st.migration;
    auto phase = api::ParseEnum<api::MigrationPhase>(lease::Name(m.phase));
    if (phase.ok()) d.status.phase = *phase;
    d.status.source_node = m.source_node;
    d.status.recall = m.recall;
    d.status.epoch = static_cast<int64_t>(m.epoch);
    if (m.last_progress != absl::InfinitePast() &&
        (!d.status.last_progress_time.has_value() ||
         *d.status.last_progress_time < m.last_progress)) {
      d.status.last_progress_time = m.last_progress;
    }
    if (!d.status.started_at.has_value() &&
        m.phase != lease::MigrationPhase::kPending) {
      d.status.started_at = now_;
    }
    const bool finished = lease::MigrationFinished(m.phase);
    if (finished && !d.status.completed_at.has_value()) {
      d.status.completed_at = now_;
    }
    if (st.condition.empty()) return;  // Failed before: keep what it says
    if (!finished) {
      SetCond(d.status.conditions, d.metadata, kMigrationProgressingCondition,
              true, st.reason, st.message);
      return;
    }
    SetCond(d.status.conditions, d.metadata, kMigrationProgressingCondition,
            false,
            m.phase == lease::MigrationPhase::kComplete ? "Complete" : "Failed",
            st.message);
    SetCond(d.status.conditions, d.metadata,
            m.phase == lease::MigrationPhase::kComplete
                ? kMigrationSucceededCondition
                : kMigrationFailedCondition,
            true, st.reason, st.message);
  }

  // Grants change no other lease and not the phase, so every Pending lease's
  // Grant goes in one batch; lib/lease decides who may be granted. Never in
  // a pass that moved the epoch: leases are written before the volume, so a
  // lease granted at e+1 could be stored while the volume is still at e (a
  // crash or a 409 between the writes), a state no later pass can read. That
  // pass asks for another at once, which reads the volume at e+1 and grants.
  void GrantPending() {
    if (deleting_) {
      for (const lease::Lease& l : s_.leases) {
        if (l.state != lease::LeaseState::kPending) continue;
        LeaseCond(index_.at(l.id), false, "VolumeDeleting",
                  absl::StrCat("volume ", w_.volume_name,
                               " is being deleted; no lease is granted"));
      }
      return;
    }
    if (s_.epoch != initial_epoch_) {
      plan_.requeue_at = now_;
      for (const lease::Lease& l : s_.leases) {
        if (l.state != lease::LeaseState::kPending) continue;
        LeaseCond(index_.at(l.id), false, "VolumeNotReady",
                  absl::StrCat("volume ", w_.volume_name,
                               " is Ready again at epoch ", s_.epoch,
                               "; the lease is granted once that is stored"));
      }
      return;
    }
    std::vector<std::pair<lease::Event, int>> batch;
    for (const lease::Lease& l : s_.leases) {
      if (l.state != lease::LeaseState::kPending) continue;
      batch.emplace_back(lease::Grant{l.id}, static_cast<int>(index_.at(l.id)));
    }
    std::vector<absl::Status> res = ApplyBatch(batch);
    for (size_t k = 0; k < batch.size(); ++k) {
      if (absl::IsPermissionDenied(res[k])) {  // lease::MayGrant's share rule
        LeaseCond(batch[k].second, false, "NotShared",
                  std::string(res[k].message()));
      } else if (absl::IsUnavailable(res[k])) {
        LeaseCond(
            batch[k].second, false,
            s_.phase == lease::VolumePhase::kRecalling ? "RecallInProgress"
                                                       : "VolumeNotReady",
            absl::StrCat("volume ", w_.volume_name, " is ",
                         lease::Name(s_.phase),
                         s_.recall.has_value()
                             ? absl::StrCat(" (recall ", s_.recall->id, ")")
                             : "",
                         "; the lease is granted when it is Ready"));
      }
    }
  }

  void WriteLeases() {
    for (const lease::Lease& l : s_.leases) {
      auto it = index_.find(l.id);
      if (it == index_.end()) continue;
      EditLease(it->second, [&](DaxLease& d) { WriteLease(l, d); });
    }
  }

  // `d` as lib/lease left `l`.
  void WriteLease(const lease::Lease& l, DaxLease& d) {
    auto state = CrdState(l);
    if (!state.ok()) return;
    d.status.state = *state;
    d.status.epoch = static_cast<int64_t>(l.epoch);
    d.status.recall_id = l.recall_id;
    d.status.reason = std::string(lease::Name(l.reason));
    d.status.fence_required = l.fencing();
    if (l.state == lease::LeaseState::kRecalling) {
      d.status.deadline = l.deadline;
    } else if (l.state == lease::LeaseState::kGranted ||
               l.state == lease::LeaseState::kPending) {
      d.status.deadline.reset();
    }
    if (l.holds_access()) AddFinalizer(d.metadata, api::kLeaseFinalizer);
    const std::string until = d.status.deadline.has_value()
                                  ? api::FormatWireTime(*d.status.deadline)
                                  : "";
    switch (l.state) {
      case lease::LeaseState::kPending:
        break;  // GrantPending said why
      case lease::LeaseState::kGranted:
        LeaseCond(d, true, "Granted",
                  absl::StrCat("granted at epoch ", l.epoch));
        break;
      case lease::LeaseState::kRecalling:
        if (l.fencing()) {
          LeaseCond(
              d, false, std::string(lease::Name(l.reason)),
              absl::StrCat("revoked (recall ", l.recall_id,
                           "); waiting for owner node ",
                           w_.volume->spec.owner_node, " to fence the holder"));
        } else {
          LeaseCond(d, false, "Recalling",
                    absl::StrCat("recall ", l.recall_id,
                                 ": flush, unmap and release by ", until));
        }
        break;
      case lease::LeaseState::kReleased:
        LeaseCond(d, false, "Released",
                  released_by_delete_.contains(l.id)
                      ? "released by the holder (lease deleted)"
                  : l.reason == lease::RevokeReason::kNone
                      ? "released by the holder"
                      : absl::StrCat("revocation (", lease::Name(l.reason),
                                     ") acknowledged by the holder"));
        break;
      case lease::LeaseState::kRevoked:
        LeaseCond(d, false, std::string(lease::Name(l.reason)),
                  "revoked and fenced; the holder must acknowledge before "
                  "it requests again");
        break;
    }
    if (auto c = spec_changed_.find(l.id); c != spec_changed_.end()) {
      LeaseCond(d, false, "SpecChanged", c->second);
    }
    if (deletion_blocked_.contains(l.id) && l.holds_access()) {
      LeaseCond(d, false, "DeletionBlocked",
                absl::StrCat("lease is ", CrdStateName(l),
                             "; it is kept until the holder releases it or "
                             "is revoked and fenced"));
    }
  }

  void CountRecall(DaxRecall& r, const std::string& id) {
    r.status.released = r.status.revoked = r.status.outstanding = 0;
    for (const lease::Lease& l : s_.leases) {
      if (l.recall_id != id) continue;
      if (l.state == lease::LeaseState::kReleased &&
          l.reason == lease::RevokeReason::kNone) {
        ++r.status.released;
      } else if (l.state == lease::LeaseState::kRevoked || l.fencing() ||
                 l.state == lease::LeaseState::kReleased) {
        ++r.status.revoked;
      } else if (l.state == lease::LeaseState::kRecalling) {
        ++r.status.outstanding;
      }
    }
  }

  // The recall's record of its revokes (api::DaxRecallStatus): every lease
  // of recall `id` whose revoke is decided goes on revokedLeases, once
  // fenced on fencedLeases too; nothing recorded is ever dropped. A revoke
  // beyond kRecallRecordBytes is written on its lease object instead, with
  // the recall's write (Plan::durable_leases).
  void RecordRevokes(DaxRecall& r, const std::string& id) {
    std::set<std::string> revoked(r.status.revoked_leases.begin(),
                                  r.status.revoked_leases.end());
    std::set<std::string> fenced(r.status.fenced_leases.begin(),
                                 r.status.fenced_leases.end());
    size_t bytes = 0;
    for (const std::string& n : revoked) bytes += n.size() + 3;
    for (const lease::Lease& l : s_.leases) {
      if (l.recall_id != id) continue;
      const bool decided = l.fencing() ||
                           l.state == lease::LeaseState::kRevoked ||
                           (l.state == lease::LeaseState::kReleased &&
                            l.reason != lease::RevokeReason::kNone);
      if (!decided) continue;
      if (!revoked.contains(l.id)) {
        if (bytes + l.id.size() + 3 > kRecallRecordBytes) {
          plan_.durable_leases.insert(l.id);
          continue;
        }
        revoked.insert(l.id);
        bytes += l.id.size() + 3;
      }
      if (!l.fencing()) fenced.insert(l.id);
    }
    r.status.revoked_leases.assign(revoked.begin(), revoked.end());
    r.status.fenced_leases.assign(fenced.begin(), fenced.end());
  }

  void WriteRecalls() {
    for (size_t i = 0; i < plan_.desired.recalls.size(); ++i) {
      DaxRecall& r = plan_.desired.recalls[i];
      ReleaseFailedRecall(r);
      if (r.status.phase == api::RecallPhase::kComplete &&
          HasFinalizer(r.metadata, kRecallFinalizer) &&
          w_.display_pending.empty() && !read_through_.contains(i)) {
        // Every lease object it recalled shows its outcome now.
        RemoveFinalizer(r.metadata, kRecallFinalizer);
      }
      if (r.status.phase != api::RecallPhase::kRecalling) continue;
      const std::string& id = r.status.recall_id;
      CountRecall(r, id);
      RecordRevokes(r, id);
      if (id == completed_id_) {
        r.status.phase = api::RecallPhase::kComplete;
        r.status.completed_at = now_;
        if (r.status.started_at.has_value()) {
          plan_.recall_durations.push_back(now_ - *r.status.started_at);
        }
        r.status.outstanding = 0;
        // The record outlives the lease objects' lag: the finalizer goes in
        // a later pass that finds every lease object showing its outcome
        // (above; the lease writes of this pass come after the recall's).
        RecallCond(r, true, r.status.revoked > 0 ? "Fenced" : "AllReleased",
                   absl::StrCat(
                       r.status.released, " released, ", r.status.revoked,
                       " revoked and fenced; volume epoch is now ", s_.epoch));
      } else {
        int fencing = 0;
        for (const lease::Lease& l : s_.leases) {
          if (l.recall_id == id && l.fencing()) ++fencing;
        }
        RecallCond(
            r, false,
            r.status.outstanding > 0 ? "WaitingForHolders" : "WaitingForFence",
            absl::StrCat(r.status.outstanding, " lease(s) not yet released, ",
                         fencing, " waiting for the owner's fence"));
      }
    }
  }

  void WriteVolume() {
    DaxVolume& v = Vol();
    if (v.spec.owner_node != s_.owner_node) {
      // A migration moved the owner (lib/lease's ChangeDone): the target's
      // endpoint goes with it, in the same write as the owner.
      v.spec.owner_node = s_.owner_node;
      if (!switched_endpoint_.empty()) {
        v.metadata.annotations[api::kFabricEndpointAnnotation] =
            switched_endpoint_;
      }
    }
    auto phase = api::ParseEnum<api::VolumePhase>(lease::Name(s_.phase));
    if (phase.ok()) v.status.phase = *phase;
    v.status.epoch = static_cast<int64_t>(s_.epoch);
    int32_t holders = 0;
    for (const lease::Lease& l : s_.leases) holders += l.holds_access() ? 1 : 0;
    v.status.holders = holders;
    v.status.active_recall.clear();
    if (s_.recall.has_value()) {
      int idx = FindRecallById(s_.recall->id);
      v.status.active_recall =
          idx >= 0 ? w_.recalls[idx].metadata.name : s_.recall->id;
    }
    if (s_.phase == lease::VolumePhase::kReady) {
      SetCond(v.status.conditions, v.metadata, kVolumeReadyCondition, true,
              "Ready", absl::StrCat("grants at epoch ", s_.epoch));
    } else {
      SetCond(v.status.conditions, v.metadata, kVolumeReadyCondition, false,
              std::string(lease::Name(s_.phase)),
              absl::StrCat("recall ", v.status.active_recall, " ",
                           s_.phase == lease::VolumePhase::kRecalling
                               ? "in progress"
                               : "complete; waiting for the volume change"));
    }
    if (!spec_changed_.empty()) {
      std::string names;
      for (const auto& [name, msg] : spec_changed_) {
        absl::StrAppend(&names, names.empty() ? "" : ", ", "DaxLease/", name);
      }
      const std::string msg = absl::StrCat(
          names,
          ": spec.volume/holderNode/holderPod changed after the lease was "
          "accepted; the change is refused (the operator keeps acting on "
          "status.boundTo): restore the spec or create a new DaxLease");
      SetCond(v.status.conditions, v.metadata, kVolumeReadyCondition, false,
              "InvalidState", msg);
    }
  }

  // The volume finalizer: on while the volume lives; on deletion it goes
  // only when no lease of the volume holds access as stored after this pass
  // (Granted, Recalling, or Revoked and not yet fenced) and every object of
  // the volume could be read (`readable`), and only after the epoch is
  // recorded as the name's high-water mark (Plan::raise_epoch_high_water,
  // written before the volume).
  void ProtectVolume(bool readable) {
    DaxVolume& v = Vol();
    if (!v.metadata.deletion_timestamp.has_value()) {
      AddFinalizer(v.metadata, api::kVolumeFinalizer);
      return;
    }
    if (!HasFinalizer(v.metadata, api::kVolumeFinalizer)) return;
    std::vector<std::string> holding;
    for (const DaxLease& l : plan_.desired.leases) {
      const auto st = l.status.state;
      if (st == api::LeaseState::kGranted ||
          st == api::LeaseState::kRecalling ||
          (st == api::LeaseState::kRevoked && l.status.fence_required)) {
        holding.push_back(l.metadata.name);
      }
    }
    if (!readable) return;  // InvalidState says why
    if (!holding.empty()) {
      std::string names;
      for (size_t i = 0; i < holding.size() && i < 5; ++i) {
        absl::StrAppend(&names, i > 0 ? ", " : "", holding[i]);
      }
      SetCond(v.status.conditions, v.metadata, kVolumeReadyCondition, false,
              "DeletionBlocked",
              absl::StrCat(holding.size(), " lease(s) hold access (", names,
                           holding.size() > 5 ? ", ..." : "",
                           "); the volume goes once they are released or "
                           "revoked and fenced"));
      return;
    }
    RemoveFinalizer(v.metadata, api::kVolumeFinalizer);
    if (v.status.epoch >= 1) plan_.raise_epoch_high_water = v.status.epoch;
  }

  void EmitTransitionEvents() {
    const World& d = plan_.desired;
    // One event per lease transition; when a pass moves many leases the same
    // way, or moves leases of a recall of many (a recall of hundreds whose
    // acks come over a few passes), one summary event on the volume instead,
    // as the API server's own event aggregation would: a recall's events
    // cost a few writes, not one per lease.
    std::set<std::string> large_recalls;
    for (const DaxRecall& r : d.recalls) {
      if (r.status.recall_id.empty()) continue;
      const int64_t recalled =
          int64_t{r.status.released} + r.status.revoked + r.status.outstanding;
      if (recalled > static_cast<int64_t>(kMaxLeaseEvents)) {
        large_recalls.insert(r.status.recall_id);
      }
    }
    std::map<std::string, std::vector<size_t>> by_state;
    for (size_t i = 0; i < w_.leases.size(); ++i) {
      const DaxLease& b = d.leases[i];
      // A lease read through its recall's record was already in the state
      // the record gives it (its event came with the record's write): only
      // its object lags.
      auto read = read_as_.find(i);
      const std::optional<api::LeaseState> a =
          read != read_as_.end() ? read->second : w_.leases[i]->status.state;
      if (a == b.status.state || !b.status.state.has_value()) continue;
      by_state[api::EnumName(*b.status.state)].push_back(i);
    }
    for (const auto& [state, idx] : by_state) {
      const bool warn = state == "Revoked";
      const bool recall_state =
          state == "Recalling" || state == "Released" || state == "Revoked";
      std::vector<size_t> summed;
      std::vector<size_t> single;
      for (size_t i : idx) {
        const bool of_large_recall =
            recall_state &&
            large_recalls.contains(d.leases[i]->status.recall_id);
        if (d.volume.has_value() &&
            (idx.size() > kMaxLeaseEvents || of_large_recall)) {
          summed.push_back(i);
        } else {
          single.push_back(i);
        }
      }
      if (!summed.empty()) {
        std::string names;
        for (size_t k = 0; k < summed.size() && k < 5; ++k) {
          absl::StrAppend(&names, k > 0 ? ", " : "",
                          d.leases[summed[k]]->metadata.name);
        }
        plan_.events.push_back(
            {"DaxVolume", d.volume->metadata.name, d.volume->metadata.uid, warn,
             absl::StrCat("Leases", state),
             absl::StrCat(
                 summed.size(),
                 summed.size() == 1 ? " lease is now " : " leases are now ",
                 state, " (", names, summed.size() > 5 ? ", ..." : "", ")")});
      }
      for (size_t i : single) {
        const DaxLease& b = d.leases[i];
        const api::Condition* c =
            api::FindCondition(b.status.conditions, kLeaseGrantedCondition);
        plan_.events.push_back({"DaxLease", b.metadata.name, b.metadata.uid,
                                warn, state, c ? c->message : ""});
      }
    }
    for (size_t i = 0; i < w_.recalls.size(); ++i) {
      const DaxRecall& a = w_.recalls[i];
      const DaxRecall& b = d.recalls[i];
      if (a.status.phase == b.status.phase || !b.status.phase.has_value()) {
        continue;
      }
      const api::Condition* c =
          api::FindCondition(b.status.conditions, kRecallCompleteCondition);
      plan_.events.push_back({"DaxRecall", b.metadata.name, b.metadata.uid,
                              false, api::EnumName(*b.status.phase),
                              c ? c->message : ""});
    }
    if (w_.volume.has_value() &&
        (w_.volume->status.phase != d.volume->status.phase ||
         w_.volume->status.epoch != d.volume->status.epoch) &&
        d.volume->status.phase.has_value()) {
      plan_.events.push_back(
          {"DaxVolume", d.volume->metadata.name, d.volume->metadata.uid, false,
           api::EnumName(*d.volume->status.phase),
           absl::StrCat("phase ", api::EnumName(*d.volume->status.phase),
                        ", epoch ", d.volume->status.epoch)});
    }
  }

  const World& w_;
  const absl::Time now_;
  const PlanOptions opts_;
  Plan plan_;
  lease::VolumeState s_;
  // Lease -> World index; the keys view the names in w_, which outlives
  // the planner and is never edited (desired's leases are copied on edit).
  absl::flat_hash_map<absl::string_view, size_t> index_;
  int running_ = -1;                           // recall running when read
  std::map<int64_t, size_t> recall_at_epoch_;  // status.epoch -> recall
  std::map<size_t, int> read_through_;  // recall -> leases read through it
  // Lease index -> its state as read through a recall's record, where that
  // differs from what its object says.
  std::map<size_t, api::LeaseState> read_as_;
  uint64_t initial_epoch_ = 1;              // volume epoch when read
  std::string completed_id_;                // recall that completed
  std::set<std::string> deletion_blocked_;  // deleted leases holding access
  std::map<std::string, std::string> spec_changed_;  // lease -> message
  std::set<std::string> released_by_delete_;  // deleted while holding access
  absl::flat_hash_set<std::string> fencing_when_read_;  // revoke decided
  bool deleting_ = false;          // the volume is being deleted
  std::string switched_endpoint_;  // a migration's target endpoint
};

}  // namespace

api::DaxLease& SharedLease::Mutable() {
  if (p_.use_count() != 1) {
    p_ = std::make_shared<api::DaxLease>(std::as_const(*p_));
  } else {
    // The last other owner's reads of the lease (ended by its release of
    // the count, on any thread) happen before this handle's edits.
    std::atomic_thread_fence(std::memory_order_acquire);
  }
  return *p_;
}

Plan ComputePlan(const World& world, absl::Time now, const PlanOptions& opts) {
  return Planner(world, now, opts).Run();
}

}  // namespace daxlease::op
