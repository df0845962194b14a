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

absl::Status CheckRecallReasonByHand(api::RecallReason reason) {
  switch (reason) {
    case api::RecallReason::kManual:
    case api::RecallReason::kEvict:
      return absl::OkStatus();
    case api::RecallReason::kSnapshot:
      return absl::FailedPreconditionError(
          "a Snapshot recall is made by the CSI driver for a VolumeSnapshot "
          "(it copies the volume while the holders are held off, then lets "
          "them back in); one made by hand would leave the volume Quiesced "
          "with nothing to resume it. Create a VolumeSnapshot, or recall "
          "with --reason Manual");
    case api::RecallReason::kReshape:
      return absl::FailedPreconditionError(
          "a Reshape recall is made by the CSI driver when the volume grows "
          "(ControllerExpandVolume: a larger PVC request); one made by hand "
          "would leave the volume Quiesced with nothing to resume it. Resize "
          "the PVC, or recall with --reason Manual");
    case api::RecallReason::kMigrate:
      return absl::FailedPreconditionError(
          "a Migrate recall is made by the operator for a DaxMigration; one "
          "made by hand would leave the volume Quiesced with nothing to "
          "resume it. Use `kubectl daxlease migrate VOLUME --to NODE`, or "
          "recall with --reason Manual");
  }
  return absl::InvalidArgumentError("unknown recall reason");
}

absl::StatusOr<k8s::Json> CreateRecallOnce(k8s::KubeClient& client,
                                           const api::DaxRecall& recall,
                                           const std::string& name,
                                           int attempts) {
  const k8s::Resource res = api::DaxRecallResource();
  k8s::Json obj = api::ToJson(recall);
  // With the recall finalizer: the operator's start is then one write.
  obj["metadata"] = {{"name", name},
                     {"finalizers", k8s::Json::array({api::kRecallFinalizer})}};
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
