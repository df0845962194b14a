// NodeService for shared volumes that live on another node of this node's
// fabric: the pod gets a published directory (csi/shared_publish.h) and
// reaches the owner's memory through the agents. Nothing is attached or
// mounted from media here, so "staging" only records the path.
#include "absl/strings/str_cat.h"
#include "csi/node_service.h"
#include "csi/repair.h"
#include "csi/shared_publish.h"
#include "csi/validation.h"
#include "lib/base/log.h"
#include "lib/base/status.h"

namespace daxlease::csi {

namespace {

std::string ContextValue(
    const google::protobuf::Map<std::string, std::string>& ctx,
    const char* key) {
  auto it = ctx.find(key);
  return it == ctx.end() ? std::string() : it->second;
}

}  // namespace

bool NodeService::IsRemoteShared(
    const google::protobuf::Map<std::string, std::string>& ctx) const {
  // Asked only when this node has no record of the volume: also a volume
  // created here (its context names this node) whose media a migration
  // moved to another node (MediaService::Free moved the stage and
  // publishes to the remote records).
  const std::string owner = ContextValue(ctx, kContextOwnerNode);
  return ContextValue(ctx, kParamShare) == "true" && !owner.empty();
}

AgentPublish NodeService::AgentPublishFor(
    const ::csi::v1::NodePublishVolumeRequest& req, const std::string& target,
    bool owner_local) const {
  AgentPublish p;
  p.volume_id = req.volume_id();
  p.target_path = target;
  p.pod = PodFromContext(req.volume_context());
  p.read_only =
      req.readonly() ||
      (req.volume_capability().has_access_mode() &&
       (req.volume_capability().access_mode().mode() ==
            ::csi::v1::VolumeCapability::AccessMode::MULTI_NODE_READER_ONLY ||
        req.volume_capability().access_mode().mode() ==
            ::csi::v1::VolumeCapability::AccessMode::SINGLE_NODE_READER_ONLY));
  p.owner_local = owner_local;
  p.owner_node = owner_local
                     ? config_.node_id
                     : ContextValue(req.volume_context(), kContextOwnerNode);
  return p;
}

absl::Status NodeService::StageRemote(
    const ::csi::v1::NodeStageVolumeRequest& req, const std::string& path) {
  const std::string& id = req.volume_id();
  const std::string owner =
      ContextValue(req.volume_context(), kContextOwnerNode);
  const std::string fabric = ContextValue(req.volume_context(), kContextFabric);
  if (deps_.agent == nullptr || deps_.remote_store == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "volume ", id, " lives on node ", owner,
        "; this plugin has no node agent (--agent-socket) to reach it"));
  }
  if (fabric.empty() || fabric != config_.fabric) {
    return absl::FailedPreconditionError(absl::StrCat(
        "volume ", id, " lives on node ", owner, " of fabric '", fabric,
        "'; this node is on fabric '", config_.fabric, "'"));
  }
  ASSIGN_OR_RETURN(CapabilityInfo cap,
                   ValidateCapability(req.volume_capability(), true));
  if (cap.block) {
    return absl::InvalidArgumentError(absl::StrCat(
        "volume ", id, " lives on node ", owner,
        ": remote access is a published directory, block access is "
        "not possible here"));
  }
  ASSIGN_OR_RETURN(std::optional<VolumeRecord> existing,
                   deps_.remote_store->Load(id));
  if (existing.has_value() && existing->stage.has_value()) {
    if (existing->stage->staging_path != path) {
      return absl::FailedPreconditionError(
          absl::StrCat("volume ", id, " is already staged at ",
                       existing->stage->staging_path));
    }
    return absl::OkStatus();
  }
  VolumeRecord rec;
  rec.id = id;
  rec.name = id;
  rec.phase = VolumePhase::kReady;
  rec.parameters = {{kParamShare, "true"},
                    {kContextOwnerNode, owner},
                    {kContextFabric, fabric}};
  StageRecord st;
  st.staging_path = path;
  rec.stage = st;
  RETURN_IF_ERROR(deps_.mounter->MakeDir(path));
  RETURN_IF_ERROR(deps_.remote_store->Save(rec));
  base::LogInfo("csi.volume.staged_remote",
                {{"volume", id}, {"path", path}, {"owner", owner}});
  return absl::OkStatus();
}

absl::Status NodeService::UnstageRemote(VolumeRecord* rec,
                                        const std::string& path) {
  if (!rec->stage.has_value() || rec->stage->staging_path != path) {
    return absl::OkStatus();
  }
  if (!rec->publishes.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("volume ", rec->id, " is still published at ",
                     rec->publishes.begin()->first, "; unpublish it first"));
  }
  RETURN_IF_ERROR(deps_.remote_store->Remove(rec->id));
  base::LogInfo("csi.volume.unstaged", {{"volume", rec->id}, {"path", path}});
  return absl::OkStatus();
}

absl::Status NodeService::PublishRemote(
    const ::csi::v1::NodePublishVolumeRequest& req, const std::string& target,
    const std::string& staging) {
  const std::string& id = req.volume_id();
  if (deps_.agent == nullptr || deps_.remote_store == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("volume ", id,
                     " lives on another node; this plugin has no node "
                     "agent (--agent-socket) to reach it"));
  }
  ASSIGN_OR_RETURN(CapabilityInfo cap,
                   ValidateCapability(req.volume_capability(), true));
  if (cap.block) {
    return absl::InvalidArgumentError(
        "remote shared volumes are published as a directory, not a block "
        "device");
  }
  ASSIGN_OR_RETURN(std::optional<VolumeRecord> loaded,
                   deps_.remote_store->Load(id));
  if (!loaded.has_value() || !loaded->stage.has_value()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "volume ", id, " is not staged; call NodeStageVolume first"));
  }
  VolumeRecord rec = std::move(*loaded);
  if (rec.stage->staging_path != staging) {
    return absl::FailedPreconditionError(
        absl::StrCat("volume ", id, " is staged at ", rec.stage->staging_path,
                     ", not at ", staging));
  }
  const AgentPublish publish = AgentPublishFor(req, target, false);
  auto it = rec.publishes.find(target);
  const bool is_new = it == rec.publishes.end();
  if (!is_new && it->second.read_only != publish.read_only) {
    return absl::AlreadyExistsError(
        absl::StrCat("volume ", id, " is already published at ", target,
                     " with other options"));
  }
  // Same order as a local publish: the record names the target before any
  // mount, so a crash is finished by the retry or undone by the unpublish.
  DriverDeps remote = deps_;
  remote.store = deps_.remote_store;
  if (is_new) {
    PublishRecord p;
    p.target_path = target;
    p.read_only = publish.read_only;
    p.shared_dir = true;
    rec.publishes[target] = p;
    RETURN_IF_ERROR(deps_.remote_store->Save(rec));
  }
  absl::Status st =
      BuildPublishedDir(remote, target, "", publish.read_only, publish);
  if (!st.ok()) {
    if (is_new) {
      (void)deps_.agent->Unpublish(id, target);
      absl::Status undo = TearDownPublish(remote, &rec, target);
      if (!undo.ok()) {
        base::LogError("csi.publish.rollback_failed",
                       {{"volume", id}, {"error", undo.ToString()}});
      }
    }
    return st;
  }
  if (is_new) {
    base::LogInfo("csi.volume.published_remote",
                  {{"volume", id},
                   {"target", target},
                   {"owner", publish.owner_node},
                   {"readonly", publish.read_only ? "true" : "false"}});
  }
  return absl::OkStatus();
}

absl::Status NodeService::UnpublishRemote(VolumeRecord* rec,
                                          const std::string& target) {
  if (!rec->publishes.count(target)) return absl::OkStatus();
  RETURN_IF_ERROR(deps_.agent->Unpublish(rec->id, target));
  DriverDeps remote = deps_;
  remote.store = deps_.remote_store;
  RETURN_IF_ERROR(TearDownPublish(remote, rec, target));
  base::LogInfo("csi.volume.unpublished",
                {{"volume", rec->id}, {"target", target}});
  return absl::OkStatus();
}

}  // namespace daxlease::csi
