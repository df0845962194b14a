#include "lib/k8s/workqueue.h"

#include <atomic>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace daxlease::k8s {
namespace {

WorkQueueOptions NoBucket() {
  WorkQueueOptions o;
  o.qps = 0;
  return o;
}

TEST(WorkQueueTest, DeduplicatesWaitingKeys) {
  base::FakeClock clock;
  WorkQueue q(clock, NoBucket());
  q.Add("a");
  q.Add("b");
  q.Add("a");
  EXPECT_EQ(q.Len(), 2u);
  EXPECT_EQ(q.TryGet(), "a");
  EXPECT_EQ(q.TryGet(), "b");
  EXPECT_EQ(q.TryGet(), std::nullopt);
}

TEST(WorkQueueTest, KeyInProcessingIsRequeuedOnDoneNotHandedOutTwice) {
  base::FakeClock clock;
  WorkQueue q(clock, NoBucket());
  q.Add("a");
  ASSERT_EQ(q.TryGet(), "a");
  q.Add("a");  // changed while being processed
  q.Add("a");
  EXPECT_EQ(q.TryGet(), std::nullopt);  // not to a second worker
  q.Done("a");
  EXPECT_EQ(q.TryGet(), "a");  // once more, not twice
  q.Done("a");
  EXPECT_EQ(q.TryGet(), std::nullopt);
}

// Records what the queue reports, as client-go's metrics would count it.
struct RecordingObserver : WorkQueueObserver {
  void Added() override { ++adds; }
  void Depth(size_t n) override { depth = n; }
  void Waited(absl::Duration d) override { waits.push_back(d); }
  void Retried() override { ++retries; }
  int adds = 0;
  size_t depth = 0;
  std::vector<absl::Duration> waits;
  int retries = 0;
};

TEST(WorkQueueTest, ObserverSeesAddsDepthWaitsAndRetries) {
  base::FakeClock clock;
  RecordingObserver seen;
  WorkQueueOptions o = NoBucket();
  o.observer = &seen;
  WorkQueue q(clock, o);
  q.Add("a");
  q.Add("b");
  q.Add("a");  // de-duplicated: not an add
  EXPECT_EQ(seen.adds, 2);
  EXPECT_EQ(seen.depth, 2u);
  clock.Advance(absl::Seconds(3));
  ASSERT_EQ(q.TryGet(), "a");
  EXPECT_EQ(seen.depth, 1u);
  ASSERT_EQ(seen.waits.size(), 1u);
  EXPECT_EQ(seen.waits[0], absl::Seconds(3));
  q.AddRateLimited("a");  // the pass failed
  EXPECT_EQ(seen.retries, 1);
  q.Done("a");
  clock.Advance(absl::Seconds(1));  // past the backoff
  ASSERT_EQ(q.TryGet(), "b");
  ASSERT_EQ(q.TryGet(), "a");
  EXPECT_EQ(seen.depth, 0u);
  ASSERT_EQ(seen.waits.size(), 3u);
  EXPECT_EQ(seen.waits[1], absl::Seconds(4));
  EXPECT_EQ(seen.adds, 3);  // the retry's add counts, as in client-go
}

TEST(WorkQueueTest, AddAfterUsesInjectedClock) {
  base::FakeClock clock;
  WorkQueue q(clock, NoBucket());
  q.AddAfter("late", absl::Seconds(10));
  q.AddAfter("later", absl::Seconds(20));
  q.AddAfter("late", absl::Seconds(30));  // keeps the earlier time
  EXPECT_EQ(q.NumDelayed(), 2u);
  EXPECT_EQ(q.TryGet(), std::nullopt);
  clock.Advance(absl::Seconds(10));
  EXPECT_EQ(q.TryGet(), "late");
  EXPECT_EQ(q.TryGet(), std::nullopt);
  clock.Advance(absl::Seconds(10));
  EXPECT_EQ(q.TryGet(), "later");
  q.AddAfter("now", absl::ZeroDuration());
  EXPECT_EQ(q.TryGet(), "now");
}

TEST(WorkQueueTest, PerKeyExponentialBackoffAndForget) {
  base::FakeClock clock;
  WorkQueueOptions o = NoBucket();
  o.base_delay = absl::Milliseconds(5);
  o.max_delay = absl::Milliseconds(40);
  WorkQueue q(clock, o);
  std::vector<absl::Duration> delays;
  for (int i = 0; i < 6; ++i)
    delays.push_back(q.NextBackoff("k")), q.AddRateLimited("k");
  EXPECT_EQ(delays, (std::vector<absl::Duration>{
                        absl::Milliseconds(5), absl::Milliseconds(10),
                        absl::Milliseconds(20), absl::Milliseconds(40),
                        absl::Milliseconds(40), absl::Milliseconds(40)}));
  EXPECT_EQ(q.NumRequeues("k"), 6);
  EXPECT_EQ(q.NumRequeues("other"), 0);
  clock.Advance(absl::Milliseconds(4));
  EXPECT_EQ(q.TryGet(), std::nullopt);
  clock.Advance(absl::Milliseconds(1));
  EXPECT_EQ(q.TryGet(), "k");
  q.Forget("k");
  EXPECT_EQ(q.NumRequeues("k"), 0);
  EXPECT_EQ(q.NextBackoff("k"), absl::Milliseconds(5));
}

TEST(WorkQueueTest, TokenBucketLimitsOverallRate) {
  base::FakeClock clock;
  WorkQueueOptions o;
  o.base_delay = absl::ZeroDuration();
  o.qps = 10;
  o.burst = 2;
  WorkQueue q(clock, o);
  q.AddRateLimited("a");
  q.AddRateLimited("b");
  q.AddRateLimited("c");  // over the burst: waits one token (100 ms)
  EXPECT_EQ(q.TryGet(), "a");
  EXPECT_EQ(q.TryGet(), "b");
  EXPECT_EQ(q.TryGet(), std::nullopt);
  clock.Advance(absl::Milliseconds(100));
  EXPECT_EQ(q.TryGet(), "c");
}

TEST(WorkQueueTest, BlockingGetSeesFakeClockAndShutdown) {
  base::FakeClock clock;
  WorkQueue q(clock, NoBucket());
  q.AddAfter("x", absl::Seconds(5));
  std::optional<std::string> got;
  std::thread worker([&] { got = q.Get(); });
  absl::SleepFor(absl::Milliseconds(30));
  clock.Advance(absl::Seconds(5));
  worker.join();
  EXPECT_EQ(got, "x");

  std::thread waiter([&] { got = q.Get(); });
  absl::SleepFor(absl::Milliseconds(30));
  q.ShutDown();
  waiter.join();
  EXPECT_EQ(got, std::nullopt);
  q.Add("ignored");
  EXPECT_EQ(q.Len(), 0u);
  EXPECT_TRUE(q.ShuttingDown());
}

// A worker blocked in Get on an empty queue sees a key another thread adds
// with AddAfter once the clock reaches it (an informer handler delaying a
// key while every worker waits).
TEST(WorkQueueTest, BlockedGetSeesAnAddAfterFromAnotherThread) {
  base::FakeClock clock;
  WorkQueue q(clock, NoBucket());
  std::optional<std::string> got;
  std::thread worker([&] { got = q.Get(); });
  absl::SleepFor(absl::Milliseconds(30));  // blocked: nothing queued
  q.AddAfter("x", absl::Seconds(1));
  absl::SleepFor(absl::Milliseconds(30));
  clock.Advance(absl::Seconds(1));
  worker.join();
  EXPECT_EQ(got, "x");
}

TEST(WorkQueueTest, ConcurrentWorkersNeverShareAKey) {
  base::FakeClock clock;
  WorkQueue q(clock, NoBucket());
  std::atomic<int> in_flight[4] = {0, 0, 0, 0};
  std::atomic<bool> overlap{false};
  std::atomic<int> processed{0};
  std::vector<std::thread> workers;
  for (int w = 0; w < 3; ++w) {
    workers.emplace_back([&] {
      while (auto key = q.Get()) {
        int k = (*key)[0] - 'a';
        if (in_flight[k].fetch_add(1) != 0) overlap = true;
        absl::SleepFor(absl::Microseconds(50));
        in_flight[k].fetch_sub(1);
        processed.fetch_add(1);
        q.Done(*key);
      }
    });
  }
  for (int i = 0; i < 400; ++i)
    q.Add(std::string(1, static_cast<char>('a' + i % 4)));
  while (q.Len() > 0) absl::SleepFor(absl::Milliseconds(1));
  absl::SleepFor(absl::Milliseconds(20));
  q.ShutDown();
  for (auto& t : workers) t.join();
  EXPECT_FALSE(overlap);
  EXPECT_GE(processed.load(), 4);
  EXPECT_LE(processed.load(), 400);
}

}  // namespace
}  // namespace daxlease::k8s
