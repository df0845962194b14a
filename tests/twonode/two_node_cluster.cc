#include "tests/twonode/two_node_cluster.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "lib/base/status.h"
#include "lib/channel/sim_agent.h"
#include "node-agent/agent_client/agent_client.h"
#include "tests/integration/plugin_harness.h"
#include "tests/k8s/k8s_testing.h"

namespace daxlease::testing {
namespace {

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? "" : v;
}

std::string Kubeconfig() {
  std::string k = Env("DAXLEASE_KUBECONFIG");
  return !k.empty() && ::access(k.c_str(), R_OK) == 0 ? k : "";
}

bool HaveTool(const std::string& name) {
  for (absl::string_view dir : absl::StrSplit(
           Env("PATH").empty() ? "/usr/sbin:/usr/bin:/sbin:/bin" : Env("PATH"),
           ':')) {
    if (::access(absl::StrCat(dir, "/", name).c_str(), X_OK) == 0) return true;
  }
  return false;
}

// KEY=VALUE lines of a file (netns.env, the control plane's env).
std::string EnvFileValue(const std::string& path, const std::string& key) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (absl::StartsWith(line, key + "=")) return line.substr(key.size() + 1);
  }
  return "";
}

std::string ReadTail(const std::string& path, size_t bytes) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  return s.size() > bytes ? s.substr(s.size() - bytes) : s;
}

// Field 22 of /proc/PID/stat (start time in clock ticks): with the PID it
// names one process, not a reused PID.
std::string StartTime(pid_t pid) {
  std::string stat = ReadTail(absl::StrCat("/proc/", pid, "/stat"), 4096);
  size_t paren = stat.rfind(')');
  if (paren == std::string::npos) return "";
  std::vector<std::string> f =
      absl::StrSplit(stat.substr(paren + 2), ' ', absl::SkipEmpty());
  return f.size() > 19 ? f[19] : "";  // fields from 3 on
}

// A TCP port on the host's loopback that nothing listens on now.
absl::StatusOr<int> FreeLoopbackPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return base::ErrnoStatus("socket", "tcp", errno);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    absl::Status st = base::ErrnoStatus("bind", "127.0.0.1:0", errno);
    ::close(fd);
    return st;
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

constexpr char kAgentAccount[] = "daxlease-agent";

// `argv` run with DAXLEASE_CRASH_POINT=`crash_point` (through env(1): the
// same process, so its pid is the daemon's); `argv` itself without one.
std::vector<std::string> WithCrashPoint(const std::string& crash_point,
                                        std::vector<std::string> argv) {
  if (crash_point.empty()) return argv;
  argv.insert(argv.begin(),
              {"env", absl::StrCat("DAXLEASE_CRASH_POINT=", crash_point)});
  return argv;
}

}  // namespace

std::string AgentBinary() { return DAXLEASE_AGENT_BINARY; }
std::string IoBinary() { return DAXLEASE_IO_BINARY; }
std::string PluginBinary() { return DAXLEASE_PLUGIN_BINARY; }

std::string TwoNodePrereqMissing() {
  if (::geteuid() != 0) return "needs root (network namespaces, mounts)";
  for (const char* t : {"ip", "socat", "nsenter", "curl", "kubectl"}) {
    if (!HaveTool(t)) {
      return absl::StrCat(t, " is not installed (scripts/install-deps.sh)");
    }
  }
  if (!CanUseLoopDevices()) return "cannot create loop devices";
  if (Kubeconfig().empty()) {
    return "no control plane: DAXLEASE_KUBECONFIG unset (run through ctest, "
           "which starts tests/k8s/control-plane.sh)";
  }
  if (CsiBinary().empty()) return "daxlease-csi binary unknown";
  return "";
}

// ------------------------------------------------------------ NodeProcess

absl::StatusOr<std::unique_ptr<NodeProcess>> NodeProcess::Start(
    const std::string& netns, std::vector<std::string> argv,
    const std::string& log_path) {
  int ns_fd = -1;
  if (!netns.empty()) {
    const std::string p = absl::StrCat("/run/netns/", netns);
    ns_fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
    if (ns_fd < 0) return base::ErrnoStatus("open", p, errno);
  }
  int log_fd =
      ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) {
    if (ns_fd >= 0) ::close(ns_fd);
    return base::ErrnoStatus("open", log_path, errno);
  }
  std::vector<char*> cargv;
  for (std::string& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  const pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) return base::ErrnoStatus("fork", argv[0], errno);
  if (pid == 0) {
    // Only async-signal-safe calls from here on.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(126);
    if (ns_fd >= 0 && ::setns(ns_fd, CLONE_NEWNET) != 0) ::_exit(125);
    int null_fd = ::open("/dev/null", O_RDONLY);
    if (null_fd >= 0) ::dup2(null_fd, 0);
    ::dup2(log_fd, 1);
    ::dup2(log_fd, 2);
    ::execvp(cargv[0], cargv.data());
    ::_exit(127);
  }
  if (ns_fd >= 0) ::close(ns_fd);
  ::close(log_fd);
  // Beside the log: the pids file `netns.sh reap` kills from.
  const std::string pids = log_path.substr(0, log_path.rfind('/')) + "/pids";
  std::ofstream(pids, std::ios::app)
      << argv[0] << " " << pid << " " << StartTime(pid) << "\n";
  return std::unique_ptr<NodeProcess>(new NodeProcess(pid, log_path));
}

NodeProcess::~NodeProcess() { Kill9(); }

bool NodeProcess::running() {
  if (pid_ <= 0) return false;
  int status;
  if (::waitpid(pid_, &status, WNOHANG) == pid_) {
    pid_ = -1;
    return false;
  }
  return true;
}

absl::Status NodeProcess::Signal(int sig) {
  if (pid_ <= 0) return absl::FailedPreconditionError("not running");
  if (::kill(pid_, sig) != 0) {
    return base::ErrnoStatus("kill", absl::StrCat(pid_), errno);
  }
  return absl::OkStatus();
}

void NodeProcess::Kill9() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
}

absl::StatusOr<int> NodeProcess::Wait(absl::Duration timeout) {
  if (pid_ <= 0) return absl::FailedPreconditionError("not running");
  absl::Time end = absl::Now() + timeout;
  while (true) {
    int status;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return status;
    }
    if (absl::Now() >= end) {
      return absl::DeadlineExceededError(
          absl::StrCat("pid ", pid_, " still running"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

int NodeProcess::Terminate(absl::Duration timeout) {
  if (pid_ <= 0) return 0;
  ::kill(pid_, SIGCONT);  // a stopped process cannot handle SIGTERM
  ::kill(pid_, SIGTERM);
  absl::StatusOr<int> st = Wait(timeout);
  if (st.ok()) return *st;
  Kill9();
  return SIGKILL;  // the wait status of a process killed by SIGKILL
}

std::string NodeProcess::LogTail(size_t bytes) const {
  return ReadTail(log_path_, bytes);
}

// ---------------------------------------------------------- TwoNodeCluster

absl::StatusOr<std::unique_ptr<TwoNodeCluster>> TwoNodeCluster::Start(
    const TwoNodeOptions& options) {
  if (std::string why = TwoNodePrereqMissing(); !why.empty()) {
    return absl::FailedPreconditionError(why);
  }
  std::unique_ptr<TwoNodeCluster> c(new TwoNodeCluster());
  c->options_ = options;
  c->kubeconfig_ = Kubeconfig();
  const std::string cp_dir =
      c->kubeconfig_.substr(0, c->kubeconfig_.rfind('/'));
  c->server_ = EnvFileValue(cp_dir + "/env", "DAXLEASE_K8S_SERVER");
  if (c->server_.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("no DAXLEASE_K8S_SERVER in ", cp_dir, "/env"));
  }
  std::string templ = "/var/tmp/daxlease-twonode-XXXXXX";
  if (::mkdtemp(templ.data()) == nullptr) {
    return base::ErrnoStatus("mkdtemp", templ, errno);
  }
  c->dir_ = templ;
  // For `netns.sh reap`: what a test that died without its destructor left.
  std::ofstream(c->dir_ + "/owner.pid")
      << ::getpid() << " " << StartTime(::getpid()) << "\n";

  c->channel_ = options.channel && options.start_operator;
  std::vector<std::string> up_argv = {DAXLEASE_TWONODE_NETNS_SCRIPT, "up",
                                      c->dir_, c->server_};
  if (c->channel_) {
    ASSIGN_OR_RETURN(int port, FreeLoopbackPort());
    c->channel_address_ = absl::StrCat("127.0.0.1:", port);
    up_argv.push_back(absl::StrCat(port));
  }
  ASSIGN_OR_RETURN(sys::CommandResult up, sys::RunCommand(up_argv));
  if (up.exit_code != 0) {
    return absl::InternalError(absl::StrCat("netns.sh up: ", up.stderr_text));
  }
  const std::string env = c->dir_ + "/netns.env";
  const char* names[2] = {"node-a", "node-b"};
  const char* keys[2] = {"NODE_A", "NODE_B"};
  for (int i = 0; i < 2; ++i) {
    Node& n = c->nodes_[i];
    n.name = names[i];
    n.netns = EnvFileValue(env, absl::StrCat(keys[i], "_NETNS"));
    n.addr = EnvFileValue(env, absl::StrCat(keys[i], "_ADDR"));
    n.dir = absl::StrCat(c->dir_, "/", n.name);
    n.kubelet_dir = n.dir + "/kubelet";
    n.csi_socket = n.dir + "/csi.sock";
    // Alone in its directory: the CSI plugin binds that into pods.
    n.agent_socket = n.dir + "/run/agent.sock";
    n.agent_listen = absl::StrCat(n.addr, ":7390");
    RETURN_IF_ERROR(MakeDirs(n.kubelet_dir));
  }
  // The agents' shared secret (any bytes, the same file on every node).
  {
    std::ofstream secret(c->dir_ + "/agent-secret");
    secret << "twonode-" << c->dir_ << "-" << ::getpid();
  }

  ASSIGN_OR_RETURN(
      sys::CommandResult crds,
      c->Kubectl({"apply", "-f",
                  absl::StrCat(DAXLEASE_SOURCE_DIR, "/manifests/crd/")}));
  if (crds.exit_code != 0) {
    return absl::InternalError(
        absl::StrCat("kubectl apply CRDs: ", crds.stderr_text));
  }
  ASSIGN_OR_RETURN(
      sys::CommandResult est,
      c->Kubectl({"wait", "--for", "condition=established", "--timeout=60s",
                  "crd/daxvolumes.daxlease.io", "crd/daxleases.daxlease.io",
                  "crd/daxrecalls.daxlease.io"}));
  if (est.exit_code != 0) {
    return absl::InternalError(absl::StrCat("kubectl wait: ", est.stderr_text));
  }
  if (c->channel_) {
    // Each agent's credential: a token of the agents' service account for
    // the operator's audience, bound to a Pod on its node (what the kubelet
    // projects into the chart's agent pods; valid for an hour).
    ASSIGN_OR_RETURN(std::unique_ptr<k8s::RestKubeClient> kube,
                     k8s::testing::NewClient(c->kubeconfig_));
    ASSIGN_OR_RETURN(c->channel_ns_,
                     k8s::testing::CreateTestNamespace(*kube, "twonode-"));
    for (const Node& n : c->nodes_) {
      ASSIGN_OR_RETURN(
          std::string token,
          channel::MintAgentToken(*kube, c->channel_ns_, kAgentAccount,
                                  absl::StrCat("agent-", n.name), n.name));
      std::ofstream(n.dir + "/channel-token") << token << "\n";
    }
  }
  if (options.start_agents) {
    for (Node& n : c->nodes_) RETURN_IF_ERROR(c->StartAgent(n));
  }
  for (Node& n : c->nodes_) RETURN_IF_ERROR(c->StartCsi(n));
  if (options.start_operator) {
    c->lease_name_ =
        absl::StrCat("daxlease-twonode-", c->dir_.substr(c->dir_.size() - 6));
    for (char& ch : c->lease_name_) ch = std::tolower(ch);
    RETURN_IF_ERROR(c->RestartOperator());
    c->watch_ = std::thread([cl = c.get()] { cl->WatchOperator(); });
  }
  return c;
}

absl::Status TwoNodeCluster::StartCsi(Node& n) {
  std::vector<std::string> argv = {
      CsiBinary(),
      absl::StrCat("--endpoint=unix://", n.csi_socket),
      absl::StrCat("--node-id=", n.name),
      absl::StrCat("--state-dir=", n.dir, "/csi"),
      "--backend=file",
      absl::StrCat("--allowed-roots=", n.kubelet_dir),
      absl::StrCat("--fabric=", options_.fabric)};
  if (n.agent != nullptr) {
    argv.push_back(absl::StrCat("--agent-socket=", n.agent_socket));
  }
  ASSIGN_OR_RETURN(n.csi,
                   NodeProcess::Start(n.netns, argv, n.dir + "/csi.log"));
  absl::Status ready =
      WaitForProbe(n.csi_socket, absl::Seconds(30), n.csi->pid());
  if (!ready.ok()) {
    return absl::Status(ready.code(),
                        absl::StrCat(n.name, " daxlease-csi: ", ready.message(),
                                     "\n", n.csi->LogTail()));
  }
  n.csi_channel = Connect(n.csi_socket);
  return absl::OkStatus();
}

absl::Status TwoNodeCluster::StartAgent(Node& n,
                                        const std::string& crash_point) {
  std::vector<std::string> argv = {
      AgentBinary(),
      absl::StrCat("--node-id=", n.name),
      absl::StrCat("--kubeconfig=", kubeconfig_),
      absl::StrCat("--socket=", n.agent_socket),
      absl::StrCat("--state-dir=", n.dir, "/agent"),
      absl::StrCat("--listen=", n.agent_listen),
      absl::StrCat("--secret-file=", dir_, "/agent-secret")};
  if (channel_) {
    argv.push_back("--channel");
    argv.push_back(absl::StrCat("--channel-record=", channel_ns_, "/channel"));
    argv.push_back(
        absl::StrCat("--channel-token-file=", n.dir, "/channel-token"));
  }
  argv.insert(argv.end(), options_.agent_args.begin(),
              options_.agent_args.end());
  argv = WithCrashPoint(crash_point, std::move(argv));
  ASSIGN_OR_RETURN(n.agent,
                   NodeProcess::Start(n.netns, argv, n.dir + "/agent.log"));
  // Ready when it answers on its socket (it has read the API objects).
  std::unique_ptr<agent::AgentClient> probe =
      agent::NewGrpcAgentClient(n.agent_socket, absl::Seconds(2));
  const absl::Time end = absl::Now() + absl::Seconds(60);
  absl::Status last;
  while (absl::Now() < end) {
    if (!n.agent->running()) {
      return absl::InternalError(absl::StrCat(
          n.name, " daxlease-agent exited:\n", n.agent->LogTail()));
    }
    last = probe->Status().status();
    if (last.ok()) return absl::OkStatus();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return absl::DeadlineExceededError(
      absl::StrCat(n.name, " daxlease-agent does not answer: ", last.ToString(),
                   "\n", n.agent->LogTail()));
}

absl::Status TwoNodeCluster::RestartAgent(Node& n, int sig,
                                          const std::string& crash_point) {
  if (n.agent != nullptr) {
    if (sig == SIGKILL) {
      n.agent->Kill9();
    } else {
      n.agent->Terminate();
    }
  }
  return StartAgent(n, crash_point);
}

absl::Status TwoNodeCluster::RestartCsi(Node& n, int sig) {
  if (n.csi != nullptr) {
    if (sig == SIGKILL) {
      n.csi->Kill9();
    } else {
      n.csi->Terminate();
    }
  }
  return StartCsi(n);
}

absl::Status TwoNodeCluster::RestartOperator(int sig,
                                             const std::string& crash_point) {
  absl::MutexLock l(&op_mu_);
  if (operator_ != nullptr) {
    if (sig == SIGKILL) {
      operator_->Kill9();
    } else {
      operator_->Terminate();
    }
  }
  return StartOperatorLocked(crash_point);
}

absl::Status TwoNodeCluster::StartOperatorLocked(
    const std::string& crash_point) {
  std::vector<std::string> argv = {
      DAXLEASE_OPERATOR_BINARY, absl::StrCat("--kubeconfig=", kubeconfig_),
      absl::StrCat("--leader-election-name=", lease_name_),
      // One identity for every operator this cluster starts: a restarted
      // one renews its predecessor's lease at once instead of waiting it
      // out, so the lease can be long enough that a loaded machine does not
      // miss a renewal (2 s was missed under load: the operator then exits).
      absl::StrCat("--identity=", lease_name_),
      "--leader-election-lease-duration=20s",
      "--leader-election-renew-deadline=15s",
      "--leader-election-retry-period=1s"};
  if (channel_) {
    // The same port for every operator this cluster starts: the nodes'
    // bridges (netns.sh) forward to it.
    argv.push_back(absl::StrCat("--channel-address=", channel_address_));
    argv.push_back(absl::StrCat("--channel-advertise=", channel_address_));
    argv.push_back(absl::StrCat("--channel-record=", channel_ns_, "/channel"));
    argv.push_back(absl::StrCat("--channel-agent-service-account=", channel_ns_,
                                ":", kAgentAccount));
  }
  argv.insert(argv.end(), options_.operator_args.begin(),
              options_.operator_args.end());
  argv = WithCrashPoint(crash_point, std::move(argv));
  ASSIGN_OR_RETURN(operator_,
                   NodeProcess::Start("", argv, dir_ + "/operator.log"));
  return absl::OkStatus();
}

void TwoNodeCluster::WatchOperator() {
  absl::MutexLock l(&op_mu_);
  while (!op_mu_.AwaitWithTimeout(absl::Condition(&stopped_),
                                  absl::Milliseconds(200))) {
    if (operator_ == nullptr || operator_->running()) continue;
    std::ofstream(dir_ + "/operator.log", std::ios::app)
        << "--- twonode harness: the operator exited by itself; restarting\n";
    ++operator_restarts_;
    if (absl::Status s = StartOperatorLocked(); !s.ok()) {
      std::ofstream(dir_ + "/operator.log", std::ios::app)
          << "--- twonode harness: restart failed: " << s << "\n";
    }
  }
}

int TwoNodeCluster::operator_restarts() const {
  absl::MutexLock l(&op_mu_);
  return operator_restarts_;
}

absl::Status TwoNodeCluster::EnsureHealthy() {
  for (Node& n : nodes_) {
    if (options_.start_agents && (n.agent == nullptr || !n.agent->running())) {
      RETURN_IF_ERROR(StartAgent(n));
    }
    const bool answers =
        n.csi != nullptr && n.csi->running() &&
        WaitForProbe(n.csi_socket, absl::Seconds(5), n.csi->pid()).ok();
    if (!answers) RETURN_IF_ERROR(RestartCsi(n));
  }
  if (options_.start_operator) {
    absl::MutexLock l(&op_mu_);
    if (operator_ == nullptr || !operator_->running()) {
      RETURN_IF_ERROR(StartOperatorLocked());
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<sys::CommandResult> TwoNodeCluster::RunIn(
    const Node& node, std::vector<std::string> argv) {
  argv.insert(argv.begin(),
              {"nsenter", absl::StrCat("--net=/run/netns/", node.netns)});
  return sys::RunCommand(argv);
}

absl::StatusOr<sys::CommandResult> TwoNodeCluster::Kubectl(
    std::vector<std::string> args) {
  args.insert(args.begin(), {"kubectl", "--kubeconfig", kubeconfig_});
  return sys::RunCommand(args);
}

std::string TwoNodeCluster::Logs() const {
  std::string out;
  for (const Node& n : nodes_) {
    absl::StrAppend(&out, "--- ", n.name, " daxlease-csi (", n.dir,
                    "/csi.log)\n", ReadTail(n.dir + "/csi.log", 3000));
    absl::StrAppend(&out, "--- ", n.name, " daxlease-agent (", n.dir,
                    "/agent.log)\n", ReadTail(n.dir + "/agent.log", 3000));
  }
  absl::StrAppend(&out, "--- operator\n",
                  ReadTail(dir_ + "/operator.log", 3000));
  return out;
}

absl::StatusOr<std::vector<std::string>> TwoNodeCluster::Stop() {
  {
    absl::MutexLock l(&op_mu_);
    if (stopped_) return std::vector<std::string>();
    stopped_ = true;
  }
  if (watch_.joinable()) watch_.join();
  {
    absl::MutexLock l(&op_mu_);
    if (operator_ != nullptr) operator_->Terminate();
  }
  for (Node& n : nodes_) {
    n.csi_channel.reset();
    if (n.csi != nullptr) n.csi->Terminate();
    if (n.agent != nullptr) n.agent->Terminate();
  }
  std::vector<std::string> forced = ForceCleanup({dir_}, dir_);
  absl::StatusOr<sys::CommandResult> down =
      sys::RunCommand({DAXLEASE_TWONODE_NETNS_SCRIPT, "down", dir_});
  for (const Node& n : nodes_) {
    if (!n.netns.empty() &&
        ::access(absl::StrCat("/run/netns/", n.netns).c_str(), F_OK) == 0) {
      forced.push_back(absl::StrCat("netns ", n.netns));
    }
  }
  if (!down.ok()) return down.status();
  if (down->exit_code != 0) {
    return absl::InternalError(
        absl::StrCat("netns.sh down: ", down->stderr_text));
  }
  return forced;
}

TwoNodeCluster::~TwoNodeCluster() {
  (void)Stop();
  if (!dir_.empty() && Env("DAXLEASE_KEEP_TWONODE").empty()) {
    sys::RunCommand({"rm", "-rf", "--one-file-system", dir_}).IgnoreError();
  }
}

}  // namespace daxlease::testing
