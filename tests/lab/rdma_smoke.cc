// daxlease-lab-rdma: verbs smoke test on the project's own lib/rdma, run in
// the lab guest over Soft-RoCE.
//
//   serve  --path DEV --ip IP --port P --bytes N
//       maps DEV (a devdax character device, or any file) MAP_SHARED, pins it
//       with ibv_reg_mr (local write + remote read/write), accepts one rdma_cm
//       connection handing the peer {addr, rkey, length}, waits until the
//       peer disconnects, then checks the memory holds the peer's pattern
//       byte for byte (the owner's own view of what landed).
//   client --ip IP --port P --bytes N --seed S
//       connects, RDMA-WRITEs a pattern over the whole region, RDMA-READs it
//       back into a separate buffer and compares byte for byte.
//   regmr  --path FILE --bytes N
//       maps FILE (created and allocated if needed) MAP_SHARED and tries a
//       pinned registration; prints the outcome. Exit 0 registered, 3 refused
//       with EOPNOTSUPP (FAILED_PRECONDITION), 1 any other error.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "lib/rdma/cm.h"
#include "lib/rdma/verbs.h"

namespace daxlease::rdma {
namespace {

constexpr absl::Duration kStep = absl::Seconds(30);
constexpr size_t kChunk = 1u << 20;  // one RDMA op per MiB

struct RegionInfo {  // what the owner hands the peer in its accept
  uint64_t addr;
  uint64_t length;
  uint32_t rkey;
  uint32_t seed;  // echoed back (unused by the owner)
};

uint8_t Pattern(uint32_t seed, size_t i) {
  return static_cast<uint8_t>((i * 131 + seed + (i >> 12)) & 0xff);
}

int Fail(const char* what, const absl::Status& st) {
  std::printf("%s: FAIL %s\n", what, std::string(st.message()).c_str());
  return 1;
}

// A MAP_SHARED mapping of a file or device, unmapped on destruction.
struct Mapping {
  void* addr = MAP_FAILED;
  size_t len = 0;
  int fd = -1;
  ~Mapping() {
    if (addr != MAP_FAILED) ::munmap(addr, len);
    if (fd >= 0) ::close(fd);
  }
};

bool MapPath(const std::string& path, size_t len, Mapping& m) {
  m.fd = ::open(path.c_str(), O_RDWR | O_CREAT, 0644);
  if (m.fd < 0) {
    std::printf("open %s: %s\n", path.c_str(), std::strerror(errno));
    return false;
  }
  struct stat st;
  ::fstat(m.fd, &st);
  if (S_ISREG(st.st_mode)) {
    int rc = ::posix_fallocate(m.fd, 0, static_cast<off_t>(len));
    if (rc != 0) {
      std::printf("fallocate %s: %s\n", path.c_str(), std::strerror(rc));
      return false;
    }
  }
  m.len = len;
  m.addr = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, m.fd, 0);
  if (m.addr == MAP_FAILED) {
    std::printf("mmap %s: %s\n", path.c_str(), std::strerror(errno));
    return false;
  }
  return true;
}

// The owner's side of one connection, up to the peer's request: `path`
// mapped and zeroed, a listener on ip:port ("<who>: listening ..." on
// stdout, which verbs.sh waits for), the request and the seed the peer sent
// in it. Members in acquisition order, so they are released in reverse.
struct Accepted {
  Mapping m;
  std::optional<EventChannel> channel;
  std::optional<CmId> listener;
  std::optional<ConnectRequest> request;
  uint32_t seed = 0;
};

// 0 once `a` holds a request; else the exit code, the failure printed.
int ListenAndWait(const char* who, const std::string& path,
                  const std::string& ip, uint16_t port, size_t len,
                  Accepted& a) {
  if (!MapPath(path, len, a.m)) return 1;
  std::memset(a.m.addr, 0, len);
  auto ch = EventChannel::Create();
  if (!ch.ok()) return Fail("event channel", ch.status());
  a.channel.emplace(*std::move(ch));
  auto listener = CmId::Create(*a.channel);
  if (!listener.ok()) return Fail("cm id", listener.status());
  a.listener.emplace(*std::move(listener));
  if (auto st = a.listener->Listen(ip, port, 1); !st.ok())
    return Fail("listen", st);
  std::printf("%s: listening on %s:%u, %zu bytes of %s\n", who, ip.c_str(),
              port, len, path.c_str());
  std::fflush(stdout);
  auto req = a.listener->WaitForRequest(absl::Seconds(60));
  if (!req.ok()) return Fail("wait for request", req.status());
  a.request.emplace(*std::move(req));
  const std::string& pd = a.request->private_data;
  if (pd.size() >= sizeof(uint32_t))
    std::memcpy(&a.seed, pd.data(), sizeof a.seed);
  return 0;
}

int Serve(const std::string& path, const std::string& ip, uint16_t port,
          size_t len) {
  Accepted a;
  if (int rc = ListenAndWait("serve", path, ip, port, len, a); rc != 0)
    return rc;
  const Mapping& m = a.m;
  CmId& id = a.request->id;
  // Declared in acquisition order so they are released in reverse.
  auto pd = ProtectionDomain::Allocate(id.verbs());
  if (!pd.ok()) return Fail("alloc pd", pd.status());
  auto mr = MemoryRegion::Register(*pd, m.addr, len,
                                   kLocalWrite | kRemoteWrite | kRemoteRead);
  if (!mr.ok()) return Fail("serve ibv_reg_mr", mr.status());
  std::printf("serve ibv_reg_mr: OK %zu bytes rkey=0x%x\n", len, mr->rkey());
  auto cq = CompletionQueue::Create(id.verbs(), 16);
  if (!cq.ok()) return Fail("create cq", cq.status());
  auto qp = CmQueuePair::Create(id, *pd, *cq, QueuePairCaps{});
  if (!qp.ok()) return Fail("create qp", qp.status());
  const uint32_t seed = a.seed;
  RegionInfo info{reinterpret_cast<uintptr_t>(m.addr), len, mr->rkey(), seed};
  if (auto st = id.Accept(
          absl::string_view(reinterpret_cast<char*>(&info), sizeof info),
          kStep);
      !st.ok())
    return Fail("accept", st);
  std::printf("serve: connected, waiting for the peer to finish\n");
  std::fflush(stdout);
  if (auto st = id.WaitForDisconnect(absl::Seconds(120)); !st.ok())
    return Fail("wait for disconnect", st);
  const auto* b = static_cast<const uint8_t*>(m.addr);
  size_t bad = 0;
  for (size_t i = 0; i < len; ++i) bad += b[i] != Pattern(seed, i);
  std::printf(
      "serve: owner view after the peer's writes: %s (%zu of %zu "
      "bytes differ)\n",
      bad == 0 ? "OK" : "FAIL", bad, len);
  return bad == 0 ? 0 : 1;
}

int Client(const std::string& ip, uint16_t port, size_t len, uint32_t seed) {
  auto ch = EventChannel::Create();
  if (!ch.ok()) return Fail("event channel", ch.status());
  auto id = CmId::Create(*ch);
  if (!id.ok()) return Fail("cm id", id.status());
  if (auto st = id->Resolve(ip, port, kStep); !st.ok())
    return Fail("resolve", st);
  auto pd = ProtectionDomain::Allocate(id->verbs());
  if (!pd.ok()) return Fail("alloc pd", pd.status());
  std::vector<uint8_t> src(len), chk(len, 0);
  for (size_t i = 0; i < len; ++i) src[i] = Pattern(seed, i);
  auto smr = MemoryRegion::Register(*pd, src.data(), len, kLocalWrite);
  auto cmr = MemoryRegion::Register(*pd, chk.data(), len, kLocalWrite);
  if (!smr.ok()) return Fail("register source", smr.status());
  if (!cmr.ok()) return Fail("register check", cmr.status());
  auto cq = CompletionQueue::Create(id->verbs(), 64);
  if (!cq.ok()) return Fail("create cq", cq.status());
  auto qp = CmQueuePair::Create(*id, *pd, *cq, QueuePairCaps{});
  if (!qp.ok()) return Fail("create qp", qp.status());
  auto priv = id->Connect(
      absl::string_view(reinterpret_cast<char*>(&seed), sizeof seed), kStep);
  if (!priv.ok()) return Fail("connect", priv.status());
  if (priv->size() < sizeof(RegionInfo)) {
    std::printf("connect: FAIL short private data (%zu bytes)\n", priv->size());
    return 1;
  }
  RegionInfo info;
  std::memcpy(&info, priv->data(), sizeof info);
  std::printf("client: remote region addr=0x%llx length=%llu rkey=0x%x\n",
              static_cast<unsigned long long>(info.addr),
              static_cast<unsigned long long>(info.length), info.rkey);
  if (info.length < len) {
    std::printf("client: FAIL remote region smaller than %zu\n", len);
    return 1;
  }
  // One op in flight at a time: simple, and TCG is the bottleneck anyway.
  auto run = [&](bool write) -> absl::Status {
    for (size_t off = 0; off < len; off += kChunk) {
      size_t n = std::min(kChunk, len - off);
      absl::Status st =
          write ? qp->ops().PostWrite(*smr, src.data() + off, n,
                                      info.addr + off, info.rkey, off)
                : qp->ops().PostRead(*cmr, chk.data() + off, n, info.addr + off,
                                     info.rkey, off);
      if (!st.ok()) return st;
      auto wc = cq->Wait(kStep);
      if (!wc.ok()) return wc.status();
      if (!wc->ok())
        return absl::InternalError(
            absl::StrCat("completion status ", wc->status_text));
    }
    return absl::OkStatus();
  };
  if (auto st = run(true); !st.ok()) return Fail("rdma write", st);
  if (auto st = run(false); !st.ok()) return Fail("rdma read", st);
  size_t bad = 0;
  for (size_t i = 0; i < len; ++i) bad += chk[i] != src[i];
  std::printf("client: RDMA WRITE+READ of %zu bytes: %s (%zu bytes differ)\n",
              len, bad == 0 ? "OK" : "FAIL", bad);
  if (auto st = id->Disconnect(); !st.ok()) return Fail("disconnect", st);
  (void)id->WaitForDisconnect(absl::Seconds(5));
  return bad == 0 ? 0 : 1;
}

// Waits for the completion `wr_id`, keeping others that arrive first.
absl::StatusOr<WorkCompletion> WaitFor(CompletionQueue& cq,
                                       std::vector<WorkCompletion>& early,
                                       uint64_t wr_id) {
  for (size_t i = 0; i < early.size(); ++i) {
    if (early[i].wr_id == wr_id) {
      WorkCompletion wc = early[i];
      early.erase(early.begin() + static_cast<long>(i));
      return wc;
    }
  }
  for (;;) {
    auto wc = cq.Wait(kStep);
    if (!wc.ok()) return wc.status();
    if (wc->wr_id == wr_id) return *wc;
    early.push_back(*wc);
  }
}

constexpr uint64_t kWrBind = 101, kWrSendKey = 102, kWrRecv = 103, kWrInv = 104,
                   kWrSendRevoked = 105;

// The lease shape of the node agent: the owner registers the volume once
// with local rights only, grants the peer a type-2 memory window (its rkey
// sent over SEND), the peer writes and reads through it, then the owner
// revokes it (LOCAL_INV, exactly once) and the peer's next write is refused
// without touching the memory.
int ServeWindow(const std::string& path, const std::string& ip, uint16_t port,
                size_t len) {
  Accepted a;
  if (int rc = ListenAndWait("window-serve", path, ip, port, len, a); rc != 0)
    return rc;
  const Mapping& m = a.m;
  CmId& id = a.request->id;
  auto pd = ProtectionDomain::Allocate(id.verbs());
  if (!pd.ok()) return Fail("alloc pd", pd.status());
  auto mr = MemoryRegion::Register(*pd, m.addr, len, kLocalWrite | kMwBind);
  if (!mr.ok()) return Fail("ibv_reg_mr(local+bind)", mr.status());
  uint32_t msg[4] = {0, 0, 0, 0};
  auto msg_mr = MemoryRegion::Register(*pd, msg, sizeof msg, kLocalWrite);
  if (!msg_mr.ok()) return Fail("register msg", msg_mr.status());
  auto cq = CompletionQueue::Create(id.verbs(), 32);
  if (!cq.ok()) return Fail("create cq", cq.status());
  auto qp = CmQueuePair::Create(id, *pd, *cq, QueuePairCaps{});
  if (!qp.ok()) return Fail("create qp", qp.status());
  auto mw = MemoryWindow::Allocate(*pd);  // released before the QP and MR
  if (!mw.ok()) return Fail("ibv_alloc_mw", mw.status());
  std::vector<WorkCompletion> early;
  const uint32_t seed = a.seed;
  if (auto st = qp->ops().PostRecv(*msg_mr, &msg[2], 4, kWrRecv); !st.ok())
    return Fail("post recv", st);
  RegionInfo info{reinterpret_cast<uintptr_t>(m.addr), len, 0, seed};
  if (auto st = id.Accept(
          absl::string_view(reinterpret_cast<char*>(&info), sizeof info),
          kStep);
      !st.ok())
    return Fail("accept", st);
  if (auto st = qp->ops().PostBindWindow(*mw, *mr, m.addr, len,
                                         kRemoteWrite | kRemoteRead, kWrBind);
      !st.ok())
    return Fail("bind window", st);
  auto wc = WaitFor(*cq, early, kWrBind);
  if (!wc.ok() || !wc->ok())
    return Fail("bind completion",
                wc.ok() ? absl::InternalError(wc->status_text) : wc.status());
  const uint32_t rkey = mw->rkey();
  msg[0] = rkey;
  std::printf("window-serve: window bound over %zu bytes, rkey=0x%x\n", len,
              rkey);
  if (auto st = qp->ops().PostSend(*msg_mr, &msg[0], 4, kWrSendKey); !st.ok())
    return Fail("send rkey", st);
  if (auto w = WaitFor(*cq, early, kWrSendKey); !w.ok() || !w->ok())
    return Fail("send rkey completion", absl::InternalError("failed"));
  // The peer says it is done with the granted access: revoke it.
  if (auto w = WaitFor(*cq, early, kWrRecv); !w.ok() || !w->ok())
    return Fail("recv done", absl::InternalError("failed"));
  if (auto st = qp->ops().PostLocalInvalidate(rkey, kWrInv); !st.ok())
    return Fail("local invalidate", st);
  if (auto w = WaitFor(*cq, early, kWrInv); !w.ok() || !w->ok())
    return Fail("invalidate completion", absl::InternalError("failed"));
  std::printf("window-serve: rkey 0x%x revoked (LOCAL_INV)\n", rkey);
  if (auto st = qp->ops().PostSend(*msg_mr, &msg[0], 4, kWrSendRevoked);
      !st.ok())
    return Fail("send revoked", st);
  (void)WaitFor(*cq, early, kWrSendRevoked);
  std::fflush(stdout);
  (void)id.WaitForDisconnect(absl::Seconds(60));
  const auto* b = static_cast<const uint8_t*>(m.addr);
  size_t bad = 0;
  for (size_t i = 0; i < len; ++i) bad += b[i] != Pattern(seed, i);
  std::printf(
      "window-serve: memory holds exactly the granted writes: %s "
      "(%zu of %zu bytes differ)\n",
      bad == 0 ? "OK" : "FAIL", bad, len);
  return bad == 0 ? 0 : 1;
}

int ClientWindow(const std::string& ip, uint16_t port, size_t len,
                 uint32_t seed) {
  auto ch = EventChannel::Create();
  if (!ch.ok()) return Fail("event channel", ch.status());
  auto id = CmId::Create(*ch);
  if (!id.ok()) return Fail("cm id", id.status());
  if (auto st = id->Resolve(ip, port, kStep); !st.ok())
    return Fail("resolve", st);
  auto pd = ProtectionDomain::Allocate(id->verbs());
  if (!pd.ok()) return Fail("alloc pd", pd.status());
  std::vector<uint8_t> src(len), chk(len, 0), late(len, 0xee);
  for (size_t i = 0; i < len; ++i) src[i] = Pattern(seed, i);
  uint32_t msg[4] = {0, 0, 0, 0};
  auto smr = MemoryRegion::Register(*pd, src.data(), len, kLocalWrite);
  auto cmr = MemoryRegion::Register(*pd, chk.data(), len, kLocalWrite);
  auto lmr = MemoryRegion::Register(*pd, late.data(), len, kLocalWrite);
  auto mmr = MemoryRegion::Register(*pd, msg, sizeof msg, kLocalWrite);
  if (!smr.ok() || !cmr.ok() || !lmr.ok() || !mmr.ok())
    return Fail("register", absl::InternalError("local registration"));
  auto cq = CompletionQueue::Create(id->verbs(), 64);
  if (!cq.ok()) return Fail("create cq", cq.status());
  auto qp = CmQueuePair::Create(*id, *pd, *cq, QueuePairCaps{});
  if (!qp.ok()) return Fail("create qp", qp.status());
  std::vector<WorkCompletion> early;
  if (auto st = qp->ops().PostRecv(*mmr, &msg[0], 4, kWrSendKey); !st.ok())
    return Fail("post recv", st);
  auto priv = id->Connect(
      absl::string_view(reinterpret_cast<char*>(&seed), sizeof seed), kStep);
  if (!priv.ok()) return Fail("connect", priv.status());
  RegionInfo info;
  std::memcpy(&info, priv->data(), sizeof info);
  if (auto w = WaitFor(*cq, early, kWrSendKey); !w.ok() || !w->ok())
    return Fail("receive window rkey", absl::InternalError("failed"));
  const uint32_t rkey = msg[0];
  std::printf("window-client: granted rkey 0x%x\n", rkey);
  // The revoke notice arrives on this receive.
  if (auto st = qp->ops().PostRecv(*mmr, &msg[1], 4, kWrSendRevoked); !st.ok())
    return Fail("post recv", st);
  uint64_t n = 0;
  auto op = [&](bool write, const MemoryRegion& mr, uint8_t* buf) {
    for (size_t off = 0; off < len; off += kChunk) {
      size_t c = std::min(kChunk, len - off);
      uint64_t wr = ++n;
      absl::Status st =
          write
              ? qp->ops().PostWrite(mr, buf + off, c, info.addr + off, rkey, wr)
              : qp->ops().PostRead(mr, buf + off, c, info.addr + off, rkey, wr);
      if (!st.ok()) return st;
      auto wc = WaitFor(*cq, early, wr);
      if (!wc.ok()) return wc.status();
      if (!wc->ok())
        return absl::PermissionDeniedError(
            absl::StrCat("completion status ", wc->status_text));
    }
    return absl::OkStatus();
  };
  if (auto st = op(true, *smr, src.data()); !st.ok())
    return Fail("write through the window", st);
  if (auto st = op(false, *cmr, chk.data()); !st.ok())
    return Fail("read through the window", st);
  size_t bad = 0;
  for (size_t i = 0; i < len; ++i) bad += chk[i] != src[i];
  std::printf("window-client: WRITE+READ through the window: %s (%zu differ)\n",
              bad == 0 ? "OK" : "FAIL", bad);
  msg[2] = 1;
  if (auto st = qp->ops().PostSend(*mmr, &msg[2], 4, kWrRecv); !st.ok())
    return Fail("send done", st);
  (void)WaitFor(*cq, early, kWrRecv);
  if (auto w = WaitFor(*cq, early, kWrSendRevoked); !w.ok() || !w->ok())
    return Fail("receive revoke notice", absl::InternalError("failed"));
  // A late write with the revoked key must be refused.
  absl::Status late_st = op(true, *lmr, late.data());
  std::printf("window-client: write after revoke: %s\n",
              late_st.ok() ? "ACCEPTED (FAIL)"
                           : std::string(late_st.message()).c_str());
  (void)id->Disconnect();
  return bad == 0 && !late_st.ok() ? 0 : 1;
}

int RegMr(const std::string& path, size_t len) {
  Mapping m;
  if (!MapPath(path, len, m)) return 1;
  auto dev = Device::Open("");
  if (!dev.ok()) return Fail("open device", dev.status());
  auto pd = ProtectionDomain::Allocate(dev->get());
  if (!pd.ok()) return Fail("alloc pd", pd.status());
  auto mr = MemoryRegion::Register(*pd, m.addr, len,
                                   kLocalWrite | kRemoteWrite | kRemoteRead);
  if (mr.ok()) {
    std::printf("regmr %s: registered (rkey=0x%x)\n", path.c_str(), mr->rkey());
    return 0;
  }
  std::printf("regmr %s: refused: %s\n", path.c_str(),
              std::string(mr.status().message()).c_str());
  return mr.status().code() == absl::StatusCode::kFailedPrecondition ? 3 : 1;
}

}  // namespace
}  // namespace daxlease::rdma

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s serve|client|regmr --flag value...\n",
                 argv[0]);
    return 64;
  }
  std::string cmd = argv[1];
  std::map<std::string, std::string> f;
  for (int i = 2; i + 1 < argc; i += 2) f[argv[i]] = argv[i + 1];
  auto num = [&](const char* k, unsigned long long d) {
    return f.count(k) ? std::strtoull(f[k].c_str(), nullptr, 0) : d;
  };
  const size_t bytes = num("--bytes", 4u << 20);
  const auto port = static_cast<uint16_t>(num("--port", 18515));
  using namespace daxlease::rdma;
  if (cmd == "serve") return Serve(f["--path"], f["--ip"], port, bytes);
  if (cmd == "client")
    return Client(f["--ip"], port, bytes,
                  static_cast<uint32_t>(num("--seed", 42)));
  if (cmd == "regmr") return RegMr(f["--path"], bytes);
  if (cmd == "window-serve")
    return ServeWindow(f["--path"], f["--ip"], port, bytes);
  if (cmd == "window-client")
    return ClientWindow(f["--ip"], port, bytes,
                        static_cast<uint32_t>(num("--seed", 42)));
  std::fprintf(stderr, "unknown command %s\n", cmd.c_str());
  return 64;
}
