// Where the operator's core/v1 Events go. KubeEventRecorder writes them to
// the API server from a background thread so a reconcile never waits for an
// event; FakeEventSink keeps them for tests.
//
// Events only show what happened, so they may wait: while a recall's
// critical writes are under way (its start, then its outcome: Reconciler,
// recall_display_hold) the reconciler quiets the sink, and the recorder
// sends nothing, so those writes do not share the API server with a stream
// of event creates (a recall of N <= 10 leases records 2N + 3 events, and
// a burst of grants before it may still be draining).
#ifndef DAXLEASE_OPERATOR_EVENTS_H_
#define DAXLEASE_OPERATOR_EVENTS_H_

#include <deque>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lib/base/clock.h"
#include "lib/k8s/client.h"
#include "operator/plan.h"

namespace daxlease::op {

class EventSink {
 public:
  virtual ~EventSink() = default;
  // Never blocks on I/O; best effort. Thread-safe.
  virtual void Record(const EventSpec& e) = 0;
  // Asks that nothing be sent while `key` (a volume) is quiet: until
  // Unquiet(key), or for at most `at_most` (real time) from now. Events
  // recorded meanwhile are kept and sent afterwards, in order, with the time
  // they were recorded. A sink that sends nothing anyway ignores it.
  virtual void Quiet(const std::string& key, absl::Duration at_most) {}
  virtual void Unquiet(const std::string& key) {}
};

class FakeEventSink : public EventSink {
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
// the oldest beyond (counted in dropped()). Sends nothing while any key is
// quiet (EventSink::Quiet). The destructor sends what is queued (bounded by
// one attempt each, quiet or not) and joins the thread.
class KubeEventRecorder final : public EventSink {
 public:
  KubeEventRecorder(k8s::KubeClient& client, base::Clock& clock,
                    std::string component, std::string ns = "default",
                    size_t max_queued = 10000);
  ~KubeEventRecorder() override;
  KubeEventRecorder(const KubeEventRecorder&) = delete;
  KubeEventRecorder& operator=(const KubeEventRecorder&) = delete;

  void Record(const EventSpec& e) override;
  void Quiet(const std::string& key, absl::Duration at_most) override;
  void Unquiet(const std::string& key) override;
  int64_t dropped() const;

 private:
  struct Queued {
    EventSpec spec;
    absl::Time at;  // clock_.Now() when recorded
  };
  void Run();
  // The end of the longest quiet (real time); InfinitePast: none.
  absl::Time QuietUntilLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  k8s::KubeClient& client_;
  base::Clock& clock_;
  const std::string component_;
  const std::string ns_;
  const size_t max_queued_;
  mutable absl::Mutex mu_;
  std::deque<Queued> queue_ ABSL_GUARDED_BY(mu_);
  // Quiet keys and when each quiet ends at the latest (absl::Now()).
  std::map<std::string, absl::Time> quiet_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  int64_t dropped_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread thread_;
};

// The core/v1 Event object for `e` (exposed for tests).
k8s::Json EventObject(const EventSpec& e, absl::Time now,
                      const std::string& component, const std::string& ns);

}  // namespace daxlease::op

#endif  // DAXLEASE_OPERATOR_EVENTS_H_
