#include "lib/rdma/cm.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <rdma/rdma_cma.h>

#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "lib/base/status.h"

namespace daxlease::rdma {
namespace {

constexpr int kRdmaTimeoutMs = 5000;

// One event, copied out of librdmacm's buffer (which is freed on ack).
struct Event {
  rdma_cm_event_type type;
  int status;
  rdma_cm_id* id;
  std::string private_data;
};

absl::StatusOr<Event> NextEvent(rdma_event_channel* ch,
                                absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    int64_t left_ms = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (left_ms < 0) left_ms = 0;
    pollfd p{ch->fd, POLLIN, 0};
    int rc = ::poll(&p, 1, static_cast<int>(left_ms));
    if (rc < 0 && errno == EINTR) continue;
    if (rc < 0) return base::ErrnoStatus("poll", "rdma_cm channel", errno);
    if (rc == 0)
      return absl::DeadlineExceededError("no rdma_cm event before the timeout");
    rdma_cm_event* ev = nullptr;
    if (rdma_get_cm_event(ch, &ev) != 0)
      return base::ErrnoStatus("rdma_get_cm_event", "", errno);
    Event out{ev->event, ev->status, ev->id, {}};
    if (ev->param.conn.private_data != nullptr &&
        ev->param.conn.private_data_len > 0 &&
        (ev->event == RDMA_CM_EVENT_CONNECT_REQUEST ||
         ev->event == RDMA_CM_EVENT_ESTABLISHED)) {
      out.private_data.assign(
          static_cast<const char*>(ev->param.conn.private_data),
          ev->param.conn.private_data_len);
    }
    rdma_ack_cm_event(ev);
    return out;
  }
}

// Waits for `want` on `id`; any other event for it is an error.
absl::StatusOr<Event> Expect(rdma_event_channel* ch, rdma_cm_id* id,
                             rdma_cm_event_type want, absl::Duration timeout) {
  ASSIGN_OR_RETURN(Event ev, NextEvent(ch, timeout));
  if (ev.type != want || (id != nullptr && ev.id != id)) {
    absl::StatusCode code = ev.type == RDMA_CM_EVENT_REJECTED ||
                                    ev.type == RDMA_CM_EVENT_UNREACHABLE ||
                                    ev.type == RDMA_CM_EVENT_CONNECT_ERROR
                                ? absl::StatusCode::kUnavailable
                                : absl::StatusCode::kInternal;
    return absl::Status(
        code,
        absl::StrCat("rdma_cm: expected ", rdma_event_str(want), ", got ",
                     rdma_event_str(ev.type), " (status ", ev.status, ")"));
  }
  return ev;
}

absl::StatusOr<sockaddr_in> Ipv4(absl::string_view ip, uint16_t port) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  std::string s(ip);
  if (inet_pton(AF_INET, s.c_str(), &sa.sin_addr) != 1)
    return absl::InvalidArgumentError(absl::StrCat("not an IPv4 address: ", s));
  return sa;
}

rdma_conn_param ConnParam(absl::string_view private_data) {
  rdma_conn_param p{};
  p.private_data = private_data.data();
  p.private_data_len = static_cast<uint8_t>(private_data.size());
  p.responder_resources = 4;
  p.initiator_depth = 4;
  p.retry_count = 7;
  p.rnr_retry_count = 7;
  return p;
}

}  // namespace

// ---------------------------------------------------------------- channel
absl::StatusOr<EventChannel> EventChannel::Create() {
  errno = 0;
  rdma_event_channel* ch = rdma_create_event_channel();
  if (ch == nullptr)
    return base::ErrnoStatus("rdma_create_event_channel", "",
                             errno ? errno : EIO);
  return EventChannel(ch);
}

int EventChannel::fd() const { return ch_->fd; }

void EventChannel::Deleter::operator()(rdma_event_channel* ch) const {
  rdma_destroy_event_channel(ch);
}

// ---------------------------------------------------------------- id
absl::StatusOr<CmId> CmId::Create(EventChannel& channel) {
  rdma_cm_id* id = nullptr;
  if (rdma_create_id(channel.get(), &id, nullptr, RDMA_PS_TCP) != 0)
    return base::ErrnoStatus("rdma_create_id", "", errno);
  return CmId(id, channel.get());
}

void CmId::Deleter::operator()(rdma_cm_id* id) const { rdma_destroy_id(id); }

ibv_context* CmId::verbs() const { return id_->verbs; }

absl::Status CmId::Listen(absl::string_view ip, uint16_t port, int backlog) {
  ASSIGN_OR_RETURN(sockaddr_in sa, Ipv4(ip, port));
  if (rdma_bind_addr(id_.get(), reinterpret_cast<sockaddr*>(&sa)) != 0)
    return base::ErrnoStatus("rdma_bind_addr", absl::StrCat(ip, ":", port),
                             errno);
  if (rdma_listen(id_.get(), backlog) != 0)
    return base::ErrnoStatus("rdma_listen", absl::StrCat(ip, ":", port), errno);
  return absl::OkStatus();
}

absl::StatusOr<ConnectRequest> CmId::WaitForRequest(absl::Duration timeout) {
  ASSIGN_OR_RETURN(
      Event ev, Expect(ch_, nullptr, RDMA_CM_EVENT_CONNECT_REQUEST, timeout));
  return ConnectRequest{CmId(ev.id, ch_), std::move(ev.private_data)};
}

absl::Status CmId::Accept(absl::string_view private_data,
                          absl::Duration timeout) {
  rdma_conn_param p = ConnParam(private_data);
  if (rdma_accept(id_.get(), &p) != 0)
    return base::ErrnoStatus("rdma_accept", "", errno);
  return Expect(ch_, id_.get(), RDMA_CM_EVENT_ESTABLISHED, timeout).status();
}

absl::Status CmId::Resolve(absl::string_view ip, uint16_t port,
                           absl::Duration timeout) {
  ASSIGN_OR_RETURN(sockaddr_in sa, Ipv4(ip, port));
  if (rdma_resolve_addr(id_.get(), nullptr, reinterpret_cast<sockaddr*>(&sa),
                        kRdmaTimeoutMs) != 0)
    return base::ErrnoStatus("rdma_resolve_addr", absl::StrCat(ip, ":", port),
                             errno);
  RETURN_IF_ERROR(
      Expect(ch_, id_.get(), RDMA_CM_EVENT_ADDR_RESOLVED, timeout).status());
  if (rdma_resolve_route(id_.get(), kRdmaTimeoutMs) != 0)
    return base::ErrnoStatus("rdma_resolve_route", absl::StrCat(ip, ":", port),
                             errno);
  return Expect(ch_, id_.get(), RDMA_CM_EVENT_ROUTE_RESOLVED, timeout).status();
}

absl::StatusOr<std::string> CmId::Connect(absl::string_view private_data,
                                          absl::Duration timeout) {
  rdma_conn_param p = ConnParam(private_data);
  if (rdma_connect(id_.get(), &p) != 0)
    return base::ErrnoStatus("rdma_connect", "", errno);
  ASSIGN_OR_RETURN(Event ev,
                   Expect(ch_, id_.get(), RDMA_CM_EVENT_ESTABLISHED, timeout));
  return std::move(ev.private_data);
}

absl::Status CmId::Disconnect() {
  if (disconnected_) return absl::OkStatus();
  if (rdma_disconnect(id_.get()) != 0 && errno != EINVAL)
    return base::ErrnoStatus("rdma_disconnect", "", errno);
  disconnected_ = true;
  return absl::OkStatus();
}

absl::Status CmId::WaitForDisconnect(absl::Duration timeout) {
  RETURN_IF_ERROR(
      Expect(ch_, id_.get(), RDMA_CM_EVENT_DISCONNECTED, timeout).status());
  disconnected_ = true;
  return absl::OkStatus();
}

absl::Status CmId::MigrateTo(EventChannel& channel) {
  if (rdma_migrate_id(id_.get(), channel.get()) != 0)
    return base::ErrnoStatus("rdma_migrate_id", "", errno);
  ch_ = channel.get();
  return absl::OkStatus();
}

uint16_t CmId::LocalPort() const { return ntohs(rdma_get_src_port(id_.get())); }

// ---------------------------------------------------------------- qp
absl::StatusOr<CmQueuePair> CmQueuePair::Create(CmId& id,
                                                const ProtectionDomain& pd,
                                                const CompletionQueue& cq,
                                                const QueuePairCaps& caps) {
  ibv_qp_init_attr ia{};
  FillRcQueuePairAttr(cq, caps, &ia);
  if (rdma_create_qp(id.id_.get(), pd.get(), &ia) != 0)
    return base::ErrnoStatus("rdma_create_qp", "", errno);
  return CmQueuePair(id.id_.get());
}

void CmQueuePair::Deleter::operator()(rdma_cm_id* id) const {
  rdma_destroy_qp(id);
}

ibv_qp* CmQueuePair::get() const { return id_->qp; }

}  // namespace daxlease::rdma
