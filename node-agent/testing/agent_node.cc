#include "node-agent/testing/agent_node.h"

#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "lib/base/clock.h"
#include "node-agent/fabric/tcp_fabric.h"
#include "node-agent/fabric/verbs_fabric.h"

namespace daxlease::agent::testing {

absl::StatusOr<std::unique_ptr<AgentNode>> AgentNode::Start(
    const AgentNodeOptions& options, k8s::KubeClient& kube) {
  std::unique_ptr<AgentNode> n(new AgentNode());
  n->socket_ = absl::StrCat(options.dir, "/", options.name, ".sock");
  if (options.verbs_ip.empty()) {
    fabric::TcpFabricOptions fo;
    fo.listen = "127.0.0.1:0";
    fo.secret = options.secret;
    auto f = fabric::TcpFabric::Start(fo);
    if (!f.ok()) return f.status();
    n->endpoint_ = (*f)->endpoint();
    n->fabric_ = std::move(*f);
  } else {
    fabric::VerbsFabricOptions fo;
    fo.listen = absl::StrCat(options.verbs_ip, ":0");
    fo.secret = options.secret;
    auto f = fabric::VerbsFabric::Start(fo);
    if (!f.ok()) return f.status();
    n->endpoint_ = (*f)->endpoint();
    n->fabric_ = std::move(*f);
    n->connector_ = std::make_unique<fabric::AnyConnector>();
  }
  AgentConfig c;
  c.node = options.name;
  c.state_dir = absl::StrCat(options.dir, "/", options.name, "-state");
  c.socket_path = n->socket_;
  c.secret = options.secret;
  c.resync = options.resync;
  c.connector = n->connector_.get();
  n->agent_ = std::make_unique<Agent>(c, kube, base::RealClock(), *n->fabric_,
                                      n->endpoint_);
  absl::Status st = n->agent_->Start();
  if (!st.ok()) return st;
  n->service_ = std::make_unique<AgentService>(*n->agent_);
  grpc::ServerBuilder b;
  b.AddListeningPort("unix:" + n->socket_, grpc::InsecureServerCredentials());
  b.RegisterService(n->service_.get());
  n->server_ = b.BuildAndStart();
  if (n->server_ == nullptr) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", n->socket_));
  }
  return n;
}

AgentNode::~AgentNode() {
  if (server_ != nullptr) server_->Shutdown(std::chrono::system_clock::now());
  if (agent_ != nullptr) agent_->Stop();
}

}  // namespace daxlease::agent::testing
