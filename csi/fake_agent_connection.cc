#include "csi/fake_agent_connection.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace daxlease::csi {

std::string FakeDescriptor(const AgentPublish& p) {
  return absl::StrCat("{\"volume\":\"", p.volume_id, "\",\"target\":\"",
                      p.target_path, "\",\"pod\":\"", p.pod.ns, "/", p.pod.name,
                      "\",\"ownerLocal\":", p.owner_local ? "true" : "false",
                      "}");
}

absl::Status FakeAgentConnection::Enter(absl::string_view op) {
  ++calls_[std::string(op)];
  if (down_) {
    return absl::UnavailableError(
        absl::StrCat("daxlease-agent at ", socket_path_, " is not running"));
  }
  auto it = failures_.find(std::string(op));
  if (it == failures_.end()) return absl::OkStatus();
  absl::Status s = it->second;
  failures_.erase(it);
  return s;
}

absl::Status FakeAgentConnection::RecordVolume(const AgentVolume& v) {
  absl::MutexLock l(&mu_);
  if (absl::Status s = Enter("RecordVolume"); !s.ok()) return s;
  auto it = volumes_.find(v.volume_id);
  if (it != volumes_.end() &&
      (it->second.owner_node != v.owner_node || it->second.mode != v.mode ||
       it->second.share != v.share)) {
    return absl::AlreadyExistsError(
        absl::StrCat("DaxVolume ", v.volume_id, " exists with another spec"));
  }
  volumes_[v.volume_id] = v;
  return absl::OkStatus();
}

absl::Status FakeAgentConnection::ForgetVolume(absl::string_view id) {
  absl::MutexLock l(&mu_);
  if (absl::Status s = Enter("ForgetVolume"); !s.ok()) return s;
  if (holds_access_.count(std::string(id))) {
    return absl::FailedPreconditionError(
        absl::StrCat("leases of volume ", id, " still hold access"));
  }
  volumes_.erase(std::string(id));
  return absl::OkStatus();
}

absl::Status FakeAgentConnection::ServeVolume(const ServedVolume& v) {
  absl::MutexLock l(&mu_);
  if (absl::Status s = Enter("ServeVolume"); !s.ok()) return s;
  served_[v.volume_id] = v;
  return absl::OkStatus();
}

absl::StatusOr<bool> FakeAgentConnection::CanShareFsdax() {
  absl::MutexLock l(&mu_);
  if (absl::Status s = Enter("CanShareFsdax"); !s.ok()) return s;
  return can_share_fsdax_;
}

void FakeAgentConnection::SetCanShareFsdax(bool can) {
  absl::MutexLock l(&mu_);
  can_share_fsdax_ = can;
}

absl::Status FakeAgentConnection::StopServing(absl::string_view id) {
  absl::MutexLock l(&mu_);
  if (absl::Status s = Enter("StopServing"); !s.ok()) return s;
  if (holds_access_.count(std::string(id))) {
    return absl::FailedPreconditionError(
        absl::StrCat("leases of volume ", id, " still hold access"));
  }
  served_.erase(std::string(id));
  return absl::OkStatus();
}

absl::StatusOr<ReshapeAnswer> FakeAgentConnection::ReshapeVolume(
    absl::string_view id, uint64_t size_bytes, bool complete) {
  absl::MutexLock l(&mu_);
  if (absl::Status s = Enter("ReshapeVolume"); !s.ok()) return s;
  const std::string vol(id);
  const bool held = holds_access_.count(vol) > 0;
  ReshapeAnswer a;
  a.recall = held ? absl::StrCat(vol, "-reshape-e1") : "";
  if (!complete) {
    if (held && polled_[vol] < reshape_polls_) {
      ++polled_[vol];
      return absl::UnavailableError(absl::StrCat(
          "recall in progress: DaxRecall ", a.recall, " (Reshape)"));
    }
    a.stage = ReshapeStage::kChange;
    return a;
  }
  polled_.erase(vol);
  auto it = served_.find(vol);
  if (it == served_.end()) {
    return absl::FailedPreconditionError(
        absl::StrCat("volume ", vol, " is not served"));
  }
  it->second.size_bytes = std::max(it->second.size_bytes, size_bytes);
  a.stage = ReshapeStage::kDone;
  a.served_bytes = it->second.size_bytes;
  return a;
}

absl::StatusOr<std::string> FakeAgentConnection::SnapshotVolume(
    absl::string_view id, bool complete) {
  absl::MutexLock l(&mu_);
  if (absl::Status s = Enter("SnapshotVolume"); !s.ok()) return s;
  const std::string vol(id);
  if (!served_.contains(vol)) {
    return absl::FailedPreconditionError(
        absl::StrCat("volume ", vol, " is not served"));
  }
  const std::string recall = absl::StrCat(vol, "-snapshot-e1");
  if (complete) {
    const bool was = quiesced_.erase(vol) > 0;
    return was ? recall : std::string();
  }
  if (quiesced_.contains(vol)) return recall;
  if (snapshot_polled_[vol] < snapshot_polls_) {
    ++snapshot_polled_[vol];
    return absl::UnavailableError(
        absl::StrCat("recall in progress: DaxRecall ", recall, " (Snapshot)"));
  }
  snapshot_polled_.erase(vol);
  quiesced_.insert(vol);
  return recall;
}

void FakeAgentConnection::SetSnapshotRecallPolls(int polls) {
  absl::MutexLock l(&mu_);
  snapshot_polls_ = polls;
}

bool FakeAgentConnection::Quiesced(absl::string_view id) const {
  absl::MutexLock l(&mu_);
  return quiesced_.contains(std::string(id));
}

void FakeAgentConnection::SetReshapeRecallPolls(int polls) {
  absl::MutexLock l(&mu_);
  reshape_polls_ = polls;
}

absl::StatusOr<std::string> FakeAgentConnection::Publish(
    const AgentPublish& p) {
  absl::MutexLock l(&mu_);
  if (absl::Status s = Enter("Publish"); !s.ok()) return s;
  publishes_[{p.volume_id, p.target_path}] = p;
  return FakeDescriptor(p);
}

absl::Status FakeAgentConnection::Unpublish(absl::string_view id,
                                            absl::string_view target) {
  absl::MutexLock l(&mu_);
  if (absl::Status s = Enter("Unpublish"); !s.ok()) return s;
  publishes_.erase({std::string(id), std::string(target)});
  return absl::OkStatus();
}

void FakeAgentConnection::SetDown(bool down) {
  absl::MutexLock l(&mu_);
  down_ = down;
}

void FakeAgentConnection::SetHoldsAccess(absl::string_view id, bool holds) {
  absl::MutexLock l(&mu_);
  if (holds) {
    holds_access_.insert(std::string(id));
  } else {
    holds_access_.erase(std::string(id));
  }
}

void FakeAgentConnection::FailNext(absl::string_view op, absl::Status status) {
  absl::MutexLock l(&mu_);
  failures_[std::string(op)] = std::move(status);
}

bool FakeAgentConnection::IsRecorded(absl::string_view id) const {
  absl::MutexLock l(&mu_);
  return volumes_.count(std::string(id)) > 0;
}

AgentVolume FakeAgentConnection::Recorded(absl::string_view id) const {
  absl::MutexLock l(&mu_);
  auto it = volumes_.find(std::string(id));
  return it == volumes_.end() ? AgentVolume{} : it->second;
}

bool FakeAgentConnection::IsServed(absl::string_view id) const {
  absl::MutexLock l(&mu_);
  return served_.count(std::string(id)) > 0;
}

ServedVolume FakeAgentConnection::Served(absl::string_view id) const {
  absl::MutexLock l(&mu_);
  auto it = served_.find(std::string(id));
  return it == served_.end() ? ServedVolume{} : it->second;
}

bool FakeAgentConnection::IsPublished(absl::string_view id,
                                      absl::string_view target) const {
  absl::MutexLock l(&mu_);
  return publishes_.count({std::string(id), std::string(target)}) > 0;
}

AgentPublish FakeAgentConnection::Published(absl::string_view id,
                                            absl::string_view target) const {
  absl::MutexLock l(&mu_);
  auto it = publishes_.find({std::string(id), std::string(target)});
  return it == publishes_.end() ? AgentPublish{} : it->second;
}

int FakeAgentConnection::calls(absl::string_view op) const {
  absl::MutexLock l(&mu_);
  auto it = calls_.find(std::string(op));
  return it == calls_.end() ? 0 : it->second;
}

}  // namespace daxlease::csi
