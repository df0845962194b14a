// The pure planning half of NdctlBackend (sizes, placement, identity); no
// libndctl here so the unit tests run anywhere.
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
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

std::array<uint8_t, 16> VolumeNamespaceUuid(absl::string_view volume_id) {
  const std::string key = absl::StrCat("dax.daxlease.io/volume/", volume_id);
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

}  // namespace daxlease::csi
