// TcpFabric: the Fabric over plain TCP, for machines without RDMA (CI, the
// two simulated nodes). The owner listens; each holder's client opens one
// connection per grant, presents its credential (FabricHello), then sends
// one-sided-style requests that the owner executes against the registered
// mapping: READ, WRITE, PERSIST. Wire format: docs/agent.md.
//
// Fencing: Invalidate shuts the grant's connections down (unblocking any
// receive or send in progress), then takes the grant's lock exclusively,
// which waits for the operation executing at that moment; every later
// operation and every later handshake with that key is refused. A write
// whose payload was still arriving when the fence began may have landed in
// part, and its client gets an error, never an OK.
//
// One thread per connection (holders per volume are few; 100 is fine).
#ifndef DAXLEASE_NODE_AGENT_FABRIC_TCP_FABRIC_H_
#define DAXLEASE_NODE_AGENT_FABRIC_TCP_FABRIC_H_

#include <atomic>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "node-agent/fabric/fabric.h"

namespace daxlease::fabric {

struct TcpFabricOptions {
  // "host:port" to listen on; port 0 picks one (see endpoint()).
  std::string listen = "0.0.0.0:0";
  // What holders are told to connect to; empty: the listen address with the
  // port actually bound (0.0.0.0 becomes 127.0.0.1).
  std::string advertise;
  // The agents' shared secret for grant credentials.
  std::string secret;
};

class TcpFabric final : public Fabric {
 public:
  // Binds and starts accepting.
  static absl::StatusOr<std::unique_ptr<TcpFabric>> Start(
      TcpFabricOptions options);
  // Stops accepting, closes every connection and joins their threads.
  ~TcpFabric() override;

  std::string endpoint() const { return endpoint_; }

  absl::Status RegisterVolume(Region region) override;
  absl::Status DeregisterVolume(const std::string& volume) override;
  absl::StatusOr<GrantInfo> Grant(const GrantKey& key, Access access) override;
  absl::StatusOr<bool> Invalidate(const GrantKey& key) override;
  absl::StatusOr<int> InvalidateBefore(const std::string& volume,
                                       int64_t epoch) override;

  // Live connections (for tests and status).
  int ConnectionCount() const;

  struct GrantState;
  struct Conn;

 private:
  TcpFabric(TcpFabricOptions options, int listen_fd, std::string endpoint);
  void AcceptLoop();
  void Serve(std::shared_ptr<Conn> conn);
  void CutGrant(GrantState& g);

  const TcpFabricOptions options_;
  const int listen_fd_;
  const std::string endpoint_;
  std::atomic<bool> stopping_{false};
  std::thread accept_thread_;

  mutable absl::Mutex mu_;
  struct Volume {
    Region region;
    std::map<GrantKey, std::shared_ptr<GrantState>> grants;
    int64_t min_epoch = 0;  // InvalidateBefore: older epochs are stale
  };
  std::map<std::string, std::shared_ptr<Volume>> volumes_ ABSL_GUARDED_BY(mu_);
  std::set<std::shared_ptr<Conn>> conns_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(mu_);
};

// Holder side of TcpFabric.
class TcpConnector final : public FabricConnector {
 public:
  // How long Connect waits for the owner: for the TCP connection, then for
  // the reply to its FabricHello. An owner whose node is gone (its SYNs
  // unanswered: about two minutes of kernel retries) or whose agent is
  // stuck must not hold the caller; libdaxlease retries an Unavailable
  // until its attach timeout, and a migration's target until cancelled.
  static constexpr absl::Duration kDefaultTimeout = absl::Seconds(10);

  explicit TcpConnector(absl::Duration timeout = kDefaultTimeout)
      : timeout_(timeout) {}

  // Unavailable, naming the endpoint and the step, when the owner does not
  // answer within the timeout.
  absl::StatusOr<std::unique_ptr<RemoteRegion>> Connect(
      const GrantInfo& grant) override;

 private:
  const absl::Duration timeout_;
};

}  // namespace daxlease::fabric

#endif  // DAXLEASE_NODE_AGENT_FABRIC_TCP_FABRIC_H_
