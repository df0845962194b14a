#include "node-agent/agent/mapped_volume.h"

#include <fcntl.h>
#include <linux/types.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "absl/cleanup/cleanup.h"
#include "gtest/gtest.h"
#include "lib/sys/command.h"
#include "tests/testing/prereq.h"

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

// ext4's "going down" ioctl (linux/ext4.h, not in every libc's headers):
// the file system refuses every write from then on, as after a disk error.
#ifndef EXT4_IOC_SHUTDOWN
#define EXT4_IOC_SHUTDOWN _IOR('X', 125, __u32)
#endif
constexpr __u32 kShutdownNoLogFlush = 2;  // EXT4_GOING_FLAGS_NOLOGFLUSH

// Write-back that cannot start (the file system is shut down, so the disk
// takes nothing) is an error the caller sees, as is the Persist after it:
// bytes copied into the mapping are not written.
TEST_F(MappedVolumeTest, WritebackThatCannotStartIsAnError) {
  DAXLEASE_REQUIRE(testing::IsRoot(), "needs root for the loop mount");
  const std::string img = dir_ + "/img", mnt = dir_ + "/mnt";
  ASSERT_EQ(mkdir(mnt.c_str(), 0755), 0);
  ASSERT_TRUE(sys::RunCommandOk({"truncate", "-s", "64M", img}).ok());
  ASSERT_TRUE(sys::RunCommandOk({"mkfs.ext4", "-q", "-F", img}).ok());
  ASSERT_TRUE(sys::RunCommandOk({"mount", "-o", "loop", img, mnt}).ok());
  absl::Cleanup unmount = [&] { umount2(mnt.c_str(), MNT_DETACH); };
  {
    auto v = MappedVolume::Map(mnt + "/data", 1 << 20, 1 << 20);
    ASSERT_TRUE(v.ok()) << v.status();
    std::memset((*v)->base(), 7, 1 << 20);
    absl::Status started = (*v)->StartWriteback(0, 1 << 20);
    EXPECT_TRUE(started.ok()) << started;
    std::memset((*v)->base(), 8, 1 << 20);
    __u32 flags = kShutdownNoLogFlush;
    ASSERT_EQ(ioctl((*v)->fd(), EXT4_IOC_SHUTDOWN, &flags), 0)
        << std::strerror(errno);
    started = (*v)->StartWriteback(0, 1 << 20);
    EXPECT_FALSE(started.ok());
    EXPECT_NE(started.message().find("sync_file_range"), std::string::npos)
        << started;
    EXPECT_NE(started.message().find(mnt + "/data"), std::string::npos)
        << started;
    EXPECT_FALSE((*v)->Persist(0, 1 << 20).ok());
  }
}

}  // namespace
}  // namespace daxlease::agent
