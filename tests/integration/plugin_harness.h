// Test harness around the real daxlease-csi binary: starts and kills it,
// talks to it over its unix socket, and finds (and cleans up) the loop
// devices and mounts it leaves behind.
//
// Used by the integration tests and the CSI benchmark; free of gtest so that
// the benchmark can link it. Nothing here is thread-safe; one test drives one
// PluginProcess.
#ifndef DAXLEASE_TESTS_INTEGRATION_PLUGIN_HARNESS_H_
#define DAXLEASE_TESTS_INTEGRATION_PLUGIN_HARNESS_H_

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"

namespace daxlease::testing {

// The daxlease-csi binary under test: $DAXLEASE_CSI_BINARY if set, else the
// path CMake compiled in. Empty when neither is known.
std::string CsiBinary();

// True when this process may create loop devices (root and
// /dev/loop-control opens read-write).
bool CanUseLoopDevices();

struct PluginOptions {
  std::string binary;
  std::string socket_path;  // absolute; the endpoint is unix://<socket_path>
  std::string node_id = "node-a";
  std::string state_dir;
  std::vector<std::string> allowed_roots;
  int64_t capacity_bytes = 0;
  int max_volumes_per_node = 0;         // 0: the plugin's default
  std::string log_path;                 // the plugin's stderr+stdout, appended
  std::vector<std::string> extra_args;  // more flags, as given
  std::vector<std::string> extra_env;   // "NAME=VALUE" added to its environment
};

// A daxlease-csi child process. The destructor SIGKILLs and reaps it (the
// loop devices and mounts it made stay: see ForceCleanup).
class PluginProcess {
 public:
  // Starts the plugin and waits until Probe answers ready.
  static absl::StatusOr<std::unique_ptr<PluginProcess>> Start(
      const PluginOptions& options,
      absl::Duration ready_timeout = absl::Seconds(30));

  // Starts the plugin without waiting for it (for start-up failure tests).
  static absl::StatusOr<pid_t> Spawn(const PluginOptions& options);

  // Waits up to `timeout` for `pid` to exit; returns its wait status, or
  // DeadlineExceeded if it is still running.
  static absl::StatusOr<int> WaitExit(pid_t pid, absl::Duration timeout);

  PluginProcess(const PluginProcess&) = delete;
  PluginProcess& operator=(const PluginProcess&) = delete;
  ~PluginProcess();

  // SIGKILL and reap. Idempotent.
  absl::Status Kill9();
  // SIGTERM and wait; returns the wait status.
  absl::StatusOr<int> Terminate(absl::Duration timeout = absl::Seconds(30));
  // Kill9 (if running) and start again with the same options; waits for
  // Probe. A new channel is made, so callers must re-fetch channel().
  absl::Status Restart(absl::Duration ready_timeout = absl::Seconds(30));

  // For the next start (Restart): e.g. a crash point set or cleared.
  PluginOptions& mutable_options() { return options_; }
  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  const PluginOptions& options() const { return options_; }
  std::shared_ptr<grpc::Channel> channel() const { return channel_; }

 private:
  explicit PluginProcess(PluginOptions options)
      : options_(std::move(options)) {}
  absl::Status StartAndWait(absl::Duration ready_timeout);

  PluginOptions options_;
  pid_t pid_ = -1;
  std::shared_ptr<grpc::Channel> channel_;
};

// A fresh channel to unix://<socket_path>.
std::shared_ptr<grpc::Channel> Connect(absl::string_view socket_path);

// Polls Probe until it answers with ready unset or true. Fails early when
// `pid` (if > 0) exits.
absl::Status WaitForProbe(absl::string_view socket_path, absl::Duration timeout,
                          pid_t pid = -1);

// Sends a request given as proto3 JSON to a full method name such as
// "/csi.v1.Node/NodeStageVolume" and returns the response as JSON, or the
// gRPC status (codes are gRPC's).
absl::StatusOr<std::string> CallJson(
    const std::shared_ptr<grpc::Channel>& ch, absl::string_view method,
    absl::string_view request_json, absl::Duration timeout = absl::Seconds(60));

// Mount points at or under `root` (from /proc/self/mountinfo), in table order.
std::vector<std::string> MountsUnder(absl::string_view root);

// /dev/loopN devices whose backing file is at or under `dir`: as the kernel
// prints it now, or as the attacher named it (lo_file_name, the first 63
// bytes). The second finds a loop whose backing file was opened through a
// mount that is gone (a container's), which the kernel prints relative to
// that mount's root.
std::vector<std::string> LoopDevicesBackedUnder(absl::string_view dir);

// Best-effort teardown for test cleanup: lazily unmounts everything under
// each root (deepest first) and detaches every loop device backed under
// `state_dir`. Never fails; returns what it had to clean (empty = no leak).
std::vector<std::string> ForceCleanup(const std::vector<std::string>& roots,
                                      absl::string_view state_dir);

// A directory under /var/tmp, removed recursively (after ForceCleanup of
// everything under it) on destruction. While it lives, its owner holds a
// lock (flock of PATH/.owner.lock); a process killed before its destructor
// ran (a test timed out or crashed) leaves the directory, and the next Create
// with the same prefix removes it (the lock free, or no lock file and
// unchanged for 10 minutes), the same way, before making its own.
class TempDir {
 public:
  static absl::StatusOr<std::unique_ptr<TempDir>> Create(
      absl::string_view prefix);
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir();
  const std::string& path() const { return path_; }

 private:
  TempDir(std::string path, int lock_fd)
      : path_(std::move(path)), lock_fd_(lock_fd) {}
  std::string path_;
  int lock_fd_;
};

// Removes the directories /var/tmp/<prefix>* that TempDir::Create would
// (their owner gone); returns their paths.
std::vector<std::string> RemoveAbandonedTempDirs(absl::string_view prefix);

// mkdir -p.
absl::Status MakeDirs(absl::string_view path);

// Size in bytes of the block device behind `path` (a device node or a bind
// mount of one).
absl::StatusOr<int64_t> BlockDeviceSize(absl::string_view path);

// Total bytes (f_blocks * f_frsize) of the filesystem holding `path`.
absl::StatusOr<int64_t> FilesystemBytes(absl::string_view path);

// A deterministic, seed-dependent byte pattern.
std::string Pattern(size_t size, uint32_t seed);

// Writes `data` at `offset` of `path` (creating it unless it is a device)
// and fsyncs.
absl::Status WriteAndSync(absl::string_view path, int64_t offset,
                          absl::string_view data);

// Reads `size` bytes at `offset` of `path`.
absl::StatusOr<std::string> ReadAt(absl::string_view path, int64_t offset,
                                   size_t size);

}  // namespace daxlease::testing

#endif  // DAXLEASE_TESTS_INTEGRATION_PLUGIN_HARNESS_H_
