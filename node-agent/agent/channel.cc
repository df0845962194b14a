// The agent's side of the recall channel (agent.h, docs/agent.md "The
// recall channel"): what the operator asks on it, and the answers, given
// from the publishes' sessions and the fabric as they are now.
#include "absl/strings/str_cat.h"
#include "lib/base/crash_point.h"
#include "lib/base/log.h"
#include "node-agent/agent/agent.h"

namespace daxlease::agent {

const chpb::RecallItem* Agent::ChannelRecallLocked(
    const std::string& lease, const api::DaxLease* l) const {
  auto it = asked_recalls_.find(lease);
  if (it == asked_recalls_.end()) return nullptr;
  const chpb::RecallItem& item = it->second.item;
  if (l == nullptr) return nullptr;  // deleted: nothing to recall
  if (l->status.epoch > item.epoch()) return nullptr;
  if (l->status.recall_id == item.recall_id() &&
      (l->status.state == api::LeaseState::kReleased ||
       l->status.state == api::LeaseState::kRevoked)) {
    return nullptr;  // its outcome is stored
  }
  return &item;
}

bool Agent::ReleasedLocked(const Published& p,
                           const std::string& recall_id) const {
  // After a restart, clients that were attached reconnect and ack first.
  if (p.sessions.empty()) return !p.attached;
  for (const auto& s : p.sessions) {
    std::lock_guard<std::mutex> sl(s->mu_);
    if (s->acked_recall_ != recall_id) return false;
  }
  return true;
}

Agent::Published* Agent::PublishOfLeaseLocked(const std::string& lease) {
  for (auto& [t, p] : publishes_) {
    if (p.lease_name == lease) return &p;
  }
  return nullptr;
}

void Agent::OnChannelMessage(const chpb::OperatorMessage& m) {
  std::lock_guard<std::mutex> l(mu_);
  if (!m.node().empty() && m.node() != config_.node) {
    // The operator took the token for another node's pod: nothing it asks
    // is ours to answer correctly, and it would refuse our answers.
    base::LogError("agent.channel_wrong_node",
                   {{"node", config_.node}, {"authenticated_as", m.node()}});
  }
  for (const chpb::Refusal& r : m.refused()) {
    base::LogWarn("agent.channel_refused",
                  {{"lease", r.lease()}, {"reason", r.reason()}});
  }
  if (m.recalls_size() + m.fences_size() + m.revoked_size() > 0) {
    base::LogInfo("agent.channel_asked",
                  {{"recalls", std::to_string(m.recalls_size())},
                   {"fences", std::to_string(m.fences_size())},
                   {"revoked", std::to_string(m.revoked_size())}});
  }
  std::set<std::string> touched;
  for (const chpb::RecallItem& it : m.recalls()) {
    asked_recalls_[it.lease()] = {it, false};
    touched.insert(it.lease());
    if (Published* p = PublishOfLeaseLocked(it.lease());
        p != nullptr && p->recall_seen != it.recall_id()) {
      p->recall_seen = it.recall_id();
      p->recall_seen_at = clock_.Now();
    }
  }
  for (const chpb::FenceItem& it : m.fences()) {
    asked_fences_[it.lease()] = {it, false};
  }
  for (const chpb::RevokedItem& it : m.revoked()) {
    asked_revoked_[it.lease()] = {it, false};
    touched.insert(it.lease());
  }
  AnswerChannelLocked();
  // The sessions hear of it now, not when the informer catches up.
  for (const std::string& lease : touched) {
    Published* p = PublishOfLeaseLocked(lease);
    if (p == nullptr) continue;
    auto cached = CachedLease(lease);
    auto vol = CachedVolume(p->req.volume_id());
    pb::SessionEvent ev = EventFor(*p, cached.has_value() ? &*cached : nullptr,
                                   vol.has_value() ? &*vol : nullptr);
    for (auto& s : p->sessions) s->Offer(ev);
  }
}

void Agent::AnswerChannelLocked() {
  if (!channel()) return;
  chpb::AgentReport report;
  bool dirty = false;

  // Holder: a recall is answered once every attached client flushed and
  // acked it; a lease nobody here holds (unpublished, or an earlier
  // generation) has nothing to flush and is answered at once.
  for (auto it = asked_recalls_.begin(); it != asked_recalls_.end();) {
    const std::string& lease = it->first;
    const chpb::RecallItem& item = it->second.item;
    if (!it->second.answered) {
      Published* p = PublishOfLeaseLocked(lease);
      if (p == nullptr || ReleasedLocked(*p, item.recall_id())) {
        chpb::Ack* a = report.add_acks();
        a->set_lease(lease);
        a->set_recall_id(item.recall_id());
        a->set_epoch(item.epoch());
        a->set_flushed(true);
        it->second.answered = true;
        if (p != nullptr) RecallAckedLocked(*p, item.recall_id());
        base::LogInfo("agent.recall_acked", {{"lease", lease},
                                             {"recall", item.recall_id()},
                                             {"via", "channel"}});
      }
    }
    auto cached = CachedLease(lease);
    if (it->second.answered &&
        ChannelRecallLocked(lease, cached.has_value() ? &*cached : nullptr) ==
            nullptr) {
      it = asked_recalls_.erase(it);
    } else {
      ++it;
    }
  }

  FenceAskedLocked(report);

  // Holder: a fenced revoke is told to every client; answered once each
  // attached client saw it (none attached: at once).
  for (auto it = asked_revoked_.begin(); it != asked_revoked_.end();) {
    const chpb::RevokedItem& item = it->second.item;
    Published* p = PublishOfLeaseLocked(item.lease());
    bool all = true;
    if (p != nullptr) {
      if (!p->revoked) {
        p->revoked = true;
        dirty = true;
      }
      all = !p->attached || !p->sessions.empty();
      for (const auto& s : p->sessions) {
        std::lock_guard<std::mutex> sl(s->mu_);
        all = all && s->acked_revocation_;
      }
    }
    if (!all) {
      ++it;
      continue;
    }
    chpb::RevocationAck* v = report.add_revocation_acks();
    v->set_lease(item.lease());
    v->set_epoch(item.epoch());
    revocation_reported_.insert(item.lease());
    base::LogInfo("agent.revocation_acked",
                  {{"lease", item.lease()}, {"via", "channel"}});
    it = asked_revoked_.erase(it);
  }
  for (auto it = revocation_reported_.begin();
       it != revocation_reported_.end();) {
    it = CachedLease(*it).has_value() ? std::next(it)
                                      : revocation_reported_.erase(it);
  }
  if (dirty) (void)SaveStateLocked();
  if (report.acks_size() + report.fences_size() +
          report.revocation_acks_size() >
      0) {
    config_.channel_report(report);
  }
}

absl::StatusOr<std::string> Agent::LeaseUidLocked(
    const std::string& name) const {
  if (auto cached = CachedLease(name); cached.has_value()) {
    return cached->metadata.uid;
  }
  absl::StatusOr<k8s::Json> got = client_.Get(DaxLeaseResource(), "", name);
  if (!got.ok()) return got.status();
  return k8s::UidOf(*got);
}

void Agent::FenceAskedLocked(chpb::AgentReport& report) {
  // Owner: record the grant as fenced, cut it, then confirm. A volume this
  // node does not serve has no grant here to cut (Invalidate answers false,
  // nothing live).
  std::vector<std::pair<std::string, fabric::GrantKey>> asked;
  for (auto it = asked_fences_.begin(); it != asked_fences_.end();) {
    const chpb::FenceItem& item = it->second.item;
    // The grant is named by the lease's UID: the operator's (it asks from
    // the lease it read), else looked up.
    std::string uid = item.lease_uid();
    if (uid.empty()) {
      absl::StatusOr<std::string> got = LeaseUidLocked(item.lease());
      if (absl::IsNotFound(got.status())) {
        // Deleted: the operator takes that as the holder's release and
        // stops asking; there is no grant left to name.
        base::LogWarn("agent.fence_lease_gone", {{"lease", item.lease()}});
        it = asked_fences_.erase(it);
        continue;
      }
      if (!got.ok()) {
        base::LogWarn(
            "agent.fence_unknown_lease",
            {{"lease", item.lease()}, {"error", got.status().ToString()}});
        ++it;  // tried again next pass
        continue;
      }
      uid = *got;
    }
    fabric::GrantKey key{item.volume(), uid, item.holder_node(), item.epoch()};
    if (fenced_.emplace(key, item.lease()).second) fenced_unsaved_ = true;
    asked.emplace_back(it->first, std::move(key));
    ++it;
  }
  if (fenced_unsaved_) {
    if (absl::Status st = SaveStateLocked(); !st.ok()) {
      base::LogError("agent.fence_not_recorded", {{"error", st.ToString()}});
    }
  }
  for (const auto& [lease, key] : asked) {
    absl::StatusOr<bool> cut = fabric_.Invalidate(key);
    if (!cut.ok()) {
      base::LogError(
          "agent.fence_failed",
          {{"grant", key.DebugString()}, {"error", cut.status().ToString()}});
      continue;
    }
    // Confirmed only once a restart would keep it cut.
    if (fenced_unsaved_) continue;
    // Cut and recorded; the confirmation has not gone out.
    base::CrashPoint("agent.channel.fence_cut");
    auto it = asked_fences_.find(lease);
    const chpb::FenceItem& item = it->second.item;
    base::LogWarn("agent.fenced", {{"lease", lease},
                                   {"grant", key.DebugString()},
                                   {"recall", item.recall_id()},
                                   {"cut", *cut ? "live" : "already"},
                                   {"via", "channel"}});
    if (config_.metrics != nullptr) config_.metrics->Fenced();
    chpb::FenceConfirmation* f = report.add_fences();
    f->set_lease(lease);
    f->set_recall_id(item.recall_id());
    f->set_epoch(item.epoch());
    asked_fences_.erase(it);
  }
}

void Agent::PruneFencedLocked() {
  bool pruned = false;
  for (auto it = fenced_.begin(); it != fenced_.end();) {
    const fabric::GrantKey& key = it->first;
    auto served = served_.find(key.volume);
    auto vol = CachedVolume(key.volume);
    // Past the grant's epoch the fabric refuses it anyway (InvalidateBefore,
    // also in a restarted agent); a volume not served here grants nothing.
    const bool dead = served == served_.end() || !vol.has_value() ||
                      vol->spec.owner_node != config_.node ||
                      vol->status.epoch > key.epoch;
    if (!dead || asked_fences_.contains(it->second)) {
      ++it;
      continue;
    }
    it = fenced_.erase(it);
    pruned = true;
  }
  if (pruned) (void)SaveStateLocked();
}

}  // namespace daxlease::agent
