// Filesystem detection through libblkid: the guard that keeps daxlease from
// ever running mkfs over data (staging again after a restart must find the
// filesystem that is there and keep it).
#ifndef DAXLEASE_LIB_SYS_BLKID_H_
#define DAXLEASE_LIB_SYS_BLKID_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace daxlease::sys {

// The filesystem (or other signature: "xfs", "ext4", "swap",
// "LVM2_member", a partition table as "PTTYPE:gpt") found on the device or
// image file, or "" when libblkid finds nothing. An error only when the
// device cannot be probed at all (missing, unreadable): callers must then
// not format. Reads the device directly (no blkid cache). Thread-safe.
absl::StatusOr<std::string> ProbeFilesystemType(absl::string_view device);

}  // namespace daxlease::sys

#endif  // DAXLEASE_LIB_SYS_BLKID_H_
