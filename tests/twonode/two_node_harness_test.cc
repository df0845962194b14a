// The two-node harness itself (label twonode): the nodes reach each other
// over their veth and only there, both reach the real apiserver with the
// unchanged kubeconfig, each runs its own daxlease-csi with its own state,
// and teardown leaves nothing behind.
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/plugin_harness.h"
#include "tests/testing/prereq.h"
#include "tests/twonode/two_node_cluster.h"

namespace daxlease::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

// One cluster (no operator) for the suite's cases that only look at it.
class TwoNodeHarnessTest : public ::testing::Test {
 protected:
  static void TearDownTestSuite() { shared_.reset(); }

  void SetUp() override {
    std::string why = TwoNodePrereqMissing();
    DAXLEASE_REQUIRE(why.empty(), why);
    if (shared_ == nullptr) {
      ASSERT_NO_FATAL_FAILURE(StartCluster(shared_));
    }
    cluster_ = shared_.get();
  }

  // A cluster without the operator.
  static void StartCluster(std::unique_ptr<TwoNodeCluster>& into) {
    TwoNodeOptions o;
    o.start_operator = false;
    auto c = TwoNodeCluster::Start(o);
    ASSERT_TRUE(c.ok()) << c.status();
    into = std::move(*c);
  }

  std::string Run(const TwoNodeCluster::Node& n,
                  std::vector<std::string> argv) {
    auto r = cluster_->RunIn(n, argv);
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return "";
    EXPECT_EQ(r->exit_code, 0)
        << absl::StrJoin(argv, " ") << ": " << r->stderr_text;
    return r->stdout_text;
  }

  static inline std::unique_ptr<TwoNodeCluster> shared_;
  TwoNodeCluster* cluster_ = nullptr;
};

// A cluster of its own: the case stops it.
class TwoNodeHarnessTeardownTest : public TwoNodeHarnessTest {
 protected:
  void SetUp() override {
    std::string why = TwoNodePrereqMissing();
    DAXLEASE_REQUIRE(why.empty(), why);
    ASSERT_NO_FATAL_FAILURE(StartCluster(own_));
    cluster_ = own_.get();
  }

  std::unique_ptr<TwoNodeCluster> own_;
};

TEST_F(TwoNodeHarnessTest, NodesTalkOverTheirVethAndTheAddressesStayInside) {
  auto& a = cluster_->a();
  auto& b = cluster_->b();
  EXPECT_THAT(Run(a, {"ip", "-o", "addr"}), HasSubstr("198.51.100.1/24"));
  EXPECT_THAT(Run(b, {"ip", "-o", "addr"}), HasSubstr("198.51.100.2/24"));
  auto host = sys::RunCommand({"ip", "-o", "addr"});
  ASSERT_TRUE(host.ok());
  EXPECT_THAT(host->stdout_text, Not(HasSubstr("198.51.100.")));

  // A listener on node-a's address gets what node-b sends.
  const std::string got = cluster_->dir() + "/received";
  auto listener = NodeProcess::Start(
      a.netns,
      {"socat", "-u", "TCP-LISTEN:7000,bind=198.51.100.1,reuseaddr",
       absl::StrCat("CREATE:", got)},
      cluster_->dir() + "/listener.log");
  ASSERT_TRUE(listener.ok()) << listener.status();
  Run(b, {"bash", "-c",
          "echo hello-from-node-b | socat -u - "
          "TCP:198.51.100.1:7000,retry=100,interval=0.05"});
  auto st = (*listener)->Wait(absl::Seconds(10));
  ASSERT_TRUE(st.ok()) << st.status();
  std::ifstream in(got);
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_EQ(ss.str(), "hello-from-node-b\n");
}

TEST_F(TwoNodeHarnessTest, BothNodesReachTheApiserverWithTheSameKubeconfig) {
  for (auto* n : {&cluster_->a(), &cluster_->b()}) {
    std::string out =
        Run(*n, {"kubectl", "--kubeconfig", cluster_->kubeconfig(), "get",
                 "crd", "daxvolumes.daxlease.io", "-o", "name"});
    EXPECT_EQ(out,
              "customresourcedefinition.apiextensions.k8s.io/"
              "daxvolumes.daxlease.io\n")
        << n->name;
  }
}

TEST_F(TwoNodeHarnessTeardownTest,
       EachNodeRunsItsOwnCsiAndTeardownLeavesNothing) {
  for (auto* n : {&cluster_->a(), &cluster_->b()}) {
    auto info = CallJson(n->csi_channel, "/csi.v1.Node/NodeGetInfo", "{}");
    ASSERT_TRUE(info.ok()) << info.status();
    nlohmann::json j = nlohmann::json::parse(*info);
    EXPECT_EQ(j.value("nodeId", ""), n->name);
    EXPECT_EQ(
        j["accessibleTopology"]["segments"].value("daxlease.io/fabric", ""),
        "fabric-1");
  }
  // A volume on node-a: real loop device, mkfs, mount, in node-a's state.
  auto& a = cluster_->a();
  auto created = CallJson(
      a.csi_channel, "/csi.v1.Controller/CreateVolume",
      R"({"name": "twonode-harness", "capacityRange": {"requiredBytes": "33554432"},
          "volumeCapabilities": [{"mount": {}, "accessMode": {"mode": "SINGLE_NODE_WRITER"}}]})");
  ASSERT_TRUE(created.ok()) << created.status() << cluster_->Logs();
  const std::string id =
      nlohmann::json::parse(*created)["volume"].value("volumeId", "");
  ASSERT_FALSE(id.empty()) << *created;
  const std::string staging = a.kubelet_dir + "/staging";
  const std::string target = a.kubelet_dir + "/pod/volume";
  const std::string cap =
      R"({"mount": {}, "accessMode": {"mode": "SINGLE_NODE_WRITER"}})";
  ASSERT_TRUE(CallJson(a.csi_channel, "/csi.v1.Node/NodeStageVolume",
                       absl::StrCat(R"({"volumeId": ")", id,
                                    R"(", "stagingTargetPath": ")", staging,
                                    R"(", "volumeCapability": )", cap, "}"))
                  .ok());
  ASSERT_TRUE(CallJson(a.csi_channel, "/csi.v1.Node/NodePublishVolume",
                       absl::StrCat(R"({"volumeId": ")", id,
                                    R"(", "stagingTargetPath": ")", staging,
                                    R"(", "targetPath": ")", target,
                                    R"(", "volumeCapability": )", cap, "}"))
                  .ok());
  EXPECT_THAT(MountsUnder(a.kubelet_dir), ::testing::SizeIs(2));
  EXPECT_THAT(LoopDevicesBackedUnder(a.dir), ::testing::SizeIs(1));
  EXPECT_THAT(LoopDevicesBackedUnder(cluster_->b().dir), IsEmpty());
  ASSERT_TRUE(WriteAndSync(target + "/f", 0, Pattern(4096, 9)).ok());

  // Teardown with the volume still mounted: the cluster forces it away and
  // says so; nothing of ours stays (namespaces, mounts, loop devices).
  const std::string dir = cluster_->dir();
  const std::string ns_a = a.netns, ns_b = cluster_->b().netns;
  auto forced = cluster_->Stop();
  ASSERT_TRUE(forced.ok()) << forced.status();
  EXPECT_THAT(*forced, Not(IsEmpty()));
  EXPECT_THAT(MountsUnder(dir), IsEmpty());
  EXPECT_THAT(LoopDevicesBackedUnder(dir), IsEmpty());
  EXPECT_FALSE(
      sys::RunCommand({"test", "-e", "/run/netns/" + ns_a})->exit_code == 0);
  EXPECT_FALSE(
      sys::RunCommand({"test", "-e", "/run/netns/" + ns_b})->exit_code == 0);
}

}  // namespace
}  // namespace daxlease::testing
