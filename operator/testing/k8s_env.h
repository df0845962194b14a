// Helpers for operator tests against a real kube-apiserver (label k8s): the
// client for the test control plane, CRD installation, the operator binary
// as a subprocess, and polling.
#ifndef DAXLEASE_OPERATOR_TESTING_K8S_ENV_H_
#define DAXLEASE_OPERATOR_TESTING_K8S_ENV_H_

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "lib/k8s/client.h"

namespace daxlease::op::testing {

// Path of the kubeconfig of the test control plane, or "" when none is
// running (see k8s_env.cc for where it is looked up).
std::string TestKubeconfig();

// A client for `kubeconfig`.
absl::StatusOr<std::unique_ptr<k8s::KubeClient>> ClientFor(
    const std::string& kubeconfig);

// Creates or updates the CRDs of manifests/crd/ (kubectl apply) and waits
// until the server serves them. Idempotent.
absl::Status InstallCrds(const std::string& kubeconfig);

// Runs `kubectl --kubeconfig K args...`; returns its exit code, stdout in
// `out` when given.
int Kubectl(const std::string& kubeconfig, const std::string& args,
            std::string* out = nullptr);

// The daxlease-operator binary as a child process; killed (SIGKILL) and
// reaped on destruction. Output goes to a log file kept for failures.
class OperatorProcess {
 public:
  OperatorProcess(const std::string& kubeconfig, std::vector<std::string> args,
                  const std::string& log_name);
  ~OperatorProcess();
  OperatorProcess(const OperatorProcess&) = delete;
  OperatorProcess& operator=(const OperatorProcess&) = delete;

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

// Peak resident set (VmHWM) of `pid` in KiB, or -1.
int64_t PeakRssKib(pid_t pid);

}  // namespace daxlease::op::testing

#endif  // DAXLEASE_OPERATOR_TESTING_K8S_ENV_H_
