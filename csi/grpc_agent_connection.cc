#include "csi/grpc_agent_connection.h"

namespace daxlease::csi {
namespace {

agent::pb::VolumeMode ModeOf(VolumeMode m) {
  return m == VolumeMode::kDevdax ? agent::pb::DEVDAX : agent::pb::FSDAX;
}

}  // namespace

absl::Status GrpcAgentConnection::RecordVolume(const AgentVolume& v) {
  // The owner is the agent's own node: it runs beside this plugin.
  agent::pb::RecordVolumeRequest r;
  r.set_volume_id(v.volume_id);
  r.set_size_bytes(v.size_bytes);
  r.set_mode(ModeOf(v.mode));
  r.set_fs_type(v.fs_type);
  r.set_share(v.share);
  r.set_recall_grace_seconds(v.recall_grace_seconds);
  return client_->RecordVolume(r);
}

absl::Status GrpcAgentConnection::ForgetVolume(absl::string_view id) {
  return client_->ForgetVolume(std::string(id));
}

absl::Status GrpcAgentConnection::ServeVolume(const ServedVolume& v) {
  agent::pb::ServeVolumeRequest r;
  r.set_volume_id(v.volume_id);
  r.set_mode(ModeOf(v.mode));
  if (v.mode == VolumeMode::kDevdax) {
    r.set_device(v.path);
  } else {
    r.set_mount_path(v.path);
  }
  r.set_size_bytes(v.size_bytes);
  r.set_dax(v.dax);
  return client_->ServeVolume(r).status();
}

absl::Status GrpcAgentConnection::StopServing(absl::string_view id) {
  return client_->StopServing(std::string(id));
}

absl::StatusOr<bool> GrpcAgentConnection::CanShareFsdax() {
  absl::StatusOr<agent::pb::StatusResponse> r = client_->Status();
  if (!r.ok()) return r.status();
  return r->fsdax_sharing();
}

absl::StatusOr<ReshapeAnswer> GrpcAgentConnection::ReshapeVolume(
    absl::string_view id, uint64_t size_bytes, bool complete) {
  agent::pb::ReshapeVolumeRequest r;
  r.set_volume_id(std::string(id));
  r.set_size_bytes(size_bytes);
  r.set_complete(complete);
  absl::StatusOr<agent::pb::ReshapeVolumeResponse> resp =
      client_->ReshapeVolume(r);
  if (!resp.ok()) return resp.status();
  ReshapeAnswer a;
  a.stage = resp->stage() == agent::pb::ReshapeVolumeResponse::CHANGE
                ? ReshapeStage::kChange
                : ReshapeStage::kDone;
  a.recall = resp->recall();
  a.served_bytes = resp->served_bytes();
  return a;
}

absl::StatusOr<std::string> GrpcAgentConnection::SnapshotVolume(
    absl::string_view id, bool complete) {
  agent::pb::SnapshotVolumeRequest r;
  r.set_volume_id(std::string(id));
  r.set_complete(complete);
  absl::StatusOr<agent::pb::SnapshotVolumeResponse> resp =
      client_->SnapshotVolume(r);
  if (!resp.ok()) return resp.status();
  return resp->recall();
}

absl::StatusOr<std::string> GrpcAgentConnection::Publish(
    const AgentPublish& p) {
  agent::pb::PublishRequest r;
  r.set_volume_id(p.volume_id);
  r.set_target_path(p.target_path);
  r.set_pod_namespace(p.pod.ns);
  r.set_pod_name(p.pod.name);
  r.set_pod_uid(p.pod.uid);
  r.set_read_only(p.read_only);
  r.set_owner_local(p.owner_local);
  absl::StatusOr<agent::pb::PublishResponse> resp = client_->Publish(r);
  if (!resp.ok()) return resp.status();
  return resp->descriptor_json();
}

absl::Status GrpcAgentConnection::Unpublish(absl::string_view id,
                                            absl::string_view target) {
  return client_->Unpublish(std::string(id), std::string(target));
}

}  // namespace daxlease::csi
