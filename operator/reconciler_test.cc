#include "operator/reconciler.h"

#include <functional>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/api/json.h"
#include "lib/api/resources.h"
#include "lib/base/clock.h"
#include "lib/k8s/fake_client.h"

namespace daxlease::op {
namespace {

using k8s::Json;

// Delegates to a FakeKubeClient and runs `before_patch` once, just before the
// first Patch: another writer acting between the operator's read and write.
class InterposingClient final : public k8s::KubeClient {
 public:
  explicit InterposingClient(k8s::KubeClient& c) : c_(c) {}
  std::function<void()> before_patch;
  absl::StatusOr<Json> Get(const k8s::Resource& r, absl::string_view ns,
                           absl::string_view name) override {
    return c_.Get(r, ns, name);
  }
  absl::StatusOr<k8s::ListResult> List(const k8s::Resource& r,
                                       absl::string_view ns,
                                       const k8s::ListOptions& o) override {
    return c_.List(r, ns, o);
  }
  absl::StatusOr<Json> Create(const k8s::Resource& r, const Json& o) override {
    return c_.Create(r, o);
  }
  absl::StatusOr<Json> Update(const k8s::Resource& r, const Json& o) override {
    return c_.Update(r, o);
  }
  absl::StatusOr<Json> UpdateStatus(const k8s::Resource& r,
                                    const Json& o) override {
    return c_.UpdateStatus(r, o);
  }
  absl::StatusOr<Json> Patch(const k8s::Resource& r, absl::string_view ns,
                             absl::string_view name, k8s::PatchType t,
                             const Json& p, absl::string_view sub) override {
    if (before_patch) {
      auto f = std::move(before_patch);
      before_patch = nullptr;
      f();
    }
    return c_.Patch(r, ns, name, t, p, sub);
  }
  absl::Status Delete(const k8s::Resource& r, absl::string_view ns,
                      absl::string_view name, absl::string_view rv) override {
    return c_.Delete(r, ns, name, rv);
  }
  absl::Status Watch(const k8s::Resource& r, absl::string_view ns,
                     const k8s::WatchOptions& o, const k8s::WatchHandler& h,
                     k8s::WatchCanceller* c) override {
    return c_.Watch(r, ns, o, h, c);
  }

 private:
  k8s::KubeClient& c_;
};

class ReconcilerTest : public testing::Test {
 protected:
  ReconcilerTest() : fake_(clock_), client_(fake_) {}

  void CreateVolume(int64_t epoch = 1) {
    api::DaxVolume v;
    v.metadata.name = "vol";
    v.spec.size_bytes = 4096;
    v.spec.owner_node = "owner";
    v.spec.share = true;
    ASSERT_TRUE(fake_.Create(api::DaxVolumeResource(), api::ToJson(v)).ok());
    ASSERT_TRUE(fake_
                    .Patch(api::DaxVolumeResource(), "", "vol",
                           k8s::PatchType::kMerge,
                           {{"status", {{"phase", "Ready"}, {"epoch", epoch}}}},
                           "status")
                    .ok());
  }
  void CreateLease(const std::string& name) {
    api::DaxLease l;
    l.metadata.name = name;
    l.spec = {"vol", "node-" + name, "default/pod-" + name,
              api::Access::kReadWrite};
    ASSERT_TRUE(fake_.Create(api::DaxLeaseResource(), api::ToJson(l)).ok());
  }
  void CreateRecall(const std::string& name, int64_t grace) {
    api::DaxRecall r;
    r.metadata.name = name;
    r.spec = {"vol", api::RecallReason::kManual, grace};
    ASSERT_TRUE(fake_.Create(api::DaxRecallResource(), api::ToJson(r)).ok());
  }
  // What an agent does: a merge patch of the lease status, no precondition.
  void AgentPatch(const std::string& lease, Json status) {
    ASSERT_TRUE(fake_
                    .Patch(api::DaxLeaseResource(), "", lease,
                           k8s::PatchType::kMerge,
                           {{"status", std::move(status)}}, "status")
                    .ok());
  }
  template <typename T>
  T Read(const k8s::Resource& r, const std::string& name) {
    absl::StatusOr<Json> j = fake_.Get(r, "", name);
    EXPECT_TRUE(j.ok()) << j.status();
    absl::StatusOr<T> t = api::FromJson<T>(j.ok() ? *j : Json::object());
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? *t : T{};
  }
  api::DaxLease L(const std::string& n) {
    return Read<api::DaxLease>(api::DaxLeaseResource(), n);
  }
  api::DaxRecall R(const std::string& n) {
    return Read<api::DaxRecall>(api::DaxRecallResource(), n);
  }
  api::DaxVolume V() {
    return Read<api::DaxVolume>(api::DaxVolumeResource(), "vol");
  }

  // Reconciles until a pass writes nothing, retrying conflicts as the
  // controller does.
  void Converge() {
    for (int i = 0; i < 20; ++i) {
      absl::StatusOr<ReconcileResult> r = reconciler_.Reconcile("vol");
      if (!r.ok()) {
        ASSERT_TRUE(k8s::IsConflict(r.status())) << r.status();
        continue;
      }
      if (r->writes == 0) return;
    }
    FAIL() << "did not converge";
  }

  base::FakeClock clock_;
  k8s::FakeKubeClient fake_;
  InterposingClient client_;
  FakeEventSink events_;
  Reconciler reconciler_{client_, clock_, events_};
};

TEST_F(ReconcilerTest, FullRecallWithTwoAcksOneRevokedAndFenced) {
  CreateVolume(1);
  for (const char* n : {"a", "b", "c"}) CreateLease(n);
  Converge();
  EXPECT_EQ(L("a").status.state, api::LeaseState::kGranted);
  EXPECT_EQ(V().status.holders, 3);
  EXPECT_THAT(L("a").metadata.finalizers,
              testing::ElementsAre(api::kLeaseFinalizer));

  CreateRecall("r", 3);
  Converge();
  std::string id = R("r").status.recall_id;
  ASSERT_FALSE(id.empty());
  EXPECT_EQ(L("c").status.state, api::LeaseState::kRecalling);
  EXPECT_EQ(V().status.phase, api::VolumePhase::kRecalling);

  AgentPatch("a", {{"releasedRecallID", id}});
  AgentPatch("b", {{"releasedRecallID", id}});
  Converge();
  EXPECT_EQ(L("a").status.state, api::LeaseState::kReleased);
  EXPECT_EQ(R("r").status.outstanding, 1);

  clock_.Advance(absl::Seconds(3));
  absl::StatusOr<ReconcileResult> early = reconciler_.Reconcile("vol");
  ASSERT_TRUE(early.ok());
  Converge();
  EXPECT_EQ(L("c").status.state, api::LeaseState::kRevoked);
  EXPECT_TRUE(L("c").status.fence_required);
  EXPECT_EQ(L("c").status.reason, "DeadlineExceeded");
  EXPECT_EQ(R("r").status.phase, api::RecallPhase::kRecalling);

  AgentPatch("c", {{"fencedRecallID", id}});
  Converge();
  EXPECT_EQ(R("r").status.phase, api::RecallPhase::kComplete);
  EXPECT_EQ(R("r").status.released, 2);
  EXPECT_EQ(R("r").status.revoked, 1);
  EXPECT_TRUE(R("r").metadata.finalizers.empty());
  EXPECT_EQ(V().status.phase, api::VolumePhase::kReady);
  EXPECT_EQ(V().status.epoch, 2);

  bool recall_event = false, revoke_event = false;
  for (const EventSpec& e : events_.Take()) {
    recall_event |= e.kind == "DaxRecall" && e.reason == "Complete";
    revoke_event |= e.name == "c" && e.reason == "Revoked" && e.warning;
  }
  EXPECT_TRUE(recall_event);
  EXPECT_TRUE(revoke_event);
}

TEST_F(ReconcilerTest, SettledWorldWritesNothing) {
  CreateVolume();
  CreateLease("a");
  Converge();
  int64_t writes = fake_.WriteCount();
  absl::StatusOr<ReconcileResult> r = reconciler_.Reconcile("vol");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->writes, 0);
  EXPECT_EQ(fake_.WriteCount(), writes);
}

// An agent's ack lands between the operator's read and its write: the
// operator's guarded patch gets 409, nothing the agent wrote is lost, and
// the retry acts on the ack.
TEST_F(ReconcilerTest, ConcurrentAgentWriteIsNotOverwritten) {
  CreateVolume();
  CreateLease("a");
  CreateLease("b");
  Converge();
  CreateRecall("r", 30);
  Converge();
  std::string id = R("r").status.recall_id;
  AgentPatch("a", {{"releasedRecallID", id}});
  // Operator reads (a acked), then b acks before the operator writes a.
  client_.before_patch = [&] {
    AgentPatch("a", {{"revocationAcknowledged", false}});
  };
  absl::StatusOr<ReconcileResult> r = reconciler_.Reconcile("vol");
  EXPECT_TRUE(k8s::IsConflict(r.status())) << r.status();
  AgentPatch("b", {{"releasedRecallID", id}});
  Converge();
  EXPECT_EQ(L("a").status.released_recall_id, id);
  EXPECT_EQ(L("a").status.state, api::LeaseState::kReleased);
  EXPECT_EQ(L("b").status.state, api::LeaseState::kReleased);
  EXPECT_EQ(R("r").status.phase, api::RecallPhase::kComplete);
}

TEST_F(ReconcilerTest, InjectedConflictIsReturnedForRetry) {
  CreateVolume();
  CreateLease("a");
  fake_.FailNext(k8s::FakeKubeClient::Verb::kPatch,
                 absl::AbortedError("HTTP 409 Conflict"));
  EXPECT_TRUE(k8s::IsConflict(reconciler_.Reconcile("vol").status()));
  Converge();
  EXPECT_EQ(L("a").status.state, api::LeaseState::kGranted);
}

TEST_F(ReconcilerTest, UnknownVolumeGetsConditionNotError) {
  CreateLease("a");
  CreateRecall("r", 5);
  Converge();
  api::DaxLease a = L("a");
  const api::Condition* c =
      api::FindCondition(a.status.conditions, kLeaseGrantedCondition);
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->reason, "VolumeNotFound");
  EXPECT_EQ(L("a").status.state, api::LeaseState::kPending);
  EXPECT_EQ(R("r").status.phase, api::RecallPhase::kPending);
  // The volume appears: the recall (nobody holds access yet) completes at
  // once, then the lease is granted at the epoch after it.
  CreateVolume(5);
  Converge();
  EXPECT_EQ(R("r").status.phase, api::RecallPhase::kComplete);
  EXPECT_EQ(L("a").status.state, api::LeaseState::kGranted);
  EXPECT_EQ(L("a").status.epoch, 6);
}

TEST_F(ReconcilerTest, DeletedLeaseGoesOnlyWhenItHoldsNoAccess) {
  CreateVolume();
  CreateLease("a");
  Converge();
  ASSERT_TRUE(fake_.Delete(api::DaxLeaseResource(), "", "a").ok());
  Converge();
  // Granted: the finalizer keeps it.
  EXPECT_EQ(L("a").status.state, api::LeaseState::kGranted);
  CreateRecall("r", 30);
  Converge();
  AgentPatch("a", {{"releasedRecallID", R("r").status.recall_id}});
  Converge();
  EXPECT_TRUE(
      absl::IsNotFound(fake_.Get(api::DaxLeaseResource(), "", "a").status()));
  EXPECT_EQ(R("r").status.phase, api::RecallPhase::kComplete);
}

TEST_F(ReconcilerTest, RecallDeletedMidwayStillCompletes) {
  CreateVolume();
  CreateLease("a");
  Converge();
  CreateRecall("r", 30);
  Converge();
  std::string id = R("r").status.recall_id;
  ASSERT_TRUE(fake_.Delete(api::DaxRecallResource(), "", "r").ok());
  AgentPatch("a", {{"releasedRecallID", id}});
  Converge();
  EXPECT_TRUE(
      absl::IsNotFound(fake_.Get(api::DaxRecallResource(), "", "r").status()));
  EXPECT_EQ(V().status.phase, api::VolumePhase::kReady);
  EXPECT_EQ(V().status.epoch, 2);
}

}  // namespace
}  // namespace daxlease::op
