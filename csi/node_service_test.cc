#include "csi/node_service.h"

#include "absl/strings/match.h"
#include "csi/service_test_env.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace daxlease::csi {
namespace {

using ::csi::v1::VolumeCapability;

class NodeTest : public ServiceTest {
 protected:
  // NodeExpandVolume of `id` at its staging path while the online grow is
  // refused (as for ext4 without CAP_SYS_RESOURCE).
  grpc::Status ExpandWithOnlineGrowthRefused(const std::string& id) {
    ::csi::v1::NodeExpandVolumeRequest r;
    r.set_volume_id(id);
    r.set_volume_path(StagingPath(id));
    ::csi::v1::NodeExpandVolumeResponse resp;
    formatter_.FailNext("Grow",
                        absl::PermissionDeniedError("no CAP_SYS_RESOURCE"));
    return node_->NodeExpandVolume(nullptr, &r, &resp);
  }
};

TEST_F(NodeTest, StageFormatsBlankDeviceOnceAndMounts) {
  std::string id = MakeVolume("pvc-s");
  ASSERT_TRUE(Stage(id, MountCap("ext4")).ok());
  EXPECT_EQ(formatter_.format_calls(), 1);
  std::vector<std::string> args = formatter_.last_format_args();
  EXPECT_NE(std::find(args.begin(), args.end(),
                      "stride=512,stripe_width=512,nodiscard"),
            args.end());
  auto m = mounter_.GetMount(StagingPath(id));
  ASSERT_TRUE(m.ok() && m->has_value());
  EXPECT_EQ((*m)->fs_type, "ext4");
  EXPECT_TRUE(backend_.IsAttached(id));
  EXPECT_EQ(Record(id)->stage->device, "/dev/fakeloop0");

  // Idempotent: no second mkfs, no second mount.
  int mounts = mounter_.mount_calls();
  ASSERT_TRUE(Stage(id, MountCap("ext4")).ok());
  EXPECT_EQ(formatter_.format_calls(), 1);
  EXPECT_EQ(mounter_.mount_calls(), mounts);
}

TEST_F(NodeTest, StageNeverFormatsADeviceWithData) {
  std::string id = MakeVolume("pvc-keep");
  ASSERT_TRUE(Stage(id, MountCap()).ok());
  ASSERT_TRUE(Unstage(id).ok());
  ASSERT_TRUE(Stage(id, MountCap()).ok());
  EXPECT_EQ(formatter_.format_calls(), 1) << "restage keeps the filesystem";

  std::string other = MakeVolume("pvc-other");
  formatter_.SetFilesystem("/dev/fakeloop1", "xfs");  // next device
  grpc::Status s = Stage(other, MountCap());
  EXPECT_EQ(s.error_code(), grpc::FAILED_PRECONDITION) << s.error_message();
  EXPECT_EQ(formatter_.format_calls(), 1);
  EXPECT_FALSE(backend_.IsAttached(other)) << "failed stage rolled back";
  EXPECT_FALSE(Record(other)->stage.has_value());
}

TEST_F(NodeTest, StageRefusals) {
  std::string id = MakeVolume("pvc-r");
  ::csi::v1::NodeStageVolumeRequest r;
  ::csi::v1::NodeStageVolumeResponse resp;
  r.set_staging_target_path(StagingPath(id));
  *r.mutable_volume_capability() = MountCap();
  EXPECT_EQ(node_->NodeStageVolume(nullptr, &r, &resp).error_code(),
            grpc::INVALID_ARGUMENT);
  r.set_volume_id(id);
  r.set_staging_target_path("/k/../etc");
  EXPECT_EQ(node_->NodeStageVolume(nullptr, &r, &resp).error_code(),
            grpc::INVALID_ARGUMENT);
  r.set_staging_target_path("/elsewhere/s");
  EXPECT_EQ(node_->NodeStageVolume(nullptr, &r, &resp).error_code(),
            grpc::INVALID_ARGUMENT);
  r.set_staging_target_path(StagingPath(id));
  r.clear_volume_capability();
  EXPECT_EQ(node_->NodeStageVolume(nullptr, &r, &resp).error_code(),
            grpc::INVALID_ARGUMENT);
  *r.mutable_volume_capability() = MountCap("xfs");
  EXPECT_EQ(node_->NodeStageVolume(nullptr, &r, &resp).error_code(),
            grpc::INVALID_ARGUMENT)
      << "fs type differs from the volume's";
  *r.mutable_volume_capability() =
      MountCap("", VolumeCapability::AccessMode::MULTI_NODE_MULTI_WRITER);
  EXPECT_EQ(node_->NodeStageVolume(nullptr, &r, &resp).error_code(),
            grpc::INVALID_ARGUMENT);
  r.set_volume_id("no-such-volume");
  *r.mutable_volume_capability() = MountCap();
  EXPECT_EQ(node_->NodeStageVolume(nullptr, &r, &resp).error_code(),
            grpc::NOT_FOUND);
  (*r.mutable_volume_context())["k"] = std::string(5000, 'v');
  r.set_volume_id(id);
  EXPECT_EQ(node_->NodeStageVolume(nullptr, &r, &resp).error_code(),
            grpc::INVALID_ARGUMENT);
  EXPECT_TRUE(mounter_.Mounts().empty());

  ASSERT_TRUE(Stage(id, MountCap()).ok());
  EXPECT_EQ(Stage(id, BlockCap()).error_code(), grpc::ALREADY_EXISTS);
  r.clear_volume_context();
  r.set_staging_target_path("/k/other-staging");
  EXPECT_EQ(node_->NodeStageVolume(nullptr, &r, &resp).error_code(),
            grpc::FAILED_PRECONDITION);
}

TEST_F(NodeTest, StageRepairsALostMount) {
  std::string id = MakeVolume("pvc-lost");
  ASSERT_TRUE(Stage(id, MountCap()).ok());
  mounter_.DropMount(StagingPath(id));
  ASSERT_TRUE(Stage(id, MountCap()).ok());
  auto m = mounter_.GetMount(StagingPath(id));
  ASSERT_TRUE(m.ok() && m->has_value());
  EXPECT_EQ(formatter_.format_calls(), 1);
}

TEST_F(NodeTest, PublishBindsReadOnlyAndIsIdempotent) {
  std::string id = MakeVolume("pvc-p");
  EXPECT_EQ(Publish(id, MountCap()).error_code(), grpc::FAILED_PRECONDITION)
      << "not staged";
  ASSERT_TRUE(Stage(id, MountCap()).ok());
  ASSERT_TRUE(Publish(id, MountCap(), /*read_only=*/true).ok());
  auto m = mounter_.GetMount(TargetPath(id));
  ASSERT_TRUE(m.ok() && m->has_value());
  EXPECT_TRUE((*m)->read_only);
  EXPECT_EQ((*m)->source, "/dev/fakeloop0");
  ASSERT_TRUE(Publish(id, MountCap(), true).ok());
  EXPECT_EQ(Publish(id, MountCap(), false).error_code(), grpc::ALREADY_EXISTS);
  EXPECT_EQ(Publish(id, BlockCap(), true).error_code(), grpc::INVALID_ARGUMENT);

  EXPECT_EQ(Unstage(id).error_code(), grpc::FAILED_PRECONDITION)
      << "still published";
  ASSERT_TRUE(Unpublish(id).ok());
  EXPECT_FALSE(mounter_.PathExists(TargetPath(id)));
  ASSERT_TRUE(Unpublish(id).ok());
  ASSERT_TRUE(Unstage(id).ok());
  ASSERT_TRUE(Unstage(id).ok());
  EXPECT_FALSE(backend_.IsAttached(id));
  EXPECT_TRUE(mounter_.Mounts().empty());
}

TEST_F(NodeTest, ReaderOnlyAccessModePublishesReadOnly) {
  std::string id = MakeVolume("pvc-ro");
  auto cap =
      MountCap("", VolumeCapability::AccessMode::SINGLE_NODE_READER_ONLY);
  ASSERT_TRUE(Stage(id, cap).ok());
  ASSERT_TRUE(Publish(id, cap).ok());
  auto m = mounter_.GetMount(TargetPath(id));
  ASSERT_TRUE(m.ok() && m->has_value());
  EXPECT_TRUE((*m)->read_only);
}

TEST_F(NodeTest, BlockStageSkipsMkfsAndPublishBindsTheDevice) {
  std::string id = MakeVolume("pvc-b");
  ASSERT_TRUE(Stage(id, BlockCap()).ok());
  EXPECT_EQ(formatter_.format_calls(), 0);
  EXPECT_TRUE(mounter_.Mounts().empty());
  ASSERT_TRUE(Publish(id, BlockCap()).ok());
  auto m = mounter_.GetMount(TargetPath(id));
  ASSERT_TRUE(m.ok() && m->has_value());
  EXPECT_EQ((*m)->root, "/dev/fakeloop0");
  ASSERT_TRUE(Publish(id, BlockCap()).ok());

  ::csi::v1::NodeGetVolumeStatsRequest r;
  r.set_volume_id(id);
  r.set_volume_path(TargetPath(id));
  ::csi::v1::NodeGetVolumeStatsResponse resp;
  ASSERT_TRUE(node_->NodeGetVolumeStats(nullptr, &r, &resp).ok());
  ASSERT_EQ(resp.usage_size(), 1);
  EXPECT_EQ(resp.usage(0).total(), static_cast<int64_t>(64 * kMiB));
  EXPECT_FALSE(resp.volume_condition().abnormal());
}

TEST_F(NodeTest, StatsBytesInodesAndAbnormalConditions) {
  std::string id = MakeVolume("pvc-st");
  ASSERT_TRUE(Stage(id, MountCap()).ok());
  ASSERT_TRUE(Publish(id, MountCap()).ok());
  sys::FsUsage u;
  u.total_bytes = 1000;
  u.available_bytes = 600;
  u.used_bytes = 400;
  u.total_inodes = 50;
  u.free_inodes = 40;
  u.used_inodes = 10;
  mounter_.SetUsage(u);
  ::csi::v1::NodeGetVolumeStatsRequest r;
  r.set_volume_id(id);
  r.set_volume_path(TargetPath(id));
  ::csi::v1::NodeGetVolumeStatsResponse resp;
  ASSERT_TRUE(node_->NodeGetVolumeStats(nullptr, &r, &resp).ok());
  ASSERT_EQ(resp.usage_size(), 2);
  EXPECT_EQ(resp.usage(0).unit(), ::csi::v1::VolumeUsage::BYTES);
  EXPECT_EQ(resp.usage(0).total(), 1000);
  EXPECT_EQ(resp.usage(0).used(), 400);
  EXPECT_EQ(resp.usage(1).unit(), ::csi::v1::VolumeUsage::INODES);
  EXPECT_EQ(resp.usage(1).available(), 40);
  EXPECT_FALSE(resp.volume_condition().abnormal());

  mounter_.DropMount(TargetPath(id));
  resp.Clear();
  ASSERT_TRUE(node_->NodeGetVolumeStats(nullptr, &r, &resp).ok());
  EXPECT_TRUE(resp.volume_condition().abnormal());
  EXPECT_TRUE(
      absl::StrContains(resp.volume_condition().message(), "not mounted"));

  backend_.DropMedia(id);
  resp.Clear();
  ASSERT_TRUE(node_->NodeGetVolumeStats(nullptr, &r, &resp).ok());
  EXPECT_TRUE(resp.volume_condition().abnormal());
  EXPECT_TRUE(absl::StrContains(resp.volume_condition().message(), "gone"));

  r.set_volume_path("/k/somewhere-else");
  EXPECT_EQ(node_->NodeGetVolumeStats(nullptr, &r, &resp).error_code(),
            grpc::NOT_FOUND);
}

TEST_F(NodeTest, NodeExpandRefreshesAndGrows) {
  std::string id = MakeVolume("pvc-x");
  ASSERT_TRUE(Stage(id, MountCap()).ok());
  ASSERT_TRUE(Publish(id, MountCap()).ok());
  ::csi::v1::ControllerExpandVolumeRequest ce;
  ce.set_volume_id(id);
  ce.mutable_capacity_range()->set_required_bytes(128 * kMiB);
  ::csi::v1::ControllerExpandVolumeResponse ceresp;
  ASSERT_TRUE(controller_->ControllerExpandVolume(nullptr, &ce, &ceresp).ok());

  ::csi::v1::NodeExpandVolumeRequest r;
  r.set_volume_id(id);
  r.set_volume_path(TargetPath(id));
  r.mutable_capacity_range()->set_required_bytes(128 * kMiB);
  ::csi::v1::NodeExpandVolumeResponse resp;
  ASSERT_TRUE(node_->NodeExpandVolume(nullptr, &r, &resp).ok());
  EXPECT_EQ(resp.capacity_bytes(), static_cast<int64_t>(128 * kMiB));
  EXPECT_EQ(formatter_.grow_calls(), 1);
  ASSERT_TRUE(node_->NodeExpandVolume(nullptr, &r, &resp).ok());

  r.mutable_capacity_range()->set_required_bytes(512 * kMiB);
  EXPECT_EQ(node_->NodeExpandVolume(nullptr, &r, &resp).error_code(),
            grpc::OUT_OF_RANGE);
  r.clear_capacity_range();
  r.set_volume_path("/k/not-this-volume");
  EXPECT_EQ(node_->NodeExpandVolume(nullptr, &r, &resp).error_code(),
            grpc::NOT_FOUND);
  r.set_volume_path("");
  EXPECT_EQ(node_->NodeExpandVolume(nullptr, &r, &resp).error_code(),
            grpc::INVALID_ARGUMENT);
}

TEST_F(NodeTest, OfflineGrowthOnADaxBackendMountsWithDaxAgain) {
  backend_.set_provides_dax(true);
  std::string id = MakeVolume("pvc-offdax");
  ASSERT_TRUE(Stage(id, MountCap()).ok());
  auto m = mounter_.GetMount(StagingPath(id));
  ASSERT_TRUE(m.ok() && m->has_value());
  ASSERT_TRUE(absl::StrContains((*m)->fs_options, "dax"));
  ASSERT_TRUE(ExpandWithOnlineGrowthRefused(id).ok());
  m = mounter_.GetMount(StagingPath(id));
  ASSERT_TRUE(m.ok() && m->has_value()) << "staging mount is back";
  EXPECT_TRUE(absl::StrContains((*m)->fs_options, "dax"))
      << "remounted without DAX: " << (*m)->fs_options;
}

TEST_F(NodeTest,
       Ext4GrowsOfflineWhenOnlineResizeIsRefusedAndNothingIsPublished) {
  std::string id = MakeVolume("pvc-off");
  ASSERT_TRUE(Stage(id, MountCap()).ok());
  ASSERT_TRUE(ExpandWithOnlineGrowthRefused(id).ok());
  EXPECT_EQ(formatter_.grow_calls(), 1) << "offline grow after the refusal";
  auto m = mounter_.GetMount(StagingPath(id));
  ASSERT_TRUE(m.ok() && m->has_value()) << "staging mount is back";

  ASSERT_TRUE(Publish(id, MountCap()).ok());
  grpc::Status refused = ExpandWithOnlineGrowthRefused(id);
  EXPECT_EQ(refused.error_code(), grpc::FAILED_PRECONDITION)
      << "published: the filesystem cannot be taken offline";
  EXPECT_THAT(refused.error_message(),
              ::testing::HasSubstr("no CAP_SYS_RESOURCE"));
  EXPECT_THAT(refused.error_message(),
              ::testing::HasSubstr("staged but not published"));
  EXPECT_EQ(formatter_.grow_calls(), 1) << "no offline attempt while published";
  m = mounter_.GetMount(TargetPath(id));
  ASSERT_TRUE(m.ok() && m->has_value());
}

// A failed offline grow (its remount refused) leaves the record Staged with
// nothing mounted at the staging path. Publishing then must not bind the
// empty directory into the pod: the pod's writes would land on the host.
TEST_F(NodeTest, PublishRefusesAStagingPathThatLostItsMount) {
  std::string id = MakeVolume("pvc-lostgrow");
  ASSERT_TRUE(Stage(id, MountCap()).ok());
  mounter_.FailNext("Mount", absl::InternalError("remount refused"));
  EXPECT_FALSE(ExpandWithOnlineGrowthRefused(id).ok());
  ASSERT_TRUE(Record(id)->stage.has_value());
  auto m = mounter_.GetMount(StagingPath(id));
  ASSERT_TRUE(m.ok() && !m->has_value()) << "the injected failure";

  grpc::Status s = Publish(id, MountCap());
  EXPECT_EQ(s.error_code(), grpc::FAILED_PRECONDITION) << s.error_message();
  EXPECT_THAT(s.error_message(), ::testing::HasSubstr("NodeStageVolume"));
  m = mounter_.GetMount(TargetPath(id));
  ASSERT_TRUE(m.ok());
  EXPECT_FALSE(m->has_value()) << "bound " << (*m)->source << " into the pod";
  EXPECT_TRUE(Record(id)->publishes.empty());

  // Staging again repairs the mount; then the publish goes through.
  ASSERT_TRUE(Stage(id, MountCap()).ok());
  ASSERT_TRUE(Publish(id, MountCap()).ok());
  m = mounter_.GetMount(TargetPath(id));
  ASSERT_TRUE(m.ok() && m->has_value());
  EXPECT_EQ((*m)->source, Record(id)->stage->device);
}

// Something else mounted at the staging path (another device, or another
// filesystem type) is not the volume either.
TEST_F(NodeTest, PublishRefusesAStagingPathWithAnotherMount) {
  std::string id = MakeVolume("pvc-othermount");
  ASSERT_TRUE(Stage(id, MountCap()).ok());
  mounter_.DropMount(StagingPath(id));
  ASSERT_TRUE(mounter_.Mount("tmpfs", StagingPath(id), "tmpfs", "").ok());
  EXPECT_EQ(Publish(id, MountCap()).error_code(), grpc::FAILED_PRECONDITION);

  mounter_.DropMount(StagingPath(id));
  const std::string dev = Record(id)->stage->device;
  ASSERT_TRUE(mounter_.Mount(dev, StagingPath(id), "xfs", "").ok());
  EXPECT_EQ(Publish(id, MountCap()).error_code(), grpc::FAILED_PRECONDITION)
      << "the volume is ext4";
  auto m = mounter_.GetMount(TargetPath(id));
  ASSERT_TRUE(m.ok());
  EXPECT_FALSE(m->has_value());
}

TEST_F(NodeTest, FailedPublishRollsBack) {
  std::string id = MakeVolume("pvc-fp");
  ASSERT_TRUE(Stage(id, MountCap()).ok());
  mounter_.FailNext("BindMount", absl::InternalError("bind failed"));
  EXPECT_EQ(Publish(id, MountCap()).error_code(), grpc::INTERNAL);
  EXPECT_TRUE(Record(id)->publishes.empty());
  EXPECT_FALSE(mounter_.PathExists(TargetPath(id)));
  EXPECT_TRUE(Publish(id, MountCap()).ok());
}

TEST_F(NodeTest, ConcurrentCallOnOneVolumeIsAborted) {
  std::string id = MakeVolume("pvc-c");
  auto held = locks_->TryLock(id);
  ASSERT_TRUE(held.ok());
  grpc::Status s = Stage(id, MountCap());
  EXPECT_EQ(s.error_code(), grpc::ABORTED);
  EXPECT_TRUE(absl::StrContains(s.error_message(), id));
}

// csi-sanity's NodeGetVolumeStats / NodeExpandVolume cases: a volume_path
// where the volume is not (csi-sanity sends the relative "some/path") is
// NOT_FOUND whether the volume exists or not; only a missing or malformed
// path is INVALID_ARGUMENT.
TEST_F(NodeTest, StatsAndExpandOnAPathWhereTheVolumeIsNotAreNotFound) {
  std::string id = MakeVolume("pvc-sanity");
  ASSERT_TRUE(Stage(id, MountCap()).ok());
  ASSERT_TRUE(Publish(id, MountCap()).ok());
  for (const std::string& vol : {std::string("fake-vol-id-0123456789"), id}) {
    for (const char* path : {"some/path", "/outside/the/roots", "/k/other"}) {
      ::csi::v1::NodeGetVolumeStatsRequest sr;
      sr.set_volume_id(vol);
      sr.set_volume_path(path);
      ::csi::v1::NodeGetVolumeStatsResponse sresp;
      grpc::Status s = node_->NodeGetVolumeStats(nullptr, &sr, &sresp);
      EXPECT_EQ(s.error_code(), grpc::NOT_FOUND)
          << vol << " " << path << ": " << s.error_message();

      ::csi::v1::NodeExpandVolumeRequest er;
      er.set_volume_id(vol);
      er.set_volume_path(path);
      ::csi::v1::NodeExpandVolumeResponse eresp;
      s = node_->NodeExpandVolume(nullptr, &er, &eresp);
      EXPECT_EQ(s.error_code(), grpc::NOT_FOUND)
          << vol << " " << path << ": " << s.error_message();
    }
    ::csi::v1::NodeGetVolumeStatsRequest sr;
    sr.set_volume_id(vol);
    sr.set_volume_path("/k/../etc");
    ::csi::v1::NodeGetVolumeStatsResponse sresp;
    EXPECT_EQ(node_->NodeGetVolumeStats(nullptr, &sr, &sresp).error_code(),
              grpc::INVALID_ARGUMENT);
    sr.clear_volume_path();
    EXPECT_EQ(node_->NodeGetVolumeStats(nullptr, &sr, &sresp).error_code(),
              grpc::INVALID_ARGUMENT);
  }
  EXPECT_EQ(formatter_.grow_calls(), 0) << "nothing grew on a wrong path";
}

TEST_F(NodeTest, InfoAndCapabilities) {
  ::csi::v1::NodeGetInfoRequest ir;
  ::csi::v1::NodeGetInfoResponse info;
  ASSERT_TRUE(node_->NodeGetInfo(nullptr, &ir, &info).ok());
  EXPECT_EQ(info.node_id(), "node-a");
  EXPECT_EQ(info.max_volumes_per_node(), 7);
  EXPECT_EQ(info.accessible_topology().segments().at("daxlease.io/node"),
            "node-a");
  ::csi::v1::NodeGetCapabilitiesRequest cr;
  ::csi::v1::NodeGetCapabilitiesResponse caps;
  ASSERT_TRUE(node_->NodeGetCapabilities(nullptr, &cr, &caps).ok());
  std::set<int> got;
  for (const auto& c : caps.capabilities()) got.insert(c.rpc().type());
  using Rpc = ::csi::v1::NodeServiceCapability::RPC;
  EXPECT_EQ(got,
            (std::set<int>{Rpc::STAGE_UNSTAGE_VOLUME, Rpc::GET_VOLUME_STATS,
                           Rpc::EXPAND_VOLUME, Rpc::VOLUME_CONDITION}));

  backend_.SetSupportsExpansion(false);  // ndctl: no in-place growth
  caps.Clear();
  ASSERT_TRUE(node_->NodeGetCapabilities(nullptr, &cr, &caps).ok());
  got.clear();
  for (const auto& c : caps.capabilities()) got.insert(c.rpc().type());
  EXPECT_EQ(got, (std::set<int>{Rpc::STAGE_UNSTAGE_VOLUME,
                                Rpc::GET_VOLUME_STATS, Rpc::VOLUME_CONDITION}));
}

}  // namespace
}  // namespace daxlease::csi
