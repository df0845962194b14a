#include "operator/lease_display.h"

#include <algorithm>
#include <utility>

#include "lib/api/resources.h"
#include "operator/reconciler.h"

namespace daxlease::op {
namespace {

// What is written for `want` over `stored`: guarded by the stored version;
// the agents' fields are never the display's to write (with the channel the
// pass reads the relay's answers there), so they stay as stored.
api::DaxLease AsWritten(const api::DaxLease& want,
                        const api::DaxLease& stored) {
  api::DaxLease w = want;
  w.metadata.resource_version = stored.metadata.resource_version;
  w.status.released_recall_id = stored.status.released_recall_id;
  w.status.fenced_recall_id = stored.status.fenced_recall_id;
  w.status.revocation_acknowledged = stored.status.revocation_acknowledged;
  return w;
}

// Whether `want` over `stored` only shows the start of the recall the volume
// runs at the lease's epoch: Granted as stored, Recalling for that recall,
// nothing else changed that the record does not say. A pass reads such a
// lease through the DaxRecall's record (plan.h ReadThroughRecall) to the
// same state, so the display need not keep a copy of it to show the pass.
bool Restates(const api::DaxLease& stored, const api::DaxLease& want) {
  return stored.status.state == api::LeaseState::kGranted &&
         want.status.state == api::LeaseState::kRecalling &&
         !want.status.fence_required && !want.status.recall_id.empty() &&
         want.status.epoch == stored.status.epoch &&
         want.metadata.finalizers == stored.metadata.finalizers &&
         want.spec == stored.spec &&
         want.status.bound_to == stored.status.bound_to;
}

}  // namespace

LeaseDisplay::LeaseDisplay(k8s::KubeClient& client, WorldReader& reader,
                           std::function<void(const std::string&)> requeue,
                           int concurrency, absl::Duration max_hold)
    : client_(client),
      reader_(reader),
      requeue_(std::move(requeue)),
      max_hold_(max_hold) {
  for (int i = 0; i < std::max(1, concurrency); ++i) {
    threads_.emplace_back([this] { Work(); });
  }
}

LeaseDisplay::~LeaseDisplay() {
  {
    absl::MutexLock l(&mu_);
    stopping_ = true;
  }
  for (std::thread& t : threads_) t.join();
}

int64_t LeaseDisplay::pending() const {
  absl::MutexLock l(&mu_);
  return static_cast<int64_t>(entries_.size());
}

void LeaseDisplay::Enqueue(const std::string& volume, const SharedLease& before,
                           const SharedLease& after, bool hold) {
  absl::MutexLock l(&mu_);
  const std::string& name = before->metadata.name;
  auto [it, fresh] = entries_.try_emplace(name);
  Entry& e = it->second;
  if (fresh) {
    e.volume = volume;
    ++per_volume_[volume];
  }
  if (fresh || (!e.in_flight && e.stored->metadata.resource_version !=
                                    before->metadata.resource_version)) {
    // The pass read a newer version (another writer's) and computed
    // `after` from it: write over that one.
    e.stored = before;
  }
  // A revoke is never held: holders' agents read it from the lease object
  // (so a holder whose owner dies before confirming the fence is still told
  // at the deadline), and kubectl shows it the moment it is decided. Nor is
  // anything once the volume's hold is over (held at most max_hold_).
  auto h = held_.find(volume);
  const bool holdable =
      hold && (h == held_.end() || !h->second.over) &&
      e.stored->metadata.finalizers == after->metadata.finalizers &&
      after->status.state != api::LeaseState::kRevoked;
  // Held and restating the recall's record: kept as a name, not a copy
  // (never in flight: held writes are not).
  e.restated = holdable && !e.in_flight && Restates(*e.stored, *after);
  // Shared with the pass's plan, as it is: what is written is AsWritten.
  // A restated write shares the stored lease instead (no copy is kept).
  e.want = e.restated ? e.stored : after;
  if (e.held) {
    if (holdable) return;  // goes with the rest of the volume's
    e.held = false;  // (ReleaseLocked skips it; never in flight while held)
    ready_.push_back(name);
    return;
  }
  if (!fresh && e.in_flight) return;  // its writer writes it next
  if (holdable) {
    // (If it is in ready_ from before the hold, the writers skip it.)
    e.held = true;
    auto [hv, first] = held_.try_emplace(volume);
    if (first) hv->second.since = absl::Now();
    hv->second.leases.push_back(name);
    return;
  }
  ready_.push_back(name);
}

void LeaseDisplay::Release(const std::string& volume) {
  std::vector<std::string> again;
  {
    absl::MutexLock l(&mu_);
    ReleaseLocked(volume, /*recall_ended=*/true, again);
  }
  for (const std::string& v : again) requeue_(v);
}

void LeaseDisplay::ReleaseLocked(const std::string& volume, bool recall_ended,
                                 std::vector<std::string>& again) {
  auto h = held_.find(volume);
  if (h == held_.end()) return;
  bool dropped = false;
  for (const std::string& name : h->second.leases) {
    auto it = entries_.find(name);
    if (it == entries_.end() || !it->second.held) continue;
    it->second.held = false;
    if (it->second.restated) {
      // Nothing of its own to write: a pass (asked for below) computes it
      // again and writes what it then decides.
      entries_.erase(it);
      if (--per_volume_[volume] == 0) per_volume_.erase(volume);
      dropped = true;
      continue;
    }
    ready_.push_back(name);
  }
  if (dropped) again.push_back(volume);
  if (recall_ended) {
    held_.erase(h);
  } else {
    h->second.leases.clear();
    h->second.over = true;
  }
}

void LeaseDisplay::ReleaseExpiredLocked(absl::Time now,
                                        std::vector<std::string>& again) {
  std::vector<std::string> expired;
  for (const auto& [volume, h] : held_) {
    if (!h.over && now - h.since >= max_hold_) expired.push_back(volume);
  }
  for (const std::string& v : expired) {
    ReleaseLocked(v, /*recall_ended=*/false, again);
  }
}

bool LeaseDisplay::HoldingLocked() const {
  for (const auto& [volume, h] : held_) {
    if (!h.over) return true;
  }
  return false;
}

void LeaseDisplay::Overlay(World& world) {
  absl::MutexLock l(&mu_);
  for (SharedLease& d : world.leases) {
    auto it = entries_.find(d->metadata.name);
    if (it == entries_.end()) continue;
    const Entry& e = it->second;
    if (!e.in_flight &&
        e.stored->metadata.resource_version != d->metadata.resource_version) {
      continue;  // someone else wrote it: the write will conflict and go
    }
    world.display_pending.insert(d->metadata.name);
    // Restated: the lease as stored, read through its recall's record
    // (plan.h), is what the pass would show; left as read, shared with the
    // reader's cache.
    if (e.restated) continue;
    // In flight, the read may show the write half done (its finalizer patch
    // stored, not yet its status): what this leader decided is the want.
    // The operator's fields as it decided them; the agents' as read.
    api::DaxLease shown = *d;
    shown.status = e.want->status;
    shown.status.released_recall_id = d->status.released_recall_id;
    shown.status.fenced_recall_id = d->status.fenced_recall_id;
    shown.status.revocation_acknowledged = d->status.revocation_acknowledged;
    shown.metadata.finalizers = e.want->metadata.finalizers;
    // Usually exactly the pending write (read at the version it was
    // computed from, the agents' fields unchanged): shared with it, so a
    // pass over N pending writes copies none of them.
    if (shown == *e.want) {
      d = e.want;
    } else if (!(shown == *d)) {
      d = SharedLease(std::move(shown));  // this world's copy only
    }
  }
}

void LeaseDisplay::Work() {
  size_t held_seen = 0;
  auto has_work = [this, &held_seen]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stopping_ || !ready_.empty() || held_.size() != held_seen;
  };
  absl::MutexLock l(&mu_);
  while (true) {
    // Held writes wait at most max_hold_: looked at every 100 ms while
    // any is held (and when a volume's hold begins).
    held_seen = held_.size();
    const absl::Duration wait =
        HoldingLocked() ? std::min(max_hold_, absl::Milliseconds(100))
                        : absl::InfiniteDuration();
    mu_.AwaitWithTimeout(absl::Condition(&has_work), wait);
    if (stopping_) return;
    if (!held_.empty()) {
      std::vector<std::string> again;
      ReleaseExpiredLocked(absl::Now(), again);
      if (!again.empty()) {
        mu_.Unlock();
        for (const std::string& v : again) requeue_(v);
        mu_.Lock();
      }
    }
    if (ready_.empty()) continue;
    const std::string name = std::move(ready_.front());
    ready_.pop_front();
    auto it = entries_.find(name);
    if (it == entries_.end() || it->second.in_flight || it->second.held) {
      continue;
    }
    Entry& e = it->second;
    e.in_flight = true;
    const SharedLease stored = e.stored;
    const SharedLease want = e.want;
    const std::string volume = e.volume;
    mu_.Unlock();
    const api::DaxLease to_write = AsWritten(*want, *stored);
    int writes = 0;
    std::string rv;
    // Its echo needs no pass: this loop asks for one when the volume's
    // writes drain or one fails (below).
    absl::Status st = WriteLease(client_, reader_, *stored, to_write, writes,
                                 &rv, /*needs_no_pass=*/true);
    written_ += writes;
    mu_.Lock();
    it = entries_.find(name);  // still there: only this thread erases it
    it->second.in_flight = false;
    bool done = !st.ok();
    if (st.ok()) {
      // (stored is not replaced while in flight.)
      if (it->second.want == want ||
          AsWritten(*it->second.want, *stored) == to_write) {
        done = true;
      } else {  // replaced while in flight: write the newer one over this
        api::DaxLease now_stored = to_write;
        now_stored.metadata.resource_version = rv;
        it->second.stored = SharedLease(std::move(now_stored));
        ready_.push_back(name);
      }
    }
    if (!done) continue;
    entries_.erase(it);
    const bool drained = --per_volume_[volume] == 0;
    if (drained) per_volume_.erase(volume);
    if (drained || !st.ok()) {
      mu_.Unlock();
      requeue_(volume);
      mu_.Lock();
    }
  }
}

}  // namespace daxlease::op
