#include "csi/node_service.h"

#include <fcntl.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "csi/repair.h"
#include "csi/shared_publish.h"
#include "csi/validation.h"
#include "lib/base/log.h"
#include "lib/base/status.h"
#include "lib/sys/fd.h"

namespace daxlease::csi {

using ::csi::v1::NodeServiceCapability;

namespace {

std::string Normalize(const std::string& path) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p;
}

const char* Access(bool block) { return block ? "block" : "mount"; }

}  // namespace

absl::StatusOr<VolumeRecord> NodeService::LoadVolume(const std::string& id) {
  ASSIGN_OR_RETURN(std::optional<VolumeRecord> rec, deps_.store->Load(id));
  if (!rec.has_value() || rec->phase != VolumePhase::kReady) {
    return absl::NotFoundError(absl::StrCat("volume ", id, " not found"));
  }
  return std::move(*rec);
}

absl::Status NodeService::StageSteps(VolumeRecord* rec, MountDevice* attached) {
  StageRecord& st = *rec->stage;
  MountDevice again;
  if (attached == nullptr) {
    // A retry: the device may have gone (detached by hand, reboot, or
    // released with its last user when this plugin died before the mount).
    if (st.block) {
      ASSIGN_OR_RETURN(again.device, deps_.backend->Attach(rec->id));
    } else {
      ASSIGN_OR_RETURN(again, deps_.backend->AttachForMount(rec->id));
    }
    attached = &again;
    if (st.device != again.device.path) {
      st.device = again.device.path;
      RETURN_IF_ERROR(deps_.store->SaveMounts(*rec));
    }
  }
  const AttachedDevice& dev = attached->device;
  if (st.block) return absl::OkStatus();

  RETURN_IF_ERROR(deps_.mounter->MakeDir(st.staging_path));
  ASSIGN_OR_RETURN(std::optional<sys::MountInfo> mounted,
                   deps_.mounter->GetMount(st.staging_path));
  if (mounted.has_value()) {
    if (mounted->source == dev.path) return GoWithLastMount(rec->id, *attached);
    return absl::FailedPreconditionError(
        absl::StrCat("staging_target_path ", st.staging_path,
                     " already has a mount of ", mounted->source));
  }
  // CreateVolume made the filesystem: nothing to probe or format.
  if (rec->formatted) {
    RETURN_IF_ERROR(MountStaging(rec->id, st, dev.path));
    return GoWithLastMount(rec->id, *attached);
  }
  // A volume of an older version: never format what carries data, a blank
  // device only. A volume the backend proves all-zero needs no probe
  // (libblkid reads dozens of scattered blocks of a cold device).
  ASSIGN_OR_RETURN(bool zeros, deps_.backend->ReadsAsZeros(rec->id));
  std::string found;
  if (!zeros) {
    ASSIGN_OR_RETURN(found, deps_.formatter->Detect(dev.path));
  }
  if (found.empty()) {
    RETURN_IF_ERROR(deps_.formatter->Format(
        dev.path, st.fs_type,
        MkfsArgs(st.fs_type, rec->capacity_bytes, zeros)));
  } else if (found != st.fs_type) {
    return absl::FailedPreconditionError(absl::StrCat(
        "device ", dev.path, " of volume ", rec->id, " carries ", found,
        ", not ", st.fs_type, "; refusing to format over it"));
  }
  RETURN_IF_ERROR(MountStaging(rec->id, st, dev.path));
  return GoWithLastMount(rec->id, *attached);
}

absl::Status NodeService::GoWithLastMount(const std::string& id,
                                          const MountDevice& dev) {
  // Set up at attach already (the usual case: a device attached by this
  // stage): nothing to do.
  if (dev.goes_with_last_user) return absl::OkStatus();
  // A safety net (the device goes with the staging mount if this plugin
  // dies before NodeUnstageVolume), not a condition of the stage.
  absl::Status s = deps_.backend->DetachWithLastMount(id);
  if (!s.ok()) {
    base::LogWarn("csi.stage.autodetach_failed",
                  {{"volume", id}, {"error", s.ToString()}});
  }
  return absl::OkStatus();
}

absl::Status NodeService::MountStaging(const std::string& id,
                                       const StageRecord& st,
                                       const std::string& device) {
  std::vector<std::string> opts = st.mount_flags;
  // A DAX backend mounts with -o dax, and the kernel must really grant it
  // (ext4/xfs fall back to the page cache with only a dmesg warning).
  const bool dax = deps_.backend->ProvidesDax();
  if (dax) opts.push_back("dax");
  RETURN_IF_ERROR(deps_.mounter->Mount(device, st.staging_path, st.fs_type,
                                       absl::StrJoin(opts, ",")));
  if (!dax) return absl::OkStatus();
  ASSIGN_OR_RETURN(std::optional<sys::MountInfo> m,
                   deps_.mounter->GetMount(st.staging_path));
  const std::string o =
      m.has_value() ? absl::StrCat(",", m->fs_options, ",", m->vfs_options, ",")
                    : "";
  if (o.find(",dax,") == std::string::npos &&
      o.find(",dax=always,") == std::string::npos) {
    (void)deps_.mounter->Unmount(st.staging_path);
    return absl::FailedPreconditionError(absl::StrCat(
        "the kernel mounted ", device, " without DAX (options \"",
        m.has_value() ? m->fs_options : "", "\"); refusing to run volume ", id,
        " through the page cache"));
  }
  base::LogInfo("csi.volume.dax_mounted", {{"volume", id},
                                           {"device", device},
                                           {"path", st.staging_path},
                                           {"options", m->fs_options}});
  return absl::OkStatus();
}

absl::Status NodeService::CheckDevdaxAccess(const VolumeRecord& rec,
                                            const CapabilityInfo& cap,
                                            bool share) const {
  if (rec.mode != VolumeMode::kDevdax || cap.block) return absl::OkStatus();
  if (!share || deps_.agent == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "devdax volume ", rec.id,
        " supports block access only (mount access is the published "
        "directory of a shared volume: daxlease.io/share=true on a node with "
        "an agent, --agent-socket)"));
  }
  return absl::OkStatus();
}

absl::Status NodeService::DoStage(
    const ::csi::v1::NodeStageVolumeRequest& req) {
  RETURN_IF_ERROR(ValidateVolumeId(req.volume_id()));
  RETURN_IF_ERROR(ValidatePath("staging_target_path", req.staging_target_path(),
                               config_.allowed_roots));
  if (!req.has_volume_capability()) {
    return absl::InvalidArgumentError("volume_capability is required");
  }
  RETURN_IF_ERROR(ValidateMapSize("volume_context", req.volume_context()));
  RETURN_IF_ERROR(ValidateMapSize("publish_context", req.publish_context()));
  RETURN_IF_ERROR(ValidateMapSize("secrets", req.secrets()));
  const std::string id = req.volume_id();
  const std::string path = Normalize(req.staging_target_path());
  ASSIGN_OR_RETURN(VolumeLocks::Guard guard, deps_.locks->TryLock(id));
  absl::StatusOr<VolumeRecord> loaded = LoadVolume(id);
  if (absl::IsNotFound(loaded.status()) &&
      IsRemoteShared(req.volume_context())) {
    return StageRemote(req, path);
  }
  ASSIGN_OR_RETURN(VolumeRecord rec, std::move(loaded));
  bool share = rec.parameters.count(kParamShare) &&
               rec.parameters.at(kParamShare) == "true";
  ASSIGN_OR_RETURN(CapabilityInfo cap,
                   ValidateCapability(req.volume_capability(), share));
  // A devdax volume has no filesystem: its stage is the device alone
  // (`raw`), whichever access is asked. Mount access to it is the published
  // directory of a shared volume (libdaxlease maps the device the agent's
  // descriptor names), so it needs share and an agent.
  const bool devdax = rec.mode == VolumeMode::kDevdax;
  RETURN_IF_ERROR(CheckDevdaxAccess(rec, cap, share));
  const bool raw = cap.block || devdax;
  if (!devdax && !cap.fs_type.empty() && cap.fs_type != rec.fs_type) {
    return absl::InvalidArgumentError(
        absl::StrCat("volume_capability.mount.fs_type ", cap.fs_type,
                     " differs from the "
                     "volume's filesystem ",
                     rec.fs_type));
  }
  std::vector<std::string> flags = cap.mount_flags;
  if (cap.reader_only) flags.push_back("ro");

  if (rec.stage.has_value()) {
    const StageRecord& st = *rec.stage;
    if (st.staging_path != path) {
      return absl::FailedPreconditionError(absl::StrCat(
          "volume ", id, " is already staged at ", st.staging_path));
    }
    if (st.block != raw || st.mount_flags != flags) {
      return absl::AlreadyExistsError(
          absl::StrCat("volume ", id, " is already staged at ", path, " with ",
                       Access(st.block), " access and other options"));
    }
  }
  const bool is_new = !rec.stage.has_value();
  if (is_new && !raw) {
    // The path must resolve inside its root before anything is attached or
    // recorded: a path the mounter refuses (a planted symlink) could not be
    // rolled back through either.
    RETURN_IF_ERROR(deps_.mounter->MakeDir(path));
  }
  // The device this call attaches (a new stage); for a mount it is held
  // until the mount holds it.
  MountDevice attached;
  if (is_new) {
    // Attach, then one write records the stage with its device, before any
    // mount: a crash before the write leaves an attached device without a
    // stage (RecoverVolumes detaches it); after it, a stage that the CO's
    // retry finishes or its NodeUnstageVolume undoes (every step is
    // idempotent). Atomic, not durable: a power loss takes the mount too.
    if (raw) {
      ASSIGN_OR_RETURN(attached.device, deps_.backend->Attach(id));
    } else {
      ASSIGN_OR_RETURN(attached, deps_.backend->AttachForMount(id));
    }
    StageRecord st;
    st.staging_path = path;
    st.block = raw;
    st.fs_type = rec.fs_type;
    st.mount_flags = flags;
    st.device = attached.device.path;
    rec.stage = st;
    absl::Status saved = deps_.store->SaveMounts(rec);
    if (!saved.ok()) {
      (void)deps_.backend->Detach(id);
      return saved;
    }
  }
  absl::Status st = StageSteps(&rec, is_new ? &attached : nullptr);
  // Mounted (or failed): the device need not be held any longer, and a
  // rollback's Detach waits for a released device to go.
  attached.hold.Reset();
  // The owner's agent serves a shared volume while it is staged here (also
  // again on a repeated stage: an agent that restarted maps it again).
  if (st.ok() && share && (!cap.block || devdax) && deps_.agent != nullptr) {
    st = deps_.agent->ServeVolume(
        ServedVolume{id, rec.mode, devdax ? rec.stage->device : path,
                     rec.capacity_bytes, deps_.backend->ProvidesDax()});
  }
  if (!st.ok()) {
    if (is_new) {
      // Undo what this call did so nothing leaks; the CO retries.
      absl::Status undo = TearDownStage(deps_, &rec);
      if (!undo.ok()) {
        base::LogError("csi.stage.rollback_failed",
                       {{"volume", id}, {"error", undo.ToString()}});
      }
    }
    return st;
  }
  if (is_new) {
    base::LogInfo("csi.volume.staged", {{"volume", id},
                                        {"path", path},
                                        {"device", rec.stage->device},
                                        {"access", Access(cap.block)}});
  }
  return absl::OkStatus();
}

absl::Status NodeService::DoUnstage(
    const ::csi::v1::NodeUnstageVolumeRequest& req) {
  RETURN_IF_ERROR(ValidateVolumeId(req.volume_id()));
  RETURN_IF_ERROR(ValidatePath("staging_target_path", req.staging_target_path(),
                               config_.allowed_roots));
  const std::string id = req.volume_id();
  const std::string path = Normalize(req.staging_target_path());
  ASSIGN_OR_RETURN(VolumeLocks::Guard guard, deps_.locks->TryLock(id));
  absl::StatusOr<VolumeRecord> loaded = LoadVolume(id);
  if (absl::IsNotFound(loaded.status()) && deps_.remote_store != nullptr) {
    ASSIGN_OR_RETURN(auto remote, deps_.remote_store->Load(id));
    if (remote.has_value()) return UnstageRemote(&*remote, path);
  }
  ASSIGN_OR_RETURN(VolumeRecord rec, std::move(loaded));
  if (!rec.stage.has_value() || rec.stage->staging_path != path) {
    return absl::OkStatus();  // not staged there: nothing to do
  }
  if (!rec.publishes.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("volume ", id, " is still published at ",
                     rec.publishes.begin()->first, "; unpublish it first"));
  }
  if (IsShared(rec.parameters) &&
      (!rec.stage->block || rec.mode == VolumeMode::kDevdax) &&
      deps_.agent != nullptr) {
    RETURN_IF_ERROR(deps_.agent->StopServing(id));
  }
  RETURN_IF_ERROR(TearDownStage(deps_, &rec));
  base::LogInfo("csi.volume.unstaged", {{"volume", id}, {"path", path}});
  return absl::OkStatus();
}

absl::Status NodeService::VerifyStagingMount(const VolumeRecord& rec) {
  const StageRecord& st = *rec.stage;
  ASSIGN_OR_RETURN(std::optional<sys::MountInfo> m,
                   deps_.mounter->GetMount(st.staging_path));
  if (!m.has_value()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "volume ", rec.id, " is recorded as staged, but nothing is mounted at ",
        st.staging_path,
        " (lost, e.g. by a failed offline grow); refusing to publish the bare "
        "directory: call NodeStageVolume again to mount it"));
  }
  if (m->source != st.device || m->fs_type != st.fs_type) {
    return absl::FailedPreconditionError(absl::StrCat(
        "staging_target_path ", st.staging_path, " holds ", m->source, " (",
        m->fs_type, "), not volume ", rec.id, "'s ", st.device, " (",
        st.fs_type, "); refusing to publish it"));
  }
  return absl::OkStatus();
}

absl::Status NodeService::PublishSteps(VolumeRecord* rec,
                                       const std::string& target) {
  const PublishRecord& p = rec->publishes.at(target);
  const StageRecord& st = *rec->stage;
  if (p.block) {
    RETURN_IF_ERROR(deps_.mounter->MakeFile(target));
  } else {
    RETURN_IF_ERROR(deps_.mounter->MakeDir(target));
  }
  ASSIGN_OR_RETURN(std::optional<sys::MountInfo> mounted,
                   deps_.mounter->GetMount(target));
  if (mounted.has_value()) {
    // Ours from an earlier attempt of this same publish (the record says
    // so); check it is the right device.
    bool same = p.block ? mounted->root == st.device ||
                              absl::EndsWith(st.device, mounted->root)
                        : mounted->source == st.device;
    if (same) return absl::OkStatus();
    return absl::FailedPreconditionError(absl::StrCat(
        "target_path ", target, " already has a mount of ", mounted->source));
  }
  const std::string& source = p.block ? st.device : st.staging_path;
  return deps_.mounter->BindMount(source, target, p.read_only);
}

absl::Status NodeService::DoPublish(
    const ::csi::v1::NodePublishVolumeRequest& req) {
  RETURN_IF_ERROR(ValidateVolumeId(req.volume_id()));
  RETURN_IF_ERROR(ValidatePath("staging_target_path", req.staging_target_path(),
                               config_.allowed_roots));
  RETURN_IF_ERROR(
      ValidatePath("target_path", req.target_path(), config_.allowed_roots));
  if (!req.has_volume_capability()) {
    return absl::InvalidArgumentError("volume_capability is required");
  }
  RETURN_IF_ERROR(ValidateMapSize("volume_context", req.volume_context()));
  RETURN_IF_ERROR(ValidateMapSize("publish_context", req.publish_context()));
  RETURN_IF_ERROR(ValidateMapSize("secrets", req.secrets()));
  const std::string id = req.volume_id();
  const std::string target = Normalize(req.target_path());
  const std::string staging = Normalize(req.staging_target_path());
  if (target == staging) {
    return absl::InvalidArgumentError(
        "target_path must differ from staging_target_path");
  }
  ASSIGN_OR_RETURN(VolumeLocks::Guard guard, deps_.locks->TryLock(id));
  absl::StatusOr<VolumeRecord> loaded = LoadVolume(id);
  if (absl::IsNotFound(loaded.status()) &&
      IsRemoteShared(req.volume_context())) {
    return PublishRemote(req, target, staging);
  }
  ASSIGN_OR_RETURN(VolumeRecord rec, std::move(loaded));
  bool share = rec.parameters.count(kParamShare) &&
               rec.parameters.at(kParamShare) == "true";
  ASSIGN_OR_RETURN(CapabilityInfo cap,
                   ValidateCapability(req.volume_capability(), share));
  if (!rec.stage.has_value()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "volume ", id, " is not staged; call NodeStageVolume first"));
  }
  if (rec.stage->staging_path != staging) {
    return absl::FailedPreconditionError(
        absl::StrCat("volume ", id, " is staged at ", rec.stage->staging_path,
                     ", not at ", staging));
  }
  const bool devdax = rec.mode == VolumeMode::kDevdax;
  RETURN_IF_ERROR(CheckDevdaxAccess(rec, cap, share));
  if (rec.stage->block != (cap.block || devdax)) {
    return absl::InvalidArgumentError(
        absl::StrCat("volume ", id, " is staged for ", Access(rec.stage->block),
                     " access, the request asks for ", Access(cap.block)));
  }
  if (!rec.stage->block) RETURN_IF_ERROR(VerifyStagingMount(rec));
  const bool read_only = req.readonly() || cap.reader_only;
  auto it = rec.publishes.find(target);
  if (it != rec.publishes.end() &&
      (it->second.read_only != read_only || it->second.block != cap.block)) {
    return absl::AlreadyExistsError(
        absl::StrCat("volume ", id, " is already published at ", target,
                     " with other options (read-only=",
                     it->second.read_only ? "true" : "false", ")"));
  }
  // A new publish is recorded before the bind: the bind is idempotent and
  // the record names the target, so a crash in between is repaired by the
  // CO's retry (or undone by its NodeUnpublishVolume); one atomic write
  // per publish (not durable: a power loss takes the bind too). A failed
  // bind is rolled back at once.
  const bool is_new = it == rec.publishes.end();
  if (is_new) {
    // As in DoStage: a target the mounter refuses is refused before it is
    // recorded, since its rollback would be refused too.
    RETURN_IF_ERROR(cap.block ? deps_.mounter->MakeFile(target)
                              : deps_.mounter->MakeDir(target));
    PublishRecord p;
    p.target_path = target;
    p.read_only = read_only;
    p.block = cap.block;
    p.shared_dir = share && !cap.block && deps_.agent != nullptr;
    rec.publishes[target] = p;
    RETURN_IF_ERROR(deps_.store->SaveMounts(rec));
  }
  const bool shared_dir = rec.publishes[target].shared_dir;
  absl::Status st =
      shared_dir ? BuildPublishedDir(
                       deps_, target, devdax ? "" : rec.stage->staging_path,
                       read_only, AgentPublishFor(req, target, true))
                 : PublishSteps(&rec, target);
  if (!st.ok()) {
    if (shared_dir && is_new) {
      // Nothing half-done: the agent forgets the publish (if it got it).
      (void)deps_.agent->Unpublish(id, target);
    }
    if (is_new) {
      absl::Status undo = TearDownPublish(deps_, &rec, target);
      if (!undo.ok()) {
        base::LogError("csi.publish.rollback_failed",
                       {{"volume", id}, {"error", undo.ToString()}});
      }
    }
    return st;
  }
  if (is_new) {
    base::LogInfo("csi.volume.published",
                  {{"volume", id},
                   {"target", target},
                   {"readonly", read_only ? "true" : "false"},
                   {"access", Access(cap.block)}});
  }
  return absl::OkStatus();
}

absl::Status NodeService::DoUnpublish(
    const ::csi::v1::NodeUnpublishVolumeRequest& req) {
  RETURN_IF_ERROR(ValidateVolumeId(req.volume_id()));
  RETURN_IF_ERROR(
      ValidatePath("target_path", req.target_path(), config_.allowed_roots));
  const std::string id = req.volume_id();
  const std::string target = Normalize(req.target_path());
  ASSIGN_OR_RETURN(VolumeLocks::Guard guard, deps_.locks->TryLock(id));
  absl::StatusOr<VolumeRecord> loaded = LoadVolume(id);
  if (absl::IsNotFound(loaded.status()) && deps_.remote_store != nullptr) {
    ASSIGN_OR_RETURN(auto remote, deps_.remote_store->Load(id));
    if (remote.has_value()) return UnpublishRemote(&*remote, target);
  }
  ASSIGN_OR_RETURN(VolumeRecord rec, std::move(loaded));
  if (!rec.publishes.count(target)) return absl::OkStatus();
  // The lease is released (the pod's clients flushed) before the memory
  // leaves the pod; an agent that is down fails the call, the CO retries.
  if (rec.publishes.at(target).shared_dir && deps_.agent != nullptr) {
    RETURN_IF_ERROR(deps_.agent->Unpublish(id, target));
  }
  RETURN_IF_ERROR(TearDownPublish(deps_, &rec, target));
  base::LogInfo("csi.volume.unpublished", {{"volume", id}, {"target", target}});
  return absl::OkStatus();
}

absl::Status NodeService::DoStats(
    const ::csi::v1::NodeGetVolumeStatsRequest& req,
    ::csi::v1::NodeGetVolumeStatsResponse* resp) {
  RETURN_IF_ERROR(ValidateVolumeId(req.volume_id()));
  // Only compared with the record below: a path where the volume is not
  // (relative, outside the roots) is NotFound, as the CSI spec says.
  RETURN_IF_ERROR(ValidateLookupPath("volume_path", req.volume_path()));
  const std::string id = req.volume_id();
  const std::string path = Normalize(req.volume_path());
  // Read-only: no lock, a consistent snapshot of the record is enough.
  ASSIGN_OR_RETURN(VolumeRecord rec, LoadVolume(id));
  bool block = false;
  if (rec.publishes.count(path)) {
    block = rec.publishes.at(path).block;
  } else if (rec.stage.has_value() && rec.stage->staging_path == path) {
    block = rec.stage->block;
  } else {
    return absl::NotFoundError(absl::StrCat(
        "volume ", id, " is neither staged nor published at ", path));
  }
  auto* cond = resp->mutable_volume_condition();
  auto media = deps_.backend->Get(id);
  ASSIGN_OR_RETURN(std::optional<sys::MountInfo> mounted,
                   deps_.mounter->GetMount(path));
  if (!media.ok()) {
    cond->set_abnormal(true);
    cond->set_message(absl::StrCat("backing media of volume ", id,
                                   " is gone: ", media.status().message()));
  } else if (!mounted.has_value() &&
             !(block && path == rec.stage->staging_path)) {
    cond->set_abnormal(true);
    cond->set_message(absl::StrCat(path, " is not mounted"));
  } else {
    cond->set_abnormal(false);
    cond->set_message("volume is healthy");
  }
  if (block) {
    auto* u = resp->add_usage();
    u->set_unit(::csi::v1::VolumeUsage::BYTES);
    u->set_total(static_cast<int64_t>(media.ok() ? media->capacity_bytes
                                                 : rec.capacity_bytes));
    return absl::OkStatus();
  }
  if (!mounted.has_value()) return absl::OkStatus();  // statfs would lie
  ASSIGN_OR_RETURN(sys::FsUsage usage, deps_.mounter->StatFs(path));
  auto* bytes = resp->add_usage();
  bytes->set_unit(::csi::v1::VolumeUsage::BYTES);
  bytes->set_total(static_cast<int64_t>(usage.total_bytes));
  bytes->set_available(static_cast<int64_t>(usage.available_bytes));
  bytes->set_used(static_cast<int64_t>(usage.used_bytes));
  auto* inodes = resp->add_usage();
  inodes->set_unit(::csi::v1::VolumeUsage::INODES);
  inodes->set_total(static_cast<int64_t>(usage.total_inodes));
  inodes->set_available(static_cast<int64_t>(usage.free_inodes));
  inodes->set_used(static_cast<int64_t>(usage.used_inodes));
  return absl::OkStatus();
}

absl::Status NodeService::GrowFilesystem(const VolumeRecord& rec) {
  const StageRecord& st = *rec.stage;
  ASSIGN_OR_RETURN(AttachedDevice dev, deps_.backend->Attach(rec.id));
  absl::Status online =
      deps_.formatter->Grow(dev.path, st.staging_path, st.fs_type);
  if (online.ok() || st.fs_type == "xfs") return online;
  if (!rec.publishes.empty()) {
    // Published: unmounting would pull the filesystem from under the pod.
    return absl::FailedPreconditionError(absl::StrCat(
        "online growth of ", st.fs_type, " volume ", rec.id,
        " failed: ", online.message(),
        " (ext4 online resize needs CAP_SYS_RESOURCE); the volume is "
        "published, so it cannot grow offline now: grant the plugin that "
        "capability, or expand while the volume is staged but not published"));
  }
  // ext4 online resize needs CAP_SYS_RESOURCE, which some containers drop.
  // While nothing is published the filesystem can grow offline instead:
  // unmount the staging path, check + resize, mount it again.
  base::LogWarn("csi.expand.offline_fallback",
                {{"volume", rec.id}, {"online_error", online.ToString()}});
  // An open of the device keeps it attached while nothing mounts it (the
  // stage made it go with its last user: DetachWithLastMount); a plain
  // open does not stop e2fsck's and resize2fs's exclusive ones.
  absl::StatusOr<sys::UniqueFd> hold = sys::OpenFd(dev.path, O_RDONLY);
  RETURN_IF_ERROR(deps_.mounter->Unmount(st.staging_path));
  absl::Status offline = deps_.formatter->Grow(dev.path, "", st.fs_type);
  // Mounted again exactly as staging mounts it (-o dax, checked, on a DAX
  // backend), whether or not the growth worked.
  absl::Status remount = MountStaging(rec.id, st, dev.path);
  RETURN_IF_ERROR(offline);
  return remount;
}

absl::Status NodeService::DoExpand(
    const ::csi::v1::NodeExpandVolumeRequest& req,
    ::csi::v1::NodeExpandVolumeResponse* resp) {
  RETURN_IF_ERROR(ValidateVolumeId(req.volume_id()));
  // As in DoStats: the paths are only matched against the record (the grow
  // runs on the recorded staging path), so an unknown path is NotFound.
  RETURN_IF_ERROR(ValidateLookupPath("volume_path", req.volume_path()));
  if (!req.staging_target_path().empty()) {
    RETURN_IF_ERROR(
        ValidateLookupPath("staging_target_path", req.staging_target_path()));
  }
  if (req.has_volume_capability()) {
    RETURN_IF_ERROR(ValidateCapability(req.volume_capability(), true).status());
  }
  const std::string id = req.volume_id();
  const std::string path = Normalize(req.volume_path());
  ASSIGN_OR_RETURN(VolumeLocks::Guard guard, deps_.locks->TryLock(id));
  ASSIGN_OR_RETURN(VolumeRecord rec, LoadVolume(id));
  bool known = rec.publishes.count(path) ||
               (rec.stage.has_value() && rec.stage->staging_path == path);
  if (!known) {
    return absl::NotFoundError(absl::StrCat(
        "volume ", id, " is neither staged nor published at ", path));
  }
  if (!rec.stage.has_value()) {
    return absl::FailedPreconditionError(
        absl::StrCat("volume ", id, " is not staged"));
  }
  if (req.has_capacity_range()) {
    int64_t required = req.capacity_range().required_bytes();
    int64_t limit = req.capacity_range().limit_bytes();
    if (required < 0 || limit < 0 || (limit > 0 && required > limit)) {
      return absl::InvalidArgumentError("invalid capacity_range");
    }
    if (static_cast<uint64_t>(required) > rec.capacity_bytes) {
      return absl::OutOfRangeError(absl::StrCat(
          "capacity_range.required_bytes ", required, " exceeds the volume's ",
          rec.capacity_bytes, " bytes; call ControllerExpandVolume first"));
    }
  }
  RETURN_IF_ERROR(deps_.backend->RefreshDevice(id));
  if (!rec.stage->block) RETURN_IF_ERROR(GrowFilesystem(rec));
  base::LogInfo("csi.volume.node_expanded",
                {{"volume", id}, {"bytes", absl::StrCat(rec.capacity_bytes)}});
  resp->set_capacity_bytes(static_cast<int64_t>(rec.capacity_bytes));
  return absl::OkStatus();
}

grpc::Status NodeService::NodeStageVolume(
    grpc::ServerContext*, const ::csi::v1::NodeStageVolumeRequest* req,
    ::csi::v1::NodeStageVolumeResponse*) {
  return ToGrpc(DoStage(*req));
}
grpc::Status NodeService::NodeUnstageVolume(
    grpc::ServerContext*, const ::csi::v1::NodeUnstageVolumeRequest* req,
    ::csi::v1::NodeUnstageVolumeResponse*) {
  return ToGrpc(DoUnstage(*req));
}
grpc::Status NodeService::NodePublishVolume(
    grpc::ServerContext*, const ::csi::v1::NodePublishVolumeRequest* req,
    ::csi::v1::NodePublishVolumeResponse*) {
  return ToGrpc(DoPublish(*req));
}
grpc::Status NodeService::NodeUnpublishVolume(
    grpc::ServerContext*, const ::csi::v1::NodeUnpublishVolumeRequest* req,
    ::csi::v1::NodeUnpublishVolumeResponse*) {
  return ToGrpc(DoUnpublish(*req));
}
grpc::Status NodeService::NodeGetVolumeStats(
    grpc::ServerContext*, const ::csi::v1::NodeGetVolumeStatsRequest* req,
    ::csi::v1::NodeGetVolumeStatsResponse* resp) {
  return ToGrpc(DoStats(*req, resp));
}
grpc::Status NodeService::NodeExpandVolume(
    grpc::ServerContext*, const ::csi::v1::NodeExpandVolumeRequest* req,
    ::csi::v1::NodeExpandVolumeResponse* resp) {
  return ToGrpc(DoExpand(*req, resp));
}

grpc::Status NodeService::NodeGetCapabilities(
    grpc::ServerContext*, const ::csi::v1::NodeGetCapabilitiesRequest*,
    ::csi::v1::NodeGetCapabilitiesResponse* resp) {
  using Rpc = NodeServiceCapability::RPC;
  for (Rpc::Type t : {Rpc::STAGE_UNSTAGE_VOLUME, Rpc::GET_VOLUME_STATS,
                      Rpc::EXPAND_VOLUME, Rpc::VOLUME_CONDITION}) {
    if (t == Rpc::EXPAND_VOLUME && !deps_.backend->SupportsExpansion())
      continue;
    resp->add_capabilities()->mutable_rpc()->set_type(t);
  }
  return grpc::Status::OK;
}

grpc::Status NodeService::NodeGetInfo(grpc::ServerContext*,
                                      const ::csi::v1::NodeGetInfoRequest*,
                                      ::csi::v1::NodeGetInfoResponse* resp) {
  resp->set_node_id(config_.node_id);
  resp->set_max_volumes_per_node(config_.max_volumes_per_node);
  auto& segments = *resp->mutable_accessible_topology()->mutable_segments();
  segments[kTopologyKey] = config_.node_id;
  if (!config_.fabric.empty()) segments[kFabricTopologyKey] = config_.fabric;
  if (deps_.agent != nullptr) {
    absl::StatusOr<bool> fsdax = deps_.agent->CanShareFsdax();
    if (fsdax.ok()) {
      segments[kFsdaxSharingTopologyKey] = *fsdax ? "true" : "false";
    } else {
      base::LogWarn("csi.node_info.agent",
                    {{"error", fsdax.status().ToString()}});
    }
  }
  return grpc::Status::OK;
}

}  // namespace daxlease::csi
