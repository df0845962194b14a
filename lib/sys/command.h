// Running an external tool (mkfs.ext4, mkfs.xfs, resize2fs, xfs_growfs) with
// fork/exec: argv is passed as is, never through a shell, so nothing in an
// argument is interpreted. Output is captured.
#ifndef DAXLEASE_LIB_SYS_COMMAND_H_
#define DAXLEASE_LIB_SYS_COMMAND_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace daxlease::sys {

struct CommandResult {
  int exit_code = -1;  // -1 when killed by a signal
  int signal = 0;
  std::string stdout_text;
  std::string stderr_text;
};

// Runs argv[0] (looked up in PATH) with argv, stdin from /dev/null, and waits
// for it. Fails only when the command cannot be started (NotFound for a
// missing program); a non-zero exit is reported in the result.
// Thread-safe (fork in a multi-threaded process only calls async-signal-safe
// functions in the child).
absl::StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv);

// RunCommand, and a non-zero exit becomes Internal with "<argv> exited N:
// <stderr>" in the message.
absl::StatusOr<CommandResult> RunCommandOk(
    const std::vector<std::string>& argv);

}  // namespace daxlease::sys

#endif  // DAXLEASE_LIB_SYS_COMMAND_H_
