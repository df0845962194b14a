// The harness's TempDir: a directory left by a test process that was killed
// before its destructor ran (a ctest timeout, a crash) is removed by the
// next TempDir of the same prefix; a live owner's never is.
#include "tests/integration/plugin_harness.h"

#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <ctime>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace daxlease::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

bool Exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

TEST(TempDirTest, ADirectoryOfAKilledOwnerIsRemovedByTheNext) {
  const std::string prefix =
      absl::StrCat("daxlease-tempdir-test-", ::getpid(), "-");
  auto live = TempDir::Create(prefix);
  ASSERT_TRUE(live.ok()) << live.status();
  std::ofstream((*live)->path() + "/data") << "x";

  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(fds[0]);
    auto t = TempDir::Create(prefix);
    if (!t.ok()) ::_exit(1);
    std::ofstream((*t)->path() + "/data") << "x";
    const std::string& p = (*t)->path();
    if (::write(fds[1], p.data(), p.size()) != static_cast<ssize_t>(p.size())) {
      ::_exit(1);
    }
    ::raise(SIGKILL);  // no destructor runs, as under a timeout
    ::_exit(1);
  }
  ::close(fds[1]);
  char buf[256];
  const ssize_t n = ::read(fds[0], buf, sizeof(buf));
  ::close(fds[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
  ASSERT_GT(n, 0);
  const std::string left(buf, n);
  ASSERT_TRUE(Exists(left + "/data")) << left;

  // A directory of the name without the lock file (made before TempDir took
  // one): kept while recent, removed once ten minutes old.
  const std::string old_style = absl::StrCat("/var/tmp/", prefix, "oldsty");
  ASSERT_EQ(::mkdir(old_style.c_str(), 0700), 0);

  EXPECT_THAT(RemoveAbandonedTempDirs(prefix), ElementsAre(left));
  EXPECT_FALSE(Exists(left));
  EXPECT_TRUE(Exists((*live)->path() + "/data"));
  EXPECT_TRUE(Exists(old_style));
  struct timeval past[2] = {{::time(nullptr) - 3600, 0},
                            {::time(nullptr) - 3600, 0}};
  ASSERT_EQ(::utimes(old_style.c_str(), past), 0);
  EXPECT_THAT(RemoveAbandonedTempDirs(prefix), ElementsAre(old_style));
  EXPECT_FALSE(Exists(old_style));
  EXPECT_THAT(RemoveAbandonedTempDirs(prefix), IsEmpty());
  EXPECT_TRUE(Exists((*live)->path() + "/data"));
}

}  // namespace
}  // namespace daxlease::testing
