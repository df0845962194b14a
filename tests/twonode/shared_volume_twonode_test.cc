// A shared volume across two simulated nodes (label twonode): created and
// staged on its owner node-a through real gRPC CSI calls, published there and
// on node-b (another node of the same fabric), and daxlease-io on each node,
// inside that node's network namespace, writes through the published
// directory what the other node reads back: on node-a through the local
// mapping, on node-b through the agents' TCP fabric over the veth.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <functional>
#include <sstream>

#include "absl/strings/match.h"
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

  // Creates a shared volume on node-a named after the test.
  Json CreateShared(const std::string& suffix) {
    Json created =
        Call(cluster_->a(), "/csi.v1.Controller/CreateVolume",
             {{"name", absl::StrCat("twonode-", suffix, "-", ::getpid())},
              {"capacityRange", {{"requiredBytes", "67108864"}}},
              {"parameters",
               {{"daxlease.io/share", "true"},
                {"daxlease.io/recallGraceSeconds", "5"}}},
              {"volumeCapabilities", Json::array({Cap()})}});
    return created.value("volume", Json::object());
  }

  // A DaxRecall of `volume` (kubectl create); its name.
  std::string Recall(const std::string& volume, int grace) {
    const std::string file =
        absl::StrCat(cluster_->dir(), "/recall-", ++recalls_, ".json");
    std::ofstream(file) << Json{
        {"apiVersion", "daxlease.io/v1alpha1"},
        {"kind", "DaxRecall"},
        {"metadata", {{"generateName", "twonode-"}}},
        {"spec",
         {{"volume", volume},
          {"reason", "Manual"},
          {"graceSeconds",
           grace}}}}.dump();
    auto r = cluster_->Kubectl({"create", "-f", file, "-o", "name"});
    EXPECT_TRUE(r.ok() && r->exit_code == 0) << r->stderr_text;
    std::string name = r.ok() ? r->stdout_text : "";
    if (!name.empty() && name.back() == '\n') name.pop_back();
    return name.substr(name.find('/') + 1);
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

  int recalls_ = 0;

  static std::string ReadFile(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  std::unique_ptr<TwoNodeCluster> cluster_;
};

TEST_F(SharedVolumeTwoNodeTest,
       PublishedOnBothNodesEachReadsWhatTheOtherWrote) {
  auto& a = cluster_->a();
  auto& b = cluster_->b();
  const std::string name = absl::StrCat("twonode-shared-", ::getpid());
  Json created = Call(a, "/csi.v1.Controller/CreateVolume",
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
  // A deleted lease that holds access is its holder's release: the
  // operator releases and forgets it without any recall (before, it stayed
  // DeletionBlocked and the owner refused to unstage until a recall).
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
  EXPECT_EQ(
      UntilNone({"get", "daxvolumes", "--ignore-not-found", id, "-o", "name"}),
      "");
}

// A writer on the owner (daxlease-io pattern: checksummed blocks, each
// persisted) runs through a recall: both holders flush and release, the
// volume moves to the next epoch, the writer goes on there, and node-b,
// remotely, finds every block intact up to the writer's last persisted one.
TEST_F(SharedVolumeTwoNodeTest,
       OwnerWriterGoesOnThroughARecallAndNodeBVerifies) {
  auto& a = cluster_->a();
  auto& b = cluster_->b();
  const Json volume = CreateShared("recall");
  ASSERT_TRUE(volume.contains("volumeId"));
  const std::string id = volume.at("volumeId");
  const std::string on_a = StageAndPublish(a, volume, "writer");
  const std::string on_b = StageAndPublish(b, volume, "reader");
  ASSERT_FALSE(HasFailure());

  auto writer =
      NodeProcess::Start(a.netns, {IoBinary(), "pattern", on_a, "4096", "12"},
                         cluster_->dir() + "/writer-a.log");
  ASSERT_TRUE(writer.ok()) << writer.status();
  auto log = [&] { return ReadFile((*writer)->log_path()); };
  ASSERT_TRUE(
      Until([&] { return absl::StrContains(log(), "persisted seq=100 "); },
            absl::Seconds(60)))
      << log();
  const std::string recall = Recall(id, 5);
  ASSERT_TRUE(Until(
      [&] {
        return Get("daxrecalls", recall, "{.status.phase}") == "Complete";
      },
      absl::Seconds(60)));
  EXPECT_EQ(Get("daxrecalls", recall, "{.status.released}"), "2");
  EXPECT_EQ(Get("daxrecalls", recall, "{.status.revoked}"), "");  // 0
  // The volume is written after the recall: wait for its new epoch.
  EXPECT_TRUE(
      Until([&] { return Get("daxvolumes", id, "{.status.epoch}") == "2"; },
            absl::Seconds(30)));

  absl::StatusOr<int> exited = (*writer)->Wait(absl::Seconds(60));
  ASSERT_TRUE(exited.ok()) << exited.status();
  EXPECT_TRUE(WIFEXITED(*exited) && WEXITSTATUS(*exited) == 0) << log();
  const std::string out = log();
  EXPECT_THAT(out, ::testing::HasSubstr(" epoch=2")) << "went on at epoch 2";
  const size_t last = out.rfind("persisted seq=");
  ASSERT_NE(last, std::string::npos);
  const std::string seq =
      out.substr(last + 14, out.find(' ', last + 14) - last - 14);

  sys::CommandResult v = Io(b, {"verify", on_b, "4096"});
  EXPECT_EQ(v.exit_code, 0) << v.stdout_text << v.stderr_text;
  EXPECT_THAT(v.stdout_text, ::testing::HasSubstr(" corrupt=0 "));
  EXPECT_THAT(v.stdout_text,
              ::testing::HasSubstr(absl::StrCat(" maxseq=", seq, "\n")));
}

// A remote writer on node-b stops answering (SIGSTOP) during a recall: it is
// revoked at the deadline and fenced by the owner; nothing it sends after the
// fence lands in the owner's memory; once continued, its next call gets
// REVOKED, it reports its unpersisted bytes and exits 3 (alive until then).
TEST_F(SharedVolumeTwoNodeTest,
       StoppedRemoteWriterIsRevokedFencedAndToldOnContinue) {
  auto& a = cluster_->a();
  auto& b = cluster_->b();
  const Json volume = CreateShared("revoke");
  ASSERT_TRUE(volume.contains("volumeId"));
  const std::string id = volume.at("volumeId");
  const std::string on_a = StageAndPublish(a, volume, "owner");
  const std::string on_b = StageAndPublish(b, volume, "writer");
  ASSERT_FALSE(HasFailure());

  auto writer =
      NodeProcess::Start(b.netns, {IoBinary(), "pattern", on_b, "4096", "300"},
                         cluster_->dir() + "/writer-b.log");
  ASSERT_TRUE(writer.ok()) << writer.status();
  auto log = [&] { return ReadFile((*writer)->log_path()); };
  ASSERT_TRUE(
      Until([&] { return absl::StrContains(log(), "persisted seq=50 "); },
            absl::Seconds(60)))
      << log();
  ASSERT_TRUE((*writer)->Signal(SIGSTOP).ok());
  const std::string recall = Recall(id, 2);
  ASSERT_TRUE(Until(
      [&] {
        return Get("daxrecalls", recall, "{.status.phase}") == "Complete";
      },
      absl::Seconds(60)));
  EXPECT_EQ(Get("daxrecalls", recall, "{.status.revoked}"), "1");
  const std::string recall_id = Get("daxrecalls", recall, "{.status.recallID}");
  auto fenced = cluster_->Kubectl(
      {"get", "daxleases", "-l", absl::StrCat("daxlease.io/volume=", id), "-o",
       "jsonpath={.items[*].status.fencedRecallID}"});
  ASSERT_TRUE(fenced.ok());
  EXPECT_THAT(fenced->stdout_text, ::testing::HasSubstr(recall_id));

  const std::string data_path = on_a + "/volume/.daxlease/data";
  const std::string after_fence = ReadFile(data_path);
  ASSERT_TRUE((*writer)->Signal(SIGCONT).ok());
  absl::StatusOr<int> exited = (*writer)->Wait(absl::Seconds(60));
  ASSERT_TRUE(exited.ok()) << exited.status();
  EXPECT_TRUE(WIFEXITED(*exited) && WEXITSTATUS(*exited) == 3) << log();
  EXPECT_THAT(log(), ::testing::HasSubstr("revoked seq="));
  EXPECT_TRUE(ReadFile(data_path) == after_fence)
      << "a write after the fence landed";
  sys::CommandResult v = Io(a, {"verify", on_a, "4096"});
  EXPECT_EQ(v.exit_code, 0) << v.stdout_text << v.stderr_text;
  EXPECT_THAT(v.stdout_text, ::testing::HasSubstr(" corrupt=0 "));
}

}  // namespace
}  // namespace daxlease::testing
