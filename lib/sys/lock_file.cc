#include "lib/sys/lock_file.h"

#include <fcntl.h>
#include <sys/file.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "lib/base/status.h"

namespace daxlease::sys {

absl::StatusOr<LockFile> LockFile::Acquire(absl::string_view dir) {
  std::string path = absl::StrCat(dir, "/LOCK");
  ASSIGN_OR_RETURN(UniqueFd fd,
                   OpenFd(path, O_RDWR | O_CREAT | O_NOFOLLOW, 0600));
  int rc;
  do {
    rc = ::flock(fd.get(), LOCK_EX | LOCK_NB);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    if (errno == EWOULDBLOCK) {
      return absl::FailedPreconditionError(absl::StrCat(
          path, " is held by another process: another daxlease-csi uses ",
          "this state directory; refusing to start a second one"));
    }
    return base::ErrnoStatus("flock", path, errno);
  }
  return LockFile(std::move(path), std::move(fd));
}

}  // namespace daxlease::sys
