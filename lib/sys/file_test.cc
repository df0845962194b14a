#include "lib/sys/file.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <string>

#include "gtest/gtest.h"
#include "lib/sys/fd.h"
#include "lib/sys/file_copy.h"

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

// Writes `data` at `offset` of `path` (created if missing).
void WriteAt(const std::string& path, off_t offset, const std::string& data) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pwrite(fd, data.data(), data.size(), offset),
            static_cast<ssize_t>(data.size()));
  ::close(fd);
}

TEST_F(FileTest, CopyFileDataCopiesOnlyDataAndKeepsHolesAndSize) {
  const std::string from = dir_ + "/from.img", to = dir_ + "/to.img";
  ASSERT_TRUE(Fallocate(from, 16 << 20).ok());  // unwritten: reads as zeros
  WriteAt(from, 4 << 20, std::string(1 << 20, 'a'));
  WriteAt(from, (16 << 20) - 3, "end");
  auto r = CopyFileData(from, to, {.allow_reflink = false});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->reflinked);
  EXPECT_EQ(r->size_bytes, 16u << 20);
  EXPECT_LT(r->bytes_copied, 8u << 20);  // the data, not the whole file
  auto a = ReadFile(from), b = ReadFile(to);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(*a == *b);
  auto allocated = AllocatedBytes(to);
  ASSERT_TRUE(allocated.ok());
  EXPECT_LT(*allocated, 8u << 20);  // holes stay holes

  // Into a larger (fallocated) file: its size and its tail stay.
  const std::string big = dir_ + "/big.img";
  ASSERT_TRUE(Fallocate(big, 32 << 20).ok());
  WriteAt(big, 20 << 20, "tail");
  r = CopyFileData(from, big);  // reflink if the file system has it
  ASSERT_TRUE(r.ok()) << r.status();
  auto c = ReadFile(big);
  ASSERT_TRUE(c.ok());
  ASSERT_EQ(c->size(), 32u << 20);
  EXPECT_TRUE(c->substr(0, 16 << 20) == *a);
  EXPECT_EQ(c->substr(20 << 20, 4), "tail");

  EXPECT_TRUE(
      absl::IsNotFound(CopyFileData(dir_ + "/missing", dir_ + "/x").status()));
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

TEST_F(FileTest, FallocateTailAllocatesOnlyPastTheEnd) {
  std::string p = dir_ + "/data";
  EXPECT_FALSE(FallocateTail(p, 1 << 20).ok());  // must exist
  ASSERT_TRUE(WriteFileAtomic(p, "").ok());
  ASSERT_TRUE(Truncate(p, 4 << 20).ok());  // a hole below the end stays one
  ASSERT_TRUE(FallocateTail(p, 12 << 20).ok());
  EXPECT_EQ(*FileSize(p), 12u << 20);
  EXPECT_GE(*AllocatedBytes(p), 8u << 20);
  EXPECT_LT(*AllocatedBytes(p), 12u << 20);
  ASSERT_TRUE(FallocateTail(p, 4 << 20).ok());  // never shrinks
  EXPECT_EQ(*FileSize(p), 12u << 20);
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
