// Restart recovery: a new service object over the same state dir knows
// every volume, stage and publish, and repairs what a crash left half-done.
#include "csi/repair.h"

#include "csi/service_test_env.h"
#include "csi/validation.h"
#include "gtest/gtest.h"

namespace daxlease::csi {
namespace {

class RepairTest : public ServiceTest {};

TEST_F(RepairTest, RestartKnowsVolumesStagesAndPublishes) {
  std::string a = MakeVolume("pvc-a");
  std::string b = MakeVolume("pvc-b");
  ASSERT_TRUE(Stage(a, MountCap()).ok());
  ASSERT_TRUE(Publish(a, MountCap()).ok());
  Restart();
  ASSERT_TRUE(RecoverVolumes(deps()).ok());
  // Everything is still there and the calls are idempotent over it.
  EXPECT_TRUE(Stage(a, MountCap()).ok());
  EXPECT_TRUE(Publish(a, MountCap()).ok());
  EXPECT_EQ(formatter_.format_calls(), 1);
  EXPECT_EQ(Delete(a).error_code(), grpc::FAILED_PRECONDITION);
  ::csi::v1::ListVolumesRequest lr;
  ::csi::v1::ListVolumesResponse list;
  ASSERT_TRUE(controller_->ListVolumes(nullptr, &lr, &list).ok());
  EXPECT_EQ(list.entries_size(), 2);
  ASSERT_TRUE(Unpublish(a).ok());
  ASSERT_TRUE(Unstage(a).ok());
  EXPECT_TRUE(Delete(a).ok());
  EXPECT_TRUE(Delete(b).ok());
  EXPECT_TRUE(mounter_.Mounts().empty());
  EXPECT_EQ(backend_.attached_count(), 0);
}

TEST_F(RepairTest, HalfDoneStageIsRolledBack) {
  std::string id = MakeVolume("pvc-half");
  // The plugin died after attaching, before mounting: the record says
  // "staging", the device is attached.
  VolumeRecord rec = *Record(id);
  StageRecord st;
  st.staging_path = StagingPath(id);
  st.fs_type = "ext4";
  st.phase = StagePhase::kStaging;
  rec.stage = st;
  ASSERT_TRUE(store_->Save(rec).ok());
  ASSERT_TRUE(backend_.Attach(id).ok());
  Restart();
  ASSERT_TRUE(RecoverVolumes(deps()).ok());
  EXPECT_FALSE(backend_.IsAttached(id)) << "leaked device";
  EXPECT_FALSE(Record(id)->stage.has_value());
  EXPECT_TRUE(Stage(id, MountCap()).ok()) << "the CO's retry works";
}

TEST_F(RepairTest, HalfDoneStageAfterMountIsUnmountedToo) {
  std::string id = MakeVolume("pvc-half2");
  ASSERT_TRUE(Stage(id, MountCap()).ok());
  VolumeRecord rec = *Record(id);
  rec.stage->phase = StagePhase::kStaging;  // died before recording "staged"
  ASSERT_TRUE(store_->Save(rec).ok());
  Restart();
  ASSERT_TRUE(RecoverVolumes(deps()).ok());
  EXPECT_TRUE(mounter_.Mounts().empty());
  EXPECT_FALSE(backend_.IsAttached(id));
}

TEST_F(RepairTest, InterruptedUnstageAfterUnmountIsFinished) {
  std::string id = MakeVolume("pvc-unst");
  ASSERT_TRUE(Stage(id, MountCap()).ok());
  VolumeRecord rec = *Record(id);
  rec.stage->phase = StagePhase::kUnstaging;
  ASSERT_TRUE(store_->Save(rec).ok());
  ASSERT_TRUE(mounter_.Unmount(StagingPath(id)).ok());  // it got that far
  Restart();
  ASSERT_TRUE(RecoverVolumes(deps()).ok());
  EXPECT_FALSE(backend_.IsAttached(id));
  EXPECT_FALSE(Record(id)->stage.has_value());
  EXPECT_TRUE(Unstage(id).ok());
}

TEST_F(RepairTest, InterruptedPublishIsUndoneAndStageKept) {
  std::string id = MakeVolume("pvc-pub");
  ASSERT_TRUE(Stage(id, MountCap()).ok());
  ASSERT_TRUE(Publish(id, MountCap()).ok());
  VolumeRecord rec = *Record(id);
  rec.publishes.begin()->second.phase = PublishPhase::kPublishing;
  ASSERT_TRUE(store_->Save(rec).ok());
  Restart();
  ASSERT_TRUE(RecoverVolumes(deps()).ok());
  auto m = mounter_.GetMount(TargetPath(id));
  ASSERT_TRUE(m.ok());
  EXPECT_FALSE(m->has_value());
  EXPECT_TRUE(Record(id)->publishes.empty());
  EXPECT_EQ(Record(id)->stage->phase, StagePhase::kStaged);
  EXPECT_TRUE(backend_.IsAttached(id));
}

TEST_F(RepairTest, InterruptedDeleteIsFinishedByTheRetry) {
  std::string id = MakeVolume("pvc-del");
  backend_.DropMedia(id);  // died after deleting the media, before the record
  Restart();
  ASSERT_TRUE(RecoverVolumes(deps()).ok());
  ASSERT_TRUE(Record(id).has_value());
  EXPECT_TRUE(Delete(id).ok());
  EXPECT_FALSE(Record(id).has_value());
}

TEST_F(RepairTest, MediaWithoutARecordIsNeverTouched) {
  // Not a half-done create (records are written before media): media of a
  // lost state directory or of another plugin. It may hold data.
  backend_.AddMedia("unknown-volume", 64 * kMiB);
  ASSERT_TRUE(backend_.Attach("unknown-volume").ok());
  Restart();
  ASSERT_TRUE(RecoverVolumes(deps()).ok());
  EXPECT_TRUE(backend_.Get("unknown-volume").ok());
  EXPECT_TRUE(backend_.IsAttached("unknown-volume"));
}

TEST_F(RepairTest, ALostStateDirectoryDeletesNothingAndARecreateAdopts) {
  std::string a = MakeVolume("pvc-keep-a", 64 * kMiB);
  std::string b = MakeVolume("pvc-keep-b", 64 * kMiB);
  // The state directory is wiped (say, not on persistent host storage).
  std::string cmd = "rm -rf " + dir_ + "/state";
  ASSERT_EQ(system(cmd.c_str()), 0);
  Restart();
  ASSERT_TRUE(store_->Init().ok());
  ASSERT_TRUE(RecoverVolumes(deps()).ok());
  EXPECT_TRUE(backend_.Get(a).ok());
  EXPECT_TRUE(backend_.Get(b).ok());
  // The CO creating the same name again gets the same volume back.
  ::csi::v1::CreateVolumeResponse resp;
  ASSERT_TRUE(Create(CreateReq("pvc-keep-a", 64 * kMiB), &resp).ok());
  EXPECT_EQ(resp.volume().volume_id(), a);
  EXPECT_EQ(Record(a)->phase, VolumePhase::kReady);
  // A refused re-create (too big) does not remove the adopted media.
  ASSERT_FALSE(Create(CreateReq("pvc-keep-b", 64 * kGiB), &resp).ok());
  EXPECT_TRUE(backend_.Get(b).ok());
}

TEST_F(RepairTest, CreateThatDiedAfterItsMediaIsFinishedByTheRetry) {
  ::csi::v1::CreateVolumeResponse resp;
  std::string id = VolumeIdForName("pvc-died");
  // The record of the attempt is durable before the media is made.
  backend_.FailNext("Create", absl::UnavailableError("killed"));
  EXPECT_FALSE(Create(CreateReq("pvc-died", 64 * kMiB), &resp).ok());
  backend_.AddMedia(id, 64 * kMiB);  // as if it died after the media
  VolumeRecord rec;
  rec.id = id;
  rec.name = "pvc-died";
  rec.capacity_bytes = 64 * kMiB;
  rec.fs_type = "ext4";
  rec.parameters = {{"csi.storage.k8s.io/fstype", "ext4"},
                    {"daxlease.io/mode", "fsdax"}};
  rec.phase = VolumePhase::kCreating;
  ASSERT_TRUE(store_->Save(rec).ok());
  Restart();
  ASSERT_TRUE(RecoverVolumes(deps()).ok());
  EXPECT_TRUE(backend_.Get(id).ok()) << "a creating record keeps its media";
  ASSERT_TRUE(Create(CreateReq("pvc-died", 64 * kMiB), &resp).ok());
  EXPECT_EQ(resp.volume().volume_id(), id);
  EXPECT_EQ(Record(id)->phase, VolumePhase::kReady);
}

TEST_F(RepairTest, RecordOfAnOldProcessInPhaseDeletingIsFinished) {
  std::string id = MakeVolume("pvc-deleting");
  VolumeRecord rec = *Record(id);
  rec.phase = VolumePhase::kDeleting;
  ASSERT_TRUE(store_->Save(rec).ok());
  Restart();
  ASSERT_TRUE(RecoverVolumes(deps()).ok());
  EXPECT_FALSE(Record(id).has_value());
  EXPECT_FALSE(backend_.Get(id).ok());
}

TEST_F(RepairTest, FailedCreateLeavesNothingAndTheRetryWorks) {
  ::csi::v1::CreateVolumeResponse resp;
  backend_.FailNext("Create", absl::UnavailableError("crash"));
  EXPECT_FALSE(Create(CreateReq("pvc-cr", 64 * kMiB), &resp).ok());
  std::string id = VolumeIdForName("pvc-cr");
  EXPECT_FALSE(Record(id).has_value());
  Restart();
  ASSERT_TRUE(RecoverVolumes(deps()).ok());
  ASSERT_TRUE(Create(CreateReq("pvc-cr", 64 * kMiB), &resp).ok());
  EXPECT_EQ(resp.volume().volume_id(), id);
  EXPECT_EQ(Record(id)->phase, VolumePhase::kReady);
}

TEST_F(RepairTest, RecordOfAnOldProcessInPhaseCreatingIsFinishedByTheRetry) {
  std::string id = MakeVolume("pvc-creating", 64 * kMiB);
  VolumeRecord rec = *Record(id);
  rec.phase = VolumePhase::kCreating;
  ASSERT_TRUE(store_->Save(rec).ok());
  Restart();
  ASSERT_TRUE(RecoverVolumes(deps()).ok());
  ::csi::v1::ListVolumesRequest lr;
  ::csi::v1::ListVolumesResponse list;
  ASSERT_TRUE(controller_->ListVolumes(nullptr, &lr, &list).ok());
  EXPECT_EQ(list.entries_size(), 0) << "a creating volume is not listed";
  ::csi::v1::CreateVolumeResponse resp;
  ASSERT_TRUE(Create(CreateReq("pvc-creating", 64 * kMiB), &resp).ok());
  EXPECT_EQ(Record(id)->phase, VolumePhase::kReady);
}

TEST_F(RepairTest, ExpansionThatDiedBeforeItsRecordIsAccountedFor) {
  std::string id = MakeVolume("pvc-grow", 64 * kMiB);
  ASSERT_TRUE(backend_.Expand(id, 128 * kMiB, 0).ok());
  Restart();
  ASSERT_TRUE(RecoverVolumes(deps()).ok());
  EXPECT_EQ(Record(id)->capacity_bytes, 128 * kMiB);
}

TEST_F(RepairTest, DeviceAttachedWithoutStageIsDetached) {
  std::string id = MakeVolume("pvc-dangling");
  ASSERT_TRUE(backend_.Attach(id).ok());
  Restart();
  ASSERT_TRUE(RecoverVolumes(deps()).ok());
  EXPECT_FALSE(backend_.IsAttached(id));
}

}  // namespace
}  // namespace daxlease::csi
