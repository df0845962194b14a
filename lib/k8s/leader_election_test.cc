#include "lib/k8s/leader_election.h"

#include <atomic>

#include "gtest/gtest.h"
#include "lib/k8s/fake_client.h"

namespace daxlease::k8s {
namespace {

LeaderElectionConfig Config(const std::string& id) {
  LeaderElectionConfig c;
  c.lock_namespace = "kube-system";
  c.lock_name = "daxlease-operator";
  c.identity = id;
  return c;  // 15 s / 10 s / 2 s
}

TEST(LeaderElectionTest, ValidateDurations) {
  EXPECT_TRUE(LeaderElector::Validate(Config("a")).ok());
  LeaderElectionConfig c = Config("a");
  c.renew_deadline = c.lease_duration;
  EXPECT_FALSE(LeaderElector::Validate(c).ok());
  c = Config("");
  EXPECT_FALSE(LeaderElector::Validate(c).ok());
  c = Config("a");
  c.retry_period = absl::ZeroDuration();
  EXPECT_FALSE(LeaderElector::Validate(c).ok());
}

TEST(LeaderElectionTest, OnlyOneLeadsAndStandbyTakesOverAfterExpiry) {
  base::FakeClock clock;
  FakeKubeClient fake(clock);
  LeaderElector a(fake, clock, Config("a"), {});
  LeaderElector b(fake, clock, Config("b"), {});
  EXPECT_EQ(a.TryAcquireOrRenew().value(), true);
  EXPECT_EQ(b.TryAcquireOrRenew().value(), false);
  EXPECT_TRUE(a.IsLeader());
  EXPECT_FALSE(b.IsLeader());
  EXPECT_EQ(b.ObservedLeader(), "a");
  // a renews every 2 s; b never sees the record stale.
  for (int i = 0; i < 20; ++i) {
    clock.Advance(absl::Seconds(2));
    ASSERT_EQ(a.TryAcquireOrRenew().value(), true);
    ASSERT_EQ(b.TryAcquireOrRenew().value(), false);
  }
  // a dies. b's view: the record last changed when it last looked.
  clock.Advance(absl::Seconds(14));
  EXPECT_EQ(b.TryAcquireOrRenew().value(), false);
  clock.Advance(absl::Seconds(2));
  EXPECT_EQ(b.TryAcquireOrRenew().value(), true);
  Json lease = *fake.Get(CoordinationLeaseResource(), "kube-system",
                         "daxlease-operator");
  EXPECT_EQ(lease["spec"]["holderIdentity"], "b");
  EXPECT_EQ(lease["spec"]["leaseTransitions"], 1);
  EXPECT_EQ(lease["spec"]["leaseDurationSeconds"], 15);
  // a comes back: it must not lead again.
  EXPECT_EQ(a.TryAcquireOrRenew().value(), false);
  EXPECT_FALSE(a.IsLeader());
}

TEST(LeaderElectionTest, RacingCandidatesGetOneConflict) {
  base::FakeClock clock;
  FakeKubeClient fake(clock);
  LeaderElector a(fake, clock, Config("a"), {});
  LeaderElector b(fake, clock, Config("b"), {});
  // Both create at once: the second gets AlreadyExists.
  fake.FailNext(FakeKubeClient::Verb::kGet, absl::NotFoundError("raced"));
  ASSERT_EQ(a.TryAcquireOrRenew().value(), true);
  fake.FailNext(FakeKubeClient::Verb::kGet, absl::NotFoundError("raced"));
  EXPECT_EQ(b.TryAcquireOrRenew().value(), false);
  // A stale write (409) does not make a leader either.
  fake.FailNext(FakeKubeClient::Verb::kUpdate, absl::AbortedError("conflict"));
  EXPECT_EQ(a.TryAcquireOrRenew().value(), false);
  EXPECT_EQ(a.TryAcquireOrRenew().value(), true);
}

TEST(LeaderElectionTest, ThreadsCallbacksReleaseAndTakeover) {
  FakeKubeClient fake(base::RealClock());
  auto fast = [](const std::string& id) {
    LeaderElectionConfig c = Config(id);
    c.lease_duration = absl::Seconds(3);
    c.renew_deadline = absl::Seconds(2);
    c.retry_period = absl::Milliseconds(100);
    return c;
  };
  std::atomic<int> a_started{0}, a_stopped{0}, b_started{0};
  LeaderElector a(fake, base::RealClock(), fast("a"),
                  {[&] { ++a_started; }, [&] { ++a_stopped; }, nullptr});
  LeaderElector b(fake, base::RealClock(), fast("b"),
                  {[&] { ++b_started; }, nullptr, nullptr});
  ASSERT_TRUE(a.Start().ok());
  for (int i = 0; i < 100 && !a.IsLeader(); ++i)
    absl::SleepFor(absl::Milliseconds(20));
  ASSERT_TRUE(a.IsLeader());
  ASSERT_TRUE(b.Start().ok());
  absl::SleepFor(absl::Milliseconds(500));
  EXPECT_FALSE(b.IsLeader());
  EXPECT_EQ(b_started.load(), 0);
  // Stop releases: b takes over well before the 3 s lease would expire.
  absl::Time stopped = absl::Now();
  a.Stop();
  EXPECT_EQ(a_started.load(), 1);
  EXPECT_EQ(a_stopped.load(), 1);
  for (int i = 0; i < 200 && !b.IsLeader(); ++i)
    absl::SleepFor(absl::Milliseconds(10));
  EXPECT_TRUE(b.IsLeader());
  EXPECT_LT(absl::Now() - stopped, absl::Seconds(2));
  EXPECT_EQ(b_started.load(), 1);
  b.Stop();
  Json lease = *fake.Get(CoordinationLeaseResource(), "kube-system",
                         "daxlease-operator");
  EXPECT_EQ(lease["spec"]["holderIdentity"], "");
}

TEST(LeaderElectionTest, LeaderStepsDownWhenRenewalsFail) {
  FakeKubeClient fake(base::RealClock());
  LeaderElectionConfig c = Config("a");
  c.lease_duration = absl::Seconds(3);
  c.renew_deadline = absl::Milliseconds(500);
  c.retry_period = absl::Milliseconds(100);
  std::atomic<int> stopped{0};
  LeaderElector a(fake, base::RealClock(), c,
                  {nullptr, [&] { ++stopped; }, nullptr});
  ASSERT_TRUE(a.Start().ok());
  for (int i = 0; i < 100 && !a.IsLeader(); ++i)
    absl::SleepFor(absl::Milliseconds(20));
  ASSERT_TRUE(a.IsLeader());
  fake.FailNext(FakeKubeClient::Verb::kGet,
                absl::UnavailableError("apiserver down"), 1000);
  for (int i = 0; i < 200 && stopped.load() == 0; ++i)
    absl::SleepFor(absl::Milliseconds(10));
  EXPECT_EQ(stopped.load(), 1);
  EXPECT_FALSE(a.IsLeader());
  a.Stop();
}

}  // namespace
}  // namespace daxlease::k8s
