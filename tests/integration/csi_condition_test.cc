// What the plugin reports and refuses around a published volume: read-only
// publishes are really read-only, a conflicting re-publish is refused,
// concurrent calls on one volume never double-mount, and VolumeCondition
// turns abnormal when the mount or the backing file disappears.
#include <fcntl.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/csi_fixture.h"

namespace daxlease::testing {
namespace {

using csi::v1::Controller;
using csi::v1::Node;

class CsiConditionTest : public CsiPluginTest {
 protected:
  void SetUp() override {
    CsiPluginTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    csi::v1::CreateVolumeRequest create;
    create.set_name("pvc-condition");
    create.mutable_capacity_range()->set_required_bytes(64 * kMiB);
    *create.add_volume_capabilities() = MountCap("ext4");
    csi::v1::CreateVolumeResponse created;
    grpc::Status s = Call(&Controller::Stub::CreateVolume, create, &created);
    ASSERT_TRUE(s.ok()) << s.error_message();
    vol_ = created.volume().volume_id();
    staging_ = root_ + "/staging/" + vol_;
    ASSERT_TRUE(MakeDirs(staging_).ok());
    ASSERT_TRUE(MakeDirs(root_ + "/pods").ok());
  }

  grpc::Status Stage() {
    csi::v1::NodeStageVolumeRequest req;
    req.set_volume_id(vol_);
    req.set_staging_target_path(staging_);
    *req.mutable_volume_capability() = MountCap("ext4");
    csi::v1::NodeStageVolumeResponse resp;
    return Call(&Node::Stub::NodeStageVolume, req, &resp);
  }

  grpc::Status Publish(const std::string& target, bool readonly) {
    csi::v1::NodePublishVolumeRequest req;
    req.set_volume_id(vol_);
    req.set_staging_target_path(staging_);
    req.set_target_path(target);
    req.set_readonly(readonly);
    *req.mutable_volume_capability() = MountCap("ext4");
    csi::v1::NodePublishVolumeResponse resp;
    return Call(&Node::Stub::NodePublishVolume, req, &resp);
  }

  grpc::Status Unpublish(const std::string& target) {
    csi::v1::NodeUnpublishVolumeRequest req;
    req.set_volume_id(vol_);
    req.set_target_path(target);
    csi::v1::NodeUnpublishVolumeResponse resp;
    return Call(&Node::Stub::NodeUnpublishVolume, req, &resp);
  }

  grpc::Status Unstage() {
    csi::v1::NodeUnstageVolumeRequest req;
    req.set_volume_id(vol_);
    req.set_staging_target_path(staging_);
    csi::v1::NodeUnstageVolumeResponse resp;
    return Call(&Node::Stub::NodeUnstageVolume, req, &resp);
  }

  std::string vol_;
  std::string staging_;
};

TEST_F(CsiConditionTest, ReadOnlyPublishIsReadOnlyAndConflictsAreRefused) {
  ASSERT_TRUE(Stage().ok());
  const std::string rw = root_ + "/pods/rw";
  const std::string ro = root_ + "/pods/ro";
  ASSERT_TRUE(Publish(rw, false).ok());
  grpc::Status s = Publish(ro, true);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_TRUE(WriteAndSync(rw + "/written-rw", 0, "rw").ok());
  // Writable through rw, visible but not writable through ro.
  auto seen = ReadAt(ro + "/written-rw", 0, 2);
  ASSERT_TRUE(seen.ok()) << seen.status();
  EXPECT_EQ(*seen, "rw");
  int fd = ::open((ro + "/nope").c_str(), O_WRONLY | O_CREAT, 0644);
  int err = errno;
  if (fd >= 0) ::close(fd);
  EXPECT_LT(fd, 0) << "created a file through a read-only publish";
  EXPECT_EQ(err, EROFS);

  // The same target again with another readonly flag: ALREADY_EXISTS.
  EXPECT_EQ(Publish(rw, true).error_code(), grpc::StatusCode::ALREADY_EXISTS);
  // ... and the same request again is fine (idempotent).
  EXPECT_TRUE(Publish(ro, true).ok());

  ASSERT_TRUE(Unpublish(ro).ok());
  ASSERT_TRUE(Unpublish(rw).ok());
  ASSERT_TRUE(Unstage().ok());
  ExpectNoLeaks();
}

TEST_F(CsiConditionTest, ConcurrentStagesNeverDoubleMount) {
  constexpr int kCalls = 6;
  std::vector<grpc::StatusCode> codes(kCalls);
  std::vector<std::thread> threads;
  for (int i = 0; i < kCalls; ++i) {
    threads.emplace_back(
        [this, i, &codes] { codes[i] = Stage().error_code(); });
  }
  for (std::thread& t : threads) t.join();
  int ok = 0;
  for (grpc::StatusCode c : codes) {
    EXPECT_TRUE(c == grpc::StatusCode::OK || c == grpc::StatusCode::ABORTED)
        << "code " << c;
    ok += c == grpc::StatusCode::OK;
  }
  EXPECT_GE(ok, 1);
  EXPECT_THAT(MountsUnder(staging_), ::testing::ElementsAre(staging_));
  EXPECT_EQ(LoopDevicesBackedUnder(state_dir_).size(), 1u);
  ASSERT_TRUE(Unstage().ok());
  ExpectNoLeaks();
}

TEST_F(CsiConditionTest, ConditionTurnsAbnormalWhenMountOrMediaVanish) {
  ASSERT_TRUE(Stage().ok());
  const std::string target = root_ + "/pods/t";
  ASSERT_TRUE(Publish(target, false).ok());

  csi::v1::NodeGetVolumeStatsRequest stats_req;
  stats_req.set_volume_id(vol_);
  stats_req.set_volume_path(target);
  csi::v1::NodeGetVolumeStatsResponse stats;
  ASSERT_TRUE(Call(&Node::Stub::NodeGetVolumeStats, stats_req, &stats).ok());
  EXPECT_FALSE(stats.volume_condition().abnormal());

  // Someone unmounts the publish behind the plugin's back.
  ASSERT_EQ(::umount2(target.c_str(), MNT_DETACH), 0);
  stats.Clear();
  grpc::Status s = Call(&Node::Stub::NodeGetVolumeStats, stats_req, &stats);
  if (s.ok()) {
    EXPECT_TRUE(stats.volume_condition().abnormal())
        << "target is no longer mounted: " << stats.DebugString();
  } else {
    EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << s.error_message();
  }
  ExpectAlive();

  // The backing file disappears.
  std::vector<std::string> loops = LoopDevicesBackedUnder(state_dir_);
  ASSERT_EQ(loops.size(), 1u);
  std::ifstream in("/sys/block/" + loops[0].substr(5) + "/loop/backing_file");
  std::string backing;
  ASSERT_TRUE(std::getline(in, backing));
  ASSERT_EQ(::unlink(backing.c_str()), 0) << backing;
  csi::v1::ControllerGetVolumeRequest get;
  get.set_volume_id(vol_);
  csi::v1::ControllerGetVolumeResponse got;
  s = Call(&Controller::Stub::ControllerGetVolume, get, &got);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(got.status().volume_condition().abnormal())
      << "backing file " << backing << " is gone: " << got.DebugString();
  ExpectAlive();

  // Cleanup still works.
  EXPECT_TRUE(Unpublish(target).ok());
  EXPECT_TRUE(Unstage().ok());
  csi::v1::DeleteVolumeRequest del;
  del.set_volume_id(vol_);
  csi::v1::DeleteVolumeResponse deleted;
  EXPECT_TRUE(Call(&Controller::Stub::DeleteVolume, del, &deleted).ok());
  ExpectNoLeaks();
}

}  // namespace
}  // namespace daxlease::testing
