// WorkQueue: the rate-limited, de-duplicating queue of object keys between
// informer handlers and a reconciler, as client-go's workqueue:
//  - Add(key) of a key already waiting is a no-op (de-duplication);
//  - a key being processed (between Get and Done) is never handed to a second
//    worker; if it is added meanwhile it is re-queued on Done (so no change
//    is lost and no key is processed twice concurrently);
//  - AddRateLimited(key) re-adds after a per-key exponential backoff
//    (base_delay * 2^failures, capped at max_delay) combined with an overall
//    token bucket (qps/burst; qps 0 = off); Forget(key) resets the failures
//    after a success;
//  - AddAfter(key, d) adds at clock.Now() + d.
// Time comes from the injected base::Clock: with a FakeClock, delayed keys
// become ready when the test advances the clock (TryGet sees them at once;
// a blocked Get notices within ~10 ms of real time).
// Thread-safe: any number of producers and workers.
//
// A WorkQueueObserver sees what client-go's workqueue metrics count (depth,
// adds, time waited, retries); the operator turns it into Prometheus series.
#ifndef DAXLEASE_LIB_K8S_WORKQUEUE_H_
#define DAXLEASE_LIB_K8S_WORKQUEUE_H_

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lib/base/clock.h"

namespace daxlease::k8s {

// Told of a WorkQueue's traffic, as client-go's workqueue MetricsProvider.
// Called with the queue's lock held: implementations must be quick and must
// not call back into the queue.
class WorkQueueObserver {
 public:
  virtual ~WorkQueueObserver() = default;
  // A key was queued (an Add that was not de-duplicated away).
  virtual void Added() = 0;
  // Keys ready now, after every change.
  virtual void Depth(size_t ready) = 0;
  // A key handed to a worker had waited `d` since it was queued.
  virtual void Waited(absl::Duration d) = 0;
  // AddRateLimited was called (a failed pass is retried).
  virtual void Retried() = 0;
};

struct WorkQueueOptions {
  absl::Duration base_delay = absl::Milliseconds(5);
  absl::Duration max_delay = absl::Seconds(300);
  double qps = 10;  // overall rate of AddRateLimited; 0 = unlimited
  int burst = 100;
  // Not owned; must outlive the queue. Null: nobody is told.
  WorkQueueObserver* observer = nullptr;
};

class WorkQueue {
 public:
  // `clock` must outlive the queue.
  explicit WorkQueue(base::Clock& clock, WorkQueueOptions options = {});
  WorkQueue(const WorkQueue&) = delete;
  WorkQueue& operator=(const WorkQueue&) = delete;

  void Add(absl::string_view key);
  // d <= 0 is Add(key). A key already waiting to be added later keeps the
  // earlier of the two times.
  void AddAfter(absl::string_view key, absl::Duration d);
  // AddAfter(key, backoff) and counts one more failure for `key`.
  void AddRateLimited(absl::string_view key);
  // Clears `key`'s failure count (call after a successful reconcile).
  void Forget(absl::string_view key);
  int NumRequeues(absl::string_view key) const;
  // The backoff the next AddRateLimited(key) would use (for tests/logs).
  absl::Duration NextBackoff(absl::string_view key) const;

  // Blocks until a key is ready (returns it, now "processing") or the queue
  // is shut down and drained of ready keys (nullopt).
  std::optional<std::string> Get();
  // Non-blocking Get: a ready key or nullopt.
  std::optional<std::string> TryGet();
  // Ends processing of `key`; re-queues it if it was added meanwhile.
  void Done(absl::string_view key);

  // Wakes all Get()s; later Adds are ignored. Delayed keys are dropped.
  void ShutDown();
  bool ShuttingDown() const;

  // Keys ready now (not counting processing or delayed ones).
  size_t Len() const;
  size_t NumDelayed() const;

 private:
  void PromoteDueLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AddLocked(const std::string& key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PushLocked(const std::string& key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::optional<std::string> PopLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Duration BackoffLocked(const std::string& key) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  base::Clock& clock_;
  const WorkQueueOptions options_;
  mutable absl::Mutex mu_;
  std::deque<std::string> queue_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> dirty_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> processing_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, absl::Time> delayed_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int> failures_ ABSL_GUARDED_BY(mu_);
  // When each key in queue_ was queued (for WorkQueueObserver::Waited).
  std::map<std::string, absl::Time> queued_at_ ABSL_GUARDED_BY(mu_);
  double tokens_ ABSL_GUARDED_BY(mu_);
  absl::Time bucket_time_ ABSL_GUARDED_BY(mu_);
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace daxlease::k8s

#endif  // DAXLEASE_LIB_K8S_WORKQUEUE_H_
