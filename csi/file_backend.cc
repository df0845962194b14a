#include "csi/file_backend.h"

#include <sys/resource.h>
#include <sys/stat.h>

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "csi/validation.h"
#include "lib/base/crash_point.h"
#include "lib/base/log.h"
#include "lib/base/status.h"
#include "lib/sys/file.h"
#include "lib/sys/loop_device.h"

namespace daxlease::csi {
namespace {
constexpr char kImageSuffix[] = ".img";
constexpr char kPooledSuffix[] = ".pool";
constexpr char kPartialSuffix[] = ".partial";
}  // namespace

FileBackend::~FileBackend() { StopPool(); }

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

absl::StatusOr<FileBackend::Space> FileBackend::SpaceLocked() {
  Space sp;
  ASSIGN_OR_RETURN(std::vector<Volume> vols, List());
  for (const Volume& v : vols) sp.used += v.capacity_bytes;
  if (!snapshot_dir_.empty()) {
    ASSIGN_OR_RETURN(std::vector<std::string> snaps,
                     env_->ListDir(snapshot_dir_));
    for (const std::string& n : snaps) {
      auto size = env_->FileSize(absl::StrCat(snapshot_dir_, "/", n));
      if (size.ok()) sp.used += *size;  // else deleted meanwhile
    }
  }
  for (const auto& [key, names] : pooled_) {
    sp.pooled += names.size() * class_bytes_[key];
  }
  sp.filling = filling_bytes_;
  ASSIGN_OR_RETURN(sys::FsUsage fs, env_->StatFs(dir_));
  sp.fs_free = fs.available_bytes > kReserveBytes
                   ? fs.available_bytes - kReserveBytes
                   : 0;
  // Pooled images occupy the disk (fs_free does not have them) and count
  // against a configured capacity like volumes.
  sp.free_now = sp.fs_free;
  if (capacity_bytes_ > 0) {
    const uint64_t taken = sp.used + sp.pooled + sp.filling;
    sp.free_now =
        std::min(sp.free_now, capacity_bytes_ > taken ? capacity_bytes_ - taken
                                                      : uint64_t{0});
  }
  return sp;
}

absl::StatusOr<Capacity> FileBackend::CapacityLocked() {
  ASSIGN_OR_RETURN(Space sp, SpaceLocked());
  Capacity c;
  c.total_bytes = capacity_bytes_ > 0
                      ? capacity_bytes_
                      : sp.used + sp.pooled + sp.filling + sp.fs_free;
  // Ready pooled images are available: a volume that needs their room gets
  // it (MakeRoomLocked removes them).
  c.available_bytes = sp.free_now + sp.pooled;
  c.max_volume_bytes = c.available_bytes;
  return c;
}

absl::Status FileBackend::MakeRoomLocked(uint64_t bytes,
                                         absl::string_view what) {
  ASSIGN_OR_RETURN(Space sp, SpaceLocked());
  if (bytes <= sp.free_now) return absl::OkStatus();
  if (bytes > sp.free_now + sp.pooled) {
    return absl::ResourceExhaustedError(
        absl::StrCat("file backend: ", bytes, " bytes needed for ", what,
                     ", only ", sp.free_now + sp.pooled, " available"));
  }
  uint64_t room = sp.free_now;
  for (auto& [key, names] : pooled_) {
    while (room < bytes && !names.empty()) {
      const std::string name = names.back();
      RETURN_IF_ERROR(env_->RemoveFile(PooledPath(name)));
      names.pop_back();
      room += class_bytes_[key];
      base::LogInfo("file_backend.pool.evicted",
                    {{"image", name}, {"for", std::string(what)}});
    }
  }
  // The unlinks durable, so that the room they gave is not taken back.
  RETURN_IF_ERROR(env_->Sync(dir_));
  pool_blocked_ = true;  // no refill into the room just made
  return absl::OkStatus();
}

absl::StatusOr<Capacity> FileBackend::GetCapacity(VolumeMode mode) {
  if (mode == VolumeMode::kDevdax) return Capacity{};
  absl::MutexLock l(&space_mu_);
  return CapacityLocked();
}

absl::Status FileBackend::AllocateLocked(absl::string_view id, uint64_t have,
                                         uint64_t bytes,
                                         bool synced_by_format) {
  RETURN_IF_ERROR(MakeRoomLocked(bytes - have, absl::StrCat("volume ", id)));
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
  absl::MutexLock l(&space_mu_);
  WakePoolLocked();
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
  return MakeRoomLocked(bytes, what);
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
    RETURN_IF_ERROR(
        MakeRoomLocked(spec.capacity_bytes, absl::StrCat("volume ", spec.id)));
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

// ------------------------------------------------------------- image pool

std::string FileBackend::ClassKey(absl::string_view fs_type, uint64_t bytes,
                                  const std::vector<std::string>& mkfs_args) {
  // FNV-1a over the arguments: an image made with other options (an
  // upgrade changed them) is not of this class.
  uint32_t h = 2166136261u;
  for (const std::string& a : mkfs_args) {
    for (unsigned char c : a) h = (h ^ c) * 16777619u;
    h = (h ^ 0) * 16777619u;
  }
  return absl::StrCat(fs_type, "-", bytes, "-", absl::Hex(h, absl::kZeroPad8));
}

std::string FileBackend::PooledPath(absl::string_view name) const {
  return absl::StrCat(dir_, "/", name);
}

absl::Status FileBackend::StartPool(ImagePoolOptions options,
                                    sys::Formatter* formatter) {
  absl::MutexLock l(&space_mu_);
  pool_options_ = std::move(options);
  formatter_ = formatter;
  std::map<std::string, int> wanted;
  if (pool_options_.depth > 0) {
    for (const ImagePoolClass& c : pool_options_.classes) {
      const std::string key = ClassKey(c.fs_type, c.bytes, c.mkfs_args);
      wanted[key] = pool_options_.depth;
      class_bytes_[key] = c.bytes;
      pooled_[key];
    }
  }
  ASSIGN_OR_RETURN(std::vector<std::string> names, env_->ListDir(dir_));
  bool removed = false;
  for (const std::string& n : names) {
    absl::string_view v = n;
    const bool partial = absl::ConsumeSuffix(&v, kPartialSuffix);
    if (!absl::ConsumeSuffix(&v, kPooledSuffix)) continue;
    // <fs>-<bytes>-<hash>-<seq>
    const size_t dash = v.rfind('-');
    uint64_t seq = 0;
    const bool parsed = dash != absl::string_view::npos &&
                        absl::SimpleAtoi(v.substr(dash + 1), &seq);
    if (parsed) next_seq_ = std::max(next_seq_, seq + 1);
    const std::string key(parsed ? v.substr(0, dash) : v);
    if (!partial && parsed && wanted[key] > 0) {
      --wanted[key];
      pooled_[key].push_back(n);
      continue;
    }
    // Half made (a crash during its fill), or not wanted any more.
    base::LogInfo("file_backend.pool.removed",
                  {{"image", n}, {"why", partial ? "partial" : "not wanted"}});
    RETURN_IF_ERROR(env_->RemoveFile(PooledPath(n)));
    removed = true;
  }
  if (removed) RETURN_IF_ERROR(env_->Sync(dir_));
  if (pool_options_.depth > 0 && !pool_options_.classes.empty()) {
    pool_stopping_ = false;
    pool_thread_ = std::thread([this] { RefillLoop(); });
  }
  return absl::OkStatus();
}

void FileBackend::StopPool() {
  {
    absl::MutexLock l(&space_mu_);
    pool_stopping_ = true;
    pool_cv_.SignalAll();
  }
  if (pool_thread_.joinable()) pool_thread_.join();
}

bool FileBackend::WaitPoolIdle(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::MutexLock l(&space_mu_);
  while (pool_busy_ ||
         (!pool_blocked_ && !pool_stopping_ && pool_thread_.joinable() &&
          NextToFillLocked() != nullptr)) {
    if (pool_cv_.WaitWithDeadline(&space_mu_, deadline)) return false;
  }
  return true;
}

int FileBackend::PooledImages() {
  absl::MutexLock l(&space_mu_);
  int n = 0;
  for (const auto& [key, names] : pooled_) n += names.size();
  return n;
}

void FileBackend::WakePoolLocked() {
  pool_blocked_ = false;
  pool_cv_.SignalAll();
}

const ImagePoolClass* FileBackend::NextToFillLocked() {
  const ImagePoolClass* next = nullptr;
  for (const ImagePoolClass& c : pool_options_.classes) {
    const std::string key = ClassKey(c.fs_type, c.bytes, c.mkfs_args);
    if (static_cast<int>(pooled_[key].size()) < pool_options_.depth) {
      next = &c;
      break;
    }
  }
  if (next == nullptr) return nullptr;
  // Only into free room: never by removing another pooled image.
  absl::StatusOr<Space> sp = SpaceLocked();
  if (!sp.ok() || sp->free_now < next->bytes) return nullptr;
  return next;
}

void FileBackend::RefillLoop() {
  // Background work: below the calls' threads, and so is every mkfs it
  // starts (children inherit the nice value; on Linux it is per thread).
  (void)::setpriority(PRIO_PROCESS, 0, 10);
  absl::MutexLock l(&space_mu_);
  while (!pool_stopping_) {
    const ImagePoolClass* c = pool_blocked_ ? nullptr : NextToFillLocked();
    if (c == nullptr) {
      pool_cv_.SignalAll();  // idle (WaitPoolIdle)
      pool_cv_.Wait(&space_mu_);
      continue;
    }
    pool_busy_ = true;
    absl::Status st = FillOneLocked(*c);
    pool_busy_ = false;
    if (!st.ok()) {
      // Tried again when room changes (a delete, a take), not in a loop.
      pool_blocked_ = true;
      base::LogWarn("file_backend.pool.fill_failed",
                    {{"fstype", c->fs_type},
                     {"bytes", absl::StrCat(c->bytes)},
                     {"error", st.ToString()}});
    }
  }
  pool_cv_.SignalAll();
}

absl::Status FileBackend::FillOneLocked(const ImagePoolClass& c) {
  const std::string key = ClassKey(c.fs_type, c.bytes, c.mkfs_args);
  const std::string name = absl::StrCat(key, "-", next_seq_++, kPooledSuffix);
  const std::string ready = PooledPath(name);
  const std::string partial = absl::StrCat(ready, kPartialSuffix);
  const absl::Time t0 = absl::Now();
  filling_bytes_ += c.bytes;
  absl::Status st = env_->Fallocate(partial, c.bytes);
  if (st.ok()) {
    base::CrashPoint("pool.fill.allocated");
    // mkfs writes the image and fsyncs it (sys::Formatter::Format): its
    // size, extents and filesystem are durable before the rename below.
    space_mu_.Unlock();
    st = formatter_->Format(partial, c.fs_type, c.mkfs_args);
    space_mu_.Lock();
  }
  if (st.ok()) {
    base::CrashPoint("pool.fill.formatted");
    // Not followed by a directory fsync: a power loss that takes the
    // rename back leaves the partial file, which the next start removes.
    st = env_->Rename(partial, ready);
  }
  filling_bytes_ -= c.bytes;
  if (!st.ok()) {
    (void)env_->RemoveFile(partial);
    return st;
  }
  base::CrashPoint("pool.fill.renamed");
  pooled_[key].push_back(name);
  base::LogInfo(
      "file_backend.pool.filled",
      {{"image", name},
       {"ms", absl::StrCat(absl::ToInt64Milliseconds(absl::Now() - t0))}});
  return absl::OkStatus();
}

absl::StatusOr<std::optional<Volume>> FileBackend::TakeFormatted(
    const VolumeSpec& spec, const std::vector<std::string>& mkfs_args) {
  if (spec.mode != VolumeMode::kFsdax || spec.fs_type.empty()) {
    return std::optional<Volume>();
  }
  RETURN_IF_ERROR(ValidateVolumeId(spec.id));
  absl::MutexLock l(&space_mu_);
  auto it =
      pooled_.find(ClassKey(spec.fs_type, spec.capacity_bytes, mkfs_args));
  const std::string target = ImagePath(spec.id);
  while (it != pooled_.end() && !it->second.empty()) {
    if (env_->PathExists(target)) return std::optional<Volume>();
    const std::string name = it->second.back();
    it->second.pop_back();
    absl::Status st = env_->Rename(PooledPath(name), target);
    if (absl::IsNotFound(st)) continue;  // removed behind our back
    RETURN_IF_ERROR(st);
    base::CrashPoint("pool.take.renamed");
    WakePoolLocked();
    base::LogInfo("file_backend.created",
                  {{"volume", spec.id},
                   {"bytes", absl::StrCat(spec.capacity_bytes)},
                   {"pooled", name}});
    return std::optional<Volume>(
        Volume{spec.id, spec.capacity_bytes, VolumeMode::kFsdax});
  }
  return std::optional<Volume>();
}

absl::Status FileBackend::SyncCreated(absl::string_view id) {
  RETURN_IF_ERROR(ValidateVolumeId(id));
  return env_->Sync(dir_);
}

}  // namespace daxlease::csi
