// MappedVolume: the owner agent's mapping of one shared volume, and the
// Linux lease (fcntl F_SETLEASE) on its backing file.
//
// fsdax: a regular file on the volume's filesystem, mapped MAP_SHARED with
// MAP_SYNC when the filesystem is DAX (stores are durable once flushed from
// the CPU cache) and plain MAP_SHARED otherwise (Persist = msync). devdax:
// the character device, MAP_SHARED.
//
// The lease: the agent holds a write lease (F_WRLCK) on its one read-write
// fd of the data file. A read lease is what DESIGN rule 8 names, but Linux
// refuses a read lease on a file that is open for writing by anyone, and the
// owner must have it open read-write to map it; a write lease on that very
// fd is allowed and is broken by any other open or a truncate, which is the
// notice we want. Lease breaks arrive as `signo` (F_SETSIG) with the fd in
// si_fd; the agent turns them into a recall. Regular files only.
//
// Owning and non-copyable: unmaps and closes on destruction.
#ifndef DAXLEASE_NODE_AGENT_AGENT_MAPPED_VOLUME_H_
#define DAXLEASE_NODE_AGENT_AGENT_MAPPED_VOLUME_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace daxlease::agent {

class MappedVolume {
 public:
  // Maps [0, size) of `path` read-write. `create_size` > 0: creates the
  // file with that many bytes allocated when missing. Size 0: the file's
  // size (or the device's).
  static absl::StatusOr<std::unique_ptr<MappedVolume>> Map(
      const std::string& path, uint64_t size, uint64_t create_size = 0);
  ~MappedVolume();
  MappedVolume(const MappedVolume&) = delete;
  MappedVolume& operator=(const MappedVolume&) = delete;

  char* base() const { return base_; }
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }
  int fd() const { return fd_; }
  bool map_sync() const { return map_sync_; }

  // Makes [offset, offset+len) durable: msync for a file; for a device
  // (devdax, which refuses msync) the range's cache lines are flushed.
  absl::Status Persist(uint64_t offset, uint64_t len);
  // Starts writing [offset, offset+len) of a regular file's page cache back
  // (sync_file_range SYNC_FILE_RANGE_WRITE) without waiting, so that a
  // later Persist waits only for what is still in flight. An error (EIO
  // from the disk or a shut-down file system, ENOMEM) means the bytes may
  // never reach it: the caller must not report them written. It does not
  // consume the file's write-back error, so Persist still reports it. OK and
  // nothing done for a device (no page cache).
  absl::Status StartWriteback(uint64_t offset, uint64_t len);

  // Takes the write lease (F_SETSIG `signo` first). Unavailable when another
  // process has the file open (EAGAIN); FailedPrecondition for a device.
  absl::Status TakeLease(int signo);
  // Gives the lease up (F_UNLCK). OK when none is held.
  absl::Status DropLease();
  bool lease_held() const { return lease_held_; }

 private:
  MappedVolume() = default;
  std::string path_;
  int fd_ = -1;
  char* base_ = nullptr;
  uint64_t size_ = 0;
  bool map_sync_ = false;
  bool regular_ = false;
  bool lease_held_ = false;
};

}  // namespace daxlease::agent

#endif  // DAXLEASE_NODE_AGENT_AGENT_MAPPED_VOLUME_H_
