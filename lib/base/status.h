// Error values for daxlease: absl::Status everywhere, whose codes are gRPC's,
// so a CSI handler can return what a lower layer produced unchanged.
//
// A failing syscall becomes a status exactly once, where it fails, through
// ErrnoStatus(), carrying the operation, the path and errno.
#ifndef DAXLEASE_LIB_BASE_STATUS_H_
#define DAXLEASE_LIB_BASE_STATUS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace daxlease::base {

// Maps errno to the status code a caller should act on (ENOENT -> NotFound,
// ENOSPC -> ResourceExhausted, EEXIST -> AlreadyExists, EBUSY -> Unavailable,
// EACCES/EPERM -> PermissionDenied, EINVAL -> InvalidArgument, else Internal).
absl::StatusCode ErrnoToCode(int err);

// "op(path): strerror (errno N)" with the mapped code. `path` may be empty.
absl::Status ErrnoStatus(absl::string_view op, absl::string_view path, int err);

// Prefixes the message of a non-OK status with `context`, keeping its code.
absl::Status Annotate(const absl::Status& s, absl::string_view context);

}  // namespace daxlease::base

#define DAXLEASE_CONCAT_INNER_(a, b) a##b
#define DAXLEASE_CONCAT_(a, b) DAXLEASE_CONCAT_INNER_(a, b)

// Returns the status from the enclosing function if `expr` is not OK.
#define RETURN_IF_ERROR(expr)                    \
  do {                                           \
    ::absl::Status _daxlease_st = (expr);        \
    if (!_daxlease_st.ok()) return _daxlease_st; \
  } while (0)

// `lhs = value of expr`, or returns its status from the enclosing function.
#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL_(DAXLEASE_CONCAT_(_daxlease_sor_, __LINE__), lhs, expr)
#define ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                           \
  if (!tmp.ok()) return tmp.status();          \
  lhs = std::move(tmp).value()

#endif  // DAXLEASE_LIB_BASE_STATUS_H_
