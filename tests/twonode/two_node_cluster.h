// Two simulated nodes on one machine, against the real kube-apiserver of the
// k8s label's control plane (tests/k8s): each node is a network namespace
// (tests/twonode/netns.sh: veth pair, 198.51.100.1 / 198.51.100.2) with its own
// state directory, its own daxlease-agent (fabric on its veth address) and
// its own daxlease-csi (file backend, --agent-socket); the operator runs on
// the host. The daemons of a node run with its network namespace only
// (setns(CLONE_NEWNET)), so their mounts and loop devices are the host's and
// cleanup sees them.
//
// Teardown (the destructor, or Stop() to check it) stops only the processes
// this cluster started, removes its namespaces, unmounts what is under its
// directory and detaches the loop devices backed there.
//
// One cluster may serve many tests in turn (TwoNodeVolumeTest shares one
// per test suite): EnsureHealthy() restarts whatever a test killed and left
// down. The operator is watched all along: one that exits by itself (it
// exits when it loses its leadership, e.g. a renewal late under load) is
// started again at once with the same identity, which takes its lease back
// without waiting the lease out.
// Not thread-safe apart from that watch: one test at a time drives a cluster.
#ifndef DAXLEASE_TESTS_TWONODE_TWO_NODE_CLUSTER_H_
#define DAXLEASE_TESTS_TWONODE_TWO_NODE_CLUSTER_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "lib/sys/command.h"

namespace daxlease::testing {

// "" when the machine can run the two-node tests, else why not (root, ip,
// socat, nsenter, network namespaces, the control plane's kubeconfig).
std::string TwoNodePrereqMissing();

// The programs the cluster runs (from the build tree).
std::string AgentBinary();
std::string IoBinary();  // daxlease-io (client/tools)
// kubectl-daxlease (the kubectl plugin). The built binaries' paths are
// compiled into the harness only: a test program that names one itself
// would miss the compiler cache in every other checkout.
std::string PluginBinary();

// A daemon (or any program) started inside a node's network namespace.
// The destructor SIGKILLs and reaps it; it also dies with the test process
// (PR_SET_PDEATHSIG).
class NodeProcess {
 public:
  static absl::StatusOr<std::unique_ptr<NodeProcess>> Start(
      const std::string& netns, std::vector<std::string> argv,
      const std::string& log_path);
  NodeProcess(const NodeProcess&) = delete;
  NodeProcess& operator=(const NodeProcess&) = delete;
  ~NodeProcess();

  pid_t pid() const { return pid_; }
  bool running();
  // Sends `sig` (SIGSTOP, SIGCONT, ...) without waiting.
  absl::Status Signal(int sig);
  // SIGKILL and reap. Idempotent.
  void Kill9();
  // SIGTERM, wait up to `timeout`, then SIGKILL; the wait status.
  int Terminate(absl::Duration timeout = absl::Seconds(15));
  // Waits for the process to exit by itself; its wait status, or
  // DeadlineExceeded.
  absl::StatusOr<int> Wait(absl::Duration timeout);
  const std::string& log_path() const { return log_path_; }
  std::string LogTail(size_t bytes = 4000) const;

 private:
  NodeProcess(pid_t pid, std::string log) : pid_(pid), log_path_(log) {}
  pid_t pid_;
  std::string log_path_;
};

struct TwoNodeOptions {
  std::string fabric = "fabric-1";
  // Start daxlease-operator on the host (unique leader-election name).
  bool start_operator = true;
  // Start a daxlease-agent per node, and wire its socket into daxlease-csi.
  bool start_agents = true;
  std::vector<std::string> operator_args;
  // Appended to every daxlease-agent's arguments.
  std::vector<std::string> agent_args;
  // The recall channel, as the chart runs them (docs/operator.md, "The
  // recall channel"): the operator serves it (--channel-address on the host,
  // bridged into each node's namespace by netns.sh), each agent answers on
  // it (--channel) with a token of its own pod (a Pod bound to its node in a
  // throwaway namespace, checked by the operator with a real TokenReview).
  // Only with start_operator. false: both on the lease status fields.
  bool channel = true;
};

class TwoNodeCluster {
 public:
  struct Node {
    std::string name;          // "node-a" (the owner in the tests), "node-b"
    std::string netns;         // /run/netns/<netns>
    std::string addr;          // 198.51.100.1 / 198.51.100.2
    std::string dir;           // <cluster>/<name>
    std::string kubelet_dir;   // <dir>/kubelet: the CSI allowed root
    std::string csi_socket;    // <dir>/csi.sock
    std::string agent_socket;  // <dir>/run/agent.sock
    std::string agent_listen;  // <addr>:7390, the agent's fabric address
    std::unique_ptr<NodeProcess> agent;
    std::unique_ptr<NodeProcess> csi;
    std::shared_ptr<grpc::Channel> csi_channel;
  };

  static absl::StatusOr<std::unique_ptr<TwoNodeCluster>> Start(
      const TwoNodeOptions& options = {});
  TwoNodeCluster(const TwoNodeCluster&) = delete;
  TwoNodeCluster& operator=(const TwoNodeCluster&) = delete;
  ~TwoNodeCluster();

  // Stops everything and cleans up; returns what had to be forced (mounts,
  // loop devices, namespaces left behind: empty when the daemons cleaned
  // up after themselves). Idempotent.
  absl::StatusOr<std::vector<std::string>> Stop();

  Node& a() { return nodes_[0]; }
  Node& b() { return nodes_[1]; }
  const std::string& dir() const { return dir_; }
  const std::string& kubeconfig() const { return kubeconfig_; }
  const TwoNodeOptions& options() const { return options_; }
  // Whether the daemons run with the recall channel (options().channel and
  // an operator): recall answers are then on the channel, and the DaxRecall
  // (status.revokedLeases, status.fencedLeases) records the outcome; agents
  // write none of the lease status fields.
  bool channel() const { return channel_; }

  // Runs argv inside `node`'s network namespace and waits.
  absl::StatusOr<sys::CommandResult> RunIn(const Node& node,
                                           std::vector<std::string> argv);
  // `kubectl --kubeconfig K args...` on the host.
  absl::StatusOr<sys::CommandResult> Kubectl(std::vector<std::string> args);

  // (Re)starts `node`'s agent; kills a running one first with `sig`.
  // Returns once the agent answers on its socket. With `crash_point`, the
  // new agent runs with DAXLEASE_CRASH_POINT=<crash_point>
  // (lib/base/crash_point.h): it kills itself there; the test restarts it.
  absl::Status RestartAgent(Node& node, int sig = 9,
                            const std::string& crash_point = "");

  // (Re)starts `node`'s daxlease-csi; kills a running one first with `sig`.
  // Returns once the plugin answers its probe (csi_channel is new).
  absl::Status RestartCsi(Node& node, int sig = 9);

  // (Re)starts the operator; kills a running one first with `sig`. With
  // `crash_point`, this one operator runs with DAXLEASE_CRASH_POINT; once
  // it killed itself there the watch starts one without it.
  absl::Status RestartOperator(int sig = 9,
                               const std::string& crash_point = "");
  // How often the watch restarted an operator that had exited by itself.
  int operator_restarts() const;

  // Restarts each daemon that is down (an agent, a plugin that does not
  // answer its probe, the operator); OK once all run. A test that killed
  // one leaves the cluster as the next test needs it with this.
  absl::Status EnsureHealthy();

  // The logs of every daemon (tails), for a failing test's message.
  std::string Logs() const;

 private:
  TwoNodeCluster() = default;
  absl::Status StartCsi(Node& node);
  absl::Status StartAgent(Node& node, const std::string& crash_point = "");
  absl::Status StartOperatorLocked(const std::string& crash_point = "")
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(op_mu_);
  // The operator's watch: restarts it when it exits by itself.
  void WatchOperator();

  TwoNodeOptions options_;
  std::string dir_;
  std::string kubeconfig_;
  std::string server_;
  std::string lease_name_;
  bool channel_ = false;
  std::string channel_ns_;       // the agents' pods and service account
  std::string channel_address_;  // 127.0.0.1:PORT on the host and in each node
  Node nodes_[2];
  mutable absl::Mutex op_mu_;
  std::unique_ptr<NodeProcess> operator_ ABSL_GUARDED_BY(op_mu_);
  int operator_restarts_ ABSL_GUARDED_BY(op_mu_) = 0;
  bool stopped_ ABSL_GUARDED_BY(op_mu_) = false;
  std::thread watch_;
};

}  // namespace daxlease::testing

#endif  // DAXLEASE_TESTS_TWONODE_TWO_NODE_CLUSTER_H_
