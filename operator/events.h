// Where the operator's core/v1 Events go. KubeEventRecorder writes them to
// the API server from a background thread so a reconcile never waits for an
// event; FakeEventSink keeps them for tests.
#ifndef DAXLEASE_OPERATOR_EVENTS_H_
#define DAXLEASE_OPERATOR_EVENTS_H_

#include <deque>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "lib/base/clock.h"
#include "lib/k8s/client.h"
#include "operator/plan.h"

namespace daxlease::op {

class EventSink {
 public:
  virtual ~EventSink() = default;
  // Never blocks on I/O; best effort. Thread-safe.
  virtual void Record(const EventSpec& e) = 0;
};

class FakeEventSink final : public EventSink {
 public:
  void Record(const EventSpec& e) override {
    absl::MutexLock l(&mu_);
    events_.push_back(e);
  }
  std::vector<EventSpec> Take() {
    absl::MutexLock l(&mu_);
    return std::move(events_);
  }

 private:
  absl::Mutex mu_;
  std::vector<EventSpec> events_ ABSL_GUARDED_BY(mu_);
};

// Creates Events (namespace `ns`: cluster-scoped objects' events live in
// "default", where `kubectl describe` looks) with involvedObject pointing at
// the daxlease object. Keeps at most `max_queued` unsent events and drops
// the oldest beyond (counted in dropped()). The destructor sends what is
// queued (bounded by one attempt each) and joins the thread.
class KubeEventRecorder final : public EventSink {
 public:
  KubeEventRecorder(k8s::KubeClient& client, base::Clock& clock,
                    std::string component, std::string ns = "default",
                    size_t max_queued = 10000);
  ~KubeEventRecorder() override;
  KubeEventRecorder(const KubeEventRecorder&) = delete;
  KubeEventRecorder& operator=(const KubeEventRecorder&) = delete;

  void Record(const EventSpec& e) override;
  int64_t dropped() const;

 private:
  void Run();

  k8s::KubeClient& client_;
  base::Clock& clock_;
  const std::string component_;
  const std::string ns_;
  const size_t max_queued_;
  mutable absl::Mutex mu_;
  std::deque<EventSpec> queue_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  int64_t dropped_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread thread_;
};

// The core/v1 Event object for `e` (exposed for tests).
k8s::Json EventObject(const EventSpec& e, absl::Time now,
                      const std::string& component, const std::string& ns);

}  // namespace daxlease::op

#endif  // DAXLEASE_OPERATOR_EVENTS_H_
