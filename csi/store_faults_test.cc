// StateStore and FileBackend over a fault-injecting sys::Env: fsync errors,
// ENOSPC, torn writes and renames that a crash interrupted, and the order
// of the durable steps (file, rename, directory).
#include <stdio.h>
#include <stdlib.h>

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "csi/file_backend.h"
#include "csi/state_store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/sys/env.h"
#include "lib/sys/file.h"
#include "lib/sys/formatter.h"

namespace daxlease::csi {
namespace {

using ::testing::ElementsAre;

class StoreFaultsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/daxlease-store-faults-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    state_ = dir_ + "/state";
    store_ = std::make_unique<StateStore>(state_, &env_);
    ASSERT_TRUE(store_->Init().ok());
  }
  void TearDown() override {
    std::string cmd = "rm -rf " + dir_;
    ASSERT_EQ(system(cmd.c_str()), 0);
  }

  static VolumeRecord Rec(uint64_t bytes) {
    VolumeRecord r;
    r.id = "pvc-1";
    r.name = "pvc-1";
    r.capacity_bytes = bytes;
    r.fs_type = "ext4";
    return r;
  }
  uint64_t StoredBytes() {
    auto r = StateStore(state_).Load("pvc-1");  // a restarted plugin's view
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() && r->has_value() ? (*r)->capacity_bytes : 0;
  }
  std::vector<std::string> Files() {
    return sys::ListDir(state_).value_or(std::vector<std::string>{});
  }

  sys::FaultInjectionEnv env_{sys::DefaultEnv()};
  std::string dir_, state_;
  std::unique_ptr<StateStore> store_;
};

TEST_F(StoreFaultsTest, DurableSaveSyncsTheFileRenamesThenSyncsTheDirectory) {
  env_.ClearCalls();
  ASSERT_TRUE(store_->Save(Rec(1)).ok());
  EXPECT_THAT(
      env_.calls(),
      ElementsAre(
          "WriteFileSynced " + state_ + "/pvc-1.json.tmp",
          "Rename " + state_ + "/pvc-1.json.tmp -> " + state_ + "/pvc-1.json",
          "RemoveFile " + state_ + "/pvc-1.mounts.json", "Sync " + state_));
  env_.ClearCalls();
  ASSERT_TRUE(store_->Save(Rec(2), sys::Durability::kAtomic).ok());
  EXPECT_EQ(env_.calls().size(), 3u) << "atomic: no directory fsync";
  env_.ClearCalls();
  ASSERT_TRUE(store_->Remove("pvc-1").ok());
  EXPECT_THAT(
      env_.calls(),
      ElementsAre("RemoveFile " + state_ + "/pvc-1.mounts.json",
                  "RemoveFile " + state_ + "/pvc-1.json", "Sync " + state_));
}

// Stage and publish entries cost no fsync at all: a rename of an unsynced
// temp file, which a kill -9 cannot tear (the page cache survives it).
TEST_F(StoreFaultsTest, MountEntriesAreRenamedIntoPlaceWithoutAnyFsync) {
  ASSERT_TRUE(store_->Save(Rec(1)).ok());
  VolumeRecord staged = Rec(1);
  staged.stage =
      StageRecord{"/k/staging/pvc-1", false, "ext4", {}, "/dev/loop7"};
  staged.publishes["/k/pods/p"] =
      PublishRecord{"/k/pods/p", true, false, false};
  env_.ClearCalls();
  ASSERT_TRUE(store_->SaveMounts(staged).ok());
  EXPECT_THAT(
      env_.calls(),
      ElementsAre("WriteFileUnsynced " + state_ + "/pvc-1.mounts.json.tmp",
                  "Rename " + state_ + "/pvc-1.mounts.json.tmp -> " + state_ +
                      "/pvc-1.mounts.json"));
  // A restarted plugin sees the entries over the durable record.
  auto loaded = StateStore(state_).Load("pvc-1");
  ASSERT_TRUE(loaded.ok() && loaded->has_value()) << loaded.status();
  ASSERT_TRUE((*loaded)->stage.has_value());
  EXPECT_EQ((*loaded)->stage->device, "/dev/loop7");
  EXPECT_EQ((*loaded)->publishes.count("/k/pods/p"), 1u);
  EXPECT_TRUE((*loaded)->publishes.at("/k/pods/p").read_only);
  auto all = StateStore(state_).LoadAll();
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->size(), 1u) << "the mounts file is not a record";

  // Dropping the publish is durable and supersedes the mounts file.
  VolumeRecord dropped = **loaded;
  dropped.publishes.clear();
  ASSERT_TRUE(store_->Save(dropped).ok());
  EXPECT_THAT(Files(), ElementsAre("pvc-1.json"));
  loaded = StateStore(state_).Load("pvc-1");
  ASSERT_TRUE(loaded.ok() && loaded->has_value());
  EXPECT_TRUE((*loaded)->publishes.empty());
  EXPECT_TRUE((*loaded)->stage.has_value());
}

// A crash between a durable save's rename and its removal of the mounts
// file leaves the entries as they were before the call (the CO retries it).
TEST_F(StoreFaultsTest, CrashBeforeTheMountsFileGoesKeepsTheEntriesBefore) {
  ASSERT_TRUE(store_->Save(Rec(1)).ok());
  VolumeRecord staged = Rec(1);
  staged.stage =
      StageRecord{"/k/staging/pvc-1", false, "ext4", {}, "/dev/loop7"};
  ASSERT_TRUE(store_->SaveMounts(staged).ok());
  VolumeRecord unstaged = Rec(1);
  env_.FailNext("RemoveFile", absl::AbortedError("killed"), ".mounts.json");
  EXPECT_FALSE(store_->Save(unstaged).ok());
  auto loaded = StateStore(state_).Load("pvc-1");
  ASSERT_TRUE(loaded.ok() && loaded->has_value());
  EXPECT_TRUE((*loaded)->stage.has_value());
  ASSERT_TRUE(store_->Save(unstaged).ok());  // the retry
  loaded = StateStore(state_).Load("pvc-1");
  ASSERT_TRUE(loaded.ok() && loaded->has_value());
  EXPECT_FALSE((*loaded)->stage.has_value());
}

// Only a power loss can tear the unsynced mounts file; the mounts it
// described are gone then, so it is dropped and the record stands.
TEST_F(StoreFaultsTest, TornMountsFileIsDroppedAndTheRecordStands) {
  ASSERT_TRUE(store_->Save(Rec(5)).ok());
  ASSERT_TRUE(sys::WriteFileAtomic(state_ + "/pvc-1.mounts.json",
                                   "{\"stage\": {\"stagingPa")
                  .ok());
  auto loaded = StateStore(state_).Load("pvc-1");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_TRUE(loaded->has_value());
  EXPECT_EQ((*loaded)->capacity_bytes, 5u);
  EXPECT_FALSE((*loaded)->stage.has_value());
}

TEST_F(StoreFaultsTest, FsyncErrorFailsTheSaveAndKeepsTheOldRecord) {
  ASSERT_TRUE(store_->Save(Rec(1)).ok());
  env_.FailNext("WriteFileSynced", absl::DataLossError("fsync: EIO"),
                ".json.tmp");
  absl::Status s = store_->Save(Rec(2));
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_EQ(StoredBytes(), 1u);
  EXPECT_THAT(Files(), ElementsAre("pvc-1.json")) << "no temp file left";
}

TEST_F(StoreFaultsTest, DirectoryFsyncErrorIsReported) {
  // The rename happened, but whether it survives a power loss is unknown:
  // the caller must not go on as if it were durable.
  env_.FailNext("Sync", absl::DataLossError("fsync: EIO"), "/state");
  EXPECT_FALSE(store_->Save(Rec(1)).ok());
  env_.FailNext("Sync", absl::DataLossError("fsync: EIO"), "/state");
  EXPECT_FALSE(store_->Remove("pvc-1").ok());
}

TEST_F(StoreFaultsTest, NoSpaceInTheMiddleOfAWriteKeepsTheOldRecord) {
  ASSERT_TRUE(store_->Save(Rec(1)).ok());
  env_.TearNextWrite(".json.tmp", 17,
                     absl::ResourceExhaustedError("write: ENOSPC"));
  absl::Status s = store_->Save(Rec(2));
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_EQ(StoredBytes(), 1u);
  EXPECT_THAT(Files(), ElementsAre("pvc-1.json")) << "no torn temp file left";
  ASSERT_TRUE(store_->Save(Rec(3)).ok()) << "space again: the next save works";
  EXPECT_EQ(StoredBytes(), 3u);
}

TEST_F(StoreFaultsTest, CrashBeforeTheRenameLeavesTheOldRecordReadable) {
  ASSERT_TRUE(store_->Save(Rec(1)).ok());
  // A torn temp file, and the process "dies" before it cleans it up.
  env_.TearNextWrite(".json.tmp", 9, absl::AbortedError("killed"));
  env_.FailNext("RemoveFile", absl::AbortedError("killed"), ".json.tmp");
  EXPECT_FALSE(store_->Save(Rec(2)).ok());
  EXPECT_THAT(Files(), ElementsAre("pvc-1.json", "pvc-1.json.tmp"));
  StateStore restarted(state_);
  auto all = restarted.LoadAll();
  ASSERT_TRUE(all.ok()) << all.status() << ": the torn temp file is ignored";
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ((*all)[0].capacity_bytes, 1u);
  ASSERT_TRUE(restarted.Save(Rec(2)).ok()) << "and replaced by the next save";
  EXPECT_EQ(StoredBytes(), 2u);
}

TEST_F(StoreFaultsTest, FailedRenameKeepsTheOldRecordAndNoTemp) {
  ASSERT_TRUE(store_->Save(Rec(1)).ok());
  env_.FailNext("Rename", absl::ResourceExhaustedError("rename: ENOSPC"));
  EXPECT_FALSE(store_->Save(Rec(2)).ok());
  EXPECT_EQ(StoredBytes(), 1u);
  EXPECT_THAT(Files(), ElementsAre("pvc-1.json"));
}

class FileBackendFaultsTest : public StoreFaultsTest {
 protected:
  void SetUp() override {
    StoreFaultsTest::SetUp();
    backend_ = std::make_unique<FileBackend>(dir_ + "/volumes", 0, &env_);
    ASSERT_TRUE(backend_->Init().ok());
    images_ = dir_ + "/volumes";
  }
  VolumeSpec Spec() {
    VolumeSpec s;
    s.id = "pvc-img";
    s.capacity_bytes = 16 << 20;
    return s;
  }
  std::unique_ptr<FileBackend> backend_;
  std::string images_;
};

TEST_F(FileBackendFaultsTest, CreateSyncsTheImageThenItsDirectory) {
  env_.ClearCalls();
  ASSERT_TRUE(backend_->Create(Spec()).ok());
  std::vector<std::string> calls = env_.calls();
  const std::string img = images_ + "/pvc-img.img";
  auto at = [&](const std::string& c) {
    return std::find(calls.begin(), calls.end(), c) - calls.begin();
  };
  ASSERT_LT(at("Fallocate " + img), static_cast<long>(calls.size()));
  EXPECT_LT(at("Fallocate " + img), at("Sync " + img));
  ASSERT_LT(at("Sync " + images_), static_cast<long>(calls.size()))
      << "the new directory entry is made durable";
  EXPECT_LT(at("Sync " + img), at("Sync " + images_));
}

// A new image that mkfs formats next is fsynced by mkfs (which writes the
// same file): the backend syncs only its directory entry. A grown one is
// fsynced whatever the spec says.
TEST_F(FileBackendFaultsTest, ANewImageFormattedNextLeavesItsFsyncToMkfs) {
  VolumeSpec spec = Spec();
  spec.synced_by_format = true;
  env_.ClearCalls();
  ASSERT_TRUE(backend_->Create(spec).ok());
  std::vector<std::string> calls = env_.calls();
  const std::string img = images_ + "/pvc-img.img";
  EXPECT_EQ(std::count(calls.begin(), calls.end(), "Sync " + img), 0);
  EXPECT_EQ(std::count(calls.begin(), calls.end(), "Sync " + images_), 1)
      << "the new directory entry is still made durable";

  spec.capacity_bytes = 32 << 20;
  env_.ClearCalls();
  ASSERT_TRUE(backend_->Create(spec).ok());
  calls = env_.calls();
  EXPECT_EQ(std::count(calls.begin(), calls.end(), "Sync " + img), 1)
      << "an image that grew is fsynced: no mkfs follows";
}

TEST_F(FileBackendFaultsTest, DeleteSyncsTheDirectoryAfterTheUnlink) {
  ASSERT_TRUE(backend_->Create(Spec()).ok());
  env_.ClearCalls();
  ASSERT_TRUE(backend_->Delete("pvc-img").ok());
  std::vector<std::string> calls = env_.calls();
  auto rm = std::find(calls.begin(), calls.end(),
                      "RemoveFile " + images_ + "/pvc-img.img");
  ASSERT_NE(rm, calls.end());
  EXPECT_NE(std::find(rm, calls.end(), "Sync " + images_), calls.end());
}

TEST_F(FileBackendFaultsTest, NoSpaceIsResourceExhaustedAndLeavesNoImage) {
  env_.FailNext("Fallocate", absl::ResourceExhaustedError("fallocate: ENOSPC"));
  auto v = backend_->Create(Spec());
  EXPECT_EQ(v.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_FALSE(sys::PathExists(images_ + "/pvc-img.img"));
  EXPECT_TRUE(backend_->Create(Spec()).ok()) << "the retry works";
}

TEST_F(FileBackendFaultsTest, FsyncErrorOnCreateLeavesNoImage) {
  for (const char* target : {"/pvc-img.img", "/volumes"}) {
    env_.FailNext("Sync", absl::DataLossError("fsync: EIO"), target);
    auto v = backend_->Create(Spec());
    EXPECT_EQ(v.status().code(), absl::StatusCode::kDataLoss) << target;
    EXPECT_FALSE(sys::PathExists(images_ + "/pvc-img.img")) << target;
  }
}

TEST_F(FileBackendFaultsTest, FsyncErrorOnDeleteIsReported) {
  ASSERT_TRUE(backend_->Create(Spec()).ok());
  env_.FailNext("Sync", absl::DataLossError("fsync: EIO"), "/volumes");
  EXPECT_FALSE(backend_->Delete("pvc-img").ok());
  EXPECT_TRUE(backend_->Delete("pvc-img").ok()) << "the retry is OK";
}

// The image pool over a FakeFormatter (docs/csi.md, "Pre-formatted images").
class FileBackendPoolTest : public StoreFaultsTest {
 protected:
  static constexpr uint64_t kImage = 16 << 20;
  void SetUp() override {
    StoreFaultsTest::SetUp();
    images_ = dir_ + "/volumes";
    Restart(/*capacity=*/0);
  }
  // A new backend over the same directory (a restarted plugin's).
  void Restart(uint64_t capacity, int depth = 2) {
    if (backend_ != nullptr) backend_->StopPool();
    backend_ = std::make_unique<FileBackend>(images_, capacity, &env_);
    ASSERT_TRUE(backend_->Init().ok());
    ImagePoolOptions o;
    o.depth = depth;
    o.classes.push_back(ImagePoolClass{"ext4", kImage, Args()});
    ASSERT_TRUE(backend_->StartPool(o, &formatter_).ok());
    ASSERT_TRUE(backend_->WaitPoolIdle(absl::Seconds(30)));
  }
  static std::vector<std::string> Args() { return {"-q", "-E", "x"}; }
  VolumeSpec Spec(const std::string& id, uint64_t bytes = kImage) {
    VolumeSpec s;
    s.id = id;
    s.capacity_bytes = bytes;
    s.fs_type = "ext4";
    s.synced_by_format = true;
    return s;
  }
  std::vector<std::string> Named(absl::string_view suffix) {
    std::vector<std::string> out;
    for (const std::string& n :
         sys::ListDir(images_).value_or(std::vector<std::string>{})) {
      if (absl::EndsWith(n, suffix)) out.push_back(n);
    }
    return out;
  }

  sys::FakeFormatter formatter_;
  std::unique_ptr<FileBackend> backend_;
  std::string images_;
};

TEST_F(FileBackendPoolTest, TakeRenamesAPooledImageAndThePoolFillsAgain) {
  EXPECT_EQ(backend_->PooledImages(), 2);
  EXPECT_EQ(formatter_.format_calls(), 2);
  EXPECT_EQ(formatter_.last_format_args(), Args());
  EXPECT_EQ(Named(".pool").size(), 2u);
  auto listed = backend_->List();
  ASSERT_TRUE(listed.ok());
  EXPECT_TRUE(listed->empty()) << "pooled images are not volumes";

  // Another size, other mkfs arguments: not from the pool.
  auto other = backend_->TakeFormatted(Spec("pvc-a", 2 * kImage), Args());
  ASSERT_TRUE(other.ok());
  EXPECT_FALSE(other->has_value());
  other = backend_->TakeFormatted(Spec("pvc-a"), {"-q"});
  ASSERT_TRUE(other.ok());
  EXPECT_FALSE(other->has_value());

  env_.ClearCalls();
  auto vol = backend_->TakeFormatted(Spec("pvc-a"), Args());
  ASSERT_TRUE(vol.ok()) << vol.status();
  ASSERT_TRUE(vol->has_value());
  EXPECT_EQ((*vol)->capacity_bytes, kImage);
  ASSERT_TRUE(backend_->SyncCreated("pvc-a").ok());
  std::vector<std::string> calls = env_.calls();
  auto renamed = std::find_if(calls.begin(), calls.end(), [&](auto& c) {
    return absl::StartsWith(c, "Rename " + images_) &&
           absl::EndsWith(c, ".pool -> " + images_ + "/pvc-a.img");
  });
  ASSERT_NE(renamed, calls.end()) << absl::StrJoin(calls, "\n");
  EXPECT_NE(std::find(renamed, calls.end(), "Sync " + images_), calls.end())
      << "the rename is made durable";
  auto got = backend_->Get("pvc-a");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->capacity_bytes, kImage);

  // The volume's image exists: a take again adopts nothing from the pool.
  auto again = backend_->TakeFormatted(Spec("pvc-a"), Args());
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->has_value());

  ASSERT_TRUE(backend_->WaitPoolIdle(absl::Seconds(30)));
  EXPECT_EQ(backend_->PooledImages(), 2);
  EXPECT_EQ(formatter_.format_calls(), 3);
  EXPECT_TRUE(Named(".partial").empty());
}

TEST_F(FileBackendPoolTest, PooledImagesAreAvailableAndGiveWayToAVolume) {
  Restart(/*capacity=*/4 * kImage);
  ASSERT_EQ(backend_->PooledImages(), 2);
  auto cap = backend_->GetCapacity(VolumeMode::kFsdax);
  ASSERT_TRUE(cap.ok());
  EXPECT_EQ(cap->total_bytes, 4 * kImage);
  EXPECT_EQ(cap->available_bytes, 4 * kImage)
      << "pooled images are reclaimable";

  // 3 images' worth: one pooled image has to go.
  VolumeSpec big = Spec("pvc-big", 3 * kImage);
  big.synced_by_format = false;
  ASSERT_TRUE(backend_->Create(big).ok());
  EXPECT_EQ(backend_->PooledImages(), 1);
  cap = backend_->GetCapacity(VolumeMode::kFsdax);
  ASSERT_TRUE(cap.ok());
  EXPECT_EQ(cap->available_bytes, kImage);
  ASSERT_TRUE(backend_->WaitPoolIdle(absl::Seconds(30)));
  EXPECT_EQ(backend_->PooledImages(), 1) << "no room to fill into";

  // More than there is: refused, the pool left as it is.
  auto refused = backend_->Create(Spec("pvc-x", 2 * kImage));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(backend_->PooledImages(), 1);

  // Room again: the pool fills up.
  ASSERT_TRUE(backend_->Delete("pvc-big").ok());
  ASSERT_TRUE(backend_->WaitPoolIdle(absl::Seconds(30)));
  EXPECT_EQ(backend_->PooledImages(), 2);
}

TEST_F(FileBackendPoolTest, AFailedFormatLeavesNothingAndWaitsForRoomToChange) {
  Restart(0, /*depth=*/0);
  formatter_.FailNext("Format", absl::InternalError("mkfs.ext4 exited 1"));
  ImagePoolOptions o;
  o.depth = 1;
  o.classes.push_back(ImagePoolClass{"ext4", kImage, Args()});
  backend_ = std::make_unique<FileBackend>(images_, 0, &env_);
  ASSERT_TRUE(backend_->Init().ok());
  ASSERT_TRUE(backend_->StartPool(o, &formatter_).ok());
  ASSERT_TRUE(backend_->WaitPoolIdle(absl::Seconds(30)));
  EXPECT_EQ(backend_->PooledImages(), 0);
  EXPECT_TRUE(Named(".pool").empty());
  EXPECT_TRUE(Named(".partial").empty()) << "the half-made image went";

  VolumeSpec plain = Spec("pvc-plain");
  plain.synced_by_format = false;
  ASSERT_TRUE(backend_->Create(plain).ok());
  ASSERT_TRUE(backend_->Delete("pvc-plain").ok());  // room changed
  ASSERT_TRUE(backend_->WaitPoolIdle(absl::Seconds(30)));
  EXPECT_EQ(backend_->PooledImages(), 1);
}

TEST_F(FileBackendPoolTest, ARestartDropsHalfMadeAndUnwantedImages) {
  ASSERT_EQ(Named(".pool").size(), 2u);
  backend_->StopPool();
  // What a crash between mkfs and the rename leaves, and an image of a
  // class no longer configured.
  const std::string kept = Named(".pool")[0];
  const std::string half = Named(".pool")[1];
  ASSERT_EQ(::rename((images_ + "/" + half).c_str(),
                     (images_ + "/" + half + ".partial").c_str()),
            0);
  ASSERT_TRUE(
      sys::WriteFileAtomic(images_ + "/xfs-314572800-00000000-7.pool", "x")
          .ok());
  const int formats = formatter_.format_calls();
  Restart(0);
  std::vector<std::string> pooled = Named(".pool");
  EXPECT_EQ(pooled.size(), 2u);
  EXPECT_NE(std::find(pooled.begin(), pooled.end(), kept), pooled.end());
  EXPECT_TRUE(Named(".partial").empty());
  EXPECT_FALSE(sys::PathExists(images_ + "/xfs-314572800-00000000-7.pool"));
  EXPECT_EQ(formatter_.format_calls(), formats + 1)
      << "one made again, the complete one kept";
}

}  // namespace
}  // namespace daxlease::csi
