// daxlease-lab-daxcheck: the workload check of the lab. Creates (or reuses)
// a file, maps it with MAP_SHARED_VALIDATE|MAP_SYNC, writes and reads back a
// pattern through the mapping, and checks that statx reports STATX_ATTR_DAX.
// Both must hold for a volume that is really DAX; on a non-DAX mount MAP_SYNC
// is refused (EOPNOTSUPP) and the check fails, which is what the file-backend
// run of the lab asserts.
//
// usage: daxlease-lab-daxcheck FILE [BYTES]   (default 4 MiB)
// exit:  0 = MAP_SYNC mapping works and the DAX attribute is set; 1 = not DAX;
//        2 = usage or I/O error.
//
// For the snapshot checks (devdax has no read(2) for sha256sum), through a
// shared mapping of a file or a device:
//   daxlease-lab-daxcheck --fill PATH BYTES SEED   writes a pattern of SEED
//   daxlease-lab-daxcheck --digest PATH BYTES      prints the FNV-1a 64 of
//                                                  the first BYTES
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#ifndef MAP_SHARED_VALIDATE
#define MAP_SHARED_VALIDATE 0x03
#endif
#ifndef MAP_SYNC
#define MAP_SYNC 0x80000
#endif
#ifndef STATX_ATTR_DAX
#define STATX_ATTR_DAX 0x00200000
#endif

namespace {

// --fill / --digest: 0 on success, 2 on an error.
int FillOrDigest(bool fill, const char* path, size_t len, unsigned seed) {
  int fd = ::open(path, fill ? O_RDWR : O_RDONLY);
  if (fd < 0) {
    std::printf("open %s: %s\n", path, std::strerror(errno));
    return 2;
  }
  void* p = ::mmap(nullptr, len, fill ? PROT_READ | PROT_WRITE : PROT_READ,
                   MAP_SHARED, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) {
    std::printf("mmap %s: %s\n", path, std::strerror(errno));
    return 2;
  }
  auto* b = static_cast<uint8_t*>(p);
  if (fill) {
    for (size_t i = 0; i < len; ++i)
      b[i] = static_cast<uint8_t>((i >> 12) * 131 + i * 31 + seed);
    ::msync(p, len, MS_SYNC);  // a file; device DAX answers EINVAL
  }
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < len; ++i) {
    h ^= b[i];
    h *= 0x100000001b3ULL;
  }
  std::printf("%016llx\n", static_cast<unsigned long long>(h));
  ::munmap(p, len);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 5 && std::strcmp(argv[1], "--fill") == 0)
    return FillOrDigest(
        true, argv[2], std::strtoull(argv[3], nullptr, 0),
        static_cast<unsigned>(std::strtoul(argv[4], nullptr, 0)));
  if (argc == 4 && std::strcmp(argv[1], "--digest") == 0)
    return FillOrDigest(false, argv[2], std::strtoull(argv[3], nullptr, 0), 0);
  if (argc < 2 || argc > 3) {
    std::fprintf(stderr, "usage: %s FILE [BYTES]\n", argv[0]);
    return 2;
  }
  const char* path = argv[1];
  const size_t len = argc == 3 ? std::strtoull(argv[2], nullptr, 0) : 4u << 20;
  int fd = ::open(path, O_RDWR | O_CREAT, 0644);
  if (fd < 0) {
    std::printf("open %s: %s\n", path, std::strerror(errno));
    return 2;
  }
  struct stat sb;
  ::fstat(fd, &sb);
  const bool chardev = S_ISCHR(sb.st_mode);
  const int frc =
      chardev ? 0 : ::posix_fallocate(fd, 0, static_cast<off_t>(len));
  if (frc != 0) {
    std::printf("posix_fallocate %s: %s\n", path, std::strerror(frc));
    return 2;
  }
  bool ok = true;
  void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE,
                   MAP_SHARED_VALIDATE | MAP_SYNC, fd, 0);
  if (p == MAP_FAILED) {
    std::printf("map_sync: FAIL mmap(MAP_SHARED_VALIDATE|MAP_SYNC): %s\n",
                std::strerror(errno));
    ok = false;
  } else {
    auto* b = static_cast<uint8_t*>(p);
    for (size_t i = 0; i < len; ++i) b[i] = static_cast<uint8_t>(i * 31 + 7);
    size_t bad = 0;
    for (size_t i = 0; i < len; ++i)
      bad += b[i] != static_cast<uint8_t>(i * 31 + 7);
    std::printf("map_sync: %s (%zu bytes written and read back, %zu wrong)\n",
                bad == 0 ? "OK" : "FAIL", len, bad);
    ok = ok && bad == 0;
    ::munmap(p, len);
  }
  if (chardev) {
    // device-dax: no filesystem attribute; the device's subsystem says it.
    char link[128], target[256] = {0};
    std::snprintf(link, sizeof link, "/sys/dev/char/%u:%u/subsystem",
                  major(sb.st_rdev), minor(sb.st_rdev));
    ssize_t n = ::readlink(link, target, sizeof target - 1);
    const bool dax = n > 0 && std::strstr(target, "/dax") != nullptr;
    std::printf("devdax: %s (%s -> %s)\n", dax ? "OK" : "FAIL", link, target);
    ::close(fd);
    ok = ok && dax;
    std::printf("daxcheck %s: %s\n", path, ok ? "DAX" : "NOT DAX");
    return ok ? 0 : 1;
  }
  struct statx stx;
  if (::statx(fd, "", AT_EMPTY_PATH, STATX_BASIC_STATS, &stx) != 0) {
    std::printf("statx: %s\n", std::strerror(errno));
    return 2;
  }
  const bool known = (stx.stx_attributes_mask & STATX_ATTR_DAX) != 0;
  const bool dax = (stx.stx_attributes & STATX_ATTR_DAX) != 0;
  std::printf("statx_dax: %s (attribute %s)\n", dax ? "OK" : "FAIL",
              known ? (dax ? "set" : "clear") : "not reported");
  ok = ok && dax;
  ::close(fd);
  std::printf("daxcheck %s: %s\n", path, ok ? "DAX" : "NOT DAX");
  return ok ? 0 : 1;
}
