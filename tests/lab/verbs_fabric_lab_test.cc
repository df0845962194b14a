// VerbsFabric over Soft-RoCE in the QEMU lab (guest/verbs_fabric.sh runs
// it): real RDMA READ/WRITE into a devdax namespace through type-2 memory
// windows, revoked with LOCAL_INV.
//
// There is no API server in the guest: the control path is the one
// client_agent_test uses, in this one process: a FakeKubeClient, the real
// operator (op::Controller), and two real agents (AgentNode, each with its
// own VerbsFabric on the guest's rxe address and its own unix socket);
// libdaxlease clients attach through those sockets.
//
// Environment (set by the guest script; every test skips without it):
//   DAXLEASE_LAB_IP      the address rxe0's netdev carries
//   DAXLEASE_LAB_DAX     a devdax character device (>= 64 MiB)
//   DAXLEASE_LAB_FSDAX   a directory on an fsdax (-o dax) mount
// Figures are printed as "FIGURE name value unit".
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/volume.h"
#include "gtest/gtest.h"
#include "lib/api/json.h"
#include "lib/k8s/fake_client.h"
#include "node-agent/agent/agent.h"
#include "node-agent/agent/checksum.h"
#include "node-agent/fabric/verbs_fabric.h"
#include "node-agent/testing/agent_node.h"
#include "node-agent/testing/agent_stack.h"
#include "node-agent/testing/keeping_connector.h"
#include "operator/controller.h"
#include "operator/events.h"

namespace daxlease {
namespace {

constexpr char kSecret[] = "0123456789abcdef-lab-verbs";
constexpr uint64_t kVolBytes = 32u << 20;

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? "" : v;
}

#define REQUIRE_LAB()                                                      \
  do {                                                                     \
    if (Env("DAXLEASE_LAB_IP").empty() || Env("DAXLEASE_LAB_DAX").empty()) \
      GTEST_SKIP() << "needs the QEMU lab (DAXLEASE_LAB_IP, "              \
                      "DAXLEASE_LAB_DAX): tests/lab/run.sh verbs_fabric";  \
  } while (0)

bool WaitFor(const std::function<bool()>& pred, int ms = 60000) {
  for (int i = 0; i < ms / 10; ++i) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return pred();
}

void Figure(const std::string& name, double value, const std::string& unit) {
  std::printf("FIGURE %s %.3f %s\n", name.c_str(), value, unit.c_str());
  std::fflush(stdout);
}

// The owner's own MAP_SHARED view of a file or device.
class Mapping {
 public:
  Mapping(const std::string& path, uint64_t len) : len_(len) {
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT, 0644);
    if (fd_ < 0) return;
    struct stat st;
    if (::fstat(fd_, &st) == 0 && S_ISREG(st.st_mode))
      (void)::posix_fallocate(fd_, 0, static_cast<off_t>(len));
    void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
    if (p != MAP_FAILED) base_ = static_cast<char*>(p);
  }
  ~Mapping() {
    if (base_ != nullptr) ::munmap(base_, len_);
    if (fd_ >= 0) ::close(fd_);
  }
  char* base() const { return base_; }
  uint64_t len() const { return len_; }

 private:
  int fd_ = -1;
  char* base_ = nullptr;
  uint64_t len_;
};

std::vector<char> Pattern(size_t n, unsigned seed) {
  std::vector<char> v(n);
  for (size_t i = 0; i < n; ++i)
    v[i] = static_cast<char>((i * 131 + seed + (i >> 12)) & 0xff);
  return v;
}

double MiBps(uint64_t bytes, absl::Duration d) {
  return static_cast<double>(bytes) / (1 << 20) / absl::ToDoubleSeconds(d);
}

// ---- the fabric alone -------------------------------------------------------

// An owner's fabric on the guest's rxe address (any port), with the lab's
// secret and `window_pool` windows bound ahead of the holders (0: the
// fabric's default).
absl::StatusOr<std::unique_ptr<fabric::VerbsFabric>> StartOwner(
    size_t window_pool = 0) {
  fabric::VerbsFabricOptions o;
  o.listen = Env("DAXLEASE_LAB_IP") + ":0";
  o.secret = kSecret;
  if (window_pool > 0) o.window_pool = window_pool;
  return fabric::VerbsFabric::Start(o);
}

TEST(VerbsFabricLab, GrantWriteReadThenRevokeRefusesTheLateWrite) {
  REQUIRE_LAB();
  Mapping m(Env("DAXLEASE_LAB_DAX"), kVolBytes);
  ASSERT_NE(m.base(), nullptr);
  std::memset(m.base(), 0, kVolBytes);
  auto f = StartOwner(/*window_pool=*/4);
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_TRUE(
      (*f)->RegisterVolume({"vol", m.base(), kVolBytes, nullptr, nullptr})
          .ok());
  EXPECT_EQ((*f)->RegisterVolume({"vol", m.base(), kVolBytes, nullptr, nullptr})
                .code(),
            absl::StatusCode::kAlreadyExists);
  fabric::GrantKey ka{"vol", "lease-a", "node-b", 1};
  fabric::GrantKey kb{"vol", "lease-b", "node-c", 1};
  auto ga = (*f)->Grant(ka, fabric::Access::kReadWrite);
  auto gb = (*f)->Grant(kb, fabric::Access::kReadOnly);
  ASSERT_TRUE(ga.ok() && gb.ok());
  EXPECT_EQ(ga->fabric, "verbs");

  fabric::VerbsConnector connector;
  absl::Time t0 = absl::Now();
  auto a = connector.Connect(*ga);
  ASSERT_TRUE(a.ok()) << a.status();
  Figure("verbs_connect_ms", absl::ToDoubleMilliseconds(absl::Now() - t0),
         "ms");
  auto b = connector.Connect(*gb);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ((*a)->size(), kVolBytes);

  // A forged credential and an unknown grant are refused at the handshake.
  fabric::GrantInfo forged = *ga;
  forged.credential = std::string(forged.credential.size(), 'x');
  EXPECT_EQ(connector.Connect(forged).status().code(),
            absl::StatusCode::kPermissionDenied);

  const uint64_t n = 8u << 20;
  std::vector<char> src = Pattern(n, 7);
  t0 = absl::Now();
  ASSERT_TRUE((*a)->Write(4096, absl::MakeConstSpan(src)).ok());
  ASSERT_TRUE((*a)->Persist(4096, n).ok());
  const absl::Duration wrote = absl::Now() - t0;
  EXPECT_EQ(std::memcmp(m.base() + 4096, src.data(), n), 0)
      << "the owner's memory holds the remote write";
  std::vector<char> back(n);
  t0 = absl::Now();
  ASSERT_TRUE((*b)->Read(4096, absl::MakeSpan(back)).ok());
  const absl::Duration read = absl::Now() - t0;
  EXPECT_EQ(back, src);
  Figure("verbs_write_persist_MiBps", MiBps(n, wrote), "MiB/s");
  Figure("verbs_read_MiBps", MiBps(n, read), "MiB/s");
  // A read-only grant's window has no remote write right.
  EXPECT_EQ((*b)->Write(0, absl::MakeConstSpan("x", 1)).code(),
            absl::StatusCode::kPermissionDenied);

  // Revoke a: one LOCAL_INV; asking again is a no-op, not a second one
  // (which would panic the kernel: this process would not get here).
  auto before = std::vector<char>(m.base(), m.base() + kVolBytes);
  t0 = absl::Now();
  auto cut = (*f)->Invalidate(ka);
  Figure("verbs_invalidate_call_ms",
         absl::ToDoubleMilliseconds(absl::Now() - t0), "ms");
  ASSERT_TRUE(cut.ok() && *cut);
  auto again = (*f)->Invalidate(ka);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(*again);
  std::vector<char> late(1 << 20, 'L');
  absl::Status st = (*a)->Write(0, absl::MakeConstSpan(late));
  EXPECT_EQ(st.code(), absl::StatusCode::kPermissionDenied) << st;
  std::printf("late write after revoke: %s\n", st.ToString().c_str());
  EXPECT_TRUE(std::memcmp(m.base(), before.data(), kVolBytes) == 0)
      << "the revoked holder's write touched the owner's memory";
  // The holder dropped its QP (error state) and reconnects on the next
  // call: the owner refuses the revoked grant.
  st = (*a)->Write(0, absl::MakeConstSpan("y", 1));
  EXPECT_EQ(st.code(), absl::StatusCode::kPermissionDenied) << st;
  EXPECT_EQ(connector.Connect(*ga).status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ((*f)->Grant(ka, fabric::Access::kReadWrite).status().code(),
            absl::StatusCode::kPermissionDenied);
  // The other holder is untouched by a's revocation.
  ASSERT_TRUE((*b)->Read(4096, absl::MakeSpan(back)).ok());
  EXPECT_EQ(back, src);

  // A new epoch: a fresh window and key; the stale epoch is refused.
  ASSERT_TRUE((*f)->InvalidateBefore("vol", 2).ok());
  EXPECT_EQ((*b)->Read(0, absl::MakeSpan(back.data(), 16)).code(),
            absl::StatusCode::kPermissionDenied);
  auto g2 =
      (*f)->Grant({"vol", "lease-a", "node-b", 2}, fabric::Access::kReadWrite);
  ASSERT_TRUE(g2.ok());
  auto a2 = connector.Connect(*g2);
  ASSERT_TRUE(a2.ok()) << a2.status();
  ASSERT_TRUE((*a2)->Write(0, absl::MakeConstSpan("epoch2", 6)).ok());
  ASSERT_TRUE((*a2)->Persist(0, 6).ok());
  EXPECT_EQ(std::string(m.base(), 6), "epoch2");

  fabric::VerbsFabricStats s = (*f)->stats();
  std::printf("binds %lld invalidates %lld pooled %zu misses %zu\n",
              static_cast<long long>(s.binds),
              static_cast<long long>(s.invalidates), s.pooled_windows,
              s.pool_misses);
  ASSERT_GT(s.binds, 0);
  ASSERT_GT(s.invalidates, 0);
  Figure("verbs_window_bind_us",
         absl::ToDoubleMicroseconds(s.bind_total) / s.binds, "us");
  Figure("verbs_window_invalidate_us",
         absl::ToDoubleMicroseconds(s.invalidate_total) / s.invalidates, "us");
  a->reset();
  b->reset();
  a2->reset();
  ASSERT_TRUE((*f)->DeregisterVolume("vol").ok());
  f->reset();  // windows before QPs before the MR: no 51 s hang, no panic
}

// DIGESTS over verbs (a migration's target inside the pause): the owner's
// digests of a devdax region's 16 MiB chunks, as agent::HashChunks computes
// them locally, whole and from the second chunk; a chunk a holder changed
// (an RDMA WRITE, persisted) shows a new digest and the other does not; a
// chunk size the owner does not hash in (InvalidArgument, from the owner),
// an offset off a chunk (InvalidArgument) and a range past the end
// (OutOfRange) are refused and the connection still answers; a region
// registered without digests gives Unimplemented; after Invalidate the
// request is refused (PermissionDenied), and stays refused.
TEST(VerbsFabricLab, DigestsMatchTheOwnersAndAreRefusedOnceRevoked) {
  REQUIRE_LAB();
  constexpr uint64_t kChunk = agent::kChecksumChunk;
  static_assert(kVolBytes == 2 * kChunk);
  Mapping m(Env("DAXLEASE_LAB_DAX"), kVolBytes);
  ASSERT_NE(m.base(), nullptr);
  std::vector<char> fill = Pattern(kVolBytes, 3);
  std::memcpy(m.base(), fill.data(), kVolBytes);
  auto f = StartOwner(/*window_pool=*/4);
  ASSERT_TRUE(f.ok()) << f.status();
  char* base = m.base();
  fabric::Region region{"vol", base, kVolBytes, nullptr, nullptr};
  region.digests = [base](uint64_t off, uint64_t len,
                          uint64_t chunk) -> absl::StatusOr<std::string> {
    if (chunk != kChunk) {
      return absl::InvalidArgumentError(absl::StrCat(
          "chunk digests are of ", kChunk, " bytes here, not ", chunk));
    }
    return agent::HashChunks(base, kVolBytes, off, len);
  };
  ASSERT_TRUE((*f)->RegisterVolume(region).ok());
  std::vector<char> plain(1 << 20, 'p');
  ASSERT_TRUE((*f)->RegisterVolume(
                      {"plain", plain.data(), plain.size(), nullptr, nullptr})
                  .ok());
  fabric::GrantKey ka{"vol", "lease-d", "node-b", 1};
  auto ga = (*f)->Grant(ka, fabric::Access::kReadWrite);
  ASSERT_TRUE(ga.ok()) << ga.status();
  fabric::VerbsConnector connector;
  auto a = connector.Connect(*ga);
  ASSERT_TRUE(a.ok()) << a.status();

  absl::Time t0 = absl::Now();
  auto whole = (*a)->Digests(0, kVolBytes, kChunk);
  const absl::Duration took = absl::Now() - t0;
  ASSERT_TRUE(whole.ok()) << whole.status();
  Figure("verbs_digests_32_MiB_ms", absl::ToDoubleMilliseconds(took), "ms");
  auto local = agent::HashChunks(base, kVolBytes, 0, kVolBytes);
  ASSERT_TRUE(local.ok());
  ASSERT_EQ(whole->size(), 2 * fabric::kDigestBytes);
  EXPECT_EQ(*whole, *local);
  auto second = (*a)->Digests(kChunk, kChunk, kChunk);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(*second, local->substr(fabric::kDigestBytes));

  // A holder changes chunk 1: its digest changes, chunk 0's does not.
  std::vector<char> change(4096, 'Z');
  ASSERT_TRUE((*a)->Write(kChunk + 8192, absl::MakeConstSpan(change)).ok());
  ASSERT_TRUE((*a)->Persist(kChunk + 8192, change.size()).ok());
  auto after = (*a)->Digests(0, kVolBytes, kChunk);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->substr(0, fabric::kDigestBytes),
            whole->substr(0, fabric::kDigestBytes));
  EXPECT_NE(after->substr(fabric::kDigestBytes),
            whole->substr(fabric::kDigestBytes));
  EXPECT_EQ(*after, *agent::HashChunks(base, kVolBytes, 0, kVolBytes));

  // Refusals; the connection answers on after each.
  absl::Status st = (*a)->Digests(0, kVolBytes, 1 << 20).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  std::printf("chunk size refused: %s\n", st.ToString().c_str());
  EXPECT_NE(st.message().find("refused DIGESTS"), absl::string_view::npos)
      << "the owner's answer: " << st;
  st = (*a)->Digests(4096, kChunk, kChunk).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  st = (*a)->Digests(kChunk, kVolBytes, kChunk).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kOutOfRange) << st;
  st = (*a)->Digests(4 * kChunk, kChunk, kChunk).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kOutOfRange) << st;
  auto again = (*a)->Digests(0, kVolBytes, kChunk);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again, *after);

  // A region without digests.
  auto gp =
      (*f)->Grant({"plain", "lease-p", "node-b", 1}, fabric::Access::kReadOnly);
  ASSERT_TRUE(gp.ok()) << gp.status();
  auto p = connector.Connect(*gp);
  ASSERT_TRUE(p.ok()) << p.status();
  st = (*p)->Digests(0, plain.size(), kChunk).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kUnimplemented) << st;
  std::printf("no digests: %s\n", st.ToString().c_str());
  std::vector<char> back(16);
  EXPECT_TRUE((*p)->Read(0, absl::MakeSpan(back)).ok())
      << "the connection still serves reads";

  // Revoked: the request is refused like an RDMA op, and stays refused.
  auto cut = (*f)->Invalidate(ka);
  ASSERT_TRUE(cut.ok() && *cut);
  st = (*a)->Digests(0, kVolBytes, kChunk).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kPermissionDenied) << st;
  std::printf("digests after revoke: %s\n", st.ToString().c_str());
  st = (*a)->Digests(0, kChunk, kChunk).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kPermissionDenied) << st;
  EXPECT_EQ((*a)->Read(0, absl::MakeSpan(back)).code(),
            absl::StatusCode::kPermissionDenied);

  a->reset();
  p->reset();
  ASSERT_TRUE((*f)->DeregisterVolume("vol").ok());
  ASSERT_TRUE((*f)->DeregisterVolume("plain").ok());
  f->reset();
}

TEST(VerbsFabricLab, FsdaxWithoutOdpIsRefusedWithTheReason) {
  REQUIRE_LAB();
  if (Env("DAXLEASE_LAB_FSDAX").empty())
    GTEST_SKIP() << "needs DAXLEASE_LAB_FSDAX";
  Mapping m(Env("DAXLEASE_LAB_FSDAX") + "/verbs-data", 4u << 20);
  ASSERT_NE(m.base(), nullptr);
  auto f = StartOwner();
  ASSERT_TRUE(f.ok()) << f.status();
  // What the node reports (NodeGetInfo daxlease.io/fsdax-sharing=false).
  absl::Status can = (*f)->CanShareFsdax();
  std::printf("fsdax sharing: %s\n", can.ToString().c_str());
  EXPECT_EQ(can.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(can.message().find("on-demand paging"), absl::string_view::npos);
  absl::Status st =
      (*f)->RegisterVolume({"fsdax-vol", m.base(), m.len(), nullptr, nullptr});
  std::printf("fsdax registration: %s\n", st.ToString().c_str());
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(st.message().find("devdax"), absl::string_view::npos);
  EXPECT_NE(st.message().find("on-demand"), absl::string_view::npos);
}

// ---- the whole stack: operator, two agents, libdaxlease -------------------

using agent::testing::KeepingConnector;

class VerbsStackLab : public ::testing::Test {
 protected:
  void SetUp() override {
    REQUIRE_LAB();
    owner_view_ = std::make_unique<Mapping>(Env("DAXLEASE_LAB_DAX"), kVolBytes);
    ASSERT_NE(owner_view_->base(), nullptr);
    std::memset(owner_view_->base(), 0, kVolBytes);
    agent::testing::AgentStackOptions so;
    so.dir_prefix = "/tmp/verbs_stack_lab";
    so.secret = kSecret;
    so.node_resync = absl::Milliseconds(100);
    so.verbs_ip = Env("DAXLEASE_LAB_IP");
    absl::Status started = stack_.Start(so);
    ASSERT_TRUE(started.ok()) << started;
    agent::pb::RecordVolumeRequest rec;
    rec.set_volume_id("vol");
    rec.set_size_bytes(kVolBytes);
    rec.set_mode(agent::pb::DEVDAX);
    rec.set_share(true);
    rec.set_recall_grace_seconds(20);
    ASSERT_TRUE(a_->agent().RecordVolume(rec).ok());
    agent::pb::ServeVolumeRequest serve;
    serve.set_volume_id("vol");
    serve.set_mode(agent::pb::DEVDAX);
    serve.set_device(Env("DAXLEASE_LAB_DAX"));
    serve.set_size_bytes(kVolBytes);
    auto served = a_->agent().ServeVolume(serve);
    ASSERT_TRUE(served.ok()) << served.status();
    ASSERT_EQ(served->served_bytes(), kVolBytes);
  }
  void TearDown() override { stack_.Stop(); }

  // Publishes the volume to a pod on `node` (its directory as CSI lays it).
  std::string Publish(agent::testing::AgentNode& node, const std::string& pod,
                      bool owner_local) {
    auto t = stack_.Publish(node, "vol", pod, owner_local);
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? *t : "";
  }
  std::string Recall(int grace) {
    auto r = stack_.Recall("vol", grace);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : "";
  }
  k8s::Json RecallStatus(const std::string& name) {
    return stack_.RecallStatus(name);
  }
  std::string Owner(uint64_t off, size_t n) {
    return std::string(owner_view_->base() + off, n);
  }

  std::unique_ptr<Mapping> owner_view_;
  agent::testing::AgentStack stack_;
  // The stack's parts, by the names the tests use.
  k8s::FakeKubeClient& kube_ = stack_.kube;
  std::unique_ptr<agent::testing::AgentNode>& a_ = stack_.a;
  std::unique_ptr<agent::testing::AgentNode>& b_ = stack_.b;
};

TEST_F(VerbsStackLab, RecallWithALocalAndAnRdmaWriterBothAckAtEpochPlusOne) {
  client::AttachOptions o;
  o.timeout = absl::Seconds(60);
  auto local = client::Volume::Attach(Publish(*a_, "pod-local", true), o,
                                      std::make_unique<fabric::AnyConnector>());
  ASSERT_TRUE(local.ok()) << local.status();
  auto remote = client::Volume::Attach(Publish(*b_, "pod-remote", false), o,
                                       std::make_unique<KeepingConnector>());
  ASSERT_TRUE(remote.ok()) << remote.status();
  EXPECT_TRUE((*local)->is_local());
  EXPECT_FALSE((*remote)->is_local());
  const int64_t epoch0 = (*remote)->epoch();

  // Both write continuously (disjoint halves) across the recall.
  std::atomic<bool> stop{false};
  std::atomic<int> errors{0};
  std::atomic<uint64_t> local_rounds{0}, remote_rounds{0};
  auto writer = [&](client::Volume& v, uint64_t base, unsigned seed,
                    std::atomic<uint64_t>& rounds) {
    std::vector<char> buf = Pattern(64 << 10, seed);
    while (!stop.load()) {
      uint64_t off = base + (rounds.load() % 64) * buf.size();
      buf[0] = static_cast<char>(rounds.load());
      absl::Status st = v.Write(off, buf.data(), buf.size());
      if (st.ok()) st = v.Persist(off, buf.size());
      if (!st.ok()) {
        std::printf("writer %u: %s\n", seed, st.ToString().c_str());
        ++errors;
        return;
      }
      ++rounds;
    }
  };
  std::thread tl(writer, std::ref(**local), 0, 1u, std::ref(local_rounds));
  std::thread tr(writer, std::ref(**remote), kVolBytes / 2, 2u,
                 std::ref(remote_rounds));
  // Stops and joins the writers however the test leaves.
  struct Joiner {
    std::atomic<bool>& stop;
    std::thread& a;
    std::thread& b;
    ~Joiner() {
      stop.store(true);
      if (a.joinable()) a.join();
      if (b.joinable()) b.join();
    }
  } joiner{stop, tl, tr};
  ASSERT_TRUE(WaitFor([&] { return remote_rounds.load() >= 3; }));
  absl::Time t0 = absl::Now();
  std::string recall = Recall(20);
  ASSERT_TRUE(WaitFor(
      [&] { return RecallStatus(recall).value("phase", "") == "Complete"; },
      120000))
      << RecallStatus(recall).dump();
  Figure("verbs_recall_complete_ms",
         absl::ToDoubleMilliseconds(absl::Now() - t0), "ms");
  k8s::Json st = RecallStatus(recall);
  EXPECT_EQ(st.value("released", 0), 2) << st.dump();
  EXPECT_EQ(st.value("revoked", 0), 0) << st.dump();
  // Both go on at the next epoch.
  // (And far enough that each has written all 64 of its chunks.)
  const uint64_t r0 = remote_rounds.load(), l0 = local_rounds.load();
  ASSERT_TRUE(WaitFor([&] {
    return remote_rounds.load() >= std::max<uint64_t>(r0 + 3, 70) &&
           local_rounds.load() >= std::max<uint64_t>(l0 + 3, 70);
  }));
  stop.store(true);
  tl.join();
  tr.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_GT((*remote)->epoch(), epoch0);
  EXPECT_EQ((*remote)->epoch(), (*local)->epoch());
  // Every byte: each writer's last pass over its half, as the owner sees it.
  std::vector<char> want = Pattern(64 << 10, 2);
  std::vector<char> got(want.size());
  ASSERT_TRUE((*remote)->Read(kVolBytes / 2 + 4096, got.data(), 4096).ok());
  EXPECT_EQ(std::memcmp(got.data(), want.data() + 4096, 4096), 0);
  for (uint64_t i = 0; i < 64; ++i) {
    const uint64_t off = kVolBytes / 2 + i * want.size();
    EXPECT_EQ(std::memcmp(owner_view_->base() + off + 1, want.data() + 1,
                          want.size() - 1),
              0)
        << "remote chunk " << i;
    std::vector<char> lw = Pattern(64 << 10, 1);
    EXPECT_EQ(std::memcmp(owner_view_->base() + i * lw.size() + 1,
                          lw.data() + 1, lw.size() - 1),
              0)
        << "local chunk " << i;
  }
  EXPECT_TRUE((*remote)->Detach().ok());
  EXPECT_TRUE((*local)->Detach().ok());
}

TEST_F(VerbsStackLab, SilentRdmaHolderIsRevokedRefusedAndToldRevoked) {
  client::AttachOptions o;
  o.timeout = absl::Seconds(60);
  auto keeping = std::make_unique<KeepingConnector>();
  KeepingConnector* kc = keeping.get();
  auto vol = client::Volume::Attach(Publish(*b_, "pod-silent", false), o,
                                    std::move(keeping));
  ASSERT_TRUE(vol.ok()) << vol.status();
  ASSERT_TRUE((*vol)->Write(0, "kept", 4).ok());
  ASSERT_TRUE((*vol)->Persist(0, 4).ok());
  EXPECT_EQ(Owner(0, 4), "kept");
  std::shared_ptr<fabric::RemoteRegion> raw = kc->last();
  ASSERT_NE(raw, nullptr);
  // The holder stops answering: its pre-flush hook never returns, so it
  // never acks the recall.
  std::atomic<bool> release{false};
  struct Release {
    std::atomic<bool>& r;
    ~Release() { r.store(true); }
  } release_on_exit{release};
  (*vol)->SetPreflushHook([&] {
    while (!release.load())
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
  });
  std::string recall = Recall(3);
  ASSERT_TRUE(WaitFor(
      [&] { return RecallStatus(recall).value("phase", "") == "Complete"; },
      120000))
      << RecallStatus(recall).dump();
  k8s::Json st = RecallStatus(recall);
  EXPECT_EQ(st.value("revoked", 0), 1) << st.dump();
  auto leases = kube_.List(agent::DaxLeaseResource(), "", {});
  ASSERT_TRUE(leases.ok());
  bool fenced = false;
  for (const auto& l : leases->items)
    fenced |= !l["status"].value("fencedRecallID", std::string()).empty();
  EXPECT_TRUE(fenced) << "the owner confirmed the fence";

  // Its next RDMA write through its own connection is refused, and the
  // owner's memory is untouched by it.
  std::vector<char> before(owner_view_->base(),
                           owner_view_->base() + kVolBytes);
  absl::Status late = raw->Write(64, absl::MakeConstSpan("late-rdma", 9));
  std::printf("late RDMA write: %s\n", late.ToString().c_str());
  EXPECT_EQ(late.code(), absl::StatusCode::kPermissionDenied) << late;
  EXPECT_EQ(std::memcmp(owner_view_->base(), before.data(), kVolBytes), 0);
  // The library tells it REVOKED; the process lives on.
  release.store(true);
  ASSERT_TRUE(WaitFor([&] { return (*vol)->revoked(); }));
  absl::Status call = (*vol)->Write(32, "late", 4);
  EXPECT_EQ(call.code(), absl::StatusCode::kPermissionDenied) << call;
  EXPECT_EQ(Owner(32, 4), std::string(4, '\0'));
  EXPECT_EQ(Owner(0, 4), "kept");
}

}  // namespace
}  // namespace daxlease
