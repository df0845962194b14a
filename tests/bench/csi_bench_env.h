// What the CSI benchmarks (csi_lifecycle_bench, snapshot_bench) share: the
// real daxlease-csi (file backend) started over a fresh directory, the
// median of a sample, a command run to completion, an fsync.
//
// Not thread-safe; one benchmark drives one CsiBenchEnv.
#ifndef DAXLEASE_TESTS_BENCH_CSI_BENCH_ENV_H_
#define DAXLEASE_TESTS_BENCH_CSI_BENCH_ENV_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "tests/integration/plugin_harness.h"

namespace daxlease::bench {

// The median: the middle value, or the mean of the two middle ones for an
// even count; 0 for none.
double Median(std::vector<double> v);

// Runs `argv` (looked up in PATH) to completion with its stdout discarded;
// Internal unless it exits 0.
absl::Status Run(const std::vector<std::string>& argv);

// fsync(2) of a file or a directory.
absl::Status Fsync(const std::string& path);

// A daxlease-csi running over `base`:
//   base/csi.sock, base/state (--state-dir), base/kubelet (the allowed
//   root, created), base/plugin.log.
// Members are destroyed in reverse order: the plugin is killed before the
// directory is cleaned up (mounts and loops under it included) and removed.
struct CsiBenchEnv {
  std::unique_ptr<testing::TempDir> tmp;
  std::string base;  // tmp's path
  std::string root;  // base/kubelet
  testing::PluginOptions options;
  std::unique_ptr<testing::PluginProcess> plugin;
};

// Starts one for the benchmark `name`, in a directory named after
// `temp_prefix` under /var/tmp. nullopt, after printing
// "<name>: skipped: <why>", when this machine cannot run it (not root, no
// loop devices, daxlease-csi not built); an error when it could but the
// start failed.
// `extra_args` go to daxlease-csi as they are.
absl::StatusOr<std::optional<CsiBenchEnv>> StartCsiBenchEnv(
    absl::string_view name, absl::string_view temp_prefix,
    std::vector<std::string> extra_args = {});

}  // namespace daxlease::bench

#endif  // DAXLEASE_TESTS_BENCH_CSI_BENCH_ENV_H_
