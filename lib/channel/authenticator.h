// Who an agent on the recall channel speaks for. The agent presents a
// credential the cluster issued to it; the operator asks the API server
// what it proves, and from that which node the agent runs on. An agent may
// then answer only for its own node's leases (holder acks, revocation acks)
// and for the volumes its node owns (fence confirmations).
#ifndef DAXLEASE_LIB_CHANNEL_AUTHENTICATOR_H_
#define DAXLEASE_LIB_CHANNEL_AUTHENTICATOR_H_

#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "lib/k8s/client.h"

namespace daxlease::channel {

// The audience channel tokens are requested for (TokenRequest) and checked
// against (TokenReview), so a token made for the API server, or for anything
// else, is not accepted here and a channel token is useless elsewhere.
inline constexpr char kAudience[] = "daxlease-operator";

class Authenticator {
 public:
  virtual ~Authenticator() = default;
  // The node `bearer_token` speaks for; Unauthenticated when it proves
  // nothing we accept, Unavailable when the check itself failed (retry).
  // Thread-safe.
  virtual absl::StatusOr<std::string> NodeOf(
      const std::string& bearer_token) = 0;
};

// A service-account token bound to a pod (what the kubelet projects into a
// pod, or TokenRequest with boundObjectRef kind Pod): TokenReview with
// audience kAudience must say it is authenticated as exactly
// system:serviceaccount:<service_account>, bound to a pod; the pod (read
// from the API server, its uid equal to the token's) names the node in
// spec.nodeName. `service_account` is "NAMESPACE:NAME", the agents' account:
// a token of any other account (a workload on that node) is refused.
class TokenReviewAuthenticator final : public Authenticator {
 public:
  TokenReviewAuthenticator(k8s::KubeClient& client,
                           std::string service_account);
  absl::StatusOr<std::string> NodeOf(const std::string& bearer_token) override;

 private:
  k8s::KubeClient& client_;
  const std::string service_account_;
};

// Tokens mapped to nodes by the test.
class FakeAuthenticator final : public Authenticator {
 public:
  void Add(const std::string& token, const std::string& node);
  absl::StatusOr<std::string> NodeOf(const std::string& bearer_token) override;

 private:
  absl::Mutex mu_;
  std::map<std::string, std::string> nodes_ ABSL_GUARDED_BY(mu_);
};

}  // namespace daxlease::channel

#endif  // DAXLEASE_LIB_CHANNEL_AUTHENTICATOR_H_
