#include "operator/channel_relay.h"

#include <atomic>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "lib/base/log.h"

namespace daxlease::op {
namespace {

namespace pb = channel::pb;

// What was sent about a lease (sent_ is by lease): the item's kind and the
// recall or epoch it asks about.
std::string RecallKey(const std::string& id) { return absl::StrCat("r/", id); }
std::string FenceKey(const std::string& id) { return absl::StrCat("f/", id); }
std::string RevokedKey(int64_t epoch) { return absl::StrCat("v/", epoch); }

const std::string& HolderNode(const api::DaxLease& l) {
  return l.status.bound_to.has_value() ? l.status.bound_to->holder_node
                                       : l.spec.holder_node;
}

}  // namespace

ChannelRelay::ChannelRelay(std::function<void(const std::string&)> enqueue)
    : enqueue_(std::move(enqueue)),
      taken_(std::make_shared<std::map<std::string, AgentAnswers>>()) {}

channel::ChannelHandlers ChannelRelay::Handlers() {
  channel::ChannelHandlers h;
  h.on_connect = [this](const std::string& node) { OnConnect(node); };
  h.on_report = [this](const std::string& node, const pb::AgentReport& r,
                       pb::OperatorMessage& reply) {
    OnReport(node, r, reply);
  };
  return h;
}

void ChannelRelay::SetServer(channel::ChannelServer* server) {
  server_.store(server);
}

void ChannelRelay::Overlay(World& world) {
  // Each answer was checked against what was asked (recall ID, epoch); the
  // plan takes it only for the recall the lease answers as read, which may
  // be through the DaxRecall's record while the lease object lags (plan.h),
  // so it is passed on as it came: all of them, shared (a pass over N acks
  // copies none).
  absl::MutexLock l(&mu_);
  world.channel_answers = taken_;
}

bool ChannelRelay::RevocationAcked(const AgentAnswers& t, int64_t epoch) {
  return t.revocation_acked_epoch != 0 && t.revocation_acked_epoch == epoch;
}

std::map<std::string, AgentAnswers>& ChannelRelay::TakenToEditLocked() {
  if (taken_.use_count() > 1) {
    taken_ = std::make_shared<std::map<std::string, AgentAnswers>>(*taken_);
  } else {
    // The last pass's reads of it (ended by its release of the count, on
    // any thread) happen before this edit.
    std::atomic_thread_fence(std::memory_order_acquire);
  }
  return *taken_;
}

void ChannelRelay::Stored(const World& desired) {
  absl::MutexLock l(&mu_);
  const std::string& volume = desired.volume_name;
  std::set<std::string> before = std::move(leases_of_[volume]);
  leases_of_.erase(volume);
  for (const std::string& lease : before) {
    recalls_.erase(lease);
    fences_.erase(lease);
    revoked_.erase(lease);
    fence_items_.erase(lease);
    revoked_items_.erase(lease);
  }
  std::set<std::string> mine;
  const std::string owner =
      desired.volume.has_value() ? desired.volume->spec.owner_node : "";
  for (const api::DaxLease& d : desired.leases) {
    if (TrackLocked(volume, owner, d)) mine.insert(d.metadata.name);
  }
  // Answers whose outcome is decided are done; they are kept while the
  // lease answers the same recall (its lease object may lag, and until the
  // recall's outcome is stored a pass may read it Recalling again: the
  // answer is taken again rather than asked again), dropped once it
  // answers another or is gone.
  std::map<std::string, const std::string*> recall_of;
  for (const api::DaxLease& d : desired.leases) {
    recall_of[d.metadata.name] = &d.status.recall_id;
  }
  for (const std::string& lease : before) {
    if (mine.contains(lease)) continue;
    // Not outstanding now: if it is again later, it is asked again (a
    // duplicate the agent answers from its current state), never left
    // waiting for an answer that would be refused.
    for (auto& [n, sent] : sent_) sent.erase(lease);
    auto t = taken_->find(lease);
    if (t == taken_->end()) continue;
    auto r = recall_of.find(lease);
    if (r == recall_of.end() || (*r->second != t->second.released_recall_id &&
                                 *r->second != t->second.fenced_recall_id)) {
      TakenToEditLocked().erase(lease);
    } else {
      leases_of_[volume].insert(lease);  // looked at again next time
    }
  }
  if (!mine.empty()) leases_of_[volume].insert(mine.begin(), mine.end());
  SendLocked(mine);
}

void ChannelRelay::AskRecalls(const World& desired,
                              const std::vector<std::string>& leases) {
  absl::MutexLock l(&mu_);
  const std::string& volume = desired.volume_name;
  const std::string owner =
      desired.volume.has_value() ? desired.volume->spec.owner_node : "";
  std::set<std::string> wanted(leases.begin(), leases.end());
  std::set<std::string> asked;
  for (const api::DaxLease& d : desired.leases) {
    if (!wanted.contains(d.metadata.name)) continue;
    const api::DaxLeaseStatus& st = d.status;
    if (st.state != api::LeaseState::kRecalling) continue;  // recalls only
    fences_.erase(d.metadata.name);
    revoked_.erase(d.metadata.name);
    if (TrackLocked(volume, owner, d)) asked.insert(d.metadata.name);
  }
  if (asked.empty()) return;
  leases_of_[volume].insert(asked.begin(), asked.end());
  SendLocked(asked);
}

bool ChannelRelay::TrackLocked(const std::string& volume,
                               const std::string& owner,
                               const api::DaxLease& d) {
  const std::string& name = d.metadata.name;
  const api::DaxLeaseStatus& st = d.status;
  if (!st.state.has_value()) return false;
  const std::string& holder = HolderNode(d);
  if (*st.state == api::LeaseState::kRecalling) {
    recalls_[name] = {
        volume, holder, st.recall_id, st.epoch,
        st.deadline.has_value() ? absl::ToUnixMillis(*st.deadline) : 0};
    return true;
  }
  if (*st.state == api::LeaseState::kRevoked && st.fence_required &&
      !owner.empty()) {
    fences_[name] = {volume, owner, st.recall_id, st.epoch};
    pb::FenceItem& it = fence_items_[name];
    it.set_lease(name);
    it.set_volume(volume);
    it.set_recall_id(st.recall_id);
    it.set_epoch(st.epoch);
    it.set_holder_node(holder);
    it.set_lease_uid(d.metadata.uid);
    return true;
  }
  // Acknowledged as taken here (the status field answers nothing with the
  // channel on): a pass whose RevocationAck was refused is not asked again.
  auto t = taken_->find(name);
  const bool acknowledged =
      t != taken_->end() && RevocationAcked(t->second, st.epoch);
  if (*st.state == api::LeaseState::kRevoked && !st.fence_required &&
      !acknowledged) {
    revoked_[name] = {volume, holder, st.recall_id, st.epoch};
    pb::RevokedItem& it = revoked_items_[name];
    it.set_lease(name);
    it.set_volume(volume);
    it.set_epoch(st.epoch);
    it.set_reason(st.reason);
    return true;
  }
  return false;
}

void ChannelRelay::SendLocked(const std::set<std::string>& leases) {
  channel::ChannelServer* server = server_.load();
  if (server == nullptr) return;
  // Each node's leases, so a pass over N leases asks k nodes in O(N).
  std::map<std::string, std::vector<std::string>> by_node;
  for (const std::string& lease : leases) {
    if (auto it = recalls_.find(lease); it != recalls_.end()) {
      by_node[it->second.node].push_back(lease);
    } else if (auto it = fences_.find(lease); it != fences_.end()) {
      by_node[it->second.node].push_back(lease);
    } else if (auto it = revoked_.find(lease); it != revoked_.end()) {
      by_node[it->second.node].push_back(lease);
    }
  }
  for (const auto& [node, names] : by_node) {
    pb::OperatorMessage m = UnsentLocked(node, &names);
    if (m.recalls_size() + m.fences_size() + m.revoked_size() == 0) continue;
    if (!server->Send(node, m)) {
      // Not connected: all of it goes when it connects.
      sent_.erase(node);
      continue;
    }
    base::LogDebug("operator.channel.asked",
                   {{"node", node},
                    {"recalls", absl::StrCat(m.recalls_size())},
                    {"fences", absl::StrCat(m.fences_size())},
                    {"revoked", absl::StrCat(m.revoked_size())}});
  }
}

pb::OperatorMessage ChannelRelay::UnsentLocked(
    const std::string& node, const std::vector<std::string>* only) {
  std::map<std::string, std::string>& sent = sent_[node];
  if (only == nullptr) sent.clear();
  pb::OperatorMessage m;
  auto visit = [&](const std::string& lease) {
    if (auto it = recalls_.find(lease);
        it != recalls_.end() && it->second.node == node) {
      const Asked& a = it->second;
      if (auto t = taken_->find(lease);
          t != taken_->end() && t->second.released_recall_id == a.recall_id) {
        return;  // answered; its outcome is on its way to the store
      }
      if (std::string k = RecallKey(a.recall_id); sent[lease] != k) {
        sent[lease] = k;
        pb::RecallItem* item = m.add_recalls();
        item->set_lease(lease);
        item->set_volume(a.volume);
        item->set_recall_id(a.recall_id);
        item->set_epoch(a.epoch);
        item->set_deadline_unix_ms(a.deadline_unix_ms);
      }
    } else if (auto it = fences_.find(lease);
               it != fences_.end() && it->second.node == node) {
      if (std::string k = FenceKey(it->second.recall_id); sent[lease] != k) {
        sent[lease] = k;
        *m.add_fences() = fence_items_[lease];
      }
    } else if (auto it = revoked_.find(lease);
               it != revoked_.end() && it->second.node == node) {
      if (std::string k = RevokedKey(it->second.epoch); sent[lease] != k) {
        sent[lease] = k;
        *m.add_revoked() = revoked_items_[lease];
      }
    }
  };
  if (only != nullptr) {
    for (const std::string& lease : *only) visit(lease);
  } else {
    for (const auto& [volume, leases] : leases_of_) {
      for (const std::string& lease : leases) visit(lease);
    }
  }
  return m;
}

void ChannelRelay::OnConnect(const std::string& node) {
  absl::MutexLock l(&mu_);
  pb::OperatorMessage m = UnsentLocked(node, nullptr);
  channel::ChannelServer* server = server_.load();
  if (server == nullptr) return;
  if (m.recalls_size() + m.fences_size() + m.revoked_size() > 0) {
    server->Send(node, m);
  }
}

bool ChannelRelay::Check(const std::map<std::string, Asked>& asked,
                         const char* what, const std::string& node,
                         const std::string& lease, const std::string& recall_id,
                         int64_t epoch, pb::OperatorMessage& reply,
                         std::string* volume) {
  auto refuse = [&](const std::string& why, bool forged) {
    pb::Refusal* r = reply.add_refused();
    r->set_lease(lease);
    r->set_reason(why);
    ++refused_;
    base::Log(
        forged ? base::LogLevel::kWarn : base::LogLevel::kInfo,
        forged ? "operator.channel.forged" : "operator.channel.refused",
        {{"node", node}, {"lease", lease}, {"answer", what}, {"reason", why}});
    return false;
  };
  auto it = asked.find(lease);
  if (it == asked.end()) {
    return refuse(
        absl::StrCat("no ", what, " of lease ", lease, " is outstanding"),
        false);
  }
  const Asked& a = it->second;
  if (a.node != node) {
    return refuse(absl::StrCat("lease ", lease, " answers to node ", a.node,
                               ", not ", node),
                  true);
  }
  if ((!recall_id.empty() && recall_id != a.recall_id) || epoch != a.epoch) {
    return refuse(absl::StrCat("stale ", what, " of lease ", lease, ": recall ",
                               recall_id, " epoch ", epoch, ", asked recall ",
                               a.recall_id, " epoch ", a.epoch),
                  false);
  }
  *volume = a.volume;
  ++accepted_;
  return true;
}

void ChannelRelay::OnReport(const std::string& node, const pb::AgentReport& r,
                            pb::OperatorMessage& reply) {
  std::set<std::string> volumes;
  {
    absl::MutexLock l(&mu_);
    std::string volume;
    for (const pb::Ack& a : r.acks()) {
      if (!a.flushed()) {
        // Not taken yet: such a holder is revoked at its deadline instead.
        pb::Refusal* f = reply.add_refused();
        f->set_lease(a.lease());
        f->set_reason("an unflushed ack is not taken; the deadline revokes");
        continue;
      }
      if (Check(recalls_, "recall ack", node, a.lease(), a.recall_id(),
                a.epoch(), reply, &volume)) {
        TakenToEditLocked()[a.lease()].released_recall_id = a.recall_id();
        volumes.insert(volume);
      }
    }
    for (const pb::FenceConfirmation& f : r.fences()) {
      if (Check(fences_, "fence confirmation", node, f.lease(), f.recall_id(),
                f.epoch(), reply, &volume)) {
        TakenToEditLocked()[f.lease()].fenced_recall_id = f.recall_id();
        volumes.insert(volume);
      }
    }
    for (const pb::RevocationAck& v : r.revocation_acks()) {
      if (Check(revoked_, "revocation ack", node, v.lease(), "", v.epoch(),
                reply, &volume)) {
        TakenToEditLocked()[v.lease()].revocation_acked_epoch = v.epoch();
        volumes.insert(volume);
      }
    }
  }
  base::LogDebug("operator.channel.answered",
                 {{"node", node},
                  {"acks", absl::StrCat(r.acks_size())},
                  {"fences", absl::StrCat(r.fences_size())},
                  {"revocation_acks", absl::StrCat(r.revocation_acks_size())},
                  {"refused", absl::StrCat(reply.refused_size())}});
  for (const std::string& v : volumes) enqueue_(v);
}

}  // namespace daxlease::op
