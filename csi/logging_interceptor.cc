#include "csi/logging_interceptor.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "lib/base/log.h"

namespace daxlease::csi {
namespace {

using grpc::experimental::InterceptionHookPoints;

const char* CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::OK:
      return "OK";
    case grpc::CANCELLED:
      return "CANCELLED";
    case grpc::UNKNOWN:
      return "UNKNOWN";
    case grpc::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    case grpc::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::ABORTED:
      return "ABORTED";
    case grpc::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::INTERNAL:
      return "INTERNAL";
    case grpc::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::DATA_LOSS:
      return "DATA_LOSS";
    default:
      return "UNKNOWN";
  }
}

class LoggingInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit LoggingInterceptor(grpc::experimental::ServerRpcInfo* info)
      : method_(info->method() == nullptr ? "" : info->method()),
        start_(absl::Now()) {}

  void Intercept(
      grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            InterceptionHookPoints::POST_RECV_MESSAGE)) {
      void* raw = methods->GetRecvMessage();
      if (raw != nullptr) {
        volume_ =
            RequestVolumeId(*static_cast<google::protobuf::Message*>(raw));
      }
    }
    if (methods->QueryInterceptionHookPoint(
            InterceptionHookPoints::PRE_SEND_STATUS)) {
      grpc::Status st = methods->GetSendStatus();
      std::string ms =
          absl::StrCat(absl::ToDoubleMilliseconds(absl::Now() - start_));
      if (st.ok()) {
        base::LogInfo("csi.call", {{"method", method_},
                                   {"volume", volume_},
                                   {"code", CodeName(st.error_code())},
                                   {"ms", ms}});
      } else {
        base::LogWarn("csi.call", {{"method", method_},
                                   {"volume", volume_},
                                   {"code", CodeName(st.error_code())},
                                   {"ms", ms},
                                   {"error", st.error_message()}});
      }
    }
    methods->Proceed();
  }

 private:
  std::string method_;
  std::string volume_;
  absl::Time start_;
};

}  // namespace

std::string RequestVolumeId(const google::protobuf::Message& msg) {
  const google::protobuf::Descriptor* d = msg.GetDescriptor();
  const google::protobuf::Reflection* r = msg.GetReflection();
  for (const char* name : {"volume_id", "name"}) {
    const google::protobuf::FieldDescriptor* f = d->FindFieldByName(name);
    if (f != nullptr &&
        f->type() == google::protobuf::FieldDescriptor::TYPE_STRING &&
        !f->is_repeated()) {
      return r->GetString(msg, f);
    }
  }
  return "";
}

grpc::experimental::Interceptor*
LoggingInterceptorFactory::CreateServerInterceptor(
    grpc::experimental::ServerRpcInfo* info) {
  return new LoggingInterceptor(info);
}

}  // namespace daxlease::csi
