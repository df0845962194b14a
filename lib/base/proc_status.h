// A process's memory figures as the kernel reports them in
// /proc/<pid>/status (proc(5)): the resident set now (VmRSS) and at its
// peak (VmHWM). The one reader of that file for the operator's memory
// report and the tests' and benches' peak-RSS goals.
#ifndef DAXLEASE_LIB_BASE_PROC_STATUS_H_
#define DAXLEASE_LIB_BASE_PROC_STATUS_H_

#include <sys/types.h>

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace daxlease::base {

struct ProcMemory {
  int64_t rss_kib = 0;       // VmRSS
  int64_t rss_peak_kib = 0;  // VmHWM
};

// The value in KiB of the line "`field`:   N kB" of a /proc/<pid>/status
// text. NotFound when no line names `field` (a kernel thread has no Vm*
// lines); Internal when the line is not a number of kB.
absl::StatusOr<int64_t> ParseProcStatusKiB(absl::string_view status,
                                           absl::string_view field);

// VmRSS and VmHWM of process `pid` (0: this process). NotFound when the
// process is gone (as ErrnoStatus maps ENOENT), PermissionDenied when it
// may not be read, else as ParseProcStatusKiB.
absl::StatusOr<ProcMemory> ReadProcMemory(pid_t pid = 0);

}  // namespace daxlease::base

#endif  // DAXLEASE_LIB_BASE_PROC_STATUS_H_
