#include "lib/base/clock.h"

#include <algorithm>
#include <chrono>

#include "absl/time/clock.h"

namespace daxlease::base {

absl::Time SystemClock::Now() const { return absl::Now(); }
absl::Duration SystemClock::Monotonic() const {
  return absl::FromChrono(std::chrono::steady_clock::now().time_since_epoch());
}
void SystemClock::SleepFor(absl::Duration d) { absl::SleepFor(d); }

Clock& RealClock() {
  static SystemClock* clock = new SystemClock();
  return *clock;
}

absl::Time FakeClock::Now() const {
  absl::MutexLock l(&mu_);
  return now_;
}

absl::Duration FakeClock::Monotonic() const {
  absl::MutexLock l(&mu_);
  return mono_;
}

void FakeClock::Advance(absl::Duration d) {
  absl::MutexLock l(&mu_);
  now_ += d;
  mono_ += std::max(d, absl::ZeroDuration());
}

void FakeClock::Set(absl::Time t) {
  absl::MutexLock l(&mu_);
  now_ = t;
}

}  // namespace daxlease::base
