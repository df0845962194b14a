// The recall channel's transport over loopback TLS: the leader record, a
// server with a fake authenticator, clients that connect, are told their
// node, report in batches, are refused without a valid token, and
// reconnect to a new leader found in the record.
#include <atomic>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "lib/base/clock.h"
#include "lib/channel/authenticator.h"
#include "lib/channel/client.h"
#include "lib/channel/leader_record.h"
#include "lib/channel/server.h"
#include "lib/channel/tls.h"
#include "lib/k8s/fake_client.h"

namespace daxlease::channel {
namespace {

bool Eventually(const std::function<bool()>& pred) {
  absl::Time end = absl::Now() + absl::Seconds(20);
  while (absl::Now() < end) {
    if (pred()) return true;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return pred();
}

struct Received {
  absl::Mutex mu;
  std::vector<pb::OperatorMessage> msgs ABSL_GUARDED_BY(mu);
  void Add(const pb::OperatorMessage& m) {
    absl::MutexLock l(&mu);
    msgs.push_back(m);
  }
  int Recalls() {
    absl::MutexLock l(&mu);
    int n = 0;
    for (const auto& m : msgs) n += m.recalls_size();
    return n;
  }
  int Refused() {
    absl::MutexLock l(&mu);
    int n = 0;
    for (const auto& m : msgs) n += m.refused_size();
    return n;
  }
};

class ChannelTest : public ::testing::Test {
 protected:
  // A leader: a certificate, a server and its record.
  std::unique_ptr<ChannelServer> Lead(const std::string& identity) {
    absl::StatusOr<Certificate> cert = SelfSignedCertificate();
    EXPECT_TRUE(cert.ok()) << cert.status();
    ChannelHandlers h;
    h.on_report = [this](const std::string& node, const pb::AgentReport& r,
                         pb::OperatorMessage& reply) {
      absl::MutexLock l(&mu_);
      for (const pb::Ack& a : r.acks()) {
        if (a.lease().rfind(node, 0) != 0) {
          pb::Refusal* f = reply.add_refused();
          f->set_lease(a.lease());
          f->set_reason("not your lease");
          continue;
        }
        acks_.push_back(a.lease());
      }
      ++reports_;
    };
    auto s = ChannelServer::Start("127.0.0.1:0", *cert, auth_, std::move(h));
    EXPECT_TRUE(s.ok()) << s.status();
    EXPECT_TRUE(WriteLeaderRecord(kube_, at_,
                                  {absl::StrCat("127.0.0.1:", (*s)->port()),
                                   cert->cert_pem, identity})
                    .ok());
    return *std::move(s);
  }
  std::unique_ptr<ChannelClient> Agent(const std::string& token,
                                       Received& got) {
    ChannelClientOptions o;
    o.record = at_;
    o.retry = absl::Milliseconds(20);
    o.token = [token]() -> absl::StatusOr<std::string> { return token; };
    auto c = std::make_unique<ChannelClient>(
        kube_, o, [&got](const pb::OperatorMessage& m) { got.Add(m); });
    c->Start();
    return c;
  }
  int Acks() {
    absl::MutexLock l(&mu_);
    return static_cast<int>(acks_.size());
  }

  base::FakeClock clock_{absl::FromUnixSeconds(1000)};
  k8s::FakeKubeClient kube_{clock_};
  FakeAuthenticator auth_;
  RecordLocation at_;
  absl::Mutex mu_;
  std::vector<std::string> acks_ ABSL_GUARDED_BY(mu_);
  int reports_ ABSL_GUARDED_BY(mu_) = 0;
};

TEST_F(ChannelTest, RecordRoundTrips) {
  EXPECT_TRUE(absl::IsNotFound(ReadLeaderRecord(kube_, at_).status()));
  LeaderRecord r{"127.0.0.1:1", "CERT", "op-1"};
  ASSERT_TRUE(WriteLeaderRecord(kube_, at_, r).ok());
  ASSERT_TRUE(WriteLeaderRecord(kube_, at_, r).ok());
  EXPECT_EQ(*ReadLeaderRecord(kube_, at_), r);
  EXPECT_FALSE(ParseRecordLocation("a").ok());
  EXPECT_EQ(ParseRecordLocation("ns/n")->name, "n");
}

TEST_F(ChannelTest, AuthenticatedNodeGetsItsMessagesAndReports) {
  auth_.Add("tok-a", "node-a");
  auto server = Lead("op-1");
  Received got;
  auto a = Agent("tok-a", got);
  ASSERT_TRUE(Eventually([&] { return a->node() == "node-a"; }));
  pb::OperatorMessage m;
  for (int i = 0; i < 100; ++i) m.add_recalls()->set_lease("node-a-l");
  EXPECT_TRUE(server->Send("node-a", m));
  EXPECT_FALSE(server->Send("node-b", m));
  ASSERT_TRUE(Eventually([&] { return got.Recalls() == 100; }));
  pb::AgentReport r;
  for (int i = 0; i < 100; ++i) r.add_acks()->set_lease("node-a-l");
  r.add_acks()->set_lease("node-b-l");  // someone else's: refused
  a->Report(r);
  ASSERT_TRUE(Eventually([&] { return Acks() == 100 && got.Refused() == 1; }));
  {
    absl::MutexLock l(&mu_);
    EXPECT_EQ(reports_, 1);  // one report for the whole batch
  }
}

TEST_F(ChannelTest, UnknownTokenIsRefused) {
  auth_.Add("tok-a", "node-a");
  auto server = Lead("op-1");
  Received got;
  auto a = Agent("forged", got);
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_EQ(a->node(), "");
  EXPECT_EQ(a->connects(), 0);
  EXPECT_TRUE(server->Connected().empty());
}

TEST_F(ChannelTest, ReconnectsToTheNewLeader) {
  auth_.Add("tok-a", "node-a");
  auto first = Lead("op-1");
  Received got;
  auto a = Agent("tok-a", got);
  ASSERT_TRUE(Eventually([&] { return a->connects() == 1; }));
  first->Stop();
  auto second = Lead("op-2");
  ASSERT_TRUE(Eventually([&] { return a->connects() == 2; }));
  ASSERT_TRUE(Eventually([&] { return !second->Connected().empty(); }));
  pb::AgentReport r;
  r.add_acks()->set_lease("node-a-x");
  a->Report(r);
  ASSERT_TRUE(Eventually([&] { return Acks() == 1; }));
  // A dropped stream comes back on its own.
  a->Disconnect();
  ASSERT_TRUE(Eventually([&] { return a->connects() == 3; }));
}

}  // namespace
}  // namespace daxlease::channel
