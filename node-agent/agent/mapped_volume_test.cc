#include "node-agent/agent/mapped_volume.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "gtest/gtest.h"

namespace daxlease::agent {
namespace {

class MappedVolumeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/mapped_volume_test.XXXXXX";
    dir_ = mkdtemp(tmpl);
    path_ = dir_ + "/data";
  }
  void TearDown() override {
    std::string cmd = "rm -rf " + dir_;
    ASSERT_EQ(system(cmd.c_str()), 0);
  }
  std::string dir_, path_;
};

TEST_F(MappedVolumeTest, CreatesMapsAndPersists) {
  auto v = MappedVolume::Map(path_, 1 << 20, 1 << 20);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ((*v)->size(), 1u << 20);
  std::memcpy((*v)->base() + 4096, "abc", 3);
  ASSERT_TRUE((*v)->Persist(4096, 3).ok());
  int fd = open(path_.c_str(), O_RDONLY);
  char buf[3];
  ASSERT_EQ(pread(fd, buf, 3, 4096), 3);
  close(fd);
  EXPECT_EQ(std::string(buf, 3), "abc");
  // Asking for more than the file holds is refused.
  EXPECT_FALSE(MappedVolume::Map(path_, 2 << 20).ok());
}

// Another process opening the file breaks the agent's lease: the signal
// arrives with the lease fd, and the opener proceeds once the lease is given
// up.
TEST_F(MappedVolumeTest, AnotherOpenBreaksTheLease) {
  const int sig = SIGRTMIN + 1;
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, sig);
  ASSERT_EQ(pthread_sigmask(SIG_BLOCK, &set, nullptr), 0);
  auto v = MappedVolume::Map(path_, 1 << 20, 1 << 20);
  ASSERT_TRUE(v.ok()) << v.status();
  absl::Status taken = (*v)->TakeLease(sig);
  ASSERT_TRUE(taken.ok()) << taken;
  EXPECT_TRUE((*v)->lease_held());

  pid_t child = fork();
  if (child == 0) {
    int fd = open(path_.c_str(), O_RDWR);  // blocks until the lease goes
    _exit(fd >= 0 ? 0 : 1);
  }
  siginfo_t info;
  timespec ts{10, 0};
  ASSERT_EQ(sigtimedwait(&set, &info, &ts), sig);
  EXPECT_EQ(info.si_fd, (*v)->fd());
  ASSERT_TRUE((*v)->DropLease().ok());
  int st = 0;
  ASSERT_EQ(waitpid(child, &st, 0), child);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
}

}  // namespace
}  // namespace daxlease::agent
