// Root tests: the real Mounter on tmpfs, bind mounts and libmount lookups.
#include <stdlib.h>
#include <unistd.h>

#include "gtest/gtest.h"
#include "lib/sys/file.h"
#include "lib/sys/mounter.h"
#include "tests/testing/prereq.h"

namespace daxlease::sys {
namespace {

class SystemMounterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    DAXLEASE_REQUIRE(testing::IsRoot(), "mounting needs root");
    char tmpl[] = "/tmp/daxlease-mount-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    mounter_ = NewSystemMounter({dir_});
  }
  void TearDown() override {
    if (dir_.empty()) return;
    for (const char* p : {"/target", "/file", "/src"}) {
      (void)mounter_->Unmount(dir_ + p);
      (void)mounter_->Unmount(dir_ + p);
    }
    std::string cmd = "rm -rf " + dir_;
    (void)system(cmd.c_str());
  }
  std::string dir_;
  std::unique_ptr<Mounter> mounter_;
};

TEST_F(SystemMounterTest, MountLookupBindReadOnlyUnmount) {
  std::string src = dir_ + "/src", tgt = dir_ + "/target";
  ASSERT_TRUE(mounter_->MakeDir(src).ok());
  ASSERT_TRUE(mounter_->MakeDir(tgt).ok());
  auto none = mounter_->GetMount(src);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());

  ASSERT_TRUE(mounter_->Mount("tmpfs", src, "tmpfs", "size=4m").ok());
  auto m = mounter_->GetMount(src);
  ASSERT_TRUE(m.ok() && m->has_value()) << m.status();
  EXPECT_EQ((*m)->fs_type, "tmpfs");
  EXPECT_EQ((*m)->target, src);
  EXPECT_TRUE(
      absl::IsAlreadyExists(mounter_->Mount("tmpfs", src, "tmpfs", "size=4m")));
  ASSERT_TRUE(WriteFileAtomic(src + "/hello", "hi").ok());

  ASSERT_TRUE(mounter_->BindMount(src, tgt, /*read_only=*/true).ok());
  auto b = mounter_->GetMount(tgt);
  ASSERT_TRUE(b.ok() && b->has_value());
  EXPECT_TRUE((*b)->read_only);
  EXPECT_EQ((*b)->major, (*m)->major);
  EXPECT_EQ((*b)->minor, (*m)->minor);
  EXPECT_EQ(*ReadFile(tgt + "/hello"), "hi");
  EXPECT_FALSE(WriteFileAtomic(tgt + "/nope", "x").ok());  // read-only bind
  EXPECT_TRUE(WriteFileAtomic(src + "/still-rw", "x").ok());

  auto usage = mounter_->StatFs(src);
  ASSERT_TRUE(usage.ok());
  EXPECT_EQ(usage->total_bytes, 4u << 20);

  ASSERT_TRUE(mounter_->Unmount(tgt).ok());
  ASSERT_TRUE(mounter_->Unmount(tgt).ok());  // idempotent
  ASSERT_TRUE(mounter_->Unmount(src).ok());
  auto gone = mounter_->GetMount(src);
  ASSERT_TRUE(gone.ok());
  EXPECT_FALSE(gone->has_value());
  EXPECT_TRUE(mounter_->RemovePath(tgt).ok());
  EXPECT_FALSE(mounter_->PathExists(tgt));
}

TEST_F(SystemMounterTest, BindADeviceNodeOntoAFile) {
  std::string file = dir_ + "/file";
  ASSERT_TRUE(mounter_->MakeFile(file).ok());
  ASSERT_TRUE(mounter_->MakeFile(file).ok());
  ASSERT_TRUE(mounter_->BindMount("/dev/null", file, false).ok());
  auto b = mounter_->GetMount(file);
  ASSERT_TRUE(b.ok() && b->has_value());
  EXPECT_EQ((*b)->root, "/null");
  ASSERT_TRUE(mounter_->Unmount(file).ok());
}

// The published directory's agent.sock: a relative symlink, made again
// idempotently, refused over something else, never followed (GetMount says
// so; Unmount leaves it: a symlink is no mount point), removed as itself.
TEST_F(SystemMounterTest, SymlinkIsMadeOnceNeverFollowedAndRemoved) {
  const std::string link = dir_ + "/link", file = dir_ + "/file";
  ASSERT_TRUE(mounter_->MakeSymlink("src/sock", link).ok());
  ASSERT_TRUE(mounter_->MakeSymlink("src/sock", link).ok());  // idempotent
  EXPECT_TRUE(absl::IsAlreadyExists(mounter_->MakeSymlink("other", link)));
  ASSERT_TRUE(mounter_->MakeFile(file).ok());
  EXPECT_TRUE(absl::IsAlreadyExists(mounter_->MakeSymlink("src/sock", file)));
  char buf[64];
  ssize_t n = readlink(link.c_str(), buf, sizeof(buf));
  ASSERT_EQ(n, 8);
  EXPECT_EQ(std::string(buf, n), "src/sock");
  EXPECT_TRUE(absl::IsInvalidArgument(mounter_->GetMount(link).status()));
  EXPECT_TRUE(mounter_->Unmount(link).ok());
  EXPECT_TRUE(mounter_->PathExists(link));
  EXPECT_TRUE(mounter_->RemovePath(link).ok());
  EXPECT_FALSE(mounter_->PathExists(link));
}

}  // namespace
}  // namespace daxlease::sys
