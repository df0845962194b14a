#include "lib/metrics/csi_operations.h"

#include <iterator>
#include <utility>

#include "absl/strings/str_cat.h"

namespace daxlease::metrics {

std::string GrpcCodeName(int code) {
  static constexpr const char* kNames[] = {"OK",
                                           "Canceled",
                                           "Unknown",
                                           "InvalidArgument",
                                           "DeadlineExceeded",
                                           "NotFound",
                                           "AlreadyExists",
                                           "PermissionDenied",
                                           "ResourceExhausted",
                                           "FailedPrecondition",
                                           "Aborted",
                                           "OutOfRange",
                                           "Unimplemented",
                                           "Internal",
                                           "Unavailable",
                                           "DataLoss",
                                           "Unauthenticated"};
  if (code < 0 || code >= static_cast<int>(std::size(kNames))) {
    return absl::StrCat("Code(", code, ")");
  }
  return kNames[code];
}

CsiOperations::CsiOperations(prometheus::Registry& registry,
                             std::string driver_name)
    : family_(prometheus::BuildHistogram()
                  .Name("csi_plugin_operations_seconds")
                  .Help("Container Storage Interface operation duration with "
                        "gRPC error code status total")
                  .Register(registry)),
      driver_name_(std::move(driver_name)) {}

void CsiOperations::Observe(absl::string_view method, int grpc_code,
                            double seconds) {
  // csi-lib-utils' buckets, so histograms from every CSI component aggregate.
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 25, 50, 120, 300, 600};
  family_
      .Add({{"driver_name", driver_name_},
            {"method_name", std::string(method)},
            {"grpc_status_code", GrpcCodeName(grpc_code)}},
           kBuckets)
      .Observe(seconds);
}

}  // namespace daxlease::metrics
