// libdaxlease against real agents and the real operator, in one process
// over a FakeKubeClient: node-a owns the volume (TcpFabric on loopback),
// node-b holds it; clients attach through the agents' unix sockets and
// write remotely; recalls and revocations are driven through DaxRecalls the
// operator processes.
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <thread>

#include "client/volume.h"
#include "daxlease.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "lib/api/json.h"
#include "lib/k8s/fake_client.h"
#include "node-agent/agent/agent.h"
#include "node-agent/fabric/tcp_fabric.h"
#include "node-agent/testing/agent_node.h"
#include "node-agent/testing/agent_stack.h"
#include "operator/controller.h"
#include "operator/events.h"

namespace daxlease {
namespace {

constexpr char kSecret[] = "0123456789abcdef-stack-test";

bool WaitFor(const std::function<bool()>& pred, int ms = 10000) {
  for (int i = 0; i < ms / 10; ++i) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return pred();
}

// One simulated node: an agent with its socket and (owner) fabric.
class ClientAgentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    agent::testing::AgentStackOptions so;
    so.dir_prefix = "/tmp/client_agent_test";
    so.secret = kSecret;
    absl::Status started = stack_.Start(so);
    ASSERT_TRUE(started.ok()) << started;
    mkdir((dir_ + "/mnt").c_str(), 0755);

    agent::pb::RecordVolumeRequest rec;
    rec.set_volume_id("vol");
    rec.set_size_bytes(std::max<uint64_t>(8 << 20, served_bytes_));
    rec.set_mode(agent::pb::FSDAX);
    rec.set_fs_type("ext4");
    rec.set_share(true);
    rec.set_recall_grace_seconds(2);
    ASSERT_TRUE(a_->agent().RecordVolume(rec).ok());
    agent::pb::ServeVolumeRequest serve;
    serve.set_volume_id("vol");
    serve.set_mode(agent::pb::FSDAX);
    serve.set_mount_path(dir_ + "/mnt");
    serve.set_size_bytes(served_bytes_);
    auto served = a_->agent().ServeVolume(serve);
    ASSERT_TRUE(served.ok()) << served.status();
    data_path_ = served->data_path();
  }
  void TearDown() override { stack_.Stop(); }

  // Publishes the volume to a pod on `node` (its directory as CSI lays it).
  std::string Publish(agent::testing::AgentNode& node, const std::string& pod,
                      std::string target = "") {
    auto t = stack_.Publish(node, "vol", pod, /*owner_local=*/false, target);
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? *t : "";
  }

  std::string FileBytes(uint64_t off, size_t len) {
    std::ifstream in(data_path_, std::ios::binary);
    in.seekg(static_cast<std::streamoff>(off));
    std::string s(len, '\0');
    in.read(s.data(), static_cast<std::streamsize>(len));
    return s;
  }

  std::string Recall(int grace = 2) {
    auto r = stack_.Recall("vol", grace);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : "";
  }
  std::string RecallPhase(const std::string& name) {
    return stack_.RecallStatus(name).value("phase", "");
  }
  int64_t VolumeEpoch() {
    auto v = kube_.Get(agent::DaxVolumeResource(), "", "vol");
    return v.ok() ? v->value("status", k8s::Json::object())
                        .value("epoch", int64_t{0})
                  : -1;
  }

  uint64_t served_bytes_ = 4 << 20;  // set by a fixture before SetUp
  agent::testing::AgentStack stack_;
  // The stack's parts, by the names the tests use.
  const std::string& dir_ = stack_.dir;
  k8s::FakeKubeClient& kube_ = stack_.kube;
  std::unique_ptr<agent::testing::AgentNode>& a_ = stack_.a;
  std::unique_ptr<agent::testing::AgentNode>& b_ = stack_.b;
  std::string data_path_;
};

TEST_F(ClientAgentTest, RemoteWriteThenRecallRemapsAtTheNextEpoch) {
  std::string target = Publish(*b_, "pod-1");
  daxlease_volume* vol = nullptr;
  ASSERT_EQ(daxlease_attach(target.c_str(), nullptr, &vol), DAXLEASE_OK)
      << daxlease_errmsg();
  EXPECT_EQ(daxlease_is_local(vol), 0);
  EXPECT_EQ(daxlease_size(vol), 4u << 20);
  int64_t epoch0 = daxlease_epoch(vol);

  ASSERT_EQ(daxlease_write(vol, 100, "remote!", 7), DAXLEASE_OK);
  uint64_t dirty = 0;
  daxlease_unpersisted(vol, &dirty);
  EXPECT_EQ(dirty, 7u);
  ASSERT_EQ(daxlease_persist(vol, 100, 7), DAXLEASE_OK);
  EXPECT_EQ(FileBytes(100, 7), "remote!");

  int hook_calls = 0;
  daxlease_set_preflush_hook(
      vol,
      [](daxlease_volume* v, void* arg) {
        ++*static_cast<int*>(arg);
        // Hooks may still write: the recall's flush covers it.
        return daxlease_write(v, 200, "hook", 4);
      },
      &hook_calls);
  std::string recall = Recall();
  ASSERT_TRUE(WaitFor([&] { return RecallPhase(recall) == "Complete"; }));
  EXPECT_EQ(hook_calls, 1);
  EXPECT_EQ(FileBytes(200, 4), "hook");
  // The next call waits for the new grant and lands at the next epoch.
  ASSERT_EQ(daxlease_write(vol, 300, "after", 5), DAXLEASE_OK)
      << daxlease_errmsg();
  EXPECT_GT(daxlease_epoch(vol), epoch0);
  ASSERT_EQ(daxlease_persist(vol, 0, 0), DAXLEASE_OK);
  EXPECT_EQ(FileBytes(300, 5), "after");
  EXPECT_EQ(daxlease_detach(vol), DAXLEASE_OK);
}

// The epoch a persist ran under is the persist's own: a recall that starts
// right after it (here: the persist is the recall's pre-flush hook, so the
// recall is under way) makes daxlease_epoch answer 0, which daxlease-io
// printed as "epoch=0" for a block persisted at the grant's epoch.
TEST_F(ClientAgentTest, PersistEpochIsTheGrantsEvenWhileARecallRuns) {
  std::string target = Publish(*b_, "pod-e");
  daxlease_volume* vol = nullptr;
  ASSERT_EQ(daxlease_attach(target.c_str(), nullptr, &vol), DAXLEASE_OK)
      << daxlease_errmsg();
  const int64_t epoch0 = daxlease_epoch(vol);
  ASSERT_GT(epoch0, 0);
  int64_t at = -1;
  ASSERT_EQ(daxlease_write(vol, 0, "e", 1), DAXLEASE_OK);
  ASSERT_EQ(daxlease_persist_epoch(vol, 0, 1, &at), DAXLEASE_OK);
  EXPECT_EQ(at, epoch0);
  EXPECT_EQ(daxlease_persist_epoch(nullptr, 0, 1, &at), DAXLEASE_E_INVAL);
  struct Seen {
    int64_t persisted_at = -1;
    int64_t epoch_after = -1;
  } seen;
  daxlease_set_preflush_hook(
      vol,
      [](daxlease_volume* v, void* arg) {
        auto* s = static_cast<Seen*>(arg);
        int rc = daxlease_write(v, 8, "hook", 4);
        if (rc == DAXLEASE_OK) {
          rc = daxlease_persist_epoch(v, 8, 4, &s->persisted_at);
        }
        s->epoch_after = daxlease_epoch(v);
        return rc;
      },
      &seen);
  std::string recall = Recall();
  ASSERT_TRUE(WaitFor([&] { return RecallPhase(recall) == "Complete"; }));
  EXPECT_EQ(seen.epoch_after, 0) << "daxlease_epoch mid-recall";
  EXPECT_EQ(seen.persisted_at, epoch0);
  EXPECT_EQ(FileBytes(8, 4), "hook");
  // At the next grant, the next epoch.
  ASSERT_EQ(daxlease_write(vol, 16, "next", 4), DAXLEASE_OK);
  ASSERT_EQ(daxlease_persist_epoch(vol, 16, 4, &at), DAXLEASE_OK);
  EXPECT_GT(at, epoch0);
  EXPECT_EQ(at, daxlease_epoch(vol));
  EXPECT_EQ(daxlease_detach(vol), DAXLEASE_OK);
}

TEST_F(ClientAgentTest, SilentHolderIsRevokedFencedAndToldLoudly) {
  std::string target = Publish(*b_, "pod-2");
  client::AttachOptions o;
  auto vol = client::Volume::Attach(target, o,
                                    std::make_unique<fabric::TcpConnector>());
  ASSERT_TRUE(vol.ok()) << vol.status();
  ASSERT_TRUE((*vol)->Write(0, "kept", 4).ok());
  ASSERT_TRUE((*vol)->Persist(0, 4).ok());
  ASSERT_TRUE((*vol)->Write(8, "unflushed", 9).ok());
  auto pinned = (*vol)->DirectAcquire();
  EXPECT_FALSE(pinned.ok());  // remote: no direct access
  // A hook that does not return until told: the recall stalls in it, so
  // the client never acks, as a stopped process would not.
  std::atomic<bool> stop{false};
  (*vol)->SetPreflushHook([&] {
    while (!stop.load())
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
  });
  std::string recall = Recall(1);
  ASSERT_TRUE(
      WaitFor([&] { return RecallPhase(recall) == "Complete"; }, 20000));
  auto leases = kube_.List(agent::DaxLeaseResource(), "", {});
  ASSERT_TRUE(leases.ok());
  bool fenced = false;
  for (const auto& l : leases->items) {
    fenced |= !l["status"].value("fencedRecallID", std::string()).empty();
  }
  EXPECT_TRUE(fenced);
  // A late write through the old connection never lands.
  stop.store(true);
  ASSERT_TRUE(WaitFor([&] { return (*vol)->revoked(); }));
  absl::Status late = (*vol)->Write(32, "late", 4);
  EXPECT_EQ(late.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(FileBytes(32, 4), std::string(4, '\0'));
  EXPECT_EQ(FileBytes(0, 4), "kept");
  EXPECT_GE((*vol)->Unpersisted(), 9u);
}

// Voluntary context switches of this process's thread named `name` (the
// first one), or -1.
long VoluntarySwitches(const std::string& name) {
  for (const auto& t : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream comm(t.path() / "comm");
    std::string got;
    std::getline(comm, got);
    if (got != name) continue;
    std::ifstream status(t.path() / "status");
    for (std::string line; std::getline(status, line);) {
      if (line.rfind("voluntary_ctxt_switches:", 0) == 0)
        return std::stol(line.substr(line.find(':') + 1));
    }
  }
  return -1;
}

// A call must not wake the client's event thread: every call's end
// notified the condition variable that thread waited on, so each small
// remote read cost a wake-up and two context switches (on the lab's
// one-CPU guests, about a fifth of a 64-byte RDMA read's latency).
TEST_F(ClientAgentTest, CallsDoNotWakeTheEventThread) {
  std::string target = Publish(*b_, "pod-w");
  client::AttachOptions o;
  auto vol = client::Volume::Attach(target, o,
                                    std::make_unique<fabric::TcpConnector>());
  ASSERT_TRUE(vol.ok()) << vol.status();
  char buf[64];
  ASSERT_TRUE((*vol)->Read(0, buf, sizeof buf).ok());
  const long before = VoluntarySwitches("dlease-events");
  ASSERT_GE(before, 0) << "no thread named dlease-events";
  for (int i = 0; i < 2000; ++i) {
    ASSERT_TRUE((*vol)->Read((i * 4096) % (4 << 20), buf, sizeof buf).ok());
  }
  EXPECT_LT(VoluntarySwitches("dlease-events") - before, 20);
  EXPECT_TRUE((*vol)->Detach().ok());
}

// A TcpConnector that counts the connections that failed.
class CountingConnector : public fabric::FabricConnector {
 public:
  absl::StatusOr<std::unique_ptr<fabric::RemoteRegion>> Connect(
      const fabric::GrantInfo& grant) override {
    auto c = tcp_.Connect(grant);
    if (!c.ok()) ++failed;
    return c;
  }
  std::atomic<int> failed{0};

 private:
  fabric::TcpConnector tcp_;
};

// A remote client that is granted while the owner's fabric cannot be reached
// (its agent restarting) retries the connection; a recall that starts
// meanwhile must still reach it. It did not: the retry ran on the session
// thread, which then read no event for up to 30 s, so the client never
// acked and was revoked at the recall's deadline.
TEST_F(ClientAgentTest, RecallDuringConnectRetryIsAckedNotRevoked) {
  std::string target = Publish(*b_, "pod-4");
  client::AttachOptions o;
  auto connector = std::make_unique<CountingConnector>();
  std::atomic<int>& failed = connector->failed;
  auto vol = client::Volume::Attach(target, o, std::move(connector));
  ASSERT_TRUE(vol.ok()) << vol.status();
  ASSERT_TRUE((*vol)->Write(0, "before", 6).ok());
  ASSERT_TRUE((*vol)->Persist(0, 6).ok());
  const int64_t epoch0 = (*vol)->epoch();

  // The owner goes away; a recall with nothing to flush completes without
  // it, and the next grant sends the client into its connect retry.
  a_.reset();
  std::string first = Recall();
  ASSERT_TRUE(WaitFor([&] { return RecallPhase(first) == "Complete"; }));
  // The new grant reached the client: it is retrying the connection.
  ASSERT_TRUE(WaitFor([&] { return failed.load() >= 2; }));
  ASSERT_FALSE((*vol)->revoked());

  std::string second = Recall(2);
  ASSERT_TRUE(
      WaitFor([&] { return RecallPhase(second) == "Complete"; }, 20000));
  auto r = kube_.Get(agent::DaxRecallResource(), "", second);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)["status"].value("released", 0), 1) << (*r).dump();
  EXPECT_EQ((*r)["status"].value("revoked", 0), 0) << (*r).dump();
  EXPECT_FALSE((*vol)->revoked());

  // The owner is back: the client connects at the newest epoch and goes on.
  auto started = stack_.StartNode("node-a");
  ASSERT_TRUE(started.ok()) << started.status();
  a_ = *std::move(started);
  absl::Status w = (*vol)->Write(8, "after", 5);
  ASSERT_TRUE(w.ok()) << w;
  ASSERT_TRUE((*vol)->Persist(0, 0).ok());
  EXPECT_GT((*vol)->epoch(), epoch0 + 1);
  EXPECT_EQ(FileBytes(0, 6), "before");
  EXPECT_EQ(FileBytes(8, 5), "after");
  EXPECT_TRUE((*vol)->Detach().ok());
}

// A volume larger than one fabric request (wire::kMaxOpBytes, 16 MiB).
class ClientAgentBigVolumeTest : public ClientAgentTest {
 protected:
  ClientAgentBigVolumeTest() { served_bytes_ = 40 << 20; }
};

// A remote writer that holds unpersisted bytes when a recall comes flushes
// them, acks and is granted again. It was revoked at the deadline whenever
// the volume was larger than one fabric request: its flush, a persist of
// the whole volume, was refused OutOfRange by the owner, and a client that
// cannot flush must not ack. A writer in a write+persist loop is between
// the two half the time: agent_bench --only grow (1 GiB) lost its remote
// writer on every run, the grow and migration tests (32 MiB) under load.
TEST_F(ClientAgentBigVolumeTest, RecallFlushesUnpersistedRemoteWritesAndAcks) {
  std::string target = Publish(*b_, "pod-big");
  daxlease_volume* vol = nullptr;
  ASSERT_EQ(daxlease_attach(target.c_str(), nullptr, &vol), DAXLEASE_OK)
      << daxlease_errmsg();
  ASSERT_EQ(daxlease_is_local(vol), 0);
  const uint64_t size = daxlease_size(vol);
  ASSERT_EQ(size, served_bytes_);
  const int64_t epoch0 = daxlease_epoch(vol);
  ASSERT_EQ(daxlease_write(vol, 0, "head", 4), DAXLEASE_OK);
  ASSERT_EQ(daxlease_write(vol, size - 4, "tail", 4), DAXLEASE_OK);
  uint64_t dirty = 0;
  daxlease_unpersisted(vol, &dirty);
  ASSERT_EQ(dirty, 8u);

  std::string recall = Recall(5);
  ASSERT_TRUE(
      WaitFor([&] { return RecallPhase(recall) == "Complete"; }, 20000));
  auto r = kube_.Get(agent::DaxRecallResource(), "", recall);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)["status"].value("released", 0), 1) << (*r).dump();
  EXPECT_EQ((*r)["status"].value("revoked", 0), 0) << (*r).dump();
  ASSERT_EQ(daxlease_unpersisted(vol, &dirty), DAXLEASE_OK);
  EXPECT_EQ(dirty, 0u);

  // Granted again: it goes on, and a persist of the whole volume (len 0)
  // works too.
  ASSERT_EQ(daxlease_write(vol, size / 2, "after", 5), DAXLEASE_OK)
      << daxlease_errmsg();
  EXPECT_GT(daxlease_epoch(vol), epoch0);
  ASSERT_EQ(daxlease_persist(vol, 0, 0), DAXLEASE_OK) << daxlease_errmsg();
  EXPECT_EQ(FileBytes(0, 4), "head");
  EXPECT_EQ(FileBytes(size - 4, 4), "tail");
  EXPECT_EQ(FileBytes(size / 2, 5), "after");
  EXPECT_EQ(daxlease_detach(vol), DAXLEASE_OK) << daxlease_errmsg();
}

// kubelet's publish paths are long: with "/agent.sock" appended they do not
// fit a unix socket address (108 bytes), and attach once failed with a
// misleading "not granted in time".
TEST_F(ClientAgentTest, AttachesThroughAKubeletLengthPath) {
  std::string target =
      dir_ +
      "/var/lib/kubelet/pods/0b6a1b3e-3c1f-4f4e-9a57-2f1d7f0e8c11/volumes/"
      "kubernetes.io~csi/pvc-6f1c2d3e-8a9b-4c5d-9e0f-1a2b3c4d5e6f/mount";
  ASSERT_GT(target.size() + sizeof("/agent.sock"),
            sizeof(sockaddr_un::sun_path));
  Publish(*b_, "pod-long", target);
  daxlease_volume* vol = nullptr;
  ASSERT_EQ(daxlease_attach(target.c_str(), nullptr, &vol), DAXLEASE_OK)
      << daxlease_errmsg();
  ASSERT_EQ(daxlease_write(vol, 4096, "long path", 9), DAXLEASE_OK);
  ASSERT_EQ(daxlease_persist(vol, 4096, 9), DAXLEASE_OK);
  EXPECT_EQ(FileBytes(4096, 9), "long path");
  EXPECT_EQ(daxlease_detach(vol), DAXLEASE_OK);
}

TEST_F(ClientAgentTest, AttachErrorsAreClear) {
  daxlease_volume* vol = nullptr;
  EXPECT_EQ(daxlease_attach((dir_ + "/nowhere").c_str(), nullptr, &vol),
            DAXLEASE_E_NOT_PUBLISHED);
  std::string target = Publish(*b_, "pod-3");
  // Another pod's descriptor with a forged token.
  std::string forged = dir_ + "/forged";
  mkdir(forged.c_str(), 0755);
  std::ifstream in(target + "/daxlease.json");
  k8s::Json d = k8s::Json::parse(in);
  d["attachToken"] = "00000000000000000000000000000000";
  std::ofstream(forged + "/daxlease.json") << d.dump();
  ASSERT_EQ(symlink(b_->socket().c_str(), (forged + "/agent.sock").c_str()), 0);
  EXPECT_EQ(daxlease_attach(forged.c_str(), nullptr, &vol), DAXLEASE_E_DENIED);
  EXPECT_NE(std::string(daxlease_errmsg()), "");
}

}  // namespace
}  // namespace daxlease
