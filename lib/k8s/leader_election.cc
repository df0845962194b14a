#include "lib/k8s/leader_election.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "lib/base/log.h"
#include "lib/base/status.h"

namespace daxlease::k8s {
namespace {

// metav1.MicroTime.
std::string MicroTime(absl::Time t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", t, absl::UTCTimeZone());
}

std::string HolderOf(const Json& lease) {
  if (!lease.contains("spec") || !lease["spec"].is_object()) return "";
  return lease["spec"].value("holderIdentity", "");
}

}  // namespace

LeaderElector::LeaderElector(KubeClient& client, base::Clock& clock,
                             LeaderElectionConfig config,
                             LeaderCallbacks callbacks)
    : client_(client),
      clock_(clock),
      config_(std::move(config)),
      callbacks_(std::move(callbacks)) {}

LeaderElector::~LeaderElector() { Stop(); }

absl::Status LeaderElector::Validate(const LeaderElectionConfig& c) {
  if (c.lock_name.empty() || c.identity.empty() || c.lock_namespace.empty()) {
    return absl::InvalidArgumentError(
        "leader election needs lease namespace, lease name and identity");
  }
  if (!(c.retry_period > absl::ZeroDuration() &&
        c.renew_deadline > c.retry_period &&
        c.lease_duration > c.renew_deadline)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "leader election needs lease_duration (",
        absl::FormatDuration(c.lease_duration), ") > renew_deadline (",
        absl::FormatDuration(c.renew_deadline), ") > retry_period (",
        absl::FormatDuration(c.retry_period), ") > 0"));
  }
  return absl::OkStatus();
}

bool LeaderElector::IsLeader() const {
  const absl::Duration now = clock_.Monotonic();
  absl::MutexLock l(&mu_);
  return leader_ && now - last_renew_ < config_.renew_deadline;
}

std::string LeaderElector::ObservedLeader() const {
  absl::MutexLock l(&mu_);
  return observed_holder_;
}

absl::StatusOr<bool> LeaderElector::TryAcquireOrRenew() {
  uint64_t seq;
  {
    absl::MutexLock l(&mu_);
    seq = ++attempt_seq_;
  }
  return Attempt(seq);
}

absl::StatusOr<bool> LeaderElector::Attempt(uint64_t seq) {
  const Resource leases = CoordinationLeaseResource();
  const absl::Time now = clock_.Now();  // for the record's timestamps only
  const absl::Duration mono = clock_.Monotonic();
  const int64_t duration_s =
      std::max<int64_t>(1, absl::ToInt64Seconds(config_.lease_duration));
  absl::StatusOr<Json> current =
      client_.Get(leases, config_.lock_namespace, config_.lock_name);
  if (absl::IsNotFound(current.status())) {
    Json lease = {
        {"apiVersion", "coordination.k8s.io/v1"},
        {"kind", "Lease"},
        {"metadata",
         {{"name", config_.lock_name}, {"namespace", config_.lock_namespace}}},
        {"spec",
         {{"holderIdentity", config_.identity},
          {"leaseDurationSeconds", duration_s},
          {"acquireTime", MicroTime(now)},
          {"renewTime", MicroTime(now)},
          {"leaseTransitions", 0}}}};
    absl::StatusOr<Json> created = client_.Create(leases, lease);
    absl::MutexLock l(&mu_);
    if (seq <= abandoned_) return false;  // given up on: changes nothing
    if (!created.ok()) {
      leader_ = false;
      if (absl::IsAlreadyExists(created.status())) return false;
      return created.status();
    }
    observed_record_ = (*created)["spec"].dump();
    observed_holder_ = config_.identity;
    observed_time_ = mono;
    last_renew_ = mono;
    leader_ = true;
    return true;
  }
  if (!current.ok()) return current.status();

  Json spec = current->contains("spec") ? (*current)["spec"] : Json::object();
  const std::string holder = HolderOf(*current);
  {
    absl::MutexLock l(&mu_);
    if (seq <= abandoned_) return false;
    const std::string record = spec.dump();
    if (record != observed_record_) {
      observed_record_ = record;
      observed_time_ = mono;
    }
    observed_holder_ = holder;
    // Someone else holds it and we have not seen it go stale for a whole
    // lease duration of our own monotonic clock.
    if (!holder.empty() && holder != config_.identity &&
        observed_time_ + config_.lease_duration > clock_.Monotonic()) {
      leader_ = false;
      return false;
    }
  }
  Json next = *current;
  Json& ns = next["spec"];
  if (!ns.is_object()) ns = Json::object();
  if (holder != config_.identity) {
    ns["acquireTime"] = MicroTime(now);
    ns["leaseTransitions"] = spec.value("leaseTransitions", 0) + 1;
  }
  ns["holderIdentity"] = config_.identity;
  ns["leaseDurationSeconds"] = duration_s;
  ns["renewTime"] = MicroTime(now);
  absl::StatusOr<Json> stored = client_.Update(leases, next);
  absl::MutexLock l(&mu_);
  if (seq <= abandoned_) return false;
  if (!stored.ok()) {
    leader_ = false;
    if (IsConflict(stored.status())) return false;
    return stored.status();
  }
  observed_record_ = (*stored)["spec"].dump();
  observed_holder_ = config_.identity;
  observed_time_ = mono;
  last_renew_ = mono;  // the attempt's start: never later than the server's
  leader_ = true;
  return true;
}

std::optional<absl::StatusOr<bool>> LeaderElector::AttemptBy(
    absl::Duration deadline, bool stoppable) {
  JoinAttempt();  // a previous, abandoned attempt ends first
  if (stoppable && stop_.HasBeenNotified()) return std::nullopt;
  uint64_t seq;
  {
    absl::MutexLock l(&mu_);
    seq = ++attempt_seq_;
  }
  auto p = std::make_shared<Pending>();
  pending_ = p;
  pending_thread_ = std::thread([this, p, seq] {
    p->result = Attempt(seq);
    p->done.Notify();
  });
  while (!p->done.WaitForNotificationWithTimeout(absl::Milliseconds(10))) {
    if (clock_.Monotonic() >= deadline ||
        (stoppable && stop_.HasBeenNotified())) {
      absl::MutexLock l(&mu_);
      abandoned_ = std::max(abandoned_, seq);
      leader_ = false;
      return std::nullopt;
    }
  }
  JoinAttempt();
  return p->result;
}

void LeaderElector::JoinAttempt() {
  if (pending_thread_.joinable()) pending_thread_.join();
  pending_.reset();
}

absl::Status LeaderElector::Release() {
  const Resource leases = CoordinationLeaseResource();
  ASSIGN_OR_RETURN(Json lease, client_.Get(leases, config_.lock_namespace,
                                           config_.lock_name));
  if (HolderOf(lease) != config_.identity) return absl::OkStatus();
  const absl::Time now = clock_.Now();
  lease["spec"]["holderIdentity"] = "";
  lease["spec"]["leaseDurationSeconds"] = 1;
  lease["spec"]["acquireTime"] = MicroTime(now);
  lease["spec"]["renewTime"] = MicroTime(now);
  return client_.Update(leases, lease).status();
}

void LeaderElector::SetLeader(bool leader) {
  absl::MutexLock l(&mu_);
  leader_ = leader;
}

absl::Status LeaderElector::Start() {
  RETURN_IF_ERROR(Validate(config_));
  if (started_) return absl::FailedPreconditionError("already started");
  started_ = true;
  thread_ = std::thread([this] { Run(); });
  return absl::OkStatus();
}

void LeaderElector::Stop() {
  if (!stop_.HasBeenNotified()) stop_.Notify();
  if (thread_.joinable()) thread_.join();
}

void LeaderElector::Run() {
  const std::string id = config_.identity;
  std::string last_seen_holder;
  auto note_holder = [&] {
    std::string h = ObservedLeader();
    if (h != last_seen_holder) {
      last_seen_holder = h;
      base::LogInfo(
          "k8s.leader.observed",
          {{"lock", config_.lock_name}, {"holder", h}, {"identity", id}});
      if (callbacks_.on_new_leader && !h.empty()) callbacks_.on_new_leader(h);
    }
  };
  while (!stop_.HasBeenNotified()) {
    // Candidate: try every retry_period until we hold the lease.
    std::optional<absl::StatusOr<bool>> attempt =
        AttemptBy(absl::InfiniteDuration(), /*stoppable=*/true);
    if (!attempt.has_value()) break;  // stopping
    absl::StatusOr<bool> got = *std::move(attempt);
    note_holder();
    if (!got.ok()) {
      base::LogWarn("k8s.leader.acquire_failed",
                    {{"lock", config_.lock_name},
                     {"error", std::string(got.status().message())}});
    }
    if (!got.ok() || !*got) {
      stop_.WaitForNotificationWithTimeout(config_.retry_period);
      continue;
    }
    base::LogInfo("k8s.leader.started",
                  {{"lock", config_.lock_name}, {"identity", id}});
    if (callbacks_.on_started_leading) callbacks_.on_started_leading();
    // Leader: renew every retry_period; give up once renew_deadline has
    // passed since the start of the last successful renewal, also in the
    // middle of a renewal that hangs.
    bool lost = false;
    while (!stop_.WaitForNotificationWithTimeout(config_.retry_period)) {
      absl::Duration last_ok;
      {
        absl::MutexLock l(&mu_);
        last_ok = last_renew_;
      }
      const absl::Duration deadline = last_ok + config_.renew_deadline;
      if (clock_.Monotonic() >= deadline) {
        lost = true;
        break;
      }
      std::optional<absl::StatusOr<bool>> renewed =
          AttemptBy(deadline, /*stoppable=*/false);
      if (!renewed.has_value()) {
        base::LogWarn(
            "k8s.leader.renew_timeout",
            {{"lock", config_.lock_name},
             {"renew_deadline", absl::FormatDuration(config_.renew_deadline)}});
        lost = true;
        break;
      }
      note_holder();
      if (renewed->ok() && **renewed) continue;
      if (renewed->ok() && !ObservedLeader().empty() &&
          ObservedLeader() != id) {
        lost = true;  // someone else holds it now
        break;
      }
    }
    SetLeader(false);
    if (!lost && config_.release_on_stop) {
      absl::Status s = Release();
      if (!s.ok()) {
        base::LogWarn(
            "k8s.leader.release_failed",
            {{"lock", config_.lock_name}, {"error", std::string(s.message())}});
      }
    }
    base::LogInfo("k8s.leader.stopped", {{"lock", config_.lock_name},
                                         {"identity", id},
                                         {"lost", lost ? "true" : "false"}});
    if (callbacks_.on_stopped_leading) callbacks_.on_stopped_leading();
  }
  JoinAttempt();
}

}  // namespace daxlease::k8s
