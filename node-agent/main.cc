// daxlease-agent: the node agent (docs/agent.md). Parses flags, wires the
// Kubernetes client, the fabric (TCP or RDMA verbs) and the Agent, serves the
// local API on a unix socket, and turns lease-break signals into
// Agent::OnLeaseBreak until SIGTERM/SIGINT.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"
#include "lib/base/flags.h"
#include "lib/base/log.h"
#include "lib/base/status.h"
#include "lib/channel/client.h"
#include "lib/channel/leader_record.h"
#include "lib/k8s/config.h"
#include "lib/k8s/rest_client.h"
#include "lib/metrics/metrics_server.h"
#include "lib/sys/file.h"
#include "node-agent/agent/agent.h"
#include "node-agent/agent/grpc_node_media.h"
#include "node-agent/agent/metrics.h"
#include "node-agent/agent/service.h"
#include "node-agent/fabric/tcp_fabric.h"
#include "node-agent/fabric/verbs_fabric.h"

ABSL_FLAG(std::string, node_id, "",
          "this node's name (required; else $NODE_NAME)");
ABSL_FLAG(std::string, kubeconfig, "",
          "kubeconfig file; empty: $KUBECONFIG, in-cluster, ~/.kube/config");
ABSL_FLAG(std::string, socket, "/run/daxlease/agent.sock",
          "unix socket of the local API (CSI plugin, libdaxlease); its "
          "directory holds nothing else (the CSI plugin binds it into "
          "pods)");
ABSL_FLAG(std::string, socket_mode, "0660", "mode of the socket (octal)");
ABSL_FLAG(std::string, state_dir, "/var/lib/daxlease/agent",
          "directory for the agent's state (served volumes, publishes)");
ABSL_FLAG(std::string, fabric, "tcp",
          "how remote holders reach this node's volumes: tcp, or verbs (RDMA "
          "through rdma_cm; --listen must then be the address of the RDMA "
          "device's interface)");
ABSL_FLAG(std::string, listen, "0.0.0.0:7390",
          "host:port the fabric listens on for remote holders");
ABSL_FLAG(std::string, advertise, "",
          "host:port other nodes reach the fabric at (default: --listen; "
          "required when --listen is 0.0.0.0)");
ABSL_FLAG(std::string, secret_file, "",
          "file holding the agents' shared secret (required; the same on "
          "every node)");
ABSL_FLAG(std::string, media_dir, "",
          "where volumes that migrate to this node get their media "
          "(<dir>/<volume>/data); empty: <state-dir>/media");
ABSL_FLAG(std::string, plugin_socket, "",
          "daxlease-csi's socket on this node: a migration's devdax media "
          "(a namespace) is made and freed by the plugin; empty: a devdax "
          "volume that migrated away stays allocated");
ABSL_FLAG(absl::Duration, media_free_retry_max, absl::Minutes(5),
          "a migration's media the plugin refuses to free (the device still "
          "open, the plugin down) is asked again after 1s, doubling up to "
          "this, then at this rate for good");
ABSL_FLAG(uint64_t, migration_max_bytes_per_second, 0,
          "the most a migration copy to this node reads per second (0: no "
          "limit)");
ABSL_FLAG(int, migration_streams, 2,
          "connections a migration copy to this node reads on at once");
ABSL_FLAG(bool, migration_direct_writes, true,
          "write a migration's file media (not devdax) with O_DIRECT, past "
          "the page cache, as persistent memory has none (falls back to "
          "buffered writes where the file system refuses O_DIRECT); false: "
          "buffered writes, written back chunk by chunk");
ABSL_FLAG(bool, file_leases, true,
          "hold an fcntl lease on each served fsdax data file; a break starts "
          "a recall");
ABSL_FLAG(std::string, metrics_address, "",
          "host:port to serve Prometheus metrics at /metrics (empty: off; "
          "the chart uses 0.0.0.0:29655)");
ABSL_FLAG(bool, channel, false,
          "answer recalls, fence requests and revocations on the operator "
          "leader's recall channel (the operator runs with "
          "--channel-address); off: in the lease status fields");
ABSL_FLAG(std::string, channel_record, "default/daxlease-operator-channel",
          "NAMESPACE/NAME of the ConfigMap where the leader publishes its "
          "channel endpoint and certificate (the operator's "
          "--channel-record)");
ABSL_FLAG(std::string, channel_token_file,
          "/var/run/secrets/daxlease/channel/token",
          "the agent pod's service-account token for the audience "
          "daxlease-operator (a projected volume), read again for every "
          "connection");

namespace daxlease::agent {
namespace {

int Fail(const absl::Status& s) {
  base::LogError("agent.start_failed", {{"error", s.ToString()}});
  return 1;
}

int Main() {
  // Before any thread: gRPC creates the socket with the umask's mode, and
  // the chmod to --socket-mode comes after; born without group and other
  // write (connect needs write), it admits nobody but its owner in between,
  // though every published volume on the node shows its directory.
  ::umask(::umask(0) | 022);
  const int lease_signal = SIGRTMIN + 1;
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, lease_signal);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

  std::string node = absl::GetFlag(FLAGS_node_id);
  if (node.empty() && getenv("NODE_NAME") != nullptr)
    node = getenv("NODE_NAME");
  if (node.empty()) {
    return Fail(absl::InvalidArgumentError("--node-id is required"));
  }
  const std::string secret_file = absl::GetFlag(FLAGS_secret_file);
  if (secret_file.empty()) {
    return Fail(absl::InvalidArgumentError("--secret-file is required"));
  }
  auto secret = sys::ReadFile(secret_file);
  if (!secret.ok()) return Fail(secret.status());
  if (secret->size() < 16) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat(secret_file, " holds fewer than 16 bytes")));
  }
  const std::string mode_flag = absl::GetFlag(FLAGS_socket_mode);
  char* end = nullptr;
  long mode = std::strtol(mode_flag.c_str(), &end, 8);
  if (mode_flag.empty() || *end != '\0' || mode < 0 || mode > 07777) {
    return Fail(absl::InvalidArgumentError("--socket-mode is not octal"));
  }
  std::string listen = absl::GetFlag(FLAGS_listen);
  std::string advertise = absl::GetFlag(FLAGS_advertise);
  if (advertise.empty() && listen.rfind("0.0.0.0:", 0) == 0) {
    return Fail(absl::InvalidArgumentError(
        "--advertise is required when --listen is 0.0.0.0"));
  }

  auto kcfg = k8s::LoadDefaultConfig(absl::GetFlag(FLAGS_kubeconfig));
  if (!kcfg.ok()) return Fail(kcfg.status());
  auto client = k8s::RestKubeClient::Create(*kcfg);
  if (!client.ok()) return Fail(client.status());

  const std::string fabric_kind = absl::GetFlag(FLAGS_fabric);
  std::unique_ptr<fabric::Fabric> fabric;
  std::string fabric_endpoint;
  if (fabric_kind == "tcp") {
    fabric::TcpFabricOptions fo;
    fo.listen = listen;
    fo.advertise = advertise;
    fo.secret = *secret;
    auto tcp = fabric::TcpFabric::Start(fo);
    if (!tcp.ok()) return Fail(tcp.status());
    fabric_endpoint = (*tcp)->endpoint();
    fabric = *std::move(tcp);
  } else if (fabric_kind == "verbs") {
    fabric::VerbsFabricOptions fo;
    fo.listen = listen;
    fo.advertise = advertise;
    fo.secret = *secret;
    auto verbs = fabric::VerbsFabric::Start(fo);
    if (!verbs.ok()) return Fail(verbs.status());
    fabric_endpoint = (*verbs)->endpoint();
    fabric = *std::move(verbs);
  } else {
    return Fail(absl::InvalidArgumentError(absl::StrCat(
        "--fabric must be tcp or verbs, not '", fabric_kind, "'")));
  }

  const std::string socket_path = absl::GetFlag(FLAGS_socket);
  AgentConfig config;
  config.node = node;
  config.state_dir = absl::GetFlag(FLAGS_state_dir);
  config.socket_path = socket_path;
  config.secret = *secret;
  config.lease_signal = absl::GetFlag(FLAGS_file_leases) ? lease_signal : 0;
  config.media_dir = absl::GetFlag(FLAGS_media_dir);
  config.migration_bytes_per_second =
      absl::GetFlag(FLAGS_migration_max_bytes_per_second);
  config.migration_streams =
      std::max(1, absl::GetFlag(FLAGS_migration_streams));
  config.migration_direct_writes = absl::GetFlag(FLAGS_migration_direct_writes);
  config.media_free_retry_max = absl::GetFlag(FLAGS_media_free_retry_max);
  if (config.media_free_retry_max < absl::Seconds(1)) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("--media-free-retry-max must be at least 1s, not ",
                     absl::FormatDuration(config.media_free_retry_max))));
  }
  fabric::AnyConnector connector;
  config.connector = &connector;
  std::unique_ptr<NodeMedia> node_media;
  if (const std::string sock = absl::GetFlag(FLAGS_plugin_socket);
      !sock.empty()) {
    node_media = NewGrpcNodeMedia(sock, absl::Minutes(10));
    config.node_media = node_media.get();
  }
  auto registry = std::make_shared<prometheus::Registry>();
  AgentMetrics agent_metrics(*registry);
  config.metrics = &agent_metrics;
  std::unique_ptr<metrics::MetricsServer> metrics_server;
  if (const std::string addr = absl::GetFlag(FLAGS_metrics_address);
      !addr.empty()) {
    auto started = metrics::MetricsServer::Start(addr, registry);
    if (!started.ok()) return Fail(started.status());
    metrics_server = *std::move(started);
    base::LogInfo("agent.metrics",
                  {{"port", absl::StrCat(metrics_server->port())}});
  }
  // The recall channel: the client reads the leader's record again whenever
  // its stream ends, so a new leader needs no restart here.
  std::unique_ptr<channel::ChannelClient> recall_channel;
  Agent* channel_agent = nullptr;  // set before the channel starts
  if (absl::GetFlag(FLAGS_channel)) {
    absl::StatusOr<channel::RecordLocation> at =
        channel::ParseRecordLocation(absl::GetFlag(FLAGS_channel_record));
    if (!at.ok()) return Fail(at.status());
    channel::ChannelClientOptions co;
    co.record = *at;
    co.token = [path = absl::GetFlag(FLAGS_channel_token_file)]()
        -> absl::StatusOr<std::string> {
      absl::StatusOr<std::string> t = sys::ReadFile(path);
      if (!t.ok()) return t.status();
      return std::string(absl::StripAsciiWhitespace(*t));
    };
    recall_channel = std::make_unique<channel::ChannelClient>(
        **client, co, [&channel_agent](const channel::pb::OperatorMessage& m) {
          channel_agent->OnChannelMessage(m);
        });
    config.channel_report =
        [c = recall_channel.get()](const channel::pb::AgentReport& r) {
          c->Report(r);
        };
  }
  Agent agent(config, **client, base::RealClock(), *fabric, fabric_endpoint);
  if (absl::Status s = agent.Start(); !s.ok()) return Fail(s);
  channel_agent = &agent;
  if (recall_channel != nullptr) {
    recall_channel->Start();
    base::LogInfo("agent.channel",
                  {{"record", absl::GetFlag(FLAGS_channel_record)}});
  }

  AgentService service(agent);
  size_t slash = socket_path.rfind('/');
  if (slash != std::string::npos && slash > 0) {
    (void)sys::MakeDirs(socket_path.substr(0, slash), 0755);
  }
  // A socket left by a killed agent: nobody else may serve here (the state
  // dir is ours), so it is stale.
  (void)sys::RemoveFile(socket_path);
  grpc::ServerBuilder builder;
  builder.AddListeningPort(absl::StrCat("unix:", socket_path),
                           grpc::InsecureServerCredentials());
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr) {
    return Fail(
        absl::UnavailableError(absl::StrCat("cannot listen on ", socket_path)));
  }
  if (chmod(socket_path.c_str(), static_cast<mode_t>(mode)) != 0) {
    return Fail(base::ErrnoStatus("chmod", socket_path, errno));
  }
  base::LogInfo(
      "agent.serving_socket",
      {{"socket", socket_path}, {"fabric", fabric_endpoint}, {"node", node}});

  while (true) {
    siginfo_t info;
    int sig = sigwaitinfo(&sigs, &info);
    if (sig < 0) continue;
    if (sig == lease_signal) {
      agent.OnLeaseBreak(info.si_fd);
      continue;
    }
    base::LogInfo("agent.stopping", {{"signal", std::to_string(sig)}});
    break;
  }
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  if (recall_channel != nullptr) recall_channel->Stop();
  agent.Stop();
  return 0;
}

}  // namespace
}  // namespace daxlease::agent

int main(int argc, char** argv) {
  daxlease::base::ParseFlags(argc, argv,
                             "daxlease-agent: the daxlease node agent");
  return daxlease::agent::Main();
}
