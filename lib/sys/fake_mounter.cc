#include "lib/sys/fake_mounter.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace daxlease::sys {

absl::Status FakeMounter::TakeFailure(absl::string_view op) {
  auto it = failures_.find(std::string(op));
  if (it == failures_.end()) return absl::OkStatus();
  absl::Status s = it->second;
  failures_.erase(it);
  return s;
}

absl::Status FakeMounter::Mount(absl::string_view source,
                                absl::string_view target,
                                absl::string_view fs_type,
                                absl::string_view options) {
  absl::MutexLock l(&mu_);
  if (absl::Status s = TakeFailure("Mount"); !s.ok()) return s;
  std::string t(target);
  if (!paths_.count(t)) {
    return absl::NotFoundError(absl::StrCat("mount: ", t, " does not exist"));
  }
  if (mounts_.count(t)) {
    return absl::AlreadyExistsError(
        absl::StrCat(t, " is already a mount point"));
  }
  MountInfo m;
  m.source = std::string(source);
  m.target = t;
  m.fs_type = std::string(fs_type);
  m.root = "/";
  m.vfs_options = absl::StrContains(options, "ro") ? "ro" : "rw";
  m.fs_options = std::string(options);
  m.read_only = m.vfs_options == "ro";
  mounts_[t] = m;
  ++mount_calls_;
  return absl::OkStatus();
}

absl::Status FakeMounter::BindMount(absl::string_view source,
                                    absl::string_view target, bool read_only) {
  absl::MutexLock l(&mu_);
  if (absl::Status s = TakeFailure("BindMount"); !s.ok()) return s;
  std::string t(target), src(source);
  if (!paths_.count(t)) {
    return absl::NotFoundError(absl::StrCat("bind: ", t, " does not exist"));
  }
  if (!paths_.count(src) && !mounts_.count(src)) {
    return absl::NotFoundError(absl::StrCat("bind: ", src, " does not exist"));
  }
  if (mounts_.count(t)) {
    return absl::AlreadyExistsError(
        absl::StrCat(t, " is already a mount point"));
  }
  MountInfo m;
  auto it = mounts_.find(src);
  if (it != mounts_.end()) {
    m = it->second;
    m.root = "/";
  } else {
    m.source = src;  // a device node bound onto a file
    m.fs_type = "devtmpfs";
    m.root = src;
  }
  m.target = t;
  m.read_only = read_only;
  m.vfs_options = read_only ? "ro" : "rw";
  mounts_[t] = m;
  ++mount_calls_;
  return absl::OkStatus();
}

absl::Status FakeMounter::Unmount(absl::string_view target) {
  absl::MutexLock l(&mu_);
  if (absl::Status s = TakeFailure("Unmount"); !s.ok()) return s;
  mounts_.erase(std::string(target));
  return absl::OkStatus();
}

absl::StatusOr<std::optional<MountInfo>> FakeMounter::GetMount(
    absl::string_view target) {
  absl::MutexLock l(&mu_);
  if (absl::Status s = TakeFailure("GetMount"); !s.ok()) return s;
  if (links_.count(std::string(target))) {
    return absl::InvalidArgumentError(
        absl::StrCat(target, " is a symlink; not followed"));
  }
  auto it = mounts_.find(std::string(target));
  if (it == mounts_.end()) return std::optional<MountInfo>();
  return std::optional<MountInfo>(it->second);
}

absl::Status FakeMounter::MakeDir(absl::string_view path) {
  absl::MutexLock l(&mu_);
  if (absl::Status s = TakeFailure("MakeDir"); !s.ok()) return s;
  paths_.insert(std::string(path));
  return absl::OkStatus();
}

absl::Status FakeMounter::MakeFile(absl::string_view path) {
  absl::MutexLock l(&mu_);
  if (absl::Status s = TakeFailure("MakeFile"); !s.ok()) return s;
  paths_.insert(std::string(path));
  return absl::OkStatus();
}

absl::Status FakeMounter::MakeSymlink(absl::string_view value,
                                      absl::string_view path) {
  absl::MutexLock l(&mu_);
  if (absl::Status s = TakeFailure("MakeSymlink"); !s.ok()) return s;
  std::string p(path);
  auto it = links_.find(p);
  if (it != links_.end() && it->second == value) return absl::OkStatus();
  if (it != links_.end() || paths_.count(p) || mounts_.count(p)) {
    return absl::AlreadyExistsError(
        absl::StrCat(p, " exists and is not a symlink to ", value));
  }
  links_[p] = std::string(value);
  paths_.insert(p);
  return absl::OkStatus();
}

absl::Status FakeMounter::WriteFile(absl::string_view path,
                                    absl::string_view data) {
  absl::MutexLock l(&mu_);
  if (absl::Status s = TakeFailure("WriteFile"); !s.ok()) return s;
  std::string p(path);
  size_t slash = p.rfind('/');
  if (slash != std::string::npos && slash > 0 &&
      !paths_.count(p.substr(0, slash))) {
    return absl::NotFoundError(absl::StrCat("write ", p, ": no directory"));
  }
  paths_.insert(p);
  files_[p] = std::string(data);
  return absl::OkStatus();
}

absl::Status FakeMounter::RemovePath(absl::string_view path) {
  absl::MutexLock l(&mu_);
  if (absl::Status s = TakeFailure("RemovePath"); !s.ok()) return s;
  std::string p(path);
  if (mounts_.count(p)) {
    return absl::UnavailableError(
        absl::StrCat("remove ", p, ": busy (mounted)"));
  }
  paths_.erase(p);
  files_.erase(p);
  links_.erase(p);
  return absl::OkStatus();
}

bool FakeMounter::PathExists(absl::string_view path) {
  absl::MutexLock l(&mu_);
  return paths_.count(std::string(path)) > 0;
}

absl::StatusOr<FsUsage> FakeMounter::StatFs(absl::string_view path) {
  absl::MutexLock l(&mu_);
  if (absl::Status s = TakeFailure("StatFs"); !s.ok()) return s;
  if (!paths_.count(std::string(path))) {
    return absl::NotFoundError(absl::StrCat("statvfs: ", path, " missing"));
  }
  return usage_;
}

absl::Status FakeMounter::Freeze(absl::string_view mount_path) {
  absl::MutexLock l(&mu_);
  if (absl::Status s = TakeFailure("Freeze"); !s.ok()) return s;
  if (!mounts_.count(std::string(mount_path))) {
    return absl::InvalidArgumentError(
        absl::StrCat("FIFREEZE: ", mount_path, " is not a mount point"));
  }
  if (!frozen_.insert(std::string(mount_path)).second) {
    return absl::FailedPreconditionError(
        absl::StrCat(mount_path, " is already frozen"));
  }
  return absl::OkStatus();
}

absl::Status FakeMounter::Thaw(absl::string_view mount_path) {
  absl::MutexLock l(&mu_);
  if (absl::Status s = TakeFailure("Thaw"); !s.ok()) return s;
  frozen_.erase(std::string(mount_path));
  return absl::OkStatus();
}

std::set<std::string> FakeMounter::Frozen() const {
  absl::MutexLock l(&mu_);
  return frozen_;
}

void FakeMounter::FailNext(absl::string_view op, absl::Status status) {
  absl::MutexLock l(&mu_);
  failures_[std::string(op)] = std::move(status);
}

void FakeMounter::AddPath(absl::string_view path) {
  absl::MutexLock l(&mu_);
  paths_.insert(std::string(path));
}

void FakeMounter::DropMount(absl::string_view target) {
  absl::MutexLock l(&mu_);
  mounts_.erase(std::string(target));
}

void FakeMounter::SetUsage(FsUsage usage) {
  absl::MutexLock l(&mu_);
  usage_ = usage;
}

std::vector<MountInfo> FakeMounter::Mounts() const {
  absl::MutexLock l(&mu_);
  std::vector<MountInfo> out;
  for (const auto& [t, m] : mounts_) out.push_back(m);
  return out;
}

std::optional<std::string> FakeMounter::FileContent(
    absl::string_view path) const {
  absl::MutexLock l(&mu_);
  auto it = files_.find(std::string(path));
  if (it == files_.end()) return std::nullopt;
  return it->second;
}

std::optional<std::string> FakeMounter::SymlinkValue(
    absl::string_view path) const {
  absl::MutexLock l(&mu_);
  auto it = links_.find(std::string(path));
  if (it == links_.end()) return std::nullopt;
  return it->second;
}

int FakeMounter::mount_calls() const {
  absl::MutexLock l(&mu_);
  return mount_calls_;
}

}  // namespace daxlease::sys
