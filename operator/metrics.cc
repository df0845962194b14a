#include "operator/metrics.h"

#include "lib/api/json.h"
#include "lib/api/types.h"

namespace daxlease::op {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;
using prometheus::Histogram;

// controller-runtime's reconcile_time_seconds buckets.
const Histogram::BucketBoundaries& ReconcileBuckets() {
  static const Histogram::BucketBoundaries b = {
      0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3,  0.35,
      0.4,   0.45, 0.5,   0.6,  0.7, 0.8,  0.9, 1.0,  1.25, 1.5,
      1.75,  2.0,  2.5,   3.0,  3.5, 4.0,  4.5, 5,    6,    7,
      8,     9,    10,    15,   20,  25,   30,  40,   50,   60};
  return b;
}

// client-go's workqueue buckets: 10 ns to 10 s, powers of ten.
const Histogram::BucketBoundaries& QueueBuckets() {
  static const Histogram::BucketBoundaries b = {1e-8, 1e-7, 1e-6, 1e-5, 1e-4,
                                                1e-3, 1e-2, 1e-1, 1,    10};
  return b;
}

// A recall ends within its grace (at most the CRDs' 86400 s) plus a fence.
const Histogram::BucketBoundaries& RecallBuckets() {
  static const Histogram::BucketBoundaries b = {
      0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600};
  return b;
}

const prometheus::Labels& Ctrl() {
  static const prometheus::Labels l = {{"controller", kControllerName}};
  return l;
}
const prometheus::Labels& Queue() {
  static const prometheus::Labels l = {{"name", kControllerName}};
  return l;
}

}  // namespace

OperatorMetrics::OperatorMetrics(prometheus::Registry& r, int workers)
    : reconcile_total_(BuildCounter()
                           .Name("controller_runtime_reconcile_total")
                           .Help("Total number of reconciliations per "
                                 "controller")
                           .Register(r)),
      success_(reconcile_total_.Add(
          {{"controller", kControllerName}, {"result", "success"}})),
      error_(reconcile_total_.Add(
          {{"controller", kControllerName}, {"result", "error"}})),
      requeue_after_(reconcile_total_.Add(
          {{"controller", kControllerName}, {"result", "requeue_after"}})),
      errors_(BuildCounter()
                  .Name("controller_runtime_reconcile_errors_total")
                  .Help("Total number of reconciliation errors per controller")
                  .Register(r)
                  .Add(Ctrl())),
      reconcile_time_(BuildHistogram()
                          .Name("controller_runtime_reconcile_time_seconds")
                          .Help("Length of time per reconciliation per "
                                "controller")
                          .Register(r)
                          .Add(Ctrl(), ReconcileBuckets())),
      depth_(BuildGauge()
                 .Name("workqueue_depth")
                 .Help("Current depth of workqueue")
                 .Register(r)
                 .Add(Queue())),
      adds_(BuildCounter()
                .Name("workqueue_adds_total")
                .Help("Total number of adds handled by workqueue")
                .Register(r)
                .Add(Queue())),
      queue_duration_(BuildHistogram()
                          .Name("workqueue_queue_duration_seconds")
                          .Help("How long in seconds an item stays in "
                                "workqueue before being requested")
                          .Register(r)
                          .Add(Queue(), QueueBuckets())),
      work_duration_(BuildHistogram()
                         .Name("workqueue_work_duration_seconds")
                         .Help("How long in seconds processing an item from "
                               "workqueue takes")
                         .Register(r)
                         .Add(Queue(), QueueBuckets())),
      retries_(BuildCounter()
                   .Name("workqueue_retries_total")
                   .Help("Total number of retries handled by workqueue")
                   .Register(r)
                   .Add(Queue())),
      grants_(BuildCounter()
                  .Name("daxlease_operator_grants_total")
                  .Help("DaxLeases granted")
                  .Register(r)
                  .Add({})),
      revocations_(BuildCounter()
                       .Name("daxlease_operator_revocations_total")
                       .Help("DaxLeases whose revoke was decided (deadline "
                             "missed, unflushed ack, recall cancelled)")
                       .Register(r)
                       .Add({})),
      fences_(BuildCounter()
                  .Name("daxlease_operator_fences_total")
                  .Help("Fences of revoked DaxLeases confirmed by the owner "
                        "agents")
                  .Register(r)
                  .Add({})),
      recalls_completed_(BuildCounter()
                             .Name("daxlease_operator_recalls_completed_total")
                             .Help("DaxRecalls completed")
                             .Register(r)
                             .Add({})),
      recall_duration_(BuildHistogram()
                           .Name("daxlease_operator_recall_duration_seconds")
                           .Help("Time from a DaxRecall's start to its "
                                 "completion")
                           .Register(r)
                           .Add({}, RecallBuckets())) {
  BuildGauge()
      .Name("controller_runtime_max_concurrent_reconciles")
      .Help("Maximum number of concurrent reconciles per controller")
      .Register(r)
      .Add(Ctrl())
      .Set(workers);
  auto& leases = BuildGauge()
                     .Name("daxlease_operator_leases")
                     .Help("DaxLeases by status.state")
                     .Register(r);
  for (int i = 0; i < kStates; ++i) {
    leases_[i] = &leases.Add(
        {{"state", api::EnumName(static_cast<api::LeaseState>(i))}});
  }
}

void OperatorMetrics::Reconciled(Result result, absl::Duration took) {
  switch (result) {
    case Result::kSuccess:
      success_.Increment();
      break;
    case Result::kError:
      error_.Increment();
      errors_.Increment();
      break;
    case Result::kRequeueAfter:
      requeue_after_.Increment();
      break;
  }
  reconcile_time_.Observe(absl::ToDoubleSeconds(took));
}

void OperatorMetrics::Worked(absl::Duration took) {
  work_duration_.Observe(absl::ToDoubleSeconds(took));
}

void OperatorMetrics::Stored(const std::string& volume, const Plan& plan) {
  const ActionTally& t = plan.tally;
  grants_.Increment(t.grants);
  revocations_.Increment(t.revocations);
  fences_.Increment(t.fences);
  recalls_completed_.Increment(t.recalls_completed);
  for (absl::Duration d : plan.recall_durations) {
    recall_duration_.Observe(absl::ToDoubleSeconds(d));
  }
  std::array<int, kStates> now{};
  for (const api::DaxLease& l : plan.desired.leases) {
    if (!l.status.state.has_value()) continue;
    const int i = static_cast<int>(*l.status.state);
    if (i >= 0 && i < kStates) ++now[i];
  }
  absl::MutexLock lock(&mu_);
  std::array<int, kStates>& was = by_volume_[volume];
  for (int i = 0; i < kStates; ++i) {
    total_[i] += now[i] - was[i];
    leases_[i]->Set(total_[i]);
  }
  if (now == std::array<int, kStates>{}) {
    by_volume_.erase(volume);
  } else {
    was = now;
  }
}

void OperatorMetrics::Added() { adds_.Increment(); }
void OperatorMetrics::Depth(size_t ready) {
  depth_.Set(static_cast<double>(ready));
}
void OperatorMetrics::Waited(absl::Duration d) {
  queue_duration_.Observe(absl::ToDoubleSeconds(d));
}
void OperatorMetrics::Retried() { retries_.Increment(); }

}  // namespace daxlease::op
