#include "lib/sys/fd.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "lib/base/status.h"

namespace daxlease::sys {

void UniqueFd::Reset(int fd) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

absl::StatusOr<UniqueFd> OpenFd(absl::string_view path, int flags, int mode) {
  std::string p(path);
  int fd;
  do {
    fd = ::open(p.c_str(), flags | O_CLOEXEC, mode);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return base::ErrnoStatus("open", path, errno);
  return UniqueFd(fd);
}

}  // namespace daxlease::sys
