#include "csi/identity_service.h"

#include "csi/validation.h"
#include "lib/base/log.h"
#include "lib/base/version.h"

namespace daxlease::csi {

using ::csi::v1::PluginCapability;

grpc::Status IdentityService::GetPluginInfo(
    grpc::ServerContext*, const ::csi::v1::GetPluginInfoRequest*,
    ::csi::v1::GetPluginInfoResponse* resp) {
  resp->set_name(kDriverName);
  resp->set_vendor_version(base::kVersion);
  (*resp->mutable_manifest())["backend"] = std::string(backend_->Name());
  (*resp->mutable_manifest())["dax"] =
      backend_->ProvidesDax() ? "true" : "false";
  return grpc::Status::OK;
}

grpc::Status IdentityService::GetPluginCapabilities(
    grpc::ServerContext*, const ::csi::v1::GetPluginCapabilitiesRequest*,
    ::csi::v1::GetPluginCapabilitiesResponse* resp) {
  resp->add_capabilities()->mutable_service()->set_type(
      PluginCapability::Service::CONTROLLER_SERVICE);
  resp->add_capabilities()->mutable_service()->set_type(
      PluginCapability::Service::VOLUME_ACCESSIBILITY_CONSTRAINTS);
  if (backend_->SupportsExpansion()) {
    resp->add_capabilities()->mutable_volume_expansion()->set_type(
        backend_->ExpandsOnline() ? PluginCapability::VolumeExpansion::ONLINE
                                  : PluginCapability::VolumeExpansion::OFFLINE);
  }
  return grpc::Status::OK;
}

grpc::Status IdentityService::Probe(grpc::ServerContext*,
                                    const ::csi::v1::ProbeRequest*,
                                    ::csi::v1::ProbeResponse* resp) {
  absl::Status ready = backend_->Ready();
  resp->mutable_ready()->set_value(ready.ok());
  if (!ready.ok()) {
    base::LogWarn("csi.probe.not_ready", {{"reason", ready.ToString()}});
  }
  return grpc::Status::OK;
}

}  // namespace daxlease::csi
