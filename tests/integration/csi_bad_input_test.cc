// Bad requests get the right gRPC code with a message, and never crash the
// plugin: after every call it must still answer Probe.
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "tests/integration/csi_fixture.h"

namespace daxlease::testing {
namespace {

using Code = absl::StatusCode;

struct BadCall {
  const char* what;
  const char* method;
  std::string json;  // $VOL, $NAME, $ROOT, $STAGING are substituted
  std::set<Code> want;
};

constexpr char kMountCap[] =
    R"({"mount":{"fsType":"ext4"},"accessMode":{"mode":"SINGLE_NODE_WRITER"}})";

std::string Create(const std::string& name, const std::string& extra) {
  return absl::StrCat(R"({"name":")", name,
                      R"(","capacityRange":{"requiredBytes":"67108864"},)",
                      R"("volumeCapabilities":[)", kMountCap, "]", extra, "}");
}

class CsiBadInputTest : public CsiPluginTest {
 protected:
  int64_t CapacityBytes() const override { return int64_t{1} << 30; }

  void SetUp() override {
    CsiPluginTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    auto created =
        CallJson(plugin_->channel(), "/csi.v1.Controller/CreateVolume",
                 Create("pvc-existing", ""));
    ASSERT_TRUE(created.ok()) << created.status();
    csi::v1::CreateVolumeResponse resp;
    ASSERT_TRUE(
        google::protobuf::util::JsonStringToMessage(*created, &resp).ok());
    vol_ = resp.volume().volume_id();
    staging_ = root_ + "/staging/" + vol_;
    ASSERT_TRUE(MakeDirs(staging_).ok());
  }

  void Run(const std::vector<BadCall>& calls) {
    for (const BadCall& c : calls) {
      SCOPED_TRACE(absl::StrCat(c.method, ": ", c.what));
      std::string json = absl::StrReplaceAll(
          c.json, {{"$VOL", vol_}, {"$ROOT", root_}, {"$STAGING", staging_}});
      absl::StatusOr<std::string> r =
          CallJson(plugin_->channel(), c.method, json);
      Code got = r.ok() ? Code::kOk : r.status().code();
      EXPECT_TRUE(c.want.count(got) == 1)
          << "got " << (r.ok() ? "OK " + *r : r.status().ToString());
      if (!r.ok()) {
        EXPECT_FALSE(r.status().message().empty()) << "error without message";
      }
      ExpectAlive();
      if (HasFatalFailure()) return;
    }
  }

  std::string vol_;
  std::string staging_;
};

const std::set<Code> kIA = {Code::kInvalidArgument};
const std::set<Code> kNF = {Code::kNotFound};

TEST_F(CsiBadInputTest, ControllerCalls) {
  const std::string long_name(129, 'n');
  const std::string big_value(5000, 'v');
  Run({
      {"missing name", "/csi.v1.Controller/CreateVolume",
       R"({"volumeCapabilities":[)" + std::string(kMountCap) + "]}", kIA},
      {"empty name", "/csi.v1.Controller/CreateVolume", Create("", ""), kIA},
      {"name over 128 bytes", "/csi.v1.Controller/CreateVolume",
       Create(long_name, ""), kIA},
      {"no capabilities", "/csi.v1.Controller/CreateVolume",
       R"({"name":"pvc-nocaps","capacityRange":{"requiredBytes":"67108864"}})",
       kIA},
      {"parameters over 4 KiB", "/csi.v1.Controller/CreateVolume",
       Create("pvc-bigparams",
              R"(,"parameters":{"csi.storage.k8s.io/pvc/name":")" + big_value +
                  "\"}"),
       kIA},
      {"unknown daxlease.io/ parameter", "/csi.v1.Controller/CreateVolume",
       Create("pvc-unknownparam",
              R"(,"parameters":{"daxlease.io/colour":"red"})"),
       kIA},
      {"mode devdax on the file backend", "/csi.v1.Controller/CreateVolume",
       Create("pvc-devdax", R"(,"parameters":{"daxlease.io/mode":"devdax"})"),
       kIA},
      {"unknown mode", "/csi.v1.Controller/CreateVolume",
       Create("pvc-badmode", R"(,"parameters":{"daxlease.io/mode":"nvme"})"),
       kIA},
      {"unsupported fstype parameter", "/csi.v1.Controller/CreateVolume",
       Create("pvc-btrfs",
              R"(,"parameters":{"csi.storage.k8s.io/fstype":"btrfs"})"),
       kIA},
      {"unsupported capability fs_type", "/csi.v1.Controller/CreateVolume",
       R"({"name":"pvc-capfs","volumeCapabilities":[{"mount":{"fsType":"btrfs"},"accessMode":{"mode":"SINGLE_NODE_WRITER"}}]})",
       kIA},
      {"unsupported access mode", "/csi.v1.Controller/CreateVolume",
       R"({"name":"pvc-mnmw","volumeCapabilities":[{"mount":{},"accessMode":{"mode":"MULTI_NODE_MULTI_WRITER"}}]})",
       kIA},
      {"capability without access type", "/csi.v1.Controller/CreateVolume",
       R"({"name":"pvc-noaccesstype","volumeCapabilities":[{"accessMode":{"mode":"SINGLE_NODE_WRITER"}}]})",
       kIA},
      {"capability without access mode", "/csi.v1.Controller/CreateVolume",
       R"({"name":"pvc-noaccessmode","volumeCapabilities":[{"mount":{}}]})",
       kIA},
      {"negative size",
       "/csi.v1.Controller/CreateVolume",
       R"({"name":"pvc-neg","capacityRange":{"requiredBytes":"-1"},"volumeCapabilities":[)" +
           std::string(kMountCap) + "]}",
       {Code::kInvalidArgument, Code::kOutOfRange}},
      {"limit below required",
       "/csi.v1.Controller/CreateVolume",
       R"({"name":"pvc-limit","capacityRange":{"requiredBytes":"134217728","limitBytes":"67108864"},"volumeCapabilities":[)" +
           std::string(kMountCap) + "]}",
       {Code::kInvalidArgument, Code::kOutOfRange}},
      {"more than the configured capacity",
       "/csi.v1.Controller/CreateVolume",
       R"({"name":"pvc-huge","capacityRange":{"requiredBytes":"2147483648"},"volumeCapabilities":[)" +
           std::string(kMountCap) + "]}",
       {Code::kResourceExhausted}},
      {"same name, incompatible size",
       "/csi.v1.Controller/CreateVolume",
       R"({"name":"pvc-existing","capacityRange":{"requiredBytes":"134217728","limitBytes":"134217728"},"volumeCapabilities":[)" +
           std::string(kMountCap) + "]}",
       {Code::kAlreadyExists}},
      {"same name, another fstype",
       "/csi.v1.Controller/CreateVolume",
       R"({"name":"pvc-existing","capacityRange":{"requiredBytes":"67108864"},)"
       R"("volumeCapabilities":[{"mount":{},"accessMode":{"mode":"SINGLE_NODE_WRITER"}}],)"
       R"("parameters":{"csi.storage.k8s.io/fstype":"xfs"}})",
       {Code::kAlreadyExists}},
      {"empty id", "/csi.v1.Controller/DeleteVolume", R"({"volumeId":""})",
       kIA},
      {"unknown id is already deleted",
       "/csi.v1.Controller/DeleteVolume",
       R"({"volumeId":"no-such-volume"})",
       {Code::kOk}},
      {"empty id", "/csi.v1.Controller/ControllerGetVolume", "{}", kIA},
      {"unknown id", "/csi.v1.Controller/ControllerGetVolume",
       R"({"volumeId":"no-such-volume"})", kNF},
      {"id with ..", "/csi.v1.Controller/ControllerGetVolume",
       R"({"volumeId":"../../etc"})", kIA},
      {"id over 128 bytes", "/csi.v1.Controller/ControllerGetVolume",
       R"({"volumeId":")" + long_name + "\"}", kIA},
      {"id with a control character", "/csi.v1.Controller/ControllerGetVolume",
       R"({"volumeId":"pvc\u0001x"})", kIA},
      {"id with a newline", "/csi.v1.Controller/DeleteVolume",
       R"({"volumeId":"pvc\nx"})", kIA},
      {"id with upper case", "/csi.v1.Controller/DeleteVolume",
       R"({"volumeId":"PVC-X"})", kIA},
      {"id starting with -", "/csi.v1.Controller/ControllerExpandVolume",
       R"({"volumeId":"-x","capacityRange":{"requiredBytes":"134217728"}})",
       kIA},
      {"empty id", "/csi.v1.Controller/ControllerExpandVolume",
       R"({"capacityRange":{"requiredBytes":"134217728"}})", kIA},
      {"missing capacity range", "/csi.v1.Controller/ControllerExpandVolume",
       R"({"volumeId":"$VOL"})", kIA},
      {"unknown id", "/csi.v1.Controller/ControllerExpandVolume",
       R"({"volumeId":"no-such-volume","capacityRange":{"requiredBytes":"134217728"}})",
       kNF},
      {"empty id", "/csi.v1.Controller/ValidateVolumeCapabilities",
       R"({"volumeCapabilities":[)" + std::string(kMountCap) + "]}", kIA},
      {"no capabilities", "/csi.v1.Controller/ValidateVolumeCapabilities",
       R"({"volumeId":"$VOL"})", kIA},
      {"unknown id", "/csi.v1.Controller/ValidateVolumeCapabilities",
       R"({"volumeId":"no-such-volume","volumeCapabilities":[)" +
           std::string(kMountCap) + "]}",
       kNF},
      {"garbage starting token",
       "/csi.v1.Controller/ListVolumes",
       R"({"startingToken":"not-a-token"})",
       {Code::kAborted}},
  });
}

TEST_F(CsiBadInputTest, NodeCalls) {
  const std::string big_value(5000, 'c');
  const std::string cap = kMountCap;
  Run({
      {"empty id", "/csi.v1.Node/NodeStageVolume",
       R"({"stagingTargetPath":"$STAGING","volumeCapability":)" + cap + "}",
       kIA},
      {"empty staging path", "/csi.v1.Node/NodeStageVolume",
       R"({"volumeId":"$VOL","volumeCapability":)" + cap + "}", kIA},
      {"no capability", "/csi.v1.Node/NodeStageVolume",
       R"({"volumeId":"$VOL","stagingTargetPath":"$STAGING"})", kIA},
      {"staging path with ..", "/csi.v1.Node/NodeStageVolume",
       R"({"volumeId":"$VOL","stagingTargetPath":"$ROOT/../escape","volumeCapability":)" +
           cap + "}",
       kIA},
      {"staging path outside the allowed roots", "/csi.v1.Node/NodeStageVolume",
       R"({"volumeId":"$VOL","stagingTargetPath":"/var/tmp","volumeCapability":)" +
           cap + "}",
       kIA},
      {"relative staging path", "/csi.v1.Node/NodeStageVolume",
       R"({"volumeId":"$VOL","stagingTargetPath":"staging/x","volumeCapability":)" +
           cap + "}",
       kIA},
      {"volume context over 4 KiB", "/csi.v1.Node/NodeStageVolume",
       R"({"volumeId":"$VOL","stagingTargetPath":"$STAGING","volumeCapability":)" +
           cap + R"(,"volumeContext":{"k":")" + big_value + "\"}}",
       kIA},
      {"id with an escape character", "/csi.v1.Node/NodeStageVolume",
       R"({"volumeId":"pvc\u001b[2J","stagingTargetPath":"$STAGING","volumeCapability":)" +
           cap + "}",
       kIA},
      {"id with a space", "/csi.v1.Node/NodePublishVolume",
       R"({"volumeId":"pvc x","stagingTargetPath":"$STAGING","targetPath":"$ROOT/t1","volumeCapability":)" +
           cap + "}",
       kIA},
      {"id with a tab", "/csi.v1.Node/NodeUnpublishVolume",
       R"({"volumeId":"pvc\tx","targetPath":"$ROOT/t1"})", kIA},
      {"id with a dot", "/csi.v1.Node/NodeUnstageVolume",
       R"({"volumeId":"pvc.x","stagingTargetPath":"$STAGING"})", kIA},
      {"id with DEL", "/csi.v1.Node/NodeGetVolumeStats",
       R"({"volumeId":"pvc\u007f","volumePath":"$STAGING"})", kIA},
      {"unknown volume", "/csi.v1.Node/NodeStageVolume",
       R"({"volumeId":"no-such-volume","stagingTargetPath":"$STAGING","volumeCapability":)" +
           cap + "}",
       kNF},
      {"empty id", "/csi.v1.Node/NodePublishVolume",
       R"({"stagingTargetPath":"$STAGING","targetPath":"$ROOT/t1","volumeCapability":)" +
           cap + "}",
       kIA},
      {"empty target", "/csi.v1.Node/NodePublishVolume",
       R"({"volumeId":"$VOL","stagingTargetPath":"$STAGING","volumeCapability":)" +
           cap + "}",
       kIA},
      {"no capability", "/csi.v1.Node/NodePublishVolume",
       R"({"volumeId":"$VOL","stagingTargetPath":"$STAGING","targetPath":"$ROOT/t1"})",
       kIA},
      {"target with ..", "/csi.v1.Node/NodePublishVolume",
       R"({"volumeId":"$VOL","stagingTargetPath":"$STAGING","targetPath":"$ROOT/pods/../../t","volumeCapability":)" +
           cap + "}",
       kIA},
      {"target outside the allowed roots", "/csi.v1.Node/NodePublishVolume",
       R"({"volumeId":"$VOL","stagingTargetPath":"$STAGING","targetPath":"/var/tmp/daxlease-escape","volumeCapability":)" +
           cap + "}",
       kIA},
      {"unknown volume", "/csi.v1.Node/NodePublishVolume",
       R"({"volumeId":"no-such-volume","stagingTargetPath":"$STAGING","targetPath":"$ROOT/t1","volumeCapability":)" +
           cap + "}",
       kNF},
      {"empty id", "/csi.v1.Node/NodeUnpublishVolume",
       R"({"targetPath":"$ROOT/t1"})", kIA},
      {"empty target", "/csi.v1.Node/NodeUnpublishVolume",
       R"({"volumeId":"$VOL"})", kIA},
      {"target outside the allowed roots", "/csi.v1.Node/NodeUnpublishVolume",
       R"({"volumeId":"$VOL","targetPath":"/etc"})", kIA},
      {"unknown volume", "/csi.v1.Node/NodeUnpublishVolume",
       R"({"volumeId":"no-such-volume","targetPath":"$ROOT/t1"})", kNF},
      {"empty id", "/csi.v1.Node/NodeUnstageVolume",
       R"({"stagingTargetPath":"$STAGING"})", kIA},
      {"empty staging path", "/csi.v1.Node/NodeUnstageVolume",
       R"({"volumeId":"$VOL"})", kIA},
      {"unknown volume", "/csi.v1.Node/NodeUnstageVolume",
       R"({"volumeId":"no-such-volume","stagingTargetPath":"$STAGING"})", kNF},
      {"empty id", "/csi.v1.Node/NodeGetVolumeStats",
       R"({"volumePath":"$STAGING"})", kIA},
      {"empty path", "/csi.v1.Node/NodeGetVolumeStats",
       R"({"volumeId":"$VOL"})", kIA},
      {"unknown volume", "/csi.v1.Node/NodeGetVolumeStats",
       R"({"volumeId":"no-such-volume","volumePath":"$STAGING"})", kNF},
      {"empty id", "/csi.v1.Node/NodeExpandVolume",
       R"({"volumePath":"$STAGING","capacityRange":{"requiredBytes":"134217728"}})",
       kIA},
      {"empty path", "/csi.v1.Node/NodeExpandVolume",
       R"({"volumeId":"$VOL","capacityRange":{"requiredBytes":"134217728"}})",
       kIA},
      {"unknown volume", "/csi.v1.Node/NodeExpandVolume",
       R"({"volumeId":"no-such-volume","volumePath":"$STAGING","capacityRange":{"requiredBytes":"134217728"}})",
       kNF},
  });
  // Nothing was mounted by any of the refused calls.
  EXPECT_TRUE(MountsUnder(tmp_->path()).empty());
}

// Secrets are never logged.
TEST_F(CsiBadInputTest, SecretsStayOutOfTheLog) {
  const std::string secret = "s3cr3t-value-that-must-not-be-logged";
  auto r = CallJson(plugin_->channel(), "/csi.v1.Controller/CreateVolume",
                    Create("pvc-with-secret",
                           R"(,"secrets":{"password":")" + secret + "\"}"));
  ASSERT_TRUE(r.ok()) << r.status();
  r = CallJson(
      plugin_->channel(), "/csi.v1.Controller/DeleteVolume",
      R"({"volumeId":"no-such","secrets":{"password":")" + secret + "\"}}");
  ASSERT_TRUE(r.ok()) << r.status();
  std::string log = PluginLog();
  EXPECT_FALSE(log.empty()) << "the plugin logs one line per call";
  EXPECT_EQ(log.find(secret), std::string::npos) << log;
}

}  // namespace
}  // namespace daxlease::testing
