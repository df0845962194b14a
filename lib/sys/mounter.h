// Mounter: the boundary between daxlease and the host's mount table and the
// paths a CO hands it (staging and target paths). The CSI node service does
// every mount and every path creation through it, so unit tests run the
// service over FakeMounter without root.
//
// Idempotency: Mount/BindMount onto a path that is already a mount point
// fail with AlreadyExists (the caller inspects GetMount and decides);
// Unmount of a path that is not a mount point is OK. MakeDir/MakeFile are
// idempotent.
// Thread safety: implementations are thread-safe; callers serialize calls
// on the same path.
#ifndef DAXLEASE_LIB_SYS_MOUNTER_H_
#define DAXLEASE_LIB_SYS_MOUNTER_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "lib/sys/file.h"

namespace daxlease::sys {

// One entry of the mount table (/proc/self/mountinfo).
struct MountInfo {
  std::string source;  // "/dev/loop3", "tmpfs", "udev", ...
  std::string target;  // mount point
  std::string fs_type;
  std::string root;  // root of the mount within its filesystem ("/" or the
                     // bound subpath, e.g. "/loop3" for a bound device node)
  std::string vfs_options;  // "rw,relatime", ...
  std::string fs_options;   // filesystem options
  unsigned major = 0;       // st_dev of the mounted filesystem
  unsigned minor = 0;
  bool read_only = false;
};

class Mounter {
 public:
  virtual ~Mounter() = default;

  // mount(2) of `source` (a block device) on the directory `target` with
  // `fs_type` and comma-separated `options` ("ro" is turned into MS_RDONLY,
  // the rest is passed as data).
  virtual absl::Status Mount(absl::string_view source, absl::string_view target,
                             absl::string_view fs_type,
                             absl::string_view options) = 0;

  // Bind-mounts `source` (a directory onto a directory, or a device node
  // onto a file) on `target`; with `read_only` the bind is then remounted
  // read-only (MS_REMOUNT|MS_BIND|MS_RDONLY) so the source stays writable.
  virtual absl::Status BindMount(absl::string_view source,
                                 absl::string_view target, bool read_only) = 0;

  // Unmounts the top mount on `target`. OK if `target` is not a mount point
  // (a symlink never is: it is not followed) or does not exist.
  virtual absl::Status Unmount(absl::string_view target) = 0;

  // The topmost mount whose mount point is exactly `target`, or nullopt.
  virtual absl::StatusOr<std::optional<MountInfo>> GetMount(
      absl::string_view target) = 0;

  // Creates a directory (and its parents). Idempotent.
  virtual absl::Status MakeDir(absl::string_view path) = 0;
  // Creates an empty regular file (and parent directories). Idempotent.
  virtual absl::Status MakeFile(absl::string_view path) = 0;
  // Creates the symlink `path` -> `value`; `value` is stored as given, never
  // resolved or checked here. Idempotent: OK when `path` already is that
  // symlink, AlreadyExists when something else is there.
  virtual absl::Status MakeSymlink(absl::string_view value,
                                   absl::string_view path) = 0;
  // Replaces the small file `path` with `data` (temp + rename: a reader
  // sees the old or the new contents). Used for the descriptor in a
  // published directory.
  virtual absl::Status WriteFile(absl::string_view path,
                                 absl::string_view data) = 0;
  // Removes an empty directory or a file; OK if missing.
  virtual absl::Status RemovePath(absl::string_view path) = 0;
  virtual bool PathExists(absl::string_view path) = 0;
  // Usage of the filesystem mounted at (or holding) `path`.
  virtual absl::StatusOr<FsUsage> StatFs(absl::string_view path) = 0;
  // FIFREEZE of the filesystem mounted at `mount_path`: its dirty data and
  // metadata are written, its journal flushed, and every writer (write(2),
  // and write faults on shared mappings) blocks until Thaw. A frozen
  // filesystem stays frozen when the process dies: whoever freezes records
  // it first and thaws after a crash. FailedPrecondition when already
  // frozen (by someone else: thawing it would undo their freeze).
  virtual absl::Status Freeze(absl::string_view mount_path) = 0;
  // FITHAW. OK when it is not frozen.
  virtual absl::Status Thaw(absl::string_view mount_path) = 0;
};

// The real one: mount(2)/umount2(2) and the mount table read through
// libmount from /proc/self/mountinfo. Every path it is handed (targets,
// directories and files to make or remove, and a bind source that lies
// below a root) must be strictly below one of `allowed_roots`, and is
// resolved below it without following any symlink (ConfinedRoots,
// confined_path.h): a symlink is InvalidArgument, nothing is mounted,
// created or removed through it. Mount sources outside the roots (device
// nodes) are used as given. Mount points are recognised by mount ID, not by
// comparing path strings.
std::unique_ptr<Mounter> NewSystemMounter(
    std::vector<std::string> allowed_roots);

}  // namespace daxlease::sys

#endif  // DAXLEASE_LIB_SYS_MOUNTER_H_
