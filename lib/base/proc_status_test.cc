#include "lib/base/proc_status.h"

#include <unistd.h>

#include <cstring>
#include <memory>

#include "gtest/gtest.h"

namespace daxlease::base {
namespace {

constexpr char kStatus[] =
    "Name:\tdaxlease-opera\n"
    "VmPeak:\t  812344 kB\n"
    "VmHWM:\t   97112 kB\n"
    "VmRSS:\t   61020 kB\n"
    "RssAnon:\t   52000 kB\n"
    "Threads:\t42\n";

TEST(ProcStatusTest, ParsesTheNamedFieldInKiB) {
  EXPECT_EQ(ParseProcStatusKiB(kStatus, "VmHWM").value(), 97112);
  EXPECT_EQ(ParseProcStatusKiB(kStatus, "VmRSS").value(), 61020);
}

TEST(ProcStatusTest, AFieldIsMatchedByItsWholeName) {
  // "Vm" is a prefix of every Vm* line; "RssAnon" must not match "Rss".
  EXPECT_TRUE(absl::IsNotFound(ParseProcStatusKiB(kStatus, "Vm").status()));
  EXPECT_TRUE(absl::IsNotFound(ParseProcStatusKiB(kStatus, "Rss").status()));
}

TEST(ProcStatusTest, AMissingFieldIsNotFound) {
  // A kernel thread's status has no Vm* lines.
  absl::StatusOr<int64_t> v = ParseProcStatusKiB("Name:\tkthreadd\n", "VmHWM");
  EXPECT_TRUE(absl::IsNotFound(v.status())) << v.status();
  EXPECT_NE(v.status().message().find("VmHWM"), absl::string_view::npos);
}

TEST(ProcStatusTest, AFieldThatIsNotKiBIsAnError) {
  EXPECT_EQ(ParseProcStatusKiB(kStatus, "Threads").status().code(),
            absl::StatusCode::kInternal);
  EXPECT_EQ(ParseProcStatusKiB("VmHWM:\t12 MB\n", "VmHWM").status().code(),
            absl::StatusCode::kInternal);
  EXPECT_EQ(ParseProcStatusKiB("VmHWM:\t kB\n", "VmHWM").status().code(),
            absl::StatusCode::kInternal);
}

TEST(ProcStatusTest, ReadsThisProcessAndSeesItsPeakGrow) {
  absl::StatusOr<ProcMemory> before = ReadProcMemory();
  ASSERT_TRUE(before.ok()) << before.status();
  EXPECT_GT(before->rss_kib, 0);
  EXPECT_GE(before->rss_peak_kib, before->rss_kib);
  // Touch 64 MiB more: the resident set and its peak must follow.
  const size_t bytes = 64 << 20;
  std::unique_ptr<char[]> block(new char[bytes]);
  std::memset(block.get(), 1, bytes);
  absl::StatusOr<ProcMemory> after = ReadProcMemory(::getpid());
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_GE(after->rss_kib, before->rss_kib + (48 << 10));
  EXPECT_GE(after->rss_peak_kib, after->rss_kib);
  EXPECT_EQ(block[bytes - 1], 1);
}

TEST(ProcStatusTest, AProcessThatIsGoneIsNotFound) {
  // Pid numbers stop well below this (pid_max is at most 2^22).
  absl::StatusOr<ProcMemory> m = ReadProcMemory(1 << 30);
  EXPECT_TRUE(absl::IsNotFound(m.status())) << m.status();
}

}  // namespace
}  // namespace daxlease::base
