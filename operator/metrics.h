// OperatorMetrics: the operator's Prometheus series. The controller's and
// its work queue's use controller-runtime's and client-go's names, so the
// dashboards and alerts written for kubebuilder operators work unchanged:
//   controller_runtime_reconcile_total{controller,result}  result: success,
//       error, requeue_after
//   controller_runtime_reconcile_errors_total{controller}
//   controller_runtime_reconcile_time_seconds{controller}  (histogram)
//   controller_runtime_max_concurrent_reconciles{controller}
//   workqueue_depth / adds_total / queue_duration_seconds /
//       work_duration_seconds / retries_total{name}
// The protocol's own, counted from lib/lease's actions of passes whose
// writes succeeded (Plan::tally):
//   daxlease_operator_leases{state}          DaxLeases by status.state
//   daxlease_operator_grants_total
//   daxlease_operator_revocations_total      revokes decided
//   daxlease_operator_fences_total           fences the owners confirmed
//   daxlease_operator_recalls_completed_total
//   daxlease_operator_recall_duration_seconds (histogram, startedAt->Complete)
// Thread-safe.
#ifndef DAXLEASE_OPERATOR_METRICS_H_
#define DAXLEASE_OPERATOR_METRICS_H_

#include <array>
#include <cstdint>
#include <map>
#include <string>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lib/k8s/workqueue.h"
#include "operator/plan.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace daxlease::op {

// The controller label and the work queue name.
inline constexpr char kControllerName[] = "daxvolume";

class OperatorMetrics final : public k8s::WorkQueueObserver {
 public:
  // Registers the families in `registry`, which must outlive this.
  OperatorMetrics(prometheus::Registry& registry, int workers);
  OperatorMetrics(const OperatorMetrics&) = delete;
  OperatorMetrics& operator=(const OperatorMetrics&) = delete;

  enum class Result { kSuccess, kError, kRequeueAfter };
  void Reconciled(Result result, absl::Duration took);
  // A worker finished a key it took from the queue after `took`.
  void Worked(absl::Duration took);
  // A pass over `volume` stored `plan`: its tally, its recall durations, and
  // the volume's leases by state (replacing what the volume counted before;
  // a volume without leases counts nothing).
  void Stored(const std::string& volume, const Plan& plan);

  // k8s::WorkQueueObserver.
  void Added() override;
  void Depth(size_t ready) override;
  void Waited(absl::Duration d) override;
  void Retried() override;

 private:
  static constexpr int kStates = 5;  // api::LeaseState values

  prometheus::Family<prometheus::Counter>& reconcile_total_;
  prometheus::Counter& success_;
  prometheus::Counter& error_;
  prometheus::Counter& requeue_after_;
  prometheus::Counter& errors_;
  prometheus::Histogram& reconcile_time_;
  prometheus::Gauge& depth_;
  prometheus::Counter& adds_;
  prometheus::Histogram& queue_duration_;
  prometheus::Histogram& work_duration_;
  prometheus::Counter& retries_;
  std::array<prometheus::Gauge*, kStates> leases_{};
  prometheus::Counter& grants_;
  prometheus::Counter& revocations_;
  prometheus::Counter& fences_;
  prometheus::Counter& recalls_completed_;
  prometheus::Histogram& recall_duration_;

  absl::Mutex mu_;
  // Each volume's leases by state, as its last stored pass left them.
  std::map<std::string, std::array<int, kStates>> by_volume_
      ABSL_GUARDED_BY(mu_);
  std::array<int64_t, kStates> total_ ABSL_GUARDED_BY(mu_){};
};

}  // namespace daxlease::op

#endif  // DAXLEASE_OPERATOR_METRICS_H_
