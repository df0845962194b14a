// FakeMounter: an in-memory Mounter for unit tests. Honest about the rules
// the real one enforces: mounting needs an existing target, a second mount
// on a mount point is AlreadyExists, a directory with a mount on it cannot be
// removed (Unavailable, like EBUSY), StatFs needs an existing path, a
// symlink is never followed (GetMount on one is InvalidArgument).
// Thread-safe.
#ifndef DAXLEASE_LIB_SYS_FAKE_MOUNTER_H_
#define DAXLEASE_LIB_SYS_FAKE_MOUNTER_H_

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "lib/sys/mounter.h"

namespace daxlease::sys {

class FakeMounter final : public Mounter {
 public:
  absl::Status Mount(absl::string_view source, absl::string_view target,
                     absl::string_view fs_type,
                     absl::string_view options) override;
  absl::Status BindMount(absl::string_view source, absl::string_view target,
                         bool read_only) override;
  absl::Status Unmount(absl::string_view target) override;
  absl::StatusOr<std::optional<MountInfo>> GetMount(
      absl::string_view target) override;
  absl::Status MakeDir(absl::string_view path) override;
  absl::Status MakeFile(absl::string_view path) override;
  absl::Status MakeSymlink(absl::string_view value,
                           absl::string_view path) override;
  absl::Status WriteFile(absl::string_view path,
                         absl::string_view data) override;
  absl::Status RemovePath(absl::string_view path) override;
  bool PathExists(absl::string_view path) override;
  absl::StatusOr<FsUsage> StatFs(absl::string_view path) override;
  absl::Status Freeze(absl::string_view mount_path) override;
  absl::Status Thaw(absl::string_view mount_path) override;

  // Test controls.
  // Makes the next call of `op` ("Mount", "BindMount", "Unmount", "MakeDir",
  // ...) fail with `status`.
  void FailNext(absl::string_view op, absl::Status status);
  // Pretends a path exists (e.g. a device node or a staging directory).
  void AddPath(absl::string_view path);
  // Removes a mount without going through Unmount (simulates a reboot or
  // an admin's umount).
  void DropMount(absl::string_view target);
  void SetUsage(FsUsage usage);
  std::vector<MountInfo> Mounts() const;
  int mount_calls() const;
  // Mount points frozen now.
  std::set<std::string> Frozen() const;
  // What WriteFile last wrote to `path`; nullopt if nothing (or removed).
  std::optional<std::string> FileContent(absl::string_view path) const;
  // The value of the symlink `path`; nullopt if it is none.
  std::optional<std::string> SymlinkValue(absl::string_view path) const;

 private:
  absl::Status TakeFailure(absl::string_view op)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  std::map<std::string, MountInfo> mounts_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> paths_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> frozen_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> files_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> links_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, absl::Status> failures_ ABSL_GUARDED_BY(mu_);
  FsUsage usage_ ABSL_GUARDED_BY(mu_);
  int mount_calls_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace daxlease::sys

#endif  // DAXLEASE_LIB_SYS_FAKE_MOUNTER_H_
