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
//
// Image pool (StartPool; docs/csi.md, "Pre-formatted images"): with a depth
// above 0 the backend keeps that many images of each configured class
// (filesystem, size, mkfs arguments) formatted ahead, on a thread of its own,
// so that TakeFormatted makes a volume by renaming one: no mkfs on the
// create path. A pooled image is `<dir>/<fs>-<bytes>-<args hash>-<n>.pool`,
// made as `<same>.pool.partial` (fallocate, then mkfs, which fsyncs it) and
// renamed once formatted: a crash at any step leaves either a partial file,
// which the next start removes, or a complete image, never a half-formatted
// one under a pooled name. Each pooled image is its own mkfs of a fresh
// fallocate: its own filesystem UUID, zeros below it, nothing written since,
// and never a deleted volume's media. Pooled images count in the capacity as
// they occupy the disk, and as available: a Create, Expand or copy that
// needs their room removes them first (and the pool fills again only where
// there is room for a whole image).
#ifndef DAXLEASE_CSI_FILE_BACKEND_H_
#define DAXLEASE_CSI_FILE_BACKEND_H_

#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "csi/volume_backend.h"
#include "lib/sys/env.h"
#include "lib/sys/formatter.h"

namespace daxlease::csi {

// One kind of image the pool keeps: `fs_type` made by
// `mkfs.<fs_type> <mkfs_args...>` on a fresh image of `bytes`.
struct ImagePoolClass {
  std::string fs_type;
  uint64_t bytes = 0;
  std::vector<std::string> mkfs_args;
};

struct ImagePoolOptions {
  int depth = 0;  // images kept ready per class; 0: no pool
  std::vector<ImagePoolClass> classes;
};

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
  ~FileBackend() override;

  // Creates `dir` and resolves it to its canonical path (loop devices
  // report canonical backing file paths). Call once before use.
  absl::Status Init();

  // Starts the image pool: removes partial pooled images (a crash's), keeps
  // the complete ones of configured classes up to `depth` (removes the
  // rest), and starts the thread that formats the missing ones with
  // `formatter` (kept, not owned: it must outlive StopPool). Call once,
  // after the start-up recovery; depth 0 only cleans up.
  absl::Status StartPool(ImagePoolOptions options, sys::Formatter* formatter);
  // Stops the pool's thread, after the format in progress if any.
  // Idempotent; the destructor calls it.
  void StopPool();
  // Waits until the pool has nothing left to do (every class full, or no
  // room, or its last format failed) or `timeout` passes; true when idle.
  // For tests and benchmarks.
  bool WaitPoolIdle(absl::Duration timeout);
  // Pooled images ready now (all classes).
  int PooledImages();

  absl::string_view Name() const override { return "file"; }
  absl::Status Ready() override;
  bool ProvidesDax() const override { return false; }
  bool SupportsExpansion() const override { return true; }
  absl::StatusOr<Volume> Create(const VolumeSpec& spec) override;
  // Renames a pooled image of the class (spec.fs_type, spec.capacity_bytes,
  // mkfs_args) to the volume's image; nullopt when none is ready, or when
  // the volume's image exists already (Create adopts that). The rename is
  // durable after SyncCreated.
  absl::StatusOr<std::optional<Volume>> TakeFormatted(
      const VolumeSpec& spec,
      const std::vector<std::string>& mkfs_args) override;
  // fsync of the directory.
  absl::Status SyncCreated(absl::string_view id) override;
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
  // Where the space goes (bytes).
  struct Space {
    uint64_t used = 0;      // volumes' and snapshots' images
    uint64_t pooled = 0;    // ready pooled images (reclaimable)
    uint64_t filling = 0;   // pooled images being made
    uint64_t fs_free = 0;   // the filesystem's free space minus the reserve
    uint64_t free_now = 0;  // usable without removing pooled images
  };
  absl::StatusOr<Space> SpaceLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(space_mu_);
  absl::StatusOr<Capacity> CapacityLocked()
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(space_mu_);
  // Ensures `bytes` can be allocated now, removing pooled images when their
  // room is needed; ResourceExhausted ("file backend: <bytes> bytes needed
  // for <what>, only N available") when even that is not enough.
  absl::Status MakeRoomLocked(uint64_t bytes, absl::string_view what)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(space_mu_);

  // The pool.
  static std::string ClassKey(absl::string_view fs_type, uint64_t bytes,
                              const std::vector<std::string>& mkfs_args);
  std::string PooledPath(absl::string_view name) const;
  void RefillLoop();
  // A class below its depth with room for one more image, or nullptr.
  const ImagePoolClass* NextToFillLocked()
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(space_mu_);
  // Makes one pooled image of `c` (space_mu_ is released around mkfs).
  absl::Status FillOneLocked(const ImagePoolClass& c)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(space_mu_);
  // Room changed (or a take emptied a slot): the pool may fill again.
  void WakePoolLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(space_mu_);
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

  ImagePoolOptions pool_options_;  // set by StartPool, then read-only
  sys::Formatter* formatter_ = nullptr;
  std::thread pool_thread_;
  absl::CondVar pool_cv_;
  // Ready images by ClassKey, each a file name in dir_.
  std::map<std::string, std::vector<std::string>> pooled_
      ABSL_GUARDED_BY(space_mu_);
  std::map<std::string, uint64_t>
      class_bytes_;  // by ClassKey, set by StartPool
  uint64_t filling_bytes_ ABSL_GUARDED_BY(space_mu_) = 0;
  uint64_t next_seq_ ABSL_GUARDED_BY(space_mu_) = 0;
  bool pool_stopping_ ABSL_GUARDED_BY(space_mu_) = false;
  // The last fill failed: no more until room changes (WakePoolLocked).
  bool pool_blocked_ ABSL_GUARDED_BY(space_mu_) = false;
  bool pool_busy_ ABSL_GUARDED_BY(space_mu_) = false;
};

}  // namespace daxlease::csi

#endif  // DAXLEASE_CSI_FILE_BACKEND_H_
