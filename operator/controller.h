// Controller: watches DaxVolumes, DaxLeases and DaxRecalls (informers), maps
// every change to the name of the volume it concerns, and runs the
// Reconciler for each queued volume on `workers` threads. A pass that fails
// (409 conflict, API error) is retried with per-volume backoff; a pass that
// leaves a recall deadline pending is re-queued for that deadline.
//
// Start/Stop once each. Thread-safe.
#ifndef DAXLEASE_OPERATOR_CONTROLLER_H_
#define DAXLEASE_OPERATOR_CONTROLLER_H_

#include <algorithm>
#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lib/base/clock.h"
#include "lib/k8s/client.h"
#include "lib/k8s/informer.h"
#include "lib/k8s/workqueue.h"
#include "operator/cache_reader.h"
#include "operator/events.h"
#include "operator/reconciler.h"

namespace daxlease::op {

struct ControllerOptions {
  ReconcilerOptions reconciler;
  int workers = 2;
  // Every object is looked at again this often even without changes.
  absl::Duration resync = absl::Seconds(30);
  absl::Duration sync_timeout = absl::Seconds(60);
  // Reconcile, work queue and protocol series (metrics.h). Not owned; must
  // outlive the controller; null: none. Also given to the reconciler.
  OperatorMetrics* metrics = nullptr;
  // A burst of DaxLease creations is served by one pass per volume, not one
  // per creation: a new lease queues its volume after as long as the
  // volume's last pass took, clamped to [coalesce_min, coalesce_max]. A pass
  // over N leases costs O(N), so without this N creations arriving during
  // passes keep a worker busy back to back (O(N^2) in all); with it a
  // volume's creation-triggered passes take at most about half a worker.
  // A small volume's pass takes a millisecond or so, so its grants are not
  // delayed noticeably. Other changes (recalls, acks, the volume) queue at
  // once.
  absl::Duration coalesce_min = absl::ZeroDuration();
  absl::Duration coalesce_max = absl::Seconds(1);
  // After a successful pass over at least this many leases, the allocator
  // gives the free memory of every arena back to the system (glibc's
  // malloc_trim). A pass over N leases frees most of what it allocated, on
  // whichever worker ran it, and glibc keeps what each thread's arena freed:
  // measured at N = 10000, more than half of the operator's heap was free
  // but kept. 0: never.
  size_t trim_after_leases = 1000;
  // What trims (tests count the calls); null: malloc_trim(0).
  std::function<void()> trim;
};

// How long a volume's creation-triggered pass waits (ControllerOptions::
// coalesce_*): as long as its last pass took. Thread-safe.
class PassCoalescer {
 public:
  PassCoalescer(absl::Duration min, absl::Duration max)
      : min_(min), max_(std::max(min, max)) {}
  // A pass over `volume` took `took`.
  void Ran(const std::string& volume, absl::Duration took);
  absl::Duration DelayFor(const std::string& volume) const;

 private:
  const absl::Duration min_;
  const absl::Duration max_;
  mutable absl::Mutex mu_;
  std::map<std::string, absl::Duration> last_ ABSL_GUARDED_BY(mu_);
};

class Controller {
 public:
  // References must outlive the controller.
  Controller(k8s::KubeClient& client, base::Clock& clock, EventSink& events,
             ControllerOptions options = {});
  ~Controller();  // Stop()
  Controller(const Controller&) = delete;
  Controller& operator=(const Controller&) = delete;

  // Starts the informers, waits for their first list, starts the workers.
  // DeadlineExceeded if the caches do not sync in time.
  absl::Status Start();
  // Stops informers and workers; idempotent.
  void Stop();

  // Passes completed (successful or not), for tests and metrics.
  int64_t passes() const;

  // Asks for a pass over `volume` (the recall channel took an answer).
  // Ignored before Start.
  void EnqueueVolume(const std::string& volume);

 private:
  // `coalesce`: a lease creation (after the volume's PassCoalescer delay).
  void Enqueue(const k8s::Json& obj, bool is_volume, bool coalesce = false);
  void Work();

  k8s::KubeClient& client_;
  base::Clock& clock_;
  const ControllerOptions options_;
  EventSink& events_;
  k8s::WorkQueue queue_;
  std::vector<std::unique_ptr<k8s::Informer>>
      informers_;  // volume, lease, recall
  std::unique_ptr<CacheWorldReader> reader_;
  std::unique_ptr<Reconciler> reconciler_;
  std::vector<std::thread> workers_;
  std::atomic<int64_t> passes_{0};
  PassCoalescer coalescer_;
  absl::Mutex lifecycle_mu_;  // Start and Stop may race (leader callbacks)
  bool started_ ABSL_GUARDED_BY(lifecycle_mu_) = false;
  bool stopped_ ABSL_GUARDED_BY(lifecycle_mu_) = false;
};

}  // namespace daxlease::op

#endif  // DAXLEASE_OPERATOR_CONTROLLER_H_
