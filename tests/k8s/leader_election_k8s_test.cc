// Two LeaderElectors on a real coordination.k8s.io/v1 Lease.
#include <atomic>

#include "gtest/gtest.h"
#include "lib/k8s/leader_election.h"
#include "tests/k8s/k8s_testing.h"
#include "tests/testing/prereq.h"

namespace daxlease::k8s {
namespace {

class LeaderElectionK8sTest : public ::testing::Test {
 protected:
  void SetUp() override {
    DAXLEASE_REQUIRE(!testing::KubeconfigPath().empty(),
                     "DAXLEASE_KUBECONFIG unset: run through ctest -L k8s");
    for (auto* c : {&a_client_, &b_client_}) {
      auto made = testing::NewClient();
      ASSERT_TRUE(made.ok()) << made.status();
      *c = std::move(*made);
    }
    auto ns = testing::CreateTestNamespace(*a_client_, "k8s-leader");
    ASSERT_TRUE(ns.ok()) << ns.status();
    ns_ = *ns;
  }
  LeaderElectionConfig Config(const std::string& id) {
    LeaderElectionConfig c;
    c.lock_namespace = ns_;
    c.lock_name = "daxlease-test-lock";
    c.identity = id;
    c.lease_duration = absl::Seconds(4);
    c.renew_deadline = absl::Seconds(3);
    c.retry_period = absl::Milliseconds(500);
    return c;
  }
  static bool WaitUntil(const std::function<bool()>& cond, absl::Duration d) {
    absl::Time end = absl::Now() + d;
    while (absl::Now() < end) {
      if (cond()) return true;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return cond();
  }
  std::unique_ptr<RestKubeClient> a_client_, b_client_;
  std::string ns_;
};

TEST_F(LeaderElectionK8sTest, OneLeaderAndStandbyTakesOverWhenLeaderDies) {
  std::atomic<int> a_started{0}, b_started{0}, overlap{0};
  std::atomic<bool> a_leading{false}, b_leading{false};
  LeaderElectionConfig ac = Config("replica-a");
  ac.release_on_stop = false;  // "dies": no release, the lease must expire
  LeaderElector a(*a_client_, base::RealClock(), ac,
                  {[&] {
                     ++a_started;
                     a_leading = true;
                     if (b_leading) ++overlap;
                   },
                   [&] { a_leading = false; }, nullptr});
  LeaderElector b(*b_client_, base::RealClock(), Config("replica-b"),
                  {[&] {
                     ++b_started;
                     b_leading = true;
                     if (a_leading) ++overlap;
                   },
                   [&] { b_leading = false; }, nullptr});
  ASSERT_TRUE(a.Start().ok());
  ASSERT_TRUE(WaitUntil([&] { return a.IsLeader(); }, absl::Seconds(10)));
  ASSERT_TRUE(b.Start().ok());
  // Several lease durations with both running: a keeps it, b stands by.
  absl::SleepFor(absl::Seconds(5));
  EXPECT_TRUE(a.IsLeader());
  EXPECT_FALSE(b.IsLeader());
  EXPECT_EQ(b.ObservedLeader(), "replica-a");
  EXPECT_EQ(b_started.load(), 0);

  absl::Time died = absl::Now();
  a.Stop();
  ASSERT_TRUE(WaitUntil([&] { return b.IsLeader(); }, absl::Seconds(10)));
  absl::Duration takeover = absl::Now() - died;
  std::cout << "takeover after leader death: " << takeover << "\n";
  // Not before the lease could have expired, and within duration + retry.
  EXPECT_GE(takeover, absl::Seconds(3));
  EXPECT_LE(takeover, absl::Seconds(4) + absl::Seconds(2));
  EXPECT_EQ(overlap.load(), 0);
  EXPECT_EQ(a_started.load(), 1);
  EXPECT_EQ(b_started.load(), 1);

  Json lease =
      *a_client_->Get(CoordinationLeaseResource(), ns_, "daxlease-test-lock");
  EXPECT_EQ(lease["spec"]["holderIdentity"], "replica-b");
  EXPECT_EQ(lease["spec"]["leaseTransitions"], 1);
  b.Stop();
  // b released on stop.
  lease =
      *a_client_->Get(CoordinationLeaseResource(), ns_, "daxlease-test-lock");
  EXPECT_EQ(lease["spec"]["holderIdentity"], "");
}

TEST_F(LeaderElectionK8sTest, ReleaseHandsOverQuickly) {
  LeaderElector a(*a_client_, base::RealClock(), Config("a"), {});
  LeaderElector b(*b_client_, base::RealClock(), Config("b"), {});
  ASSERT_TRUE(a.Start().ok());
  ASSERT_TRUE(WaitUntil([&] { return a.IsLeader(); }, absl::Seconds(10)));
  ASSERT_TRUE(b.Start().ok());
  absl::SleepFor(absl::Seconds(1));
  ASSERT_FALSE(b.IsLeader());
  absl::Time stopped = absl::Now();
  a.Stop();
  ASSERT_TRUE(WaitUntil([&] { return b.IsLeader(); }, absl::Seconds(10)));
  EXPECT_LT(absl::Now() - stopped, absl::Seconds(2));
  b.Stop();
}

}  // namespace
}  // namespace daxlease::k8s
