// Env: every file-system call that the plugin's durable state (StateStore)
// and the file backend's images make, behind one interface, as leveldb's
// Env. The real one (PosixEnv, DefaultEnv()) is the lib/sys/file.h
// helpers; FaultInjectionEnv (below) wraps another Env, records each call
// and fails the ones a test picks, so fsync errors, ENOSPC and torn
// renames are unit-tested without a broken disk.
//
// Why here and not in csi/: it is a boundary with the OS, which lib/sys
// owns; csi/ only holds decisions over it.
//
// Errors: the helpers' statuses (operation, path, errno); ENOSPC is
// ResourceExhausted. Thread-safe (the underlying syscalls are; the fault
// injector takes a mutex).
#ifndef DAXLEASE_LIB_SYS_ENV_H_
#define DAXLEASE_LIB_SYS_ENV_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "lib/sys/file.h"
#include "lib/sys/file_copy.h"

namespace daxlease::sys {

class Env {
 public:
  virtual ~Env() = default;

  // Whole contents of a small file; NotFound when missing.
  virtual absl::StatusOr<std::string> ReadFile(absl::string_view path) = 0;
  // Creates or truncates `path` (mode 0600) and writes `data`; fsyncs it
  // before returning.
  virtual absl::Status WriteFileSynced(absl::string_view path,
                                       absl::string_view data) = 0;
  // The same without the fsync: the data is in the page cache when it
  // returns (it survives a kill -9, not a power loss).
  virtual absl::Status WriteFileUnsynced(absl::string_view path,
                                         absl::string_view data) = 0;
  // rename(2).
  virtual absl::Status Rename(absl::string_view from, absl::string_view to) = 0;
  // fsync(2) of a file or a directory (a directory's fsync makes the
  // creations, renames and unlinks in it durable).
  virtual absl::Status Sync(absl::string_view path) = 0;
  // unlink(2); OK when missing.
  virtual absl::Status RemoveFile(absl::string_view path) = 0;
  // Creates `path` (0600) if missing and allocates at least `size` bytes
  // (never shrinks). Not synced: the caller Syncs the file and its
  // directory when the allocation must survive a power loss.
  virtual absl::Status Fallocate(absl::string_view path, uint64_t size) = 0;
  virtual absl::StatusOr<uint64_t> FileSize(absl::string_view path) = 0;
  // True when the file has a data extent (SEEK_DATA finds one): something
  // was written. False: only holes and unwritten extents (reads as zeros).
  // An error means unknown.
  virtual absl::StatusOr<bool> HasData(absl::string_view path) = 0;
  virtual bool PathExists(absl::string_view path) = 0;
  virtual absl::Status MakeDirs(absl::string_view path, int mode) = 0;
  // Entry names, sorted, without "." and "..".
  virtual absl::StatusOr<std::vector<std::string>> ListDir(
      absl::string_view path) = 0;
  virtual absl::StatusOr<std::string> CanonicalPath(absl::string_view path) = 0;
  virtual absl::StatusOr<FsUsage> StatFs(absl::string_view path) = 0;
  // OK when the process may create files in `dir` (access(2) W_OK).
  virtual absl::Status CheckWritable(absl::string_view dir) = 0;
  // sys::CopyFileData (file_copy.h): `to` gets `from`'s bytes (a reflink
  // where the file system can), and is fsynced.
  virtual absl::StatusOr<CopyResult> CopyData(absl::string_view from,
                                              absl::string_view to,
                                              const CopyOptions& options) = 0;
};

// The real file system (a process-wide object, never deleted).
Env* DefaultEnv();

// How far WriteFileAtomic goes.
enum class Durability {
  // The new contents survive a power loss once the call returns: temp file
  // fsynced, renamed over `path`, directory fsynced.
  kDurable,
  // All or nothing, but a power loss may bring the old contents back: the
  // temp file is fsynced (never a torn or empty file) and renamed; the
  // directory is not fsynced. For records of state that a power loss
  // undoes anyway (mounts, loop devices).
  kAtomic,
  // All or nothing against a kill -9 (the rename), nothing against a power
  // loss: the temp file is not fsynced, so after a power loss `path` may be
  // the old contents, the new, or torn/empty. Only for files whose reader
  // drops a file it cannot parse and that describe state a power loss
  // undoes too.
  kVolatile,
};

// Replaces `path` with `data` as `durability` says, through `env`. A
// failure before the rename leaves the old contents and no temp file.
// Callers serialize writers of one path.
absl::Status WriteFileAtomic(Env* env, absl::string_view path,
                             absl::string_view data,
                             Durability durability = Durability::kDurable);

// The parent directory of `path` ("." for a bare name).
std::string DirOf(absl::string_view path);

// An Env over another one that records every call ("Sync /d/x.json") and
// fails chosen calls. Faults match an operation ("Sync", "Rename",
// "WriteFileSynced", "Fallocate", ...) and, optionally, a path suffix;
// each fires once, in the order given.
class FaultInjectionEnv final : public Env {
 public:
  explicit FaultInjectionEnv(Env* base) : base_(base) {}

  // The next call of `op` whose path ends with `path_suffix` ("" = any)
  // fails with `status` instead of running.
  void FailNext(absl::string_view op, absl::Status status,
                absl::string_view path_suffix = "");
  // A torn write: the next WriteFileSynced whose path ends with
  // `path_suffix` writes only the first `keep_bytes` bytes, unsynced, and
  // fails with `status`, what a crash or a full disk in the middle of a
  // write leaves.
  void TearNextWrite(absl::string_view path_suffix, size_t keep_bytes,
                     absl::Status status);
  // Every call so far, "<Op> <path>" (Rename: "Rename <from> -> <to>").
  std::vector<std::string> calls() const;
  void ClearCalls();

  absl::StatusOr<std::string> ReadFile(absl::string_view path) override;
  absl::Status WriteFileSynced(absl::string_view path,
                               absl::string_view data) override;
  absl::Status WriteFileUnsynced(absl::string_view path,
                                 absl::string_view data) override;
  absl::Status Rename(absl::string_view from, absl::string_view to) override;
  absl::Status Sync(absl::string_view path) override;
  absl::Status RemoveFile(absl::string_view path) override;
  absl::Status Fallocate(absl::string_view path, uint64_t size) override;
  absl::StatusOr<uint64_t> FileSize(absl::string_view path) override;
  absl::StatusOr<bool> HasData(absl::string_view path) override;
  bool PathExists(absl::string_view path) override;
  absl::Status MakeDirs(absl::string_view path, int mode) override;
  absl::StatusOr<std::vector<std::string>> ListDir(
      absl::string_view path) override;
  absl::StatusOr<std::string> CanonicalPath(absl::string_view path) override;
  absl::StatusOr<FsUsage> StatFs(absl::string_view path) override;
  absl::Status CheckWritable(absl::string_view dir) override;
  absl::StatusOr<CopyResult> CopyData(absl::string_view from,
                                      absl::string_view to,
                                      const CopyOptions& options) override;

 private:
  struct Fault {
    std::string op;
    std::string path_suffix;
    absl::Status status;
    int64_t tear_at = -1;  // WriteFileSynced only: bytes written before it
  };
  // Records the call and returns the fault that fires for it, if any.
  std::optional<Fault> Enter(absl::string_view op, absl::string_view path,
                             absl::string_view detail = "");

  Env* const base_;
  mutable absl::Mutex mu_;
  std::vector<Fault> faults_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> calls_ ABSL_GUARDED_BY(mu_);
};

}  // namespace daxlease::sys

#endif  // DAXLEASE_LIB_SYS_ENV_H_
