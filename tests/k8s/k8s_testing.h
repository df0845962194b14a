// Helpers for tests against the shared control plane (label k8s; see
// k8s_test.cmake): the kubeconfig CTest provides, clients, throwaway
// namespaces and CRDs.
#ifndef DAXLEASE_TESTS_K8S_K8S_TESTING_H_
#define DAXLEASE_TESTS_K8S_K8S_TESTING_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "lib/k8s/client.h"
#include "lib/k8s/rest_client.h"

namespace daxlease::k8s::testing {

// $DAXLEASE_KUBECONFIG if it names a readable file, else "". Tests skip
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

}  // namespace daxlease::k8s::testing

#endif  // DAXLEASE_TESTS_K8S_K8S_TESTING_H_
