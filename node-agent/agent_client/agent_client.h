// AgentClient: daxlease-csi's view of its node's daxlease-agent (the Agent
// service of proto/agent.proto on the agent's unix socket).
//
// GrpcAgentClient talks gRPC over the socket; FakeAgentClient (below)
// records calls for the CSI plugin's unit tests. Errors are the agent's
// gRPC status unchanged (see proto/agent.proto per RPC), except that an
// agent that is not running or not answering within the deadline gives
// Unavailable, which a CSI handler returns as it is.
//
// Thread safety: all methods may be called concurrently.
#ifndef DAXLEASE_NODE_AGENT_AGENT_CLIENT_AGENT_CLIENT_H_
#define DAXLEASE_NODE_AGENT_AGENT_CLIENT_AGENT_CLIENT_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "proto/agent.pb.h"

namespace daxlease::agent {

namespace pb = ::daxlease::agent::v1;

class AgentClient {
 public:
  virtual ~AgentClient() = default;
  virtual absl::Status RecordVolume(const pb::RecordVolumeRequest& req) = 0;
  virtual absl::Status ForgetVolume(const std::string& volume_id) = 0;
  virtual absl::StatusOr<pb::ServeVolumeResponse> ServeVolume(
      const pb::ServeVolumeRequest& req) = 0;
  virtual absl::Status StopServing(const std::string& volume_id) = 0;
  virtual absl::StatusOr<pb::ReshapeVolumeResponse> ReshapeVolume(
      const pb::ReshapeVolumeRequest& req) = 0;
  virtual absl::StatusOr<pb::SnapshotVolumeResponse> SnapshotVolume(
      const pb::SnapshotVolumeRequest& req) = 0;
  virtual absl::StatusOr<pb::PublishResponse> Publish(
      const pb::PublishRequest& req) = 0;
  virtual absl::Status Unpublish(const std::string& volume_id,
                                 const std::string& target_path) = 0;
  virtual absl::StatusOr<pb::StatusResponse> Status() = 0;
};

// `socket_path`: the agent's unix socket (absolute). Each call has
// `deadline`. Connecting is lazy: constructing never fails.
std::unique_ptr<AgentClient> NewGrpcAgentClient(
    const std::string& socket_path,
    absl::Duration deadline = absl::Seconds(30));

// Records every call and keeps what was recorded, served and published;
// answers from that, or with the status set by FailNext.
class FakeAgentClient final : public AgentClient {
 public:
  absl::Status RecordVolume(const pb::RecordVolumeRequest& req) override;
  absl::Status ForgetVolume(const std::string& volume_id) override;
  absl::StatusOr<pb::ServeVolumeResponse> ServeVolume(
      const pb::ServeVolumeRequest& req) override;
  absl::Status StopServing(const std::string& volume_id) override;
  // DONE at once (the fake has no holders), served_bytes = size_bytes.
  absl::StatusOr<pb::ReshapeVolumeResponse> ReshapeVolume(
      const pb::ReshapeVolumeRequest& req) override;
  // COPY at once (the fake has no holders); DONE with complete.
  absl::StatusOr<pb::SnapshotVolumeResponse> SnapshotVolume(
      const pb::SnapshotVolumeRequest& req) override;
  absl::StatusOr<pb::PublishResponse> Publish(
      const pb::PublishRequest& req) override;
  absl::Status Unpublish(const std::string& volume_id,
                         const std::string& target_path) override;
  absl::StatusOr<pb::StatusResponse> Status() override;

  // The next call (any method) returns `s`.
  void FailNext(absl::Status s);
  // ForgetVolume and StopServing of `volume_id` return FailedPrecondition
  // while set (leases hold access).
  void SetLeasesHoldAccess(const std::string& volume_id, bool held);

  std::map<std::string, pb::RecordVolumeRequest> volumes() const;
  std::map<std::string, pb::ServeVolumeRequest> served() const;
  // target path -> request.
  std::map<std::string, pb::PublishRequest> publishes() const;
  std::vector<std::string> calls() const;  // method names, in order

 private:
  absl::Status Take(const std::string& method)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  mutable absl::Mutex mu_;
  absl::Status next_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, pb::RecordVolumeRequest> volumes_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, pb::ServeVolumeRequest> served_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, pb::PublishRequest> publishes_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, bool> held_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> calls_ ABSL_GUARDED_BY(mu_);
};

}  // namespace daxlease::agent

#endif  // DAXLEASE_NODE_AGENT_AGENT_CLIENT_AGENT_CLIENT_H_
