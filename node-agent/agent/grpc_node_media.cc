#include "node-agent/agent/grpc_node_media.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"
#include "proto/media.grpc.pb.h"

namespace daxlease::agent {
namespace {

namespace mpb = ::daxlease::media::v1;
namespace pb = ::daxlease::agent::v1;

absl::Status FromGrpc(const grpc::Status& s, const std::string& socket) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      absl::StrCat("plugin ", socket, ": ", s.error_message()));
}

class GrpcNodeMedia : public NodeMedia {
 public:
  GrpcNodeMedia(std::string socket, absl::Duration timeout)
      : socket_(std::move(socket)),
        timeout_(timeout),
        stub_(mpb::NodeMedia::NewStub(
            grpc::CreateChannel(absl::StrCat("unix:", socket_),
                                grpc::InsecureChannelCredentials()))) {}

  absl::StatusOr<Media> Create(const std::string& volume, pb::VolumeMode mode,
                               uint64_t size_bytes) override {
    mpb::CreateMediaRequest req;
    req.set_volume_id(volume);
    req.set_mode(mode == pb::DEVDAX ? "devdax" : "fsdax");
    req.set_size_bytes(size_bytes);
    mpb::CreateMediaResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    absl::Status st = FromGrpc(stub_->CreateMedia(&ctx, req, &resp), socket_);
    if (!st.ok()) return st;
    return Media{resp.device(), resp.size_bytes()};
  }

  absl::Status Free(const std::string& volume,
                    const std::string& owner_node) override {
    mpb::FreeMediaRequest req;
    req.set_volume_id(volume);
    req.set_owner_node(owner_node);
    mpb::FreeMediaResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    return FromGrpc(stub_->FreeMedia(&ctx, req, &resp), socket_);
  }

 private:
  std::chrono::system_clock::time_point Deadline() const {
    return std::chrono::system_clock::now() +
           absl::ToChronoMilliseconds(timeout_);
  }

  const std::string socket_;
  const absl::Duration timeout_;
  std::unique_ptr<mpb::NodeMedia::Stub> stub_;
};

}  // namespace

std::unique_ptr<NodeMedia> NewGrpcNodeMedia(const std::string& socket,
                                            absl::Duration timeout) {
  return std::make_unique<GrpcNodeMedia>(socket, timeout);
}

}  // namespace daxlease::agent
