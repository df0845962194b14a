// Owning C++ types for the RDMA verbs objects the node agent builds on:
// device context, protection domain, memory region, memory window,
// completion queue and queue pair, plus the work requests the lease protocol
// needs (RDMA WRITE/READ, SEND/RECV, memory-window bind and local invalidate).
//
// Each type owns exactly one verbs object, is move-only, and releases it in
// its destructor (moves and destructor are defaulted around a member
// std::unique_ptr whose private Deleter, defined in the .cc, makes the
// release call, logging a refusal where noted; a moved-from object holds
// nothing). Destruction order is the caller's job and mirrors verbs itself:
// windows before their QP and MR, MRs/QPs/CQs before their PD, the PD before
// its context (members declared in acquisition order do this).
//
// <infiniband/verbs.h> is included only by verbs.cc; the C structs are
// forward-declared so callers that need the raw handle (e.g. rdma_cm) can
// have it without the C header.
//
// Thread safety: objects are not internally synchronised; verbs itself allows
// posting and polling from different threads on different objects.
#ifndef DAXLEASE_LIB_RDMA_VERBS_H_
#define DAXLEASE_LIB_RDMA_VERBS_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

struct ibv_context;
struct ibv_pd;
struct ibv_mr;
struct ibv_mw;
struct ibv_cq;
struct ibv_comp_channel;
struct ibv_qp_init_attr;
struct ibv_qp;

namespace daxlease::rdma {

// Access rights of a registration or window (a subset of IBV_ACCESS_*,
// spelled independently of the C header).
enum Access : unsigned {
  kLocalWrite = 1u << 0,
  kRemoteWrite = 1u << 1,
  kRemoteRead = 1u << 2,
  kMwBind = 1u << 3,
  kOnDemand = 1u << 4,  // IBV_ACCESS_ON_DEMAND (ODP): no long-term pin
};

// Whether the device can register memory on demand (ODP) for RDMA READ and
// WRITE on reliable-connected queue pairs: what a registration of an fsdax
// mapping needs, since the kernel refuses to pin DAX file pages long-term.
absl::StatusOr<bool> SupportsOnDemandPaging(ibv_context* ctx);

// The pieces (address, length) of [addr, addr+length) that ibv_advise_mr
// is asked about, one scatter entry each: an entry's length is 32 bits, so
// no piece is longer than `max_piece`.
std::vector<std::pair<uint64_t, uint32_t>> PrefetchPieces(
    uint64_t addr, uint64_t length, uint32_t max_piece = 1u << 30);

// The name of the device behind `ctx` (e.g. "rxe0").
std::string DeviceNameOf(ibv_context* ctx);

// Names of the RDMA devices present (e.g. "rxe0"); empty when there are none
// (including when the kernel has no RDMA support at all).
absl::StatusOr<std::vector<std::string>> ListDevices();

// An opened RDMA device (ibv_context).
class Device {
 public:
  // Opens the device called `name`, or the first one when `name` is empty.
  // NOT_FOUND when no such device exists.
  static absl::StatusOr<Device> Open(absl::string_view name);

  Device(Device&& other) noexcept = default;
  Device& operator=(Device&& other) noexcept = default;
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;
  ~Device() = default;

  ibv_context* get() const { return ctx_.get(); }
  const std::string& name() const { return name_; }

 private:
  Device(ibv_context* ctx, std::string name)
      : ctx_(ctx), name_(std::move(name)) {}
  struct Deleter {
    void operator()(ibv_context* p) const;
  };
  std::unique_ptr<ibv_context, Deleter> ctx_;
  std::string name_;
};

// A protection domain on a context it does not own (from Device::get() or an
// rdma_cm id); the context must outlive it.
class ProtectionDomain {
 public:
  static absl::StatusOr<ProtectionDomain> Allocate(ibv_context* ctx);

  ProtectionDomain(ProtectionDomain&& other) noexcept = default;
  ProtectionDomain& operator=(ProtectionDomain&& other) noexcept = default;
  ProtectionDomain(const ProtectionDomain&) = delete;
  ProtectionDomain& operator=(const ProtectionDomain&) = delete;
  ~ProtectionDomain() = default;

  ibv_pd* get() const { return pd_.get(); }

 private:
  explicit ProtectionDomain(ibv_pd* pd) : pd_(pd) {}
  struct Deleter {
    void operator()(ibv_pd* p) const;
  };
  std::unique_ptr<ibv_pd, Deleter> pd_;
};

// A pinned memory registration of [addr, addr+length). The memory must stay
// mapped for the registration's lifetime.
class MemoryRegion {
 public:
  // Registers the range with `access` (bits of Access). Failure keeps errno in
  // the message; a mapping the kernel refuses to pin long-term (a file on
  // fsdax: EOPNOTSUPP) is FAILED_PRECONDITION, so callers can tell "this
  // memory cannot be pinned" from resource or argument errors.
  static absl::StatusOr<MemoryRegion> Register(const ProtectionDomain& pd,
                                               void* addr, size_t length,
                                               unsigned access);

  MemoryRegion(MemoryRegion&& other) noexcept = default;
  MemoryRegion& operator=(MemoryRegion&& other) noexcept = default;
  MemoryRegion(const MemoryRegion&) = delete;
  MemoryRegion& operator=(const MemoryRegion&) = delete;
  // Deregisters. Verbs refuses (EINVAL) while a window is bound to the MR:
  // deallocate windows first; a refused deregistration is logged.
  ~MemoryRegion() = default;

  // Asks the device to map the whole registration now, for remote writes
  // (ibv_advise_mr, PREFETCH_WRITE), so the first RDMA accesses to an
  // on-demand (ODP) registration do not each wait on a page fault.
  // Asynchronous (it returns before the pages are mapped) and advisory: an
  // error (EOPNOTSUPP where the device has no advise_mr) changes nothing
  // but the first accesses' latency.
  absl::Status Prefetch() const;

  ibv_mr* get() const { return mr_.get(); }
  uint32_t lkey() const;
  uint32_t rkey() const;
  void* addr() const;
  size_t length() const;

 private:
  explicit MemoryRegion(ibv_mr* mr) : mr_(mr) {}
  struct Deleter {
    void operator()(ibv_mr* p) const;
  };
  std::unique_ptr<ibv_mr, Deleter> mr_;
};

// A type-2 memory window. Bound and invalidated through QueuePair work
// requests (PostBindWindow / PostLocalInvalidate). rkey() is the key of the
// last bind posted through PostBindWindow (verbs does not update it itself).
class MemoryWindow {
 public:
  static absl::StatusOr<MemoryWindow> Allocate(const ProtectionDomain& pd);

  MemoryWindow(MemoryWindow&& other) noexcept = default;
  MemoryWindow& operator=(MemoryWindow&& other) noexcept = default;
  MemoryWindow(const MemoryWindow&) = delete;
  MemoryWindow& operator=(const MemoryWindow&) = delete;
  // Deallocating also revokes the window's current rkey.
  ~MemoryWindow() = default;

  ibv_mw* get() const { return mw_.get(); }
  uint32_t rkey() const;

 private:
  friend class QueuePairOps;
  explicit MemoryWindow(ibv_mw* mw) : mw_(mw) {}
  struct Deleter {
    void operator()(ibv_mw* p) const;
  };
  std::unique_ptr<ibv_mw, Deleter> mw_;
};

// One completed work request.
struct WorkCompletion {
  uint64_t wr_id = 0;
  int status = 0;  // 0 = success, else the IBV_WC_* status
  std::string status_text;
  uint32_t byte_len = 0;
  bool ok() const { return status == 0; }
};

// A completion queue on a context it does not own, optionally with its own
// completion channel (a file descriptor the kernel makes readable when a
// completion arrives on the armed CQ), so a waiter can sleep in the kernel
// instead of polling: on a one-CPU machine whose RDMA device is software
// (rxe: the kernel places every packet), a poller takes the CPU the
// completion needs.
class CompletionQueue {
 public:
  // A CQ without a channel: Wait polls, with 50 us sleeps.
  static absl::StatusOr<CompletionQueue> Create(ibv_context* ctx, int entries);
  // A CQ with a completion channel of its own (ibv_create_comp_channel, its
  // descriptor non-blocking), destroyed with it: Wait and Await sleep in
  // poll(2) on the channel.
  static absl::StatusOr<CompletionQueue> CreateWithChannel(ibv_context* ctx,
                                                           int entries);

  CompletionQueue(CompletionQueue&& other) noexcept = default;
  CompletionQueue& operator=(CompletionQueue&& other) noexcept = default;
  CompletionQueue(const CompletionQueue&) = delete;
  CompletionQueue& operator=(const CompletionQueue&) = delete;
  ~CompletionQueue() = default;

  ibv_cq* get() const { return cq_.get(); }

  // One completion if there is one now.
  absl::StatusOr<std::optional<WorkCompletion>> Poll();
  // Waits until a completion arrives; DEADLINE_EXCEEDED after `timeout`.
  // A completion with an error status is returned as a value, not an error.
  // With a channel it sleeps in the kernel (Await with no spin); without
  // one it polls.
  absl::StatusOr<WorkCompletion> Wait(absl::Duration timeout);

  // The completion channel's descriptor, -1 without one. Readable once a
  // completion arrived after Arm (then take the event: TakeEvents).
  int channel_fd() const;
  // Asks for an event on the channel at the next completion
  // (ibv_req_notify_cq, any completion, not only solicited ones). One arm
  // gives at most one event. A completion already queued raises none: poll
  // after arming. FAILED_PRECONDITION without a channel.
  absl::Status Arm();
  // Takes and acknowledges every event waiting on the channel
  // (ibv_get_cq_event + ibv_ack_cq_events, never blocking); how many.
  absl::StatusOr<int> TakeEvents();
  // The next completion, waiting until `deadline`: polls for up to `spin`,
  // then arms, polls once more (a completion that came before the arm
  // raises no event) and sleeps in poll(2) on the channel and on `wake_fd`
  // (when >= 0), taking the channel's events and polling again each time
  // it wakes. std::nullopt when `wake_fd` is readable (it is not read: the
  // caller looks at it); DEADLINE_EXCEEDED at the deadline.
  // FAILED_PRECONDITION without a channel.
  absl::StatusOr<std::optional<WorkCompletion>> Await(absl::Time deadline,
                                                      absl::Duration spin,
                                                      int wake_fd = -1);

 private:
  explicit CompletionQueue(ibv_cq* cq) : cq_(cq) {}
  // Destroys the CQ, then the completion channel it was created with (if
  // any: a channel here is always the CQ's own).
  struct Deleter {
    void operator()(ibv_cq* p) const;
  };
  std::unique_ptr<ibv_cq, Deleter> cq_;
};

// Queue-pair sizes.
struct QueuePairCaps {
  uint32_t max_send_wr = 16;
  uint32_t max_recv_wr = 16;
  uint32_t max_send_sge = 1;
  uint32_t max_recv_sge = 1;
};

// Fills the init attributes of a reliable-connected QP whose send and
// receive completions both go to `cq`: what ibv_create_qp and
// rdma_create_qp take.
void FillRcQueuePairAttr(const CompletionQueue& cq, const QueuePairCaps& caps,
                         ibv_qp_init_attr* attr);

// Work requests on a queue pair the caller owns elsewhere (a QueuePair or an
// rdma_cm id). All posts are signalled; completions arrive on the QP's CQ.
class QueuePairOps {
 public:
  explicit QueuePairOps(ibv_qp* qp) : qp_(qp) {}

  // RDMA WRITE local [laddr, laddr+len) (inside `local`) to raddr/rkey.
  absl::Status PostWrite(const MemoryRegion& local, const void* laddr,
                         size_t len, uint64_t raddr, uint32_t rkey,
                         uint64_t wr_id);
  // RDMA READ raddr/rkey into local [laddr, laddr+len).
  absl::Status PostRead(const MemoryRegion& local, void* laddr, size_t len,
                        uint64_t raddr, uint32_t rkey, uint64_t wr_id);
  absl::Status PostSend(const MemoryRegion& local, const void* laddr,
                        size_t len, uint64_t wr_id);
  absl::Status PostRecv(const MemoryRegion& local, void* laddr, size_t len,
                        uint64_t wr_id);
  // Binds `mw` to [addr, addr+len) of `mr` with `access` (Access bits) and
  // gives the window a fresh rkey (kept in mw.rkey()).
  absl::Status PostBindWindow(MemoryWindow& mw, const MemoryRegion& mr,
                              void* addr, size_t len, unsigned access,
                              uint64_t wr_id);
  // Invalidates `rkey`. rxe panics on a second invalidate of the same key:
  // callers must invalidate each bound key exactly once.
  absl::Status PostLocalInvalidate(uint32_t rkey, uint64_t wr_id);

 private:
  ibv_qp* qp_;
};

// A queue pair created with plain verbs (not through rdma_cm).
class QueuePair {
 public:
  // An RC queue pair using `cq` for sends and receives.
  static absl::StatusOr<QueuePair> CreateRc(const ProtectionDomain& pd,
                                            const CompletionQueue& cq,
                                            const QueuePairCaps& caps);

  QueuePair(QueuePair&& other) noexcept = default;
  QueuePair& operator=(QueuePair&& other) noexcept = default;
  QueuePair(const QueuePair&) = delete;
  QueuePair& operator=(const QueuePair&) = delete;
  ~QueuePair() = default;

  ibv_qp* get() const { return qp_.get(); }
  uint32_t qp_num() const;
  QueuePairOps ops() const { return QueuePairOps(qp_.get()); }

 private:
  explicit QueuePair(ibv_qp* qp) : qp_(qp) {}
  struct Deleter {
    void operator()(ibv_qp* p) const;
  };
  std::unique_ptr<ibv_qp, Deleter> qp_;
};

// Translates Access bits to IBV_ACCESS_* (exposed for tests).
int ToIbvAccess(unsigned access);

}  // namespace daxlease::rdma

#endif  // DAXLEASE_LIB_RDMA_VERBS_H_
