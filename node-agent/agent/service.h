// AgentService: the gRPC face of Agent on the node's unix socket
// (proto/agent.proto, service daxlease.agent.v1.Agent). Translation only:
// every decision is Agent's.
#ifndef DAXLEASE_NODE_AGENT_AGENT_SERVICE_H_
#define DAXLEASE_NODE_AGENT_AGENT_SERVICE_H_

#include "node-agent/agent/agent.h"
#include "proto/agent.grpc.pb.h"

namespace daxlease::agent {

class AgentService final : public pb::Agent::Service {
 public:
  explicit AgentService(Agent& agent) : agent_(agent) {}

  grpc::Status RecordVolume(grpc::ServerContext*,
                            const pb::RecordVolumeRequest*,
                            pb::RecordVolumeResponse*) override;
  grpc::Status ForgetVolume(grpc::ServerContext*,
                            const pb::ForgetVolumeRequest*,
                            pb::ForgetVolumeResponse*) override;
  grpc::Status ServeVolume(grpc::ServerContext*, const pb::ServeVolumeRequest*,
                           pb::ServeVolumeResponse*) override;
  grpc::Status StopServing(grpc::ServerContext*, const pb::StopServingRequest*,
                           pb::StopServingResponse*) override;
  grpc::Status ReshapeVolume(grpc::ServerContext*,
                             const pb::ReshapeVolumeRequest*,
                             pb::ReshapeVolumeResponse*) override;
  grpc::Status SnapshotVolume(grpc::ServerContext*,
                              const pb::SnapshotVolumeRequest*,
                              pb::SnapshotVolumeResponse*) override;
  grpc::Status Publish(grpc::ServerContext*, const pb::PublishRequest*,
                       pb::PublishResponse*) override;
  grpc::Status Unpublish(grpc::ServerContext*, const pb::UnpublishRequest*,
                         pb::UnpublishResponse*) override;
  grpc::Status OpenSession(grpc::ServerContext*, const pb::OpenSessionRequest*,
                           grpc::ServerWriter<pb::SessionEvent>*) override;
  grpc::Status AckRecall(grpc::ServerContext*, const pb::AckRecallRequest*,
                         pb::AckRecallResponse*) override;
  grpc::Status AckRevocation(grpc::ServerContext*,
                             const pb::AckRevocationRequest*,
                             pb::AckRevocationResponse*) override;
  grpc::Status Status(grpc::ServerContext*, const pb::StatusRequest*,
                      pb::StatusResponse*) override;

 private:
  Agent& agent_;
};

}  // namespace daxlease::agent

#endif  // DAXLEASE_NODE_AGENT_AGENT_SERVICE_H_
