#include "lib/k8s/errors.h"

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace daxlease::k8s {

absl::Status StatusFromApiStatus(int code, absl::string_view reason,
                                 absl::string_view message) {
  if (code >= 200 && code < 300) return absl::OkStatus();
  std::string text = absl::StrCat(
      "HTTP ", code, " ", reason.empty() ? "Error" : reason, ": ", message);
  switch (code) {
    case 400:
    case 422:
      return absl::InvalidArgumentError(text);
    case 401:
      return absl::UnauthenticatedError(text);
    case 403:
      return absl::PermissionDeniedError(text);
    case 404:
      return absl::NotFoundError(text);
    case 409:
      if (reason == "AlreadyExists") return absl::AlreadyExistsError(text);
      return absl::AbortedError(text);
    case 410:
      return absl::OutOfRangeError(text);
    case 504:
      return absl::DeadlineExceededError(text);
    case 429:
      return absl::UnavailableError(text);
    default:
      if (code >= 500) return absl::UnavailableError(text);
      return absl::UnknownError(text);
  }
}

absl::Status StatusFromHttp(long http_code, absl::string_view body) {
  if (http_code >= 200 && http_code < 300) return absl::OkStatus();
  std::string reason, message;
  nlohmann::json j = nlohmann::json::parse(body, nullptr, false);
  if (j.is_object() && j.value("kind", "") == "Status") {
    reason = j.value("reason", "");
    message = j.value("message", "");
  } else {
    message = std::string(body.substr(0, 512));
  }
  return StatusFromApiStatus(static_cast<int>(http_code), reason, message);
}

}  // namespace daxlease::k8s
