// Crash points: named places between two durable steps where a kill -9 is
// the case to test. A test starts the process with
// DAXLEASE_CRASH_POINT=<name> in its environment; the process then kills
// itself with SIGKILL the first time it passes that point, so the kill lands
// exactly there, which a timed kill from outside cannot promise. It logs
// "base.crash_point" first, so a test can tell that its kill landed.
//
// Without the variable a crash point costs one string comparison against an
// empty string. The variable is read once, at the first crash point.
// Thread-safe.
#ifndef DAXLEASE_LIB_BASE_CRASH_POINT_H_
#define DAXLEASE_LIB_BASE_CRASH_POINT_H_

#include "absl/strings/string_view.h"

namespace daxlease::base {

inline constexpr char kCrashPointEnv[] = "DAXLEASE_CRASH_POINT";

void CrashPoint(absl::string_view name);

}  // namespace daxlease::base

#endif  // DAXLEASE_LIB_BASE_CRASH_POINT_H_
