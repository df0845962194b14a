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
                       const std::string& backing, bool autoclear) {
  struct loop_config cfg;
  std::memset(&cfg, 0, sizeof(cfg));
  cfg.fd = static_cast<__u32>(file_fd);
  if (autoclear) cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR;
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

absl::StatusOr<std::vector<LoopDevice>> ListLoops() {
  std::vector<LoopDevice> out;
  auto names = ListDir("/sys/block");
  if (!names.ok()) return names.status();
  for (const std::string& name : *names) {
    if (!absl::StartsWith(name, "loop")) continue;
    auto backing =
        ReadFile(absl::StrCat("/sys/block/", name, "/loop/backing_file"));
    if (!backing.ok()) continue;  // not attached (no loop/ directory)
    LoopDevice d;
    d.device = absl::StrCat("/dev/", name);
    absl::string_view b = absl::StripTrailingAsciiWhitespace(*backing);
    // The kernel appends " (deleted)" once the backing file was unlinked.
    d.backing_deleted = absl::ConsumeSuffix(&b, " (deleted)");
    d.backing_file = std::string(b);
    int n = 0;
    if (!absl::SimpleAtoi(absl::string_view(name).substr(4), &n)) continue;
    if (!EnsureDeviceNode(n, d.device).ok()) continue;
    auto fd = OpenFd(d.device, O_RDONLY);
    if (!fd.ok()) continue;  // detached meanwhile
    struct loop_info64 info;
    std::memset(&info, 0, sizeof(info));
    if (::ioctl(fd->get(), LOOP_GET_STATUS64, &info) != 0) continue;
    const char* fname = reinterpret_cast<const char*>(info.lo_file_name);
    d.file_name = std::string(fname, strnlen(fname, LO_NAME_SIZE));
    d.backing_device = info.lo_device;
    d.backing_inode = info.lo_inode;
    d.autoclear = (info.lo_flags & LO_FLAGS_AUTOCLEAR) != 0;
    out.push_back(std::move(d));
  }
  return out;
}

namespace {

// The attached loops over `backing_file` (see FindLoopsByBackingFile).
absl::StatusOr<std::vector<LoopDevice>> LoopsOver(
    absl::string_view backing_file) {
  std::string want(backing_file);
  auto canon = CanonicalPath(backing_file);
  if (canon.ok()) want = *canon;
  struct stat st;
  const bool exists = ::stat(want.c_str(), &st) == 0;
  ASSIGN_OR_RETURN(std::vector<LoopDevice> loops, ListLoops());
  std::vector<LoopDevice> out;
  for (LoopDevice& l : loops) {
    bool match = exists
                     ? l.backing_device == static_cast<uint64_t>(st.st_dev) &&
                           l.backing_inode == static_cast<uint64_t>(st.st_ino)
                     : l.backing_file == want ||
                           (l.backing_deleted && want.size() < LO_NAME_SIZE &&
                            l.file_name == want);
    if (match) out.push_back(std::move(l));
  }
  return out;
}

}  // namespace

absl::StatusOr<std::vector<std::string>> FindLoopsByBackingFile(
    absl::string_view backing_file) {
  ASSIGN_OR_RETURN(std::vector<LoopDevice> loops, LoopsOver(backing_file));
  std::vector<std::string> out;
  for (const LoopDevice& l : loops) out.push_back(l.device);
  return out;
}

absl::StatusOr<std::optional<std::string>> FindLoopByBackingFile(
    absl::string_view backing_file) {
  ASSIGN_OR_RETURN(std::vector<std::string> devs,
                   FindLoopsByBackingFile(backing_file));
  if (devs.empty()) return std::optional<std::string>();
  return std::optional<std::string>(devs.front());
}

absl::StatusOr<LoopAttachment> AttachLoopWithAutoclear(
    absl::string_view backing_file, bool autoclear) {
  ASSIGN_OR_RETURN(std::string backing, CanonicalPath(backing_file));
  ASSIGN_OR_RETURN(std::vector<LoopDevice> existing, LoopsOver(backing));
  if (!existing.empty()) {
    LoopAttachment a;
    a.device = existing.front().device;
    a.autoclear = existing.front().autoclear;
    return a;
  }

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
    absl::Status st =
        Configure(loop_fd.get(), file_fd.get(), dev, backing, autoclear);
    if (st.ok()) {
      LoopAttachment a;
      a.device = dev;
      a.autoclear = autoclear;
      if (autoclear) a.hold = std::move(loop_fd);
      return a;
    }
    if (!absl::IsUnavailable(st)) return st;  // EBUSY maps to Unavailable
  }
  return absl::UnavailableError(
      absl::StrCat("attach loop for ", backing, ": no free loop device"));
}

absl::StatusOr<std::string> AttachLoop(absl::string_view backing_file) {
  ASSIGN_OR_RETURN(LoopAttachment a,
                   AttachLoopWithAutoclear(backing_file, /*autoclear=*/false));
  return a.device;
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

absl::Status DetachLoopIfUnused(absl::string_view device) {
  auto fd = OpenFd(device, O_RDONLY | O_EXCL);
  if (!fd.ok()) {
    if (absl::IsNotFound(fd.status())) return absl::OkStatus();
    if (absl::IsUnavailable(fd.status())) {  // EBUSY: mounted, or held
      return absl::FailedPreconditionError(
          absl::StrCat(device, " is in use: ", fd.status().message()));
    }
    return fd.status();
  }
  if (::ioctl(fd->get(), LOOP_CLR_FD, 0) != 0) {
    if (errno == ENXIO) return absl::OkStatus();  // not attached
    return base::ErrnoStatus("ioctl(LOOP_CLR_FD)", device, errno);
  }
  return absl::OkStatus();
}

absl::Status SetLoopAutoclear(absl::string_view device) {
  ASSIGN_OR_RETURN(UniqueFd fd, OpenFd(device, O_RDONLY));
  struct loop_info64 info;
  std::memset(&info, 0, sizeof(info));
  if (::ioctl(fd.get(), LOOP_GET_STATUS64, &info) != 0) {
    return base::ErrnoStatus("ioctl(LOOP_GET_STATUS64)", device, errno);
  }
  if ((info.lo_flags & LO_FLAGS_AUTOCLEAR) != 0) return absl::OkStatus();
  info.lo_flags |= LO_FLAGS_AUTOCLEAR;
  if (::ioctl(fd.get(), LOOP_SET_STATUS64, &info) != 0) {
    return base::ErrnoStatus("ioctl(LOOP_SET_STATUS64 autoclear)", device,
                             errno);
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
