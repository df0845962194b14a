// FakeAgentConnection: an in-memory agent for the CSI unit tests. It keeps
// what an agent would (recorded volumes, served volumes, publishes), can be
// "down" (every call UNAVAILABLE), and can say that leases hold access to a
// volume (ForgetVolume/StopServing then FAILED_PRECONDITION, as the agent).
#ifndef DAXLEASE_CSI_FAKE_AGENT_CONNECTION_H_
#define DAXLEASE_CSI_FAKE_AGENT_CONNECTION_H_

#include <map>
#include <set>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "csi/agent_connection.h"

namespace daxlease::csi {

class FakeAgentConnection final : public AgentConnection {
 public:
  explicit FakeAgentConnection(std::string socket_path = "/run/agent.sock")
      : socket_path_(std::move(socket_path)) {}

  absl::Status RecordVolume(const AgentVolume& volume) override;
  absl::Status ForgetVolume(absl::string_view volume_id) override;
  absl::Status ServeVolume(const ServedVolume& volume) override;
  absl::Status StopServing(absl::string_view volume_id) override;
  absl::StatusOr<ReshapeAnswer> ReshapeVolume(absl::string_view volume_id,
                                              uint64_t size_bytes,
                                              bool complete) override;
  absl::StatusOr<std::string> SnapshotVolume(absl::string_view volume_id,
                                             bool complete) override;
  absl::StatusOr<std::string> Publish(const AgentPublish& publish) override;
  absl::Status Unpublish(absl::string_view volume_id,
                         absl::string_view target_path) override;
  const std::string& socket_path() const override { return socket_path_; }
  absl::StatusOr<bool> CanShareFsdax() override;

  // Test controls.
  void SetDown(bool down);
  void SetCanShareFsdax(bool can);
  void SetHoldsAccess(absl::string_view volume_id, bool holds);
  // Makes the next call of `op` ("RecordVolume", "Publish", ...) fail.
  void FailNext(absl::string_view op, absl::Status status);
  // ReshapeVolume of a volume whose leases hold access answers UNAVAILABLE
  // (recall in progress) this many times before kChange (default 2).
  void SetReshapeRecallPolls(int polls);
  // SnapshotVolume answers UNAVAILABLE (recall in progress) this many times
  // before the copy may start (default 2; every served volume is recalled).
  void SetSnapshotRecallPolls(int polls);
  // True between a SnapshotVolume that let a copy start and its complete.
  bool Quiesced(absl::string_view volume_id) const;

  // What the agent knows.
  bool IsRecorded(absl::string_view volume_id) const;
  AgentVolume Recorded(absl::string_view volume_id) const;
  bool IsServed(absl::string_view volume_id) const;
  ServedVolume Served(absl::string_view volume_id) const;
  bool IsPublished(absl::string_view volume_id, absl::string_view target) const;
  AgentPublish Published(absl::string_view volume_id,
                         absl::string_view target) const;
  int calls(absl::string_view op) const;

 private:
  absl::Status Enter(absl::string_view op) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string socket_path_;
  mutable absl::Mutex mu_;
  bool down_ ABSL_GUARDED_BY(mu_) = false;
  bool can_share_fsdax_ ABSL_GUARDED_BY(mu_) = true;
  std::set<std::string> holds_access_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, absl::Status> failures_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int> calls_ ABSL_GUARDED_BY(mu_);
  int reshape_polls_ ABSL_GUARDED_BY(mu_) = 2;
  std::map<std::string, int> polled_ ABSL_GUARDED_BY(mu_);
  int snapshot_polls_ ABSL_GUARDED_BY(mu_) = 2;
  std::map<std::string, int> snapshot_polled_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> quiesced_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, AgentVolume> volumes_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, ServedVolume> served_ ABSL_GUARDED_BY(mu_);
  std::map<std::pair<std::string, std::string>, AgentPublish> publishes_
      ABSL_GUARDED_BY(mu_);
};

// The descriptor FakeAgentConnection::Publish returns (tests compare it).
std::string FakeDescriptor(const AgentPublish& publish);

}  // namespace daxlease::csi

#endif  // DAXLEASE_CSI_FAKE_AGENT_CONNECTION_H_
