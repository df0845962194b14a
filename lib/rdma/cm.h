// Owning C++ types for the RDMA connection manager (librdmacm): an event
// channel, a connection id, and the queue pair created on an id.
//
// The calls are synchronous: each step (resolve, connect, accept, wait for a
// request) waits on the channel for the one event it expects, with a
// timeout, and turns anything else (REJECTED, UNREACHABLE, ...) into an
// error. That suits the node agent's one-connection-per-peer use; a server
// with many concurrent connections would dispatch events instead.
//
// Ownership and order: an EventChannel must outlive every CmId created on it
// (including ids handed out by Listen/WaitForRequest). A CmQueuePair must be
// destroyed before the ProtectionDomain it was created with, and before its
// CmId; declare them in the order id, pd, cq, qp, mr. Not thread-safe.
//
// Addresses are IPv4 dotted quads (the lab's Soft-RoCE links are IPv4).
// <rdma/rdma_cma.h> is included only by cm.cc.
#ifndef DAXLEASE_LIB_RDMA_CM_H_
#define DAXLEASE_LIB_RDMA_CM_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "lib/rdma/verbs.h"

struct rdma_event_channel;
struct rdma_cm_id;

namespace daxlease::rdma {

class CmId;

// An rdma_cm event channel (a file descriptor the kernel posts events to).
class EventChannel {
 public:
  static absl::StatusOr<EventChannel> Create();

  EventChannel(EventChannel&& other) noexcept = default;
  EventChannel& operator=(EventChannel&& other) noexcept = default;
  EventChannel(const EventChannel&) = delete;
  EventChannel& operator=(const EventChannel&) = delete;
  ~EventChannel() = default;

  rdma_event_channel* get() const { return ch_.get(); }
  // The channel's file descriptor: readable when an event is waiting.
  int fd() const;

 private:
  explicit EventChannel(rdma_event_channel* ch) : ch_(ch) {}
  struct Deleter {
    void operator()(rdma_event_channel* p) const;
  };
  std::unique_ptr<rdma_event_channel, Deleter> ch_;
};

// A connection request received by a listening id: the new id (owned) and
// the private data the peer sent with rdma_connect.
struct ConnectRequest;

// An rdma_cm id (RDMA_PS_TCP, i.e. reliable connected).
class CmId {
 public:
  static absl::StatusOr<CmId> Create(EventChannel& channel);

  CmId(CmId&& other) noexcept = default;
  CmId& operator=(CmId&& other) noexcept = default;
  CmId(const CmId&) = delete;
  CmId& operator=(const CmId&) = delete;
  // Destroys the id (a connected id should be disconnected first).
  ~CmId() = default;

  rdma_cm_id* get() const { return id_.get(); }
  // The verbs context the id is bound to; null before address resolution (or
  // on a listener bound to the wildcard address).
  ibv_context* verbs() const;

  // Server side: bind to ip:port (ip may be "0.0.0.0") and listen.
  absl::Status Listen(absl::string_view ip, uint16_t port, int backlog);
  // Waits for the next connection request on this listening id.
  absl::StatusOr<ConnectRequest> WaitForRequest(absl::Duration timeout);
  // Accepts a request (this id came from WaitForRequest; its QP must exist),
  // sending `private_data` (at most 196 bytes) and waiting for ESTABLISHED.
  absl::Status Accept(absl::string_view private_data, absl::Duration timeout);

  // Client side: resolve the address and route to ip:port.
  absl::Status Resolve(absl::string_view ip, uint16_t port,
                       absl::Duration timeout);
  // Connects (the QP must exist), sending `private_data` (at most 56 bytes);
  // returns the private data of the peer's accept.
  absl::StatusOr<std::string> Connect(absl::string_view private_data,
                                      absl::Duration timeout);

  // Starts a disconnect; idempotent. Does not wait for the DISCONNECTED event.
  absl::Status Disconnect();
  // Waits for the peer's (or our own) disconnect to complete.
  absl::Status WaitForDisconnect(absl::Duration timeout);

  // Moves the id's events to `channel` (rdma_migrate_id), so a server can
  // wait on each accepted connection apart from its listener. `channel`
  // must outlive the id.
  absl::Status MigrateTo(EventChannel& channel);
  // The port the id is bound to (after Listen with port 0).
  uint16_t LocalPort() const;

 private:
  friend class CmQueuePair;
  CmId(rdma_cm_id* id, rdma_event_channel* ch) : id_(id), ch_(ch) {}
  struct Deleter {
    void operator()(rdma_cm_id* p) const;  // rdma_destroy_id
  };
  std::unique_ptr<rdma_cm_id, Deleter> id_;
  rdma_event_channel* ch_ = nullptr;
  bool disconnected_ = false;
};

struct ConnectRequest {
  CmId id;
  std::string private_data;
};

// The RC queue pair of a CmId (rdma_create_qp / rdma_destroy_qp), with its
// send and receive completions on `cq`. The id, PD and CQ must outlive it.
class CmQueuePair {
 public:
  static absl::StatusOr<CmQueuePair> Create(CmId& id,
                                            const ProtectionDomain& pd,
                                            const CompletionQueue& cq,
                                            const QueuePairCaps& caps);

  CmQueuePair(CmQueuePair&& other) noexcept = default;
  CmQueuePair& operator=(CmQueuePair&& other) noexcept = default;
  CmQueuePair(const CmQueuePair&) = delete;
  CmQueuePair& operator=(const CmQueuePair&) = delete;
  ~CmQueuePair() = default;

  ibv_qp* get() const;
  QueuePairOps ops() const { return QueuePairOps(get()); }

 private:
  explicit CmQueuePair(rdma_cm_id* id) : id_(id) {}
  // Owns the QP of an id it does not own: the deleter is rdma_destroy_qp.
  struct Deleter {
    void operator()(rdma_cm_id* p) const;
  };
  std::unique_ptr<rdma_cm_id, Deleter> id_;
};

}  // namespace daxlease::rdma

#endif  // DAXLEASE_LIB_RDMA_CM_H_
