// TwoNodeVolumeTest: the gtest fixture the twonode volume tests share
// (shared_volume_twonode_test, migration_twonode_test). Each test gets its
// own TwoNodeCluster (started with Options(), its logs added on failure) and
// the steps it drives a volume through: CSI calls to a node's plugin, stage
// and publish as kubelet does, daxlease-io inside a node, kubectl get and
// polling. Skips (fails under CI=true) when a prerequisite is missing.
#ifndef DAXLEASE_TESTS_TWONODE_TWO_NODE_VOLUME_TEST_H_
#define DAXLEASE_TESTS_TWONODE_TWO_NODE_VOLUME_TEST_H_

#include <unistd.h>

#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/plugin_harness.h"
#include "tests/testing/prereq.h"
#include "tests/twonode/two_node_cluster.h"

namespace daxlease::testing {

class TwoNodeVolumeTest : public ::testing::Test {
 protected:
  using Json = nlohmann::json;

  // The cluster's options: a fixture overrides it for its own flags.
  virtual TwoNodeOptions Options() const { return {}; }

  void SetUp() override {
    std::string why = TwoNodePrereqMissing();
    DAXLEASE_REQUIRE(why.empty(), why);
    auto c = TwoNodeCluster::Start(Options());
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

  // `kubectl get KIND NAME -o jsonpath=PATH`.
  std::string Get(const std::string& kind, const std::string& name,
                  const std::string& path) {
    auto r = cluster_->Kubectl(
        {"get", kind, name, "-o", absl::StrCat("jsonpath=", path)});
    return r.ok() ? r->stdout_text : "";
  }

  // Polls until `pred` holds (`timeout`).
  static bool Until(const std::function<bool()>& pred, absl::Duration timeout) {
    const absl::Time end = absl::Now() + timeout;
    while (absl::Now() < end) {
      if (pred()) return true;
      absl::SleepFor(absl::Milliseconds(100));
    }
    return pred();
  }

  static std::string ReadFile(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  static bool Exists(const std::string& path) {
    return ::access(path.c_str(), F_OK) == 0;
  }

  std::unique_ptr<TwoNodeCluster> cluster_;
};

}  // namespace daxlease::testing

#endif  // DAXLEASE_TESTS_TWONODE_TWO_NODE_VOLUME_TEST_H_
