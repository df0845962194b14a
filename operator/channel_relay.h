// ChannelRelay: what the recall channel (lib/channel, proto/channel.proto)
// means to the operator. It decides nothing about the protocol: the
// answers it takes become the same signals the reconcile pass has always
// turned into lib/lease events (plan.h), and it asks agents only what the
// stored objects say is outstanding.
//
//   asking: after every pass whose writes succeeded (so the recall's start,
//   each lease's Recalling and deadline, each decided revoke are stored
//   before anyone is asked), Stored() takes from the written objects what
//   each node must do: holders flush and ack their Recalling leases, the
//   owner fences the leases whose revoke is decided, holders tell their
//   clients of a fenced revoke. Each node gets, in one message, what it has
//   not been sent on its current stream; a node that (re)connects gets all
//   of it again, so a new leader or a reconnected agent simply re-asks.
//
//   answering: an answer is taken only from the node it was asked of (the
//   holder node for acks and revocation acks, the volume's owner node for
//   fence confirmations), for the recall ID and epoch asked; any other is
//   refused, told to the sender and logged (a forged ack of another
//   node's lease is a warning). Taken answers are soft state, kept in
//   memory until the pass that stores their outcome: a leader that dies
//   first loses them and its successor asks again.
//
//   overlay: before the plan, Overlay() hands it the answers taken here
//   (World::channel_answers: shared, not copied; the relay copies them
//   before a change while a pass holds them), which it reads instead of
//   the agent-written status fields (releasedRecallID, fencedRecallID,
//   revocationAcknowledged): any agent credential can write those for any
//   lease, so with the channel on they release nothing. The leases read
//   are not edited (no lease is copied to carry an answer).
//
// Thread-safe.
#ifndef DAXLEASE_OPERATOR_CHANNEL_RELAY_H_
#define DAXLEASE_OPERATOR_CHANNEL_RELAY_H_

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "lib/channel/server.h"
#include "operator/plan.h"

namespace daxlease::op {

class ChannelRelay {
 public:
  // `enqueue(volume)` asks for a pass over a volume (an answer came).
  explicit ChannelRelay(std::function<void(const std::string&)> enqueue);

  // What to give the ChannelServer; then SetServer with it.
  channel::ChannelHandlers Handlers();
  void SetServer(channel::ChannelServer* server);

  void Overlay(World& world);
  // After a pass's writes: asks what the stored objects leave outstanding.
  void Stored(const World& desired);
  // In a pass, once the recall that `leases` answer is stored with its
  // deadline (lease::WhenToCarryOut: kRecallStart), before the pass's other
  // writes: asks their holders to flush and ack, as `desired` shows each
  // (Recalling, its recall ID, epoch and deadline). What the pass's
  // Stored() then asks is not sent twice on a stream; a pass that fails
  // after this leaves the ask, which the next stored pass keeps or drops.
  void AskRecalls(const World& desired, const std::vector<std::string>& leases);

  int64_t accepted() const { return accepted_.load(); }
  int64_t refused() const { return refused_.load(); }

 private:
  struct Asked {
    std::string volume;
    std::string node;  // who must answer
    std::string recall_id;
    int64_t epoch = 0;
    int64_t deadline_unix_ms = 0;  // a recall's (RecallItem.deadline_unix_ms)
  };

  // Whether `t` acknowledges the revocation of a lease at `epoch`.
  static bool RevocationAcked(const AgentAnswers& t, int64_t epoch);
  // taken_ to change: copied first if a pass holds it (Overlay).
  std::map<std::string, AgentAnswers>& TakenToEditLocked()
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Records lease `d` of `volume` (owner node `owner`) as what the stored
  // objects ask of it; false if nothing is outstanding for it.
  bool TrackLocked(const std::string& volume, const std::string& owner,
                   const api::DaxLease& d) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sends each node what it has not been sent of `leases`.
  void SendLocked(const std::set<std::string>& leases)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnConnect(const std::string& node);
  void OnReport(const std::string& node, const channel::pb::AgentReport& r,
                channel::pb::OperatorMessage& reply);
  // What `node` is asked, among `only` (null: every lease; a new stream,
  // so everything), that was not sent on its stream yet.
  channel::pb::OperatorMessage UnsentLocked(
      const std::string& node, const std::vector<std::string>* only)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool Check(const std::map<std::string, Asked>& asked, const char* what,
             const std::string& node, const std::string& lease,
             const std::string& recall_id, int64_t epoch,
             channel::pb::OperatorMessage& reply, std::string* volume)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::function<void(const std::string&)> enqueue_;
  std::atomic<channel::ChannelServer*> server_{nullptr};
  absl::Mutex mu_;
  // By lease name: what the stored objects say is outstanding. A recall's
  // item is built from its Asked when sent (one record per recalled lease,
  // N of them in a large recall); the few fences and revocations keep the
  // item to send beside it.
  std::map<std::string, Asked> recalls_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Asked> fences_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Asked> revoked_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, channel::pb::FenceItem> fence_items_
      ABSL_GUARDED_BY(mu_);
  std::map<std::string, channel::pb::RevokedItem> revoked_items_
      ABSL_GUARDED_BY(mu_);
  // Leases of each volume in the maps above.
  std::map<std::string, std::set<std::string>> leases_of_ ABSL_GUARDED_BY(mu_);
  // Per node, per lease: the item last sent on its current stream.
  std::map<std::string, std::map<std::string, std::string>> sent_
      ABSL_GUARDED_BY(mu_);
  // The answers taken, by lease: what Overlay hands the passes (shared,
  // copied on write while a pass holds it). Never null.
  std::shared_ptr<std::map<std::string, AgentAnswers>> taken_
      ABSL_GUARDED_BY(mu_);
  std::atomic<int64_t> accepted_{0};
  std::atomic<int64_t> refused_{0};
};

}  // namespace daxlease::op

#endif  // DAXLEASE_OPERATOR_CHANNEL_RELAY_H_
