// Root tests: real loop devices, libblkid and mkfs on an image file.
#include "lib/sys/loop_device.h"

#include <stdlib.h>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "lib/sys/blkid.h"
#include "lib/sys/command.h"
#include "lib/sys/file.h"
#include "lib/sys/formatter.h"
#include "tests/testing/prereq.h"

namespace daxlease::sys {
namespace {

class LoopDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    DAXLEASE_REQUIRE(testing::IsRoot(), "loop devices need root");
    DAXLEASE_REQUIRE(PathExists("/dev/loop-control"),
                     "/dev/loop-control missing (no loop driver)");
    char tmpl[] = "/var/tmp/daxlease-loop-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    image_ = dir_ + "/vol.img";
    ASSERT_TRUE(Fallocate(image_, 64 << 20).ok());
  }
  void TearDown() override {
    if (dir_.empty()) return;
    auto dev = FindLoopByBackingFile(image_);
    if (dev.ok() && dev->has_value()) (void)DetachLoop(**dev);
    std::string cmd = "rm -rf " + dir_;
    (void)system(cmd.c_str());
  }
  std::string dir_, image_;
};

TEST_F(LoopDeviceTest, AttachIsIdempotentFindableAndDetachable) {
  auto dev = AttachLoop(image_);
  ASSERT_TRUE(dev.ok()) << dev.status();
  auto again = AttachLoop(image_);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *dev);
  auto found = FindLoopByBackingFile(image_);
  ASSERT_TRUE(found.ok() && found->has_value());
  EXPECT_EQ(**found, *dev);
  EXPECT_EQ(*FileSize(*dev), 64u << 20);

  ASSERT_TRUE(DetachLoop(*dev).ok());
  found = FindLoopByBackingFile(image_);
  ASSERT_TRUE(found.ok());
  EXPECT_FALSE(found->has_value());
  EXPECT_TRUE(DetachLoop(*dev).ok());  // idempotent
}

TEST_F(LoopDeviceTest, FoundAndDetachedAfterTheBackingFileWasUnlinked) {
  auto dev = AttachLoop(image_);
  ASSERT_TRUE(dev.ok()) << dev.status();
  ASSERT_TRUE(RemoveFile(image_).ok());
  auto found = FindLoopByBackingFile(image_);
  ASSERT_TRUE(found.ok() && found->has_value());
  EXPECT_EQ(**found, *dev);
  ASSERT_TRUE(DetachLoop(*dev).ok());
  found = FindLoopByBackingFile(image_);
  ASSERT_TRUE(found.ok());
  EXPECT_FALSE(found->has_value());
}

// The staging path's attach: autoclear from LOOP_CONFIGURE on, held open by
// the caller until something else holds it, gone with the last close.
TEST_F(LoopDeviceTest, AutoclearAttachIsHeldThenGoesWithItsLastUser) {
  auto held = AttachLoopWithAutoclear(image_, /*autoclear=*/true);
  ASSERT_TRUE(held.ok()) << held.status();
  EXPECT_TRUE(held->autoclear);
  ASSERT_TRUE(held->hold.valid());
  auto again = AttachLoopWithAutoclear(image_, /*autoclear=*/true);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->device, held->device) << "idempotent";
  EXPECT_TRUE(again->autoclear);
  EXPECT_FALSE(again->hold.valid()) << "attached before: nothing to hold";
  auto loops = ListLoops();
  ASSERT_TRUE(loops.ok()) << loops.status();
  bool listed = false;
  for (const LoopDevice& l : *loops) {
    if (l.device == held->device) listed = l.autoclear;
  }
  EXPECT_TRUE(listed) << "the kernel reports LO_FLAGS_AUTOCLEAR";

  held->hold.Reset();
  // The kernel tears the device down asynchronously after the last close.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  absl::StatusOr<std::optional<std::string>> found;
  do {
    found = FindLoopByBackingFile(image_);
    ASSERT_TRUE(found.ok()) << found.status();
    if (!found->has_value()) break;
    absl::SleepFor(absl::Milliseconds(5));
  } while (absl::Now() < deadline);
  EXPECT_FALSE(found->has_value()) << "still attached as " << **found;
}

TEST_F(LoopDeviceTest, WithoutAutoclearTheDeviceStaysAfterTheAttach) {
  auto a = AttachLoopWithAutoclear(image_, /*autoclear=*/false);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_FALSE(a->autoclear);
  EXPECT_FALSE(a->hold.valid());
  auto found = FindLoopByBackingFile(image_);
  ASSERT_TRUE(found.ok() && found->has_value());
  EXPECT_EQ(**found, a->device);
}

TEST_F(LoopDeviceTest, CapacityRefreshAfterGrowth) {
  auto dev = AttachLoop(image_);
  ASSERT_TRUE(dev.ok()) << dev.status();
  ASSERT_TRUE(Fallocate(image_, 96 << 20).ok());
  EXPECT_EQ(*FileSize(*dev), 64u << 20);
  ASSERT_TRUE(RefreshLoopCapacity(*dev).ok());
  EXPECT_EQ(*FileSize(*dev), 96u << 20);
}

TEST_F(LoopDeviceTest, BlkidSeesNothingThenTheFilesystem) {
  auto dev = AttachLoop(image_);
  ASSERT_TRUE(dev.ok()) << dev.status();
  auto fs = ProbeFilesystemType(*dev);
  ASSERT_TRUE(fs.ok()) << fs.status();
  EXPECT_EQ(*fs, "");
  auto formatter = NewSystemFormatter();
  ASSERT_TRUE(formatter->Format(*dev, "ext4", {"-q", "-E", "nodiscard"}).ok());
  fs = ProbeFilesystemType(*dev);
  ASSERT_TRUE(fs.ok());
  EXPECT_EQ(*fs, "ext4");
  EXPECT_FALSE(ProbeFilesystemType(dir_ + "/missing").ok());
}

TEST_F(LoopDeviceTest, Ext4GrowsOfflineAfterTheImageGrew) {
  auto dev = AttachLoop(image_);
  ASSERT_TRUE(dev.ok()) << dev.status();
  auto formatter = NewSystemFormatter();
  ASSERT_TRUE(formatter->Format(*dev, "ext4", {"-q", "-b", "4096"}).ok());
  ASSERT_TRUE(Fallocate(image_, 128 << 20).ok());
  ASSERT_TRUE(RefreshLoopCapacity(*dev).ok());
  absl::Status s = formatter->Grow(*dev, "", "ext4");
  ASSERT_TRUE(s.ok()) << s;
  absl::StatusOr<std::string> fs;
  auto out = RunCommandOk({"dumpe2fs", "-h", *dev});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_NE(out->stdout_text.find("Block count:              32768"),
            std::string::npos)
      << out->stdout_text;
  // xfs grows offline too now (in a private mount), but an ext4 device
  // does not mount as xfs: an error, and the filesystem is left as it was.
  EXPECT_FALSE(formatter->Grow(*dev, "", "xfs").ok());
  fs = ProbeFilesystemType(*dev);
  ASSERT_TRUE(fs.ok()) << fs.status();
  EXPECT_EQ(*fs, "ext4");
}

}  // namespace
}  // namespace daxlease::sys
