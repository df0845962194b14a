// NdctlBackend against the real libndctl, run inside the lab guest (an
// emulated, labelled NVDIMM region; see tests/lab/guest/ndctl_backend.sh).
// Not registered with CTest on the host: it needs the guest's region.
#include <fcntl.h>
#include <glob.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "csi/ndctl_backend.h"
#include "gtest/gtest.h"
#include "tests/testing/prereq.h"

namespace daxlease::csi {
namespace {

constexpr uint64_t kMiB = uint64_t{1} << 20;

NdctlBackendOptions Opts() { return NdctlBackendOptions{}; }

uint64_t DeviceBytes(const std::string& path) {
  // /dev/pmemN: /sys/block/pmemN/size (512-byte units); /dev/daxX.Y: sysfs size
  std::string base = path.substr(path.rfind('/') + 1);
  std::string sys = path.find("/dev/dax") == 0
                        ? "/sys/bus/dax/devices/" + base + "/size"
                        : "/sys/block/" + base + "/size";
  FILE* f = std::fopen(sys.c_str(), "r");
  if (f == nullptr) return 0;
  unsigned long long v = 0;
  if (std::fscanf(f, "%llu", &v) != 1) v = 0;
  std::fclose(f);
  return path.find("/dev/dax") == 0 ? v : v * 512;
}

// Shell out for the things done "by hand" in the test (a foreign namespace).
int Sh(const std::string& cmd) { return std::system(cmd.c_str()); }
std::string ShOut(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return out;
  char buf[256];
  while (std::fgets(buf, sizeof buf, p) != nullptr) out += buf;
  pclose(p);
  while (!out.empty() && (out.back() == '\n' || out.back() == ' '))
    out.pop_back();
  return out;
}

// The first line of a sysfs file, "" when it cannot be read.
std::string ReadSys(const std::string& path) {
  std::string out;
  FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr) return out;
  char buf[256];
  if (std::fgets(buf, sizeof buf, f) != nullptr) out = buf;
  std::fclose(f);
  while (!out.empty() && (out.back() == '\n' || out.back() == ' '))
    out.pop_back();
  return out;
}

// The sysfs directory of the (sized) namespace named `name`, "" if none.
std::string NamespaceDir(const std::string& name) {
  glob_t g;
  std::string found;
  if (glob("/sys/bus/nd/devices/namespace*", 0, nullptr, &g) != 0) return "";
  for (size_t i = 0; i < g.gl_pathc && found.empty(); ++i) {
    std::string d = g.gl_pathv[i];
    if (ReadSys(d + "/alt_name") == name && ReadSys(d + "/size") != "0")
      found = d;
  }
  globfree(&g);
  return found;
}

// Where a volume's namespace sits: its region, physical start and size.
struct Placed {
  std::string region, resource, size;
};
Placed PlacementOf(const std::string& volume) {
  std::string d = NamespaceDir(volume);
  if (d.empty()) return {};
  char real[PATH_MAX];
  std::string region;
  if (realpath(d.c_str(), real) != nullptr) {
    std::string r = real;  // .../region0/namespace0.1
    r = r.substr(0, r.rfind('/'));
    region = r.substr(r.rfind('/') + 1);
  }
  return {region, ReadSys(d + "/resource"), ReadSys(d + "/size")};
}

// Maps `len` bytes of a devdax device at `off`.
struct Mapping {
  void* p = MAP_FAILED;
  size_t len = 0;
  Mapping(const std::string& path, off_t off, size_t n, int prot) : len(n) {
    int fd = open(path.c_str(), O_RDWR);
    if (fd < 0) return;
    p = mmap(nullptr, n, prot, MAP_SHARED, fd, off);
    close(fd);
  }
  ~Mapping() {
    if (p != MAP_FAILED) munmap(p, len);
  }
  unsigned char* bytes() const { return static_cast<unsigned char*>(p); }
};

// A recognisable, never-zero byte pattern of the previous tenant.
unsigned char Secret(size_t i) {
  static constexpr char kText[] = "tenant-A secret!";
  return static_cast<unsigned char>(kText[i % 16]);
}

class NdctlBackendLab : public ::testing::Test {
 protected:
  void SetUp() override {
    DAXLEASE_REQUIRE(access("/sys/bus/nd/devices/region0", F_OK) == 0,
                     "needs the lab guest's NVDIMM region");
  }
};

TEST_F(NdctlBackendLab, ReadyAndRegionsReported) {
  NdctlBackend b(Opts());
  ASSERT_TRUE(b.Ready().ok()) << b.Ready();
  auto r = b.Regions();
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_FALSE(r->empty());
  EXPECT_EQ((*r)[0].name, "region0");
  EXPECT_GT((*r)[0].max_extent, 0u);
  EXPECT_GE((*r)[0].align, 2 * kMiB);
}

TEST_F(NdctlBackendLab,
       FsdaxAndDevdaxUsableAtLeastRequestedAndFoundAfterRestart) {
  {
    NdctlBackend b(Opts());
    VolumeSpec fs{"lab-fs-1", 100 * kMiB, 0, VolumeMode::kFsdax, "ext4", {}};
    auto v = b.Create(fs);
    ASSERT_TRUE(v.ok()) << v.status();
    EXPECT_GE(v->capacity_bytes, 100 * kMiB);
    auto dev = b.Attach("lab-fs-1");
    ASSERT_TRUE(dev.ok()) << dev.status();
    EXPECT_TRUE(dev->block);
    EXPECT_EQ(dev->path.rfind("/dev/pmem", 0), 0u) << dev->path;
    // The size model and the kernel agree.
    EXPECT_EQ(DeviceBytes(dev->path), v->capacity_bytes);
    EXPECT_EQ(v->capacity_bytes, MapDevUsableBytes(112 * kMiB, 2 * kMiB));

    VolumeSpec dd{"lab-dd-1", 40 * kMiB, 0, VolumeMode::kDevdax, "", {}};
    auto w = b.Create(dd);
    ASSERT_TRUE(w.ok()) << w.status();
    EXPECT_GE(w->capacity_bytes, 40 * kMiB);
    auto ddev = b.Attach("lab-dd-1");
    ASSERT_TRUE(ddev.ok()) << ddev.status();
    EXPECT_FALSE(ddev->block);
    EXPECT_EQ(ddev->path.rfind("/dev/dax", 0), 0u) << ddev->path;
    EXPECT_EQ(DeviceBytes(ddev->path), w->capacity_bytes);

    // Idempotent create; conflicting create.
    auto again = b.Create(fs);
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(again->capacity_bytes, v->capacity_bytes);
    VolumeSpec other = fs;
    other.mode = VolumeMode::kDevdax;
    EXPECT_EQ(b.Create(other).status().code(),
              absl::StatusCode::kAlreadyExists);
  }
  // A new backend object (a restarted plugin) finds both from the media.
  NdctlBackend b2(Opts());
  auto list = b2.List();
  ASSERT_TRUE(list.ok()) << list.status();
  std::vector<std::string> ids;
  for (const auto& v : *list) ids.push_back(v.id);
  EXPECT_EQ(ids, (std::vector<std::string>{"lab-dd-1", "lab-fs-1"}));
  auto got = b2.Get("lab-dd-1");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->mode, VolumeMode::kDevdax);
  auto found = b2.FindAttached("lab-fs-1");
  ASSERT_TRUE(found.ok());
  ASSERT_TRUE(found->has_value());
  EXPECT_TRUE(b2.Delete("lab-fs-1").ok());
  EXPECT_TRUE(b2.Delete("lab-dd-1").ok());
  EXPECT_TRUE(b2.Delete("lab-dd-1").ok());  // idempotent
  EXPECT_EQ(b2.Get("lab-fs-1").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(NdctlBackendLab, DeleteErasesTheData) {
  NdctlBackend b(Opts());
  VolumeSpec dd{"lab-erase", 32 * kMiB, 0, VolumeMode::kDevdax, "", {}};
  auto v = b.Create(dd);
  ASSERT_TRUE(v.ok()) << v.status();
  auto dev = b.Attach("lab-erase");
  ASSERT_TRUE(dev.ok());
  {
    int fd = open(dev->path.c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    void* p =
        mmap(nullptr, 2 * kMiB, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ASSERT_NE(p, MAP_FAILED);
    std::memset(p, 0xab, 2 * kMiB);
    munmap(p, 2 * kMiB);
    close(fd);
  }
  ASSERT_TRUE(b.Delete("lab-erase").ok());
  // The same space comes back to a fresh volume: the old bytes are gone.
  auto w = b.Create(dd);
  ASSERT_TRUE(w.ok()) << w.status();
  auto dev2 = b.Attach("lab-erase");
  ASSERT_TRUE(dev2.ok());
  int fd = open(dev2->path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  void* p = mmap(nullptr, 2 * kMiB, PROT_READ, MAP_SHARED, fd, 0);
  ASSERT_NE(p, MAP_FAILED);
  size_t ab = 0;
  for (size_t i = 0; i < 2 * kMiB; ++i)
    ab += static_cast<const unsigned char*>(p)[i] == 0xab;
  munmap(p, 2 * kMiB);
  close(fd);
  EXPECT_EQ(ab, 0u);
  EXPECT_TRUE(b.Delete("lab-erase").ok());
}

TEST_F(NdctlBackendLab, InUseVolumeIsNotDeleted) {
  NdctlBackend b(Opts());
  VolumeSpec dd{"lab-busy", 32 * kMiB, 0, VolumeMode::kDevdax, "", {}};
  ASSERT_TRUE(b.Create(dd).ok());
  auto dev = b.Attach("lab-busy");
  ASSERT_TRUE(dev.ok());
  int fd = open(dev->path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  void* p = mmap(nullptr, 2 * kMiB, PROT_READ, MAP_SHARED, fd, 0);
  ASSERT_NE(p, MAP_FAILED);
  EXPECT_EQ(b.Delete("lab-busy").code(), absl::StatusCode::kFailedPrecondition);
  munmap(p, 2 * kMiB);
  close(fd);
  EXPECT_TRUE(b.Delete("lab-busy").ok());
}

TEST_F(NdctlBackendLab, InUseThroughABindMountIsNotDeleted) {
  // How a pod sees a published devdax volume: a bind mount of the node.
  NdctlBackend b(Opts());
  VolumeSpec dd{"lab-busy-bind", 32 * kMiB, 0, VolumeMode::kDevdax, "", {}};
  ASSERT_TRUE(b.Create(dd).ok());
  auto dev = b.Attach("lab-busy-bind");
  ASSERT_TRUE(dev.ok());
  const std::string bind = "/tmp/lab-bound-dax";
  ASSERT_EQ(Sh("touch " + bind + " && /usr/bin/mount --bind " + dev->path +
               " " + bind),
            0);
  int fd = open(bind.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  void* p = mmap(nullptr, 2 * kMiB, PROT_READ, MAP_SHARED, fd, 0);
  ASSERT_NE(p, MAP_FAILED);
  close(fd);  // only the mapping remains
  EXPECT_EQ(b.Delete("lab-busy-bind").code(),
            absl::StatusCode::kFailedPrecondition);
  munmap(p, 2 * kMiB);
  ASSERT_EQ(Sh("/usr/bin/umount " + bind), 0);
  EXPECT_TRUE(b.Delete("lab-busy-bind").ok());
}

TEST_F(NdctlBackendLab, ForeignNamespacesAreNeverTouched) {
  // Made by hand, with a volume-like name: not ours.
  std::string ns = ShOut(
      "ndctl create-namespace -r region0 -m devdax -s 32M -n lab-foreign | "
      "sed -n 's/^ *\"dev\":\"\\(namespace[^\"]*\\)\".*/\\1/p' | head -1");
  ASSERT_FALSE(ns.empty());
  NdctlBackend b(Opts());
  auto list = b.List();
  ASSERT_TRUE(list.ok());
  for (const auto& v : *list) EXPECT_NE(v.id, "lab-foreign");
  EXPECT_EQ(b.Get("lab-foreign").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(b.Delete("lab-foreign").ok());  // "missing" for us...
  VolumeSpec clash{"lab-foreign", 16 * kMiB, 0, VolumeMode::kDevdax, "", {}};
  EXPECT_EQ(b.Create(clash).status().code(), absl::StatusCode::kAlreadyExists);
  // ...and the namespace is still there.
  EXPECT_EQ(Sh("ndctl list -N | grep -q '\"name\":\"lab-foreign\"'"), 0);
  EXPECT_EQ(Sh("ndctl destroy-namespace -f " + ns + " >/dev/null 2>&1"), 0);
}

TEST_F(NdctlBackendLab, CapacityIsTheLargestCreatableAndExhaustionIsReported) {
  NdctlBackendOptions o = Opts();
  o.erase_on_delete = false;  // erasing 2 GiB under TCG would take a while
  NdctlBackend b(o);
  auto cap = b.GetCapacity(VolumeMode::kFsdax);
  ASSERT_TRUE(cap.ok()) << cap.status();
  ASSERT_GT(cap->max_volume_bytes, 0u);
  // One byte more than reported does not fit; exactly the report does.
  VolumeSpec big{
      "lab-big", cap->max_volume_bytes + 1, 0, VolumeMode::kDevdax, "", {}};
  EXPECT_EQ(b.Create(big).status().code(),
            absl::StatusCode::kResourceExhausted);
  big.capacity_bytes = cap->max_volume_bytes;
  auto v = b.Create(big);
  ASSERT_TRUE(v.ok()) << v.status();
  auto after = b.GetCapacity(VolumeMode::kFsdax);
  ASSERT_TRUE(after.ok());
  EXPECT_LT(after->max_volume_bytes, kMiB * 16);
  VolumeSpec more{"lab-more", 16 * kMiB, 0, VolumeMode::kFsdax, "", {}};
  EXPECT_EQ(b.Create(more).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(b.Delete("lab-big").ok());
  auto freed = b.GetCapacity(VolumeMode::kFsdax);
  ASSERT_TRUE(freed.ok());
  EXPECT_EQ(freed->max_volume_bytes, cap->max_volume_bytes);
}

TEST_F(NdctlBackendLab, NewNamespaceNeverShowsThePreviousTenantsData) {
  // Without erase-on-delete only the info block is cleared at delete; Create
  // zeros the head and the tail of the new data area (4 MiB each).
  NdctlBackendOptions o = Opts();
  o.erase_on_delete = false;
  NdctlBackend b(o);
  constexpr size_t kZeroed = 4 * kMiB;
  constexpr size_t kWritten = 8 * kMiB;  // the head and a bit further
  VolumeSpec a{"lab-tenant-a", 64 * kMiB, 0, VolumeMode::kDevdax, "", {}};
  auto v = b.Create(a);
  ASSERT_TRUE(v.ok()) << v.status();
  auto dev = b.Attach(a.id);
  ASSERT_TRUE(dev.ok()) << dev.status();
  const Placed before = PlacementOf(a.id);
  ASSERT_FALSE(before.resource.empty());
  const off_t tail = static_cast<off_t>(v->capacity_bytes - kZeroed);
  {
    Mapping head(dev->path, 0, kWritten, PROT_READ | PROT_WRITE);
    Mapping end(dev->path, tail, kZeroed, PROT_READ | PROT_WRITE);
    ASSERT_NE(head.p, MAP_FAILED);
    ASSERT_NE(end.p, MAP_FAILED);
    for (size_t i = 0; i < kWritten; ++i) head.bytes()[i] = Secret(i);
    for (size_t i = 0; i < kZeroed; ++i) end.bytes()[i] = Secret(i);
  }
  ASSERT_TRUE(b.Delete(a.id).ok());

  VolumeSpec next = a;
  next.id = "lab-tenant-b";
  auto w = b.Create(next);
  ASSERT_TRUE(w.ok()) << w.status();
  // The new tenant really got the same space (else the test proves nothing):
  // same region, same physical start, same size, hence the same data area.
  const Placed after = PlacementOf(next.id);
  ASSERT_EQ(after.region, before.region);
  ASSERT_EQ(after.resource, before.resource);
  ASSERT_EQ(after.size, before.size);
  ASSERT_EQ(w->capacity_bytes, v->capacity_bytes);
  auto dev2 = b.Attach(next.id);
  ASSERT_TRUE(dev2.ok()) << dev2.status();
  size_t head_left = 0, tail_left = 0, beyond_left = 0;
  {
    Mapping head(dev2->path, 0, kWritten, PROT_READ);
    Mapping end(dev2->path, tail, kZeroed, PROT_READ);
    ASSERT_NE(head.p, MAP_FAILED);
    ASSERT_NE(end.p, MAP_FAILED);
    for (size_t i = 0; i < kZeroed; ++i) head_left += head.bytes()[i] != 0;
    for (size_t i = 0; i < kZeroed; ++i) tail_left += end.bytes()[i] != 0;
    for (size_t i = kZeroed; i < kWritten; ++i)
      beyond_left += head.bytes()[i] == Secret(i);
  }
  EXPECT_EQ(head_left, 0u) << "the new volume's head shows old bytes";
  EXPECT_EQ(tail_left, 0u) << "the new volume's tail shows old bytes";
  // Past the zeroed head the old bytes are still there, at the same offsets
  // (documented: only erase-on-delete cleans the whole space): the reads
  // above looked at the previous tenant's bytes, not somewhere else.
  EXPECT_EQ(beyond_left, kWritten - kZeroed);
  EXPECT_TRUE(b.Delete(next.id).ok());
}

using Clock = std::chrono::steady_clock;
int64_t MsSince(Clock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() -
                                                               t0)
      .count();
}

TEST_F(NdctlBackendLab, ProbeAnswersDuringALongErase) {
  // Delete erases a volume without the backend's lock: Probe (Ready),
  // GetCapacity and other volumes' calls answer meanwhile.
  NdctlBackend b(Opts());  // erase_on_delete
  VolumeSpec other{"lab-other", 32 * kMiB, 0, VolumeMode::kDevdax, "", {}};
  ASSERT_TRUE(b.Create(other).ok());
  // The calls, each timed; the slowest one's milliseconds, -1 on an error.
  auto calls = [&](const char* when) -> int64_t {
    int64_t worst = 0;
    auto timed = [&](const char* what, auto call) {
      Clock::time_point t0 = Clock::now();
      absl::Status st = call();
      int64_t ms = MsSince(t0);
      std::printf("  %s %s: %lld ms %s\n", when, what,
                  static_cast<long long>(ms), st.ToString().c_str());
      worst = st.ok() && worst >= 0 ? std::max(worst, ms) : -1;
    };
    timed("Ready", [&] { return b.Ready(); });
    timed("GetCapacity",
          [&] { return b.GetCapacity(VolumeMode::kFsdax).status(); });
    timed("Get(other)", [&] { return b.Get(other.id).status(); });
    timed("Attach(other)", [&] { return b.Attach(other.id).status(); });
    timed("List", [&] { return b.List().status(); });
    return worst;
  };
  const int64_t idle = calls("idle");
  ASSERT_GE(idle, 0);

  // The erase time, measured with nothing else going on. In the lab it is
  // the first touch of the host's sparse backing file: the second erase of
  // the same space below is about twice as fast (measured 18.8 s vs 9.0 s
  // for 1 GiB under TCG), hence the margin of the comparison below.
  VolumeSpec big{"lab-long-erase", 512 * kMiB, 0, VolumeMode::kDevdax, "", {}};
  ASSERT_TRUE(b.Create(big).ok());
  Clock::time_point t0 = Clock::now();
  ASSERT_TRUE(b.Delete(big.id).ok());
  const int64_t erase_ms = MsSince(t0);
  std::printf(
      "erase of a %llu MiB volume: %lld ms; slowest idle call %lld ms\n",
      static_cast<unsigned long long>(big.capacity_bytes / kMiB),
      static_cast<long long>(erase_ms), static_cast<long long>(idle));
  ASSERT_GT(erase_ms, 20 * std::max<int64_t>(idle, 1))
      << "the erase is too short here to tell it from a call";

  ASSERT_TRUE(b.Create(big).ok());
  const std::string ns = NamespaceDir(big.id);
  ASSERT_FALSE(ns.empty());
  std::atomic<bool> done{false};
  absl::Status deleted;
  std::thread eraser([&] {
    deleted = b.Delete(big.id);
    done = true;
  });
  // The backend switches the namespace to raw mode (force_raw) under its
  // lock, just before it lets the lock go for the erase: from then on the
  // erase is running (or about to, once the raw device is enabled).
  while (!done && ReadSys(ns + "/force_raw") != "1")
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const bool began = !done;
  Clock::time_point c0 = Clock::now();
  const int64_t during = began ? calls("during the erase") : -2;
  const int64_t calls_ms = MsSince(c0);
  const bool erase_still_running = !done;
  eraser.join();
  EXPECT_TRUE(deleted.ok()) << deleted;
  ASSERT_TRUE(began) << "the delete ended before its erase was seen";
  ASSERT_GE(during, 0) << "a call failed during the erase";
  // Each call answered well before the erase would finish, and all of them
  // while it was still running (a call waiting for the backend's lock
  // would have returned only after the erase).
  EXPECT_LT(during, erase_ms / 4);
  EXPECT_TRUE(erase_still_running)
      << "the calls took " << calls_ms << " ms, the erase " << erase_ms;
  EXPECT_EQ(b.Get(big.id).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(b.Delete(other.id).ok());
}

}  // namespace
}  // namespace daxlease::csi
