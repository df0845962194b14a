// Structured logging: one line per event, logfmt (`ts=... level=info
// event=csi.call method=/csi.v1.Node/NodeStageVolume volume=pvc-1 ms=12`).
// Values with spaces, quotes or '=' are quoted. Thread-safe; each line is
// written with one write(2) so lines from threads never interleave.
#ifndef DAXLEASE_LIB_BASE_LOG_H_
#define DAXLEASE_LIB_BASE_LOG_H_

#include <initializer_list>
#include <string>
#include <utility>

#include "absl/strings/string_view.h"

namespace daxlease::base {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

using LogField = std::pair<absl::string_view, std::string>;

// Lines below `level` are dropped. Default: kInfo, or DAXLEASE_LOG_LEVEL
// (debug|info|warn|error) from the environment at first use.
void SetLogLevel(LogLevel level);
// Redirects output (default: fd 2). Used by tests to capture lines.
void SetLogFd(int fd);

// Formats one logfmt line without the trailing newline (exposed for tests).
std::string FormatLogLine(absl::string_view ts, LogLevel level,
                          absl::string_view event,
                          std::initializer_list<LogField> fields);

void Log(LogLevel level, absl::string_view event,
         std::initializer_list<LogField> fields = {});

inline void LogInfo(absl::string_view event,
                    std::initializer_list<LogField> fields = {}) {
  Log(LogLevel::kInfo, event, fields);
}
inline void LogWarn(absl::string_view event,
                    std::initializer_list<LogField> fields = {}) {
  Log(LogLevel::kWarn, event, fields);
}
inline void LogError(absl::string_view event,
                     std::initializer_list<LogField> fields = {}) {
  Log(LogLevel::kError, event, fields);
}
inline void LogDebug(absl::string_view event,
                     std::initializer_list<LogField> fields = {}) {
  Log(LogLevel::kDebug, event, fields);
}

}  // namespace daxlease::base

#endif  // DAXLEASE_LIB_BASE_LOG_H_
