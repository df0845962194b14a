#include "operator/events.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "lib/api/json.h"
#include "lib/api/types.h"
#include "lib/base/log.h"

namespace daxlease::op {

k8s::Json EventObject(const EventSpec& e, absl::Time now,
                      const std::string& component, const std::string& ns) {
  std::string ts = api::FormatWireTime(now);
  return {
      {"apiVersion", "v1"},
      {"kind", "Event"},
      {"metadata",
       {{"generateName", absl::AsciiStrToLower(e.name) + "."},
        {"namespace", ns}}},
      {"involvedObject",
       {{"apiVersion", api::kApiVersion},
        {"kind", e.kind},
        {"name", e.name},
        {"uid", e.uid}}},
      {"reason", e.reason},
      {"message", e.message},
      {"type", e.warning ? "Warning" : "Normal"},
      {"firstTimestamp", ts},
      {"lastTimestamp", ts},
      {"count", 1},
      {"source", {{"component", component}}},
      {"reportingComponent", component},
  };
}

KubeEventRecorder::KubeEventRecorder(k8s::KubeClient& client,
                                     base::Clock& clock, std::string component,
                                     std::string ns, size_t max_queued)
    : client_(client),
      clock_(clock),
      component_(std::move(component)),
      ns_(std::move(ns)),
      max_queued_(max_queued),
      thread_([this] { Run(); }) {}

KubeEventRecorder::~KubeEventRecorder() {
  {
    absl::MutexLock l(&mu_);
    stop_ = true;
  }
  thread_.join();
}

void KubeEventRecorder::Record(const EventSpec& e) {
  absl::MutexLock l(&mu_);
  if (stop_) return;
  if (queue_.size() >= max_queued_) {
    queue_.pop_front();
    ++dropped_;
  }
  queue_.push_back(e);
}

int64_t KubeEventRecorder::dropped() const {
  absl::MutexLock l(&mu_);
  return dropped_;
}

void KubeEventRecorder::Run() {
  for (;;) {
    EventSpec e;
    {
      absl::MutexLock l(&mu_);
      mu_.Await(absl::Condition(
          +[](KubeEventRecorder* r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(r->mu_) {
            return r->stop_ || !r->queue_.empty();
          },
          this));
      if (queue_.empty()) return;  // stopping and drained
      e = std::move(queue_.front());
      queue_.pop_front();
    }
    absl::StatusOr<k8s::Json> st = client_.Create(
        k8s::EventResource(), EventObject(e, clock_.Now(), component_, ns_));
    if (!st.ok()) {
      base::LogWarn("event.dropped",
                    {{"object", e.name},
                     {"reason", e.reason},
                     {"error", std::string(st.status().message())}});
    }
  }
}

}  // namespace daxlease::op
