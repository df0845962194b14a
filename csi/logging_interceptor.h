// The one gRPC server interceptor of daxlease-csi: one logfmt line per call
// (`event=csi.call method=/csi.v1.Node/NodeStageVolume volume=pvc-1-...
// code=OK ms=12`). Only the method, the volume ID (or the CreateVolume
// name), the duration and the status are logged, never request bodies, so
// secrets (fields marked csi_secret) cannot leak into logs.
#ifndef DAXLEASE_CSI_LOGGING_INTERCEPTOR_H_
#define DAXLEASE_CSI_LOGGING_INTERCEPTOR_H_

#include <memory>
#include <string>

#include "google/protobuf/message.h"
#include "grpcpp/support/server_interceptor.h"

namespace daxlease::csi {

// The volume ID a request is about: its `volume_id` field, else the
// CreateVolume `name`; "" when it has neither. Reads no other field.
std::string RequestVolumeId(const google::protobuf::Message& msg);

class LoggingInterceptorFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override;
};

}  // namespace daxlease::csi

#endif  // DAXLEASE_CSI_LOGGING_INTERCEPTOR_H_
