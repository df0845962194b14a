// The recall channel against a real kube-apiserver (label k8s): the real
// daxlease-operator binary with --channel-address, simulated node agents
// (lib/channel/sim_agent.h) on the channel, each presenting a
// service-account token bound to a pod on its node, which the operator
// checks with TokenReview. Recalls complete over the channel; a forged ack
// from another node's credential is refused and logged; an agent that
// reconnects mid-recall and a leader killed mid-recall are re-asked.
#include <signal.h>
#include <unistd.h>

#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/api/json.h"
#include "lib/api/resources.h"
#include "lib/base/crash_point.h"
#include "lib/channel/authenticator.h"
#include "lib/channel/leader_record.h"
#include "lib/channel/sim_agent.h"
#include "tests/k8s/k8s_testing.h"
#include "tests/testing/prereq.h"

namespace daxlease::op {
namespace {

using k8s::Json;
using k8s::testing::WaitFor;

constexpr char kAgentAccount[] = "daxlease-agent";

class ChannelK8sTest : public ::testing::Test {
 protected:
  void SetUp() override {
    kubeconfig_ = k8s::testing::KubeconfigPath();
    DAXLEASE_REQUIRE(!kubeconfig_.empty(),
                     "no test control plane (the k8s CTest fixture starts "
                     "one; run ctest -L k8s)");
    auto c = k8s::testing::NewClient(kubeconfig_);
    ASSERT_TRUE(c.ok()) << c.status();
    client_ = std::move(*c);
    absl::Status crds = k8s::testing::InstallDaxleaseCrds(kubeconfig_);
    ASSERT_TRUE(crds.ok()) << crds;
    std::string test =
        ::testing::UnitTest::GetInstance()->current_test_info()->name();
    prefix_ =
        absl::StrCat(absl::AsciiStrToLower(test).substr(0, 30), "-", getpid());
    auto ns = k8s::testing::CreateTestNamespace(*client_, "chan-");
    ASSERT_TRUE(ns.ok()) << ns.status();
    ns_ = *ns;
    record_ = {ns_, "channel"};
  }

  void TearDown() override {
    agents_.clear();
    operators_.clear();
    if (client_ == nullptr) return;
    for (const k8s::Resource& r :
         {api::DaxLeaseResource(), api::DaxRecallResource(),
          api::DaxVolumeResource()}) {
      auto list = k8s::ListAll(*client_, r, "");
      if (!list.ok()) continue;
      for (const Json& o : list->items) {
        std::string name = k8s::NameOf(o);
        if (name.rfind(prefix_, 0) != 0) continue;
        (void)client_->Patch(r, "", name, k8s::PatchType::kMerge,
                             {{"metadata", {{"finalizers", nullptr}}}});
        (void)client_->Delete(r, "", name);
      }
    }
  }

  std::string N(const std::string& suffix) {
    return absl::StrCat(prefix_, "-", suffix);
  }
  // Node names of this test only: every operator of the shared control
  // plane reconciles every volume, and one asks the agents on its own
  // channel for the leases of the nodes they speak for.
  std::string Node(const std::string& name) { return N(name); }

  // `crash_point` non-empty: the operator kills itself there
  // (lib/base/crash_point.h).
  k8s::testing::ChildProcess& StartOperator(
      const std::string& identity, const std::string& crash_point = "") {
    std::vector<std::string> argv;
    if (!crash_point.empty()) {
      argv = {"/usr/bin/env",
              absl::StrCat(base::kCrashPointEnv, "=", crash_point)};
    }
    for (std::string& a : std::vector<std::string>{
             DAXLEASE_OPERATOR_BIN, "--kubeconfig=" + kubeconfig_,
             "--leader-election-name=" + prefix_, "--identity=" + identity,
             "--leader-election-lease-duration=6s",
             "--leader-election-renew-deadline=4s",
             "--leader-election-retry-period=1s", "--resync=5s",
             "--channel-address=127.0.0.1:0",
             absl::StrCat("--channel-record=", ns_, "/", record_.name),
             absl::StrCat("--channel-agent-service-account=", ns_, ":",
                          kAgentAccount)}) {
      argv.push_back(std::move(a));
    }
    operators_.push_back(std::make_unique<k8s::testing::ChildProcess>(
        argv, absl::StrCat("channel-operator-", identity)));
    return *operators_.back();
  }
  bool Leads(const std::string& identity) {
    auto r = channel::ReadLeaderRecord(*client_, record_);
    return r.ok() && r->identity == identity;
  }

  // A simulated agent on `node` with its pod's token.
  channel::SimAgent& Agent(const std::string& node, bool ack = true) {
    auto token = channel::MintAgentToken(*client_, ns_, kAgentAccount,
                                         "agent-" + node, node);
    EXPECT_TRUE(token.ok()) << token.status();
    channel::SimAgentOptions o;
    o.record = record_;
    o.token = token.ok() ? *token : "";
    o.ack_recalls = ack;
    agents_.push_back(std::make_unique<channel::SimAgent>(*client_, o));
    return *agents_.back();
  }

  void CreateVolume(const std::string& name, const std::string& owner) {
    api::DaxVolume v;
    v.metadata.name = name;
    v.spec.size_bytes = 1 << 30;
    v.spec.mode = api::VolumeMode::kFsdax;
    v.spec.fs_type = api::FsType::kExt4;
    v.spec.owner_node = owner;
    v.spec.share = true;
    auto st = client_->Create(api::DaxVolumeResource(), api::ToJson(v));
    ASSERT_TRUE(st.ok()) << st.status();
  }
  void CreateLease(const std::string& name, const std::string& volume,
                   const std::string& node) {
    api::DaxLease l;
    l.metadata.name = name;
    l.spec = {volume, node, "default/pod", api::Access::kReadWrite};
    auto st = client_->Create(api::DaxLeaseResource(), api::ToJson(l));
    ASSERT_TRUE(st.ok()) << st.status();
  }
  void CreateRecall(const std::string& name, const std::string& volume,
                    int64_t grace) {
    api::DaxRecall r;
    r.metadata.name = name;
    r.spec = {volume, api::RecallReason::kManual, grace};
    auto st = client_->Create(api::DaxRecallResource(), api::ToJson(r));
    ASSERT_TRUE(st.ok()) << st.status();
  }
  template <typename T>
  std::optional<T> Get(const k8s::Resource& r, const std::string& name) {
    auto j = client_->Get(r, "", name);
    if (!j.ok()) return std::nullopt;
    auto t = api::FromJson<T>(*j);
    if (!t.ok()) return std::nullopt;
    return *t;
  }
  std::optional<api::DaxLease> Lease(const std::string& n) {
    return Get<api::DaxLease>(api::DaxLeaseResource(), n);
  }
  std::optional<api::DaxRecall> Recall(const std::string& n) {
    return Get<api::DaxRecall>(api::DaxRecallResource(), n);
  }
  bool LeaseIs(const std::string& n, api::LeaseState s) {
    auto l = Lease(n);
    return l.has_value() && l->status.state == s;
  }
  bool RecallIs(const std::string& n, api::RecallPhase p) {
    auto r = Recall(n);
    return r.has_value() && r->status.phase == p;
  }
  bool VolumeAt(const std::string& n, int64_t epoch) {
    auto v = Get<api::DaxVolume>(api::DaxVolumeResource(), n);
    return v.has_value() && v->status.phase == api::VolumePhase::kReady &&
           v->status.epoch == epoch;
  }

  std::string kubeconfig_;
  std::unique_ptr<k8s::KubeClient> client_;
  std::string prefix_;
  std::string ns_;
  channel::RecordLocation record_;
  std::vector<std::unique_ptr<k8s::testing::ChildProcess>> operators_;
  std::vector<std::unique_ptr<channel::SimAgent>> agents_;
};

// Two holders on node-a, one on node-b, a silent one on node-c: node-a is
// asked in one message for both its leases; the acks release them; node-c
// is revoked at the deadline, the owner fences it when asked on the
// channel, node-c acknowledges the revocation; the volume moves on.
TEST_F(ChannelK8sTest, RecallCompletesOverTheChannel) {
  auto& op = StartOperator("op-1");
  ASSERT_TRUE(WaitFor([&] { return Leads("op-1"); }, absl::Seconds(30)))
      << op.Log();
  auto& owner = Agent(Node("node-owner"));
  auto& a = Agent(Node("node-a"));
  auto& b = Agent(Node("node-b"));
  auto& c = Agent(Node("node-c"), /*ack=*/false);
  const std::string vol = N("v");
  CreateVolume(vol, Node("node-owner"));
  for (auto [l, node] : {std::pair{"a1", Node("node-a")},
                         {"a2", Node("node-a")},
                         {"b1", Node("node-b")},
                         {"c1", Node("node-c")}}) {
    CreateLease(N(l), vol, node);
  }
  ASSERT_TRUE(WaitFor(
      [&] {
        for (const char* l : {"a1", "a2", "b1", "c1"}) {
          if (!LeaseIs(N(l), api::LeaseState::kGranted)) return false;
        }
        return true;
      },
      absl::Seconds(30)))
      << op.Log();
  ASSERT_TRUE(WaitFor([&] { return c.client().node() == Node("node-c"); },
                      absl::Seconds(30)));
  CreateRecall(N("r"), vol, 4);
  ASSERT_TRUE(WaitFor(
      [&] {
        return LeaseIs(N("a1"), api::LeaseState::kReleased) &&
               LeaseIs(N("a2"), api::LeaseState::kReleased) &&
               LeaseIs(N("b1"), api::LeaseState::kReleased);
      },
      absl::Seconds(20)))
      << op.Log();
  EXPECT_EQ(a.recalls_seen(), 2);
  EXPECT_EQ(a.recall_messages(), 1) << "both of node-a's leases in one message";
  EXPECT_EQ(b.recalls_seen(), 1);
  // The agents never wrote the status fields; the operator's Released is
  // from the channel.
  EXPECT_EQ(Lease(N("a1"))->status.released_recall_id, "");
  ASSERT_TRUE(
      WaitFor([&] { return RecallIs(N("r"), api::RecallPhase::kComplete); },
              absl::Seconds(30)))
      << op.Log();
  EXPECT_GE(owner.fences_seen(), 1);
  EXPECT_EQ(c.recalls_seen(), 1);
  auto r = Recall(N("r"));
  EXPECT_EQ(r->status.released, 3);
  EXPECT_EQ(r->status.revoked, 1);
  ASSERT_TRUE(WaitFor([&] { return VolumeAt(vol, 2); }, absl::Seconds(20)));
  // node-c acknowledges the revocation over the channel: Released, reason
  // kept.
  ASSERT_TRUE(
      WaitFor([&] { return LeaseIs(N("c1"), api::LeaseState::kReleased); },
              absl::Seconds(20)))
      << op.Log();
  EXPECT_EQ(Lease(N("c1"))->status.reason, "DeadlineExceeded");
  EXPECT_GE(c.revoked_seen(), 1);
}

// node-b's agent, with node-b's credential, acks node-a's lease (and writes
// releasedRecallID in its status, the old way): both are refused, the
// forgery is logged; node-a's own ack then releases it.
TEST_F(ChannelK8sTest, ForgedAckFromAnotherNodeIsRefused) {
  auto& op = StartOperator("op-1");
  ASSERT_TRUE(WaitFor([&] { return Leads("op-1"); }, absl::Seconds(30)))
      << op.Log();
  auto& a = Agent(Node("node-a"), /*ack=*/false);
  auto& b = Agent(Node("node-b"), /*ack=*/false);
  const std::string vol = N("v");
  CreateVolume(vol, Node("node-owner"));
  CreateLease(N("a1"), vol, Node("node-a"));
  ASSERT_TRUE(
      WaitFor([&] { return LeaseIs(N("a1"), api::LeaseState::kGranted); },
              absl::Seconds(30)))
      << op.Log();
  ASSERT_TRUE(WaitFor([&] { return b.client().node() == Node("node-b"); },
                      absl::Seconds(30)));
  CreateRecall(N("r"), vol, 300);
  ASSERT_TRUE(WaitFor([&] { return a.recalls_seen() >= 1; }, absl::Seconds(20)))
      << op.Log();
  // The lease object shows Recalling shortly after (its write lags).
  ASSERT_TRUE(
      WaitFor([&] { return LeaseIs(N("a1"), api::LeaseState::kRecalling); },
              absl::Seconds(20)))
      << op.Log();
  auto l = Lease(N("a1"));
  channel::pb::AgentReport forged;
  channel::pb::Ack* ack = forged.add_acks();
  ack->set_lease(N("a1"));
  ack->set_recall_id(l->status.recall_id);
  ack->set_epoch(l->status.epoch);
  ack->set_flushed(true);
  b.client().Report(forged);
  ASSERT_TRUE(WaitFor([&] { return b.refused() == 1; }, absl::Seconds(20)));
  EXPECT_THAT(op.Log(), ::testing::HasSubstr("operator.channel.forged"));
  // The old way: any agent credential could write this field.
  ASSERT_TRUE(
      client_
          ->Patch(api::DaxLeaseResource(), "", N("a1"), k8s::PatchType::kMerge,
                  {{"status", {{"releasedRecallID", l->status.recall_id}}}},
                  "status")
          .ok());
  // Give the operator a pass over that write (resync is 5 s; the write
  // itself queues one at once): the lease stays Recalling.
  absl::SleepFor(absl::Seconds(2));
  EXPECT_TRUE(LeaseIs(N("a1"), api::LeaseState::kRecalling)) << op.Log();
  a.AckPending();
  ASSERT_TRUE(
      WaitFor([&] { return RecallIs(N("r"), api::RecallPhase::kComplete); },
              absl::Seconds(20)))
      << op.Log();
  EXPECT_EQ(Recall(N("r"))->status.revoked, 0);
}

// node-a's stream drops after it was asked and before it answered; the
// operator asks again when it reconnects and takes the answer.
TEST_F(ChannelK8sTest, AgentReconnectsMidRecall) {
  auto& op = StartOperator("op-1");
  ASSERT_TRUE(WaitFor([&] { return Leads("op-1"); }, absl::Seconds(30)))
      << op.Log();
  auto& a = Agent(Node("node-a"), /*ack=*/false);
  const std::string vol = N("v");
  CreateVolume(vol, Node("node-owner"));
  CreateLease(N("a1"), vol, Node("node-a"));
  CreateLease(N("a2"), vol, Node("node-a"));
  ASSERT_TRUE(
      WaitFor([&] { return LeaseIs(N("a2"), api::LeaseState::kGranted); },
              absl::Seconds(30)))
      << op.Log();
  ASSERT_TRUE(
      WaitFor([&] { return a.client().connects() >= 1; }, absl::Seconds(30)));
  CreateRecall(N("r"), vol, 300);
  ASSERT_TRUE(WaitFor([&] { return a.recalls_seen() == 2; }, absl::Seconds(20)))
      << op.Log();
  const int64_t connects = a.client().connects();
  a.set_ack_recalls(true);
  a.client().Disconnect();
  ASSERT_TRUE(
      WaitFor([&] { return RecallIs(N("r"), api::RecallPhase::kComplete); },
              absl::Seconds(20)))
      << op.Log();
  EXPECT_GT(a.client().connects(), connects);
  EXPECT_EQ(a.recalls_seen(), 4) << "asked again on the new stream";
  EXPECT_EQ(Recall(N("r"))->status.released, 2);
}

// The leader is killed (SIGKILL) mid-recall: node-b's ack may have reached
// it, node-a has not answered. The standby takes over, publishes its
// endpoint, the agents find it without a restart, it asks again from what
// is stored, and the recall completes with nobody revoked.
TEST_F(ChannelK8sTest, LeaderKilledMidRecallAsksAgain) {
  auto& first = StartOperator("op-1");
  ASSERT_TRUE(WaitFor([&] { return Leads("op-1"); }, absl::Seconds(30)))
      << first.Log();
  auto& second = StartOperator("op-2");
  auto& a = Agent(Node("node-a"), /*ack=*/false);
  auto& b = Agent(Node("node-b"), /*ack=*/false);
  const std::string vol = N("v");
  CreateVolume(vol, Node("node-owner"));
  CreateLease(N("a1"), vol, Node("node-a"));
  CreateLease(N("b1"), vol, Node("node-b"));
  ASSERT_TRUE(WaitFor(
      [&] {
        return LeaseIs(N("a1"), api::LeaseState::kGranted) &&
               LeaseIs(N("b1"), api::LeaseState::kGranted);
      },
      absl::Seconds(30)))
      << first.Log();
  CreateRecall(N("r"), vol, 300);
  ASSERT_TRUE(
      WaitFor([&] { return a.recalls_seen() == 1 && b.recalls_seen() == 1; },
              absl::Seconds(20)))
      << first.Log();
  b.AckPending();  // in flight as the leader dies
  first.Kill(SIGKILL);
  ASSERT_TRUE(WaitFor([&] { return Leads("op-2"); }, absl::Seconds(30)))
      << second.Log();
  a.set_ack_recalls(true);
  b.set_ack_recalls(true);
  ASSERT_TRUE(
      WaitFor([&] { return RecallIs(N("r"), api::RecallPhase::kComplete); },
              absl::Seconds(30)))
      << second.Log();
  EXPECT_GE(a.recalls_seen(), 2) << "the new leader asked again";
  EXPECT_GE(a.client().connects(), 2);
  auto r = Recall(N("r"));
  EXPECT_EQ(r->status.released, 2);
  EXPECT_EQ(r->status.revoked, 0);
  EXPECT_TRUE(WaitFor([&] { return VolumeAt(vol, 2); }, absl::Seconds(20)));
}

// node-p's agent is cut off from the operator (no stream) but not from its
// holder: it cannot report the ack, and writing it in the lease status (the
// old way) releases nothing. The holder is revoked at the deadline and the
// owner fences it when asked on the channel; node-a's lease is released.
TEST_F(ChannelK8sTest, PartitionedAgentCannotAckIsRevokedAndFenced) {
  auto& op = StartOperator("op-1");
  ASSERT_TRUE(WaitFor([&] { return Leads("op-1"); }, absl::Seconds(30)))
      << op.Log();
  auto& owner = Agent(Node("node-owner"));
  auto& a = Agent(Node("node-a"));
  const std::string vol = N("v");
  CreateVolume(vol, Node("node-owner"));
  CreateLease(N("a1"), vol, Node("node-a"));
  CreateLease(N("p1"), vol, Node("node-p"));
  ASSERT_TRUE(WaitFor(
      [&] {
        return LeaseIs(N("a1"), api::LeaseState::kGranted) &&
               LeaseIs(N("p1"), api::LeaseState::kGranted);
      },
      absl::Seconds(30)))
      << op.Log();
  ASSERT_TRUE(WaitFor(
      [&] {
        return owner.client().node() == Node("node-owner") &&
               a.client().node() == Node("node-a");
      },
      absl::Seconds(30)));
  CreateRecall(N("r"), vol, 3);
  // The recall's ID from its record (the lease objects' Recalling is held
  // back while the recall runs: lease_display.h).
  ASSERT_TRUE(
      WaitFor([&] { return RecallIs(N("r"), api::RecallPhase::kRecalling); },
              absl::Seconds(20)))
      << op.Log();
  const std::string recall_id = Recall(N("r"))->status.recall_id;
  ASSERT_FALSE(recall_id.empty());
  ASSERT_TRUE(
      client_
          ->Patch(api::DaxLeaseResource(), "", N("p1"), k8s::PatchType::kMerge,
                  {{"status", {{"releasedRecallID", recall_id}}}}, "status")
          .ok());
  ASSERT_TRUE(
      WaitFor([&] { return RecallIs(N("r"), api::RecallPhase::kComplete); },
              absl::Seconds(30)))
      << op.Log();
  auto r = Recall(N("r"));
  EXPECT_EQ(r->status.released, 1);
  EXPECT_EQ(r->status.revoked, 1);
  EXPECT_THAT(r->status.fenced_leases, ::testing::ElementsAre(N("p1")));
  // The lease objects show the outcome shortly after (their writes lag).
  ASSERT_TRUE(WaitFor(
      [&] {
        auto p = Lease(N("p1"));
        return p.has_value() && p->status.state == api::LeaseState::kRevoked &&
               !p->status.fence_required;
      },
      absl::Seconds(20)))
      << op.Log();
  auto p1 = Lease(N("p1"));
  EXPECT_EQ(p1->status.state, api::LeaseState::kRevoked);
  EXPECT_EQ(p1->status.reason, "DeadlineExceeded");
  EXPECT_FALSE(p1->status.fence_required) << "fenced by the owner";
  EXPECT_GE(owner.fences_seen(), 1);
  EXPECT_TRUE(
      WaitFor([&] { return LeaseIs(N("a1"), api::LeaseState::kReleased); },
              absl::Seconds(20)));
}

// The leader stores a recall's outcome (Complete, c1 on fencedLeases, the
// volume at epoch 2) and is killed right there (crash point
// operator.recall.outcome_stored), before any lease object shows it: c1's
// object still says Granted, Recalling or fencing at epoch 1. The standby
// reads the lease objects through the recall: c1 is Revoked and stays so
// until its holder acknowledges (never Granted again), a1 is Released, and
// only the new lease d1 is granted at epoch 2.
TEST_F(ChannelK8sTest, LeaderKilledAfterOutcomeBeforeLeaseObjects) {
  auto& first = StartOperator("op-1", "operator.recall.outcome_stored");
  ASSERT_TRUE(WaitFor([&] { return Leads("op-1"); }, absl::Seconds(30)))
      << first.Log();
  auto& second = StartOperator("op-2");
  auto& owner = Agent(Node("node-owner"));
  auto& a = Agent(Node("node-a"));
  auto& c = Agent(Node("node-c"), /*ack=*/false);
  const std::string vol = N("v");
  CreateVolume(vol, Node("node-owner"));
  CreateLease(N("a1"), vol, Node("node-a"));
  CreateLease(N("c1"), vol, Node("node-c"));
  ASSERT_TRUE(WaitFor(
      [&] {
        return LeaseIs(N("a1"), api::LeaseState::kGranted) &&
               LeaseIs(N("c1"), api::LeaseState::kGranted);
      },
      absl::Seconds(30)))
      << first.Log();
  ASSERT_TRUE(WaitFor(
      [&] {
        return owner.client().node() == Node("node-owner") &&
               a.client().node() == Node("node-a") &&
               c.client().node() == Node("node-c");
      },
      absl::Seconds(30)));
  CreateRecall(N("r"), vol, 2);
  ASSERT_TRUE(WaitFor([&] { return !first.running(); }, absl::Seconds(40)))
      << first.Log();
  EXPECT_THAT(first.Log(),
              ::testing::HasSubstr("operator.recall.outcome_stored"));
  // Stored: the outcome and the epoch; c1's object does not show its fence.
  auto r = Recall(N("r"));
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status.phase, api::RecallPhase::kComplete);
  EXPECT_EQ(r->status.epoch, 1);
  EXPECT_THAT(r->status.fenced_leases, ::testing::ElementsAre(N("c1")));
  EXPECT_TRUE(VolumeAt(vol, 2));
  auto c1 = Lease(N("c1"));
  ASSERT_TRUE(c1.has_value());
  EXPECT_FALSE(c1->status.state == api::LeaseState::kRevoked &&
               !c1->status.fence_required)
      << "the crash landed after the lease object showed the fence";
  EXPECT_EQ(c1->status.epoch, 1);

  ASSERT_TRUE(WaitFor([&] { return Leads("op-2"); }, absl::Seconds(30)))
      << second.Log();
  CreateLease(N("d1"), vol, Node("node-a"));
  // Until c1's holder acknowledges, c1 goes nowhere but Revoked; nothing is
  // granted at epoch 1 again, d1 is granted at epoch 2.
  bool c1_regranted = false, a1_regranted = false;
  ASSERT_TRUE(WaitFor(
      [&] {
        auto c = Lease(N("c1"));
        auto a = Lease(N("a1"));
        auto d = Lease(N("d1"));
        if (!c || !a || !d) return false;
        c1_regranted |= c->status.state == api::LeaseState::kGranted &&
                        c->status.epoch != 1;
        c1_regranted |= c->status.state == api::LeaseState::kReleased &&
                        c->status.reason.empty();
        a1_regranted |= a->status.epoch != 1;
        // Revoked, or already acknowledged by its holder (then Released
        // with the reason kept; the two writes may coalesce into one).
        const bool c_fenced = (c->status.state == api::LeaseState::kRevoked &&
                               !c->status.fence_required) ||
                              (c->status.state == api::LeaseState::kReleased &&
                               c->status.reason == "DeadlineExceeded");
        return c_fenced && a->status.state == api::LeaseState::kReleased &&
               d->status.state == api::LeaseState::kGranted;
      },
      absl::Seconds(30)))
      << second.Log();
  EXPECT_FALSE(c1_regranted);
  EXPECT_FALSE(a1_regranted);
  EXPECT_EQ(Lease(N("c1"))->status.reason, "DeadlineExceeded");
  EXPECT_EQ(Lease(N("d1"))->status.epoch, 2);
  EXPECT_TRUE(VolumeAt(vol, 2));
  // c1's holder is told again and acknowledges: Released, reason kept.
  ASSERT_TRUE(
      WaitFor([&] { return LeaseIs(N("c1"), api::LeaseState::kReleased); },
              absl::Seconds(20)))
      << second.Log();
  EXPECT_EQ(Lease(N("c1"))->status.reason, "DeadlineExceeded");
  EXPECT_EQ(Lease(N("c1"))->status.epoch, 1);
  // Every lease object shows the outcome: the record's finalizer goes.
  EXPECT_TRUE(WaitFor(
      [&] {
        auto r = Recall(N("r"));
        return r.has_value() && r->metadata.finalizers.empty();
      },
      absl::Seconds(20)))
      << second.Log();
}

}  // namespace
}  // namespace daxlease::op
