#include "node-agent/agent_client/agent_client.h"

#include <unistd.h>

#include <cstdlib>
#include <string>

#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/agent.grpc.pb.h"

namespace daxlease::agent {
namespace {

using ::testing::HasSubstr;

// A stand-in agent: refuses unregister of "busy", remembers registrations.
class StubAgent final : public pb::Agent::Service {
 public:
  grpc::Status RecordVolume(grpc::ServerContext*,
                            const pb::RecordVolumeRequest* req,
                            pb::RecordVolumeResponse*) override {
    last_volume = req->volume_id();
    return grpc::Status::OK;
  }
  grpc::Status ForgetVolume(grpc::ServerContext*,
                            const pb::ForgetVolumeRequest* req,
                            pb::ForgetVolumeResponse*) override {
    if (req->volume_id() == "busy") {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          "leases hold access");
    }
    return grpc::Status::OK;
  }
  grpc::Status Publish(grpc::ServerContext*, const pb::PublishRequest* req,
                       pb::PublishResponse* resp) override {
    resp->set_lease_name("dl-" + req->pod_uid());
    return grpc::Status::OK;
  }
  std::string last_volume;
};

class AgentClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/agent_client_test.XXXXXX";
    dir_ = mkdtemp(tmpl);
    socket_ = dir_ + "/agent.sock";
    grpc::ServerBuilder b;
    b.AddListeningPort("unix://" + socket_, grpc::InsecureServerCredentials());
    b.RegisterService(&stub_);
    server_ = b.BuildAndStart();
    ASSERT_NE(server_, nullptr);
  }
  void TearDown() override {
    server_->Shutdown();
    unlink(socket_.c_str());
    rmdir(dir_.c_str());
  }
  std::string dir_, socket_;
  StubAgent stub_;
  std::unique_ptr<grpc::Server> server_;
};

TEST_F(AgentClientTest, CallsReachTheAgentAndCodesComeBackUnchanged) {
  auto c = NewGrpcAgentClient(socket_, absl::Seconds(5));
  pb::RecordVolumeRequest reg;
  reg.set_volume_id("pvc-1");
  ASSERT_TRUE(c->RecordVolume(reg).ok());
  EXPECT_EQ(stub_.last_volume, "pvc-1");
  absl::Status busy = c->ForgetVolume("busy");
  EXPECT_EQ(busy.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(busy.message(), HasSubstr("leases hold access"));
  pb::PublishRequest pub;
  pub.set_pod_uid("u1");
  auto published = c->Publish(pub);
  ASSERT_TRUE(published.ok());
  EXPECT_EQ(published->lease_name(), "dl-u1");
  // Not implemented by the stub: the code is kept.
  EXPECT_EQ(c->Status().status().code(), absl::StatusCode::kUnimplemented);
}

TEST(AgentClientNoAgentTest, MissingAgentIsUnavailable) {
  auto c =
      NewGrpcAgentClient("/nonexistent/agent.sock", absl::Milliseconds(300));
  EXPECT_EQ(c->ForgetVolume("v").code(), absl::StatusCode::kUnavailable);
}

TEST(FakeAgentClientTest, RecordsAndRefusesAsConfigured) {
  FakeAgentClient f;
  pb::RecordVolumeRequest reg;
  reg.set_volume_id("v");
  ASSERT_TRUE(f.RecordVolume(reg).ok());
  f.SetLeasesHoldAccess("v", true);
  EXPECT_EQ(f.ForgetVolume("v").code(), absl::StatusCode::kFailedPrecondition);
  f.FailNext(absl::UnavailableError("down"));
  EXPECT_EQ(f.RecordVolume(reg).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(f.calls().size(), 3u);
  EXPECT_EQ(f.volumes().count("v"), 1u);
}

}  // namespace
}  // namespace daxlease::agent
