// Loop devices over backing files (the file backend's node-side device).
//
// A loop device is a kernel resource that outlives this process on purpose
// (autoclear is off: a staged volume keeps its device across a plugin
// restart). So the owner of an attachment is the backing file, not a C++
// object: AttachLoop is idempotent per backing file (it returns the device
// already attached to it), FindLoopByBackingFile rediscovers it after a
// restart, and DetachLoop releases it explicitly.
//
// Thread safety: the kernel serializes loop configuration; two concurrent
// AttachLoop calls for the same file may both attach (callers serialize per
// volume).
#ifndef DAXLEASE_LIB_SYS_LOOP_DEVICE_H_
#define DAXLEASE_LIB_SYS_LOOP_DEVICE_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace daxlease::sys {

// The loop device (e.g. "/dev/loop3") currently attached to `backing_file`
// (compared after realpath), from /sys/block/loop*/loop/backing_file;
// nullopt when none. Also finds the device of a backing file that was
// unlinked meanwhile (pass the path it had).
absl::StatusOr<std::optional<std::string>> FindLoopByBackingFile(
    absl::string_view backing_file);

// Attaches `backing_file` read-write to a free loop device (LOOP_CONFIGURE,
// falling back to LOOP_SET_FD + LOOP_SET_STATUS64 on old kernels), autoclear
// off. Returns the device path. Idempotent: if a device is already attached
// to the file it is returned instead.
absl::StatusOr<std::string> AttachLoop(absl::string_view backing_file);

// Detaches the loop device (LOOP_CLR_FD). OK if it is not attached.
// Unavailable (EBUSY) while it is mounted or open exclusively.
absl::Status DetachLoop(absl::string_view device);

// Makes the loop device pick up the new size of its backing file
// (LOOP_SET_CAPACITY), after the file grew.
absl::Status RefreshLoopCapacity(absl::string_view device);

// Every loop device with a backing file: (device, backing file).
absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ListLoops();

}  // namespace daxlease::sys

#endif  // DAXLEASE_LIB_SYS_LOOP_DEVICE_H_
