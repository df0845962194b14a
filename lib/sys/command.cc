#include "lib/sys/command.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "lib/base/status.h"
#include "lib/sys/fd.h"

namespace daxlease::sys {
namespace {

absl::Status MakePipe(UniqueFd* r, UniqueFd* w) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0)
    return base::ErrnoStatus("pipe2", "", errno);
  r->Reset(fds[0]);
  w->Reset(fds[1]);
  return absl::OkStatus();
}

int64_t MonotonicMillis() {
  struct timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000 + ts.tv_nsec / 1000000;
}

}  // namespace

absl::StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv,
                                         const CommandOptions& options) {
  if (argv.empty()) return absl::InvalidArgumentError("RunCommand: empty argv");
  // Exec failure is reported through a CLOEXEC pipe: it sees errno when exec
  // fails and EOF when it succeeds.
  UniqueFd out_r, out_w, err_r, err_w, exec_r, exec_w;
  RETURN_IF_ERROR(MakePipe(&out_r, &out_w));
  RETURN_IF_ERROR(MakePipe(&err_r, &err_w));
  RETURN_IF_ERROR(MakePipe(&exec_r, &exec_w));

  std::vector<char*> cargv;
  for (const std::string& a : argv)
    cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);

  const pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) return base::ErrnoStatus("fork", argv[0], errno);
  if (pid == 0) {
    // Own group (a timeout kills it whole), and SIGKILL when the forking
    // thread dies; if it died before prctl, nobody would send it: go now.
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, 0);
    ::dup2(out_w.get(), 1);
    ::dup2(err_w.get(), 2);
    ::execvp(cargv[0], cargv.data());
    int err = errno;
    ssize_t ignored = ::write(exec_w.get(), &err, sizeof(err));
    (void)ignored;
    ::_exit(127);
  }
  ::setpgid(pid, pid);  // also here: no window before the child does it
  out_w.Reset();
  err_w.Reset();
  exec_w.Reset();
  const bool bounded = options.timeout != absl::InfiniteDuration();
  const int64_t deadline =
      bounded ? MonotonicMillis() + absl::ToInt64Milliseconds(options.timeout)
              : std::numeric_limits<int64_t>::max();
  bool timed_out = false;

  CommandResult result;
  int exec_errno = 0;
  {
    ssize_t n;
    do {
      n = ::read(exec_r.get(), &exec_errno, sizeof(exec_errno));
    } while (n < 0 && errno == EINTR);
    if (n != static_cast<ssize_t>(sizeof(exec_errno))) exec_errno = 0;
  }

  struct pollfd pfds[2] = {{out_r.get(), POLLIN, 0}, {err_r.get(), POLLIN, 0}};
  std::string* sinks[2] = {&result.stdout_text, &result.stderr_text};
  int open_count = 2;
  char buf[4096];
  while (open_count > 0) {
    int wait_ms = -1;
    if (bounded) {
      int64_t left = deadline - MonotonicMillis();
      if (left <= 0) {
        // The whole group: a grandchild holding the pipes dies too.
        ::kill(-pid, SIGKILL);
        timed_out = true;
        break;
      }
      wait_ms = static_cast<int>(std::min<int64_t>(left, 60'000));
    }
    int rc = ::poll(pfds, 2, wait_ms);
    if (rc == 0) continue;
    if (rc < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < 2; ++i) {
      if (pfds[i].fd < 0 || pfds[i].revents == 0) continue;
      ssize_t n = ::read(pfds[i].fd, buf, sizeof(buf));
      if (n > 0) {
        sinks[i]->append(buf, static_cast<size_t>(n));
      } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
        pfds[i].fd = -1;
        --open_count;
      }
    }
  }

  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return base::ErrnoStatus("waitpid", argv[0], errno);
  }
  if (exec_errno != 0) return base::ErrnoStatus("execvp", argv[0], exec_errno);
  if (timed_out) {
    return absl::DeadlineExceededError(absl::StrCat(
        absl::StrJoin(argv, " "), " did not finish within ",
        absl::FormatDuration(options.timeout), "; killed its process group"));
  }
  if (WIFEXITED(status)) {
    result.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    result.signal = WTERMSIG(status);
  }
  return result;
}

absl::StatusOr<CommandResult> RunCommandOk(const std::vector<std::string>& argv,
                                           const CommandOptions& options) {
  ASSIGN_OR_RETURN(CommandResult r, RunCommand(argv, options));
  if (r.exit_code != 0) {
    std::string why = r.signal != 0
                          ? absl::StrCat("killed by signal ", r.signal)
                          : absl::StrCat("exited ", r.exit_code);
    absl::string_view err = absl::StripAsciiWhitespace(r.stderr_text);
    if (err.empty()) err = absl::StripAsciiWhitespace(r.stdout_text);
    return absl::InternalError(
        absl::StrCat(absl::StrJoin(argv, " "), " ", why, ": ", err));
  }
  return r;
}

}  // namespace daxlease::sys
