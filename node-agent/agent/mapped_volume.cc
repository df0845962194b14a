#include "node-agent/agent/mapped_volume.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#if defined(__x86_64__)
#include <emmintrin.h>
#endif

#include "absl/strings/str_cat.h"
#include "lib/base/status.h"
#include "lib/sys/file.h"

#ifndef MAP_SHARED_VALIDATE
#define MAP_SHARED_VALIDATE 0x03
#endif
#ifndef MAP_SYNC
#define MAP_SYNC 0x80000
#endif

namespace daxlease::agent {

absl::StatusOr<std::unique_ptr<MappedVolume>> MappedVolume::Map(
    const std::string& path, uint64_t size, uint64_t create_size) {
  if (create_size > 0 && !sys::PathExists(path)) {
    RETURN_IF_ERROR(sys::Fallocate(path, create_size));
  }
  auto v = std::unique_ptr<MappedVolume>(new MappedVolume());
  v->path_ = path;
  v->fd_ = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (v->fd_ < 0) return base::ErrnoStatus("open", path, errno);
  struct stat st {};
  if (fstat(v->fd_, &st) != 0) return base::ErrnoStatus("fstat", path, errno);
  v->regular_ = S_ISREG(st.st_mode);
  if (size == 0) {
    ASSIGN_OR_RETURN(size, sys::FileSize(path));
  }
  if (v->regular_ && static_cast<uint64_t>(st.st_size) < size) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, " holds ", st.st_size, " bytes, fewer than ", size));
  }
  if (size == 0) {
    return absl::FailedPreconditionError(absl::StrCat(path, " is empty"));
  }
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE,
                 MAP_SHARED_VALIDATE | MAP_SYNC, v->fd_, 0);
  if (p != MAP_FAILED) {
    v->map_sync_ = true;
  } else {
    p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd_, 0);
    if (p == MAP_FAILED) return base::ErrnoStatus("mmap", path, errno);
  }
  v->base_ = static_cast<char*>(p);
  v->size_ = size;
  return v;
}

MappedVolume::~MappedVolume() {
  if (base_ != nullptr) munmap(base_, size_);
  if (fd_ >= 0) {
    if (lease_held_) fcntl(fd_, F_SETLEASE, F_UNLCK);
    close(fd_);
  }
}

absl::Status MappedVolume::Persist(uint64_t offset, uint64_t len) {
  if (offset > size_) return absl::OutOfRangeError("persist past the end");
  if (len == 0 || len > size_ - offset) len = size_ - offset;
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  uint64_t start = offset / page * page;
  uint64_t end = offset + len;
  if (!regular_) {
    // Device DAX: no page cache and no fsync, so the kernel refuses msync
    // (EINVAL); a store is in the media once out of the CPU cache.
#if defined(__x86_64__)
    for (uint64_t p = start; p < end; p += 64) _mm_clflush(base_ + p);
    _mm_sfence();
    return absl::OkStatus();
#else
    return absl::UnimplementedError(
        absl::StrCat(path_, ": no cache flush for a device on this CPU"));
#endif
  }
  // With MAP_SYNC the metadata is already durable and the data is once out
  // of the CPU caches; msync on a DAX mapping writes the cache lines back
  // (dax_writeback_mapping_range), which works on every CPU.
  if (msync(base_ + start, end - start, MS_SYNC) != 0) {
    return base::ErrnoStatus("msync", path_, errno);
  }
  return absl::OkStatus();
}

absl::Status MappedVolume::StartWriteback(uint64_t offset, uint64_t len) {
  if (offset > size_) return absl::OutOfRangeError("write-back past the end");
  if (!regular_) return absl::OkStatus();
  if (len == 0 || len > size_ - offset) len = size_ - offset;
  // Only SYNC_FILE_RANGE_WRITE: the WAIT flags would check (and advance)
  // this fd's write-back error sample, hiding an error from Persist's msync.
  if (sync_file_range(fd_, static_cast<off_t>(offset), static_cast<off_t>(len),
                      SYNC_FILE_RANGE_WRITE) != 0) {
    return base::ErrnoStatus("sync_file_range", path_, errno);
  }
  return absl::OkStatus();
}

absl::Status MappedVolume::TakeLease(int signo) {
  if (!regular_) {
    return absl::FailedPreconditionError(
        absl::StrCat(path_, " is not a regular file: no lease"));
  }
  if (lease_held_) return absl::OkStatus();
  if (fcntl(fd_, F_SETSIG, signo) != 0) {
    return base::ErrnoStatus("fcntl(F_SETSIG)", path_, errno);
  }
  if (fcntl(fd_, F_SETOWN, getpid()) != 0) {
    return base::ErrnoStatus("fcntl(F_SETOWN)", path_, errno);
  }
  if (fcntl(fd_, F_SETLEASE, F_WRLCK) != 0) {
    int err = errno;
    if (err == EAGAIN || err == EBUSY) {
      return absl::UnavailableError(
          absl::StrCat("lease on ", path_, ": another process has it open"));
    }
    return base::ErrnoStatus("fcntl(F_SETLEASE)", path_, err);
  }
  lease_held_ = true;
  return absl::OkStatus();
}

absl::Status MappedVolume::DropLease() {
  if (!lease_held_) return absl::OkStatus();
  if (fcntl(fd_, F_SETLEASE, F_UNLCK) != 0) {
    return base::ErrnoStatus("fcntl(F_SETLEASE, F_UNLCK)", path_, errno);
  }
  lease_held_ = false;
  return absl::OkStatus();
}

}  // namespace daxlease::agent
