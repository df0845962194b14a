#include "lib/rdma/verbs.h"

#include <errno.h>
#include <fcntl.h>
#include <infiniband/verbs.h>
#include <poll.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "lib/base/log.h"
#include "lib/base/status.h"

namespace daxlease::rdma {
namespace {

// verbs calls return either -1 with errno or a positive errno value.
int ErrOf(int rc) { return rc > 0 ? rc : (errno != 0 ? errno : EIO); }

absl::Status PostSendWr(ibv_qp* qp, ibv_send_wr& wr, absl::string_view what) {
  ibv_send_wr* bad = nullptr;
  int rc = ibv_post_send(qp, &wr, &bad);
  if (rc != 0) return base::ErrnoStatus(what, "", ErrOf(rc));
  return absl::OkStatus();
}

// One signaled RDMA WRITE or READ of [laddr, laddr+len) against the peer's
// (raddr, rkey).
absl::Status PostRdma(ibv_qp* qp, ibv_wr_opcode opcode, uint32_t lkey,
                      const void* laddr, size_t len, uint64_t raddr,
                      uint32_t rkey, uint64_t wr_id, absl::string_view what) {
  ibv_sge sge{};
  sge.addr = reinterpret_cast<uintptr_t>(laddr);
  sge.length = static_cast<uint32_t>(len);
  sge.lkey = lkey;
  ibv_send_wr wr{};
  wr.wr_id = wr_id;
  wr.sg_list = &sge;
  wr.num_sge = 1;
  wr.opcode = opcode;
  wr.send_flags = IBV_SEND_SIGNALED;
  wr.wr.rdma.remote_addr = raddr;
  wr.wr.rdma.rkey = rkey;
  return PostSendWr(qp, wr, what);
}

}  // namespace

int ToIbvAccess(unsigned access) {
  int out = 0;
  if (access & kLocalWrite) out |= IBV_ACCESS_LOCAL_WRITE;
  if (access & kRemoteWrite) out |= IBV_ACCESS_REMOTE_WRITE;
  if (access & kRemoteRead) out |= IBV_ACCESS_REMOTE_READ;
  if (access & kMwBind) out |= IBV_ACCESS_MW_BIND;
  if (access & kOnDemand) out |= IBV_ACCESS_ON_DEMAND;
  return out;
}

std::string DeviceNameOf(ibv_context* ctx) {
  return ctx != nullptr && ctx->device != nullptr
             ? ibv_get_device_name(ctx->device)
             : "";
}

absl::StatusOr<bool> SupportsOnDemandPaging(ibv_context* ctx) {
  ibv_device_attr_ex attr{};
  int rc = ibv_query_device_ex(ctx, nullptr, &attr);
  if (rc != 0) return base::ErrnoStatus("ibv_query_device_ex", "", ErrOf(rc));
  const uint32_t need = IBV_ODP_SUPPORT_READ | IBV_ODP_SUPPORT_WRITE;
  return (attr.odp_caps.general_caps & IBV_ODP_SUPPORT) != 0 &&
         (attr.odp_caps.per_transport_caps.rc_odp_caps & need) == need;
}

absl::StatusOr<std::vector<std::string>> ListDevices() {
  int n = 0;
  errno = 0;
  ibv_device** list = ibv_get_device_list(&n);
  std::vector<std::string> names;
  if (list == nullptr) {
    // ENOSYS: no kernel support at all; that is "no devices", not an error.
    if (errno == ENOSYS || errno == 0) return names;
    return base::ErrnoStatus("ibv_get_device_list", "", errno);
  }
  for (int i = 0; i < n; ++i) names.emplace_back(ibv_get_device_name(list[i]));
  ibv_free_device_list(list);
  return names;
}

// ---------------------------------------------------------------- Device
absl::StatusOr<Device> Device::Open(absl::string_view name) {
  int n = 0;
  errno = 0;
  ibv_device** list = ibv_get_device_list(&n);
  if (list == nullptr || n == 0) {
    if (list != nullptr) ibv_free_device_list(list);
    return absl::NotFoundError(
        absl::StrCat("no RDMA device present (wanted \"", name, "\")"));
  }
  ibv_device* dev = nullptr;
  for (int i = 0; i < n; ++i) {
    if (name.empty() || name == ibv_get_device_name(list[i])) {
      dev = list[i];
      break;
    }
  }
  if (dev == nullptr) {
    ibv_free_device_list(list);
    return absl::NotFoundError(absl::StrCat("no RDMA device \"", name, "\""));
  }
  std::string dev_name = ibv_get_device_name(dev);
  errno = 0;
  ibv_context* ctx = ibv_open_device(dev);
  int err = errno;
  ibv_free_device_list(list);
  if (ctx == nullptr)
    return base::ErrnoStatus("ibv_open_device", dev_name, err ? err : EIO);
  return Device(ctx, std::move(dev_name));
}

void Device::Deleter::operator()(ibv_context* ctx) const {
  ibv_close_device(ctx);
}

// ---------------------------------------------------------------- PD
absl::StatusOr<ProtectionDomain> ProtectionDomain::Allocate(ibv_context* ctx) {
  errno = 0;
  ibv_pd* pd = ibv_alloc_pd(ctx);
  if (pd == nullptr) return base::ErrnoStatus("ibv_alloc_pd", "", ErrOf(-1));
  return ProtectionDomain(pd);
}

void ProtectionDomain::Deleter::operator()(ibv_pd* pd) const {
  int rc = ibv_dealloc_pd(pd);
  if (rc != 0)
    base::LogWarn("rdma.dealloc_pd_failed", {{"errno", std::to_string(rc)}});
}

// ---------------------------------------------------------------- MR
absl::StatusOr<MemoryRegion> MemoryRegion::Register(const ProtectionDomain& pd,
                                                    void* addr, size_t length,
                                                    unsigned access) {
  errno = 0;
  ibv_mr* mr = ibv_reg_mr(pd.get(), addr, length, ToIbvAccess(access));
  if (mr == nullptr) {
    int err = ErrOf(-1);
    absl::Status st = base::ErrnoStatus("ibv_reg_mr", "", err);
    if (err == EOPNOTSUPP) {
      return absl::FailedPreconditionError(absl::StrCat(
          st.message(), ": the kernel refuses a long-term pin of this memory"));
    }
    return st;
  }
  return MemoryRegion(mr);
}

std::vector<std::pair<uint64_t, uint32_t>> PrefetchPieces(uint64_t addr,
                                                          uint64_t length,
                                                          uint32_t max_piece) {
  std::vector<std::pair<uint64_t, uint32_t>> pieces;
  if (max_piece == 0) return pieces;
  for (uint64_t done = 0; done < length;) {
    const uint64_t n = std::min<uint64_t>(length - done, max_piece);
    pieces.emplace_back(addr + done, static_cast<uint32_t>(n));
    done += n;
  }
  return pieces;
}

absl::Status MemoryRegion::Prefetch() const {
  for (const auto& [addr, len] :
       PrefetchPieces(reinterpret_cast<uintptr_t>(mr_->addr), mr_->length)) {
    ibv_sge sge{};
    sge.addr = addr;
    sge.length = len;
    sge.lkey = mr_->lkey;
    int rc =
        ibv_advise_mr(mr_->pd, IBV_ADVISE_MR_ADVICE_PREFETCH_WRITE, 0, &sge, 1);
    if (rc != 0) return base::ErrnoStatus("ibv_advise_mr", "", ErrOf(rc));
  }
  return absl::OkStatus();
}

void MemoryRegion::Deleter::operator()(ibv_mr* mr) const {
  int rc = ibv_dereg_mr(mr);
  if (rc != 0)
    base::LogWarn("rdma.dereg_mr_failed", {{"errno", std::to_string(rc)}});
}

uint32_t MemoryRegion::lkey() const { return mr_->lkey; }
uint32_t MemoryRegion::rkey() const { return mr_->rkey; }
void* MemoryRegion::addr() const { return mr_->addr; }
size_t MemoryRegion::length() const { return mr_->length; }

// ---------------------------------------------------------------- MW
absl::StatusOr<MemoryWindow> MemoryWindow::Allocate(
    const ProtectionDomain& pd) {
  errno = 0;
  ibv_mw* mw = ibv_alloc_mw(pd.get(), IBV_MW_TYPE_2);
  if (mw == nullptr) return base::ErrnoStatus("ibv_alloc_mw", "", ErrOf(-1));
  return MemoryWindow(mw);
}

void MemoryWindow::Deleter::operator()(ibv_mw* mw) const { ibv_dealloc_mw(mw); }

uint32_t MemoryWindow::rkey() const { return mw_->rkey; }

// ---------------------------------------------------------------- CQ
absl::StatusOr<CompletionQueue> CompletionQueue::Create(ibv_context* ctx,
                                                        int entries) {
  errno = 0;
  ibv_cq* cq = ibv_create_cq(ctx, entries, nullptr, nullptr, 0);
  if (cq == nullptr) return base::ErrnoStatus("ibv_create_cq", "", ErrOf(-1));
  return CompletionQueue(cq);
}

absl::StatusOr<CompletionQueue> CompletionQueue::CreateWithChannel(
    ibv_context* ctx, int entries) {
  errno = 0;
  ibv_comp_channel* ch = ibv_create_comp_channel(ctx);
  if (ch == nullptr)
    return base::ErrnoStatus("ibv_create_comp_channel", "", ErrOf(-1));
  // Non-blocking: TakeEvents reads until EAGAIN, and a wake-up another
  // thread's wait consumed first never blocks this one in the read.
  const int flags = ::fcntl(ch->fd, F_GETFL);
  if (flags < 0 || ::fcntl(ch->fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    const int err = errno;
    ibv_destroy_comp_channel(ch);
    return base::ErrnoStatus("fcntl(O_NONBLOCK)", "completion channel", err);
  }
  errno = 0;
  ibv_cq* cq = ibv_create_cq(ctx, entries, nullptr, ch, 0);
  if (cq == nullptr) {
    const int err = ErrOf(-1);
    ibv_destroy_comp_channel(ch);
    return base::ErrnoStatus("ibv_create_cq", "with a completion channel", err);
  }
  return CompletionQueue(cq);
}

void CompletionQueue::Deleter::operator()(ibv_cq* cq) const {
  ibv_comp_channel* ch = cq->channel;
  // Every event was acknowledged as it was taken (TakeEvents), so the
  // destroy does not wait for acks.
  int rc = ibv_destroy_cq(cq);
  if (rc != 0)
    base::LogWarn("rdma.destroy_cq_failed", {{"errno", std::to_string(rc)}});
  if (ch != nullptr && rc == 0) {
    rc = ibv_destroy_comp_channel(ch);
    if (rc != 0) {
      base::LogWarn("rdma.destroy_comp_channel_failed",
                    {{"errno", std::to_string(rc)}});
    }
  }
}

int CompletionQueue::channel_fd() const {
  return cq_->channel != nullptr ? cq_->channel->fd : -1;
}

absl::Status CompletionQueue::Arm() {
  if (cq_->channel == nullptr)
    return absl::FailedPreconditionError("the CQ has no completion channel");
  int rc = ibv_req_notify_cq(cq_.get(), 0);
  if (rc != 0) return base::ErrnoStatus("ibv_req_notify_cq", "", ErrOf(rc));
  return absl::OkStatus();
}

absl::StatusOr<int> CompletionQueue::TakeEvents() {
  if (cq_->channel == nullptr)
    return absl::FailedPreconditionError("the CQ has no completion channel");
  int n = 0;
  while (true) {
    ibv_cq* ev_cq = nullptr;
    void* ev_ctx = nullptr;
    errno = 0;
    if (ibv_get_cq_event(cq_->channel, &ev_cq, &ev_ctx) != 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      if (errno == EINTR) continue;
      return base::ErrnoStatus("ibv_get_cq_event", "", ErrOf(-1));
    }
    // The channel is this CQ's own: the event is for it.
    ibv_ack_cq_events(ev_cq, 1);
    ++n;
  }
  return n;
}

absl::StatusOr<std::optional<WorkCompletion>> CompletionQueue::Await(
    absl::Time deadline, absl::Duration spin, int wake_fd) {
  if (cq_->channel == nullptr)
    return absl::FailedPreconditionError("the CQ has no completion channel");
  const absl::Time spin_until = absl::Now() + spin;
  for (uint64_t polls = 1;; ++polls) {
    ASSIGN_OR_RETURN(std::optional<WorkCompletion> wc, Poll());
    if (wc.has_value()) return wc;
    // The clock is read every 64 polls while spinning.
    if (spin > absl::ZeroDuration() &&
        ((polls & 0x3f) != 0 || absl::Now() < spin_until)) {
      continue;
    }
    break;
  }
  while (true) {
    RETURN_IF_ERROR(Arm());
    ASSIGN_OR_RETURN(std::optional<WorkCompletion> wc, Poll());
    if (wc.has_value()) return wc;
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration())
      return absl::DeadlineExceededError("no completion before the timeout");
    pollfd p[2] = {{cq_->channel->fd, POLLIN, 0}, {wake_fd, POLLIN, 0}};
    const timespec ts = absl::ToTimespec(left);
    const int rc = ::ppoll(p, wake_fd >= 0 ? 2 : 1, &ts, nullptr);
    if (rc < 0 && errno != EINTR)
      return base::ErrnoStatus("ppoll", "completion channel", errno);
    if (rc > 0 && (p[0].revents & POLLIN) != 0) {
      RETURN_IF_ERROR(TakeEvents().status());
      // Taken before arming again: the CQ stays unarmed when it is there,
      // so the next wait is not woken by an event for this completion.
      ASSIGN_OR_RETURN(std::optional<WorkCompletion> next, Poll());
      if (next.has_value()) return next;
    }
    if (rc > 0 && wake_fd >= 0 && p[1].revents != 0) {
      // A completion that came with the wake-up goes first.
      ASSIGN_OR_RETURN(std::optional<WorkCompletion> last, Poll());
      if (last.has_value()) return last;
      return std::optional<WorkCompletion>();
    }
  }
}

absl::StatusOr<std::optional<WorkCompletion>> CompletionQueue::Poll() {
  ibv_wc wc;
  std::memset(&wc, 0, sizeof wc);
  int n = ibv_poll_cq(cq_.get(), 1, &wc);
  if (n < 0) return absl::InternalError("ibv_poll_cq failed");
  if (n == 0) return std::optional<WorkCompletion>();
  WorkCompletion out;
  out.wr_id = wc.wr_id;
  out.status = wc.status;
  out.status_text = ibv_wc_status_str(wc.status);
  out.byte_len = wc.byte_len;
  return std::optional<WorkCompletion>(std::move(out));
}

absl::StatusOr<WorkCompletion> CompletionQueue::Wait(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  if (cq_->channel != nullptr) {
    ASSIGN_OR_RETURN(std::optional<WorkCompletion> wc,
                     Await(deadline, absl::ZeroDuration()));
    if (wc.has_value()) return std::move(*wc);
    return absl::InternalError("woken without a completion");  // no wake_fd
  }
  for (uint64_t spins = 0;; ++spins) {
    ASSIGN_OR_RETURN(std::optional<WorkCompletion> wc, Poll());
    if (wc.has_value()) return std::move(*wc);
    if ((spins & 0xff) == 0xff) {
      if (absl::Now() > deadline)
        return absl::DeadlineExceededError("no completion before the timeout");
      ::usleep(50);
    }
  }
}

// ---------------------------------------------------------------- QP ops
absl::Status QueuePairOps::PostWrite(const MemoryRegion& local,
                                     const void* laddr, size_t len,
                                     uint64_t raddr, uint32_t rkey,
                                     uint64_t wr_id) {
  return PostRdma(qp_, IBV_WR_RDMA_WRITE, local.lkey(), laddr, len, raddr, rkey,
                  wr_id, "ibv_post_send(RDMA_WRITE)");
}

absl::Status QueuePairOps::PostRead(const MemoryRegion& local, void* laddr,
                                    size_t len, uint64_t raddr, uint32_t rkey,
                                    uint64_t wr_id) {
  return PostRdma(qp_, IBV_WR_RDMA_READ, local.lkey(), laddr, len, raddr, rkey,
                  wr_id, "ibv_post_send(RDMA_READ)");
}

absl::Status QueuePairOps::PostSend(const MemoryRegion& local,
                                    const void* laddr, size_t len,
                                    uint64_t wr_id) {
  ibv_sge sge{};
  sge.addr = reinterpret_cast<uintptr_t>(laddr);
  sge.length = static_cast<uint32_t>(len);
  sge.lkey = local.lkey();
  ibv_send_wr wr{};
  wr.wr_id = wr_id;
  wr.sg_list = &sge;
  wr.num_sge = 1;
  wr.opcode = IBV_WR_SEND;
  wr.send_flags = IBV_SEND_SIGNALED;
  return PostSendWr(qp_, wr, "ibv_post_send(SEND)");
}

absl::Status QueuePairOps::PostRecv(const MemoryRegion& local, void* laddr,
                                    size_t len, uint64_t wr_id) {
  ibv_sge sge{};
  sge.addr = reinterpret_cast<uintptr_t>(laddr);
  sge.length = static_cast<uint32_t>(len);
  sge.lkey = local.lkey();
  ibv_recv_wr wr{};
  wr.wr_id = wr_id;
  wr.sg_list = &sge;
  wr.num_sge = 1;
  ibv_recv_wr* bad = nullptr;
  int rc = ibv_post_recv(qp_, &wr, &bad);
  if (rc != 0) return base::ErrnoStatus("ibv_post_recv", "", ErrOf(rc));
  return absl::OkStatus();
}

absl::Status QueuePairOps::PostBindWindow(MemoryWindow& mw,
                                          const MemoryRegion& mr, void* addr,
                                          size_t len, unsigned access,
                                          uint64_t wr_id) {
  const uint32_t new_rkey = ibv_inc_rkey(mw.mw_->rkey);
  ibv_send_wr wr{};
  wr.wr_id = wr_id;
  wr.opcode = IBV_WR_BIND_MW;
  wr.send_flags = IBV_SEND_SIGNALED;
  wr.bind_mw.mw = mw.mw_.get();
  wr.bind_mw.rkey = new_rkey;
  wr.bind_mw.bind_info.mr = mr.get();
  wr.bind_mw.bind_info.addr = reinterpret_cast<uintptr_t>(addr);
  wr.bind_mw.bind_info.length = len;
  wr.bind_mw.bind_info.mw_access_flags = ToIbvAccess(access);
  RETURN_IF_ERROR(PostSendWr(qp_, wr, "ibv_post_send(BIND_MW)"));
  mw.mw_->rkey = new_rkey;  // verbs does not update it for type-2 binds
  return absl::OkStatus();
}

absl::Status QueuePairOps::PostLocalInvalidate(uint32_t rkey, uint64_t wr_id) {
  ibv_send_wr wr{};
  wr.wr_id = wr_id;
  wr.opcode = IBV_WR_LOCAL_INV;
  wr.send_flags = IBV_SEND_SIGNALED;
  wr.invalidate_rkey = rkey;
  return PostSendWr(qp_, wr, "ibv_post_send(LOCAL_INV)");
}

// ---------------------------------------------------------------- QP
void FillRcQueuePairAttr(const CompletionQueue& cq, const QueuePairCaps& caps,
                         ibv_qp_init_attr* attr) {
  ibv_qp_init_attr& ia = *attr;
  ia = {};
  ia.send_cq = cq.get();
  ia.recv_cq = cq.get();
  ia.qp_type = IBV_QPT_RC;
  ia.cap.max_send_wr = caps.max_send_wr;
  ia.cap.max_recv_wr = caps.max_recv_wr;
  ia.cap.max_send_sge = caps.max_send_sge;
  ia.cap.max_recv_sge = caps.max_recv_sge;
}

absl::StatusOr<QueuePair> QueuePair::CreateRc(const ProtectionDomain& pd,
                                              const CompletionQueue& cq,
                                              const QueuePairCaps& caps) {
  ibv_qp_init_attr ia{};
  FillRcQueuePairAttr(cq, caps, &ia);
  errno = 0;
  ibv_qp* qp = ibv_create_qp(pd.get(), &ia);
  if (qp == nullptr) return base::ErrnoStatus("ibv_create_qp", "", ErrOf(-1));
  return QueuePair(qp);
}

void QueuePair::Deleter::operator()(ibv_qp* qp) const { ibv_destroy_qp(qp); }

uint32_t QueuePair::qp_num() const { return qp_->qp_num; }

}  // namespace daxlease::rdma
