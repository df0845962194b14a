// LeaseDisplay: the DaxLease status writes that only show what a DaxRecall
// and a DaxVolume already record (plan.h, Plan::durable_leases), taken off
// the reconcile pass. A pass stores the recall's start or outcome and the
// volume's epoch, hands its other lease writes here and returns; writer
// threads store them afterwards, coalesced per lease (a lease whose
// Recalling has not been written when its Released is decided is written
// once).
//
// Until a write is stored, Overlay() shows it to the next pass as if it
// were, so the pass builds on what this leader decided (an ack it took, a
// grant it gave). That view is soft state like the channel's acks: a leader
// that dies loses it, and its successor reads the lease objects through the
// recalls' records (plan.h), which hold everything that must survive.
//
// While a volume's recall runs, its writes that only change a status (a
// lease shown Recalling, then Released) are held (Enqueue `hold`) until a
// pass that leaves no recall running, or at most `max_hold`: the recall's
// own writes (its start, its outcome, the volume's epoch) then have the API
// server to themselves, and a lease whose Released is decided before its
// Recalling was written is written once. A write that changes finalizers
// or shows a revoke (state Revoked: the holder's agent reads it there and
// tells its clients at once, even if the owner never confirms the fence)
// is never held. A held write that only shows the recall's start (Granted
// as stored, Recalling for the volume's running recall) keeps no copy of
// the lease: the pass reads the stored lease through the DaxRecall's
// record (plan.h) to the same state, so Overlay leaves it as read and the
// display keeps its name (at N = 10000 a copy of each lease is about 12 MB
// at the recall's peak). It is never written as such: when the hold ends
// before the recall, the display asks for a pass, which writes it.
// Once a volume's hold has run out, nothing more of it is held until its
// recall ends.
//
// Each write is guarded by the resourceVersion it was computed from; a
// conflict (someone else wrote the lease) or any error drops the pending
// write and asks for a pass over the volume, which recomputes it. When a
// volume has no write left, a pass is asked for too (a Complete recall's
// finalizer waits for its leases' display: plan.h World::display_pending).
//
// Thread-safe.
#ifndef DAXLEASE_OPERATOR_LEASE_DISPLAY_H_
#define DAXLEASE_OPERATOR_LEASE_DISPLAY_H_

#include <atomic>
#include <deque>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lib/api/types.h"
#include "lib/k8s/client.h"
#include "operator/plan.h"

namespace daxlease::op {

class WorldReader;

class LeaseDisplay {
 public:
  // `requeue(volume)` asks for a pass over a volume. `reader` is told of
  // every write (WorldReader::Wrote). References must outlive this.
  // `max_hold`: the longest a held write waits (real time).
  LeaseDisplay(k8s::KubeClient& client, WorldReader& reader,
               std::function<void(const std::string&)> requeue, int concurrency,
               absl::Duration max_hold = absl::Seconds(5));
  // Stops the writers; writes not yet stored are dropped (they only show
  // what the recalls and volumes record).
  ~LeaseDisplay();
  LeaseDisplay(const LeaseDisplay&) = delete;
  LeaseDisplay& operator=(const LeaseDisplay&) = delete;

  // Queues `after` to be written over `before` (the lease as the pass saw
  // it, through Overlay). Replaces a queued write of the same lease (a held
  // one stays held). `hold`: the volume's recall runs on; a write that
  // changes no finalizer waits (see above). Keeps `before` and `after`
  // shared (plan.h SharedLease): once the pass is done a pending write
  // holds one copy of its lease, `after`, besides what the reader's cache
  // holds anyway; a held recall start (see above) holds none.
  void Enqueue(const std::string& volume, const SharedLease& before,
               const SharedLease& after, bool hold = false);
  // Lets every held write of `volume` go (its recall ended): after the
  // pass's Enqueues, so each goes with what that pass decided.
  void Release(const std::string& volume);
  // Shows each queued write in `world` as if stored, and names those leases
  // in world.display_pending.
  void Overlay(World& world);

  int64_t written() const { return written_.load(); }
  int64_t pending() const;

 private:
  struct Entry {
    std::string volume;
    SharedLease stored;  // as stored (its resourceVersion guards the write)
    // As the pass planned it (shared with its plan); written with the
    // agents' fields as stored.
    SharedLease want;
    bool in_flight = false;
    bool held = false;
    // Held, and only shows the start of the volume's running recall, which
    // its record says: `want` is `stored` (no copy kept); never written as
    // such (a pass computes it again when the hold ends).
    bool restated = false;
  };
  void Work();
  // Moves `volume`'s held writes to ready_, and drops the restated ones
  // (naming the volume in `again`: it needs a pass to compute them).
  // `recall_ended`: its recall ended (Release); else its hold is over
  // (max_hold_), and nothing more of it is held until the recall ends.
  void ReleaseLocked(const std::string& volume, bool recall_ended,
                     std::vector<std::string>& again)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // ReleaseLocked for every volume whose hold is over at `now`.
  void ReleaseExpiredLocked(absl::Time now, std::vector<std::string>& again)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether any volume's hold runs (its writers look at the clock).
  bool HoldingLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  k8s::KubeClient& client_;
  WorldReader& reader_;
  const std::function<void(const std::string&)> requeue_;
  mutable absl::Mutex mu_;
  std::map<std::string, Entry> entries_ ABSL_GUARDED_BY(mu_);  // by lease
  std::deque<std::string> ready_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int> per_volume_ ABSL_GUARDED_BY(mu_);
  // Per volume whose recall runs: since when its writes are held, and
  // which; `over` once max_hold_ has passed (nothing more is held).
  struct Held {
    absl::Time since;
    std::vector<std::string> leases;
    bool over = false;
  };
  std::map<std::string, Held> held_ ABSL_GUARDED_BY(mu_);
  const absl::Duration max_hold_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<int64_t> written_{0};
  std::vector<std::thread> threads_;
};

}  // namespace daxlease::op

#endif  // DAXLEASE_OPERATOR_LEASE_DISPLAY_H_
