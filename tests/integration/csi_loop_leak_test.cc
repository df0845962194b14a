// Loop devices a killed plugin leaves behind (file backend). The plugin can
// die between attaching a loop and recording it, or before NodeUnstage; its
// pod's mounts are then torn down by others (the kubelet, a node reboot
// script), and its state directory may be deleted. None of that may leave a
// loop device attached: a staged filesystem's loop goes with its last mount
// (autoclear), and start-up detaches loops over images of its own volume
// directory that were deleted, or were attached through a mount that is gone
// (a previous container's), and never a loop of anyone else.
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/mount.h>

#include <filesystem>
#include <string>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "lib/sys/fd.h"
#include "lib/sys/file.h"
#include "lib/sys/loop_device.h"
#include "tests/integration/csi_fixture.h"

namespace daxlease::testing {
namespace {

using csi::v1::Controller;
using csi::v1::Node;

class CsiLoopLeakTest : public CsiPluginTest {
 protected:
  std::string CreateVolume(const std::string& name) {
    csi::v1::CreateVolumeRequest create;
    create.set_name(name);
    create.mutable_capacity_range()->set_required_bytes(64 * kMiB);
    *create.add_volume_capabilities() = MountCap("ext4");
    csi::v1::CreateVolumeResponse created;
    grpc::Status s = Call(&Controller::Stub::CreateVolume, create, &created);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return created.volume().volume_id();
  }

  grpc::Status Stage(const std::string& vol, const std::string& staging,
                     bool block) {
    csi::v1::NodeStageVolumeRequest req;
    req.set_volume_id(vol);
    req.set_staging_target_path(staging);
    *req.mutable_volume_capability() = block ? BlockCap() : MountCap("ext4");
    csi::v1::NodeStageVolumeResponse resp;
    return Call(&Node::Stub::NodeStageVolume, req, &resp);
  }

  grpc::Status Unstage(const std::string& vol, const std::string& staging) {
    csi::v1::NodeUnstageVolumeRequest req;
    req.set_volume_id(vol);
    req.set_staging_target_path(staging);
    csi::v1::NodeUnstageVolumeResponse resp;
    return Call(&Node::Stub::NodeUnstageVolume, req, &resp);
  }

  grpc::Status Delete(const std::string& vol) {
    csi::v1::DeleteVolumeRequest req;
    req.set_volume_id(vol);
    csi::v1::DeleteVolumeResponse resp;
    return Call(&Controller::Stub::DeleteVolume, req, &resp);
  }

  std::string Image(const std::string& vol) const {
    return state_dir_ + "/volumes/" + vol + ".img";
  }
};

TEST_F(CsiLoopLeakTest,
       AStagedFilesystemsLoopGoesWithItsMountOnceThePluginIsGone) {
  const std::string vol = CreateVolume("pvc-autoclear");
  const std::string staging = root_ + "/staging/" + vol;
  ASSERT_TRUE(MakeDirs(staging).ok());
  grpc::Status s = Stage(vol, staging, /*block=*/false);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(LoopDevicesBackedUnder(state_dir_).size(), 1u);

  // The plugin dies; the staging mount is torn down without it (the
  // kubelet's orphan cleanup, a cluster's teardown).
  ASSERT_TRUE(plugin_->Kill9().ok());
  ASSERT_EQ(::umount2(staging.c_str(), 0), 0) << strerror(errno);
  // The kernel releases the device when the superblock's last reference
  // goes, which may be just after umount2 returns.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!LoopDevicesBackedUnder(state_dir_).empty() &&
         absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_TRUE(LoopDevicesBackedUnder(state_dir_).empty())
      << "the loop outlived its only mount: "
      << absl::StrJoin(LoopDevicesBackedUnder(state_dir_), ", ");

  // The restarted plugin finishes the unstage and the delete.
  StartPlugin();
  s = Unstage(vol, staging);
  ASSERT_TRUE(s.ok()) << s.error_message();
  s = Delete(vol);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ExpectNoLeaks();
}

TEST_F(CsiLoopLeakTest, StartUpDetachesTheLoopOfAnImageThatWasDeleted) {
  const std::string vol = CreateVolume("pvc-deleted-image");
  const std::string staging = root_ + "/staging/" + vol;
  grpc::Status s = Stage(vol, staging, /*block=*/true);  // attach, no mount
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(LoopDevicesBackedUnder(state_dir_).size(), 1u);

  // A loop of someone else over a deleted file beside the state directory:
  // the plugin must leave it alone.
  const std::string foreign = tmp_->path() + "/foreign.img";
  ASSERT_TRUE(sys::Fallocate(foreign, 16 * kMiB).ok());
  auto foreign_dev = sys::AttachLoop(foreign);
  ASSERT_TRUE(foreign_dev.ok()) << foreign_dev.status();
  ASSERT_TRUE(sys::RemoveFile(foreign).ok());

  // The plugin dies and its state directory is wiped (records and images).
  ASSERT_TRUE(plugin_->Kill9().ok());
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(state_dir_, ec)) {
    std::filesystem::remove_all(e.path(), ec);
  }
  StartPlugin();
  EXPECT_TRUE(LoopDevicesBackedUnder(state_dir_).empty())
      << "a loop over a deleted image of the plugin's survived its start: "
      << absl::StrJoin(LoopDevicesBackedUnder(state_dir_), ", ");
  auto still = sys::FindLoopByBackingFile(foreign);
  ASSERT_TRUE(still.ok()) << still.status();
  EXPECT_EQ(still->value_or(""), *foreign_dev)
      << "the plugin detached a loop that is not its own";
  ASSERT_TRUE(sys::DetachLoop(*foreign_dev).ok());
}

TEST_F(CsiLoopLeakTest,
       AfterARestartThroughANewMountTheOldLoopIsFoundAndDetached) {
  // The plugin sees its state directory through a mount of its own (a
  // container's hostPath bind mount), which goes when it dies; its
  // successor sees the same directory through a new one. The kernel then
  // names the old loop's backing file relative to the dead mount.
  ASSERT_TRUE(plugin_->Terminate().ok());
  const std::string real = tmp_->path() + "/real-state";
  ASSERT_TRUE(MakeDirs(real).ok());
  ASSERT_EQ(
      ::mount(real.c_str(), state_dir_.c_str(), nullptr, MS_BIND, nullptr), 0)
      << strerror(errno);
  StartPlugin();
  const std::string vol = CreateVolume("pvc-new-mount");
  const std::string staging = root_ + "/staging/" + vol;
  grpc::Status s = Stage(vol, staging, /*block=*/true);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(LoopDevicesBackedUnder(state_dir_).size(), 1u);

  ASSERT_TRUE(plugin_->Kill9().ok());
  ASSERT_EQ(::umount2(state_dir_.c_str(), MNT_DETACH), 0) << strerror(errno);
  ASSERT_EQ(
      ::mount(real.c_str(), state_dir_.c_str(), nullptr, MS_BIND, nullptr), 0)
      << strerror(errno);
  StartPlugin();
  // A repeated stage uses the loop it has, not a second one.
  s = Stage(vol, staging, /*block=*/true);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(LoopDevicesBackedUnder(state_dir_).size(), 1u)
      << absl::StrJoin(LoopDevicesBackedUnder(state_dir_), ", ");
  s = Unstage(vol, staging);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(LoopDevicesBackedUnder(state_dir_).empty())
      << "NodeUnstageVolume left the old loop attached: "
      << absl::StrJoin(LoopDevicesBackedUnder(state_dir_), ", ");
  s = Delete(vol);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_TRUE(plugin_->Terminate().ok());
  plugin_.reset();
  EXPECT_EQ(::umount2(state_dir_.c_str(), 0), 0) << strerror(errno);
}

}  // namespace
}  // namespace daxlease::testing
