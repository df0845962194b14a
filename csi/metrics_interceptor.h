// gRPC server interceptor of daxlease-csi that times every CSI call into
// csi_plugin_operations_seconds (lib/metrics/csi_operations.h), beside the
// logging interceptor.
#ifndef DAXLEASE_CSI_METRICS_INTERCEPTOR_H_
#define DAXLEASE_CSI_METRICS_INTERCEPTOR_H_

#include "grpcpp/support/server_interceptor.h"
#include "lib/metrics/csi_operations.h"

namespace daxlease::csi {

class MetricsInterceptorFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  // `ops` must outlive the server.
  explicit MetricsInterceptorFactory(metrics::CsiOperations* ops) : ops_(ops) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override;

 private:
  metrics::CsiOperations* ops_;
};

}  // namespace daxlease::csi

#endif  // DAXLEASE_CSI_METRICS_INTERCEPTOR_H_
