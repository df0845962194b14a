// The node path against a hostile or broken host, with real mounts: a
// publish never binds a staging directory that is not the volume's mount,
// and staging/target paths never resolve through a symlink (the class of
// CVE-2021-25741: a symlink planted in a path makes the plugin mount,
// create or unmount outside the allowed roots).
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/csi_fixture.h"

namespace daxlease::testing {
namespace {

using csi::v1::Controller;
using csi::v1::Node;

class CsiNodePathTest : public CsiPluginTest {
 protected:
  int64_t CapacityBytes() const override { return int64_t{1} << 30; }

  std::string CreateVolume(const std::string& name) {
    csi::v1::CreateVolumeRequest create;
    create.set_name(name);
    create.mutable_capacity_range()->set_required_bytes(64 * kMiB);
    (*create.mutable_parameters())["csi.storage.k8s.io/fstype"] = "ext4";
    *create.add_volume_capabilities() = MountCap("ext4");
    csi::v1::CreateVolumeResponse created;
    grpc::Status s = Call(&Controller::Stub::CreateVolume, create, &created);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return created.volume().volume_id();
  }

  grpc::Status Stage(const std::string& vol, const std::string& staging) {
    csi::v1::NodeStageVolumeRequest r;
    r.set_volume_id(vol);
    r.set_staging_target_path(staging);
    *r.mutable_volume_capability() = MountCap("ext4");
    csi::v1::NodeStageVolumeResponse resp;
    return Call(&Node::Stub::NodeStageVolume, r, &resp);
  }
  grpc::Status Unstage(const std::string& vol, const std::string& staging) {
    csi::v1::NodeUnstageVolumeRequest r;
    r.set_volume_id(vol);
    r.set_staging_target_path(staging);
    csi::v1::NodeUnstageVolumeResponse resp;
    return Call(&Node::Stub::NodeUnstageVolume, r, &resp);
  }
  grpc::Status Publish(const std::string& vol, const std::string& staging,
                       const std::string& target) {
    csi::v1::NodePublishVolumeRequest r;
    r.set_volume_id(vol);
    r.set_staging_target_path(staging);
    r.set_target_path(target);
    *r.mutable_volume_capability() = MountCap("ext4");
    csi::v1::NodePublishVolumeResponse resp;
    return Call(&Node::Stub::NodePublishVolume, r, &resp);
  }
  grpc::Status Unpublish(const std::string& vol, const std::string& target) {
    csi::v1::NodeUnpublishVolumeRequest r;
    r.set_volume_id(vol);
    r.set_target_path(target);
    csi::v1::NodeUnpublishVolumeResponse resp;
    return Call(&Node::Stub::NodeUnpublishVolume, r, &resp);
  }
  grpc::Status Delete(const std::string& vol) {
    csi::v1::DeleteVolumeRequest r;
    r.set_volume_id(vol);
    csi::v1::DeleteVolumeResponse resp;
    return Call(&Controller::Stub::DeleteVolume, r, &resp);
  }

  static bool IsMountPoint(const std::string& path) {
    return !MountsUnder(path).empty() && MountsUnder(path).front() == path;
  }

  // Every entry below `dir` (paths relative to it), symlinks not followed.
  static std::set<std::string> Tree(const std::string& dir) {
    std::set<std::string> out;
    std::error_code ec;
    for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
         !ec && it != std::filesystem::recursive_directory_iterator();
         it.increment(ec)) {
      out.insert(std::filesystem::relative(it->path(), dir).string());
    }
    return out;
  }

  // `path` = root_ + "/" + parts joined; replaces parts[i] with a symlink
  // to `outside`, where the rest of the path (all but the last part) exists
  // as directories, so that following the symlink would work.
  void PlantSymlink(const std::vector<std::string>& parts, size_t i,
                    const std::string& outside) {
    std::string link = root_;
    for (size_t k = 0; k <= i; ++k) link += "/" + parts[k];
    std::string mirror = outside;
    for (size_t k = i + 1; k + 1 < parts.size(); ++k) mirror += "/" + parts[k];
    ASSERT_TRUE(MakeDirs(mirror).ok());
    std::string parent = link.substr(0, link.rfind('/'));
    ASSERT_TRUE(MakeDirs(parent).ok());
    ASSERT_EQ(::symlink(outside.c_str(), link.c_str()), 0) << link;
  }

  static std::string Join(const std::string& root,
                          const std::vector<std::string>& parts) {
    return root + "/" + absl::StrJoin(parts, "/");
  }
};

// The state a failed offline grow leaves (the record says Staged, nothing
// is mounted at the staging path; injected here by unmounting by hand),
// and a foreign mount at the staging path: a publish refuses both, so the
// pod never gets a host directory instead of its volume.
TEST_F(CsiNodePathTest, PublishRefusesAStagingPathThatIsNotTheVolume) {
  const std::string vol = CreateVolume("pvc-verify");
  ASSERT_FALSE(vol.empty());
  const std::string staging = root_ + "/staging/" + vol;
  const std::string target = root_ + "/pods/p1/" + vol;
  ASSERT_TRUE(MakeDirs(staging).ok());
  ASSERT_TRUE(MakeDirs(root_ + "/pods/p1").ok());
  grpc::Status s = Stage(vol, staging);
  ASSERT_TRUE(s.ok()) << s.error_message();

  ASSERT_EQ(::umount2(staging.c_str(), 0), 0) << "injecting the lost mount";
  s = Publish(vol, staging, target);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
      << s.error_message();
  EXPECT_FALSE(IsMountPoint(target)) << "bound the bare host directory";

  ASSERT_EQ(::mount("tmpfs", staging.c_str(), "tmpfs", 0, "size=1m"), 0);
  s = Publish(vol, staging, target);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
      << s.error_message();
  EXPECT_FALSE(IsMountPoint(target)) << "bound a foreign tmpfs";
  ASSERT_EQ(::umount2(staging.c_str(), 0), 0);

  // NodeStageVolume repairs the staging mount; then the publish works.
  s = Stage(vol, staging);
  ASSERT_TRUE(s.ok()) << s.error_message();
  s = Publish(vol, staging, target);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(IsMountPoint(target));
  ASSERT_TRUE(Unpublish(vol, target).ok());
  ASSERT_TRUE(Unstage(vol, staging).ok());
  ASSERT_TRUE(Delete(vol).ok());
  ExpectNoLeaks();
}

// A symlink at every component of the staging path, then of the target
// path, pointing out of the allowed root: every call is refused, nothing is
// mounted, made or removed outside the root.
TEST_F(CsiNodePathTest, SymlinkAtEveryComponentIsRefused) {
  const std::string vol = CreateVolume("pvc-symlinks");
  ASSERT_FALSE(vol.empty());
  const std::string outside_root = tmp_->path() + "/outside";
  ASSERT_TRUE(MakeDirs(outside_root).ok());

  const std::vector<std::string> staging_parts = {"plugins", "staging", vol};
  for (size_t i = 0; i < staging_parts.size(); ++i) {
    SCOPED_TRACE(absl::StrCat("symlink at staging component ", i));
    std::vector<std::string> parts = staging_parts;
    parts[0] = absl::StrCat("s", i);
    const std::string outside = absl::StrCat(outside_root, "/s", i);
    PlantSymlink(parts, i, outside);
    if (HasFatalFailure()) return;
    const std::set<std::string> before = Tree(outside_root);
    grpc::Status s = Stage(vol, Join(root_, parts));
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << s.error_message();
    EXPECT_TRUE(MountsUnder(outside_root).empty())
        << absl::StrJoin(MountsUnder(outside_root), ", ");
    EXPECT_EQ(Tree(outside_root), before) << "made something outside";
    ExpectAlive();
  }
  EXPECT_TRUE(LoopDevicesBackedUnder(state_dir_).empty())
      << "a refused stage left its device attached";

  // Staged where it should be, then published through planted symlinks.
  const std::string staging = root_ + "/plugins/staging/" + vol;
  ASSERT_TRUE(MakeDirs(staging).ok());
  grpc::Status s = Stage(vol, staging);
  ASSERT_TRUE(s.ok()) << s.error_message();
  const std::vector<std::string> target_parts = {"pods", "uid", "volumes", vol};
  for (size_t i = 0; i < target_parts.size(); ++i) {
    SCOPED_TRACE(absl::StrCat("symlink at target component ", i));
    std::vector<std::string> parts = target_parts;
    parts[0] = absl::StrCat("p", i);
    const std::string outside = absl::StrCat(outside_root, "/p", i);
    PlantSymlink(parts, i, outside);
    if (HasFatalFailure()) return;
    const std::set<std::string> before = Tree(outside_root);
    s = Publish(vol, staging, Join(root_, parts));
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << s.error_message();
    EXPECT_TRUE(MountsUnder(outside_root).empty())
        << absl::StrJoin(MountsUnder(outside_root), ", ");
    EXPECT_EQ(Tree(outside_root), before) << "made something outside";
    ExpectAlive();
  }

  // Published properly; then a parent of the target is swapped for a
  // symlink to a directory with a mount of its own (the victim). Unpublish
  // must not unmount or remove the victim.
  const std::string target = root_ + "/pods/ok/" + vol;
  ASSERT_TRUE(MakeDirs(root_ + "/pods/ok").ok());
  s = Publish(vol, staging, target);
  ASSERT_TRUE(s.ok()) << s.error_message();
  const std::string victim_dir = outside_root + "/victim";
  const std::string victim = victim_dir + "/" + vol;
  ASSERT_TRUE(MakeDirs(victim).ok());
  ASSERT_EQ(::mount("tmpfs", victim.c_str(), "tmpfs", 0, "size=1m"), 0);
  const std::string moved = root_ + "/pods/ok.moved";
  ASSERT_EQ(::rename((root_ + "/pods/ok").c_str(), moved.c_str()), 0);
  ASSERT_EQ(::symlink(victim_dir.c_str(), (root_ + "/pods/ok").c_str()), 0);
  s = Unpublish(vol, target);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
      << s.error_message();
  EXPECT_TRUE(IsMountPoint(victim)) << "unmounted the victim";
  // Put the host back and finish properly.
  ASSERT_EQ(::umount2(victim.c_str(), 0), 0);
  ASSERT_EQ(::unlink((root_ + "/pods/ok").c_str()), 0);
  ASSERT_EQ(::rename(moved.c_str(), (root_ + "/pods/ok").c_str()), 0);
  s = Unpublish(vol, target);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_TRUE(Unstage(vol, staging).ok());
  ASSERT_TRUE(Delete(vol).ok());
  ExpectNoLeaks();
}

}  // namespace
}  // namespace daxlease::testing
