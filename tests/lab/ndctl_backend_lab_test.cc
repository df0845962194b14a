// NdctlBackend against the real libndctl, run inside the lab guest (an
// emulated, labelled NVDIMM region; see tests/lab/guest/ndctl_backend.sh).
// Not registered with CTest on the host: it needs the guest's region.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>
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

}  // namespace
}  // namespace daxlease::csi
