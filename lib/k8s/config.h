// Where the API server is and how to authenticate to it: from a kubeconfig
// file (yaml-cpp) or from inside a pod (service account).
#ifndef DAXLEASE_LIB_K8S_CONFIG_H_
#define DAXLEASE_LIB_K8S_CONFIG_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace daxlease::k8s {

// Everything the HTTP transport needs. PEM material is held in memory (the
// *_pem fields), whether the kubeconfig named a file or embedded base64 data,
// so a config is self-contained once loaded.
struct KubeConfig {
  std::string server;           // "https://127.0.0.1:6443", no trailing '/'
  std::string ca_pem;           // empty: the system trust store
  std::string client_cert_pem;  // client-certificate authentication, or empty
  std::string client_key_pem;
  std::string token;  // bearer token, or empty
  // Path of a token file re-read on every request when set (in-cluster
  // projected service-account tokens rotate); takes precedence over `token`.
  std::string token_file;
  bool insecure_skip_tls_verify = false;
  std::string default_namespace = "default";  // from the context, or the pod's
};

// Parses kubeconfig YAML text. `context` empty = current-context. Relative file
// paths in it are resolved against `base_dir`. Supports clusters (server,
// certificate-authority[-data], insecure-skip-tls-verify), users (token,
// tokenFile, client-certificate[-data], client-key[-data]) and the context's
// namespace. Errors: InvalidArgument for bad YAML or missing entries,
// NotFound for a named file that does not exist.
absl::StatusOr<KubeConfig> ParseKubeConfig(absl::string_view yaml,
                                           absl::string_view base_dir,
                                           absl::string_view context = "");

// Reads and parses a kubeconfig file.
absl::StatusOr<KubeConfig> LoadKubeConfig(absl::string_view path,
                                          absl::string_view context = "");

// In-cluster: KUBERNETES_SERVICE_HOST/PORT, the service-account token and CA
// under `sa_dir` (default /var/run/secrets/kubernetes.io/serviceaccount) and
// its namespace file. FailedPrecondition when not running in a pod.
absl::StatusOr<KubeConfig> LoadInClusterConfig(
    absl::string_view sa_dir = "/var/run/secrets/kubernetes.io/serviceaccount");

// The usual search order: `explicit_path` if not empty, else $KUBECONFIG,
// else in-cluster when KUBERNETES_SERVICE_HOST is set, else ~/.kube/config.
absl::StatusOr<KubeConfig> LoadDefaultConfig(
    absl::string_view explicit_path = "");

}  // namespace daxlease::k8s

#endif  // DAXLEASE_LIB_K8S_CONFIG_H_
