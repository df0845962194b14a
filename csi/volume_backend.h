// VolumeBackend: where daxlease volumes live. The CSI services decide (what
// to create, when to attach, what the request means); a backend only owns
// the media and its node-side device. Implementations:
//   FileBackend  (`--backend=file`)  preallocated image files + loop devices,
//                                    no real DAX (for laptops, CI, conformance)
//   NdctlBackend (`--backend=ndctl`) one libndctl namespace per volume,
//                                    /dev/pmemN (fsdax) or /dev/daxX.Y (devdax)
//   FakeVolumeBackend                in memory, for unit tests
//
// CONTRACT (every implementation):
// - Identity: a volume is named by its ID (a valid Kubernetes object name:
//   [a-z0-9-], <= 63 chars, chosen by the service). The backend must find
//   its volumes again after a restart of the plugin or of the node from the
//   media alone (file: the image file name; ndctl: the namespace's name).
//   The CSI-level metadata (request name, parameters, stage/publish state)
//   is persisted by the service in its own state directory, not here.
// - Idempotency: Create of an existing ID returns the existing volume
//   (grown to the requested size if it is smaller: that completes a Create
//   interrupted by a crash; the service guarantees a retry carries the same
//   spec); with another mode it is AlreadyExists. Delete of a missing ID is
//   OK.
//   Expand to a size <= the current one returns the volume unchanged.
//   Attach of an attached volume returns the same device; Detach of a
//   detached one is OK.
// - Sizes: capacity_bytes is what the consumer can use (at least what was
//   asked; backends round up to their alignment and account for their own
//   metadata, e.g. ndctl map=dev).
// - Errors (absl::Status, gRPC codes, returned by the services unchanged):
//   InvalidArgument for a request the backend can never satisfy (e.g. mode
//   devdax on the file backend), ResourceExhausted when there is no room
//   (capacity, contiguous range, namespaces), NotFound for an unknown ID,
//   FailedPrecondition when the volume is in a state that forbids the call
//   (Delete while attached), Unavailable for transient failures (busy).
// - Concurrency: every method is thread-safe. The service never calls two
//   methods for the same volume ID at once (it holds a per-volume lock);
//   calls for different volumes come concurrently, so a backend serializes
//   its own shared resources (capacity accounting, region allocation).
// - No method blocks for long except Create/Expand/Delete of big volumes.
#ifndef DAXLEASE_CSI_VOLUME_BACKEND_H_
#define DAXLEASE_CSI_VOLUME_BACKEND_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "lib/sys/fd.h"

namespace daxlease::csi {

enum class VolumeMode { kFsdax, kDevdax };

// "fsdax" / "devdax".
absl::string_view VolumeModeName(VolumeMode mode);
// Parses "fsdax" / "devdax"; InvalidArgument otherwise.
absl::StatusOr<VolumeMode> ParseVolumeMode(absl::string_view name);

// What the service asks for when creating a volume.
struct VolumeSpec {
  std::string id;
  uint64_t capacity_bytes = 0;  // requested usable size (already validated)
  uint64_t limit_bytes = 0;     // 0 = no limit; the backend must not exceed it
  VolumeMode mode = VolumeMode::kFsdax;
  std::string fs_type;  // "ext4" | "xfs" for fsdax mount use, "" otherwise;
                        // a hint (ndctl may size for it), not stored
  std::map<std::string, std::string> parameters;  // validated daxlease.io/*
  // The service formats new media right after Create (at FormatPath), and
  // mkfs makes what it writes durable (sys::Formatter::Format): a backend
  // may leave the sync of a new volume's data to it (only a backend whose
  // FormatPath names the media: that is what mkfs syncs). What only the
  // backend knows of (a new directory entry, its own metadata) it still
  // syncs.
  bool synced_by_format = false;
};

// A volume as the backend sees it on its media.
struct Volume {
  std::string id;
  uint64_t capacity_bytes = 0;
  VolumeMode mode = VolumeMode::kFsdax;
};

// The node-side device of an attached volume.
struct AttachedDevice {
  std::string path;   // "/dev/loop3", "/dev/pmem1", "/dev/dax0.1"
  bool block = true;  // false for a devdax character device
};

// A device attached for a staging mount (VolumeBackend::AttachForMount).
struct MountDevice {
  AttachedDevice device;
  // The kernel releases the device by itself with its last user already
  // (set up at attach): DetachWithLastMount has nothing left to do.
  bool goes_with_last_user = false;
  // Set when this attach made a device that goes with its last user: the
  // device, open, so that it stays until the mount holds it. Close it once
  // mounted, and before any Detach (which waits for the device to go).
  sys::UniqueFd hold;
};

struct Capacity {
  uint64_t total_bytes = 0;
  uint64_t available_bytes = 0;
  uint64_t max_volume_bytes = 0;  // largest single volume creatable now
};

class VolumeBackend {
 public:
  virtual ~VolumeBackend() = default;

  // "file", "ndctl", "fake".
  virtual absl::string_view Name() const = 0;

  // OK when the backend can serve requests (state dir writable / regions
  // found). Probe reports not-ready otherwise, with this status's message.
  virtual absl::Status Ready() = 0;

  // True when volumes are really DAX-capable (mounted with -o dax, MAP_SYNC
  // works): ndctl yes, file no. Reported in the volume context and status.
  virtual bool ProvidesDax() const = 0;

  // True when Expand can grow a volume (file: in place; ndctl: by a copy to
  // a new namespace, when it has a marker directory). The services
  // advertise the VolumeExpansion / EXPAND_VOLUME capabilities only when
  // this is true.
  virtual bool SupportsExpansion() const = 0;
  // True when a volume grows while it is staged and published (file); false
  // when only while nothing uses it (ndctl: the copy needs the device
  // unmounted). The plugin advertises ONLINE or OFFLINE expansion from it.
  virtual bool ExpandsOnline() const { return true; }

  // Creates (or returns, see idempotency) the volume. ResourceExhausted
  // when there is no room; InvalidArgument for an unsupported mode.
  virtual absl::StatusOr<Volume> Create(const VolumeSpec& spec) = 0;

  // Media formatted ahead of time (file: the image pool, docs/csi.md
  // "Pre-formatted images"): when the backend has media of exactly
  // spec.capacity_bytes carrying spec.fs_type as `mkfs.<fs_type>
  // <mkfs_args...>` made it on zeroed media, never written since, it makes
  // that the volume's media under spec.id and returns the volume. nullopt
  // when it has none (the caller Creates and formats as usual), or when
  // media under spec.id exists already. The new name may be durable only
  // after SyncCreated, which the caller calls before a durable record names
  // the volume. Default: nullopt.
  virtual absl::StatusOr<std::optional<Volume>> TakeFormatted(
      const VolumeSpec& spec, const std::vector<std::string>& mkfs_args) {
    return std::optional<Volume>();
  }
  // Makes what TakeFormatted did for `id` survive a power loss. Default:
  // nothing to do.
  virtual absl::Status SyncCreated(absl::string_view id) {
    return absl::OkStatus();
  }

  // NotFound when the volume's media is missing.
  virtual absl::StatusOr<Volume> Get(absl::string_view id) = 0;

  // Every volume on the media, sorted by ID.
  virtual absl::StatusOr<std::vector<Volume>> List() = 0;

  // Destroys the media. OK if missing. FailedPrecondition if attached.
  virtual absl::Status Delete(absl::string_view id) = 0;

  // Grows the volume to at least `new_capacity_bytes` (not above
  // `limit_bytes` when non-zero) and returns it. The attached device (if
  // any) keeps its old size until RefreshDevice. ResourceExhausted when
  // there is no room.
  virtual absl::StatusOr<Volume> Expand(absl::string_view id,
                                        uint64_t new_capacity_bytes,
                                        uint64_t limit_bytes) = 0;

  // Capacity for new volumes of `mode` (0 everywhere if the backend cannot
  // create that mode at all).
  virtual absl::StatusOr<Capacity> GetCapacity(VolumeMode mode) = 0;

  // Makes the node-side device of the volume exist and returns it (file:
  // attaches a loop device; ndctl: enables the namespace). Idempotent, and
  // finds the device of an earlier plugin process.
  virtual absl::StatusOr<AttachedDevice> Attach(absl::string_view id) = 0;

  // Attach for a staging mount: as Attach, but a backend may make a device
  // it attaches now go with its last user in the same step (file:
  // LO_FLAGS_AUTOCLEAR in the LOOP_CONFIGURE, where DetachWithLastMount
  // later costs a queue freeze, ~15 ms), and then hands it back held.
  // Default: Attach, nothing held.
  virtual absl::StatusOr<MountDevice> AttachForMount(absl::string_view id) {
    absl::StatusOr<AttachedDevice> dev = Attach(id);
    if (!dev.ok()) return dev.status();
    MountDevice m;
    m.device = *std::move(dev);
    return m;
  }

  // The device if attached now (also one attached by an earlier process),
  // nullopt if not. Used for repair after a crash.
  virtual absl::StatusOr<std::optional<AttachedDevice>> FindAttached(
      absl::string_view id) = 0;

  // Releases the node-side device. The caller has unmounted everything on
  // it. OK if not attached.
  virtual absl::Status Detach(absl::string_view id) = 0;

  // The attached device of `id` is held by a mount now (the staging
  // mount): the backend may have the kernel release it by itself when the
  // last mount goes (file: LO_FLAGS_AUTOCLEAR), so a plugin that dies
  // before NodeUnstageVolume, whose mounts are then torn down by others,
  // leaks no device. Default: nothing.
  virtual absl::Status DetachWithLastMount(absl::string_view id) {
    return absl::OkStatus();
  }

  // At start-up: releases devices this backend made for media that no
  // longer exists (an image deleted while its device stayed, by a plugin
  // killed in between), and never a device of anyone else. Default:
  // nothing.
  virtual absl::Status DetachOrphanedDevices() { return absl::OkStatus(); }

  // After Expand: makes the attached device show the new size (file:
  // LOOP_SET_CAPACITY). OK if not attached.
  virtual absl::Status RefreshDevice(absl::string_view id) = 0;

  // Where CreateVolume may make the volume's filesystem before any consumer
  // attaches it: a path mkfs writes to directly (file: the image itself,
  // no loop device; ndctl: the namespace's block device, enabled from
  // creation on). "" when the backend cannot; the first stage formats
  // then. Default: "".
  virtual absl::StatusOr<std::string> FormatPath(absl::string_view id) {
    return std::string();
  }

  // --- Snapshots and clones (docs/csi.md, "Snapshots and clones") ---
  // A snapshot is a copy of a volume's media, named by its own ID (the
  // volume ID alphabet; snapshot IDs are a namespace apart from volume
  // IDs), found again from the media alone. The service keeps it still
  // while it is copied (nothing attached, or its filesystem frozen) and
  // records what the snapshot is; the backend only copies.

  // True when the Snapshot/Clone methods below work. Default: false, and
  // they answer Unimplemented.
  virtual bool SupportsSnapshots() const { return false; }

  // Copies the media of volume `volume_id` into snapshot `snapshot_id` and
  // returns its size. Complete or absent: the copy only appears under its
  // name once complete and durable, so a crash in the middle leaves no
  // snapshot (and a partial copy DropPartialCopies removes). Idempotent: an
  // existing snapshot is returned as it is. NotFound when the volume's media
  // is missing; ResourceExhausted when there is no room.
  virtual absl::StatusOr<uint64_t> CreateSnapshot(absl::string_view snapshot_id,
                                                  absl::string_view volume_id) {
    return Unsupported();
  }
  // OK when missing.
  virtual absl::Status DeleteSnapshot(absl::string_view snapshot_id) {
    return Unsupported();
  }
  // The snapshot's size; NotFound when missing.
  virtual absl::StatusOr<uint64_t> SnapshotSize(absl::string_view snapshot_id) {
    return Unsupported();
  }

  // What a new volume is made from.
  struct ContentSource {
    bool snapshot = true;  // false: another volume
    std::string id;        // the snapshot's or the volume's ID
  };
  // Create() for a volume whose first bytes are `source`'s (a restored
  // snapshot or a clone): the new media is allocated at spec's size (at
  // least the source's: the caller checks), filled, made durable and only
  // then appears under the volume's ID, so media under that ID is always
  // complete (a crash leaves a partial copy that DropPartialCopies
  // removes). Idempotent as Create: existing media is returned as it is.
  // Nobody may write the source meanwhile (the caller quiesces a volume).
  virtual absl::StatusOr<Volume> CreateFrom(const VolumeSpec& spec,
                                            const ContentSource& source) {
    return Unsupported();
  }

  // Removes what copies a crash interrupted left behind. At start, before
  // serving.
  virtual absl::Status DropPartialCopies() { return absl::OkStatus(); }

  // True only when the backend can prove that every byte of the volume
  // reads as zero (so it carries no filesystem and staging may format it
  // without probing); false when unknown. Never true for a volume that was
  // written. Default: unknown.
  virtual absl::StatusOr<bool> ReadsAsZeros(absl::string_view id) {
    return false;
  }

 private:
  absl::Status Unsupported() const {
    return absl::UnimplementedError(
        absl::StrCat("the ", Name(), " backend has no snapshots or clones"));
  }
};

}  // namespace daxlease::csi

#endif  // DAXLEASE_CSI_VOLUME_BACKEND_H_
