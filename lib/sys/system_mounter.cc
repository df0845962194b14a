// The real Mounter. <libmount/libmount.h> is included here only.
#include <fcntl.h>
#include <libmount/libmount.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "lib/base/status.h"
#include "lib/sys/fd.h"
#include "lib/sys/mounter.h"

namespace daxlease::sys {
namespace {

struct TableDeleter {
  void operator()(libmnt_table* t) const { mnt_unref_table(t); }
};
using TablePtr = std::unique_ptr<libmnt_table, TableDeleter>;

std::string Str(const char* s) { return s == nullptr ? std::string() : s; }

// Paths from a CO may contain symlinks; the mount table holds resolved ones.
std::string Resolve(absl::string_view path) {
  auto canon = CanonicalPath(path);
  return canon.ok() ? *canon : std::string(path);
}

class SystemMounter final : public Mounter {
 public:
  absl::Status Mount(absl::string_view source, absl::string_view target,
                     absl::string_view fs_type,
                     absl::string_view options) override {
    unsigned long flags = 0;
    std::vector<std::string> data;
    for (absl::string_view opt :
         absl::StrSplit(options, ',', absl::SkipEmpty())) {
      if (opt == "ro") {
        flags |= MS_RDONLY;
      } else if (opt == "rw") {
      } else if (opt == "noexec") {
        flags |= MS_NOEXEC;
      } else if (opt == "nosuid") {
        flags |= MS_NOSUID;
      } else if (opt == "nodev") {
        flags |= MS_NODEV;
      } else if (opt == "noatime") {
        flags |= MS_NOATIME;
      } else if (opt == "relatime") {
        flags |= MS_RELATIME;
      } else if (opt == "sync") {
        flags |= MS_SYNCHRONOUS;
      } else {
        data.emplace_back(opt);
      }
    }
    std::string src(source), tgt(target), fs(fs_type);
    std::string d = absl::StrJoin(data, ",");
    ASSIGN_OR_RETURN(auto existing, GetMount(tgt));
    if (existing.has_value()) {
      return absl::AlreadyExistsError(absl::StrCat(
          tgt, " is already a mount point (", existing->source, ")"));
    }
    if (::mount(src.c_str(), tgt.c_str(), fs.c_str(), flags,
                d.empty() ? nullptr : d.c_str()) != 0) {
      return base::ErrnoStatus(absl::StrCat("mount(", src, ", ", fs, ")"), tgt,
                               errno);
    }
    return absl::OkStatus();
  }

  absl::Status BindMount(absl::string_view source, absl::string_view target,
                         bool read_only) override {
    std::string src(source), tgt(target);
    ASSIGN_OR_RETURN(auto existing, GetMount(tgt));
    if (existing.has_value()) {
      return absl::AlreadyExistsError(absl::StrCat(
          tgt, " is already a mount point (", existing->source, ")"));
    }
    if (::mount(src.c_str(), tgt.c_str(), nullptr, MS_BIND, nullptr) != 0) {
      return base::ErrnoStatus(absl::StrCat("mount(bind ", src, ")"), tgt,
                               errno);
    }
    if (read_only && ::mount(nullptr, tgt.c_str(), nullptr,
                             MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr) != 0) {
      int err = errno;
      ::umount2(tgt.c_str(), 0);
      return base::ErrnoStatus("mount(remount bind ro)", tgt, err);
    }
    return absl::OkStatus();
  }

  absl::Status Unmount(absl::string_view target) override {
    std::string tgt(target);
    ASSIGN_OR_RETURN(auto existing, GetMount(tgt));
    if (!existing.has_value()) return absl::OkStatus();
    if (::umount2(Resolve(tgt).c_str(), UMOUNT_NOFOLLOW) != 0) {
      if (errno == EINVAL || errno == ENOENT) return absl::OkStatus();
      return base::ErrnoStatus("umount2", tgt, errno);
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::optional<MountInfo>> GetMount(
      absl::string_view target) override {
    std::string tgt = Resolve(target);
    TablePtr table(mnt_new_table());
    if (!table) return absl::InternalError("mnt_new_table failed");
    int rc = mnt_table_parse_file(table.get(), "/proc/self/mountinfo");
    if (rc != 0) {
      return base::ErrnoStatus("mnt_table_parse_file", "/proc/self/mountinfo",
                               rc < 0 ? -rc : EIO);
    }
    // Without a cache libmount compares the target strings only, which is
    // what we want after resolving the path ourselves.
    libmnt_fs* fs =
        mnt_table_find_target(table.get(), tgt.c_str(), MNT_ITER_BACKWARD);
    if (fs == nullptr) return std::optional<MountInfo>();
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
    return std::optional<MountInfo>(std::move(info));
  }

  absl::Status MakeDir(absl::string_view path) override {
    return MakeDirs(path, 0750);
  }

  absl::Status MakeFile(absl::string_view path) override {
    std::string p(path);
    size_t slash = p.rfind('/');
    if (slash != std::string::npos && slash > 0) {
      RETURN_IF_ERROR(MakeDirs(p.substr(0, slash), 0750));
    }
    ASSIGN_OR_RETURN(UniqueFd fd, OpenFd(p, O_WRONLY | O_CREAT, 0640));
    return absl::OkStatus();
  }

  absl::Status RemovePath(absl::string_view path) override {
    std::string p(path);
    struct stat st;
    if (::lstat(p.c_str(), &st) != 0) {
      if (errno == ENOENT) return absl::OkStatus();
      return base::ErrnoStatus("lstat", p, errno);
    }
    int rc = S_ISDIR(st.st_mode) ? ::rmdir(p.c_str()) : ::unlink(p.c_str());
    if (rc != 0 && errno != ENOENT) {
      return base::ErrnoStatus(S_ISDIR(st.st_mode) ? "rmdir" : "unlink", p,
                               errno);
    }
    return absl::OkStatus();
  }

  bool PathExists(absl::string_view path) override {
    return sys::PathExists(path);
  }

  absl::StatusOr<FsUsage> StatFs(absl::string_view path) override {
    return sys::StatFs(path);
  }
};

}  // namespace

std::unique_ptr<Mounter> NewSystemMounter() {
  return std::make_unique<SystemMounter>();
}

}  // namespace daxlease::sys
