// File helpers over plain paths: preallocation, size changes, durable
// (atomic) replacement of small state files, directory creation, statvfs.
//
// Every function is a thin wrapper whose failure is one status carrying the
// failing operation, the path and errno (base::ErrnoStatus). All are
// thread-safe in the sense of the underlying syscalls.
#ifndef DAXLEASE_LIB_SYS_FILE_H_
#define DAXLEASE_LIB_SYS_FILE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace daxlease::sys {

// Whole contents of a (small) file. NotFound when it does not exist.
absl::StatusOr<std::string> ReadFile(absl::string_view path);

// Writes all of `data` to `fd` (retrying short writes and EINTR); `path`
// only names the file in the error.
absl::Status WriteAll(int fd, absl::string_view data, absl::string_view path);

// Replaces `path` atomically and durably: writes `path.tmp`, fsyncs it,
// renames it over `path`, fsyncs the directory. A crash leaves either the
// old or the new contents, never a torn file. Not safe against two writers
// of the same path at once (callers serialize per path).
absl::Status WriteFileAtomic(absl::string_view path, absl::string_view data);

// Creates `path` (mode 0600) if missing and makes sure at least `size` bytes
// are allocated (fallocate, mode 0: the file grows if smaller, never
// shrinks). ENOSPC becomes ResourceExhausted. Idempotent.
absl::Status Fallocate(absl::string_view path, uint64_t size);

// Grows the existing `path` to `size` bytes, allocating only the part past
// its end (fallocate of the whole length reserves room for all of it first:
// xfs then answers ENOSPC although the new part fits). Never shrinks;
// ENOSPC becomes ResourceExhausted. Idempotent.
absl::Status FallocateTail(absl::string_view path, uint64_t size);

// ftruncate(2) of an existing file to exactly `size`.
absl::Status Truncate(absl::string_view path, uint64_t size);

// fsync(2) of a file or directory.
absl::Status Fsync(absl::string_view path);

// Size in bytes (st_size) of a file, or of a block device (BLKGETSIZE64).
absl::StatusOr<uint64_t> FileSize(absl::string_view path);

// Bytes actually allocated on disk for a file (st_blocks * 512).
absl::StatusOr<uint64_t> AllocatedBytes(absl::string_view path);

// mkdir -p with `mode` for created components. Idempotent.
absl::Status MakeDirs(absl::string_view path, int mode = 0755);

// unlink(2); OK when the file does not exist.
absl::Status RemoveFile(absl::string_view path);

// True if something (file, directory, device, dangling symlink) is there.
bool PathExists(absl::string_view path);

// realpath(3).
absl::StatusOr<std::string> CanonicalPath(absl::string_view path);

// Names (not paths) of the entries of a directory, without "." and "..",
// sorted.
absl::StatusOr<std::vector<std::string>> ListDir(absl::string_view path);

struct FsUsage {
  uint64_t total_bytes = 0;
  uint64_t available_bytes = 0;  // for unprivileged users (f_bavail)
  uint64_t used_bytes = 0;
  uint64_t total_inodes = 0;
  uint64_t free_inodes = 0;
  uint64_t used_inodes = 0;
};
// statvfs(3) of the filesystem holding `path`.
absl::StatusOr<FsUsage> StatFs(absl::string_view path);

}  // namespace daxlease::sys

#endif  // DAXLEASE_LIB_SYS_FILE_H_
