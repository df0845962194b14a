#include "csi/snapshot_store.h"

#include <stdlib.h>

#include <string>

#include "gtest/gtest.h"

namespace daxlease::csi {
namespace {

SnapshotRecord Sample() {
  SnapshotRecord r;
  r.id = "snapshot-1-00ff";
  r.name = "snapshot-1";
  r.source_volume_id = "pvc-1-00aa";
  r.size_bytes = 64ull << 20;
  r.fs_type = "ext4";
  r.formatted = true;
  r.creation_unix_nanos = 1764888000123456789;
  r.phase = SnapshotPhase::kCreating;
  r.frozen_path = "/var/lib/kubelet/x/globalmount";
  return r;
}

TEST(SnapshotStoreTest, RecordRoundTrips) {
  SnapshotRecord r = Sample();
  auto back = SnapshotRecordFromJson(SnapshotRecordToJson(r));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->id, r.id);
  EXPECT_EQ(back->name, r.name);
  EXPECT_EQ(back->source_volume_id, r.source_volume_id);
  EXPECT_EQ(back->size_bytes, r.size_bytes);
  EXPECT_EQ(back->fs_type, "ext4");
  EXPECT_TRUE(back->formatted);
  EXPECT_EQ(back->creation_unix_nanos, r.creation_unix_nanos);
  EXPECT_EQ(back->phase, SnapshotPhase::kCreating);
  EXPECT_EQ(back->frozen_path, r.frozen_path);
}

TEST(SnapshotStoreTest, CorruptRecordsAreDataLoss) {
  for (const char* bad :
       {"", "{", "{\"id\":\"a\"}",
        R"({"id":"a","name":"a","sourceVolumeId":"v","sizeBytes":-1,
            "mode":"fsdax","creationUnixNanos":0,"phase":"ready"})",
        R"({"id":"a","name":"a","sourceVolumeId":"v","sizeBytes":1,
            "mode":"fsdax","creationUnixNanos":0,"phase":"half"})"}) {
    EXPECT_TRUE(absl::IsDataLoss(SnapshotRecordFromJson(bad).status())) << bad;
  }
}

TEST(SnapshotStoreTest, SaveLoadListRemove) {
  char tmpl[] = "/tmp/daxlease-snapstore-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  SnapshotStore store(std::string(tmpl) + "/snaps");
  ASSERT_TRUE(store.Init().ok());
  auto none = store.Load("nope");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  SnapshotRecord r = Sample();
  ASSERT_TRUE(store.Save(r).ok());
  r.id = "another";
  r.phase = SnapshotPhase::kReady;
  ASSERT_TRUE(store.Save(r).ok());
  auto all = store.LoadAll();
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].id, "another");
  ASSERT_TRUE(store.Remove("another").ok());
  ASSERT_TRUE(store.Remove("another").ok());  // idempotent
  all = store.LoadAll();
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 1u);
  std::string cmd = std::string("rm -rf ") + tmpl;
  ASSERT_EQ(system(cmd.c_str()), 0);
}

}  // namespace
}  // namespace daxlease::csi
