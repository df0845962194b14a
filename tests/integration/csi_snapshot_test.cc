// Snapshots, restores and clones on the real plugin (file backend, real
// images, loop devices, ext4 and mounts): the data a holder wrote and
// fsynced before the snapshot is in it, and nothing written after; a
// restore may be larger (the filesystem grows) but not smaller; a snapshot
// survives kill -9 of the plugin; and kill -9 in the middle of the copy
// leaves no snapshot (not a half-ready one) and no frozen filesystem.
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <filesystem>
#include <set>
#include <string>
#include <thread>

#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/csi_fixture.h"

namespace daxlease::testing {
namespace {

using csi::v1::Controller;
using csi::v1::Node;

class CsiSnapshotTest : public CsiPluginTest {
 protected:
  std::string CreateVolume(const std::string& name, int64_t bytes,
                           const csi::v1::VolumeContentSource* source,
                           grpc::Status* status = nullptr,
                           csi::v1::CreateVolumeResponse* out = nullptr,
                           const std::string& fs = "ext4") {
    csi::v1::CreateVolumeRequest req;
    req.set_name(name);
    if (bytes > 0) req.mutable_capacity_range()->set_required_bytes(bytes);
    *req.add_volume_capabilities() = MountCap(fs);
    if (source != nullptr) *req.mutable_volume_content_source() = *source;
    csi::v1::CreateVolumeResponse resp;
    grpc::Status s = Call(&Controller::Stub::CreateVolume, req, &resp);
    if (status != nullptr) *status = s;
    if (out != nullptr) *out = resp;
    if (status == nullptr) {
      EXPECT_TRUE(s.ok()) << name << ": " << s.error_message();
    }
    return resp.volume().volume_id();
  }

  // Stages `vol` (a mount of `fs`) and returns the staging path.
  std::string Stage(const std::string& vol, const std::string& fs = "ext4") {
    const std::string staging = root_ + "/staging/" + vol;
    EXPECT_TRUE(MakeDirs(staging).ok());
    csi::v1::NodeStageVolumeRequest req;
    req.set_volume_id(vol);
    req.set_staging_target_path(staging);
    *req.mutable_volume_capability() = MountCap(fs);
    csi::v1::NodeStageVolumeResponse resp;
    grpc::Status s = Call(&Node::Stub::NodeStageVolume, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return staging;
  }

  void Unstage(const std::string& vol, const std::string& staging) {
    csi::v1::NodeUnstageVolumeRequest req;
    req.set_volume_id(vol);
    req.set_staging_target_path(staging);
    csi::v1::NodeUnstageVolumeResponse resp;
    grpc::Status s = Call(&Node::Stub::NodeUnstageVolume, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
  }

  void DeleteVolume(const std::string& vol) {
    csi::v1::DeleteVolumeRequest req;
    req.set_volume_id(vol);
    csi::v1::DeleteVolumeResponse resp;
    grpc::Status s = Call(&Controller::Stub::DeleteVolume, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
  }

  grpc::Status Snapshot(const std::string& name, const std::string& vol,
                        csi::v1::CreateSnapshotResponse* resp) {
    csi::v1::CreateSnapshotRequest req;
    req.set_name(name);
    req.set_source_volume_id(vol);
    return Call(&Controller::Stub::CreateSnapshot, req, resp);
  }

  grpc::Status DeleteSnapshot(const std::string& id) {
    csi::v1::DeleteSnapshotRequest req;
    req.set_snapshot_id(id);
    csi::v1::DeleteSnapshotResponse resp;
    return Call(&Controller::Stub::DeleteSnapshot, req, &resp);
  }

  csi::v1::ListSnapshotsResponse List(const std::string& snapshot_id = "",
                                      const std::string& source = "",
                                      int max_entries = 0,
                                      const std::string& token = "",
                                      grpc::Status* status = nullptr) {
    csi::v1::ListSnapshotsRequest req;
    req.set_snapshot_id(snapshot_id);
    req.set_source_volume_id(source);
    req.set_max_entries(max_entries);
    req.set_starting_token(token);
    csi::v1::ListSnapshotsResponse resp;
    grpc::Status s = Call(&Controller::Stub::ListSnapshots, req, &resp);
    if (status != nullptr) {
      *status = s;
    } else {
      EXPECT_TRUE(s.ok()) << s.error_message();
    }
    return resp;
  }

  static csi::v1::VolumeContentSource FromSnapshot(const std::string& id) {
    csi::v1::VolumeContentSource src;
    src.mutable_snapshot()->set_snapshot_id(id);
    return src;
  }
  static csi::v1::VolumeContentSource FromVolume(const std::string& id) {
    csi::v1::VolumeContentSource src;
    src.mutable_volume()->set_volume_id(id);
    return src;
  }

  std::vector<std::string> SnapshotMedia() {
    std::vector<std::string> out;
    std::error_code ec;
    for (const auto& e :
         std::filesystem::directory_iterator(state_dir_ + "/snapshots", ec)) {
      out.push_back(e.path().filename().string());
    }
    return out;
  }
};

TEST_F(CsiSnapshotTest, SnapshotRestoreAndCloneKeepWhatWasAcknowledged) {
  csi::v1::ControllerGetCapabilitiesResponse caps;
  ASSERT_TRUE(Call(&Controller::Stub::ControllerGetCapabilities,
                   csi::v1::ControllerGetCapabilitiesRequest(), &caps)
                  .ok());
  std::set<int> rpcs;
  for (const auto& c : caps.capabilities()) rpcs.insert(c.rpc().type());
  using Rpc = csi::v1::ControllerServiceCapability::RPC;
  EXPECT_TRUE(rpcs.count(Rpc::CREATE_DELETE_SNAPSHOT));
  EXPECT_TRUE(rpcs.count(Rpc::LIST_SNAPSHOTS));
  EXPECT_TRUE(rpcs.count(Rpc::CLONE_VOLUME));

  const std::string a = CreateVolume("pvc-snap-src", 64 * kMiB, nullptr);
  const std::string staging_a = Stage(a);
  // The holder's acknowledged write (fsynced), then the snapshot while the
  // volume stays staged (its filesystem is frozen for the copy).
  const std::string before = Pattern(3 * kMiB + 17, 1);
  ASSERT_TRUE(WriteAndSync(staging_a + "/data", 0, before).ok());
  csi::v1::CreateSnapshotResponse snap;
  grpc::Status s = Twice(
      &Controller::Stub::CreateSnapshot,
      [&] {
        csi::v1::CreateSnapshotRequest r;
        r.set_name("snapshot-1");
        r.set_source_volume_id(a);
        return r;
      }(),
      &snap);
  ASSERT_TRUE(s.ok()) << s.error_message();
  const std::string snap_id = snap.snapshot().snapshot_id();
  EXPECT_TRUE(snap.snapshot().ready_to_use());
  EXPECT_EQ(snap.snapshot().source_volume_id(), a);
  EXPECT_EQ(snap.snapshot().size_bytes(), 64 * kMiB);
  EXPECT_GT(snap.snapshot().creation_time().seconds(), 0);
  // Written after the snapshot: not in it.
  ASSERT_TRUE(WriteAndSync(staging_a + "/after", 0, "later").ok());
  // Another source for the same name is refused.
  const std::string other = CreateVolume("pvc-snap-other", 16 * kMiB, nullptr);
  csi::v1::CreateSnapshotResponse refused;
  EXPECT_EQ(Snapshot("snapshot-1", other, &refused).error_code(),
            grpc::StatusCode::ALREADY_EXISTS);

  // The snapshot survives kill -9 of the plugin.
  CrashAndRestart();
  auto listed = List();
  ASSERT_EQ(listed.entries_size(), 1);
  EXPECT_EQ(listed.entries(0).snapshot().snapshot_id(), snap_id);
  EXPECT_TRUE(listed.entries(0).snapshot().ready_to_use());
  EXPECT_EQ(List(snap_id).entries_size(), 1);
  EXPECT_EQ(List("", a).entries_size(), 1);
  EXPECT_EQ(List("", other).entries_size(), 0);
  EXPECT_EQ(List("no-such-snapshot").entries_size(), 0);
  EXPECT_EQ(List("../../etc/passwd").entries_size(), 0);

  // Restore, larger: the data, and an ext4 that fills the new size.
  csi::v1::VolumeContentSource from_snap = FromSnapshot(snap_id);
  csi::v1::CreateVolumeResponse restored_resp;
  grpc::Status rs;
  const std::string b = CreateVolume("pvc-snap-restore", 128 * kMiB, &from_snap,
                                     &rs, &restored_resp);
  ASSERT_TRUE(rs.ok()) << rs.error_message();
  EXPECT_EQ(restored_resp.volume().capacity_bytes(), 128 * kMiB);
  EXPECT_EQ(restored_resp.volume().content_source().snapshot().snapshot_id(),
            snap_id);
  // A retry is the same volume; another source for the name is not.
  EXPECT_EQ(CreateVolume("pvc-snap-restore", 128 * kMiB, &from_snap), b);
  csi::v1::VolumeContentSource from_a = FromVolume(a);
  grpc::Status conflict;
  CreateVolume("pvc-snap-restore", 128 * kMiB, &from_a, &conflict);
  EXPECT_EQ(conflict.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  // Smaller than the snapshot: refused.
  grpc::Status small;
  CreateVolume("pvc-snap-small", 32 * kMiB, &from_snap, &small);
  EXPECT_EQ(small.error_code(), grpc::StatusCode::OUT_OF_RANGE)
      << small.error_message();
  grpc::Status missing;
  csi::v1::VolumeContentSource no_snap = FromSnapshot("no-such-snapshot");
  CreateVolume("pvc-snap-missing", 0, &no_snap, &missing);
  EXPECT_EQ(missing.error_code(), grpc::StatusCode::NOT_FOUND);

  const std::string staging_b = Stage(b);
  auto got = ReadAt(staging_b + "/data", 0, before.size());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(*got == before);
  EXPECT_FALSE(std::filesystem::exists(staging_b + "/after"));
  auto fs_bytes = FilesystemBytes(staging_b);
  ASSERT_TRUE(fs_bytes.ok());
  EXPECT_GT(*fs_bytes, 100 * kMiB);  // grown past the 64 MiB source

  // A clone of the staged (and written) source: everything so far.
  const std::string c = CreateVolume("pvc-snap-clone", 0, &from_a);
  const std::string staging_c = Stage(c);
  got = ReadAt(staging_c + "/data", 0, before.size());
  ASSERT_TRUE(got.ok());
  EXPECT_TRUE(*got == before);
  got = ReadAt(staging_c + "/after", 0, 5);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, "later");
  // The source stays writable (thawed) after the copies.
  ASSERT_TRUE(WriteAndSync(staging_a + "/again", 0, "ok").ok());

  // The source may go before its snapshot; the snapshot still restores.
  Unstage(a, staging_a);
  DeleteVolume(a);
  const std::string d = CreateVolume("pvc-snap-after-delete", 0, &from_snap);
  EXPECT_FALSE(d.empty());

  for (const auto& [vol, staging] :
       {std::pair{b, staging_b}, std::pair{c, staging_c}}) {
    Unstage(vol, staging);
    DeleteVolume(vol);
  }
  DeleteVolume(d);
  DeleteVolume(other);
  EXPECT_TRUE(DeleteSnapshot(snap_id).ok());
  EXPECT_TRUE(DeleteSnapshot(snap_id).ok());  // idempotent
  EXPECT_EQ(List().entries_size(), 0);
  EXPECT_THAT(SnapshotMedia(), ::testing::IsEmpty());
  ExpectNoLeaks();
}

// An xfs snapshot restored into a larger volume: xfs grows only mounted,
// so the plugin mounts the new image in a private mount namespace, grows it
// and unmounts before anyone attaches it (was: OUT_OF_RANGE). The restored
// volume stages while its source is still mounted (same filesystem UUID),
// holds the source's data and fills its size; nothing is left mounted or
// attached.
TEST_F(CsiSnapshotTest, XfsRestoreToALargerVolumeGrows) {
  constexpr int64_t kSource = 320 * kMiB;  // xfs needs 300 MiB
  const std::string a =
      CreateVolume("pvc-xfs-src", kSource, nullptr, nullptr, nullptr, "xfs");
  const std::string staging_a = Stage(a, "xfs");
  const std::string data = Pattern(5 * kMiB + 3, 7);
  ASSERT_TRUE(WriteAndSync(staging_a + "/data", 0, data).ok());
  csi::v1::CreateSnapshotResponse snap;
  grpc::Status s = Snapshot("xfs-snapshot", a, &snap);
  ASSERT_TRUE(s.ok()) << s.error_message();
  const std::string snap_id = snap.snapshot().snapshot_id();

  csi::v1::VolumeContentSource from_snap = FromSnapshot(snap_id);
  grpc::Status rs;
  csi::v1::CreateVolumeResponse resp;
  const std::string b = CreateVolume("pvc-xfs-restore", 2 * kSource, &from_snap,
                                     &rs, &resp, "xfs");
  ASSERT_TRUE(rs.ok()) << rs.error_message();
  EXPECT_EQ(resp.volume().capacity_bytes(), 2 * kSource);
  // The grow's mount was private: it never shows here.
  for (const std::string& m : MountsUnder("/tmp")) {
    EXPECT_THAT(m, ::testing::Not(::testing::HasSubstr("daxlease-xfs-grow-")));
  }
  // A retry is the same volume (the grown filesystem stays as it is).
  EXPECT_EQ(CreateVolume("pvc-xfs-restore", 2 * kSource, &from_snap, nullptr,
                         nullptr, "xfs"),
            b);

  const std::string staging_b = Stage(b, "xfs");
  auto got = ReadAt(staging_b + "/data", 0, data.size());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(*got == data);
  auto fs_bytes = FilesystemBytes(staging_b);
  ASSERT_TRUE(fs_bytes.ok());
  EXPECT_GT(*fs_bytes, kSource + 200 * kMiB) << "not grown";
  ASSERT_TRUE(WriteAndSync(staging_b + "/more", 0, "written").ok());

  Unstage(b, staging_b);
  DeleteVolume(b);
  Unstage(a, staging_a);
  DeleteVolume(a);
  EXPECT_TRUE(DeleteSnapshot(snap_id).ok());
  ExpectNoLeaks();
}

TEST_F(CsiSnapshotTest, ListSnapshotsPagesAndRefusesBadInput) {
  const std::string vol = CreateVolume("pvc-snap-pages", 16 * kMiB, nullptr);
  std::set<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    csi::v1::CreateSnapshotResponse resp;
    ASSERT_TRUE(Snapshot(absl::StrCat("page-", i), vol, &resp).ok());
    ids.insert(resp.snapshot().snapshot_id());
  }
  auto first = List("", "", 2);
  ASSERT_EQ(first.entries_size(), 2);
  ASSERT_FALSE(first.next_token().empty());
  auto second = List("", "", 2, first.next_token());
  ASSERT_EQ(second.entries_size(), 1);
  EXPECT_TRUE(second.next_token().empty());
  std::set<std::string> seen;
  for (const auto* page : {&first, &second}) {
    for (const auto& e : page->entries())
      seen.insert(e.snapshot().snapshot_id());
  }
  EXPECT_EQ(seen, ids);
  grpc::Status bad_token;
  List("", "", 0, "not-a-token", &bad_token);
  EXPECT_EQ(bad_token.error_code(), grpc::StatusCode::ABORTED);

  csi::v1::CreateSnapshotResponse resp;
  EXPECT_EQ(Snapshot("", vol, &resp).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Snapshot("x", "", &resp).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Snapshot("x", "../../etc", &resp).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Snapshot(std::string(129, 'a'), vol, &resp).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Snapshot("x", "no-such-volume", &resp).error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(DeleteSnapshot("../volumes/x").error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(DeleteSnapshot("").error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(DeleteSnapshot("no-such-snapshot").ok());

  for (const std::string& id : ids) EXPECT_TRUE(DeleteSnapshot(id).ok());
  DeleteVolume(vol);
  ExpectNoLeaks();
}

// kill -9 while the copy runs (paced so that it runs for seconds): after the
// restart the snapshot is absent, not half-ready, its partial copy is gone,
// and the source's filesystem, frozen for the copy, is writable again.
TEST_F(CsiSnapshotTest, KillDuringCopyLeavesNoSnapshotAndNoFrozenVolume) {
  ASSERT_TRUE(plugin_->Terminate().ok());
  options_.extra_args = {"--copy-bytes-per-second=33554432"};  // 32 MiB/s
  StartPlugin();
  if (HasFatalFailure()) return;
  const std::string vol = CreateVolume("pvc-snap-kill", 256 * kMiB, nullptr);
  const std::string staging = Stage(vol);
  ASSERT_TRUE(WriteAndSync(staging + "/big", 0, Pattern(160 * kMiB, 7)).ok());

  grpc::Status copy_status;
  std::thread copy([&] {
    csi::v1::CreateSnapshotResponse resp;
    copy_status = Snapshot("snapshot-killed", vol, &resp);
  });
  // The record (ready_to_use: false) is written before the copy starts.
  bool copying = false;
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (!copying && absl::Now() < deadline) {
    auto l = List();
    copying = l.entries_size() == 1 && !l.entries(0).snapshot().ready_to_use();
    if (!copying) absl::SleepFor(absl::Milliseconds(20));
  }
  if (!copying) {
    copy.join();
    GTEST_SKIP() << "the copy was over before it could be seen running (a "
                    "reflink?): "
                 << copy_status.error_message();
  }
  // The source is frozen while it is copied: a second freeze is refused.
  {
    int fd = ::open(staging.c_str(), O_RDONLY | O_DIRECTORY);
    ASSERT_GE(fd, 0);
    int rc = ::ioctl(fd, FIFREEZE, 0);
    int err = errno;
    if (rc == 0) (void)::ioctl(fd, FITHAW, 0);
    ::close(fd);
    EXPECT_TRUE(rc != 0 && err == EBUSY)
        << "the source was not frozen during the copy";
  }
  ASSERT_TRUE(plugin_->Kill9().ok());
  copy.join();
  EXPECT_FALSE(copy_status.ok());
  CrashAndRestart();
  if (HasFatalFailure()) return;

  EXPECT_EQ(List().entries_size(), 0);
  EXPECT_THAT(SnapshotMedia(), ::testing::IsEmpty());
  {
    int fd = ::open(staging.c_str(), O_RDONLY | O_DIRECTORY);
    ASSERT_GE(fd, 0);
    int rc = ::ioctl(fd, FITHAW, 0);  // EINVAL: it is not frozen
    int err = errno;
    ::close(fd);
    EXPECT_TRUE(rc != 0 && err == EINVAL)
        << "the restarted plugin left the source frozen";
  }
  EXPECT_THAT(PluginLog(),
              ::testing::HasSubstr("csi.recover.snapshot_removed"));

  // The CO's retry makes it, complete.
  csi::v1::CreateSnapshotResponse resp;
  grpc::Status s = Snapshot("snapshot-killed", vol, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(resp.snapshot().ready_to_use());
  EXPECT_TRUE(DeleteSnapshot(resp.snapshot().snapshot_id()).ok());
  Unstage(vol, staging);
  DeleteVolume(vol);
  ExpectNoLeaks();
}

}  // namespace
}  // namespace daxlease::testing
