// The libndctl half of NdctlBackend. The only file that includes
// <ndctl/libndctl.h> and <daxctl/libdaxctl.h>.
#include "csi/ndctl_backend.h"

#include <daxctl/libdaxctl.h>
#include <dirent.h>
#include <emmintrin.h>
#include <fcntl.h>
#include <linux/ndctl.h>
#include <ndctl/libndctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <memory>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "lib/base/crash_point.h"
#include "lib/base/log.h"
#include "lib/base/status.h"
#include "lib/sys/env.h"
#include "lib/sys/fd.h"

namespace daxlease::csi {
namespace {

// ---------------------------------------------------------------- context
struct CtxUnref {
  void operator()(ndctl_ctx* c) const { ndctl_unref(c); }
};
using Ctx = std::unique_ptr<ndctl_ctx, CtxUnref>;

absl::StatusOr<Ctx> OpenCtx() {
  ndctl_ctx* c = nullptr;
  int rc = ndctl_new(&c);
  if (rc < 0 || c == nullptr)
    return absl::UnavailableError(
        absl::StrCat("libndctl: ndctl_new failed: ", std::strerror(-rc)));
  return Ctx(c);
}

absl::Status NdErr(absl::string_view op, absl::string_view dev, int rc) {
  return base::ErrnoStatus(op, dev, rc < 0 ? -rc : (rc > 0 ? rc : EIO));
}

bool IsOurMode(ndctl_namespace_mode m) {
  return m == NDCTL_NS_MODE_FSDAX || m == NDCTL_NS_MODE_DEVDAX;
}

// A labelled, enabled, writable pmem region the options allow.
bool Usable(ndctl_region* r, const NdctlBackendOptions& o) {
  if (ndctl_region_get_type(r) != ND_DEVICE_REGION_PMEM) return false;
  if (!ndctl_region_is_enabled(r) || ndctl_region_get_ro(r)) return false;
  if (ndctl_region_get_nstype(r) != ND_DEVICE_NAMESPACE_PMEM) return false;
  if (o.regions.empty()) return true;
  return std::find(o.regions.begin(), o.regions.end(),
                   ndctl_region_get_devname(r)) != o.regions.end();
}

template <typename F>
void ForEachRegion(ndctl_ctx* ctx, const NdctlBackendOptions& o, F f) {
  ndctl_bus* bus;
  ndctl_region* r;
  ndctl_bus_foreach(ctx, bus) {
    ndctl_region_foreach(bus, r) {
      if (Usable(r, o)) f(r);
    }
  }
}

RegionSpace SpaceOf(ndctl_region* r, uint64_t pfn_align) {
  RegionSpace s;
  s.name = ndctl_region_get_devname(r);
  s.size = ndctl_region_get_size(r);
  s.available = ndctl_region_get_available_size(r);
  unsigned long long ext = ndctl_region_get_max_available_extent(r);
  s.max_extent = ext == ULLONG_MAX ? s.available : ext;
  unsigned long align = ndctl_region_get_align(r);
  unsigned ways = std::max(1u, ndctl_region_get_interleave_ways(r));
  s.align =
      std::max<uint64_t>(align == ULONG_MAX ? 0 : align, pfn_align * ways);
  return s;
}

// ---------------------------------------------------------------- ownership
struct Found {
  ndctl_region* region = nullptr;
  ndctl_namespace* ns = nullptr;
};

bool NamedAs(ndctl_namespace* ns, absl::string_view id) {
  if (ndctl_namespace_get_size(ns) == 0) return false;  // seed / idle
  const char* name = ndctl_namespace_get_alt_name(ns);
  return name != nullptr && id == name;
}

bool UuidIs(ndctl_namespace* ns, const std::array<uint8_t, 16>& want) {
  uuid_t uu;
  ndctl_namespace_get_uuid(ns, uu);
  return std::memcmp(uu, want.data(), 16) == 0;
}

// Growth generations (see the header): a volume's namespace carries one of
// two UUIDs derived from its ID, and a grow makes the namespace of the
// other one beside it. The fsdax/devdax child gets its own derived UUID
// per generation.
std::array<uint8_t, 16> GenerationUuid(absl::string_view id, int gen) {
  return VolumeNamespaceUuid(gen == 0 ? std::string(id)
                                      : absl::StrCat(id, "/grown"));
}
std::array<uint8_t, 16> GenerationDeviceUuid(absl::string_view id, int gen) {
  return VolumeNamespaceUuid(
      absl::StrCat(id, gen == 0 ? "/dev" : "/grown/dev"));
}

// 0 or 1: the generation of a namespace of volume `id`; -1: not one.
int GenerationOf(ndctl_namespace* ns, absl::string_view id) {
  if (!NamedAs(ns, id)) return -1;
  for (int g : {0, 1}) {
    if (UuidIs(ns, GenerationUuid(id, g))) return g;
  }
  return -1;
}

bool OwnedBy(ndctl_namespace* ns, absl::string_view id) {
  return GenerationOf(ns, id) >= 0;
}

std::string GrowMarkerPath(const NdctlBackendOptions& o, absl::string_view id) {
  return absl::StrCat(o.grow_marker_dir, "/", id);
}

// The generation that serves `id` while a grow's marker exists; -1 when no
// grow is in progress (then only one generation exists).
int ServingGeneration(const NdctlBackendOptions& o, absl::string_view id) {
  if (o.grow_marker_dir.empty()) return -1;
  absl::StatusOr<std::string> text =
      sys::DefaultEnv()->ReadFile(GrowMarkerPath(o, id));
  if (!text.ok()) return -1;
  absl::StatusOr<GrowMarker> m = ParseGrowMarker(*text);
  if (!m.ok()) return -1;
  return m->switched ? m->generation : 1 - m->generation;
}

// The namespace of generation `gen` of volume `id`, or null.
Found FindGeneration(ndctl_ctx* ctx, const NdctlBackendOptions& o,
                     absl::string_view id, int gen) {
  Found f;
  ForEachRegion(ctx, o, [&](ndctl_region* r) {
    ndctl_namespace* ns;
    ndctl_namespace_foreach(r, ns) {
      if (f.ns == nullptr && GenerationOf(ns, id) == gen) f = Found{r, ns};
    }
  });
  return f;
}

// Our namespace for `id` (during a grow, the generation that serves);
// `foreign` tells whether another one carries the name.
Found FindOwned(ndctl_ctx* ctx, const NdctlBackendOptions& o,
                absl::string_view id, bool* foreign = nullptr) {
  const int serving = ServingGeneration(o, id);
  Found f;
  ForEachRegion(ctx, o, [&](ndctl_region* r) {
    ndctl_namespace* ns;
    ndctl_namespace_foreach(r, ns) {
      const int gen = GenerationOf(ns, id);
      if (gen >= 0) {
        if (f.ns == nullptr && (serving < 0 || gen == serving))
          f = Found{r, ns};
      } else if (foreign != nullptr && NamedAs(ns, id)) {
        *foreign = true;
      }
    }
  });
  return f;
}

// The volume ID of a namespace the backend owns, or "".
std::string OwnerId(ndctl_namespace* ns) {
  if (ndctl_namespace_get_size(ns) == 0) return "";
  const char* name = ndctl_namespace_get_alt_name(ns);
  if (name == nullptr || name[0] == '\0') return "";
  return OwnedBy(ns, name) ? std::string(name) : "";
}

// ---------------------------------------------------------------- devices
daxctl_dev* DaxDevOf(ndctl_namespace* ns) {
  ndctl_dax* dax = ndctl_namespace_get_dax(ns);
  if (dax == nullptr) return nullptr;
  daxctl_region* dr = ndctl_dax_get_daxctl_region(dax);
  if (dr == nullptr) return nullptr;
  daxctl_dev* dev;
  daxctl_dev_foreach(dr, dev) {
    if (daxctl_dev_get_size(dev) > 0) return dev;
  }
  return nullptr;
}

// Whether the volume's device exists: a claimed namespace is not itself
// bound to a driver; its pfn (fsdax) or dax (devdax) child is.
bool DeviceEnabled(ndctl_namespace* ns) {
  if (ndctl_namespace_get_mode(ns) == NDCTL_NS_MODE_FSDAX) {
    ndctl_pfn* pfn = ndctl_namespace_get_pfn(ns);
    return pfn != nullptr && ndctl_pfn_is_enabled(pfn);
  }
  ndctl_dax* dax = ndctl_namespace_get_dax(ns);
  return dax != nullptr && ndctl_dax_is_enabled(dax);
}

// "/dev/pmemN" or "/dev/daxX.Y" of an enabled namespace, "" if none.
std::string DevicePath(ndctl_namespace* ns) {
  if (ndctl_namespace_get_mode(ns) == NDCTL_NS_MODE_FSDAX) {
    ndctl_pfn* pfn = ndctl_namespace_get_pfn(ns);
    const char* b = pfn != nullptr ? ndctl_pfn_get_block_device(pfn) : nullptr;
    if (b == nullptr || b[0] == '\0') b = ndctl_namespace_get_block_device(ns);
    return b != nullptr && b[0] != '\0' ? absl::StrCat("/dev/", b) : "";
  }
  daxctl_dev* dev = DaxDevOf(ns);
  return dev != nullptr ? absl::StrCat("/dev/", daxctl_dev_get_devname(dev))
                        : "";
}

// Usable bytes: the device's real size when enabled, the kernel's formula
// otherwise (the same numbers; the lab checks they agree).
uint64_t UsableOf(ndctl_namespace* ns, uint64_t pfn_align) {
  if (DeviceEnabled(ns)) {
    if (ndctl_namespace_get_mode(ns) == NDCTL_NS_MODE_FSDAX) {
      ndctl_pfn* pfn = ndctl_namespace_get_pfn(ns);
      if (pfn != nullptr && ndctl_pfn_is_enabled(pfn)) {
        unsigned long long s = ndctl_pfn_get_size(pfn);
        if (s != 0 && s != ULLONG_MAX) return s;
      }
    } else if (daxctl_dev* dev = DaxDevOf(ns); dev != nullptr) {
      return daxctl_dev_get_size(dev);
    }
  }
  return MapDevUsableBytes(ndctl_namespace_get_size(ns), pfn_align);
}

Volume VolumeOf(absl::string_view id, ndctl_namespace* ns, uint64_t pfn_align) {
  Volume v;
  v.id = std::string(id);
  v.mode = ndctl_namespace_get_mode(ns) == NDCTL_NS_MODE_DEVDAX
               ? VolumeMode::kDevdax
               : VolumeMode::kFsdax;
  v.capacity_bytes = UsableOf(ns, pfn_align);
  return v;
}

// Whether any process has the device `path` open or mapped, under any name
// (a published devdax volume is a bind mount of the node into the pod, so
// compare device numbers, not paths). The kernel disables a device-dax
// instance even while it is mapped (and zaps the mappings), so "in use" for
// devdax is decided here from /proc, not by the disable call.
bool DeviceInUse(const std::string& path) {
  struct stat dev;
  if (::stat(path.c_str(), &dev) != 0 ||
      !(S_ISCHR(dev.st_mode) || S_ISBLK(dev.st_mode)))
    return false;
  auto same = [&](const char* p) {
    struct stat st;
    return ::stat(p, &st) == 0 &&
           (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) &&
           st.st_rdev == dev.st_rdev &&
           S_ISCHR(st.st_mode) == S_ISCHR(dev.st_mode);
  };
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return false;
  bool used = false;
  while (!used) {
    dirent* e = ::readdir(proc);
    if (e == nullptr) break;
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    const std::string pid = absl::StrCat("/proc/", e->d_name);
    if (DIR* fds = ::opendir((pid + "/fd").c_str()); fds != nullptr) {
      while (dirent* f = ::readdir(fds)) {
        if (f->d_name[0] == '.') continue;
        if (same(absl::StrCat(pid, "/fd/", f->d_name).c_str())) {
          used = true;
          break;
        }
      }
      ::closedir(fds);
    }
    if (used) break;
    if (FILE* m = std::fopen((pid + "/maps").c_str(), "r"); m != nullptr) {
      char line[1024];
      while (std::fgets(line, sizeof line, m) != nullptr) {
        char* slash = std::strchr(line, '/');
        if (slash == nullptr) continue;
        slash[std::strcspn(slash, "\n")] = '\0';
        if (same(slash)) {
          used = true;
          break;
        }
      }
      std::fclose(m);
    }
  }
  ::closedir(proc);
  return used;
}

// Waits (briefly) for a device node the kernel just created.
absl::Status WaitForNode(const std::string& path) {
  for (int i = 0; i < 100; ++i) {
    struct stat st;
    if (::stat(path.c_str(), &st) == 0) return absl::OkStatus();
    absl::SleepFor(absl::Milliseconds(20));
  }
  return absl::UnavailableError(absl::StrCat(path, " did not appear"));
}

// The block device of a namespace enabled in raw mode.
absl::StatusOr<std::string> RawDevice(ndctl_namespace* ns) {
  const char* b = ndctl_namespace_get_block_device(ns);
  if (b == nullptr || b[0] == '\0')
    return absl::InternalError("raw namespace has no block device");
  return absl::StrCat("/dev/", b);
}

// Writes zeros over [0, len) of a raw namespace's block device.
absl::Status ZeroPath(const std::string& path, uint64_t len) {
  RETURN_IF_ERROR(WaitForNode(path));
  // O_DIRECT: straight to the media (memcpy_flushcache), no page cache.
  int fd = ::open(path.c_str(), O_RDWR | O_EXCL | O_CLOEXEC | O_DIRECT);
  if (fd < 0) return base::ErrnoStatus("open", path, errno);
  constexpr size_t kBuf = 4 << 20;
  void* raw = nullptr;
  if (::posix_memalign(&raw, 4096, kBuf) != 0) {
    ::close(fd);
    return absl::ResourceExhaustedError("no memory for the erase buffer");
  }
  std::unique_ptr<char, decltype(&std::free)> zeros(static_cast<char*>(raw),
                                                    &std::free);
  std::memset(zeros.get(), 0, kBuf);
  absl::Status st;
  for (uint64_t off = 0; off < len && st.ok();) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(kBuf, len - off));
    ssize_t w = ::pwrite(fd, zeros.get(), n, static_cast<off_t>(off));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      st = base::ErrnoStatus("pwrite", path, w < 0 ? errno : EIO);
      break;
    }
    off += static_cast<uint64_t>(w);
  }
  if (st.ok() && ::fsync(fd) != 0) st = base::ErrnoStatus("fsync", path, errno);
  ::close(fd);
  return st;
}

// Erases (all of it, or only the info block) and frees a disabled namespace.
absl::Status EraseAndDelete(ndctl_namespace* ns, bool erase_all) {
  const std::string dev = ndctl_namespace_get_devname(ns);
  ndctl_namespace_set_enforce_mode(ns, NDCTL_NS_MODE_RAW);
  const uint64_t size = ndctl_namespace_get_size(ns);
  ndctl_namespace_set_raw_mode(ns, 1);
  int rc = ndctl_namespace_enable(ns);
  absl::StatusOr<std::string> raw =
      rc < 0 ? NdErr("ndctl_namespace_enable(raw)", dev, rc) : RawDevice(ns);
  absl::Status st = raw.ok()
                        ? ZeroPath(*raw, erase_all ? size : 2 * kPfnInfoBytes)
                        : raw.status();
  ndctl_namespace_set_raw_mode(ns, 0);
  ndctl_namespace_disable_invalidate(ns);
  if (!st.ok()) return base::Annotate(st, "erasing the namespace");
  rc = ndctl_namespace_delete(ns);
  if (rc < 0) return NdErr("ndctl_namespace_delete", dev, rc);
  return absl::OkStatus();
}

// Zeros the head and the tail of a new volume's data area (where
// filesystem and partition signatures live), so that with erase-on-delete
// off a new volume never presents the previous tenant's filesystem (blkid
// would find it, and staging would mount it instead of formatting).
// fsdax: O_DIRECT writes to /dev/pmemN; devdax: the character device only
// maps, so through a shared mapping. Device DAX has no fsync (msync answers
// EINVAL), so the zeros are made durable the way any DAX store is: each
// cache line flushed, then a store fence.
absl::Status ZeroHeadAndTail(const std::string& path, bool block,
                             uint64_t size) {
  const uint64_t chunk = std::min<uint64_t>(size, 4 * kMiB);
  const uint64_t offsets[2] = {0, size - chunk};
  RETURN_IF_ERROR(WaitForNode(path));
  int fd = ::open(path.c_str(),
                  O_RDWR | O_CLOEXEC | (block ? O_EXCL | O_DIRECT : 0));
  if (fd < 0) return base::ErrnoStatus("open", path, errno);
  absl::Status st;
  if (block) {
    void* raw = nullptr;
    if (::posix_memalign(&raw, 4096, chunk) != 0) {
      ::close(fd);
      return absl::ResourceExhaustedError("no memory for the zero buffer");
    }
    std::memset(raw, 0, chunk);
    for (uint64_t off : offsets) {
      if (::pwrite(fd, raw, chunk, static_cast<off_t>(off)) !=
          static_cast<ssize_t>(chunk)) {
        st = base::ErrnoStatus("pwrite", path, errno ? errno : EIO);
        break;
      }
    }
    std::free(raw);
    if (st.ok() && ::fsync(fd) != 0) {
      st = base::ErrnoStatus("fsync", path, errno);
    }
  } else {
    for (uint64_t off : offsets) {
      void* m = ::mmap(nullptr, chunk, PROT_WRITE, MAP_SHARED, fd,
                       static_cast<off_t>(off));
      if (m == MAP_FAILED) {
        st = base::ErrnoStatus("mmap", path, errno);
        break;
      }
      std::memset(m, 0, chunk);
      char* line = static_cast<char*>(m);
      for (uint64_t i = 0; i < chunk; i += 64) _mm_clflush(line + i);
      _mm_sfence();
      ::munmap(m, chunk);
      if (!st.ok()) break;
    }
  }
  ::close(fd);
  return st;
}

// Frees a namespace this call configured (the seed goes back to idle).
absl::Status Undo(ndctl_namespace* ns, absl::Status st) {
  ndctl_namespace_set_enforce_mode(ns, NDCTL_NS_MODE_RAW);
  ndctl_namespace_delete(ns);
  return st;
}

// Takes the region's idle namespace seed and gives it `uuid`, `name` and
// `ns_bytes` (the label is written). On failure nothing is left.
absl::StatusOr<ndctl_namespace*> LabelSeed(ndctl_region* region,
                                           std::array<uint8_t, 16> uu,
                                           const std::string& name,
                                           uint64_t ns_bytes) {
  const std::string rname = ndctl_region_get_devname(region);
  ndctl_namespace* ns = ndctl_region_get_namespace_seed(region);
  if (ns == nullptr || !ndctl_namespace_is_configuration_idle(ns))
    return absl::UnavailableError(
        absl::StrCat(rname, ": no idle namespace seed (retry)"));
  const std::string nsname = ndctl_namespace_get_devname(ns);
  int rc = ndctl_namespace_set_uuid(ns, uu.data());
  if (rc < 0) return NdErr("ndctl_namespace_set_uuid", nsname, rc);
  rc = ndctl_namespace_set_alt_name(ns, name.c_str());
  if (rc < 0)
    return Undo(ns, NdErr("ndctl_namespace_set_alt_name", nsname, rc));
  rc = ndctl_namespace_set_size(ns, ns_bytes);
  if (rc < 0) {
    absl::Status st = NdErr("ndctl_namespace_set_size", nsname, rc);
    if (rc == -ENOSPC) st = absl::ResourceExhaustedError(st.message());
    return Undo(ns, st);
  }
  return ns;
}

// Creates the namespace of generation `gen` for `id` on `region`. On
// failure nothing is left.
absl::Status CreateNamespace(ndctl_region* region, absl::string_view id,
                             VolumeMode mode, uint64_t ns_bytes,
                             uint64_t pfn_align, int gen = 0) {
  const std::string rname = ndctl_region_get_devname(region);
  ASSIGN_OR_RETURN(
      ndctl_namespace * ns,
      LabelSeed(region, GenerationUuid(id, gen), std::string(id), ns_bytes));
  const std::string nsname = ndctl_namespace_get_devname(ns);
  auto undo = [&](absl::Status st) { return Undo(ns, std::move(st)); };
  int rc = 0;
  // The child device's UUID: derived too, so retries are deterministic.
  std::array<uint8_t, 16> cu = GenerationDeviceUuid(id, gen);
  if (mode == VolumeMode::kFsdax) {
    ndctl_namespace_set_enforce_mode(ns, NDCTL_NS_MODE_FSDAX);
    ndctl_pfn* pfn = ndctl_region_get_pfn_seed(region);
    if (pfn == nullptr)
      return undo(absl::FailedPreconditionError(
          absl::StrCat(rname, ": the kernel offers no fsdax (pfn) device")));
    if ((rc = ndctl_pfn_set_uuid(pfn, cu.data())) < 0 ||
        (rc = ndctl_pfn_set_location(pfn, NDCTL_PFN_LOC_PMEM)) < 0 ||
        (ndctl_pfn_has_align(pfn) &&
         (rc = ndctl_pfn_set_align(pfn, pfn_align)) < 0) ||
        (rc = ndctl_pfn_set_namespace(pfn, ns)) < 0)
      return undo(NdErr("configuring the fsdax device", nsname, rc));
    rc = ndctl_pfn_enable(pfn);
    if (rc < 0) {
      ndctl_pfn_set_namespace(pfn, nullptr);
      return undo(NdErr("ndctl_pfn_enable", nsname, rc));
    }
  } else {
    ndctl_namespace_set_enforce_mode(ns, NDCTL_NS_MODE_DEVDAX);
    ndctl_dax* dax = ndctl_region_get_dax_seed(region);
    if (dax == nullptr)
      return undo(absl::FailedPreconditionError(
          absl::StrCat(rname, ": the kernel offers no devdax device")));
    if ((rc = ndctl_dax_set_uuid(dax, cu.data())) < 0 ||
        (rc = ndctl_dax_set_location(dax, NDCTL_PFN_LOC_PMEM)) < 0 ||
        (rc = ndctl_dax_set_align(dax, pfn_align)) < 0 ||
        (rc = ndctl_dax_set_namespace(dax, ns)) < 0)
      return undo(NdErr("configuring the devdax device", nsname, rc));
    rc = ndctl_dax_enable(dax);
    if (rc < 0) {
      ndctl_dax_set_namespace(dax, nullptr);
      return undo(NdErr("ndctl_dax_enable", nsname, rc));
    }
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------- copies
// The raw block device of a namespace in raw mode (a snapshot's), enabled.
absl::StatusOr<std::string> EnabledRawDevice(ndctl_namespace* ns) {
  if (!ndctl_namespace_is_enabled(ns)) {
    int rc = ndctl_namespace_enable(ns);
    if (rc < 0)
      return NdErr("ndctl_namespace_enable(raw)",
                   ndctl_namespace_get_devname(ns), rc);
  }
  ASSIGN_OR_RETURN(std::string dev, RawDevice(ns));
  RETURN_IF_ERROR(WaitForNode(dev));
  return dev;
}

// A volume's device, enabled (Attach's work, under the caller's lock).
absl::StatusOr<AttachedDevice> EnabledDevice(ndctl_namespace* ns,
                                             absl::string_view id) {
  if (!DeviceEnabled(ns)) {
    int rc = ndctl_namespace_enable(ns);
    if (rc < 0)
      return NdErr("ndctl_namespace_enable", ndctl_namespace_get_devname(ns),
                   rc);
  }
  std::string path = DevicePath(ns);
  if (path.empty())
    return absl::InternalError(absl::StrCat("volume ", id, " has no device"));
  RETURN_IF_ERROR(WaitForNode(path));
  return AttachedDevice{path,
                        ndctl_namespace_get_mode(ns) == NDCTL_NS_MODE_FSDAX};
}

// Our snapshot namespace for `id` (complete or not), or null.
ndctl_namespace* FindSnapshot(ndctl_ctx* ctx, const NdctlBackendOptions& o,
                              absl::string_view id) {
  absl::StatusOr<std::string> name = SnapshotNamespaceName(id);
  if (!name.ok()) return nullptr;
  const std::array<uint8_t, 16> uu = SnapshotNamespaceUuid(id);
  ndctl_namespace* found = nullptr;
  ForEachRegion(ctx, o, [&](ndctl_region* r) {
    ndctl_namespace* ns;
    ndctl_namespace_foreach(r, ns) {
      if (found == nullptr && NamedAs(ns, *name) && UuidIs(ns, uu)) found = ns;
    }
  });
  return found;
}

struct AlignedBuffer {
  explicit AlignedBuffer(size_t n) {
    void* raw = nullptr;
    if (::posix_memalign(&raw, 4096, n) == 0) p = static_cast<char*>(raw);
  }
  ~AlignedBuffer() { std::free(p); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  char* p = nullptr;
};

// `data` written at `offset` of a block device, O_DIRECT (offset and size
// multiples of 512), then fsync: on pmem, on the media when it returns.
absl::Status WriteDirect(const std::string& path, uint64_t offset,
                         absl::string_view data) {
  ASSIGN_OR_RETURN(sys::UniqueFd fd,
                   sys::OpenFd(path, O_RDWR | O_CLOEXEC | O_DIRECT));
  AlignedBuffer buf(data.size());
  if (buf.p == nullptr) return absl::ResourceExhaustedError("no memory");
  std::memcpy(buf.p, data.data(), data.size());
  if (::pwrite(fd.get(), buf.p, data.size(), static_cast<off_t>(offset)) !=
      static_cast<ssize_t>(data.size()))
    return base::ErrnoStatus("pwrite", path, errno ? errno : EIO);
  if (::fsync(fd.get()) != 0) return base::ErrnoStatus("fsync", path, errno);
  return absl::OkStatus();
}

absl::StatusOr<SnapshotHeader> ReadSnapshotHeader(const std::string& dev) {
  ASSIGN_OR_RETURN(sys::UniqueFd fd,
                   sys::OpenFd(dev, O_RDONLY | O_CLOEXEC | O_DIRECT));
  AlignedBuffer buf(kSnapshotHeaderBytes);
  if (buf.p == nullptr) return absl::ResourceExhaustedError("no memory");
  if (::pread(fd.get(), buf.p, kSnapshotHeaderBytes, 0) !=
      static_cast<ssize_t>(kSnapshotHeaderBytes))
    return base::ErrnoStatus("pread", dev, errno ? errno : EIO);
  return DecodeSnapshotHeader(absl::string_view(buf.p, kSnapshotHeaderBytes));
}

// One side of a copy: `len` bytes from `offset` of a block device (O_DIRECT)
// or of a device-dax character device (through mappings: it does not
// read(2); offsets and sizes are multiples of its 2 MiB alignment).
class DeviceSpan {
 public:
  static absl::StatusOr<DeviceSpan> Open(const AttachedDevice& dev, bool write,
                                         uint64_t offset) {
    int flags = O_CLOEXEC | (write ? O_RDWR : O_RDONLY);
    // A target is never mounted: O_EXCL keeps anyone else from it.
    if (dev.block) flags |= O_DIRECT | (write ? O_EXCL : 0);
    ASSIGN_OR_RETURN(sys::UniqueFd fd, sys::OpenFd(dev.path, flags));
    return DeviceSpan(dev, std::move(fd), offset);
  }

  absl::Status Read(uint64_t pos, char* buf, size_t n) {
    if (block_) return Io(false, pos, buf, n);
    void* m = ::mmap(nullptr, n, PROT_READ, MAP_SHARED, fd_.get(),
                     static_cast<off_t>(offset_ + pos));
    if (m == MAP_FAILED) return base::ErrnoStatus("mmap", path_, errno);
    std::memcpy(buf, m, n);
    ::munmap(m, n);
    return absl::OkStatus();
  }

  // Device DAX: non-temporal stores (they bypass the cache, so nothing is
  // left to flush) and a fence before the mapping goes.
  absl::Status Write(uint64_t pos, const char* buf, size_t n) {
    if (block_) return Io(true, pos, const_cast<char*>(buf), n);
    void* m = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_SHARED, fd_.get(),
                     static_cast<off_t>(offset_ + pos));
    if (m == MAP_FAILED) return base::ErrnoStatus("mmap", path_, errno);
    auto* d = static_cast<__m128i*>(m);
    const auto* s = reinterpret_cast<const __m128i*>(buf);
    for (size_t i = 0; i < n / 16; ++i)
      _mm_stream_si128(d + i, _mm_load_si128(s + i));
    _mm_sfence();
    ::munmap(m, n);
    return absl::OkStatus();
  }

  absl::Status Sync() {
    if (block_ && ::fsync(fd_.get()) != 0)
      return base::ErrnoStatus("fsync", path_, errno);
    return absl::OkStatus();
  }

 private:
  DeviceSpan(const AttachedDevice& dev, sys::UniqueFd fd, uint64_t offset)
      : path_(dev.path),
        block_(dev.block),
        fd_(std::move(fd)),
        offset_(offset) {}

  absl::Status Io(bool write, uint64_t pos, char* buf, size_t n) {
    for (size_t done = 0; done < n;) {
      const off_t at = static_cast<off_t>(offset_ + pos + done);
      ssize_t r = write ? ::pwrite(fd_.get(), buf + done, n - done, at)
                        : ::pread(fd_.get(), buf + done, n - done, at);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0)
        return base::ErrnoStatus(write ? "pwrite" : "pread", path_,
                                 r < 0 ? errno : EIO);
      done += static_cast<size_t>(r);
    }
    return absl::OkStatus();
  }

  std::string path_;
  bool block_;
  sys::UniqueFd fd_;
  uint64_t offset_;
};

// Copies `bytes` (a multiple of 2 MiB: usable sizes are) from `from` at
// `from_offset` to `to` at `to_offset`, durable when it returns.
absl::Status CopyDevice(const AttachedDevice& from, uint64_t from_offset,
                        const AttachedDevice& to, uint64_t to_offset,
                        uint64_t bytes, uint64_t bytes_per_second) {
  const absl::Time t0 = absl::Now();
  constexpr size_t kChunk = 8 * kMiB;
  ASSIGN_OR_RETURN(DeviceSpan src, DeviceSpan::Open(from, false, from_offset));
  ASSIGN_OR_RETURN(DeviceSpan dst, DeviceSpan::Open(to, true, to_offset));
  AlignedBuffer buf(kChunk);
  if (buf.p == nullptr)
    return absl::ResourceExhaustedError("no memory for the copy buffer");
  for (uint64_t pos = 0; pos < bytes;) {
    const size_t n =
        static_cast<size_t>(std::min<uint64_t>(kChunk, bytes - pos));
    RETURN_IF_ERROR(src.Read(pos, buf.p, n));
    RETURN_IF_ERROR(dst.Write(pos, buf.p, n));
    pos += n;
    if (bytes_per_second > 0) {
      absl::SleepFor(t0 +
                     absl::Seconds(static_cast<double>(pos) /
                                   static_cast<double>(bytes_per_second)) -
                     absl::Now());
    }
  }
  return dst.Sync();
}

// Whether the two devices hold the same first `bytes` (a grow's copy is
// checked before the old namespace goes).
absl::Status CompareDevices(const AttachedDevice& a, const AttachedDevice& b,
                            uint64_t bytes) {
  constexpr size_t kChunk = 8 * kMiB;
  ASSIGN_OR_RETURN(DeviceSpan x, DeviceSpan::Open(a, false, 0));
  ASSIGN_OR_RETURN(DeviceSpan y, DeviceSpan::Open(b, false, 0));
  AlignedBuffer p(kChunk), q(kChunk);
  if (p.p == nullptr || q.p == nullptr)
    return absl::ResourceExhaustedError("no memory for the compare buffers");
  for (uint64_t pos = 0; pos < bytes;) {
    const size_t n =
        static_cast<size_t>(std::min<uint64_t>(kChunk, bytes - pos));
    RETURN_IF_ERROR(x.Read(pos, p.p, n));
    RETURN_IF_ERROR(y.Read(pos, q.p, n));
    if (std::memcmp(p.p, q.p, n) != 0)
      return absl::DataLossError(absl::StrCat(b.path, " differs from ", a.path,
                                              " in the 8 MiB at ", pos));
    pos += n;
  }
  return absl::OkStatus();
}

// Whether a volume's device is mounted (the kernel refuses an exclusive
// open of a mounted block device), open or mapped.
bool DeviceBusy(const AttachedDevice& dev) {
  if (DeviceInUse(dev.path)) return true;
  if (!dev.block) return false;
  int fd = ::open(dev.path.c_str(), O_RDONLY | O_EXCL | O_CLOEXEC);
  if (fd < 0) return errno == EBUSY;
  ::close(fd);
  return false;
}

absl::Status ValidateId(absl::string_view id) {
  // The label's name field holds 63 characters plus a NUL.
  if (id.empty() || id.size() > 63)
    return absl::InvalidArgumentError(
        absl::StrCat("volume ID must be 1-63 characters: \"", id, "\""));
  return absl::OkStatus();
}

}  // namespace

NdctlBackend::NdctlBackend(NdctlBackendOptions options)
    : options_(std::move(options)) {}

absl::StatusOr<std::vector<RegionSpace>> NdctlBackend::Regions() {
  absl::MutexLock l(&mu_);
  ASSIGN_OR_RETURN(Ctx ctx, OpenCtx());
  std::vector<RegionSpace> out;
  ForEachRegion(ctx.get(), options_, [&](ndctl_region* r) {
    out.push_back(SpaceOf(r, options_.pfn_align));
  });
  return out;
}

absl::Status NdctlBackend::Ready() {
  ASSIGN_OR_RETURN(std::vector<RegionSpace> regions, Regions());
  if (regions.empty())
    return absl::FailedPreconditionError(
        "no labelled, enabled, writable pmem region (label-less NVDIMMs need "
        "`ndctl init-labels` once)");
  return absl::OkStatus();
}

absl::StatusOr<Volume> NdctlBackend::Create(const VolumeSpec& spec) {
  RETURN_IF_ERROR(ValidateId(spec.id));
  if (spec.capacity_bytes == 0)
    return absl::InvalidArgumentError("capacity must be > 0");
  absl::MutexLock l(&mu_);
  ASSIGN_OR_RETURN(Ctx ctx, OpenCtx());
  bool foreign = false;
  Found f = FindOwned(ctx.get(), options_, spec.id, &foreign);
  if (f.ns != nullptr && !IsOurMode(ndctl_namespace_get_mode(f.ns))) {
    // Ours but without its fsdax/devdax device: a Create interrupted by a
    // crash between the label and the device. Free it and start over.
    base::LogWarn("ndctl.create.repair",
                  {{"volume", spec.id},
                   {"namespace", ndctl_namespace_get_devname(f.ns)}});
    ndctl_namespace_disable_safe(f.ns);
    RETURN_IF_ERROR(EraseAndDelete(f.ns, false));
    f = Found{};
  }
  if (f.ns != nullptr) {
    Volume v = VolumeOf(spec.id, f.ns, options_.pfn_align);
    if (v.mode == spec.mode && v.capacity_bytes >= spec.capacity_bytes &&
        (spec.limit_bytes == 0 || v.capacity_bytes <= spec.limit_bytes))
      return v;
    return absl::AlreadyExistsError(
        absl::StrCat("volume ", spec.id, " exists with another mode or size (",
                     v.capacity_bytes, " bytes)"));
  }
  if (foreign)
    return absl::AlreadyExistsError(absl::StrCat(
        "a namespace named ", spec.id,
        " exists that daxlease did not create; refusing to touch it"));
  std::vector<RegionSpace> spaces;
  std::vector<ndctl_region*> handles;
  ForEachRegion(ctx.get(), options_, [&](ndctl_region* r) {
    spaces.push_back(SpaceOf(r, options_.pfn_align));
    handles.push_back(r);
  });
  ASSIGN_OR_RETURN(Placement p,
                   ChooseRegion(spaces, spec.capacity_bytes, spec.limit_bytes,
                                options_.pfn_align));
  ndctl_region* region = nullptr;
  for (size_t i = 0; i < spaces.size(); ++i)
    if (spaces[i].name == p.region) region = handles[i];
  const absl::Time t0 = absl::Now();
  RETURN_IF_ERROR(CreateNamespace(region, spec.id, spec.mode, p.namespace_bytes,
                                  options_.pfn_align));
  // Read back through a fresh context: the device's real usable size.
  ASSIGN_OR_RETURN(Ctx ctx2, OpenCtx());
  Found made = FindOwned(ctx2.get(), options_, spec.id);
  if (made.ns == nullptr)
    return absl::InternalError(
        absl::StrCat("namespace for ", spec.id, " vanished after creation"));
  Volume v = VolumeOf(spec.id, made.ns, options_.pfn_align);
  base::LogInfo(
      "ndctl.create",
      {{"volume", spec.id},
       {"region", p.region},
       {"mode", spec.mode == VolumeMode::kFsdax ? "fsdax" : "devdax"},
       {"namespace", ndctl_namespace_get_devname(made.ns)},
       {"namespace_bytes", std::to_string(p.namespace_bytes)},
       {"usable_bytes", std::to_string(v.capacity_bytes)},
       {"device", DevicePath(made.ns)},
       {"ms", std::to_string(absl::ToInt64Milliseconds(absl::Now() - t0))}});
  if (!options_.erase_on_delete && v.capacity_bytes >= spec.capacity_bytes) {
    // The space may hold a deleted volume's data that was not erased.
    absl::Status zeroed = ZeroHeadAndTail(
        DevicePath(made.ns), spec.mode == VolumeMode::kFsdax, v.capacity_bytes);
    if (!zeroed.ok()) {
      ndctl_namespace_disable_safe(made.ns);
      (void)EraseAndDelete(made.ns, false);
      return base::Annotate(zeroed, "zeroing the head of the new volume");
    }
  }
  if (v.capacity_bytes < spec.capacity_bytes) {
    // The size model disagrees with the kernel: never hand out less.
    ndctl_namespace_disable_safe(made.ns);
    (void)EraseAndDelete(made.ns, false);
    return absl::InternalError(absl::StrCat(
        "namespace for ", spec.id, " gives ", v.capacity_bytes,
        " usable bytes, fewer than the ", spec.capacity_bytes, " requested"));
  }
  return v;
}

absl::StatusOr<Volume> NdctlBackend::Get(absl::string_view id) {
  absl::MutexLock l(&mu_);
  ASSIGN_OR_RETURN(Ctx ctx, OpenCtx());
  Found f = FindOwned(ctx.get(), options_, id);
  if (f.ns == nullptr)
    return absl::NotFoundError(absl::StrCat("no ndctl volume ", id));
  return VolumeOf(id, f.ns, options_.pfn_align);
}

absl::StatusOr<std::vector<Volume>> NdctlBackend::List() {
  absl::MutexLock l(&mu_);
  ASSIGN_OR_RETURN(Ctx ctx, OpenCtx());
  std::vector<Volume> out;
  ForEachRegion(ctx.get(), options_, [&](ndctl_region* r) {
    ndctl_namespace* ns;
    ndctl_namespace_foreach(r, ns) {
      if (!IsOurMode(ndctl_namespace_get_mode(ns))) continue;
      std::string id = OwnerId(ns);
      if (!id.empty() && FindOwned(ctx.get(), options_, id).ns == ns)
        out.push_back(VolumeOf(id, ns, options_.pfn_align));
    }
  });
  std::sort(out.begin(), out.end(),
            [](const Volume& a, const Volume& b) { return a.id < b.id; });
  return out;
}

absl::Status NdctlBackend::Delete(absl::string_view id) {
  RETURN_IF_ERROR(SettleGrow(id));
  return DeleteFound("volume", id, [&](ndctl_ctx* ctx) {
    return FindOwned(ctx, options_, id).ns;
  });
}

template <typename Find>
absl::Status NdctlBackend::DeleteFound(absl::string_view kind,
                                       absl::string_view id, Find find) {
  std::string dev, raw;
  uint64_t size = 0;
  const absl::Time t0 = absl::Now();
  {
    absl::MutexLock l(&mu_);
    ASSIGN_OR_RETURN(Ctx ctx, OpenCtx());
    ndctl_namespace* ns = find(ctx.get());
    if (ns == nullptr) return absl::OkStatus();
    dev = ndctl_namespace_get_devname(ns);
    const std::string device = DevicePath(ns);
    if (!device.empty() && DeviceInUse(device))
      return absl::FailedPreconditionError(absl::StrCat(
          kind, " ", id, " is in use (", device, " is open or mapped)"));
    int rc = ndctl_namespace_disable_safe(ns);
    if (rc < 0) {
      if (rc == -EBUSY)
        return absl::FailedPreconditionError(absl::StrCat(
            kind, " ", id, " is in use (", device, " mounted or open)"));
      return NdErr("ndctl_namespace_disable_safe", dev, rc);
    }
    if (!options_.erase_on_delete) {
      // Only the info block: short, done under the lock.
      RETURN_IF_ERROR(EraseAndDelete(ns, false));
      base::LogInfo("ndctl.delete", {{std::string(kind), std::string(id)},
                                     {"namespace", dev},
                                     {"erased", "info-block"}});
      return absl::OkStatus();
    }
    // The whole namespace is erased without the backend's lock (seconds
    // per GiB): Probe, stats and other volumes' calls go on meanwhile. The
    // namespace keeps its space, name and UUID until it is deleted below,
    // so no Create can take the space, and in raw mode List skips it; the
    // service's per-volume lock keeps other calls for `id` away. A crash
    // mid-erase leaves a raw namespace of ours, which the retried Delete
    // (or a Create of the same ID) erases and frees.
    ndctl_namespace_set_enforce_mode(ns, NDCTL_NS_MODE_RAW);
    size = ndctl_namespace_get_size(ns);
    ndctl_namespace_set_raw_mode(ns, 1);
    rc = ndctl_namespace_enable(ns);
    if (rc < 0) {
      ndctl_namespace_set_raw_mode(ns, 0);
      return NdErr("ndctl_namespace_enable(raw)", dev, rc);
    }
    ASSIGN_OR_RETURN(raw, RawDevice(ns));
  }
  absl::Status erased = ZeroPath(raw, size);
  absl::MutexLock l(&mu_);
  ASSIGN_OR_RETURN(Ctx ctx, OpenCtx());
  ndctl_namespace* ns = find(ctx.get());
  if (ns == nullptr)
    return absl::InternalError(absl::StrCat("namespace of ", kind, " ", id,
                                            " vanished during its erase"));
  ndctl_namespace_set_raw_mode(ns, 0);
  ndctl_namespace_disable_invalidate(ns);
  if (!erased.ok()) return base::Annotate(erased, "erasing the namespace");
  int rc = ndctl_namespace_delete(ns);
  if (rc < 0) return NdErr("ndctl_namespace_delete", dev, rc);
  base::LogInfo(
      "ndctl.delete",
      {{std::string(kind), std::string(id)},
       {"namespace", dev},
       {"erased", "all"},
       {"ms", std::to_string(absl::ToInt64Milliseconds(absl::Now() - t0))}});
  return absl::OkStatus();
}

absl::StatusOr<std::string> NdctlBackend::FormatPath(absl::string_view id) {
  ASSIGN_OR_RETURN(AttachedDevice dev, Attach(id));
  return dev.block ? dev.path : std::string();
}

absl::StatusOr<Volume> NdctlBackend::Expand(absl::string_view id,
                                            uint64_t new_capacity_bytes,
                                            uint64_t limit_bytes) {
  // What a crash left of an earlier grow first: the retry then starts from
  // one namespace.
  RETURN_IF_ERROR(SettleGrow(id));
  sys::Env* env = sys::DefaultEnv();
  const std::string marker = GrowMarkerPath(options_, id);
  const std::string& dir = options_.grow_marker_dir;
  const absl::Time t0 = absl::Now();
  Volume v;
  AttachedDevice from, to;
  Placement p;
  int next = 0;
  absl::Status unusable;
  {
    absl::MutexLock l(&mu_);
    ASSIGN_OR_RETURN(Ctx ctx, OpenCtx());
    Found f = FindOwned(ctx.get(), options_, id);
    if (f.ns == nullptr)
      return absl::NotFoundError(absl::StrCat("no ndctl volume ", id));
    v = VolumeOf(id, f.ns, options_.pfn_align);
    if (new_capacity_bytes <= v.capacity_bytes) return v;
    if (!SupportsExpansion())
      return absl::FailedPreconditionError(absl::StrCat(
          "ndctl volumes cannot grow in place (a map=dev namespace keeps its "
          "memmap at its start, sized for the old size, and needs contiguous "
          "space); growing ",
          id,
          " needs a new namespace and a copy, which needs a marker "
          "directory (the plugin's state directory)"));
    ASSIGN_OR_RETURN(from, EnabledDevice(f.ns, id));
    if (DeviceBusy(from))
      return absl::FailedPreconditionError(absl::StrCat(
          "volume ", id, " is in use (", from.path,
          " is mounted, open or mapped): an ndctl volume grows by a copy to "
          "a new namespace, offline; unstage it first"));
    next = 1 - GenerationOf(f.ns, id);
    std::vector<RegionSpace> spaces;
    std::vector<ndctl_region*> handles;
    ForEachRegion(ctx.get(), options_, [&](ndctl_region* r) {
      spaces.push_back(SpaceOf(r, options_.pfn_align));
      handles.push_back(r);
    });
    ASSIGN_OR_RETURN(p, ChooseRegion(spaces, new_capacity_bytes, limit_bytes,
                                     options_.pfn_align));
    ndctl_region* region = nullptr;
    for (size_t i = 0; i < spaces.size(); ++i)
      if (spaces[i].name == p.region) region = handles[i];
    // The marker is durable before the new namespace exists: whatever a
    // crash leaves, SettleGrow knows which namespace serves.
    RETURN_IF_ERROR(env->MakeDirs(dir, 0700));
    RETURN_IF_ERROR(env->WriteFileSynced(
        marker, EncodeGrowMarker(GrowMarker{false, next})));
    RETURN_IF_ERROR(env->Sync(dir));
    base::CrashPoint("ndctl.grow.marked");
    absl::Status made = CreateNamespace(region, id, v.mode, p.namespace_bytes,
                                        options_.pfn_align, next);
    if (!made.ok()) {
      (void)env->RemoveFile(marker);
      return base::Annotate(made, "creating the grown namespace");
    }
    base::CrashPoint("ndctl.grow.created");
    ASSIGN_OR_RETURN(Ctx ctx2, OpenCtx());
    Found n = FindGeneration(ctx2.get(), options_, id, next);
    absl::StatusOr<AttachedDevice> dev =
        n.ns != nullptr ? EnabledDevice(n.ns, id)
                        : absl::InternalError("the grown namespace vanished");
    if (dev.ok() && !options_.erase_on_delete) {
      // Space freed without an erase may hold an old tenant's bytes: the
      // copy covers the head, the tail is the new part.
      absl::Status zeroed = ZeroHeadAndTail(
          dev->path, dev->block,
          VolumeOf(id, n.ns, options_.pfn_align).capacity_bytes);
      if (!zeroed.ok()) dev = zeroed;
    }
    if (dev.ok()) to = *dev;
    unusable = dev.status();
  }
  if (!unusable.ok()) {
    (void)SettleGrow(id);  // drops the new namespace: the old one serves
    return base::Annotate(unusable, "opening the grown namespace");
  }
  // The copy runs without the backend's lock (the service's per-volume lock
  // keeps other calls for `id` away; the new namespace holds its space).
  absl::Status st = CopyDevice(from, 0, to, 0, v.capacity_bytes,
                               options_.copy_bytes_per_second);
  base::CrashPoint("ndctl.grow.copied");
  if (st.ok()) st = CompareDevices(from, to, v.capacity_bytes);
  if (!st.ok()) {
    (void)SettleGrow(id);  // drops the new namespace: the old one serves
    return base::Annotate(
        st, absl::StrCat("copying volume ", id, " into its grown namespace"));
  }
  // The switch: one rename makes the new namespace the volume's.
  const std::string tmp = absl::StrCat(marker, ".tmp");
  RETURN_IF_ERROR(
      env->WriteFileSynced(tmp, EncodeGrowMarker(GrowMarker{true, next})));
  RETURN_IF_ERROR(env->Rename(tmp, marker));
  RETURN_IF_ERROR(env->Sync(dir));
  base::CrashPoint("ndctl.grow.switched");
  RETURN_IF_ERROR(SettleGrow(id));  // frees the old namespace
  ASSIGN_OR_RETURN(Volume grown, Get(id));
  base::LogInfo(
      "ndctl.grown",
      {{"volume", std::string(id)},
       {"region", p.region},
       {"from_bytes", std::to_string(v.capacity_bytes)},
       {"usable_bytes", std::to_string(grown.capacity_bytes)},
       {"device", to.path},
       {"ms", std::to_string(absl::ToInt64Milliseconds(absl::Now() - t0))}});
  return grown;
}

absl::Status NdctlBackend::SettleGrow(absl::string_view id) {
  if (options_.grow_marker_dir.empty()) return absl::OkStatus();
  sys::Env* env = sys::DefaultEnv();
  const std::string marker = GrowMarkerPath(options_, id);
  absl::StatusOr<std::string> text = env->ReadFile(marker);
  if (absl::IsNotFound(text.status())) return absl::OkStatus();
  if (!text.ok()) return text.status();
  absl::StatusOr<GrowMarker> m = ParseGrowMarker(*text);
  if (m.ok()) {
    // Copying: the new namespace is partial. Switched: the old one is done.
    const int drop = m->switched ? 1 - m->generation : m->generation;
    RETURN_IF_ERROR(DeleteFound("volume", id, [&](ndctl_ctx* ctx) {
      return FindGeneration(ctx, options_, id, drop).ns;
    }));
    base::CrashPoint(m->switched ? "ndctl.grow.old_freed"
                                 : "ndctl.grow.partial_freed");
    base::LogInfo("ndctl.grow_settled",
                  {{"volume", std::string(id)},
                   {"serving", m->switched ? "grown" : "old"},
                   {"freed_generation", std::to_string(drop)}});
  }
  // An unreadable marker is a first write a crash tore: it was made durable
  // before any namespace, so there is none to free.
  RETURN_IF_ERROR(env->RemoveFile(marker));
  return env->Sync(options_.grow_marker_dir);
}

absl::StatusOr<Capacity> NdctlBackend::GetCapacity(VolumeMode mode) {
  ASSIGN_OR_RETURN(std::vector<RegionSpace> regions, Regions());
  // fsdax and devdax use the same map=dev layout: the same sizes.
  return CapacityOf(regions, options_.pfn_align);
}

absl::StatusOr<AttachedDevice> NdctlBackend::Attach(absl::string_view id) {
  absl::MutexLock l(&mu_);
  ASSIGN_OR_RETURN(Ctx ctx, OpenCtx());
  Found f = FindOwned(ctx.get(), options_, id);
  if (f.ns == nullptr)
    return absl::NotFoundError(absl::StrCat("no ndctl volume ", id));
  return EnabledDevice(f.ns, id);
}

absl::StatusOr<std::optional<AttachedDevice>> NdctlBackend::FindAttached(
    absl::string_view id) {
  absl::MutexLock l(&mu_);
  ASSIGN_OR_RETURN(Ctx ctx, OpenCtx());
  Found f = FindOwned(ctx.get(), options_, id);
  if (f.ns == nullptr || !DeviceEnabled(f.ns))
    return std::optional<AttachedDevice>();
  std::string path = DevicePath(f.ns);
  if (path.empty()) return std::optional<AttachedDevice>();
  return std::optional<AttachedDevice>(AttachedDevice{
      path, ndctl_namespace_get_mode(f.ns) == NDCTL_NS_MODE_FSDAX});
}

absl::Status NdctlBackend::Detach(absl::string_view id) {
  // The device stays (see the header): nothing to release.
  return absl::OkStatus();
}

absl::Status NdctlBackend::RefreshDevice(absl::string_view id) {
  return absl::OkStatus();
}

// ---------------------------------------------------------------- snapshots

std::string NdctlBackend::MarkerPath(absl::string_view volume_id) const {
  return absl::StrCat(options_.copy_marker_dir, "/", volume_id);
}

absl::StatusOr<uint64_t> NdctlBackend::CreateSnapshot(
    absl::string_view snapshot_id, absl::string_view volume_id) {
  if (!SupportsSnapshots())
    return absl::UnimplementedError("ndctl: snapshots are not configured");
  ASSIGN_OR_RETURN(const std::string name, SnapshotNamespaceName(snapshot_id));
  RETURN_IF_ERROR(ValidateId(volume_id));
  bool partial = false;
  {
    absl::MutexLock l(&mu_);
    ASSIGN_OR_RETURN(Ctx ctx, OpenCtx());
    if (ndctl_namespace* ns = FindSnapshot(ctx.get(), options_, snapshot_id)) {
      ASSIGN_OR_RETURN(std::string dev, EnabledRawDevice(ns));
      absl::StatusOr<SnapshotHeader> h = ReadSnapshotHeader(dev);
      if (h.ok() && h->complete && h->snapshot_id == snapshot_id)
        return h->data_bytes;
      partial = true;
    }
  }
  // An earlier attempt's unfinished copy: erased and redone.
  if (partial) RETURN_IF_ERROR(DeleteSnapshot(snapshot_id));
  const absl::Time t0 = absl::Now();
  AttachedDevice source, target;
  SnapshotHeader header;
  header.snapshot_id = std::string(snapshot_id);
  std::string region_name;
  {
    absl::MutexLock l(&mu_);
    ASSIGN_OR_RETURN(Ctx ctx, OpenCtx());
    Found f = FindOwned(ctx.get(), options_, volume_id);
    if (f.ns == nullptr)
      return absl::NotFoundError(absl::StrCat("no ndctl volume ", volume_id));
    ASSIGN_OR_RETURN(source, EnabledDevice(f.ns, volume_id));
    const Volume v = VolumeOf(volume_id, f.ns, options_.pfn_align);
    header.data_bytes = v.capacity_bytes;
    header.mode = v.mode;
    std::vector<RegionSpace> spaces;
    std::vector<ndctl_region*> handles;
    ForEachRegion(ctx.get(), options_, [&](ndctl_region* r) {
      spaces.push_back(SpaceOf(r, options_.pfn_align));
      handles.push_back(r);
    });
    ASSIGN_OR_RETURN(Placement p,
                     ChooseRegionForSnapshot(spaces, header.data_bytes));
    region_name = p.region;
    ndctl_region* region = nullptr;
    for (size_t i = 0; i < spaces.size(); ++i)
      if (spaces[i].name == p.region) region = handles[i];
    ASSIGN_OR_RETURN(ndctl_namespace * ns,
                     LabelSeed(region, SnapshotNamespaceUuid(snapshot_id), name,
                               p.namespace_bytes));
    ndctl_namespace_set_enforce_mode(ns, NDCTL_NS_MODE_RAW);
    absl::StatusOr<std::string> dev = EnabledRawDevice(ns);
    if (!dev.ok()) return Undo(ns, dev.status());
    target = AttachedDevice{*dev, true};
  }
  // The copy runs without the backend's lock (as an erase does): the
  // namespace is ours by name and UUID, and the service's locks keep other
  // calls for the snapshot and the volume away. "copying" first, over
  // whatever the space held, and the 4 KiB after it zeroed.
  std::string head = EncodeSnapshotHeader(header);
  head.append(kSnapshotHeaderBytes, '\0');
  absl::Status st = WriteDirect(target.path, 0, head);
  if (st.ok())
    st = CopyDevice(source, 0, target, kSnapshotDataOffset, header.data_bytes,
                    options_.copy_bytes_per_second);
  if (st.ok()) {
    // The one word that changes is written last, alone in its sector.
    header.complete = true;
    st = WriteDirect(target.path, 0,
                     EncodeSnapshotHeader(header).substr(0, 512));
  }
  if (!st.ok()) {
    (void)DeleteSnapshot(snapshot_id);
    return base::Annotate(st, absl::StrCat("copying volume ", volume_id,
                                           " into snapshot ", snapshot_id));
  }
  base::LogInfo(
      "ndctl.snapshot",
      {{"snapshot", std::string(snapshot_id)},
       {"volume", std::string(volume_id)},
       {"region", region_name},
       {"device", target.path},
       {"bytes", std::to_string(header.data_bytes)},
       {"ms", std::to_string(absl::ToInt64Milliseconds(absl::Now() - t0))}});
  return header.data_bytes;
}

absl::Status NdctlBackend::DeleteSnapshot(absl::string_view snapshot_id) {
  // An ID that cannot name a namespace names no snapshot of ours.
  if (!SnapshotNamespaceName(snapshot_id).ok()) return absl::OkStatus();
  return DeleteFound("snapshot", snapshot_id, [&](ndctl_ctx* ctx) {
    return FindSnapshot(ctx, options_, snapshot_id);
  });
}

absl::StatusOr<uint64_t> NdctlBackend::SnapshotSize(
    absl::string_view snapshot_id) {
  absl::MutexLock l(&mu_);
  ASSIGN_OR_RETURN(Ctx ctx, OpenCtx());
  ndctl_namespace* ns = FindSnapshot(ctx.get(), options_, snapshot_id);
  if (ns == nullptr)
    return absl::NotFoundError(absl::StrCat("no ndctl snapshot ", snapshot_id));
  ASSIGN_OR_RETURN(std::string dev, EnabledRawDevice(ns));
  absl::StatusOr<SnapshotHeader> h = ReadSnapshotHeader(dev);
  if (!h.ok() || !h->complete || h->snapshot_id != snapshot_id)
    return absl::NotFoundError(
        absl::StrCat("ndctl snapshot ", snapshot_id, " is not complete"));
  return h->data_bytes;
}

absl::StatusOr<Volume> NdctlBackend::CreateFrom(const VolumeSpec& spec,
                                                const ContentSource& source) {
  if (!SupportsSnapshots())
    return absl::UnimplementedError("ndctl: clones are not configured");
  RETURN_IF_ERROR(ValidateId(spec.id));
  sys::Env* env = sys::DefaultEnv();
  const std::string marker = MarkerPath(spec.id);
  if (env->PathExists(marker)) {
    // A copy a crash interrupted: its volume is partial.
    RETURN_IF_ERROR(Delete(spec.id));
  } else {
    absl::StatusOr<Volume> have = Get(spec.id);
    if (have.ok() || !absl::IsNotFound(have.status())) return have;
  }
  AttachedDevice from;
  uint64_t from_offset = 0, bytes = 0;
  VolumeMode mode = VolumeMode::kFsdax;
  {
    absl::MutexLock l(&mu_);
    ASSIGN_OR_RETURN(Ctx ctx, OpenCtx());
    if (source.snapshot) {
      ndctl_namespace* ns = FindSnapshot(ctx.get(), options_, source.id);
      absl::StatusOr<SnapshotHeader> h =
          absl::NotFoundError(absl::StrCat("no ndctl snapshot ", source.id));
      if (ns != nullptr) {
        ASSIGN_OR_RETURN(std::string dev, EnabledRawDevice(ns));
        h = ReadSnapshotHeader(dev);
        from = AttachedDevice{dev, true};
      }
      if (!h.ok() || !h->complete || h->snapshot_id != source.id)
        return absl::NotFoundError(
            absl::StrCat("no complete ndctl snapshot ", source.id));
      from_offset = kSnapshotDataOffset;
      bytes = h->data_bytes;
      mode = h->mode;
    } else {
      Found f = FindOwned(ctx.get(), options_, source.id);
      if (f.ns == nullptr)
        return absl::NotFoundError(absl::StrCat("no ndctl volume ", source.id));
      ASSIGN_OR_RETURN(from, EnabledDevice(f.ns, source.id));
      const Volume v = VolumeOf(source.id, f.ns, options_.pfn_align);
      bytes = v.capacity_bytes;
      mode = v.mode;
    }
  }
  if (mode != spec.mode)
    return absl::InvalidArgumentError(absl::StrCat(
        "the source's mode (", mode == VolumeMode::kFsdax ? "fsdax" : "devdax",
        ") is not the one asked for volume ", spec.id));
  if (bytes > spec.capacity_bytes)
    return absl::OutOfRangeError(
        absl::StrCat("the source holds ", bytes, " bytes, more than the ",
                     spec.capacity_bytes, " asked for"));
  const absl::Time t0 = absl::Now();
  RETURN_IF_ERROR(env->MakeDirs(options_.copy_marker_dir, 0700));
  RETURN_IF_ERROR(env->WriteFileSynced(marker, source.id));
  RETURN_IF_ERROR(env->Sync(options_.copy_marker_dir));
  auto unmark = [&] {
    absl::Status st = env->RemoveFile(marker);
    return st.ok() ? env->Sync(options_.copy_marker_dir) : st;
  };
  absl::StatusOr<Volume> vol = Create(spec);
  if (!vol.ok()) {
    (void)unmark();
    return vol.status();
  }
  absl::StatusOr<AttachedDevice> to = Attach(spec.id);
  absl::Status st = to.status();
  if (st.ok())
    st = CopyDevice(from, from_offset, *to, 0, bytes,
                    options_.copy_bytes_per_second);
  if (!st.ok()) {
    // Freed now if it can be; else the marker stays and the retry or the
    // next start frees it.
    if (Delete(spec.id).ok()) (void)unmark();
    return base::Annotate(st, absl::StrCat("copying into volume ", spec.id));
  }
  RETURN_IF_ERROR(unmark());
  base::LogInfo(
      "ndctl.created_from",
      {{"volume", spec.id},
       {source.snapshot ? "snapshot" : "source_volume", source.id},
       {"bytes", std::to_string(bytes)},
       {"ms", std::to_string(absl::ToInt64Milliseconds(absl::Now() - t0))}});
  return vol;
}

absl::Status NdctlBackend::DropPartialCopies() {
  sys::Env* grow_env = sys::DefaultEnv();
  if (!options_.grow_marker_dir.empty() &&
      grow_env->PathExists(options_.grow_marker_dir)) {
    ASSIGN_OR_RETURN(std::vector<std::string> growing,
                     grow_env->ListDir(options_.grow_marker_dir));
    for (const std::string& id : growing) {
      if (absl::EndsWith(id, ".tmp")) {
        RETURN_IF_ERROR(grow_env->RemoveFile(
            absl::StrCat(options_.grow_marker_dir, "/", id)));
        continue;
      }
      if (ValidateId(id).ok()) RETURN_IF_ERROR(SettleGrow(id));
    }
  }
  if (!SupportsSnapshots()) return absl::OkStatus();
  std::vector<std::string> partial;
  {
    absl::MutexLock l(&mu_);
    ASSIGN_OR_RETURN(Ctx ctx, OpenCtx());
    std::vector<std::string> ids;
    ForEachRegion(ctx.get(), options_, [&](ndctl_region* r) {
      ndctl_namespace* ns;
      ndctl_namespace_foreach(r, ns) {
        const char* name = ndctl_namespace_get_alt_name(ns);
        if (ndctl_namespace_get_size(ns) == 0 || name == nullptr ||
            !absl::StartsWith(name, "s:"))
          continue;
        const std::string id = name + 2;
        if (FindSnapshot(ctx.get(), options_, id) == ns) ids.push_back(id);
      }
    });
    for (const std::string& id : ids) {
      ndctl_namespace* ns = FindSnapshot(ctx.get(), options_, id);
      absl::StatusOr<std::string> dev = EnabledRawDevice(ns);
      absl::StatusOr<SnapshotHeader> h =
          dev.ok() ? ReadSnapshotHeader(*dev) : dev.status();
      if (!h.ok() || !h->complete || h->snapshot_id != id)
        partial.push_back(id);
    }
  }
  for (const std::string& id : partial) {
    base::LogInfo("ndctl.partial_snapshot_removed", {{"snapshot", id}});
    RETURN_IF_ERROR(DeleteSnapshot(id));
  }
  sys::Env* env = sys::DefaultEnv();
  if (!env->PathExists(options_.copy_marker_dir)) return absl::OkStatus();
  ASSIGN_OR_RETURN(std::vector<std::string> marked,
                   env->ListDir(options_.copy_marker_dir));
  for (const std::string& id : marked) {
    if (!ValidateId(id).ok()) continue;
    base::LogInfo("ndctl.partial_copy_removed", {{"volume", id}});
    RETURN_IF_ERROR(Delete(id));
    RETURN_IF_ERROR(env->RemoveFile(MarkerPath(id)));
  }
  if (!marked.empty()) RETURN_IF_ERROR(env->Sync(options_.copy_marker_dir));
  return absl::OkStatus();
}

}  // namespace daxlease::csi
