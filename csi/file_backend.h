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
// device is found again through its backing file's inode (also when the
// kernel names that file through a previous container's mount). A created or
// grown image is fsynced (a new one the service formats next by mkfs, which
// fsyncs it: VolumeSpec::synced_by_format) and so is the directory after an
// image is created or removed, before the record naming it is written, so a
// power loss never takes back media that a durable record names. Every
// file-system call goes through a sys::Env (loop devices do not). Thread-safe;
// creation and growth are serialized by one mutex for capacity accounting only.
#ifndef DAXLEASE_CSI_FILE_BACKEND_H_
#define DAXLEASE_CSI_FILE_BACKEND_H_

#include <string>

#include "absl/synchronization/mutex.h"
#include "csi/volume_backend.h"
#include "lib/sys/env.h"

namespace daxlease::csi {

class FileBackend final : public VolumeBackend {
 public:
  static constexpr uint64_t kReserveBytes = 64ull << 20;

  // Snapshots live beside `dir`, in `<dir>/../snapshots/<id>.img`.
  // `copy_bytes_per_second` paces snapshot and clone copies (0: unpaced).
  FileBackend(std::string dir, uint64_t capacity_bytes,
              sys::Env* env = sys::DefaultEnv(),
              uint64_t copy_bytes_per_second = 0)
      : dir_(std::move(dir)),
        capacity_bytes_(capacity_bytes),
        env_(env),
        copy_bytes_per_second_(copy_bytes_per_second) {}

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
  // A loop attached now has LO_FLAGS_AUTOCLEAR from its LOOP_CONFIGURE and
  // comes back held open; one attached before is returned as it is.
  absl::StatusOr<MountDevice> AttachForMount(absl::string_view id) override;
  absl::StatusOr<std::optional<AttachedDevice>> FindAttached(
      absl::string_view id) override;
  // Detaches every loop over the image (a plugin killed mid-stage may have
  // left a second one).
  absl::Status Detach(absl::string_view id) override;
  absl::Status DetachWithLastMount(absl::string_view id) override;
  // Loops over a deleted image of this backend: named (lo_file_name) under
  // its directory, on its directory's filesystem, backing file unlinked,
  // and not in use. The name test needs the directory's canonical path to
  // fit lo_file_name's 63 bytes; a longer one detaches nothing (and says
  // so).
  absl::Status DetachOrphanedDevices() override;
  absl::Status RefreshDevice(absl::string_view id) override;
  // The image has no data extent at all (SEEK_DATA finds none): fresh from
  // fallocate, whose unwritten extents read as zeros. Writes through the
  // loop device land in the image's page cache, which SEEK_DATA sees.
  absl::StatusOr<bool> ReadsAsZeros(absl::string_view id) override;
  // The image file: mkfs writes it directly (half the time of going through
  // a loop device, whose page cache sits on top of the file's).
  absl::StatusOr<std::string> FormatPath(absl::string_view id) override;

  // Snapshots: a copy of the image (a reflink where the file system has
  // one, else a sparse copy: docs/csi.md), written as `<id>.img.partial`,
  // fsynced and renamed. They count against the capacity like images.
  bool SupportsSnapshots() const override { return true; }
  absl::StatusOr<uint64_t> CreateSnapshot(absl::string_view snapshot_id,
                                          absl::string_view volume_id) override;
  absl::Status DeleteSnapshot(absl::string_view snapshot_id) override;
  absl::StatusOr<uint64_t> SnapshotSize(absl::string_view snapshot_id) override;
  // The new image is `<id>.img.partial` until filled and synced.
  absl::StatusOr<Volume> CreateFrom(const VolumeSpec& spec,
                                    const ContentSource& source) override;
  absl::Status DropPartialCopies() override;

  std::string ImagePath(absl::string_view id) const;
  std::string SnapshotPath(absl::string_view id) const;

 private:
  absl::StatusOr<Capacity> CapacityLocked()
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(space_mu_);
  // Grows (or creates) the image to `bytes` if there is room, durably
  // (for a new image with `synced_by_format`, durable once mkfs is done:
  // VolumeSpec::synced_by_format).
  absl::Status AllocateLocked(absl::string_view id, uint64_t have,
                              uint64_t bytes, bool synced_by_format)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(space_mu_);

  // Reserves `bytes` for a copy about to be made (ResourceExhausted when
  // there is no room).
  absl::Status CheckRoom(absl::string_view what, uint64_t bytes);
  // Copies `from` into `partial` (a new file) and renames it to `final`
  // once complete and synced; the partial file goes on failure.
  absl::Status CopyComplete(const std::string& from, const std::string& partial,
                            const std::string& final, absl::string_view what);

  std::string dir_;
  std::string snapshot_dir_;
  const uint64_t capacity_bytes_;
  sys::Env* const env_;
  const uint64_t copy_bytes_per_second_;
  absl::Mutex space_mu_;
};

}  // namespace daxlease::csi

#endif  // DAXLEASE_CSI_FILE_BACKEND_H_
