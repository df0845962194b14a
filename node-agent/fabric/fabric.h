// Fabric: how remote holders reach an owner's volume memory (DESIGN 4.3).
//
// Two halves:
//  - Fabric (owner side, in daxlease-agent): a volume's mapping is
//    registered once; each holder gets one grant per (lease, epoch); a grant
//    is invalidated exactly once, after which no operation through it
//    completes. TcpFabric implements it now; a verbs fabric fits the same
//    shape: RegisterVolume = one ibv_reg_mr with MW_BIND access; Grant = bind
//    a type-2 memory window over the region, credential = its rkey (plus the
//    QP the holder connected on); Invalidate = IBV_WR_LOCAL_INV of that
//    window, waited for; DeregisterVolume = ibv_dereg_mr once no window is
//    bound.
//  - FabricConnector / RemoteRegion (holder side, in libdaxlease): connect
//    with a grant, then one-sided-style Read, Write and Persist. Persist
//    returns once the owner has made the written range durable (msync, or
//    nothing more than the write itself with MAP_SYNC + a CPU flush).
//
// Thread safety: every method of every implementation may be called from
// any thread.
#ifndef DAXLEASE_NODE_AGENT_FABRIC_FABRIC_H_
#define DAXLEASE_NODE_AGENT_FABRIC_FABRIC_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace daxlease::fabric {

enum class Access { kReadOnly, kReadWrite };

// The identity of one grant: a lease at one epoch. Grants of the same lease
// at different epochs are different grants.
struct GrantKey {
  std::string volume;
  std::string lease_uid;
  std::string holder_node;
  int64_t epoch = 0;

  friend bool operator==(const GrantKey&, const GrantKey&) = default;
  friend auto operator<=>(const GrantKey&, const GrantKey&) = default;
  std::string DebugString() const;
};

// The credential of a grant: HMAC-SHA256 over the key and access with the
// agents' shared secret (docs/agent.md). Both the owner (who verifies) and
// the holder's agent (who hands it to its client) compute it; nobody without
// the secret can make one, and one for another lease, node, epoch or access
// does not match.
std::string GrantCredential(const std::string& secret, const GrantKey& key,
                            Access access);

// The fabric an owner's endpoint belongs to: "verbs" for verbs://ip:port
// (VerbsFabric), else "tcp" (TcpFabric's host:port).
std::string FabricOf(const std::string& endpoint);

// What a holder needs to use a grant; travels owner agent -> holder agent ->
// client (the Grant message of proto/agent.proto).
struct GrantInfo {
  GrantKey key;
  Access access = Access::kReadOnly;
  std::string fabric;      // FabricOf(endpoint): "tcp" or "verbs"
  std::string endpoint;    // where the owner listens for this fabric
  std::string credential;  // the HMAC token (verbs: presented at the
                           // handshake, which returns the window's rkey)
  uint64_t size_bytes = 0;
};

// The owner's mapping of one volume, as the fabric sees it. Owned by the
// caller; must stay mapped until DeregisterVolume returns.
struct Region {
  std::string volume;
  char* base = nullptr;
  uint64_t length = 0;
  // Makes [offset, offset+len) durable (msync, or a CPU flush with
  // MAP_SYNC). Called by the fabric for a holder's Persist.
  std::function<absl::Status(uint64_t offset, uint64_t len)> persist;
  // The digests of the chunks of [offset, offset+len), `chunk` bytes each
  // (the last may be shorter), kDigestBytes each, in order, of what the
  // mapping holds now. Called by the fabric for a holder's Digests (a
  // migration's target, inside the pause). Empty: not offered
  // (Unimplemented); the callee refuses a chunk size it does not hash in.
  std::function<absl::StatusOr<std::string>(uint64_t offset, uint64_t len,
                                            uint64_t chunk)>
      digests;
};

// Bytes of one chunk digest (agent/checksum.h's XXH3-128).
inline constexpr uint64_t kDigestBytes = 16;

class Fabric {
 public:
  virtual ~Fabric() = default;

  // Registers `region` for remote access. Once per volume: AlreadyExists
  // when the volume is registered (DeregisterVolume first to remap).
  virtual absl::Status RegisterVolume(Region region) = 0;

  // Invalidates every grant of the volume and forgets the region; after it
  // returns no operation touches the memory. OK when not registered.
  virtual absl::Status DeregisterVolume(const std::string& volume) = 0;

  // Gives the holder of `key` access. Idempotent: the same key returns the
  // same grant while it is live. FailedPrecondition when the volume is not
  // registered; PermissionDenied when `key` was invalidated before (a
  // revoked grant never comes back: the caller must use a new epoch or
  // lease). Access is checked by the caller (the lease must be Granted to
  // that node at that epoch) before it asks.
  virtual absl::StatusOr<GrantInfo> Grant(const GrantKey& key,
                                          Access access) = 0;

  // Cuts the grant: waits for operations already executing through it,
  // fails every later one (a late write never lands), and closes the
  // holder's connection. Returns true the one time it invalidated a live
  // grant, false when there was nothing live under `key` (never granted, or
  // already invalidated). The key stays remembered as invalidated until the
  // volume is deregistered.
  virtual absl::StatusOr<bool> Invalidate(const GrantKey& key) = 0;

  // Invalidates every live grant of `volume` whose epoch is below `epoch`,
  // and from then on refuses any grant or connection at an epoch below it
  // (PermissionDenied, "stale epoch"), granted before or not. Returns how
  // many it invalidated.
  virtual absl::StatusOr<int> InvalidateBefore(const std::string& volume,
                                               int64_t epoch) = 0;

  // Whether this fabric can share fsdax volumes (a mapping of a file on a
  // DAX filesystem): OK, or FailedPrecondition naming why not (RDMA verbs
  // without on-demand paging: the kernel does not pin DAX file pages).
  virtual absl::Status CanShareFsdax() const { return absl::OkStatus(); }
};

// One connected grant, holder side. Operations are synchronous; offsets are
// relative to the start of the volume. After the owner invalidates the
// grant every call fails with PermissionDenied ("revoked"); a lost
// connection gives Unavailable.
class RemoteRegion {
 public:
  virtual ~RemoteRegion() = default;
  virtual uint64_t size() const = 0;
  virtual absl::Status Read(uint64_t offset, absl::Span<char> out) = 0;
  virtual absl::Status Write(uint64_t offset, absl::Span<const char> data) = 0;
  // Durable on the owner once this returns OK.
  virtual absl::Status Persist(uint64_t offset, uint64_t len) = 0;

  // A bulk read (the migration's copy): [offset, offset + len) in pieces of
  // at most buf.size() bytes, each received into `buf` and handed to
  // `landed` (its offset and bytes) before the next is received. The pieces'
  // requests may be outstanding together, so the owner streams while the
  // caller consumes (TCP: pipelined on the connection, at most
  // kReadStreamWindow bytes ahead; without that a piece waits a round trip
  // and the owner waits for the caller's work on the previous one). A
  // status other than OK from `landed` ends the read with that status.
  // After any error the region may not be usable again (the caller
  // reconnects); the pieces handed to `landed` before it are the ones read.
  // The default reads piece by piece with Read.
  using Landed =
      std::function<absl::Status(uint64_t offset, absl::Span<const char>)>;
  static constexpr uint64_t kReadStreamWindow = uint64_t{16} << 20;
  virtual absl::Status ReadStream(uint64_t offset, uint64_t len,
                                  absl::Span<char> buf, const Landed& landed);

  // The owner's digests of the `chunk`-byte chunks of [offset, offset+len)
  // as its mapping holds them now (Region::digests): kDigestBytes per chunk,
  // in order. A migration's target asks inside the pause and reads again
  // only the chunks whose digests differ from its pre-copy's. `offset` is a
  // multiple of `chunk`. Unimplemented where the owner does not offer it
  // (a Region without `digests`; a verbs owner of an earlier version, whose
  // hello reply says so); a TCP owner of an earlier version closes the
  // connection (Unavailable); the caller then reads everything. A revoked
  // grant is refused (PermissionDenied) as its reads are.
  virtual absl::StatusOr<std::string> Digests(uint64_t offset, uint64_t len,
                                              uint64_t chunk);
};

class FabricConnector {
 public:
  virtual ~FabricConnector() = default;
  // Connects to grant.endpoint and presents the grant. PermissionDenied when
  // the owner refuses the credential (wrong lease, node or epoch, or
  // revoked); Unavailable when unreachable.
  virtual absl::StatusOr<std::unique_ptr<RemoteRegion>> Connect(
      const GrantInfo& grant) = 0;
};

}  // namespace daxlease::fabric

#endif  // DAXLEASE_NODE_AGENT_FABRIC_FABRIC_H_
