// GrpcAgentConnection translates the CSI's calls into the agent's requests
// field by field and passes the agent's status codes through unchanged
// (over FakeAgentClient; the real socket is exercised by tests/twonode).
#include "csi/grpc_agent_connection.h"

#include <memory>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace daxlease::csi {
namespace {

using ::testing::ElementsAre;

class GrpcAgentConnectionTest : public ::testing::Test {
 protected:
  GrpcAgentConnectionTest() {
    auto fake = std::make_unique<agent::FakeAgentClient>();
    fake_ = fake.get();
    conn_ = std::make_unique<GrpcAgentConnection>("/run/daxlease/agent.sock",
                                                  std::move(fake));
  }
  agent::FakeAgentClient* fake_;
  std::unique_ptr<GrpcAgentConnection> conn_;
};

TEST_F(GrpcAgentConnectionTest, RecordVolumeCarriesTheSpec) {
  AgentVolume v;
  v.volume_id = "pvc-1";
  v.owner_node = "node-a";
  v.size_bytes = 64 << 20;
  v.mode = VolumeMode::kFsdax;
  v.fs_type = "ext4";
  v.share = true;
  v.recall_grace_seconds = 7;
  ASSERT_TRUE(conn_->RecordVolume(v).ok());
  auto got = fake_->volumes().at("pvc-1");
  EXPECT_EQ(got.size_bytes(), 64u << 20);
  EXPECT_EQ(got.mode(), agent::pb::FSDAX);
  EXPECT_EQ(got.fs_type(), "ext4");
  EXPECT_TRUE(got.share());
  EXPECT_EQ(got.recall_grace_seconds(), 7);
}

TEST_F(GrpcAgentConnectionTest, ServeVolumeNamesTheMountOrTheDevice) {
  for (const char* id : {"fs", "dev"}) {
    AgentVolume v;
    v.volume_id = id;
    ASSERT_TRUE(conn_->RecordVolume(v).ok());
  }
  ASSERT_TRUE(
      conn_->ServeVolume({"fs", VolumeMode::kFsdax, "/stage/fs", 8 << 20, true})
          .ok());
  ASSERT_TRUE(conn_
                  ->ServeVolume({"dev", VolumeMode::kDevdax, "/dev/dax0.1",
                                 8 << 20, true})
                  .ok());
  auto fs = fake_->served().at("fs");
  EXPECT_EQ(fs.mount_path(), "/stage/fs");
  EXPECT_EQ(fs.device(), "");
  EXPECT_TRUE(fs.dax());
  auto dev = fake_->served().at("dev");
  EXPECT_EQ(dev.mode(), agent::pb::DEVDAX);
  EXPECT_EQ(dev.device(), "/dev/dax0.1");
  EXPECT_EQ(dev.mount_path(), "");
}

TEST_F(GrpcAgentConnectionTest, PublishReturnsTheDescriptorVerbatim) {
  AgentPublish p;
  p.volume_id = "pvc-1";
  p.target_path = "/var/lib/kubelet/pods/u/volumes/x/mount";
  p.pod = {"web-0", "default", "uid-1"};
  p.read_only = true;
  p.owner_local = false;
  absl::StatusOr<std::string> d = conn_->Publish(p);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_FALSE(d->empty());
  auto req = fake_->publishes().at(p.target_path);
  EXPECT_EQ(req.pod_name(), "web-0");
  EXPECT_EQ(req.pod_namespace(), "default");
  EXPECT_EQ(req.pod_uid(), "uid-1");
  EXPECT_TRUE(req.read_only());
  EXPECT_FALSE(req.owner_local());
  ASSERT_TRUE(conn_->Unpublish("pvc-1", p.target_path).ok());
  EXPECT_EQ(fake_->publishes().count(p.target_path), 0u);
}

TEST_F(GrpcAgentConnectionTest, TheAgentsCodesPassThrough) {
  fake_->FailNext(absl::UnavailableError("agent down"));
  EXPECT_TRUE(absl::IsUnavailable(conn_->ForgetVolume("pvc-1")));
  fake_->SetLeasesHoldAccess("pvc-1", true);
  EXPECT_TRUE(absl::IsFailedPrecondition(conn_->ForgetVolume("pvc-1")));
  EXPECT_TRUE(absl::IsFailedPrecondition(conn_->StopServing("pvc-1")));
  fake_->SetLeasesHoldAccess("pvc-1", false);
  EXPECT_TRUE(conn_->ForgetVolume("pvc-1").ok());
  EXPECT_THAT(fake_->calls(), ElementsAre("ForgetVolume", "ForgetVolume",
                                          "StopServing", "ForgetVolume"));
  EXPECT_EQ(conn_->socket_path(), "/run/daxlease/agent.sock");
}

}  // namespace
}  // namespace daxlease::csi
