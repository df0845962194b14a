#include "operator/kubectl_recall.h"

#include "gtest/gtest.h"
#include "lib/api/resources.h"
#include "lib/base/clock.h"
#include "lib/k8s/fake_client.h"

namespace daxlease::op {
namespace {

using k8s::Json;

// Delegates to a FakeKubeClient; the first `lose_answers` Creates are
// carried out and then answered Unavailable, as when the connection drops
// after the server stored the object.
class LosesAnswers final : public k8s::ForwardingKubeClient {
 public:
  LosesAnswers(k8s::KubeClient& c, int lose_answers)
      : ForwardingKubeClient(c), lose_(lose_answers) {}
  int creates = 0;

  absl::StatusOr<Json> Create(const k8s::Resource& r, const Json& o) override {
    ++creates;
    absl::StatusOr<Json> stored = inner_.Create(r, o);
    if (stored.ok() && lose_ > 0) {
      --lose_;
      return absl::UnavailableError("connection reset by peer");
    }
    return stored;
  }

 private:
  int lose_;
};

api::DaxRecall Manual() {
  api::DaxRecall r;
  r.spec = {"vol", api::RecallReason::kManual, 30};
  return r;
}

size_t Recalls(k8s::KubeClient& c) {
  absl::StatusOr<k8s::ListResult> l = c.List(api::DaxRecallResource(), "", {});
  return l.ok() ? l->items.size() : 0;
}

// The POST was stored but its answer lost: the recall is found by its name,
// not created again.
TEST(CheckRecallReasonByHandTest, OnlyReasonsTheOperatorEndsByItself) {
  // Manual and Evict resume once Quiesced (lease::WhatEndsRecall).
  EXPECT_TRUE(CheckRecallReasonByHand(api::RecallReason::kManual).ok());
  EXPECT_TRUE(CheckRecallReasonByHand(api::RecallReason::kEvict).ok());
  // The others wait for a copy or a change nobody would make.
  for (auto r : {api::RecallReason::kSnapshot, api::RecallReason::kReshape,
                 api::RecallReason::kMigrate}) {
    absl::Status s = CheckRecallReasonByHand(r);
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
    EXPECT_NE(s.message().find("--reason Manual"), std::string::npos) << s;
  }
  EXPECT_NE(CheckRecallReasonByHand(api::RecallReason::kSnapshot)
                .message()
                .find("VolumeSnapshot"),
            std::string::npos);
}

TEST(CreateRecallOnceTest, LostAnswerMakesNoSecondRecall) {
  base::FakeClock clock;
  k8s::FakeKubeClient fake(clock);
  LosesAnswers c(fake, 1);
  absl::StatusOr<Json> r = CreateRecallOnce(c, Manual(), "vol-recall-abc");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(k8s::NameOf(*r), "vol-recall-abc");
  // Created with its finalizer: the operator need not add it.
  EXPECT_EQ((*r)["metadata"]["finalizers"],
            Json::array({api::kRecallFinalizer}));
  EXPECT_EQ(c.creates, 1);
  EXPECT_EQ(Recalls(fake), 1u);
}

// The POST failed before the server stored anything: it is tried again, and
// still only one recall exists.
TEST(CreateRecallOnceTest, UnstoredCreateIsRetriedOnce) {
  base::FakeClock clock;
  k8s::FakeKubeClient fake(clock);
  fake.FailNext(k8s::FakeKubeClient::Verb::kCreate,
                absl::UnavailableError("connection refused"));
  absl::StatusOr<Json> r = CreateRecallOnce(fake, Manual(), "vol-recall-abc");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(Recalls(fake), 1u);
}

// An earlier attempt of ours was stored (the HTTP client retried it): the
// repeat's AlreadyExists is that recall.
TEST(CreateRecallOnceTest, AlreadyExistsIsOurEarlierAttempt) {
  base::FakeClock clock;
  k8s::FakeKubeClient fake(clock);
  ASSERT_TRUE(CreateRecallOnce(fake, Manual(), "vol-recall-abc").ok());
  absl::StatusOr<Json> r = CreateRecallOnce(fake, Manual(), "vol-recall-abc");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(Recalls(fake), 1u);
}

// A refusal that is not ambiguous is returned at once.
TEST(CreateRecallOnceTest, RefusalIsReturned) {
  base::FakeClock clock;
  k8s::FakeKubeClient fake(clock);
  fake.FailNext(k8s::FakeKubeClient::Verb::kCreate,
                absl::InvalidArgumentError("graceSeconds: must be <= 86400"));
  EXPECT_TRUE(absl::IsInvalidArgument(
      CreateRecallOnce(fake, Manual(), "vol-recall-abc").status()));
  EXPECT_EQ(Recalls(fake), 0u);
}

}  // namespace
}  // namespace daxlease::op
