// kill -9 in the middle of an operation: wherever the kill lands (the delays
// below spread it over the call), the restarted plugin must finish or undo
// the half-done work on the next call, leak nothing, and keep the data.
#include <filesystem>
#include <string>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/csi_fixture.h"

namespace daxlease::testing {
namespace {

using csi::v1::Controller;
using csi::v1::Node;

class CsiCrashTest : public CsiPluginTest,
                     public ::testing::WithParamInterface<int> {
 protected:
  // Runs `call` on a thread, kills the plugin after `delay_ms`, restarts it.
  template <typename F>
  void KillDuring(F call, int delay_ms) {
    std::thread t(call);
    absl::SleepFor(absl::Milliseconds(delay_ms));
    ASSERT_TRUE(plugin_->Kill9().ok());
    t.join();  // the call ends with OK or UNAVAILABLE
    CrashAndRestart();
  }

  grpc::Status Stage(const std::string& vol, const std::string& staging) {
    csi::v1::NodeStageVolumeRequest req;
    req.set_volume_id(vol);
    req.set_staging_target_path(staging);
    *req.mutable_volume_capability() = MountCap("ext4");
    csi::v1::NodeStageVolumeResponse resp;
    return CallOn(channel_, &Node::Stub::NodeStageVolume, req, &resp);
  }

  grpc::Status Publish(const std::string& vol, const std::string& staging,
                       const std::string& target) {
    csi::v1::NodePublishVolumeRequest req;
    req.set_volume_id(vol);
    req.set_staging_target_path(staging);
    req.set_target_path(target);
    *req.mutable_volume_capability() = MountCap("ext4");
    csi::v1::NodePublishVolumeResponse resp;
    return CallOn(channel_, &Node::Stub::NodePublishVolume, req, &resp);
  }
  grpc::Status Unpublish(const std::string& vol, const std::string& target) {
    csi::v1::NodeUnpublishVolumeRequest req;
    req.set_volume_id(vol);
    req.set_target_path(target);
    csi::v1::NodeUnpublishVolumeResponse resp;
    return CallOn(channel_, &Node::Stub::NodeUnpublishVolume, req, &resp);
  }

  grpc::Status Unstage(const std::string& vol, const std::string& staging) {
    csi::v1::NodeUnstageVolumeRequest req;
    req.set_volume_id(vol);
    req.set_staging_target_path(staging);
    csi::v1::NodeUnstageVolumeResponse resp;
    return CallOn(channel_, &Node::Stub::NodeUnstageVolume, req, &resp);
  }

  template <typename Stub, typename Req, typename Resp>
  static grpc::Status CallOn(std::shared_ptr<grpc::Channel> ch,
                             grpc::Status (Stub::*fn)(grpc::ClientContext*,
                                                      const Req&, Resp*),
                             const Req& req, Resp* resp) {
    Stub stub(ch);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(60));
    return (stub.*fn)(&ctx, req, resp);
  }

  std::shared_ptr<grpc::Channel> channel_;
};

TEST_P(CsiCrashTest, KillDuringStageAndUnstageThenRecover) {
  const int delay_ms = GetParam();
  csi::v1::CreateVolumeRequest create;
  create.set_name("pvc-crash");
  create.mutable_capacity_range()->set_required_bytes(64 * kMiB);
  *create.add_volume_capabilities() = MountCap("ext4");
  csi::v1::CreateVolumeResponse created;
  ASSERT_TRUE(Call(&Controller::Stub::CreateVolume, create, &created).ok());
  const std::string vol = created.volume().volume_id();
  const std::string staging = root_ + "/staging/" + vol;
  ASSERT_TRUE(MakeDirs(staging).ok());

  // Killed during NodeStageVolume; the retry completes it.
  channel_ = plugin_->channel();
  KillDuring([&] { (void)Stage(vol, staging); }, delay_ms);
  if (HasFatalFailure()) return;
  channel_ = plugin_->channel();
  grpc::Status s = Stage(vol, staging);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_THAT(MountsUnder(staging), ::testing::ElementsAre(staging));
  EXPECT_EQ(LoopDevicesBackedUnder(state_dir_).size(), 1u);
  const std::string data = Pattern(64 * 1024, 3);
  ASSERT_TRUE(WriteAndSync(staging + "/data.bin", 0, data).ok());

  // Killed during NodePublishVolume (its entry is written without fsync),
  // then during NodeUnpublishVolume; each retry completes the call.
  const std::string target = root_ + "/pods/" + vol;
  KillDuring([&] { (void)Publish(vol, staging, target); }, delay_ms / 4);
  if (HasFatalFailure()) return;
  channel_ = plugin_->channel();
  s = Publish(vol, staging, target);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_THAT(MountsUnder(target), ::testing::ElementsAre(target));
  auto seen = ReadAt(target + "/data.bin", 0, data.size());
  ASSERT_TRUE(seen.ok()) << seen.status();
  EXPECT_TRUE(*seen == data);
  KillDuring([&] { (void)Unpublish(vol, target); }, delay_ms / 4);
  if (HasFatalFailure()) return;
  channel_ = plugin_->channel();
  s = Unpublish(vol, target);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_THAT(MountsUnder(target), ::testing::IsEmpty());

  // Killed during NodeUnstageVolume; the retry completes it.
  KillDuring([&] { (void)Unstage(vol, staging); }, delay_ms / 4);
  if (HasFatalFailure()) return;
  channel_ = plugin_->channel();
  s = Unstage(vol, staging);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ExpectNoLeaks();

  // The filesystem survived both crashes: staging again keeps the data.
  s = Stage(vol, staging);
  ASSERT_TRUE(s.ok()) << s.error_message();
  auto back = ReadAt(staging + "/data.bin", 0, data.size());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(*back == data);
  ASSERT_TRUE(Unstage(vol, staging).ok());

  // Killed during DeleteVolume; the retry completes it.
  csi::v1::DeleteVolumeRequest del;
  del.set_volume_id(vol);
  KillDuring(
      [&] {
        csi::v1::DeleteVolumeResponse r;
        (void)CallOn(channel_, &Controller::Stub::DeleteVolume, del, &r);
      },
      delay_ms / 8);
  if (HasFatalFailure()) return;
  channel_ = plugin_->channel();
  csi::v1::DeleteVolumeResponse deleted;
  s = CallOn(channel_, &Controller::Stub::DeleteVolume, del, &deleted);
  ASSERT_TRUE(s.ok()) << s.error_message();
  csi::v1::ListVolumesResponse list;
  ASSERT_TRUE(
      Call(&Controller::Stub::ListVolumes, csi::v1::ListVolumesRequest(), &list)
          .ok());
  EXPECT_EQ(list.entries_size(), 0) << list.DebugString();
  ExpectNoLeaks();
}

// The volume images under the state directory (file backend).
std::vector<std::string> Images(const std::string& state_dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e :
       std::filesystem::directory_iterator(state_dir + "/volumes", ec)) {
    out.push_back(e.path().filename().string());
  }
  return out;
}

TEST_P(CsiCrashTest,
       KillDuringCreateThenTheRetryFinishesAndDeleteLeavesNothing) {
  const int delay_ms = GetParam() / 4;
  csi::v1::CreateVolumeRequest create;
  create.set_name("pvc-crash-create");
  create.mutable_capacity_range()->set_required_bytes(512 * kMiB);
  *create.add_volume_capabilities() = MountCap("ext4");
  channel_ = plugin_->channel();
  KillDuring(
      [&] {
        csi::v1::CreateVolumeResponse r;
        (void)CallOn(channel_, &Controller::Stub::CreateVolume, create, &r);
      },
      delay_ms);
  if (HasFatalFailure()) return;
  // Whatever the kill left (nothing, a creating record, its image) is
  // finished by the CO's retry into one volume, never two, never an error.
  channel_ = plugin_->channel();
  csi::v1::CreateVolumeResponse created;
  grpc::Status s =
      CallOn(channel_, &Controller::Stub::CreateVolume, create, &created);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_GE(created.volume().capacity_bytes(), 512 * kMiB);
  EXPECT_EQ(Images(state_dir_).size(), 1u);
  csi::v1::ListVolumesResponse list;
  ASSERT_TRUE(
      Call(&Controller::Stub::ListVolumes, csi::v1::ListVolumesRequest(), &list)
          .ok());
  ASSERT_EQ(list.entries_size(), 1) << list.DebugString();
  EXPECT_EQ(list.entries(0).volume().volume_id(), created.volume().volume_id());

  csi::v1::DeleteVolumeRequest del;
  del.set_volume_id(created.volume().volume_id());
  csi::v1::DeleteVolumeResponse deleted;
  s = CallOn(channel_, &Controller::Stub::DeleteVolume, del, &deleted);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_THAT(Images(state_dir_), ::testing::IsEmpty());
  ExpectNoLeaks();
}

INSTANTIATE_TEST_SUITE_P(KillAfterMs, CsiCrashTest,
                         ::testing::Values(0, 10, 25, 50, 100));

}  // namespace
}  // namespace daxlease::testing
