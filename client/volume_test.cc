#include "client/volume.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/agent.grpc.pb.h"

namespace daxlease::client {
namespace {

TEST(DirtyRangesTest, MergesAndSplits) {
  DirtyRanges d;
  d.Add(0, 10);
  d.Add(5, 10);
  d.Add(100, 10);
  EXPECT_EQ(d.Total(), 25u);
  d.Remove(3, 4);  // [0,3) [7,15) [100,110)
  EXPECT_EQ(d.Total(), 21u);
  EXPECT_EQ(d.Span(), (std::pair<uint64_t, uint64_t>{0, 110}));
  d.Remove(0, 200);
  EXPECT_EQ(d.Total(), 0u);
  EXPECT_EQ(d.Span(), (std::pair<uint64_t, uint64_t>{0, 0}));
  d.Add(10, 5);
  d.Add(0, 10);  // touching ranges merge
  EXPECT_EQ(d.Total(), 15u);
}

class DescriptorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/descriptor_test.XXXXXX";
    dir_ = mkdtemp(tmpl);
  }
  void TearDown() override {
    std::string cmd = "rm -rf " + dir_;
    ASSERT_EQ(system(cmd.c_str()), 0);
  }
  void Write(const std::string& s) {
    std::ofstream(dir_ + "/daxlease.json") << s;
  }
  std::string dir_;
};

TEST_F(DescriptorTest, ReadsTheAgentsFormat) {
  Write(R"({"version":1,"volume":"v","lease":"dl-1","attachToken":"ab",
            "ownerLocal":true,"access":"ReadOnly","agentSocket":"/run/a.sock"})");
  auto d = ReadDescriptor(dir_);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->volume, "v");
  EXPECT_TRUE(d->owner_local);
  EXPECT_TRUE(d->read_only);
  EXPECT_EQ(d->agent_socket, "/run/a.sock");
}

TEST_F(DescriptorTest, MissingOrMalformedIsAClearError) {
  EXPECT_EQ(ReadDescriptor(dir_).status().code(), absl::StatusCode::kNotFound);
  Write("{not json");
  EXPECT_EQ(ReadDescriptor(dir_).status().code(),
            absl::StatusCode::kInvalidArgument);
  Write(R"({"version":2,"volume":"v","lease":"l","attachToken":"t"})");
  EXPECT_EQ(ReadDescriptor(dir_).status().code(),
            absl::StatusCode::kInvalidArgument);
  Write(R"({"version":1,"volume":"v","lease":5,"attachToken":"t"})");
  EXPECT_EQ(ReadDescriptor(dir_).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// ---- the handle's state machine, against a fake agent and a fake fabric

// The agent side of a session, as a test scripts it: OpenSession streams the
// events the test pushes; the acks are recorded.
class FakeAgentService final : public pb::Agent::Service {
 public:
  void Push(pb::SessionEvent ev) {
    std::lock_guard<std::mutex> l(mu_);
    ev.set_session_id("s1");
    events_.push_back(std::move(ev));
    cv_.notify_all();
  }
  std::vector<std::string> recall_acks() {
    std::lock_guard<std::mutex> l(mu_);
    return recall_acks_;
  }
  int revocation_acks() {
    std::lock_guard<std::mutex> l(mu_);
    return revocation_acks_;
  }
  // Sessions opened from now on hear only what is pushed from now on.
  void Forget() {
    std::lock_guard<std::mutex> l(mu_);
    forgotten_ = events_.size();
  }
  void Stop() {
    std::lock_guard<std::mutex> l(mu_);
    stopping_ = true;
    cv_.notify_all();
  }

  grpc::Status OpenSession(grpc::ServerContext* ctx,
                           const pb::OpenSessionRequest*,
                           grpc::ServerWriter<pb::SessionEvent>* w) override {
    std::unique_lock<std::mutex> l(mu_);
    size_t next = forgotten_;  // every session hears the whole script
    while (!stopping_ && !ctx->IsCancelled()) {
      if (next < events_.size()) {
        pb::SessionEvent ev = events_[next++];
        l.unlock();
        w->Write(ev);
        l.lock();
        continue;
      }
      cv_.wait_for(l, std::chrono::milliseconds(20));
    }
    return grpc::Status::OK;
  }
  grpc::Status AckRecall(grpc::ServerContext*, const pb::AckRecallRequest* r,
                         pb::AckRecallResponse*) override {
    std::lock_guard<std::mutex> l(mu_);
    recall_acks_.push_back(r->recall_id());
    return grpc::Status::OK;
  }
  grpc::Status AckRevocation(grpc::ServerContext*,
                             const pb::AckRevocationRequest*,
                             pb::AckRevocationResponse*) override {
    std::lock_guard<std::mutex> l(mu_);
    ++revocation_acks_;
    return grpc::Status::OK;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<pb::SessionEvent> events_;
  std::vector<std::string> recall_acks_;
  int revocation_acks_ = 0;
  size_t forgotten_ = 0;
  bool stopping_ = false;
};

// The owner's memory as the fake fabric serves it. A test can hold calls
// (they wait at the gate until it opens) and fence the grant (every call,
// and every connection, fails PermissionDenied as TcpFabric's do).
struct FakeOwner {
  std::mutex mu;
  std::condition_variable cv;
  std::string memory = std::string(1 << 16, '\0');
  std::string durable = std::string(1 << 16, '\0');
  bool gate_closed = false;
  int at_gate = 0;
  bool fenced = false;
  int persists = 0;  // Persist calls, refused ones too

  absl::Status Pass() {
    std::unique_lock<std::mutex> l(mu);
    ++at_gate;
    cv.notify_all();
    cv.wait(l, [&] { return !gate_closed; });
    --at_gate;
    if (fenced) return absl::PermissionDeniedError("revoked");
    return absl::OkStatus();
  }
  void Hold() {
    std::lock_guard<std::mutex> l(mu);
    gate_closed = true;
  }
  void Open() {
    std::lock_guard<std::mutex> l(mu);
    gate_closed = false;
    cv.notify_all();
  }
  bool WaitAtGate() {
    std::unique_lock<std::mutex> l(mu);
    return cv.wait_for(l, std::chrono::seconds(5), [&] { return at_gate > 0; });
  }
  // Waits for the Persist calls to reach `n` (a recall's flush).
  bool WaitPersists(int n) {
    std::unique_lock<std::mutex> l(mu);
    return cv.wait_for(l, std::chrono::seconds(5),
                       [&] { return persists >= n; });
  }
  void Fence() {
    std::lock_guard<std::mutex> l(mu);
    fenced = true;
  }
};

class FakeRegion final : public fabric::RemoteRegion {
 public:
  explicit FakeRegion(FakeOwner* o) : o_(o) {}
  uint64_t size() const override { return o_->memory.size(); }
  absl::Status Read(uint64_t off, absl::Span<char> out) override {
    if (absl::Status s = o_->Pass(); !s.ok()) return s;
    std::lock_guard<std::mutex> l(o_->mu);
    memcpy(out.data(), o_->memory.data() + off, out.size());
    return absl::OkStatus();
  }
  absl::Status Write(uint64_t off, absl::Span<const char> in) override {
    if (absl::Status s = o_->Pass(); !s.ok()) return s;
    std::lock_guard<std::mutex> l(o_->mu);
    memcpy(o_->memory.data() + off, in.data(), in.size());
    return absl::OkStatus();
  }
  absl::Status Persist(uint64_t off, uint64_t len) override {
    {
      std::lock_guard<std::mutex> l(o_->mu);
      ++o_->persists;
      o_->cv.notify_all();
    }
    if (absl::Status s = o_->Pass(); !s.ok()) return s;
    std::lock_guard<std::mutex> l(o_->mu);
    o_->durable.replace(off, len, o_->memory, off, len);
    return absl::OkStatus();
  }

 private:
  FakeOwner* o_;
};

class FakeConnector final : public fabric::FabricConnector {
 public:
  explicit FakeConnector(FakeOwner* o) : o_(o) {}
  absl::StatusOr<std::unique_ptr<fabric::RemoteRegion>> Connect(
      const fabric::GrantInfo&) override {
    std::lock_guard<std::mutex> l(o_->mu);
    if (o_->fenced) return absl::PermissionDeniedError("revoked");
    return std::make_unique<FakeRegion>(o_);
  }

 private:
  FakeOwner* o_;
};

// A published directory whose agent is FakeAgentService on <dir>/agent.sock.
class VolumeStateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/volume_state_test.XXXXXX";
    dir_ = mkdtemp(tmpl);
    std::ofstream(dir_ + "/daxlease.json")
        << R"({"version":1,"volume":"v","lease":"dl-v","attachToken":"t"})";
    grpc::ServerBuilder b;
    b.AddListeningPort("unix://" + dir_ + "/agent.sock",
                       grpc::InsecureServerCredentials());
    b.RegisterService(&agent_);
    server_ = b.BuildAndStart();
    ASSERT_NE(server_, nullptr);
  }
  void TearDown() override {
    agent_.Stop();
    server_->Shutdown(std::chrono::system_clock::now() +
                      std::chrono::seconds(1));
    std::string cmd = "rm -rf " + dir_;
    ASSERT_EQ(system(cmd.c_str()), 0);
  }

  static pb::SessionEvent Granted(int64_t epoch) {
    pb::SessionEvent ev;
    ev.set_kind(pb::SessionEvent::GRANTED);
    ev.set_epoch(epoch);
    pb::Grant* g = ev.mutable_grant();
    g->set_volume_id("v");
    g->set_epoch(epoch);
    g->set_access(pb::READ_WRITE);
    g->set_fabric("tcp");
    g->set_endpoint("owner:1");
    g->set_lease_uid("uid-1");
    g->set_holder_node("node-b");
    return ev;
  }
  static pb::SessionEvent Recalling(const std::string& id, absl::Duration in) {
    pb::SessionEvent ev;
    ev.set_kind(pb::SessionEvent::RECALLING);
    ev.set_recall_id(id);
    ev.set_deadline_unix_ms(absl::ToUnixMillis(absl::Now() + in));
    return ev;
  }
  static pb::SessionEvent Revoked() {
    pb::SessionEvent ev;
    ev.set_kind(pb::SessionEvent::REVOKED);
    ev.set_message("revoked: not acknowledged by the deadline");
    return ev;
  }

  std::unique_ptr<Volume> Attach() {
    AttachOptions o;
    o.timeout = absl::Seconds(10);
    auto v = Volume::Attach(dir_, o, std::make_unique<FakeConnector>(&owner_));
    EXPECT_TRUE(v.ok()) << v.status();
    return v.ok() ? *std::move(v) : nullptr;
  }

  // Runs `call` on a thread; its status if it returns within `within`. A
  // call still blocked then is let go by a REVOKED event (the test fails).
  absl::Status Prompt(std::function<absl::Status()> call,
                      absl::Duration within = absl::Seconds(2)) {
    auto f = std::async(std::launch::async, std::move(call));
    if (f.wait_for(absl::ToChronoNanoseconds(within)) ==
        std::future_status::ready) {
      return f.get();
    }
    ADD_FAILURE() << "the call was still blocked after " << within;
    agent_.Push(Revoked());
    return f.get();
  }

  std::string dir_;
  FakeAgentService agent_;
  std::unique_ptr<grpc::Server> server_;
  FakeOwner owner_;
};

// The recall's deadline passes while a call is in flight: the handle cannot
// ack (it cannot claim the call's bytes flushed), so it is revoked. Every
// later call must fail with the revoked error at once; it blocked, waiting
// for an event that comes only when the agent gets round to it (and never,
// when the agent cannot reach the client).
TEST_F(VolumeStateTest, DeadlinePassingWithACallInFlightRevokesAtOnce) {
  agent_.Push(Granted(1));
  auto v = Attach();
  ASSERT_NE(v, nullptr);
  ASSERT_TRUE(v->Write(0, "kept", 4).ok());
  ASSERT_TRUE(v->Persist(0, 4).ok());
  ASSERT_TRUE(v->Write(8, "dirty", 5).ok());

  owner_.Hold();
  auto in_flight =
      std::async(std::launch::async, [&] { return v->Write(16, "late", 4); });
  ASSERT_TRUE(owner_.WaitAtGate());
  agent_.Push(Recalling("r1", absl::Milliseconds(300)));
  absl::SleepFor(absl::Milliseconds(600));  // past the deadline

  absl::Status read = Prompt([&] {
    char buf[4];
    return v->Read(0, buf, sizeof buf);
  });
  EXPECT_EQ(read.code(), absl::StatusCode::kPermissionDenied) << read;
  EXPECT_NE(read.message().find("revoked"), std::string::npos) << read;
  ASSERT_TRUE(v->revoked());  // else the calls below would block
  EXPECT_TRUE(agent_.recall_acks().empty());

  // The call in flight ends (its write reached the owner's memory): the
  // bytes it was acknowledged for are counted as unpersisted, as are the
  // ones written before.
  owner_.Open();
  ASSERT_TRUE(in_flight.get().ok());
  EXPECT_EQ(v->Unpersisted(), 5u + 4u);
  EXPECT_EQ(v->Write(0, "x", 1).code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(owner_.durable.substr(0, 4), "kept");

  // The agent's REVOKED comes later: still revoked, and acknowledged.
  agent_.Push(Revoked());
  for (int i = 0; i < 200 && agent_.revocation_acks() == 0; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(agent_.revocation_acks(), 1);
  EXPECT_TRUE(v->revoked());
  EXPECT_EQ(v->Detach().code(), absl::StatusCode::kPermissionDenied);
}

// The recall's flush is refused because the owner already fenced the grant:
// the handle is revoked, and says so at the next call rather than holding
// it until the deadline (or the agent's REVOKED) comes.
TEST_F(VolumeStateTest, FlushRefusedAsRevokedRevokesAtOnce) {
  agent_.Push(Granted(1));
  auto v = Attach();
  ASSERT_NE(v, nullptr);
  ASSERT_TRUE(v->Write(0, "kept", 4).ok());
  ASSERT_TRUE(v->Persist(0, 4).ok());
  ASSERT_TRUE(v->Write(8, "dirty", 5).ok());

  owner_.Fence();
  agent_.Push(Recalling("r1", absl::Seconds(30)));
  ASSERT_TRUE(owner_.WaitPersists(2));  // the recall's flush, refused
  absl::Status write = Prompt([&] { return v->Write(0, "again", 5); });
  EXPECT_EQ(write.code(), absl::StatusCode::kPermissionDenied) << write;
  ASSERT_TRUE(v->revoked());  // else the calls below would block
  EXPECT_TRUE(agent_.recall_acks().empty());
  EXPECT_EQ(v->Unpersisted(), 5u);
  EXPECT_EQ(v->DirectAcquire().status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(v->Detach().code(), absl::StatusCode::kPermissionDenied);
}

// After a revocation the application attaches again (a new handle) and goes
// on at the new grant; what it persisted before is there.
TEST_F(VolumeStateTest, AttachAgainAfterARevocationGoesOn) {
  agent_.Push(Granted(1));
  auto v = Attach();
  ASSERT_NE(v, nullptr);
  ASSERT_TRUE(v->Write(0, "kept", 4).ok());
  ASSERT_TRUE(v->Persist(0, 4).ok());
  ASSERT_TRUE(v->Write(4, "lost", 4).ok());
  owner_.Fence();
  agent_.Push(Recalling("r1", absl::Seconds(30)));
  ASSERT_TRUE(owner_.WaitPersists(2));  // the recall's flush, refused
  ASSERT_EQ(Prompt([&] { return v->Persist(0, 0); }).code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(v->Detach().code(), absl::StatusCode::kPermissionDenied);

  {
    std::lock_guard<std::mutex> l(owner_.mu);
    owner_.fenced = false;  // the new epoch's grant
  }
  agent_.Forget();
  agent_.Push(Granted(2));
  auto again = Attach();
  ASSERT_NE(again, nullptr);
  EXPECT_EQ(again->epoch(), 2);
  char buf[4];
  ASSERT_TRUE(again->Read(0, buf, sizeof buf).ok());
  EXPECT_EQ(std::string(buf, 4), "kept");
  EXPECT_TRUE(again->Detach().ok());
}

}  // namespace
}  // namespace daxlease::client
