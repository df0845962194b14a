// The one test environment for tests and benchmarks against a real
// kube-apiserver (label k8s; see k8s_test.cmake): the kubeconfig CTest
// provides, clients, throwaway namespaces, CRDs (a test CRD and daxlease's
// own), kubectl, child processes (the operator binary) and polling.
#ifndef DAXLEASE_TESTS_K8S_K8S_TESTING_H_
#define DAXLEASE_TESTS_K8S_K8S_TESTING_H_

#include <sys/types.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "lib/k8s/client.h"
#include "lib/k8s/rest_client.h"

namespace daxlease::k8s::testing {

// $DAXLEASE_KUBECONFIG (else $DAXLEASE_TEST_KUBECONFIG) if it names a
// readable file, else "". Tests skip
// (fail under CI) through DAXLEASE_REQUIRE(!KubeconfigPath().empty(), ...).
std::string KubeconfigPath();
// The unprivileged token user's kubeconfig: $DAXLEASE_K8S_USER_KUBECONFIG,
// else "kubeconfig-user" beside KubeconfigPath(); "" when not readable.
std::string UserKubeconfigPath();

// A namespaced test CRD, widgets.k8stest.daxlease.io/v1 (kind Widget): spec
// {size: integer >= 1 (required), color}, status {phase, count, writers}
// through the status subresource. Apply with EnsureCrd(c, WidgetCrd()).
Resource WidgetResource();
Json WidgetCrd();
Json Widget(const std::string& ns, const std::string& name, int size);

// A RestKubeClient for `kubeconfig` (default: KubeconfigPath()).
absl::StatusOr<std::unique_ptr<RestKubeClient>> NewClient(
    const std::string& kubeconfig = "");

// Creates a namespace named `prefix` + a random suffix and returns its name.
// Namespaces are never finalized on this control plane (no
// kube-controller-manager), so tests leave them behind; names never repeat.
absl::StatusOr<std::string> CreateTestNamespace(KubeClient& c,
                                                absl::string_view prefix);

// Creates (or keeps) the CustomResourceDefinition `crd` and waits until it
// is Established and its resource answers a list. Idempotent.
absl::Status EnsureCrd(KubeClient& c, const Json& crd);

// A unique-enough name suffix: lowercase hex, 8 chars.
std::string RandomSuffix();

// Creates or updates the daxlease CRDs of manifests/crd/ (kubectl apply) and
// waits until the server has established them. Idempotent.
absl::Status InstallDaxleaseCrds(const std::string& kubeconfig);

// Runs `kubectl --kubeconfig K args...`; returns its exit code, its output
// (stdout and stderr) in `out` when given.
int Kubectl(const std::string& kubeconfig, const std::string& args,
            std::string* out = nullptr);

// A program (argv[0] a path) as a child process, its output appended to
// $TEST_TMPDIR (or /tmp)/<log_name>-<pid>.log; killed (SIGKILL) and reaped
// on destruction.
class ChildProcess {
 public:
  ChildProcess(std::vector<std::string> argv, const std::string& log_name);
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  bool running();
  void Kill(int sig);  // sends `sig` and reaps
  std::string Log() const;
  const std::string& log_path() const { return log_path_; }

 private:
  pid_t pid_ = -1;
  std::string log_path_;
};

// Polls `pred` every 20 ms until it is true (true) or `timeout` (false).
bool WaitFor(const std::function<bool()>& pred, absl::Duration timeout);

// The port a daemon logged it serves /metrics on: the `port` field of its
// first log line with event=`event` (operator.metrics, agent.metrics), or -1.
int LoggedMetricsPort(const std::string& log, const std::string& event);
// GET http://127.0.0.1:`port`/metrics: the body, or Unavailable.
absl::StatusOr<std::string> ScrapeMetrics(int port);
// The value of the sample `series` (name with its labels exactly as
// exposed, e.g. `workqueue_adds_total{name="daxvolume"}`) in the text
// exposition `text`, or -1 when it is absent.
double MetricValue(const std::string& text, const std::string& series);

// Peak resident set (VmHWM) of `pid` in KiB, or -1.
int64_t PeakRssKib(pid_t pid);

}  // namespace daxlease::k8s::testing

#endif  // DAXLEASE_TESTS_K8S_K8S_TESTING_H_
