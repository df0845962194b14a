// NdctlBackend: daxlease volumes on persistent memory (and CXL memory exposed
// the same way) through libndctl/libdaxctl. One namespace per volume in a
// labelled pmem region:
//   fsdax   map=dev (struct pages on the media), /dev/pmemN, 2 MiB alignment
//   devdax  map=dev, /dev/daxX.Y, 2 MiB alignment
//
// Identity and ownership. A volume's namespace carries the volume ID as its
// name (label alt name, so it survives plugin and node restarts) and a UUID
// derived from that ID (VolumeNamespaceUuid). A namespace is ours only when
// both match; the backend never modifies, lists or deletes any other
// namespace, even one that carries a volume-like name.
//
// Sizes. A namespace size is a multiple of the region's alignment (16 MiB on
// the lab's QEMU NVDIMM), at least 16 MiB, and enlarged until the usable
// size after the map=dev metadata (about 1/64 of the size plus an aligned
// info block, exactly as the kernel's nd_pfn computes it) is at least the
// request. GetCapacity reports the largest volume that one free contiguous
// range can really hold (not the free total), and Create returns
// RESOURCE_EXHAUSTED when no region has a contiguous range for the request.
// Placement is best fit (the region with the smallest range that fits).
//
// Attach/Detach. The kernel enables a labelled namespace at boot, so the
// device of a volume exists as long as the volume does: Attach makes sure
// the namespace is enabled and returns /dev/pmemN or /dev/daxX.Y; Detach
// releases nothing (OK); Delete refuses with FAILED_PRECONDITION while the
// device is in use (mounted or open; the kernel refuses to disable it).
//
// Delete erases the whole namespace (zeros, through a raw-mode enable) before
// it frees the space, unless erase_on_delete is off; then only the 8 KiB info
// block is cleared, as `ndctl destroy-namespace` does, and Create zeros the
// first and last 4 MiB of every new volume instead, so that no filesystem
// of a previous tenant is ever found (and mounted) on it; the rest of the
// space may still hold old bytes for a raw (block, devdax) reader: only
// erase_on_delete guarantees a clean volume.
//
// Snapshots (docs/csi.md, "Snapshots and clones"). A snapshot is a raw
// namespace of its own (no fsdax/devdax device: nothing maps it), named
// "s:<snapshot-id>" with a UUID derived from that (SnapshotNamespaceUuid),
// so a snapshot is never taken for a volume and survives plugin and node
// restarts on the media alone, like a volume. It starts with a 4 KiB
// header (SnapshotHeader: what was copied, from which mode, and whether the
// copy is complete), then zeros up to kSnapshotDataOffset (the 4 KiB where
// the kernel looks for an fsdax/devdax/btt info block stays zero, so a
// snapshot is never probed as anything but raw), then the source volume's
// usable bytes. The header is written "copying" before the copy and
// "complete" (one aligned 8-byte word) only once the copy is durable: a
// snapshot is complete or absent (SnapshotSize answers NotFound for a
// partial one, DropPartialCopies erases it). Either mode is copied the same
// way: O_DIRECT from /dev/pmemN, or through a mapping of /dev/daxX.Y
// (character devices do not read(2)); into a devdax volume with
// non-temporal stores and a fence (device DAX has no fsync).
// A restore or clone (CreateFrom) is a new volume namespace of the asked
// size and a copy into it. A volume's namespace cannot be renamed once its
// fsdax/devdax device holds it (the kernel refuses a new name or UUID for a
// claimed namespace), so an unfinished copy is marked outside the media: a
// file <copy_marker_dir>/<volume-id>, durable before the namespace is made
// and removed once the copy is durable; a volume with a marker is partial
// (CreateFrom redoes it, DropPartialCopies deletes it).
//
// Expansion: not in place. A map=dev namespace cannot grow in place (the
// memmap reserve at its start is sized for the old size, so growing would
// move the data start) and namespaces need contiguous space, so Expand
// makes a new namespace of the new size, copies the volume's usable bytes
// into it, compares both, switches, and frees the old one: offline (the
// device must not be mounted, open or mapped: FAILED_PRECONDITION), with
// room for both namespaces at once (else RESOURCE_EXHAUSTED). A volume's
// namespace carries one of two UUIDs derived from its ID (its generation,
// 0 or 1); the grown namespace gets the other one and the same name. A
// marker file <grow_marker_dir>/<volume-id> says which generation serves
// while both exist: "copying N" (durable before namespace N is made: the
// old one serves) and then "switched N" (a rename, once the copy is durable
// and compared: N serves). SettleGrow frees the other generation and
// removes the marker; Expand, Delete and the plugin's start-up
// (DropPartialCopies) call it, so a kill -9 at any step leaves the old or
// the new namespace serving, whole, and never both once settled. The
// filesystem of an fsdax volume grows at its next stage (NodeExpandVolume).
// Growth under holders (the recall, the unmount and the agent's remap
// around this) is not done yet (docs/csi.md).
//
// Thread safety: every public method takes one mutex (libndctl contexts are
// not thread-safe, and region allocation must be serialized), except
// during the long part of Delete (the erase of the namespace's bytes, which
// touches only that namespace's raw device); each call opens a fresh
// libndctl context, so changes made by other processes (ndctl by hand) are
// always seen.
//
// The devdax in-use check (Delete) scans /proc/*/fd and /proc/*/maps: it
// sees only the processes of the plugin's PID namespace, so the node
// plugin's DaemonSet needs hostPID: true (docs/csi.md).
//
// The mkfs tuning for 2 MiB pages and the -o dax mount (verified: the stage
// fails if the kernel mounted without DAX) are the node service's job; the
// backend hands it a block device and says ProvidesDax().
#ifndef DAXLEASE_CSI_NDCTL_BACKEND_H_
#define DAXLEASE_CSI_NDCTL_BACKEND_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "csi/volume_backend.h"

namespace daxlease::csi {

// ---------------------------------------------------------------- planning
// Pure functions over values (unit-tested without hardware).

inline constexpr uint64_t kMiB = uint64_t{1} << 20;
// The kernel refuses namespaces below 16 MiB (nd_namespace_store).
inline constexpr uint64_t kMinNamespaceBytes = 16 * kMiB;
// The map=dev info block reserved at the start of a pfn/dax namespace.
inline constexpr uint64_t kPfnInfoBytes = 8 * 1024;

// What a region offers, as read from libndctl.
struct RegionSpace {
  std::string name;         // "region0"
  uint64_t size = 0;        // total
  uint64_t available = 0;   // free, possibly fragmented
  uint64_t max_extent = 0;  // largest contiguous free range
  uint64_t align = 0;       // namespace sizes must be multiples of this
};

// The usable bytes of a map=dev namespace of `namespace_bytes` whose data
// starts at a multiple of `pfn_align`: the kernel reserves
// ALIGN(8 KiB + 64 bytes per 4 KiB page, pfn_align) for the info block and
// the struct page array (nd_pfn_init).
uint64_t MapDevUsableBytes(uint64_t namespace_bytes, uint64_t pfn_align);

// The smallest namespace size (multiple of `region_align`, >= 16 MiB) whose
// usable size is >= `request_bytes`. InvalidArgument for a zero alignment
// or a request of 0.
absl::StatusOr<uint64_t> NamespaceBytesFor(uint64_t request_bytes,
                                           uint64_t region_align,
                                           uint64_t pfn_align);

// The largest usable volume one region can hold now (0 if none).
uint64_t LargestVolumeIn(const RegionSpace& region, uint64_t pfn_align);

struct Placement {
  std::string region;
  uint64_t namespace_bytes = 0;
  uint64_t usable_bytes = 0;
};

// Best fit: among the regions whose largest free range holds the namespace
// for `request_bytes`, the one with the smallest such range (ties: name).
// RESOURCE_EXHAUSTED (with the largest creatable size in the message) when
// none can; a volume above `limit_bytes` (non-zero) is OUT_OF_RANGE.
absl::StatusOr<Placement> ChooseRegion(const std::vector<RegionSpace>& regions,
                                       uint64_t request_bytes,
                                       uint64_t limit_bytes,
                                       uint64_t pfn_align);

// Snapshot namespaces (see the header comment). The data starts at
// kSnapshotDataOffset; the header is the first kSnapshotHeaderBytes.
inline constexpr uint64_t kSnapshotDataOffset = 2 * kMiB;
inline constexpr uint64_t kSnapshotHeaderBytes = 4096;

// The size of the raw namespace holding a snapshot of `data_bytes`: header
// and gap, data, aligned up to the region's alignment, >= 16 MiB.
uint64_t SnapshotNamespaceBytes(uint64_t data_bytes, uint64_t region_align);

// Best fit (as ChooseRegion) for the raw namespace of a snapshot of
// `data_bytes`; RESOURCE_EXHAUSTED when no region has a range for it.
// Placement::usable_bytes is `data_bytes`.
absl::StatusOr<Placement> ChooseRegionForSnapshot(
    const std::vector<RegionSpace>& regions, uint64_t data_bytes);

// What a snapshot namespace's header says.
struct SnapshotHeader {
  std::string snapshot_id;
  uint64_t data_bytes = 0;  // the source volume's usable bytes
  VolumeMode mode = VolumeMode::kFsdax;
  bool complete = false;
};
// The kSnapshotHeaderBytes the header is on the media (little-endian):
// magic "DXLSNAP1", the state word ("COMPLETE" or zeros) at offset 8, data
// bytes, mode, the ID; a checksum over all but the state word.
std::string EncodeSnapshotHeader(const SnapshotHeader& h);
// The offset of the 8-byte state word, the only part rewritten at the end.
inline constexpr uint64_t kSnapshotStateOffset = 8;
// DataLoss for anything that is not a header EncodeSnapshotHeader wrote
// (a namespace whose header was never written reads as zeros).
absl::StatusOr<SnapshotHeader> DecodeSnapshotHeader(absl::string_view bytes);

// Total, free total, and largest creatable volume over all regions.
Capacity CapacityOf(const std::vector<RegionSpace>& regions,
                    uint64_t pfn_align);

// The namespace UUID of a volume: 16 bytes derived from the ID (RFC 9562
// version 8 layout), the ownership mark of the backend's namespaces.
std::array<uint8_t, 16> VolumeNamespaceUuid(absl::string_view volume_id);
// The same for a snapshot's namespace (another key: never a volume's).
std::array<uint8_t, 16> SnapshotNamespaceUuid(absl::string_view snapshot_id);
// The label name of a snapshot's namespace: "s:<id>" (volume IDs have no
// ':'); InvalidArgument when it would not fit the label's 63 characters.
absl::StatusOr<std::string> SnapshotNamespaceName(
    absl::string_view snapshot_id);

// ---------------------------------------------------------------- backend
struct NdctlBackendOptions {
  // Zero the whole namespace before freeing it (else only its info block).
  bool erase_on_delete = true;
  // Alignment of the data area (page size of the DAX mappings).
  uint64_t pfn_align = 2 * kMiB;
  // Regions to use ("region0", ...); empty = every labelled pmem region.
  std::vector<std::string> regions;
  // Where unfinished restores and clones are marked (see above; the
  // plugin's state directory). Empty: no snapshots or clones.
  std::string copy_marker_dir;
  // Paces snapshot, clone and grow copies (bytes per second; 0: as fast as
  // the media goes). Also what lets a test kill the plugin mid-copy.
  uint64_t copy_bytes_per_second = 0;
  // Where grows in progress are marked (see above; the plugin's state
  // directory). Empty: volumes do not grow.
  std::string grow_marker_dir;
};

// A grow's marker (see the header comment): the generation of the new
// namespace, and whether it serves yet.
struct GrowMarker {
  bool switched = false;
  int generation = 0;
};
// "copying N\n" or "switched N\n".
std::string EncodeGrowMarker(const GrowMarker& m);
// DataLoss for anything else (a torn first write).
absl::StatusOr<GrowMarker> ParseGrowMarker(absl::string_view text);

class NdctlBackend final : public VolumeBackend {
 public:
  explicit NdctlBackend(NdctlBackendOptions options);

  absl::string_view Name() const override { return "ndctl"; }
  // OK when at least one labelled, enabled, writable pmem region exists.
  absl::Status Ready() override;
  bool ProvidesDax() const override { return true; }
  bool SupportsExpansion() const override {
    return !options_.grow_marker_dir.empty();
  }
  bool ExpandsOnline() const override { return false; }
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
  // fsdax: the namespace's block device (enabled), so CreateVolume formats
  // it; devdax: "".
  absl::StatusOr<std::string> FormatPath(absl::string_view id) override;

  // Snapshots and clones: see the header comment.
  bool SupportsSnapshots() const override {
    return !options_.copy_marker_dir.empty();
  }
  absl::StatusOr<uint64_t> CreateSnapshot(absl::string_view snapshot_id,
                                          absl::string_view volume_id) override;
  absl::Status DeleteSnapshot(absl::string_view snapshot_id) override;
  absl::StatusOr<uint64_t> SnapshotSize(absl::string_view snapshot_id) override;
  absl::StatusOr<Volume> CreateFrom(const VolumeSpec& spec,
                                    const ContentSource& source) override;
  absl::Status DropPartialCopies() override;

  // The regions the backend would use, as it sees them now.
  absl::StatusOr<std::vector<RegionSpace>> Regions();

 private:
  std::string MarkerPath(absl::string_view volume_id) const;
  // Ends what a grow of `id` left (see the header comment); OK when none.
  absl::Status SettleGrow(absl::string_view id);
  // Erases (as erase_on_delete says) and frees the namespace `find` finds
  // under the lock (the volume or snapshot `id`, `kind` says which), the
  // long erase without it. OK when it finds none.
  template <typename Find>
  absl::Status DeleteFound(absl::string_view kind, absl::string_view id,
                           Find find);

  const NdctlBackendOptions options_;
  absl::Mutex mu_;
};

}  // namespace daxlease::csi

#endif  // DAXLEASE_CSI_NDCTL_BACKEND_H_
