#include "lib/sys/fake_mounter.h"

#include "gtest/gtest.h"
#include "lib/sys/formatter.h"

namespace daxlease::sys {
namespace {

TEST(FakeMounterTest, MountNeedsTargetAndRefusesSecondMount) {
  FakeMounter m;
  EXPECT_TRUE(absl::IsNotFound(m.Mount("/dev/loop0", "/s", "ext4", "")));
  ASSERT_TRUE(m.MakeDir("/s").ok());
  ASSERT_TRUE(m.Mount("/dev/loop0", "/s", "ext4", "").ok());
  EXPECT_TRUE(absl::IsAlreadyExists(m.Mount("/dev/loop0", "/s", "ext4", "")));
  auto info = m.GetMount("/s");
  ASSERT_TRUE(info.ok() && info->has_value());
  EXPECT_EQ((*info)->source, "/dev/loop0");
  EXPECT_TRUE(absl::IsUnavailable(m.RemovePath("/s")));
  ASSERT_TRUE(m.Unmount("/s").ok());
  ASSERT_TRUE(m.Unmount("/s").ok());
  EXPECT_TRUE(m.RemovePath("/s").ok());
}

TEST(FakeMounterTest, BindKeepsSourceAndReadOnly) {
  FakeMounter m;
  m.AddPath("/s");
  m.AddPath("/t");
  ASSERT_TRUE(m.Mount("/dev/loop1", "/s", "xfs", "").ok());
  ASSERT_TRUE(m.BindMount("/s", "/t", true).ok());
  auto info = m.GetMount("/t");
  ASSERT_TRUE(info.ok() && info->has_value());
  EXPECT_EQ((*info)->source, "/dev/loop1");
  EXPECT_TRUE((*info)->read_only);
}

TEST(FakeMounterTest, FailNextFailsOnce) {
  FakeMounter m;
  m.FailNext("MakeDir", absl::InternalError("boom"));
  EXPECT_FALSE(m.MakeDir("/x").ok());
  EXPECT_TRUE(m.MakeDir("/x").ok());
}

TEST(FakeFormatterTest, RemembersFormats) {
  FakeFormatter f;
  EXPECT_EQ(*f.Detect("/dev/loop0"), "");
  ASSERT_TRUE(f.Format("/dev/loop0", "xfs", {"-K"}).ok());
  EXPECT_EQ(*f.Detect("/dev/loop0"), "xfs");
  EXPECT_EQ(f.format_calls(), 1);
}

}  // namespace
}  // namespace daxlease::sys
