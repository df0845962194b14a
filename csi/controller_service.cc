#include "csi/controller_service.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "csi/shared_publish.h"
#include "csi/validation.h"
#include "lib/base/crash_point.h"
#include "lib/base/log.h"
#include "lib/base/status.h"

namespace daxlease::csi {

using ::csi::v1::ControllerServiceCapability;

namespace {

constexpr char kSnapshotSourcePrefix[] = "snapshot:";
constexpr char kVolumeSourcePrefix[] = "volume:";

// Snapshot IDs share VolumeLocks with volume IDs; '/' keeps them apart.
std::string SnapshotLockKey(absl::string_view id) {
  return absl::StrCat("snapshot/", id);
}

uint64_t MinBytesFor(VolumeMode mode, absl::string_view fs_type,
                     bool any_mount) {
  if (mode == VolumeMode::kFsdax && any_mount && fs_type == "xfs") {
    return kMinXfsVolumeBytes;
  }
  return kMinVolumeBytes;
}

// An ndctl volume cannot grow under its mapping: the new size is another
// namespace (csi/ndctl_backend.h, "Expansion"). So the recall comes first:
// once no lease holds access, the agent lets go of the old device, the
// backend copies it into a larger namespace, compares, switches and frees the
// old one, and the agent serves the new device; the holders come back at the
// next epoch and map (local) or connect (remote) the new one. Every step is
// idempotent: a retry re-reads the device and size from the backend first,
// so a grow a crash cut short resumes (docs/csi.md, "Expansion with
// holders").
absl::Status GrowServedByCopy(const DriverDeps& deps, VolumeRecord* rec,
                              const SizeRequest& size,
                              uint64_t required_bytes) {
  const std::string id = rec->id;
  StageRecord& st = *rec->stage;
  auto follow_backend = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(AttachedDevice dev, deps.backend->Attach(id));
    ASSIGN_OR_RETURN(Volume now, deps.backend->Get(id));
    if (dev.path == st.device && now.capacity_bytes == rec->capacity_bytes) {
      return absl::OkStatus();
    }
    st.device = dev.path;
    rec->capacity_bytes = now.capacity_bytes;
    return deps.store->Save(*rec);
  };
  auto serve = [&]() {
    return deps.agent->ServeVolume(ServedVolume{id, rec->mode, st.device,
                                                rec->capacity_bytes,
                                                deps.backend->ProvidesDax()});
  };
  RETURN_IF_ERROR(follow_backend());
  RETURN_IF_ERROR(serve());  // again after a crash between stop and serve
  ASSIGN_OR_RETURN(ReshapeAnswer a,
                   deps.agent->ReshapeVolume(id, required_bytes, false));
  if (a.stage != ReshapeStage::kChange) return absl::OkStatus();
  // No lease holds access now: only the agent maps the old device.
  RETURN_IF_ERROR(deps.agent->StopServing(id));
  absl::StatusOr<Volume> grown =
      deps.backend->Expand(id, size.bytes, size.limit);
  RETURN_IF_ERROR(follow_backend());
  RETURN_IF_ERROR(serve());
  // A failed copy (no room, say) lets the holders back in at the old size
  // (Ready at the next epoch) and reports why; the CO's retry recalls again.
  ASSIGN_OR_RETURN(a, deps.agent->ReshapeVolume(id, rec->capacity_bytes, true));
  if (!grown.ok()) return grown.status();
  base::LogInfo("csi.volume.reshaped",
                {{"volume", id},
                 {"recall", a.recall},
                 {"device", st.device},
                 {"served_bytes", absl::StrCat(a.served_bytes)}});
  return absl::OkStatus();
}

}  // namespace

void ControllerService::FillVolume(const VolumeRecord& rec,
                                   ::csi::v1::Volume* out) const {
  out->set_volume_id(rec.id);
  out->set_capacity_bytes(static_cast<int64_t>(rec.capacity_bytes));
  if (absl::StartsWith(rec.content_source, kSnapshotSourcePrefix)) {
    out->mutable_content_source()->mutable_snapshot()->set_snapshot_id(
        rec.content_source.substr(strlen(kSnapshotSourcePrefix)));
  } else if (absl::StartsWith(rec.content_source, kVolumeSourcePrefix)) {
    out->mutable_content_source()->mutable_volume()->set_volume_id(
        rec.content_source.substr(strlen(kVolumeSourcePrefix)));
  }
  auto& ctx = *out->mutable_volume_context();
  ctx[kParamMode] = std::string(VolumeModeName(rec.mode));
  // A devdax volume is a character device: no filesystem to name.
  if (rec.mode != VolumeMode::kDevdax) ctx[kParamFsType] = rec.fs_type;
  ctx["daxlease.io/dax"] = deps_.backend->ProvidesDax() ? "true" : "false";
  ctx["daxlease.io/backend"] = std::string(deps_.backend->Name());
  for (const auto& [k, v] : rec.parameters) {
    if (k == kParamShare || k == kParamRecallGrace) ctx[k] = v;
  }
  ctx[kContextOwnerNode] = config_.node_id;
  if (!config_.fabric.empty()) ctx[kContextFabric] = config_.fabric;
  // A shared volume is reachable from every node of its fabric (through the
  // agents), so a pod may land on any of them.
  auto& segments = *out->add_accessible_topology()->mutable_segments();
  if (IsShared(rec.parameters) && !config_.fabric.empty()) {
    segments[kFabricTopologyKey] = config_.fabric;
  } else {
    segments[kTopologyKey] = config_.node_id;
  }
}

::csi::v1::VolumeCondition ControllerService::Condition(
    const VolumeRecord& rec) const {
  ::csi::v1::VolumeCondition c;
  auto vol = deps_.backend->Get(rec.id);
  if (!vol.ok()) {
    c.set_abnormal(true);
    c.set_message(
        absl::StrCat("volume media unavailable: ", vol.status().message()));
  } else {
    c.set_message("volume media present");
  }
  return c;
}

absl::StatusOr<bool> ControllerService::FormatAtCreate(
    const std::string& id, const std::string& fs_type, const Volume& vol) {
  ASSIGN_OR_RETURN(std::string path, deps_.backend->FormatPath(id));
  if (path.empty()) return false;  // the first stage formats it
  // Never format what carries data (adopted media): blank media only. Media
  // the backend proves all-zero needs neither a probe nor zeroing by mkfs.
  ASSIGN_OR_RETURN(bool zeros, deps_.backend->ReadsAsZeros(id));
  if (!zeros) {
    ASSIGN_OR_RETURN(std::string found, deps_.formatter->Detect(path));
    if (found == fs_type) return true;
    if (!found.empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat("the media of volume ", id, " carries ", found, ", not ",
                       fs_type, "; refusing to format over it"));
    }
  }
  const absl::Time t0 = absl::Now();
  RETURN_IF_ERROR(deps_.formatter->Format(
      path, fs_type, MkfsArgs(fs_type, vol.capacity_bytes, zeros)));
  base::LogInfo(
      "csi.volume.formatted",
      {{"volume", id},
       {"fstype", fs_type},
       {"prezeroed", zeros ? "true" : "false"},
       {"ms", absl::StrCat(absl::ToInt64Milliseconds(absl::Now() - t0))}});
  return true;
}

absl::Status ControllerService::DoCreate(
    const ::csi::v1::CreateVolumeRequest& req,
    ::csi::v1::CreateVolumeResponse* resp) {
  RETURN_IF_ERROR(ValidateName(req.name()));
  if (req.volume_capabilities().empty()) {
    return absl::InvalidArgumentError("volume_capabilities are required");
  }
  ASSIGN_OR_RETURN(VolumeParameters params,
                   ValidateParameters(req.parameters()));
  std::vector<CapabilityInfo> caps;
  bool any_mount = false;
  for (const auto& cap : req.volume_capabilities()) {
    ASSIGN_OR_RETURN(CapabilityInfo info,
                     ValidateCapability(cap, params.share));
    any_mount |= !info.block;
    caps.push_back(std::move(info));
  }
  ASSIGN_OR_RETURN(std::string fs_type, ResolveFsType(params, caps));
  if (params.mode == VolumeMode::kDevdax && any_mount && !params.share) {
    return absl::InvalidArgumentError(
        "mode devdax is a character device: it has no filesystem to mount "
        "(use block access, mode fsdax, or daxlease.io/share=true, whose "
        "mount access is the published directory libdaxlease attaches "
        "through)");
  }
  RETURN_IF_ERROR(ValidateMapSize("secrets", req.secrets()));
  if (!req.mutable_parameters().empty()) {
    return absl::InvalidArgumentError(
        "mutable_parameters are not supported (no MODIFY_VOLUME)");
  }
  if (req.has_accessibility_requirements() &&
      !TopologyAllowsNode(req.accessibility_requirements(), config_.node_id)) {
    return absl::ResourceExhaustedError(
        absl::StrCat("accessibility_requirements exclude this node (",
                     kTopologyKey, "=", config_.node_id,
                     "): volumes can only be created on the node that "
                     "serves this plugin"));
  }
  const ::csi::v1::CapacityRange* range =
      req.has_capacity_range() ? &req.capacity_range() : nullptr;
  const uint64_t min_bytes = MinBytesFor(params.mode, fs_type, any_mount);
  ASSIGN_OR_RETURN(SizeRequest size, ComputeSize(range, min_bytes));
  std::optional<Source> source;
  if (req.has_volume_content_source()) {
    if (!SnapshotsEnabled()) {
      return absl::InvalidArgumentError(
          absl::StrCat("volume_content_source: the ", deps_.backend->Name(),
                       " backend has no snapshots or clones"));
    }
    ASSIGN_OR_RETURN(source, ResolveSource(req.volume_content_source()));
    if (source->mode != params.mode) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the content source is a ", VolumeModeName(source->mode),
          " volume, the request asks for ", VolumeModeName(params.mode)));
    }
    if (source->mode == VolumeMode::kFsdax && source->fs_type != fs_type) {
      return absl::InvalidArgumentError(
          absl::StrCat("the content source carries ", source->fs_type,
                       ", the request asks for ", fs_type));
    }
    const uint64_t required = range ? range->required_bytes() : 0;
    const uint64_t limit = range ? range->limit_bytes() : 0;
    if ((required > 0 && required < source->size_bytes) ||
        (limit > 0 && limit < source->size_bytes)) {
      return absl::OutOfRangeError(
          absl::StrCat("the content source holds ", source->size_bytes,
                       " bytes: a volume made from it cannot be smaller"));
    }
    // No size asked: the source's.
    size.bytes = required == 0 ? std::max(source->size_bytes, min_bytes)
                               : std::max(size.bytes, source->size_bytes);
  }

  std::map<std::string, std::string> stored = params.normalized;
  stored[kParamFsType] = fs_type;
  stored[kParamMode] = std::string(VolumeModeName(params.mode));

  const std::string id = VolumeIdForName(req.name());
  ASSIGN_OR_RETURN(VolumeLocks::Guard guard, deps_.locks->TryLock(id));
  ASSIGN_OR_RETURN(std::optional<VolumeRecord> existing, deps_.store->Load(id));
  if (existing.has_value()) {
    const VolumeRecord& rec = *existing;
    if (rec.name != req.name()) {
      return absl::AlreadyExistsError(absl::StrCat(
          "volume ID ", id, " is taken by volume name '", rec.name, "'"));
    }
    if (rec.phase == VolumePhase::kDeleting) {
      return absl::AbortedError(
          absl::StrCat("volume ", id, " is being deleted"));
    }
    if (rec.parameters != stored) {
      return absl::AlreadyExistsError(absl::StrCat(
          "volume '", req.name(), "' exists with different parameters"));
    }
    if (rec.content_source != (source ? source->recorded : "")) {
      return absl::AlreadyExistsError(absl::StrCat(
          "volume '", req.name(), "' exists with another content source ('",
          rec.content_source, "')"));
    }
    if (!CapacityMatches(rec.capacity_bytes, range)) {
      return absl::AlreadyExistsError(absl::StrCat(
          "volume '", req.name(), "' exists with capacity ", rec.capacity_bytes,
          " bytes, incompatible with the requested capacity_range"));
    }
    // Again: an agent that lost its DaxVolume (or came later) gets it.
    if (deps_.agent != nullptr) {
      RETURN_IF_ERROR(
          deps_.agent->RecordVolume(AgentVolumeFor(rec, config_.node_id)));
    }
    FillVolume(rec, resp->mutable_volume());
    return absl::OkStatus();
  }
  VolumeRecord rec;
  rec.id = id;
  rec.name = req.name();
  rec.mode = params.mode;
  rec.fs_type = fs_type;
  rec.parameters = stored;
  // The media first, complete (allocated, synced, formatted), then one
  // durable write of the record: a record always names complete media. A
  // crash before the record leaves media without one, which RecoverVolumes
  // never touches and the CO's retry (same name, same ID) adopts.
  // Media that is already there (our interrupted create, or a volume whose
  // record was lost and whose name is created again) is adopted as it is
  // and never removed by this call.
  absl::StatusOr<Volume> before = deps_.backend->Get(id);
  const bool media_may_exist =
      before.ok() || !absl::IsNotFound(before.status());
  VolumeSpec spec;
  spec.id = id;
  spec.capacity_bytes = size.bytes;
  spec.limit_bytes = size.limit;
  spec.mode = params.mode;
  spec.fs_type = any_mount ? fs_type : "";
  spec.parameters = params.normalized;
  // Formatted below (FormatAtCreate) right after Create, and mkfs syncs.
  spec.synced_by_format = !source.has_value() && !spec.fs_type.empty() &&
                          spec.mode == VolumeMode::kFsdax;
  // Blank new media of a size and filesystem the backend keeps formatted
  // ahead (docs/csi.md, "Pre-formatted images"): taken as it is, with no
  // mkfs on this path. Its name is made durable before the record is.
  std::optional<Volume> pooled;
  if (!source.has_value() && !media_may_exist && spec.synced_by_format) {
    ASSIGN_OR_RETURN(pooled, deps_.backend->TakeFormatted(
                                 spec, MkfsArgs(fs_type, spec.capacity_bytes,
                                                /*prezeroed=*/true)));
  }
  absl::StatusOr<Volume> vol = pooled.has_value() ? *pooled
                               : source.has_value()
                                   ? CreateFromSource(*source, spec)
                                   : deps_.backend->Create(spec);
  absl::Status made = vol.status();
  if (made.ok() && pooled.has_value()) {
    rec.formatted = true;
    made = deps_.backend->SyncCreated(id);
    if (made.ok()) base::CrashPoint("create.pooled_media_synced");
  } else if (made.ok() && source.has_value()) {
    rec.formatted = source->formatted;
    rec.content_source = source->recorded;
    // The copied filesystem fills the source's size; it grows to the
    // volume's here, before any attach (ext4 offline on the image, xfs in a
    // private mount; idempotent: an adopted copy that already grew stays as
    // it is).
    if (source->formatted && vol->capacity_bytes > source->size_bytes) {
      absl::StatusOr<std::string> path = deps_.backend->FormatPath(id);
      made = path.status();
      if (made.ok() && !path->empty()) {
        made = deps_.formatter->Grow(*path, "", fs_type);
      }
    }
  } else if (made.ok() && !spec.fs_type.empty() &&
             spec.mode == VolumeMode::kFsdax) {
    absl::StatusOr<bool> formatted = FormatAtCreate(id, fs_type, *vol);
    made = formatted.status();
    if (formatted.ok()) rec.formatted = *formatted;
  }
  // The operator learns of the volume before the CO does; an agent that is
  // down fails the call (UNAVAILABLE) and it is undone like a failed
  // create, so the CO's retry starts clean.
  if (made.ok() && deps_.agent != nullptr) {
    VolumeRecord recorded = rec;
    recorded.capacity_bytes = vol->capacity_bytes;
    made = deps_.agent->RecordVolume(AgentVolumeFor(recorded, config_.node_id));
  }
  if (!made.ok()) {
    // Undo what this call made, so that nothing is left and the name can
    // be created again with other parameters; media that was there before
    // stays.
    if (!media_may_exist) (void)deps_.backend->Delete(id);
    return made;
  }
  rec.capacity_bytes = vol->capacity_bytes;
  rec.phase = VolumePhase::kReady;
  RETURN_IF_ERROR(deps_.store->Save(rec));
  base::CrashPoint("create.recorded");
  base::LogInfo("csi.volume.created",
                {{"volume", id},
                 {"name", rec.name},
                 {"bytes", absl::StrCat(rec.capacity_bytes)},
                 {"mode", std::string(VolumeModeName(rec.mode))},
                 {"fstype", rec.fs_type}});
  FillVolume(rec, resp->mutable_volume());
  return absl::OkStatus();
}

absl::Status ControllerService::DoDelete(
    const ::csi::v1::DeleteVolumeRequest& req) {
  RETURN_IF_ERROR(ValidateVolumeId(req.volume_id()));
  const std::string& id = req.volume_id();
  ASSIGN_OR_RETURN(VolumeLocks::Guard guard, deps_.locks->TryLock(id));
  ASSIGN_OR_RETURN(std::optional<VolumeRecord> rec, deps_.store->Load(id));
  if (!rec.has_value()) {
    // Already gone, or a shared volume whose media a migration moved to
    // another node (that node's plugin has the record now): the DaxVolume
    // goes all the same, and the agent serving the moved media frees it
    // through its plugin once the DaxVolume is gone.
    if (deps_.agent != nullptr) RETURN_IF_ERROR(deps_.agent->ForgetVolume(id));
    return absl::OkStatus();
  }
  if (rec->stage.has_value() || !rec->publishes.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "volume ", id, " is still ",
        rec->publishes.empty() ? "staged" : "published", " on node ",
        config_.node_id, "; unpublish and unstage it first"));
  }
  // The DaxVolume goes first: the agent refuses while leases hold access
  // (FAILED_PRECONDITION), the media must outlive every mapping, and a
  // refused delete must not leave a deleting record behind.
  if (deps_.agent != nullptr) RETURN_IF_ERROR(deps_.agent->ForgetVolume(id));
  // The record says "deleting" (durably) before the media goes, so a crash
  // anywhere below leaves a deleting record, which RecoverVolumes (or this
  // call's retry) finishes, never a ready record without media.
  if (rec->phase != VolumePhase::kDeleting) {
    rec->phase = VolumePhase::kDeleting;
    RETURN_IF_ERROR(deps_.store->Save(*rec));
  }
  RETURN_IF_ERROR(deps_.backend->Detach(id));
  RETURN_IF_ERROR(deps_.backend->Delete(id));
  RETURN_IF_ERROR(deps_.store->Remove(id));
  base::LogInfo("csi.volume.deleted", {{"volume", id}});
  return absl::OkStatus();
}

absl::Status ControllerService::DoValidate(
    const ::csi::v1::ValidateVolumeCapabilitiesRequest& req,
    ::csi::v1::ValidateVolumeCapabilitiesResponse* resp) {
  RETURN_IF_ERROR(ValidateVolumeId(req.volume_id()));
  if (req.volume_capabilities().empty()) {
    return absl::InvalidArgumentError("volume_capabilities are required");
  }
  ASSIGN_OR_RETURN(std::optional<VolumeRecord> rec,
                   deps_.store->Load(req.volume_id()));
  if (!rec.has_value() || rec->phase != VolumePhase::kReady) {
    return absl::NotFoundError(
        absl::StrCat("volume ", req.volume_id(), " not found"));
  }
  bool share = rec->parameters.count(kParamShare) &&
               rec->parameters.at(kParamShare) == "true";
  for (const auto& cap : req.volume_capabilities()) {
    auto info = ValidateCapability(cap, share);
    if (!info.ok()) {
      resp->set_message(std::string(info.status().message()));
      return absl::OkStatus();
    }
    if (!info->block && rec->mode == VolumeMode::kDevdax && !share) {
      resp->set_message(
          "devdax volumes support block access only (mount access: "
          "daxlease.io/share=true)");
      return absl::OkStatus();
    }
    if (!info->fs_type.empty() && info->fs_type != rec->fs_type) {
      resp->set_message(absl::StrCat("volume has filesystem ", rec->fs_type,
                                     ", not ", info->fs_type));
      return absl::OkStatus();
    }
  }
  if (!req.parameters().empty()) {
    auto params = ValidateParameters(req.parameters());
    if (!params.ok()) {
      resp->set_message(std::string(params.status().message()));
      return absl::OkStatus();
    }
  }
  auto* confirmed = resp->mutable_confirmed();
  *confirmed->mutable_volume_context() = req.volume_context();
  *confirmed->mutable_volume_capabilities() = req.volume_capabilities();
  *confirmed->mutable_parameters() = req.parameters();
  *confirmed->mutable_mutable_parameters() = req.mutable_parameters();
  return absl::OkStatus();
}

absl::Status ControllerService::DoList(const ::csi::v1::ListVolumesRequest& req,
                                       ::csi::v1::ListVolumesResponse* resp) {
  if (req.max_entries() < 0) {
    return absl::InvalidArgumentError("max_entries must not be negative");
  }
  ASSIGN_OR_RETURN(std::vector<VolumeRecord> all, deps_.store->LoadAll());
  std::vector<VolumeRecord> ready;
  for (VolumeRecord& r : all) {
    if (r.phase == VolumePhase::kReady) ready.push_back(std::move(r));
  }
  ASSIGN_OR_RETURN(size_t start,
                   ParseStartingToken(req.starting_token(), ready.size()));
  size_t end = ready.size();
  if (req.max_entries() > 0) {
    end = std::min(end, start + static_cast<size_t>(req.max_entries()));
  }
  for (size_t i = start; i < end; ++i) {
    auto* e = resp->add_entries();
    FillVolume(ready[i], e->mutable_volume());
    if (!ready[i].publishes.empty()) {
      e->mutable_status()->add_published_node_ids(config_.node_id);
    }
    *e->mutable_status()->mutable_volume_condition() = Condition(ready[i]);
  }
  if (end < ready.size()) resp->set_next_token(absl::StrCat(end));
  return absl::OkStatus();
}

absl::Status ControllerService::DoGetCapacity(
    const ::csi::v1::GetCapacityRequest& req,
    ::csi::v1::GetCapacityResponse* resp) {
  ASSIGN_OR_RETURN(VolumeParameters params,
                   ValidateParameters(req.parameters()));
  // The smallest volume these parameters can make, by CreateVolume's rules
  // (xfs needs more); without capabilities the volume may be mounted.
  std::vector<CapabilityInfo> caps;
  bool any_mount = req.volume_capabilities().empty();
  for (::csi::v1::VolumeCapability cap : req.volume_capabilities()) {
    // Capacity does not depend on the access mode; external-provisioner's
    // capacity tracking sends UNKNOWN. Only the access type is checked then.
    if (cap.access_mode().mode() ==
        ::csi::v1::VolumeCapability::AccessMode::UNKNOWN) {
      cap.mutable_access_mode()->set_mode(
          ::csi::v1::VolumeCapability::AccessMode::SINGLE_NODE_WRITER);
    }
    ASSIGN_OR_RETURN(CapabilityInfo info,
                     ValidateCapability(cap, params.share));
    any_mount |= !info.block;
    caps.push_back(std::move(info));
  }
  ASSIGN_OR_RETURN(std::string fs_type, ResolveFsType(params, caps));
  if (req.has_accessible_topology()) {
    auto it = req.accessible_topology().segments().find(kTopologyKey);
    if (it == req.accessible_topology().segments().end() ||
        it->second != config_.node_id) {
      resp->set_available_capacity(0);
      return absl::OkStatus();
    }
  }
  ASSIGN_OR_RETURN(Capacity cap, deps_.backend->GetCapacity(params.mode));
  resp->set_available_capacity(static_cast<int64_t>(cap.available_bytes));
  resp->mutable_maximum_volume_size()->set_value(
      static_cast<int64_t>(cap.max_volume_bytes));
  resp->mutable_minimum_volume_size()->set_value(
      static_cast<int64_t>(MinBytesFor(params.mode, fs_type, any_mount)));
  return absl::OkStatus();
}

absl::Status ControllerService::DoGetVolume(
    const ::csi::v1::ControllerGetVolumeRequest& req,
    ::csi::v1::ControllerGetVolumeResponse* resp) {
  RETURN_IF_ERROR(ValidateVolumeId(req.volume_id()));
  ASSIGN_OR_RETURN(std::optional<VolumeRecord> rec,
                   deps_.store->Load(req.volume_id()));
  if (!rec.has_value() || rec->phase != VolumePhase::kReady) {
    return absl::NotFoundError(
        absl::StrCat("volume ", req.volume_id(), " not found"));
  }
  FillVolume(*rec, resp->mutable_volume());
  if (!rec->publishes.empty()) {
    resp->mutable_status()->add_published_node_ids(config_.node_id);
  }
  *resp->mutable_status()->mutable_volume_condition() = Condition(*rec);
  return absl::OkStatus();
}

// The filesystem grows online first (existing files and mappings stay as
// they are, so live holders do not notice); then the agent recalls the
// holders (UNAVAILABLE until they flushed and unmapped), grows the data file
// they share and maps it again, and the volume returns to Ready at the next
// epoch with the holders granted the new size. Every step is idempotent:
// the external-resizer's retry resumes where the last call stopped.
absl::Status ControllerService::GrowServed(const VolumeRecord& rec) {
  const StageRecord& st = *rec.stage;
  ASSIGN_OR_RETURN(AttachedDevice dev, deps_.backend->Attach(rec.id));
  RETURN_IF_ERROR(deps_.formatter->Grow(dev.path, st.staging_path, st.fs_type));
  ASSIGN_OR_RETURN(ReshapeAnswer a, deps_.agent->ReshapeVolume(
                                        rec.id, rec.capacity_bytes, false));
  if (a.stage == ReshapeStage::kChange) {
    ASSIGN_OR_RETURN(
        a, deps_.agent->ReshapeVolume(rec.id, rec.capacity_bytes, true));
    base::LogInfo("csi.volume.reshaped",
                  {{"volume", rec.id},
                   {"recall", a.recall},
                   {"served_bytes", absl::StrCat(a.served_bytes)}});
  }
  return absl::OkStatus();
}

absl::Status ControllerService::DoExpand(
    const ::csi::v1::ControllerExpandVolumeRequest& req,
    ::csi::v1::ControllerExpandVolumeResponse* resp) {
  RETURN_IF_ERROR(ValidateVolumeId(req.volume_id()));
  if (!req.has_capacity_range()) {
    return absl::InvalidArgumentError("capacity_range is required");
  }
  bool block = false;
  if (req.has_volume_capability()) {
    ASSIGN_OR_RETURN(CapabilityInfo info,
                     ValidateCapability(req.volume_capability(), true));
    block = info.block;
  }
  const std::string& id = req.volume_id();
  ASSIGN_OR_RETURN(VolumeLocks::Guard guard, deps_.locks->TryLock(id));
  ASSIGN_OR_RETURN(std::optional<VolumeRecord> rec, deps_.store->Load(id));
  if (!rec.has_value() || rec->phase != VolumePhase::kReady) {
    return absl::NotFoundError(absl::StrCat("volume ", id, " not found"));
  }
  if (rec->stage.has_value()) block = rec->stage->block;
  ASSIGN_OR_RETURN(SizeRequest size, ComputeSize(&req.capacity_range(), 0));
  if (req.capacity_range().required_bytes() == 0) {
    return absl::InvalidArgumentError(
        "capacity_range.required_bytes is required");
  }
  // ComputeSize keeps required_bytes <= limit_bytes, so a volume above the
  // limit needs no grow: it is above what was asked, and never shrinks.
  if (size.limit > 0 && rec->capacity_bytes > size.limit) {
    return absl::OutOfRangeError(absl::StrCat(
        "volume is already ", rec->capacity_bytes, " bytes, above limit_bytes ",
        size.limit, " (volumes do not shrink)"));
  }
  if (deps_.agent != nullptr && IsShared(rec->parameters) &&
      rec->stage.has_value() && rec->mode == VolumeMode::kDevdax &&
      !deps_.backend->ExpandsOnline()) {
    // Served by this node's agent from a device that cannot grow in place.
    RETURN_IF_ERROR(GrowServedByCopy(
        deps_, &*rec, size,
        static_cast<uint64_t>(req.capacity_range().required_bytes())));
    resp->set_capacity_bytes(static_cast<int64_t>(rec->capacity_bytes));
    resp->set_node_expansion_required(false);
    return absl::OkStatus();
  }
  if (rec->capacity_bytes <
      static_cast<uint64_t>(req.capacity_range().required_bytes())) {
    if (!deps_.backend->ExpandsOnline() && rec->stage.has_value()) {
      // ndctl: the copy to a new namespace needs the old one unused, and a
      // staged volume's mount or bind would keep the old device.
      return absl::FailedPreconditionError(absl::StrCat(
          "volume ", id, " is staged on this node at ",
          rec->stage->staging_path, ": ", deps_.backend->Name(),
          " volumes grow offline (a copy to a new namespace); unstage it "
          "first"));
    }
    ASSIGN_OR_RETURN(Volume vol,
                     deps_.backend->Expand(id, size.bytes, size.limit));
    rec->capacity_bytes = vol.capacity_bytes;
    RETURN_IF_ERROR(deps_.store->Save(*rec));
    base::LogInfo(
        "csi.volume.expanded",
        {{"volume", id}, {"bytes", absl::StrCat(vol.capacity_bytes)}});
    // Node-local plugin: let an attached device see the new size now; the
    // filesystem grows in NodeExpandVolume.
    if (rec->stage.has_value())
      RETURN_IF_ERROR(deps_.backend->RefreshDevice(id));
  }
  if (deps_.agent != nullptr && IsShared(rec->parameters) &&
      rec->stage.has_value() && !rec->stage->block) {
    // Served by this node's agent: the holders follow (docs/csi.md,
    // "Expansion with holders").
    RETURN_IF_ERROR(GrowServed(*rec));
    resp->set_capacity_bytes(static_cast<int64_t>(rec->capacity_bytes));
    resp->set_node_expansion_required(false);
    return absl::OkStatus();
  }
  resp->set_capacity_bytes(static_cast<int64_t>(rec->capacity_bytes));
  resp->set_node_expansion_required(!block && rec->mode == VolumeMode::kFsdax);
  return absl::OkStatus();
}

bool ControllerService::SnapshotsEnabled() const {
  return deps_.snapshots != nullptr && deps_.backend->SupportsSnapshots();
}

absl::StatusOr<ControllerService::Quiesce> ControllerService::BeginQuiesce(
    const VolumeRecord& rec) {
  Quiesce q;
  if (!rec.stage.has_value()) return q;  // nothing attached, nothing writes
  if (rec.stage->block) {
    if (!rec.publishes.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "volume ", rec.id,
          " is published for block access: a raw device has no filesystem "
          "to freeze and no lease to recall, so its writer cannot be held "
          "off; unpublish it first"));
    }
    return q;  // a publish waits for the volume's lock
  }
  q.frozen_path = rec.stage->staging_path;
  if (deps_.agent != nullptr && IsShared(rec.parameters)) {
    // The agent may serve it to holders whose writes (RDMA, or stores to a
    // DAX mapping) no freeze stops: they are recalled first.
    ASSIGN_OR_RETURN(q.recall, deps_.agent->SnapshotVolume(rec.id, false));
    q.served = true;
  }
  return q;
}

absl::Status ControllerService::CopyQuiesced(
    const VolumeRecord& rec, const Quiesce& q,
    const std::function<absl::Status()>& copy) {
  absl::Status copied = WithFrozen(q.frozen_path, copy);
  if (!q.served) return copied;
  absl::StatusOr<std::string> resumed =
      deps_.agent->SnapshotVolume(rec.id, true);
  if (!resumed.ok()) {
    // The volume stays Quiesced: the retry finds the recall over and copies
    // again before it lets the holders back in.
    base::LogError("csi.snapshot.resume_failed",
                   {{"volume", rec.id},
                    {"recall", q.recall},
                    {"error", resumed.status().ToString()}});
  }
  return copied.ok() ? resumed.status() : copied;
}

absl::Status ControllerService::WithFrozen(
    const std::string& frozen_path, const std::function<absl::Status()>& copy) {
  if (frozen_path.empty()) return copy();
  RETURN_IF_ERROR(deps_.mounter->Freeze(frozen_path));
  absl::Status copied = copy();
  absl::Status thawed = deps_.mounter->Thaw(frozen_path);
  if (!thawed.ok()) {
    base::LogError("csi.snapshot.thaw_failed",
                   {{"path", frozen_path}, {"error", thawed.ToString()}});
  }
  return copied.ok() ? thawed : copied;
}

void ControllerService::FillSnapshot(const SnapshotRecord& rec,
                                     ::csi::v1::Snapshot* out) const {
  out->set_snapshot_id(rec.id);
  out->set_source_volume_id(rec.source_volume_id);
  out->set_size_bytes(static_cast<int64_t>(rec.size_bytes));
  out->mutable_creation_time()->set_seconds(rec.creation_unix_nanos /
                                            1000000000);
  out->mutable_creation_time()->set_nanos(
      static_cast<int32_t>(rec.creation_unix_nanos % 1000000000));
  out->set_ready_to_use(rec.phase == SnapshotPhase::kReady);
}

absl::StatusOr<ControllerService::Source> ControllerService::ResolveSource(
    const ::csi::v1::VolumeContentSource& src) const {
  Source out;
  if (src.has_snapshot()) {
    const std::string& id = src.snapshot().snapshot_id();
    RETURN_IF_ERROR(ValidateSnapshotId(id));
    ASSIGN_OR_RETURN(std::optional<SnapshotRecord> snap,
                     deps_.snapshots->Load(id));
    if (!snap.has_value() || snap->phase != SnapshotPhase::kReady) {
      return absl::NotFoundError(absl::StrCat("snapshot ", id, " not found"));
    }
    out.backend = {true, id};
    out.size_bytes = snap->size_bytes;
    out.mode = snap->mode;
    out.fs_type = snap->fs_type;
    out.formatted = snap->formatted;
    out.recorded = absl::StrCat(kSnapshotSourcePrefix, id);
    return out;
  }
  if (src.has_volume()) {
    const std::string& id = src.volume().volume_id();
    RETURN_IF_ERROR(ValidateVolumeId(id));
    ASSIGN_OR_RETURN(std::optional<VolumeRecord> vol, deps_.store->Load(id));
    if (!vol.has_value() || vol->phase != VolumePhase::kReady) {
      return absl::NotFoundError(absl::StrCat("volume ", id, " not found"));
    }
    out.backend = {false, id};
    out.size_bytes = vol->capacity_bytes;
    out.mode = vol->mode;
    out.fs_type = vol->fs_type;
    out.formatted = vol->formatted;
    out.recorded = absl::StrCat(kVolumeSourcePrefix, id);
    return out;
  }
  return absl::InvalidArgumentError(
      "volume_content_source names neither a snapshot nor a volume");
}

absl::StatusOr<Volume> ControllerService::CreateFromSource(
    const Source& source, const VolumeSpec& spec) {
  if (source.backend.snapshot) {
    // Held so that the snapshot is not deleted under the copy.
    ASSIGN_OR_RETURN(VolumeLocks::Guard guard,
                     deps_.locks->TryLock(SnapshotLockKey(source.backend.id)));
    ASSIGN_OR_RETURN(std::optional<SnapshotRecord> snap,
                     deps_.snapshots->Load(source.backend.id));
    if (!snap.has_value() || snap->phase != SnapshotPhase::kReady) {
      return absl::NotFoundError(
          absl::StrCat("snapshot ", source.backend.id, " not found"));
    }
    return deps_.backend->CreateFrom(spec, source.backend);
  }
  // A clone: the source volume held still for the copy.
  ASSIGN_OR_RETURN(VolumeLocks::Guard guard,
                   deps_.locks->TryLock(source.backend.id));
  ASSIGN_OR_RETURN(std::optional<VolumeRecord> rec,
                   deps_.store->Load(source.backend.id));
  if (!rec.has_value() || rec->phase != VolumePhase::kReady) {
    return absl::NotFoundError(
        absl::StrCat("volume ", source.backend.id, " not found"));
  }
  ASSIGN_OR_RETURN(Quiesce q, BeginQuiesce(*rec));
  absl::StatusOr<Volume> vol = absl::InternalError("not copied");
  RETURN_IF_ERROR(CopyQuiesced(*rec, q, [&] {
    vol = deps_.backend->CreateFrom(spec, source.backend);
    return vol.status();
  }));
  return vol;
}

absl::Status ControllerService::DoCreateSnapshot(
    const ::csi::v1::CreateSnapshotRequest& req,
    ::csi::v1::CreateSnapshotResponse* resp) {
  RETURN_IF_ERROR(ValidateName(req.name()));
  RETURN_IF_ERROR(ValidateId("source_volume_id", req.source_volume_id()));
  RETURN_IF_ERROR(ValidateMapSize("secrets", req.secrets()));
  RETURN_IF_ERROR(ValidateMapSize("parameters", req.parameters()));
  // VolumeSnapshotClass parameters: only the CO's own metadata.
  for (const auto& [k, v] : req.parameters()) {
    if (!absl::StartsWith(k, "csi.storage.k8s.io/")) {
      return absl::InvalidArgumentError(absl::StrCat(
          "snapshot parameter '", absl::CHexEscape(k), "' is not known"));
    }
  }
  if (!SnapshotsEnabled()) {
    return absl::UnimplementedError(absl::StrCat("the ", deps_.backend->Name(),
                                                 " backend has no snapshots"));
  }
  const std::string id = VolumeIdForName(req.name());
  const std::string& vol_id = req.source_volume_id();
  ASSIGN_OR_RETURN(VolumeLocks::Guard snap_guard,
                   deps_.locks->TryLock(SnapshotLockKey(id)));
  ASSIGN_OR_RETURN(std::optional<SnapshotRecord> existing,
                   deps_.snapshots->Load(id));
  if (existing.has_value()) {
    if (existing->name != req.name() || existing->source_volume_id != vol_id) {
      return absl::AlreadyExistsError(absl::StrCat(
          "snapshot '", req.name(), "' exists for another source volume (",
          existing->source_volume_id, ")"));
    }
    if (existing->phase == SnapshotPhase::kDeleting) {
      return absl::AbortedError(
          absl::StrCat("snapshot ", id, " is being deleted"));
    }
    if (existing->phase == SnapshotPhase::kReady) {
      FillSnapshot(*existing, resp->mutable_snapshot());
      return absl::OkStatus();
    }
    // kCreating under our lock: an attempt that could not clean up after
    // itself. Its copy is redone below.
  }
  ASSIGN_OR_RETURN(VolumeLocks::Guard vol_guard, deps_.locks->TryLock(vol_id));
  ASSIGN_OR_RETURN(std::optional<VolumeRecord> vol, deps_.store->Load(vol_id));
  if (!vol.has_value() || vol->phase != VolumePhase::kReady) {
    return absl::NotFoundError(absl::StrCat("volume ", vol_id, " not found"));
  }
  // A served volume's holders are recalled first: UNAVAILABLE (which the
  // external-snapshotter retries) until they flushed and released, and
  // nothing is recorded until the copy may start.
  ASSIGN_OR_RETURN(Quiesce q, BeginQuiesce(*vol));
  const std::string& frozen = q.frozen_path;
  SnapshotRecord snap;
  snap.id = id;
  snap.name = req.name();
  snap.source_volume_id = vol_id;
  snap.size_bytes = vol->capacity_bytes;
  snap.mode = vol->mode;
  snap.fs_type = vol->fs_type;
  snap.formatted = vol->formatted;
  snap.creation_unix_nanos = absl::ToUnixNanos(absl::Now());
  snap.phase = SnapshotPhase::kCreating;
  snap.frozen_path = frozen;
  const absl::Time t0 = absl::Now();
  bool recorded = false;
  absl::Status copied = CopyQuiesced(*vol, q, [&]() -> absl::Status {
    // Recorded (durably) once the source is held still and before the
    // copy: ListSnapshots shows it not ready only while the source really
    // is frozen (the state directory is never on the frozen volume), and a
    // restart removes what a crash interrupted.
    RETURN_IF_ERROR(deps_.snapshots->Save(snap));
    recorded = true;
    ASSIGN_OR_RETURN(snap.size_bytes,
                     deps_.backend->CreateSnapshot(id, vol_id));
    return absl::OkStatus();
  });
  if (copied.ok()) {
    snap.phase = SnapshotPhase::kReady;
    snap.frozen_path.clear();
    copied = deps_.snapshots->Save(snap);
  }
  if (!copied.ok()) {
    if (recorded || existing.has_value()) {
      (void)deps_.backend->DeleteSnapshot(id);
      (void)deps_.snapshots->Remove(id);
    }
    return copied;
  }
  base::LogInfo(
      "csi.snapshot.created",
      {{"snapshot", id},
       {"volume", vol_id},
       {"bytes", absl::StrCat(snap.size_bytes)},
       {"frozen", frozen.empty() ? "false" : "true"},
       {"recall", q.recall},
       {"ms", absl::StrCat(absl::ToInt64Milliseconds(absl::Now() - t0))}});
  FillSnapshot(snap, resp->mutable_snapshot());
  return absl::OkStatus();
}

absl::Status ControllerService::DoDeleteSnapshot(
    const ::csi::v1::DeleteSnapshotRequest& req) {
  RETURN_IF_ERROR(ValidateSnapshotId(req.snapshot_id()));
  RETURN_IF_ERROR(ValidateMapSize("secrets", req.secrets()));
  if (!SnapshotsEnabled()) {
    return absl::UnimplementedError(absl::StrCat("the ", deps_.backend->Name(),
                                                 " backend has no snapshots"));
  }
  const std::string& id = req.snapshot_id();
  ASSIGN_OR_RETURN(VolumeLocks::Guard guard,
                   deps_.locks->TryLock(SnapshotLockKey(id)));
  ASSIGN_OR_RETURN(std::optional<SnapshotRecord> rec,
                   deps_.snapshots->Load(id));
  if (!rec.has_value()) return absl::OkStatus();  // already gone
  if (rec->phase != SnapshotPhase::kDeleting) {
    rec->phase = SnapshotPhase::kDeleting;
    RETURN_IF_ERROR(deps_.snapshots->Save(*rec));
  }
  RETURN_IF_ERROR(deps_.backend->DeleteSnapshot(id));
  RETURN_IF_ERROR(deps_.snapshots->Remove(id));
  base::LogInfo("csi.snapshot.deleted", {{"snapshot", id}});
  return absl::OkStatus();
}

absl::Status ControllerService::DoListSnapshots(
    const ::csi::v1::ListSnapshotsRequest& req,
    ::csi::v1::ListSnapshotsResponse* resp) {
  if (req.max_entries() < 0) {
    return absl::InvalidArgumentError("max_entries must not be negative");
  }
  if (!SnapshotsEnabled()) {
    return absl::UnimplementedError(absl::StrCat("the ", deps_.backend->Name(),
                                                 " backend has no snapshots"));
  }
  // An ID that cannot exist matches nothing (CSI: an empty list).
  if ((!req.snapshot_id().empty() &&
       !ValidateSnapshotId(req.snapshot_id()).ok()) ||
      (!req.source_volume_id().empty() &&
       !ValidateVolumeId(req.source_volume_id()).ok())) {
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(std::vector<SnapshotRecord> all, deps_.snapshots->LoadAll());
  std::vector<SnapshotRecord> shown;
  for (SnapshotRecord& r : all) {
    if (r.phase == SnapshotPhase::kDeleting) continue;
    if (!req.snapshot_id().empty() && r.id != req.snapshot_id()) continue;
    if (!req.source_volume_id().empty() &&
        r.source_volume_id != req.source_volume_id()) {
      continue;
    }
    shown.push_back(std::move(r));
  }
  ASSIGN_OR_RETURN(size_t start,
                   ParseStartingToken(req.starting_token(), shown.size()));
  size_t end = shown.size();
  if (req.max_entries() > 0) {
    end = std::min(end, start + static_cast<size_t>(req.max_entries()));
  }
  for (size_t i = start; i < end; ++i) {
    FillSnapshot(shown[i], resp->add_entries()->mutable_snapshot());
  }
  if (end < shown.size()) resp->set_next_token(absl::StrCat(end));
  return absl::OkStatus();
}

grpc::Status ControllerService::CreateSnapshot(
    grpc::ServerContext*, const ::csi::v1::CreateSnapshotRequest* req,
    ::csi::v1::CreateSnapshotResponse* resp) {
  return ToGrpc(DoCreateSnapshot(*req, resp));
}
grpc::Status ControllerService::DeleteSnapshot(
    grpc::ServerContext*, const ::csi::v1::DeleteSnapshotRequest* req,
    ::csi::v1::DeleteSnapshotResponse*) {
  return ToGrpc(DoDeleteSnapshot(*req));
}
grpc::Status ControllerService::ListSnapshots(
    grpc::ServerContext*, const ::csi::v1::ListSnapshotsRequest* req,
    ::csi::v1::ListSnapshotsResponse* resp) {
  return ToGrpc(DoListSnapshots(*req, resp));
}

grpc::Status ControllerService::CreateVolume(
    grpc::ServerContext*, const ::csi::v1::CreateVolumeRequest* req,
    ::csi::v1::CreateVolumeResponse* resp) {
  return ToGrpc(DoCreate(*req, resp));
}
grpc::Status ControllerService::DeleteVolume(
    grpc::ServerContext*, const ::csi::v1::DeleteVolumeRequest* req,
    ::csi::v1::DeleteVolumeResponse*) {
  return ToGrpc(DoDelete(*req));
}
grpc::Status ControllerService::ValidateVolumeCapabilities(
    grpc::ServerContext*,
    const ::csi::v1::ValidateVolumeCapabilitiesRequest* req,
    ::csi::v1::ValidateVolumeCapabilitiesResponse* resp) {
  return ToGrpc(DoValidate(*req, resp));
}
grpc::Status ControllerService::ListVolumes(
    grpc::ServerContext*, const ::csi::v1::ListVolumesRequest* req,
    ::csi::v1::ListVolumesResponse* resp) {
  return ToGrpc(DoList(*req, resp));
}
grpc::Status ControllerService::GetCapacity(
    grpc::ServerContext*, const ::csi::v1::GetCapacityRequest* req,
    ::csi::v1::GetCapacityResponse* resp) {
  return ToGrpc(DoGetCapacity(*req, resp));
}
grpc::Status ControllerService::ControllerGetVolume(
    grpc::ServerContext*, const ::csi::v1::ControllerGetVolumeRequest* req,
    ::csi::v1::ControllerGetVolumeResponse* resp) {
  return ToGrpc(DoGetVolume(*req, resp));
}
grpc::Status ControllerService::ControllerExpandVolume(
    grpc::ServerContext*, const ::csi::v1::ControllerExpandVolumeRequest* req,
    ::csi::v1::ControllerExpandVolumeResponse* resp) {
  return ToGrpc(DoExpand(*req, resp));
}

grpc::Status ControllerService::ControllerGetCapabilities(
    grpc::ServerContext*, const ::csi::v1::ControllerGetCapabilitiesRequest*,
    ::csi::v1::ControllerGetCapabilitiesResponse* resp) {
  using Rpc = ControllerServiceCapability::RPC;
  for (Rpc::Type t :
       {Rpc::CREATE_DELETE_VOLUME, Rpc::GET_CAPACITY, Rpc::LIST_VOLUMES,
        Rpc::EXPAND_VOLUME, Rpc::GET_VOLUME, Rpc::VOLUME_CONDITION,
        Rpc::CREATE_DELETE_SNAPSHOT, Rpc::LIST_SNAPSHOTS, Rpc::CLONE_VOLUME}) {
    if (t == Rpc::EXPAND_VOLUME && !deps_.backend->SupportsExpansion())
      continue;
    if ((t == Rpc::CREATE_DELETE_SNAPSHOT || t == Rpc::LIST_SNAPSHOTS ||
         t == Rpc::CLONE_VOLUME) &&
        !SnapshotsEnabled()) {
      continue;
    }
    resp->add_capabilities()->mutable_rpc()->set_type(t);
  }
  return grpc::Status::OK;
}

}  // namespace daxlease::csi
