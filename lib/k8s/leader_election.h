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
//    leader from overlapping with its successor;
//  - all writes are optimistic (resourceVersion): two candidates racing get
//    one 409, so only one leads;
//  - Stop() while leading releases the lease (holderIdentity cleared,
//    leaseDurationSeconds 1) so a standby takes over at its next retry.
// Time: decisions read the injected clock; waiting between attempts is real
// time (retry_period), so FakeClock tests drive TryAcquireOrRenew() directly.
#ifndef DAXLEASE_LIB_K8S_LEADER_ELECTION_H_
#define DAXLEASE_LIB_K8S_LEADER_ELECTION_H_

#include <functional>
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
  // calls on_stopped_leading if leading. Idempotent; joins the thread.
  void Stop();

  bool IsLeader() const;
  std::string ObservedLeader() const;

  // One acquire-or-renew attempt (what the thread does every retry_period):
  // true if this replica holds the lease afterwards. Updates IsLeader() but
  // calls no callbacks. For tests with a FakeClock; not to be mixed with a
  // running Start().
  absl::StatusOr<bool> TryAcquireOrRenew();

 private:
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
  absl::Time observed_time_ ABSL_GUARDED_BY(mu_);
  absl::Time last_renew_ ABSL_GUARDED_BY(mu_);
  std::string lease_rv_ ABSL_GUARDED_BY(mu_);
};

}  // namespace daxlease::k8s

#endif  // DAXLEASE_LIB_K8S_LEADER_ELECTION_H_
