#include "client/volume.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <emmintrin.h>
#endif

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"
#include "nlohmann/json.hpp"
#include "proto/agent.grpc.pb.h"

#ifndef MAP_SHARED_VALIDATE
#define MAP_SHARED_VALIDATE 0x03
#endif
#ifndef MAP_SYNC
#define MAP_SYNC 0x80000
#endif

namespace daxlease::client {
namespace {

absl::Status Errno(const char* op, const std::string& path) {
  return absl::InternalError(
      absl::StrCat(op, "(", path, "): ", strerror(errno)));
}

// Makes [p, p+len) of a local mapping durable. msync writes a file's dirty
// pages back (on DAX, its cache lines). A device-dax mapping has no page
// cache and the kernel refuses msync on it (EINVAL): its stores are in the
// media once out of the CPU cache, so the lines are flushed here.
absl::Status SyncLocal(int fd, char* p, uint64_t len, const std::string& dir) {
  if (msync(p, len, MS_SYNC) == 0) return absl::OkStatus();
  const int err = errno;
  struct stat st {};
  if (err == EINVAL && fstat(fd, &st) == 0 && S_ISCHR(st.st_mode)) {
#if defined(__x86_64__)
    for (uint64_t i = 0; i < len; i += 64) _mm_clflush(p + i);
    _mm_sfence();
    return absl::OkStatus();
#endif
  }
  errno = err;
  return Errno("msync", dir);
}

absl::Status FromGrpc(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      s.error_message());
}

fabric::GrantInfo ToGrantInfo(const pb::Grant& g) {
  fabric::GrantInfo i;
  i.key = {g.volume_id(), g.lease_uid(), g.holder_node(), g.epoch()};
  i.access = g.access() == pb::READ_WRITE ? fabric::Access::kReadWrite
                                          : fabric::Access::kReadOnly;
  i.fabric = g.fabric();
  i.endpoint = g.endpoint();
  i.credential = g.credential();
  i.size_bytes = g.size_bytes();
  return i;
}

}  // namespace

// ---- DirtyRanges
// -----------------------------------------------------------------

void DirtyRanges::Add(uint64_t offset, uint64_t len) {
  if (len == 0) return;
  uint64_t start = offset, end = offset + len;
  auto it = ranges_.upper_bound(start);
  if (it != ranges_.begin()) {
    auto prev = std::prev(it);
    if (prev->second >= start) {
      // Grows the range before in place (the common case of sequential
      // writes: no allocation), absorbing the ones it now reaches.
      prev->second = std::max(end, prev->second);
      while (it != ranges_.end() && it->first <= prev->second) {
        prev->second = std::max(prev->second, it->second);
        it = ranges_.erase(it);
      }
      return;
    }
  }
  while (it != ranges_.end() && it->first <= end) {
    end = std::max(end, it->second);
    it = ranges_.erase(it);
  }
  ranges_[start] = end;
}

void DirtyRanges::Remove(uint64_t offset, uint64_t len) {
  if (len == 0) return;
  uint64_t start = offset, end = offset + len;
  auto it = ranges_.upper_bound(start);
  if (it != ranges_.begin()) --it;
  while (it != ranges_.end() && it->first < end) {
    uint64_t s = it->first, e = it->second;
    if (e <= start) {
      ++it;
      continue;
    }
    it = ranges_.erase(it);
    if (s < start) ranges_[s] = start;
    if (e > end) ranges_[end] = e;
  }
}

std::pair<uint64_t, uint64_t> DirtyRanges::Span() const {
  if (ranges_.empty()) return {0, 0};
  return {ranges_.begin()->first, ranges_.rbegin()->second};
}

uint64_t DirtyRanges::Total() const {
  uint64_t t = 0;
  for (const auto& [s, e] : ranges_) t += e - s;
  return t;
}

// ---- descriptor
// ----------------------------------------------------------------------

absl::StatusOr<Descriptor> ReadDescriptor(const std::string& dir) {
  std::string path = absl::StrCat(dir, "/daxlease.json");
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat(path, ": ", strerror(errno),
                     " (is a daxlease volume published here?)"));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, false);
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " is not a daxlease descriptor: ", why));
  };
  if (j.is_discarded() || !j.is_object()) return bad("not a JSON object");
  if (j.value("version", 0) != 1) return bad("version is not 1");
  Descriptor d;
  try {
    d.volume = j.at("volume").get<std::string>();
    d.lease = j.at("lease").get<std::string>();
    d.attach_token = j.at("attachToken").get<std::string>();
    d.node = j.value("node", "");
    d.owner_node = j.value("ownerNode", "");
    d.owner_local = j.value("ownerLocal", false);
    d.read_only = j.value("access", "ReadWrite") == "ReadOnly";
    d.agent_socket = j.value("agentSocket", "");
  } catch (const nlohmann::json::exception& e) {
    return bad(e.what());
  }
  if (d.volume.empty() || d.lease.empty() || d.attach_token.empty()) {
    return bad("volume, lease and attachToken are required");
  }
  std::string local_sock = absl::StrCat(dir, "/agent.sock");
  struct stat st {};
  if (stat(local_sock.c_str(), &st) == 0) {
    d.agent_socket = local_sock;
  } else if (d.agent_socket.empty() && getenv("DAXLEASE_AGENT_SOCKET")) {
    d.agent_socket = getenv("DAXLEASE_AGENT_SOCKET");
  }
  if (d.agent_socket.empty()) return bad("no agent socket");
  return d;
}

// A unix socket address holds 107 bytes, and the path a pod or a host
// process sees to its published directory can be longer (kubelet's publish
// paths plus "/agent.sock" are about 140). Such a socket is reached through
// an O_PATH descriptor of its directory, held while the volume is attached:
// /proc/self/fd/N/NAME always fits, and gRPC's reconnects resolve it again.
absl::StatusOr<std::string> SocketAddress(const std::string& path,
                                          int* dir_fd) {
  if (path.size() < sizeof(sockaddr_un::sun_path)) return path;
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos || slash + 1 == path.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("agent socket path ", path, " is too long"));
  }
  const std::string dir = slash == 0 ? "/" : path.substr(0, slash);
  int fd = open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot open the agent socket's directory ", dir, ": ",
                     strerror(errno)));
  }
  *dir_fd = fd;
  return absl::StrCat("/proc/self/fd/", fd, path.substr(slash));
}

// ---- Volume
// ----------------------------------------------------------------------------

struct Volume::Rpc {
  std::unique_ptr<pb::Agent::Stub> stub;
  std::mutex mu;
  grpc::ClientContext* stream_ctx = nullptr;  // guarded by mu
};

Volume::Volume(std::string dir, Descriptor d, AttachOptions opts,
               std::unique_ptr<fabric::FabricConnector> connector)
    : dir_(std::move(dir)),
      desc_(std::move(d)),
      opts_(opts),
      connector_(std::move(connector)),
      rpc_(std::make_unique<Rpc>()) {}

absl::StatusOr<std::unique_ptr<Volume>> Volume::Attach(
    const std::string& dir, const AttachOptions& opts,
    std::unique_ptr<fabric::FabricConnector> connector) {
  auto d = ReadDescriptor(dir);
  if (!d.ok()) return d.status();
  if (d->read_only && !opts.read_only) {
    return absl::FailedPreconditionError(
        "the volume is published read-only; attach read-only");
  }
  auto v = std::unique_ptr<Volume>(
      new Volume(dir, std::move(*d), opts, std::move(connector)));
  // A restarted agent is back within a second or two: keep gRPC's
  // reconnect backoff short so acks reach it well before a recall deadline.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  auto address = SocketAddress(v->desc_.agent_socket, &v->socket_dir_fd_);
  if (!address.ok()) return address.status();
  v->rpc_->stub = pb::Agent::NewStub(
      grpc::CreateCustomChannel(absl::StrCat("unix://", *address),
                                grpc::InsecureChannelCredentials(), args));
  // Named, so a profile (top -H) and the tests can tell them apart.
  v->event_thread_ = std::thread([p = v.get()] {
    pthread_setname_np(pthread_self(), "dlease-events");
    p->EventLoop();
  });
  v->session_thread_ = std::thread([p = v.get()] {
    pthread_setname_np(pthread_self(), "dlease-session");
    p->SessionLoop();
  });
  std::unique_lock<std::mutex> l(v->mu_);
  auto pred = [&] {
    return v->phase_ != Phase::kWaiting || !v->session_error_.ok();
  };
  bool done = true;
  if (opts.timeout == absl::InfiniteDuration()) {
    v->cv_.wait(l, pred);
  } else {
    done = v->cv_.wait_for(l, absl::ToChronoNanoseconds(opts.timeout), pred);
  }
  absl::Status err;
  if (!v->session_error_.ok()) {
    err = v->session_error_;
  } else if (!done && v->agent_unreachable_) {
    err = absl::UnavailableError(v->status_message_);
  } else if (!done) {
    err = absl::DeadlineExceededError(absl::StrCat(
        "not granted within the attach timeout: ", v->status_message_));
  } else if (v->phase_ == Phase::kRevoked) {
    err = absl::PermissionDeniedError(
        absl::StrCat("revoked: ", v->status_message_));
  }
  l.unlock();
  if (!err.ok()) {
    (void)v->Detach();
    return err;
  }
  return v;
}

Volume::~Volume() {
  (void)Detach();
  if (socket_dir_fd_ >= 0) close(socket_dir_fd_);
}

int64_t Volume::epoch() const {
  std::lock_guard<std::mutex> l(mu_);
  return phase_ == Phase::kGranted && grant_ ? grant_->epoch() : 0;
}

bool Volume::is_local() const {
  std::lock_guard<std::mutex> l(mu_);
  return base_ != nullptr;
}

bool Volume::revoked() const {
  std::lock_guard<std::mutex> l(mu_);
  return phase_ == Phase::kRevoked;
}

uint64_t Volume::Unpersisted() const {
  std::lock_guard<std::mutex> l(mu_);
  // Once revoked nothing more enters: what is left is what calls in flight
  // at the revocation add (a write that returned OK) or take (a persist
  // that did), and what is never made durable.
  return dirty_.Total();
}

void Volume::SetPreflushHook(PreflushHook hook) {
  std::lock_guard<std::mutex> l(mu_);
  hook_ = std::move(hook);
}

absl::Status Volume::Enter(std::unique_lock<std::mutex>& l) {
  while (true) {
    if (phase_ == Phase::kRevoked) {
      return absl::PermissionDeniedError(
          absl::StrCat("revoked: ", status_message_));
    }
    if (phase_ == Phase::kClosed) {
      return absl::FailedPreconditionError("the volume is detached");
    }
    if (phase_ == Phase::kGranted) break;
    if (phase_ == Phase::kRecalling &&
        std::this_thread::get_id() == hook_thread_) {
      break;
    }
    cv_.wait(l);
  }
  ++inflight_;
  return absl::OkStatus();
}

void Volume::Leave() {
  std::lock_guard<std::mutex> l(mu_);
  LeaveLocked();
}

void Volume::LeaveLocked() {
  --inflight_;
  if (inflight_ > 0) return;
  // Revoked while this call ran: the mapping goes once nothing uses it.
  if (phase_ == Phase::kRevoked) DropAccess();
  // Waiters (a recall draining, Detach) wait for no call in flight.
  cv_.notify_all();
}

void Volume::RevokeLocked(std::string why) {
  if (phase_ == Phase::kRevoked || phase_ == Phase::kClosed) return;
  phase_ = Phase::kRevoked;
  status_message_ = std::move(why);
  remote_.reset();  // calls in flight hold their own reference
  if (inflight_ == 0) DropAccess();
  grant_.reset();
  cv_.notify_all();
}

absl::Status Volume::CheckRange(uint64_t offset, uint64_t len) const {
  uint64_t size = size_.load();
  if (offset > size || len > size - offset) {
    return absl::OutOfRangeError(absl::StrCat(
        "[", offset, ", +", len, ") is outside the volume (", size, " bytes)"));
  }
  return absl::OkStatus();
}

// Runs `op` on the remote region `r`; a lost connection (the owner agent
// restarted) is re-established with the same grant, for up to 10 s. The
// grant is read only on that path: the call itself copies nothing.
absl::Status Volume::RemoteCall(
    std::shared_ptr<fabric::RemoteRegion> r,
    absl::FunctionRef<absl::Status(fabric::RemoteRegion&)> op) {
  absl::Status st =
      r != nullptr ? op(*r) : absl::UnavailableError("not connected");
  if (!absl::IsUnavailable(st)) return st;
  std::optional<pb::Grant> g;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (phase_ == Phase::kRevoked) {
      return absl::PermissionDeniedError(
          absl::StrCat("revoked: ", status_message_));
    }
    g = grant_;
  }
  if (!g.has_value()) return st;
  absl::Time give_up = absl::Now() + absl::Seconds(10);
  while (true) {
    if (absl::Now() > give_up) return st;
    absl::SleepFor(absl::Milliseconds(50));
    {
      // The agent may have sent the grant again with the owner's new
      // endpoint meanwhile.
      std::lock_guard<std::mutex> l(mu_);
      if (grant_.has_value() && grant_->epoch() == g->epoch()) g = grant_;
    }
    auto c = connector_->Connect(ToGrantInfo(*g));
    if (absl::IsPermissionDenied(c.status())) return c.status();
    if (!c.ok()) continue;
    std::shared_ptr<fabric::RemoteRegion> fresh = std::move(*c);
    {
      std::lock_guard<std::mutex> l(mu_);
      if (!grant_.has_value() || grant_->epoch() != g->epoch() ||
          phase_ == Phase::kRevoked) {
        return absl::PermissionDeniedError("revoked");
      }
      remote_ = fresh;
    }
    r = std::move(fresh);
    st = op(*r);
    if (!absl::IsUnavailable(st)) return st;
  }
}

absl::Status Volume::Read(uint64_t offset, char* buf, size_t len) {
  if (absl::Status s = CheckRange(offset, len); !s.ok()) return s;
  std::unique_lock<std::mutex> l(mu_);
  if (absl::Status s = Enter(l); !s.ok()) return s;
  char* base = base_;
  std::shared_ptr<fabric::RemoteRegion> remote =
      base == nullptr ? remote_ : nullptr;
  l.unlock();
  absl::Status st;
  if (base != nullptr) {
    memcpy(buf, base + offset, len);
  } else {
    st = RemoteCall(std::move(remote), [&](fabric::RemoteRegion& r) {
      return r.Read(offset, absl::MakeSpan(buf, len));
    });
  }
  Leave();
  return st;
}

absl::Status Volume::Write(uint64_t offset, const char* buf, size_t len) {
  if (opts_.read_only) {
    return absl::FailedPreconditionError("attached read-only");
  }
  if (absl::Status s = CheckRange(offset, len); !s.ok()) return s;
  std::unique_lock<std::mutex> l(mu_);
  if (absl::Status s = Enter(l); !s.ok()) return s;
  char* base = base_;
  std::shared_ptr<fabric::RemoteRegion> remote =
      base == nullptr ? remote_ : nullptr;
  l.unlock();
  absl::Status st;
  if (base != nullptr) {
    memcpy(base + offset, buf, len);
  } else {
    st = RemoteCall(std::move(remote), [&](fabric::RemoteRegion& r) {
      return r.Write(offset, absl::MakeConstSpan(buf, len));
    });
  }
  std::lock_guard<std::mutex> g(mu_);
  // Also when revoked meanwhile: the bytes are in the volume's memory but
  // not durable, and Unpersisted must count them.
  if (st.ok()) dirty_.Add(offset, len);
  LeaveLocked();
  return st;
}

absl::Status Volume::Persist(uint64_t offset, size_t len, int64_t* epoch) {
  if (len == 0) {
    offset = 0;
    len = size_.load();
  }
  if (absl::Status s = CheckRange(offset, len); !s.ok()) return s;
  std::unique_lock<std::mutex> l(mu_);
  if (absl::Status s = Enter(l); !s.ok()) return s;
  char* base = base_;
  uint64_t mapped = mapped_;
  const int map_fd = map_fd_;
  // Entered: granted (or the recall's own hook), so grant_ is the grant the
  // recall waits on this call for.
  const int64_t granted_at = grant_ ? grant_->epoch() : 0;
  std::shared_ptr<fabric::RemoteRegion> remote =
      base == nullptr ? remote_ : nullptr;
  l.unlock();
  absl::Status st;
  if (base != nullptr) {
    const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
    uint64_t start = offset / page * page;
    uint64_t end = std::min<uint64_t>(offset + len, mapped);
    st = SyncLocal(map_fd, base + start, end - start, dir_);
  } else {
    st = RemoteCall(std::move(remote), [&](fabric::RemoteRegion& r) {
      return r.Persist(offset, len);
    });
  }
  {
    std::lock_guard<std::mutex> g(mu_);
    if (st.ok()) dirty_.Remove(offset, len);
  }
  Leave();
  if (st.ok() && epoch != nullptr) *epoch = granted_at;
  return st;
}

absl::StatusOr<std::pair<char*, size_t>> Volume::DirectAcquire() {
  std::unique_lock<std::mutex> l(mu_);
  if (absl::Status s = Enter(l); !s.ok()) return s;
  if (base_ == nullptr) {
    LeaveLocked();
    return absl::FailedPreconditionError(
        "direct access needs the volume's memory on this node");
  }
  // Held as a direct hold rather than an in-flight call.
  --inflight_;
  ++direct_holds_;
  // Stores through the pointer are not tracked; count the whole volume as
  // possibly dirty so a revocation reports it.
  dirty_.Add(0, mapped_);
  return std::make_pair(base_, static_cast<size_t>(mapped_));
}

absl::Status Volume::DirectRelease() {
  std::lock_guard<std::mutex> l(mu_);
  if (direct_holds_ == 0) {
    return absl::FailedPreconditionError("no direct hold to release");
  }
  --direct_holds_;
  if (phase_ == Phase::kRevoked && inflight_ == 0) DropAccess();
  cv_.notify_all();
  return absl::OkStatus();
}

absl::Status Volume::Install(const pb::Grant& g) {
  // The volume's memory is on this node (the agent sends a local path):
  // map it. After a migration that may be a node this publish was remote
  // on, and the path the agent's media; a client that cannot open it (a
  // pod sees only its published directory) goes through the fabric.
  int fd = -1;
  std::string path;
  if (!g.local_path().empty()) {
    path = g.local_path()[0] == '/' ? g.local_path()
                                    : absl::StrCat(dir_, "/", g.local_path());
    fd = open(path.c_str(), (opts_.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (fd < 0 && (desc_.owner_local || g.endpoint().empty())) {
      return Errno("open", path);
    }
  }
  if (fd >= 0) {
    uint64_t size = g.size_bytes();
    if (size == 0) {
      struct stat st {};
      fstat(fd, &st);
      size = static_cast<uint64_t>(st.st_size);
    }
    int prot = PROT_READ | (opts_.read_only ? 0 : PROT_WRITE);
    void* p = mmap(nullptr, size, prot, MAP_SHARED_VALIDATE | MAP_SYNC, fd, 0);
    if (p == MAP_FAILED) p = mmap(nullptr, size, prot, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
      absl::Status s = Errno("mmap", path);
      close(fd);
      return s;
    }
    std::lock_guard<std::mutex> l(mu_);
    base_ = static_cast<char*>(p);
    mapped_ = size;
    map_fd_ = fd;
    size_.store(size);
    return absl::OkStatus();
  }
  // Remote: the owner may not have seen the grant yet, or its agent is
  // restarting (Unavailable): retry, until the next session event (a recall,
  // a revocation, another grant) supersedes this grant.
  absl::Time give_up = absl::Now() + absl::Seconds(30);
  while (true) {
    auto c = connector_->Connect(ToGrantInfo(g));
    std::unique_lock<std::mutex> l(mu_);
    if (c.ok()) {
      size_.store((*c)->size());
      remote_ = std::move(*c);
      return absl::OkStatus();
    }
    if (!absl::IsUnavailable(c.status()) || absl::Now() > give_up) {
      return c.status();
    }
    auto interrupted = [&] { return stopping_ || !events_.empty(); };
    events_cv_.wait_for(l, std::chrono::milliseconds(20), interrupted);
    if (stopping_) return absl::CancelledError("detaching");
    if (!events_.empty()) {
      return absl::AbortedError(
          absl::StrCat("a newer session event came while connecting: ",
                       c.status().message()));
    }
  }
}

void Volume::DropAccess() {
  remote_.reset();
  if (base_ != nullptr && direct_holds_ == 0) {
    munmap(base_, mapped_);
    close(map_fd_);
    base_ = nullptr;
    mapped_ = 0;
    map_fd_ = -1;
  }
}

absl::Status Volume::PersistAllLocked() {
  if (dirty_.Total() == 0) return absl::OkStatus();
  absl::Status st;
  if (base_ != nullptr) {
    st = SyncLocal(map_fd_, base_, mapped_, dir_);
  } else if (remote_ != nullptr) {
    auto [start, end] = dirty_.Span();
    st = remote_->Persist(start, end - start);
  } else {
    st = absl::UnavailableError("no access to persist through");
  }
  if (st.ok()) dirty_.Clear();
  return st;
}

void Volume::Recall(const pb::SessionEvent& ev) {
  std::unique_lock<std::mutex> l(mu_);
  if (phase_ == Phase::kRevoked || phase_ == Phase::kClosed) return;
  // Not granted since the last recall (e.g. still connecting): nothing was
  // written since, so the pre-flush hook has nothing to do.
  const bool granted = phase_ == Phase::kGranted;
  phase_ = Phase::kRecalling;
  absl::Time deadline = ev.deadline_unix_ms() > 0
                            ? absl::FromUnixMillis(ev.deadline_unix_ms())
                            : absl::Now() + absl::Seconds(30);
  // Not drained by the deadline: no ack (the calls' bytes cannot be claimed
  // flushed), so the owner revokes the grant. Said now, so that every call
  // fails at once rather than waiting for the agent's REVOKED.
  auto drained_by_deadline = [&](auto drained) {
    if (cv_.wait_for(l, absl::ToChronoNanoseconds(deadline - absl::Now()),
                     [&] { return drained() || stopping_; })) {
      return true;
    }
    RevokeLocked(absl::StrCat("the recall's deadline passed with ", inflight_,
                              " call(s) and ", direct_holds_,
                              " direct hold(s) in progress; not acknowledged"));
    return false;
  };
  if (!drained_by_deadline(
          [&] { return inflight_ == 0 && direct_holds_ == 0; }) ||
      stopping_) {
    return;
  }
  if (hook_ && granted) {
    hook_thread_ = std::this_thread::get_id();
    PreflushHook hook = hook_;
    l.unlock();
    hook();
    l.lock();
    hook_thread_ = std::thread::id();
    if (!drained_by_deadline([&] { return inflight_ == 0; }) || stopping_) {
      return;
    }
  }
  absl::Status st;
  if (base_ == nullptr && remote_ != nullptr && dirty_.Total() > 0) {
    // Remote: the owner agent may have restarted under us; RemoteCall
    // reconnects with the same grant. No call runs meanwhile (Recalling).
    // What was written since the last persist, not the whole volume: the
    // owner's msync of a range is bounded by the range.
    auto [start, end] = dirty_.Span();
    std::shared_ptr<fabric::RemoteRegion> remote = remote_;
    l.unlock();
    st = RemoteCall(std::move(remote),
                    [&, start = start, end = end](fabric::RemoteRegion& r) {
                      return r.Persist(start, end - start);
                    });
    l.lock();
    if (st.ok()) dirty_.Clear();
  } else {
    st = PersistAllLocked();
  }
  if (!st.ok()) {
    // Cannot claim flushed: no ack, so the owner revokes the grant at the
    // deadline (a refusal as revoked: it did already).
    RevokeLocked(absl::StrCat("the recall's flush failed (not acknowledged): ",
                              st.message()));
    return;
  }
  DropAccess();
  grant_.reset();
  std::string session = session_id_;
  l.unlock();
  pb::AckRecallRequest req;
  req.set_lease_name(desc_.lease);
  req.set_attach_token(desc_.attach_token);
  req.set_recall_id(ev.recall_id());
  req.set_session_id(session);
  while (absl::Now() < deadline) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    pb::AckRecallResponse resp;
    grpc::Status s = rpc_->stub->AckRecall(&ctx, req, &resp);
    if (s.ok() || s.error_code() == grpc::StatusCode::FAILED_PRECONDITION)
      break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  l.lock();
  if (phase_ == Phase::kRecalling) {
    phase_ = Phase::kWaiting;
    status_message_ = "recalled; waiting for the next grant";
  }
}

void Volume::Revoke(const pb::SessionEvent& ev) {
  std::unique_lock<std::mutex> l(mu_);
  if (phase_ == Phase::kClosed) return;
  RevokeLocked(ev.message());
  // The ack says the access is given up, and a local mapping cannot be
  // fenced: give the calls in flight a while (the last to leave unmaps).
  cv_.wait_for(l, std::chrono::seconds(5), [&] { return inflight_ == 0; });
  std::string session = session_id_;
  l.unlock();
  pb::AckRevocationRequest req;
  req.set_lease_name(desc_.lease);
  req.set_attach_token(desc_.attach_token);
  req.set_session_id(session);
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  pb::AckRevocationResponse resp;
  (void)rpc_->stub->AckRevocation(&ctx, req, &resp);
}

void Volume::HandleEvent(const pb::SessionEvent& ev) {
  {
    std::lock_guard<std::mutex> l(mu_);
    session_id_ = ev.session_id();
  }
  switch (ev.kind()) {
    case pb::SessionEvent::GRANTED: {
      {
        std::lock_guard<std::mutex> l(mu_);
        if (phase_ == Phase::kRevoked || phase_ == Phase::kClosed) return;
        if (phase_ == Phase::kGranted && grant_ &&
            grant_->epoch() == ev.grant().epoch() &&
            grant_->lease_uid() == ev.grant().lease_uid()) {
          // The same grant again (an agent restarted); the owner's endpoint
          // may have moved: calls reconnect with it.
          grant_ = ev.grant();
          return;
        }
        if (phase_ == Phase::kGranted) DropAccess();
      }
      absl::Status st = Install(ev.grant());
      std::lock_guard<std::mutex> l(mu_);
      if (!st.ok()) {
        status_message_ = absl::StrCat("granted, but: ", st.message());
        if (absl::IsPermissionDenied(st)) {
          phase_ = Phase::kRevoked;
          cv_.notify_all();
        }
        return;
      }
      grant_ = ev.grant();
      phase_ = Phase::kGranted;
      status_message_.clear();
      cv_.notify_all();
      return;
    }
    case pb::SessionEvent::RECALLING:
      Recall(ev);
      return;
    case pb::SessionEvent::REVOKED:
      Revoke(ev);
      return;
    default: {
      std::lock_guard<std::mutex> l(mu_);
      if (phase_ == Phase::kRevoked || phase_ == Phase::kClosed) return;
      status_message_ = ev.message();
      if (phase_ == Phase::kGranted) {
        // The lease moved on without a recall reaching us (e.g. a new
        // generation): drop what we held and wait for the new grant.
        (void)PersistAllLocked();
        DropAccess();
        grant_.reset();
        phase_ = Phase::kWaiting;
      }
      return;
    }
  }
}

void Volume::SessionLoop() {
  absl::Duration backoff = absl::Milliseconds(50);
  bool ever_connected = false;
  while (true) {
    grpc::ClientContext ctx;
    {
      std::lock_guard<std::mutex> l(rpc_->mu);
      {
        std::lock_guard<std::mutex> l2(mu_);
        if (stopping_) return;
      }
      rpc_->stream_ctx = &ctx;
    }
    pb::OpenSessionRequest req;
    req.set_lease_name(desc_.lease);
    req.set_attach_token(desc_.attach_token);
    auto reader = rpc_->stub->OpenSession(&ctx, req);
    pb::SessionEvent ev;
    bool got = false;
    while (reader->Read(&ev)) {
      got = true;
      ever_connected = true;
      backoff = absl::Milliseconds(50);
      std::lock_guard<std::mutex> l(mu_);
      events_.push_back(std::move(ev));
      events_cv_.notify_all();
    }
    absl::Status st = FromGrpc(reader->Finish());
    {
      std::lock_guard<std::mutex> l(rpc_->mu);
      rpc_->stream_ctx = nullptr;
    }
    {
      std::lock_guard<std::mutex> l(mu_);
      if (stopping_) return;
      if (!got && (absl::IsPermissionDenied(st) || absl::IsNotFound(st) ||
                   absl::IsInvalidArgument(st))) {
        if (!ever_connected) {
          session_error_ = st;
          cv_.notify_all();
          return;
        }
        // Unpublished while we were attached: nothing to come back to.
        RevokeLocked(absl::StrCat("no longer published: ", st.message()));
        return;
      }
      if (!got && !ever_connected && absl::IsUnavailable(st)) {
        status_message_ = absl::StrCat("agent unreachable: ", st.message());
        agent_unreachable_ = true;
      }
    }
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, absl::Seconds(1));
  }
}

void Volume::EventLoop() {
  while (true) {
    pb::SessionEvent ev;
    {
      std::unique_lock<std::mutex> l(mu_);
      events_cv_.wait(l, [&] { return stopping_ || !events_.empty(); });
      if (stopping_) return;
      ev = std::move(events_.front());
      events_.pop_front();
    }
    HandleEvent(ev);
  }
}

absl::Status Volume::Detach() {
  std::unique_lock<std::mutex> l(mu_);
  if (phase_ == Phase::kClosed) {
    l.unlock();
    for (std::thread* t : {&session_thread_, &event_thread_}) {
      if (t->joinable() && t->get_id() != std::this_thread::get_id()) {
        t->join();
      }
    }
    return absl::OkStatus();
  }
  absl::Status result;
  if (phase_ == Phase::kGranted) {
    cv_.wait(l, [&] { return inflight_ == 0; });
    if (hook_) {
      phase_ = Phase::kRecalling;
      hook_thread_ = std::this_thread::get_id();
      PreflushHook hook = hook_;
      l.unlock();
      hook();
      l.lock();
      hook_thread_ = std::thread::id();
    }
    result = PersistAllLocked();
  } else if (phase_ == Phase::kRevoked && dirty_.Total() > 0) {
    result = absl::PermissionDeniedError(absl::StrCat(
        "revoked: ", dirty_.Total(), " unpersisted bytes were lost"));
  }
  phase_ = Phase::kClosed;
  stopping_ = true;
  DropAccess();
  cv_.notify_all();
  events_cv_.notify_all();
  l.unlock();
  {
    std::lock_guard<std::mutex> rl(rpc_->mu);
    if (rpc_->stream_ctx != nullptr) rpc_->stream_ctx->TryCancel();
  }
  for (std::thread* t : {&session_thread_, &event_thread_}) {
    if (t->joinable() && t->get_id() != std::this_thread::get_id()) t->join();
  }
  return result;
}

}  // namespace daxlease::client
