// CSI Node service: stages a volume (attach its device, make a filesystem
// only where blkid finds none, mount it at the staging path; block access
// stops after attach), publishes it (bind mount of the staging mount, or of
// the device node onto a file, read-only when asked), reports usage and
// condition, grows the filesystem online, and undoes all of it.
//
// Every mount is recorded in the state store before it is made (a stage
// as "staging" until it is complete, a publish with its target), and a
// record is dropped only after its mount is gone, so that a retry or a
// restarted plugin finishes or undoes a half-done call (see repair.h).
// Idempotency: staging/publishing again with the same arguments is OK (and
// repairs a mount that went missing); unstaging/unpublishing what is not
// staged/published is OK. Incompatible repeats are ALREADY_EXISTS or
// FAILED_PRECONDITION as the CSI spec says.
// Concurrency: one call per volume at a time (ABORTED otherwise).
#ifndef DAXLEASE_CSI_NODE_SERVICE_H_
#define DAXLEASE_CSI_NODE_SERVICE_H_

#include "csi/agent_connection.h"
#include "csi/driver.h"
#include "csi/validation.h"
#include "proto/csi.grpc.pb.h"

namespace daxlease::csi {

class NodeService final : public ::csi::v1::Node::Service {
 public:
  NodeService(DriverConfig config, DriverDeps deps)
      : config_(std::move(config)), deps_(deps) {}

  grpc::Status NodeStageVolume(
      grpc::ServerContext* ctx, const ::csi::v1::NodeStageVolumeRequest* req,
      ::csi::v1::NodeStageVolumeResponse* resp) override;
  grpc::Status NodeUnstageVolume(
      grpc::ServerContext* ctx, const ::csi::v1::NodeUnstageVolumeRequest* req,
      ::csi::v1::NodeUnstageVolumeResponse* resp) override;
  grpc::Status NodePublishVolume(
      grpc::ServerContext* ctx, const ::csi::v1::NodePublishVolumeRequest* req,
      ::csi::v1::NodePublishVolumeResponse* resp) override;
  grpc::Status NodeUnpublishVolume(
      grpc::ServerContext* ctx,
      const ::csi::v1::NodeUnpublishVolumeRequest* req,
      ::csi::v1::NodeUnpublishVolumeResponse* resp) override;
  grpc::Status NodeGetVolumeStats(
      grpc::ServerContext* ctx, const ::csi::v1::NodeGetVolumeStatsRequest* req,
      ::csi::v1::NodeGetVolumeStatsResponse* resp) override;
  grpc::Status NodeExpandVolume(
      grpc::ServerContext* ctx, const ::csi::v1::NodeExpandVolumeRequest* req,
      ::csi::v1::NodeExpandVolumeResponse* resp) override;
  grpc::Status NodeGetCapabilities(
      grpc::ServerContext* ctx,
      const ::csi::v1::NodeGetCapabilitiesRequest* req,
      ::csi::v1::NodeGetCapabilitiesResponse* resp) override;
  grpc::Status NodeGetInfo(grpc::ServerContext* ctx,
                           const ::csi::v1::NodeGetInfoRequest* req,
                           ::csi::v1::NodeGetInfoResponse* resp) override;

 private:
  absl::Status DoStage(const ::csi::v1::NodeStageVolumeRequest& req);
  absl::Status DoUnstage(const ::csi::v1::NodeUnstageVolumeRequest& req);
  absl::Status DoPublish(const ::csi::v1::NodePublishVolumeRequest& req);
  absl::Status DoUnpublish(const ::csi::v1::NodeUnpublishVolumeRequest& req);
  absl::Status DoStats(const ::csi::v1::NodeGetVolumeStatsRequest& req,
                       ::csi::v1::NodeGetVolumeStatsResponse* resp);
  absl::Status DoExpand(const ::csi::v1::NodeExpandVolumeRequest& req,
                        ::csi::v1::NodeExpandVolumeResponse* resp);

  // The staging steps after the intent is recorded: attach, format if
  // blank, mount. Idempotent.
  // `attached`: the device this call attached just now as
  // rec->stage->device (not looked up again); null on a retry.
  absl::Status StageSteps(VolumeRecord* rec, MountDevice* attached);
  // Grows the staged filesystem to its device: online, or (ext4 only, when
  // online resize is refused and nothing is published) offline.
  absl::Status GrowFilesystem(const VolumeRecord& rec);
  // Mounts `device` at the staging path with the stage's flags, plus -o dax
  // (verified in the mount table) on a DAX backend. FAILED_PRECONDITION,
  // unmounted again, if the kernel did not grant DAX.
  absl::Status MountStaging(const std::string& id, const StageRecord& st,
                            const std::string& device);
  // Once the staging mount holds the device: backend->DetachWithLastMount
  // unless the attach set that up already; a failure is logged, not
  // returned.
  absl::Status GoWithLastMount(const std::string& id, const MountDevice& dev);
  // FailedPrecondition unless the staging path is the mount of the
  // volume's device with its filesystem (not a bare directory, not another
  // mount): what a mount publish binds into the pod.
  absl::Status VerifyStagingMount(const VolumeRecord& rec);
  // A devdax volume (no filesystem) takes block access, or mount access
  // when shared on a node with an agent: the published directory.
  absl::Status CheckDevdaxAccess(const VolumeRecord& rec,
                                 const CapabilityInfo& cap, bool share) const;
  absl::Status PublishSteps(VolumeRecord* rec, const std::string& target);
  // Loads the record or NotFound.
  absl::StatusOr<VolumeRecord> LoadVolume(const std::string& id);

  // Shared volumes of another node of this fabric (node_service_remote.cc).
  // Their records live in deps_.remote_store: no media here, a "stage"
  // that only remembers the path, publishes that are published directories.
  // Whether `ctx` is of a shared volume, asked when this node has no
  // record of it (it lives on another node, or migrated away from this one).
  bool IsRemoteShared(
      const google::protobuf::Map<std::string, std::string>& ctx) const;
  AgentPublish AgentPublishFor(const ::csi::v1::NodePublishVolumeRequest& req,
                               const std::string& target,
                               bool owner_local) const;
  absl::Status StageRemote(const ::csi::v1::NodeStageVolumeRequest& req,
                           const std::string& path);
  absl::Status UnstageRemote(VolumeRecord* rec, const std::string& path);
  absl::Status PublishRemote(const ::csi::v1::NodePublishVolumeRequest& req,
                             const std::string& target,
                             const std::string& staging);
  absl::Status UnpublishRemote(VolumeRecord* rec, const std::string& target);

  const DriverConfig config_;
  const DriverDeps deps_;
};

}  // namespace daxlease::csi

#endif  // DAXLEASE_CSI_NODE_SERVICE_H_
