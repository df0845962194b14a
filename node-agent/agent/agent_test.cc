#include "node-agent/agent/agent.h"

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <functional>
#include <optional>
#include <string>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/api/json.h"
#include "lib/k8s/fake_client.h"
#include "lib/sys/file.h"
#include "node-agent/fabric/fake_fabric.h"

namespace daxlease::agent {
namespace {

using ::testing::HasSubstr;

bool WaitFor(const std::function<bool()>& pred) {
  for (int i = 0; i < 500; ++i) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return pred();
}

// One node that both owns the volume and holds a lease on it; the test
// plays the operator by patching lease status.
class AgentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/agent_test.XXXXXX";
    dir_ = mkdtemp(tmpl);
    ASSERT_TRUE(sys::MakeDirs(dir_ + "/mnt").ok());
    AgentConfig c;
    c.node = "node-a";
    c.state_dir = dir_ + "/state";
    c.socket_path = dir_ + "/agent.sock";
    c.secret = "test-secret";
    c.resync = absl::Milliseconds(20);
    agent_ = std::make_unique<Agent>(c, kube_, clock_, fabric_, "10.0.0.1:7390");
    ASSERT_TRUE(agent_->Start().ok());
  }
  void TearDown() override {
    agent_.reset();
    kube_.Shutdown();
    std::string cmd = "rm -rf " + dir_;
    ASSERT_EQ(system(cmd.c_str()), 0);
  }

  // Records "vol" (4 MiB) and serves `serve_bytes` of it: `want_served`.
  void RecordAndServe(uint64_t serve_bytes = 2 << 20,
                      uint64_t want_served = 2 << 20) {
    pb::RecordVolumeRequest rec;
    rec.set_volume_id("vol");
    rec.set_size_bytes(4 << 20);
    rec.set_mode(pb::FSDAX);
    rec.set_fs_type("ext4");
    rec.set_share(true);
    ASSERT_TRUE(agent_->RecordVolume(rec).ok());
    pb::ServeVolumeRequest serve;
    serve.set_volume_id("vol");
    serve.set_mode(pb::FSDAX);
    serve.set_mount_path(dir_ + "/mnt");
    serve.set_size_bytes(serve_bytes);
    auto r = agent_->ServeVolume(serve);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->served_bytes(), want_served);
    EXPECT_EQ(r->data_path(), dir_ + "/mnt/.daxlease/data");
  }

  std::string PublishPod(const std::string& uid) {
    pb::PublishRequest p;
    p.set_volume_id("vol");
    p.set_target_path(dir_ + "/target-" + uid);
    p.set_pod_namespace("default");
    p.set_pod_name("pod-" + uid);
    p.set_pod_uid(uid);
    auto r = agent_->Publish(p);
    EXPECT_TRUE(r.ok()) << r.status();
    descriptor_ = k8s::Json::parse(r->descriptor_json());
    return r->lease_name();
  }

  void OperatorSets(const std::string& lease, k8s::Json status) {
    auto r = kube_.Patch(DaxLeaseResource(), "", lease, k8s::PatchType::kMerge,
                         k8s::Json{{"status", status}}, "status");
    ASSERT_TRUE(r.ok()) << r.status();
    agent_->Kick();
  }
  void VolumeEpoch(int64_t epoch) {
    auto r = kube_.Patch(DaxVolumeResource(), "", "vol", k8s::PatchType::kMerge,
                         k8s::Json{{"status", {{"epoch", epoch}}}}, "status");
    ASSERT_TRUE(r.ok()) << r.status();
  }
  api::DaxLease Lease(const std::string& name) {
    auto j = kube_.Get(DaxLeaseResource(), "", name);
    EXPECT_TRUE(j.ok());
    return *api::FromJson<api::DaxLease>(*j);
  }
  std::optional<pb::SessionEvent> NextOfKind(Session& s,
                                             pb::SessionEvent::Kind kind) {
    for (int i = 0; i < 50; ++i) {
      auto ev = s.Next(absl::Milliseconds(100));
      if (ev.has_value() && ev->kind() == kind) return ev;
    }
    return std::nullopt;
  }

  std::string dir_;
  base::FakeClock clock_;
  k8s::FakeKubeClient kube_{clock_};
  fabric::FakeFabric fabric_{"test-secret"};
  std::unique_ptr<Agent> agent_;
  k8s::Json descriptor_;
};

TEST_F(AgentTest, RecordCreatesTheVolumeOnceAndRefusesAnotherSpec) {
  RecordAndServe();
  auto v = kube_.Get(DaxVolumeResource(), "", "vol");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ((*v)["spec"]["ownerNode"], "node-a");
  EXPECT_EQ((*v)["metadata"]["annotations"][kFabricEndpointAnnotation],
            "10.0.0.1:7390");
  pb::RecordVolumeRequest other;
  other.set_volume_id("vol");
  other.set_size_bytes(8 << 20);
  other.set_mode(pb::FSDAX);
  EXPECT_EQ(agent_->RecordVolume(other).code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(fabric_.IsRegistered("vol"));
}

// A volume restored from a snapshot of a shared volume arrives with its
// data file: made when the source was, as large as its filesystem had room
// for, less than the capacity the plugin asks to serve. The agent serves
// what the file holds (before, ServeVolume refused: "holds N bytes, fewer
// than" the capacity, and the restored volume never staged).
TEST_F(AgentTest, ServesAnExistingDataFileSmallerThanTheCapacity) {
  ASSERT_TRUE(sys::MakeDirs(dir_ + "/mnt/.daxlease").ok());
  ASSERT_TRUE(sys::Fallocate(dir_ + "/mnt/.daxlease/data", 2 << 20).ok());
  RecordAndServe(/*serve_bytes=*/4 << 20, /*want_served=*/2 << 20);
}

TEST_F(AgentTest, GrantRecallAndReleaseReachTheSessionAndTheApi) {
  RecordAndServe();
  std::string lease = PublishPod("u1");
  EXPECT_EQ(descriptor_["lease"], lease);
  EXPECT_EQ(Lease(lease).spec.holder_node, "node-a");

  auto s = agent_->OpenSession(lease, descriptor_["attachToken"]);
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_TRUE(NextOfKind(**s, pb::SessionEvent::PENDING).has_value());

  VolumeEpoch(1);
  OperatorSets(lease, {{"state", "Granted"}, {"epoch", 1}});
  auto granted = NextOfKind(**s, pb::SessionEvent::GRANTED);
  ASSERT_TRUE(granted.has_value());
  EXPECT_EQ(granted->grant().endpoint(), "10.0.0.1:7390");
  EXPECT_EQ(granted->grant().epoch(), 1);
  // The owner granted that key, and the holder's credential opens it.
  fabric::GrantInfo info;
  info.key = {"vol", Lease(lease).metadata.uid, "node-a", 1};
  info.access = fabric::Access::kReadWrite;
  info.credential = granted->grant().credential();
  ASSERT_TRUE(WaitFor([&] { return fabric_.IsLive(info.key); }));
  auto remote = fabric_.connector().Connect(info);
  ASSERT_TRUE(remote.ok()) << remote.status();
  EXPECT_TRUE((*remote)->Write(0, "data").ok());

  OperatorSets(lease, {{"state", "Recalling"}, {"recallID", "r1"}});
  auto recalling = NextOfKind(**s, pb::SessionEvent::RECALLING);
  ASSERT_TRUE(recalling.has_value());
  EXPECT_EQ(recalling->recall_id(), "r1");
  // Not acked yet: the agent does not release for its client.
  EXPECT_EQ(Lease(lease).status.released_recall_id, "");
  EXPECT_EQ(agent_->AckRecall(lease, descriptor_["attachToken"], "other",
                              recalling->session_id())
                .code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(agent_->AckRecall(lease, descriptor_["attachToken"], "r1",
                                recalling->session_id())
                  .ok());
  EXPECT_EQ(Lease(lease).status.released_recall_id, "r1");

  // Released: the grant is cut, and the agent asks for the next generation.
  OperatorSets(lease, {{"state", "Released"}});
  ASSERT_TRUE(WaitFor([&] { return !fabric_.IsLive(info.key); }));
  ASSERT_TRUE(WaitFor([&] {
    return kube_.Get(DaxLeaseResource(), "", lease.substr(0, lease.rfind('-')) + "-2")
        .ok();
  }));
}

TEST_F(AgentTest, RevokedLeaseIsFencedExactlyOnceThenAcknowledged) {
  RecordAndServe();
  std::string lease = PublishPod("u2");
  auto s = agent_->OpenSession(lease, descriptor_["attachToken"]);
  ASSERT_TRUE(s.ok());
  VolumeEpoch(1);
  OperatorSets(lease, {{"state", "Granted"}, {"epoch", 1}});
  fabric::GrantKey key{"vol", Lease(lease).metadata.uid, "node-a", 1};
  ASSERT_TRUE(WaitFor([&] { return fabric_.IsLive(key); }));

  OperatorSets(lease, {{"state", "Revoked"},
                       {"recallID", "r9"},
                       {"fenceRequired", true},
                       {"reason", "DeadlineExceeded"}});
  ASSERT_TRUE(WaitFor([&] { return Lease(lease).status.fenced_recall_id == "r9"; }));
  EXPECT_FALSE(fabric_.IsLive(key));
  // More passes do not fence again.
  for (int i = 0; i < 5; ++i) agent_->ReconcileOnce();
  EXPECT_EQ(fabric_.invalidations(), 1);

  auto revoked = NextOfKind(**s, pb::SessionEvent::REVOKED);
  ASSERT_TRUE(revoked.has_value());
  OperatorSets(lease, {{"fenceRequired", false}});
  ASSERT_TRUE(WaitFor([&] {
    return agent_
        ->AckRevocation(lease, descriptor_["attachToken"], revoked->session_id())
        .ok();
  }));
  ASSERT_TRUE(WaitFor([&] { return Lease(lease).status.revocation_acknowledged; }));
}

TEST_F(AgentTest, WrongTokenOrUnknownLeaseIsRefused) {
  RecordAndServe();
  std::string lease = PublishPod("u3");
  EXPECT_EQ(agent_->OpenSession(lease, "00").status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(agent_->OpenSession("dl-nope-1", "00").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(AgentTest, ForgetRefusesWhileALeaseHoldsAccess) {
  RecordAndServe();
  std::string lease = PublishPod("u4");
  VolumeEpoch(1);
  OperatorSets(lease, {{"state", "Granted"}, {"epoch", 1}});
  absl::Status st = agent_->ForgetVolume("vol");
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(st.message(), HasSubstr(lease));
  OperatorSets(lease, {{"state", "Released"}});
  ASSERT_TRUE(agent_->Unpublish("vol", dir_ + "/target-u4").ok());
  // The renewed generation may exist (Pending): it holds nothing.
  EXPECT_TRUE(agent_->ForgetVolume("vol").ok());
  EXPECT_FALSE(kube_.Get(DaxVolumeResource(), "", "vol").ok());
}

TEST_F(AgentTest, RestartRebuildsFromStateAndApi) {
  RecordAndServe();
  std::string lease = PublishPod("u5");
  std::string token = descriptor_["attachToken"];
  VolumeEpoch(1);
  OperatorSets(lease, {{"state", "Granted"}, {"epoch", 1}});
  fabric::GrantKey key{"vol", Lease(lease).metadata.uid, "node-a", 1};
  ASSERT_TRUE(WaitFor([&] { return fabric_.IsLive(key); }));

  agent_.reset();
  fabric::FakeFabric fresh("test-secret");
  AgentConfig c;
  c.node = "node-a";
  c.state_dir = dir_ + "/state";
  c.secret = "test-secret";
  c.resync = absl::Milliseconds(20);
  Agent again(c, kube_, clock_, fresh, "10.0.0.1:7390");
  ASSERT_TRUE(again.Start().ok());
  EXPECT_TRUE(fresh.IsRegistered("vol"));
  EXPECT_TRUE(fresh.IsLive(key));
  auto s = again.OpenSession(lease, token);
  ASSERT_TRUE(s.ok()) << s.status();
  again.Stop();
}

}  // namespace
}  // namespace daxlease::agent
