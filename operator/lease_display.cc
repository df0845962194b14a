#include "operator/lease_display.h"

#include <utility>

#include "lib/api/resources.h"
#include "operator/reconciler.h"

namespace daxlease::op {

LeaseDisplay::LeaseDisplay(k8s::KubeClient& client, WorldReader& reader,
                           std::function<void(const std::string&)> requeue,
                           int concurrency)
    : client_(client), reader_(reader), requeue_(std::move(requeue)) {
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

void LeaseDisplay::Enqueue(const std::string& volume,
                           const api::DaxLease& before,
                           const api::DaxLease& after) {
  absl::MutexLock l(&mu_);
  auto [it, fresh] = entries_.try_emplace(before.metadata.name);
  Entry& e = it->second;
  if (fresh) {
    e.volume = volume;
    ++per_volume_[volume];
  }
  if (fresh || (!e.in_flight && e.stored.metadata.resource_version !=
                                    before.metadata.resource_version)) {
    // The pass read a newer version (another writer's) and computed
    // `after` from it: write over that one.
    e.stored = before;
  }
  e.want = after;
  e.want.metadata.resource_version = e.stored.metadata.resource_version;
  if (fresh || !e.in_flight) ready_.push_back(before.metadata.name);
}

void LeaseDisplay::Overlay(World& world) {
  absl::MutexLock l(&mu_);
  for (api::DaxLease& d : world.leases) {
    auto it = entries_.find(d.metadata.name);
    if (it == entries_.end()) continue;
    const Entry& e = it->second;
    if (!e.in_flight &&
        e.stored.metadata.resource_version != d.metadata.resource_version) {
      continue;  // someone else wrote it: the write will conflict and go
    }
    // In flight, the read may show the write half done (its finalizer patch
    // stored, not yet its status): what this leader decided is the want.
    // The operator's fields as it decided them; the agents' as read.
    api::DaxLeaseStatus st = e.want.status;
    st.released_recall_id = d.status.released_recall_id;
    st.fenced_recall_id = d.status.fenced_recall_id;
    st.revocation_acknowledged = d.status.revocation_acknowledged;
    d.status = std::move(st);
    d.metadata.finalizers = e.want.metadata.finalizers;
    world.display_pending.insert(d.metadata.name);
  }
}

void LeaseDisplay::Work() {
  auto has_work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stopping_ || !ready_.empty();
  };
  absl::MutexLock l(&mu_);
  while (true) {
    mu_.Await(absl::Condition(&has_work));
    if (stopping_) return;
    const std::string name = std::move(ready_.front());
    ready_.pop_front();
    auto it = entries_.find(name);
    if (it == entries_.end() || it->second.in_flight) continue;
    Entry& e = it->second;
    e.in_flight = true;
    const api::DaxLease stored = e.stored;
    const api::DaxLease want = e.want;
    const std::string volume = e.volume;
    mu_.Unlock();
    int writes = 0;
    std::string rv;
    absl::Status st = WriteLease(client_, reader_, stored, want, writes, &rv);
    written_ += writes;
    mu_.Lock();
    it = entries_.find(name);  // still there: only this thread erases it
    it->second.in_flight = false;
    bool done = !st.ok();
    if (st.ok()) {
      if (it->second.want == want) {
        done = true;
      } else {  // replaced while in flight: write the newer one over this
        it->second.stored = want;
        it->second.stored.metadata.resource_version = rv;
        it->second.want.metadata.resource_version = rv;
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
