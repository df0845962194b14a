#include "operator/kubectl_recall.h"

#include "lib/api/json.h"
#include "lib/api/resources.h"

namespace daxlease::op {
namespace {

bool Ambiguous(const absl::Status& s) {
  return absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s) ||
         absl::IsInternal(s) || absl::IsUnknown(s);
}

}  // namespace

absl::StatusOr<k8s::Json> CreateRecallOnce(k8s::KubeClient& client,
                                           const api::DaxRecall& recall,
                                           const std::string& name,
                                           int attempts) {
  const k8s::Resource res = api::DaxRecallResource();
  k8s::Json obj = api::ToJson(recall);
  obj["metadata"] = {{"name", name}};
  absl::Status last = absl::InvalidArgumentError("attempts must be >= 1");
  for (int i = 0; i < attempts; ++i) {
    absl::StatusOr<k8s::Json> created = client.Create(res, obj);
    if (created.ok()) return created;
    if (absl::IsAlreadyExists(created.status())) {
      return client.Get(res, "", name);  // an earlier attempt was stored
    }
    if (!Ambiguous(created.status())) return created.status();
    last = created.status();
    absl::StatusOr<k8s::Json> stored = client.Get(res, "", name);
    if (stored.ok()) return stored;
    if (!absl::IsNotFound(stored.status())) return last;  // still unknown
  }
  return last;
}

}  // namespace daxlease::op
