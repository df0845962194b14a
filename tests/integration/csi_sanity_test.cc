// The checks of kubernetes-csi/csi-test's csi-sanity, asserted against the
// real daxlease-csi binary over real gRPC (csi-sanity itself is a Go program
// this project cannot install; docs/csi-sanity.md says how to run it).
//
// Each test mirrors one csi-sanity Describe block: the same request shapes
// (a mount capability with no fs_type and SINGLE_NODE_WRITER, volumes of
// required = limit = the test size, the IDs of its DefaultIDGenerator, the
// relative "some/path"), the same expected status codes, and csi-sanity's
// per-test setup and teardown: it creates the target parent dir and the
// staging dir itself, publishes at <target parent>/target (which the plugin
// must create and, on unpublish, remove), cleans every created volume up
// with NodeUnpublish + NodeUnstage (OK or NOT_FOUND) + DeleteVolume (OK),
// then removes both dirs, which must be empty and unmounted by then.
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "lib/sys/file.h"
#include "tests/integration/csi_fixture.h"

namespace daxlease::testing {
namespace {

using csi::v1::Controller;
using csi::v1::ControllerServiceCapability;
using csi::v1::Identity;
using csi::v1::Node;
using csi::v1::NodeServiceCapability;
using csi::v1::PluginCapability;

// csi-sanity's --csi.testvolumesize for these runs: a multiple of the
// plugin's 2 MiB alignment, so that required = limit is met exactly.
constexpr int64_t kTestVolumeSize = 64 * kMiB;
// xfs volumes need >= 300 MiB (mkfs.xfs floor).
constexpr int64_t kXfsTestVolumeSize = 320 * kMiB;
// csi-sanity's default Config.IdempotentCount.
constexpr int kIdempotentCount = 10;

class CsiSanityTest : public CsiPluginTest {
 protected:
  void SetUp() override {
    CsiPluginTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    // csi-sanity's Setup: mkdir (not -p) of both; an existing dir is an
    // error there, so the previous test must have left them removable.
    target_parent_ = root_ + "/csi-mount";
    staging_ = root_ + "/csi-staging";
    ASSERT_EQ(::mkdir(target_parent_.c_str(), 0755), 0);
    ASSERT_EQ(::mkdir(staging_.c_str(), 0755), 0);
    target_ = target_parent_ + "/target";
  }

  void TearDown() override {
    if (plugin_ != nullptr && !target_parent_.empty()) {
      Cleanup();
      // csi-sanity's Teardown: os.Remove of both dirs. Non-empty or still
      // mounted dirs make the next test's Setup fail.
      EXPECT_EQ(::rmdir(target_parent_.c_str()), 0)
          << target_parent_ << " is not empty (the plugin left " << target_
          << "?): " << ::strerror(errno);
      EXPECT_EQ(::rmdir(staging_.c_str()), 0)
          << staging_
          << " is still mounted or not empty: " << ::strerror(errno);
      ExpectNoLeaks();
    }
    CsiPluginTest::TearDown();
  }

  // csi-sanity's TestVolumeCapabilityWithAccessType(mount): no fs_type.
  static csi::v1::VolumeCapability SanityCap() { return MountCap(""); }

  // csi-sanity's MakeCreateVolumeReq: required = limit = size.
  csi::v1::CreateVolumeRequest MakeCreateReq(const std::string& name,
                                             int64_t size = kTestVolumeSize) {
    csi::v1::CreateVolumeRequest req;
    req.set_name(name);
    *req.add_volume_capabilities() = SanityCap();
    req.mutable_capacity_range()->set_required_bytes(size);
    req.mutable_capacity_range()->set_limit_bytes(size);
    for (const auto& [k, v] : parameters_) (*req.mutable_parameters())[k] = v;
    return req;
  }

  // CreateVolume that must succeed; the volume is cleaned up in TearDown.
  csi::v1::CreateVolumeResponse MustCreate(
      const csi::v1::CreateVolumeRequest& req) {
    csi::v1::CreateVolumeResponse resp;
    grpc::Status s = Call(&Controller::Stub::CreateVolume, req, &resp);
    EXPECT_TRUE(s.ok()) << "CreateVolume " << req.name() << ": "
                        << s.error_message();
    EXPECT_FALSE(resp.volume().volume_id().empty());
    if (s.ok()) created_.push_back(resp.volume().volume_id());
    return resp;
  }

  grpc::Status Delete(const std::string& id) {
    csi::v1::DeleteVolumeRequest req;
    req.set_volume_id(id);
    csi::v1::DeleteVolumeResponse resp;
    grpc::Status s = Call(&Controller::Stub::DeleteVolume, req, &resp);
    if (s.ok()) std::erase(created_, id);
    return s;
  }

  grpc::Status Stage(const std::string& id) {
    csi::v1::NodeStageVolumeRequest req;
    req.set_volume_id(id);
    req.set_staging_target_path(staging_);
    *req.mutable_volume_capability() = SanityCap();
    csi::v1::NodeStageVolumeResponse resp;
    return Call(&Node::Stub::NodeStageVolume, req, &resp);
  }

  grpc::Status Publish(const std::string& id) {
    csi::v1::NodePublishVolumeRequest req;
    req.set_volume_id(id);
    req.set_staging_target_path(staging_);
    req.set_target_path(target_);
    *req.mutable_volume_capability() = SanityCap();
    csi::v1::NodePublishVolumeResponse resp;
    return Call(&Node::Stub::NodePublishVolume, req, &resp);
  }

  grpc::Status Unpublish(const std::string& id) {
    csi::v1::NodeUnpublishVolumeRequest req;
    req.set_volume_id(id);
    req.set_target_path(target_);
    csi::v1::NodeUnpublishVolumeResponse resp;
    return Call(&Node::Stub::NodeUnpublishVolume, req, &resp);
  }

  grpc::Status Unstage(const std::string& id) {
    csi::v1::NodeUnstageVolumeRequest req;
    req.set_volume_id(id);
    req.set_staging_target_path(staging_);
    csi::v1::NodeUnstageVolumeResponse resp;
    return Call(&Node::Stub::NodeUnstageVolume, req, &resp);
  }

  grpc::Status Stats(const std::string& id, const std::string& path,
                     csi::v1::NodeGetVolumeStatsResponse* resp) {
    csi::v1::NodeGetVolumeStatsRequest req;
    req.set_volume_id(id);
    req.set_volume_path(path);
    return Call(&Node::Stub::NodeGetVolumeStats, req, resp);
  }

  // csi-sanity's Resources.Cleanup, newest first: unpublish and unstage
  // (OK or NOT_FOUND, also for volumes never published or staged), then
  // DeleteVolume, which must succeed.
  void Cleanup() {
    for (auto it = created_.rbegin(); it != created_.rend(); ++it) {
      SCOPED_TRACE("cleanup of " + *it);
      grpc::Status s = Unpublish(*it);
      EXPECT_TRUE(s.ok() || s.error_code() == grpc::NOT_FOUND)
          << "NodeUnpublishVolume: " << s.error_message();
      s = Unstage(*it);
      EXPECT_TRUE(s.ok() || s.error_code() == grpc::NOT_FOUND)
          << "NodeUnstageVolume: " << s.error_message();
      csi::v1::DeleteVolumeRequest req;
      req.set_volume_id(*it);
      csi::v1::DeleteVolumeResponse resp;
      s = Call(&Controller::Stub::DeleteVolume, req, &resp);
      EXPECT_TRUE(s.ok()) << "DeleteVolume: " << s.error_message();
    }
    created_.clear();
  }

  // csi-sanity's runControllerTest (Node Service "should work" / "should be
  // idempotent"): create in this node's topology, stage and publish `count`
  // times each, stats on the target.
  void RunNodeTest(int count) {
    csi::v1::NodeGetInfoResponse ni;
    ASSERT_TRUE(
        Call(&Node::Stub::NodeGetInfo, csi::v1::NodeGetInfoRequest(), &ni)
            .ok());
    ASSERT_FALSE(ni.node_id().empty());
    csi::v1::CreateVolumeRequest req =
        MakeCreateReq("sanity-node-full-" + std::to_string(count));
    *req.mutable_accessibility_requirements()->add_requisite() =
        ni.accessible_topology();
    const std::string id = MustCreate(req).volume().volume_id();
    ASSERT_FALSE(id.empty());
    for (int i = 0; i < count; ++i) {
      grpc::Status s = Stage(id);
      ASSERT_TRUE(s.ok()) << "stage #" << i << ": " << s.error_message();
    }
    for (int i = 0; i < count; ++i) {
      grpc::Status s = Publish(id);
      ASSERT_TRUE(s.ok()) << "publish #" << i << ": " << s.error_message();
    }
    csi::v1::NodeGetVolumeStatsResponse stats;
    grpc::Status s = Stats(id, target_, &stats);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_GT(stats.usage_size(), 0);
  }

  std::string target_parent_;  // csi-sanity's --csi.mountdir
  std::string staging_;        // csi-sanity's --csi.stagingdir
  std::string target_;         // target_parent_ + "/target"
  std::map<std::string, std::string> parameters_;  // --csi.testvolumeparameters
  std::vector<std::string> created_;
};

// csi-sanity's DefaultIDGenerator.GenerateUniqueValidVolumeID().
std::string UnknownVolumeId() {
  static int n = 0;
  return "fake-vol-id-" + std::to_string(100000 + ++n);
}

void ExpectCode(const grpc::Status& s, grpc::StatusCode code,
                const std::string& what) {
  EXPECT_EQ(s.error_code(), code) << what << ": " << s.error_message();
}

// Identity Service: GetPluginCapabilities, Probe, GetPluginInfo.
TEST_F(CsiSanityTest, IdentityService) {
  csi::v1::GetPluginCapabilitiesResponse caps;
  ASSERT_TRUE(Call(&Identity::Stub::GetPluginCapabilities,
                   csi::v1::GetPluginCapabilitiesRequest(), &caps)
                  .ok());
  for (const auto& c : caps.capabilities()) {
    if (c.has_service()) {
      EXPECT_TRUE(
          c.service().type() == PluginCapability::Service::CONTROLLER_SERVICE ||
          c.service().type() ==
              PluginCapability::Service::VOLUME_ACCESSIBILITY_CONSTRAINTS)
          << c.DebugString();
    } else {
      ASSERT_TRUE(c.has_volume_expansion()) << c.DebugString();
      EXPECT_TRUE(c.volume_expansion().type() ==
                      PluginCapability::VolumeExpansion::ONLINE ||
                  c.volume_expansion().type() ==
                      PluginCapability::VolumeExpansion::OFFLINE);
    }
  }

  csi::v1::ProbeResponse probe;
  grpc::Status s =
      Call(&Identity::Stub::Probe, csi::v1::ProbeRequest(), &probe);
  EXPECT_TRUE(s.ok() || s.error_code() == grpc::FAILED_PRECONDITION)
      << s.error_message();

  csi::v1::GetPluginInfoResponse info;
  ASSERT_TRUE(Call(&Identity::Stub::GetPluginInfo,
                   csi::v1::GetPluginInfoRequest(), &info)
                  .ok());
  EXPECT_FALSE(info.name().empty());
  EXPECT_LE(info.name().size(), 63u);
  EXPECT_TRUE(std::regex_match(
      info.name(), std::regex(R"(^[a-zA-Z][A-Za-z0-9-\.\_]{0,61}[a-zA-Z]$)")))
      << info.name();
}

// ControllerGetCapabilities / NodeGetCapabilities: only types csi-sanity
// knows. What we advertise decides which csi-sanity blocks run: no
// PUBLISH_UNPUBLISH_VOLUME (ControllerPublish, "volume lifecycle" skip), no
// modify capability (its block skips); the file backend's snapshot and
// clone capabilities run csi-sanity's snapshot and cloning blocks
// (CsiSanityTest.Snapshots mirrors them).
TEST_F(CsiSanityTest, CapabilitiesAndNodeInfo) {
  using Rpc = ControllerServiceCapability::RPC;
  csi::v1::ControllerGetCapabilitiesResponse ccaps;
  ASSERT_TRUE(Call(&Controller::Stub::ControllerGetCapabilities,
                   csi::v1::ControllerGetCapabilitiesRequest(), &ccaps)
                  .ok());
  const std::set<int> known_controller = {Rpc::CREATE_DELETE_VOLUME,
                                          Rpc::PUBLISH_UNPUBLISH_VOLUME,
                                          Rpc::LIST_VOLUMES,
                                          Rpc::GET_CAPACITY,
                                          Rpc::CREATE_DELETE_SNAPSHOT,
                                          Rpc::LIST_SNAPSHOTS,
                                          Rpc::PUBLISH_READONLY,
                                          Rpc::CLONE_VOLUME,
                                          Rpc::EXPAND_VOLUME,
                                          Rpc::MODIFY_VOLUME,
                                          Rpc::LIST_VOLUMES_PUBLISHED_NODES,
                                          Rpc::GET_VOLUME,
                                          Rpc::VOLUME_CONDITION,
                                          Rpc::SINGLE_NODE_MULTI_WRITER};
  std::set<int> got;
  for (const auto& c : ccaps.capabilities()) {
    ASSERT_TRUE(c.has_rpc());
    EXPECT_TRUE(known_controller.count(c.rpc().type())) << c.DebugString();
    got.insert(c.rpc().type());
  }
  EXPECT_TRUE(got.count(Rpc::CREATE_DELETE_VOLUME));
  EXPECT_TRUE(got.count(Rpc::LIST_VOLUMES));
  EXPECT_TRUE(got.count(Rpc::GET_CAPACITY));
  EXPECT_TRUE(got.count(Rpc::EXPAND_VOLUME)) << "file backend grows in place";
  EXPECT_TRUE(got.count(Rpc::CREATE_DELETE_SNAPSHOT));
  EXPECT_TRUE(got.count(Rpc::LIST_SNAPSHOTS));
  EXPECT_TRUE(got.count(Rpc::CLONE_VOLUME));
  for (int absent : {Rpc::PUBLISH_UNPUBLISH_VOLUME, Rpc::MODIFY_VOLUME}) {
    EXPECT_FALSE(got.count(absent))
        << Rpc::Type_Name(static_cast<Rpc::Type>(absent))
        << " is advertised but not implemented";
  }

  using NRpc = NodeServiceCapability::RPC;
  csi::v1::NodeGetCapabilitiesResponse ncaps;
  ASSERT_TRUE(Call(&Node::Stub::NodeGetCapabilities,
                   csi::v1::NodeGetCapabilitiesRequest(), &ncaps)
                  .ok());
  const std::set<int> known_node = {
      NRpc::UNKNOWN,           NRpc::STAGE_UNSTAGE_VOLUME,
      NRpc::GET_VOLUME_STATS,  NRpc::EXPAND_VOLUME,
      NRpc::VOLUME_CONDITION,  NRpc::SINGLE_NODE_MULTI_WRITER,
      NRpc::VOLUME_MOUNT_GROUP};
  std::set<int> ngot;
  for (const auto& c : ncaps.capabilities()) {
    ASSERT_TRUE(c.has_rpc());
    EXPECT_TRUE(known_node.count(c.rpc().type())) << c.DebugString();
    ngot.insert(c.rpc().type());
  }
  EXPECT_TRUE(ngot.count(NRpc::STAGE_UNSTAGE_VOLUME));
  EXPECT_TRUE(ngot.count(NRpc::GET_VOLUME_STATS));
  EXPECT_TRUE(ngot.count(NRpc::EXPAND_VOLUME));

  csi::v1::NodeGetInfoResponse ni;
  ASSERT_TRUE(
      Call(&Node::Stub::NodeGetInfo, csi::v1::NodeGetInfoRequest(), &ni).ok());
  EXPECT_FALSE(ni.node_id().empty());
  EXPECT_GE(ni.max_volumes_per_node(), 0);
  EXPECT_TRUE(ni.has_accessible_topology())
      << "VOLUME_ACCESSIBILITY_CONSTRAINTS needs a topology";
}

TEST_F(CsiSanityTest, GetCapacityWithNoOptionalValues) {
  csi::v1::GetCapacityResponse resp;
  grpc::Status s = Call(&Controller::Stub::GetCapacity,
                        csi::v1::GetCapacityRequest(), &resp);
  EXPECT_TRUE(s.ok()) << s.error_message();
}

// ListVolumes: plain listing, a bad token, presence after create and absence
// after delete, and the max_entries / next_token rules.
TEST_F(CsiSanityTest, ListVolumes) {
  csi::v1::ListVolumesResponse vols;
  ASSERT_TRUE(
      Call(&Controller::Stub::ListVolumes, csi::v1::ListVolumesRequest(), &vols)
          .ok());
  const int before = vols.entries_size();

  csi::v1::ListVolumesRequest bad;
  bad.set_starting_token("invalid-token");
  ExpectCode(Call(&Controller::Stub::ListVolumes, bad, &vols), grpc::ABORTED,
             "invalid starting_token");

  // "check the presence of new volumes and absence of deleted ones": a
  // volume named "sanity" with no capacity range.
  csi::v1::CreateVolumeRequest req;
  req.set_name("sanity");
  *req.add_volume_capabilities() = SanityCap();
  const std::string id = MustCreate(req).volume().volume_id();
  ASSERT_FALSE(id.empty());
  vols.Clear();
  ASSERT_TRUE(
      Call(&Controller::Stub::ListVolumes, csi::v1::ListVolumesRequest(), &vols)
          .ok());
  EXPECT_EQ(vols.entries_size(), before + 1);
  for (const auto& e : vols.entries())
    EXPECT_FALSE(e.volume().volume_id().empty());
  ASSERT_TRUE(Delete(id).ok());
  vols.Clear();
  ASSERT_TRUE(
      Call(&Controller::Stub::ListVolumes, csi::v1::ListVolumesRequest(), &vols)
          .ok());
  EXPECT_EQ(vols.entries_size(), before);

  // Pagination (csi-sanity's ListSnapshots rules, which older csi-sanity
  // releases also applied to ListVolumes): 5 volumes, max_entries 2 gives 2
  // and a next_token; that token with no max_entries gives the rest.
  std::set<std::string> all;
  for (int i = 0; i < 5; ++i) {
    all.insert(MustCreate(MakeCreateReq("sanity-page-" + std::to_string(i)))
                   .volume()
                   .volume_id());
  }
  ASSERT_EQ(all.size(), 5u);
  csi::v1::ListVolumesRequest page;
  page.set_max_entries(2);
  csi::v1::ListVolumesResponse first;
  ASSERT_TRUE(Call(&Controller::Stub::ListVolumes, page, &first).ok());
  ASSERT_EQ(first.entries_size(), 2);
  ASSERT_FALSE(first.next_token().empty());
  csi::v1::ListVolumesRequest rest_req;
  rest_req.set_starting_token(first.next_token());
  csi::v1::ListVolumesResponse rest;
  ASSERT_TRUE(Call(&Controller::Stub::ListVolumes, rest_req, &rest).ok());
  EXPECT_EQ(rest.entries_size(), before + 5 - 2);
  EXPECT_TRUE(rest.next_token().empty());
  std::set<std::string> seen;
  for (const auto& e : first.entries()) seen.insert(e.volume().volume_id());
  for (const auto& e : rest.entries())
    EXPECT_TRUE(seen.insert(e.volume().volume_id()).second)
        << "listed twice: " << e.volume().volume_id();
  for (const std::string& v : all) EXPECT_TRUE(seen.count(v)) << v;

  // The (disabled in csi-sanity, fragile) "pagination should detect volumes
  // added between pages and accept tokens when the last volume from a page
  // is deleted": the old token must still be accepted, with no duplicates.
  for (const auto& e : first.entries()) {
    ASSERT_TRUE(Delete(e.volume().volume_id()).ok());
    all.erase(e.volume().volume_id());
  }
  all.insert(MustCreate(MakeCreateReq("new-addition")).volume().volume_id());
  csi::v1::ListVolumesResponse after;
  grpc::Status s = Call(&Controller::Stub::ListVolumes, rest_req, &after);
  ASSERT_TRUE(s.ok()) << "token after deleting its page: " << s.error_message();
  EXPECT_LE(after.entries_size(), before + 5 - 2 + 1);
  std::set<std::string> again;
  for (const auto& e : after.entries()) {
    EXPECT_TRUE(all.count(e.volume().volume_id()))
        << "deleted volume listed: " << e.volume().volume_id();
    EXPECT_TRUE(again.insert(e.volume().volume_id()).second);
  }
}

TEST_F(CsiSanityTest, CreateVolume) {
  csi::v1::CreateVolumeResponse resp;
  // "should fail when no name is provided"
  csi::v1::CreateVolumeRequest noname = MakeCreateReq("");
  ExpectCode(Call(&Controller::Stub::CreateVolume, noname, &resp),
             grpc::INVALID_ARGUMENT, "no name");
  // "should fail when no volume capabilities are provided"
  csi::v1::CreateVolumeRequest nocaps = MakeCreateReq("sanity-no-caps");
  nocaps.clear_volume_capabilities();
  ExpectCode(Call(&Controller::Stub::CreateVolume, nocaps, &resp),
             grpc::INVALID_ARGUMENT, "no volume capabilities");

  // "SingleNodeWriter WithCapacity": capacity >= the requested size.
  csi::v1::CreateVolumeRequest with_cap = MakeCreateReq("sanity-with-cap");
  with_cap.mutable_capacity_range()->clear_limit_bytes();
  EXPECT_GE(MustCreate(with_cap).volume().capacity_bytes(), kTestVolumeSize);

  // required = limit: exactly that size.
  EXPECT_EQ(MustCreate(MakeCreateReq("sanity-exact")).volume().capacity_bytes(),
            kTestVolumeSize);

  // "already existing name and same capacity": same ID.
  csi::v1::CreateVolumeRequest twice = MakeCreateReq("sanity-twice");
  twice.mutable_capacity_range()->clear_limit_bytes();
  csi::v1::CreateVolumeResponse v1 = MustCreate(twice);
  csi::v1::CreateVolumeResponse v2 = MustCreate(twice);
  EXPECT_EQ(v1.volume().volume_id(), v2.volume().volume_id());
  EXPECT_GE(v2.volume().capacity_bytes(), kTestVolumeSize);
  created_.pop_back();  // one volume, registered twice

  // "already existing name and different capacity": ALREADY_EXISTS.
  MustCreate(MakeCreateReq("sanity-twice-different"));
  csi::v1::CreateVolumeRequest bigger =
      MakeCreateReq("sanity-twice-different", 2 * kTestVolumeSize);
  resp.Clear();
  ExpectCode(Call(&Controller::Stub::CreateVolume, bigger, &resp),
             grpc::ALREADY_EXISTS, "same name, different capacity");

  // "maximum-length name": 128 bytes.
  std::string maxname = "sanity-controller-create-maxlen-";
  maxname.resize(128, 'x');
  csi::v1::CreateVolumeRequest longest = MakeCreateReq(maxname);
  longest.mutable_capacity_range()->clear_limit_bytes();
  EXPECT_GE(MustCreate(longest).volume().capacity_bytes(), kTestVolumeSize);
}

TEST_F(CsiSanityTest, DeleteVolume) {
  csi::v1::DeleteVolumeResponse resp;
  ExpectCode(Call(&Controller::Stub::DeleteVolume,
                  csi::v1::DeleteVolumeRequest(), &resp),
             grpc::INVALID_ARGUMENT, "no volume id");
  // "should succeed when an invalid volume id is used":
  // GenerateInvalidVolumeID() is "fake-vol-id".
  EXPECT_TRUE(Delete("fake-vol-id").ok());
  const std::string id =
      MustCreate(MakeCreateReq("sanity-delete")).volume().volume_id();
  grpc::Status s = Delete(id);
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(Delete(id).ok()) << "deleting again is OK";
}

TEST_F(CsiSanityTest, ValidateVolumeCapabilities) {
  csi::v1::ValidateVolumeCapabilitiesResponse resp;
  csi::v1::ValidateVolumeCapabilitiesRequest req;
  ExpectCode(Call(&Controller::Stub::ValidateVolumeCapabilities, req, &resp),
             grpc::INVALID_ARGUMENT, "no volume id");

  const std::string id =
      MustCreate(MakeCreateReq("sanity-validate")).volume().volume_id();
  req.set_volume_id(id);
  ExpectCode(Call(&Controller::Stub::ValidateVolumeCapabilities, req, &resp),
             grpc::INVALID_ARGUMENT, "no volume capabilities");

  *req.add_volume_capabilities() = SanityCap();
  grpc::Status s =
      Call(&Controller::Stub::ValidateVolumeCapabilities, req, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_TRUE(resp.has_confirmed()) << resp.message();
  EXPECT_GT(resp.confirmed().volume_capabilities_size(), 0);

  req.set_volume_id(UnknownVolumeId());
  ExpectCode(Call(&Controller::Stub::ValidateVolumeCapabilities, req, &resp),
             grpc::NOT_FOUND, "unknown volume");
}

TEST_F(CsiSanityTest, ControllerExpandVolume) {
  csi::v1::ControllerExpandVolumeResponse resp;
  csi::v1::ControllerExpandVolumeRequest req;
  req.mutable_capacity_range()->set_required_bytes(2 * kTestVolumeSize);
  *req.mutable_volume_capability() = SanityCap();
  ExpectCode(Call(&Controller::Stub::ControllerExpandVolume, req, &resp),
             grpc::INVALID_ARGUMENT, "no volume id");
  csi::v1::ControllerExpandVolumeRequest norange;
  ExpectCode(Call(&Controller::Stub::ControllerExpandVolume, norange, &resp),
             grpc::INVALID_ARGUMENT, "no capacity range");

  // "should work": the response capacity EQUALS the requested size.
  csi::v1::CreateVolumeRequest create = MakeCreateReq("sanity-expand-volume");
  create.mutable_capacity_range()->clear_limit_bytes();
  req.set_volume_id(MustCreate(create).volume().volume_id());
  grpc::Status s = Call(&Controller::Stub::ControllerExpandVolume, req, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(resp.capacity_bytes(), 2 * kTestVolumeSize);
}

// NodePublish/Unpublish/Stage/Unstage argument checks, with csi-sanity's
// exact request shapes (its device "/dev/mock" publish context included).
TEST_F(CsiSanityTest, NodeCallsWithMissingArguments) {
  csi::v1::NodePublishVolumeResponse presp;
  csi::v1::NodePublishVolumeRequest pub;
  ExpectCode(Call(&Node::Stub::NodePublishVolume, pub, &presp),
             grpc::INVALID_ARGUMENT, "publish: no volume id");
  pub.set_volume_id(UnknownVolumeId());
  ExpectCode(Call(&Node::Stub::NodePublishVolume, pub, &presp),
             grpc::INVALID_ARGUMENT, "publish: no target path");
  pub.set_target_path(target_);
  ExpectCode(Call(&Node::Stub::NodePublishVolume, pub, &presp),
             grpc::INVALID_ARGUMENT, "publish: no volume capability");

  csi::v1::NodeUnpublishVolumeResponse uresp;
  csi::v1::NodeUnpublishVolumeRequest unpub;
  ExpectCode(Call(&Node::Stub::NodeUnpublishVolume, unpub, &uresp),
             grpc::INVALID_ARGUMENT, "unpublish: no volume id");
  unpub.set_volume_id(UnknownVolumeId());
  ExpectCode(Call(&Node::Stub::NodeUnpublishVolume, unpub, &uresp),
             grpc::INVALID_ARGUMENT, "unpublish: no target path");

  csi::v1::NodeStageVolumeResponse sresp;
  csi::v1::NodeStageVolumeRequest stage;
  stage.set_staging_target_path(staging_);
  *stage.mutable_volume_capability() = SanityCap();
  (*stage.mutable_publish_context())["device"] = "/dev/mock";
  ExpectCode(Call(&Node::Stub::NodeStageVolume, stage, &sresp),
             grpc::INVALID_ARGUMENT, "stage: no volume id");
  stage.set_volume_id(UnknownVolumeId());
  stage.clear_staging_target_path();
  ExpectCode(Call(&Node::Stub::NodeStageVolume, stage, &sresp),
             grpc::INVALID_ARGUMENT, "stage: no staging path");
  // "should fail when no volume capability is provided", on a real volume.
  stage.set_volume_id(MustCreate(MakeCreateReq("sanity-node-stage-nocaps"))
                          .volume()
                          .volume_id());
  stage.set_staging_target_path(staging_);
  stage.clear_volume_capability();
  ExpectCode(Call(&Node::Stub::NodeStageVolume, stage, &sresp),
             grpc::INVALID_ARGUMENT, "stage: no volume capability");

  csi::v1::NodeUnstageVolumeResponse usresp;
  csi::v1::NodeUnstageVolumeRequest unstage;
  unstage.set_staging_target_path(staging_);
  ExpectCode(Call(&Node::Stub::NodeUnstageVolume, unstage, &usresp),
             grpc::INVALID_ARGUMENT, "unstage: no volume id");
  unstage.set_volume_id(UnknownVolumeId());
  unstage.clear_staging_target_path();
  ExpectCode(Call(&Node::Stub::NodeUnstageVolume, unstage, &usresp),
             grpc::INVALID_ARGUMENT, "unstage: no staging path");
  EXPECT_TRUE(MountsUnder(tmp_->path()).empty());
}

// NodeGetVolumeStats: missing arguments, an unknown volume at "some/path",
// and a published volume asked about at "some/path": NOT_FOUND both.
TEST_F(CsiSanityTest, NodeGetVolumeStats) {
  csi::v1::NodeGetVolumeStatsResponse resp;
  ExpectCode(Stats("", "some/path", &resp), grpc::INVALID_ARGUMENT,
             "no volume id");
  ExpectCode(Stats(UnknownVolumeId(), "", &resp), grpc::INVALID_ARGUMENT,
             "no volume path");
  ExpectCode(Stats(UnknownVolumeId(), "some/path", &resp), grpc::NOT_FOUND,
             "volume is not found");

  const std::string id =
      MustCreate(MakeCreateReq("sanity-node-get-volume-stats"))
          .volume()
          .volume_id();
  ASSERT_TRUE(Stage(id).ok());
  ASSERT_TRUE(Publish(id).ok());
  ExpectCode(Stats(id, "some/path", &resp), grpc::NOT_FOUND,
             "volume does not exist on the specified path");
  resp.Clear();
  grpc::Status s = Stats(id, target_, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_GT(resp.usage_size(), 0);
}

// NodeExpandVolume: missing arguments, an unknown volume at "some/path", and
// "should work if node-expand is called after node-publish" (controller
// expand first, then stage, publish, node expand at the target).
TEST_F(CsiSanityTest, NodeExpandVolume) {
  csi::v1::NodeExpandVolumeResponse resp;
  csi::v1::NodeExpandVolumeRequest req;
  req.set_volume_path(target_parent_);
  *req.mutable_volume_capability() = SanityCap();
  ExpectCode(Call(&Node::Stub::NodeExpandVolume, req, &resp),
             grpc::INVALID_ARGUMENT, "no volume id");

  // ext4 grows online only with CAP_SYS_RESOURCE; where root lacks it (this
  // project's machines), csi-sanity runs with fstype xfs (docs/csi-sanity.md).
  int64_t size = kTestVolumeSize;
  if (!HasCapSysResource()) {
    parameters_["csi.storage.k8s.io/fstype"] = "xfs";
    size = kXfsTestVolumeSize;
  }
  const std::string id =
      MustCreate(MakeCreateReq("sanity-node-expand-volume", size))
          .volume()
          .volume_id();
  ASSERT_FALSE(id.empty());
  req.set_volume_id(id);
  req.clear_volume_path();
  ExpectCode(Call(&Node::Stub::NodeExpandVolume, req, &resp),
             grpc::INVALID_ARGUMENT, "no volume path");

  csi::v1::NodeExpandVolumeRequest unknown;
  unknown.set_volume_id(UnknownVolumeId());
  unknown.set_volume_path("some/path");
  ExpectCode(Call(&Node::Stub::NodeExpandVolume, unknown, &resp),
             grpc::NOT_FOUND, "volume is not found");

  const int64_t expanded = size + 64 * kMiB;  // csi-sanity: size + 1 GiB
  csi::v1::ControllerExpandVolumeRequest ce;
  ce.set_volume_id(id);
  ce.mutable_capacity_range()->set_required_bytes(expanded);
  csi::v1::ControllerExpandVolumeResponse ceresp;
  grpc::Status s = Call(&Controller::Stub::ControllerExpandVolume, ce, &ceresp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(ceresp.capacity_bytes(), expanded);

  ASSERT_TRUE(Stage(id).ok());
  ASSERT_TRUE(Publish(id).ok());
  csi::v1::NodeExpandVolumeRequest ne;
  ne.set_volume_id(id);
  ne.set_volume_path(target_);
  ne.mutable_capacity_range()->set_required_bytes(expanded);
  s = Call(&Node::Stub::NodeExpandVolume, ne, &resp);
  EXPECT_TRUE(s.ok()) << "while expanding volume on node: "
                      << s.error_message();
}

// Node Service "should work" and "should be idempotent" (stage and publish
// IdempotentCount times), then NodeUnpublishVolume "should remove target
// path": the plugin created <mountdir>/target and must remove it.
TEST_F(CsiSanityTest, NodeWorkflowIsIdempotentAndRemovesTheTargetPath) {
  RunNodeTest(1);
  Cleanup();
  ASSERT_FALSE(sys::PathExists(target_)) << "unpublish must remove " << target_;
  RunNodeTest(kIdempotentCount);
  Cleanup();
  ASSERT_FALSE(sys::PathExists(target_));

  const std::string id =
      MustCreate(MakeCreateReq("sanity-node-unpublish-volume"))
          .volume()
          .volume_id();
  ASSERT_FALSE(sys::PathExists(target_)) << "csi-sanity never creates it";
  ASSERT_TRUE(Stage(id).ok());
  ASSERT_TRUE(Publish(id).ok());
  EXPECT_TRUE(sys::PathExists(target_)) << "the plugin creates the target path";
  grpc::Status s = Unpublish(id);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_FALSE(sys::PathExists(target_))
      << "path should have been removed by NodeUnpublishVolume";
}

// csi-sanity's cleanup runs NodeUnpublish and NodeUnstage for every volume
// it created, also those never published or staged, and for volumes that
// are gone: OK or NOT_FOUND, never another error; DeleteVolume then works.
TEST_F(CsiSanityTest, CleanupOfVolumesNeverPublishedOrStaged) {
  const std::string id =
      MustCreate(MakeCreateReq("sanity-cleanup")).volume().volume_id();
  ASSERT_FALSE(sys::PathExists(target_));
  grpc::Status s = Unpublish(id);
  EXPECT_TRUE(s.ok()) << "never published: " << s.error_message();
  s = Unstage(id);
  EXPECT_TRUE(s.ok()) << "never staged: " << s.error_message();
  s = Unpublish(UnknownVolumeId());
  EXPECT_TRUE(s.ok() || s.error_code() == grpc::NOT_FOUND) << s.error_message();
  s = Unstage(UnknownVolumeId());
  EXPECT_TRUE(s.ok() || s.error_code() == grpc::NOT_FOUND) << s.error_message();
  EXPECT_TRUE(Delete(id).ok());
}

// csi-sanity's CreateSnapshot, DeleteSnapshot, ListSnapshots, "create
// volume from snapshot" and cloning blocks, which the file backend's
// CREATE_DELETE_SNAPSHOT, LIST_SNAPSHOTS and CLONE_VOLUME turn on.
TEST_F(CsiSanityTest, Snapshots) {
  auto snapshot = [&](const std::string& name, const std::string& vol,
                      csi::v1::CreateSnapshotResponse* resp) {
    csi::v1::CreateSnapshotRequest req;
    req.set_name(name);
    req.set_source_volume_id(vol);
    return Call(&Controller::Stub::CreateSnapshot, req, resp);
  };
  auto del = [&](const std::string& id) {
    csi::v1::DeleteSnapshotRequest req;
    req.set_snapshot_id(id);
    csi::v1::DeleteSnapshotResponse resp;
    return Call(&Controller::Stub::DeleteSnapshot, req, &resp);
  };
  auto list = [&](csi::v1::ListSnapshotsRequest req,
                  csi::v1::ListSnapshotsResponse* resp) {
    return Call(&Controller::Stub::ListSnapshots, req, resp);
  };
  csi::v1::CreateSnapshotResponse snap;
  ExpectCode(snapshot("", "x", &snap), grpc::INVALID_ARGUMENT, "no name");
  ExpectCode(snapshot("sanity-snap", "", &snap), grpc::INVALID_ARGUMENT,
             "no source volume id");
  ExpectCode(del(""), grpc::INVALID_ARGUMENT, "no snapshot id");
  EXPECT_TRUE(del("reallyfakesnapshotid").ok()) << "unknown id";

  const std::string vol =
      MustCreate(MakeCreateReq("sanity-snap-src")).volume().volume_id();
  const std::string vol2 =
      MustCreate(MakeCreateReq("sanity-snap-src2")).volume().volume_id();
  grpc::Status s = snapshot("sanity-snap", vol, &snap);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(snap.snapshot().ready_to_use());
  const std::string id = snap.snapshot().snapshot_id();
  csi::v1::CreateSnapshotResponse again;
  EXPECT_TRUE(snapshot("sanity-snap", vol, &again).ok()) << "same name+source";
  EXPECT_EQ(again.snapshot().snapshot_id(), id);
  ExpectCode(snapshot("sanity-snap", vol2, &again), grpc::ALREADY_EXISTS,
             "same name, other source");
  csi::v1::CreateSnapshotResponse longest;
  s = snapshot(std::string(128, 'a'), vol, &longest);
  EXPECT_TRUE(s.ok()) << "maximum-length name: " << s.error_message();

  csi::v1::ListSnapshotsResponse l;
  ASSERT_TRUE(list({}, &l).ok());
  EXPECT_EQ(l.entries_size(), 2);
  csi::v1::ListSnapshotsRequest by_id;
  by_id.set_snapshot_id(id);
  ASSERT_TRUE(list(by_id, &l).ok());
  ASSERT_EQ(l.entries_size(), 1);
  EXPECT_EQ(l.entries(0).snapshot().snapshot_id(), id);
  by_id.set_snapshot_id("none-such");
  ASSERT_TRUE(list(by_id, &l).ok());
  EXPECT_EQ(l.entries_size(), 0);
  csi::v1::ListSnapshotsRequest by_source;
  by_source.set_source_volume_id(vol2);
  ASSERT_TRUE(list(by_source, &l).ok());
  EXPECT_EQ(l.entries_size(), 0);
  csi::v1::ListSnapshotsRequest bad_token;
  bad_token.set_starting_token("invalid-token");
  ExpectCode(list(bad_token, &l), grpc::ABORTED, "invalid starting_token");
  csi::v1::ListSnapshotsRequest page;
  page.set_max_entries(1);
  ASSERT_TRUE(list(page, &l).ok());
  EXPECT_EQ(l.entries_size(), 1);
  EXPECT_FALSE(l.next_token().empty());

  // Volume from the snapshot, and a clone; unknown sources are NOT_FOUND.
  csi::v1::CreateVolumeRequest from = MakeCreateReq("sanity-from-snap");
  from.mutable_volume_content_source()->mutable_snapshot()->set_snapshot_id(id);
  EXPECT_EQ(MustCreate(from).volume().content_source().snapshot().snapshot_id(),
            id);
  csi::v1::CreateVolumeResponse resp;
  from = MakeCreateReq("sanity-from-missing-snap");
  from.mutable_volume_content_source()->mutable_snapshot()->set_snapshot_id(
      "none-such");
  ExpectCode(Call(&Controller::Stub::CreateVolume, from, &resp),
             grpc::NOT_FOUND, "snapshot not found");
  csi::v1::CreateVolumeRequest clone = MakeCreateReq("sanity-clone");
  clone.mutable_volume_content_source()->mutable_volume()->set_volume_id(vol);
  EXPECT_EQ(MustCreate(clone).volume().content_source().volume().volume_id(),
            vol);
  clone = MakeCreateReq("sanity-clone-missing");
  clone.mutable_volume_content_source()->mutable_volume()->set_volume_id(
      UnknownVolumeId());
  ExpectCode(Call(&Controller::Stub::CreateVolume, clone, &resp),
             grpc::NOT_FOUND, "source volume not found");

  EXPECT_TRUE(del(id).ok());
  EXPECT_TRUE(del(longest.snapshot().snapshot_id()).ok());
  ASSERT_TRUE(list({}, &l).ok());
  EXPECT_EQ(l.entries_size(), 0);
}

}  // namespace
}  // namespace daxlease::testing
