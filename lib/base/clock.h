// Time as an input. Only SystemClock reads the real clock; deadlines, backoff
// and requeue take a Clock so tests advance FakeClock instead of sleeping.
#ifndef DAXLEASE_LIB_BASE_CLOCK_H_
#define DAXLEASE_LIB_BASE_CLOCK_H_

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace daxlease::base {

// Thread-safe.
class Clock {
 public:
  virtual ~Clock() = default;
  // Wall-clock time: for timestamps shown to others. It may step (NTP, an
  // administrator), backwards too, so never measure a duration with it.
  virtual absl::Time Now() const = 0;
  // Time since a fixed origin that only moves forward at the rate of real
  // time and ignores wall-clock steps (CLOCK_MONOTONIC): for durations and
  // deadlines within this process (leases, timeouts).
  virtual absl::Duration Monotonic() const = 0;
  // Blocks the caller for `d` of this clock's time.
  virtual void SleepFor(absl::Duration d) = 0;
};

// The real clock. Use RealClock() rather than constructing one.
class SystemClock final : public Clock {
 public:
  absl::Time Now() const override;
  absl::Duration Monotonic() const override;
  void SleepFor(absl::Duration d) override;
};
Clock& RealClock();

// Manual time for tests: time only moves on Advance() (wall and monotonic
// time together) and Set() (a wall-clock step, forwards or backwards, that
// monotonic time does not see); SleepFor() advances the clock by `d` and
// returns at once (no thread ever blocks on it).
class FakeClock final : public Clock {
 public:
  explicit FakeClock(absl::Time start = absl::FromUnixSeconds(1'700'000'000))
      : now_(start) {}
  absl::Time Now() const override;
  absl::Duration Monotonic() const override;
  void SleepFor(absl::Duration d) override { Advance(d); }
  // REQUIRES: d >= 0 (monotonic time never goes back; use Set for a step).
  void Advance(absl::Duration d);
  void Set(absl::Time t);

 private:
  mutable absl::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_);
  absl::Duration mono_ ABSL_GUARDED_BY(mu_);
};

}  // namespace daxlease::base

#endif  // DAXLEASE_LIB_BASE_CLOCK_H_
