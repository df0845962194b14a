#include "lib/sys/file_copy.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <string>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "lib/base/status.h"
#include "lib/sys/fd.h"

namespace daxlease::sys {
namespace {

constexpr uint64_t kChunkBytes = 8ull << 20;

// Errors that mean "this file system (pair) cannot do that", not a failure.
bool Unsupported(int err) {
  return err == EOPNOTSUPP || err == EXDEV || err == EINVAL || err == ENOTTY ||
         err == ENOSYS;
}

// Copies [off, off + len) with pread/pwrite (copy_file_range refused).
absl::Status CopyByHand(int in, int out, uint64_t off, uint64_t len,
                        absl::string_view from, absl::string_view to) {
  std::string buf(std::min<uint64_t>(len, kChunkBytes), '\0');
  while (len > 0) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(len, buf.size()));
    ssize_t n = ::pread(in, buf.data(), want, static_cast<off_t>(off));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return base::ErrnoStatus("pread", from, errno);
    if (n == 0) break;  // the source shrank: nobody may write it
    size_t done = 0;
    while (done < static_cast<size_t>(n)) {
      ssize_t w = ::pwrite(out, buf.data() + done, n - done,
                           static_cast<off_t>(off + done));
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) return base::ErrnoStatus("pwrite", to, errno);
      done += static_cast<size_t>(w);
    }
    off += static_cast<uint64_t>(n);
    len -= static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<CopyResult> CopyFileData(absl::string_view from,
                                        absl::string_view to,
                                        const CopyOptions& options) {
  ASSIGN_OR_RETURN(UniqueFd in, OpenFd(from, O_RDONLY));
  ASSIGN_OR_RETURN(UniqueFd out, OpenFd(to, O_WRONLY | O_CREAT, 0600));
  struct stat src, dst;
  if (::fstat(in.get(), &src) != 0) {
    return base::ErrnoStatus("fstat", from, errno);
  }
  if (::fstat(out.get(), &dst) != 0) {
    return base::ErrnoStatus("fstat", to, errno);
  }
  CopyResult result;
  result.size_bytes = static_cast<uint64_t>(src.st_size);
  if (dst.st_size < src.st_size && ::ftruncate(out.get(), src.st_size) != 0) {
    return base::ErrnoStatus("ftruncate", to, errno);
  }
  // The whole source range (not FICLONE, which would also cut a larger
  // destination down to the source's size).
  struct file_clone_range range = {};
  range.src_fd = in.get();
  range.src_length = static_cast<uint64_t>(src.st_size);
  if (options.allow_reflink && src.st_size > 0 &&
      ::ioctl(out.get(), FICLONERANGE, &range) == 0) {
    result.reflinked = true;
  } else if (options.allow_reflink && src.st_size > 0 && !Unsupported(errno)) {
    return base::ErrnoStatus("ioctl(FICLONERANGE)", to, errno);
  } else {
    const absl::Time start = absl::Now();
    bool kernel_copy = true;
    off_t pos = 0;
    while (pos < src.st_size) {
      off_t data = ::lseek(in.get(), pos, SEEK_DATA);
      if (data < 0 && errno == ENXIO) break;  // only holes from here on
      if (data < 0) return base::ErrnoStatus("lseek(SEEK_DATA)", from, errno);
      off_t hole = ::lseek(in.get(), data, SEEK_HOLE);
      if (hole < 0) return base::ErrnoStatus("lseek(SEEK_HOLE)", from, errno);
      hole = std::min<off_t>(hole, src.st_size);
      for (off_t off = data; off < hole;) {
        uint64_t len = std::min<uint64_t>(kChunkBytes, hole - off);
        if (kernel_copy) {
          loff_t in_off = off, out_off = off;
          ssize_t n =
              ::copy_file_range(in.get(), &in_off, out.get(), &out_off, len, 0);
          if (n < 0 && errno == EINTR) continue;
          if (n < 0 && Unsupported(errno)) {
            kernel_copy = false;
            continue;
          }
          if (n < 0) return base::ErrnoStatus("copy_file_range", to, errno);
          if (n == 0) break;  // the source shrank
          len = static_cast<uint64_t>(n);
        } else {
          RETURN_IF_ERROR(CopyByHand(
              in.get(), out.get(), static_cast<uint64_t>(off), len, from, to));
        }
        off += static_cast<off_t>(len);
        result.bytes_copied += len;
        if (options.bytes_per_second > 0) {
          absl::Duration due =
              absl::Seconds(static_cast<double>(result.bytes_copied) /
                            static_cast<double>(options.bytes_per_second));
          absl::Duration ahead = due - (absl::Now() - start);
          if (ahead > absl::ZeroDuration()) absl::SleepFor(ahead);
        }
      }
      pos = hole;
    }
  }
  if (::fsync(out.get()) != 0) return base::ErrnoStatus("fsync", to, errno);
  return result;
}

}  // namespace daxlease::sys
