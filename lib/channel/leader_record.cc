#include "lib/channel/leader_record.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace daxlease::channel {

absl::StatusOr<RecordLocation> ParseRecordLocation(const std::string& s) {
  std::vector<std::string> parts = absl::StrSplit(s, '/');
  if (parts.size() != 2 || parts[0].empty() || parts[1].empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("channel record must be NAMESPACE/NAME, not \"", s, "\""));
  }
  return RecordLocation{parts[0], parts[1]};
}

absl::StatusOr<LeaderRecord> ReadLeaderRecord(k8s::KubeClient& c,
                                              const RecordLocation& at) {
  absl::StatusOr<k8s::Json> cm =
      c.Get(k8s::ConfigMapResource(), at.ns, at.name);
  if (!cm.ok()) return cm.status();
  const k8s::Json data = cm->value("data", k8s::Json::object());
  if (!data.is_object()) {
    return absl::InvalidArgumentError("channel record has no data");
  }
  LeaderRecord r;
  r.endpoint = data.value("endpoint", "");
  r.certificate = data.value("certificate", "");
  r.identity = data.value("identity", "");
  if (r.endpoint.empty() || r.certificate.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("channel record ", at.ns, "/", at.name,
                     " lacks the endpoint or the certificate"));
  }
  return r;
}

absl::Status WriteLeaderRecord(k8s::KubeClient& c, const RecordLocation& at,
                               const LeaderRecord& r) {
  k8s::Json data = {{"endpoint", r.endpoint},
                    {"certificate", r.certificate},
                    {"identity", r.identity}};
  absl::StatusOr<k8s::Json> patched =
      c.Patch(k8s::ConfigMapResource(), at.ns, at.name, k8s::PatchType::kMerge,
              {{"data", data}});
  if (patched.ok()) return absl::OkStatus();
  if (!absl::IsNotFound(patched.status())) return patched.status();
  k8s::Json obj = {{"apiVersion", "v1"},
                   {"kind", "ConfigMap"},
                   {"metadata", {{"namespace", at.ns}, {"name", at.name}}},
                   {"data", data}};
  absl::StatusOr<k8s::Json> created = c.Create(k8s::ConfigMapResource(), obj);
  if (created.ok()) return absl::OkStatus();
  if (absl::IsAlreadyExists(created.status())) {
    return WriteLeaderRecord(c, at, r);
  }
  return created.status();
}

}  // namespace daxlease::channel
