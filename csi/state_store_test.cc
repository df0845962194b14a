#include "csi/state_store.h"

#include <stdlib.h>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "lib/sys/file.h"

namespace daxlease::csi {
namespace {

VolumeRecord Sample() {
  VolumeRecord r;
  r.id = "pvc-1-00ff";
  r.name = "pvc-1";
  r.capacity_bytes = 1ull << 30;
  r.mode = VolumeMode::kFsdax;
  r.fs_type = "xfs";
  r.parameters = {{"daxlease.io/share", "true"}};
  r.phase = VolumePhase::kReady;
  StageRecord st;
  st.staging_path = "/k/s";
  st.fs_type = "xfs";
  st.mount_flags = {"noatime"};
  st.device = "/dev/loop4";
  r.stage = st;
  PublishRecord p;
  p.target_path = "/k/t";
  p.read_only = true;
  r.publishes[p.target_path] = p;
  return r;
}

TEST(StateStoreTest, JsonRoundTrip) {
  VolumeRecord r = Sample();
  auto back = RecordFromJson(RecordToJson(r));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->id, r.id);
  EXPECT_EQ(back->capacity_bytes, r.capacity_bytes);
  EXPECT_EQ(back->parameters, r.parameters);
  ASSERT_TRUE(back->stage.has_value());
  EXPECT_EQ(back->stage->device, "/dev/loop4");
  EXPECT_EQ(back->stage->mount_flags, r.stage->mount_flags);
  ASSERT_EQ(back->publishes.size(), 1u);
  EXPECT_TRUE(back->publishes.at("/k/t").read_only);
  EXPECT_TRUE(back->formatted == r.formatted);
}

TEST(StateStoreTest, CorruptJsonIsDataLossNotACrash) {
  EXPECT_EQ(RecordFromJson("{not json").status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(RecordFromJson(R"({"id": 5})").status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_FALSE(
      RecordFromJson(
          R"({"id":"a","name":"b","capacityBytes":1,"mode":"zz","phase":"ready"})")
          .ok());
}

// Found by the state_record fuzzer: a float capacity was converted with a
// static_cast (undefined behaviour out of range), a negative one wrapped.
TEST(StateStoreTest, CapacityMustBeANonNegativeInteger) {
  for (const char* capacity : {"3.35e25", "1e300", "1.5", "-1", "\"7\""}) {
    std::string text =
        absl::StrCat(R"({"id":"a","name":"b","capacityBytes":)", capacity,
                     R"(,"mode":"fsdax","phase":"ready"})");
    EXPECT_EQ(RecordFromJson(text).status().code(), absl::StatusCode::kDataLoss)
        << capacity;
  }
  EXPECT_TRUE(
      RecordFromJson(
          R"({"id":"a","name":"b","capacityBytes":7,"mode":"fsdax","phase":"ready"})")
          .ok());
}

TEST(StateStoreTest, SaveLoadListRemove) {
  char tmpl[] = "/tmp/daxlease-store-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  std::string dir = tmpl;
  StateStore store(dir + "/state");
  ASSERT_TRUE(store.Init().ok());
  auto none = store.Load("nope");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  VolumeRecord a = Sample();
  VolumeRecord b = Sample();
  b.id = "aaa";
  ASSERT_TRUE(store.Save(a).ok());
  ASSERT_TRUE(store.Save(b).ok());
  ASSERT_TRUE(sys::WriteFileAtomic(dir + "/state/zzz.json.tmp", "junk").ok());
  auto all = store.LoadAll();
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].id, "aaa");
  ASSERT_TRUE(store.Remove("aaa").ok());
  ASSERT_TRUE(store.Remove("aaa").ok());
  EXPECT_EQ(store.LoadAll()->size(), 1u);
  ASSERT_TRUE(sys::WriteFileAtomic(dir + "/state/bad.json", "{").ok());
  EXPECT_FALSE(store.LoadAll().ok()) << "a corrupt record is reported";
  std::string cmd = "rm -rf " + dir;
  ASSERT_EQ(system(cmd.c_str()), 0);
}

}  // namespace
}  // namespace daxlease::csi
