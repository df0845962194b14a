#include "lib/base/crash_point.h"

#include <signal.h>
#include <stdlib.h>

#include <string>

#include "lib/base/log.h"

namespace daxlease::base {

void CrashPoint(absl::string_view name) {
  static const std::string* const target = [] {
    const char* v = ::getenv(kCrashPointEnv);
    return new std::string(v == nullptr ? "" : v);
  }();
  if (target->empty() || *target != name) return;
  LogWarn("base.crash_point", {{"point", std::string(name)}});
  ::raise(SIGKILL);
}

}  // namespace daxlease::base
