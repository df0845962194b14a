// Controller: watches DaxVolumes, DaxLeases and DaxRecalls (informers), maps
// every change to the name of the volume it concerns, and runs the
// Reconciler for each queued volume on `workers` threads. A pass that fails
// (409 conflict, API error) is retried with per-volume backoff; a pass that
// leaves a recall deadline pending is re-queued for that deadline.
//
// Start/Stop once each. Thread-safe.
#ifndef DAXLEASE_OPERATOR_CONTROLLER_H_
#define DAXLEASE_OPERATOR_CONTROLLER_H_

#include <atomic>
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
  void Enqueue(const k8s::Json& obj, bool is_volume);
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
  absl::Mutex lifecycle_mu_;  // Start and Stop may race (leader callbacks)
  bool started_ ABSL_GUARDED_BY(lifecycle_mu_) = false;
  bool stopped_ ABSL_GUARDED_BY(lifecycle_mu_) = false;
};

}  // namespace daxlease::op

#endif  // DAXLEASE_OPERATOR_CONTROLLER_H_
