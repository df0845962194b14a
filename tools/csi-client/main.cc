// daxlease-csi-client: calls one CSI RPC on a plugin's unix socket.
//
//   daxlease-csi-client --endpoint unix:///run/daxlease/csi.sock COMMAND ...
//
// Exit status: 0 on success, the numeric gRPC status code on an RPC error,
// 64 (EX_USAGE) on a usage error.
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/impl/codegen/proto_utils.h"
#include "tools/csi-client/commands.h"

namespace {

constexpr int kExitUsage = 64;

const char* CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return "UNKNOWN_CODE";
  }
}

std::string Quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out.push_back('\\');
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out.push_back(c);
  }
  return out + "\"";
}

int UsageError(const std::string& msg) {
  std::cerr << "daxlease-csi-client: " << msg
            << "\n(run with --help for the list of commands)\n";
  return kExitUsage;
}

}  // namespace

int main(int argc, char** argv) {
  std::string endpoint;
  if (const char* env = std::getenv("DAXLEASE_CSI_ENDPOINT")) endpoint = env;
  double timeout_s = 120;
  std::vector<std::string> rest;
  // Global flags come before COMMAND.
  int i = 1;
  for (; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h" || a == "help") {
      std::cout << daxlease::csiclient::Usage();
      return 0;
    }
    auto take = [&](const std::string& name, std::string* out) -> bool {
      if (a == "--" + name && i + 1 < argc) {
        *out = argv[++i];
        return true;
      }
      if (a.rfind("--" + name + "=", 0) == 0) {
        *out = a.substr(name.size() + 3);
        return true;
      }
      return false;
    };
    std::string timeout;
    if (take("endpoint", &endpoint)) continue;
    if (take("timeout", &timeout)) {
      if (!absl::SimpleAtod(timeout, &timeout_s) || timeout_s <= 0) {
        return UsageError("--timeout: not a positive number of seconds");
      }
      continue;
    }
    if (a.rfind("--", 0) == 0) return UsageError("unknown global flag " + a);
    break;
  }
  for (; i < argc; ++i) rest.emplace_back(argv[i]);
  if (endpoint.empty()) {
    return UsageError("--endpoint unix:///path.sock is required");
  }
  if (rest.empty()) return UsageError("missing COMMAND");

  auto inv = daxlease::csiclient::ParseCommand(rest);
  if (!inv.ok()) return UsageError(std::string(inv.status().message()));
  auto response = daxlease::csiclient::NewResponse(inv->method);
  if (!response.ok())
    return UsageError(std::string(response.status().message()));

  auto channel =
      grpc::CreateChannel(endpoint, grpc::InsecureChannelCredentials());
  grpc::TemplatedGenericStub<google::protobuf::Message,
                             google::protobuf::Message>
      stub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(
      std::chrono::system_clock::now() +
      std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000)));
  grpc::CompletionQueue cq;
  auto call = stub.PrepareUnaryCall(&ctx, inv->method, *inv->request, &cq);
  call->StartCall();
  grpc::Status status;
  call->Finish(response->get(), &status, reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  if (!cq.Next(&tag, &ok) || !ok) {
    std::cerr << "code=INTERNAL message=\"completion queue failed\"\n";
    return static_cast<int>(grpc::StatusCode::INTERNAL);
  }
  if (!status.ok()) {
    std::cerr << "code=" << CodeName(status.error_code())
              << " message=" << Quote(status.error_message()) << "\n";
    return static_cast<int>(status.error_code());
  }
  std::string json;
  google::protobuf::util::JsonPrintOptions opts;
  opts.add_whitespace = true;
  opts.always_print_primitive_fields = true;
  auto st =
      google::protobuf::util::MessageToJsonString(**response, &json, opts);
  if (!st.ok()) {
    std::cerr << "code=INTERNAL message=" << Quote(std::string(st.message()))
              << "\n";
    return static_cast<int>(grpc::StatusCode::INTERNAL);
  }
  std::cout << json;
  if (json.empty() || json.back() != '\n') std::cout << "\n";
  return 0;
}
