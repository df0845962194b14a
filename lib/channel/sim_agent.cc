#include "lib/channel/sim_agent.h"

#include "absl/strings/str_cat.h"
#include "lib/channel/authenticator.h"

namespace daxlease::channel {

absl::StatusOr<std::string> MintAgentToken(k8s::KubeClient& c,
                                           const std::string& ns,
                                           const std::string& sa,
                                           const std::string& pod,
                                           const std::string& node) {
  k8s::Resource sas{"", "v1", "serviceaccounts"};
  absl::StatusOr<k8s::Json> made =
      c.Create(sas, {{"apiVersion", "v1"},
                     {"kind", "ServiceAccount"},
                     {"metadata", {{"namespace", ns}, {"name", sa}}}});
  if (!made.ok() && !absl::IsAlreadyExists(made.status())) {
    return made.status();
  }
  k8s::Resource pods{"", "v1", "pods"};
  absl::StatusOr<k8s::Json> p = c.Create(
      pods,
      {{"apiVersion", "v1"},
       {"kind", "Pod"},
       {"metadata", {{"namespace", ns}, {"name", pod}}},
       {"spec",
        {{"nodeName", node},
         {"serviceAccountName", sa},
         {"automountServiceAccountToken", false},
         {"containers", {{{"name", "agent"}, {"image", "daxlease/agent"}}}}}}});
  if (absl::IsAlreadyExists(p.status())) p = c.Get(pods, ns, pod);
  if (!p.ok()) return p.status();
  // POST .../serviceaccounts/SA/token, as a create on that subresource.
  k8s::Resource token{"", "v1", absl::StrCat("serviceaccounts/", sa, "/token")};
  absl::StatusOr<k8s::Json> tr =
      c.Create(token, {{"apiVersion", "authentication.k8s.io/v1"},
                       {"kind", "TokenRequest"},
                       {"metadata", {{"namespace", ns}, {"name", sa}}},
                       {"spec",
                        {{"audiences", {kAudience}},
                         {"expirationSeconds", 3600},
                         {"boundObjectRef",
                          {{"kind", "Pod"},
                           {"apiVersion", "v1"},
                           {"name", pod},
                           {"uid", k8s::UidOf(*p)}}}}}});
  if (!tr.ok()) return tr.status();
  std::string t =
      tr->value("status", k8s::Json::object()).value("token", std::string());
  if (t.empty()) return absl::InternalError("TokenRequest gave no token");
  return t;
}

SimAgent::SimAgent(k8s::KubeClient& c, SimAgentOptions o)
    : options_(std::move(o)), ack_recalls_(options_.ack_recalls) {
  ChannelClientOptions co;
  co.record = options_.record;
  co.retry = absl::Milliseconds(50);
  co.token = [t = options_.token]() -> absl::StatusOr<std::string> {
    return t;
  };
  client_ = std::make_unique<ChannelClient>(
      c, co, [this](const pb::OperatorMessage& m) { OnMessage(m); });
  client_->Start();
}

SimAgent::~SimAgent() { client_->Stop(); }

std::set<std::string> SimAgent::recalled_leases() {
  absl::MutexLock l(&mu_);
  std::set<std::string> out;
  for (const auto& [k, v] : recalled_) out.insert(k);
  return out;
}

void SimAgent::AckPending() {
  pb::AgentReport r;
  {
    absl::MutexLock l(&mu_);
    for (const auto& [lease, it] : recalled_) {
      pb::Ack* a = r.add_acks();
      a->set_lease(lease);
      a->set_recall_id(it.recall_id());
      a->set_epoch(it.epoch());
      a->set_flushed(true);
    }
  }
  client_->Report(r);
}

void SimAgent::OnMessage(const pb::OperatorMessage& m) {
  {
    absl::MutexLock l(&mu_);
    for (const pb::RecallItem& it : m.recalls()) recalled_[it.lease()] = it;
  }
  ++messages_;
  if (m.recalls_size() > 0) ++recall_messages_;
  recalls_seen_ += m.recalls_size();
  fences_seen_ += m.fences_size();
  revoked_seen_ += m.revoked_size();
  refused_ += m.refused_size();
  pb::AgentReport r;
  if (ack_recalls_) {
    for (const pb::RecallItem& it : m.recalls()) {
      pb::Ack* a = r.add_acks();
      a->set_lease(it.lease());
      a->set_recall_id(it.recall_id());
      a->set_epoch(it.epoch());
      a->set_flushed(true);
    }
  }
  if (options_.confirm_fences) {
    for (const pb::FenceItem& it : m.fences()) {
      pb::FenceConfirmation* f = r.add_fences();
      f->set_lease(it.lease());
      f->set_recall_id(it.recall_id());
      f->set_epoch(it.epoch());
    }
  }
  if (options_.ack_revocations) {
    for (const pb::RevokedItem& it : m.revoked()) {
      pb::RevocationAck* v = r.add_revocation_acks();
      v->set_lease(it.lease());
      v->set_epoch(it.epoch());
    }
  }
  if (r.acks_size() + r.fences_size() + r.revocation_acks_size() > 0) {
    client_->Report(r);
  }
}

}  // namespace daxlease::channel
