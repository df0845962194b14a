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

#include <atomic>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "daxlease.h"
#include "gtest/gtest.h"
#include "lib/sys/command.h"
#include "node-agent/agent/agent.h"
#include "node-agent/agent_client/agent_client.h"
#include "tests/k8s/k8s_testing.h"
#include "tests/testing/prereq.h"

namespace daxlease::agent {
namespace {

using k8s::testing::WaitFor;

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

class AgentK8sTest : public ::testing::Test {
 protected:
  void SetUp() override {
    DAXLEASE_REQUIRE(testing::IsRoot(), "needs root for the loop mount");
    kubeconfig_ = k8s::testing::KubeconfigPath();
    DAXLEASE_REQUIRE(!kubeconfig_.empty(),
                     "no test control plane (run ctest -L k8s)");
    auto c = k8s::testing::NewClient(kubeconfig_);
    ASSERT_TRUE(c.ok()) << c.status();
    kube_ = std::move(*c);
    ASSERT_TRUE(k8s::testing::InstallDaxleaseCrds(kubeconfig_).ok());
    std::string test =
        ::testing::UnitTest::GetInstance()->current_test_info()->name();
    prefix_ =
        absl::StrCat(absl::AsciiStrToLower(test).substr(0, 24), "-", getpid());
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
    operator_ = std::make_unique<k8s::testing::ChildProcess>(
        std::vector<std::string>{
            DAXLEASE_OPERATOR_BIN, "--kubeconfig=" + kubeconfig_,
            "--leader-election-name=" + prefix_, "--identity=" + prefix_,
            "--leader-election-lease-duration=3s",
            "--leader-election-renew-deadline=2s",
            "--leader-election-retry-period=250ms", "--resync=2s"},
        prefix_ + "-operator");
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
    operator_.reset();
    if (kube_ != nullptr) {
      for (const k8s::Resource& r :
           {DaxLeaseResource(), DaxRecallResource(), DaxVolumeResource()}) {
        auto list = k8s::ListAll(*kube_, r, "");
        if (!list.ok()) continue;
        for (const k8s::Json& o : list->items) {
          std::string name = k8s::NameOf(o);
          std::string vol =
              o.value("spec", k8s::Json::object()).value("volume", "");
          if (name.rfind(prefix_, 0) != 0 && vol.rfind(prefix_, 0) != 0) {
            continue;
          }
          (void)kube_->Patch(r, "", name, k8s::PatchType::kMerge,
                             {{"metadata", {{"finalizers", nullptr}}}});
          (void)kube_->Delete(r, "", name);
        }
      }
    }
    if (mounted_) umount2(mnt_.c_str(), MNT_DETACH);
    if (!dir_.empty()) {
      std::string cmd = "rm -rf " + dir_;
      (void)!system(cmd.c_str());
    }
  }

  std::string Node(char n) {
    return absl::StrCat(prefix_, "-node-", std::string(1, n));
  }
  std::string Socket(char n) {
    return absl::StrCat(dir_, "/agent-", std::string(1, n), ".sock");
  }
  int Port(char n) { return n == 'a' ? port_a_ : port_b_; }

  void StartAgent(char n) {
    std::string addr = absl::StrCat("127.0.0.1:", Port(n));
    agents_[n] = std::make_unique<Child>(
        std::vector<std::string>{
            DAXLEASE_AGENT_BIN, "--node-id=" + Node(n),
            "--kubeconfig=" + kubeconfig_, "--socket=" + Socket(n),
            "--state-dir=" + dir_ + "/state-" + std::string(1, n),
            "--listen=" + addr, "--secret-file=" + dir_ + "/secret"},
        absl::StrCat(dir_, "/agent-", std::string(1, n), ".log"));
  }
  void RestartAgent(char n) {
    agents_[n]->Kill(SIGKILL);
    StartAgent(n);
  }

  // Records and serves the volume on a; publishes it to a pod on b.
  std::string SetUpVolume() {
    vol_ = prefix_ + "-vol";
    auto a = NewGrpcAgentClient(Socket('a'));
    pb::RecordVolumeRequest rec;
    rec.set_volume_id(vol_);
    rec.set_size_bytes(32 << 20);
    rec.set_mode(pb::FSDAX);
    rec.set_fs_type("ext4");
    rec.set_share(true);
    rec.set_recall_grace_seconds(3);
    EXPECT_TRUE(a->RecordVolume(rec).ok());
    pb::ServeVolumeRequest serve;
    serve.set_volume_id(vol_);
    serve.set_mode(pb::FSDAX);
    serve.set_mount_path(mnt_);
    serve.set_size_bytes(8 << 20);
    auto served = a->ServeVolume(serve);
    EXPECT_TRUE(served.ok()) << served.status();
    data_path_ = served->data_path();
    std::string target = dir_ + "/pub-b";
    mkdir(target.c_str(), 0755);
    pb::PublishRequest p;
    p.set_volume_id(vol_);
    p.set_target_path(target);
    p.set_pod_namespace("default");
    p.set_pod_name(prefix_ + "-pod");
    p.set_pod_uid("uid-" + prefix_);
    auto r = NewGrpcAgentClient(Socket('b'))->Publish(p);
    EXPECT_TRUE(r.ok()) << r.status();
    std::ofstream(target + "/daxlease.json") << r->descriptor_json();
    EXPECT_EQ(symlink(Socket('b').c_str(), (target + "/agent.sock").c_str()),
              0);
    return target;
  }

  std::string CreateRecall(int grace) {
    k8s::Json r = {
        {"apiVersion", api::kApiVersion},
        {"kind", "DaxRecall"},
        {"metadata", {{"generateName", vol_ + "-"}}},
        {"spec",
         {{"volume", vol_}, {"reason", "Manual"}, {"graceSeconds", grace}}}};
    auto c = kube_->Create(DaxRecallResource(), r);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? k8s::NameOf(*c) : "";
  }
  k8s::Json RecallStatus(const std::string& name) {
    auto r = kube_->Get(DaxRecallResource(), "", name);
    return r.ok() ? r->value("status", k8s::Json::object())
                  : k8s::Json::object();
  }
  std::string FileBytes(uint64_t off, size_t len) {
    std::ifstream in(data_path_, std::ios::binary);
    in.seekg(static_cast<std::streamoff>(off));
    std::string s(len, '\0');
    in.read(s.data(), static_cast<std::streamsize>(len));
    return s;
  }

  std::string kubeconfig_, prefix_, dir_, mnt_, vol_, data_path_;
  bool mounted_ = false;
  int port_a_ = 0, port_b_ = 0;
  std::unique_ptr<k8s::KubeClient> kube_;
  std::unique_ptr<k8s::testing::ChildProcess> operator_;
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
  ASSERT_TRUE(
      WaitFor([&] { return RecallStatus(r).value("phase", "") == "Complete"; },
              absl::Seconds(60)));
  EXPECT_EQ(RecallStatus(r).value("revoked", 0), 1);
  auto leases = k8s::ListAll(*kube_, DaxLeaseResource(), "");
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
  std::string after_fence = FileBytes(0, 8 << 20);
  io.Signal(SIGCONT);
  EXPECT_EQ(io.Wait(absl::Seconds(30)), 3) << io.Log();
  EXPECT_NE(io.Log().find("revoked seq="), std::string::npos) << io.Log();
  EXPECT_EQ(FileBytes(0, 8 << 20), after_fence);
}

}  // namespace
}  // namespace daxlease::agent
