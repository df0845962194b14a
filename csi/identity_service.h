// CSI Identity service: plugin name and version, capabilities, and a Probe
// that reports ready only when the backend can serve. Stateless apart from
// the backend; thread-safe; every call is idempotent (read-only).
#ifndef DAXLEASE_CSI_IDENTITY_SERVICE_H_
#define DAXLEASE_CSI_IDENTITY_SERVICE_H_

#include "csi/driver.h"
#include "proto/csi.grpc.pb.h"

namespace daxlease::csi {

class IdentityService final : public ::csi::v1::Identity::Service {
 public:
  explicit IdentityService(VolumeBackend* backend) : backend_(backend) {}

  grpc::Status GetPluginInfo(grpc::ServerContext* ctx,
                             const ::csi::v1::GetPluginInfoRequest* req,
                             ::csi::v1::GetPluginInfoResponse* resp) override;
  grpc::Status GetPluginCapabilities(
      grpc::ServerContext* ctx,
      const ::csi::v1::GetPluginCapabilitiesRequest* req,
      ::csi::v1::GetPluginCapabilitiesResponse* resp) override;
  grpc::Status Probe(grpc::ServerContext* ctx,
                     const ::csi::v1::ProbeRequest* req,
                     ::csi::v1::ProbeResponse* resp) override;

 private:
  VolumeBackend* backend_;
};

}  // namespace daxlease::csi

#endif  // DAXLEASE_CSI_IDENTITY_SERVICE_H_
