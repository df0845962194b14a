// The plugin as a process: its socket (a live instance keeps it, a stale
// file is replaced), graceful shutdown, identity and capabilities, node
// info, capacity and ListVolumes pagination.
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/csi_fixture.h"

namespace daxlease::testing {
namespace {

using csi::v1::Controller;
using csi::v1::Identity;
using csi::v1::Node;

class CsiServerTest : public CsiPluginTest {
 protected:
  int64_t CapacityBytes() const override { return int64_t{1} << 30; }
};

TEST_F(CsiServerTest, SecondInstanceOnALiveSocketRefusesToStart) {
  PluginOptions second = options_;
  second.state_dir = tmp_->path() + "/state2";
  second.log_path = tmp_->path() + "/second.log";
  ASSERT_TRUE(MakeDirs(second.state_dir).ok());
  auto pid = PluginProcess::Spawn(second);
  ASSERT_TRUE(pid.ok()) << pid.status();
  auto status = PluginProcess::WaitExit(*pid, absl::Seconds(20));
  if (!status.ok()) {
    ::kill(*pid, SIGKILL);
    (void)PluginProcess::WaitExit(*pid, absl::Seconds(5));
  }
  ASSERT_TRUE(status.ok()) << "second instance did not exit: "
                           << status.status();
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) != 0)
      << "wait status " << *status;
  auto log = ReadAt(second.log_path, 0, 16 * 1024);
  ASSERT_TRUE(log.ok());
  EXPECT_FALSE(log->empty()) << "refusal without a message";
  // The first instance keeps serving on its socket.
  ExpectAlive();
}

// One plugin per state directory: a second one on the same directory (on
// its own socket, so the socket check cannot catch it) exits with an error
// naming the lock, and the first keeps serving.
TEST_F(CsiServerTest, SecondInstanceOnTheSameStateDirRefusesToStart) {
  PluginOptions second = options_;
  second.socket_path = tmp_->path() + "/second.sock";
  second.log_path = tmp_->path() + "/second.log";
  auto pid = PluginProcess::Spawn(second);
  ASSERT_TRUE(pid.ok()) << pid.status();
  auto status = PluginProcess::WaitExit(*pid, absl::Seconds(20));
  if (!status.ok()) {
    ::kill(*pid, SIGKILL);
    (void)PluginProcess::WaitExit(*pid, absl::Seconds(5));
  }
  ASSERT_TRUE(status.ok()) << "second instance on the same state dir did "
                              "not exit: "
                           << status.status();
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) != 0)
      << "wait status " << *status;
  auto log = ReadAt(second.log_path, 0, 16 * 1024);
  ASSERT_TRUE(log.ok());
  EXPECT_THAT(*log, ::testing::HasSubstr("LOCK")) << *log;
  EXPECT_THAT(*log, ::testing::HasSubstr(state_dir_)) << *log;
  ExpectAlive();

  // The lock goes with the process: after kill -9 a new plugin starts.
  CrashAndRestart();
  ExpectAlive();
}

// --agent-socket's directory is bound into pods (every shared volume's
// published directory): a directory holding anything else refuses the
// start, naming what is there.
TEST_F(CsiServerTest, AgentSocketDirectoryWithOtherEntriesRefusesToStart) {
  PluginOptions second = options_;
  second.socket_path = tmp_->path() + "/second.sock";
  second.state_dir = tmp_->path() + "/state2";
  second.log_path = tmp_->path() + "/second.log";
  ASSERT_TRUE(MakeDirs(second.state_dir).ok());
  ASSERT_TRUE(MakeDirs(tmp_->path() + "/run").ok());
  std::ofstream(tmp_->path() + "/run/secret") << "x";
  second.extra_args = {"--agent-socket=" + tmp_->path() + "/run/agent.sock"};
  auto pid = PluginProcess::Spawn(second);
  ASSERT_TRUE(pid.ok()) << pid.status();
  auto status = PluginProcess::WaitExit(*pid, absl::Seconds(20));
  if (!status.ok()) {
    ::kill(*pid, SIGKILL);
    (void)PluginProcess::WaitExit(*pid, absl::Seconds(5));
  }
  ASSERT_TRUE(status.ok()) << "did not exit: " << status.status();
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) != 0)
      << "wait status " << *status;
  auto log = ReadAt(second.log_path, 0, 16 * 1024);
  ASSERT_TRUE(log.ok());
  EXPECT_THAT(*log, ::testing::HasSubstr("also holds secret")) << *log;
}

// The socket gets 0660 whatever the umask it was started with.
TEST_F(CsiServerTest, SocketModeIsExplicit) {
  ASSERT_TRUE(plugin_->Kill9().ok());
  mode_t old = ::umask(0);
  absl::Status restarted = plugin_->Restart();
  ::umask(old);
  ASSERT_TRUE(restarted.ok()) << restarted << "\n" << PluginLog();
  struct stat st;
  ASSERT_EQ(::lstat(options_.socket_path.c_str(), &st), 0);
  ASSERT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0660u)
      << "socket mode " << std::oct << (st.st_mode & 07777);
}

TEST_F(CsiServerTest, StaleSocketFileIsReplaced) {
  ASSERT_TRUE(plugin_->Kill9().ok());
  // Leave a socket file nobody listens on, as a crashed plugin would.
  ::unlink(options_.socket_path.c_str());
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s",
                options_.socket_path.c_str());
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ::close(fd);
  ASSERT_EQ(::access(options_.socket_path.c_str(), F_OK), 0);
  StartPlugin();
  ExpectAlive();
}

TEST_F(CsiServerTest, SigtermExitsZero) {
  auto status = plugin_->Terminate(absl::Seconds(20));
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0)
      << "wait status " << *status;
  plugin_.reset();
}

// With --agent-socket the plugin makes its agent client (and gRPC's
// threads) early in its start: SIGTERM must still reach the thread that
// stops the server gracefully. A thread that left it unblocked took it
// instead: the process died of the signal, and in a container, where the
// plugin is its namespace's init and a signal without a handler is dropped,
// it ignored SIGTERM until the kubelet's SIGKILL 30 s later.
TEST_F(CsiServerTest, SigtermStopsGracefullyWithAnAgentSocket) {
  ASSERT_TRUE(plugin_->Kill9().ok());
  plugin_.reset();
  PluginOptions with_agent = options_;
  ASSERT_TRUE(MakeDirs(tmp_->path() + "/agent-run").ok());
  with_agent.extra_args.push_back("--agent-socket=" + tmp_->path() +
                                  "/agent-run/agent.sock");
  auto plugin = PluginProcess::Start(with_agent);
  ASSERT_TRUE(plugin.ok()) << plugin.status();
  auto status = (*plugin)->Terminate(absl::Seconds(20));
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0)
      << "wait status " << *status
      << (WIFSIGNALED(*status)
              ? absl::StrCat(" (killed by signal ", WTERMSIG(*status), ")")
              : "");
  auto log = ReadAt(options_.log_path, 0, 64 * 1024);
  ASSERT_TRUE(log.ok());
  EXPECT_THAT(*log, ::testing::HasSubstr("event=csi.stopped")) << *log;
}

TEST_F(CsiServerTest, IdentityAndCapabilities) {
  csi::v1::GetPluginInfoResponse info;
  ASSERT_TRUE(Call(&Identity::Stub::GetPluginInfo,
                   csi::v1::GetPluginInfoRequest(), &info)
                  .ok());
  EXPECT_EQ(info.name(), "dax.daxlease.io");
  EXPECT_FALSE(info.vendor_version().empty());

  csi::v1::GetPluginCapabilitiesResponse pcaps;
  ASSERT_TRUE(Call(&Identity::Stub::GetPluginCapabilities,
                   csi::v1::GetPluginCapabilitiesRequest(), &pcaps)
                  .ok());
  std::set<int> services;
  bool online_expansion = false;
  for (const auto& c : pcaps.capabilities()) {
    if (c.has_service()) services.insert(c.service().type());
    if (c.has_volume_expansion() &&
        c.volume_expansion().type() ==
            csi::v1::PluginCapability::VolumeExpansion::ONLINE) {
      online_expansion = true;
    }
  }
  EXPECT_TRUE(
      services.count(csi::v1::PluginCapability::Service::CONTROLLER_SERVICE));
  EXPECT_TRUE(services.count(
      csi::v1::PluginCapability::Service::VOLUME_ACCESSIBILITY_CONSTRAINTS));
  EXPECT_TRUE(online_expansion);

  csi::v1::ControllerGetCapabilitiesResponse ccaps;
  ASSERT_TRUE(Call(&Controller::Stub::ControllerGetCapabilities,
                   csi::v1::ControllerGetCapabilitiesRequest(), &ccaps)
                  .ok());
  std::set<int> c;
  for (const auto& cap : ccaps.capabilities()) c.insert(cap.rpc().type());
  using R = csi::v1::ControllerServiceCapability::RPC;
  for (int want : {R::CREATE_DELETE_VOLUME, R::GET_CAPACITY, R::LIST_VOLUMES,
                   R::EXPAND_VOLUME, R::GET_VOLUME, R::VOLUME_CONDITION}) {
    EXPECT_TRUE(c.count(want)) << R::Type_Name(static_cast<R::Type>(want));
  }

  csi::v1::NodeGetCapabilitiesResponse ncaps;
  ASSERT_TRUE(Call(&Node::Stub::NodeGetCapabilities,
                   csi::v1::NodeGetCapabilitiesRequest(), &ncaps)
                  .ok());
  std::set<int> n;
  for (const auto& cap : ncaps.capabilities()) n.insert(cap.rpc().type());
  using NR = csi::v1::NodeServiceCapability::RPC;
  for (int want : {NR::STAGE_UNSTAGE_VOLUME, NR::GET_VOLUME_STATS,
                   NR::EXPAND_VOLUME, NR::VOLUME_CONDITION}) {
    EXPECT_TRUE(n.count(want)) << NR::Type_Name(static_cast<NR::Type>(want));
  }

  csi::v1::NodeGetInfoResponse node;
  ASSERT_TRUE(
      Call(&Node::Stub::NodeGetInfo, csi::v1::NodeGetInfoRequest(), &node)
          .ok());
  EXPECT_EQ(node.node_id(), kNodeId);
  EXPECT_EQ(node.max_volumes_per_node(), 64);
  EXPECT_EQ(node.accessible_topology().segments().at("daxlease.io/node"),
            kNodeId);
}

TEST_F(CsiServerTest, CapacityRangeIsHonoured) {
  struct Range {
    int64_t required, limit;
  };
  int i = 0;
  // (The file backend's smallest volume is 16 MiB.)
  for (Range r : {Range{16 * kMiB + 1, 20 * kMiB}, Range{0, 24 * kMiB},
                  Range{20 * kMiB, 20 * kMiB}, Range{5 * kMiB, 0}}) {
    SCOPED_TRACE(::testing::Message() << r.required << ".." << r.limit);
    csi::v1::CreateVolumeRequest req;
    req.set_name("pvc-range-" + std::to_string(i++));
    req.mutable_capacity_range()->set_required_bytes(r.required);
    req.mutable_capacity_range()->set_limit_bytes(r.limit);
    *req.add_volume_capabilities() = MountCap("ext4");
    csi::v1::CreateVolumeResponse resp;
    grpc::Status s = Call(&Controller::Stub::CreateVolume, req, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_GE(resp.volume().capacity_bytes(), std::max<int64_t>(r.required, 1));
    if (r.limit > 0) {
      EXPECT_LE(resp.volume().capacity_bytes(), r.limit);
    }
  }
  // A limit below anything the backend can make is refused, never silently
  // exceeded.
  csi::v1::CreateVolumeRequest tiny;
  tiny.set_name("pvc-range-tiny");
  tiny.mutable_capacity_range()->set_limit_bytes(1);
  *tiny.add_volume_capabilities() = MountCap("ext4");
  csi::v1::CreateVolumeResponse resp;
  grpc::Status s = Call(&Controller::Stub::CreateVolume, tiny, &resp);
  if (s.ok()) {
    EXPECT_LE(resp.volume().capacity_bytes(), 1);
  } else {
    EXPECT_TRUE(s.error_code() == grpc::StatusCode::OUT_OF_RANGE ||
                s.error_code() == grpc::StatusCode::INVALID_ARGUMENT)
        << s.error_code() << " " << s.error_message();
  }
}

TEST_F(CsiServerTest, CapacityShrinksWithVolumesAndListPaginates) {
  csi::v1::GetCapacityResponse cap0;
  ASSERT_TRUE(
      Call(&Controller::Stub::GetCapacity, csi::v1::GetCapacityRequest(), &cap0)
          .ok());
  EXPECT_GT(cap0.available_capacity(), 0);
  EXPECT_LE(cap0.available_capacity(), int64_t{1} << 30);

  // A topology segment of another node has no capacity here.
  csi::v1::GetCapacityRequest other;
  (*other.mutable_accessible_topology()
        ->mutable_segments())["daxlease.io/node"] = "some-other-node";
  csi::v1::GetCapacityResponse cap_other;
  ASSERT_TRUE(Call(&Controller::Stub::GetCapacity, other, &cap_other).ok());
  EXPECT_EQ(cap_other.available_capacity(), 0);

  std::set<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    csi::v1::CreateVolumeRequest req;
    req.set_name("pvc-page-" + std::to_string(i));
    req.mutable_capacity_range()->set_required_bytes(16 * kMiB);
    *req.add_volume_capabilities() = MountCap("ext4");
    csi::v1::CreateVolumeResponse resp;
    grpc::Status s = Call(&Controller::Stub::CreateVolume, req, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
    ids.insert(resp.volume().volume_id());
  }
  EXPECT_EQ(ids.size(), 3u);

  csi::v1::GetCapacityResponse cap1;
  ASSERT_TRUE(
      Call(&Controller::Stub::GetCapacity, csi::v1::GetCapacityRequest(), &cap1)
          .ok());
  EXPECT_LE(cap1.available_capacity(),
            cap0.available_capacity() - 3 * 16 * kMiB);

  std::set<std::string> listed;
  std::string token;
  int pages = 0;
  do {
    csi::v1::ListVolumesRequest req;
    req.set_max_entries(1);
    req.set_starting_token(token);
    csi::v1::ListVolumesResponse resp;
    grpc::Status s = Call(&Controller::Stub::ListVolumes, req, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
    ASSERT_LE(resp.entries_size(), 1);
    for (const auto& e : resp.entries()) {
      EXPECT_TRUE(listed.insert(e.volume().volume_id()).second)
          << "listed twice: " << e.volume().volume_id();
    }
    token = resp.next_token();
    ASSERT_LT(++pages, 10) << "pagination does not end";
  } while (!token.empty());
  EXPECT_EQ(listed, ids);

  // Survives a crash: the plugin knows every volume from its state dir.
  CrashAndRestart();
  csi::v1::ListVolumesResponse all;
  ASSERT_TRUE(
      Call(&Controller::Stub::ListVolumes, csi::v1::ListVolumesRequest(), &all)
          .ok());
  std::set<std::string> after;
  for (const auto& e : all.entries()) after.insert(e.volume().volume_id());
  EXPECT_EQ(after, ids);

  for (const std::string& id : ids) {
    csi::v1::DeleteVolumeRequest del;
    del.set_volume_id(id);
    csi::v1::DeleteVolumeResponse resp;
    EXPECT_TRUE(Call(&Controller::Stub::DeleteVolume, del, &resp).ok());
  }
  csi::v1::GetCapacityResponse cap2;
  ASSERT_TRUE(
      Call(&Controller::Stub::GetCapacity, csi::v1::GetCapacityRequest(), &cap2)
          .ok());
  EXPECT_GE(cap2.available_capacity(),
            cap1.available_capacity() + 3 * 16 * kMiB);
}

}  // namespace
}  // namespace daxlease::testing
