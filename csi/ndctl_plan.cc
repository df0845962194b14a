// The pure planning half of NdctlBackend (sizes, placement, identity); no
// libndctl here so the unit tests run anywhere.
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "csi/ndctl_backend.h"

namespace daxlease::csi {
namespace {

uint64_t AlignUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }
uint64_t AlignDown(uint64_t v, uint64_t a) { return v / a * a; }

// 64-bit FNV-1a with a caller-chosen basis: two bases give 128 bits.
uint64_t Fnv1a(absl::string_view s, uint64_t basis) {
  uint64_t h = basis;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

}  // namespace

uint64_t MapDevUsableBytes(uint64_t namespace_bytes, uint64_t pfn_align) {
  if (namespace_bytes <= kPfnInfoBytes || pfn_align == 0) return 0;
  // nd_pfn_init: npfns = (size - 8K) / 4K; offset = ALIGN(8K + 64 * npfns)
  const uint64_t npfns = (namespace_bytes - kPfnInfoBytes) / 4096;
  const uint64_t offset = AlignUp(kPfnInfoBytes + 64 * npfns, pfn_align);
  if (offset >= namespace_bytes) return 0;
  // The end is truncated to the alignment too.
  return AlignDown(namespace_bytes - offset, pfn_align);
}

absl::StatusOr<uint64_t> NamespaceBytesFor(uint64_t request_bytes,
                                           uint64_t region_align,
                                           uint64_t pfn_align) {
  if (request_bytes == 0)
    return absl::InvalidArgumentError("volume size must be > 0");
  if (region_align == 0 || pfn_align == 0)
    return absl::InvalidArgumentError("alignment must be > 0");
  uint64_t size =
      AlignUp(std::max(request_bytes, kMinNamespaceBytes), region_align);
  // Usable grows by at least align - align/64 - pfn_align per step (> 0 for
  // every alignment >= 2 * pfn_align), so this ends after a few steps.
  for (int i = 0;
       i < 1024 && MapDevUsableBytes(size, pfn_align) < request_bytes; ++i)
    size += region_align;
  if (MapDevUsableBytes(size, pfn_align) < request_bytes)
    return absl::InvalidArgumentError(absl::StrCat(
        "no namespace size gives ", request_bytes, " usable bytes"));
  return size;
}

uint64_t LargestVolumeIn(const RegionSpace& region, uint64_t pfn_align) {
  if (region.align == 0) return 0;
  const uint64_t ns = AlignDown(region.max_extent, region.align);
  if (ns < kMinNamespaceBytes) return 0;
  return MapDevUsableBytes(ns, pfn_align);
}

absl::StatusOr<Placement> ChooseRegion(const std::vector<RegionSpace>& regions,
                                       uint64_t request_bytes,
                                       uint64_t limit_bytes,
                                       uint64_t pfn_align) {
  const RegionSpace* best = nullptr;
  uint64_t best_ns = 0;
  bool over_limit = false;
  for (const RegionSpace& r : regions) {
    absl::StatusOr<uint64_t> ns =
        NamespaceBytesFor(request_bytes, r.align, pfn_align);
    if (!ns.ok()) return ns.status();
    if (limit_bytes != 0 && MapDevUsableBytes(*ns, pfn_align) > limit_bytes) {
      over_limit = true;
      continue;
    }
    if (*ns > r.max_extent) continue;
    if (best == nullptr || r.max_extent < best->max_extent ||
        (r.max_extent == best->max_extent && r.name < best->name)) {
      best = &r;
      best_ns = *ns;
    }
  }
  if (best == nullptr) {
    if (over_limit)
      return absl::OutOfRangeError(
          absl::StrCat("a volume of ", request_bytes,
                       " bytes rounded up to the region "
                       "alignment exceeds the limit of ",
                       limit_bytes, " bytes"));
    return absl::ResourceExhaustedError(absl::StrCat(
        "no pmem region has a contiguous free range for ", request_bytes,
        " bytes (largest creatable volume: ",
        CapacityOf(regions, pfn_align).max_volume_bytes, " bytes)"));
  }
  return Placement{best->name, best_ns, MapDevUsableBytes(best_ns, pfn_align)};
}

Capacity CapacityOf(const std::vector<RegionSpace>& regions,
                    uint64_t pfn_align) {
  Capacity c;
  for (const RegionSpace& r : regions) {
    c.total_bytes += r.size;
    c.available_bytes += r.available;
    c.max_volume_bytes =
        std::max(c.max_volume_bytes, LargestVolumeIn(r, pfn_align));
  }
  return c;
}

uint64_t SnapshotNamespaceBytes(uint64_t data_bytes, uint64_t region_align) {
  if (region_align == 0) return 0;
  return AlignUp(std::max(kSnapshotDataOffset + data_bytes, kMinNamespaceBytes),
                 region_align);
}

absl::StatusOr<Placement> ChooseRegionForSnapshot(
    const std::vector<RegionSpace>& regions, uint64_t data_bytes) {
  const RegionSpace* best = nullptr;
  uint64_t best_ns = 0;
  for (const RegionSpace& r : regions) {
    const uint64_t ns = SnapshotNamespaceBytes(data_bytes, r.align);
    if (ns == 0 || ns > r.max_extent) continue;
    if (best == nullptr || r.max_extent < best->max_extent ||
        (r.max_extent == best->max_extent && r.name < best->name)) {
      best = &r;
      best_ns = ns;
    }
  }
  if (best == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("no pmem region has a contiguous free range for a "
                     "snapshot of ",
                     data_bytes, " bytes"));
  }
  return Placement{best->name, best_ns, data_bytes};
}

namespace {

constexpr char kSnapshotMagic[] = "DXLSNAP1";
constexpr char kSnapshotComplete[] = "COMPLETE";
// Layout: magic [0,8), state [8,16), data bytes [16,24), mode [24,28),
// ID length [28,32), ID [32,96), checksum of [16,96) at [96,104).
constexpr size_t kIdOffset = 32;
constexpr size_t kIdMax = 64;
constexpr size_t kSumOffset = 96;

void PutLe(std::string& b, size_t at, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) b[at + i] = static_cast<char>(v >> (8 * i));
}
uint64_t GetLe(absl::string_view b, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i)
    v |= uint64_t{static_cast<unsigned char>(b[at + i])} << (8 * i);
  return v;
}

}  // namespace

std::string EncodeSnapshotHeader(const SnapshotHeader& h) {
  std::string b(kSnapshotHeaderBytes, '\0');
  b.replace(0, 8, kSnapshotMagic, 8);
  if (h.complete) b.replace(kSnapshotStateOffset, 8, kSnapshotComplete, 8);
  PutLe(b, 16, h.data_bytes, 8);
  PutLe(b, 24, h.mode == VolumeMode::kDevdax ? 1 : 0, 4);
  const size_t n = std::min(h.snapshot_id.size(), kIdMax);
  PutLe(b, 28, n, 4);
  b.replace(kIdOffset, n, h.snapshot_id.substr(0, n));
  PutLe(b, kSumOffset,
        Fnv1a(absl::string_view(b).substr(16, kSumOffset - 16),
              0xcbf29ce484222325ULL),
        8);
  return b;
}

absl::StatusOr<SnapshotHeader> DecodeSnapshotHeader(absl::string_view b) {
  if (b.size() < kSumOffset + 8 || b.substr(0, 8) != kSnapshotMagic) {
    return absl::DataLossError("no snapshot header");
  }
  if (GetLe(b, kSumOffset, 8) !=
      Fnv1a(b.substr(16, kSumOffset - 16), 0xcbf29ce484222325ULL)) {
    return absl::DataLossError("snapshot header checksum mismatch");
  }
  const absl::string_view state = b.substr(kSnapshotStateOffset, 8);
  if (state != kSnapshotComplete &&
      state != absl::string_view("\0\0\0\0\0\0\0\0", 8)) {
    return absl::DataLossError(
        "snapshot header state is neither complete nor copying");
  }
  const uint64_t mode = GetLe(b, 24, 4);
  const uint64_t n = GetLe(b, 28, 4);
  if (mode > 1 || n > kIdMax) {
    return absl::DataLossError("snapshot header fields out of range");
  }
  SnapshotHeader h;
  h.complete = state == kSnapshotComplete;
  h.data_bytes = GetLe(b, 16, 8);
  h.mode = mode == 1 ? VolumeMode::kDevdax : VolumeMode::kFsdax;
  h.snapshot_id = std::string(b.substr(kIdOffset, n));
  return h;
}

namespace {

std::array<uint8_t, 16> NamespaceUuid(absl::string_view key) {
  const uint64_t hi = Fnv1a(key, 0xcbf29ce484222325ULL);
  const uint64_t lo = Fnv1a(key, 0x84222325cbf29ce4ULL ^ hi);
  std::array<uint8_t, 16> u;
  for (int i = 0; i < 8; ++i) {
    u[i] = static_cast<uint8_t>(hi >> (56 - 8 * i));
    u[8 + i] = static_cast<uint8_t>(lo >> (56 - 8 * i));
  }
  u[6] = static_cast<uint8_t>((u[6] & 0x0f) | 0x80);  // version 8
  u[8] = static_cast<uint8_t>((u[8] & 0x3f) | 0x80);  // RFC variant
  return u;
}

}  // namespace

std::array<uint8_t, 16> VolumeNamespaceUuid(absl::string_view volume_id) {
  return NamespaceUuid(absl::StrCat("dax.daxlease.io/volume/", volume_id));
}

std::array<uint8_t, 16> SnapshotNamespaceUuid(absl::string_view snapshot_id) {
  return NamespaceUuid(absl::StrCat("dax.daxlease.io/snapshot/", snapshot_id));
}

absl::StatusOr<std::string> SnapshotNamespaceName(
    absl::string_view snapshot_id) {
  if (snapshot_id.empty() || snapshot_id.size() + 2 > 63) {
    return absl::InvalidArgumentError(absl::StrCat(
        "snapshot ID must be 1-61 characters on ndctl: \"", snapshot_id, "\""));
  }
  return absl::StrCat("s:", snapshot_id);
}

std::string EncodeGrowMarker(const GrowMarker& m) {
  return absl::StrCat(m.switched ? "switched " : "copying ", m.generation,
                      "\n");
}

absl::StatusOr<GrowMarker> ParseGrowMarker(absl::string_view text) {
  for (const bool switched : {false, true}) {
    for (const int gen : {0, 1}) {
      if (text == EncodeGrowMarker(GrowMarker{switched, gen}))
        return GrowMarker{switched, gen};
    }
  }
  return absl::DataLossError(
      absl::StrCat("not a grow marker: \"", absl::CEscape(text), "\""));
}

}  // namespace daxlease::csi
