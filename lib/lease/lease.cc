#include "lib/lease/lease.h"

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "lib/base/status.h"

namespace daxlease::lease {
namespace {

template <class... Ts>
struct Overloaded : Ts... {
  using Ts::operator()...;
};
template <class... Ts>
Overloaded(Ts...) -> Overloaded<Ts...>;

std::string Describe(const Lease& l) {
  return absl::StrCat("lease ", l.id, " (", Name(l.state),
                      l.fencing() ? ", fencing" : "", ")");
}

absl::Status NotFound(absl::string_view id) {
  return absl::NotFoundError(absl::StrCat("lease ", id, " not found"));
}

// Epoch of a holder message must be the epoch of the grant it answers.
absl::Status CheckMessageEpoch(const Lease& l, uint64_t epoch) {
  if (epoch != l.epoch) {
    return absl::FailedPreconditionError(
        absl::StrCat("stale epoch ", epoch, " for ", Describe(l),
                     " granted at epoch ", l.epoch));
  }
  return absl::OkStatus();
}

// Common refusals for HolderAck/Progress, which answer a running recall.
absl::Status CheckRecallAnswer(const VolumeState& s, const Lease& l,
                               absl::string_view recall_id, uint64_t epoch) {
  RETURN_IF_ERROR(CheckMessageEpoch(l, epoch));
  if (l.recall_id != recall_id || !s.recall.has_value() ||
      s.recall->id != recall_id) {
    return absl::FailedPreconditionError(
        absl::StrCat("stale recall ID ", recall_id, " for ", Describe(l),
                     " (answering recall '", l.recall_id, "')"));
  }
  if (l.state == LeaseState::kRevoked || l.fencing()) {
    return absl::FailedPreconditionError(
        absl::StrCat(Describe(l), " is being revoked (", Name(l.reason),
                     "); the answer came too late"));
  }
  if (l.state != LeaseState::kRecalling) {
    return absl::FailedPreconditionError(
        absl::StrCat(Describe(l), " is not being recalled"));
  }
  return absl::OkStatus();
}

absl::Time DeadlineFor(const Recall& r, absl::Time now) {
  return std::min(now + r.grace, r.cap);
}

absl::Status ValidateEvent(const Event& e) {
  return std::visit(
      Overloaded{
          [](const StartRecall& r) -> absl::Status {
            if (r.recall_id.empty()) {
              return absl::InvalidArgumentError("recall ID must not be empty");
            }
            if (r.grace < absl::ZeroDuration()) {
              return absl::InvalidArgumentError("recall grace is negative");
            }
            return absl::OkStatus();
          },
          [](const BeginChange&) { return absl::OkStatus(); },
          [](const ChangeDone&) { return absl::OkStatus(); },
          [](const Resume&) { return absl::OkStatus(); },
          [](const CancelRecall& c) -> absl::Status {
            if (c.recall_id.empty()) {
              return absl::InvalidArgumentError("recall ID must not be empty");
            }
            return absl::OkStatus();
          },
          [](const auto& ev) -> absl::Status {
            if (ev.lease_id.empty()) {
              return absl::InvalidArgumentError("lease ID must not be empty");
            }
            return absl::OkStatus();
          }},
      e);
}

// The MayGrant rule for a lease already looked up (`l` may be null).
absl::Status MayGrantLease(const VolumeState& s, const Lease* l,
                           absl::string_view lease_id) {
  if (l == nullptr) return NotFound(lease_id);
  if (l->state != LeaseState::kPending) {
    return absl::FailedPreconditionError(absl::StrCat(
        Describe(*l), " is not Pending; only a request is granted"));
  }
  if (!s.shared && l->holder_node != s.owner_node) {
    return absl::PermissionDeniedError(absl::StrCat(
        "volume ", s.volume, " is not shared (spec.share=false) and node ",
        l->holder_node, " is not its owner ", s.owner_node));
  }
  if (s.phase != VolumePhase::kReady) {
    return absl::UnavailableError(
        absl::StrCat("volume ", s.volume, " is ", Name(s.phase), " (recall ",
                     s.recall.has_value() ? s.recall->id : std::string("?"),
                     "); no grant until it is Ready again, retry later"));
  }
  return absl::OkStatus();
}

// Lookup structures ApplyAll keeps across the events of a batch, so that one
// event costs O(1) instead of O(leases): lease ID -> position, and the number
// of leases holding access (for "recall complete").
struct Index {
  absl::flat_hash_map<std::string, size_t> pos;
  size_t holders = 0;
  bool stale = true;  // pos must be rebuilt (a Forget moved leases)

  void Rebuild(const VolumeState& s) {
    pos.clear();
    pos.reserve(s.leases.size());
    for (size_t i = 0; i < s.leases.size(); ++i) pos[s.leases[i].id] = i;
    stale = false;
  }
};

// Applies one event to `s` in place, appending to `actions`. Every handler
// checks everything before it changes anything, so a refused event leaves
// `s` and `actions` as they were. With `index` (ApplyAll) lookups and the
// completion check use it, and it is kept up to date.
class Applier {
 public:
  Applier(VolumeState& s, std::vector<Action>& actions, absl::Time now,
          Index* index)
      : s_(s), actions_(actions), now_(now), index_(index) {}

  absl::Status operator()(const Request& r) {
    Lease* l = FindLease(r.lease_id);
    if (l == nullptr) {
      Lease n;
      n.id = r.lease_id;
      n.holder_node = r.holder_node;
      n.holder_pod = r.holder_pod;
      n.access = r.access;
      s_.leases.push_back(std::move(n));
      if (index_ != nullptr && !index_->stale) {
        index_->pos[r.lease_id] = s_.leases.size() - 1;
      }
      return absl::OkStatus();
    }
    if (l->holder_node != r.holder_node || l->holder_pod != r.holder_pod) {
      return absl::InvalidArgumentError(absl::StrCat(
          Describe(*l), " belongs to ", l->holder_node, "/", l->holder_pod,
          ", not ", r.holder_node, "/", r.holder_pod));
    }
    switch (l->state) {
      case LeaseState::kPending:
        l->access = r.access;
        return absl::OkStatus();
      case LeaseState::kReleased:
        SetState(*l, LeaseState::kPending);
        l->access = r.access;
        l->deadline = absl::InfiniteFuture();
        l->reason = RevokeReason::kNone;
        return absl::OkStatus();
      case LeaseState::kRevoked:
        return absl::FailedPreconditionError(absl::StrCat(
            Describe(*l), " was revoked (", Name(l->reason),
            "); acknowledge the revocation before requesting again"));
      case LeaseState::kGranted:
      case LeaseState::kRecalling:
        return absl::FailedPreconditionError(
            absl::StrCat(Describe(*l), " already holds access"));
    }
    return absl::InternalError("unreachable");
  }

  absl::Status operator()(const Grant& g) {
    const Lease* c = FindLease(g.lease_id);
    if (c != nullptr && c->state == LeaseState::kGranted &&
        c->epoch == s_.epoch) {
      return absl::OkStatus();  // duplicate
    }
    Lease* l = FindLease(g.lease_id);
    RETURN_IF_ERROR(MayGrantLease(s_, l, g.lease_id));
    SetState(*l, LeaseState::kGranted);
    l->epoch = s_.epoch;
    l->deadline = absl::InfiniteFuture();
    l->reason = RevokeReason::kNone;
    actions_.push_back({ActionKind::kNotifyGranted, l->id});
    return absl::OkStatus();
  }

  absl::Status operator()(const StartRecall& r) {
    VolumeState& s = s_;
    if (s.phase != VolumePhase::kReady) {
      if (s.recall->id == r.recall_id) return absl::OkStatus();  // duplicate
      return absl::FailedPreconditionError(absl::StrCat(
          "volume ", s.volume, " is ", Name(s.phase), " for recall ",
          s.recall->id, "; cannot start recall ", r.recall_id));
    }
    Recall rc;
    rc.id = r.recall_id;
    rc.reason = r.reason;
    rc.started_at = now_;
    rc.grace = r.grace == absl::ZeroDuration() ? s.config.grace : r.grace;
    rc.cap = now_ + std::max(s.config.max_recall, rc.grace);
    s.phase = VolumePhase::kRecalling;
    s.recall = rc;
    for (Lease& l : s.leases) {
      if (l.state != LeaseState::kGranted) continue;
      SetState(l, LeaseState::kRecalling);
      l.recall_id = rc.id;
      l.deadline = DeadlineFor(rc, now_);
      actions_.push_back({ActionKind::kNotifyRecall, l.id});
    }
    MaybeComplete();
    return absl::OkStatus();
  }

  absl::Status operator()(const HolderAck& a) {
    Lease* l = FindLease(a.lease_id);
    if (l == nullptr) return NotFound(a.lease_id);
    if (a.flushed && l->state == LeaseState::kReleased &&
        l->reason == RevokeReason::kNone && l->recall_id == a.recall_id &&
        l->epoch == a.epoch) {
      return absl::OkStatus();  // duplicate of an accepted ack
    }
    RETURN_IF_ERROR(CheckRecallAnswer(s_, *l, a.recall_id, a.epoch));
    if (a.flushed) {
      SetState(*l, LeaseState::kReleased);
      l->deadline = absl::InfiniteFuture();
      actions_.push_back({ActionKind::kReleased, l->id});
      MaybeComplete();
    } else {
      l->reason = RevokeReason::kNotFlushed;
      actions_.push_back({ActionKind::kFence, l->id});
    }
    return absl::OkStatus();
  }

  absl::Status operator()(const Progress& p) {
    Lease* l = FindLease(p.lease_id);
    if (l == nullptr) return NotFound(p.lease_id);
    RETURN_IF_ERROR(CheckRecallAnswer(s_, *l, p.recall_id, p.epoch));
    absl::Time want = std::min(now_ + s_.config.extension, s_.recall->cap);
    if (want > l->deadline) {
      l->deadline = want;
      actions_.push_back({ActionKind::kDeadlineExtended, l->id});
    }
    return absl::OkStatus();
  }

  absl::Status operator()(const FenceConfirmed& f) {
    Lease* l = FindLease(f.lease_id);
    if (l == nullptr) return NotFound(f.lease_id);
    RETURN_IF_ERROR(CheckMessageEpoch(*l, f.epoch));
    if (l->state == LeaseState::kRevoked) return absl::OkStatus();  // dup
    if (!l->fencing()) {
      return absl::FailedPreconditionError(
          absl::StrCat("fence confirmed for ", Describe(*l),
                       ", which is not being revoked"));
    }
    SetState(*l, LeaseState::kRevoked);
    l->deadline = absl::InfiniteFuture();
    actions_.push_back({ActionKind::kNotifyRevoked, l->id});
    MaybeComplete();
    return absl::OkStatus();
  }

  absl::Status operator()(const RevocationAck& r) {
    Lease* l = FindLease(r.lease_id);
    if (l == nullptr) return NotFound(r.lease_id);
    RETURN_IF_ERROR(CheckMessageEpoch(*l, r.epoch));
    if (l->state == LeaseState::kReleased && l->reason != RevokeReason::kNone) {
      return absl::OkStatus();  // duplicate
    }
    if (l->state != LeaseState::kRevoked) {
      return absl::FailedPreconditionError(absl::StrCat(
          "revocation ack for ", Describe(*l), ", which is not revoked"));
    }
    SetState(*l, LeaseState::kReleased);
    actions_.push_back({ActionKind::kReleased, l->id});
    return absl::OkStatus();
  }

  absl::Status operator()(const Release& r) {
    Lease* l = FindLease(r.lease_id);
    if (l == nullptr) return NotFound(r.lease_id);
    switch (l->state) {
      case LeaseState::kReleased:
        return absl::OkStatus();  // duplicate
      case LeaseState::kPending:
        break;
      case LeaseState::kRevoked:
        return absl::FailedPreconditionError(absl::StrCat(
            Describe(*l), " was revoked; acknowledge the revocation instead"));
      case LeaseState::kGranted:
      case LeaseState::kRecalling:
        RETURN_IF_ERROR(CheckMessageEpoch(*l, r.epoch));
        if (l->fencing()) {
          return absl::FailedPreconditionError(
              absl::StrCat(Describe(*l), " is being revoked (", Name(l->reason),
                           "); the release came too late"));
        }
        break;
    }
    SetState(*l, LeaseState::kReleased);
    l->deadline = absl::InfiniteFuture();
    l->reason = RevokeReason::kNone;
    actions_.push_back({ActionKind::kReleased, l->id});
    MaybeComplete();
    return absl::OkStatus();
  }

  absl::Status operator()(const BeginChange& b) {
    VolumeState& s = s_;
    if (s.phase != VolumePhase::kQuiesced) {
      return absl::FailedPreconditionError(
          absl::StrCat("volume ", s.volume, " is ", Name(s.phase),
                       "; a reshape or migration needs a Quiesced volume "
                       "(recall complete)"));
    }
    s.phase = b.kind == ChangeKind::kReshape ? VolumePhase::kReshaping
                                             : VolumePhase::kMigrating;
    return absl::OkStatus();
  }

  absl::Status operator()(const ChangeDone& d) {
    VolumeState& s = s_;
    if (s.phase != VolumePhase::kReshaping &&
        s.phase != VolumePhase::kMigrating) {
      return absl::FailedPreconditionError(
          absl::StrCat("volume ", s.volume, " is ", Name(s.phase),
                       "; no reshape or migration is running"));
    }
    if (!d.owner_node.empty() && s.phase != VolumePhase::kMigrating) {
      return absl::FailedPreconditionError(
          absl::StrCat("volume ", s.volume, " is ", Name(s.phase),
                       "; only a migration changes the owner"));
    }
    if (!d.owner_node.empty()) s.owner_node = d.owner_node;
    BackToReady();
    return absl::OkStatus();
  }

  absl::Status operator()(const Resume&) {
    VolumeState& s = s_;
    if (s.phase != VolumePhase::kQuiesced) {
      return absl::FailedPreconditionError(
          absl::StrCat("volume ", s.volume, " is ", Name(s.phase),
                       "; only a Quiesced volume resumes"));
    }
    BackToReady();
    return absl::OkStatus();
  }

  absl::Status operator()(const CancelRecall& c) {
    if (!s_.recall.has_value() || s_.recall->id != c.recall_id) {
      return absl::FailedPreconditionError(absl::StrCat(
          "recall ", c.recall_id, " is not the recall of volume ", s_.volume));
    }
    if (s_.phase != VolumePhase::kRecalling) return absl::OkStatus();  // over
    for (Lease& l : s_.leases) {
      if (l.state == LeaseState::kRecalling && !l.fencing()) {
        l.deadline = std::min(l.deadline, now_);
      }
    }
    return absl::OkStatus();
  }

  absl::Status operator()(const Forget& f) {
    auto& ls = s_.leases;
    auto it = std::find_if(ls.begin(), ls.end(),
                           [&](const Lease& l) { return l.id == f.lease_id; });
    if (it == ls.end()) return absl::OkStatus();
    if (it->holds_access()) {
      return absl::FailedPreconditionError(
          absl::StrCat(Describe(*it),
                       " still holds access; release or revoke "
                       "it before forgetting it"));
    }
    ls.erase(it);
    if (index_ != nullptr) index_->stale = true;
    return absl::OkStatus();
  }

 private:
  void BackToReady() {
    VolumeState& s = s_;
    s.phase = VolumePhase::kReady;
    s.epoch += 1;
    s.recall.reset();
    actions_.push_back({ActionKind::kEpochBumped, ""});
  }

  Lease* FindLease(absl::string_view id) {
    if (index_ == nullptr) return s_.Find(id);
    if (index_->stale) index_->Rebuild(s_);
    auto it = index_->pos.find(id);
    return it == index_->pos.end() ? nullptr : &s_.leases[it->second];
  }

  // Every change of a lease's state goes through here, so the index's count
  // of leases holding access stays true.
  void SetState(Lease& l, LeaseState st) {
    const bool before = l.holds_access();
    l.state = st;
    if (index_ != nullptr && before != l.holds_access()) {
      if (before) {
        --index_->holders;
      } else {
        ++index_->holders;
      }
    }
  }

  // Phase Recalling and nothing holds access -> Quiesced.
  void MaybeComplete() {
    const bool complete =
        index_ == nullptr
            ? RecallComplete(s_)
            : s_.phase == VolumePhase::kRecalling && index_->holders == 0;
    if (complete) {
      s_.phase = VolumePhase::kQuiesced;
      actions_.push_back({ActionKind::kRecallComplete, ""});
    }
  }

  VolumeState& s_;
  std::vector<Action>& actions_;
  absl::Time now_;
  Index* index_;
};

}  // namespace

const Lease* VolumeState::Find(absl::string_view lease_id) const {
  for (const Lease& l : leases) {
    if (l.id == lease_id) return &l;
  }
  return nullptr;
}

Lease* VolumeState::Find(absl::string_view lease_id) {
  for (Lease& l : leases) {
    if (l.id == lease_id) return &l;
  }
  return nullptr;
}

absl::Status Validate(const VolumeState& s) {
  auto bad = [&](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid lease state of volume ", s.volume, ": ", parts...));
  };
  if (s.epoch < 1) return bad("epoch must be >= 1");
  if (s.config.grace <= absl::ZeroDuration() ||
      s.config.extension < absl::ZeroDuration() ||
      s.config.max_recall < s.config.grace) {
    return bad("config needs grace > 0, extension >= 0, max_recall >= grace");
  }
  const bool ready = s.phase == VolumePhase::kReady;
  if (ready == s.recall.has_value()) {
    return bad(
        "a recall must be present exactly when the phase is not Ready "
        "(phase ",
        Name(s.phase), ")");
  }
  if (s.recall.has_value() && s.recall->id.empty()) {
    return bad("recall ID is empty");
  }
  // Views of the IDs, hashed: Validate runs on every Apply, Step and ApplyAll,
  // over every lease of the volume.
  absl::flat_hash_set<absl::string_view> ids;
  ids.reserve(s.leases.size());
  for (const Lease& l : s.leases) {
    if (l.id.empty()) return bad("a lease has an empty ID");
    if (!ids.insert(l.id).second) return bad("duplicate lease ", l.id);
    if (l.holds_access() && l.epoch != s.epoch) {
      return bad(Describe(l), " is at epoch ", l.epoch, ", volume at ",
                 s.epoch);
    }
    if (l.epoch > s.epoch) {
      return bad(Describe(l), " has epoch ", l.epoch,
                 " from the future (volume at ", s.epoch, ")");
    }
    switch (l.state) {
      case LeaseState::kGranted:
        if (s.phase != VolumePhase::kReady &&
            s.phase != VolumePhase::kRecalling) {
          return bad(Describe(l), " is Granted while the volume is ",
                     Name(s.phase));
        }
        if (l.reason != RevokeReason::kNone) {
          return bad(Describe(l), " is Granted with a revoke reason");
        }
        break;
      case LeaseState::kRecalling:
        if (s.phase != VolumePhase::kRecalling) {
          return bad(Describe(l), " is Recalling while the volume is ",
                     Name(s.phase));
        }
        if (l.recall_id != s.recall->id) {
          return bad(Describe(l), " answers recall '", l.recall_id,
                     "', running is '", s.recall->id, "'");
        }
        break;
      case LeaseState::kRevoked:
        if (l.reason == RevokeReason::kNone) {
          return bad(Describe(l), " is Revoked without a reason");
        }
        break;
      case LeaseState::kPending:
        if (l.reason != RevokeReason::kNone) {
          return bad(Describe(l), " is Pending with a revoke reason");
        }
        break;
      case LeaseState::kReleased:
        break;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Outcome> Apply(const VolumeState& s, const Event& e,
                              absl::Time now) {
  RETURN_IF_ERROR(Validate(s));
  RETURN_IF_ERROR(ValidateEvent(e));
  Outcome o;
  o.state = s;
  Applier a(o.state, o.actions, now, nullptr);
  RETURN_IF_ERROR(std::visit(a, e));
  return o;
}

absl::StatusOr<BatchOutcome> ApplyAll(const VolumeState& s,
                                      const std::vector<Event>& events,
                                      absl::Time now) {
  RETURN_IF_ERROR(Validate(s));
  BatchOutcome out;
  out.state = s;
  out.results.reserve(events.size());
  Index index;
  index.Rebuild(out.state);
  for (const Lease& l : out.state.leases) index.holders += l.holds_access();
  for (const Event& e : events) {
    absl::Status st = ValidateEvent(e);
    if (st.ok()) {
      Applier a(out.state, out.actions, now, &index);
      st = std::visit(a, e);
    }
    out.results.push_back(std::move(st));
  }
  return out;
}

absl::StatusOr<Outcome> Step(const VolumeState& s, absl::Time now) {
  RETURN_IF_ERROR(Validate(s));
  Outcome o;
  o.state = s;
  if (o.state.phase == VolumePhase::kRecalling) {
    const Recall& rc = *o.state.recall;
    for (Lease& l : o.state.leases) {
      if (l.state != LeaseState::kGranted) continue;
      l.state = LeaseState::kRecalling;
      l.recall_id = rc.id;
      l.deadline = DeadlineFor(rc, now);
      o.actions.push_back({ActionKind::kNotifyRecall, l.id});
    }
  }
  for (Lease& l : o.state.leases) {
    if (l.state != LeaseState::kRecalling) continue;
    if (!l.fencing() && l.deadline <= now) {
      l.reason = RevokeReason::kDeadlineExceeded;
    }
    if (l.fencing()) o.actions.push_back({ActionKind::kFence, l.id});
  }
  if (RecallComplete(o.state)) {
    o.state.phase = VolumePhase::kQuiesced;
    o.actions.push_back({ActionKind::kRecallComplete, ""});
  }
  return o;
}

absl::Status MayGrant(const VolumeState& s, absl::string_view lease_id) {
  return MayGrantLease(s, s.Find(lease_id), lease_id);
}

std::vector<std::string> LeasesToRevoke(const VolumeState& s, absl::Time now) {
  std::vector<std::string> out;
  for (const Lease& l : s.leases) {
    if (l.state == LeaseState::kRecalling && !l.fencing() &&
        l.deadline <= now) {
      out.push_back(l.id);
    }
  }
  return out;
}

std::vector<std::string> LeasesToFence(const VolumeState& s) {
  std::vector<std::string> out;
  for (const Lease& l : s.leases) {
    if (l.fencing()) out.push_back(l.id);
  }
  return out;
}

bool RecallComplete(const VolumeState& s) {
  if (s.phase != VolumePhase::kRecalling) return false;
  return std::none_of(s.leases.begin(), s.leases.end(),
                      [](const Lease& l) { return l.holds_access(); });
}

StoredFirst WhenToCarryOut(ActionKind kind) {
  switch (kind) {
    case ActionKind::kNotifyRecall:
      return StoredFirst::kRecallStart;
    case ActionKind::kNotifyGranted:
    case ActionKind::kDeadlineExtended:
    case ActionKind::kReleased:
      return StoredFirst::kLease;
    case ActionKind::kFence:
      return StoredFirst::kRevoke;
    case ActionKind::kNotifyRevoked:
      return StoredFirst::kFenceConfirmed;
    case ActionKind::kRecallComplete:
      return StoredFirst::kOutcome;
    case ActionKind::kEpochBumped:
      return StoredFirst::kEpoch;
  }
  return StoredFirst::kEpoch;  // unknown: the last record of a pass
}

QuiescedUntil WhatEndsRecall(RecallReason reason) {
  switch (reason) {
    case RecallReason::kManual:
    case RecallReason::kEvict:
      return QuiescedUntil::kResume;
    case RecallReason::kSnapshot:
      return QuiescedUntil::kAfterCopy;
    case RecallReason::kReshape:
    case RecallReason::kMigrate:
      return QuiescedUntil::kChange;
  }
  return QuiescedUntil::kChange;  // unknown: hold the volume still
}

absl::Time NextDeadline(const VolumeState& s) {
  absl::Time t = absl::InfiniteFuture();
  for (const Lease& l : s.leases) {
    if (l.state == LeaseState::kRecalling && !l.fencing()) {
      t = std::min(t, l.deadline);
    }
  }
  return t;
}

bool IsStaleEpoch(const VolumeState& s, absl::string_view lease_id,
                  uint64_t epoch) {
  const Lease* l = s.Find(lease_id);
  uint64_t ref = (l != nullptr && l->epoch != 0) ? l->epoch : s.epoch;
  return epoch < ref;
}

bool IsStaleRecall(const VolumeState& s, absl::string_view lease_id,
                   absl::string_view recall_id) {
  const Lease* l = s.Find(lease_id);
  return l == nullptr || l->state != LeaseState::kRecalling ||
         l->recall_id != recall_id;
}

absl::Status CheckAccess(const VolumeState& s, absl::string_view lease_id,
                         uint64_t epoch) {
  const Lease* l = s.Find(lease_id);
  if (l == nullptr) return NotFound(lease_id);
  if (!l->holds_access()) {
    return absl::PermissionDeniedError(
        absl::StrCat(Describe(*l), " holds no access",
                     l->state == LeaseState::kRevoked
                         ? absl::StrCat(": revoked (", Name(l->reason), ")")
                         : ""));
  }
  if (l->fencing()) {
    return absl::PermissionDeniedError(absl::StrCat(
        Describe(*l), " is being revoked (", Name(l->reason), ")"));
  }
  if (epoch != l->epoch || epoch != s.epoch) {
    return absl::PermissionDeniedError(absl::StrCat(
        "stale epoch ", epoch, " for ", Describe(*l), " at epoch ", l->epoch));
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------- names

absl::string_view Name(LeaseState v) {
  switch (v) {
    case LeaseState::kPending:
      return "Pending";
    case LeaseState::kGranted:
      return "Granted";
    case LeaseState::kRecalling:
      return "Recalling";
    case LeaseState::kReleased:
      return "Released";
    case LeaseState::kRevoked:
      return "Revoked";
  }
  return "?";
}

absl::string_view Name(VolumePhase v) {
  switch (v) {
    case VolumePhase::kReady:
      return "Ready";
    case VolumePhase::kRecalling:
      return "Recalling";
    case VolumePhase::kQuiesced:
      return "Quiesced";
    case VolumePhase::kReshaping:
      return "Reshaping";
    case VolumePhase::kMigrating:
      return "Migrating";
  }
  return "?";
}

absl::string_view Name(Access v) {
  return v == Access::kReadOnly ? "ReadOnly" : "ReadWrite";
}

absl::string_view Name(RevokeReason v) {
  switch (v) {
    case RevokeReason::kNone:
      return "";
    case RevokeReason::kDeadlineExceeded:
      return "DeadlineExceeded";
    case RevokeReason::kNotFlushed:
      return "NotFlushed";
  }
  return "?";
}

absl::string_view Name(RecallReason v) {
  switch (v) {
    case RecallReason::kReshape:
      return "Reshape";
    case RecallReason::kMigrate:
      return "Migrate";
    case RecallReason::kEvict:
      return "Evict";
    case RecallReason::kManual:
      return "Manual";
    case RecallReason::kSnapshot:
      return "Snapshot";
  }
  return "?";
}

absl::string_view Name(ActionKind v) {
  switch (v) {
    case ActionKind::kNotifyGranted:
      return "NotifyGranted";
    case ActionKind::kNotifyRecall:
      return "NotifyRecall";
    case ActionKind::kDeadlineExtended:
      return "DeadlineExtended";
    case ActionKind::kFence:
      return "Fence";
    case ActionKind::kNotifyRevoked:
      return "NotifyRevoked";
    case ActionKind::kReleased:
      return "Released";
    case ActionKind::kRecallComplete:
      return "RecallComplete";
    case ActionKind::kEpochBumped:
      return "EpochBumped";
  }
  return "?";
}

absl::string_view Name(StoredFirst v) {
  switch (v) {
    case StoredFirst::kRecallStart:
      return "RecallStart";
    case StoredFirst::kLease:
      return "Lease";
    case StoredFirst::kRevoke:
      return "Revoke";
    case StoredFirst::kFenceConfirmed:
      return "FenceConfirmed";
    case StoredFirst::kOutcome:
      return "Outcome";
    case StoredFirst::kEpoch:
      return "Epoch";
  }
  return "?";
}

namespace {
template <class E, size_t N>
absl::StatusOr<E> ParseEnum(absl::string_view what, absl::string_view s,
                            const E (&all)[N]) {
  for (E v : all) {
    if (Name(v) == s) return v;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown ", what, " '", s, "'"));
}
}  // namespace

absl::StatusOr<LeaseState> ParseLeaseState(absl::string_view s) {
  static constexpr LeaseState kAll[] = {
      LeaseState::kPending, LeaseState::kGranted, LeaseState::kRecalling,
      LeaseState::kReleased, LeaseState::kRevoked};
  return ParseEnum("lease state", s, kAll);
}

absl::StatusOr<VolumePhase> ParseVolumePhase(absl::string_view s) {
  static constexpr VolumePhase kAll[] = {
      VolumePhase::kReady, VolumePhase::kRecalling, VolumePhase::kQuiesced,
      VolumePhase::kReshaping, VolumePhase::kMigrating};
  return ParseEnum("volume phase", s, kAll);
}

absl::StatusOr<Access> ParseAccess(absl::string_view s) {
  static constexpr Access kAll[] = {Access::kReadOnly, Access::kReadWrite};
  return ParseEnum("access", s, kAll);
}

absl::StatusOr<RevokeReason> ParseRevokeReason(absl::string_view s) {
  static constexpr RevokeReason kAll[] = {RevokeReason::kNone,
                                          RevokeReason::kDeadlineExceeded,
                                          RevokeReason::kNotFlushed};
  return ParseEnum("revoke reason", s, kAll);
}

absl::StatusOr<RecallReason> ParseRecallReason(absl::string_view s) {
  static constexpr RecallReason kAll[] = {
      RecallReason::kReshape, RecallReason::kMigrate, RecallReason::kEvict,
      RecallReason::kManual, RecallReason::kSnapshot};
  return ParseEnum("recall reason", s, kAll);
}

}  // namespace daxlease::lease
