// Volume: the implementation behind a daxlease_volume handle (the C API in
// include/daxlease.h is a thin shell over it).
//
// States: Waiting (not granted: calls are held), Granted (calls run),
// Recalling (new calls are held while the recall thread drains, flushes,
// drops the mapping and acks), Revoked (every call fails, sticky). The
// session thread follows the agent's event stream (OpenSession) and
// reconnects when the agent restarts; data goes straight to the owner
// (remote, through a FabricConnector) or to a local mapping (owner node).
//
// Thread-safe.
#ifndef DAXLEASE_CLIENT_VOLUME_H_
#define DAXLEASE_CLIENT_VOLUME_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "node-agent/fabric/fabric.h"
#include "proto/agent.pb.h"

namespace daxlease::client {

namespace pb = ::daxlease::agent::v1;

// Byte ranges written but not yet persisted.
class DirtyRanges {
 public:
  void Add(uint64_t offset, uint64_t len);
  void Remove(uint64_t offset, uint64_t len);
  void Clear() { ranges_.clear(); }
  uint64_t Total() const;
  // [first dirty byte, last dirty byte + 1), or {0, 0} when clean: what a
  // flush of everything written must make durable.
  std::pair<uint64_t, uint64_t> Span() const;

 private:
  std::map<uint64_t, uint64_t> ranges_;  // start -> end (exclusive), disjoint
};

// What the published directory's descriptor says.
struct Descriptor {
  std::string volume;
  std::string lease;
  std::string attach_token;
  std::string node;
  std::string owner_node;
  bool owner_local = false;
  bool read_only = false;
  std::string agent_socket;  // resolved: <dir>/agent.sock, else the field
};
absl::StatusOr<Descriptor> ReadDescriptor(const std::string& dir);

struct AttachOptions {
  absl::Duration timeout = absl::Seconds(30);  // InfiniteDuration: forever
  bool read_only = false;
};

class Volume {
 public:
  using PreflushHook = std::function<void()>;

  // `connector` is the remote data path (TcpConnector in production).
  static absl::StatusOr<std::unique_ptr<Volume>> Attach(
      const std::string& dir, const AttachOptions& opts,
      std::unique_ptr<fabric::FabricConnector> connector);
  ~Volume();  // Detach() if not done

  // Persists, releases, stops the session. Returns the first error.
  absl::Status Detach();

  uint64_t size() const { return size_.load(); }
  int64_t epoch() const;
  bool is_local() const;

  // Errors: PermissionDenied = revoked (message says so), OutOfRange,
  // FailedPrecondition = read-only, Unavailable/Internal = I/O.
  absl::Status Read(uint64_t offset, char* buf, size_t len);
  absl::Status Write(uint64_t offset, const char* buf, size_t len);
  // `epoch` (when not null) gets, on OK, the epoch of the grant the range
  // was made durable under (a recall waits for the call to finish).
  absl::Status Persist(uint64_t offset, size_t len, int64_t* epoch = nullptr);
  uint64_t Unpersisted() const;
  absl::StatusOr<std::pair<char*, size_t>> DirectAcquire();
  absl::Status DirectRelease();
  void SetPreflushHook(PreflushHook hook);

  bool revoked() const;

 private:
  enum class Phase { kWaiting, kGranted, kRecalling, kRevoked, kClosed };
  Volume(std::string dir, Descriptor d, AttachOptions opts,
         std::unique_ptr<fabric::FabricConnector> connector);

  // Enters an operation: waits while not granted; counts it in flight.
  absl::Status Enter(std::unique_lock<std::mutex>& l);
  void Leave();
  void LeaveLocked();
  // Revoked from now on (sticky): every call fails, the access goes once no
  // call uses it. No-op when revoked or closed.
  void RevokeLocked(std::string why);
  absl::Status CheckRange(uint64_t offset, uint64_t len) const;
  absl::Status Install(const pb::Grant& g);  // map or connect
  void DropAccess();                         // unmap / disconnect (mu_ held)
  absl::Status PersistAllLocked();
  void HandleEvent(const pb::SessionEvent& ev);
  void Recall(const pb::SessionEvent& ev);
  void Revoke(const pb::SessionEvent& ev);
  void SessionLoop();
  void EventLoop();
  // Runs `op` on `r` (remote_ as read when the call entered), reconnecting
  // with the grant when the connection was lost.
  absl::Status RemoteCall(
      std::shared_ptr<fabric::RemoteRegion> r,
      absl::FunctionRef<absl::Status(fabric::RemoteRegion&)> op);

  const std::string dir_;
  const Descriptor desc_;
  const AttachOptions opts_;
  std::unique_ptr<fabric::FabricConnector> connector_;
  struct Rpc;
  std::unique_ptr<Rpc> rpc_;

  mutable std::mutex mu_;
  // Phase changes and calls draining (inflight_, direct_holds_): what
  // Attach, Enter, a recall and Detach wait for. Every call's Leave
  // notifies it, so nothing that waits for other things waits on it.
  std::condition_variable cv_;
  // events_ and stopping_: what the event thread waits for (on cv_ it would
  // be woken by every call's Leave: a context switch per remote read).
  std::condition_variable events_cv_;
  Phase phase_ = Phase::kWaiting;
  std::string status_message_;  // why waiting / revoked
  int inflight_ = 0;
  int direct_holds_ = 0;
  std::thread::id hook_thread_;  // ops from the pre-flush hook pass through
  PreflushHook hook_;
  std::optional<pb::Grant> grant_;
  std::string session_id_;
  std::atomic<uint64_t> size_{0};
  // Remote: one connection, used under remote_mu_ (RemoteRegion serializes).
  std::shared_ptr<fabric::RemoteRegion> remote_;
  // Local: the mapping.
  char* base_ = nullptr;
  uint64_t mapped_ = 0;
  int map_fd_ = -1;
  DirtyRanges dirty_;  // once revoked: the bytes lost
  bool stopping_ = false;
  absl::Status session_error_;           // OpenSession refused before any event
  bool agent_unreachable_ = false;       // never reached the agent so far
  std::deque<pb::SessionEvent> events_;  // read, not yet handled
  std::thread session_thread_;
  std::thread event_thread_;
  int socket_dir_fd_ = -1;  // O_PATH; see SocketAddress in volume.cc
};

}  // namespace daxlease::client

#endif  // DAXLEASE_CLIENT_VOLUME_H_
