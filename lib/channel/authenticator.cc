#include "lib/channel/authenticator.h"

#include "absl/strings/str_cat.h"

namespace daxlease::channel {
namespace {

k8s::Resource TokenReviewResource() {
  return {"authentication.k8s.io", "v1", "tokenreviews", false};
}
k8s::Resource PodResource() { return {"", "v1", "pods"}; }

constexpr char kPodNameExtra[] = "authentication.kubernetes.io/pod-name";
constexpr char kPodUidExtra[] = "authentication.kubernetes.io/pod-uid";

std::string FirstExtra(const k8s::Json& user, const char* key) {
  const k8s::Json extra = user.value("extra", k8s::Json::object());
  if (!extra.is_object() || !extra.contains(key)) return "";
  const k8s::Json& v = extra[key];
  if (!v.is_array() || v.empty() || !v[0].is_string()) return "";
  return v[0].get<std::string>();
}

}  // namespace

TokenReviewAuthenticator::TokenReviewAuthenticator(k8s::KubeClient& client,
                                                   std::string service_account)
    : client_(client), service_account_(std::move(service_account)) {}

absl::StatusOr<std::string> TokenReviewAuthenticator::NodeOf(
    const std::string& bearer_token) {
  if (bearer_token.empty()) {
    return absl::UnauthenticatedError("no bearer token");
  }
  k8s::Json review = {
      {"apiVersion", "authentication.k8s.io/v1"},
      {"kind", "TokenReview"},
      // Create() wants a name; the server ignores it for a review.
      {"metadata", {{"name", "daxlease-channel"}}},
      {"spec", {{"token", bearer_token}, {"audiences", {kAudience}}}}};
  absl::StatusOr<k8s::Json> done =
      client_.Create(TokenReviewResource(), review);
  if (!done.ok()) {
    return absl::UnavailableError(
        absl::StrCat("TokenReview: ", done.status().message()));
  }
  const k8s::Json st = done->value("status", k8s::Json::object());
  if (!st.is_object() || !st.value("authenticated", false)) {
    return absl::UnauthenticatedError(
        absl::StrCat("token not authenticated for audience ", kAudience, ": ",
                     st.is_object() ? st.value("error", "") : ""));
  }
  const k8s::Json user = st.value("user", k8s::Json::object());
  const std::string username = user.value("username", "");
  const std::string want =
      absl::StrCat("system:serviceaccount:", service_account_);
  if (username != want) {
    return absl::UnauthenticatedError(
        absl::StrCat("token is ", username, ", not the agents' ", want));
  }
  const std::string pod = FirstExtra(user, kPodNameExtra);
  const std::string uid = FirstExtra(user, kPodUidExtra);
  if (pod.empty() || uid.empty()) {
    return absl::UnauthenticatedError(
        "token is not bound to a pod (request it with boundObjectRef)");
  }
  const std::string ns = service_account_.substr(0, service_account_.find(':'));
  absl::StatusOr<k8s::Json> p = client_.Get(PodResource(), ns, pod);
  if (absl::IsNotFound(p.status())) {
    return absl::UnauthenticatedError(
        absl::StrCat("pod ", ns, "/", pod, " of the token is gone"));
  }
  if (!p.ok()) {
    return absl::UnavailableError(
        absl::StrCat("pod ", ns, "/", pod, ": ", p.status().message()));
  }
  if (k8s::UidOf(*p) != uid) {
    return absl::UnauthenticatedError(absl::StrCat(
        "pod ", ns, "/", pod, " is not the one the token was bound to"));
  }
  const std::string node =
      p->value("spec", k8s::Json::object()).value("nodeName", "");
  if (node.empty()) {
    return absl::UnauthenticatedError(
        absl::StrCat("pod ", ns, "/", pod, " is on no node"));
  }
  return node;
}

void FakeAuthenticator::Add(const std::string& token, const std::string& node) {
  absl::MutexLock l(&mu_);
  nodes_[token] = node;
}

absl::StatusOr<std::string> FakeAuthenticator::NodeOf(
    const std::string& bearer_token) {
  absl::MutexLock l(&mu_);
  auto it = nodes_.find(bearer_token);
  if (it == nodes_.end()) return absl::UnauthenticatedError("unknown token");
  return it->second;
}

}  // namespace daxlease::channel
