// daxlease-csi: the CSI plugin. Parses flags, wires the backend, mounter,
// formatter, state store and services, repairs what a previous process left
// half-done, and serves on a unix socket until SIGTERM/SIGINT.
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "csi/controller_service.h"
#include "csi/driver.h"
#include "csi/file_backend.h"
#include "csi/grpc_agent_connection.h"
#include "csi/identity_service.h"
#include "csi/logging_interceptor.h"
#include "csi/media_service.h"
#include "csi/metrics_interceptor.h"
#include "csi/ndctl_backend.h"
#include "csi/node_service.h"
#include "csi/repair.h"
#include "csi/validation.h"
#include "grpcpp/grpcpp.h"
#include "lib/base/flags.h"
#include "lib/base/log.h"
#include "lib/base/status.h"
#include "lib/base/version.h"
#include "lib/metrics/csi_operations.h"
#include "lib/metrics/metrics_server.h"
#include "lib/sys/file.h"
#include "lib/sys/lock_file.h"

ABSL_FLAG(std::string, endpoint, "",
          "CSI endpoint, unix:///absolute/path.sock (required)");
ABSL_FLAG(std::string, node_id, "", "this node's name (required)");
ABSL_FLAG(std::string, state_dir, "/var/lib/daxlease/csi",
          "directory for volume records and (file backend) volume images");
ABSL_FLAG(std::string, backend, "file",
          "volume backend: file (images + loop, no DAX) or ndctl (PMEM "
          "namespaces through libndctl, real DAX)");
ABSL_FLAG(bool, ndctl_erase_on_delete, true,
          "ndctl backend: zero a volume's namespace before freeing it (else "
          "only its info block)");
ABSL_FLAG(std::vector<std::string>, ndctl_regions, {},
          "ndctl backend: regions to use (default: every labelled pmem "
          "region)");
ABSL_FLAG(uint64_t, capacity_bytes, 0,
          "file backend: total bytes for volumes (0: the filesystem's free "
          "space is the only limit)");
ABSL_FLAG(uint64_t, copy_bytes_per_second, 0,
          "pace snapshot and clone copies to this many bytes per second "
          "(0: as fast as the media goes)");
ABSL_FLAG(int32_t, image_pool_depth, 0,
          "file backend: pre-formatted images kept ready per "
          "--image-pool-classes entry, formatted in the background; a "
          "CreateVolume of that fstype and size takes one instead of running "
          "mkfs (0: no pool)");
ABSL_FLAG(std::vector<std::string>, image_pool_classes, {"ext4:1Gi"},
          "file backend: the FSTYPE:SIZE entries the image pool keeps (SIZE "
          "in bytes or with a Mi or Gi suffix, a multiple of 2 MiB)");
ABSL_FLAG(std::vector<std::string>, allowed_roots, {"/var/lib/kubelet"},
          "staging and target paths must be below one of these directories");
ABSL_FLAG(int64_t, max_volumes_per_node, 64, "reported by NodeGetInfo");
ABSL_FLAG(std::string, metrics_address, "",
          "host:port to serve Prometheus metrics at /metrics (empty: off)");
ABSL_FLAG(std::string, fabric, "",
          "the RDMA fabric this node is on (topology daxlease.io/fabric): "
          "shared volumes are accessible from every node of it");
ABSL_FLAG(std::string, agent_socket, "",
          "the node agent's unix socket (daxlease-agent --socket), alone in "
          "its directory (pods get that directory); empty: no agent, shared "
          "volumes are plain mounts on their own node");

namespace daxlease::csi {
namespace {

// Owner and group (the kubelet's registrar and the sidecars) only.
constexpr mode_t kSocketMode = 0660;

absl::StatusOr<std::string> SocketPath(const std::string& endpoint) {
  constexpr absl::string_view kPrefix = "unix://";
  if (!absl::StartsWith(endpoint, kPrefix)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--endpoint '", endpoint, "' must be unix:///absolute/path"));
  }
  std::string path = endpoint.substr(kPrefix.size());
  if (path.empty() || path[0] != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("--endpoint '", endpoint, "' needs an absolute path"));
  }
  if (path.size() >= sizeof(sockaddr_un::sun_path)) {
    return absl::InvalidArgumentError(
        absl::StrCat("socket path too long: ", path));
  }
  return path;
}

// --image-pool-depth and --image-pool-classes.
absl::StatusOr<ImagePoolOptions> PoolOptions() {
  ImagePoolOptions o;
  o.depth = absl::GetFlag(FLAGS_image_pool_depth);
  if (o.depth < 0) {
    return absl::InvalidArgumentError("--image-pool-depth must be >= 0");
  }
  for (const std::string& entry : absl::GetFlag(FLAGS_image_pool_classes)) {
    std::vector<std::string> parts = absl::StrSplit(entry, ':');
    // Not `? parts[1] : ""`: that makes a temporary std::string the view
    // would outlive (ASan: stack-use-after-scope).
    absl::string_view size =
        parts.size() == 2 ? absl::string_view(parts[1]) : absl::string_view();
    uint64_t unit = 1;
    if (absl::ConsumeSuffix(&size, "Gi")) {
      unit = 1ull << 30;
    } else if (absl::ConsumeSuffix(&size, "Mi")) {
      unit = 1ull << 20;
    }
    uint64_t n = 0;
    ImagePoolClass c;
    c.fs_type = parts[0];
    if (parts.size() != 2 || !absl::SimpleAtoi(size, &n) ||
        (c.fs_type != "ext4" && c.fs_type != "xfs")) {
      return absl::InvalidArgumentError(
          absl::StrCat("--image-pool-classes entry '", entry,
                       "' is not FSTYPE:SIZE (ext4 or xfs; e.g. ext4:1Gi)"));
    }
    c.bytes = n * unit;
    const uint64_t min =
        c.fs_type == "xfs" ? kMinXfsVolumeBytes : kMinVolumeBytes;
    if (c.bytes % kVolumeAlignment != 0 || c.bytes < min) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--image-pool-classes entry '", entry, "': the size must be a ",
          "multiple of 2 MiB and at least ", min, " bytes"));
    }
    // What CreateVolume's own format of a fresh image would run.
    c.mkfs_args = MkfsArgs(c.fs_type, c.bytes, /*prezeroed=*/true);
    o.classes.push_back(std::move(c));
  }
  return o;
}

// Removes a stale socket; refuses when a live server answers on it.
absl::Status PrepareSocket(const std::string& path) {
  if (!sys::PathExists(path)) {
    size_t slash = path.rfind('/');
    if (slash > 0) return sys::MakeDirs(path.substr(0, slash));
    return absl::OkStatus();
  }
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0 && !S_ISSOCK(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(
        path, " exists and is not a socket; refusing to replace it"));
  }
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return base::ErrnoStatus("socket", path, errno);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  int err = errno;
  ::close(fd);
  if (rc == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "another daxlease-csi is serving on ", path, "; refusing to start"));
  }
  if (err != ECONNREFUSED && err != ENOENT) {
    return base::ErrnoStatus("connect", path, err);
  }
  base::LogInfo("csi.socket.stale_removed", {{"path", path}});
  return sys::RemoveFile(path);
}

// The agent socket's directory is bound into every shared volume's
// published directory (a pod's): it must hold nothing but that socket. Not
// there yet is fine (the agent makes it).
absl::Status CheckAgentSocketDir(const std::string& socket) {
  const size_t slash = socket.rfind('/');
  const std::string dir = slash == 0 ? "/" : socket.substr(0, slash);
  if (!sys::PathExists(dir)) return absl::OkStatus();
  ASSIGN_OR_RETURN(std::vector<std::string> entries, sys::ListDir(dir));
  for (const std::string& e : entries) {
    if (e == socket.substr(slash + 1)) continue;
    return absl::FailedPreconditionError(absl::StrCat(
        "--agent-socket ", socket, ": its directory ", dir, " also holds ", e,
        "; pods get that directory (the agent's socket in it), so it must "
        "hold the socket only (e.g. /run/daxlease/agent.sock)"));
  }
  return absl::OkStatus();
}

int Run() {
  // SIGTERM and SIGINT go to the thread that stops the server (sigwait,
  // below). Blocked here, before the first thread starts (the agent's gRPC
  // client starts gRPC's), so that every thread inherits the mask: a thread
  // with them unblocked takes the signal instead, which kills the process
  // ungracefully, or, as a container's init, is dropped (SIGKILL after the
  // grace period).
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

  const std::string endpoint = absl::GetFlag(FLAGS_endpoint);
  DriverConfig config;
  config.node_id = absl::GetFlag(FLAGS_node_id);
  config.allowed_roots = absl::GetFlag(FLAGS_allowed_roots);
  config.max_volumes_per_node = absl::GetFlag(FLAGS_max_volumes_per_node);
  config.fabric = absl::GetFlag(FLAGS_fabric);
  const std::string state_dir = absl::GetFlag(FLAGS_state_dir);
  const std::string backend_name = absl::GetFlag(FLAGS_backend);

  auto fail = [](const absl::Status& s) {
    base::LogError("csi.start.failed", {{"error", s.ToString()}});
    return 1;
  };
  if (config.node_id.empty()) {
    return fail(absl::InvalidArgumentError("--node-id is required"));
  }
  if (config.allowed_roots.empty()) {
    return fail(
        absl::InvalidArgumentError("--allowed-roots must not be empty"));
  }
  for (const std::string& r : config.allowed_roots) {
    if (r.empty() || r[0] != '/') {
      return fail(absl::InvalidArgumentError(
          absl::StrCat("--allowed-roots entry '", r, "' must be absolute")));
    }
  }
  auto socket_path = SocketPath(endpoint);
  if (!socket_path.ok()) return fail(socket_path.status());

  // One plugin per state directory, before anything in it is touched: two
  // would each repair and format the other's half-done volumes.
  if (absl::Status s = sys::MakeDirs(state_dir, 0700); !s.ok()) return fail(s);
  absl::StatusOr<sys::LockFile> lock = sys::LockFile::Acquire(state_dir);
  if (!lock.ok()) return fail(lock.status());

  // Before the backend, whose image pool uses it until it is destroyed.
  std::unique_ptr<sys::Formatter> formatter = sys::NewSystemFormatter();
  absl::StatusOr<ImagePoolOptions> pool = PoolOptions();
  if (!pool.ok()) return fail(pool.status());
  std::unique_ptr<VolumeBackend> backend;
  FileBackend* file_backend = nullptr;
  if (backend_name == "file") {
    auto fb = std::make_unique<FileBackend>(
        absl::StrCat(state_dir, "/volumes"),
        absl::GetFlag(FLAGS_capacity_bytes), sys::DefaultEnv(),
        absl::GetFlag(FLAGS_copy_bytes_per_second));
    if (absl::Status s = fb->Init(); !s.ok()) return fail(s);
    file_backend = fb.get();
    backend = std::move(fb);
  } else if (backend_name == "ndctl") {
    NdctlBackendOptions o;
    o.erase_on_delete = absl::GetFlag(FLAGS_ndctl_erase_on_delete);
    o.regions = absl::GetFlag(FLAGS_ndctl_regions);
    o.copy_marker_dir = absl::StrCat(state_dir, "/ndctl-copies");
    o.grow_marker_dir = absl::StrCat(state_dir, "/ndctl-grows");
    o.copy_bytes_per_second = absl::GetFlag(FLAGS_copy_bytes_per_second);
    auto nb = std::make_unique<NdctlBackend>(std::move(o));
    if (absl::Status s = nb->Ready(); !s.ok()) return fail(s);
    backend = std::move(nb);
  } else {
    return fail(absl::InvalidArgumentError(absl::StrCat(
        "--backend '", backend_name, "' is not known (file, ndctl)")));
  }
  StateStore store(absl::StrCat(state_dir, "/state"));
  if (absl::Status s = store.Init(); !s.ok()) return fail(s);
  std::unique_ptr<sys::Mounter> mounter =
      sys::NewSystemMounter(config.allowed_roots);
  VolumeLocks locks;
  DriverDeps deps{backend.get(), mounter.get(), formatter.get(), &store,
                  &locks};
  SnapshotStore snapshots(absl::StrCat(state_dir, "/snapshot-state"));
  if (backend->SupportsSnapshots()) {
    if (absl::Status s = snapshots.Init(); !s.ok()) return fail(s);
    deps.snapshots = &snapshots;
  }
  // The node agent: DaxVolumes, serving and publishes of shared volumes
  // (csi/agent_connection.h). Shared volumes of other nodes published here
  // are recorded apart from the local ones (no media here).
  std::unique_ptr<AgentConnection> agent;
  StateStore remote_store(absl::StrCat(state_dir, "/remote"));
  if (const std::string sock = absl::GetFlag(FLAGS_agent_socket);
      !sock.empty()) {
    if (sock[0] != '/') {
      return fail(absl::InvalidArgumentError(
          absl::StrCat("--agent-socket '", sock, "' must be absolute")));
    }
    if (absl::Status s = CheckAgentSocketDir(sock); !s.ok()) return fail(s);
    if (absl::Status s = remote_store.Init(); !s.ok()) return fail(s);
    agent = std::make_unique<GrpcAgentConnection>(
        sock, agent::NewGrpcAgentClient(sock, absl::Seconds(30)));
    deps.agent = agent.get();
    deps.remote_store = &remote_store;
  }

  if (absl::Status s = PrepareSocket(*socket_path); !s.ok()) return fail(s);
  // Repair before serving, so no call sees a half-done state.
  if (absl::Status s = RecoverVolumes(deps); !s.ok()) {
    base::LogError("csi.recover.incomplete", {{"error", s.ToString()}});
  }
  if (absl::Status s = RecoverSnapshots(deps); !s.ok()) {
    base::LogError("csi.recover.incomplete", {{"error", s.ToString()}});
  }

  IdentityService identity(backend.get());
  ControllerService controller(config, deps);
  NodeService node(config, deps);
  // The node agent's calls for a migration's media (with an agent only).
  MediaService media(config, deps);

  // After the recovery (which removed what a crash left half-made), and on
  // a thread that inherits the blocked signals.
  if (file_backend != nullptr) {
    if (absl::Status s = file_backend->StartPool(*pool, formatter.get());
        !s.ok()) {
      return fail(s);
    }
  } else if (pool->depth > 0) {
    return fail(absl::InvalidArgumentError(
        "--image-pool-depth is for the file backend only"));
  }

  auto registry = std::make_shared<prometheus::Registry>();
  metrics::CsiOperations operations(*registry, kDriverName);
  std::unique_ptr<metrics::MetricsServer> metrics_server;
  if (const std::string addr = absl::GetFlag(FLAGS_metrics_address);
      !addr.empty()) {
    auto started = metrics::MetricsServer::Start(addr, registry);
    if (!started.ok()) return fail(started.status());
    metrics_server = *std::move(started);
  }

  grpc::ServerBuilder builder;
  builder.AddListeningPort(absl::StrCat("unix:", *socket_path),
                           grpc::InsecureServerCredentials());
  builder.RegisterService(&identity);
  builder.RegisterService(&controller);
  builder.RegisterService(&node);
  if (deps.agent != nullptr) builder.RegisterService(&media);
  std::vector<
      std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
      interceptors;
  interceptors.push_back(std::make_unique<LoggingInterceptorFactory>());
  interceptors.push_back(
      std::make_unique<MetricsInterceptorFactory>(&operations));
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  // gRPC creates the socket with the process's umask: tighten it for the
  // bind (no thread creates files now), then set the mode explicitly.
  const mode_t old_umask = ::umask(0177);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ::umask(old_umask);
  if (server == nullptr) {
    return fail(
        absl::UnavailableError(absl::StrCat("cannot listen on ", endpoint)));
  }
  if (::chmod(socket_path->c_str(), kSocketMode) != 0) {
    absl::Status s = base::ErrnoStatus("chmod", *socket_path, errno);
    server->Shutdown();
    return fail(s);
  }
  base::LogInfo("csi.started",
                {{"endpoint", endpoint},
                 {"node", config.node_id},
                 {"backend", std::string(backend->Name())},
                 {"dax", backend->ProvidesDax() ? "true" : "false"},
                 {"state_dir", state_dir},
                 {"fabric", config.fabric},
                 {"agent", absl::GetFlag(FLAGS_agent_socket)},
                 {"version", base::kVersion}});

  std::thread waiter([&server, sigs] {
    int sig = 0;
    sigwait(&sigs, &sig);
    base::LogInfo("csi.stopping", {{"signal", strsignal(sig)}});
    server->Shutdown(std::chrono::system_clock::now() +
                     std::chrono::seconds(10));
  });
  server->Wait();
  waiter.join();
  // Before the formatter it uses goes.
  if (file_backend != nullptr) file_backend->StopPool();
  (void)sys::RemoveFile(*socket_path);
  base::LogInfo("csi.stopped");
  return 0;
}

}  // namespace
}  // namespace daxlease::csi

int main(int argc, char** argv) {
  daxlease::base::ParseFlags(
      argc, argv,
      "daxlease-csi --endpoint=unix:///path.sock --node-id=NAME [flags]: the "
      "daxlease CSI plugin");
  return daxlease::csi::Run();
}
