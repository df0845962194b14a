#include "csi/file_backend.h"

#include <sys/stat.h>

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "csi/validation.h"
#include "lib/base/log.h"
#include "lib/base/status.h"
#include "lib/sys/file.h"
#include "lib/sys/loop_device.h"

namespace daxlease::csi {
namespace {
constexpr char kImageSuffix[] = ".img";
}  // namespace

absl::Status FileBackend::Init() {
  RETURN_IF_ERROR(env_->MakeDirs(dir_, 0700));
  ASSIGN_OR_RETURN(dir_, env_->CanonicalPath(dir_));
  snapshot_dir_ = absl::StrCat(sys::DirOf(dir_), "/snapshots");
  RETURN_IF_ERROR(env_->MakeDirs(snapshot_dir_, 0700));
  return absl::OkStatus();
}

std::string FileBackend::SnapshotPath(absl::string_view id) const {
  return absl::StrCat(snapshot_dir_, "/", id, kImageSuffix);
}

std::string FileBackend::ImagePath(absl::string_view id) const {
  return absl::StrCat(dir_, "/", id, kImageSuffix);
}

absl::Status FileBackend::Ready() {
  RETURN_IF_ERROR(env_->CheckWritable(dir_));
  if (!env_->PathExists("/dev/loop-control")) {
    return absl::UnavailableError(
        "/dev/loop-control is missing: the file backend needs the loop driver");
  }
  return absl::OkStatus();
}

absl::StatusOr<Capacity> FileBackend::CapacityLocked() {
  ASSIGN_OR_RETURN(std::vector<Volume> vols, List());
  uint64_t used = 0;
  for (const Volume& v : vols) used += v.capacity_bytes;
  if (!snapshot_dir_.empty()) {
    ASSIGN_OR_RETURN(std::vector<std::string> snaps,
                     env_->ListDir(snapshot_dir_));
    for (const std::string& n : snaps) {
      auto size = env_->FileSize(absl::StrCat(snapshot_dir_, "/", n));
      if (size.ok()) used += *size;  // else deleted meanwhile
    }
  }
  ASSIGN_OR_RETURN(sys::FsUsage fs, env_->StatFs(dir_));
  uint64_t fs_free = fs.available_bytes > kReserveBytes
                         ? fs.available_bytes - kReserveBytes
                         : 0;
  Capacity c;
  if (capacity_bytes_ > 0) {
    c.total_bytes = capacity_bytes_;
    uint64_t left = capacity_bytes_ > used ? capacity_bytes_ - used : 0;
    c.available_bytes = std::min(left, fs_free);
  } else {
    c.total_bytes = used + fs_free;
    c.available_bytes = fs_free;
  }
  c.max_volume_bytes = c.available_bytes;
  return c;
}

absl::StatusOr<Capacity> FileBackend::GetCapacity(VolumeMode mode) {
  if (mode == VolumeMode::kDevdax) return Capacity{};
  absl::MutexLock l(&space_mu_);
  return CapacityLocked();
}

absl::Status FileBackend::AllocateLocked(absl::string_view id, uint64_t have,
                                         uint64_t bytes,
                                         bool synced_by_format) {
  ASSIGN_OR_RETURN(Capacity cap, CapacityLocked());
  uint64_t need = bytes - have;
  if (need > cap.available_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("file backend: ", need, " more bytes needed for volume ",
                     id, ", only ", cap.available_bytes, " available"));
  }
  std::string path = ImagePath(id);
  // Allocated, then made durable: the image's extents and size (fsync of
  // the image), and for a new image its directory entry (fsync of the
  // directory). A new image that the service formats next is not fsynced
  // here: mkfs fsyncs the same file once it has written it, which makes
  // the size and extents durable with the filesystem (one fsync, not two).
  // A grown image is always fsynced: nothing may follow it.
  const bool new_image = have == 0;
  absl::Status st = env_->Fallocate(path, bytes);
  if (st.ok() && !(new_image && synced_by_format)) st = env_->Sync(path);
  if (st.ok() && new_image) st = env_->Sync(dir_);
  if (!st.ok()) {
    // Do not leave a half-made new image behind; an existing one keeps
    // its old size (fallocate does not change the size on failure).
    if (have == 0) {
      (void)env_->RemoveFile(path);
      (void)env_->Sync(dir_);
    }
    return st;
  }
  return absl::OkStatus();
}

absl::StatusOr<Volume> FileBackend::Create(const VolumeSpec& spec) {
  if (spec.mode == VolumeMode::kDevdax) {
    return absl::InvalidArgumentError(
        "mode devdax is not supported by the file backend (it emulates fsdax "
        "only); devdax volumes need --backend=ndctl");
  }
  RETURN_IF_ERROR(ValidateVolumeId(spec.id));
  absl::MutexLock l(&space_mu_);
  std::string path = ImagePath(spec.id);
  uint64_t have = 0;
  if (env_->PathExists(path)) {
    ASSIGN_OR_RETURN(have, env_->FileSize(path));
  }
  if (have >= spec.capacity_bytes && have > 0) {
    return Volume{spec.id, have, VolumeMode::kFsdax};
  }
  RETURN_IF_ERROR(AllocateLocked(spec.id, have, spec.capacity_bytes,
                                 spec.synced_by_format));
  base::LogInfo(
      "file_backend.created",
      {{"volume", spec.id}, {"bytes", absl::StrCat(spec.capacity_bytes)}});
  return Volume{spec.id, spec.capacity_bytes, VolumeMode::kFsdax};
}

absl::StatusOr<Volume> FileBackend::Get(absl::string_view id) {
  RETURN_IF_ERROR(ValidateVolumeId(id));
  auto size = env_->FileSize(ImagePath(id));
  if (!size.ok()) return size.status();
  return Volume{std::string(id), *size, VolumeMode::kFsdax};
}

absl::StatusOr<std::vector<Volume>> FileBackend::List() {
  ASSIGN_OR_RETURN(std::vector<std::string> names, env_->ListDir(dir_));
  std::vector<Volume> out;
  for (const std::string& n : names) {
    if (!absl::EndsWith(n, kImageSuffix)) continue;
    std::string id = n.substr(0, n.size() - strlen(kImageSuffix));
    auto size = env_->FileSize(ImagePath(id));
    if (!size.ok()) continue;  // deleted meanwhile
    out.push_back(Volume{id, *size, VolumeMode::kFsdax});
  }
  return out;
}

absl::Status FileBackend::Delete(absl::string_view id) {
  RETURN_IF_ERROR(ValidateVolumeId(id));
  ASSIGN_OR_RETURN(auto dev, FindAttached(id));
  if (dev.has_value()) {
    return absl::FailedPreconditionError(
        absl::StrCat("volume ", id, " is still attached as ", dev->path));
  }
  RETURN_IF_ERROR(env_->RemoveFile(ImagePath(id)));
  // The unlink durable before the caller drops the volume's record.
  RETURN_IF_ERROR(env_->Sync(dir_));
  base::LogInfo("file_backend.deleted", {{"volume", std::string(id)}});
  return absl::OkStatus();
}

absl::StatusOr<Volume> FileBackend::Expand(absl::string_view id,
                                           uint64_t new_capacity_bytes,
                                           uint64_t limit_bytes) {
  RETURN_IF_ERROR(ValidateVolumeId(id));
  absl::MutexLock l(&space_mu_);
  ASSIGN_OR_RETURN(uint64_t have, env_->FileSize(ImagePath(id)));
  if (have >= new_capacity_bytes)
    return Volume{std::string(id), have, VolumeMode::kFsdax};
  if (limit_bytes > 0 && new_capacity_bytes > limit_bytes) {
    return absl::OutOfRangeError(absl::StrCat(
        "expansion to ", new_capacity_bytes, " exceeds limit ", limit_bytes));
  }
  RETURN_IF_ERROR(
      AllocateLocked(id, have, new_capacity_bytes, /*synced_by_format=*/false));
  return Volume{std::string(id), new_capacity_bytes, VolumeMode::kFsdax};
}

absl::StatusOr<AttachedDevice> FileBackend::Attach(absl::string_view id) {
  RETURN_IF_ERROR(ValidateVolumeId(id));
  std::string path = ImagePath(id);
  if (!env_->PathExists(path)) {
    return absl::NotFoundError(
        absl::StrCat("image of volume ", id, " missing: ", path));
  }
  ASSIGN_OR_RETURN(std::string dev, sys::AttachLoop(path));
  return AttachedDevice{dev, true};
}

absl::StatusOr<MountDevice> FileBackend::AttachForMount(absl::string_view id) {
  RETURN_IF_ERROR(ValidateVolumeId(id));
  std::string path = ImagePath(id);
  if (!env_->PathExists(path)) {
    return absl::NotFoundError(
        absl::StrCat("image of volume ", id, " missing: ", path));
  }
  ASSIGN_OR_RETURN(sys::LoopAttachment loop,
                   sys::AttachLoopWithAutoclear(path, /*autoclear=*/true));
  MountDevice m;
  m.device = AttachedDevice{loop.device, true};
  m.goes_with_last_user = loop.autoclear;
  m.hold = std::move(loop.hold);
  return m;
}

absl::StatusOr<std::optional<AttachedDevice>> FileBackend::FindAttached(
    absl::string_view id) {
  RETURN_IF_ERROR(ValidateVolumeId(id));
  ASSIGN_OR_RETURN(auto dev, sys::FindLoopByBackingFile(ImagePath(id)));
  if (!dev.has_value()) return std::optional<AttachedDevice>();
  return std::optional<AttachedDevice>(AttachedDevice{*dev, true});
}

absl::Status FileBackend::Detach(absl::string_view id) {
  RETURN_IF_ERROR(ValidateVolumeId(id));
  ASSIGN_OR_RETURN(std::vector<std::string> devs,
                   sys::FindLoopsByBackingFile(ImagePath(id)));
  for (const std::string& dev : devs) RETURN_IF_ERROR(sys::DetachLoop(dev));
  // A loop released by autoclear (its last mount went just before) is torn
  // down by the kernel asynchronously: it still names the image in sysfs
  // while LOOP_GET_STATUS64 already fails. Returning only once it is gone
  // keeps "unstaged" meaning "no device" for the CO and for a re-stage.
  // Polled from 1 ms up, doubling to 20 ms: the teardown usually takes a
  // millisecond or two.
  const std::string image = ImagePath(id);
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  absl::Duration pause = absl::Milliseconds(1);
  while (absl::Now() < deadline) {
    bool busy = false;
    auto names = sys::ListDir("/sys/block");
    if (!names.ok()) break;
    for (const std::string& n : *names) {
      if (!absl::StartsWith(n, "loop")) continue;
      auto b =
          sys::ReadFile(absl::StrCat("/sys/block/", n, "/loop/backing_file"));
      if (!b.ok()) continue;
      absl::string_view v = absl::StripTrailingAsciiWhitespace(*b);
      absl::ConsumeSuffix(&v, " (deleted)");
      if (v == image) busy = true;
    }
    if (!busy) return absl::OkStatus();
    absl::SleepFor(pause);
    pause = std::min(pause * 2, absl::Milliseconds(20));
  }
  return absl::OkStatus();
}

absl::Status FileBackend::DetachWithLastMount(absl::string_view id) {
  ASSIGN_OR_RETURN(auto dev, FindAttached(id));
  if (!dev.has_value()) return absl::OkStatus();
  return sys::SetLoopAutoclear(dev->path);
}

absl::Status FileBackend::DetachOrphanedDevices() {
  const std::string prefix = absl::StrCat(dir_, "/");
  if (prefix.size() >= sys::kLoopNameMax) {
    base::LogWarn("csi.file.orphans_unchecked",
                  {{"dir", dir_},
                   {"reason",
                    "the directory's path is longer than a loop device's "
                    "name (63 bytes): its loops cannot be told apart"}});
    return absl::OkStatus();
  }
  struct stat st;
  if (::stat(dir_.c_str(), &st) != 0) {
    return base::ErrnoStatus("stat", dir_, errno);
  }
  ASSIGN_OR_RETURN(std::vector<sys::LoopDevice> loops, sys::ListLoops());
  absl::Status first;
  for (const sys::LoopDevice& l : loops) {
    if (!l.backing_deleted || !absl::StartsWith(l.file_name, prefix) ||
        l.backing_device != static_cast<uint64_t>(st.st_dev)) {
      continue;
    }
    absl::Status s = sys::DetachLoopIfUnused(l.device);
    base::LogInfo("csi.file.orphan_detached",
                  {{"device", l.device},
                   {"image", l.file_name},
                   {"result", s.ok() ? "detached" : s.ToString()}});
    first.Update(s);
  }
  return first;
}

absl::StatusOr<bool> FileBackend::ReadsAsZeros(absl::string_view id) {
  RETURN_IF_ERROR(ValidateVolumeId(id));
  absl::StatusOr<bool> data = env_->HasData(ImagePath(id));
  if (absl::IsNotFound(data.status())) return data.status();
  // Unknown (SEEK_DATA unsupported, ...): the caller probes the device.
  return data.ok() && !*data;
}

absl::StatusOr<std::string> FileBackend::FormatPath(absl::string_view id) {
  RETURN_IF_ERROR(ValidateVolumeId(id));
  return ImagePath(id);
}

absl::Status FileBackend::RefreshDevice(absl::string_view id) {
  ASSIGN_OR_RETURN(auto dev, FindAttached(id));
  if (!dev.has_value()) return absl::OkStatus();
  return sys::RefreshLoopCapacity(dev->path);
}

absl::Status FileBackend::CheckRoom(absl::string_view what, uint64_t bytes) {
  absl::MutexLock l(&space_mu_);
  ASSIGN_OR_RETURN(Capacity cap, CapacityLocked());
  if (bytes > cap.available_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("file backend: ", bytes, " bytes needed for ", what,
                     ", only ", cap.available_bytes, " available"));
  }
  return absl::OkStatus();
}

absl::Status FileBackend::CopyComplete(const std::string& from,
                                       const std::string& partial,
                                       const std::string& final,
                                       absl::string_view what) {
  const absl::Time t0 = absl::Now();
  sys::CopyOptions options;
  options.bytes_per_second = copy_bytes_per_second_;
  absl::StatusOr<sys::CopyResult> copied =
      env_->CopyData(from, partial, options);
  absl::Status st = copied.status();
  if (st.ok()) st = env_->Rename(partial, final);
  if (st.ok()) st = env_->Sync(sys::DirOf(final));
  if (!st.ok()) {
    (void)env_->RemoveFile(partial);
    return st;
  }
  base::LogInfo(
      "file_backend.copied",
      {{"what", std::string(what)},
       {"from", from},
       {"bytes", absl::StrCat(copied->size_bytes)},
       {"copied_bytes", absl::StrCat(copied->bytes_copied)},
       {"reflink", copied->reflinked ? "true" : "false"},
       {"ms", absl::StrCat(absl::ToInt64Milliseconds(absl::Now() - t0))}});
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> FileBackend::CreateSnapshot(
    absl::string_view snapshot_id, absl::string_view volume_id) {
  RETURN_IF_ERROR(ValidateSnapshotId(snapshot_id));
  RETURN_IF_ERROR(ValidateVolumeId(volume_id));
  const std::string final = SnapshotPath(snapshot_id);
  if (env_->PathExists(final)) return env_->FileSize(final);
  ASSIGN_OR_RETURN(uint64_t size, env_->FileSize(ImagePath(volume_id)));
  RETURN_IF_ERROR(CheckRoom(absl::StrCat("snapshot ", snapshot_id), size));
  const std::string partial = absl::StrCat(final, ".partial");
  RETURN_IF_ERROR(env_->RemoveFile(partial));  // an earlier attempt's
  RETURN_IF_ERROR(CopyComplete(ImagePath(volume_id), partial, final,
                               absl::StrCat("snapshot ", snapshot_id)));
  return size;
}

absl::Status FileBackend::DeleteSnapshot(absl::string_view snapshot_id) {
  RETURN_IF_ERROR(ValidateSnapshotId(snapshot_id));
  RETURN_IF_ERROR(env_->RemoveFile(SnapshotPath(snapshot_id)));
  return env_->Sync(snapshot_dir_);
}

absl::StatusOr<uint64_t> FileBackend::SnapshotSize(
    absl::string_view snapshot_id) {
  RETURN_IF_ERROR(ValidateSnapshotId(snapshot_id));
  return env_->FileSize(SnapshotPath(snapshot_id));
}

absl::StatusOr<Volume> FileBackend::CreateFrom(const VolumeSpec& spec,
                                               const ContentSource& source) {
  if (spec.mode == VolumeMode::kDevdax) {
    return absl::InvalidArgumentError(
        "mode devdax is not supported by the file backend");
  }
  RETURN_IF_ERROR(ValidateVolumeId(spec.id));
  RETURN_IF_ERROR(ValidateVolumeId(source.id));
  const std::string final = ImagePath(spec.id);
  if (env_->PathExists(final)) {
    ASSIGN_OR_RETURN(uint64_t have, env_->FileSize(final));
    return Volume{spec.id, have, VolumeMode::kFsdax};
  }
  const std::string from =
      source.snapshot ? SnapshotPath(source.id) : ImagePath(source.id);
  ASSIGN_OR_RETURN(uint64_t source_bytes, env_->FileSize(from));
  if (source_bytes > spec.capacity_bytes) {
    return absl::OutOfRangeError(absl::StrCat(
        "the source holds ", source_bytes, " bytes, more than the ",
        spec.capacity_bytes, " asked for"));
  }
  // The partial image is allocated in full first (a volume's image is
  // always preallocated), under the capacity lock; the copy then fills it.
  const std::string partial = absl::StrCat(final, ".partial");
  {
    absl::MutexLock l(&space_mu_);
    RETURN_IF_ERROR(env_->RemoveFile(partial));
    ASSIGN_OR_RETURN(Capacity cap, CapacityLocked());
    if (spec.capacity_bytes > cap.available_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "file backend: ", spec.capacity_bytes, " bytes needed for volume ",
          spec.id, ", only ", cap.available_bytes, " available"));
    }
    absl::Status st = env_->Fallocate(partial, spec.capacity_bytes);
    if (!st.ok()) {
      (void)env_->RemoveFile(partial);
      return st;
    }
  }
  RETURN_IF_ERROR(
      CopyComplete(from, partial, final, absl::StrCat("volume ", spec.id)));
  base::LogInfo("file_backend.created",
                {{"volume", spec.id},
                 {"bytes", absl::StrCat(spec.capacity_bytes)},
                 {source.snapshot ? "snapshot" : "source_volume", source.id}});
  return Volume{spec.id, spec.capacity_bytes, VolumeMode::kFsdax};
}

absl::Status FileBackend::DropPartialCopies() {
  for (const std::string& dir : {dir_, snapshot_dir_}) {
    ASSIGN_OR_RETURN(std::vector<std::string> names, env_->ListDir(dir));
    bool removed = false;
    for (const std::string& n : names) {
      if (!absl::EndsWith(n, ".partial")) continue;
      base::LogInfo("file_backend.partial_removed",
                    {{"path", absl::StrCat(dir, "/", n)}});
      RETURN_IF_ERROR(env_->RemoveFile(absl::StrCat(dir, "/", n)));
      removed = true;
    }
    if (removed) RETURN_IF_ERROR(env_->Sync(dir));
  }
  return absl::OkStatus();
}

}  // namespace daxlease::csi
