// AgentNode: one node's agent inside a test or benchmark process, wired as
// daxlease-agent's main.cc wires it: a TcpFabric on a loopback port (or a
// VerbsFabric on `verbs_ip`, in the QEMU lab), an
// Agent over the given Kubernetes client, and the local API (AgentService)
// on a unix socket `<dir>/<name>.sock`. Stops (server, then agent) when
// destroyed. For tests and benchmarks only.
#ifndef DAXLEASE_NODE_AGENT_TESTING_AGENT_NODE_H_
#define DAXLEASE_NODE_AGENT_TESTING_AGENT_NODE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "lib/k8s/client.h"
#include "node-agent/agent/agent.h"
#include "node-agent/agent/service.h"
#include "node-agent/fabric/fabric.h"

namespace daxlease::agent::testing {

struct AgentNodeOptions {
  std::string name;    // the node's name
  std::string dir;     // socket and state directory live here
  std::string secret;  // the agents' shared secret (>= 16 bytes)
  absl::Duration resync = absl::Seconds(2);
  // Non-empty: the node's fabric is a VerbsFabric listening on this address
  // (of an RDMA device's interface), and its migration connector is an
  // AnyConnector.
  std::string verbs_ip;
};

class AgentNode {
 public:
  // `kube` must outlive the node.
  static absl::StatusOr<std::unique_ptr<AgentNode>> Start(
      const AgentNodeOptions& options, k8s::KubeClient& kube);
  ~AgentNode();
  AgentNode(const AgentNode&) = delete;
  AgentNode& operator=(const AgentNode&) = delete;

  Agent& agent() { return *agent_; }
  const std::string& socket() const { return socket_; }
  const std::string& endpoint() const { return endpoint_; }
  fabric::Fabric& fabric() { return *fabric_; }

 private:
  AgentNode() = default;
  std::string socket_;
  std::string endpoint_;
  std::unique_ptr<fabric::Fabric> fabric_;
  std::unique_ptr<fabric::FabricConnector> connector_;
  std::unique_ptr<Agent> agent_;
  std::unique_ptr<AgentService> service_;
  std::unique_ptr<grpc::Server> server_;
};

}  // namespace daxlease::agent::testing

#endif  // DAXLEASE_NODE_AGENT_TESTING_AGENT_NODE_H_
