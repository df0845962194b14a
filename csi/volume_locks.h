// VolumeLocks: one try-lock per volume ID, so that a second CSI call on a
// volume while one is running gets ABORTED ("operation pending for volume
// X", as the CSI spec asks) while calls on different volumes run in
// parallel. There is no global lock around CSI calls.
// Thread-safe.
#ifndef DAXLEASE_CSI_VOLUME_LOCKS_H_
#define DAXLEASE_CSI_VOLUME_LOCKS_H_

#include <set>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace daxlease::csi {

class VolumeLocks {
 public:
  // Holds the lock of one volume until destroyed. Movable.
  class Guard {
   public:
    Guard(Guard&& other) noexcept
        : locks_(other.locks_), id_(std::move(other.id_)) {
      other.locks_ = nullptr;
    }
    Guard& operator=(Guard&&) = delete;
    Guard(const Guard&) = delete;
    ~Guard() {
      if (locks_ != nullptr) locks_->Release(id_);
    }

   private:
    friend class VolumeLocks;
    Guard(VolumeLocks* locks, std::string id)
        : locks_(locks), id_(std::move(id)) {}
    VolumeLocks* locks_;
    std::string id_;
  };

  // Takes the lock of `id` or returns Aborted if it is held.
  absl::StatusOr<Guard> TryLock(absl::string_view id);

  bool IsLocked(absl::string_view id) const;

 private:
  void Release(const std::string& id);

  mutable absl::Mutex mu_;
  std::set<std::string> held_ ABSL_GUARDED_BY(mu_);
};

}  // namespace daxlease::csi

#endif  // DAXLEASE_CSI_VOLUME_LOCKS_H_
