// Label keys and values, and object names, as the API server validates them
// (Kubernetes API conventions, apimachinery's IsQualifiedName /
// IsValidLabelValue / IsDNS1123Subdomain), so that FakeKubeClient and
// selector parsing refuse what the real server refuses.
// Pure code.
#ifndef DAXLEASE_LIB_K8S_LABEL_SYNTAX_H_
#define DAXLEASE_LIB_K8S_LABEL_SYNTAX_H_

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace daxlease::k8s {

// A label key: [prefix/]name, the prefix a DNS subdomain (lowercase, at most
// 253 characters), the name at most 63 characters of [-_.A-Za-z0-9] that
// start and end alphanumeric. InvalidArgument saying why otherwise.
absl::Status ValidateLabelKey(absl::string_view key);

// A label value: empty, or at most 63 characters of [-_.A-Za-z0-9] that
// start and end alphanumeric. InvalidArgument saying why otherwise.
absl::Status ValidateLabelValue(absl::string_view value);

// obj.metadata.labels (absent or null: OK): an object of string values with
// valid keys and values. InvalidArgument with the server's wording
// ("metadata.labels: Invalid value: ...") otherwise.
absl::Status ValidateObjectLabels(const nlohmann::json& obj);

// An object's metadata.name as the API server checks it for custom
// resources and most built-in kinds: a lowercase RFC 1123 subdomain (dot-
// separated [-a-z0-9] labels that start and end alphanumeric), at most 253
// characters. InvalidArgument with the server's wording ("metadata.name:
// Invalid value: ...") otherwise.
absl::Status ValidateObjectName(absl::string_view name);

}  // namespace daxlease::k8s

#endif  // DAXLEASE_LIB_K8S_LABEL_SYNTAX_H_
