#include "lib/base/clock.h"

#include "gtest/gtest.h"

namespace daxlease::base {
namespace {

TEST(FakeClock, OnlyMovesWhenAdvanced) {
  FakeClock c;
  absl::Time t0 = c.Now();
  EXPECT_EQ(c.Now(), t0);
  c.Advance(absl::Seconds(30));
  EXPECT_EQ(c.Now() - t0, absl::Seconds(30));
  c.SleepFor(absl::Seconds(1));
  EXPECT_EQ(c.Now() - t0, absl::Seconds(31));
}

TEST(FakeClock, WallClockStepsDoNotMoveMonotonicTime) {
  FakeClock c;
  absl::Time t0 = c.Now();
  absl::Duration m0 = c.Monotonic();
  c.Set(t0 - absl::Hours(1));
  EXPECT_EQ(c.Now(), t0 - absl::Hours(1));
  EXPECT_EQ(c.Monotonic(), m0);
  c.Advance(absl::Seconds(2));
  EXPECT_EQ(c.Monotonic() - m0, absl::Seconds(2));
}

TEST(SystemClock, MovesForward) {
  absl::Time a = RealClock().Now();
  absl::Duration m = RealClock().Monotonic();
  RealClock().SleepFor(absl::Milliseconds(2));
  EXPECT_GT(RealClock().Now(), a);
  EXPECT_GE(RealClock().Monotonic() - m, absl::Milliseconds(2));
}

}  // namespace
}  // namespace daxlease::base
