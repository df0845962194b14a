// For tests and benchmarks of the recall channel: a simulated node agent
// (a ChannelClient that answers as a node agent whose clients flush at
// once), and the credential a real agent pod gets (a service-account token
// bound to a pod on its node).
#ifndef DAXLEASE_LIB_CHANNEL_SIM_AGENT_H_
#define DAXLEASE_LIB_CHANNEL_SIM_AGENT_H_

#include <atomic>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "lib/channel/client.h"
#include "lib/k8s/client.h"

namespace daxlease::channel {

// Makes the agents' service account NAMESPACE:NAME (if missing), a pod
// `pod` on `node` (a bare object: nothing runs it) and a token for kAudience
// bound to that pod (TokenRequest), as the kubelet projects into an agent
// pod. Needs an API server that issues tokens (--service-account-issuer,
// --service-account-signing-key-file).
absl::StatusOr<std::string> MintAgentToken(k8s::KubeClient& c,
                                           const std::string& ns,
                                           const std::string& sa,
                                           const std::string& pod,
                                           const std::string& node);

struct SimAgentOptions {
  RecordLocation record;
  std::string token;
  // Answer recalls (flushed), fences, revocations as soon as asked.
  bool ack_recalls = true;
  bool confirm_fences = true;
  bool ack_revocations = true;
};

class SimAgent {
 public:
  SimAgent(k8s::KubeClient& c, SimAgentOptions o);
  ~SimAgent();

  ChannelClient& client() { return *client_; }
  void set_ack_recalls(bool on) { ack_recalls_ = on; }
  // Recall items received (duplicates counted), fences, revocations.
  int64_t recalls_seen() const { return recalls_seen_.load(); }
  int64_t fences_seen() const { return fences_seen_.load(); }
  int64_t revoked_seen() const { return revoked_seen_.load(); }
  int64_t refused() const { return refused_.load(); }
  int64_t messages() const { return messages_.load(); }
  // Messages that carried at least one recall.
  int64_t recall_messages() const { return recall_messages_.load(); }
  std::set<std::string> recalled_leases();
  // Acks every lease recalled so far and not acked (after set_ack_recalls
  // was off).
  void AckPending();

 private:
  void OnMessage(const pb::OperatorMessage& m);

  SimAgentOptions options_;
  std::atomic<bool> ack_recalls_;
  std::atomic<int64_t> recalls_seen_{0};
  std::atomic<int64_t> fences_seen_{0};
  std::atomic<int64_t> revoked_seen_{0};
  std::atomic<int64_t> refused_{0};
  std::atomic<int64_t> messages_{0};
  std::atomic<int64_t> recall_messages_{0};
  absl::Mutex mu_;
  std::map<std::string, pb::RecallItem> recalled_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<ChannelClient> client_;
};

}  // namespace daxlease::channel

#endif  // DAXLEASE_LIB_CHANNEL_SIM_AGENT_H_
