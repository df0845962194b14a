// Copying one file's contents into another as cheaply as the file system
// allows: a reflink (FICLONERANGE: the two files share extents, copy-on-write,
// instant) where the file system offers it (xfs with reflink, btrfs), else a
// sparse-aware copy: only the data extents of the source (SEEK_DATA /
// SEEK_HOLE) are copied with copy_file_range(2) (the kernel copies, no
// round trip through user space), so holes and unwritten extents (a fresh
// fallocate) cost nothing and stay holes in the destination.
//
// Used for snapshots and clones of file-backend volumes (csi/file_backend.h).
// Errors carry the operation, the path and errno; ENOSPC is
// ResourceExhausted. Thread-safe (no shared state).
#ifndef DAXLEASE_LIB_SYS_FILE_COPY_H_
#define DAXLEASE_LIB_SYS_FILE_COPY_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace daxlease::sys {

struct CopyOptions {
  // Try a reflink first. Off: always copy bytes.
  bool allow_reflink = true;
  // 0: as fast as the disks go. Otherwise the byte copy is paced to this
  // rate (a node's snapshot should not starve the volumes in use).
  uint64_t bytes_per_second = 0;
};

struct CopyResult {
  bool reflinked = false;     // a reflink did it
  uint64_t bytes_copied = 0;  // data bytes copied (0 when reflinked)
  uint64_t size_bytes = 0;    // the source's size
};

// Makes the first size(from) bytes of `to` equal to `from`'s. `to` is
// created (0600) if missing and grown to size(from) if smaller; a larger
// `to` keeps its size and its bytes past size(from). REQUIRES: the parts of
// `to` below size(from) read as zeros wherever `from` has a hole (a new
// file, or a fresh fallocate), since holes are not copied. `to` is fsynced
// before the call returns. Nobody may write `from` meanwhile (the caller
// quiesces it); a reader of `to` meanwhile sees a partial copy.
absl::StatusOr<CopyResult> CopyFileData(absl::string_view from,
                                        absl::string_view to,
                                        const CopyOptions& options = {});

}  // namespace daxlease::sys

#endif  // DAXLEASE_LIB_SYS_FILE_COPY_H_
