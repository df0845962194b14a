#include "node-agent/fabric/tcp_fabric.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "lib/base/log.h"
#include "lib/base/status.h"
#include "node-agent/fabric/admit.h"
#include "node-agent/fabric/wire.h"
#include "proto/agent.pb.h"

namespace daxlease::fabric {

struct TcpFabric::GrantState {
  GrantKey key;
  Access access = Access::kReadOnly;
  std::string credential;
  // Set (under TcpFabric::mu_) when the fence begins; checked by every
  // operation under `op_mu` held shared.
  std::atomic<bool> cut{false};
  // Held shared by an executing operation, exclusively by the fence.
  absl::Mutex op_mu;
  std::set<int> fds;  // guarded by TcpFabric::mu_
};

struct TcpFabric::Conn {
  explicit Conn(int f) : fd(f) {}
  int fd;
  std::atomic<bool> done{false};
  std::thread thread;
};

namespace {

absl::StatusOr<std::pair<std::string, int>> SplitHostPort(
    const std::string& hp) {
  auto colon = hp.rfind(':');
  int port = 0;
  if (colon == std::string::npos ||
      !absl::SimpleAtoi(hp.substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("address '", hp, "' is not host:port"));
  }
  std::string host = hp.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  return std::make_pair(host, port);
}

void SetNoDelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

}  // namespace

std::string FabricOf(const std::string& endpoint) {
  return endpoint.rfind("verbs://", 0) == 0 ? "verbs" : "tcp";
}

absl::Status RemoteRegion::ReadStream(uint64_t offset, uint64_t len,
                                      absl::Span<char> buf,
                                      const Landed& landed) {
  if (buf.empty() && len > 0) {
    return absl::InvalidArgumentError("ReadStream needs a buffer");
  }
  for (uint64_t done = 0; done < len;) {
    const uint64_t n = std::min<uint64_t>(buf.size(), len - done);
    RETURN_IF_ERROR(Read(offset + done, buf.subspan(0, n)));
    RETURN_IF_ERROR(landed(offset + done, buf.subspan(0, n)));
    done += n;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> RemoteRegion::Digests(uint64_t, uint64_t,
                                                  uint64_t) {
  return absl::UnimplementedError("this fabric does not serve chunk digests");
}

std::string GrantKey::DebugString() const {
  return absl::StrCat(volume, "/", lease_uid, "@", holder_node, "#", epoch);
}

absl::StatusOr<std::unique_ptr<TcpFabric>> TcpFabric::Start(
    TcpFabricOptions options) {
  if (options.secret.empty()) {
    return absl::InvalidArgumentError("TcpFabric needs a non-empty secret");
  }
  ASSIGN_OR_RETURN(auto hp, SplitHostPort(options.listen));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(hp.second));
  std::string host = hp.first.empty() ? "0.0.0.0" : hp.first;
  if (inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("listen address '", host, "' is not an IPv4 address"));
  }
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return base::ErrnoStatus("socket", options.listen, errno);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    int err = errno;
    close(fd);
    return base::ErrnoStatus("bind", options.listen, err);
  }
  if (listen(fd, 128) != 0) {
    int err = errno;
    close(fd);
    return base::ErrnoStatus("listen", options.listen, err);
  }
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  std::string endpoint = options.advertise;
  if (endpoint.empty()) {
    std::string h = host == "0.0.0.0" ? "127.0.0.1" : host;
    endpoint = absl::StrCat(h, ":", ntohs(addr.sin_port));
  }
  auto f = std::unique_ptr<TcpFabric>(
      new TcpFabric(std::move(options), fd, std::move(endpoint)));
  f->accept_thread_ = std::thread([p = f.get()] { p->AcceptLoop(); });
  return f;
}

TcpFabric::TcpFabric(TcpFabricOptions options, int listen_fd,
                     std::string endpoint)
    : options_(std::move(options)),
      listen_fd_(listen_fd),
      endpoint_(std::move(endpoint)) {}

TcpFabric::~TcpFabric() {
  stopping_.store(true);
  shutdown(listen_fd_, SHUT_RDWR);
  if (accept_thread_.joinable()) accept_thread_.join();
  close(listen_fd_);
  std::set<std::shared_ptr<Conn>> conns;
  {
    absl::MutexLock l(&mu_);
    conns = conns_;
    for (const auto& c : conns) shutdown(c->fd, SHUT_RDWR);
  }
  for (const auto& c : conns) {
    if (c->thread.joinable()) c->thread.join();
  }
}

void TcpFabric::AcceptLoop() {
  while (!stopping_.load()) {
    int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (stopping_.load()) return;
      base::LogWarn("fabric.accept_failed", {{"error", strerror(errno)}});
      // Out of fds or similar: do not spin.
      usleep(10000);
      continue;
    }
    SetNoDelay(fd);
    auto conn = std::make_shared<Conn>(fd);
    std::vector<std::shared_ptr<Conn>> finished;
    absl::MutexLock l(&mu_);
    for (auto it = conns_.begin(); it != conns_.end();) {
      if ((*it)->done.load()) {
        finished.push_back(*it);
        it = conns_.erase(it);
      } else {
        ++it;
      }
    }
    for (auto& c : finished) c->thread.join();
    if (stopping_.load()) {
      close(fd);
      return;
    }
    conns_.insert(conn);
    conn->thread = std::thread([this, conn] { Serve(conn); });
  }
}

int TcpFabric::ConnectionCount() const {
  absl::MutexLock l(&mu_);
  int n = 0;
  for (const auto& c : conns_) n += c->done.load() ? 0 : 1;
  return n;
}

absl::Status TcpFabric::RegisterVolume(Region region) {
  if (region.volume.empty() || region.base == nullptr || region.length == 0) {
    return absl::InvalidArgumentError("region needs a volume, base, length");
  }
  absl::MutexLock l(&mu_);
  if (volumes_.contains(region.volume)) {
    return absl::AlreadyExistsError(
        absl::StrCat("volume ", region.volume, " is already registered"));
  }
  auto v = std::make_shared<Volume>();
  v->region = std::move(region);
  volumes_[v->region.volume] = std::move(v);
  return absl::OkStatus();
}

absl::Status TcpFabric::DeregisterVolume(const std::string& volume) {
  std::shared_ptr<Volume> v;
  {
    absl::MutexLock l(&mu_);
    auto it = volumes_.find(volume);
    if (it == volumes_.end()) return absl::OkStatus();
    v = it->second;
  }
  std::vector<std::shared_ptr<GrantState>> grants;
  {
    absl::MutexLock l(&mu_);
    for (auto& [key, g] : v->grants) grants.push_back(g);
  }
  for (auto& g : grants) CutGrant(*g);
  absl::MutexLock l(&mu_);
  volumes_.erase(volume);
  return absl::OkStatus();
}

absl::StatusOr<GrantInfo> TcpFabric::Grant(const GrantKey& key, Access access) {
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
  } else if (g->cut.load()) {
    return absl::PermissionDeniedError(
        absl::StrCat("grant ", key.DebugString(), " was revoked"));
  } else if (g->access != access) {
    // Same lease and epoch, other access: the lease changed under us.
    return absl::FailedPreconditionError(
        absl::StrCat("grant ", key.DebugString(), " exists with other access"));
  }
  GrantInfo info;
  info.key = key;
  info.access = access;
  info.fabric = "tcp";
  info.endpoint = endpoint_;
  info.credential = g->credential;
  info.size_bytes = v.region.length;
  return info;
}

void TcpFabric::CutGrant(GrantState& g) {
  {
    absl::MutexLock l(&mu_);
    g.cut.store(true);
    for (int fd : g.fds) shutdown(fd, SHUT_RDWR);
  }
  // Waits for the operation executing now (its socket is shut down, so it
  // cannot block for long); later ones see `cut`.
  absl::WriterMutexLock w(&g.op_mu);
}

absl::StatusOr<bool> TcpFabric::Invalidate(const GrantKey& key) {
  std::shared_ptr<GrantState> g;
  {
    absl::MutexLock l(&mu_);
    auto it = volumes_.find(key.volume);
    if (it == volumes_.end()) return false;
    auto& grant = it->second->grants[key];
    if (grant == nullptr) {
      // Never granted: remember the key as cut so it never starts.
      grant = std::make_shared<GrantState>();
      grant->key = key;
      grant->cut.store(true);
      return false;
    }
    if (grant->cut.load()) return false;
    g = grant;
  }
  CutGrant(*g);
  base::LogInfo("fabric.invalidated", {{"grant", key.DebugString()}});
  return true;
}

absl::StatusOr<int> TcpFabric::InvalidateBefore(const std::string& volume,
                                                int64_t epoch) {
  std::vector<GrantKey> keys;
  {
    absl::MutexLock l(&mu_);
    auto it = volumes_.find(volume);
    if (it == volumes_.end()) return 0;
    it->second->min_epoch = std::max(it->second->min_epoch, epoch);
    for (const auto& [k, g] : it->second->grants) {
      if (k.epoch < epoch && !g->cut.load()) keys.push_back(k);
    }
  }
  int n = 0;
  for (const auto& k : keys) {
    ASSIGN_OR_RETURN(bool cut, Invalidate(k));
    n += cut ? 1 : 0;
  }
  return n;
}

void TcpFabric::Serve(std::shared_ptr<Conn> conn) {
  const int fd = conn->fd;
  std::shared_ptr<GrantState> g;
  Region region;
  auto finish = [&] {
    absl::MutexLock l(&mu_);
    if (g != nullptr) g->fds.erase(fd);
    close(fd);
    conn->done.store(true);
  };

  // Handshake.
  agent::v1::FabricHello hello;
  {
    auto frame = wire::ReadFrame(fd, 64 * 1024);
    if (!frame.ok() || !hello.ParseFromString(*frame)) {
      finish();
      return;
    }
  }
  const HelloRequest asked = FromHello(hello);
  const GrantKey& key = asked.key;
  absl::Status verdict;
  {
    absl::MutexLock l(&mu_);
    auto admitted = AdmitHello(volumes_, asked);
    verdict = admitted.status();
    if (admitted.ok()) {
      g = admitted->grant;
      g->fds.insert(fd);
      region = admitted->volume->region;
    }
  }
  agent::v1::FabricHelloReply reply;
  reply.set_code(static_cast<int>(verdict.code()));
  reply.set_message(std::string(verdict.message()));
  reply.set_size_bytes(verdict.ok() ? region.length : 0);
  if (!wire::WriteFrame(fd, reply.SerializeAsString()).ok() || !verdict.ok()) {
    if (!verdict.ok()) {
      base::LogWarn("fabric.hello_refused", {{"grant", key.DebugString()},
                                             {"error", verdict.ToString()}});
    }
    finish();
    return;
  }

  // Requests.
  std::string scratch;
  while (true) {
    wire::RequestHeader req;
    if (!wire::ReadFull(fd, &req, sizeof(req)).ok()) break;
    // A persist carries no payload: any range inside the volume (a whole
    // volume, from a holder of an earlier version that does not split it).
    const bool in_range =
        (req.op == wire::kOpPersist || req.op == wire::kOpDigests ||
         req.length <= wire::kMaxOpBytes) &&
        req.offset <= region.length && req.length <= region.length - req.offset;
    absl::Status st;
    bool ok_io = true;
    absl::ReaderMutexLock op(&g->op_mu);
    if (g->cut.load()) {
      st = absl::PermissionDeniedError("revoked");
    } else if (!in_range) {
      st = absl::OutOfRangeError(
          absl::StrCat("[", req.offset, ", +", req.length,
                       ") outside the volume (", region.length, " bytes)"));
    }
    switch (req.op) {
      case wire::kOpRead:
        if (st.ok()) {
          ok_io = wire::WriteReply(fd, st, region.base + req.offset, req.length)
                      .ok();
        } else {
          ok_io = wire::WriteReply(fd, st, nullptr, 0).ok();
        }
        break;
      case wire::kOpWrite:
        if (st.ok() && g->access != Access::kReadWrite) {
          st = absl::PermissionDeniedError("grant is read-only");
        }
        if (st.ok()) {
          ok_io = wire::ReadFull(fd, region.base + req.offset, req.length).ok();
        } else if (req.length <= wire::kMaxOpBytes) {
          scratch.resize(std::min<uint64_t>(req.length, 1 << 20));
          uint64_t left = req.length;
          while (ok_io && left > 0) {
            uint64_t n = std::min<uint64_t>(left, scratch.size());
            ok_io = wire::ReadFull(fd, scratch.data(), n).ok();
            left -= n;
          }
        } else {
          ok_io = false;  // cannot resynchronize the stream
        }
        if (ok_io) ok_io = wire::WriteReply(fd, st, nullptr, 0).ok();
        break;
      case wire::kOpPersist:
        if (st.ok() && region.persist)
          st = region.persist(req.offset, req.length);
        ok_io = wire::WriteReply(fd, st, nullptr, 0).ok();
        break;
      case wire::kOpDigests: {
        // Read-only grants may ask: a digest tells less than a READ.
        const uint64_t chunk = req.reserved;
        if (st.ok() && !region.digests) {
          st = absl::UnimplementedError("the owner serves no chunk digests");
        } else if (st.ok() && (chunk == 0 || req.offset % chunk != 0)) {
          st = absl::InvalidArgumentError(absl::StrCat(
              "digests of chunks of ", chunk, " bytes from ", req.offset));
        }
        std::string d;
        if (st.ok()) {
          auto got = region.digests(req.offset, req.length, chunk);
          if (got.ok()) {
            d = std::move(*got);
          } else {
            st = got.status();
          }
        }
        ok_io = wire::WriteReply(fd, st, d.data(), d.size()).ok();
        break;
      }
      default:
        ok_io = false;
        break;
    }
    if (!ok_io) break;
  }
  finish();
}

// ---- holder side ----------------------------------------------------------

namespace {

class TcpRemoteRegion final : public RemoteRegion {
 public:
  TcpRemoteRegion(int fd, uint64_t size) : fd_(fd), size_(size) {}
  ~TcpRemoteRegion() override { close(fd_); }

  uint64_t size() const override { return size_; }

  absl::Status Read(uint64_t offset, absl::Span<char> out) override {
    absl::MutexLock l(&mu_);
    RETURN_IF_ERROR(Usable());
    for (uint64_t done = 0; done < out.size();) {
      uint64_t n = std::min<uint64_t>(out.size() - done, wire::kMaxOpBytes);
      RETURN_IF_ERROR(
          Call(wire::kOpRead, offset + done, n, nullptr, out.data() + done));
      done += n;
    }
    return absl::OkStatus();
  }

  absl::Status Write(uint64_t offset, absl::Span<const char> data) override {
    absl::MutexLock l(&mu_);
    RETURN_IF_ERROR(Usable());
    for (uint64_t done = 0; done < data.size();) {
      uint64_t n = std::min<uint64_t>(data.size() - done, wire::kMaxOpBytes);
      RETURN_IF_ERROR(
          Call(wire::kOpWrite, offset + done, n, data.data() + done, nullptr));
      done += n;
    }
    return absl::OkStatus();
  }

  // Pipelined: the requests go out up to kReadStreamWindow bytes ahead of
  // the reply being received, and the owner answers them in order, so it
  // sends the next piece while `landed` works on this one (the socket
  // buffers hold what is in between). The connection is given up (broken_)
  // when the read ends early with replies still on their way.
  absl::Status ReadStream(uint64_t offset, uint64_t len, absl::Span<char> buf,
                          const Landed& landed) override {
    absl::MutexLock l(&mu_);
    RETURN_IF_ERROR(Usable());
    const uint64_t piece = std::min<uint64_t>(buf.size(), wire::kMaxOpBytes);
    if (piece == 0 && len > 0) {
      return absl::InvalidArgumentError("ReadStream needs a buffer");
    }
    uint64_t asked = 0;
    for (uint64_t got = 0; got < len;) {
      while (asked < len && asked - got < kReadStreamWindow) {
        const uint64_t n = std::min(piece, len - asked);
        wire::RequestHeader req{wire::kOpRead, 0, offset + asked, n};
        if (absl::Status st = wire::WriteFull(fd_, &req, sizeof(req));
            !st.ok()) {
          return Lost(st);
        }
        asked += n;
      }
      const uint64_t n = std::min(piece, len - got);
      absl::Status remote;
      if (absl::Status st = wire::ReadReply(fd_, &remote, buf.data(), n);
          !st.ok()) {
        return Lost(st);
      }
      absl::Status st =
          remote.ok() ? landed(offset + got, buf.subspan(0, n)) : remote;
      if (!st.ok()) {
        got += n;
        if (remote.code() == absl::StatusCode::kPermissionDenied) {
          broken_ = remote;
        } else if (got < asked) {
          // Replies to the rest are still coming: this connection's
          // request/reply order cannot be trusted any more.
          broken_ = absl::UnavailableError(absl::StrCat(
              "fabric connection given up: a pipelined read stopped with ",
              asked - got, " bytes still asked for"));
        }
        return st;
      }
      got += n;
    }
    return absl::OkStatus();
  }

  // One request (DIGESTS) for the whole range: its reply is 16 bytes per
  // chunk (64 KiB per TiB at 16 MiB chunks).
  absl::StatusOr<std::string> Digests(uint64_t offset, uint64_t len,
                                      uint64_t chunk) override {
    absl::MutexLock l(&mu_);
    RETURN_IF_ERROR(Usable());
    if (chunk == 0 || chunk > UINT32_MAX || offset % chunk != 0 ||
        offset > size_ || len > size_ - offset) {
      return absl::InvalidArgumentError(
          absl::StrCat("digests of [", offset, ", +", len, ") in chunks of ",
                       chunk, " bytes of a volume of ", size_));
    }
    std::string out((len + chunk - 1) / chunk * kDigestBytes, '\0');
    wire::RequestHeader req{wire::kOpDigests, static_cast<uint32_t>(chunk),
                            offset, len};
    absl::Status st = wire::WriteFull(fd_, &req, sizeof(req));
    absl::Status remote;
    if (st.ok()) {
      st = wire::ReadReply(fd_, &remote, out.empty() ? nullptr : out.data(),
                           out.size());
    }
    if (!st.ok()) return Lost(st);
    if (remote.code() == absl::StatusCode::kPermissionDenied) broken_ = remote;
    if (!remote.ok()) return remote;
    return out;
  }

  // In requests of at most kMaxOpBytes like Read and Write: an owner of an
  // earlier version refuses a longer one (OutOfRange).
  absl::Status Persist(uint64_t offset, uint64_t len) override {
    absl::MutexLock l(&mu_);
    RETURN_IF_ERROR(Usable());
    if (offset > size_ || len > size_ - offset) {
      // As the owner answers, before any part is sent.
      return absl::OutOfRangeError(absl::StrCat(
          "[", offset, ", +", len, ") outside the volume (", size_, " bytes)"));
    }
    uint64_t done = 0;
    do {
      uint64_t n = std::min<uint64_t>(len - done, wire::kMaxOpBytes);
      RETURN_IF_ERROR(
          Call(wire::kOpPersist, offset + done, n, nullptr, nullptr));
      done += n;
    } while (done < len);
    return absl::OkStatus();
  }

 private:
  absl::Status Usable() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!broken_.ok()) return broken_;
    return absl::OkStatus();
  }

  // The connection is gone (owner fenced us, or died, or a transfer broke
  // off mid-stream): every later call fails the same way.
  absl::Status Lost(const absl::Status& st) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    broken_ = absl::UnavailableError(
        absl::StrCat("fabric connection lost: ", st.message()));
    return broken_;
  }

  absl::Status Call(uint32_t op, uint64_t offset, uint64_t len,
                    const char* payload, char* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    wire::RequestHeader req{op, 0, offset, len};
    absl::Status st = wire::WriteFull(fd_, &req, sizeof(req));
    if (st.ok() && payload != nullptr) st = wire::WriteFull(fd_, payload, len);
    absl::Status remote;
    if (st.ok()) st = wire::ReadReply(fd_, &remote, out, len);
    if (!st.ok()) {
      return Lost(st);
    }
    if (remote.code() == absl::StatusCode::kPermissionDenied) broken_ = remote;
    return remote;
  }

  absl::Mutex mu_;
  const int fd_;
  const uint64_t size_;
  absl::Status broken_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

namespace {

// connect(2) on `fd` (blocking) that gives up after `timeout`.
absl::Status ConnectWithin(int fd, const addrinfo* to, absl::Duration timeout) {
  const int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    return absl::InternalError(absl::StrCat("fcntl: ", strerror(errno)));
  }
  int err = 0;
  if (connect(fd, to->ai_addr, to->ai_addrlen) != 0) err = errno;
  if (err == EINPROGRESS) {
    const absl::Time deadline = absl::Now() + timeout;
    while (true) {
      pollfd p{fd, POLLOUT, 0};
      const int64_t left = std::max<int64_t>(
          0, absl::ToInt64Milliseconds(deadline - absl::Now()));
      const int rc = poll(&p, 1,
                          static_cast<int>(std::min<int64_t>(
                              left, std::numeric_limits<int>::max())));
      if (rc < 0 && errno == EINTR) continue;
      if (rc < 0)
        return absl::InternalError(absl::StrCat("poll: ", strerror(errno)));
      if (rc == 0) {
        return absl::DeadlineExceededError(
            absl::StrCat("no answer within ", absl::FormatDuration(timeout)));
      }
      socklen_t len = sizeof(err);
      if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
      break;
    }
  }
  if (err != 0) return absl::UnavailableError(strerror(err));
  if (fcntl(fd, F_SETFL, flags) < 0) {
    return absl::InternalError(absl::StrCat("fcntl: ", strerror(errno)));
  }
  return absl::OkStatus();
}

// SO_RCVTIMEO: a receive that waits longer fails with EAGAIN (zero: waits).
absl::Status SetReceiveTimeout(int fd, absl::Duration timeout) {
  const timeval tv = absl::ToTimeval(timeout);
  if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0) {
    return absl::InternalError(absl::StrCat("SO_RCVTIMEO: ", strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<RemoteRegion>> TcpConnector::Connect(
    const GrantInfo& grant) {
  ASSIGN_OR_RETURN(auto hp, SplitHostPort(grant.endpoint));
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int rc = getaddrinfo(hp.first.c_str(), std::to_string(hp.second).c_str(),
                       &hints, &res);
  if (rc != 0) {
    return absl::UnavailableError(
        absl::StrCat("resolve ", grant.endpoint, ": ", gai_strerror(rc)));
  }
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    freeaddrinfo(res);
    return base::ErrnoStatus("socket", grant.endpoint, errno);
  }
  absl::Status connected = ConnectWithin(fd, res, timeout_);
  freeaddrinfo(res);
  if (!connected.ok()) {
    close(fd);
    return absl::UnavailableError(
        absl::StrCat("connect(", grant.endpoint, "): ", connected.message()));
  }
  SetNoDelay(fd);
  agent::v1::FabricHello hello;
  hello.set_version(1);
  hello.set_volume_id(grant.key.volume);
  hello.set_lease_uid(grant.key.lease_uid);
  hello.set_holder_node(grant.key.holder_node);
  hello.set_epoch(grant.key.epoch);
  hello.set_access(grant.access == Access::kReadWrite ? agent::v1::READ_WRITE
                                                      : agent::v1::READ_ONLY);
  hello.set_credential(grant.credential);
  agent::v1::FabricHelloReply reply;
  // The reply within the timeout; the connection's later operations wait
  // as long as the owner takes (a persist of a large range is slow).
  absl::Status st = SetReceiveTimeout(fd, timeout_);
  if (st.ok()) st = wire::WriteFrame(fd, hello.SerializeAsString());
  const absl::Time sent = absl::Now();
  if (st.ok()) {
    auto frame = wire::ReadFrame(fd, 64 * 1024);
    if (!frame.ok()) {
      st = frame.status();
      if (absl::Now() - sent >= timeout_) {
        st = absl::DeadlineExceededError(absl::StrCat(
            "no FabricHelloReply within ", absl::FormatDuration(timeout_)));
      }
    } else if (!reply.ParseFromString(*frame)) {
      st = absl::DataLossError("malformed FabricHelloReply");
    }
  }
  if (st.ok()) st = SetReceiveTimeout(fd, absl::ZeroDuration());
  if (!st.ok()) {
    close(fd);
    return absl::UnavailableError(absl::StrCat(
        "fabric handshake with ", grant.endpoint, ": ", st.message()));
  }
  if (reply.code() != 0) {
    close(fd);
    return absl::Status(
        static_cast<absl::StatusCode>(reply.code()),
        absl::StrCat("owner ", grant.endpoint, " refused: ", reply.message()));
  }
  return std::make_unique<TcpRemoteRegion>(fd, reply.size_bytes());
}

}  // namespace daxlease::fabric
