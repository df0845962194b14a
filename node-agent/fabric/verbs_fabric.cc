#include "node-agent/fabric/verbs_fabric.h"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <optional>
#include <set>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "lib/base/log.h"
#include "lib/base/status.h"
#include "lib/rdma/cm.h"
#include "lib/rdma/verbs.h"
#include "node-agent/fabric/admit.h"
#include "node-agent/fabric/wire.h"
#include "proto/agent.pb.h"

namespace daxlease::fabric {
namespace {

constexpr char kScheme[] = "verbs://";
constexpr absl::Duration kStep = absl::Seconds(10);
constexpr absl::Duration kOpTimeout = absl::Seconds(30);
constexpr absl::Duration kPoll = absl::Milliseconds(200);
// Owner: how often a connection's thread looks at its CQ for a request
// between its waits for the disconnect (a request is rare: a migration's
// DIGESTS, once inside the pause).
constexpr absl::Duration kRequestPoll = absl::Milliseconds(20);
// Holder: the largest DIGESTS reply asked for (64 TiB of 16 MiB chunks).
constexpr uint64_t kMaxDigestsReply = uint64_t{64} << 20;
// Holder: a DIGESTS reply waits kOpTimeout plus this per byte hashed
// (1 s per 64 MiB: far below the owner's speed even under TCG).
constexpr uint64_t kHashedBytesPerSecond = uint64_t{64} << 20;
// Holder: the sleep between polls while a request's reply is awaited (the
// owner hashes meanwhile, maybe on this CPU).
constexpr int kReplySleepMicros = 1000;
// The handshake buffer: a FabricHello in, a reply out.
constexpr size_t kMsgBytes = 4096;
// The holder's bounce buffer and the size of one RDMA op.
constexpr size_t kOpBytes = 1u << 20;
constexpr size_t kOpsInFlight = 4;
constexpr size_t kBounceBytes = kOpBytes * kOpsInFlight;
// Holder: a transfer up to this size only spins for its completion (for up
// to kSpinFor) before sleeping between polls: its completion comes within a
// round trip, and a sleep would cost more than the whole op.
constexpr uint64_t kSpinOnlyBytes = 64 * 1024;
constexpr absl::Duration kSpinFor = absl::Milliseconds(2);
// Holder, larger transfers: polls before the first sleep, and each sleep
// (in poll(2) on the rdma_cm channel, so an owner's disconnect ends it).
constexpr int kSpinsBeforeSleep = 256;
constexpr int kSleepMicros = 50;
// Holder: an idle connection's rdma_cm channel is looked at (a system call)
// before an op when it was last looked at longer ago than this: an owner
// that disconnected meanwhile is seen before its QP is used.
constexpr absl::Duration kIdleCheck = absl::Milliseconds(20);

constexpr uint64_t kWrRecv = 1, kWrSend = 2, kWrBind = 3, kWrInvalidate = 4;

// Receive completions (a holder's request, or one flushed by the QP going
// to the error state) taken off an owner connection's CQ by a wait for
// something else, kept for the connection's thread.
using Received = std::deque<rdma::WorkCompletion>;

// Waits for the completion of `wr_id`; a receive's goes to `received` when
// given, completions of other requests are skipped.
absl::StatusOr<rdma::WorkCompletion> WaitFor(rdma::CompletionQueue& cq,
                                             uint64_t wr_id,
                                             absl::Duration timeout,
                                             Received* received = nullptr) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    absl::Duration left = deadline - absl::Now();
    if (left < absl::ZeroDuration()) left = absl::ZeroDuration();
    ASSIGN_OR_RETURN(rdma::WorkCompletion wc, cq.Wait(left));
    if (wc.wr_id == wr_id) return wc;
    if (wc.wr_id == kWrRecv && received != nullptr) received->push_back(wc);
  }
}

absl::Status CompletionStatus(const rdma::WorkCompletion& wc,
                              absl::string_view what) {
  if (wc.ok()) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(
      what, " completed with status ", wc.status, " (", wc.status_text, ")"));
}

absl::StatusOr<std::pair<std::string, uint16_t>> SplitIpPort(
    absl::string_view hp) {
  auto colon = hp.rfind(':');
  int port = 0;
  if (colon == absl::string_view::npos ||
      !absl::SimpleAtoi(hp.substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("address '", hp, "' is not ip:port"));
  }
  return std::make_pair(std::string(hp.substr(0, colon)),
                        static_cast<uint16_t>(port));
}

// A pooled window: the verbs handle; empty once deallocated.
class VerbsWindow final : public PooledWindow {
 public:
  explicit VerbsWindow(rdma::MemoryWindow mw) : mw(std::move(mw)) {}
  std::optional<rdma::MemoryWindow> mw;
};

}  // namespace

// ---- owner side -----------------------------------------------------------

// The device side of the fabric, in acquisition order (released in
// reverse): the listener's event channel, the listener (bound to the
// device's address), and the protection domain every MR, MW and QP of the
// fabric lives in.
struct VerbsFabric::Device {
  std::optional<rdma::EventChannel> channel;
  std::optional<rdma::CmId> listener;
  std::optional<rdma::ProtectionDomain> pd;
  std::string name;
  bool odp = false;  // on-demand paging for RC RDMA READ/WRITE
};

struct VerbsFabric::Volume {
  Region region;
  std::optional<rdma::MemoryRegion> mr;
  bool on_demand = false;
  std::map<GrantKey, std::shared_ptr<GrantState>> grants;
  int64_t min_epoch = 0;
};

struct VerbsFabric::GrantState {
  GrantKey key;
  Access access = Access::kReadOnly;
  std::string credential;
  bool cut = false;                       // guarded by VerbsFabric::mu_
  std::set<std::shared_ptr<Conn>> conns;  // guarded by VerbsFabric::mu_
};

// One holder connection. Members in acquisition order, so the defaults
// release them in reverse: the window first (released explicitly before
// anything else), then the QP, the handshake MR, the CQ, the id, the
// channel.
struct VerbsFabric::Conn {
  std::optional<rdma::EventChannel> channel;
  std::optional<rdma::CmId> id;
  std::optional<rdma::CompletionQueue> cq;
  std::vector<char> msg = std::vector<char>(2 * kMsgBytes);
  std::optional<rdma::MemoryRegion> msg_mr;
  std::optional<rdma::CmQueuePair> qp;
  // Guards posting on the QP, polling the CQ and the window.
  absl::Mutex mu;
  std::unique_ptr<PooledWindow> window ABSL_GUARDED_BY(mu);
  // A request RECV is posted (into msg's first half) after the handshake;
  // false once the QP failed. Receive completions waits took off the CQ.
  bool requests ABSL_GUARDED_BY(mu) = false;
  Received received ABSL_GUARDED_BY(mu);
  std::shared_ptr<Volume> volume;  // set by the handshake
  std::shared_ptr<GrantState> grant;
  unsigned window_access = 0;
  std::atomic<bool> stop{false};
  std::atomic<bool> done{false};
  std::thread thread;
};

namespace {

// WindowVerbs on one connection's QP and CQ.
class ConnWindowVerbs final : public WindowVerbs {
 public:
  ConnWindowVerbs(rdma::CmQueuePair& qp, rdma::CompletionQueue& cq,
                  VerbsWindow& w, const rdma::MemoryRegion* mr, unsigned access,
                  Received* received)
      : qp_(qp),
        cq_(cq),
        w_(w),
        mr_(mr),
        access_(access),
        received_(received) {}

  absl::StatusOr<uint32_t> Bind() override {
    if (!w_.mw.has_value() || mr_ == nullptr)
      return absl::FailedPreconditionError("no window or region to bind");
    RETURN_IF_ERROR(qp_.ops().PostBindWindow(*w_.mw, *mr_, mr_->addr(),
                                             mr_->length(), access_, kWrBind));
    ASSIGN_OR_RETURN(rdma::WorkCompletion wc,
                     WaitFor(cq_, kWrBind, kStep, received_));
    RETURN_IF_ERROR(CompletionStatus(wc, "BIND_MW"));
    return w_.mw->rkey();
  }
  absl::Status LocalInvalidate(uint32_t rkey) override {
    RETURN_IF_ERROR(qp_.ops().PostLocalInvalidate(rkey, kWrInvalidate));
    ASSIGN_OR_RETURN(rdma::WorkCompletion wc,
                     WaitFor(cq_, kWrInvalidate, kStep, received_));
    return CompletionStatus(wc, "LOCAL_INV");
  }
  void Deallocate() override { w_.mw.reset(); }

 private:
  rdma::CmQueuePair& qp_;
  rdma::CompletionQueue& cq_;
  VerbsWindow& w_;
  const rdma::MemoryRegion* mr_;
  const unsigned access_;
  Received* const received_;
};

// Revokes the connection's window if it is bound; returns whether it was.
// REQUIRES: c.mu held.
bool RevokeWindow(VerbsFabric::Conn& c,
                  VerbsFabricStats* stats) ABSL_NO_THREAD_SAFETY_ANALYSIS {
  if (c.window == nullptr || !c.qp.has_value() || !c.cq.has_value())
    return false;
  auto& w = static_cast<VerbsWindow&>(*c.window);
  ConnWindowVerbs v(*c.qp, *c.cq, w,
                    c.volume && c.volume->mr ? &*c.volume->mr : nullptr,
                    c.window_access, &c.received);
  const absl::Time t0 = absl::Now();
  const bool revoked = c.window->fsm.Revoke(v);
  if (revoked && stats != nullptr) {
    ++stats->invalidates;
    stats->invalidate_total += absl::Now() - t0;
  }
  return revoked;
}
}  // namespace

absl::StatusOr<std::unique_ptr<VerbsFabric>> VerbsFabric::Start(
    VerbsFabricOptions options) {
  if (options.secret.empty())
    return absl::InvalidArgumentError("VerbsFabric needs a non-empty secret");
  ASSIGN_OR_RETURN(auto hp, SplitIpPort(options.listen));
  if (hp.first.empty() || hp.first == "0.0.0.0") {
    return absl::InvalidArgumentError(absl::StrCat(
        "the verbs fabric listens on the address of an RDMA device's "
        "interface (rdma_cm finds the device by it), not '",
        options.listen, "'"));
  }
  auto dev = std::make_unique<Device>();
  auto ch = rdma::EventChannel::Create();
  if (!ch.ok()) {
    return absl::UnavailableError(absl::StrCat(
        "no RDMA on this machine (rdma_cm): ", ch.status().message()));
  }
  dev->channel.emplace(*std::move(ch));
  ASSIGN_OR_RETURN(rdma::CmId listener, rdma::CmId::Create(*dev->channel));
  dev->listener.emplace(std::move(listener));
  if (absl::Status st = dev->listener->Listen(hp.first, hp.second, 64);
      !st.ok()) {
    return absl::UnavailableError(absl::StrCat(
        "verbs fabric: cannot listen on ", options.listen,
        " (is an RDMA device, e.g. rxe, on that address's interface?): ",
        st.message()));
  }
  if (dev->listener->verbs() == nullptr) {
    return absl::UnavailableError(
        absl::StrCat("verbs fabric: no RDMA device behind ", hp.first));
  }
  ASSIGN_OR_RETURN(rdma::ProtectionDomain pd,
                   rdma::ProtectionDomain::Allocate(dev->listener->verbs()));
  dev->pd.emplace(std::move(pd));
  dev->name = rdma::DeviceNameOf(dev->listener->verbs());
  absl::StatusOr<bool> odp =
      rdma::SupportsOnDemandPaging(dev->listener->verbs());
  dev->odp = odp.ok() && *odp;
  const uint16_t port = dev->listener->LocalPort();
  std::string endpoint = options.advertise.empty()
                             ? absl::StrCat(kScheme, hp.first, ":", port)
                             : absl::StrCat(kScheme, options.advertise);
  auto f = std::unique_ptr<VerbsFabric>(
      new VerbsFabric(std::move(options), std::move(dev), std::move(endpoint)));
  RETURN_IF_ERROR(f->pool_.Fill());
  f->accept_thread_ = std::thread([p = f.get()] { p->AcceptLoop(); });
  base::LogInfo("fabric.verbs_listening",
                {{"endpoint", f->endpoint_},
                 {"device", f->device_->name},
                 {"odp", f->device_->odp ? "true" : "false"}});
  return f;
}

absl::Status VerbsFabric::CanShareFsdax() const {
  if (device_->odp) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "RDMA device ", device_->name.empty() ? "here" : device_->name,
      " has no on-demand paging (ODP), and the kernel refuses to pin a file "
      "on fsdax long-term for RDMA (by design): this node shares devdax "
      "volumes over verbs, not fsdax (or run the agents with --fabric=tcp)"));
}

VerbsFabric::VerbsFabric(VerbsFabricOptions options,
                         std::unique_ptr<Device> device, std::string endpoint)
    : options_(std::move(options)),
      device_(std::move(device)),
      endpoint_(std::move(endpoint)),
      pool_(
          [pd = &*device_->pd]()
              -> absl::StatusOr<std::unique_ptr<PooledWindow>> {
            ASSIGN_OR_RETURN(rdma::MemoryWindow mw,
                             rdma::MemoryWindow::Allocate(*pd));
            return std::make_unique<VerbsWindow>(std::move(mw));
          },
          options_.window_pool) {}

VerbsFabric::~VerbsFabric() {
  stopping_.store(true);
  if (accept_thread_.joinable()) accept_thread_.join();
  std::vector<std::shared_ptr<Conn>> conns;
  {
    absl::MutexLock l(&mu_);
    conns = conns_;
  }
  RevokeConns(conns);
  for (auto& c : conns) {
    c->stop.store(true);
    if (c->thread.joinable()) c->thread.join();
  }
  {
    absl::MutexLock l(&mu_);
    conns_.clear();
    volumes_.clear();  // every window is released: the MRs deregister
  }
  pool_.Clear();  // the windows, then (members) the PD, listener, channel
}

void VerbsFabric::AcceptLoop() {
  while (!stopping_.load()) {
    auto req = device_->listener->WaitForRequest(kPoll);
    if (!req.ok()) {
      if (!absl::IsDeadlineExceeded(req.status())) {
        base::LogWarn("fabric.verbs_accept_failed",
                      {{"error", req.status().ToString()}});
        absl::SleepFor(kPoll);
      }
      continue;
    }
    auto conn = std::make_shared<Conn>();
    auto ch = rdma::EventChannel::Create();
    if (!ch.ok()) continue;  // dropping the id rejects the request
    conn->channel.emplace(*std::move(ch));
    if (!req->id.MigrateTo(*conn->channel).ok()) continue;
    conn->id.emplace(std::move(req->id));
    std::vector<std::shared_ptr<Conn>> finished;
    {
      absl::MutexLock l(&mu_);
      for (auto it = conns_.begin(); it != conns_.end();) {
        if ((*it)->done.load()) {
          finished.push_back(*it);
          it = conns_.erase(it);
        } else {
          ++it;
        }
      }
      conns_.push_back(conn);
      conn->thread = std::thread([this, conn] { Serve(conn); });
    }
    for (auto& c : finished) c->thread.join();
  }
}

absl::Status VerbsFabric::Handshake(const std::shared_ptr<Conn>& conn) {
  Conn& c = *conn;
  if (c.id->verbs() != device_->listener->verbs()) {
    return absl::UnavailableError("connection arrived on another RDMA device");
  }
  ASSIGN_OR_RETURN(rdma::CompletionQueue cq,
                   rdma::CompletionQueue::Create(c.id->verbs(), 16));
  c.cq.emplace(std::move(cq));
  ASSIGN_OR_RETURN(rdma::MemoryRegion mr, rdma::MemoryRegion::Register(
                                              *device_->pd, c.msg.data(),
                                              c.msg.size(), rdma::kLocalWrite));
  c.msg_mr.emplace(std::move(mr));
  ASSIGN_OR_RETURN(rdma::CmQueuePair qp,
                   rdma::CmQueuePair::Create(*c.id, *device_->pd, *c.cq,
                                             rdma::QueuePairCaps{}));
  c.qp.emplace(std::move(qp));
  char* in = c.msg.data();
  char* out = c.msg.data() + kMsgBytes;
  RETURN_IF_ERROR(c.qp->ops().PostRecv(*c.msg_mr, in, kMsgBytes, kWrRecv));
  RETURN_IF_ERROR(c.id->Accept("", kStep));
  ASSIGN_OR_RETURN(rdma::WorkCompletion wc, WaitFor(*c.cq, kWrRecv, kStep));
  RETURN_IF_ERROR(CompletionStatus(wc, "receive of the FabricHello"));

  agent::v1::FabricHello hello;
  if (!hello.ParseFromArray(in, static_cast<int>(wc.byte_len)))
    return absl::InvalidArgumentError("malformed FabricHello");
  const HelloRequest asked = FromHello(hello);
  const GrantKey& key = asked.key;
  const Access want = asked.access;
  absl::Status verdict;
  {
    absl::MutexLock l(&mu_);
    auto admitted = AdmitHello(volumes_, asked);
    verdict = admitted.status();
    if (admitted.ok()) {
      c.volume = admitted->volume;
      c.grant = admitted->grant;
    }
  }

  VerbsHelloReply reply;
  if (verdict.ok()) {
    c.window_access = rdma::kRemoteRead |
                      (want == Access::kReadWrite ? rdma::kRemoteWrite : 0u);
    absl::StatusOr<std::unique_ptr<PooledWindow>> w = pool_.Take();
    if (!w.ok()) {
      verdict = absl::ResourceExhaustedError(
          absl::StrCat("no memory window: ", w.status().message()));
    } else {
      absl::MutexLock cl(&c.mu);
      c.window = *std::move(w);
      ConnWindowVerbs v(*c.qp, *c.cq, static_cast<VerbsWindow&>(*c.window),
                        &*c.volume->mr, c.window_access, &c.received);
      const absl::Time t0 = absl::Now();
      absl::StatusOr<uint32_t> rkey = c.window->fsm.Bind(v);
      const absl::Duration took = absl::Now() - t0;
      if (!rkey.ok()) {
        verdict = absl::UnavailableError(
            absl::StrCat("binding a memory window: ", rkey.status().message()));
      } else {
        reply.rkey = *rkey;
        reply.addr = reinterpret_cast<uintptr_t>(c.volume->region.base);
        reply.size_bytes = c.volume->region.length;
        // The next receive takes the holder's requests (the hello is
        // parsed: its buffer is free), posted before the reply so that a
        // request never finds the receive queue empty.
        if (c.qp->ops().PostRecv(*c.msg_mr, in, kMsgBytes, kWrRecv).ok()) {
          c.requests = true;
          reply.features = kVerbsFeatureRequests;
        }
        base::LogInfo(
            "fabric.verbs_window_bound",
            {{"grant", key.DebugString()},
             {"took_us", absl::StrCat(absl::ToInt64Microseconds(took))}});
      }
      absl::MutexLock l(&mu_);
      ++stats_.binds;
      stats_.bind_total += took;
      // Invalidate takes mu_ to mark the grant cut and then looks at the
      // grant's connections: joining them under mu_ means a cut either
      // sees this connection or is seen here.
      if (verdict.ok() && c.grant->cut) {
        verdict = absl::PermissionDeniedError(
            absl::StrCat("grant ", key.DebugString(), " was revoked"));
      } else if (verdict.ok()) {
        c.grant->conns.insert(conn);
      }
    }
    if (!verdict.ok()) RevokeOne(c);
  }
  reply.code = static_cast<int32_t>(verdict.code());
  reply.message = std::string(verdict.message());
  if (!verdict.ok()) reply = VerbsHelloReply{reply.code, reply.message};
  std::string bytes = EncodeHelloReply(reply);
  if (bytes.size() > kMsgBytes) bytes.resize(kMsgBytes);
  std::memcpy(out, bytes.data(), bytes.size());
  {
    absl::MutexLock cl(&c.mu);
    RETURN_IF_ERROR(
        c.qp->ops().PostSend(*c.msg_mr, out, bytes.size(), kWrSend));
    ASSIGN_OR_RETURN(rdma::WorkCompletion sent,
                     WaitFor(*c.cq, kWrSend, kStep, &c.received));
    RETURN_IF_ERROR(CompletionStatus(sent, "send of the reply"));
  }
  if (!verdict.ok()) {
    base::LogWarn("fabric.hello_refused", {{"grant", key.DebugString()},
                                           {"error", verdict.ToString()}});
  }
  return verdict;
}

void VerbsFabric::Serve(const std::shared_ptr<Conn>& conn) {
  Conn& c = *conn;
  absl::Status st = Handshake(conn);
  if (st.ok()) {
    // The holder reads and writes the memory itself; only its requests
    // (DIGESTS) need us. Wait for its disconnect (or ours), looking at the
    // CQ for a request between the waits.
    while (!c.stop.load() && !stopping_.load()) {
      absl::Status ev = c.id->WaitForDisconnect(kRequestPoll);
      if (!absl::IsDeadlineExceeded(ev)) break;
      ServeRequests(c);
    }
  }
  // The window goes before the QP (rxe blocks ~51 s destroying a QP with a
  // bound window) and back to the pool when it can be rebound. Everything
  // another thread may look at (window, QP, volume, grant) changes under
  // the connection's lock, and the fabric's.
  RevokeOne(c);
  {
    absl::MutexLock cl(&c.mu);
    pool_.Put(std::move(c.window));
    (void)c.id->Disconnect();
    c.qp.reset();
    c.msg_mr.reset();
    c.cq.reset();
    absl::MutexLock l(&mu_);
    if (c.grant != nullptr) c.grant->conns.erase(conn);
    c.volume.reset();
    c.grant.reset();
  }
  if (!stopping_.load()) {
    if (absl::Status f = pool_.Fill(); !f.ok()) {
      base::LogWarn("fabric.window_pool_fill_failed",
                    {{"error", f.ToString()}});
    }
  }
  c.done.store(true);
}

void VerbsFabric::ServeRequests(Conn& c) {
  absl::MutexLock cl(&c.mu);
  if (!c.requests || !c.cq.has_value() || !c.qp.has_value()) return;
  while (true) {
    absl::StatusOr<std::optional<rdma::WorkCompletion>> wc = c.cq->Poll();
    if (!wc.ok() || !wc->has_value()) break;
    // Anything else is a late completion of a wait that gave up.
    if ((*wc)->wr_id == kWrRecv) c.received.push_back(**wc);
  }
  while (c.requests && !c.received.empty()) {
    const rdma::WorkCompletion wc = c.received.front();
    c.received.pop_front();
    if (!wc.ok()) {
      // Flushed: the QP is in the error state (the holder's access was
      // refused, or it went away); its disconnect ends the connection.
      c.requests = false;
      break;
    }
    const std::string request(c.msg.data(),
                              std::min<size_t>(wc.byte_len, kMsgBytes));
    // The next request's receive, before this one is answered.
    if (!c.qp->ops().PostRecv(*c.msg_mr, c.msg.data(), kMsgBytes, kWrRecv).ok())
      c.requests = false;
    if (absl::Status st = AnswerRequest(c, request); !st.ok()) {
      base::LogWarn("fabric.verbs_request_failed",
                    {{"grant", c.grant ? c.grant->key.DebugString() : ""},
                     {"error", st.ToString()}});
      c.requests = false;
    }
  }
}

absl::Status VerbsFabric::AnswerRequest(Conn& c, absl::string_view bytes)
    ABSL_NO_THREAD_SAFETY_ANALYSIS {
  const absl::Time t0 = absl::Now();
  const std::string grant = c.grant ? c.grant->key.DebugString() : "";
  absl::StatusOr<VerbsRequest> req = DecodeVerbsRequest(bytes);
  absl::Status st = req.status();
  if (st.ok() &&
      (req->version != kVerbsRequestVersion || req->op != kVerbsOpDigests)) {
    st = absl::UnimplementedError(absl::StrCat("request op ", req->op,
                                               " of version ", req->version,
                                               " is not known to this owner"));
  }
  if (st.ok()) {
    absl::MutexLock l(&mu_);
    if (c.grant == nullptr || c.grant->cut) {
      st = absl::PermissionDeniedError(
          absl::StrCat("revoked: grant ", grant, " was invalidated"));
    }
  }
  const Region* region = c.volume != nullptr ? &c.volume->region : nullptr;
  if (st.ok() && region == nullptr) {
    st = absl::FailedPreconditionError("the connection serves no volume");
  } else if (st.ok() && (req->offset > region->length ||
                         req->length > region->length - req->offset)) {
    st = absl::OutOfRangeError(
        absl::StrCat("[", req->offset, ", +", req->length,
                     ") outside the volume (", region->length, " bytes)"));
  } else if (st.ok() && !region->digests) {
    st = absl::UnimplementedError(absl::StrCat(
        "the owner serves no chunk digests of volume ", region->volume));
  } else if (st.ok() && (req->chunk == 0 || req->offset % req->chunk != 0)) {
    st = absl::InvalidArgumentError(absl::StrCat(
        "digests of chunks of ", req->chunk, " bytes from ", req->offset));
  }
  VerbsReply reply;
  if (st.ok()) {
    // Read-only grants may ask: a digest tells less than a READ.
    absl::StatusOr<std::string> d =
        region->digests(req->offset, req->length, req->chunk);
    if (d.ok()) {
      reply.payload = *std::move(d);
    } else {
      st = d.status();
    }
  }
  if (st.ok() && VerbsReplyBytes(reply.payload.size()) > req->reply_capacity) {
    st = absl::ResourceExhaustedError(absl::StrCat(
        "the reply (", reply.payload.size(), " bytes of digests) exceeds the ",
        req->reply_capacity, " bytes the holder receives"));
  }
  if (!st.ok()) reply.payload.clear();
  reply.code = static_cast<int32_t>(st.code());
  reply.message = std::string(st.message());
  std::string out = EncodeVerbsReply(reply);
  ASSIGN_OR_RETURN(rdma::MemoryRegion mr,
                   rdma::MemoryRegion::Register(*device_->pd, out.data(),
                                                out.size(), rdma::kLocalWrite));
  RETURN_IF_ERROR(c.qp->ops().PostSend(mr, out.data(), out.size(), kWrSend));
  ASSIGN_OR_RETURN(rdma::WorkCompletion sent,
                   WaitFor(*c.cq, kWrSend, kStep, &c.received));
  RETURN_IF_ERROR(CompletionStatus(sent, "send of a request's reply"));
  const std::string took =
      absl::StrCat(absl::ToInt64Milliseconds(absl::Now() - t0));
  if (st.ok()) {
    base::LogInfo(
        "fabric.verbs_digests_served",
        {{"grant", grant},
         {"offset", absl::StrCat(req->offset)},
         {"bytes", absl::StrCat(req->length)},
         {"chunks", absl::StrCat(reply.payload.size() / kDigestBytes)},
         {"took_ms", took}});
  } else {
    base::LogWarn(
        "fabric.verbs_request_refused",
        {{"grant", grant}, {"error", st.ToString()}, {"took_ms", took}});
  }
  return absl::OkStatus();
}

absl::Status VerbsFabric::RegisterVolume(Region region) {
  if (region.volume.empty() || region.base == nullptr || region.length == 0)
    return absl::InvalidArgumentError("region needs a volume, base, length");
  {
    absl::MutexLock l(&mu_);
    if (volumes_.contains(region.volume)) {
      return absl::AlreadyExistsError(
          absl::StrCat("volume ", region.volume, " is already registered"));
    }
  }
  auto v = std::make_shared<Volume>();
  auto mr =
      rdma::MemoryRegion::Register(*device_->pd, region.base, region.length,
                                   rdma::kLocalWrite | rdma::kMwBind);
  if (absl::IsFailedPrecondition(mr.status())) {
    absl::StatusOr<bool> odp =
        rdma::SupportsOnDemandPaging(device_->listener->verbs());
    const bool has_odp = odp.ok() && *odp;
    if (has_odp) {
      mr = rdma::MemoryRegion::Register(
          *device_->pd, region.base, region.length,
          rdma::kLocalWrite | rdma::kMwBind | rdma::kOnDemand);
      v->on_demand = mr.ok();
    }
    if (!mr.ok()) {
      return RegistrationRefusal(region.volume, device_->name, mr.status(),
                                 has_odp);
    }
  }
  if (!mr.ok()) return mr.status();
  if (v->on_demand) {
    // Fault the volume in now, not on each holder's first access of a page
    // (advisory: the device faults what is not there yet anyway).
    if (absl::Status p = mr->Prefetch(); !p.ok()) {
      base::LogWarn("fabric.odp_prefetch_failed",
                    {{"volume", region.volume}, {"error", p.ToString()}});
    }
  }
  v->mr.emplace(*std::move(mr));
  v->region = std::move(region);
  absl::MutexLock l(&mu_);
  if (volumes_.contains(v->region.volume)) {
    return absl::AlreadyExistsError(
        absl::StrCat("volume ", v->region.volume, " is already registered"));
  }
  volumes_[v->region.volume] = v;
  base::LogInfo("fabric.verbs_registered",
                {{"volume", v->region.volume},
                 {"bytes", absl::StrCat(v->region.length)},
                 {"on_demand", v->on_demand ? "true" : "false"}});
  return absl::OkStatus();
}

bool VerbsFabric::RevokeOne(Conn& c) {
  absl::MutexLock cl(&c.mu);
  VerbsFabricStats delta;
  const bool revoked = RevokeWindow(c, &delta);
  if (revoked) {
    base::LogInfo(
        "fabric.verbs_window_invalidated",
        {{"took_us",
          absl::StrCat(absl::ToInt64Microseconds(delta.invalidate_total))}});
  }
  absl::MutexLock l(&mu_);
  stats_.invalidates += delta.invalidates;
  stats_.invalidate_total += delta.invalidate_total;
  return revoked;
}

bool VerbsFabric::RevokeConns(const std::vector<std::shared_ptr<Conn>>& conns) {
  bool any = false;
  for (const auto& c : conns) any |= RevokeOne(*c);
  return any;
}

absl::Status VerbsFabric::DeregisterVolume(const std::string& volume) {
  std::shared_ptr<Volume> v;
  std::vector<std::shared_ptr<Conn>> conns;
  {
    absl::MutexLock l(&mu_);
    auto it = volumes_.find(volume);
    if (it == volumes_.end()) return absl::OkStatus();
    v = it->second;
    volumes_.erase(it);
    for (auto& [key, g] : v->grants) g->cut = true;
    // Every connection handshaken on this volume, live or not yet joined.
    for (const auto& c : conns_) {
      if (c->volume == v) conns.push_back(c);
    }
  }
  RevokeConns(conns);
  // Each connection's own thread disconnects it and releases its window
  // and QP (CmId is not thread-safe: nobody else touches it).
  for (const auto& c : conns) c->stop.store(true);
  // The mapping must stay usable until no connection can reach it: wait
  // for each connection to release its window and QP (which drop their
  // reference to the region).
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  for (const auto& c : conns) {
    while (!c->done.load() && absl::Now() < deadline)
      absl::SleepFor(absl::Milliseconds(5));
  }
  return absl::OkStatus();
}

absl::StatusOr<GrantInfo> VerbsFabric::Grant(const GrantKey& key,
                                             Access access) {
  absl::MutexLock l(&mu_);
  auto it = volumes_.find(key.volume);
  if (it == volumes_.end()) {
    return absl::FailedPreconditionError(
        absl::StrCat("volume ", key.volume, " is not registered"));
  }
  Volume& v = *it->second;
  if (key.epoch < v.min_epoch) {
    return absl::PermissionDeniedError(
        absl::StrCat("grant ", key.DebugString(),
                     ": stale epoch (the volume is at ", v.min_epoch, ")"));
  }
  auto& g = v.grants[key];
  if (g == nullptr) {
    g = std::make_shared<GrantState>();
    g->key = key;
    g->access = access;
    g->credential = GrantCredential(options_.secret, key, access);
  } else if (g->cut) {
    return absl::PermissionDeniedError(
        absl::StrCat("grant ", key.DebugString(), " was revoked"));
  } else if (g->access != access) {
    return absl::FailedPreconditionError(
        absl::StrCat("grant ", key.DebugString(), " exists with other access"));
  }
  GrantInfo info;
  info.key = key;
  info.access = access;
  info.fabric = "verbs";
  info.endpoint = endpoint_;
  info.credential = g->credential;
  info.size_bytes = v.region.length;
  return info;
}

absl::StatusOr<bool> VerbsFabric::Invalidate(const GrantKey& key) {
  std::vector<std::shared_ptr<Conn>> conns;
  {
    absl::MutexLock l(&mu_);
    auto it = volumes_.find(key.volume);
    if (it == volumes_.end()) return false;
    auto& g = it->second->grants[key];
    if (g == nullptr) {
      // Never granted: remember the key as cut so it never starts.
      g = std::make_shared<GrantState>();
      g->key = key;
      g->cut = true;
      return false;
    }
    if (g->cut) return false;
    g->cut = true;
    conns.assign(g->conns.begin(), g->conns.end());
  }
  RevokeConns(conns);
  base::LogInfo(
      "fabric.invalidated",
      {{"grant", key.DebugString()}, {"windows", absl::StrCat(conns.size())}});
  return true;
}

absl::StatusOr<int> VerbsFabric::InvalidateBefore(const std::string& volume,
                                                  int64_t epoch) {
  std::vector<GrantKey> keys;
  {
    absl::MutexLock l(&mu_);
    auto it = volumes_.find(volume);
    if (it == volumes_.end()) return 0;
    it->second->min_epoch = std::max(it->second->min_epoch, epoch);
    for (const auto& [k, g] : it->second->grants) {
      if (k.epoch < epoch && !g->cut) keys.push_back(k);
    }
  }
  int n = 0;
  for (const auto& k : keys) {
    ASSIGN_OR_RETURN(bool cut, Invalidate(k));
    n += cut ? 1 : 0;
  }
  return n;
}

VerbsFabricStats VerbsFabric::stats() const {
  VerbsFabricStats s;
  {
    absl::MutexLock l(&mu_);
    s = stats_;
    s.connections = 0;
    for (const auto& c : conns_) s.connections += c->done.load() ? 0 : 1;
  }
  s.pooled_windows = pool_.available();
  s.pool_misses = pool_.misses();
  return s;
}

// ---- holder side ----------------------------------------------------------

namespace {

// One connection to an owner, in acquisition order (released in reverse).
struct HolderConn {
  std::optional<rdma::EventChannel> channel;
  std::optional<rdma::CmId> id;
  std::optional<rdma::ProtectionDomain> pd;
  std::optional<rdma::CompletionQueue> cq;
  std::vector<char> buf = std::vector<char>(kBounceBytes + 2 * kMsgBytes);
  std::optional<rdma::MemoryRegion> mr;
  // A request's reply lands here (registered while it is awaited). Before
  // the QP: a receive still posted in it goes with the QP first.
  std::string reply;
  std::optional<rdma::MemoryRegion> reply_mr;
  std::optional<rdma::CmQueuePair> qp;
  uint64_t raddr = 0;
  uint32_t rkey = 0;
  uint64_t size = 0;
  uint32_t features = 0;  // the owner's kVerbsFeature* bits
  uint64_t next_wr = 100;
  // When the rdma_cm channel was last looked at (or an op completed: a
  // completion shows the connection was up then).
  absl::Time last_check = absl::InfinitePast();

  ~HolderConn() {
    if (id.has_value()) (void)id->Disconnect();
  }
};

absl::Status Unavailable(absl::string_view endpoint, const absl::Status& st) {
  return absl::UnavailableError(
      absl::StrCat("verbs fabric ", endpoint, ": ", st.message()));
}

absl::StatusOr<std::unique_ptr<HolderConn>> Dial(const GrantInfo& grant) {
  ASSIGN_OR_RETURN(auto hp, ParseVerbsEndpoint(grant.endpoint));
  auto c = std::make_unique<HolderConn>();
  auto ch = rdma::EventChannel::Create();
  if (!ch.ok()) return Unavailable(grant.endpoint, ch.status());
  c->channel.emplace(*std::move(ch));
  auto id = rdma::CmId::Create(*c->channel);
  if (!id.ok()) return Unavailable(grant.endpoint, id.status());
  c->id.emplace(*std::move(id));
  if (absl::Status st = c->id->Resolve(hp.first, hp.second, kStep); !st.ok())
    return Unavailable(grant.endpoint, st);
  ASSIGN_OR_RETURN(rdma::ProtectionDomain pd,
                   rdma::ProtectionDomain::Allocate(c->id->verbs()));
  c->pd.emplace(std::move(pd));
  ASSIGN_OR_RETURN(rdma::CompletionQueue cq,
                   rdma::CompletionQueue::Create(c->id->verbs(), 64));
  c->cq.emplace(std::move(cq));
  ASSIGN_OR_RETURN(
      rdma::MemoryRegion mr,
      rdma::MemoryRegion::Register(*c->pd, c->buf.data(), c->buf.size(),
                                   rdma::kLocalWrite));
  c->mr.emplace(std::move(mr));
  rdma::QueuePairCaps caps;
  caps.max_send_wr = 2 * kOpsInFlight + 4;
  ASSIGN_OR_RETURN(rdma::CmQueuePair qp,
                   rdma::CmQueuePair::Create(*c->id, *c->pd, *c->cq, caps));
  c->qp.emplace(std::move(qp));
  char* in = c->buf.data() + kBounceBytes;
  char* out = in + kMsgBytes;
  RETURN_IF_ERROR(c->qp->ops().PostRecv(*c->mr, in, kMsgBytes, kWrRecv));
  if (auto pd_or = c->id->Connect("", kStep); !pd_or.ok())
    return Unavailable(grant.endpoint, pd_or.status());

  agent::v1::FabricHello hello;
  hello.set_version(1);
  hello.set_volume_id(grant.key.volume);
  hello.set_lease_uid(grant.key.lease_uid);
  hello.set_holder_node(grant.key.holder_node);
  hello.set_epoch(grant.key.epoch);
  hello.set_access(grant.access == Access::kReadWrite ? agent::v1::READ_WRITE
                                                      : agent::v1::READ_ONLY);
  hello.set_credential(grant.credential);
  std::string bytes = hello.SerializeAsString();
  if (bytes.size() > kMsgBytes)
    return absl::InvalidArgumentError("FabricHello too large");
  std::memcpy(out, bytes.data(), bytes.size());
  RETURN_IF_ERROR(c->qp->ops().PostSend(*c->mr, out, bytes.size(), kWrSend));
  ASSIGN_OR_RETURN(rdma::WorkCompletion sent, WaitFor(*c->cq, kWrSend, kStep));
  if (!sent.ok())
    return Unavailable(grant.endpoint, CompletionStatus(sent, "hello"));
  auto got = WaitFor(*c->cq, kWrRecv, kStep);
  if (!got.ok()) return Unavailable(grant.endpoint, got.status());
  if (!got->ok())
    return Unavailable(grant.endpoint, CompletionStatus(*got, "reply"));
  ASSIGN_OR_RETURN(VerbsHelloReply reply,
                   DecodeHelloReply(absl::string_view(in, got->byte_len)));
  if (reply.code != 0) {
    return absl::Status(
        static_cast<absl::StatusCode>(reply.code),
        absl::StrCat("owner ", grant.endpoint, " refused: ", reply.message));
  }
  c->raddr = reply.addr;
  c->rkey = reply.rkey;
  c->size = reply.size_bytes;
  c->features = reply.features;
  c->last_check = absl::Now();
  return c;
}

// Whether the owner ended the connection: an rdma_cm event is waiting on
// its channel (DISCONNECTED, or anything else, which ends it too).
bool OwnerGone(HolderConn& c) {
  pollfd p{c.channel->fd(), POLLIN, 0};
  if (::poll(&p, 1, 0) <= 0) return false;
  absl::Status ev = c.id->WaitForDisconnect(absl::ZeroDuration());
  return !absl::IsDeadlineExceeded(ev);
}

// The next completion on the connection's CQ. ibv_poll_cq reads a queue in
// shared memory, no system call. A small transfer spins for up to kSpinFor;
// a larger one for kSpinsBeforeSleep polls; then each waits in poll(2) on
// the rdma_cm channel between polls (kSleepMicros), so an owner that
// disconnects ends the wait (UNAVAILABLE) instead of the deadline.
absl::StatusOr<rdma::WorkCompletion> NextCompletion(
    HolderConn& c, bool small, absl::Time deadline,
    int sleep_micros = kSleepMicros) {
  const absl::Time start = small ? absl::Now() : absl::InfinitePast();
  for (uint64_t spins = 1;; ++spins) {
    ASSIGN_OR_RETURN(std::optional<rdma::WorkCompletion> wc, c.cq->Poll());
    if (wc.has_value()) return std::move(*wc);
    if (small) {
      if ((spins & 0x3f) != 0 || absl::Now() - start < kSpinFor) continue;
      small = false;  // not so small after all: wait as a large one
    } else if (spins < kSpinsBeforeSleep) {
      continue;
    }
    if (absl::Now() > deadline)
      return absl::DeadlineExceededError("no completion before the timeout");
    pollfd p{c.channel->fd(), POLLIN, 0};
    const timespec nap{0, sleep_micros * 1000};
    if (::ppoll(&p, 1, &nap, nullptr) > 0 && OwnerGone(c)) {
      return absl::UnavailableError("the owner disconnected");
    }
  }
}

class VerbsRemoteRegion final : public RemoteRegion {
 public:
  VerbsRemoteRegion(GrantInfo grant, std::unique_ptr<HolderConn> conn)
      : grant_(std::move(grant)), size_(conn->size), conn_(std::move(conn)) {}

  uint64_t size() const override { return size_; }

  absl::Status Read(uint64_t offset, absl::Span<char> out) override {
    absl::MutexLock l(&mu_);
    RETURN_IF_ERROR(Usable(offset, out.size()));
    for (uint64_t done = 0; done < out.size();) {
      const uint64_t n = std::min<uint64_t>(out.size() - done, kBounceBytes);
      RETURN_IF_ERROR(Transfer(false, offset + done, n));
      std::memcpy(out.data() + done, conn_->buf.data(), n);
      done += n;
    }
    return absl::OkStatus();
  }

  absl::Status Write(uint64_t offset, absl::Span<const char> data) override {
    absl::MutexLock l(&mu_);
    if (grant_.access != Access::kReadWrite)
      return absl::PermissionDeniedError("grant is read-only");
    RETURN_IF_ERROR(Usable(offset, data.size()));
    for (uint64_t done = 0; done < data.size();) {
      const uint64_t n = std::min<uint64_t>(data.size() - done, kBounceBytes);
      std::memcpy(conn_->buf.data(), data.data() + done, n);
      RETURN_IF_ERROR(Transfer(true, offset + done, n));
      done += n;
    }
    return absl::OkStatus();
  }

  // A read-after-write: an RDMA READ on the QP every write went through
  // completes only after those writes were placed in the owner's memory.
  absl::Status Persist(uint64_t offset, uint64_t len) override {
    absl::MutexLock l(&mu_);
    RETURN_IF_ERROR(Usable(offset, len));
    const uint64_t at = len == 0 ? offset : offset + len - 1;
    if (at >= size_) return absl::OkStatus();
    return Transfer(false, at, 1);
  }

  // One DIGESTS request (VerbsRequest) and its reply, received into a
  // buffer registered for it and posted before the request is sent.
  absl::StatusOr<std::string> Digests(uint64_t offset, uint64_t len,
                                      uint64_t chunk) override {
    absl::MutexLock l(&mu_);
    RETURN_IF_ERROR(Usable(offset, len));
    if (chunk == 0 || offset % chunk != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("digests of [", offset, ", +", len, ") in chunks of ",
                       chunk, " bytes: the offset is not at a chunk"));
    }
    const uint64_t want = (len / chunk + (len % chunk != 0)) * kDigestBytes;
    if (want > kMaxDigestsReply) {
      return absl::InvalidArgumentError(absl::StrCat(
          "digests of [", offset, ", +", len, ") in chunks of ", chunk,
          " bytes: ", want, " bytes of digests, more than one request takes (",
          kMaxDigestsReply, ")"));
    }
    if ((conn_->features & kVerbsFeatureRequests) == 0) {
      return absl::UnimplementedError(
          absl::StrCat("the owner ", grant_.endpoint,
                       " serves no chunk digests over verbs (an agent of an "
                       "earlier version)"));
    }
    HolderConn& c = *conn_;
    c.reply.assign(VerbsReplyBytes(want), '\0');
    auto mr = rdma::MemoryRegion::Register(*c.pd, c.reply.data(),
                                           c.reply.size(), rdma::kLocalWrite);
    if (!mr.ok()) return mr.status();
    c.reply_mr.emplace(*std::move(mr));
    VerbsRequest req;
    req.offset = offset;
    req.length = len;
    req.chunk = chunk;
    req.reply_capacity = c.reply.size();
    const std::string bytes = EncodeVerbsRequest(req);
    char* out = c.buf.data() + kBounceBytes + kMsgBytes;
    std::memcpy(out, bytes.data(), bytes.size());
    const uint64_t recv_id = c.next_wr++;
    const uint64_t send_id = c.next_wr++;
    absl::Status st = c.qp->ops().PostRecv(*c.reply_mr, c.reply.data(),
                                           c.reply.size(), recv_id);
    if (st.ok()) st = c.qp->ops().PostSend(*c.mr, out, bytes.size(), send_id);
    // The owner hashes the range before it answers.
    const absl::Time deadline =
        absl::Now() + kOpTimeout +
        absl::Seconds(static_cast<int64_t>(len / kHashedBytesPerSecond));
    bool sent = false, received = false;
    uint32_t got = 0;
    while (st.ok() && !(sent && received)) {
      absl::StatusOr<rdma::WorkCompletion> wc =
          NextCompletion(c, false, deadline, kReplySleepMicros);
      if (!wc.ok()) {
        st = wc.status();
      } else if (wc->wr_id == send_id || wc->wr_id == recv_id) {
        const bool is_send = wc->wr_id == send_id;
        (is_send ? sent : received) = true;
        got = is_send ? got : wc->byte_len;
        if (!wc->ok()) {
          st = absl::UnavailableError(absl::StrCat(
              is_send ? "the DIGESTS request" : "the DIGESTS reply",
              " failed: ", wc->status_text));
        }
      }  // else: a late completion of an earlier call
    }
    if (!st.ok()) {
      // The receive may still be posted: the QP goes first (with conn_),
      // then the reply buffer. The next call reconnects.
      conn_.reset();
      return absl::UnavailableError(
          absl::StrCat("verbs fabric ", grant_.endpoint,
                       ": no reply to DIGESTS (", st.message(), ")"));
    }
    c.last_check = absl::Now();
    absl::StatusOr<VerbsReply> reply =
        DecodeVerbsReply(absl::string_view(c.reply.data(), got));
    c.reply_mr.reset();
    std::string().swap(c.reply);
    if (!reply.ok()) return reply.status();
    if (reply->code != 0) {
      absl::Status refused(static_cast<absl::StatusCode>(reply->code),
                           absl::StrCat("owner ", grant_.endpoint,
                                        " refused DIGESTS: ", reply->message));
      if (absl::IsPermissionDenied(refused)) revoked_ = refused;
      return refused;
    }
    if (reply->payload.size() != want) {
      return absl::DataLossError(absl::StrCat(
          "DIGESTS reply of ", reply->payload.size(), " bytes, not ", want));
    }
    return std::move(reply->payload);
  }

 private:
  // In range, and connected (reconnecting with the grant when the last
  // connection failed or the owner disconnected it).
  absl::Status Usable(uint64_t offset, uint64_t len)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (offset > size_ || len > size_ - offset) {
      return absl::OutOfRangeError(absl::StrCat(
          "[", offset, ", +", len, ") outside the volume (", size_, " bytes)"));
    }
    if (!revoked_.ok()) return revoked_;
    if (conn_ != nullptr) {
      // A disconnect from the owner (or any other event) ends this QP. Not
      // looked at before every op (a system call each): only when the
      // connection was idle, and while an op waits (NextCompletion).
      const absl::Time now = absl::Now();
      if (now - conn_->last_check > kIdleCheck) {
        conn_->last_check = now;
        if (OwnerGone(*conn_)) conn_.reset();
      }
    }
    if (conn_ == nullptr) {
      absl::StatusOr<std::unique_ptr<HolderConn>> c = Dial(grant_);
      if (absl::IsPermissionDenied(c.status())) revoked_ = c.status();
      if (!c.ok()) return c.status();
      conn_ = *std::move(c);
    }
    return absl::OkStatus();
  }

  // Moves [offset, offset+len) (len <= kBounceBytes) between the owner and
  // the bounce buffer, kOpBytes per op, all in flight at once.
  absl::Status Transfer(bool write, uint64_t offset, uint64_t len)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    HolderConn& c = *conn_;
    const uint64_t first = c.next_wr;
    uint64_t posted = 0;
    absl::Status st;
    for (uint64_t off = 0; off < len && st.ok(); off += kOpBytes) {
      const uint64_t n = std::min<uint64_t>(len - off, kOpBytes);
      char* local = c.buf.data() + off;
      const uint64_t raddr = c.raddr + offset + off;
      st =
          write
              ? c.qp->ops().PostWrite(*c.mr, local, n, raddr, c.rkey, c.next_wr)
              : c.qp->ops().PostRead(*c.mr, local, n, raddr, c.rkey, c.next_wr);
      if (st.ok()) {
        ++c.next_wr;
        ++posted;
      }
    }
    absl::Status failed = st;
    const absl::Time deadline = absl::Now() + kOpTimeout;
    for (uint64_t got = 0; got < posted;) {
      absl::StatusOr<rdma::WorkCompletion> wc =
          NextCompletion(c, len <= kSpinOnlyBytes, deadline);
      if (!wc.ok()) {
        failed = wc.status();
        break;
      }
      if (wc->wr_id < first) continue;  // a late one of an earlier call
      ++got;
      if (!wc->ok() && failed.ok()) {
        // 10 = IBV_WC_REM_ACCESS_ERR: the owner refused our key.
        failed = wc->status == 10
                     ? absl::PermissionDeniedError(absl::StrCat(
                           "revoked: the owner refused the RDMA ",
                           write ? "WRITE" : "READ", " (", wc->status_text,
                           "): its memory window was invalidated"))
                     : absl::UnavailableError(
                           absl::StrCat("RDMA ", write ? "WRITE" : "READ",
                                        " failed: ", wc->status_text));
      }
    }
    if (failed.ok()) {
      c.last_check = absl::Now();
      return failed;
    }
    // The QP is in the error state (or its completions are lost): drop the
    // connection, the next call reconnects with the grant.
    conn_.reset();
    if (absl::IsPermissionDenied(failed)) failed = ConfirmRefusal(failed);
    return failed;
  }

  // The owner refused our key. Revoked, or did the owner go away (a
  // stopping owner invalidates its windows before it disconnects, and the
  // disconnect is not looked for before every op)? Its handshake says:
  // refused (PERMISSION_DENIED: revoked, sticky), or admitted again (an
  // owner restarted: UNAVAILABLE, the caller retries), or unreachable.
  absl::Status ConfirmRefusal(const absl::Status& refused)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    absl::StatusOr<std::unique_ptr<HolderConn>> c = Dial(grant_);
    if (absl::IsPermissionDenied(c.status())) {
      revoked_ = absl::PermissionDeniedError(
          absl::StrCat(refused.message(), "; ", c.status().message()));
      return revoked_;
    }
    if (!c.ok()) {
      return absl::UnavailableError(
          absl::StrCat("the owner refused the key and is not reachable: ",
                       c.status().message()));
    }
    conn_ = *std::move(c);
    return absl::UnavailableError(
        "the owner refused the key, then admitted the grant again: retry");
  }

  absl::Mutex mu_;
  const GrantInfo grant_;
  const uint64_t size_;
  std::unique_ptr<HolderConn> conn_ ABSL_GUARDED_BY(mu_);
  absl::Status revoked_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

absl::StatusOr<std::unique_ptr<RemoteRegion>> VerbsConnector::Connect(
    const GrantInfo& grant) {
  ASSIGN_OR_RETURN(std::unique_ptr<HolderConn> c, Dial(grant));
  return std::make_unique<VerbsRemoteRegion>(grant, std::move(c));
}

absl::StatusOr<std::unique_ptr<RemoteRegion>> AnyConnector::Connect(
    const GrantInfo& grant) {
  if (FabricOf(grant.endpoint) == "verbs") return verbs_.Connect(grant);
  return tcp_.Connect(grant);
}

// ---- helpers ----------------------------------------------------------------

absl::StatusOr<std::pair<std::string, uint16_t>> ParseVerbsEndpoint(
    absl::string_view endpoint) {
  if (!absl::StartsWith(endpoint, kScheme)) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", endpoint, "' is not a verbs:// endpoint"));
  }
  ASSIGN_OR_RETURN(auto hp, SplitIpPort(endpoint.substr(strlen(kScheme))));
  if (hp.first.empty() || hp.second == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", endpoint, "' needs an address and a port"));
  }
  return hp;
}

namespace {
void PutU32(std::string& s, uint32_t v) {
  for (int i = 0; i < 4; ++i) s.push_back(static_cast<char>(v >> (8 * i)));
}
void PutU64(std::string& s, uint64_t v) {
  for (int i = 0; i < 8; ++i) s.push_back(static_cast<char>(v >> (8 * i)));
}
uint64_t GetLe(absl::string_view s, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i)
    v |= uint64_t{static_cast<unsigned char>(s[at + i])} << (8 * i);
  return v;
}
constexpr uint32_t kReplyMagic = 0x44584c56;  // "VLXD"
constexpr size_t kReplyHeader = 4 + 4 + 8 + 8 + 4 + 4;
constexpr uint32_t kRequestMagic = 0x51524456;  // "VDRQ"
constexpr size_t kRequestBytes = 4 + 4 + 4 + 4 + 8 + 8 + 8 + 8;
constexpr uint32_t kAnswerMagic = 0x50524456;  // "VDRP"
constexpr size_t kAnswerHeader = 4 + 4 + 4 + 4 + 8;
}  // namespace

// magic, version, op, 0, offset, length, chunk, reply capacity.
std::string EncodeVerbsRequest(const VerbsRequest& r) {
  std::string s;
  PutU32(s, kRequestMagic);
  PutU32(s, r.version);
  PutU32(s, r.op);
  PutU32(s, 0);
  PutU64(s, r.offset);
  PutU64(s, r.length);
  PutU64(s, r.chunk);
  PutU64(s, r.reply_capacity);
  return s;
}

absl::StatusOr<VerbsRequest> DecodeVerbsRequest(absl::string_view b) {
  if (b.size() < kRequestBytes || GetLe(b, 0, 4) != kRequestMagic)
    return absl::DataLossError("malformed verbs fabric request");
  VerbsRequest r;
  r.version = static_cast<uint32_t>(GetLe(b, 4, 4));
  r.op = static_cast<uint32_t>(GetLe(b, 8, 4));
  r.offset = GetLe(b, 16, 8);
  r.length = GetLe(b, 24, 8);
  r.chunk = GetLe(b, 32, 8);
  r.reply_capacity = GetLe(b, 40, 8);
  return r;
}

uint64_t VerbsReplyBytes(uint64_t payload_bytes) {
  return kAnswerHeader + kVerbsReplyMessageBytes + payload_bytes;
}

// magic, version 1, code, message length, payload length, message,
// payload; the message cut to kVerbsReplyMessageBytes.
std::string EncodeVerbsReply(const VerbsReply& r) {
  const absl::string_view message =
      absl::string_view(r.message).substr(0, kVerbsReplyMessageBytes);
  std::string s;
  PutU32(s, kAnswerMagic);
  PutU32(s, 1);
  PutU32(s, static_cast<uint32_t>(r.code));
  PutU32(s, static_cast<uint32_t>(message.size()));
  PutU64(s, r.payload.size());
  s.append(message.data(), message.size());
  s += r.payload;
  return s;
}

absl::StatusOr<VerbsReply> DecodeVerbsReply(absl::string_view b) {
  if (b.size() < kAnswerHeader || GetLe(b, 0, 4) != kAnswerMagic)
    return absl::DataLossError("malformed verbs fabric request reply");
  if (GetLe(b, 4, 4) != 1)
    return absl::DataLossError("verbs fabric request reply of another version");
  VerbsReply r;
  const uint64_t code = GetLe(b, 8, 4);
  const uint64_t n = GetLe(b, 12, 4);
  const uint64_t p = GetLe(b, 16, 8);
  if (code > 16)
    return absl::DataLossError(
        "verbs fabric request reply with an unknown code");
  if (n > b.size() - kAnswerHeader || p != b.size() - kAnswerHeader - n)
    return absl::DataLossError("truncated verbs fabric request reply");
  r.code = static_cast<int32_t>(code);
  r.message = std::string(b.substr(kAnswerHeader, n));
  r.payload = std::string(b.substr(kAnswerHeader + n, p));
  return r;
}

// magic, code, size, addr, rkey, message length, message, features;
// little-endian. An owner of an earlier version sends no features (a
// holder of an earlier version ignores them).
std::string EncodeHelloReply(const VerbsHelloReply& r) {
  std::string s;
  PutU32(s, kReplyMagic);
  PutU32(s, static_cast<uint32_t>(r.code));
  PutU64(s, r.size_bytes);
  PutU64(s, r.addr);
  PutU32(s, r.rkey);
  PutU32(s, static_cast<uint32_t>(r.message.size()));
  s += r.message;
  PutU32(s, r.features);
  return s;
}

absl::StatusOr<VerbsHelloReply> DecodeHelloReply(absl::string_view b) {
  if (b.size() < kReplyHeader || GetLe(b, 0, 4) != kReplyMagic)
    return absl::DataLossError("malformed verbs fabric reply");
  VerbsHelloReply r;
  r.code = static_cast<int32_t>(GetLe(b, 4, 4));
  r.size_bytes = GetLe(b, 8, 8);
  r.addr = GetLe(b, 16, 8);
  r.rkey = static_cast<uint32_t>(GetLe(b, 24, 4));
  const uint64_t n = GetLe(b, 28, 4);
  if (n > b.size() - kReplyHeader)
    return absl::DataLossError("truncated verbs fabric reply");
  r.message = std::string(b.substr(kReplyHeader, n));
  if (b.size() - kReplyHeader - n >= 4)
    r.features = static_cast<uint32_t>(GetLe(b, kReplyHeader + n, 4));
  if (r.code < 0 || r.code > 16)
    return absl::DataLossError("verbs fabric reply with an unknown code");
  return r;
}

absl::Status RegistrationRefusal(const std::string& volume,
                                 const std::string& device,
                                 const absl::Status& pinned, bool odp) {
  if (!absl::IsFailedPrecondition(pinned)) return pinned;
  return absl::FailedPreconditionError(absl::StrCat(
      "volume ", volume, " cannot be shared over RDMA verbs: the kernel ",
      "refuses to pin its mapping (", pinned.message(),
      "; a file on fsdax cannot be pinned long-term, by design), and ",
      odp ? "the on-demand (ODP) registration failed too"
          : absl::StrCat("RDMA device ", device.empty() ? "here" : device,
                         " has no on-demand paging (ODP)"),
      ": share a devdax volume over verbs, or run the agents with "
      "--fabric=tcp"));
}

}  // namespace daxlease::fabric
