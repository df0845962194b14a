// TwoNodeVolumeTest: the gtest fixture the twonode volume tests share
// (shared_volume_twonode_test, migration_twonode_test,
// agent_restart_twonode_test), and the steps it drives a volume through:
// CSI calls to a node's plugin, stage and publish as kubelet does,
// daxlease-io inside a node (its output parsed by daxlease_io_output.h),
// kubectl get and polling, recalls and migrations. Skips (fails under CI=true)
// when a prerequisite is missing.
//
// One TwoNodeCluster serves every test of a suite (started with the suite's
// Options() by its first test, stopped after its last): starting one (two
// namespaces, two agents, two plugins, the operator) costs more than most
// tests. Each test stays independent of the others in outcome:
//  - its volumes are named after it (VolumeName) and its files too
//    (TestFile);
//  - before it, the cluster restarts whatever an earlier test killed
//    (EnsureHealthy);
//  - after it, every volume it created through Call() is unpublished,
//    unstaged and deleted (what the test did not do itself), its Defer()
//    steps run, and a test that failed, or left a mount or a loop device
//    behind, hands the next test a new cluster.
#ifndef DAXLEASE_TESTS_TWONODE_TWO_NODE_VOLUME_TEST_H_
#define DAXLEASE_TESTS_TWONODE_TWO_NODE_VOLUME_TEST_H_

#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/api/label_value.h"
#include "nlohmann/json.hpp"
#include "tests/integration/plugin_harness.h"
#include "tests/testing/prereq.h"
#include "tests/twonode/daxlease_io_output.h"
#include "tests/twonode/two_node_cluster.h"

namespace daxlease::testing {

class TwoNodeVolumeTest : public ::testing::Test {
 protected:
  using Json = nlohmann::json;

  // The cluster's options: a suite overrides it for its own flags (all the
  // tests of a suite share one cluster, so one set of options).
  virtual TwoNodeOptions Options() const { return {}; }

  static void TearDownTestSuite() { shared_.reset(); }

  void SetUp() override {
    std::string why = TwoNodePrereqMissing();
    DAXLEASE_REQUIRE(why.empty(), why);
    if (shared_ != nullptr) {
      absl::Status healthy = shared_->EnsureHealthy();
      if (!healthy.ok()) {
        std::cerr << "twonode: a new cluster (this one is not healthy: "
                  << healthy << ")\n";
        shared_.reset();
      }
    }
    if (shared_ == nullptr) {
      auto c = TwoNodeCluster::Start(Options());
      ASSERT_TRUE(c.ok()) << c.status();
      shared_ = std::move(*c);
    }
    cluster_ = shared_.get();
  }

  void TearDown() override {
    if (cluster_ == nullptr) return;
    if (HasFailure()) ADD_FAILURE() << "logs:\n" << cluster_->Logs();
    for (auto it = deferred_.rbegin(); it != deferred_.rend(); ++it) (*it)();
    std::vector<std::string> left = CleanUpVolumes();
    if (HasFailure() || !left.empty()) {
      // What this test left must not decide the next one's outcome.
      std::cerr << "twonode: the next test gets a new cluster"
                << (left.empty() ? "" : " (left behind: ")
                << absl::StrJoin(left, ", ") << (left.empty() ? "" : ")")
                << "\n";
      shared_.reset();
    }
  }

  // Runs `step` after the test (before its volumes are cleaned up), pass or
  // fail: undoes what the test changed in the shared cluster.
  void Defer(std::function<void()> step) {
    deferred_.push_back(std::move(step));
  }

  // The test's own name for a volume or snapshot: tn-<suffix>-<hash of the
  // test's name and this process> (the API server outlives a run: its
  // DaxVolumes and DaxRecalls of an earlier run keep their names). Short: a
  // migration's name (and label) adds to it, and a label value holds 63
  // characters.
  std::string VolumeName(const std::string& suffix) const {
    const size_t h =
        std::hash<std::string>()(absl::StrCat(TestId(), "/", ::getpid()));
    return absl::StrCat("tn-", suffix, "-",
                        absl::Hex(h & 0xffffffffu, absl::kZeroPad8));
  }
  // A file of this test's in the cluster's directory (logs, inputs).
  std::string TestFile(const std::string& name) const {
    return absl::StrCat(cluster_->dir(), "/", TestId(), "-", name);
  }

  // A CSI call to `node` that must succeed; its response. The volumes it
  // creates, stages and publishes are undone after the test.
  Json Call(const TwoNodeCluster::Node& node, const std::string& method,
            const Json& req) {
    auto r = CallJson(node.csi_channel, method, req.dump());
    EXPECT_TRUE(r.ok()) << node.name << " " << method << ": " << r.status();
    if (!r.ok()) return Json::object();
    Json resp = Json::parse(*r);
    if (absl::EndsWith(method, "/CreateVolume")) {
      const std::string id =
          resp.value("volume", Json::object()).value("volumeId", "");
      if (!id.empty()) volumes_.push_back({id, {}, {}});
    } else if (absl::EndsWith(method, "/NodeStageVolume")) {
      Track(req.value("volumeId", ""))
          .staged.push_back({&node, req.value("stagingTargetPath", "")});
    } else if (absl::EndsWith(method, "/NodePublishVolume")) {
      Track(req.value("volumeId", ""))
          .published.push_back({&node, req.value("targetPath", "")});
    }
    return resp;
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

  // A shared volume created on node-a (VolumeName(suffix), recall grace
  // `grace_seconds`, filesystem `fs_type`); its CSI volume ({} on failure).
  Json CreateShared(const std::string& suffix, uint64_t bytes = 64 << 20,
                    int grace_seconds = 5, const std::string& fs_type = "") {
    Json params = {
        {"daxlease.io/share", "true"},
        {"daxlease.io/recallGraceSeconds", std::to_string(grace_seconds)}};
    if (!fs_type.empty()) params["csi.storage.k8s.io/fstype"] = fs_type;
    Json created =
        Call(cluster_->a(), "/csi.v1.Controller/CreateVolume",
             {{"name", VolumeName(suffix)},
              {"capacityRange", {{"requiredBytes", std::to_string(bytes)}}},
              {"parameters", params},
              {"volumeCapabilities", Json::array({Cap()})}});
    return created.value("volume", Json::object());
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

  // Unpublishes every target of volume `id`, waits for its leases to go,
  // unstages it on each node and deletes it; then expects nothing of it
  // left mounted or attached.
  void TearDownVolumeAndExpectNothingLeft(const std::string& id) {
    TrackedVolume& v = Track(id);
    for (auto it = v.published.rbegin(); it != v.published.rend(); ++it) {
      Call(*it->node, "/csi.v1.Node/NodeUnpublishVolume",
           {{"volumeId", id}, {"targetPath", it->path}});
    }
    ASSERT_EQ(UntilNone({"get", "daxleases", "-l", api::VolumeLabelSelector(id),
                         "-o", "name"}),
              "")
        << "leases left";
    for (auto it = v.staged.rbegin(); it != v.staged.rend(); ++it) {
      Call(*it->node, "/csi.v1.Node/NodeUnstageVolume",
           {{"volumeId", id}, {"stagingTargetPath", it->path}});
    }
    Call(cluster_->a(), "/csi.v1.Controller/DeleteVolume", {{"volumeId", id}});
    EXPECT_EQ(UntilNone({"get", "daxvolumes", "--ignore-not-found", id, "-o",
                         "name"}),
              "");
    EXPECT_THAT(LeftOf(v), ::testing::IsEmpty());
  }

  // daxlease-io ARGS inside `node`'s network namespace; stdin from
  // `input`; attach timeout `timeout_ms`.
  sys::CommandResult Io(const TwoNodeCluster::Node& node,
                        std::vector<std::string> args,
                        const std::string& input = "", int timeout_ms = 60000) {
    std::string cmd = IoBinary();
    for (const std::string& a : args) absl::StrAppend(&cmd, " '", a, "'");
    if (!input.empty()) {
      const std::string in = TestFile("io-input");
      std::ofstream(in, std::ios::binary) << input;
      absl::StrAppend(&cmd, " <'", in, "'");
    }
    auto r = cluster_->RunIn(
        node, {"env", absl::StrCat("DAXLEASE_IO_TIMEOUT_MS=", timeout_ms),
               "bash", "-c", cmd});
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : sys::CommandResult{};
  }

  // A daxlease-io pattern writer on `node` over blocks [first, first +
  // count) (count 0: the whole volume) of the volume published at `dir`,
  // for `seconds`; its log is TestFile(name + ".log").
  std::unique_ptr<NodeProcess> StartWriter(const TwoNodeCluster::Node& node,
                                           const std::string& dir, int seconds,
                                           uint64_t first = 0,
                                           uint64_t count = 0,
                                           const std::string& name = "writer") {
    std::vector<std::string> argv = {"/usr/bin/env",
                                     "DAXLEASE_IO_TIMEOUT_MS=60000",
                                     IoBinary(),
                                     "pattern",
                                     dir,
                                     std::to_string(kBlock),
                                     std::to_string(seconds)};
    if (count > 0) {
      argv.push_back(std::to_string(first));
      argv.push_back(std::to_string(count));
    }
    auto p = NodeProcess::Start(node.netns, argv, TestFile(name + ".log"));
    EXPECT_TRUE(p.ok()) << p.status();
    return p.ok() ? std::move(*p) : nullptr;
  }

  // `kubectl get KIND NAME -o jsonpath=PATH`.
  std::string Get(const std::string& kind, const std::string& name,
                  const std::string& path) {
    auto r = cluster_->Kubectl(
        {"get", kind, name, "-o", absl::StrCat("jsonpath=", path)});
    return r.ok() ? r->stdout_text : "";
  }

  int64_t Epoch(const std::string& volume) {
    int64_t e = 0;
    (void)absl::SimpleAtoi(Get("daxvolumes", volume, "{.status.epoch}"), &e);
    return e;
  }

  // A DaxRecall of `volume` (reason Manual, kubectl create); its name.
  std::string Recall(const std::string& volume, int grace) {
    const std::string file = TestFile(absl::StrCat("recall-", ++recalls_));
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

  // `kubectl daxlease migrate VOLUME --to NODE`; the DaxMigration's name.
  std::string Migrate(const std::string& volume, const std::string& to) {
    auto r = sys::RunCommand({PluginBinary(),
                              "--kubeconfig=" + cluster_->kubeconfig(),
                              "migrate", volume, "--to", to});
    EXPECT_TRUE(r.ok() && r->exit_code == 0)
        << (r.ok() ? r->stderr_text : r.status().ToString());
    if (!r.ok()) return "";
    const std::string& out = r->stdout_text;
    const size_t slash = out.find('/');
    const size_t space = out.find(' ');
    if (slash == std::string::npos || space == std::string::npos) return "";
    return out.substr(slash + 1, space - slash - 1);
  }

  // Where `n`'s agent keeps a migrated volume's data.
  static std::string MediaOf(const TwoNodeCluster::Node& n,
                             const std::string& id) {
    return absl::StrCat(n.dir, "/agent/media/", id, "/data");
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
  static bool Exists(const std::string& path) {
    return ::access(path.c_str(), F_OK) == 0;
  }
  // The end of a (long) log, for a failure's message.
  static std::string Tail(const std::string& log) {
    return log.substr(log.size() > 3000 ? log.size() - 3000 : 0);
  }
  // How often `what` occurs in `text`.
  static size_t Count(const std::string& text, const std::string& what) {
    size_t n = 0;
    for (size_t at = text.find(what); at != std::string::npos;
         at = text.find(what, at + what.size())) {
      ++n;
    }
    return n;
  }

  // The last persisted seq of a daxlease-io pattern log, for polling a
  // running writer and for checks that fail on 0 (0: none yet, or not
  // parsed). Where the value itself matters, assert on LastPersistedSeq
  // (daxlease_io_output.h), which tells "none" apart.
  static uint64_t LastPersisted(const std::string& log) {
    return LastPersistedSeq(log).value_or(0);
  }

  // The seq block `index` holds once a daxlease-io pattern writer over
  // [first, first + count) that started at 1 has persisted up to `last`
  // (0: never written).
  static uint64_t PatternSeq(uint64_t index, uint64_t first, uint64_t count,
                             uint64_t last) {
    if (index < first || index >= first + count || last == 0) return 0;
    const uint64_t k = index - first;  // written at seq k+1, k+1+count, ...
    if (last < k + 1) return 0;
    return k + 1 + (last - k - 1) / count * count;
  }

  static constexpr uint64_t kBlock = 4096;
  TwoNodeCluster* cluster_ = nullptr;  // shared_, for this test

 private:
  struct Place {
    const TwoNodeCluster::Node* node;
    std::string path;
  };
  struct TrackedVolume {
    std::string id;
    std::vector<Place> staged, published;
  };

  TrackedVolume& Track(const std::string& id) {
    for (TrackedVolume& v : volumes_) {
      if (v.id == id) return v;
    }
    volumes_.push_back({id, {}, {}});
    return volumes_.back();
  }

  // "Suite.Test" as a file name ('/' of parameterized names replaced).
  static std::string TestId() {
    const ::testing::TestInfo* t =
        ::testing::UnitTest::GetInstance()->current_test_info();
    std::string id = absl::StrCat(t->test_suite_name(), ".", t->name());
    std::replace(id.begin(), id.end(), '/', '_');
    return id;
  }

  // The mounts and loop devices of volume `v` still there.
  std::vector<std::string> LeftOf(const TrackedVolume& v) {
    std::vector<std::string> left;
    for (const Place& p : v.published) {
      for (std::string& m : MountsUnder(p.path)) left.push_back(m);
    }
    for (const Place& p : v.staged) {
      for (std::string& m : MountsUnder(p.path)) left.push_back(m);
    }
    for (auto* n : {&cluster_->a(), &cluster_->b()}) {
      for (std::string& d : LoopDevicesBackedUnder(
               absl::StrCat(n->dir, "/csi/volumes/", v.id, ".img"))) {
        left.push_back(d);
      }
    }
    return left;
  }

  // Undoes, best effort, what the test's volumes still have (each step is
  // idempotent: what the test undid itself answers OK at once); what is
  // still left.
  std::vector<std::string> CleanUpVolumes() {
    std::vector<std::string> left;
    for (auto v = volumes_.rbegin(); v != volumes_.rend(); ++v) {
      bool unpublished = false;
      for (auto p = v->published.rbegin(); p != v->published.rend(); ++p) {
        if (MountsUnder(p->path).empty()) continue;
        unpublished = true;
        (void)CallJson(
            p->node->csi_channel, "/csi.v1.Node/NodeUnpublishVolume",
            Json{{"volumeId", v->id}, {"targetPath", p->path}}.dump());
      }
      if (unpublished) {
        (void)UntilNone({"get", "daxleases", "-l",
                         api::VolumeLabelSelector(v->id), "-o", "name"});
      }
      for (auto p = v->staged.rbegin(); p != v->staged.rend(); ++p) {
        if (MountsUnder(p->path).empty()) continue;
        (void)CallJson(
            p->node->csi_channel, "/csi.v1.Node/NodeUnstageVolume",
            Json{{"volumeId", v->id}, {"stagingTargetPath", p->path}}.dump());
      }
      (void)CallJson(cluster_->a().csi_channel,
                     "/csi.v1.Controller/DeleteVolume",
                     Json{{"volumeId", v->id}}.dump());
      for (std::string& l : LeftOf(*v)) left.push_back(std::move(l));
    }
    volumes_.clear();
    return left;
  }

  static inline std::unique_ptr<TwoNodeCluster> shared_;
  std::vector<TrackedVolume> volumes_;
  std::vector<std::function<void()>> deferred_;
  int recalls_ = 0;
};

}  // namespace daxlease::testing

#endif  // DAXLEASE_TESTS_TWONODE_TWO_NODE_VOLUME_TEST_H_
