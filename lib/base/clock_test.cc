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

TEST(SystemClock, MovesForward) {
  absl::Time a = RealClock().Now();
  RealClock().SleepFor(absl::Milliseconds(2));
  EXPECT_GT(RealClock().Now(), a);
}

}  // namespace
}  // namespace daxlease::base
