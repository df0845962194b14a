#include "node-agent/agent_client/agent_client.h"

#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"
#include "proto/agent.grpc.pb.h"

namespace daxlease::agent {
namespace {

absl::Status FromGrpc(const grpc::Status& s, const char* what) {
  if (s.ok()) return absl::OkStatus();
  auto code = static_cast<absl::StatusCode>(s.error_code());
  if (s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    code = absl::StatusCode::kUnavailable;
  }
  return absl::Status(
      code, absl::StrCat("daxlease-agent ", what, ": ", s.error_message()));
}

class GrpcAgentClient final : public AgentClient {
 public:
  GrpcAgentClient(const std::string& socket_path, absl::Duration deadline)
      : deadline_(deadline),
        stub_(pb::Agent::NewStub(
            grpc::CreateChannel(absl::StrCat("unix://", socket_path),
                                grpc::InsecureChannelCredentials()))) {}

  absl::Status RecordVolume(const pb::RecordVolumeRequest& req) override {
    return Call(&pb::Agent::Stub::RecordVolume, "RecordVolume", req).status();
  }
  absl::Status ForgetVolume(const std::string& volume_id) override {
    pb::ForgetVolumeRequest req;
    req.set_volume_id(volume_id);
    return Call(&pb::Agent::Stub::ForgetVolume, "ForgetVolume", req).status();
  }
  absl::StatusOr<pb::ServeVolumeResponse> ServeVolume(
      const pb::ServeVolumeRequest& req) override {
    return Call(&pb::Agent::Stub::ServeVolume, "ServeVolume", req);
  }
  absl::Status StopServing(const std::string& volume_id) override {
    pb::StopServingRequest req;
    req.set_volume_id(volume_id);
    return Call(&pb::Agent::Stub::StopServing, "StopServing", req).status();
  }
  absl::StatusOr<pb::ReshapeVolumeResponse> ReshapeVolume(
      const pb::ReshapeVolumeRequest& req) override {
    return Call(&pb::Agent::Stub::ReshapeVolume, "ReshapeVolume", req);
  }
  absl::StatusOr<pb::SnapshotVolumeResponse> SnapshotVolume(
      const pb::SnapshotVolumeRequest& req) override {
    return Call(&pb::Agent::Stub::SnapshotVolume, "SnapshotVolume", req);
  }
  absl::StatusOr<pb::PublishResponse> Publish(
      const pb::PublishRequest& req) override {
    return Call(&pb::Agent::Stub::Publish, "Publish", req);
  }
  absl::Status Unpublish(const std::string& volume_id,
                         const std::string& target_path) override {
    pb::UnpublishRequest req;
    req.set_volume_id(volume_id);
    req.set_target_path(target_path);
    return Call(&pb::Agent::Stub::Unpublish, "Unpublish", req).status();
  }
  absl::StatusOr<pb::StatusResponse> Status() override {
    return Call(&pb::Agent::Stub::Status, "Status", pb::StatusRequest());
  }

 private:
  template <typename Req, typename Resp>
  absl::StatusOr<Resp> Call(grpc::Status (pb::Agent::Stub::*method)(
                                grpc::ClientContext*, const Req&, Resp*),
                            const char* what, const Req& req) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + deadline_));
    Resp resp;
    absl::Status s = FromGrpc((stub_.get()->*method)(&ctx, req, &resp), what);
    if (!s.ok()) return s;
    return resp;
  }

  const absl::Duration deadline_;
  std::unique_ptr<pb::Agent::Stub> stub_;
};

}  // namespace

std::unique_ptr<AgentClient> NewGrpcAgentClient(const std::string& socket_path,
                                                absl::Duration deadline) {
  return std::make_unique<GrpcAgentClient>(socket_path, deadline);
}

// ---- FakeAgentClient
// ---------------------------------------------------------

absl::Status FakeAgentClient::Take(const std::string& method) {
  calls_.push_back(method);
  absl::Status s = next_;
  next_ = absl::OkStatus();
  return s;
}

absl::Status FakeAgentClient::RecordVolume(const pb::RecordVolumeRequest& req) {
  absl::MutexLock l(&mu_);
  if (absl::Status s = Take("RecordVolume"); !s.ok()) return s;
  if (req.volume_id().empty()) {
    return absl::InvalidArgumentError("volume_id is required");
  }
  auto it = volumes_.find(req.volume_id());
  if (it != volumes_.end() &&
      it->second.SerializeAsString() != req.SerializeAsString()) {
    return absl::AlreadyExistsError(
        absl::StrCat("volume ", req.volume_id(), " exists with another spec"));
  }
  volumes_[req.volume_id()] = req;
  return absl::OkStatus();
}

absl::Status FakeAgentClient::ForgetVolume(const std::string& volume_id) {
  absl::MutexLock l(&mu_);
  if (absl::Status s = Take("ForgetVolume"); !s.ok()) return s;
  if (held_[volume_id]) {
    return absl::FailedPreconditionError(
        absl::StrCat("leases of ", volume_id, " hold access"));
  }
  volumes_.erase(volume_id);
  served_.erase(volume_id);
  return absl::OkStatus();
}

absl::StatusOr<pb::ServeVolumeResponse> FakeAgentClient::ServeVolume(
    const pb::ServeVolumeRequest& req) {
  absl::MutexLock l(&mu_);
  if (absl::Status s = Take("ServeVolume"); !s.ok()) return s;
  if (!volumes_.contains(req.volume_id())) {
    return absl::NotFoundError(absl::StrCat("volume ", req.volume_id()));
  }
  served_[req.volume_id()] = req;
  pb::ServeVolumeResponse resp;
  resp.set_served_bytes(req.size_bytes());
  resp.set_data_path(req.mode() == pb::DEVDAX
                         ? req.device()
                         : absl::StrCat(req.mount_path(), "/.daxlease/data"));
  return resp;
}

absl::Status FakeAgentClient::StopServing(const std::string& volume_id) {
  absl::MutexLock l(&mu_);
  if (absl::Status s = Take("StopServing"); !s.ok()) return s;
  if (held_[volume_id]) {
    return absl::FailedPreconditionError(
        absl::StrCat("remote grants of ", volume_id, " are live"));
  }
  served_.erase(volume_id);
  return absl::OkStatus();
}

absl::StatusOr<pb::ReshapeVolumeResponse> FakeAgentClient::ReshapeVolume(
    const pb::ReshapeVolumeRequest& req) {
  absl::MutexLock l(&mu_);
  if (absl::Status s = Take("ReshapeVolume"); !s.ok()) return s;
  pb::ReshapeVolumeResponse resp;
  resp.set_stage(pb::ReshapeVolumeResponse::DONE);
  resp.set_served_bytes(req.size_bytes());
  return resp;
}

absl::StatusOr<pb::SnapshotVolumeResponse> FakeAgentClient::SnapshotVolume(
    const pb::SnapshotVolumeRequest& req) {
  absl::MutexLock l(&mu_);
  if (absl::Status s = Take("SnapshotVolume"); !s.ok()) return s;
  pb::SnapshotVolumeResponse resp;
  resp.set_stage(req.complete() ? pb::SnapshotVolumeResponse::DONE
                                : pb::SnapshotVolumeResponse::COPY);
  return resp;
}

absl::StatusOr<pb::PublishResponse> FakeAgentClient::Publish(
    const pb::PublishRequest& req) {
  absl::MutexLock l(&mu_);
  if (absl::Status s = Take("Publish"); !s.ok()) return s;
  publishes_[req.target_path()] = req;
  pb::PublishResponse resp;
  resp.set_lease_name(absl::StrCat("dl-", req.volume_id(), "-", req.pod_uid()));
  resp.set_descriptor_json(absl::StrCat(R"({"version":1,"volume":")",
                                        req.volume_id(), R"(","lease":")",
                                        resp.lease_name(), R"("})"));
  return resp;
}

absl::Status FakeAgentClient::Unpublish(const std::string& volume_id,
                                        const std::string& target_path) {
  absl::MutexLock l(&mu_);
  if (absl::Status s = Take("Unpublish"); !s.ok()) return s;
  publishes_.erase(target_path);
  return absl::OkStatus();
}

absl::StatusOr<pb::StatusResponse> FakeAgentClient::Status() {
  absl::MutexLock l(&mu_);
  if (absl::Status s = Take("Status"); !s.ok()) return s;
  pb::StatusResponse r;
  for (const auto& [v, _] : served_) r.add_owned_volumes(v);
  return r;
}

void FakeAgentClient::FailNext(absl::Status s) {
  absl::MutexLock l(&mu_);
  next_ = std::move(s);
}

void FakeAgentClient::SetLeasesHoldAccess(const std::string& volume_id,
                                          bool held) {
  absl::MutexLock l(&mu_);
  held_[volume_id] = held;
}

std::map<std::string, pb::RecordVolumeRequest> FakeAgentClient::volumes()
    const {
  absl::MutexLock l(&mu_);
  return volumes_;
}

std::map<std::string, pb::ServeVolumeRequest> FakeAgentClient::served() const {
  absl::MutexLock l(&mu_);
  return served_;
}

std::map<std::string, pb::PublishRequest> FakeAgentClient::publishes() const {
  absl::MutexLock l(&mu_);
  return publishes_;
}

std::vector<std::string> FakeAgentClient::calls() const {
  absl::MutexLock l(&mu_);
  return calls_;
}

}  // namespace daxlease::agent
