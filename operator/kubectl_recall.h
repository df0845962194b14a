// `kubectl daxlease recall`'s one write: create a DaxRecall exactly once,
// also when the API server's answer is lost. Apart from the plugin's main so
// a test can drive it over a client that fails the way networks do.
#ifndef DAXLEASE_OPERATOR_KUBECTL_RECALL_H_
#define DAXLEASE_OPERATOR_KUBECTL_RECALL_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "lib/api/types.h"
#include "lib/k8s/client.h"

namespace daxlease::op {

// Creates `recall` named `name` (metadata.generateName is never used: a
// repeated POST with it makes a second object). A name is the caller's alone
// (it carries a random tag), so the create is idempotent: AlreadyExists means
// an earlier attempt of ours was stored, and after an ambiguous failure
// (Unavailable, DeadlineExceeded, Internal, Unknown: the server may have
// stored it) the object is looked up by name before the POST is tried again
// (at most `attempts` POSTs). The object carries api::kRecallFinalizer from
// its creation. Returns the stored object.
// Whether `kubectl daxlease recall` may start a recall of this reason.
// Manual and Evict: yes (the operator resumes the volume once it is
// Quiesced). Snapshot, Reshape and Migrate: FAILED_PRECONDITION with what
// to use instead. Each is one half of a change whose other half only its
// driver does (the CSI CreateSnapshot's copy, ControllerExpandVolume's
// growth, a DaxMigration's copy and switch): the operator keeps such a
// volume Quiesced until the owner agent says that other half is done, so a
// recall made by hand would hold every holder off for good.
absl::Status CheckRecallReasonByHand(api::RecallReason reason);

absl::StatusOr<k8s::Json> CreateRecallOnce(k8s::KubeClient& client,
                                           const api::DaxRecall& recall,
                                           const std::string& name,
                                           int attempts = 3);

}  // namespace daxlease::op

#endif  // DAXLEASE_OPERATOR_KUBECTL_RECALL_H_
