#include "lib/base/log.h"

#include <unistd.h>

#include "gtest/gtest.h"

namespace daxlease::base {
namespace {

TEST(FormatLogLine, PlainAndQuotedValues) {
  EXPECT_EQ(
      FormatLogLine("T", LogLevel::kInfo, "csi.call",
                    {{"method", "Probe"}, {"msg", "a b=\"c\""}}),
      "ts=T level=info event=csi.call method=Probe msg=\"a b=\\\"c\\\"\"");
}

TEST(FormatLogLine, EmptyValueIsQuotedAndNewlinesEscaped) {
  EXPECT_EQ(
      FormatLogLine("T", LogLevel::kError, "e", {{"k", ""}, {"m", "x\ny"}}),
      "ts=T level=error event=e k=\"\" m=\"x\\ny\"");
}

TEST(Log, WritesOneLineAndHonoursLevel) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  SetLogFd(fds[1]);
  SetLogLevel(LogLevel::kWarn);
  LogInfo("dropped");
  LogWarn("kept", {{"k", "v"}});
  SetLogFd(2);
  SetLogLevel(LogLevel::kInfo);
  close(fds[1]);
  char buf[256] = {};
  ssize_t n = read(fds[0], buf, sizeof(buf) - 1);
  close(fds[0]);
  ASSERT_GT(n, 0);
  std::string out(buf, static_cast<size_t>(n));
  EXPECT_EQ(out.find("dropped"), std::string::npos);
  EXPECT_NE(out.find("level=warn event=kept k=v\n"), std::string::npos);
}

}  // namespace
}  // namespace daxlease::base
