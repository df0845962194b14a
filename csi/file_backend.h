// FileBackend (`--backend=file`): DAX emulation for machines without PMEM.
// Each volume is one preallocated image file `<dir>/<id>.img`; its node-side
// device is a loop device over that file. Only fsdax is emulated (and
// without real DAX: ProvidesDax() is false, mounts go without -o dax);
// devdax is refused with InvalidArgument.
//
// Capacity: the sum of image sizes may not exceed `capacity_bytes` (0 = no
// configured limit) nor the free space of the filesystem holding `dir`
// (minus a small reserve for the plugin's state files).
//
// Restart safety: the image file name is the volume ID; an attached loop
// device is found again through its backing file. Thread-safe; creation
// and growth are serialized by one mutex for capacity accounting only.
#ifndef DAXLEASE_CSI_FILE_BACKEND_H_
#define DAXLEASE_CSI_FILE_BACKEND_H_

#include <string>

#include "absl/synchronization/mutex.h"
#include "csi/volume_backend.h"

namespace daxlease::csi {

class FileBackend final : public VolumeBackend {
 public:
  static constexpr uint64_t kReserveBytes = 64ull << 20;

  FileBackend(std::string dir, uint64_t capacity_bytes)
      : dir_(std::move(dir)), capacity_bytes_(capacity_bytes) {}

  // Creates `dir` and resolves it to its canonical path (loop devices
  // report canonical backing file paths). Call once before use.
  absl::Status Init();

  absl::string_view Name() const override { return "file"; }
  absl::Status Ready() override;
  bool ProvidesDax() const override { return false; }
  bool SupportsExpansion() const override { return true; }
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
  // The image has no data extent at all (SEEK_DATA finds none): fresh from
  // fallocate, whose unwritten extents read as zeros. Writes through the
  // loop device land in the image's page cache, which SEEK_DATA sees.
  absl::StatusOr<bool> ReadsAsZeros(absl::string_view id) override;

  std::string ImagePath(absl::string_view id) const;

 private:
  absl::StatusOr<Capacity> CapacityLocked()
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(space_mu_);
  // Grows (or creates) the image to `bytes` if there is room.
  absl::Status AllocateLocked(absl::string_view id, uint64_t have,
                              uint64_t bytes)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(space_mu_);

  std::string dir_;
  const uint64_t capacity_bytes_;
  absl::Mutex space_mu_;
};

}  // namespace daxlease::csi

#endif  // DAXLEASE_CSI_FILE_BACKEND_H_
