// FakeVolumeBackend: an in-memory VolumeBackend for unit tests of the CSI
// services. Honest about the contract: capacity is accounted, Delete of an
// attached volume is FailedPrecondition, devdax can be switched off like
// the file backend, Attach is idempotent and survives a "restart" (the same
// object is handed to a new service). Thread-safe.
#ifndef DAXLEASE_CSI_FAKE_VOLUME_BACKEND_H_
#define DAXLEASE_CSI_FAKE_VOLUME_BACKEND_H_

#include <functional>
#include <map>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "csi/volume_backend.h"

namespace daxlease::csi {

class FakeVolumeBackend final : public VolumeBackend {
 public:
  explicit FakeVolumeBackend(uint64_t total_bytes, bool devdax = false)
      : total_bytes_(total_bytes), devdax_(devdax) {}

  absl::string_view Name() const override { return "fake"; }
  absl::Status Ready() override;
  bool ProvidesDax() const override { return dax_; }
  bool SupportsExpansion() const override { return expandable_; }
  bool ExpandsOnline() const override { return online_; }
  absl::StatusOr<Volume> Create(const VolumeSpec& spec) override;
  absl::StatusOr<Volume> Get(absl::string_view id) override;
  absl::StatusOr<std::vector<Volume>> List() override;
  absl::Status Delete(absl::string_view id) override;
  absl::StatusOr<Volume> Expand(absl::string_view id,
                                uint64_t new_capacity_bytes,
                                uint64_t limit_bytes) override;
  absl::StatusOr<Capacity> GetCapacity(VolumeMode mode) override;
  absl::StatusOr<AttachedDevice> Attach(absl::string_view id) override;
  absl::StatusOr<std::optional<AttachedDevice>> FindAttached(
      absl::string_view id) override;
  absl::Status Detach(absl::string_view id) override;
  absl::Status RefreshDevice(absl::string_view id) override;
  // "/dev/fake-media/<id>" once set_format_at_create(true), else "".
  absl::StatusOr<std::string> FormatPath(absl::string_view id) override;
  // Snapshots (once set_supports_snapshots(true)): a snapshot is a name and
  // the volume's size; CreateFrom is not faked.
  bool SupportsSnapshots() const override { return snapshots_; }
  absl::StatusOr<uint64_t> CreateSnapshot(absl::string_view snapshot_id,
                                          absl::string_view volume_id) override;
  absl::Status DeleteSnapshot(absl::string_view snapshot_id) override;
  absl::StatusOr<uint64_t> SnapshotSize(absl::string_view snapshot_id) override;

  // Test controls. SetSupportsExpansion before handing the fake to services.
  void SetSupportsExpansion(bool expandable) { expandable_ = expandable; }
  // Offline growth (ndctl's copy to a new namespace).
  void SetExpandsOnline(bool online) { online_ = online; }
  void SetReady(absl::Status status);
  void FailNext(absl::string_view op, absl::Status status);
  // Simulates media that vanished behind the plugin's back.
  void DropMedia(absl::string_view id);
  // Adds media without going through Create (an orphan).
  void AddMedia(absl::string_view id, uint64_t bytes);
  // Pretend to be a DAX backend (stage mounts with -o dax and checks it).
  void set_provides_dax(bool dax) { dax_ = dax; }
  // Lets CreateVolume format the media (FormatPath). Set before use.
  void set_format_at_create(bool on) { format_at_create_ = on; }
  // Advertises snapshots. Set before use.
  void set_supports_snapshots(bool on) { snapshots_ = on; }
  // Runs `fn` inside CreateSnapshot, while the copy would run.
  void OnCopy(std::function<void(absl::string_view volume_id)> fn);
  // Runs `fn` inside Delete, just before the media goes: what a crash at
  // that moment would leave on disk is what the test inspects there.
  void OnDelete(std::function<void(absl::string_view id)> fn);
  bool IsAttached(absl::string_view id) const;
  // The spec of the last Create call.
  VolumeSpec last_create_spec() const;
  int attached_count() const;
  int refresh_calls() const;

 private:
  absl::Status TakeFailure(absl::string_view op)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint64_t UsedLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const uint64_t total_bytes_;
  bool dax_ = false;
  const bool devdax_;
  bool expandable_ = true;
  bool online_ = true;
  bool format_at_create_ = false;
  bool snapshots_ = false;
  mutable absl::Mutex mu_;
  std::map<std::string, Volume> volumes_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> attached_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> device_names_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, absl::Status> failures_ ABSL_GUARDED_BY(mu_);
  std::function<void(absl::string_view)> on_delete_ ABSL_GUARDED_BY(mu_);
  std::function<void(absl::string_view)> on_copy_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, uint64_t> snapshot_sizes_ ABSL_GUARDED_BY(mu_);
  absl::Status ready_ ABSL_GUARDED_BY(mu_);
  int next_device_ ABSL_GUARDED_BY(mu_) = 0;
  VolumeSpec last_create_spec_ ABSL_GUARDED_BY(mu_);
  int refresh_calls_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace daxlease::csi

#endif  // DAXLEASE_CSI_FAKE_VOLUME_BACKEND_H_
