// FileBackend against a real directory; attach/detach need root and loop
// devices (label integration).
#include "csi/file_backend.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "gtest/gtest.h"
#include "lib/sys/fd.h"
#include "lib/sys/file.h"
#include "lib/sys/loop_device.h"
#include "tests/testing/prereq.h"

namespace daxlease::csi {
namespace {

constexpr uint64_t kMiB = 1ull << 20;

class FileBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/var/tmp/daxlease-fb-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    backend_ = std::make_unique<FileBackend>(dir_ + "/volumes", 256 * kMiB);
    ASSERT_TRUE(backend_->Init().ok());
  }
  void TearDown() override {
    for (const char* id : {"v1", "v2"}) (void)backend_->Detach(id);
    std::string cmd = "rm -rf " + dir_;
    (void)system(cmd.c_str());
  }
  VolumeSpec Spec(const std::string& id, uint64_t bytes) {
    VolumeSpec s;
    s.id = id;
    s.capacity_bytes = bytes;
    return s;
  }
  std::string dir_;
  std::unique_ptr<FileBackend> backend_;
};

TEST_F(FileBackendTest, CreatePreallocatesAndAccountsCapacity) {
  auto v = backend_->Create(Spec("v1", 64 * kMiB));
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->capacity_bytes, 64 * kMiB);
  EXPECT_GE(*sys::AllocatedBytes(backend_->ImagePath("v1")), 64 * kMiB);
  auto again = backend_->Create(Spec("v1", 64 * kMiB));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->capacity_bytes, 64 * kMiB);
  auto cap = backend_->GetCapacity(VolumeMode::kFsdax);
  ASSERT_TRUE(cap.ok());
  EXPECT_EQ(cap->total_bytes, 256 * kMiB);
  EXPECT_EQ(cap->available_bytes, 192 * kMiB);
  EXPECT_EQ(backend_->Create(Spec("v2", 200 * kMiB)).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_FALSE(sys::PathExists(backend_->ImagePath("v2")));
  EXPECT_EQ(backend_->List()->size(), 1u);
  EXPECT_EQ(backend_->Expand("v1", 300 * kMiB, 0).status().code(),
            absl::StatusCode::kResourceExhausted);
  auto grown = backend_->Expand("v1", 128 * kMiB, 0);
  ASSERT_TRUE(grown.ok());
  EXPECT_EQ(backend_->Get("v1")->capacity_bytes, 128 * kMiB);
  ASSERT_TRUE(backend_->Delete("v1").ok());
  ASSERT_TRUE(backend_->Delete("v1").ok());
  EXPECT_EQ(backend_->Get("v1").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(FileBackendTest, DevdaxIsRefusedClearly) {
  VolumeSpec s = Spec("v1", 64 * kMiB);
  s.mode = VolumeMode::kDevdax;
  auto v = backend_->Create(s);
  EXPECT_EQ(v.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(v.status().message().find("ndctl"), absl::string_view::npos);
  EXPECT_EQ(backend_->GetCapacity(VolumeMode::kDevdax)->available_bytes, 0u);
  EXPECT_FALSE(backend_->ProvidesDax());
}

TEST_F(FileBackendTest, AttachFindRefreshDetach) {
  DAXLEASE_REQUIRE(testing::IsRoot() && sys::PathExists("/dev/loop-control"),
                   "loop devices need root");
  ASSERT_TRUE(backend_->Create(Spec("v1", 32 * kMiB)).ok());
  auto dev = backend_->Attach("v1");
  ASSERT_TRUE(dev.ok()) << dev.status();
  EXPECT_EQ(backend_->Attach("v1")->path, dev->path);
  EXPECT_EQ(backend_->Delete("v1").code(),
            absl::StatusCode::kFailedPrecondition);
  // A new backend object (a restarted plugin) finds the device.
  FileBackend restarted(dir_ + "/volumes", 256 * kMiB);
  ASSERT_TRUE(restarted.Init().ok());
  auto found = restarted.FindAttached("v1");
  ASSERT_TRUE(found.ok() && found->has_value());
  EXPECT_EQ((*found)->path, dev->path);
  ASSERT_TRUE(restarted.Expand("v1", 64 * kMiB, 0).ok());
  ASSERT_TRUE(restarted.RefreshDevice("v1").ok());
  EXPECT_EQ(*sys::FileSize(dev->path), 64 * kMiB);
  ASSERT_TRUE(restarted.Detach("v1").ok());
  ASSERT_TRUE(restarted.Detach("v1").ok());
  EXPECT_FALSE(restarted.FindAttached("v1")->has_value());
  ASSERT_TRUE(restarted.Delete("v1").ok());
}

TEST_F(FileBackendTest, ReadsAsZerosUntilAnythingIsWritten) {
  ASSERT_TRUE(backend_->Create(Spec("v1", 32 * kMiB)).ok());
  EXPECT_EQ(backend_->ReadsAsZeros("v1").value_or(false), true)
      << "fresh from fallocate: unwritten extents only";
  ASSERT_TRUE(backend_->Expand("v1", 64 * kMiB, 0).ok());
  EXPECT_EQ(backend_->ReadsAsZeros("v1").value_or(false), true);
  EXPECT_EQ(backend_->ReadsAsZeros("nope").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(backend_->ReadsAsZeros("../v1").status().code(),
            absl::StatusCode::kInvalidArgument);

  // One block written into the image, not synced: page cache counts.
  ASSERT_TRUE(backend_->Create(Spec("v2", 32 * kMiB)).ok());
  {
    auto fd = sys::OpenFd(backend_->ImagePath("v2"), O_WRONLY);
    ASSERT_TRUE(fd.ok()) << fd.status();
    const std::string block(4096, 'x');
    ASSERT_EQ(pwrite(fd->get(), block.data(), block.size(), 20 * kMiB),
              static_cast<ssize_t>(block.size()));
  }
  EXPECT_EQ(backend_->ReadsAsZeros("v2").value_or(true), false);
}

TEST_F(FileBackendTest, AWriteThroughTheLoopDeviceEndsReadsAsZeros) {
  DAXLEASE_REQUIRE(testing::IsRoot() && sys::PathExists("/dev/loop-control"),
                   "loop devices need root");
  ASSERT_TRUE(backend_->Create(Spec("v1", 32 * kMiB)).ok());
  auto dev = backend_->Attach("v1");
  ASSERT_TRUE(dev.ok()) << dev.status();
  EXPECT_EQ(backend_->ReadsAsZeros("v1").value_or(false), true);
  {
    // As a half-done mkfs leaves it: written, closed, never fsynced.
    auto fd = sys::OpenFd(dev->path, O_WRONLY);
    ASSERT_TRUE(fd.ok()) << fd.status();
    const std::string block(4096, 'S');
    ASSERT_EQ(pwrite(fd->get(), block.data(), block.size(), 1024 * 1024),
              static_cast<ssize_t>(block.size()));
  }
  EXPECT_EQ(backend_->ReadsAsZeros("v1").value_or(true), false);
  ASSERT_TRUE(backend_->Detach("v1").ok());
}

}  // namespace
}  // namespace daxlease::csi
