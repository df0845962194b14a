#include "lib/sys/loop_device.h"

#include <fcntl.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "lib/base/status.h"
#include "lib/sys/fd.h"
#include "lib/sys/file.h"

#ifndef LOOP_CONFIGURE
#define LOOP_CONFIGURE 0x4C0A
struct loop_config {
  __u32 fd;
  __u32 block_size;
  struct loop_info64 info;
  __u64 __reserved[8];
};
#endif

namespace daxlease::sys {
namespace {

constexpr int kLoopMajor = 7;

// /dev/loopN may be missing inside containers whose /dev is not devtmpfs.
absl::Status EnsureDeviceNode(int n, const std::string& dev) {
  if (PathExists(dev)) return absl::OkStatus();
  if (::mknod(dev.c_str(), S_IFBLK | 0660, makedev(kLoopMajor, n)) != 0 &&
      errno != EEXIST) {
    return base::ErrnoStatus("mknod", dev, errno);
  }
  return absl::OkStatus();
}

absl::Status Configure(int loop_fd, int file_fd, const std::string& dev,
                       const std::string& backing) {
  struct loop_config cfg;
  std::memset(&cfg, 0, sizeof(cfg));
  cfg.fd = static_cast<__u32>(file_fd);
  std::strncpy(reinterpret_cast<char*>(cfg.info.lo_file_name), backing.c_str(),
               LO_NAME_SIZE - 1);
  if (::ioctl(loop_fd, LOOP_CONFIGURE, &cfg) == 0) return absl::OkStatus();
  if (errno != EINVAL && errno != ENOTTY) {
    return base::ErrnoStatus("ioctl(LOOP_CONFIGURE)", dev, errno);
  }
  // Kernels before 5.8: two steps.
  if (::ioctl(loop_fd, LOOP_SET_FD, file_fd) != 0) {
    return base::ErrnoStatus("ioctl(LOOP_SET_FD)", dev, errno);
  }
  if (::ioctl(loop_fd, LOOP_SET_STATUS64, &cfg.info) != 0) {
    int err = errno;
    ::ioctl(loop_fd, LOOP_CLR_FD, 0);
    return base::ErrnoStatus("ioctl(LOOP_SET_STATUS64)", dev, err);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ListLoops() {
  std::vector<std::pair<std::string, std::string>> out;
  auto names = ListDir("/sys/block");
  if (!names.ok()) return names.status();
  for (const std::string& name : *names) {
    if (!absl::StartsWith(name, "loop")) continue;
    auto backing =
        ReadFile(absl::StrCat("/sys/block/", name, "/loop/backing_file"));
    if (!backing.ok()) continue;  // not attached (no loop/ directory)
    std::string b(absl::StripTrailingAsciiWhitespace(*backing));
    out.emplace_back(absl::StrCat("/dev/", name), b);
  }
  return out;
}

absl::StatusOr<std::optional<std::string>> FindLoopByBackingFile(
    absl::string_view backing_file) {
  std::string want(backing_file);
  auto canon = CanonicalPath(backing_file);
  if (canon.ok()) want = *canon;
  ASSIGN_OR_RETURN(auto loops, ListLoops());
  for (const auto& [dev, backing] : loops) {
    // The kernel appends " (deleted)" once the backing file was unlinked;
    // the device is still attached to it and must be found to detach it.
    if (backing == want || backing == absl::StrCat(want, " (deleted)")) {
      return std::optional<std::string>(dev);
    }
  }
  return std::optional<std::string>();
}

absl::StatusOr<std::string> AttachLoop(absl::string_view backing_file) {
  ASSIGN_OR_RETURN(std::string backing, CanonicalPath(backing_file));
  ASSIGN_OR_RETURN(auto existing, FindLoopByBackingFile(backing));
  if (existing.has_value()) return *existing;

  ASSIGN_OR_RETURN(UniqueFd file_fd, OpenFd(backing, O_RDWR));
  ASSIGN_OR_RETURN(UniqueFd ctl, OpenFd("/dev/loop-control", O_RDWR));
  // Another process may grab the free device between GET_FREE and
  // CONFIGURE (EBUSY): try again with the next free one.
  for (int attempt = 0; attempt < 16; ++attempt) {
    int n = ::ioctl(ctl.get(), LOOP_CTL_GET_FREE);
    if (n < 0) {
      return base::ErrnoStatus("ioctl(LOOP_CTL_GET_FREE)", "/dev/loop-control",
                               errno);
    }
    std::string dev = absl::StrCat("/dev/loop", n);
    RETURN_IF_ERROR(EnsureDeviceNode(n, dev));
    ASSIGN_OR_RETURN(UniqueFd loop_fd, OpenFd(dev, O_RDWR));
    absl::Status st = Configure(loop_fd.get(), file_fd.get(), dev, backing);
    if (st.ok()) return dev;
    if (!absl::IsUnavailable(st)) return st;  // EBUSY maps to Unavailable
  }
  return absl::UnavailableError(
      absl::StrCat("attach loop for ", backing, ": no free loop device"));
}

absl::Status DetachLoop(absl::string_view device) {
  auto fd = OpenFd(device, O_RDONLY);
  if (!fd.ok()) {
    if (absl::IsNotFound(fd.status())) return absl::OkStatus();
    return fd.status();
  }
  if (::ioctl(fd->get(), LOOP_CLR_FD, 0) != 0) {
    if (errno == ENXIO) return absl::OkStatus();  // not attached
    return base::ErrnoStatus("ioctl(LOOP_CLR_FD)", device, errno);
  }
  return absl::OkStatus();
}

absl::Status RefreshLoopCapacity(absl::string_view device) {
  ASSIGN_OR_RETURN(UniqueFd fd, OpenFd(device, O_RDONLY));
  if (::ioctl(fd.get(), LOOP_SET_CAPACITY, 0) != 0) {
    return base::ErrnoStatus("ioctl(LOOP_SET_CAPACITY)", device, errno);
  }
  return absl::OkStatus();
}

}  // namespace daxlease::sys
