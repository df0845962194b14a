// Label and field selectors, evaluated the way the API server does (used by
// FakeKubeClient and by informer-side filtering). Pure code.
#ifndef DAXLEASE_LIB_K8S_SELECTOR_H_
#define DAXLEASE_LIB_K8S_SELECTOR_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace daxlease::k8s {

// A parsed label selector: comma-separated requirements, all of which must
// hold: `k=v`, `k==v`, `k!=v` (true when k is absent), `k` (exists), `!k`,
// `k in (a,b)`, `k notin (a,b)`. Empty selector = everything.
class LabelSelector {
 public:
  static absl::StatusOr<LabelSelector> Parse(absl::string_view text);
  bool Matches(const std::map<std::string, std::string>& labels) const;
  // Matches obj.metadata.labels.
  bool Matches(const nlohmann::json& obj) const;

 private:
  struct Requirement {
    enum class Op { kIn, kNotIn, kExists, kNotExists } op;
    std::string key;
    std::vector<std::string> values;
  };
  std::vector<Requirement> reqs_;
};

// A field selector: `path=v`, `path==v`, `path!=v`, comma-separated, where
// path is a dotted JSON path into the object ("metadata.name",
// "spec.volume"). Non-string values compare by their JSON text.
class FieldSelector {
 public:
  static absl::StatusOr<FieldSelector> Parse(absl::string_view text);
  bool Matches(const nlohmann::json& obj) const;
  // The paths it constrains, in order.
  std::vector<std::string> Paths() const;

 private:
  struct Requirement {
    std::string path;
    std::string value;
    bool equal;
  };
  std::vector<Requirement> reqs_;
};

}  // namespace daxlease::k8s

#endif  // DAXLEASE_LIB_K8S_SELECTOR_H_
