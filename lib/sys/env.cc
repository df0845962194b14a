#include "lib/sys/env.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "lib/base/status.h"
#include "lib/sys/fd.h"
#include "lib/sys/file.h"

namespace daxlease::sys {
namespace {

class PosixEnv final : public Env {
 public:
  absl::StatusOr<std::string> ReadFile(absl::string_view path) override {
    return sys::ReadFile(path);
  }
  absl::Status WriteFileSynced(absl::string_view path,
                               absl::string_view data) override {
    ASSIGN_OR_RETURN(UniqueFd fd,
                     OpenFd(path, O_WRONLY | O_CREAT | O_TRUNC, 0600));
    RETURN_IF_ERROR(WriteAll(fd.get(), data, path));
    if (::fsync(fd.get()) != 0) return base::ErrnoStatus("fsync", path, errno);
    return absl::OkStatus();
  }
  absl::Status WriteFileUnsynced(absl::string_view path,
                                 absl::string_view data) override {
    ASSIGN_OR_RETURN(UniqueFd fd,
                     OpenFd(path, O_WRONLY | O_CREAT | O_TRUNC, 0600));
    return WriteAll(fd.get(), data, path);
  }
  absl::Status Rename(absl::string_view from, absl::string_view to) override {
    std::string f(from), t(to);
    if (::rename(f.c_str(), t.c_str()) != 0) {
      return base::ErrnoStatus("rename", absl::StrCat(f, " -> ", t), errno);
    }
    return absl::OkStatus();
  }
  absl::Status Sync(absl::string_view path) override {
    return sys::Fsync(path);
  }
  absl::Status RemoveFile(absl::string_view path) override {
    return sys::RemoveFile(path);
  }
  absl::Status Fallocate(absl::string_view path, uint64_t size) override {
    ASSIGN_OR_RETURN(UniqueFd fd, OpenFd(path, O_RDWR | O_CREAT, 0600));
    if (size == 0) return absl::OkStatus();
    int rc;
    do {
      rc = ::fallocate(fd.get(), 0, 0, static_cast<off_t>(size));
    } while (rc != 0 && errno == EINTR);
    if (rc != 0) return base::ErrnoStatus("fallocate", path, errno);
    return absl::OkStatus();
  }
  absl::StatusOr<uint64_t> FileSize(absl::string_view path) override {
    return sys::FileSize(path);
  }
  absl::StatusOr<bool> HasData(absl::string_view path) override {
    ASSIGN_OR_RETURN(UniqueFd fd, OpenFd(path, O_RDONLY));
    if (::lseek(fd.get(), 0, SEEK_DATA) >= 0) return true;
    if (errno == ENXIO) return false;  // no data at or after offset 0
    return base::ErrnoStatus("lseek(SEEK_DATA)", path, errno);
  }
  bool PathExists(absl::string_view path) override {
    return sys::PathExists(path);
  }
  absl::Status MakeDirs(absl::string_view path, int mode) override {
    return sys::MakeDirs(path, mode);
  }
  absl::StatusOr<std::vector<std::string>> ListDir(
      absl::string_view path) override {
    return sys::ListDir(path);
  }
  absl::StatusOr<std::string> CanonicalPath(absl::string_view path) override {
    return sys::CanonicalPath(path);
  }
  absl::StatusOr<FsUsage> StatFs(absl::string_view path) override {
    return sys::StatFs(path);
  }
  absl::Status CheckWritable(absl::string_view dir) override {
    std::string d(dir);
    if (::access(d.c_str(), W_OK) != 0) {
      return base::ErrnoStatus("access(W_OK)", d, errno);
    }
    return absl::OkStatus();
  }
  absl::StatusOr<CopyResult> CopyData(absl::string_view from,
                                      absl::string_view to,
                                      const CopyOptions& options) override {
    return CopyFileData(from, to, options);
  }
};

}  // namespace

Env* DefaultEnv() {
  static Env* const env = new PosixEnv();
  return env;
}

std::string DirOf(absl::string_view path) {
  size_t slash = path.rfind('/');
  if (slash == absl::string_view::npos) return ".";
  if (slash == 0) return "/";
  return std::string(path.substr(0, slash));
}

absl::Status WriteFileAtomic(Env* env, absl::string_view path,
                             absl::string_view data, Durability durability) {
  const std::string tmp = absl::StrCat(path, ".tmp");
  absl::Status st = durability == Durability::kVolatile
                        ? env->WriteFileUnsynced(tmp, data)
                        : env->WriteFileSynced(tmp, data);
  if (st.ok()) st = env->Rename(tmp, path);
  if (!st.ok()) {
    (void)env->RemoveFile(tmp);  // the old contents stay, alone
    return st;
  }
  if (durability != Durability::kDurable) return absl::OkStatus();
  return env->Sync(DirOf(path));
}

// ------------------------------------------------------ FaultInjectionEnv

void FaultInjectionEnv::FailNext(absl::string_view op, absl::Status status,
                                 absl::string_view path_suffix) {
  absl::MutexLock l(&mu_);
  faults_.push_back(
      Fault{std::string(op), std::string(path_suffix), std::move(status)});
}

void FaultInjectionEnv::TearNextWrite(absl::string_view path_suffix,
                                      size_t keep_bytes, absl::Status status) {
  absl::MutexLock l(&mu_);
  faults_.push_back(Fault{"WriteFileSynced", std::string(path_suffix),
                          std::move(status), static_cast<int64_t>(keep_bytes)});
}

std::vector<std::string> FaultInjectionEnv::calls() const {
  absl::MutexLock l(&mu_);
  return calls_;
}

void FaultInjectionEnv::ClearCalls() {
  absl::MutexLock l(&mu_);
  calls_.clear();
}

std::optional<FaultInjectionEnv::Fault> FaultInjectionEnv::Enter(
    absl::string_view op, absl::string_view path, absl::string_view detail) {
  absl::MutexLock l(&mu_);
  calls_.push_back(absl::StrCat(op, " ", path, detail));
  for (auto it = faults_.begin(); it != faults_.end(); ++it) {
    if (it->op == op && absl::EndsWith(path, it->path_suffix)) {
      Fault f = *it;
      faults_.erase(it);
      return f;
    }
  }
  return std::nullopt;
}

absl::StatusOr<std::string> FaultInjectionEnv::ReadFile(
    absl::string_view path) {
  if (auto f = Enter("ReadFile", path)) return f->status;
  return base_->ReadFile(path);
}

absl::Status FaultInjectionEnv::WriteFileSynced(absl::string_view path,
                                                absl::string_view data) {
  if (auto f = Enter("WriteFileSynced", path)) {
    if (f->tear_at >= 0) {
      // The first bytes reach the file, then the "crash": not synced.
      std::string p(path);
      UniqueFd fd;
      if (auto o = OpenFd(p, O_WRONLY | O_CREAT | O_TRUNC, 0600); o.ok()) {
        fd = std::move(*o);
        (void)WriteAll(fd.get(),
                       data.substr(0, static_cast<size_t>(f->tear_at)), p);
      }
    }
    return f->status;
  }
  return base_->WriteFileSynced(path, data);
}

absl::Status FaultInjectionEnv::WriteFileUnsynced(absl::string_view path,
                                                  absl::string_view data) {
  if (auto f = Enter("WriteFileUnsynced", path)) return f->status;
  return base_->WriteFileUnsynced(path, data);
}

absl::Status FaultInjectionEnv::Rename(absl::string_view from,
                                       absl::string_view to) {
  if (auto f = Enter("Rename", from, absl::StrCat(" -> ", to))) {
    return f->status;
  }
  return base_->Rename(from, to);
}

absl::Status FaultInjectionEnv::Sync(absl::string_view path) {
  if (auto f = Enter("Sync", path)) return f->status;
  return base_->Sync(path);
}

absl::Status FaultInjectionEnv::RemoveFile(absl::string_view path) {
  if (auto f = Enter("RemoveFile", path)) return f->status;
  return base_->RemoveFile(path);
}

absl::Status FaultInjectionEnv::Fallocate(absl::string_view path,
                                          uint64_t size) {
  if (auto f = Enter("Fallocate", path)) return f->status;
  return base_->Fallocate(path, size);
}

absl::StatusOr<uint64_t> FaultInjectionEnv::FileSize(absl::string_view path) {
  if (auto f = Enter("FileSize", path)) return f->status;
  return base_->FileSize(path);
}

absl::StatusOr<bool> FaultInjectionEnv::HasData(absl::string_view path) {
  if (auto f = Enter("HasData", path)) return f->status;
  return base_->HasData(path);
}

bool FaultInjectionEnv::PathExists(absl::string_view path) {
  (void)Enter("PathExists", path);
  return base_->PathExists(path);
}

absl::Status FaultInjectionEnv::MakeDirs(absl::string_view path, int mode) {
  if (auto f = Enter("MakeDirs", path)) return f->status;
  return base_->MakeDirs(path, mode);
}

absl::StatusOr<std::vector<std::string>> FaultInjectionEnv::ListDir(
    absl::string_view path) {
  if (auto f = Enter("ListDir", path)) return f->status;
  return base_->ListDir(path);
}

absl::StatusOr<std::string> FaultInjectionEnv::CanonicalPath(
    absl::string_view path) {
  if (auto f = Enter("CanonicalPath", path)) return f->status;
  return base_->CanonicalPath(path);
}

absl::StatusOr<FsUsage> FaultInjectionEnv::StatFs(absl::string_view path) {
  if (auto f = Enter("StatFs", path)) return f->status;
  return base_->StatFs(path);
}

absl::Status FaultInjectionEnv::CheckWritable(absl::string_view dir) {
  if (auto f = Enter("CheckWritable", dir)) return f->status;
  return base_->CheckWritable(dir);
}

absl::StatusOr<CopyResult> FaultInjectionEnv::CopyData(
    absl::string_view from, absl::string_view to, const CopyOptions& options) {
  if (auto f = Enter("CopyData", to)) return f->status;
  return base_->CopyData(from, to, options);
}

}  // namespace daxlease::sys
