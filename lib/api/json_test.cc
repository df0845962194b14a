#include "lib/api/json.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace daxlease::api {
namespace {

using nlohmann::json;

absl::Time T(int64_t s) { return absl::FromUnixSeconds(1'700'000'000 + s); }

DaxLease FullLease() {
  DaxLease l;
  l.metadata.name = "pvc-1-node-a";
  l.metadata.uid = "u-1";
  l.metadata.resource_version = "42";
  l.metadata.generation = 3;
  l.metadata.creation_timestamp = T(0);
  l.metadata.deletion_timestamp = T(9);
  l.metadata.finalizers = {kLeaseFinalizer};
  l.metadata.labels = {{kVolumeLabel, "pvc-1"}};
  l.metadata.annotations = {{"a", "b"}};
  l.spec = {"pvc-1", "node-a", "default/pod-0", Access::kReadWrite};
  l.status.state = LeaseState::kRevoked;
  l.status.epoch = 7;
  l.status.recall_id = "r-1";
  l.status.deadline = T(30);
  l.status.reason = "DeadlineExceeded";
  l.status.released_recall_id = "r-0";
  l.status.fence_required = true;
  l.status.fenced_recall_id = "r-1";
  l.status.revocation_acknowledged = true;
  l.status.conditions.push_back(
      {"Granted", ConditionStatus::kFalse, 3, T(5), "Revoked", "late"});
  return l;
}

TEST(JsonTest, LeaseRoundTripsWithWireNames) {
  DaxLease l = FullLease();
  json j = ToJson(l);
  EXPECT_EQ(j["apiVersion"], "daxlease.io/v1alpha1");
  EXPECT_EQ(j["kind"], "DaxLease");
  EXPECT_EQ(j["spec"]["holderNode"], "node-a");
  EXPECT_EQ(j["spec"]["access"], "ReadWrite");
  EXPECT_EQ(j["status"]["state"], "Revoked");
  EXPECT_EQ(j["status"]["deadline"], "2023-11-14T22:13:50Z");
  EXPECT_EQ(j["status"]["conditions"][0]["status"], "False");
  absl::StatusOr<DaxLease> back = FromJson<DaxLease>(j);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, l);
}

TEST(JsonTest, NewRecallObjectIsWhatAnAgentCreates) {
  json r = NewRecallObject("pvc-1", RecallReason::kSnapshot);
  EXPECT_EQ(r["apiVersion"], kApiVersion);
  EXPECT_EQ(r["kind"], "DaxRecall");
  EXPECT_EQ(r["metadata"], json({{"finalizers", {kRecallFinalizer}}}));
  EXPECT_EQ(r["spec"], json({{"volume", "pvc-1"}, {"reason", "Snapshot"}}));
  EXPECT_FALSE(r.contains("status"));
  r["metadata"]["name"] = "pvc-1-snap-e3";
  auto parsed = FromJson<DaxRecall>(r);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->spec.reason, RecallReason::kSnapshot);
  EXPECT_EQ(parsed->metadata.finalizers,
            std::vector<std::string>{kRecallFinalizer});
}

TEST(JsonTest, VolumeRecallMigrationRoundTrip) {
  DaxVolume v;
  v.metadata.name = "pvc-1";
  v.spec = {1 << 30, VolumeMode::kDevdax, FsType::kXfs, "node-a", true, 5};
  v.status.phase = VolumePhase::kRecalling;
  v.status.owner = "node-a";
  v.status.capacity_bytes = 2 << 30;
  v.status.epoch = 4;
  v.status.holders = 2;
  v.status.dax = true;
  v.status.active_recall = "r";
  auto v2 = FromJson<DaxVolume>(ToJson(v));
  ASSERT_TRUE(v2.ok()) << v2.status();
  EXPECT_EQ(*v2, v);

  DaxRecall r;
  r.metadata.name = "r";
  r.spec = {"pvc-1", RecallReason::kMigrate, 2};
  r.status.phase = RecallPhase::kComplete;
  r.status.recall_id = "uid";
  r.status.released = 2;
  r.status.revoked = 1;
  r.status.outstanding = 0;
  r.status.epoch = 7;
  r.status.revoked_leases = {"l-1", "l-2"};
  r.status.fenced_leases = {"l-1"};
  r.status.started_at = T(1);
  r.status.deadline = T(3);
  r.status.completed_at = T(4);
  auto r2 = FromJson<DaxRecall>(ToJson(r));
  ASSERT_TRUE(r2.ok()) << r2.status();
  EXPECT_EQ(*r2, r);

  DaxMigration m;
  m.metadata.name = "m";
  m.spec = {"pvc-1", "node-b"};
  m.status.phase = MigrationPhase::kCopying;
  m.status.bytes_copied = 99;
  m.status.pre_copied_bytes = 98;
  m.status.pre_copy_millis = 12;
  m.status.pre_copy_failure = "PreCopyStalled: gone";
  m.status.refetched_bytes = 16;
  auto m2 = FromJson<DaxMigration>(ToJson(m));
  ASSERT_TRUE(m2.ok()) << m2.status();
  EXPECT_EQ(*m2, m);
}

TEST(JsonTest, DefaultsAreOmittedAndMissingFieldsDefault) {
  DaxLease l;
  l.metadata.name = "x";
  l.spec.volume = "v";
  l.spec.holder_node = "n";
  json j = ToJson(l);
  EXPECT_FALSE(j.contains("status"));
  EXPECT_FALSE(j["spec"].contains("holderPod"));
  auto back = FromJson<DaxLease>(json::parse(
      R"({"metadata":{"name":"x"},"spec":{"volume":"v","holderNode":"n"},
          "status":null})"));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, l);
}

TEST(JsonTest, BadInputIsInvalidArgumentNamingTheField) {
  auto bad_enum = FromJson<DaxLease>(
      json::parse(R"({"metadata":{"name":"x"},"status":{"state":"Bogus"}})"));
  EXPECT_EQ(bad_enum.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad_enum.status().message(), testing::HasSubstr("state"));
  auto bad_type = FromJson<DaxVolume>(
      json::parse(R"({"metadata":{"name":"x"},"spec":{"sizeBytes":"big"}})"));
  EXPECT_THAT(bad_type.status().message(), testing::HasSubstr("sizeBytes"));
  auto bad_time = FromJson<DaxRecall>(
      json::parse(R"({"status":{"startedAt":"yesterday"}})"));
  EXPECT_THAT(bad_time.status().message(), testing::HasSubstr("startedAt"));
  EXPECT_FALSE(FromJson<DaxRecall>(json::array()).ok());
}

// Found by the api_json fuzzer: naming the object in the error re-read a
// metadata that was not an object and threw out of FromJson.
TEST(JsonTest, MalformedMetadataIsAnErrorNotAThrow) {
  for (const char* text :
       {R"({"metadata":"DaxLeaseList"})", R"({"metadata":[1]})",
        R"({"metadata":{"name":7}})", R"({"metadata":"x","spec":{"a":1}})"}) {
    absl::StatusOr<DaxVolume> v = FromJson<DaxVolume>(json::parse(text));
    EXPECT_EQ(v.status().code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_THAT(v.status().message(), testing::HasSubstr("DaxVolume")) << text;
    EXPECT_FALSE(FromJson<DaxLease>(json::parse(text)).ok()) << text;
  }
}

TEST(JsonTest, ListFromJsonParsesItems) {
  json list = {{"items", {ToJson(FullLease()), ToJson(FullLease())}}};
  auto leases = ListFromJson<DaxLease>(list);
  ASSERT_TRUE(leases.ok());
  EXPECT_EQ(leases->size(), 2u);
  EXPECT_TRUE(ListFromJson<DaxLease>(json{{"items", nullptr}})->empty());
}

TEST(JsonTest, TimeParsesFractionsAndOffsets) {
  EXPECT_EQ(*ParseWireTime("2023-11-14T22:13:20Z"), T(0));
  EXPECT_EQ(*ParseWireTime("2023-11-14T23:13:20+01:00"), T(0));
  EXPECT_EQ(*ParseWireTime("2023-11-14T22:13:20.5Z"),
            T(0) + absl::Milliseconds(500));
  EXPECT_FALSE(ParseWireTime("").ok());
}

TEST(JsonTest, MergePatchNullsRemovedKeysAndRecurses) {
  json from = {
      {"state", "Granted"}, {"reason", "x"}, {"a", {{"b", 1}, {"c", 2}}}};
  json to = {{"state", "Recalling"}, {"a", {{"b", 1}, {"c", 3}}}};
  json patch = CreateMergePatch(from, to);
  EXPECT_EQ(patch,
            json::parse(R"({"state":"Recalling","reason":null,"a":{"c":3}})"));
  json applied = from;
  applied.merge_patch(patch);
  EXPECT_EQ(applied, to);
  EXPECT_TRUE(CreateMergePatch(to, to).empty());
}

TEST(ConditionTest, TransitionTimeMovesOnlyOnStatusChange) {
  std::vector<Condition> cs;
  EXPECT_TRUE(SetCondition(
      cs, {"Ready", ConditionStatus::kFalse, 1, T(0), "Waiting", "m"}));
  EXPECT_FALSE(SetCondition(
      cs, {"Ready", ConditionStatus::kFalse, 1, T(5), "Waiting", "m"}));
  EXPECT_EQ(cs[0].last_transition_time, T(0));
  EXPECT_TRUE(SetCondition(
      cs, {"Ready", ConditionStatus::kFalse, 2, T(6), "Other", "m2"}));
  EXPECT_EQ(cs[0].last_transition_time, T(0));
  EXPECT_EQ(cs[0].reason, "Other");
  EXPECT_TRUE(
      SetCondition(cs, {"Ready", ConditionStatus::kTrue, 2, T(7), "Done", ""}));
  EXPECT_EQ(cs[0].last_transition_time, T(7));
  ASSERT_NE(FindCondition(cs, "Ready"), nullptr);
  EXPECT_EQ(FindCondition(cs, "Nope"), nullptr);
  EXPECT_EQ(cs.size(), 1u);
}

}  // namespace
}  // namespace daxlease::api
