// Running an external tool (mkfs.ext4, mkfs.xfs, resize2fs, xfs_growfs) with
// fork/exec: argv is passed as is, never through a shell, so nothing in an
// argument is interpreted. Output is captured.
//
// A command never outlives its purpose: it runs in a process group of its
// own (so a timeout kills whatever it forked too), it gets SIGKILL when the
// thread that started it dies (PR_SET_PDEATHSIG: kill -9 of the plugin takes
// its mkfs with it, so a restarted plugin never races a survivor on the same
// device), and an optional timeout kills the whole group.
#ifndef DAXLEASE_LIB_SYS_COMMAND_H_
#define DAXLEASE_LIB_SYS_COMMAND_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace daxlease::sys {

struct CommandResult {
  int exit_code = -1;  // -1 when killed by a signal
  int signal = 0;
  std::string stdout_text;
  std::string stderr_text;
};

struct CommandOptions {
  // After this long the command's process group gets SIGKILL and the call
  // fails with DeadlineExceeded. Measured on the monotonic clock (poll), so
  // a wall-clock step does not shorten or stretch it.
  absl::Duration timeout = absl::InfiniteDuration();
};

// Runs argv[0] (looked up in PATH) with argv, stdin from /dev/null, in a new
// process group, and waits for it (and for the group's hold on its output
// pipes). Fails when the command cannot be started (NotFound for a missing
// program) or runs out of time (DeadlineExceeded, the group killed and the
// command reaped); a non-zero exit is reported in the result.
// Thread-safe (fork in a multi-threaded process only calls async-signal-safe
// functions in the child). The calling thread must stay alive until the
// call returns (it does: the call blocks), since PR_SET_PDEATHSIG follows
// the thread that forked.
absl::StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv,
                                         const CommandOptions& options = {});

// RunCommand, and a non-zero exit becomes Internal with "<argv> exited N:
// <stderr>" in the message.
absl::StatusOr<CommandResult> RunCommandOk(const std::vector<std::string>& argv,
                                           const CommandOptions& options = {});

}  // namespace daxlease::sys

#endif  // DAXLEASE_LIB_SYS_COMMAND_H_
