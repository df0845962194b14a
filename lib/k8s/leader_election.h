// LeaderElector: at most one leader among replicas, through a
// coordination.k8s.io/v1 Lease (the same record and rules as client-go's
// leaderelection with LeaseLock, so it interoperates with kubectl views).
//
// Rules:
//  - a candidate takes the lease when it is free (no holder) or expired:
//    the record has not changed for lease_duration as seen by THIS
//    candidate's clock since it last observed a change (no cross-node clock
//    comparison, as client-go);
//  - the leader renews every retry_period; if it cannot renew for
//    renew_deadline it stops leading (on_stopped_leading) and becomes a
//    candidate again; renew_deadline < lease_duration keeps a partitioned
//    leader from overlapping with its successor. "Cannot renew" includes an
//    API call that hangs: each attempt is bounded by the renew deadline (the
//    leader gives up while the call is still outstanding, and drops its
//    result if it ever returns), and IsLeader() turns false on its own once
//    renew_deadline has passed since the last renewal's start;
//  - every duration (expiry, renew deadline) is measured on the clock's
//    monotonic time, never on wall time, so a wall clock stepping backwards
//    (or forwards) neither keeps a stale leader acting nor lets a standby
//    take over early. Wall time only goes into the record's timestamps;
//  - all writes are optimistic (resourceVersion): two candidates racing get
//    one 409, so only one leads;
//  - Stop() while leading releases the lease (holderIdentity cleared,
//    leaseDurationSeconds 1) so a standby takes over at its next retry.
// Time: decisions read the injected clock; waiting between attempts is real
// time (retry_period), and a running attempt is watched every 10 ms of real
// time against the injected clock, so FakeClock tests either drive
// TryAcquireOrRenew() directly or advance the clock under a running Start().
#ifndef DAXLEASE_LIB_K8S_LEADER_ELECTION_H_
#define DAXLEASE_LIB_K8S_LEADER_ELECTION_H_

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "lib/base/clock.h"
#include "lib/k8s/client.h"

namespace daxlease::k8s {

struct LeaderElectionConfig {
  // The coordination.k8s.io Lease object used as the lock (called a "lock"
  // here so it is not confused with a DaxLease or lib/lease).
  std::string lock_namespace = "default";
  std::string lock_name;
  std::string identity;  // unique per replica, e.g. pod name + random suffix
  absl::Duration lease_duration = absl::Seconds(15);
  absl::Duration renew_deadline = absl::Seconds(10);
  absl::Duration retry_period = absl::Seconds(2);
  bool release_on_stop = true;
};

struct LeaderCallbacks {
  // Called on the elector's thread when this replica becomes leader. Must
  // return promptly (start the work on another thread): renewals wait.
  std::function<void()> on_started_leading;
  // Called when leadership is lost or given up (Stop). After this returns
  // the caller must act as a non-leader (stop reconciling).
  std::function<void()> on_stopped_leading;
  // Called when the observed holder changes (including to this replica).
  std::function<void(const std::string& identity)> on_new_leader;
};

class LeaderElector {
 public:
  // `client` and `clock` must outlive the elector. InvalidArgument from
  // Validate() is checked by Start().
  LeaderElector(KubeClient& client, base::Clock& clock,
                LeaderElectionConfig config, LeaderCallbacks callbacks);
  ~LeaderElector();  // Stop()
  LeaderElector(const LeaderElector&) = delete;
  LeaderElector& operator=(const LeaderElector&) = delete;

  // Checks the durations (lease_duration > renew_deadline > retry_period >
  // 0) and that name and identity are set.
  static absl::Status Validate(const LeaderElectionConfig& c);

  // Starts contending on a background thread. Once only.
  absl::Status Start();
  // Stops contending; releases the lease if leading and release_on_stop;
  // calls on_stopped_leading if leading. Idempotent; joins the thread, so it
  // waits for an API call in flight (bounded by the client's timeout).
  void Stop();

  // True iff the last acquire/renew succeeded and began less than
  // renew_deadline ago (monotonic time): false by itself once the deadline
  // passes, even while a renewal hangs.
  bool IsLeader() const;
  std::string ObservedLeader() const;

  // One acquire-or-renew attempt (what the thread does every retry_period):
  // true if this replica holds the lease afterwards. Updates IsLeader() but
  // calls no callbacks. For tests with a FakeClock; not to be mixed with a
  // running Start().
  absl::StatusOr<bool> TryAcquireOrRenew();

 private:
  // One attempt on a helper thread, waited for until monotonic time
  // `deadline` (or until Stop() when `stoppable`). nullopt: it did not end in
  // time; it is abandoned (its result will change nothing) and joined later.
  std::optional<absl::StatusOr<bool>> AttemptBy(absl::Duration deadline,
                                                bool stoppable);
  void JoinAttempt();
  absl::StatusOr<bool> Attempt(uint64_t seq);
  void Run();
  absl::Status Release();
  void SetLeader(bool leader);

  KubeClient& client_;
  base::Clock& clock_;
  const LeaderElectionConfig config_;
  const LeaderCallbacks callbacks_;
  std::thread thread_;
  absl::Notification stop_;
  bool started_ = false;

  mutable absl::Mutex mu_;
  bool leader_ ABSL_GUARDED_BY(mu_) = false;
  std::string observed_holder_ ABSL_GUARDED_BY(mu_);
  std::string observed_record_ ABSL_GUARDED_BY(mu_);  // spec JSON text
  // Monotonic times (Clock::Monotonic) of the last change seen in the
  // record and of the start of the last successful acquire/renew.
  absl::Duration observed_time_ ABSL_GUARDED_BY(mu_);
  absl::Duration last_renew_ ABSL_GUARDED_BY(mu_);
  // Attempts are numbered; one numbered <= abandoned_ was given up on and
  // must not change the state when it returns.
  uint64_t attempt_seq_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t abandoned_ ABSL_GUARDED_BY(mu_) = 0;

  // The attempt running on a helper thread (Run's thread only).
  struct Pending {
    absl::Notification done;
    absl::StatusOr<bool> result = false;
  };
  std::shared_ptr<Pending> pending_;
  std::thread pending_thread_;
};

}  // namespace daxlease::k8s

#endif  // DAXLEASE_LIB_K8S_LEADER_ELECTION_H_
