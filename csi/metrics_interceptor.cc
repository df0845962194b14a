#include "csi/metrics_interceptor.h"

#include <string>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace daxlease::csi {
namespace {

using grpc::experimental::InterceptionHookPoints;

class MetricsInterceptor final : public grpc::experimental::Interceptor {
 public:
  MetricsInterceptor(grpc::experimental::ServerRpcInfo* info,
                     metrics::CsiOperations* ops)
      : method_(info->method() == nullptr ? "" : info->method()),
        ops_(ops),
        start_(absl::Now()) {}

  void Intercept(
      grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            InterceptionHookPoints::PRE_SEND_STATUS)) {
      ops_->Observe(method_, methods->GetSendStatus().error_code(),
                    absl::ToDoubleSeconds(absl::Now() - start_));
    }
    methods->Proceed();
  }

 private:
  std::string method_;
  metrics::CsiOperations* ops_;
  absl::Time start_;
};

}  // namespace

grpc::experimental::Interceptor*
MetricsInterceptorFactory::CreateServerInterceptor(
    grpc::experimental::ServerRpcInfo* info) {
  return new MetricsInterceptor(info, ops_);
}

}  // namespace daxlease::csi
