// VerbsFabric: the Fabric over RDMA verbs (rdma_cm and libibverbs through
// lib/rdma): the owner's memory is read and written by the holders' RDMA
// READ/WRITE with no owner CPU on the data path.
//
// Owner side:
//  - RegisterVolume: one ibv_reg_mr of the volume's mapping with local write
//    and IBV_ACCESS_MW_BIND only: the region itself grants no remote access.
//    A mapping the kernel will not pin (a file on fsdax: EOPNOTSUPP) is
//    registered on demand (ODP) where the device offers it, and prefetched
//    (ibv_advise_mr, asynchronous and advisory), else refused
//    with FAILED_PRECONDITION naming the reason (share devdax over verbs).
//  - A holder connects with rdma_cm (one RC queue pair per RemoteRegion) and
//    SENDs a FabricHello (proto/agent.proto: key, access, credential); the
//    owner checks it as TcpFabric does, takes a type-2 memory window from a
//    pool allocated ahead of time, binds it over the region through that
//    connection's QP (read, or read+write, as granted), and SENDs back the
//    region's address and the window's rkey, the only key the holder ever
//    gets. rxe checks that a type-2 window is used through the QP it was
//    bound on, so a key is worth nothing on another connection.
//  - Invalidate: IBV_WR_LOCAL_INV of each of the grant's windows, exactly
//    once (WindowFsm makes a second one impossible: it panics rxe's kernel),
//    waited for; later handshakes under the key are refused. The connection
//    stays up: the holder's next RDMA op fails with a remote access error
//    (both QPs then go to the error state), the holder drops its QP and
//    reconnects, and the handshake says "revoked". When the invalidate cannot
//    be confirmed (the QP is already in error) the window is deallocated,
//    which revokes the key too.
//  - Requests (DIGESTS, a migration's target inside the pause): after the
//    handshake the owner keeps one RECV posted on the connection's QP (it
//    says so in the hello reply's features; an owner of an earlier version
//    does not, and the holder answers Unimplemented without asking). The
//    holder posts a receive big enough for the whole reply (16 bytes a
//    chunk, a header and room for an error message), then SENDs the request
//    (VerbsRequest: version, op, offset, length, chunk, the receive's size);
//    the connection's thread, which waits for the disconnect, looks at the
//    CQ between its waits (every kRequestPoll), under the connection's lock
//    (the window's bind and LOCAL_INV wait on the same CQ and hand a
//    request's completion over instead of dropping it), checks the grant
//    (cut: PERMISSION_DENIED, as an RDMA op is refused), the range
//    (OUT_OF_RANGE) and the chunk size (Region::digests refuses one it does
//    not hash in), hashes the range and answers with one SEND (VerbsReply:
//    status code, message, payload). One SEND, not a train of kMsgBytes
//    pieces: an RC message may be up to 2 GiB, and one receive posted
//    before the request can never meet an empty receive queue (no RNR
//    retries, no flow control); 64 TiB of 16 MiB chunks is a 64 MiB reply.
//    The hashing runs under the connection's lock: an Invalidate of that
//    grant waits for it, as TcpFabric's waits for an operation in flight.
//  - Windows are released (invalidated or deallocated) before their QP is
//    destroyed and before the region is deregistered (rxe blocks ~51 s
//    destroying a QP with a bound window; ibv_dereg_mr refuses while one is
//    bound).
//
// Holder side (VerbsConnector, in libdaxlease and the migration target):
// Read and Write are RDMA READ/WRITE through a registered bounce buffer (up
// to 4 ops of 1 MiB in flight); Persist is a read-after-write: an RDMA READ
// on the same QP returns only after every earlier WRITE of that QP was
// placed in the owner's memory (devdax: the media itself; the RDMA FLUSH
// verb, where a device offers it, would also cover caches). A completion
// with an error drops the connection; the next call reconnects with the same
// grant, so a QP in the error state is never left wedged. Completions are
// polled (no system call; a small op spins, a large one sleeps between polls
// in poll(2) on the rdma_cm channel); the channel is looked at before an op
// only after the connection was idle (20 ms), not before every op. Digests
// is one request and its reply (above); an owner that does not answer in
// time (30 s + 1 s per 64 MiB hashed) or disconnects gives UNAVAILABLE and
// the connection is dropped (the next call reconnects).
//
// Endpoints are "verbs://<ipv4>:<port>"; rdma_cm binds the RDMA device by
// that address (rxe0 over the NIC carrying it), so the listen address must
// be a real interface address, not 0.0.0.0.
//
// Thread safety: every method may be called from any thread.
#ifndef DAXLEASE_NODE_AGENT_FABRIC_VERBS_FABRIC_H_
#define DAXLEASE_NODE_AGENT_FABRIC_VERBS_FABRIC_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "node-agent/fabric/fabric.h"
#include "node-agent/fabric/tcp_fabric.h"
#include "node-agent/fabric/window.h"

namespace daxlease::fabric {

struct VerbsFabricOptions {
  // "ip:port" to listen on: ip an address of the RDMA device's interface;
  // port 0 picks one (see endpoint()).
  std::string listen;
  // "ip:port" holders are told; empty: the listen address and bound port.
  std::string advertise;
  // The agents' shared secret for grant credentials.
  std::string secret;
  // Memory windows allocated ahead of time.
  size_t window_pool = 16;
};

// Bind and invalidate timings, for the lab's figures.
struct VerbsFabricStats {
  int64_t binds = 0;
  int64_t invalidates = 0;
  absl::Duration bind_total;
  absl::Duration invalidate_total;
  size_t pooled_windows = 0;
  size_t pool_misses = 0;
  int connections = 0;
};

class VerbsFabric final : public Fabric {
 public:
  // Opens the RDMA device behind options.listen, allocates the protection
  // domain and the window pool, and starts accepting. UNAVAILABLE when the
  // machine has no RDMA (no rdma_cm, or no device on that address).
  static absl::StatusOr<std::unique_ptr<VerbsFabric>> Start(
      VerbsFabricOptions options);
  // Stops accepting, revokes every window, disconnects and joins.
  ~VerbsFabric() override;

  // "verbs://ip:port".
  std::string endpoint() const { return endpoint_; }

  absl::Status RegisterVolume(Region region) override;
  absl::Status DeregisterVolume(const std::string& volume) override;
  absl::StatusOr<GrantInfo> Grant(const GrantKey& key, Access access) override;
  absl::StatusOr<bool> Invalidate(const GrantKey& key) override;
  absl::StatusOr<int> InvalidateBefore(const std::string& volume,
                                       int64_t epoch) override;
  // OK only where the device offers on-demand paging (ODP).
  absl::Status CanShareFsdax() const override;

  VerbsFabricStats stats() const;

  struct Device;
  struct Conn;
  struct GrantState;
  struct Volume;

 private:
  VerbsFabric(VerbsFabricOptions options, std::unique_ptr<Device> device,
              std::string endpoint);
  void AcceptLoop();
  void Serve(const std::shared_ptr<Conn>& conn);
  absl::Status Handshake(const std::shared_ptr<Conn>& conn);
  // Answers the requests that arrived on the connection (its CQ, polled).
  void ServeRequests(Conn& c);
  // One request's answer: checks, Region::digests, one SEND.
  // REQUIRES: c.mu held.
  absl::Status AnswerRequest(Conn& c, absl::string_view bytes);
  // Revokes the window of `conn` (exactly once, whoever asks first); true
  // when it was live.
  bool RevokeOne(Conn& conn);
  // RevokeOne for each; true when any was live.
  bool RevokeConns(const std::vector<std::shared_ptr<Conn>>& conns);

  const VerbsFabricOptions options_;
  const std::unique_ptr<Device> device_;  // channel, listener, PD
  const std::string endpoint_;
  WindowPool pool_;
  std::atomic<bool> stopping_{false};
  std::thread accept_thread_;

  mutable absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<Volume>> volumes_ ABSL_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<Conn>> conns_ ABSL_GUARDED_BY(mu_);
  VerbsFabricStats stats_ ABSL_GUARDED_BY(mu_);
};

// Holder side of VerbsFabric.
class VerbsConnector final : public FabricConnector {
 public:
  absl::StatusOr<std::unique_ptr<RemoteRegion>> Connect(
      const GrantInfo& grant) override;
};

// Either fabric, by the grant's endpoint: verbs:// over VerbsConnector, the
// rest over TcpConnector. What libdaxlease and the agent use.
class AnyConnector final : public FabricConnector {
 public:
  absl::StatusOr<std::unique_ptr<RemoteRegion>> Connect(
      const GrantInfo& grant) override;

 private:
  TcpConnector tcp_;
  VerbsConnector verbs_;
};

// ---- exposed for tests ----------------------------------------------------

// "verbs://ip:port" -> (ip, port).
absl::StatusOr<std::pair<std::string, uint16_t>> ParseVerbsEndpoint(
    absl::string_view endpoint);

// The owner's answer to a FabricHello, one SEND after the window is bound.
struct VerbsHelloReply {
  int32_t code = 0;  // absl::StatusCode; 0 = OK
  std::string message;
  uint64_t size_bytes = 0;
  uint64_t addr = 0;  // the region's address in the owner
  uint32_t rkey = 0;  // the holder's window
  // kVerbsFeature* bits: after the message, absent (0) in the reply of an
  // owner of an earlier version (whose holders ignore what follows it).
  uint32_t features = 0;
};
// The owner answers requests (VerbsRequest) after the handshake.
inline constexpr uint32_t kVerbsFeatureRequests = 1;
std::string EncodeHelloReply(const VerbsHelloReply& reply);
absl::StatusOr<VerbsHelloReply> DecodeHelloReply(absl::string_view bytes);

// A holder's request after the handshake: one SEND, little-endian.
inline constexpr uint32_t kVerbsRequestVersion = 1;
inline constexpr uint32_t kVerbsOpDigests = 1;  // RemoteRegion::Digests
struct VerbsRequest {
  uint32_t version = kVerbsRequestVersion;
  uint32_t op = kVerbsOpDigests;
  uint64_t offset = 0;
  uint64_t length = 0;
  uint64_t chunk = 0;
  // Bytes the holder's receive for the reply holds (VerbsReplyBytes).
  uint64_t reply_capacity = 0;
};
std::string EncodeVerbsRequest(const VerbsRequest& request);
// DATA_LOSS when malformed (any version and op decode: the owner answers
// an unknown one UNIMPLEMENTED).
absl::StatusOr<VerbsRequest> DecodeVerbsRequest(absl::string_view bytes);

// The owner's answer to a request: one SEND.
struct VerbsReply {
  int32_t code = 0;     // absl::StatusCode; 0 = OK
  std::string message;  // at most kVerbsReplyMessageBytes
  std::string payload;  // DIGESTS: kDigestBytes per chunk
};
inline constexpr size_t kVerbsReplyMessageBytes = 1024;
std::string EncodeVerbsReply(const VerbsReply& reply);
absl::StatusOr<VerbsReply> DecodeVerbsReply(absl::string_view bytes);
// The receive a reply of `payload_bytes` (or an error message) fits in.
uint64_t VerbsReplyBytes(uint64_t payload_bytes);

// Why a volume cannot be registered: `pinned` is the status of the pinned
// registration (FAILED_PRECONDITION for EOPNOTSUPP), `odp` whether the
// device offers on-demand paging.
absl::Status RegistrationRefusal(const std::string& volume,
                                 const std::string& device,
                                 const absl::Status& pinned, bool odp);

}  // namespace daxlease::fabric

#endif  // DAXLEASE_NODE_AGENT_FABRIC_VERBS_FABRIC_H_
