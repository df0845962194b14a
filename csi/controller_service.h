// CSI Controller service, node-local (distributed provisioning: one per
// node beside an external-provisioner in --node-deployment mode). Creates,
// expands, lists and deletes volumes of this node's backend and keeps their
// records in the state store.
//
// Idempotency: the volume ID is derived from the CreateVolume name, so a
// retried CreateVolume finds its record (and finishes a Create interrupted
// by a crash); DeleteVolume of an unknown ID is OK; ControllerExpandVolume
// to a size the volume already has is OK.
// Concurrency: one call per volume at a time (others get ABORTED); calls on
// different volumes run in parallel. Thread-safe.
#ifndef DAXLEASE_CSI_CONTROLLER_SERVICE_H_
#define DAXLEASE_CSI_CONTROLLER_SERVICE_H_

#include <functional>

#include "csi/driver.h"
#include "proto/csi.grpc.pb.h"

namespace daxlease::csi {

class ControllerService final : public ::csi::v1::Controller::Service {
 public:
  ControllerService(DriverConfig config, DriverDeps deps)
      : config_(std::move(config)), deps_(deps) {}

  grpc::Status CreateVolume(grpc::ServerContext* ctx,
                            const ::csi::v1::CreateVolumeRequest* req,
                            ::csi::v1::CreateVolumeResponse* resp) override;
  grpc::Status DeleteVolume(grpc::ServerContext* ctx,
                            const ::csi::v1::DeleteVolumeRequest* req,
                            ::csi::v1::DeleteVolumeResponse* resp) override;
  grpc::Status ValidateVolumeCapabilities(
      grpc::ServerContext* ctx,
      const ::csi::v1::ValidateVolumeCapabilitiesRequest* req,
      ::csi::v1::ValidateVolumeCapabilitiesResponse* resp) override;
  grpc::Status ListVolumes(grpc::ServerContext* ctx,
                           const ::csi::v1::ListVolumesRequest* req,
                           ::csi::v1::ListVolumesResponse* resp) override;
  grpc::Status GetCapacity(grpc::ServerContext* ctx,
                           const ::csi::v1::GetCapacityRequest* req,
                           ::csi::v1::GetCapacityResponse* resp) override;
  grpc::Status ControllerGetCapabilities(
      grpc::ServerContext* ctx,
      const ::csi::v1::ControllerGetCapabilitiesRequest* req,
      ::csi::v1::ControllerGetCapabilitiesResponse* resp) override;
  grpc::Status ControllerGetVolume(
      grpc::ServerContext* ctx,
      const ::csi::v1::ControllerGetVolumeRequest* req,
      ::csi::v1::ControllerGetVolumeResponse* resp) override;
  grpc::Status ControllerExpandVolume(
      grpc::ServerContext* ctx,
      const ::csi::v1::ControllerExpandVolumeRequest* req,
      ::csi::v1::ControllerExpandVolumeResponse* resp) override;
  grpc::Status CreateSnapshot(grpc::ServerContext* ctx,
                              const ::csi::v1::CreateSnapshotRequest* req,
                              ::csi::v1::CreateSnapshotResponse* resp) override;
  grpc::Status DeleteSnapshot(grpc::ServerContext* ctx,
                              const ::csi::v1::DeleteSnapshotRequest* req,
                              ::csi::v1::DeleteSnapshotResponse* resp) override;
  grpc::Status ListSnapshots(grpc::ServerContext* ctx,
                             const ::csi::v1::ListSnapshotsRequest* req,
                             ::csi::v1::ListSnapshotsResponse* resp) override;

 private:
  absl::Status DoCreate(const ::csi::v1::CreateVolumeRequest& req,
                        ::csi::v1::CreateVolumeResponse* resp);
  absl::Status DoDelete(const ::csi::v1::DeleteVolumeRequest& req);
  absl::Status DoValidate(
      const ::csi::v1::ValidateVolumeCapabilitiesRequest& req,
      ::csi::v1::ValidateVolumeCapabilitiesResponse* resp);
  absl::Status DoList(const ::csi::v1::ListVolumesRequest& req,
                      ::csi::v1::ListVolumesResponse* resp);
  absl::Status DoGetCapacity(const ::csi::v1::GetCapacityRequest& req,
                             ::csi::v1::GetCapacityResponse* resp);
  absl::Status DoGetVolume(const ::csi::v1::ControllerGetVolumeRequest& req,
                           ::csi::v1::ControllerGetVolumeResponse* resp);
  absl::Status DoExpand(const ::csi::v1::ControllerExpandVolumeRequest& req,
                        ::csi::v1::ControllerExpandVolumeResponse* resp);
  // Expansion of a volume this node's agent serves to holders.
  absl::Status GrowServed(const VolumeRecord& rec);

  // Makes the filesystem of a new mount-capable volume where the backend
  // allows it before any attach (FormatPath): true when the volume now
  // carries `fs_type`, false when the backend leaves it to the first
  // stage. Blank media only; FAILED_PRECONDITION over another filesystem.
  absl::StatusOr<bool> FormatAtCreate(const std::string& id,
                                      const std::string& fs_type,
                                      const Volume& vol);
  // Snapshots and clones (docs/csi.md, "Snapshots and clones").
  bool SnapshotsEnabled() const;
  absl::Status DoCreateSnapshot(const ::csi::v1::CreateSnapshotRequest& req,
                                ::csi::v1::CreateSnapshotResponse* resp);
  absl::Status DoDeleteSnapshot(const ::csi::v1::DeleteSnapshotRequest& req);
  absl::Status DoListSnapshots(const ::csi::v1::ListSnapshotsRequest& req,
                               ::csi::v1::ListSnapshotsResponse* resp);
  // How `rec`'s media is held still while it is copied (under its lock).
  struct Quiesce {
    std::string frozen_path;  // the staging mount to freeze; "" when none
    // Served by this node's agent: its holders were recalled (Snapshot
    // recall) and are let back in after the copy.
    bool served = false;
    std::string recall;  // that DaxRecall
  };
  // Decides (and for a served volume starts) the quiesce: unstaged, nothing
  // to do; staged for mount, a freeze; served to holders, the agent's
  // Snapshot recall first (UNAVAILABLE "recall in progress" until every
  // holder flushed and released, ABORTED while another change holds the
  // volume); staged for block access, nothing while no pod has it published
  // (publishes wait for the lock), FAILED_PRECONDITION once one has.
  absl::StatusOr<Quiesce> BeginQuiesce(const VolumeRecord& rec);
  // Runs `copy` quiesced as `q` says: frozen while it runs, then the
  // holders of a served volume are let back in (whatever the copy did).
  absl::Status CopyQuiesced(const VolumeRecord& rec, const Quiesce& q,
                            const std::function<absl::Status()>& copy);
  // Runs `copy` with `frozen_path` frozen (when non-empty), thawing after.
  absl::Status WithFrozen(const std::string& frozen_path,
                          const std::function<absl::Status()>& copy);
  // CreateVolume's part for a volume_content_source: checks the source
  // against the request, then makes the media from it (under the source's
  // lock, quiesced), grown to the requested size.
  struct Source {
    VolumeBackend::ContentSource backend;
    uint64_t size_bytes = 0;
    VolumeMode mode = VolumeMode::kFsdax;
    std::string fs_type;
    bool formatted = false;
    std::string recorded;  // VolumeRecord::content_source
  };
  absl::StatusOr<Source> ResolveSource(
      const ::csi::v1::VolumeContentSource& src) const;
  absl::StatusOr<Volume> CreateFromSource(const Source& source,
                                          const VolumeSpec& spec);
  void FillSnapshot(const SnapshotRecord& rec, ::csi::v1::Snapshot* out) const;

  // The CSI Volume message for a record.
  void FillVolume(const VolumeRecord& rec, ::csi::v1::Volume* out) const;
  // Abnormal when the media is gone.
  ::csi::v1::VolumeCondition Condition(const VolumeRecord& rec) const;

  const DriverConfig config_;
  const DriverDeps deps_;
};

}  // namespace daxlease::csi

#endif  // DAXLEASE_CSI_CONTROLLER_SERVICE_H_
