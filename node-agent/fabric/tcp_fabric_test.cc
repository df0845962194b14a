#include "node-agent/fabric/tcp_fabric.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "node-agent/fabric/wire.h"
#include "proto/agent.pb.h"

namespace daxlease::fabric {
namespace {

using ::testing::HasSubstr;

class TcpFabricTest : public ::testing::Test {
 protected:
  void SetUp() override {
    memory_.assign(1 << 20, '\0');
    TcpFabricOptions o;
    o.listen = "127.0.0.1:0";
    o.secret = "s3cret";
    auto f = TcpFabric::Start(o);
    ASSERT_TRUE(f.ok()) << f.status();
    fabric_ = std::move(*f);
    Region r;
    r.volume = "vol";
    r.base = memory_.data();
    r.length = memory_.size();
    r.persist = [this](uint64_t, uint64_t) {
      ++persists_;
      return absl::OkStatus();
    };
    ASSERT_TRUE(fabric_->RegisterVolume(r).ok());
  }

  // A raw connection to the fabric, for peers that misbehave.
  int Dial() {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    std::string ep = fabric_->endpoint();
    a.sin_port =
        htons(static_cast<uint16_t>(std::stoi(ep.substr(ep.rfind(':') + 1))));
    EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    return fd;
  }
  std::string Hello(const GrantInfo& g) {
    agent::v1::FabricHello h;
    h.set_version(1);
    h.set_volume_id(g.key.volume);
    h.set_lease_uid(g.key.lease_uid);
    h.set_holder_node(g.key.holder_node);
    h.set_epoch(g.key.epoch);
    h.set_access(agent::v1::READ_WRITE);
    h.set_credential(g.credential);
    return h.SerializeAsString();
  }

  std::vector<char> memory_;
  std::atomic<int> persists_{0};
  std::unique_ptr<TcpFabric> fabric_;
  TcpConnector connector_;
  const GrantKey key_{"vol", "uid-1", "node-b", 3};
};

TEST_F(TcpFabricTest, WriteReadPersistThroughAGrant) {
  auto g = fabric_->Grant(key_, Access::kReadWrite);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->endpoint, fabric_->endpoint());
  auto remote = connector_.Connect(*g);
  ASSERT_TRUE(remote.ok()) << remote.status();
  EXPECT_EQ((*remote)->size(), memory_.size());

  std::string data(100000, 'x');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 7);
  ASSERT_TRUE((*remote)->Write(4096, data).ok());
  EXPECT_EQ(std::string(memory_.data() + 4096, data.size()), data);
  ASSERT_TRUE((*remote)->Persist(4096, data.size()).ok());
  EXPECT_EQ(persists_.load(), 1);

  std::string back(data.size(), '\0');
  ASSERT_TRUE((*remote)->Read(4096, absl::MakeSpan(back)).ok());
  EXPECT_EQ(back, data);

  EXPECT_EQ((*remote)->Write(memory_.size() - 10, data).code(),
            absl::StatusCode::kOutOfRange);
  // The connection stays usable after a refused request.
  EXPECT_TRUE((*remote)->Read(0, absl::MakeSpan(back.data(), 10)).ok());
}

TEST_F(TcpFabricTest, InvalidateCutsExactlyOnceAndLateWritesNeverLand) {
  auto g = fabric_->Grant(key_, Access::kReadWrite);
  ASSERT_TRUE(g.ok());
  auto remote = connector_.Connect(*g);
  ASSERT_TRUE(remote.ok());
  ASSERT_TRUE((*remote)->Write(0, "before").ok());

  auto cut = fabric_->Invalidate(key_);
  ASSERT_TRUE(cut.ok());
  EXPECT_TRUE(*cut);
  auto again = fabric_->Invalidate(key_);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(*again);

  EXPECT_FALSE((*remote)->Write(100, "after").ok());
  EXPECT_EQ(std::string(memory_.data() + 100, 5), std::string(5, '\0'));
  EXPECT_EQ(std::string(memory_.data(), 6), "before");

  // Reconnecting with the revoked grant, or granting it again, is refused.
  auto re = connector_.Connect(*g);
  EXPECT_EQ(re.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(fabric_->Grant(key_, Access::kReadWrite).status().code(),
            absl::StatusCode::kPermissionDenied);
}

TEST_F(TcpFabricTest, RefusesOtherLeaseNodeEpochOrForgedCredential) {
  auto g = fabric_->Grant(key_, Access::kReadWrite);
  ASSERT_TRUE(g.ok());

  GrantInfo forged = *g;
  forged.credential[0] ^= 1;
  EXPECT_EQ(connector_.Connect(forged).status().code(),
            absl::StatusCode::kPermissionDenied);

  // The same credential presented for another epoch, node or lease: there
  // is no grant under that key.
  for (auto mutate : std::vector<void (*)(GrantKey&)>{
           [](GrantKey& k) { k.epoch = 2; },
           [](GrantKey& k) { k.holder_node = "node-c"; },
           [](GrantKey& k) { k.lease_uid = "uid-2"; }}) {
    GrantInfo other = *g;
    mutate(other.key);
    auto r = connector_.Connect(other);
    EXPECT_FALSE(r.ok());
  }
  // Another live grant's credential does not open this one.
  GrantKey k2 = key_;
  k2.lease_uid = "uid-2";
  auto g2 = fabric_->Grant(k2, Access::kReadWrite);
  ASSERT_TRUE(g2.ok());
  GrantInfo swapped = *g2;
  swapped.credential = g->credential;
  EXPECT_EQ(connector_.Connect(swapped).status().code(),
            absl::StatusCode::kPermissionDenied);

  // A read-only grant refuses writes and read-write hellos.
  GrantKey ro = key_;
  ro.lease_uid = "uid-ro";
  auto gro = fabric_->Grant(ro, Access::kReadOnly);
  ASSERT_TRUE(gro.ok());
  auto rro = connector_.Connect(*gro);
  ASSERT_TRUE(rro.ok()) << rro.status();
  EXPECT_EQ((*rro)->Write(0, "x").code(), absl::StatusCode::kPermissionDenied);
}

TEST_F(TcpFabricTest, UngrantedKeyIsUnavailableUntilGranted) {
  GrantInfo info;
  info.key = key_;
  info.access = Access::kReadWrite;
  info.endpoint = fabric_->endpoint();
  info.credential = GrantCredential("s3cret", key_, Access::kReadWrite);
  EXPECT_EQ(connector_.Connect(info).status().code(),
            absl::StatusCode::kUnavailable);
  ASSERT_TRUE(fabric_->Grant(key_, Access::kReadWrite).ok());
  EXPECT_TRUE(connector_.Connect(info).ok());
}

TEST_F(TcpFabricTest, InvalidateBeforeCutsOlderEpochsOnly) {
  GrantKey old = key_;
  old.epoch = 2;
  ASSERT_TRUE(fabric_->Grant(old, Access::kReadWrite).ok());
  ASSERT_TRUE(fabric_->Grant(key_, Access::kReadWrite).ok());
  auto n = fabric_->InvalidateBefore("vol", 3);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 1);
  EXPECT_TRUE(fabric_->Grant(key_, Access::kReadWrite).ok());
  EXPECT_FALSE(fabric_->Grant(old, Access::kReadWrite).ok());
}

TEST_F(TcpFabricTest, ConcurrentWritersWhileFencingNeverGetOkAfterTheCut) {
  auto g = fabric_->Grant(key_, Access::kReadWrite);
  ASSERT_TRUE(g.ok());
  auto remote = connector_.Connect(*g);
  ASSERT_TRUE(remote.ok());
  std::atomic<bool> fenced{false};
  std::atomic<int> ok_after{0};
  std::thread writer([&] {
    std::string chunk(4096, 'w');
    for (int i = 0; i < 100000; ++i) {
      bool was_fenced = fenced.load();
      absl::Status st = (*remote)->Write((i % 200) * 4096, chunk);
      if (!st.ok()) return;
      if (was_fenced) ++ok_after;
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_TRUE(fabric_->Invalidate(key_).ok());
  fenced.store(true);
  writer.join();
  EXPECT_EQ(ok_after.load(), 0);
}

}  // namespace
}  // namespace daxlease::fabric

namespace daxlease::fabric {
namespace {

// After InvalidateBefore(e), a grant or a connection at an older epoch is
// refused at once as stale (not "not granted yet", which a client retries),
// even with a credential the secret made and never granted here (a holder
// that comes back after an owner restart).
TEST_F(TcpFabricTest, StaleEpochIsRefusedClearly) {
  ASSERT_TRUE(fabric_->InvalidateBefore("vol", 4).ok());
  GrantInfo info;
  info.key = key_;  // epoch 3
  info.access = Access::kReadWrite;
  info.endpoint = fabric_->endpoint();
  info.credential = GrantCredential("s3cret", key_, Access::kReadWrite);
  auto c = connector_.Connect(info);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(c.status().message(), HasSubstr("stale epoch"));
  auto g = fabric_->Grant(key_, Access::kReadWrite);
  EXPECT_EQ(g.status().code(), absl::StatusCode::kPermissionDenied);
  GrantKey now = key_;
  now.epoch = 4;
  EXPECT_TRUE(fabric_->Grant(now, Access::kReadWrite).ok());
}

// Peers that hang up in the middle of a handshake, a request header or a
// write's payload cost the others nothing: the fabric keeps serving, a
// live holder's bytes are intact, and a cut still completes at once.
TEST_F(TcpFabricTest, PeerDisconnectingMidRequestCostsNothing) {
  auto g = fabric_->Grant(key_, Access::kReadWrite);
  ASSERT_TRUE(g.ok());
  auto good = connector_.Connect(*g);
  ASSERT_TRUE(good.ok()) << good.status();
  ASSERT_TRUE((*good)->Write(0, "kept").ok());

  {  // Half a handshake frame.
    int fd = Dial();
    uint32_t len = 100;
    ASSERT_TRUE(wire::WriteFull(fd, &len, sizeof(len)).ok());
    ASSERT_TRUE(wire::WriteFull(fd, "abc", 3).ok());
    close(fd);
  }
  {  // A garbage handshake.
    int fd = Dial();
    ASSERT_TRUE(wire::WriteFrame(fd, "\xff\xff not a hello").ok());
    close(fd);
  }
  {  // Half a request header, then a write with half its payload.
    int fd = Dial();
    ASSERT_TRUE(wire::WriteFrame(fd, Hello(*g)).ok());
    auto reply = wire::ReadFrame(fd, 64 * 1024);
    ASSERT_TRUE(reply.ok());
    wire::RequestHeader req{wire::kOpWrite, 0, 4096, 8192};
    ASSERT_TRUE(wire::WriteFull(fd, &req, sizeof(req)).ok());
    std::string half(4096, 'x');
    ASSERT_TRUE(wire::WriteFull(fd, half.data(), half.size()).ok());
    close(fd);
    int fd2 = Dial();
    ASSERT_TRUE(wire::WriteFrame(fd2, Hello(*g)).ok());
    ASSERT_TRUE(wire::ReadFrame(fd2, 64 * 1024).ok());
    ASSERT_TRUE(wire::WriteFull(fd2, &req, 10).ok());
    close(fd2);
  }
  // The live holder goes on; its bytes are there.
  std::string out(4, '\0');
  ASSERT_TRUE((*good)->Read(0, absl::MakeSpan(out)).ok());
  EXPECT_EQ(out, "kept");
  ASSERT_TRUE((*good)->Write(100, "more").ok());
  ASSERT_TRUE((*good)->Persist(0, 104).ok());
  EXPECT_EQ(std::string(memory_.data() + 100, 4), "more");
  // Nothing holds the grant's operation lock: the cut is immediate.
  auto start = std::chrono::steady_clock::now();
  auto cut = fabric_->Invalidate(key_);
  ASSERT_TRUE(cut.ok());
  EXPECT_TRUE(*cut);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  EXPECT_EQ((*good)->Write(0, "late").code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(std::string(memory_.data(), 4), "kept");
}

// A persist carries no payload: a range larger than the largest payload (a
// whole volume over 16 MiB, as libdaxlease's recall flush and
// daxlease_persist(vol, 0, 0) ask for) must be made durable. The owner
// refused it (OutOfRange), so a remote writer with unpersisted bytes could
// not flush for a recall and was revoked.
TEST_F(TcpFabricTest, PersistsARangeLargerThanTheLargestPayload) {
  std::vector<char> big(2 * wire::kMaxOpBytes + (1 << 20));
  std::mutex mu;
  std::vector<std::pair<uint64_t, uint64_t>> persisted;
  Region r;
  r.volume = "big";
  r.base = big.data();
  r.length = big.size();
  r.persist = [&](uint64_t off, uint64_t len) {
    std::lock_guard<std::mutex> l(mu);
    persisted.emplace_back(off, len);
    return absl::OkStatus();
  };
  ASSERT_TRUE(fabric_->RegisterVolume(r).ok());
  auto g = fabric_->Grant({"big", "uid-1", "node-b", 3}, Access::kReadWrite);
  ASSERT_TRUE(g.ok()) << g.status();
  auto remote = connector_.Connect(*g);
  ASSERT_TRUE(remote.ok()) << remote.status();
  const std::string tail = "tail";
  ASSERT_TRUE((*remote)->Write(big.size() - tail.size(), tail).ok());
  absl::Status st = (*remote)->Persist(0, big.size());
  EXPECT_TRUE(st.ok()) << st;
  {
    std::lock_guard<std::mutex> l(mu);
    uint64_t covered = 0;
    for (const auto& [off, len] : persisted) {
      EXPECT_EQ(off, covered);
      covered += len;
    }
    EXPECT_EQ(covered, big.size());
    persisted.clear();
  }
  EXPECT_EQ((*remote)->Persist(1, big.size()).code(),
            absl::StatusCode::kOutOfRange);

  // In one request, as a holder of an earlier version sends it.
  int fd = Dial();
  ASSERT_TRUE(wire::WriteFrame(fd, Hello(*g)).ok());
  ASSERT_TRUE(wire::ReadFrame(fd, 64 * 1024).ok());
  wire::RequestHeader req{wire::kOpPersist, 0, 0, big.size()};
  ASSERT_TRUE(wire::WriteFull(fd, &req, sizeof(req)).ok());
  absl::Status answer;
  ASSERT_TRUE(wire::ReadReply(fd, &answer, nullptr, 0).ok());
  EXPECT_TRUE(answer.ok()) << answer;
  close(fd);
  {
    std::lock_guard<std::mutex> l(mu);
    EXPECT_EQ(persisted,
              (std::vector<std::pair<uint64_t, uint64_t>>{{0, big.size()}}));
  }
  remote->reset();
  ASSERT_TRUE(fabric_->DeregisterVolume("big").ok());
}

// DIGESTS (a migration's target, inside the pause): one request for a whole
// range, answered by the owner's Region::digests with 16 bytes per chunk; a
// read-only grant may ask; an owner that offers none answers Unimplemented
// and the connection stays usable; a cut grant is refused.
TEST_F(TcpFabricTest, DigestsAreServedPerChunkThroughAReadOnlyGrant) {
  std::vector<char> mem(10000, 'x');
  Region r;
  r.volume = "dig";
  r.base = mem.data();
  r.length = mem.size();
  std::vector<std::string> asked;
  r.digests = [&](uint64_t off, uint64_t len,
                  uint64_t chunk) -> absl::StatusOr<std::string> {
    asked.push_back(absl::StrCat(off, "+", len, "/", chunk));
    std::string out;
    for (uint64_t o = off; o < off + len; o += chunk) {
      out.append(kDigestBytes, static_cast<char>('a' + o / chunk));
    }
    return out;
  };
  ASSERT_TRUE(fabric_->RegisterVolume(r).ok());
  const GrantKey key{"dig", "migration/uid", "node-b", 3};
  auto g = fabric_->Grant(key, Access::kReadOnly);
  ASSERT_TRUE(g.ok()) << g.status();
  auto remote = connector_.Connect(*g);
  ASSERT_TRUE(remote.ok()) << remote.status();
  auto d = (*remote)->Digests(0, mem.size(), 4096);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(*d,
            std::string(16, 'a') + std::string(16, 'b') + std::string(16, 'c'));
  EXPECT_THAT(asked, ::testing::ElementsAre("0+10000/4096"));
  // Not at a chunk, or past the end: refused before anything is sent.
  EXPECT_EQ((*remote)->Digests(5, 100, 4096).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*remote)->Digests(0, mem.size() + 1, 4096).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<char> buf(10);
  EXPECT_TRUE((*remote)->Read(0, absl::MakeSpan(buf)).ok());

  // An owner that offers no digests (the holders' volume above).
  auto g2 = fabric_->Grant(key_, Access::kReadOnly);
  ASSERT_TRUE(g2.ok()) << g2.status();
  auto plain = connector_.Connect(*g2);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ((*plain)->Digests(0, 4096, 4096).status().code(),
            absl::StatusCode::kUnimplemented);
  EXPECT_TRUE((*plain)->Read(0, absl::MakeSpan(buf)).ok())
      << "the connection stays in step";

  // Cut: its connection is closed, and a new one is refused.
  ASSERT_TRUE(fabric_->Invalidate(key).ok());
  EXPECT_FALSE((*remote)->Digests(0, mem.size(), 4096).ok());
  EXPECT_EQ(connector_.Connect(*g).status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(asked, ::testing::SizeIs(1));
}

// The migration's bulk read: every piece in order, each handed over before
// the next is received, across more than one window of requests.
TEST_F(TcpFabricTest, ReadStreamHandsOverEveryPieceInOrder) {
  std::vector<char> big(RemoteRegion::kReadStreamWindow * 2 + 12345);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7);
  Region r;
  r.volume = "big";
  r.base = big.data();
  r.length = big.size();
  ASSERT_TRUE(fabric_->RegisterVolume(r).ok());
  auto g = fabric_->Grant({"big", "uid-1", "node-b", 3}, Access::kReadOnly);
  ASSERT_TRUE(g.ok()) << g.status();
  auto remote = connector_.Connect(*g);
  ASSERT_TRUE(remote.ok()) << remote.status();
  std::vector<char> buf((1 << 20) + 3);
  std::string got;
  uint64_t next = 5;
  absl::Status st =
      (*remote)->ReadStream(5, big.size() - 5, absl::MakeSpan(buf),
                            [&](uint64_t off, absl::Span<const char> d) {
                              EXPECT_EQ(off, next);
                              EXPECT_LE(d.size(), buf.size());
                              next = off + d.size();
                              got.append(d.data(), d.size());
                              return absl::OkStatus();
                            });
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_TRUE(got == std::string(big.data() + 5, big.size() - 5));

  // A piece refused by the caller ends the read with its status; replies
  // were still on their way, so the connection is given up.
  int calls = 0;
  st = (*remote)->ReadStream(0, 8 << 20, absl::MakeSpan(buf),
                             [&](uint64_t, absl::Span<const char>) {
                               ++calls;
                               return absl::DataLossError("disk full");
                             });
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ((*remote)->Read(0, absl::MakeSpan(buf.data(), 10)).code(),
            absl::StatusCode::kUnavailable);

  // Past the end: the owner's OutOfRange, nothing handed over.
  auto again = connector_.Connect(*g);
  ASSERT_TRUE(again.ok()) << again.status();
  calls = 0;
  st = (*again)->ReadStream(big.size() - 10, 20, absl::MakeSpan(buf),
                            [&](uint64_t, absl::Span<const char>) {
                              ++calls;
                              return absl::OkStatus();
                            });
  EXPECT_EQ(st.code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(calls, 0);
  remote->reset();
  again->reset();
  ASSERT_TRUE(fabric_->DeregisterVolume("big").ok());
}

// ReadStream pipelines: an owner that answers nothing until it has been
// asked for every piece (4) still serves the read. Piece by piece (one
// request, wait for its reply) the owner would wait forever: the copy of a
// migration left the source idle that way for most of its time.
// A listening socket on loopback with an accept queue of `backlog` (+1, as
// Linux counts); it accepts nothing itself, so unless the test does,
// connections complete in the kernel while the queue has room and nobody
// answers them.
struct LoopbackListener {
  explicit LoopbackListener(int backlog) {
    fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    EXPECT_EQ(listen(fd, backlog), 0);
    socklen_t len = sizeof(a);
    EXPECT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len), 0);
    endpoint = absl::StrCat("127.0.0.1:", ntohs(a.sin_port));
  }
  ~LoopbackListener() { Close(); }
  // Closing resets the connections it queued: a Connect still waiting on
  // one returns.
  void Close() {
    if (fd >= 0) close(fd);
    fd = -1;
  }
  int fd = -1;
  std::string endpoint;
};

// An owner that never answers (its agent stuck, or its node gone with its
// SYNs dropped once the queue is full) costs the caller the connector's
// timeout, not the kernel's minutes of retries: Unavailable, naming the
// endpoint. Both steps: the first Connect completes in the kernel and then
// waits for the FabricHelloReply; later ones find the queue full.
TEST(TcpConnectorTest, AnOwnerThatNeverAnswersCostsTheTimeout) {
  LoopbackListener owner(0);
  GrantInfo g;
  g.key = {"vol", "uid-1", "node-b", 3};
  g.endpoint = owner.endpoint;
  TcpConnector connector(absl::Milliseconds(300));
  for (int i = 0; i < 3; ++i) {
    std::promise<absl::Status> result;
    std::future<absl::Status> done = result.get_future();
    std::thread t([&] { result.set_value(connector.Connect(g).status()); });
    const bool in_time =
        done.wait_for(std::chrono::seconds(5)) == std::future_status::ready;
    if (!in_time) owner.Close();  // let a Connect that ignores its timeout go
    t.join();
    ASSERT_TRUE(in_time) << "attempt " << i << " waited more than 5 s";
    absl::Status st = done.get();
    EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable) << st;
    EXPECT_THAT(st.message(), HasSubstr(owner.endpoint));
    EXPECT_THAT(st.message(), HasSubstr("within 300ms")) << st;
  }
}

TEST(TcpReadStreamTest, AsksForEveryPieceBeforeTheFirstReply) {
  LoopbackListener listener(1);
  constexpr uint64_t kPiece = 4096;
  std::atomic<int> asked_before_reply{0};
  std::thread owner([&] {
    int fd = accept(listener.fd, nullptr, nullptr);
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(wire::ReadFrame(fd, 64 * 1024).ok());
    agent::v1::FabricHelloReply reply;
    reply.set_size_bytes(4 * kPiece);
    ASSERT_TRUE(wire::WriteFrame(fd, reply.SerializeAsString()).ok());
    // Up to 4 requests, 5 s at most for them.
    std::vector<wire::RequestHeader> reqs;
    const auto until =
        std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (reqs.size() < 4 && std::chrono::steady_clock::now() < until) {
      wire::RequestHeader h;
      if (recv(fd, &h, sizeof(h), MSG_DONTWAIT | MSG_PEEK) ==
          static_cast<ssize_t>(sizeof(h))) {
        ASSERT_TRUE(wire::ReadFull(fd, &h, sizeof(h)).ok());
        reqs.push_back(h);
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    }
    asked_before_reply = static_cast<int>(reqs.size());
    std::string piece(kPiece, 'p');
    for (const auto& h : reqs) {
      piece[0] = static_cast<char>('0' + h.offset / kPiece);
      ASSERT_TRUE(
          wire::WriteReply(fd, absl::OkStatus(), piece.data(), h.length).ok());
    }
    close(fd);
  });
  GrantInfo g;
  g.key = {"vol", "uid-1", "node-b", 3};
  g.endpoint = listener.endpoint;
  g.credential = "c";
  TcpConnector connector;
  auto remote = connector.Connect(g);
  ASSERT_TRUE(remote.ok()) << remote.status();
  std::vector<char> buf(kPiece);
  std::string firsts;
  absl::Status st =
      (*remote)->ReadStream(0, 4 * kPiece, absl::MakeSpan(buf),
                            [&](uint64_t, absl::Span<const char> d) {
                              firsts.push_back(d[0]);
                              return absl::OkStatus();
                            });
  owner.join();
  EXPECT_EQ(asked_before_reply.load(), 4);
  EXPECT_TRUE(st.ok()) << st;
  EXPECT_EQ(firsts, "0123");
}

}  // namespace
}  // namespace daxlease::fabric
