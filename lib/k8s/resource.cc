#include "lib/k8s/resource.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace daxlease::k8s {

std::string Resource::ApiVersion() const {
  return group.empty() ? version : absl::StrCat(group, "/", version);
}

std::string Resource::Name() const {
  return group.empty() ? plural : absl::StrCat(plural, ".", group);
}

Resource CoordinationLeaseResource() {
  return {"coordination.k8s.io", "v1", "leases"};
}
Resource EventResource() { return {"", "v1", "events"}; }
Resource NamespaceResource() { return {"", "v1", "namespaces", false}; }
Resource ConfigMapResource() { return {"", "v1", "configmaps"}; }
Resource CrdResource() {
  return {"apiextensions.k8s.io", "v1", "customresourcedefinitions", false};
}

std::string ResourcePath(const Resource& r, absl::string_view ns,
                         absl::string_view name,
                         absl::string_view subresource) {
  std::string path = r.group.empty()
                         ? absl::StrCat("/api/", r.version)
                         : absl::StrCat("/apis/", r.group, "/", r.version);
  if (r.namespaced && !ns.empty()) absl::StrAppend(&path, "/namespaces/", ns);
  absl::StrAppend(&path, "/", r.plural);
  if (!name.empty()) absl::StrAppend(&path, "/", name);
  if (!name.empty() && !subresource.empty()) {
    absl::StrAppend(&path, "/", subresource);
  }
  return path;
}

std::string ObjectKey(absl::string_view ns, absl::string_view name) {
  return ns.empty() ? std::string(name) : absl::StrCat(ns, "/", name);
}

std::pair<std::string, std::string> SplitObjectKey(absl::string_view key) {
  size_t slash = key.find('/');
  if (slash == absl::string_view::npos) return {"", std::string(key)};
  return {std::string(key.substr(0, slash)),
          std::string(key.substr(slash + 1))};
}

}  // namespace daxlease::k8s
