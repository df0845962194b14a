#include "lib/k8s/label_syntax.h"

#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace daxlease::k8s {
namespace {

constexpr size_t kMaxName = 63;
constexpr size_t kMaxPrefix = 253;

// ([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9], at most 63 characters.
absl::Status CheckName(absl::string_view what, absl::string_view s) {
  if (s.size() > kMaxName) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " must be no more than ", kMaxName, " characters"));
  }
  bool ok = !s.empty() && absl::ascii_isalnum(s.front()) &&
            absl::ascii_isalnum(s.back());
  for (char c : s) {
    ok = ok && (absl::ascii_isalnum(c) || c == '-' || c == '_' || c == '.');
  }
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        what,
        " must consist of alphanumeric characters, '-', '_' or '.', and must "
        "start and end with an alphanumeric character"));
  }
  return absl::OkStatus();
}

// A lowercase RFC 1123 subdomain: dot-separated labels of [-a-z0-9] that
// start and end alphanumeric, at most 253 characters. `what` names the
// part in the message ("prefix part ", or "" for an object name).
absl::Status CheckSubdomain(absl::string_view what, absl::string_view s) {
  if (s.size() > kMaxPrefix) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, "must be no more than ", kMaxPrefix, " characters"));
  }
  bool ok = !s.empty();
  char prev = '.';
  for (char c : s) {
    const bool alnum = absl::ascii_isdigit(c) || absl::ascii_islower(c);
    if (c == '.') {
      ok = ok && (absl::ascii_isdigit(prev) || absl::ascii_islower(prev));
    } else if (c == '-') {
      ok = ok && prev != '.';
    } else {
      ok = ok && alnum;
    }
    prev = c;
  }
  ok = ok && (absl::ascii_isdigit(prev) || absl::ascii_islower(prev));
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        what,
        "a lowercase RFC 1123 subdomain must consist of lower case "
        "alphanumeric characters, '-' or '.', and must start and end with an "
        "alphanumeric character"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateLabelKey(absl::string_view key) {
  const size_t slash = key.find('/');
  if (slash == absl::string_view::npos) return CheckName("name part", key);
  if (absl::Status st = CheckSubdomain("prefix part ", key.substr(0, slash));
      !st.ok()) {
    return st;
  }
  return CheckName("name part", key.substr(slash + 1));
}

absl::Status ValidateLabelValue(absl::string_view value) {
  if (value.empty()) return absl::OkStatus();
  return CheckName("a valid label", value);
}

absl::Status ValidateObjectLabels(const nlohmann::json& obj) {
  if (!obj.is_object() || !obj.contains("metadata") ||
      !obj["metadata"].is_object() || !obj["metadata"].contains("labels") ||
      obj["metadata"]["labels"].is_null()) {
    return absl::OkStatus();
  }
  const nlohmann::json& labels = obj["metadata"]["labels"];
  if (!labels.is_object()) {
    return absl::InvalidArgumentError(
        "metadata.labels: Invalid value: not an object of strings");
  }
  for (const auto& [k, v] : labels.items()) {
    absl::Status st = ValidateLabelKey(k);
    if (!st.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "metadata.labels: Invalid value: \"", k, "\": ", st.message()));
    }
    if (!v.is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat("metadata.labels.", k, ": Invalid value: not a string"));
    }
    const std::string value = v.get<std::string>();
    st = ValidateLabelValue(value);
    if (!st.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "metadata.labels: Invalid value: \"", value, "\": ", st.message()));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateObjectName(absl::string_view name) {
  absl::Status st = CheckSubdomain("", name);
  if (st.ok()) return st;
  return absl::InvalidArgumentError(absl::StrCat(
      "metadata.name: Invalid value: \"", name, "\": ", st.message()));
}

}  // namespace daxlease::k8s
