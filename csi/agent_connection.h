// AgentConnection: daxlease-csi's boundary with the daxlease-agent of its
// node (docs/design.md §3). The CSI services decide when a volume becomes known
// to the operator, served by its owner, or handed to a pod; the agent does
// the lease work (DaxVolume/DaxLease objects, mappings, recall, fences).
//
// Implementations: GrpcAgentConnection (the agent's unix socket, gRPC) and
// FakeAgentConnection (unit tests).
//
// CONTRACT (every implementation):
// - Every method is idempotent; the comment says how.
// - An agent that cannot be reached (not running, socket missing, deadline)
//   is UNAVAILABLE, so the CSI call fails with UNAVAILABLE and the CO
//   retries; the services undo their own steps first.
// - Refusals from the agent keep their code (FAILED_PRECONDITION while
//   leases hold access, ALREADY_EXISTS for a different spec, NOT_FOUND).
// - Thread-safe; calls for different volumes may run concurrently.
#ifndef DAXLEASE_CSI_AGENT_CONNECTION_H_
#define DAXLEASE_CSI_AGENT_CONNECTION_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "csi/volume_backend.h"

namespace daxlease::csi {

// What CreateVolume records for the operator: the DaxVolume's spec.
struct AgentVolume {
  std::string volume_id;
  std::string owner_node;
  uint64_t size_bytes = 0;
  VolumeMode mode = VolumeMode::kFsdax;
  std::string fs_type;  // "" for devdax
  bool share = false;
  int recall_grace_seconds = 30;
};

// A volume the owner node's agent maps and serves to remote holders.
struct ServedVolume {
  std::string volume_id;
  VolumeMode mode = VolumeMode::kFsdax;
  // fsdax: the staging mount (the agent maps its data file there);
  // devdax: the device node.
  std::string path;
  uint64_t size_bytes = 0;
  bool dax = false;  // really mounted with -o dax (the backend provides DAX)
};

// The pod a publish is for (kubelet's podInfoOnMount volume context).
struct PodInfo {
  std::string name;
  std::string ns;
  std::string uid;
};

struct AgentPublish {
  std::string volume_id;
  std::string target_path;
  PodInfo pod;
  bool read_only = false;
  // True on the owner node (the memory is local), false on another node of
  // the fabric.
  bool owner_local = false;
  std::string owner_node;
};

// Where a reshape stands (AgentConnection::ReshapeVolume).
enum class ReshapeStage {
  kChange,  // no lease holds access (or the recall is done): change now
  kDone,    // the agent serves the new size; holders are let back in
};
struct ReshapeAnswer {
  ReshapeStage stage = ReshapeStage::kDone;
  std::string recall;  // the DaxRecall (reason Reshape), "" if none
  uint64_t served_bytes = 0;
};

class AgentConnection {
 public:
  virtual ~AgentConnection() = default;

  // Creates the DaxVolume (or keeps it when its spec matches).
  // ALREADY_EXISTS when a DaxVolume of that name has another spec.
  virtual absl::Status RecordVolume(const AgentVolume& volume) = 0;

  // Deletes the DaxVolume. FAILED_PRECONDITION while a lease of the volume
  // holds access; OK when there is none.
  virtual absl::Status ForgetVolume(absl::string_view volume_id) = 0;

  // Owner node, at stage: the agent maps the volume and serves remote
  // holders. Again with the same arguments: OK.
  virtual absl::Status ServeVolume(const ServedVolume& volume) = 0;

  // Owner node, at unstage: the agent drops its mapping.
  // FAILED_PRECONDITION while a lease holds access. OK when not served.
  virtual absl::Status StopServing(absl::string_view volume_id) = 0;

  // Owner node, ControllerExpandVolume of a served volume: first with
  // `complete` false (UNAVAILABLE "recall in progress" while the holders are
  // recalled, ABORTED while another change holds the volume, else kChange or
  // kDone), then, once the backend and filesystem grew, with `complete`
  // true (remaps; kDone).
  virtual absl::StatusOr<ReshapeAnswer> ReshapeVolume(
      absl::string_view volume_id, uint64_t size_bytes, bool complete) = 0;

  // Owner node, CreateSnapshot of a served volume: first with `complete`
  // false (UNAVAILABLE "recall in progress" while the Snapshot recall runs,
  // ABORTED while another change holds the volume; OK once the volume is
  // Quiesced: copy now), then, once the copy is taken, with `complete` true
  // (the holders are let back in at the next epoch). Returns the DaxRecall's
  // name ("" for a complete whose recall was already over).
  virtual absl::StatusOr<std::string> SnapshotVolume(
      absl::string_view volume_id, bool complete) = 0;

  // Registers a publish for a pod and returns the descriptor libdaxlease
  // reads from the published directory (the agent's format; the CSI plugin
  // writes it verbatim). Again for the same target: the same publish.
  virtual absl::StatusOr<std::string> Publish(const AgentPublish& publish) = 0;

  // The pod's clients flush and drop their mappings, its lease is released.
  // OK when the target is not published.
  virtual absl::Status Unpublish(absl::string_view volume_id,
                                 absl::string_view target_path) = 0;

  // The agent's unix socket on this node; bound into published directories.
  virtual const std::string& socket_path() const = 0;
  // Whether the agent's fabric can share fsdax volumes (RDMA verbs only with
  // on-demand paging), for NodeGetInfo's daxlease.io/fsdax-sharing.
  // UNAVAILABLE when the agent is down.
  virtual absl::StatusOr<bool> CanShareFsdax() = 0;
};

}  // namespace daxlease::csi

#endif  // DAXLEASE_CSI_AGENT_CONNECTION_H_
