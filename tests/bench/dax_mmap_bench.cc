// daxlease-dax-bench: sequential write and read bandwidth through a
// MAP_SHARED_VALIDATE|MAP_SYNC mapping of a file (on a -o dax mount). The lab
// (tests/lab/guest/bench.sh) runs it on a file of a published daxlease fsdax
// volume and on a raw namespace made by hand with ndctl, interleaved, and
// prints the ratio: the driver must add nothing to the data path.
//
// usage: daxlease-dax-bench FILE [BYTES=128MiB] [REPS=5]
// Prints one line: "file=... bytes=N write_mbps=W read_mbps=R sync=1|0"
// (best of REPS timed passes after one untimed pass that faults every page
// in). Exit 0, or 2 on an error.
#include <fcntl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#ifndef MAP_SHARED_VALIDATE
#define MAP_SHARED_VALIDATE 0x03
#endif
#ifndef MAP_SYNC
#define MAP_SYNC 0x80000
#endif

namespace {

double Now() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

constexpr size_t kChunk = 1 << 20;

void WritePass(char* dst, size_t len, const char* src) {
  for (size_t off = 0; off < len; off += kChunk)
    std::memcpy(dst + off, src, std::min(kChunk, len - off));
}

uint64_t ReadPass(const char* p, size_t len) {
  const auto* w = reinterpret_cast<const uint64_t*>(p);
  uint64_t sum = 0;
  for (size_t i = 0; i < len / 8; i += 4)
    sum += w[i] ^ w[i + 1] ^ w[i + 2] ^ w[i + 3];
  return sum;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s FILE [BYTES] [REPS]\n", argv[0]);
    return 2;
  }
  const char* path = argv[1];
  const size_t len = argc > 2 ? std::strtoull(argv[2], nullptr, 0) : 128u << 20;
  const int reps = argc > 3 ? std::atoi(argv[3]) : 5;
  int fd = open(path, O_RDWR | O_CREAT, 0644);
  if (fd < 0 || posix_fallocate(fd, 0, static_cast<off_t>(len)) != 0) {
    std::fprintf(stderr, "%s: cannot create %zu bytes: %s\n", path, len,
                 std::strerror(errno));
    return 2;
  }
  bool sync = true;
  void* m = mmap(nullptr, len, PROT_READ | PROT_WRITE,
                 MAP_SHARED_VALIDATE | MAP_SYNC, fd, 0);
  if (m == MAP_FAILED) {
    sync = false;
    m = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  }
  if (m == MAP_FAILED) {
    std::fprintf(stderr, "mmap %s: %s\n", path, std::strerror(errno));
    return 2;
  }
  char* p = static_cast<char*>(m);
  std::vector<char> src(kChunk);
  for (size_t i = 0; i < kChunk; ++i) src[i] = static_cast<char>(i * 13 + 1);
  WritePass(p, len, src.data());  // fault in every page (untimed)
  double best_w = 0, best_r = 0;
  uint64_t sink = 0;
  for (int r = 0; r < reps; ++r) {
    double t0 = Now();
    WritePass(p, len, src.data());
    double t1 = Now();
    sink += ReadPass(p, len);
    double t2 = Now();
    best_w = std::max(best_w, static_cast<double>(len) / (t1 - t0) / 1e6);
    best_r = std::max(best_r, static_cast<double>(len) / (t2 - t1) / 1e6);
  }
  munmap(m, len);
  close(fd);
  std::printf(
      "file=%s bytes=%zu write_mbps=%.1f read_mbps=%.1f sync=%d sink=%llu\n",
      path, len, best_w, best_r, sync ? 1 : 0,
      static_cast<unsigned long long>(sink & 0xff));
  return 0;
}
