// UniqueFd: the one owner of a file descriptor. Closes it on destruction;
// movable, not copyable. Every fd that lib/sys hands out is wrapped in one.
#ifndef DAXLEASE_LIB_SYS_FD_H_
#define DAXLEASE_LIB_SYS_FD_H_

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace daxlease::sys {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { Reset(); }
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.Release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) Reset(other.Release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  // Gives up ownership without closing.
  int Release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  // Closes the held fd (errors from close are ignored: the fd is gone
  // either way) and takes `fd`.
  void Reset(int fd = -1);

 private:
  int fd_ = -1;
};

// open(2) with O_CLOEXEC added; a failure becomes ErrnoStatus("open", path).
absl::StatusOr<UniqueFd> OpenFd(absl::string_view path, int flags,
                                int mode = 0);

}  // namespace daxlease::sys

#endif  // DAXLEASE_LIB_SYS_FD_H_
