#include "tests/k8s/k8s_testing.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "lib/base/proc_status.h"
#include "lib/base/status.h"
#include "lib/k8s/config.h"

namespace daxlease::k8s::testing {
namespace {

std::string ReadableEnvFile(const char* var) {
  const char* v = std::getenv(var);
  if (v == nullptr || *v == '\0' || access(v, R_OK) != 0) return "";
  return v;
}

}  // namespace

std::string KubeconfigPath() {
  std::string p = ReadableEnvFile("DAXLEASE_KUBECONFIG");
  return p.empty() ? ReadableEnvFile("DAXLEASE_TEST_KUBECONFIG") : p;
}
std::string UserKubeconfigPath() {
  std::string p = ReadableEnvFile("DAXLEASE_K8S_USER_KUBECONFIG");
  if (!p.empty()) return p;
  std::string admin = KubeconfigPath();
  if (admin.empty()) return "";
  p = admin.substr(0, admin.rfind('/') + 1) + "kubeconfig-user";
  return access(p.c_str(), R_OK) == 0 ? p : "";
}

Resource WidgetResource() {
  return {"k8stest.daxlease.io", "v1", "widgets", true};
}

Json WidgetCrd() {
  return Json::parse(R"({
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.k8stest.daxlease.io"},
    "spec": {
      "group": "k8stest.daxlease.io",
      "scope": "Namespaced",
      "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
      "versions": [{
        "name": "v1", "served": true, "storage": true,
        "subresources": {"status": {}},
        "schema": {"openAPIV3Schema": {
          "type": "object",
          "properties": {
            "spec": {"type": "object", "required": ["size"],
                     "properties": {"size": {"type": "integer", "minimum": 1},
                                    "color": {"type": "string"}}},
            "status": {"type": "object",
                       "properties": {"phase": {"type": "string"},
                                      "count": {"type": "integer"},
                                      "writers": {"type": "object",
                                                  "additionalProperties": {"type": "integer"}}}}
          }}}
      }]
    }})");
}

Json Widget(const std::string& ns, const std::string& name, int size) {
  return {{"apiVersion", "k8stest.daxlease.io/v1"},
          {"kind", "Widget"},
          {"metadata", {{"name", name}, {"namespace", ns}}},
          {"spec", {{"size", size}}}};
}

std::string RandomSuffix() {
  static std::mt19937_64 rng(std::random_device{}() ^ getpid());
  return absl::StrFormat("%08x", static_cast<uint32_t>(rng()));
}

absl::StatusOr<std::unique_ptr<RestKubeClient>> NewClient(
    const std::string& kubeconfig) {
  std::string path = kubeconfig.empty() ? KubeconfigPath() : kubeconfig;
  if (path.empty()) return absl::FailedPreconditionError("no kubeconfig");
  ASSIGN_OR_RETURN(KubeConfig cfg, LoadKubeConfig(path));
  return RestKubeClient::Create(cfg);
}

absl::StatusOr<std::string> CreateTestNamespace(KubeClient& c,
                                                absl::string_view prefix) {
  std::string name = absl::StrCat(prefix, "-", RandomSuffix());
  Json ns = {{"apiVersion", "v1"},
             {"kind", "Namespace"},
             {"metadata", {{"name", name}}}};
  RETURN_IF_ERROR(c.Create(NamespaceResource(), ns).status());
  return name;
}

absl::Status EnsureCrd(KubeClient& c, const Json& crd) {
  absl::StatusOr<Json> created = c.Create(CrdResource(), crd);
  if (!created.ok() && !absl::IsAlreadyExists(created.status())) {
    return created.status();
  }
  const Json& spec = crd["spec"];
  Resource r{spec["group"].get<std::string>(),
             spec["versions"][0]["name"].get<std::string>(),
             spec["names"]["plural"].get<std::string>(),
             spec["scope"].get<std::string>() == "Namespaced"};
  absl::Time deadline = absl::Now() + absl::Seconds(60);
  absl::Status last;
  while (absl::Now() < deadline) {
    absl::StatusOr<Json> got = c.Get(CrdResource(), "", NameOf(crd));
    bool established = false;
    if (got.ok() && got->contains("status") &&
        (*got)["status"].contains("conditions")) {
      for (const Json& cond : (*got)["status"]["conditions"]) {
        if (cond.value("type", "") == "Established" &&
            cond.value("status", "") == "True") {
          established = true;
        }
      }
    }
    if (established) {
      ListOptions one;
      one.limit = 1;
      last = c.List(r, "", one).status();
      if (last.ok()) return absl::OkStatus();
    } else if (!got.ok()) {
      last = got.status();
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
  return absl::DeadlineExceededError(absl::StrCat(
      "CRD ", NameOf(crd), " not served after 60 s: ", last.message()));
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

absl::Status InstallDaxleaseCrds(const std::string& kubeconfig) {
  std::string out;
  // Tests run in parallel (ctest -j) apply the same CRDs at once; the loser
  // of a concurrent update gets a 409 ("the object has been modified") and
  // applies again over the winner's write.
  int rc = 0;
  for (int attempt = 0; attempt < 5; ++attempt) {
    rc = Kubectl(
        kubeconfig,
        absl::StrCat("apply -f ", DAXLEASE_SOURCE_DIR, "/manifests/crd/"),
        &out);
    if (rc == 0 ||
        out.find("the object has been modified") == std::string::npos) {
      break;
    }
  }
  if (rc != 0) return absl::InternalError(absl::StrCat("kubectl apply: ", out));
  if (Kubectl(kubeconfig,
              "wait --for condition=established --timeout=60s "
              "crd/daxvolumes.daxlease.io crd/daxleases.daxlease.io "
              "crd/daxrecalls.daxlease.io crd/daxmigrations.daxlease.io",
              &out) != 0) {
    return absl::InternalError(absl::StrCat("kubectl wait: ", out));
  }
  return absl::OkStatus();
}

ChildProcess::ChildProcess(std::vector<std::string> argv,
                           const std::string& log_name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  log_path_ = absl::StrCat(dir != nullptr ? dir : "/tmp", "/", log_name, "-",
                           getpid(), ".log");
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

ChildProcess::~ChildProcess() { Kill(SIGKILL); }

bool ChildProcess::running() {
  if (pid_ <= 0) return false;
  int status;
  if (waitpid(pid_, &status, WNOHANG) == pid_) {
    pid_ = -1;
    return false;
  }
  return true;
}

void ChildProcess::Kill(int sig) {
  if (pid_ <= 0) return;
  kill(pid_, sig);
  int status;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

std::string ChildProcess::Log() const {
  std::ifstream f(log_path_);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

int LoggedMetricsPort(const std::string& log, const std::string& event) {
  std::istringstream lines(log);
  std::string line;
  const std::string want = absl::StrCat("event=", event, " ");
  while (std::getline(lines, line)) {
    if (line.find(want) == std::string::npos) continue;
    size_t at = line.find(" port=");
    int port = 0;
    if (at != std::string::npos &&
        absl::SimpleAtoi(line.substr(at + 6, line.find(' ', at + 6) - at - 6),
                         &port)) {
      return port;
    }
  }
  return -1;
}

absl::StatusOr<std::string> ScrapeMetrics(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return base::ErrnoStatus("socket", "", errno);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string out;
  const std::string req =
      "GET /metrics HTTP/1.0\r\nHost: localhost\r\nAccept: "
      "text/plain\r\n\r\n";
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::write(fd, req.data(), req.size()) != static_cast<ssize_t>(req.size())) {
    absl::Status st =
        base::ErrnoStatus("connect", absl::StrCat("127.0.0.1:", port), errno);
    ::close(fd);
    return st;
  }
  char buf[8192];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof(buf))) > 0) out.append(buf, n);
  ::close(fd);
  size_t body = out.find("\r\n\r\n");
  if (out.rfind("HTTP/1.", 0) != 0 || out.find(" 200 ") == std::string::npos ||
      body == std::string::npos) {
    return absl::UnavailableError(absl::StrCat("bad /metrics answer: ", out));
  }
  return out.substr(body + 4);
}

double MetricValue(const std::string& text, const std::string& series) {
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.size() <= series.size() ||
        line.compare(0, series.size(), series) != 0 ||
        line[series.size()] != ' ') {
      continue;
    }
    double v = 0;
    if (absl::SimpleAtod(line.substr(series.size() + 1), &v)) return v;
  }
  return -1;
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
  absl::StatusOr<base::ProcMemory> m = base::ReadProcMemory(pid);
  return m.ok() ? m->rss_peak_kib : -1;
}

}  // namespace daxlease::k8s::testing
