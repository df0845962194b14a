#include "csi/shared_publish.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "csi/validation.h"
#include "lib/base/status.h"

namespace daxlease::csi {

bool IsShared(const std::map<std::string, std::string>& parameters) {
  auto it = parameters.find(kParamShare);
  return it != parameters.end() && it->second == "true";
}

AgentVolume AgentVolumeFor(const VolumeRecord& rec, const std::string& node) {
  AgentVolume v;
  v.volume_id = rec.id;
  v.owner_node = node;
  v.size_bytes = rec.capacity_bytes;
  v.mode = rec.mode;
  v.fs_type = rec.mode == VolumeMode::kDevdax ? "" : rec.fs_type;
  v.share = IsShared(rec.parameters);
  auto grace = rec.parameters.find(kParamRecallGrace);
  // Validated at create (1..86400); a record that says otherwise keeps 30.
  if (grace != rec.parameters.end()) {
    int g = 0;
    if (absl::SimpleAtoi(grace->second, &g) && g > 0) {
      v.recall_grace_seconds = g;
    }
  }
  return v;
}

PodInfo PodFromContext(
    const google::protobuf::Map<std::string, std::string>& ctx) {
  PodInfo pod;
  auto get = [&ctx](const char* key) {
    auto it = ctx.find(key);
    return it == ctx.end() ? std::string() : it->second;
  };
  pod.name = get(kContextPodName);
  pod.ns = get(kContextPodNamespace);
  pod.uid = get(kContextPodUid);
  return pod;
}

absl::Status BuildPublishedDir(const DriverDeps& deps,
                               const std::string& target,
                               const std::string& volume_source, bool read_only,
                               const AgentPublish& publish) {
  sys::Mounter& m = *deps.mounter;
  if (!m.PathExists(deps.agent->socket_path())) {
    return absl::UnavailableError(
        absl::StrCat("the node agent's socket ", deps.agent->socket_path(),
                     " does not exist: is daxlease-agent running?"));
  }
  RETURN_IF_ERROR(m.MakeDir(target));
  ASSIGN_OR_RETURN(std::optional<sys::MountInfo> top, m.GetMount(target));
  if (!top.has_value()) {
    RETURN_IF_ERROR(m.Mount("tmpfs", target, "tmpfs",
                            "size=1m,mode=0755,nosuid,nodev,noexec"));
  } else if (top->fs_type != "tmpfs") {
    return absl::FailedPreconditionError(absl::StrCat(
        "target_path ", target, " already has a mount of ", top->source));
  }
  if (!volume_source.empty()) {
    const std::string vol = absl::StrCat(target, "/", kVolumeDir);
    RETURN_IF_ERROR(m.MakeDir(vol));
    ASSIGN_OR_RETURN(std::optional<sys::MountInfo> v, m.GetMount(vol));
    if (!v.has_value())
      RETURN_IF_ERROR(m.BindMount(volume_source, vol, read_only));
  }
  // The socket's directory, read-only (a client needs no write access to
  // the directory to connect): the agent's socket there is whichever
  // socket the agent bound last.
  const std::string& socket = deps.agent->socket_path();
  const size_t slash = socket.rfind('/');
  const std::string socket_dir =
      slash == 0 ? "/" : socket.substr(0, slash);  // absolute (main.cc)
  const std::string agent_dir = absl::StrCat(target, "/", kAgentDir);
  RETURN_IF_ERROR(m.MakeDir(agent_dir));
  ASSIGN_OR_RETURN(std::optional<sys::MountInfo> d, m.GetMount(agent_dir));
  if (!d.has_value()) RETURN_IF_ERROR(m.BindMount(socket_dir, agent_dir, true));
  const std::string sock = absl::StrCat(target, "/", kAgentSocketFile);
  absl::Status linked = m.MakeSymlink(
      absl::StrCat(kAgentDir, "/", socket.substr(slash + 1)), sock);
  if (absl::IsAlreadyExists(linked)) {
    // Published by an older plugin (a bind of the socket file): a retry
    // keeps it; unpublishing removes either.
    ASSIGN_OR_RETURN(std::optional<sys::MountInfo> old, m.GetMount(sock));
    if (!old.has_value()) return linked;
  } else {
    RETURN_IF_ERROR(linked);
  }
  // Last: a descriptor in the directory means everything it names is there.
  ASSIGN_OR_RETURN(std::string descriptor, deps.agent->Publish(publish));
  return m.WriteFile(absl::StrCat(target, "/", kDescriptorFile), descriptor);
}

absl::Status UnmountPublishedDirContents(const DriverDeps& deps,
                                         const std::string& target) {
  sys::Mounter& m = *deps.mounter;
  // agent.sock: a symlink (Unmount leaves it; it goes with the tmpfs), or
  // an older plugin's bind of the socket file.
  for (const char* child : {kAgentSocketFile, kAgentDir, kVolumeDir}) {
    RETURN_IF_ERROR(m.Unmount(absl::StrCat(target, "/", child)));
  }
  return absl::OkStatus();
}

}  // namespace daxlease::csi
