// Resolving a CO's staging and target paths for real, not only by text.
// A path below an allowed root is opened component by component with
// openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)
// relative to the root, so a symlink planted anywhere below the root (a
// pod's hostPath, a compromised kubelet dir) can never redirect a mount,
// mkdir, unlink or unmount outside it: the class of CVE-2021-25741. The
// caller then acts on the opened object through /proc/self/fd/N, never on
// the path string again.
//
// The root itself is opened normally (an administrator's --allowed-roots
// entry may be a symlink, e.g. /var/lib/kubelet on some distributions).
// Needs Linux >= 5.6 (openat2; called through syscall(2) because glibc 2.36
// has no wrapper); on an older kernel every call fails Unimplemented.
//
// Errors: a symlink or an escape below the root is InvalidArgument naming
// the path; a missing component is NotFound; other failures carry errno.
// Thread-safe (no state beyond the root list).
#ifndef DAXLEASE_LIB_SYS_CONFINED_PATH_H_
#define DAXLEASE_LIB_SYS_CONFINED_PATH_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "lib/sys/fd.h"

namespace daxlease::sys {

class ConfinedRoots {
 public:
  explicit ConfinedRoots(std::vector<std::string> roots);

  // Whether `path` lies strictly below one of the roots (textually).
  bool Covers(absl::string_view path) const;

  // Opens `path` (below a root) with `flags` | O_CLOEXEC (O_PATH for a
  // handle to mount on or statx). No component below the root may be a
  // symlink, the last one included.
  absl::StatusOr<UniqueFd> Open(absl::string_view path, int flags,
                                int mode = 0) const;

  // The parent directory of `path` opened as Open does (O_PATH), and the
  // last component's name: for acting on the entry itself (unlinkat,
  // umount2 of /proc/self/fd/N/name with UMOUNT_NOFOLLOW).
  struct Parent {
    UniqueFd dir;
    std::string name;
  };
  absl::StatusOr<Parent> OpenParent(absl::string_view path) const;

  // mkdir -p below the root with `mode`, each component created with
  // mkdirat on its opened parent and then opened without following
  // symlinks; returns the O_PATH handle of `path`. Idempotent.
  absl::StatusOr<UniqueFd> MakeDirs(absl::string_view path, int mode) const;

 private:
  // The root `path` is below, opened, and the path relative to it.
  absl::StatusOr<std::pair<UniqueFd, std::string>> Split(
      absl::string_view path) const;

  std::vector<std::string> roots_;
};

// "/proc/self/fd/<fd>", optionally followed by "/<name>".
std::string ProcFdPath(const UniqueFd& fd, absl::string_view name = "");

// The mount ID (as in /proc/self/mountinfo) of the mount holding `fd`.
absl::StatusOr<int> MountIdOf(const UniqueFd& fd);

}  // namespace daxlease::sys

#endif  // DAXLEASE_LIB_SYS_CONFINED_PATH_H_
