// Loop devices over backing files (the file backend's node-side device).
//
// A loop device is a kernel resource that outlives this process on purpose
// (a staged volume keeps its device across a plugin restart). So the owner
// of an attachment is the backing file, not a C++ object: AttachLoop is
// idempotent per backing file (it returns the device already attached to
// it), FindLoopsByBackingFile rediscovers it after a restart, and DetachLoop
// releases it explicitly. A device that is to go with its last user (a
// staging mount's) gets LO_FLAGS_AUTOCLEAR at attach and is handed back
// open, so that it stays until the mount holds it
// (AttachLoopWithAutoclear); SetLoopAutoclear sets the flag on a device
// attached without it, at a price: LOOP_SET_STATUS64 freezes the device's
// queue, an RCU grace period (~15 ms), where LOOP_CONFIGURE costs well
// under a millisecond.
//
// A backing file is recognised by its inode, not its path: the kernel names
// it through the mount it was opened by, and once that mount is gone (the
// container of a previous plugin process) relative to that mount's root.
//
// Thread safety: the kernel serializes loop configuration; two concurrent
// AttachLoop calls for the same file may both attach (callers serialize per
// volume).
#ifndef DAXLEASE_LIB_SYS_LOOP_DEVICE_H_
#define DAXLEASE_LIB_SYS_LOOP_DEVICE_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "lib/sys/fd.h"

namespace daxlease::sys {

// lo_file_name keeps this many bytes of the name an attacher gives.
inline constexpr size_t kLoopNameMax = 63;

// An attached loop device as the kernel reports it.
struct LoopDevice {
  std::string device;            // "/dev/loop3"
  std::string backing_file;      // as the kernel prints it now, without
                                 // " (deleted)"; see above for its mount
  bool backing_deleted = false;  // the backing file was unlinked
  std::string file_name;  // lo_file_name: the path the attacher gave, cut at
                          // 63 bytes
  uint64_t backing_device = 0;  // the backing file's st_dev and st_ino
  uint64_t backing_inode = 0;
  bool autoclear = false;
};

// Every attached loop device (from /sys/block/loop*, then
// LOOP_GET_STATUS64 on each).
absl::StatusOr<std::vector<LoopDevice>> ListLoops();

// The loop devices (e.g. "/dev/loop3") attached to `backing_file`: those
// over its inode while it exists, else those whose kernel path or given
// name is the path it had (an unlinked file, pass the path it had).
absl::StatusOr<std::vector<std::string>> FindLoopsByBackingFile(
    absl::string_view backing_file);

// The first of FindLoopsByBackingFile; nullopt when none.
absl::StatusOr<std::optional<std::string>> FindLoopByBackingFile(
    absl::string_view backing_file);

// Attaches `backing_file` read-write to a free loop device (LOOP_CONFIGURE,
// falling back to LOOP_SET_FD + LOOP_SET_STATUS64 on old kernels), autoclear
// off, lo_file_name its canonical path. Returns the device path.
// Idempotent: if a device is already attached to the file it is returned
// instead.
absl::StatusOr<std::string> AttachLoop(absl::string_view backing_file);

// A loop device as AttachLoopWithAutoclear hands it out.
struct LoopAttachment {
  std::string device;      // "/dev/loop3"
  bool autoclear = false;  // LO_FLAGS_AUTOCLEAR is set
  // The device, open: set when this call attached it with autoclear. The
  // kernel detaches it when the last user closes it, so the caller keeps
  // this until another user (a mount) holds it; closing it first detaches
  // the device.
  UniqueFd hold;
};

// As AttachLoop, but a device attached now gets LO_FLAGS_AUTOCLEAR (if
// `autoclear`) in the same LOOP_CONFIGURE and comes back held open. A
// device already attached to the file is returned as it is: no hold, its
// autoclear as the kernel reports it.
absl::StatusOr<LoopAttachment> AttachLoopWithAutoclear(
    absl::string_view backing_file, bool autoclear);

// Detaches the loop device (LOOP_CLR_FD). OK if it is not attached. While
// it is open elsewhere (mounted) the kernel defers the detach to its last
// close.
absl::Status DetachLoop(absl::string_view device);

// Detaches the loop device only if nobody holds it: opened exclusively
// (O_EXCL fails with EBUSY while it is mounted), then LOOP_CLR_FD.
// FailedPrecondition when it is in use; OK if not attached.
absl::Status DetachLoopIfUnused(absl::string_view device);

// Sets LO_FLAGS_AUTOCLEAR: the kernel detaches the device when its last
// user closes it. Call while a user (a mount) holds it. Costs a queue
// freeze (~15 ms): for a device attached earlier without the flag only.
absl::Status SetLoopAutoclear(absl::string_view device);

// Makes the loop device pick up the new size of its backing file
// (LOOP_SET_CAPACITY), after the file grew.
absl::Status RefreshLoopCapacity(absl::string_view device);

}  // namespace daxlease::sys

#endif  // DAXLEASE_LIB_SYS_LOOP_DEVICE_H_
