// gtest fixture shared by the CSI integration tests: a temp directory with a
// state dir and an allowed root, a running daxlease-csi on a socket in it,
// typed gRPC calls, and a TearDown that always unmounts and detaches what
// was left (and reports it as a leak).
#ifndef DAXLEASE_TESTS_INTEGRATION_CSI_FIXTURE_H_
#define DAXLEASE_TESTS_INTEGRATION_CSI_FIXTURE_H_

#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "proto/csi.grpc.pb.h"
#include "proto/csi.pb.h"
#include "tests/integration/plugin_harness.h"
#include "tests/testing/prereq.h"

namespace daxlease::testing {

inline constexpr int64_t kMiB = int64_t{1} << 20;
inline constexpr char kNodeId[] = "it-node-1";

class CsiPluginTest : public ::testing::Test {
 protected:
  void SetUp() override {
    DAXLEASE_REQUIRE(CanUseLoopDevices(),
                     "needs root and a usable /dev/loop-control");
    DAXLEASE_REQUIRE(
        !CsiBinary().empty() && ::access(CsiBinary().c_str(), X_OK) == 0,
        "daxlease-csi binary not built: " + CsiBinary());
    auto tmp = TempDir::Create("daxlease-it-");
    ASSERT_TRUE(tmp.ok()) << tmp.status();
    tmp_ = std::move(*tmp);
    state_dir_ = tmp_->path() + "/state";
    root_ = tmp_->path() + "/kubelet";
    ASSERT_TRUE(MakeDirs(state_dir_).ok());
    ASSERT_TRUE(MakeDirs(root_).ok());
    options_.binary = CsiBinary();
    options_.socket_path = tmp_->path() + "/csi.sock";
    options_.node_id = kNodeId;
    options_.state_dir = state_dir_;
    options_.allowed_roots = {root_};
    options_.log_path = tmp_->path() + "/plugin.log";
    options_.capacity_bytes = CapacityBytes();
    options_.extra_args = ExtraArgs();
    StartPlugin();
  }

  // Capacity the plugin is started with (0 = the filesystem's free space).
  virtual int64_t CapacityBytes() const { return 0; }
  // More flags the plugin is started with.
  virtual std::vector<std::string> ExtraArgs() const { return {}; }

  void StartPlugin() {
    auto p = PluginProcess::Start(options_);
    ASSERT_TRUE(p.ok()) << p.status() << "\n" << PluginLog();
    plugin_ = std::move(*p);
  }

  void TearDown() override {
    if (plugin_ != nullptr && plugin_->running()) {
      // A clean stop must exit 0 (under ASan this is also where
      // LeakSanitizer reports, with a non-zero exit).
      absl::StatusOr<int> st = plugin_->Terminate();
      if (st.ok()) {
        EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 0)
            << "plugin stopped with wait status " << *st << "\n"
            << PluginLog();
      } else {
        ADD_FAILURE() << "plugin did not stop on SIGTERM: " << st.status();
      }
    }
    if (plugin_ != nullptr) {
      (void)plugin_->Kill9();
      plugin_.reset();
    }
    if (tmp_ != nullptr) {
      std::vector<std::string> leaked =
          ForceCleanup({tmp_->path()}, state_dir_);
      EXPECT_TRUE(leaked.empty())
          << "left behind: " << absl::StrJoin(leaked, ", ");
      if (HasFailure()) std::cerr << "plugin log:\n" << PluginLog() << "\n";
      tmp_.reset();
    }
  }

  std::string PluginLog() const {
    auto log = ReadAt(options_.log_path, 0, 64 * 1024);
    return log.ok() ? *log : "(no log)";
  }

  // kill -9 the plugin and start it again on the same state dir and socket.
  void CrashAndRestart() {
    ASSERT_NE(plugin_, nullptr);
    absl::Status s = plugin_->Restart();
    ASSERT_TRUE(s.ok()) << s << "\n" << PluginLog();
  }

  void ExpectNoLeaks() {
    EXPECT_TRUE(MountsUnder(tmp_->path()).empty())
        << absl::StrJoin(MountsUnder(tmp_->path()), ", ");
    EXPECT_TRUE(LoopDevicesBackedUnder(state_dir_).empty())
        << absl::StrJoin(LoopDevicesBackedUnder(state_dir_), ", ");
  }

  // Asserts the plugin is alive and answers Probe.
  void ExpectAlive() {
    ASSERT_NE(plugin_, nullptr);
    int status;
    ASSERT_EQ(::waitpid(plugin_->pid(), &status, WNOHANG), 0)
        << "plugin died, wait status " << status << "\n"
        << PluginLog();
    csi::v1::ProbeResponse resp;
    grpc::Status s =
        Call(&csi::v1::Identity::Stub::Probe, csi::v1::ProbeRequest(), &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }

  // One typed unary call on a fresh stub over the plugin's channel.
  template <typename Stub, typename Req, typename Resp>
  grpc::Status Call(grpc::Status (Stub::*fn)(grpc::ClientContext*, const Req&,
                                             Resp*),
                    const Req& req, Resp* resp) {
    Stub stub(plugin_->channel());
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(120));
    return (stub.*fn)(&ctx, req, resp);
  }

  // Issues the call twice; the second (a retry) must give the same code and
  // the same response.
  template <typename Stub, typename Req, typename Resp>
  grpc::Status Twice(grpc::Status (Stub::*fn)(grpc::ClientContext*, const Req&,
                                              Resp*),
                     const Req& req, Resp* resp) {
    grpc::Status first = Call(fn, req, resp);
    Resp again;
    grpc::Status second = Call(fn, req, &again);
    EXPECT_EQ(first.error_code(), second.error_code())
        << req.GetDescriptor()->name() << ": first " << first.error_message()
        << ", retry " << second.error_message();
    if (first.ok() && second.ok()) {
      EXPECT_TRUE(
          google::protobuf::util::MessageDifferencer::Equals(*resp, again))
          << req.GetDescriptor()->name() << ": retry answered differently:\n"
          << resp->DebugString() << "\nvs\n"
          << again.DebugString();
    }
    return first;
  }

  static csi::v1::VolumeCapability MountCap(const std::string& fstype) {
    csi::v1::VolumeCapability cap;
    cap.mutable_mount()->set_fs_type(fstype);
    cap.mutable_access_mode()->set_mode(
        csi::v1::VolumeCapability::AccessMode::SINGLE_NODE_WRITER);
    return cap;
  }
  static csi::v1::VolumeCapability BlockCap() {
    csi::v1::VolumeCapability cap;
    cap.mutable_block();
    cap.mutable_access_mode()->set_mode(
        csi::v1::VolumeCapability::AccessMode::SINGLE_NODE_WRITER);
    return cap;
  }

  std::unique_ptr<TempDir> tmp_;
  std::string state_dir_;
  std::string root_;
  PluginOptions options_;
  std::unique_ptr<PluginProcess> plugin_;
};

}  // namespace daxlease::testing

#endif  // DAXLEASE_TESTS_INTEGRATION_CSI_FIXTURE_H_
