// Addressing of Kubernetes API resources by group/version/resource, and the
// REST paths built from them. Pure code, no I/O.
#ifndef DAXLEASE_LIB_K8S_RESOURCE_H_
#define DAXLEASE_LIB_K8S_RESOURCE_H_

#include <string>

#include "absl/strings/string_view.h"

namespace daxlease::k8s {

// One kind of object on the API server, e.g. {"coordination.k8s.io", "v1",
// "leases", true}. `group` is empty for the core group ("/api/v1/...").
// `namespaced` = false for cluster-scoped resources (CRDs, DaxVolume, ...):
// their namespace arguments must then be empty.
struct Resource {
  std::string group;
  std::string version;
  std::string plural;
  bool namespaced = true;

  // "group/version" or "version" for the core group (an object's apiVersion).
  std::string ApiVersion() const;
  // "plural.group" (e.g. "leases.coordination.k8s.io"), for messages and maps.
  std::string Name() const;
  bool operator==(const Resource&) const = default;
};

// Well-known resources.
// coordination.k8s.io/v1 leases: leader election locks, not DaxLeases.
Resource CoordinationLeaseResource();
Resource EventResource();      // v1 events (core)
Resource NamespaceResource();  // v1 namespaces (cluster-scoped)
Resource ConfigMapResource();  // v1 configmaps
Resource CrdResource();  // apiextensions.k8s.io/v1 customresourcedefinitions

// The REST path of a collection (`name` empty) or of one object, optionally a
// subresource ("status"). For a namespaced resource and empty `ns` the path is
// the all-namespaces collection. Example:
//   /apis/daxlease.io/v1alpha1/daxvolumes/vol-1/status
//   /api/v1/namespaces/default/configmaps
// Names are not escaped: Kubernetes names are DNS subdomains.
std::string ResourcePath(const Resource& r, absl::string_view ns,
                         absl::string_view name = "",
                         absl::string_view subresource = "");

// "ns/name", or "name" when `ns` is empty: the key used by informers and
// work queues (as client-go's MetaNamespaceKeyFunc).
std::string ObjectKey(absl::string_view ns, absl::string_view name);
// Splits a key produced by ObjectKey back into {namespace, name}.
std::pair<std::string, std::string> SplitObjectKey(absl::string_view key);

}  // namespace daxlease::k8s

#endif  // DAXLEASE_LIB_K8S_RESOURCE_H_
