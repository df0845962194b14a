// How Kubernetes API failures become absl::Status, so callers branch on codes:
//
//   HTTP 404                      -> NotFound
//   HTTP 409, reason AlreadyExists -> AlreadyExists   (create of an existing
//   name) HTTP 409, any other reason    -> Aborted          (Conflict: stale
//   resourceVersion;
//                                                      re-read and retry)
//   HTTP 410 (also a watch ERROR event with code 410)
//                                 -> OutOfRange       (resourceVersion too old
//                                 /
//                                                      Expired: re-list)
//   HTTP 422, 400                 -> InvalidArgument  (the server's message
//   kept) HTTP 401                      -> Unauthenticated HTTP 403 ->
//   PermissionDenied HTTP 429, 5xx, transport errors
//                                 -> Unavailable (after the client's bounded
//                                 retries)
//   HTTP 504 / server timeout     -> DeadlineExceeded
// The message always carries the HTTP code, the Status reason and the server's
// message, e.g. "HTTP 409 Conflict: Operation cannot be fulfilled on ...".
#ifndef DAXLEASE_LIB_K8S_ERRORS_H_
#define DAXLEASE_LIB_K8S_ERRORS_H_

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace daxlease::k8s {

// Maps an HTTP status code and response body (a metav1.Status JSON object,
// or anything else) to a status as above. OK for 2xx.
absl::Status StatusFromHttp(long http_code, absl::string_view body);

// Maps a metav1.Status object's fields (as found in watch ERROR events).
absl::Status StatusFromApiStatus(int code, absl::string_view reason,
                                 absl::string_view message);

inline bool IsConflict(const absl::Status& s) { return absl::IsAborted(s); }
// NotFound and AlreadyExists: use absl::IsNotFound / absl::IsAlreadyExists.
inline bool IsGone(const absl::Status& s) { return absl::IsOutOfRange(s); }
// 429 / 5xx / transport: worth retrying later.
inline bool IsRetryable(const absl::Status& s) {
  return absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s);
}

}  // namespace daxlease::k8s

#endif  // DAXLEASE_LIB_K8S_ERRORS_H_
