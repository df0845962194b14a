#include "operator/events.h"

#include <string>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "lib/api/json.h"
#include "lib/base/clock.h"
#include "lib/k8s/fake_client.h"
#include "lib/k8s/resource.h"

namespace daxlease::op {
namespace {

class KubeEventRecorderTest : public ::testing::Test {
 protected:
  // The Events stored so far.
  size_t Stored() {
    absl::StatusOr<k8s::ListResult> l =
        fake_.List(k8s::EventResource(), "default", {});
    EXPECT_TRUE(l.ok()) << l.status();
    return l.ok() ? l->items.size() : 0;
  }
  // Polls until `n` Events are stored (true) or 5 s pass (false).
  bool WaitStored(size_t n) {
    const absl::Time end = absl::Now() + absl::Seconds(5);
    while (absl::Now() < end) {
      if (Stored() >= n) return true;
      absl::SleepFor(absl::Milliseconds(2));
    }
    return Stored() >= n;
  }
  static EventSpec Spec(const std::string& reason) {
    return {"DaxVolume", "vol", "uid-1", false, reason, "m"};
  }

  base::FakeClock clock_;
  k8s::FakeKubeClient fake_{clock_};
};

TEST_F(KubeEventRecorderTest, SendsWhatItRecords) {
  KubeEventRecorder r(fake_, clock_, "test");
  r.Record(Spec("A"));
  EXPECT_TRUE(WaitStored(1));
}

// Nothing is sent while a key is quiet; once it is unquieted, what was
// recorded meanwhile goes, in order, with the time it was recorded.
TEST_F(KubeEventRecorderTest, AQuietKeyHoldsEventsUntilUnquieted) {
  KubeEventRecorder r(fake_, clock_, "test");
  r.Quiet("vol", absl::Hours(1));
  const absl::Time recorded = clock_.Now();
  r.Record(Spec("A"));
  clock_.Advance(absl::Seconds(7));
  r.Record(Spec("B"));
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_EQ(Stored(), 0u) << "sent while quiet";
  r.Unquiet("vol");
  ASSERT_TRUE(WaitStored(2));
  absl::StatusOr<k8s::ListResult> l =
      fake_.List(k8s::EventResource(), "default", {});
  ASSERT_TRUE(l.ok()) << l.status();
  bool saw_a = false;
  for (const k8s::Json& e : l->items) {
    if (e.value("reason", "") != "A") continue;
    saw_a = true;
    EXPECT_EQ(e.value("firstTimestamp", ""), api::FormatWireTime(recorded));
  }
  EXPECT_TRUE(saw_a);
}

// A quiet ends by itself after at most its duration, and the longest of
// two quiet keys counts.
TEST_F(KubeEventRecorderTest, AQuietEndsByItself) {
  KubeEventRecorder r(fake_, clock_, "test");
  const absl::Time t0 = absl::Now();
  r.Quiet("a", absl::Milliseconds(50));
  r.Quiet("b", absl::Milliseconds(300));
  r.Record(Spec("A"));
  ASSERT_TRUE(WaitStored(1));
  EXPECT_GE(absl::Now() - t0, absl::Milliseconds(300));
}

// Unquieting one key leaves the events waiting for another.
TEST_F(KubeEventRecorderTest, EveryQuietKeyMustGo) {
  KubeEventRecorder r(fake_, clock_, "test");
  r.Quiet("a", absl::Hours(1));
  r.Quiet("b", absl::Hours(1));
  r.Record(Spec("A"));
  r.Unquiet("a");
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_EQ(Stored(), 0u);
  r.Unquiet("b");
  EXPECT_TRUE(WaitStored(1));
}

// Stopping sends what is queued, quiet or not.
TEST_F(KubeEventRecorderTest, StoppingSendsWhatIsQueuedEvenWhenQuiet) {
  {
    KubeEventRecorder r(fake_, clock_, "test");
    r.Quiet("vol", absl::Hours(1));
    r.Record(Spec("A"));
  }
  EXPECT_EQ(Stored(), 1u);
}

}  // namespace
}  // namespace daxlease::op
