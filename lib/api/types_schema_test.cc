// manifests/crd/ is the one definition of the daxlease kinds. This test
// checks the C++ side against it: every field ToJson writes exists in the
// structural schema with the same JSON type, every enum's C++ names are
// exactly the schema's, and the printer columns point at real fields.
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "lib/api/json.h"
#include "yaml-cpp/yaml.h"

namespace daxlease::api {
namespace {

using nlohmann::json;

YAML::Node LoadSchema(const std::string& plural) {
  YAML::Node crd =
      YAML::LoadFile(absl::StrCat(DAXLEASE_CRD_DIR, "/", plural, ".yaml"));
  return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
}

// Schema node of a dotted field path. Recursive on purpose: yaml-cpp's
// `node = node[key]` rebinds by assignment and would rewrite the document.
YAML::Node Lookup(const YAML::Node& schema,
                  const std::vector<std::string>& parts, size_t i = 0) {
  if (i == parts.size() || !schema.IsDefined()) return schema;
  return Lookup(schema["properties"][parts[i]], parts, i + 1);
}

std::set<std::string> SchemaEnum(const YAML::Node& schema,
                                 const std::string& dotted) {
  YAML::Node n = Lookup(schema, absl::StrSplit(dotted, '.'));
  std::set<std::string> out;
  for (const auto& v : n["enum"]) out.insert(v.as<std::string>());
  return out;
}

template <typename E>
std::set<std::string> Names() {
  auto v = EnumNames<E>();
  return {v.begin(), v.end()};
}

// Walks `value` and fails for each key missing from `schema` or with a
// different JSON type.
void ExpectMatchesSchema(const json& value, const YAML::Node& schema,
                         const std::string& path) {
  ASSERT_TRUE(schema.IsDefined()) << path << " is not in the CRD schema";
  std::string type = schema["type"].as<std::string>();
  if (value.is_object()) {
    ASSERT_EQ(type, "object") << path;
    if (!schema["properties"].IsDefined()) return;  // e.g. metadata
    for (auto it = value.begin(); it != value.end(); ++it) {
      ExpectMatchesSchema(*it, schema["properties"][it.key()],
                          absl::StrCat(path, ".", it.key()));
    }
  } else if (value.is_array()) {
    ASSERT_EQ(type, "array") << path;
    for (const json& item : value) {
      ExpectMatchesSchema(item, schema["items"], path + "[]");
    }
  } else if (value.is_string()) {
    EXPECT_EQ(type, "string") << path;
    if (schema["enum"].IsDefined()) {
      std::set<std::string> allowed;
      for (const auto& v : schema["enum"]) allowed.insert(v.as<std::string>());
      EXPECT_TRUE(allowed.contains(value.get<std::string>()))
          << path << " = " << value;
    }
  } else if (value.is_boolean()) {
    EXPECT_EQ(type, "boolean") << path;
  } else if (value.is_number_integer()) {
    EXPECT_EQ(type, "integer") << path;
  } else {
    ADD_FAILURE() << path << ": unexpected JSON " << value;
  }
}

const absl::Time kT = absl::FromUnixSeconds(1'700'000'000);
const Condition kCond{"Ready", ConditionStatus::kTrue, 1, kT, "Ok", "fine"};

TEST(SchemaTest, EnumsAgreeWithCrdYaml) {
  YAML::Node dv = LoadSchema("daxvolumes");
  EXPECT_EQ(Names<VolumeMode>(), SchemaEnum(dv, "spec.mode"));
  EXPECT_EQ(Names<FsType>(), SchemaEnum(dv, "spec.fsType"));
  EXPECT_EQ(Names<VolumePhase>(), SchemaEnum(dv, "status.phase"));
  YAML::Node dl = LoadSchema("daxleases");
  EXPECT_EQ(Names<Access>(), SchemaEnum(dl, "spec.access"));
  EXPECT_EQ(Names<LeaseState>(), SchemaEnum(dl, "status.state"));
  YAML::Node drc = LoadSchema("daxrecalls");
  EXPECT_EQ(Names<RecallReason>(), SchemaEnum(drc, "spec.reason"));
  EXPECT_EQ(Names<RecallPhase>(), SchemaEnum(drc, "status.phase"));
  YAML::Node dmig = LoadSchema("daxmigrations");
  EXPECT_EQ(Names<MigrationPhase>(), SchemaEnum(dmig, "status.phase"));
  std::set<std::string> cond_status;
  for (const auto& v : dl["properties"]["status"]["properties"]["conditions"]
                         ["items"]["properties"]["status"]["enum"]) {
    cond_status.insert(v.as<std::string>());
  }
  EXPECT_EQ(Names<ConditionStatus>(), cond_status);
}

TEST(SchemaTest, EveryFieldWrittenExistsInTheSchema) {
  DaxVolume v;
  v.metadata.name = "v";
  v.spec = {1, VolumeMode::kFsdax, FsType::kExt4, "n", true, 3};
  v.status = {VolumePhase::kReady, "n", 1, 1, 1, true, "r", {kCond}};
  ExpectMatchesSchema(ToJson(v), LoadSchema("daxvolumes"), "DaxVolume");

  DaxLease l;
  l.metadata.name = "l";
  l.spec = {"v", "n", "ns/p", Access::kReadWrite};
  l.status = {LeaseState::kRevoked,
              LeaseBinding{"v", "n", "ns/p"},
              1,
              "r",
              kT,
              "DeadlineExceeded",
              "r",
              true,
              "r",
              true,
              {kCond}};
  ExpectMatchesSchema(ToJson(l), LoadSchema("daxleases"), "DaxLease");

  DaxRecall r;
  r.metadata.name = "r";
  r.spec = {"v", RecallReason::kEvict, 2};
  r.status.phase = RecallPhase::kComplete;
  r.status.recall_id = "id";
  r.status.epoch = 3;
  r.status.released = r.status.revoked = r.status.outstanding = 1;
  r.status.revoked_leases = {"l-1"};
  r.status.fenced_leases = {"l-1"};
  r.status.started_at = r.status.deadline = r.status.completed_at = kT;
  r.status.conditions = {kCond};
  ExpectMatchesSchema(ToJson(r), LoadSchema("daxrecalls"), "DaxRecall");

  DaxMigration m;
  m.metadata.name = "m";
  m.spec = {"v", "n2"};
  m.status = {MigrationPhase::kCopying,
              "n1",
              "v-migrate-e3",
              3,
              10,
              5,
              7,
              "sha256:a",
              "sha256:b",
              "10.0.0.2:7390",
              "InsufficientCapacity: no room",
              true,
              true,
              kT,
              kT,
              kT,
              {kCond},
              10,
              4,
              "PreCopyStalled: no progress",
              2};
  ExpectMatchesSchema(ToJson(m), LoadSchema("daxmigrations"), "DaxMigration");
}

TEST(SchemaTest, CrdNamesAndPrinterColumns) {
  struct Want {
    std::string plural, kind, short_name;
  };
  for (const Want& w : {Want{"daxvolumes", "DaxVolume", "dv"},
                        Want{"daxleases", "DaxLease", "dl"},
                        Want{"daxrecalls", "DaxRecall", "drc"},
                        Want{"daxmigrations", "DaxMigration", "dmig"}}) {
    SCOPED_TRACE(w.plural);
    YAML::Node crd =
        YAML::LoadFile(absl::StrCat(DAXLEASE_CRD_DIR, "/", w.plural, ".yaml"));
    EXPECT_EQ(crd["spec"]["group"].as<std::string>(), kGroup);
    EXPECT_EQ(crd["spec"]["scope"].as<std::string>(), "Cluster");
    EXPECT_EQ(crd["spec"]["names"]["kind"].as<std::string>(), w.kind);
    EXPECT_EQ(crd["spec"]["names"]["shortNames"][0].as<std::string>(),
              w.short_name);
    EXPECT_EQ(crd["spec"]["names"]["categories"][0].as<std::string>(), "dax");
    YAML::Node version = crd["spec"]["versions"][0];
    EXPECT_EQ(version["name"].as<std::string>(), kVersion);
    EXPECT_TRUE(version["subresources"]["status"].IsDefined());
    YAML::Node schema = version["schema"]["openAPIV3Schema"];
    for (const auto& col : version["additionalPrinterColumns"]) {
      std::string path = col["jsonPath"].as<std::string>();
      if (path == ".metadata.creationTimestamp") continue;
      std::vector<std::string> parts =
          absl::StrSplit(path.substr(1), '.', absl::SkipEmpty());
      EXPECT_TRUE(Lookup(schema, parts).IsDefined()) << path;
    }
  }
  EXPECT_STREQ(Resource<DaxRecall>::kPlural, "daxrecalls");
}

// A recall's grace is bounded (as the CSI parameter path bounds it), so no
// recall can hold a volume for longer than a day.
TEST(TypesSchemaTest, GraceSecondsAreBoundedToADay) {
  for (const auto& [plural, field] :
       std::vector<std::pair<std::string, std::string>>{
           {"daxrecalls", "spec.graceSeconds"},
           {"daxvolumes", "spec.recallGraceSeconds"}}) {
    YAML::Node n = Lookup(LoadSchema(plural), absl::StrSplit(field, '.'));
    ASSERT_TRUE(n["maximum"].IsDefined()) << plural << " " << field;
    EXPECT_EQ(n["maximum"].as<int64_t>(), kMaxGraceSeconds) << field;
    EXPECT_EQ(n["minimum"].as<int64_t>(), 1) << field;
  }
}

}  // namespace
}  // namespace daxlease::api
