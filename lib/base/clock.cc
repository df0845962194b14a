#include "lib/base/clock.h"

#include "absl/time/clock.h"

namespace daxlease::base {

absl::Time SystemClock::Now() const { return absl::Now(); }
void SystemClock::SleepFor(absl::Duration d) { absl::SleepFor(d); }

Clock& RealClock() {
  static SystemClock* clock = new SystemClock();
  return *clock;
}

absl::Time FakeClock::Now() const {
  absl::MutexLock l(&mu_);
  return now_;
}

void FakeClock::Advance(absl::Duration d) {
  absl::MutexLock l(&mu_);
  now_ += d;
}

void FakeClock::Set(absl::Time t) {
  absl::MutexLock l(&mu_);
  now_ = t;
}

}  // namespace daxlease::base
