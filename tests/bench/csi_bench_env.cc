#include "tests/bench/csi_bench_env.h"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "lib/base/status.h"

namespace daxlease::bench {

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

absl::Status Run(const std::vector<std::string>& argv) {
  pid_t pid = ::fork();
  if (pid < 0) return base::ErrnoStatus("fork", argv[0], errno);
  if (pid == 0) {
    std::vector<char*> args;
    for (const std::string& a : argv) {
      args.push_back(const_cast<char*>(a.c_str()));
    }
    args.push_back(nullptr);
    int devnull = ::open("/dev/null", O_WRONLY);
    if (devnull >= 0) ::dup2(devnull, 1);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  int status;
  if (::waitpid(pid, &status, 0) != pid) {
    return base::ErrnoStatus("waitpid", argv[0], errno);
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::InternalError(
        absl::StrCat(argv[0], " failed, wait status ", status));
  }
  return absl::OkStatus();
}

absl::Status Fsync(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return base::ErrnoStatus("open", path, errno);
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return base::ErrnoStatus("fsync", path, err);
  return absl::OkStatus();
}

absl::StatusOr<std::optional<CsiBenchEnv>> StartCsiBenchEnv(
    absl::string_view name, absl::string_view temp_prefix,
    std::vector<std::string> extra_args) {
  const std::string n(name);
  if (!testing::CanUseLoopDevices()) {
    std::printf(
        "%s: skipped: needs root and /dev/loop-control (run it with sudo)\n",
        n.c_str());
    return std::nullopt;
  }
  const std::string binary = testing::CsiBinary();
  if (binary.empty() || ::access(binary.c_str(), X_OK) != 0) {
    std::printf("%s: skipped: daxlease-csi not built (%s)\n", n.c_str(),
                binary.c_str());
    return std::nullopt;
  }
  CsiBenchEnv env;
  ASSIGN_OR_RETURN(env.tmp, testing::TempDir::Create(temp_prefix));
  env.base = env.tmp->path();
  env.root = env.base + "/kubelet";
  testing::PluginOptions& o = env.options;
  o.binary = binary;
  o.socket_path = env.base + "/csi.sock";
  o.state_dir = env.base + "/state";
  o.allowed_roots = {env.root};
  o.log_path = env.base + "/plugin.log";
  o.extra_args = std::move(extra_args);
  for (const std::string& d : {o.state_dir, env.root}) {
    RETURN_IF_ERROR(testing::MakeDirs(d));
  }
  absl::StatusOr<std::unique_ptr<testing::PluginProcess>> plugin =
      testing::PluginProcess::Start(o);
  if (!plugin.ok()) {
    return absl::Status(
        plugin.status().code(),
        absl::StrCat("starting daxlease-csi: ", plugin.status().message()));
  }
  env.plugin = *std::move(plugin);
  return std::optional<CsiBenchEnv>(std::move(env));
}

}  // namespace daxlease::bench
