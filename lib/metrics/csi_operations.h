// csi_plugin_operations_seconds, the histogram the kubernetes-csi ecosystem
// (csi-lib-utils/metrics) exports for a CSI plugin's gRPC calls, with its
// labels and buckets: driver_name, method_name (the full gRPC method,
// "/csi.v1.Node/NodeStageVolume") and grpc_status_code (Go's code names:
// "OK", "InvalidArgument", "Aborted", ...). Dashboards and alerts written
// for other CSI drivers work unchanged. Thread-safe.
#ifndef DAXLEASE_LIB_METRICS_CSI_OPERATIONS_H_
#define DAXLEASE_LIB_METRICS_CSI_OPERATIONS_H_

#include <string>

#include "absl/strings/string_view.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace daxlease::metrics {

// The grpc_status_code label value of a numeric gRPC code, as grpc-go's
// codes.Code.String() spells it ("Code(N)" outside 0..16).
std::string GrpcCodeName(int code);

class CsiOperations {
 public:
  CsiOperations(prometheus::Registry& registry, std::string driver_name);
  void Observe(absl::string_view method, int grpc_code, double seconds);

 private:
  prometheus::Family<prometheus::Histogram>& family_;
  const std::string driver_name_;
};

}  // namespace daxlease::metrics

#endif  // DAXLEASE_LIB_METRICS_CSI_OPERATIONS_H_
