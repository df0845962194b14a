// ChannelRelay over values: what each node is asked after a stored pass
// (one message per node, nothing twice on a stream, everything again on a
// new stream), which answers are taken (only the node asked, the recall and
// epoch asked) and how taken answers replace the agent-written fields.
#include "operator/channel_relay.h"

#include <map>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace daxlease::op {
namespace {

namespace pb = channel::pb;

class FakeServer final : public channel::ChannelServer {
 public:
  int port() const override { return 1; }
  bool Send(const std::string& node, const pb::OperatorMessage& m) override {
    if (!connected.contains(node)) return false;
    sent[node].push_back(m);
    return true;
  }
  std::vector<std::string> Connected() const override {
    return {connected.begin(), connected.end()};
  }
  void Stop() override {}
  std::set<std::string> connected;
  std::map<std::string, std::vector<pb::OperatorMessage>> sent;
};

api::DaxLease Lease(const std::string& name, const std::string& node,
                    api::LeaseState state) {
  api::DaxLease l;
  l.metadata.name = name;
  l.metadata.uid = "uid-" + name;
  l.spec.volume = "v";
  l.spec.holder_node = node;
  l.status.state = state;
  l.status.epoch = 3;
  l.status.recall_id = "r1";
  l.status.deadline = absl::FromUnixSeconds(100);
  return l;
}

// The answers the plan reads for `lease` after Overlay.
AgentAnswers Answer(const World& w, const std::string& lease) {
  EXPECT_NE(w.channel_answers, nullptr) << "no Overlay";
  if (w.channel_answers == nullptr) return {};
  auto it = w.channel_answers->find(lease);
  return it == w.channel_answers->end() ? AgentAnswers{} : it->second;
}

class ChannelRelayTest : public ::testing::Test {
 protected:
  ChannelRelayTest()
      : relay_([this](const std::string& v) { enqueued_.push_back(v); }) {
    relay_.SetServer(&server_);
    h_ = relay_.Handlers();
    w_.volume_name = "v";
    w_.volume.emplace();
    w_.volume->metadata.name = "v";
    w_.volume->spec.owner_node = "owner";
    w_.leases = {Lease("a1", "node-a", api::LeaseState::kRecalling),
                 Lease("a2", "node-a", api::LeaseState::kRecalling),
                 Lease("b1", "node-b", api::LeaseState::kRecalling)};
  }
  void Connect(const std::string& node) {
    server_.connected.insert(node);
    h_.on_connect(node);
  }
  pb::OperatorMessage Report(const std::string& node,
                             const pb::AgentReport& r) {
    pb::OperatorMessage reply;
    h_.on_report(node, r, reply);
    return reply;
  }
  static pb::AgentReport Ack(const std::string& lease, const std::string& id,
                             int64_t epoch) {
    pb::AgentReport r;
    pb::Ack* a = r.add_acks();
    a->set_lease(lease);
    a->set_recall_id(id);
    a->set_epoch(epoch);
    a->set_flushed(true);
    return r;
  }

  FakeServer server_;
  std::vector<std::string> enqueued_;
  ChannelRelay relay_;
  channel::ChannelHandlers h_;
  World w_;
};

TEST_F(ChannelRelayTest, OneMessagePerNodeNothingTwiceAllOnReconnect) {
  Connect("node-a");
  Connect("node-b");
  relay_.Stored(w_);
  ASSERT_EQ(server_.sent["node-a"].size(), 1u);
  EXPECT_EQ(server_.sent["node-a"][0].recalls_size(), 2);
  EXPECT_EQ(server_.sent["node-a"][0].recalls(0).deadline_unix_ms(), 100000);
  ASSERT_EQ(server_.sent["node-b"].size(), 1u);
  relay_.Stored(w_);
  EXPECT_EQ(server_.sent["node-a"].size(), 1u);
  Connect("node-a");  // a new stream
  ASSERT_EQ(server_.sent["node-a"].size(), 2u);
  EXPECT_EQ(server_.sent["node-a"][1].recalls_size(), 2);
}

// Asked in the pass, as soon as the recall's start is stored: an answer is
// taken before the pass's Stored(), which then asks nobody twice.
TEST_F(ChannelRelayTest, AskedAtTheRecallStartThenStoredSendsNothingTwice) {
  Connect("node-a");
  Connect("node-b");
  relay_.AskRecalls(w_, {"a1", "b1"});
  ASSERT_EQ(server_.sent["node-a"].size(), 1u);
  ASSERT_EQ(server_.sent["node-a"][0].recalls_size(), 1);
  EXPECT_EQ(server_.sent["node-a"][0].recalls(0).lease(), "a1");
  EXPECT_EQ(server_.sent["node-a"][0].recalls(0).deadline_unix_ms(), 100000);
  ASSERT_EQ(server_.sent["node-b"].size(), 1u);
  EXPECT_EQ(Report("node-a", Ack("a1", "r1", 3)).refused_size(), 0)
      << "asked, so taken";
  EXPECT_EQ(Report("node-a", Ack("a2", "r1", 3)).refused_size(), 1)
      << "not asked yet";
  relay_.Stored(w_);
  ASSERT_EQ(server_.sent["node-a"].size(), 2u);
  ASSERT_EQ(server_.sent["node-a"][1].recalls_size(), 1);
  EXPECT_EQ(server_.sent["node-a"][1].recalls(0).lease(), "a2")
      << "a1 neither asked twice nor again once answered";
  EXPECT_EQ(server_.sent["node-b"].size(), 1u);
  World read = w_;
  relay_.Overlay(read);
  EXPECT_EQ(Answer(read, "a1").released_recall_id, "r1");
  // Only Recalling leases are asked this way.
  w_.leases[2].Mutable().status.state = api::LeaseState::kGranted;
  Connect("node-b");  // a new stream: b1 would be sent again if asked
  const size_t before = server_.sent["node-b"].size();
  relay_.AskRecalls(w_, {"b1"});
  EXPECT_EQ(server_.sent["node-b"].size(), before);
}

// The answers are handed to each pass shared, not copied (N of them in a
// recall of N leases); an answer taken while a pass holds them leaves that
// pass's view as it was (copied then), and with no pass holding them the
// relay records it in place.
TEST_F(ChannelRelayTest, APassSharesTheAnswersAndKeepsItsViewOfThem) {
  Connect("node-a");
  relay_.Stored(w_);
  EXPECT_EQ(Report("node-a", Ack("a1", "r1", 3)).refused_size(), 0);
  World first = w_;
  World second = w_;
  relay_.Overlay(first);
  relay_.Overlay(second);
  EXPECT_EQ(first.channel_answers, second.channel_answers);
  EXPECT_EQ(Report("node-a", Ack("a2", "r1", 3)).refused_size(), 0);
  EXPECT_EQ(Answer(first, "a1").released_recall_id, "r1");
  EXPECT_EQ(Answer(first, "a2").released_recall_id, "")
      << "taken after this pass read them";
  World third = w_;
  relay_.Overlay(third);
  EXPECT_EQ(Answer(third, "a2").released_recall_id, "r1");
  EXPECT_NE(third.channel_answers, first.channel_answers);
  const void* shared = third.channel_answers.get();
  first.channel_answers.reset();
  second.channel_answers.reset();
  third.channel_answers.reset();
  EXPECT_EQ(Report("node-a", Ack("a2", "r1", 3)).refused_size(), 0);
  World fourth = w_;
  relay_.Overlay(fourth);
  EXPECT_EQ(fourth.channel_answers.get(), shared) << "changed in place";
  EXPECT_EQ(Answer(fourth, "a2").released_recall_id, "r1");
}

TEST_F(ChannelRelayTest, NotConnectedIsAskedOnConnect) {
  relay_.Stored(w_);
  EXPECT_TRUE(server_.sent.empty());
  Connect("node-b");
  ASSERT_EQ(server_.sent["node-b"].size(), 1u);
  EXPECT_EQ(server_.sent["node-b"][0].recalls(0).lease(), "b1");
}

TEST_F(ChannelRelayTest, OnlyTheNodeAskedForTheRecallAskedIsTaken) {
  relay_.Stored(w_);
  // Another node's lease: refused (a forgery).
  EXPECT_EQ(Report("node-b", Ack("a1", "r1", 3)).refused_size(), 1);
  // Stale recall ID, stale epoch, unknown lease.
  EXPECT_EQ(Report("node-a", Ack("a1", "r0", 3)).refused_size(), 1);
  EXPECT_EQ(Report("node-a", Ack("a1", "r1", 2)).refused_size(), 1);
  EXPECT_EQ(Report("node-a", Ack("zz", "r1", 3)).refused_size(), 1);
  EXPECT_EQ(relay_.accepted(), 0);
  EXPECT_TRUE(enqueued_.empty());
  World read = w_;
  read.leases[0].Mutable().status.released_recall_id =
      "r1";  // written by anyone
  relay_.Overlay(read);
  EXPECT_EQ(Answer(read, "a1").released_recall_id, "")
      << "the status field releases nothing with the channel on";

  EXPECT_EQ(Report("node-a", Ack("a1", "r1", 3)).refused_size(), 0);
  EXPECT_EQ(Report("node-a", Ack("a1", "r1", 3)).refused_size(), 0)
      << "a duplicate is a no-op";
  EXPECT_THAT(enqueued_, ::testing::ElementsAre("v", "v"));
  read = w_;
  relay_.Overlay(read);
  EXPECT_EQ(Answer(read, "a1").released_recall_id, "r1");
  EXPECT_EQ(Answer(read, "a2").released_recall_id, "");
  EXPECT_EQ(read.leases[0]->status.released_recall_id, "")
      << "the lease read is not edited";
  EXPECT_TRUE(read.leases[0].SharesWith(w_.leases[0])) << "nor copied";
}

TEST_F(ChannelRelayTest, FencesAreTheOwnersRevocationAcksTheHolders) {
  w_.leases = {Lease("a1", "node-a", api::LeaseState::kRevoked)};
  w_.leases[0].Mutable().status.fence_required = true;
  Connect("owner");
  Connect("node-a");
  relay_.Stored(w_);
  ASSERT_EQ(server_.sent["owner"].size(), 1u);
  EXPECT_EQ(server_.sent["owner"][0].fences(0).holder_node(), "node-a");
  // The grant's name, so the owner need not have seen the lease itself.
  EXPECT_EQ(server_.sent["owner"][0].fences(0).lease_uid(), "uid-a1");
  pb::AgentReport f;
  pb::FenceConfirmation* c = f.add_fences();
  c->set_lease("a1");
  c->set_recall_id("r1");
  c->set_epoch(3);
  EXPECT_EQ(Report("node-a", f).refused_size(), 1) << "the holder cannot";
  EXPECT_EQ(Report("owner", f).refused_size(), 0);
  World read = w_;
  relay_.Overlay(read);
  EXPECT_EQ(Answer(read, "a1").fenced_recall_id, "r1");

  // Fenced: the holder is told and acknowledges.
  w_.leases[0].Mutable().status.fence_required = false;
  relay_.Stored(w_);
  ASSERT_EQ(server_.sent["node-a"].size(), 1u);
  EXPECT_EQ(server_.sent["node-a"][0].revoked_size(), 1);
  pb::AgentReport v;
  pb::RevocationAck* ra = v.add_revocation_acks();
  ra->set_lease("a1");
  ra->set_epoch(3);
  EXPECT_EQ(Report("owner", v).refused_size(), 1);
  EXPECT_EQ(Report("node-a", v).refused_size(), 0);
  read = w_;
  relay_.Overlay(read);
  // For the epoch taken (the plan compares it with the lease's as read:
  // PlanTest.ChannelAnswersReplaceTheAgentWrittenStatusFields).
  EXPECT_EQ(Answer(read, "a1").revocation_acked_epoch, 3);
  // Acknowledged (as taken, not as the status field says): a stored pass
  // that still shows it Revoked asks nothing more, even on a new stream.
  relay_.Stored(w_);
  Connect("node-a");
  EXPECT_EQ(server_.sent["node-a"].size(), 1u);

  // Stored as Released: nothing is asked any more; the answer is kept while
  // the lease answers recall r1 (its lease object may lag) ...
  w_.leases[0].Mutable().status.state = api::LeaseState::kReleased;
  relay_.Stored(w_);
  EXPECT_EQ(server_.sent["node-a"].size(), 1u);
  // ... and forgotten once it answers another.
  w_.leases[0].Mutable().status.recall_id = "r2";
  relay_.Stored(w_);
  read = w_;
  relay_.Overlay(read);
  EXPECT_EQ(Answer(read, "a1"), AgentAnswers{});
}

}  // namespace
}  // namespace daxlease::op
