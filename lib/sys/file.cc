#include "lib/sys/file.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "lib/base/status.h"
#include "lib/sys/fd.h"

namespace daxlease::sys {
namespace {

std::string DirName(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

absl::Status WriteAll(int fd, absl::string_view data, absl::string_view path) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return base::ErrnoStatus("write", path, errno);
    }
    off += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadFile(absl::string_view path) {
  ASSIGN_OR_RETURN(UniqueFd fd, OpenFd(path, O_RDONLY));
  std::string out;
  char buf[8192];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      return base::ErrnoStatus("read", path, errno);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

absl::Status WriteFileAtomic(absl::string_view path, absl::string_view data) {
  std::string p(path);
  std::string tmp = absl::StrCat(p, ".tmp");
  {
    ASSIGN_OR_RETURN(UniqueFd fd,
                     OpenFd(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600));
    RETURN_IF_ERROR(WriteAll(fd.get(), data, tmp));
    if (::fsync(fd.get()) != 0) return base::ErrnoStatus("fsync", tmp, errno);
  }
  if (::rename(tmp.c_str(), p.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return base::ErrnoStatus("rename", p, err);
  }
  return Fsync(DirName(p));
}

absl::Status Fallocate(absl::string_view path, uint64_t size) {
  ASSIGN_OR_RETURN(UniqueFd fd, OpenFd(path, O_RDWR | O_CREAT, 0600));
  if (size == 0) return absl::OkStatus();
  int rc;
  do {
    rc = ::fallocate(fd.get(), 0, 0, static_cast<off_t>(size));
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) return base::ErrnoStatus("fallocate", path, errno);
  if (::fsync(fd.get()) != 0) return base::ErrnoStatus("fsync", path, errno);
  return absl::OkStatus();
}

absl::Status FallocateTail(absl::string_view path, uint64_t size) {
  ASSIGN_OR_RETURN(UniqueFd fd, OpenFd(path, O_RDWR));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    return base::ErrnoStatus("fstat", path, errno);
  }
  const uint64_t end = static_cast<uint64_t>(st.st_size);
  if (size <= end) return absl::OkStatus();
  int rc;
  do {
    rc = ::fallocate(fd.get(), 0, static_cast<off_t>(end),
                     static_cast<off_t>(size - end));
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) return base::ErrnoStatus("fallocate", path, errno);
  if (::fsync(fd.get()) != 0) return base::ErrnoStatus("fsync", path, errno);
  return absl::OkStatus();
}

absl::Status Truncate(absl::string_view path, uint64_t size) {
  ASSIGN_OR_RETURN(UniqueFd fd, OpenFd(path, O_RDWR));
  if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) {
    return base::ErrnoStatus("ftruncate", path, errno);
  }
  return absl::OkStatus();
}

absl::Status Fsync(absl::string_view path) {
  ASSIGN_OR_RETURN(UniqueFd fd, OpenFd(path, O_RDONLY));
  if (::fsync(fd.get()) != 0) return base::ErrnoStatus("fsync", path, errno);
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> FileSize(absl::string_view path) {
  ASSIGN_OR_RETURN(UniqueFd fd, OpenFd(path, O_RDONLY));
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) {
    return base::ErrnoStatus("fstat", path, errno);
  }
  if (S_ISBLK(st.st_mode)) {
    uint64_t bytes = 0;
    if (::ioctl(fd.get(), BLKGETSIZE64, &bytes) != 0) {
      return base::ErrnoStatus("ioctl(BLKGETSIZE64)", path, errno);
    }
    return bytes;
  }
  return static_cast<uint64_t>(st.st_size);
}

absl::StatusOr<uint64_t> AllocatedBytes(absl::string_view path) {
  struct stat st;
  std::string p(path);
  if (::stat(p.c_str(), &st) != 0)
    return base::ErrnoStatus("stat", path, errno);
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

absl::Status MakeDirs(absl::string_view path, int mode) {
  std::string p(path);
  if (p.empty()) return absl::InvalidArgumentError("MakeDirs: empty path");
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = p.find('/', pos + 1);
    std::string prefix = p.substr(0, pos);
    if (prefix.empty()) continue;
    if (::mkdir(prefix.c_str(), static_cast<mode_t>(mode)) != 0 &&
        errno != EEXIST) {
      return base::ErrnoStatus("mkdir", prefix, errno);
    }
  }
  struct stat st;
  if (::stat(p.c_str(), &st) != 0) return base::ErrnoStatus("stat", p, errno);
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("mkdir(", p, "): exists and is not a directory"));
  }
  return absl::OkStatus();
}

absl::Status RemoveFile(absl::string_view path) {
  std::string p(path);
  if (::unlink(p.c_str()) != 0 && errno != ENOENT) {
    return base::ErrnoStatus("unlink", path, errno);
  }
  return absl::OkStatus();
}

bool PathExists(absl::string_view path) {
  struct stat st;
  std::string p(path);
  return ::lstat(p.c_str(), &st) == 0;
}

absl::StatusOr<std::string> CanonicalPath(absl::string_view path) {
  std::string p(path);
  char buf[PATH_MAX];
  if (::realpath(p.c_str(), buf) == nullptr) {
    return base::ErrnoStatus("realpath", path, errno);
  }
  return std::string(buf);
}

absl::StatusOr<std::vector<std::string>> ListDir(absl::string_view path) {
  std::string p(path);
  DIR* dir = ::opendir(p.c_str());
  if (dir == nullptr) return base::ErrnoStatus("opendir", path, errno);
  std::vector<std::string> names;
  errno = 0;
  while (struct dirent* ent = ::readdir(dir)) {
    std::string name = ent->d_name;
    if (name != "." && name != "..") names.push_back(std::move(name));
  }
  int err = errno;
  ::closedir(dir);
  if (err != 0) return base::ErrnoStatus("readdir", path, err);
  std::sort(names.begin(), names.end());
  return names;
}

absl::StatusOr<FsUsage> StatFs(absl::string_view path) {
  std::string p(path);
  struct statvfs st;
  if (::statvfs(p.c_str(), &st) != 0) {
    return base::ErrnoStatus("statvfs", path, errno);
  }
  FsUsage u;
  u.total_bytes = static_cast<uint64_t>(st.f_blocks) * st.f_frsize;
  u.available_bytes = static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
  u.used_bytes = static_cast<uint64_t>(st.f_blocks - st.f_bfree) * st.f_frsize;
  u.total_inodes = st.f_files;
  u.free_inodes = st.f_ffree;
  u.used_inodes = st.f_files - st.f_ffree;
  return u;
}

}  // namespace daxlease::sys
