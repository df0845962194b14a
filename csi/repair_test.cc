// Restart recovery: a new service object over the same state dir knows
// every volume, stage and publish, and repairs what a crash left half-done.
#include "csi/repair.h"

#include "csi/service_test_env.h"
#include "csi/validation.h"
#include "gtest/gtest.h"
#include "lib/sys/file.h"

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

// The plugin died after recording the stage, before mounting: the record
// names the stage, the device is attached, nothing is mounted.
void RecordStageWithoutMount(StateStore* store, FakeVolumeBackend* backend,
                             const std::string& id,
                             const std::string& staging) {
  auto rec = store->Load(id);
  ASSERT_TRUE(rec.ok() && rec->has_value());
  auto dev = backend->Attach(id);
  ASSERT_TRUE(dev.ok());
  StageRecord st;
  st.staging_path = staging;
  st.fs_type = "ext4";
  st.device = dev->path;
  (*rec)->stage = st;
  ASSERT_TRUE(store->Save(**rec).ok());
}

TEST_F(RepairTest, StageThatDiedBeforeItsMountIsFinishedByTheRetry) {
  std::string id = MakeVolume("pvc-half");
  RecordStageWithoutMount(store_.get(), &backend_, id, StagingPath(id));
  Restart();
  ASSERT_TRUE(RecoverVolumes(deps()).ok());
  ASSERT_TRUE(Stage(id, MountCap()).ok()) << "the CO's retry";
  auto m = mounter_.GetMount(StagingPath(id));
  ASSERT_TRUE(m.ok() && m->has_value());
  EXPECT_TRUE(backend_.IsAttached(id));
  EXPECT_EQ(backend_.attached_count(), 1);
}

TEST_F(RepairTest, StageThatDiedBeforeItsMountIsUndoneByUnstage) {
  std::string id = MakeVolume("pvc-half2");
  RecordStageWithoutMount(store_.get(), &backend_, id, StagingPath(id));
  Restart();
  ASSERT_TRUE(RecoverVolumes(deps()).ok());
  ASSERT_TRUE(Unstage(id).ok());
  EXPECT_TRUE(mounter_.Mounts().empty());
  EXPECT_FALSE(backend_.IsAttached(id)) << "leaked device";
  EXPECT_FALSE(Record(id)->stage.has_value());
  EXPECT_TRUE(Delete(id).ok());
}

TEST_F(RepairTest, InterruptedUnstageAfterUnmountIsFinished) {
  std::string id = MakeVolume("pvc-unst");
  ASSERT_TRUE(Stage(id, MountCap()).ok());
  ASSERT_TRUE(mounter_.Unmount(StagingPath(id)).ok());  // it got that far
  Restart();
  ASSERT_TRUE(RecoverVolumes(deps()).ok());
  EXPECT_TRUE(Unstage(id).ok());
  EXPECT_FALSE(backend_.IsAttached(id));
  EXPECT_FALSE(Record(id)->stage.has_value());
}

TEST_F(RepairTest, PublishThatDiedBeforeItsBindIsFinishedOrUndone) {
  std::string id = MakeVolume("pvc-pub");
  ASSERT_TRUE(Stage(id, MountCap()).ok());
  ASSERT_TRUE(Publish(id, MountCap()).ok());
  ASSERT_TRUE(mounter_.Unmount(TargetPath(id)).ok());  // recorded, not bound
  Restart();
  ASSERT_TRUE(RecoverVolumes(deps()).ok());
  ASSERT_TRUE(Publish(id, MountCap()).ok()) << "the CO's retry";
  auto m = mounter_.GetMount(TargetPath(id));
  ASSERT_TRUE(m.ok() && m->has_value());
  ASSERT_TRUE(mounter_.Unmount(TargetPath(id)).ok());
  ASSERT_TRUE(Unpublish(id).ok()) << "or its NodeUnpublishVolume";
  EXPECT_TRUE(Record(id)->publishes.empty());
  EXPECT_TRUE(Record(id)->stage.has_value());
  EXPECT_TRUE(backend_.IsAttached(id));
}

TEST_F(RepairTest, DeleteMarksTheRecordDeletingBeforeTheMediaGoes) {
  std::string id = MakeVolume("pvc-del");
  std::optional<VolumePhase> phase_when_media_went;
  backend_.OnDelete([&](absl::string_view) {
    auto rec = StateStore(dir_ + "/state").Load(id);
    if (rec.ok() && rec->has_value()) phase_when_media_went = (*rec)->phase;
  });
  ASSERT_TRUE(Delete(id).ok());
  EXPECT_EQ(phase_when_media_went, VolumePhase::kDeleting);
  EXPECT_FALSE(Record(id).has_value());
}

TEST_F(RepairTest, CrashBetweenMediaAndRecordRemovalLeavesNoReadyVolume) {
  std::string id = MakeVolume("pvc-del2");
  // What a kill -9 right after the media went would leave: the record file
  // as it was at that moment, no media.
  std::string record_at_crash;
  const std::string path = dir_ + "/state/" + id + ".json";
  backend_.OnDelete([&](absl::string_view) {
    auto text = sys::ReadFile(path);
    if (text.ok()) record_at_crash = *text;
  });
  ASSERT_TRUE(Delete(id).ok());
  ASSERT_FALSE(record_at_crash.empty());
  ASSERT_TRUE(sys::WriteFileAtomic(path, record_at_crash).ok());
  Restart();
  ASSERT_TRUE(RecoverVolumes(deps()).ok());
  ::csi::v1::ListVolumesRequest lr;
  ::csi::v1::ListVolumesResponse list;
  ASSERT_TRUE(controller_->ListVolumes(nullptr, &lr, &list).ok());
  EXPECT_EQ(list.entries_size(), 0) << "a volume without media is listed";
  EXPECT_FALSE(Record(id).has_value()) << "recovery finishes the delete";
  EXPECT_TRUE(Delete(id).ok()) << "and the CO's retry is OK";
}

TEST_F(RepairTest, DeleteThatLostItsMediaBeforeTheMarkIsFinishedByTheRetry) {
  std::string id = MakeVolume("pvc-del3");
  backend_.DropMedia(id);  // gone behind the plugin's back
  Restart();
  ASSERT_TRUE(RecoverVolumes(deps()).ok());
  ASSERT_TRUE(Record(id).has_value()) << "a ready record is not dropped";
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
  backend_.AddMedia(id, 64 * kMiB);  // died after the media, before its record
  Restart();
  ASSERT_TRUE(RecoverVolumes(deps()).ok());
  EXPECT_TRUE(backend_.Get(id).ok()) << "media without a record is kept";
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

TEST_F(RepairTest, CreatingRecordOfAnOlderVersionIsFinishedByTheRetry) {
  std::string id = MakeVolume("pvc-creating", 64 * kMiB);
  // Older versions wrote "creating" before the media.
  const std::string path = dir_ + "/state/" + id + ".json";
  std::string text = RecordToJson(*Record(id));
  const std::string ready = "\"phase\": \"ready\"";
  ASSERT_NE(text.find(ready), std::string::npos);
  text.replace(text.find(ready), ready.size(), "\"phase\": \"creating\"");
  ASSERT_TRUE(sys::WriteFileAtomic(path, text).ok());
  Restart();
  ASSERT_TRUE(RecoverVolumes(deps()).ok());
  ::csi::v1::ListVolumesRequest lr;
  ::csi::v1::ListVolumesResponse list;
  ASSERT_TRUE(controller_->ListVolumes(nullptr, &lr, &list).ok());
  EXPECT_EQ(list.entries_size(), 0) << "a creating volume is not listed";
  EXPECT_TRUE(backend_.Get(id).ok()) << "its media is kept";
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
