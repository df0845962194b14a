#include "csi/volume_locks.h"

#include "absl/strings/str_cat.h"

namespace daxlease::csi {

absl::StatusOr<VolumeLocks::Guard> VolumeLocks::TryLock(absl::string_view id) {
  absl::MutexLock l(&mu_);
  std::string key(id);
  if (!held_.insert(key).second) {
    return absl::AbortedError(
        absl::StrCat("operation pending for volume ", key));
  }
  return Guard(this, std::move(key));
}

bool VolumeLocks::IsLocked(absl::string_view id) const {
  absl::MutexLock l(&mu_);
  return held_.count(std::string(id)) > 0;
}

void VolumeLocks::Release(const std::string& id) {
  absl::MutexLock l(&mu_);
  held_.erase(id);
}

}  // namespace daxlease::csi
