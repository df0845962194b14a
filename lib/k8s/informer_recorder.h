// InformerRecorder: for tests, records an informer's handler calls as
// "add NAME", "update NAME", "delete NAME" and waits for one to appear.
// Header-only; thread-safe (handlers run on the informer's thread).
#ifndef DAXLEASE_LIB_K8S_INFORMER_RECORDER_H_
#define DAXLEASE_LIB_K8S_INFORMER_RECORDER_H_

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lib/k8s/informer.h"

namespace daxlease::k8s {

class InformerRecorder {
 public:
  // `record_resyncs`: also record an update whose old and new objects have
  // the same resourceVersion (a resync redelivery). `wait`: WaitFor's limit.
  explicit InformerRecorder(bool record_resyncs = true,
                            absl::Duration wait = absl::Seconds(10))
      : record_resyncs_(record_resyncs), wait_(wait) {}

  InformerHandlers Handlers() {
    return {
        [this](const Json& o) { Push("add " + NameOf(o)); },
        [this](const Json& o, const Json& n) {
          if (record_resyncs_ || ResourceVersionOf(o) != ResourceVersionOf(n)) {
            Push("update " + NameOf(n));
          }
        },
        [this](const Json& o) { Push("delete " + NameOf(o)); }};
  }

  // Whether `ev` was recorded (now or within the wait).
  bool WaitFor(const std::string& ev) {
    absl::MutexLock l(&mu_);
    auto seen = [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
      return std::find(events_.begin(), events_.end(), ev) != events_.end();
    };
    return mu_.AwaitWithTimeout(absl::Condition(&seen), wait_);
  }

  std::vector<std::string> Events() {
    absl::MutexLock l(&mu_);
    return events_;
  }

 private:
  void Push(std::string s) {
    absl::MutexLock l(&mu_);
    events_.push_back(std::move(s));
  }

  const bool record_resyncs_;
  const absl::Duration wait_;
  absl::Mutex mu_;
  std::vector<std::string> events_ ABSL_GUARDED_BY(mu_);
};

}  // namespace daxlease::k8s

#endif  // DAXLEASE_LIB_K8S_INFORMER_RECORDER_H_
