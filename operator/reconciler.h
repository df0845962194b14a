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
#include <memory>
#include <string>

#include "absl/status/statusor.h"
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
  absl::Status Write(const World& before, const Plan& plan, int& writes);

  k8s::KubeClient& client_;
  base::Clock& clock_;
  EventSink& events_;
  const ReconcilerOptions options_;
  ApiWorldReader api_reader_;
  WorldReader& reader_;
  EpochStore epochs_;
  std::unique_ptr<LeaseDisplay> display_;  // declared last: stops first
};

}  // namespace daxlease::op

#endif  // DAXLEASE_OPERATOR_RECONCILER_H_
