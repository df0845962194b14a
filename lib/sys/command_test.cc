#include "lib/sys/command.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace daxlease::sys {
namespace {

TEST(CommandTest, CapturesStdoutAndStderrSeparately) {
  auto r = RunCommand({"sh", "-c", "echo out; echo err >&2; exit 3"});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 3);
  EXPECT_EQ(r->stdout_text, "out\n");
  EXPECT_EQ(r->stderr_text, "err\n");
}

TEST(CommandTest, ArgumentsAreNotInterpretedByAShell) {
  auto r = RunCommand({"echo", "$HOME; rm -rf /"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->stdout_text, "$HOME; rm -rf /\n");
}

TEST(CommandTest, MissingProgramIsNotFound) {
  auto r = RunCommand({"daxlease-no-such-program"});
  EXPECT_TRUE(absl::IsNotFound(r.status())) << r.status();
}

TEST(CommandTest, RunCommandOkPutsStderrInTheStatus) {
  auto r = RunCommandOk({"sh", "-c", "echo broken device >&2; exit 1"});
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(absl::StrContains(r.status().message(), "broken device"))
      << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "exited 1"));
  EXPECT_TRUE(RunCommandOk({"true"}).ok());
}

TEST(CommandTest, LargeOutputDoesNotDeadlock) {
  auto r = RunCommand(
      {"sh", "-c", "head -c 1000000 /dev/zero; head -c 1000000 /dev/zero >&2"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->stdout_text.size(), 1000000u);
  EXPECT_EQ(r->stderr_text.size(), 1000000u);
}

// A scratch file for a command to leave a pid in.
class PidFile {
 public:
  PidFile() {
    char tmpl[] = "/tmp/daxlease-cmd-test-XXXXXX";
    int fd = mkstemp(tmpl);
    EXPECT_GE(fd, 0);
    ::close(fd);
    path_ = tmpl;
  }
  ~PidFile() { ::unlink(path_.c_str()); }
  const std::string& path() const { return path_; }
  // The pid written to the file, waiting up to 10 s for it to appear.
  pid_t Await() const {
    absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (absl::Now() < deadline) {
      if (pid_t pid = Written(); pid > 0) return pid;
      absl::SleepFor(absl::Milliseconds(10));
    }
    return -1;
  }
  // The pid in the file now, or -1 (nothing complete written yet).
  pid_t Written() const {
    std::ifstream in(path_);
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string text = ss.str();
    absl::string_view line = text;
    // echo writes the line at once; without its newline it is not complete.
    if (!absl::ConsumeSuffix(&line, "\n")) return -1;
    int pid = 0;
    return absl::SimpleAtoi(line, &pid) && pid > 0 ? pid : -1;
  }

 private:
  std::string path_;
};

// Whether `pid` has terminated (gone, or a zombie nobody reaped yet), waiting
// up to 10 s.
bool Terminates(pid_t pid) {
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (absl::Now() < deadline) {
    std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
    std::string stat((std::istreambuf_iterator<char>(in)),
                     std::istreambuf_iterator<char>());
    size_t paren = stat.rfind(')');
    if (stat.empty() || paren == std::string::npos) return true;
    if (paren + 2 < stat.size() &&
        (stat[paren + 2] == 'Z' || stat[paren + 2] == 'X')) {
      return true;
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  return false;
}

TEST(CommandTest, TimeoutKillsTheWholeProcessGroup) {
  // The grandchild keeps stdout open: without a group kill the call would
  // wait for it forever. The timeout may fire before sh has started it and
  // written its pid (a loaded machine): then there is nothing to check, and
  // the attempt is made again with twice the time. Once the call returns
  // the group is dead, so the pid file holds all it ever will.
  pid_t pid = -1;
  for (absl::Duration timeout = absl::Milliseconds(300);
       pid <= 0 && timeout <= absl::Seconds(20); timeout *= 2) {
    PidFile grandchild;
    CommandOptions opts;
    opts.timeout = timeout;
    absl::Time start = absl::Now();
    auto r = RunCommand(
        {"sh", "-c",
         absl::StrCat("sleep 1000 & echo $! > ", grandchild.path(), "; wait")},
        opts);
    EXPECT_LT(absl::Now() - start, timeout + absl::Seconds(20));
    EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded)
        << r.status();
    EXPECT_TRUE(absl::StrContains(r.status().message(), "sh -c")) << r.status();
    pid = grandchild.Written();
  }
  ASSERT_GT(pid, 0) << "sh never wrote the grandchild's pid in time";
  EXPECT_TRUE(Terminates(pid)) << "the grandchild " << pid << " survived";
  ::kill(pid, SIGKILL);  // never leave it behind, whatever the outcome
}

TEST(CommandTest, ACommandRunsInItsOwnProcessGroup) {
  auto r = RunCommand({"sh", "-c", "echo $$; cut -d' ' -f5 /proc/$$/stat"});
  ASSERT_TRUE(r.ok()) << r.status();
  std::vector<std::string> lines =
      absl::StrSplit(r->stdout_text, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 2u) << r->stdout_text;
  EXPECT_EQ(lines[0], lines[1]) << "pid vs process group";
  EXPECT_NE(lines[1], absl::StrCat(::getpgrp()));
}

// kill -9 of the process that runs a command (the plugin) takes the
// command with it: no mkfs outlives the plugin that started it.
TEST(CommandTest, ACommandDiesWithThePlugin) {
  PidFile cmd;
  pid_t plugin = ::fork();
  ASSERT_GE(plugin, 0);
  if (plugin == 0) {
    (void)RunCommand(
        {"sh", "-c",
         absl::StrCat("echo $$ > ", cmd.path(), "; exec sleep 1000")});
    ::_exit(0);
  }
  pid_t pid = cmd.Await();
  ASSERT_GT(pid, 0);
  ASSERT_EQ(::kill(plugin, SIGKILL), 0);
  int status;
  ASSERT_EQ(::waitpid(plugin, &status, 0), plugin);
  EXPECT_TRUE(Terminates(pid))
      << "the command " << pid << " outlived the plugin";
  ::kill(pid, SIGKILL);
}

TEST(CommandTest, ACommandWithinItsTimeoutIsUntouched) {
  CommandOptions opts;
  opts.timeout = absl::Seconds(30);
  auto r = RunCommand({"sh", "-c", "echo ok"}, opts);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stdout_text, "ok\n");
  auto ok = RunCommandOk({"sh", "-c", "sleep 5"},
                         CommandOptions{.timeout = absl::Milliseconds(100)});
  EXPECT_EQ(ok.status().code(), absl::StatusCode::kDeadlineExceeded);
}

}  // namespace
}  // namespace daxlease::sys
