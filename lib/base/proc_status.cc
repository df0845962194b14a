#include "lib/base/proc_status.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "lib/base/status.h"

namespace daxlease::base {

absl::StatusOr<int64_t> ParseProcStatusKiB(absl::string_view status,
                                           absl::string_view field) {
  for (absl::string_view line : absl::StrSplit(status, '\n')) {
    if (!absl::ConsumePrefix(&line, field) || !absl::ConsumePrefix(&line, ":"))
      continue;
    line = absl::StripAsciiWhitespace(line);
    int64_t kib = 0;
    if (!absl::ConsumeSuffix(&line, "kB") ||
        !absl::SimpleAtoi(absl::StripAsciiWhitespace(line), &kib) || kib < 0) {
      return absl::InternalError(
          absl::StrCat("proc status: ", field, " is not a number of kB"));
    }
    return kib;
  }
  return absl::NotFoundError(absl::StrCat("proc status: no ", field, " line"));
}

absl::StatusOr<ProcMemory> ReadProcMemory(pid_t pid) {
  const std::string path = pid == 0 ? std::string("/proc/self/status")
                                    : absl::StrCat("/proc/", pid, "/status");
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("open", path, errno);
  std::string text;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      return ErrnoStatus("read", path, err);
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  ProcMemory m;
  ASSIGN_OR_RETURN(m.rss_kib, ParseProcStatusKiB(text, "VmRSS"));
  ASSIGN_OR_RETURN(m.rss_peak_kib, ParseProcStatusKiB(text, "VmHWM"));
  return m;
}

}  // namespace daxlease::base
