// The file backend's image pool (docs/csi.md, "Pre-formatted images") on the
// real plugin: real fallocate, mkfs, loop devices and mounts. A kill -9 at
// each step of a refill and of a CreateVolume that takes a pooled image
// (crash points, lib/base/crash_point.h: the kill lands exactly there):
// the restarted plugin never hands out a half-made image, the CO's retry
// ends with one working volume, and nothing leaks.
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/base/crash_point.h"
#include "lib/sys/command.h"
#include "tests/integration/csi_fixture.h"

namespace daxlease::testing {
namespace {

using csi::v1::Controller;
using csi::v1::Node;

constexpr int64_t kImageBytes = 64 * kMiB;

class CsiPoolTest : public CsiPluginTest {
 protected:
  std::vector<std::string> ExtraArgs() const override {
    return {"--image-pool-depth=2", "--image-pool-classes=ext4:64Mi"};
  }

  std::string Images() const { return state_dir_ + "/volumes"; }

  // File names in the image directory ending in `suffix`.
  std::vector<std::string> Named(absl::string_view suffix) const {
    std::vector<std::string> out;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(Images(), ec)) {
      std::string n = e.path().filename().string();
      if (absl::EndsWith(n, suffix)) out.push_back(n);
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  // Waits until the pool holds `n` images and is making none.
  void WaitPooled(size_t n) {
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    while (Named(".pool").size() != n || !Named(".partial").empty()) {
      ASSERT_LT(absl::Now(), deadline)
          << "pooled: " << Named(".pool").size() << ", partial "
          << Named(".partial").size() << "\n"
          << PluginLog();
      absl::SleepFor(absl::Milliseconds(10));
    }
  }

  static std::string Uuid(const std::string& image) {
    auto r =
        sys::RunCommandOk({"blkid", "-p", "-s", "UUID", "-o", "value", image});
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? std::string(absl::StripAsciiWhitespace(r->stdout_text))
                  : "";
  }
  // e2fsck -fn: the filesystem is complete and clean.
  static void ExpectClean(const std::string& image) {
    auto r = sys::RunCommand({"e2fsck", "-f", "-n", image});
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->exit_code, 0) << image << "\n"
                               << r->stdout_text << r->stderr_text;
  }

  grpc::Status Create(const std::string& name,
                      csi::v1::CreateVolumeResponse* resp) {
    csi::v1::CreateVolumeRequest req;
    req.set_name(name);
    req.mutable_capacity_range()->set_required_bytes(kImageBytes);
    *req.add_volume_capabilities() = MountCap("ext4");
    return Call(&Controller::Stub::CreateVolume, req, resp);
  }

  // Stages `vol`, writes and reads back a pattern, unstages, deletes.
  void UseAndDelete(const std::string& vol) {
    const std::string staging = root_ + "/staging/" + vol;
    ASSERT_TRUE(MakeDirs(staging).ok());
    csi::v1::NodeStageVolumeRequest stage;
    stage.set_volume_id(vol);
    stage.set_staging_target_path(staging);
    *stage.mutable_volume_capability() = MountCap("ext4");
    csi::v1::NodeStageVolumeResponse staged;
    grpc::Status s = Call(&Node::Stub::NodeStageVolume, stage, &staged);
    ASSERT_TRUE(s.ok()) << s.error_message();
    const std::string data = Pattern(256 * 1024, 7);
    ASSERT_TRUE(WriteAndSync(staging + "/data.bin", 0, data).ok());
    auto back = ReadAt(staging + "/data.bin", 0, data.size());
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_TRUE(*back == data);
    csi::v1::NodeUnstageVolumeRequest unstage;
    unstage.set_volume_id(vol);
    unstage.set_staging_target_path(staging);
    csi::v1::NodeUnstageVolumeResponse unstaged;
    s = Call(&Node::Stub::NodeUnstageVolume, unstage, &unstaged);
    ASSERT_TRUE(s.ok()) << s.error_message();
    ExpectClean(Images() + "/" + vol + ".img");
    csi::v1::DeleteVolumeRequest del;
    del.set_volume_id(vol);
    csi::v1::DeleteVolumeResponse deleted;
    s = Call(&Controller::Stub::DeleteVolume, del, &deleted);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_TRUE(Named(".img").empty());
  }
};

TEST_F(CsiPoolTest, CreateTakesAPooledImageEachWithItsOwnFilesystem) {
  WaitPooled(2);
  if (HasFatalFailure()) return;
  std::set<std::string> uuids;
  for (const std::string& n : Named(".pool")) {
    ExpectClean(Images() + "/" + n);
    uuids.insert(Uuid(Images() + "/" + n));
  }
  EXPECT_EQ(uuids.size(), 2u) << "every pooled image is its own mkfs";

  csi::v1::CreateVolumeResponse created;
  grpc::Status s = Create("pvc-pooled", &created);
  ASSERT_TRUE(s.ok()) << s.error_message();
  const std::string vol = created.volume().volume_id();
  EXPECT_EQ(created.volume().capacity_bytes(), kImageBytes);
  EXPECT_THAT(Named(".img"), ::testing::ElementsAre(vol + ".img"));
  EXPECT_TRUE(absl::StrContains(PluginLog(), "pooled=")) << PluginLog();
  EXPECT_EQ(uuids.count(Uuid(Images() + "/" + vol + ".img")), 1u)
      << "the volume is one of the pooled images";

  // The pool fills again, with a filesystem of its own.
  WaitPooled(2);
  if (HasFatalFailure()) return;
  for (const std::string& n : Named(".pool")) {
    uuids.insert(Uuid(Images() + "/" + n));
  }
  EXPECT_EQ(uuids.size(), 3u);

  // GetCapacity counts the pooled images as available.
  csi::v1::GetCapacityResponse cap;
  csi::v1::GetCapacityRequest cap_req;
  ASSERT_TRUE(Call(&Controller::Stub::GetCapacity, cap_req, &cap).ok());
  EXPECT_GE(cap.available_capacity(), 2 * kImageBytes);

  UseAndDelete(vol);
  ExpectNoLeaks();
}

class CsiPoolRefillCrashTest
    : public CsiPoolTest,
      public ::testing::WithParamInterface<const char*> {};
class CsiPoolCreateCrashTest
    : public CsiPoolTest,
      public ::testing::WithParamInterface<const char*> {};

// The plugin kills itself at a step of its first refill; the restarted one
// removes what was half made, keeps what was complete, fills up, and every
// pooled image is a clean filesystem that a volume can use.
TEST_P(CsiPoolRefillCrashTest, KillNineInTheRefill) {
  WaitPooled(2);
  if (HasFatalFailure()) return;
  // A fresh start with an empty pool and the crash point set.
  ASSERT_TRUE(plugin_->Kill9().ok());
  for (const std::string& n : Named(".pool")) {
    std::filesystem::remove(Images() + "/" + n);
  }
  PluginOptions o = options_;
  o.extra_env = {absl::StrCat(base::kCrashPointEnv, "=", GetParam())};
  absl::StatusOr<pid_t> pid = PluginProcess::Spawn(o);
  ASSERT_TRUE(pid.ok()) << pid.status();
  absl::StatusOr<int> status = PluginProcess::WaitExit(*pid, absl::Seconds(60));
  ASSERT_TRUE(status.ok()) << status.status() << "\n" << PluginLog();
  ASSERT_TRUE(WIFSIGNALED(*status) && WTERMSIG(*status) == SIGKILL)
      << "wait status " << *status << "\n"
      << PluginLog();
  ASSERT_TRUE(absl::StrContains(PluginLog(), GetParam())) << PluginLog();
  const bool renamed = std::string(GetParam()) == "pool.fill.renamed";
  EXPECT_EQ(Named(".pool").size(), renamed ? 1u : 0u);
  EXPECT_EQ(Named(".partial").size(), renamed ? 0u : 1u);

  StartPlugin();
  if (HasFatalFailure()) return;
  WaitPooled(2);
  if (HasFatalFailure()) return;
  for (const std::string& n : Named(".pool")) ExpectClean(Images() + "/" + n);
  csi::v1::CreateVolumeResponse created;
  grpc::Status s = Create("pvc-after-refill-crash", &created);
  ASSERT_TRUE(s.ok()) << s.error_message();
  UseAndDelete(created.volume().volume_id());
  ExpectNoLeaks();
}

// The plugin kills itself at a step of a CreateVolume that takes a pooled
// image; the CO's retry on the restarted plugin gets one working volume.
TEST_P(CsiPoolCreateCrashTest, KillNineInACreateFromThePool) {
  WaitPooled(2);
  if (HasFatalFailure()) return;
  plugin_->mutable_options().extra_env = {
      absl::StrCat(base::kCrashPointEnv, "=", GetParam())};
  ASSERT_TRUE(plugin_->Restart().ok()) << PluginLog();
  csi::v1::CreateVolumeResponse created;
  grpc::Status s = Create("pvc-crash-take", &created);
  EXPECT_FALSE(s.ok()) << "the plugin was to die in the call";
  ASSERT_TRUE(absl::StrContains(PluginLog(), GetParam())) << PluginLog();

  plugin_->mutable_options().extra_env.clear();
  ASSERT_TRUE(plugin_->Restart().ok()) << PluginLog();
  s = Create("pvc-crash-take", &created);
  ASSERT_TRUE(s.ok()) << s.error_message();
  const std::string vol = created.volume().volume_id();
  EXPECT_EQ(created.volume().capacity_bytes(), kImageBytes);
  EXPECT_THAT(Named(".img"), ::testing::ElementsAre(vol + ".img"));
  csi::v1::ListVolumesResponse list;
  ASSERT_TRUE(
      Call(&Controller::Stub::ListVolumes, csi::v1::ListVolumesRequest(), &list)
          .ok());
  EXPECT_EQ(list.entries_size(), 1) << list.DebugString();
  UseAndDelete(vol);
  WaitPooled(2);
  ExpectNoLeaks();
}

INSTANTIATE_TEST_SUITE_P(Steps, CsiPoolRefillCrashTest,
                         ::testing::Values("pool.fill.allocated",
                                           "pool.fill.formatted",
                                           "pool.fill.renamed"));
INSTANTIATE_TEST_SUITE_P(Steps, CsiPoolCreateCrashTest,
                         ::testing::Values("pool.take.renamed",
                                           "create.pooled_media_synced",
                                           "create.recorded"));

}  // namespace
}  // namespace daxlease::testing
