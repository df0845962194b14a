#include "operator/events.h"

#include <algorithm>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
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
  queue_.push_back({e, clock_.Now()});
}

void KubeEventRecorder::Quiet(const std::string& key, absl::Duration at_most) {
  absl::MutexLock l(&mu_);
  quiet_[key] = absl::Now() + at_most;
}

void KubeEventRecorder::Unquiet(const std::string& key) {
  absl::MutexLock l(&mu_);
  quiet_.erase(key);
}

absl::Time KubeEventRecorder::QuietUntilLocked() const {
  absl::Time until = absl::InfinitePast();
  for (const auto& [key, end] : quiet_) until = std::max(until, end);
  return until;
}

int64_t KubeEventRecorder::dropped() const {
  absl::MutexLock l(&mu_);
  return dropped_;
}

void KubeEventRecorder::Run() {
  for (;;) {
    Queued e;
    {
      absl::MutexLock l(&mu_);
      for (;;) {
        mu_.Await(absl::Condition(
            +[](KubeEventRecorder* r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(r->mu_) {
              return r->stop_ || !r->queue_.empty();
            },
            this));
        if (stop_) break;
        // Quiet: wait for the last quiet key to go or its time to pass.
        const absl::Time until = QuietUntilLocked();
        const absl::Time now = absl::Now();
        if (until <= now) {
          quiet_.clear();
          break;
        }
        mu_.AwaitWithTimeout(
            absl::Condition(
                +[](KubeEventRecorder* r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(
                     r->mu_) { return r->stop_ || r->quiet_.empty(); },
                this),
            until - now);
      }
      if (queue_.empty()) return;  // stopping and drained
      e = std::move(queue_.front());
      queue_.pop_front();
    }
    const absl::Time t0 = absl::Now();
    absl::StatusOr<k8s::Json> st = client_.Create(
        k8s::EventResource(), EventObject(e.spec, e.at, component_, ns_));
    base::LogDebug(
        "event.created",
        {{"object", e.spec.name},
         {"reason", e.spec.reason},
         {"ms", absl::StrCat(absl::ToDoubleMilliseconds(absl::Now() - t0))}});
    if (!st.ok()) {
      base::LogWarn("event.dropped",
                    {{"object", e.spec.name},
                     {"reason", e.spec.reason},
                     {"error", std::string(st.status().message())}});
    }
  }
}

}  // namespace daxlease::op
