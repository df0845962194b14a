#include "lib/sys/file.h"

#include <fcntl.h>
#include <stdlib.h>

#include <string>

#include "gtest/gtest.h"
#include "lib/sys/fd.h"

namespace daxlease::sys {
namespace {

class FileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/daxlease-file-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::string cmd = "rm -rf " + dir_;
    ASSERT_EQ(system(cmd.c_str()), 0);
  }
  std::string dir_;
};

TEST_F(FileTest, AtomicWriteReplacesContentsAndLeavesNoTemp) {
  std::string p = dir_ + "/state.json";
  ASSERT_TRUE(WriteFileAtomic(p, "one").ok());
  ASSERT_TRUE(WriteFileAtomic(p, "two").ok());
  auto got = ReadFile(p);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, "two");
  EXPECT_FALSE(PathExists(p + ".tmp"));
}

TEST_F(FileTest, ReadMissingFileIsNotFound) {
  auto got = ReadFile(dir_ + "/nope");
  EXPECT_TRUE(absl::IsNotFound(got.status())) << got.status();
}

TEST_F(FileTest, FallocateAllocatesAndNeverShrinks) {
  std::string p = dir_ + "/vol.img";
  ASSERT_TRUE(Fallocate(p, 8 << 20).ok());
  EXPECT_EQ(*FileSize(p), 8u << 20);
  EXPECT_GE(*AllocatedBytes(p), 8u << 20);
  ASSERT_TRUE(Fallocate(p, 4 << 20).ok());
  EXPECT_EQ(*FileSize(p), 8u << 20);
  ASSERT_TRUE(Fallocate(p, 16 << 20).ok());
  EXPECT_EQ(*FileSize(p), 16u << 20);
}

TEST_F(FileTest, MakeDirsIsIdempotentAndListDirSorts) {
  ASSERT_TRUE(MakeDirs(dir_ + "/a/b/c").ok());
  ASSERT_TRUE(MakeDirs(dir_ + "/a/b/c").ok());
  ASSERT_TRUE(WriteFileAtomic(dir_ + "/a/z", "").ok());
  auto names = ListDir(dir_ + "/a");
  ASSERT_TRUE(names.ok());
  EXPECT_EQ(*names, (std::vector<std::string>{"b", "z"}));
  EXPECT_FALSE(MakeDirs(dir_ + "/a/z/q").ok());
}

TEST_F(FileTest, RemoveFileIsIdempotent) {
  std::string p = dir_ + "/f";
  ASSERT_TRUE(WriteFileAtomic(p, "x").ok());
  EXPECT_TRUE(RemoveFile(p).ok());
  EXPECT_TRUE(RemoveFile(p).ok());
  EXPECT_FALSE(PathExists(p));
}

TEST_F(FileTest, StatFsReportsSomething) {
  auto u = StatFs(dir_);
  ASSERT_TRUE(u.ok());
  EXPECT_GT(u->total_bytes, 0u);
  EXPECT_LE(u->available_bytes, u->total_bytes);
  EXPECT_FALSE(StatFs(dir_ + "/missing").ok());
}

TEST(UniqueFdTest, MoveTransfersOwnership) {
  auto fd = OpenFd("/dev/null", O_RDONLY);
  ASSERT_TRUE(fd.ok());
  int raw = fd->get();
  UniqueFd other = std::move(*fd);
  EXPECT_EQ(other.get(), raw);
  EXPECT_FALSE(fd->valid());
}

}  // namespace
}  // namespace daxlease::sys
