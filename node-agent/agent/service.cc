#include "node-agent/agent/service.h"

#include "lib/base/log.h"

namespace daxlease::agent {
namespace {

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()),
                      std::string(s.message()));
}

}  // namespace

grpc::Status AgentService::RecordVolume(grpc::ServerContext*,
                                        const pb::RecordVolumeRequest* req,
                                        pb::RecordVolumeResponse*) {
  return ToGrpc(agent_.RecordVolume(*req));
}

grpc::Status AgentService::ForgetVolume(grpc::ServerContext*,
                                        const pb::ForgetVolumeRequest* req,
                                        pb::ForgetVolumeResponse*) {
  return ToGrpc(agent_.ForgetVolume(req->volume_id()));
}

grpc::Status AgentService::ServeVolume(grpc::ServerContext*,
                                       const pb::ServeVolumeRequest* req,
                                       pb::ServeVolumeResponse* resp) {
  auto r = agent_.ServeVolume(*req);
  if (!r.ok()) return ToGrpc(r.status());
  *resp = *r;
  return grpc::Status::OK;
}

grpc::Status AgentService::StopServing(grpc::ServerContext*,
                                       const pb::StopServingRequest* req,
                                       pb::StopServingResponse*) {
  return ToGrpc(agent_.StopServing(req->volume_id()));
}

grpc::Status AgentService::ReshapeVolume(grpc::ServerContext*,
                                         const pb::ReshapeVolumeRequest* req,
                                         pb::ReshapeVolumeResponse* resp) {
  auto r = agent_.ReshapeVolume(*req);
  if (!r.ok()) return ToGrpc(r.status());
  *resp = *r;
  return grpc::Status::OK;
}

grpc::Status AgentService::SnapshotVolume(grpc::ServerContext*,
                                          const pb::SnapshotVolumeRequest* req,
                                          pb::SnapshotVolumeResponse* resp) {
  auto r = agent_.SnapshotVolume(*req);
  if (!r.ok()) return ToGrpc(r.status());
  *resp = *r;
  return grpc::Status::OK;
}

grpc::Status AgentService::Publish(grpc::ServerContext*,
                                   const pb::PublishRequest* req,
                                   pb::PublishResponse* resp) {
  auto r = agent_.Publish(*req);
  if (!r.ok()) return ToGrpc(r.status());
  *resp = *r;
  return grpc::Status::OK;
}

grpc::Status AgentService::Unpublish(grpc::ServerContext*,
                                     const pb::UnpublishRequest* req,
                                     pb::UnpublishResponse*) {
  return ToGrpc(agent_.Unpublish(req->volume_id(), req->target_path()));
}

grpc::Status AgentService::OpenSession(
    grpc::ServerContext* ctx, const pb::OpenSessionRequest* req,
    grpc::ServerWriter<pb::SessionEvent>* writer) {
  auto s = agent_.OpenSession(req->lease_name(), req->attach_token());
  if (!s.ok()) return ToGrpc(s.status());
  bool closed_by_agent = false;
  while (!ctx->IsCancelled()) {
    auto ev = (*s)->Next(absl::Milliseconds(200));
    if (!ev.has_value()) {
      if ((*s)->closed()) {
        closed_by_agent = true;
        break;
      }
      continue;
    }
    if (!writer->Write(*ev)) break;
  }
  agent_.CloseSession(*s);
  if (closed_by_agent) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        "session ended by the agent (unpublished or stopping)");
  }
  return grpc::Status::OK;
}

grpc::Status AgentService::AckRecall(grpc::ServerContext*,
                                     const pb::AckRecallRequest* req,
                                     pb::AckRecallResponse*) {
  return ToGrpc(agent_.AckRecall(req->lease_name(), req->attach_token(),
                                 req->recall_id(), req->session_id()));
}

grpc::Status AgentService::AckRevocation(grpc::ServerContext*,
                                         const pb::AckRevocationRequest* req,
                                         pb::AckRevocationResponse*) {
  return ToGrpc(agent_.AckRevocation(req->lease_name(), req->attach_token(),
                                     req->session_id()));
}

grpc::Status AgentService::Status(grpc::ServerContext*,
                                  const pb::StatusRequest*,
                                  pb::StatusResponse* resp) {
  *resp = agent_.Status();
  return grpc::Status::OK;
}

}  // namespace daxlease::agent
