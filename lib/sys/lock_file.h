// LockFile: one process per directory, like leveldb's LOCK. An flock(2)
// exclusive lock on <dir>/LOCK, held for as long as the object lives (in
// practice the process's life: the kernel drops it when the process dies,
// kill -9 included, so a crash never leaves a stale lock behind).
//
// The fd is close-on-exec: a child (mkfs, resize2fs) does not inherit the
// lock, so a survivor child never keeps a restarted plugin out.
#ifndef DAXLEASE_LIB_SYS_LOCK_FILE_H_
#define DAXLEASE_LIB_SYS_LOCK_FILE_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "lib/sys/fd.h"

namespace daxlease::sys {

class LockFile {
 public:
  // Creates <dir>/LOCK (mode 0600) if missing and locks it without waiting.
  // FailedPrecondition naming the path when another process (or another
  // LockFile in this one) holds it; other failures carry errno.
  static absl::StatusOr<LockFile> Acquire(absl::string_view dir);

  LockFile(LockFile&&) = default;
  LockFile& operator=(LockFile&&) = default;
  const std::string& path() const { return path_; }

 private:
  LockFile(std::string path, UniqueFd fd)
      : path_(std::move(path)), fd_(std::move(fd)) {}
  std::string path_;
  UniqueFd fd_;
};

}  // namespace daxlease::sys

#endif  // DAXLEASE_LIB_SYS_LOCK_FILE_H_
