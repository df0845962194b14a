// daxlease-csi-client against the real plugin, as a shell would use it:
// proto3 JSON on stdout, `code=NAME message="..."` on stderr and the numeric
// gRPC code as exit status on RPC errors, 64 on usage errors.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/csi_fixture.h"

namespace daxlease::testing {
namespace {

using ::testing::HasSubstr;

struct CliResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

std::string ClientBinary() {
#ifdef DAXLEASE_CSI_CLIENT_BINARY
  return DAXLEASE_CSI_CLIENT_BINARY;
#else
  return "";
#endif
}

class CsiClientCliTest : public CsiPluginTest {
 protected:
  CliResult Run(std::vector<std::string> args) {
    CliResult r;
    const std::string out_path = tmp_->path() + "/cli.out";
    const std::string err_path = tmp_->path() + "/cli.err";
    args.insert(args.begin(), {ClientBinary(), "--endpoint",
                               "unix://" + options_.socket_path});
    pid_t pid = ::fork();
    if (pid == 0) {
      int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(out, 1);
      ::dup2(err, 2);
      std::vector<char*> argv;
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.out = ReadAt(out_path, 0, 1 << 20).value_or("");
    r.err = ReadAt(err_path, 0, 1 << 20).value_or("");
    return r;
  }
};

TEST_F(CsiClientCliTest, LifecycleAndErrorsFromTheShell) {
  ASSERT_FALSE(ClientBinary().empty()) << "built without the client path";
  CliResult probe = Run({"probe"});
  EXPECT_EQ(probe.exit_code, 0) << probe.err;
  EXPECT_THAT(probe.out, HasSubstr("{"));

  CliResult info = Run({"get-plugin-info"});
  EXPECT_EQ(info.exit_code, 0) << info.err;
  EXPECT_THAT(info.out, HasSubstr("\"name\": \"dax.daxlease.io\""));

  CliResult created = Run({"create-volume", "--name", "cli-vol",
                           "--capacity-bytes", "32Mi", "--fstype", "ext4"});
  ASSERT_EQ(created.exit_code, 0) << created.err;
  EXPECT_THAT(created.out, HasSubstr("\"volumeId\": \"cli-vol"));
  EXPECT_THAT(created.out, HasSubstr("\"capacityBytes\""));

  CliResult missing = Run({"controller-get-volume", "--volume-id", "nope"});
  EXPECT_EQ(missing.exit_code, 5);  // NOT_FOUND
  EXPECT_THAT(missing.err, HasSubstr("code=NOT_FOUND message=\""));

  CliResult bad = Run({"call", "NodeStageVolume", "--json",
                       R"({"volumeId":"","stagingTargetPath":"/x"})"});
  EXPECT_EQ(bad.exit_code, 3);  // INVALID_ARGUMENT
  EXPECT_THAT(bad.err, HasSubstr("code=INVALID_ARGUMENT"));

  CliResult usage = Run({"create-volume", "--no-such-flag"});
  EXPECT_EQ(usage.exit_code, 64);
  EXPECT_THAT(usage.err, HasSubstr("unknown flag"));

  CliResult listed = Run({"list-volumes", "--max-entries", "1"});
  EXPECT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_THAT(listed.out, HasSubstr("cli-vol"));
  ExpectAlive();
}

}  // namespace
}  // namespace daxlease::testing
