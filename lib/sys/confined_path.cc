#include "lib/sys/confined_path.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "lib/base/status.h"

namespace daxlease::sys {
namespace {

constexpr uint64_t kResolve =
    RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;

std::string Trim(absl::string_view p) {
  std::string s(p);
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s;
}

// openat2(2); glibc 2.36 has no wrapper.
int Openat2(int dirfd, const std::string& path, int flags, int mode) {
  struct open_how how = {};
  how.flags = static_cast<uint64_t>(flags | O_CLOEXEC);
  how.mode = (flags & (O_CREAT | O_TMPFILE)) ? static_cast<uint64_t>(mode) : 0;
  how.resolve = kResolve;
  int fd;
  do {
    fd = static_cast<int>(
        ::syscall(SYS_openat2, dirfd, path.c_str(), &how, sizeof(how)));
  } while (fd < 0 && errno == EINTR);
  return fd;
}

absl::Status OpenError(absl::string_view path, int err) {
  if (err == ELOOP || err == EXDEV) {
    return absl::InvalidArgumentError(absl::StrCat(
        path,
        " resolves through a symlink (or out of its allowed root); "
        "staging and target paths must not contain symlinks"));
  }
  if (err == ENOSYS) {
    return absl::UnimplementedError(absl::StrCat(
        "openat2 is not available (Linux >= 5.6 needed) to open ", path));
  }
  return base::ErrnoStatus("openat2", path, err);
}

}  // namespace

ConfinedRoots::ConfinedRoots(std::vector<std::string> roots) {
  for (const std::string& r : roots) roots_.push_back(Trim(r));
}

bool ConfinedRoots::Covers(absl::string_view path) const {
  std::string p = Trim(path);
  for (const std::string& r : roots_) {
    if (r == "/" ? p.size() > 1 && p[0] == '/'
                 : absl::StartsWith(p, r) && p.size() > r.size() + 1 &&
                       p[r.size()] == '/') {
      return true;
    }
  }
  return false;
}

absl::StatusOr<std::pair<UniqueFd, std::string>> ConfinedRoots::Split(
    absl::string_view path) const {
  std::string p = Trim(path);
  const std::string* best = nullptr;
  for (const std::string& r : roots_) {
    bool under = r == "/" ? p.size() > 1 && p[0] == '/'
                          : absl::StartsWith(p, r) && p.size() > r.size() + 1 &&
                                p[r.size()] == '/';
    if (under && (best == nullptr || r.size() > best->size())) best = &r;
  }
  if (best == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " is not below an allowed root (",
                     absl::StrJoin(roots_, ","), ")"));
  }
  std::string rel = *best == "/" ? p.substr(1) : p.substr(best->size() + 1);
  ASSIGN_OR_RETURN(UniqueFd root, OpenFd(*best, O_PATH | O_DIRECTORY));
  return std::make_pair(std::move(root), std::move(rel));
}

absl::StatusOr<UniqueFd> ConfinedRoots::Open(absl::string_view path, int flags,
                                             int mode) const {
  ASSIGN_OR_RETURN(auto split, Split(path));
  int fd = Openat2(split.first.get(), split.second, flags, mode);
  if (fd < 0) return OpenError(path, errno);
  return UniqueFd(fd);
}

absl::StatusOr<ConfinedRoots::Parent> ConfinedRoots::OpenParent(
    absl::string_view path) const {
  ASSIGN_OR_RETURN(auto split, Split(path));
  const std::string& rel = split.second;
  size_t slash = rel.rfind('/');
  Parent out;
  if (slash == std::string::npos) {
    out.dir = std::move(split.first);
    out.name = rel;
  } else {
    int fd = Openat2(split.first.get(), rel.substr(0, slash),
                     O_PATH | O_DIRECTORY, 0);
    if (fd < 0) return OpenError(path, errno);
    out.dir = UniqueFd(fd);
    out.name = rel.substr(slash + 1);
  }
  if (out.name.empty() || out.name == "." || out.name == "..") {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " does not name an entry"));
  }
  return out;
}

absl::StatusOr<UniqueFd> ConfinedRoots::MakeDirs(absl::string_view path,
                                                 int mode) const {
  ASSIGN_OR_RETURN(auto split, Split(path));
  UniqueFd dir = std::move(split.first);
  for (absl::string_view part :
       absl::StrSplit(split.second, '/', absl::SkipEmpty())) {
    std::string name(part);
    if (name == ".") continue;
    if (::mkdirat(dir.get(), name.c_str(), static_cast<mode_t>(mode)) != 0 &&
        errno != EEXIST) {
      return base::ErrnoStatus("mkdirat", path, errno);
    }
    // EEXIST may be a symlink someone planted: the open refuses it.
    int fd = Openat2(dir.get(), name, O_PATH | O_DIRECTORY, 0);
    if (fd < 0) return OpenError(path, errno);
    dir = UniqueFd(fd);
  }
  return dir;
}

std::string ProcFdPath(const UniqueFd& fd, absl::string_view name) {
  return name.empty() ? absl::StrCat("/proc/self/fd/", fd.get())
                      : absl::StrCat("/proc/self/fd/", fd.get(), "/", name);
}

absl::StatusOr<int> MountIdOf(const UniqueFd& fd) {
  struct statx stx = {};
  if (::statx(fd.get(), "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, STATX_MNT_ID,
              &stx) != 0) {
    return base::ErrnoStatus("statx", ProcFdPath(fd), errno);
  }
  if ((stx.stx_mask & STATX_MNT_ID) == 0) {
    return absl::UnimplementedError("statx gave no mount ID (Linux >= 5.8)");
  }
  return static_cast<int>(stx.stx_mnt_id);
}

}  // namespace daxlease::sys
