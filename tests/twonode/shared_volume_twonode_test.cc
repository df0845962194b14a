// A shared volume across two simulated nodes (label twonode): created and
// staged on its owner node-a through real gRPC CSI calls, published there and
// on node-b (another node of the same fabric), and daxlease-io on each node,
// inside that node's network namespace, writes through the published
// directory what the other node reads back: on node-a through the local
// mapping, on node-b through the agents' TCP fabric over the veth.
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/plugin_harness.h"
#include "tests/testing/prereq.h"
#include "tests/twonode/two_node_cluster.h"

namespace daxlease::testing {
namespace {

using Json = nlohmann::json;

class SharedVolumeTwoNodeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why = TwoNodePrereqMissing();
    DAXLEASE_REQUIRE(why.empty(), why);
    auto c = TwoNodeCluster::Start();
    ASSERT_TRUE(c.ok()) << c.status();
    cluster_ = std::move(*c);
  }

  void TearDown() override {
    if (HasFailure() && cluster_ != nullptr) {
      ADD_FAILURE() << "logs:\n" << cluster_->Logs();
    }
  }

  // A CSI call to `node` that must succeed; its response.
  Json Call(const TwoNodeCluster::Node& node, const std::string& method,
            const Json& req) {
    auto r = CallJson(node.csi_channel, method, req.dump());
    EXPECT_TRUE(r.ok()) << node.name << " " << method << ": " << r.status();
    return r.ok() ? Json::parse(*r) : Json::object();
  }

  static Json Cap() {
    return {{"mount", Json::object()},
            {"accessMode", {{"mode", "MULTI_NODE_MULTI_WRITER"}}}};
  }

  // What kubelet passes: the volume's context plus the pod (podInfoOnMount).
  static Json PodContext(const Json& volume, const std::string& pod) {
    Json ctx = volume.value("volumeContext", Json::object());
    ctx["csi.storage.k8s.io/pod.name"] = pod;
    ctx["csi.storage.k8s.io/pod.namespace"] = "default";
    ctx["csi.storage.k8s.io/pod.uid"] = absl::StrCat("uid-", pod);
    return ctx;
  }

  // Stages and publishes `volume` on `node` for `pod`; the target path.
  std::string StageAndPublish(const TwoNodeCluster::Node& node,
                              const Json& volume, const std::string& pod) {
    const std::string id = volume.at("volumeId");
    const std::string staging = node.kubelet_dir + "/staging/" + id;
    const std::string target =
        absl::StrCat(node.kubelet_dir, "/pods/", pod, "/volume");
    Call(node, "/csi.v1.Node/NodeStageVolume",
         {{"volumeId", id},
          {"stagingTargetPath", staging},
          {"volumeCapability", Cap()},
          {"volumeContext", volume.value("volumeContext", Json::object())}});
    Call(node, "/csi.v1.Node/NodePublishVolume",
         {{"volumeId", id},
          {"stagingTargetPath", staging},
          {"targetPath", target},
          {"volumeCapability", Cap()},
          {"volumeContext", PodContext(volume, pod)}});
    return target;
  }

  // daxlease-io ARGS inside `node`'s network namespace; stdin from `input`.
  sys::CommandResult Io(const TwoNodeCluster::Node& node,
                        std::vector<std::string> args,
                        const std::string& input = "") {
    std::string cmd = IoBinary();
    for (const std::string& a : args) absl::StrAppend(&cmd, " '", a, "'");
    if (!input.empty()) {
      const std::string in = absl::StrCat(cluster_->dir(), "/io-input");
      std::ofstream(in, std::ios::binary) << input;
      absl::StrAppend(&cmd, " <'", in, "'");
    }
    auto r = cluster_->RunIn(
        node, {"env", "DAXLEASE_IO_TIMEOUT_MS=60000", "bash", "-c", cmd});
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : sys::CommandResult{};
  }

  // Polls `kubectl ARGS` until it prints nothing (60 s); the last output.
  std::string UntilNone(const std::vector<std::string>& args) {
    const absl::Time end = absl::Now() + absl::Seconds(60);
    std::string out;
    do {
      auto r = cluster_->Kubectl(args);
      if (!r.ok()) return r.status().ToString();
      out = r->stdout_text + r->stderr_text;
      if (out.empty()) return out;
      absl::SleepFor(absl::Milliseconds(200));
    } while (absl::Now() < end);
    return out;
  }

  static std::string ReadFile(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  std::unique_ptr<TwoNodeCluster> cluster_;
};

TEST_F(SharedVolumeTwoNodeTest, PublishedOnBothNodesEachReadsWhatTheOtherWrote) {
  auto& a = cluster_->a();
  auto& b = cluster_->b();
  const std::string name = absl::StrCat("twonode-shared-", ::getpid());
  Json created =
      Call(a, "/csi.v1.Controller/CreateVolume",
           {{"name", name},
            {"capacityRange", {{"requiredBytes", "67108864"}}},
            {"parameters",
             {{"daxlease.io/share", "true"},
              {"daxlease.io/recallGraceSeconds", "5"}}},
            {"volumeCapabilities", Json::array({Cap()})}});
  ASSERT_TRUE(created.contains("volume")) << created.dump();
  const Json volume = created.at("volume");
  const std::string id = volume.at("volumeId");
  // Reachable from the whole fabric, and it says where it lives.
  EXPECT_EQ(volume.at("accessibleTopology")[0]["segments"].dump(),
            R"({"daxlease.io/fabric":"fabric-1"})");
  EXPECT_EQ(volume.at("volumeContext").value("daxlease.io/ownerNode", ""),
            "node-a");
  // The operator knows it: the DaxVolume the owner's agent recorded.
  auto dv = cluster_->Kubectl({"get", "daxvolume", id, "-o",
                               "jsonpath={.spec.ownerNode} {.spec.share}"});
  ASSERT_TRUE(dv.ok()) << dv.status();
  EXPECT_EQ(dv->stdout_text, "node-a true") << dv->stderr_text;

  const std::string on_a = StageAndPublish(a, volume, "pod-a");
  const std::string on_b = StageAndPublish(b, volume, "pod-b");
  ASSERT_FALSE(HasFailure());
  // The published directories: descriptor + agent socket on both, the
  // volume itself on the owner only.
  for (const std::string& dir : {on_a, on_b}) {
    Json d = Json::parse(ReadFile(dir + "/daxlease.json"), nullptr, false);
    ASSERT_FALSE(d.is_discarded()) << dir;
    EXPECT_EQ(d.value("volume", ""), id);
    EXPECT_EQ(d.value("ownerNode", ""), "node-a");
    EXPECT_EQ(::access((dir + "/agent.sock").c_str(), F_OK), 0) << dir;
  }
  EXPECT_TRUE(Json::parse(ReadFile(on_a + "/daxlease.json"))
                  .value("ownerLocal", false));
  EXPECT_EQ(::access((on_a + "/volume/.daxlease/data").c_str(), F_OK), 0);
  EXPECT_NE(::access((on_b + "/volume").c_str(), F_OK), 0);

  // node-a writes, node-b reads it over the fabric; and back.
  const std::string from_a = Pattern(64 * 1024, 11);
  const std::string from_b = Pattern(64 * 1024, 22);
  sys::CommandResult w = Io(a, {"write", on_a, "0"}, from_a);
  ASSERT_EQ(w.exit_code, 0) << w.stderr_text;
  sys::CommandResult r = Io(b, {"cat", on_b, "0", "65536"});
  ASSERT_EQ(r.exit_code, 0) << r.stderr_text;
  EXPECT_TRUE(r.stdout_text == from_a) << "node-b read other bytes";
  w = Io(b, {"write", on_b, "1048576"}, from_b);
  ASSERT_EQ(w.exit_code, 0) << w.stderr_text;
  r = Io(a, {"cat", on_a, "1048576", "65536"});
  ASSERT_EQ(r.exit_code, 0) << r.stderr_text;
  EXPECT_TRUE(r.stdout_text == from_b) << "node-a read other bytes";
  // Both landed in the owner's memory (the data file under the DAX mount).
  const std::string data = ReadFile(on_a + "/volume/.daxlease/data");
  ASSERT_GE(data.size(), 1048576u + 65536u);
  EXPECT_TRUE(data.substr(0, 65536) == from_a);
  EXPECT_TRUE(data.substr(1048576, 65536) == from_b);

  // Unpublish ends each pod's sessions and deletes its lease.
  for (auto* n : {&b, &a}) {
    Call(*n, "/csi.v1.Node/NodeUnpublishVolume",
         {{"volumeId", id}, {"targetPath", n == &a ? on_a : on_b}});
    EXPECT_THAT(MountsUnder(n->kubelet_dir + "/pods"), ::testing::IsEmpty())
        << n->name;
  }
  // The operator keeps a deleted lease that still holds access
  // (DeletionBlocked) until a recall ends it: the agents have no
  // voluntary-release signal yet. So the owner refuses to stop serving...
  auto refused = CallJson(
      a.csi_channel, "/csi.v1.Node/NodeUnstageVolume",
      Json{{"volumeId", id},
           {"stagingTargetPath", a.kubelet_dir + "/staging/" + id}}
          .dump());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition)
      << refused.status();
  // ...until a recall: nobody acks for the unpublished leases, they are
  // revoked at the deadline and fenced by the owner, and then they go.
  const std::string recall = cluster_->dir() + "/recall.json";
  std::ofstream(recall) << Json{{"apiVersion", "daxlease.io/v1alpha1"},
                                {"kind", "DaxRecall"},
                                {"metadata", {{"generateName", "twonode-"}}},
                                {"spec",
                                 {{"volume", id},
                                  {"reason", "Manual"},
                                  {"graceSeconds", 1}}}}
                               .dump();
  auto created_recall = cluster_->Kubectl({"create", "-f", recall});
  ASSERT_TRUE(created_recall.ok() && created_recall->exit_code == 0)
      << created_recall->stderr_text;
  ASSERT_EQ(UntilNone({"get", "daxleases", "-l",
                       absl::StrCat("daxlease.io/volume=", id), "-o", "name"}),
            "")
      << "leases left";

  // Now the volume unstages on both nodes and is deleted with its
  // DaxVolume; nothing is left mounted.
  for (auto* n : {&b, &a}) {
    Call(*n, "/csi.v1.Node/NodeUnstageVolume",
         {{"volumeId", id},
          {"stagingTargetPath", n->kubelet_dir + "/staging/" + id}});
    EXPECT_THAT(MountsUnder(n->kubelet_dir), ::testing::IsEmpty()) << n->name;
  }
  Call(a, "/csi.v1.Controller/DeleteVolume", {{"volumeId", id}});
  EXPECT_EQ(UntilNone({"get", "daxvolumes", "--ignore-not-found", id, "-o",
                       "name"}),
            "");
}

}  // namespace
}  // namespace daxlease::testing
