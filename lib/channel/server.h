// ChannelServer: the operator leader's end of the recall channel
// (proto/channel.proto). gRPC over TLS (the leader's certificate,
// tls.h); each stream is authenticated once, when it opens, by the
// Authenticator, and from then on speaks for that node only. What to send
// and what an answer means is the caller's (operator/channel_relay.h); this
// type moves messages and knows who sent them.
//
// Thread-safe. Send never blocks on the network: each stream has a writer
// thread draining its queue.
#ifndef DAXLEASE_LIB_CHANNEL_SERVER_H_
#define DAXLEASE_LIB_CHANNEL_SERVER_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "lib/channel/authenticator.h"
#include "lib/channel/tls.h"
#include "proto/channel.pb.h"

namespace daxlease::channel {

namespace pb = ::daxlease::channel::v1;

struct ChannelHandlers {
  // A stream of `node` opened (authenticated); it is already registered, so
  // Send(node, ...) reaches it. Called on the stream's thread.
  std::function<void(const std::string& node)> on_connect;
  // A report from `node`; `reply` (empty) may be filled with refusals and
  // is sent back on the same stream if not empty.
  std::function<void(const std::string& node, const pb::AgentReport& report,
                     pb::OperatorMessage& reply)>
      on_report;
};

class ChannelServer {
 public:
  // Listens on `address` ("host:port", port 0: any) with `cert`.
  // `auth` must outlive the server.
  static absl::StatusOr<std::unique_ptr<ChannelServer>> Start(
      const std::string& address, const Certificate& cert, Authenticator& auth,
      ChannelHandlers handlers);
  virtual ~ChannelServer() = default;

  virtual int port() const = 0;
  // Queues `msg` on every open stream of `node`. False when none is open.
  virtual bool Send(const std::string& node,
                    const pb::OperatorMessage& msg) = 0;
  // Nodes with an open stream.
  virtual std::vector<std::string> Connected() const = 0;
  // Ends every stream and stops listening. Idempotent.
  virtual void Stop() = 0;
};

}  // namespace daxlease::channel

#endif  // DAXLEASE_LIB_CHANNEL_SERVER_H_
