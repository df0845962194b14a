// The real Mounter. <libmount/libmount.h> is included here only.
#include <fcntl.h>
#include <libmount/libmount.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "lib/base/status.h"
#include "lib/sys/confined_path.h"
#include "lib/sys/fd.h"
#include "lib/sys/mounter.h"

namespace daxlease::sys {
namespace {

struct TableDeleter {
  void operator()(libmnt_table* t) const { mnt_unref_table(t); }
};
using TablePtr = std::unique_ptr<libmnt_table, TableDeleter>;

std::string Str(const char* s) { return s == nullptr ? std::string() : s; }

// Flags and data of a comma-separated option string.
void ParseOptions(absl::string_view options, unsigned long* flags,
                  std::string* data_out) {
  std::vector<std::string> data;
  for (absl::string_view opt :
       absl::StrSplit(options, ',', absl::SkipEmpty())) {
    if (opt == "ro") {
      *flags |= MS_RDONLY;
    } else if (opt == "rw") {
    } else if (opt == "noexec") {
      *flags |= MS_NOEXEC;
    } else if (opt == "nosuid") {
      *flags |= MS_NOSUID;
    } else if (opt == "nodev") {
      *flags |= MS_NODEV;
    } else if (opt == "noatime") {
      *flags |= MS_NOATIME;
    } else if (opt == "relatime") {
      *flags |= MS_RELATIME;
    } else if (opt == "sync") {
      *flags |= MS_SYNCHRONOUS;
    } else {
      data.emplace_back(opt);
    }
  }
  *data_out = absl::StrJoin(data, ",");
}

// Every target (and a staging path used as a bind source) is opened below
// its allowed root without following symlinks (ConfinedRoots), and the
// syscalls act on /proc/self/fd/N of what was opened: the path string is
// never resolved again, so a symlink swapped in meanwhile changes nothing.
class SystemMounter final : public Mounter {
 public:
  explicit SystemMounter(std::vector<std::string> roots)
      : roots_(std::move(roots)) {}

  absl::Status Mount(absl::string_view source, absl::string_view target,
                     absl::string_view fs_type,
                     absl::string_view options) override {
    unsigned long flags = 0;
    std::string d;
    ParseOptions(options, &flags, &d);
    std::string src(source), tgt(target), fs(fs_type);
    ASSIGN_OR_RETURN(UniqueFd dir, roots_.Open(tgt, O_PATH | O_DIRECTORY));
    ASSIGN_OR_RETURN(auto existing, MountAt(tgt, dir));
    if (existing.has_value()) {
      return absl::AlreadyExistsError(absl::StrCat(
          tgt, " is already a mount point (", existing->source, ")"));
    }
    if (::mount(src.c_str(), ProcFdPath(dir).c_str(), fs.c_str(), flags,
                d.empty() ? nullptr : d.c_str()) != 0) {
      return base::ErrnoStatus(absl::StrCat("mount(", src, ", ", fs, ")"), tgt,
                               errno);
    }
    return absl::OkStatus();
  }

  absl::Status BindMount(absl::string_view source, absl::string_view target,
                         bool read_only) override {
    std::string src(source), tgt(target);
    // A staging path is confined like a target; a device node comes from
    // the backend, not from the CO.
    UniqueFd src_fd;
    if (roots_.Covers(src)) {
      ASSIGN_OR_RETURN(src_fd, roots_.Open(src, O_PATH));
    }
    const std::string from = src_fd.valid() ? ProcFdPath(src_fd) : src;
    ASSIGN_OR_RETURN(UniqueFd node, roots_.Open(tgt, O_PATH));
    ASSIGN_OR_RETURN(auto existing, MountAt(tgt, node));
    if (existing.has_value()) {
      return absl::AlreadyExistsError(absl::StrCat(
          tgt, " is already a mount point (", existing->source, ")"));
    }
    if (::mount(from.c_str(), ProcFdPath(node).c_str(), nullptr, MS_BIND,
                nullptr) != 0) {
      return base::ErrnoStatus(absl::StrCat("mount(bind ", src, ")"), tgt,
                               errno);
    }
    if (!read_only) return absl::OkStatus();
    // `node` is the directory under the new mount; the remount needs the
    // mount itself: the entry reached through the (held) parent.
    ASSIGN_OR_RETURN(ConfinedRoots::Parent parent, roots_.OpenParent(tgt));
    if (::mount(nullptr, ProcFdPath(parent.dir, parent.name).c_str(), nullptr,
                MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr) != 0) {
      int err = errno;
      ::umount2(ProcFdPath(parent.dir, parent.name).c_str(), UMOUNT_NOFOLLOW);
      return base::ErrnoStatus("mount(remount bind ro)", tgt, err);
    }
    return absl::OkStatus();
  }

  absl::Status Unmount(absl::string_view target) override {
    std::string tgt(target);
    // Through the parent, held open (not the mount: an fd on it would make
    // the unmount EBUSY), and without following the last component.
    absl::StatusOr<ConfinedRoots::Parent> parent = roots_.OpenParent(tgt);
    if (absl::IsNotFound(parent.status())) return absl::OkStatus();
    if (!parent.ok()) return parent.status();
    struct stat st;
    if (::fstatat(parent->dir.get(), parent->name.c_str(), &st,
                  AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) return absl::OkStatus();
      return base::ErrnoStatus("fstatat", tgt, errno);
    }
    if (S_ISLNK(st.st_mode)) return absl::OkStatus();  // not a mount point
    ASSIGN_OR_RETURN(auto existing, GetMount(tgt));
    if (!existing.has_value()) return absl::OkStatus();
    if (::umount2(ProcFdPath(parent->dir, parent->name).c_str(),
                  UMOUNT_NOFOLLOW) != 0) {
      if (errno == EINVAL || errno == ENOENT) return absl::OkStatus();
      return base::ErrnoStatus("umount2", tgt, errno);
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::optional<MountInfo>> GetMount(
      absl::string_view target) override {
    std::string tgt(target);
    absl::StatusOr<UniqueFd> fd = roots_.Open(tgt, O_PATH);
    if (absl::IsNotFound(fd.status())) return std::optional<MountInfo>();
    if (!fd.ok()) return fd.status();
    return MountAt(tgt, *fd);
  }

  absl::Status MakeDir(absl::string_view path) override {
    return roots_.MakeDirs(path, 0750).status();
  }

  absl::Status MakeFile(absl::string_view path) override {
    std::string p(path);
    size_t slash = p.rfind('/');
    if (slash != std::string::npos && roots_.Covers(p.substr(0, slash))) {
      RETURN_IF_ERROR(roots_.MakeDirs(p.substr(0, slash), 0750).status());
    }
    ASSIGN_OR_RETURN(UniqueFd fd, roots_.Open(p, O_WRONLY | O_CREAT, 0640));
    return absl::OkStatus();
  }

  absl::Status MakeSymlink(absl::string_view value,
                           absl::string_view path) override {
    std::string p(path), v(value);
    ASSIGN_OR_RETURN(ConfinedRoots::Parent parent, roots_.OpenParent(p));
    if (::symlinkat(v.c_str(), parent.dir.get(), parent.name.c_str()) == 0) {
      return absl::OkStatus();
    }
    if (errno != EEXIST) return base::ErrnoStatus("symlinkat", p, errno);
    char buf[PATH_MAX];
    ssize_t n =
        ::readlinkat(parent.dir.get(), parent.name.c_str(), buf, sizeof(buf));
    if (n >= 0 && absl::string_view(buf, static_cast<size_t>(n)) == v) {
      return absl::OkStatus();
    }
    return absl::AlreadyExistsError(
        absl::StrCat(p, " exists and is not a symlink to ", v));
  }

  absl::Status RemovePath(absl::string_view path) override {
    std::string p(path);
    absl::StatusOr<ConfinedRoots::Parent> parent = roots_.OpenParent(p);
    if (absl::IsNotFound(parent.status())) return absl::OkStatus();
    if (!parent.ok()) return parent.status();
    struct stat st;
    if (::fstatat(parent->dir.get(), parent->name.c_str(), &st,
                  AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) return absl::OkStatus();
      return base::ErrnoStatus("fstatat", p, errno);
    }
    // unlinkat never follows the entry: a planted symlink is only removed.
    int rc = ::unlinkat(parent->dir.get(), parent->name.c_str(),
                        S_ISDIR(st.st_mode) ? AT_REMOVEDIR : 0);
    if (rc != 0 && errno != ENOENT) {
      return base::ErrnoStatus(S_ISDIR(st.st_mode) ? "rmdir" : "unlink", p,
                               errno);
    }
    return absl::OkStatus();
  }

  bool PathExists(absl::string_view path) override {
    if (!roots_.Covers(path)) return sys::PathExists(path);
    absl::StatusOr<ConfinedRoots::Parent> parent = roots_.OpenParent(path);
    if (!parent.ok()) return !absl::IsNotFound(parent.status());
    struct stat st;
    return ::fstatat(parent->dir.get(), parent->name.c_str(), &st,
                     AT_SYMLINK_NOFOLLOW) == 0;
  }

  absl::StatusOr<FsUsage> StatFs(absl::string_view path) override {
    ASSIGN_OR_RETURN(UniqueFd fd, roots_.Open(path, O_PATH));
    return sys::StatFs(ProcFdPath(fd));
  }

  absl::Status Freeze(absl::string_view mount_path) override {
    ASSIGN_OR_RETURN(UniqueFd fd,
                     roots_.Open(mount_path, O_RDONLY | O_DIRECTORY));
    if (::ioctl(fd.get(), FIFREEZE, 0) == 0) return absl::OkStatus();
    if (errno == EBUSY) {
      return absl::FailedPreconditionError(absl::StrCat(
          "FIFREEZE ", mount_path, ": already frozen by someone else"));
    }
    return base::ErrnoStatus("ioctl(FIFREEZE)", mount_path, errno);
  }

  absl::Status Thaw(absl::string_view mount_path) override {
    ASSIGN_OR_RETURN(UniqueFd fd,
                     roots_.Open(mount_path, O_RDONLY | O_DIRECTORY));
    if (::ioctl(fd.get(), FITHAW, 0) == 0) return absl::OkStatus();
    if (errno == EINVAL) return absl::OkStatus();  // not frozen
    return base::ErrnoStatus("ioctl(FITHAW)", mount_path, errno);
  }

  absl::Status WriteFile(absl::string_view path,
                         absl::string_view data) override {
    // Temp file beside it, then renameat on the held parent: a reader sees
    // the old or the new contents, and no symlink is followed.
    std::string p(path);
    ASSIGN_OR_RETURN(ConfinedRoots::Parent parent, roots_.OpenParent(p));
    const std::string tmp = absl::StrCat(".", parent.name, ".tmp");
    int raw =
        ::openat(parent.dir.get(), tmp.c_str(),
                 O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (raw < 0) return base::ErrnoStatus("openat", p + ".tmp", errno);
    UniqueFd fd(raw);
    absl::Status s = WriteAll(fd.get(), data, p);
    if (s.ok() && ::fsync(fd.get()) != 0) {
      s = base::ErrnoStatus("fsync", p, errno);
    }
    if (s.ok() && ::renameat(parent.dir.get(), tmp.c_str(), parent.dir.get(),
                             parent.name.c_str()) != 0) {
      s = base::ErrnoStatus("renameat", p, errno);
    }
    if (!s.ok()) ::unlinkat(parent.dir.get(), tmp.c_str(), 0);
    return s;
  }

 private:
  // The mount whose root `fd` (opened at `path`) is, or nullopt when `fd`
  // is a plain directory or file of its parent's mount. Matched by mount
  // ID, not by the path string.
  absl::StatusOr<std::optional<MountInfo>> MountAt(const std::string& path,
                                                   const UniqueFd& fd) {
    ASSIGN_OR_RETURN(int id, MountIdOf(fd));
    ASSIGN_OR_RETURN(ConfinedRoots::Parent parent, roots_.OpenParent(path));
    ASSIGN_OR_RETURN(int parent_id, MountIdOf(parent.dir));
    if (id == parent_id) return std::optional<MountInfo>();
    TablePtr table(mnt_new_table());
    if (!table) return absl::InternalError("mnt_new_table failed");
    int rc = mnt_table_parse_file(table.get(), "/proc/self/mountinfo");
    if (rc != 0) {
      return base::ErrnoStatus("mnt_table_parse_file", "/proc/self/mountinfo",
                               rc < 0 ? -rc : EIO);
    }
    libmnt_iter* it = mnt_new_iter(MNT_ITER_BACKWARD);
    if (it == nullptr) return absl::InternalError("mnt_new_iter failed");
    libmnt_fs* fs = nullptr;
    libmnt_fs* found = nullptr;
    while (mnt_table_next_fs(table.get(), it, &fs) == 0) {
      if (mnt_fs_get_id(fs) == id) {
        found = fs;
        break;
      }
    }
    mnt_free_iter(it);
    if (found == nullptr) return std::optional<MountInfo>();
    return std::optional<MountInfo>(ToInfo(found));
  }

  static MountInfo ToInfo(libmnt_fs* fs) {
    MountInfo info;
    info.source = Str(mnt_fs_get_source(fs));
    info.target = Str(mnt_fs_get_target(fs));
    info.fs_type = Str(mnt_fs_get_fstype(fs));
    info.root = Str(mnt_fs_get_root(fs));
    info.vfs_options = Str(mnt_fs_get_vfs_options(fs));
    info.fs_options = Str(mnt_fs_get_fs_options(fs));
    dev_t dev = mnt_fs_get_devno(fs);
    info.major = major(dev);
    info.minor = minor(dev);
    for (absl::string_view o : absl::StrSplit(info.vfs_options, ',')) {
      if (o == "ro") info.read_only = true;
    }
    return info;
  }

  const ConfinedRoots roots_;
};

}  // namespace

std::unique_ptr<Mounter> NewSystemMounter(
    std::vector<std::string> allowed_roots) {
  return std::make_unique<SystemMounter>(std::move(allowed_roots));
}

}  // namespace daxlease::sys
