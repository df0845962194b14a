// AgentStack: what a test of libdaxlease against real agents runs in one
// process (client_agent_test, the QEMU lab's verbs stack test): the
// operator's Controller over a FakeKubeClient and two AgentNodes, "node-a"
// (the owner in those tests) and "node-b", in a new directory; and the steps
// such a test takes as the CSI plugin and kubectl would: publish a volume to
// a pod (its published directory: descriptor and agent socket) and recall
// it. Stop() (or the destructor) stops the nodes, then the controller and
// the client, and removes the directory. For tests only.
#ifndef DAXLEASE_NODE_AGENT_TESTING_AGENT_STACK_H_
#define DAXLEASE_NODE_AGENT_TESTING_AGENT_STACK_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "lib/base/clock.h"
#include "lib/k8s/fake_client.h"
#include "node-agent/testing/agent_node.h"
#include "operator/controller.h"
#include "operator/events.h"

namespace daxlease::agent::testing {

struct AgentStackOptions {
  std::string dir_prefix = "/tmp/agent_stack";  // + ".XXXXXX"
  std::string secret;                           // the agents' shared secret
  absl::Duration operator_resync = absl::Seconds(1);
  absl::Duration node_resync = absl::Milliseconds(50);
  std::string verbs_ip;  // non-empty: VerbsFabric nodes (AgentNodeOptions)
};

class AgentStack {
 public:
  AgentStack() = default;
  AgentStack(const AgentStack&) = delete;
  AgentStack& operator=(const AgentStack&) = delete;
  ~AgentStack() { Stop(); }

  // Makes the directory, starts the controller and both nodes.
  absl::Status Start(const AgentStackOptions& options);
  // Idempotent.
  void Stop();

  // Starts node `name` ("node-a", "node-b") with the stack's options: for
  // a test that stopped one and brings it back.
  absl::StatusOr<std::unique_ptr<AgentNode>> StartNode(const std::string& name);

  // Publishes `volume` to pod `pod` on `node` (owner_local: the pod is on
  // the owner and maps the data itself) and lays out `target` (default
  // <dir>/target-<pod>) as the CSI plugin does: daxlease.json and a link to
  // the node's agent socket. The target path.
  absl::StatusOr<std::string> Publish(AgentNode& node,
                                      const std::string& volume,
                                      const std::string& pod,
                                      bool owner_local = false,
                                      std::string target = "");

  // A DaxRecall of `volume` (reason Manual, grace `grace` s): its name.
  absl::StatusOr<std::string> Recall(const std::string& volume, int grace);
  // The recall's status ({} when it is gone).
  k8s::Json RecallStatus(const std::string& name);

  std::string dir;
  k8s::FakeKubeClient kube{base::RealClock()};
  std::unique_ptr<AgentNode> a, b;

 private:
  AgentStackOptions options_;
  op::FakeEventSink events_;
  std::unique_ptr<op::Controller> controller_;
  bool stopped_ = false;
};

}  // namespace daxlease::agent::testing

#endif  // DAXLEASE_NODE_AGENT_TESTING_AGENT_STACK_H_
