// GrpcAgentConnection: AgentConnection over the node agent's own client
// (node-agent/agent_client: gRPC on the agent's unix socket). Only
// translates: the agent's codes pass through, an unreachable agent is
// UNAVAILABLE (AgentClient's contract).
#ifndef DAXLEASE_CSI_GRPC_AGENT_CONNECTION_H_
#define DAXLEASE_CSI_GRPC_AGENT_CONNECTION_H_

#include <memory>
#include <string>

#include "csi/agent_connection.h"
#include "node-agent/agent_client/agent_client.h"

namespace daxlease::csi {

class GrpcAgentConnection final : public AgentConnection {
 public:
  GrpcAgentConnection(std::string socket_path,
                      std::unique_ptr<agent::AgentClient> client)
      : socket_path_(std::move(socket_path)), client_(std::move(client)) {}

  absl::Status RecordVolume(const AgentVolume& volume) override;
  absl::Status ForgetVolume(absl::string_view volume_id) override;
  absl::Status ServeVolume(const ServedVolume& volume) override;
  absl::Status StopServing(absl::string_view volume_id) override;
  absl::StatusOr<bool> CanShareFsdax() override;
  absl::StatusOr<ReshapeAnswer> ReshapeVolume(absl::string_view volume_id,
                                              uint64_t size_bytes,
                                              bool complete) override;
  absl::StatusOr<std::string> SnapshotVolume(absl::string_view volume_id,
                                             bool complete) override;
  absl::StatusOr<std::string> Publish(const AgentPublish& publish) override;
  absl::Status Unpublish(absl::string_view volume_id,
                         absl::string_view target_path) override;
  const std::string& socket_path() const override { return socket_path_; }

 private:
  const std::string socket_path_;
  const std::unique_ptr<agent::AgentClient> client_;
};

}  // namespace daxlease::csi

#endif  // DAXLEASE_CSI_GRPC_AGENT_CONNECTION_H_
