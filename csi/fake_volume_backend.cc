#include "csi/fake_volume_backend.h"

#include "absl/strings/str_cat.h"

namespace daxlease::csi {

absl::Status FakeVolumeBackend::TakeFailure(absl::string_view op) {
  auto it = failures_.find(std::string(op));
  if (it == failures_.end()) return absl::OkStatus();
  absl::Status s = it->second;
  failures_.erase(it);
  return s;
}

uint64_t FakeVolumeBackend::UsedLocked() const {
  uint64_t used = 0;
  for (const auto& [id, v] : volumes_) used += v.capacity_bytes;
  return used;
}

absl::Status FakeVolumeBackend::Ready() {
  absl::MutexLock l(&mu_);
  return ready_;
}

absl::StatusOr<Volume> FakeVolumeBackend::Create(const VolumeSpec& spec) {
  absl::MutexLock l(&mu_);
  last_create_spec_ = spec;
  if (absl::Status s = TakeFailure("Create"); !s.ok()) return s;
  if (spec.mode == VolumeMode::kDevdax && !devdax_) {
    return absl::InvalidArgumentError("fake backend: devdax not supported");
  }
  auto it = volumes_.find(spec.id);
  uint64_t have = 0;
  if (it != volumes_.end()) {
    if (it->second.mode != spec.mode) {
      return absl::AlreadyExistsError("fake backend: mode differs");
    }
    if (it->second.capacity_bytes >= spec.capacity_bytes) return it->second;
    have = it->second.capacity_bytes;
  }
  if (UsedLocked() - have + spec.capacity_bytes > total_bytes_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "fake backend: no room for ", spec.capacity_bytes, " bytes"));
  }
  Volume v{spec.id, spec.capacity_bytes, spec.mode};
  volumes_[spec.id] = v;
  return v;
}

absl::StatusOr<Volume> FakeVolumeBackend::Get(absl::string_view id) {
  absl::MutexLock l(&mu_);
  if (absl::Status s = TakeFailure("Get"); !s.ok()) return s;
  auto it = volumes_.find(std::string(id));
  if (it == volumes_.end()) {
    return absl::NotFoundError(absl::StrCat("fake backend: no volume ", id));
  }
  return it->second;
}

absl::StatusOr<std::vector<Volume>> FakeVolumeBackend::List() {
  absl::MutexLock l(&mu_);
  std::vector<Volume> out;
  for (const auto& [id, v] : volumes_) out.push_back(v);
  return out;
}

absl::Status FakeVolumeBackend::Delete(absl::string_view id) {
  absl::MutexLock l(&mu_);
  if (absl::Status s = TakeFailure("Delete"); !s.ok()) return s;
  if (attached_.count(std::string(id))) {
    return absl::FailedPreconditionError(
        absl::StrCat("fake backend: volume ", id, " is attached"));
  }
  if (on_delete_ && volumes_.count(std::string(id))) on_delete_(id);
  volumes_.erase(std::string(id));
  return absl::OkStatus();
}

absl::StatusOr<std::string> FakeVolumeBackend::FormatPath(
    absl::string_view id) {
  if (!format_at_create_) return std::string();
  return absl::StrCat("/dev/fake-media/", id);
}

absl::StatusOr<uint64_t> FakeVolumeBackend::CreateSnapshot(
    absl::string_view snapshot_id, absl::string_view volume_id) {
  absl::MutexLock l(&mu_);
  if (absl::Status s = TakeFailure("CreateSnapshot"); !s.ok()) return s;
  auto it = volumes_.find(std::string(volume_id));
  if (it == volumes_.end()) {
    return absl::NotFoundError(
        absl::StrCat("fake backend: no volume ", volume_id));
  }
  if (on_copy_) on_copy_(volume_id);
  snapshot_sizes_[std::string(snapshot_id)] = it->second.capacity_bytes;
  return it->second.capacity_bytes;
}

absl::Status FakeVolumeBackend::DeleteSnapshot(absl::string_view snapshot_id) {
  absl::MutexLock l(&mu_);
  if (absl::Status s = TakeFailure("DeleteSnapshot"); !s.ok()) return s;
  snapshot_sizes_.erase(std::string(snapshot_id));
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> FakeVolumeBackend::SnapshotSize(
    absl::string_view snapshot_id) {
  absl::MutexLock l(&mu_);
  auto it = snapshot_sizes_.find(std::string(snapshot_id));
  if (it == snapshot_sizes_.end()) {
    return absl::NotFoundError(
        absl::StrCat("fake backend: no snapshot ", snapshot_id));
  }
  return it->second;
}

void FakeVolumeBackend::OnCopy(std::function<void(absl::string_view)> fn) {
  absl::MutexLock l(&mu_);
  on_copy_ = std::move(fn);
}

void FakeVolumeBackend::OnDelete(std::function<void(absl::string_view)> fn) {
  absl::MutexLock l(&mu_);
  on_delete_ = std::move(fn);
}

absl::StatusOr<Volume> FakeVolumeBackend::Expand(absl::string_view id,
                                                 uint64_t new_capacity_bytes,
                                                 uint64_t limit_bytes) {
  absl::MutexLock l(&mu_);
  if (absl::Status s = TakeFailure("Expand"); !s.ok()) return s;
  auto it = volumes_.find(std::string(id));
  if (it == volumes_.end()) {
    return absl::NotFoundError(absl::StrCat("fake backend: no volume ", id));
  }
  if (it->second.capacity_bytes >= new_capacity_bytes) return it->second;
  if (UsedLocked() - it->second.capacity_bytes + new_capacity_bytes >
      total_bytes_) {
    return absl::ResourceExhaustedError("fake backend: no room to expand");
  }
  it->second.capacity_bytes = new_capacity_bytes;
  return it->second;
}

absl::StatusOr<Capacity> FakeVolumeBackend::GetCapacity(VolumeMode mode) {
  absl::MutexLock l(&mu_);
  if (mode == VolumeMode::kDevdax && !devdax_) return Capacity{};
  Capacity c;
  c.total_bytes = total_bytes_;
  c.available_bytes = total_bytes_ - UsedLocked();
  c.max_volume_bytes = c.available_bytes;
  return c;
}

absl::StatusOr<AttachedDevice> FakeVolumeBackend::Attach(absl::string_view id) {
  absl::MutexLock l(&mu_);
  if (absl::Status s = TakeFailure("Attach"); !s.ok()) return s;
  std::string key(id);
  if (!volumes_.count(key)) {
    return absl::NotFoundError(absl::StrCat("fake backend: no volume ", id));
  }
  auto it = attached_.find(key);
  if (it == attached_.end()) {
    // The same volume gets the same device again (like a loop device over
    // the same image would carry the same data).
    auto name = device_names_.find(key);
    if (name == device_names_.end()) {
      name = device_names_
                 .emplace(key, absl::StrCat("/dev/fakeloop", next_device_++))
                 .first;
    }
    it = attached_.emplace(key, name->second).first;
  }
  return AttachedDevice{it->second, true};
}

absl::StatusOr<std::optional<AttachedDevice>> FakeVolumeBackend::FindAttached(
    absl::string_view id) {
  absl::MutexLock l(&mu_);
  auto it = attached_.find(std::string(id));
  if (it == attached_.end()) return std::optional<AttachedDevice>();
  return std::optional<AttachedDevice>(AttachedDevice{it->second, true});
}

absl::Status FakeVolumeBackend::Detach(absl::string_view id) {
  absl::MutexLock l(&mu_);
  if (absl::Status s = TakeFailure("Detach"); !s.ok()) return s;
  attached_.erase(std::string(id));
  return absl::OkStatus();
}

absl::Status FakeVolumeBackend::RefreshDevice(absl::string_view id) {
  absl::MutexLock l(&mu_);
  if (absl::Status s = TakeFailure("RefreshDevice"); !s.ok()) return s;
  ++refresh_calls_;
  return absl::OkStatus();
}

void FakeVolumeBackend::SetReady(absl::Status status) {
  absl::MutexLock l(&mu_);
  ready_ = std::move(status);
}
void FakeVolumeBackend::FailNext(absl::string_view op, absl::Status status) {
  absl::MutexLock l(&mu_);
  failures_[std::string(op)] = std::move(status);
}
void FakeVolumeBackend::DropMedia(absl::string_view id) {
  absl::MutexLock l(&mu_);
  volumes_.erase(std::string(id));
}
void FakeVolumeBackend::AddMedia(absl::string_view id, uint64_t bytes) {
  absl::MutexLock l(&mu_);
  volumes_[std::string(id)] =
      Volume{std::string(id), bytes, VolumeMode::kFsdax};
}
VolumeSpec FakeVolumeBackend::last_create_spec() const {
  absl::MutexLock l(&mu_);
  return last_create_spec_;
}
bool FakeVolumeBackend::IsAttached(absl::string_view id) const {
  absl::MutexLock l(&mu_);
  return attached_.count(std::string(id)) > 0;
}
int FakeVolumeBackend::attached_count() const {
  absl::MutexLock l(&mu_);
  return static_cast<int>(attached_.size());
}
int FakeVolumeBackend::refresh_calls() const {
  absl::MutexLock l(&mu_);
  return refresh_calls_;
}

}  // namespace daxlease::csi
