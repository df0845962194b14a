#include "lib/channel/client.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "lib/base/crash_point.h"
#include "lib/base/log.h"
#include "lib/channel/tls.h"
#include "proto/channel.grpc.pb.h"

namespace daxlease::channel {
namespace {

bool Empty(const pb::AgentReport& r) {
  return r.acks_size() == 0 && r.fences_size() == 0 &&
         r.revocation_acks_size() == 0;
}

}  // namespace

ChannelClient::ChannelClient(
    k8s::KubeClient& client, ChannelClientOptions options,
    std::function<void(const pb::OperatorMessage&)> on_message)
    : client_(client),
      options_(std::move(options)),
      on_message_(std::move(on_message)) {}

ChannelClient::~ChannelClient() { Stop(); }

void ChannelClient::Start() {
  std::lock_guard<std::mutex> l(mu_);
  if (started_) return;
  started_ = true;
  thread_ = std::thread([this] { Run(); });
}

void ChannelClient::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stopping_ = true;
    if (ctx_ != nullptr) ctx_->TryCancel();
    cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
}

void ChannelClient::Report(const pb::AgentReport& report) {
  std::lock_guard<std::mutex> l(mu_);
  pending_.MergeFrom(report);
  cv_.notify_all();
}

std::string ChannelClient::node() const {
  std::lock_guard<std::mutex> l(mu_);
  return node_;
}

void ChannelClient::Disconnect() {
  std::lock_guard<std::mutex> l(mu_);
  if (ctx_ != nullptr) ctx_->TryCancel();
}

void ChannelClient::Run() {
  absl::Duration wait = options_.retry;
  LeaderRecord last;
  for (;;) {
    {
      std::unique_lock<std::mutex> l(mu_);
      if (stopping_) return;
    }
    absl::StatusOr<LeaderRecord> rec =
        ReadLeaderRecord(client_, options_.record);
    absl::StatusOr<std::string> token =
        options_.token ? options_.token() : std::string();
    bool accepted = false;
    if (rec.ok() && !(*rec == last)) {
      wait = options_.retry;  // a new leader: no backoff from the old one
      last = *rec;
    }
    if (rec.ok() && token.ok()) {
      accepted = RunStream(*rec, *token);
    } else if (!rec.ok() && !absl::IsNotFound(rec.status())) {
      base::LogWarn("channel.no_leader", {{"error", rec.status().ToString()}});
    } else if (!token.ok()) {
      base::LogWarn("channel.no_token", {{"error", token.status().ToString()}});
    }
    wait = accepted ? options_.retry : std::min(wait * 2, options_.max_retry);
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait_for(l, absl::ToChronoNanoseconds(accepted ? options_.retry : wait),
                 [&] { return stopping_; });
  }
}

bool ChannelClient::RunStream(const LeaderRecord& rec,
                              const std::string& token) {
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = rec.certificate;
  grpc::ChannelArguments args;
  args.SetSslTargetNameOverride(kServerName);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
  // Reconnect at once to a leader that comes back on the same address.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  auto channel =
      grpc::CreateCustomChannel(rec.endpoint, grpc::SslCredentials(ssl), args);
  auto stub = pb::RecallChannel::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.AddMetadata("authorization", absl::StrCat("Bearer ", token));
  {
    std::lock_guard<std::mutex> l(mu_);
    if (stopping_) return false;
    ctx_ = &ctx;
  }
  auto stream = stub->Connect(&ctx);
  bool open = true;  // guarded by mu_: the writer may run
  std::thread writer([&] {
    for (;;) {
      pb::AgentReport r;
      {
        std::unique_lock<std::mutex> l(mu_);
        cv_.wait(l, [&] { return !open || stopping_ || !Empty(pending_); });
        if (!open || stopping_) return;
        r.Swap(&pending_);
      }
      if (!stream->Write(r)) {
        // Not delivered: keep it for the next stream.
        std::lock_guard<std::mutex> l(mu_);
        r.MergeFrom(pending_);
        pending_.Swap(&r);
        return;
      }
      // A lease's release (the recall's ack) is on the wire; the agent has
      // not gone on. (Without the channel the same point follows the
      // lease status patch: docs/agent.md, "Migration".)
      if (r.acks_size() > 0) base::CrashPoint("agent.recall.released");
    }
  });
  pb::OperatorMessage m;
  bool first = true;
  while (stream->Read(&m)) {
    if (first && !m.node().empty()) {
      first = false;
      ++connects_;
      std::lock_guard<std::mutex> l(mu_);
      node_ = m.node();
      base::LogInfo("channel.connected", {{"node", node_},
                                          {"endpoint", rec.endpoint},
                                          {"leader", rec.identity}});
    }
    on_message_(m);
    m.Clear();
  }
  {
    std::lock_guard<std::mutex> l(mu_);
    open = false;
    node_.clear();
    cv_.notify_all();
  }
  writer.join();
  ctx.TryCancel();
  grpc::Status st = stream->Finish();
  {
    std::lock_guard<std::mutex> l(mu_);
    ctx_ = nullptr;
  }
  if (!first || st.error_code() != grpc::StatusCode::CANCELLED) {
    base::LogInfo("channel.closed", {{"endpoint", rec.endpoint},
                                     {"code", absl::StrCat(st.error_code())},
                                     {"error", st.error_message()}});
  }
  return !first;
}

}  // namespace daxlease::channel
