#include "lib/channel/server.h"

#include <grpcpp/grpcpp.h>

#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "lib/base/log.h"
#include "proto/channel.grpc.pb.h"

namespace daxlease::channel {
namespace {

// One open stream's outbound queue.
struct Outbox {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<pb::OperatorMessage> queue;
  bool closed = false;

  void Push(const pb::OperatorMessage& m) {
    std::lock_guard<std::mutex> l(mu);
    if (closed) return;
    queue.push_back(m);
    cv.notify_one();
  }
  void Close() {
    std::lock_guard<std::mutex> l(mu);
    closed = true;
    cv.notify_all();
  }
};

class Service final : public pb::RecallChannel::Service {
 public:
  Service(Authenticator& auth, ChannelHandlers h)
      : auth_(auth), h_(std::move(h)) {}

  grpc::Status Connect(
      grpc::ServerContext* ctx,
      grpc::ServerReaderWriter<pb::OperatorMessage, pb::AgentReport>* stream)
      override {
    std::string token;
    auto md = ctx->client_metadata().find("authorization");
    if (md != ctx->client_metadata().end()) {
      std::string v(md->second.data(), md->second.size());
      if (absl::StartsWith(v, "Bearer ")) token = v.substr(7);
    }
    absl::StatusOr<std::string> node = auth_.NodeOf(token);
    if (!node.ok()) {
      base::LogWarn("channel.refused", {{"peer", ctx->peer()},
                                        {"error", node.status().ToString()}});
      return grpc::Status(absl::IsUnavailable(node.status())
                              ? grpc::StatusCode::UNAVAILABLE
                              : grpc::StatusCode::UNAUTHENTICATED,
                          std::string(node.status().message()));
    }
    auto out = std::make_shared<Outbox>();
    {
      std::lock_guard<std::mutex> l(mu_);
      if (stopped_)
        return grpc::Status(grpc::StatusCode::UNAVAILABLE, "stopping");
      streams_[*node].insert(out);
      contexts_.insert(ctx);
    }
    base::LogInfo("channel.connected",
                  {{"node", *node}, {"peer", ctx->peer()}});
    std::thread writer([out, stream, ctx] {
      for (;;) {
        pb::OperatorMessage m;
        {
          std::unique_lock<std::mutex> l(out->mu);
          out->cv.wait(l, [&] { return out->closed || !out->queue.empty(); });
          if (out->queue.empty()) return;
          m = std::move(out->queue.front());
          out->queue.pop_front();
        }
        if (!stream->Write(m)) {
          ctx->TryCancel();
          return;
        }
      }
    });
    pb::OperatorMessage hello;
    hello.set_node(*node);
    out->Push(hello);
    if (h_.on_connect) h_.on_connect(*node);
    for (;;) {
      // A fresh report each time: Clear() would keep every parsed ack's
      // object for reuse, so each stream held on to its largest report
      // (a recall of 10000 leases over 10 nodes: about 1.8 MB in all).
      pb::AgentReport report;
      if (!stream->Read(&report)) break;
      pb::OperatorMessage reply;
      if (h_.on_report) h_.on_report(*node, report, reply);
      if (reply.refused_size() > 0) out->Push(reply);
    }
    out->Close();
    writer.join();
    {
      std::lock_guard<std::mutex> l(mu_);
      auto it = streams_.find(*node);
      if (it != streams_.end()) {
        it->second.erase(out);
        if (it->second.empty()) streams_.erase(it);
      }
      contexts_.erase(ctx);
    }
    base::LogInfo("channel.disconnected", {{"node", *node}});
    return grpc::Status::OK;
  }

  bool Send(const std::string& node, const pb::OperatorMessage& msg) {
    std::lock_guard<std::mutex> l(mu_);
    auto it = streams_.find(node);
    if (it == streams_.end()) return false;
    for (const auto& o : it->second) o->Push(msg);
    return true;
  }
  std::vector<std::string> Connected() const {
    std::lock_guard<std::mutex> l(mu_);
    std::vector<std::string> out;
    for (const auto& [n, s] : streams_) out.push_back(n);
    return out;
  }
  void CancelAll() {
    std::lock_guard<std::mutex> l(mu_);
    stopped_ = true;
    for (grpc::ServerContext* c : contexts_) c->TryCancel();
    for (auto& [n, set] : streams_) {
      for (const auto& o : set) o->Close();
    }
  }

 private:
  Authenticator& auth_;
  const ChannelHandlers h_;
  mutable std::mutex mu_;
  bool stopped_ = false;
  std::map<std::string, std::set<std::shared_ptr<Outbox>>> streams_;
  std::set<grpc::ServerContext*> contexts_;
};

class GrpcChannelServer final : public ChannelServer {
 public:
  GrpcChannelServer(std::unique_ptr<Service> service,
                    std::unique_ptr<grpc::Server> server, int port)
      : service_(std::move(service)), server_(std::move(server)), port_(port) {}
  ~GrpcChannelServer() override { Stop(); }

  int port() const override { return port_; }
  bool Send(const std::string& node, const pb::OperatorMessage& msg) override {
    return service_->Send(node, msg);
  }
  std::vector<std::string> Connected() const override {
    return service_->Connected();
  }
  void Stop() override {
    std::lock_guard<std::mutex> l(stop_mu_);
    if (stopped_) return;
    stopped_ = true;
    service_->CancelAll();
    server_->Shutdown(std::chrono::system_clock::now() +
                      std::chrono::seconds(2));
    server_->Wait();
  }

 private:
  std::unique_ptr<Service> service_;
  std::unique_ptr<grpc::Server> server_;
  const int port_;
  std::mutex stop_mu_;
  bool stopped_ = false;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ChannelServer>> ChannelServer::Start(
    const std::string& address, const Certificate& cert, Authenticator& auth,
    ChannelHandlers handlers) {
  auto service = std::make_unique<Service>(auth, std::move(handlers));
  grpc::SslServerCredentialsOptions ssl;
  ssl.pem_key_cert_pairs.push_back({cert.key_pem, cert.cert_pem});
  grpc::ServerBuilder b;
  int port = 0;
  b.AddListeningPort(address, grpc::SslServerCredentials(ssl), &port);
  b.RegisterService(service.get());
  // Agents keep their stream open for as long as we lead; find dead peers.
  b.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
  b.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
  b.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  b.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                       1000);
  std::unique_ptr<grpc::Server> server = b.BuildAndStart();
  if (server == nullptr || port == 0) {
    return absl::UnavailableError(
        absl::StrCat("recall channel: cannot listen on ", address));
  }
  return std::unique_ptr<ChannelServer>(
      new GrpcChannelServer(std::move(service), std::move(server), port));
}

}  // namespace daxlease::channel
