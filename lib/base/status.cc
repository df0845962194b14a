#include "lib/base/status.h"

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace daxlease::base {

absl::StatusCode ErrnoToCode(int err) {
  switch (err) {
    case 0:
      return absl::StatusCode::kOk;
    case ENOENT:
    case ENXIO:
    case ENODEV:
      return absl::StatusCode::kNotFound;
    case ENOSPC:
    case EDQUOT:
    case ENOMEM:
    case EMFILE:
    case ENFILE:
      return absl::StatusCode::kResourceExhausted;
    case EEXIST:
      return absl::StatusCode::kAlreadyExists;
    case EBUSY:
    case EAGAIN:
    case EINTR:
      return absl::StatusCode::kUnavailable;
    case EACCES:
    case EPERM:
    case EROFS:
      return absl::StatusCode::kPermissionDenied;
    case EINVAL:
    case ENAMETOOLONG:
    case ENOTDIR:
    case EISDIR:
      return absl::StatusCode::kInvalidArgument;
    case EOPNOTSUPP:
      return absl::StatusCode::kUnimplemented;
    case ETIMEDOUT:
      return absl::StatusCode::kDeadlineExceeded;
    default:
      return absl::StatusCode::kInternal;
  }
}

absl::Status ErrnoStatus(absl::string_view op, absl::string_view path,
                         int err) {
  std::string msg =
      path.empty() ? std::string(op) : absl::StrCat(op, "(", path, ")");
  absl::StrAppend(&msg, ": ", std::strerror(err), " (errno ", err, ")");
  return absl::Status(ErrnoToCode(err), msg);
}

absl::Status Annotate(const absl::Status& s, absl::string_view context) {
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat(context, ": ", s.message()));
}

}  // namespace daxlease::base
