#include "operator/testing/k8s_env.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "lib/k8s/config.h"
#include "lib/k8s/rest_client.h"

namespace daxlease::op::testing {

std::string TestKubeconfig() {
  for (const char* var : {"DAXLEASE_KUBECONFIG", "DAXLEASE_TEST_KUBECONFIG"}) {
    const char* v = std::getenv(var);
    if (v != nullptr && *v != '\0' && access(v, R_OK) == 0) return v;
  }
  return "";
}

absl::StatusOr<std::unique_ptr<k8s::KubeClient>> ClientFor(
    const std::string& kubeconfig) {
  absl::StatusOr<k8s::KubeConfig> cfg = k8s::LoadKubeConfig(kubeconfig);
  if (!cfg.ok()) return cfg.status();
  auto c = k8s::RestKubeClient::Create(*cfg);
  if (!c.ok()) return c.status();
  return std::unique_ptr<k8s::KubeClient>(std::move(*c));
}

int Kubectl(const std::string& kubeconfig, const std::string& args,
            std::string* out) {
  std::string cmd =
      absl::StrCat("kubectl --kubeconfig '", kubeconfig, "' ", args, " 2>&1");
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return -1;
  std::string text;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) text.append(buf, n);
  int rc = pclose(p);
  if (out != nullptr) *out = text;
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

absl::Status InstallCrds(const std::string& kubeconfig) {
  std::string out;
  if (Kubectl(kubeconfig,
              absl::StrCat("apply -f ", DAXLEASE_SOURCE_DIR, "/manifests/crd/"),
              &out) != 0) {
    return absl::InternalError(absl::StrCat("kubectl apply: ", out));
  }
  if (Kubectl(kubeconfig,
              "wait --for condition=established --timeout=60s "
              "crd/daxvolumes.daxlease.io crd/daxleases.daxlease.io "
              "crd/daxrecalls.daxlease.io crd/daxmigrations.daxlease.io",
              &out) != 0) {
    return absl::InternalError(absl::StrCat("kubectl wait: ", out));
  }
  return absl::OkStatus();
}

OperatorProcess::OperatorProcess(const std::string& kubeconfig,
                                 std::vector<std::string> args,
                                 const std::string& log_name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  log_path_ = absl::StrCat(dir != nullptr ? dir : "/tmp", "/", log_name, "-",
                           getpid(), ".log");
  std::vector<std::string> argv = {DAXLEASE_OPERATOR_BIN,
                                   "--kubeconfig=" + kubeconfig};
  argv.insert(argv.end(), args.begin(), args.end());
  pid_ = fork();
  if (pid_ == 0) {
    int fd = open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    std::vector<char*> cargv;
    for (std::string& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    execv(cargv[0], cargv.data());
    _exit(127);
  }
}

OperatorProcess::~OperatorProcess() { Kill(SIGKILL); }

bool OperatorProcess::running() {
  if (pid_ <= 0) return false;
  int status;
  if (waitpid(pid_, &status, WNOHANG) == pid_) {
    pid_ = -1;
    return false;
  }
  return true;
}

void OperatorProcess::Kill(int sig) {
  if (pid_ <= 0) return;
  kill(pid_, sig);
  int status;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

std::string OperatorProcess::Log() const {
  std::ifstream f(log_path_);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

bool WaitFor(const std::function<bool()>& pred, absl::Duration timeout) {
  absl::Time end = absl::Now() + timeout;
  while (absl::Now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return pred();
}

int64_t PeakRssKib(pid_t pid) {
  std::ifstream f(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(f, line)) {
    if (absl::StartsWith(line, "VmHWM:")) {
      std::string num;
      for (char c : line) {
        if (c >= '0' && c <= '9') num += c;
      }
      int64_t kib = -1;
      if (absl::SimpleAtoi(num, &kib)) return kib;
    }
  }
  return -1;
}

}  // namespace daxlease::op::testing
