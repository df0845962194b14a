// Shared volumes (daxlease.io/share=true) and the node agent: the names the
// CSI plugin and libdaxlease agree on, and the published directory a pod
// gets for a shared volume.
//
// Published directory (one per publish, so each pod has its own descriptor):
//   <target>/                a small tmpfs
//   <target>/daxlease.json   the descriptor the agent returned for this
//                            publish (libdaxlease reads it to attach)
//   <target>/agent/          read-only bind of the node agent's socket
//                            DIRECTORY (dirname of --agent-socket, which
//                            holds nothing else): an agent that restarts
//                            binds a new socket (a new inode) there, and the
//                            pod sees it; a bind of the socket file would
//                            keep the dead one
//   <target>/agent.sock      symlink "agent/<socket name>": where
//                            libdaxlease looks (any version)
//   <target>/volume/         owner node only: bind of the staging (DAX) mount
// On another node of the volume's fabric there is no local memory: the
// descriptor and the socket are all, and libdaxlease reaches the owner's
// memory through the agent.
#ifndef DAXLEASE_CSI_SHARED_PUBLISH_H_
#define DAXLEASE_CSI_SHARED_PUBLISH_H_

#include <map>
#include <string>

#include "absl/status/status.h"
#include "csi/agent_connection.h"
#include "csi/driver.h"
#include "csi/state_store.h"
#include "google/protobuf/map.h"

namespace daxlease::csi {

inline constexpr char kFabricTopologyKey[] = "daxlease.io/fabric";
// NodeGetInfo: "true" where the node's agent can share fsdax volumes over its
// fabric (RDMA verbs: only with on-demand paging), "false" where it shares
// devdax only; absent while the agent does not answer.
inline constexpr char kFsdaxSharingTopologyKey[] = "daxlease.io/fsdax-sharing";
// Volume context keys set by CreateVolume: where a shared volume lives.
inline constexpr char kContextOwnerNode[] = "daxlease.io/ownerNode";
inline constexpr char kContextFabric[] = "daxlease.io/fabric";
// podInfoOnMount keys kubelet adds to the publish volume context.
inline constexpr char kContextPodName[] = "csi.storage.k8s.io/pod.name";
inline constexpr char kContextPodNamespace[] =
    "csi.storage.k8s.io/pod.namespace";
inline constexpr char kContextPodUid[] = "csi.storage.k8s.io/pod.uid";

inline constexpr char kDescriptorFile[] = "daxlease.json";
inline constexpr char kAgentSocketFile[] = "agent.sock";
inline constexpr char kAgentDir[] = "agent";
inline constexpr char kVolumeDir[] = "volume";

// Whether the volume's parameters say daxlease.io/share=true.
bool IsShared(const std::map<std::string, std::string>& parameters);

// The DaxVolume spec for a local volume record owned by `node_id`.
AgentVolume AgentVolumeFor(const VolumeRecord& rec, const std::string& node);

PodInfo PodFromContext(
    const google::protobuf::Map<std::string, std::string>& ctx);

// Builds (or completes: idempotent) the published directory at `target`:
// tmpfs, `volume/` bound from `volume_source` (owner node; "" on another
// node), the agent's socket directory and the agent.sock link into it, then
// the descriptor from agent->Publish(publish). A directory an older plugin
// published (agent.sock a bind of the socket file) keeps that bind.
// On failure the caller tears it down (TearDownPublishedDir) and tells the
// agent to forget the publish.
absl::Status BuildPublishedDir(const DriverDeps& deps,
                               const std::string& target,
                               const std::string& volume_source, bool read_only,
                               const AgentPublish& publish);

// Unmounts what BuildPublishedDir mounted inside `target` (the socket
// directory, an older plugin's bind of the socket file, the volume),
// leaving the tmpfs on `target` itself for TearDownPublish. Idempotent.
absl::Status UnmountPublishedDirContents(const DriverDeps& deps,
                                         const std::string& target);

}  // namespace daxlease::csi

#endif  // DAXLEASE_CSI_SHARED_PUBLISH_H_
