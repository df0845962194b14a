// Reconciler: one level-based pass over one DaxVolume. Reads the world from
// the API server (the volume, every DaxLease and DaxRecall naming it),
// computes the desired objects with ComputePlan (plan.h), writes the
// difference and records events.
//
// Writes are optimistic: every patch carries the resourceVersion that was
// read, so a concurrent writer (an agent acking, a second operator) makes the
// pass fail with Aborted and the caller retries with a fresh read; nothing is
// overwritten blindly. Order (crash safety, see plan.h): recalls that start
// now, then leases (in parallel), then the other recalls, then the volume's
// epoch high-water mark when its finalizer goes, then the volume.
// Finalizers are added before the status that needs them and removed after.
//
// Idempotent: a pass over an unchanged world writes nothing. Thread-safe for
// distinct volumes; the caller (a WorkQueue) never runs one volume twice at
// once.
#ifndef DAXLEASE_OPERATOR_RECONCILER_H_
#define DAXLEASE_OPERATOR_RECONCILER_H_

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lib/base/clock.h"
#include "lib/k8s/client.h"
#include "operator/epoch_store.h"
#include "operator/events.h"
#include "operator/metrics.h"
#include "operator/plan.h"

namespace daxlease::op {

class ChannelRelay;

// Where a pass reads the world of a volume from.
class WorldReader {
 public:
  virtual ~WorldReader() = default;
  virtual absl::StatusOr<World> Read(const std::string& volume) = 0;
  // Told about each object a pass wrote (as the server returned it), so a
  // cache can serve it before its watch event arrives. Thread-safe.
  virtual void Wrote(const k8s::Resource& r, const k8s::Json& stored) {}
  // Like Wrote, for a write whose own watch event needs no pass: its writer
  // asks for one itself when it matters (LeaseDisplay requeues a volume when
  // its writes drain or fail), so the echo of N display writes is not N
  // passes over N leases. Thread-safe.
  virtual void WroteNeedingNoPass(const k8s::Resource& r,
                                  const k8s::Json& stored) {
    Wrote(r, stored);
  }
};

// Fresh reads from the API server: GET the volume, LIST all leases and
// recalls and keep those belonging to it (api::OwningVolume). Unparseable
// ones go to World::unreadable.
class ApiWorldReader final : public WorldReader {
 public:
  explicit ApiWorldReader(k8s::KubeClient& client) : client_(client) {}
  absl::StatusOr<World> Read(const std::string& volume) override;

 private:
  k8s::KubeClient& client_;
};

struct ReconcilerOptions {
  PlanOptions plan;
  // Concurrent lease writes within one pass.
  int write_concurrency = 8;
  // Where each volume name's epoch high-water mark is kept.
  EpochStoreOptions epochs;
  // Told of every pass whose writes succeeded. Not owned; null: none.
  OperatorMetrics* metrics = nullptr;
  // The recall channel (channel_relay.h): its answers replace the
  // agent-written status fields before the plan, and it asks the agents
  // what each stored pass left outstanding. Not owned; null: no channel,
  // the agents answer in those status fields.
  ChannelRelay* channel = nullptr;
  // Lease writes that only show what a DaxRecall and the DaxVolume record
  // are stored after them by a LeaseDisplay (lease_display.h), off the
  // pass; `requeue(volume)` asks for a pass (the controller's queue). Off:
  // every lease write is stored in the pass, before the recall's outcome.
  // The operator turns it on with the channel: on the status-field path the
  // agents' fields are on the lease objects anyway.
  bool lag_lease_writes = false;
  // With lag_lease_writes: the longest a lease write that only shows a
  // running recall is held back (LeaseDisplay's max_hold).
  absl::Duration display_hold = absl::Seconds(5);
  std::function<void(const std::string&)> requeue;
  // With lag_lease_writes: for this long after this process stored a
  // recall's start, the writes that only show the recall running are held
  // back: the volume's (phase Recalling, holders, active recall, its Ready
  // condition) and the recall's counts (released, revoked, outstanding and
  // its condition's message). A recall whose holders all answer within it
  // then goes from its start to its outcome with no API write between (its
  // volume from Ready to Ready at the next epoch, as when the write of
  // Recalling is lost: plan.h). A pass that holds a write asks for a pass
  // at the window's end. Everything durable (the start, decided revokes,
  // fence confirmations, the outcome, the epoch) is never held. Zero: off.
  absl::Duration recall_display_hold = absl::ZeroDuration();
};

struct ReconcileResult {
  absl::Time requeue_at = absl::InfiniteFuture();
  int writes = 0;     // API writes made
  size_t leases = 0;  // leases of the volume, as read
};

// Writes one DaxLease's difference (finalizers, status), guarded by
// before's resourceVersion; `final_rv` (may be null) gets the stored one.
// `reader` is told of each write (WroteNeedingNoPass if `needs_no_pass`).
absl::Status WriteLease(k8s::KubeClient& client, WorldReader& reader,
                        const api::DaxLease& before, const api::DaxLease& after,
                        int& writes, std::string* final_rv,
                        bool needs_no_pass = false);

class LeaseDisplay;

class Reconciler {
 public:
  // All references must outlive the reconciler. `reader` null: an
  // ApiWorldReader over `client`.
  Reconciler(k8s::KubeClient& client, base::Clock& clock, EventSink& events,
             ReconcilerOptions options = {}, WorldReader* reader = nullptr);
  ~Reconciler();

  // The lagging lease writes (null unless lag_lease_writes).
  LeaseDisplay* display() { return display_.get(); }

  // Read + ComputePlan + write. Aborted/NotFound when an object changed or
  // went away meanwhile (retry); other API errors as the client gives them.
  absl::StatusOr<ReconcileResult> Reconcile(const std::string& volume);

 private:
  // When each step of a pass ended, in ms since it began ("read=0.3
  // plan=1.2 recall_started=18.0 ..."): the debug log reconcile.steps.
  struct Steps {
    base::Clock* clock = nullptr;
    absl::Duration t0;
    std::string text;
    void Mark(const char* step) {
      absl::StrAppend(&text, text.empty() ? "" : " ", step, "=",
                      absl::ToDoubleMilliseconds(clock->Monotonic() - t0));
    }
  };
  // What Write held back (recall_display_hold).
  struct Held {
    bool volume = false;   // the volume's write
    bool any = false;      // the volume's or a recall's
    absl::Duration until;  // clock_.Monotonic() at the window's end
  };
  absl::Status Write(const World& before, const Plan& plan, int& writes,
                     Steps& steps, Held& held);

  k8s::KubeClient& client_;
  base::Clock& clock_;
  EventSink& events_;
  const ReconcilerOptions options_;
  ApiWorldReader api_reader_;
  WorldReader& reader_;
  EpochStore epochs_;
  // Volume -> when (clock_.Monotonic()) this process stored the start of
  // its running recall; only with recall_display_hold.
  absl::Mutex started_mu_;
  std::map<std::string, absl::Duration> recall_started_
      ABSL_GUARDED_BY(started_mu_);
  std::unique_ptr<LeaseDisplay> display_;  // declared last: stops first
};

}  // namespace daxlease::op

#endif  // DAXLEASE_OPERATOR_RECONCILER_H_
