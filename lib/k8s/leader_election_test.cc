#include "lib/k8s/leader_election.h"

#include <atomic>

#include "absl/synchronization/notification.h"
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
  // IsLeader() turns true just before on_started_leading runs: wait for both.
  for (int i = 0; i < 200 && (!b.IsLeader() || b_started.load() == 0); ++i)
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

// A standby whose wall clock jumps forward must not see the leader's record
// as expired: expiry is measured on monotonic time.
TEST(LeaderElectionTest, WallClockJumpDoesNotLetAStandbyTakeOverEarly) {
  base::FakeClock clock;
  FakeKubeClient fake(clock);
  LeaderElector a(fake, clock, Config("a"), {});
  LeaderElector b(fake, clock, Config("b"), {});
  ASSERT_EQ(a.TryAcquireOrRenew().value(), true);
  ASSERT_EQ(b.TryAcquireOrRenew().value(), false);
  clock.Set(clock.Now() + absl::Hours(1));
  EXPECT_EQ(b.TryAcquireOrRenew().value(), false);
  EXPECT_TRUE(a.IsLeader());
  clock.Advance(absl::Seconds(16));
  EXPECT_EQ(b.TryAcquireOrRenew().value(), true);
  EXPECT_FALSE(a.IsLeader()) << "a has not renewed for 16 s";
}

// The leader's wall clock steps back an hour while the API server is
// unreachable: it must still give up once renew_deadline of real time has
// passed, before a standby's lease_duration ends.
TEST(LeaderElectionTest, WallClockStepBackDoesNotExtendTheRenewDeadline) {
  base::FakeClock clock;
  FakeKubeClient fake(clock);
  LeaderElectionConfig c = Config("a");  // 15 s / 10 s
  c.retry_period = absl::Milliseconds(20);
  std::atomic<int> stopped{0};
  LeaderElector a(fake, clock, c, {nullptr, [&] { ++stopped; }, nullptr});
  ASSERT_TRUE(a.Start().ok());
  for (int i = 0; i < 200 && !a.IsLeader(); ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_TRUE(a.IsLeader());
  fake.FailNext(FakeKubeClient::Verb::kGet,
                absl::UnavailableError("apiserver down"), 1'000'000);
  clock.Set(clock.Now() - absl::Hours(1));
  clock.Advance(absl::Seconds(10));
  EXPECT_FALSE(a.IsLeader());
  for (int i = 0; i < 300 && stopped.load() == 0; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(stopped.load(), 1);
  a.Stop();
}

// Delegates to a FakeKubeClient; while hanging, every Get blocks until
// Release().
class HangingClient final : public ForwardingKubeClient {
 public:
  using ForwardingKubeClient::ForwardingKubeClient;
  void Hang() { hang_ = true; }
  void Release() { released_.Notify(); }
  bool Hung() const { return hung_.load() > 0; }

  absl::StatusOr<Json> Get(const Resource& r, absl::string_view ns,
                           absl::string_view name) override {
    if (hang_) {
      ++hung_;
      released_.WaitForNotification();
    }
    return inner_.Get(r, ns, name);
  }

 private:
  std::atomic<bool> hang_{false};
  std::atomic<int> hung_{0};
  absl::Notification released_;
};

// A renewal that hangs (no answer, no error) is bounded by the renew
// deadline: the leader stops acting while the call is still outstanding.
TEST(LeaderElectionTest, HangingRenewalIsBoundedByTheRenewDeadline) {
  base::FakeClock clock;
  FakeKubeClient fake(clock);
  HangingClient hanging(fake);
  LeaderElectionConfig c = Config("a");  // 15 s / 10 s
  c.retry_period = absl::Milliseconds(20);
  std::atomic<int> stopped{0};
  LeaderElector a(hanging, clock, c, {nullptr, [&] { ++stopped; }, nullptr});
  ASSERT_TRUE(a.Start().ok());
  for (int i = 0; i < 200 && !a.IsLeader(); ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_TRUE(a.IsLeader());
  hanging.Hang();
  for (int i = 0; i < 200 && !hanging.Hung(); ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_TRUE(hanging.Hung());
  clock.Advance(absl::Seconds(9));
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_TRUE(a.IsLeader()) << "still within the renew deadline";
  EXPECT_EQ(stopped.load(), 0);
  clock.Advance(absl::Seconds(1));
  EXPECT_FALSE(a.IsLeader());
  for (int i = 0; i < 300 && stopped.load() == 0; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(stopped.load(), 1) << "the leader kept acting during a hung call";
  hanging.Release();
  a.Stop();
}

}  // namespace
}  // namespace daxlease::k8s
