// MediaService: the node agent's way to this plugin's backend and records
// during a migration (proto/agent.proto, service NodeMedia; docs/csi.md,
// "Migration"). A devdax volume's data is a whole namespace: the target
// node's agent asks its plugin to make one for the copy (CreateMedia), the
// source node's agent asks its plugin to free the old one once the switch
// is verified (FreeMedia). The records follow the owner: the plugin of the
// node that owns the volume has its record (local store, as after
// CreateVolume), every other node only its stage and publishes (the remote
// store, as for any volume of another node). So after a migration the new
// owner's unstage stops serving and its DeleteVolume frees the namespace,
// and the old owner's unpublish and unstage work as a remote node's.
//
// Crash safety (each step durable before the next; every call idempotent,
// the agent retries until OK):
//   CreateMedia: backend Create (a namespace without a record is found and
//     returned by the retry, or freed by FreeMedia when the migration
//     fails) -> local record (with the remote stage and publishes moved in)
//     -> the remote record removed.
//   FreeMedia: remote record (the stage and publishes) -> the local record
//     emptied and marked deleting (a restarted plugin finishes the delete,
//     RecoverVolumes) -> backend Delete -> the local record removed.
// Served on the CSI socket, beside the CSI services.
#ifndef DAXLEASE_CSI_MEDIA_SERVICE_H_
#define DAXLEASE_CSI_MEDIA_SERVICE_H_

#include "csi/driver.h"
#include "proto/media.grpc.pb.h"

namespace daxlease::csi {

class MediaService final : public ::daxlease::media::v1::NodeMedia::Service {
 public:
  // deps.backend, store, remote_store and locks are required.
  MediaService(DriverConfig config, DriverDeps deps)
      : config_(std::move(config)), deps_(deps) {}

  grpc::Status CreateMedia(
      grpc::ServerContext* ctx,
      const ::daxlease::media::v1::CreateMediaRequest* req,
      ::daxlease::media::v1::CreateMediaResponse* resp) override;
  grpc::Status FreeMedia(
      grpc::ServerContext* ctx,
      const ::daxlease::media::v1::FreeMediaRequest* req,
      ::daxlease::media::v1::FreeMediaResponse* resp) override;

  // The same without gRPC (tests).
  absl::StatusOr<::daxlease::media::v1::CreateMediaResponse> Create(
      const ::daxlease::media::v1::CreateMediaRequest& req);
  absl::Status Free(const ::daxlease::media::v1::FreeMediaRequest& req);

 private:
  const DriverConfig config_;
  const DriverDeps deps_;
};

}  // namespace daxlease::csi

#endif  // DAXLEASE_CSI_MEDIA_SERVICE_H_
