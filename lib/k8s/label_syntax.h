// Label keys and values as the API server validates them (Kubernetes API
// conventions, apimachinery's IsQualifiedName / IsValidLabelValue), so that
// FakeKubeClient and selector parsing refuse what the real server refuses.
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

}  // namespace daxlease::k8s

#endif  // DAXLEASE_LIB_K8S_LABEL_SYNTAX_H_
