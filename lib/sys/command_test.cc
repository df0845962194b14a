#include "lib/sys/command.h"

#include "absl/strings/match.h"
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

}  // namespace
}  // namespace daxlease::sys
