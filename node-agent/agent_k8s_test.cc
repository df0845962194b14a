// Real processes on this host against the test kube-apiserver (label k8s,
// root): the operator, two daxlease-agent processes (node a owns the volume,
// node b holds it) on loopback TCP, a volume file on a loop-mounted ext4, and
// daxlease-io writing remotely. Recalls are DaxRecalls the real operator
// runs.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "daxlease.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/api/label_value.h"
#include "lib/channel/sim_agent.h"
#include "lib/sys/command.h"
#include "lib/sys/file.h"
#include "node-agent/agent/agent.h"
#include "node-agent/agent_client/agent_client.h"
#include "node-agent/fabric/tcp_fabric.h"
#include "node-agent/fabric/wire.h"
#include "proto/agent.pb.h"
#include "tests/k8s/daxlease_fixture.h"
#include "tests/k8s/k8s_testing.h"
#include "tests/testing/prereq.h"

namespace daxlease::agent {
namespace {

using k8s::testing::WaitFor;

constexpr char kAgentAccount[] = "daxlease-agent";

// A child process with its output in a log file; SIGKILLed and reaped on
// destruction.
class Child {
 public:
  Child(std::vector<std::string> argv, const std::string& log) : log_(log) {
    pid_ = fork();
    if (pid_ == 0) {
      int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
      }
      std::vector<char*> c;
      for (auto& a : argv) c.push_back(a.data());
      c.push_back(nullptr);
      execv(c[0], c.data());
      _exit(127);
    }
  }
  ~Child() { Kill(SIGKILL); }
  pid_t pid() const { return pid_; }  // -1 once reaped
  void Signal(int sig) {
    if (pid_ > 0) kill(pid_, sig);
  }
  void Kill(int sig) {
    if (pid_ <= 0) return;
    kill(pid_, sig);
    int st;
    waitpid(pid_, &st, 0);
    pid_ = -1;
  }
  // Whether the process has exited (reaped) or was never started.
  bool Exited() {
    if (pid_ <= 0) return true;
    int st;
    if (waitpid(pid_, &st, WNOHANG) != pid_) return false;
    pid_ = -1;
    return true;
  }
  // Exit code once exited (-1 while running or killed by a signal).
  int Wait(absl::Duration timeout) {
    absl::Time end = absl::Now() + timeout;
    while (pid_ > 0 && absl::Now() < end) {
      int st;
      if (waitpid(pid_, &st, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
    return -1;
  }
  std::string Log() const {
    std::ifstream in(log_);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

 private:
  pid_t pid_ = -1;
  std::string log_;
};

int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

class AgentK8sTest : public k8s::testing::DaxleaseK8sTest {
 protected:
  AgentK8sTest() : DaxleaseK8sTest(/*name_chars=*/24) {}

  void SetUp() override {
    DAXLEASE_REQUIRE(testing::IsRoot(), "needs root for the loop mount");
    DaxleaseK8sTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    char tmpl[] = "/tmp/agent_k8s_test.XXXXXX";
    dir_ = mkdtemp(tmpl);
    mnt_ = dir_ + "/mnt";
    mkdir(mnt_.c_str(), 0755);
    ASSERT_TRUE(
        sys::RunCommandOk({"truncate", "-s", "64M", dir_ + "/img"}).ok());
    ASSERT_TRUE(
        sys::RunCommandOk({"mkfs.ext4", "-q", "-F", dir_ + "/img"}).ok());
    ASSERT_TRUE(
        sys::RunCommandOk({"mount", "-o", "loop", dir_ + "/img", mnt_}).ok());
    mounted_ = true;
    std::ofstream(dir_ + "/secret") << "agent-k8s-test-secret-" << getpid();
    port_a_ = FreePort();
    port_b_ = FreePort();
    if (channel_) {
      // Each agent presents its pod's token for the operator's audience,
      // as the chart's projected volume gives it.
      auto ns = k8s::testing::CreateTestNamespace(*client_, "agch-");
      ASSERT_TRUE(ns.ok()) << ns.status();
      channel_ns_ = *ns;
      for (char n : {'a', 'b'}) {
        auto token = channel::MintAgentToken(
            *client_, channel_ns_, kAgentAccount, "agent-" + Node(n), Node(n));
        ASSERT_TRUE(token.ok()) << token.status();
        std::ofstream(TokenFile(n)) << *token << "\n";
      }
    }
    // The operator runs as its Deployment would: restarted whenever it
    // exits (it exits when it loses leadership, e.g. when starved of CPU
    // past its renew deadline on a loaded machine).
    StartOperator();
    supervisor_ = std::thread([this] {
      while (!stopping_.load()) {
        {
          std::lock_guard<std::mutex> l(operator_mu_);
          if (operator_->Exited()) {
            ++operator_starts_;
            StartOperator();
          }
        }
        absl::SleepFor(absl::Milliseconds(100));
      }
    });
    StartAgent('a');
    StartAgent('b');
    ASSERT_TRUE(WaitFor(
        [&] {
          return NewGrpcAgentClient(Socket('a'), absl::Seconds(1))
                     ->Status()
                     .ok() &&
                 NewGrpcAgentClient(Socket('b'), absl::Seconds(1))
                     ->Status()
                     .ok();
        },
        absl::Seconds(30)));
  }

  void TearDown() override {
    agents_.clear();
    stopping_.store(true);
    if (supervisor_.joinable()) supervisor_.join();
    operator_.reset();
    DaxleaseK8sTest::TearDown();
    if (mounted_) umount2(mnt_.c_str(), MNT_DETACH);
    if (!dir_.empty()) {
      std::string cmd = "rm -rf " + dir_;
      (void)!system(cmd.c_str());
    }
  }

  void StartOperator() {
    operator_ = std::make_unique<Child>(OperatorArgs(), dir_ + "/operator.log");
  }
  std::vector<std::string> OperatorArgs() {
    std::vector<std::string> args = {DAXLEASE_OPERATOR_BIN,
                                     "--kubeconfig=" + kubeconfig_,
                                     "--leader-election-name=" + prefix_,
                                     "--identity=" + prefix_,
                                     "--leader-election-lease-duration=3s",
                                     "--leader-election-renew-deadline=2s",
                                     "--leader-election-retry-period=250ms",
                                     "--resync=2s"};
    if (channel_) {
      args.push_back("--channel-address=127.0.0.1:0");
      args.push_back(
          absl::StrCat("--channel-record=", channel_ns_, "/channel"));
      args.push_back(absl::StrCat(
          "--channel-agent-service-account=", channel_ns_, ":", kAgentAccount));
    }
    return args;
  }
  // kill -9 of the operator; the supervisor starts another.
  void KillOperator() {
    std::lock_guard<std::mutex> l(operator_mu_);
    operator_->Kill(SIGKILL);
  }

  std::string Node(char n) {
    return absl::StrCat(prefix_, "-node-", std::string(1, n));
  }
  std::string TokenFile(char n) {
    return absl::StrCat(dir_, "/token-", std::string(1, n));
  }
  std::string Socket(char n) {
    return absl::StrCat(dir_, "/agent-", std::string(1, n), ".sock");
  }
  int Port(char n) { return n == 'a' ? port_a_ : port_b_; }

  // With `crash_point`, the agent kills itself there
  // (lib/base/crash_point.h); the test starts it again.
  void StartAgent(char n, const std::string& crash_point = "") {
    std::string addr = absl::StrCat("127.0.0.1:", Port(n));
    std::vector<std::string> args = {
        DAXLEASE_AGENT_BIN,
        "--node-id=" + Node(n),
        "--kubeconfig=" + kubeconfig_,
        "--socket=" + Socket(n),
        "--state-dir=" + dir_ + "/state-" + std::string(1, n),
        "--listen=" + addr,
        "--secret-file=" + dir_ + "/secret",
        "--metrics-address=127.0.0.1:0"};
    if (channel_) {
      args.push_back("--channel");
      args.push_back(
          absl::StrCat("--channel-record=", channel_ns_, "/channel"));
      args.push_back("--channel-token-file=" + TokenFile(n));
    }
    if (!crash_point.empty()) {
      args.insert(args.begin(),
                  {"/usr/bin/env", "DAXLEASE_CRASH_POINT=" + crash_point});
    }
    agents_[n] = std::make_unique<Child>(
        args, absl::StrCat(dir_, "/agent-", std::string(1, n), ".log"));
  }
  // A sample from agent n's /metrics (-1: absent or not serving yet).
  double AgentMetric(char n, const std::string& series) {
    int port =
        k8s::testing::LoggedMetricsPort(agents_[n]->Log(), "agent.metrics");
    if (port <= 0) return -1;
    auto text = k8s::testing::ScrapeMetrics(port);
    return text.ok() ? k8s::testing::MetricValue(*text, series) : -1;
  }
  void RestartAgent(char n, const std::string& crash_point = "") {
    agents_[n]->Kill(SIGKILL);
    StartAgent(n, crash_point);
  }

  // Records and serves the volume on a; publishes it to a pod on b.
  std::string SetUpVolume(int grace_seconds = 3, std::string name = "") {
    vol_ = name.empty() ? prefix_ + "-vol" : std::move(name);
    auto a = NewGrpcAgentClient(Socket('a'));
    pb::RecordVolumeRequest rec;
    rec.set_volume_id(vol_);
    rec.set_size_bytes(32 << 20);
    rec.set_mode(pb::FSDAX);
    rec.set_fs_type("ext4");
    rec.set_share(true);
    rec.set_recall_grace_seconds(grace_seconds);
    EXPECT_TRUE(a->RecordVolume(rec).ok());
    pb::ServeVolumeRequest serve;
    serve.set_volume_id(vol_);
    serve.set_mode(pb::FSDAX);
    serve.set_mount_path(mnt_);
    serve.set_size_bytes(8 << 20);
    auto served = a->ServeVolume(serve);
    EXPECT_TRUE(served.ok()) << served.status();
    data_path_ = served->data_path();
    return Publish('b', "pod");
  }

  // Attaches to the published directory `dir` as the pod's program would
  // (granted within 60 s); nullptr, the failure recorded, when it cannot.
  daxlease_volume* Attach(const std::string& dir) {
    daxlease_attach_opts o = DAXLEASE_ATTACH_OPTS_INIT;
    o.timeout_ms = 60000;
    daxlease_volume* v = nullptr;
    const int rc = daxlease_attach(dir.c_str(), &o, &v);
    EXPECT_EQ(rc, DAXLEASE_OK) << daxlease_errmsg();
    return rc == DAXLEASE_OK ? v : nullptr;
  }

  // Publishes the volume to a pod on node `n` and lays out the directory
  // the pod would see (descriptor, agent socket; the owner: volume/).
  std::string Publish(char n, const std::string& pod) {
    const bool owner_local = n == 'a';
    std::string target =
        absl::StrCat(dir_, "/pub-", std::string(1, n), "-", pod);
    mkdir(target.c_str(), 0755);
    pb::PublishRequest p;
    p.set_volume_id(vol_);
    p.set_target_path(target);
    p.set_pod_namespace("default");
    p.set_pod_name(absl::StrCat(prefix_, "-", pod));
    p.set_pod_uid(absl::StrCat("uid-", prefix_, "-", pod));
    p.set_owner_local(owner_local);
    auto r = NewGrpcAgentClient(Socket(n))->Publish(p);
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return target;
    std::ofstream(target + "/daxlease.json") << r->descriptor_json();
    EXPECT_EQ(symlink(Socket(n).c_str(), (target + "/agent.sock").c_str()), 0);
    if (owner_local) {
      EXPECT_EQ(symlink(mnt_.c_str(), (target + "/volume").c_str()), 0);
    }
    return target;
  }

  std::string CreateRecall(int grace) {
    k8s::Json r = {
        {"apiVersion", api::kApiVersion},
        {"kind", "DaxRecall"},
        {"metadata", {{"generateName", vol_ + "-"}}},
        {"spec",
         {{"volume", vol_}, {"reason", "Manual"}, {"graceSeconds", grace}}}};
    auto c = client_->Create(DaxRecallResource(), r);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? k8s::NameOf(*c) : "";
  }
  k8s::Json RecallStatus(const std::string& name) {
    auto r = client_->Get(DaxRecallResource(), "", name);
    return r.ok() ? r->value("status", k8s::Json::object())
                  : k8s::Json::object();
  }
  // Waits (up to `timeout`) for the recall `name` to be Complete; on
  // timeout the failure names the phase it was in and its status.
  ::testing::AssertionResult WaitRecallComplete(
      const std::string& name, absl::Duration timeout = absl::Seconds(60)) {
    if (WaitFor(
            [&] { return RecallStatus(name).value("phase", "") == "Complete"; },
            timeout)) {
      return ::testing::AssertionSuccess();
    }
    const k8s::Json status = RecallStatus(name);
    return ::testing::AssertionFailure()
           << "recall " << name << " not Complete after " << timeout
           << ": phase \"" << status.value("phase", "") << "\", status "
           << status.dump();
  }
  // The volume's recalls and leases, and the ends of the operator's and the
  // agents' logs, for failures.
  std::string Dump() {
    auto tail = [](const std::string& log) {
      return log.size() <= 12000 ? log : log.substr(log.size() - 12000);
    };
    std::string out;
    for (const k8s::Resource& r : {DaxRecallResource(), DaxLeaseResource()}) {
      auto list = k8s::ListAll(*client_, r, "");
      if (!list.ok()) continue;
      for (const k8s::Json& o : list->items) {
        if (o.value("spec", k8s::Json::object()).value("volume", "") != vol_) {
          continue;
        }
        absl::StrAppend(&out, k8s::NameOf(o), " ",
                        o.value("spec", k8s::Json::object()).dump(), " ",
                        o.value("status", k8s::Json::object()).dump(), "\n");
      }
    }
    {
      std::lock_guard<std::mutex> l(operator_mu_);
      absl::StrAppend(&out, "--- operator (started ", operator_starts_,
                      " times)\n", tail(operator_->Log()));
    }
    for (const auto& [n, a] : agents_) {
      absl::StrAppend(&out, "--- agent ", std::string(1, n), "\n",
                      tail(a->Log()));
    }
    return out;
  }
  // [off, off + len) of the volume's data file as the owner's agent maps it
  // (zeros past what it maps). Read through the agent's mapping
  // (/proc/PID/mem), not by opening the file: any other open breaks the
  // agent's F_WRLCK file lease, and the agent answers a break with an Evict
  // recall and, once that is done, drops and remaps the volume, which would
  // change what the test measures. Only when agent a maps nothing (stopped,
  // or not serving: then it holds no lease) is the file read.
  std::string FileBytes(uint64_t off, size_t len) {
    std::string s(len, '\0');
    const pid_t pid = agents_.contains('a') ? agents_['a']->pid() : -1;
    std::optional<Mapping> m;
    if (pid > 0) m = MappingOf(pid, data_path_, off);
    if (!m.has_value()) {
      std::ifstream in(data_path_, std::ios::binary);
      in.seekg(static_cast<std::streamoff>(off));
      in.read(s.data(), static_cast<std::streamsize>(len));
      return s;
    }
    const int fd =
        open(absl::StrCat("/proc/", pid, "/mem").c_str(), O_RDONLY | O_CLOEXEC);
    EXPECT_GE(fd, 0) << "open /proc/" << pid << "/mem: " << strerror(errno);
    if (fd < 0) return s;
    const uint64_t mapped_end = m->file_offset + (m->end - m->start);
    const size_t want = static_cast<size_t>(
        std::min<uint64_t>(len, mapped_end > off ? mapped_end - off : 0));
    size_t done = 0;
    while (done < want) {
      const ssize_t n =
          pread(fd, s.data() + done, want - done,
                static_cast<off_t>(m->start + (off - m->file_offset) + done));
      if (n <= 0) {
        ADD_FAILURE() << "read of agent a's mapping of " << data_path_ << " at "
                      << off + done << ": "
                      << (n == 0 ? "end" : strerror(errno));
        break;
      }
      done += static_cast<size_t>(n);
    }
    close(fd);
    return s;
  }
  // One line of /proc/PID/maps.
  struct Mapping {
    uint64_t start = 0, end = 0, file_offset = 0;
  };
  // The longest mapping of `path` in `pid` that holds file offset `off`.
  static std::optional<Mapping> MappingOf(pid_t pid, const std::string& path,
                                          uint64_t off) {
    std::ifstream maps(absl::StrCat("/proc/", pid, "/maps"));
    std::optional<Mapping> best;
    for (std::string line; std::getline(maps, line);) {
      // start-end perms offset dev inode path
      std::vector<std::string> f =
          absl::StrSplit(line, ' ', absl::SkipWhitespace());
      if (f.size() < 6 || f[5] != path) continue;
      Mapping m;
      std::vector<std::string> range = absl::StrSplit(f[0], '-');
      if (range.size() != 2 || !absl::SimpleHexAtoi(range[0], &m.start) ||
          !absl::SimpleHexAtoi(range[1], &m.end) ||
          !absl::SimpleHexAtoi(f[2], &m.file_offset)) {
        continue;
      }
      if (off < m.file_offset || off >= m.file_offset + (m.end - m.start)) {
        continue;
      }
      if (!best.has_value() || m.end - m.start > best->end - best->start) {
        best = m;
      }
    }
    return best;
  }

  std::string dir_, mnt_, vol_, data_path_;
  // Set by a subclass's constructor: the operator serves the recall channel
  // and the agents answer on it (tokens of pods in channel_ns_).
  bool channel_ = false;
  std::string channel_ns_;
  bool mounted_ = false;
  int port_a_ = 0, port_b_ = 0;
  std::mutex operator_mu_;
  std::unique_ptr<Child> operator_;  // guarded by operator_mu_
  int operator_starts_ = 1;          // guarded by operator_mu_
  std::atomic<bool> stopping_{false};
  std::thread supervisor_;
  std::map<char, std::unique_ptr<Child>> agents_;
};

// daxlease-io on b is stopped (SIGSTOP) during a recall: it is revoked at
// the deadline, the owner fences it, nothing it sends after the fence lands,
// and once continued it reports the revocation and exits, alive until then.
TEST_F(AgentK8sTest, StoppedHolderIsRevokedFencedAndToldOnContinue) {
  std::string target = SetUpVolume();
  Child io({DAXLEASE_IO_BIN, "pattern", target, "4096", "120"},
           dir_ + "/io.log");
  ASSERT_TRUE(WaitFor(
      [&] { return io.Log().find("persisted seq=20 ") != std::string::npos; },
      absl::Seconds(60)))
      << io.Log();
  io.Signal(SIGSTOP);
  std::string r = CreateRecall(2);
  ASSERT_TRUE(WaitRecallComplete(r));
  EXPECT_EQ(RecallStatus(r).value("revoked", 0), 1);
  auto leases = k8s::ListAll(*client_, DaxLeaseResource(), "");
  ASSERT_TRUE(leases.ok());
  bool fenced = false;
  for (const auto& l : leases->items) {
    if (l.value("spec", k8s::Json::object()).value("volume", "") != vol_)
      continue;
    fenced |=
        l.value("status", k8s::Json::object()).value("fencedRecallID", "") ==
        RecallStatus(r).value("recallID", "");
  }
  EXPECT_TRUE(fenced);
  // The owner's /metrics: one volume of 32 MiB mapped, the fence counted
  // (after its patch returned); the holder's: one publish, one session.
  EXPECT_TRUE(WaitFor(
      [&] { return AgentMetric('a', "daxlease_agent_fences_total") >= 1; },
      absl::Seconds(10)));
  EXPECT_EQ(AgentMetric('a', "daxlease_agent_mapped_volumes"), 1);
  EXPECT_GT(AgentMetric('a', "daxlease_agent_mapped_bytes"), 0);
  EXPECT_LE(AgentMetric('a', "daxlease_agent_mapped_bytes"), 32 << 20);
  EXPECT_EQ(AgentMetric('b', "daxlease_agent_publishes"), 1);
  EXPECT_EQ(AgentMetric('b', "daxlease_agent_sessions"), 1);
  EXPECT_EQ(AgentMetric('b', "daxlease_agent_fences_total"), 0);
  std::string after_fence = FileBytes(0, 8 << 20);
  io.Signal(SIGCONT);
  EXPECT_EQ(io.Wait(absl::Seconds(30)), 3) << io.Log();
  EXPECT_NE(io.Log().find("revoked seq="), std::string::npos) << io.Log();
  EXPECT_EQ(FileBytes(0, 8 << 20), after_fence);
}

// Blocks of a checksummed pattern: every block says which writer wrote it,
// where, in which sequence, and carries an FNV-1a of the rest, so a torn,
// misplaced or stale block is told from the one the writer last persisted.
constexpr size_t kBlock = 4096;

uint64_t Fnv(const char* p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) {
    h ^= static_cast<unsigned char>(p[i]);
    h *= 1099511628211ull;
  }
  return h;
}

std::string PatternBlock(uint32_t writer, uint64_t index, uint64_t seq) {
  std::string b(kBlock, '\0');
  uint64_t x = seq * 0x9e3779b97f4a7c15ull ^ index ^ (uint64_t{writer} << 56);
  for (size_t i = 24; i + 8 <= kBlock - 8; i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    memcpy(&b[i], &x, 8);
  }
  uint64_t head[3] = {0xDA7A1EA5E0000000ull | writer, index, seq};
  memcpy(&b[0], head, sizeof(head));
  uint64_t sum = Fnv(b.data(), kBlock - 8);
  memcpy(&b[kBlock - 8], &sum, 8);
  return b;
}

// A client writing (and persisting, and reading back) a pattern over blocks
// [first, first + count) of a volume, continuously, on its own thread.
class PatternWriter {
 public:
  PatternWriter(daxlease_volume* vol, uint32_t id, uint64_t first,
                uint64_t count)
      : vol_(vol), id_(id), first_(first), count_(count) {
    thread_ = std::thread([this] { Run(); });
  }
  ~PatternWriter() { Stop(); }
  void Stop() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
  }
  uint64_t persisted() const { return persisted_.load(); }
  // Blocks persisted at each epoch (the persist's, never 0).
  std::map<int64_t, uint64_t> by_epoch() {
    std::lock_guard<std::mutex> l(mu_);
    return by_epoch_;
  }
  std::vector<std::string> errors() {
    std::lock_guard<std::mutex> l(mu_);
    return errors_;
  }
  int64_t max_epoch() {
    std::lock_guard<std::mutex> l(mu_);
    return by_epoch_.empty() ? 0 : by_epoch_.rbegin()->first;
  }
  // What each block must hold (after Stop).
  const std::map<uint64_t, std::string>& expect() const { return expect_; }
  // Waits until `n` more blocks than now are persisted at an epoch above
  // `epoch`.
  bool ProgressAfter(int64_t epoch, uint64_t n, absl::Duration timeout) {
    return WaitFor([&] { return max_epoch() > epoch; }, timeout) &&
           Progress(n, timeout);
  }
  // Waits until `n` more blocks than now are persisted.
  bool Progress(uint64_t n, absl::Duration timeout) {
    uint64_t from = persisted();
    return WaitFor([&] { return persisted() >= from + n; }, timeout);
  }

 private:
  void Fail(const std::string& what, int rc) {
    std::lock_guard<std::mutex> l(mu_);
    errors_.push_back(absl::StrCat(what, ": ", daxlease_strerror(rc), ": ",
                                   daxlease_errmsg()));
  }
  void Run() {
    std::string back(kBlock, '\0');
    for (uint64_t seq = 1; !stop_.load(); ++seq) {
      const uint64_t index = first_ + seq % count_;
      const std::string b = PatternBlock(id_, index, seq);
      int rc = daxlease_write(vol_, index * kBlock, b.data(), kBlock);
      if (rc != DAXLEASE_OK) {
        Fail("write", rc);
        return;
      }
      int64_t epoch = 0;
      rc = daxlease_persist_epoch(vol_, index * kBlock, kBlock, &epoch);
      if (rc != DAXLEASE_OK) {
        Fail("persist", rc);
        return;
      }
      expect_[index] = b;
      rc = daxlease_read(vol_, index * kBlock, back.data(), kBlock);
      if (rc != DAXLEASE_OK) {
        Fail("read", rc);
        return;
      }
      if (back != b) {
        Fail(absl::StrCat("read back block ", index, " seq ", seq), 0);
        return;
      }
      {
        std::lock_guard<std::mutex> l(mu_);
        ++by_epoch_[epoch];
      }
      persisted_.store(seq);
    }
  }

  daxlease_volume* const vol_;
  const uint32_t id_;
  const uint64_t first_, count_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> persisted_{0};
  std::mutex mu_;
  std::map<int64_t, uint64_t> by_epoch_;
  std::vector<std::string> errors_;
  std::map<uint64_t, std::string> expect_;  // the writer thread's, until Stop
  std::thread thread_;
};

// A writer on the owner node (local mapping) and a writer on the other node
// (remote, over the TCP fabric) run continuously; a recall in the middle:
// both flush and ack (released, nothing revoked), the volume resumes at
// epoch + 1, both continue there, and every block in the owner's file is
// what its writer last persisted.
TEST_F(AgentK8sTest, RecallWithOwnerAndRemoteWritersWritingContinuously) {
  std::string remote_dir = SetUpVolume();
  std::string local_dir = Publish('a', "local");
  daxlease_volume* local = Attach(local_dir);
  ASSERT_NE(local, nullptr);
  daxlease_volume* remote = Attach(remote_dir);
  ASSERT_NE(remote, nullptr);
  EXPECT_EQ(daxlease_is_local(local), 1);
  EXPECT_EQ(daxlease_is_local(remote), 0);
  ASSERT_EQ(daxlease_size(local), daxlease_size(remote));
  const uint64_t blocks = daxlease_size(local) / kBlock;
  const int64_t epoch0 = daxlease_epoch(remote);
  ASSERT_GT(epoch0, 0);
  {
    PatternWriter lw(local, 1, 0, blocks / 2);
    PatternWriter rw(remote, 2, blocks / 2, blocks / 2);
    ASSERT_TRUE(lw.Progress(50, absl::Seconds(30))) << agents_['a']->Log();
    ASSERT_TRUE(rw.Progress(50, absl::Seconds(30))) << agents_['b']->Log();

    std::string r = CreateRecall(5);
    ASSERT_TRUE(WaitRecallComplete(r)) << Dump();
    EXPECT_EQ(RecallStatus(r).value("revoked", 0), 0) << Dump();
    EXPECT_EQ(RecallStatus(r).value("released", 0), 2) << Dump();
    // Each agent acked its holder's recall, flush time observed.
    for (char n : {'a', 'b'}) {
      EXPECT_GE(AgentMetric(n, "daxlease_agent_recall_acks_total"), 1) << n;
      EXPECT_GE(AgentMetric(n, "daxlease_agent_recall_flush_seconds_count"), 1)
          << n;
    }

    // Both continue, at the next epoch.
    ASSERT_TRUE(WaitFor(
        [&] {
          return lw.by_epoch().count(epoch0 + 1) > 0 &&
                 rw.by_epoch().count(epoch0 + 1) > 0;
        },
        absl::Seconds(60)))
        << agents_['b']->Log();
    EXPECT_TRUE(lw.Progress(50, absl::Seconds(30)));
    EXPECT_TRUE(rw.Progress(50, absl::Seconds(30)));
    lw.Stop();
    rw.Stop();
    EXPECT_EQ(lw.errors(), std::vector<std::string>{});
    EXPECT_EQ(rw.errors(), std::vector<std::string>{});
    for (const auto& [epoch, n] : lw.by_epoch()) {
      EXPECT_TRUE(epoch == epoch0 || epoch == epoch0 + 1) << epoch;
    }
    for (const auto& [epoch, n] : rw.by_epoch()) {
      EXPECT_TRUE(epoch == epoch0 || epoch == epoch0 + 1) << epoch;
    }
    ASSERT_EQ(daxlease_detach(local), DAXLEASE_OK) << daxlease_errmsg();
    ASSERT_EQ(daxlease_detach(remote), DAXLEASE_OK) << daxlease_errmsg();

    // Every byte: the owner's file holds, block for block, what each writer
    // last persisted, and zeros where nobody wrote.
    std::string file = FileBytes(0, blocks * kBlock);
    ASSERT_EQ(file.size(), blocks * kBlock);
    const std::string zero(kBlock, '\0');
    uint64_t checked = 0;
    for (uint64_t i = 0; i < blocks; ++i) {
      const auto& expect = i < blocks / 2 ? lw.expect() : rw.expect();
      auto it = expect.find(i);
      const std::string& want = it == expect.end() ? zero : it->second;
      ASSERT_TRUE(file.compare(i * kBlock, kBlock, want) == 0) << "block " << i;
      checked += it != expect.end();
    }
    EXPECT_GT(checked, 100u);
  }
}

// A volume whose name (72 characters, as a DaxVolume made by hand may have)
// is longer than a label value: the lease agent b creates for its pod is
// accepted by the API server, labelled with the label value that stands for
// the name (the volume's label selector lists it), and a recall completes
// with it released; the client is granted again at the next epoch.
TEST_F(AgentK8sTest, RecallOfAVolumeWithANameLongerThanALabelValue) {
  std::string name = prefix_ + "-vol-";
  name.resize(72, 'x');
  std::string remote_dir = SetUpVolume(3, name);
  daxlease_volume* remote = Attach(remote_dir);
  ASSERT_NE(remote, nullptr) << Dump();
  k8s::ListOptions o;
  o.label_selector = api::VolumeLabelSelector(vol_);
  auto leases = client_->List(DaxLeaseResource(), "", o);
  ASSERT_TRUE(leases.ok()) << leases.status();
  ASSERT_EQ(leases->items.size(), 1u) << Dump();
  const int64_t epoch0 = daxlease_epoch(remote);
  std::string r = CreateRecall(10);
  ASSERT_TRUE(WaitRecallComplete(r)) << Dump();
  EXPECT_EQ(RecallStatus(r).value("released", 0), 1) << Dump();
  EXPECT_EQ(RecallStatus(r).value("revoked", 0), 0) << Dump();
  // The client is granted again, at the next epoch, and reads.
  ASSERT_TRUE(WaitFor([&] { return daxlease_epoch(remote) == epoch0 + 1; },
                      absl::Seconds(60)))
      << Dump();
  char buf[16];
  EXPECT_EQ(daxlease_read(remote, 0, buf, sizeof(buf)), DAXLEASE_OK)
      << daxlease_errmsg();
  ASSERT_EQ(daxlease_detach(remote), DAXLEASE_OK) << daxlease_errmsg();
}

// Whether `pid` holds an unbroken write lease (fcntl F_SETLEASE F_WRLCK) on
// inode `ino`, as /proc/locks lists it ("N: LEASE ACTIVE WRITE pid
// maj:min:ino start end"). Reads no file but /proc/locks.
bool HoldsWriteLease(pid_t pid, ino_t ino) {
  std::ifstream locks("/proc/locks");
  for (std::string line; std::getline(locks, line);) {
    std::vector<std::string> f =
        absl::StrSplit(line, ' ', absl::SkipWhitespace());
    if (f.size() >= 6 && f[1] == "LEASE" && f[2] == "ACTIVE" &&
        f[3] == "WRITE" && f[4] == std::to_string(pid) &&
        absl::EndsWith(f[5], absl::StrCat(":", ino))) {
      return true;
    }
  }
  return false;
}

// The test's own reads of the owner's data file (FileBytes) leave the
// owner agent's file lease alone: before, FileBytes opened the file, which
// broke the lease (the open waited for the agent's Evict recall), so every
// test that checked the file's bytes also ran a recall it never asked for.
TEST_F(AgentK8sTest, ReadingTheOwnersDataFileKeepsItsFileLease) {
  SetUpVolume();
  struct stat st;
  ASSERT_EQ(stat(data_path_.c_str(), &st), 0) << strerror(errno);
  const pid_t owner = agents_['a']->pid();
  ASSERT_TRUE(WaitFor([&] { return HoldsWriteLease(owner, st.st_ino); },
                      absl::Seconds(30)))
      << Dump();
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(FileBytes(0, 8 << 20).size(), size_t{8 << 20});
  }
  EXPECT_TRUE(HoldsWriteLease(owner, st.st_ino)) << Dump();
  EXPECT_EQ(AgentMetric('a', "daxlease_agent_lease_breaks_total"), 0) << Dump();
  auto recalls = k8s::ListAll(*client_, DaxRecallResource(), "");
  ASSERT_TRUE(recalls.ok()) << recalls.status();
  for (const k8s::Json& r : recalls->items) {
    EXPECT_NE(r.value("spec", k8s::Json::object()).value("volume", ""), vol_)
        << r.dump();
  }
}

// A pre-flush hook holding both clients in the middle of a recall while the
// test kills one component with SIGKILL: the owner agent, the holder agent,
// the operator, one recall each. Each recall still completes with every
// lease released (nothing revoked), both writers go on at the next epoch,
// and at the end every block is what its writer last persisted.
TEST_F(AgentK8sTest, KillNineOfEachComponentMidRecallLosesNothing) {
  std::string remote_dir = SetUpVolume();
  std::string local_dir = Publish('a', "local");
  daxlease_volume* local = Attach(local_dir);
  ASSERT_NE(local, nullptr);
  daxlease_volume* remote = Attach(remote_dir);
  ASSERT_NE(remote, nullptr);
  // The hook writes (without persisting) one block the writers never touch,
  // then holds the recall while `hold`: the recall's flush must make the
  // block durable on the owner, through whatever was killed meanwhile.
  struct Hook {
    std::atomic<bool>* hold;
    std::atomic<int>* entered;
    uint64_t block;
    uint32_t id;
    std::atomic<uint64_t> seq{0};
  };
  std::atomic<bool> hold{false};
  std::atomic<int> entered{0};
  const uint64_t blocks = daxlease_size(local) / kBlock;
  const uint64_t half = blocks / 2;
  Hook lh{&hold, &entered, half - 1, 3};
  Hook rh{&hold, &entered, blocks - 1, 4};
  auto hook = [](daxlease_volume* v, void* arg) -> int {
    auto* h = static_cast<Hook*>(arg);
    std::string b = PatternBlock(h->id, h->block, h->seq.load());
    int rc = daxlease_write(v, h->block * kBlock, b.data(), kBlock);
    ++*h->entered;
    while (h->hold->load()) usleep(10000);
    return rc;
  };
  ASSERT_EQ(daxlease_set_preflush_hook(local, hook, &lh), DAXLEASE_OK);
  ASSERT_EQ(daxlease_set_preflush_hook(remote, hook, &rh), DAXLEASE_OK);
  PatternWriter lw(local, 1, 0, half - 1);
  PatternWriter rw(remote, 2, half, half - 1);
  ASSERT_TRUE(lw.Progress(20, absl::Seconds(30)));
  ASSERT_TRUE(rw.Progress(20, absl::Seconds(30)));

  const std::vector<std::pair<std::string, std::function<void()>>> kills = {
      {"owner agent", [&] { RestartAgent('a'); }},
      {"holder agent", [&] { RestartAgent('b'); }},
      {"operator", [&] { KillOperator(); }},
  };
  for (const auto& [what, kill] : kills) {
    SCOPED_TRACE(what);
    const int64_t epoch = std::max(lw.max_epoch(), rw.max_epoch());
    hold.store(true);
    entered.store(0);
    ++lh.seq;
    ++rh.seq;
    std::string r = CreateRecall(20);
    ASSERT_TRUE(WaitFor([&] { return entered.load() == 2; }, absl::Seconds(30)))
        << Dump();
    kill();
    hold.store(false);
    ASSERT_TRUE(WaitRecallComplete(r)) << Dump();
    EXPECT_EQ(RecallStatus(r).value("revoked", 0), 0) << Dump();
    EXPECT_EQ(RecallStatus(r).value("released", 0), 2) << Dump();
    // Flushed before the acks: in the owner's file now.
    EXPECT_EQ(FileBytes(lh.block * kBlock, kBlock),
              PatternBlock(lh.id, lh.block, lh.seq.load()));
    EXPECT_EQ(FileBytes(rh.block * kBlock, kBlock),
              PatternBlock(rh.id, rh.block, rh.seq.load()));
    ASSERT_TRUE(lw.ProgressAfter(epoch, 20, absl::Seconds(60))) << Dump();
    ASSERT_TRUE(rw.ProgressAfter(epoch, 20, absl::Seconds(60))) << Dump();
  }
  lw.Stop();
  rw.Stop();
  EXPECT_EQ(lw.errors(), std::vector<std::string>{});
  EXPECT_EQ(rw.errors(), std::vector<std::string>{});
  ASSERT_EQ(daxlease_detach(local), DAXLEASE_OK) << daxlease_errmsg();
  ASSERT_EQ(daxlease_detach(remote), DAXLEASE_OK) << daxlease_errmsg();
  std::string file = FileBytes(0, blocks * kBlock);
  const std::string zero(kBlock, '\0');
  for (uint64_t i = 0; i < blocks; ++i) {
    std::string want;
    if (i == lh.block || i == rh.block) {
      const Hook& h = i == lh.block ? lh : rh;
      want = PatternBlock(h.id, h.block, h.seq.load());
    } else {
      const auto& expect = i < half ? lw.expect() : rw.expect();
      auto it = expect.find(i);
      want = it == expect.end() ? zero : it->second;
    }
    ASSERT_TRUE(file.compare(i * kBlock, kBlock, want) == 0) << "block " << i;
  }
}

// Bad input while a remote writer runs: a malformed descriptor, a descriptor
// with another pod's token, a lease presented to the wrong node's agent; on
// the fabric a stale epoch, another holder's credential, a forged one, and
// peers that hang up in the middle of a handshake or a request. Each gets a
// clear error; the writer never notices, and every block is intact.
TEST_F(AgentK8sTest, BadInputIsRefusedClearlyAndCostsNothing) {
  std::string dir = SetUpVolume();
  daxlease_volume* vol = Attach(dir);
  ASSERT_NE(vol, nullptr);
  const uint64_t blocks = daxlease_size(vol) / kBlock;
  PatternWriter w(vol, 2, 0, blocks);
  ASSERT_TRUE(w.Progress(20, absl::Seconds(30)));
  // A recall first, so there is an older epoch to present.
  std::string r = CreateRecall(5);
  ASSERT_TRUE(WaitRecallComplete(r)) << Dump();
  ASSERT_TRUE(w.ProgressAfter(1, 20, absl::Seconds(60))) << Dump();

  std::ifstream din(dir + "/daxlease.json");
  const k8s::Json desc = k8s::Json::parse(din);
  auto attach_err = [&](const std::string& name, const k8s::Json& d,
                        char agent) {
    std::string bad = absl::StrCat(dir_, "/", name);
    mkdir(bad.c_str(), 0755);
    std::ofstream(bad + "/daxlease.json")
        << (d.is_string() ? d.get<std::string>() : d.dump());
    EXPECT_EQ(symlink(Socket(agent).c_str(), (bad + "/agent.sock").c_str()), 0);
    daxlease_volume* v = nullptr;
    daxlease_attach_opts bo = DAXLEASE_ATTACH_OPTS_INIT;
    bo.timeout_ms = 10000;
    int rc = daxlease_attach(bad.c_str(), &bo, &v);
    if (rc == DAXLEASE_OK) daxlease_detach(v);
    return std::make_pair(rc, std::string(daxlease_errmsg()));
  };
  auto [rc1, msg1] =
      attach_err("malformed", "{\"version\": 1, \"volume\"", 'b');
  EXPECT_EQ(rc1, DAXLEASE_E_NOT_PUBLISHED) << msg1;
  EXPECT_THAT(msg1, ::testing::HasSubstr("is not a daxlease descriptor"));
  k8s::Json other = desc;
  other["attachToken"] = std::string(32, 'f');
  auto [rc2, msg2] = attach_err("other-pod", other, 'b');
  EXPECT_EQ(rc2, DAXLEASE_E_DENIED) << msg2;
  EXPECT_THAT(msg2, ::testing::HasSubstr("not published to this pod"));
  auto [rc3, msg3] = attach_err("wrong-node", desc, 'a');
  EXPECT_EQ(rc3, DAXLEASE_E_DENIED) << msg3;
  EXPECT_THAT(msg3, ::testing::HasSubstr("is not published on node"));

  // The fabric, with what an attacker who knows the secret could make and
  // what one who does not could try.
  auto status = NewGrpcAgentClient(Socket('b'))->Status();
  ASSERT_TRUE(status.ok()) << status.status();
  ASSERT_EQ(status->leases_size(), 1);
  const std::string lease_name = status->leases(0);
  auto lease = client_->Get(DaxLeaseResource(), "", lease_name);
  ASSERT_TRUE(lease.ok()) << lease.status() << Dump();
  const int64_t epoch =
      lease->value("status", k8s::Json::object()).value("epoch", int64_t{0});
  ASSERT_EQ(epoch, 2);
  std::ifstream sin(dir_ + "/secret");
  const std::string secret((std::istreambuf_iterator<char>(sin)),
                           std::istreambuf_iterator<char>());
  fabric::GrantInfo g;
  g.key = {vol_, k8s::UidOf(*lease), Node('b'), epoch};
  g.access = fabric::Access::kReadWrite;
  g.endpoint = absl::StrCat("127.0.0.1:", Port('a'));
  fabric::TcpConnector connector;
  auto refused = [&](fabric::GrantInfo gi) {
    auto c = connector.Connect(gi);
    EXPECT_EQ(c.status().code(), absl::StatusCode::kPermissionDenied)
        << c.status();
    return std::string(c.status().message());
  };
  fabric::GrantInfo stale = g;
  stale.key.epoch = epoch - 1;
  stale.credential =
      fabric::GrantCredential(secret, stale.key, fabric::Access::kReadWrite);
  EXPECT_THAT(refused(stale), ::testing::HasSubstr("stale epoch"));
  fabric::GrantKey another = g.key;
  another.lease_uid = "uid-of-another-holder";
  fabric::GrantInfo stolen = g;
  stolen.credential =
      fabric::GrantCredential(secret, another, fabric::Access::kReadWrite);
  EXPECT_THAT(refused(stolen), ::testing::HasSubstr("credential"));
  fabric::GrantInfo forged = g;
  forged.credential = fabric::GrantCredential("not-the-secret", g.key,
                                              fabric::Access::kReadWrite);
  EXPECT_THAT(refused(forged), ::testing::HasSubstr("credential"));
  // Hang-ups: half a handshake; a valid handshake then half a request.
  for (int half_request = 0; half_request < 2; ++half_request) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(Port('a')));
    ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    if (half_request == 0) {
      uint32_t len = 512;
      ASSERT_TRUE(fabric::wire::WriteFull(fd, &len, sizeof(len)).ok());
    } else {
      agent::v1::FabricHello h;
      h.set_version(1);
      h.set_volume_id(vol_);
      h.set_lease_uid(g.key.lease_uid);
      h.set_holder_node(g.key.holder_node);
      h.set_epoch(epoch);
      h.set_access(agent::v1::READ_WRITE);
      h.set_credential(
          fabric::GrantCredential(secret, g.key, fabric::Access::kReadWrite));
      ASSERT_TRUE(fabric::wire::WriteFrame(fd, h.SerializeAsString()).ok());
      auto reply = fabric::wire::ReadFrame(fd, 64 * 1024);
      ASSERT_TRUE(reply.ok()) << reply.status();
      fabric::wire::RequestHeader req{fabric::wire::kOpWrite, 0, 0, kBlock};
      ASSERT_TRUE(fabric::wire::WriteFull(fd, &req, 12).ok());
    }
    close(fd);
  }

  EXPECT_TRUE(w.Progress(20, absl::Seconds(30)));
  w.Stop();
  EXPECT_EQ(w.errors(), std::vector<std::string>{});
  ASSERT_EQ(daxlease_detach(vol), DAXLEASE_OK) << daxlease_errmsg();
  std::string file = FileBytes(0, blocks * kBlock);
  const std::string zero(kBlock, '\0');
  for (uint64_t i = 0; i < blocks; ++i) {
    auto it = w.expect().find(i);
    ASSERT_TRUE(file.compare(i * kBlock, kBlock,
                             it == w.expect().end() ? zero : it->second) == 0)
        << "block " << i;
  }
}

// The volume grows under a writer on the owner node (local mapping) and a
// remote writer (TCP fabric), as ControllerExpandVolume drives it (the test
// plays the CSI plugin: ReshapeVolume until the agent says the data may
// change, then complete). The agent's Reshape
// recall is a DaxRecall; the call answers UNAVAILABLE while it runs; both
// writers flush and ack (nothing revoked), the volume is Ready at epoch + 1
// with the new size, both clients see the new size and go on, blocks past
// the old end are written by one and read by the other, and every block is
// what its writer last persisted.
TEST_F(AgentK8sTest, GrowUnderOwnerAndRemoteWritersLosesNothing) {
  std::string remote_dir = SetUpVolume();
  std::string local_dir = Publish('a', "local");
  daxlease_volume* local = Attach(local_dir);
  ASSERT_NE(local, nullptr);
  daxlease_volume* remote = Attach(remote_dir);
  ASSERT_NE(remote, nullptr);
  const uint64_t size0 = daxlease_size(remote);
  ASSERT_EQ(size0, uint64_t{8} << 20);
  const uint64_t blocks = size0 / kBlock;
  const int64_t epoch0 = daxlease_epoch(remote);
  constexpr uint64_t kGrown = uint64_t{48} << 20;
  PatternWriter lw(local, 1, 0, blocks / 2);
  PatternWriter rw(remote, 2, blocks / 2, blocks / 2);
  ASSERT_TRUE(lw.Progress(50, absl::Seconds(30))) << Dump();
  ASSERT_TRUE(rw.Progress(50, absl::Seconds(30))) << Dump();

  // The backend and the filesystem would grow online here (the CSI
  // integration tests grow them); the 64 MiB ext4 already has room for the
  // grown data file, and online ext4 growth needs CAP_SYS_RESOURCE, which
  // a container may lack.
  auto a = NewGrpcAgentClient(Socket('a'));
  pb::ReshapeVolumeRequest req;
  req.set_volume_id(vol_);
  req.set_size_bytes(kGrown);
  const absl::Time start = absl::Now();
  int unavailable = 0;
  std::string recall;
  absl::StatusOr<pb::ReshapeVolumeResponse> ans;
  ASSERT_TRUE(WaitFor(
      [&] {
        ans = a->ReshapeVolume(req);
        if (absl::IsUnavailable(ans.status())) {
          ++unavailable;
          EXPECT_THAT(ans.status().message(),
                      ::testing::HasSubstr("recall in progress"));
        }
        return ans.ok();
      },
      absl::Seconds(60)))
      << ans.status() << Dump();
  EXPECT_GE(unavailable, 1);
  ASSERT_EQ(ans->stage(), pb::ReshapeVolumeResponse::CHANGE);
  recall = ans->recall();
  ASSERT_EQ(recall, absl::StrCat(vol_, "-reshape-e", epoch0));
  k8s::Json rs = RecallStatus(recall);
  EXPECT_EQ(rs.value("phase", ""), "Complete") << Dump();
  EXPECT_EQ(rs.value("released", 0), 2) << Dump();
  EXPECT_EQ(rs.value("revoked", 0), 0) << Dump();
  auto rj = client_->Get(DaxRecallResource(), "", recall);
  ASSERT_TRUE(rj.ok());
  EXPECT_EQ((*rj)["spec"].value("reason", ""), "Reshape");
  auto vj = client_->Get(DaxVolumeResource(), "", vol_);
  ASSERT_TRUE(vj.ok());
  EXPECT_EQ((*vj)["status"].value("phase", ""), "Quiesced");

  req.set_complete(true);
  ans = a->ReshapeVolume(req);
  ASSERT_TRUE(ans.ok()) << ans.status() << Dump();
  EXPECT_EQ(ans->stage(), pb::ReshapeVolumeResponse::DONE);
  EXPECT_EQ(ans->served_bytes(), kGrown);
  ASSERT_TRUE(WaitFor(
      [&] {
        auto v = client_->Get(DaxVolumeResource(), "", vol_);
        return v.ok() && (*v)["status"].value("phase", "") == "Ready" &&
               (*v)["status"].value("epoch", 0) == epoch0 + 1;
      },
      absl::Seconds(60)))
      << Dump();
  const absl::Duration paused = absl::Now() - start;
  vj = client_->Get(DaxVolumeResource(), "", vol_);
  ASSERT_TRUE(vj.ok());
  EXPECT_EQ((*vj)["status"].value("capacityBytes", int64_t{0}),
            static_cast<int64_t>(kGrown));
  EXPECT_EQ((*vj)["spec"].value("sizeBytes", int64_t{0}),
            static_cast<int64_t>(kGrown));
  // Both go on at the next epoch, with the new size.
  ASSERT_TRUE(lw.ProgressAfter(epoch0, 50, absl::Seconds(60))) << Dump();
  ASSERT_TRUE(rw.ProgressAfter(epoch0, 50, absl::Seconds(60))) << Dump();
  const absl::Duration writers_back = absl::Now() - start;
  EXPECT_EQ(daxlease_size(local), kGrown);
  EXPECT_EQ(daxlease_size(remote), kGrown);
  // Past the old end: written by one, read by the other.
  const std::string far_l = PatternBlock(7, kGrown / kBlock - 1, 1);
  const std::string far_r = PatternBlock(8, size0 / kBlock + 3, 1);
  ASSERT_EQ(daxlease_write(local, kGrown - kBlock, far_l.data(), kBlock),
            DAXLEASE_OK)
      << daxlease_errmsg();
  ASSERT_EQ(daxlease_persist(local, kGrown - kBlock, kBlock), DAXLEASE_OK);
  ASSERT_EQ(daxlease_write(remote, size0 + 3 * kBlock, far_r.data(), kBlock),
            DAXLEASE_OK)
      << daxlease_errmsg();
  ASSERT_EQ(daxlease_persist(remote, size0 + 3 * kBlock, kBlock), DAXLEASE_OK);
  std::string back(kBlock, '\0');
  ASSERT_EQ(daxlease_read(remote, kGrown - kBlock, back.data(), kBlock),
            DAXLEASE_OK);
  EXPECT_EQ(back, far_l);
  ASSERT_EQ(daxlease_read(local, size0 + 3 * kBlock, back.data(), kBlock),
            DAXLEASE_OK);
  EXPECT_EQ(back, far_r);
  // The same call again (the external-resizer's retry): done, no recall.
  req.set_complete(false);
  ans = a->ReshapeVolume(req);
  ASSERT_TRUE(ans.ok()) << ans.status();
  EXPECT_EQ(ans->stage(), pb::ReshapeVolumeResponse::DONE);

  lw.Stop();
  rw.Stop();
  EXPECT_EQ(lw.errors(), std::vector<std::string>{});
  EXPECT_EQ(rw.errors(), std::vector<std::string>{});
  ASSERT_EQ(daxlease_detach(local), DAXLEASE_OK) << daxlease_errmsg();
  ASSERT_EQ(daxlease_detach(remote), DAXLEASE_OK) << daxlease_errmsg();
  std::printf(
      "grow %llu -> %llu MiB with 2 holders: ReshapeVolume -> Ready at "
      "epoch+1 %lld ms, writers writing again %lld ms\n",
      static_cast<unsigned long long>(size0 >> 20),
      static_cast<unsigned long long>(kGrown >> 20),
      static_cast<long long>(absl::ToInt64Milliseconds(paused)),
      static_cast<long long>(absl::ToInt64Milliseconds(writers_back)));

  // Every byte of the file.
  EXPECT_EQ(sys::FileSize(data_path_).value_or(0), kGrown);
  std::string file = FileBytes(0, kGrown);
  ASSERT_EQ(file.size(), kGrown);
  const std::string zero(kBlock, '\0');
  for (uint64_t i = 0; i < kGrown / kBlock; ++i) {
    std::string want = zero;
    if (i < blocks) {
      const auto& expect = i < blocks / 2 ? lw.expect() : rw.expect();
      auto it = expect.find(i);
      if (it != expect.end()) want = it->second;
    } else if (i == kGrown / kBlock - 1) {
      want = far_l;
    } else if (i == size0 / kBlock + 3) {
      want = far_r;
    }
    ASSERT_TRUE(file.compare(i * kBlock, kBlock, want) == 0) << "block " << i;
  }
}

// Three grows under a local and a remote writer, a kill -9 at a different
// step of each: the owner agent between "change now" and complete (its
// restart maps the old size; the retried call finds the recall by name and
// completes), the operator while the Reshape recall runs, the operator right
// after complete (its successor finishes the volume). Each grow ends Ready
// at the next epoch with the new size and nothing revoked; the writers never
// see an error, and every block is what its writer last persisted. (It
// found the busy remote writer revoked when a recall caught it with
// unpersisted bytes: docs/csi.md.)
TEST_F(AgentK8sTest, GrowSurvivesKillNineAtEachStep) {
  // The grace covers a restarted owner agent's first pass and the clients'
  // reconnect backoff (as KillNineOfEachComponentMidRecallLosesNothing's).
  std::string remote_dir = SetUpVolume(20);
  std::string local_dir = Publish('a', "local");
  daxlease_volume* local = Attach(local_dir);
  ASSERT_NE(local, nullptr);
  daxlease_volume* remote = Attach(remote_dir);
  ASSERT_NE(remote, nullptr);
  const uint64_t size0 = daxlease_size(remote);
  const uint64_t blocks = size0 / kBlock;
  PatternWriter lw(local, 1, 0, blocks / 2);
  PatternWriter rw(remote, 2, blocks / 2, blocks / 2);
  ASSERT_TRUE(lw.Progress(20, absl::Seconds(30))) << Dump();
  ASSERT_TRUE(rw.Progress(20, absl::Seconds(30))) << Dump();

  enum Step { kMidRecall, kBeforeComplete, kAfterComplete };
  auto a = NewGrpcAgentClient(Socket('a'), absl::Seconds(5));
  uint64_t size = size0;
  // The owner agent's restart goes first: the next grow's recall starts
  // right after it, maybe while the remote client still retries its
  // connection (it must ack all the same).
  for (Step step : {kBeforeComplete, kMidRecall, kAfterComplete}) {
    SCOPED_TRACE(step);
    auto vj = client_->Get(DaxVolumeResource(), "", vol_);
    ASSERT_TRUE(vj.ok());
    const int64_t epoch = (*vj)["status"].value("epoch", int64_t{0});
    // Above the DaxVolume's 32 MiB and within what the 64 MiB ext4 holds.
    size = std::max<uint64_t>(size, uint64_t{30} << 20) + (uint64_t{6} << 20);
    pb::ReshapeVolumeRequest req;
    req.set_volume_id(vol_);
    req.set_size_bytes(size);
    bool killed = false;
    // As the external-resizer does: the whole call again until it is OK.
    ASSERT_TRUE(WaitFor(
        [&] {
          req.set_complete(false);
          auto ans = a->ReshapeVolume(req);
          if (!ans.ok()) {
            if (step == kMidRecall && !killed &&
                absl::IsUnavailable(ans.status()) &&
                absl::StrContains(ans.status().message(), "recall")) {
              KillOperator();
              killed = true;
            }
            return false;
          }
          if (ans->stage() == pb::ReshapeVolumeResponse::DONE) return true;
          if (step == kBeforeComplete && !killed) {
            RestartAgent('a');
            killed = true;
            return false;
          }
          req.set_complete(true);
          ans = a->ReshapeVolume(req);
          if (!ans.ok()) return false;
          if (step == kAfterComplete && !killed) {
            KillOperator();
            killed = true;
          }
          return ans->stage() == pb::ReshapeVolumeResponse::DONE;
        },
        absl::Seconds(90)))
        << Dump();
    EXPECT_TRUE(killed);
    ASSERT_TRUE(WaitFor(
        [&] {
          auto v = client_->Get(DaxVolumeResource(), "", vol_);
          return v.ok() && (*v)["status"].value("phase", "") == "Ready" &&
                 (*v)["status"].value("epoch", int64_t{0}) == epoch + 1;
        },
        absl::Seconds(60)))
        << Dump();
    k8s::Json rs = RecallStatus(absl::StrCat(vol_, "-reshape-e", epoch));
    EXPECT_EQ(rs.value("phase", ""), "Complete") << Dump();
    EXPECT_EQ(rs.value("revoked", 0), 0) << Dump();
    ASSERT_TRUE(lw.ProgressAfter(epoch, 20, absl::Seconds(60))) << Dump();
    ASSERT_TRUE(rw.ProgressAfter(epoch, 20, absl::Seconds(60))) << Dump();
    EXPECT_EQ(daxlease_size(local), size);
    EXPECT_EQ(daxlease_size(remote), size);
  }
  lw.Stop();
  rw.Stop();
  EXPECT_EQ(lw.errors(), std::vector<std::string>{});
  EXPECT_EQ(rw.errors(), std::vector<std::string>{});
  ASSERT_EQ(daxlease_detach(local), DAXLEASE_OK) << daxlease_errmsg();
  ASSERT_EQ(daxlease_detach(remote), DAXLEASE_OK) << daxlease_errmsg();
  EXPECT_EQ(sys::FileSize(data_path_).value_or(0), size);
  std::string file = FileBytes(0, size);
  ASSERT_EQ(file.size(), size);
  const std::string zero(kBlock, '\0');
  for (uint64_t i = 0; i < size / kBlock; ++i) {
    std::string want = zero;
    if (i < blocks) {
      const auto& expect = i < blocks / 2 ? lw.expect() : rw.expect();
      auto it = expect.find(i);
      if (it != expect.end()) want = it->second;
    }
    ASSERT_TRUE(file.compare(i * kBlock, kBlock, want) == 0) << "block " << i;
  }
}

// The same processes with the recall channel on (docs/agent.md, "The recall
// channel"): the operator with --channel-address, each agent with --channel
// and its pod's service-account token, checked by a real TokenReview.
class AgentChannelK8sTest : public AgentK8sTest {
 protected:
  AgentChannelK8sTest() { channel_ = true; }

  // Lines of agent n's log that hold every one of `parts`.
  int LogLines(char n, std::initializer_list<absl::string_view> parts) {
    int count = 0;
    for (absl::string_view line :
         absl::StrSplit(agents_[n]->Log(), '\n', absl::SkipEmpty())) {
      bool all = true;
      for (absl::string_view p : parts) all = all && absl::StrContains(line, p);
      count += all;
    }
    return count;
  }
  bool Connected(char n) {
    return LogLines(n, {"event=channel.connected", Node(n)}) > 0;
  }
  // Waits (30 s) until both agents are on the channel.
  bool BothConnected() {
    return WaitFor([&] { return Connected('a') && Connected('b'); },
                   absl::Seconds(30));
  }
  // No agent wrote an answer into a lease status of the volume (with the
  // channel on, those fields release nothing).
  std::string StatusAnswers() {
    std::string out;
    auto leases = k8s::ListAll(*client_, DaxLeaseResource(), "");
    if (!leases.ok()) return leases.status().ToString();
    for (const auto& l : leases->items) {
      if (l.value("spec", k8s::Json::object()).value("volume", "") != vol_) {
        continue;
      }
      const k8s::Json st = l.value("status", k8s::Json::object());
      if (!st.value("releasedRecallID", "").empty()) {
        absl::StrAppend(&out, k8s::NameOf(l), " releasedRecallID; ");
      }
    }
    return out;
  }
};

// A remote writer on b during a recall: agent b answers on the channel once
// the client flushed (no status write), the recall completes with the lease
// released, the writer goes on at the next epoch.
TEST_F(AgentChannelK8sTest, RecallWithALiveHolderCompletesOverTheChannel) {
  std::string remote_dir = SetUpVolume();
  ASSERT_TRUE(BothConnected()) << Dump();
  daxlease_volume* remote = Attach(remote_dir);
  ASSERT_NE(remote, nullptr);
  const int64_t epoch0 = daxlease_epoch(remote);
  const uint64_t blocks = daxlease_size(remote) / kBlock;
  {
    PatternWriter w(remote, 2, 0, blocks);
    ASSERT_TRUE(w.Progress(50, absl::Seconds(30))) << Dump();
    std::string r = CreateRecall(10);
    ASSERT_TRUE(WaitRecallComplete(r)) << Dump();
    EXPECT_EQ(RecallStatus(r).value("released", 0), 1) << Dump();
    EXPECT_EQ(RecallStatus(r).value("revoked", 0), 0) << Dump();
    EXPECT_GE(LogLines('b', {"event=agent.recall_acked", "via=channel"}), 1)
        << Dump();
    EXPECT_EQ(StatusAnswers(), "");
    EXPECT_GE(AgentMetric('b', "daxlease_agent_recall_acks_total"), 1);
    ASSERT_TRUE(w.ProgressAfter(epoch0, 50, absl::Seconds(60))) << Dump();
    w.Stop();
    EXPECT_EQ(w.errors(), std::vector<std::string>{});
    for (const auto& [epoch, n] : w.by_epoch()) {
      EXPECT_TRUE(epoch == epoch0 || epoch == epoch0 + 1) << epoch;
    }
    ASSERT_EQ(daxlease_detach(remote), DAXLEASE_OK) << daxlease_errmsg();
    std::string file = FileBytes(0, blocks * kBlock);
    for (const auto& [i, want] : w.expect()) {
      ASSERT_TRUE(file.compare(i * kBlock, kBlock, want) == 0) << "block " << i;
    }
  }
}

// daxlease-io on b stopped during a recall: nothing answers for it, it is
// revoked at the deadline, the owner a fences it when asked on the channel
// and confirms there; nothing the holder sends after lands, and once
// continued it is told of the revocation, which b acks on the channel.
TEST_F(AgentChannelK8sTest, SilentHolderIsRevokedAndFencedOverTheChannel) {
  std::string target = SetUpVolume();
  ASSERT_TRUE(BothConnected()) << Dump();
  Child io({DAXLEASE_IO_BIN, "pattern", target, "4096", "120"},
           dir_ + "/io.log");
  ASSERT_TRUE(WaitFor(
      [&] { return io.Log().find("persisted seq=20 ") != std::string::npos; },
      absl::Seconds(60)))
      << io.Log();
  io.Signal(SIGSTOP);
  std::string r = CreateRecall(2);
  ASSERT_TRUE(WaitRecallComplete(r)) << Dump();
  EXPECT_EQ(RecallStatus(r).value("revoked", 0), 1) << Dump();
  EXPECT_EQ(RecallStatus(r).value("released", 0), 0) << Dump();
  EXPECT_GE(LogLines('a', {"event=agent.fenced", "via=channel"}), 1) << Dump();
  EXPECT_EQ(LogLines('b', {"event=agent.recall_acked"}), 0) << Dump();
  EXPECT_EQ(StatusAnswers(), "");
  EXPECT_TRUE(WaitFor(
      [&] { return AgentMetric('a', "daxlease_agent_fences_total") >= 1; },
      absl::Seconds(10)));
  std::string after_fence = FileBytes(0, 8 << 20);
  io.Signal(SIGCONT);
  EXPECT_EQ(io.Wait(absl::Seconds(30)), 3) << io.Log();
  EXPECT_NE(io.Log().find("revoked seq="), std::string::npos) << io.Log();
  EXPECT_EQ(FileBytes(0, 8 << 20), after_fence);
  EXPECT_TRUE(WaitFor(
      [&] {
        return LogLines('b', {"event=agent.revocation_acked", "via=channel"}) >=
               1;
      },
      absl::Seconds(30)))
      << Dump();
}

// The holder's agent is killed (-9) while its client holds the recall in a
// pre-flush hook; the restarted agent reconnects to the channel, the
// operator asks it again, the client reattaches, flushes and acks, and the
// agent answers: released, nothing revoked, the hook's unpersisted block is
// in the owner's file, the writer goes on at the next epoch.
TEST_F(AgentChannelK8sTest, AgentRestartedMidRecallReconnectsAndAnswers) {
  std::string remote_dir = SetUpVolume();
  ASSERT_TRUE(BothConnected()) << Dump();
  daxlease_volume* remote = Attach(remote_dir);
  ASSERT_NE(remote, nullptr);
  struct Hook {
    std::atomic<bool> hold{true};
    std::atomic<int> entered{0};
    uint64_t block = 0;
  } h;
  const uint64_t blocks = daxlease_size(remote) / kBlock;
  h.block = blocks - 1;
  auto hook = [](daxlease_volume* v, void* arg) -> int {
    auto* h = static_cast<Hook*>(arg);
    std::string b = PatternBlock(9, h->block, 1);
    int rc = daxlease_write(v, h->block * kBlock, b.data(), kBlock);
    ++h->entered;
    while (h->hold.load()) usleep(10000);
    return rc;
  };
  ASSERT_EQ(daxlease_set_preflush_hook(remote, hook, &h), DAXLEASE_OK);
  const int64_t epoch0 = daxlease_epoch(remote);
  PatternWriter w(remote, 2, 0, blocks - 1);
  ASSERT_TRUE(w.Progress(20, absl::Seconds(30))) << Dump();
  std::string r = CreateRecall(30);
  ASSERT_TRUE(WaitFor([&] { return h.entered.load() >= 1; }, absl::Seconds(30)))
      << Dump();
  const int connects = LogLines('b', {"event=channel.connected"});
  RestartAgent('b');
  ASSERT_TRUE(WaitFor(
      [&] { return LogLines('b', {"event=channel.connected"}) > connects; },
      absl::Seconds(30)))
      << Dump();
  h.hold.store(false);
  ASSERT_TRUE(WaitRecallComplete(r)) << Dump();
  EXPECT_EQ(RecallStatus(r).value("released", 0), 1) << Dump();
  EXPECT_EQ(RecallStatus(r).value("revoked", 0), 0) << Dump();
  EXPECT_GE(LogLines('b', {"event=agent.recall_acked", "via=channel"}), 1)
      << Dump();
  EXPECT_EQ(StatusAnswers(), "");
  EXPECT_EQ(FileBytes(h.block * kBlock, kBlock), PatternBlock(9, h.block, 1));
  ASSERT_TRUE(w.ProgressAfter(epoch0, 20, absl::Seconds(60))) << Dump();
  w.Stop();
  EXPECT_EQ(w.errors(), std::vector<std::string>{});
  ASSERT_EQ(daxlease_detach(remote), DAXLEASE_OK) << daxlease_errmsg();
}

// The holder's agent is killed (-9) after the lease was revoked and fenced
// but before its revocation ack went out (its client is held in a
// pre-flush hook, so it has acked neither the recall nor the revocation):
// the operator asks the restarted agent again, and once the client is let
// go it sees REVOKED on its new session and the agent answers. Killed again
// after that ack, the agent lets a new client attach under the next
// generation at the next epoch; the revoked lease stays Released at its
// epoch, never granted again.
TEST_F(AgentChannelK8sTest, HolderRestartedAroundItsRevocationAckAnswersAgain) {
  std::string remote_dir = SetUpVolume();
  ASSERT_TRUE(BothConnected()) << Dump();
  daxlease_volume* remote = Attach(remote_dir);
  ASSERT_NE(remote, nullptr);
  struct Hook {
    std::atomic<bool> hold{true};
    std::atomic<int> entered{0};
  } h;
  auto hook = [](daxlease_volume*, void* arg) -> int {
    auto* h = static_cast<Hook*>(arg);
    ++h->entered;
    while (h->hold.load()) usleep(10000);
    return 0;
  };
  ASSERT_EQ(daxlease_set_preflush_hook(remote, hook, &h), DAXLEASE_OK);
  // Granted: the recall reaches the hook, which holds it past the deadline.
  std::string r = CreateRecall(2);
  ASSERT_TRUE(WaitFor([&] { return h.entered.load() >= 1; }, absl::Seconds(30)))
      << Dump();
  ASSERT_TRUE(WaitRecallComplete(r)) << Dump();
  ASSERT_EQ(RecallStatus(r).value("revoked", 0), 1) << Dump();
  const k8s::Json revoked_list =
      RecallStatus(r).value("revokedLeases", k8s::Json::array());
  ASSERT_EQ(revoked_list.size(), 1u) << Dump();
  const std::string revoked = revoked_list[0];
  const int64_t epoch0 = RecallStatus(r).value("epoch", int64_t{0});
  auto asked = [&] {
    return LogLines('b', {"event=agent.channel_asked", "revoked=1"});
  };
  ASSERT_TRUE(WaitFor([&] { return asked() >= 1; }, absl::Seconds(30)))
      << Dump();
  EXPECT_EQ(LogLines('b', {"event=agent.revocation_acked"}), 0) << Dump();

  // Before the ack: asked again on the new stream, answered once the client
  // saw the revocation.
  const int asks = asked();
  RestartAgent('b');
  ASSERT_TRUE(WaitFor([&] { return asked() > asks; }, absl::Seconds(30)))
      << Dump();
  EXPECT_EQ(LogLines('b', {"event=agent.revocation_acked"}), 0) << Dump();
  h.hold.store(false);
  ASSERT_TRUE(WaitFor(
      [&] {
        return LogLines('b', {"event=agent.revocation_acked", "via=channel"}) >=
               1;
      },
      absl::Seconds(30)))
      << Dump();
  char buf[16];
  EXPECT_EQ(daxlease_read(remote, 0, buf, sizeof(buf)), DAXLEASE_E_REVOKED);
  auto lease_status = [&](const std::string& name) {
    auto l = client_->Get(DaxLeaseResource(), "", name);
    return l.ok() ? l->value("status", k8s::Json::object())
                  : k8s::Json::object();
  };
  // The revocation acknowledged: the lease ends Released at its epoch.
  ASSERT_TRUE(WaitFor(
      [&] { return lease_status(revoked).value("state", "") == "Released"; },
      absl::Seconds(30)))
      << Dump();
  (void)daxlease_detach(remote);

  // After the ack: a new client is granted under the next generation.
  const int connects = LogLines('b', {"event=channel.connected"});
  RestartAgent('b');
  ASSERT_TRUE(WaitFor(
      [&] { return LogLines('b', {"event=channel.connected"}) > connects; },
      absl::Seconds(30)))
      << Dump();
  daxlease_volume* again = Attach(remote_dir);
  ASSERT_NE(again, nullptr) << Dump();
  EXPECT_GT(daxlease_epoch(again), epoch0);
  ASSERT_EQ(daxlease_detach(again), DAXLEASE_OK) << daxlease_errmsg();
  // The revoked generation is retired (deleted once the next is Granted),
  // or still Released at its epoch: never Granted again.
  const k8s::Json last = lease_status(revoked);
  if (!last.empty()) {
    EXPECT_EQ(last.value("state", ""), "Released");
    EXPECT_EQ(last.value("epoch", int64_t{0}), epoch0);
  }
  EXPECT_EQ(StatusAnswers(), "");
}

// The owner's agent cuts the revoked grant and dies before its fence
// confirmation goes out (crash point agent.channel.fence_cut). The revoke
// is on the lease object (the display never holds one) and the holder's
// agent has told its stopped client. Then the lease object reads Granted
// at the volume's epoch again, as a lease display that lags the recall
// shows it while the recall runs (the test holds the operator, SIGSTOP,
// and writes that view back). The restarted owner, on a fresh fabric, does
// not grant it again (its fence record wins over the object): the stopped
// holder, continued, is revoked, nothing it sends lands. The operator,
// continued, asks again; the owner confirms from its state and the recall
// completes with the lease revoked, never granted again, and the lease
// object comes to show it.
TEST_F(AgentChannelK8sTest, OwnerRestartedAfterItsFenceNeverGrantsItAgain) {
  std::string target = SetUpVolume();
  ASSERT_TRUE(BothConnected()) << Dump();
  int connects = LogLines('a', {"event=channel.connected"});
  RestartAgent('a', "agent.channel.fence_cut");
  ASSERT_TRUE(WaitFor(
      [&] { return LogLines('a', {"event=channel.connected"}) > connects; },
      absl::Seconds(30)))
      << Dump();
  Child io({DAXLEASE_IO_BIN, "pattern", target, "4096", "120"},
           dir_ + "/io.log");
  ASSERT_TRUE(WaitFor(
      [&] { return io.Log().find("persisted seq=20 ") != std::string::npos; },
      absl::Seconds(60)))
      << io.Log();
  io.Signal(SIGSTOP);
  std::string r = CreateRecall(2);
  ASSERT_TRUE(
      WaitFor([&] { return agents_['a']->Exited(); }, absl::Seconds(60)))
      << Dump();
  ASSERT_NE(agents_['a']->Log().find("agent.channel.fence_cut"),
            std::string::npos)
      << Dump();
  ASSERT_TRUE(
      WaitFor([&] { return LogLines('b', {"event=agent.lease_revoked"}) >= 1; },
              absl::Seconds(30)))
      << Dump();
  {
    std::lock_guard<std::mutex> l(operator_mu_);
    operator_->Signal(SIGSTOP);
  }
  EXPECT_EQ(RecallStatus(r).value("phase", ""), "Recalling") << Dump();
  const k8s::Json revoked_list =
      RecallStatus(r).value("revokedLeases", k8s::Json::array());
  ASSERT_EQ(revoked_list.size(), 1u) << Dump();
  const std::string revoked = revoked_list[0];
  auto patched =
      client_->Patch(DaxLeaseResource(), "", revoked, k8s::PatchType::kMerge,
                     {{"status",
                       {{"state", "Granted"},
                        {"fenceRequired", nullptr},
                        {"reason", nullptr}}}},
                     "status");
  ASSERT_TRUE(patched.ok()) << patched.status();

  connects = LogLines('a', {"event=channel.connected"});
  StartAgent('a');
  ASSERT_TRUE(WaitFor(
      [&] {
        return NewGrpcAgentClient(Socket('a'), absl::Seconds(1))->Status().ok();
      },
      absl::Seconds(30)))
      << Dump();
  const std::string after_fence = FileBytes(0, 8 << 20);
  io.Signal(SIGCONT);
  EXPECT_EQ(io.Wait(absl::Seconds(30)), 3) << io.Log() << Dump();
  EXPECT_NE(io.Log().find("revoked seq="), std::string::npos) << io.Log();
  EXPECT_EQ(FileBytes(0, 8 << 20), after_fence) << "a write after the fence";

  {
    std::lock_guard<std::mutex> l(operator_mu_);
    operator_->Signal(SIGCONT);
  }
  ASSERT_TRUE(WaitRecallComplete(r)) << Dump();
  EXPECT_EQ(RecallStatus(r).value("revoked", 0), 1) << Dump();
  EXPECT_EQ(RecallStatus(r).value("released", 0), 0) << Dump();
  EXPECT_GE(LogLines('a', {"event=agent.fenced", "via=channel"}), 1) << Dump();
  // The display converges on the outcome over the foreign write (it is
  // written after the recall's record, so it may come a moment later):
  // Revoked, or Released once the holder's agent acknowledged it.
  auto state = [&] {
    auto l = client_->Get(DaxLeaseResource(), "", revoked);
    return l.ok() ? l->value("status", k8s::Json::object()).value("state", "")
                  : l.status().ToString();
  };
  EXPECT_TRUE(
      WaitFor([&] { return state() == "Revoked" || state() == "Released"; },
              absl::Seconds(30)))
      << state() << "\n"
      << Dump();
  EXPECT_EQ(StatusAnswers(), "");
}

}  // namespace
}  // namespace daxlease::agent
