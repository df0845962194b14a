#include "csi/media_service.h"

#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "csi/shared_publish.h"
#include "csi/validation.h"
#include "lib/base/crash_point.h"
#include "lib/base/log.h"
#include "lib/base/status.h"

namespace daxlease::csi {

namespace mpb = ::daxlease::media::v1;

grpc::Status MediaService::CreateMedia(grpc::ServerContext*,
                                       const mpb::CreateMediaRequest* req,
                                       mpb::CreateMediaResponse* resp) {
  absl::StatusOr<mpb::CreateMediaResponse> r = Create(*req);
  if (!r.ok()) return ToGrpc(r.status());
  *resp = *std::move(r);
  return grpc::Status::OK;
}

grpc::Status MediaService::FreeMedia(grpc::ServerContext*,
                                     const mpb::FreeMediaRequest* req,
                                     mpb::FreeMediaResponse*) {
  return ToGrpc(Free(*req));
}

absl::StatusOr<mpb::CreateMediaResponse> MediaService::Create(
    const mpb::CreateMediaRequest& req) {
  const std::string& id = req.volume_id();
  RETURN_IF_ERROR(ValidateVolumeId(id));
  ASSIGN_OR_RETURN(VolumeMode mode, ParseVolumeMode(req.mode()));
  if (req.size_bytes() == 0) {
    return absl::InvalidArgumentError("CreateMedia needs size_bytes");
  }
  ASSIGN_OR_RETURN(VolumeLocks::Guard guard, deps_.locks->TryLock(id));
  ASSIGN_OR_RETURN(std::optional<VolumeRecord> local, deps_.store->Load(id));
  if (local.has_value() && local->phase == VolumePhase::kDeleting) {
    // A free (this node's media after an earlier migration away) that a
    // crash cut short: finish it before the new media is made.
    RETURN_IF_ERROR(deps_.backend->Delete(id));
    RETURN_IF_ERROR(deps_.store->Remove(id));
    local.reset();
  }
  if (local.has_value() && local->mode != mode) {
    return absl::AlreadyExistsError(
        absl::StrCat("volume ", id, " exists here as ",
                     VolumeModeName(local->mode), ", not ", req.mode()));
  }
  VolumeSpec spec;
  spec.id = id;
  spec.capacity_bytes = req.size_bytes();
  spec.mode = mode;
  // Idempotent: the media a crashed or earlier call made is returned.
  ASSIGN_OR_RETURN(Volume vol, deps_.backend->Create(spec));
  base::CrashPoint("csi.media.created");
  ASSIGN_OR_RETURN(AttachedDevice dev, deps_.backend->Attach(id));
  std::optional<VolumeRecord> remote;
  if (deps_.remote_store != nullptr) {
    ASSIGN_OR_RETURN(remote, deps_.remote_store->Load(id));
  }
  if (!local.has_value()) {
    VolumeRecord rec;
    rec.id = id;
    rec.name = id;
    rec.capacity_bytes = vol.capacity_bytes;
    rec.mode = mode;
    rec.parameters = {{kParamMode, std::string(VolumeModeName(mode))},
                      {kParamShare, "true"}};
    rec.phase = VolumePhase::kReady;
    // The stage and publishes this node made as a remote node are the
    // owner's now. A devdax stage is the device alone.
    if (remote.has_value()) {
      if (remote->stage.has_value()) {
        StageRecord st;
        st.staging_path = remote->stage->staging_path;
        st.block = mode == VolumeMode::kDevdax;
        st.device = dev.path;
        rec.stage = st;
      }
      rec.publishes = remote->publishes;
    }
    RETURN_IF_ERROR(deps_.store->Save(rec));
    base::CrashPoint("csi.media.recorded");
  }
  if (remote.has_value()) RETURN_IF_ERROR(deps_.remote_store->Remove(id));
  base::LogInfo("csi.media.created",
                {{"volume", id},
                 {"device", dev.path},
                 {"bytes", absl::StrCat(vol.capacity_bytes)}});
  mpb::CreateMediaResponse resp;
  resp.set_device(dev.path);
  resp.set_size_bytes(vol.capacity_bytes);
  return resp;
}

absl::Status MediaService::Free(const mpb::FreeMediaRequest& req) {
  const std::string& id = req.volume_id();
  RETURN_IF_ERROR(ValidateVolumeId(id));
  ASSIGN_OR_RETURN(VolumeLocks::Guard guard, deps_.locks->TryLock(id));
  ASSIGN_OR_RETURN(std::optional<VolumeRecord> local, deps_.store->Load(id));
  if (local.has_value() && local->phase == VolumePhase::kReady) {
    // The stage and publishes stay, as a remote node's, before the record
    // that names the media goes.
    if (deps_.remote_store != nullptr &&
        (local->stage.has_value() || !local->publishes.empty())) {
      VolumeRecord rem;
      rem.id = id;
      rem.name = id;
      rem.phase = VolumePhase::kReady;
      rem.parameters = {{kParamShare, "true"},
                        {kContextOwnerNode, req.owner_node()},
                        {kContextFabric, config_.fabric}};
      if (local->stage.has_value()) {
        StageRecord st;
        st.staging_path = local->stage->staging_path;
        rem.stage = st;
      }
      rem.publishes = local->publishes;
      RETURN_IF_ERROR(deps_.remote_store->Save(rem));
      base::CrashPoint("csi.media.stage_moved");
    }
    local->stage.reset();
    local->publishes.clear();
    local->phase = VolumePhase::kDeleting;
    RETURN_IF_ERROR(deps_.store->Save(*local));
    base::CrashPoint("csi.media.deleting");
  }
  // No record, or one being deleted: the media (if any) goes. Without a
  // record this is what a CreateMedia left whose migration failed.
  RETURN_IF_ERROR(deps_.backend->Detach(id));
  RETURN_IF_ERROR(deps_.backend->Delete(id));
  if (local.has_value()) RETURN_IF_ERROR(deps_.store->Remove(id));
  base::LogInfo("csi.media.freed",
                {{"volume", id}, {"owner", req.owner_node()}});
  return absl::OkStatus();
}

}  // namespace daxlease::csi
