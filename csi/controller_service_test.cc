#include "csi/controller_service.h"

#include <thread>

#include "absl/strings/match.h"
#include "csi/service_test_env.h"
#include "csi/validation.h"
#include "gtest/gtest.h"

namespace daxlease::csi {
namespace {

using ::csi::v1::VolumeCapability;

class ControllerTest : public ServiceTest {};

TEST_F(ControllerTest, CreateReturnsTopologyContextAndAlignedSize) {
  ::csi::v1::CreateVolumeResponse resp;
  ASSERT_TRUE(Create(CreateReq("pvc-1", 100 * kMiB + 1), &resp).ok());
  const auto& v = resp.volume();
  EXPECT_EQ(v.volume_id(), VolumeIdForName("pvc-1"));
  EXPECT_EQ(v.capacity_bytes(), static_cast<int64_t>(102 * kMiB));
  ASSERT_EQ(v.accessible_topology_size(), 1);
  EXPECT_EQ(v.accessible_topology(0).segments().at("daxlease.io/node"),
            "node-a");
  EXPECT_EQ(v.volume_context().at("daxlease.io/mode"), "fsdax");
  EXPECT_EQ(v.volume_context().at("daxlease.io/dax"), "false");
  EXPECT_EQ(v.volume_context().at("csi.storage.k8s.io/fstype"), "ext4");
  auto rec = Record(v.volume_id());
  ASSERT_TRUE(rec.has_value());
  EXPECT_EQ(rec->phase, VolumePhase::kReady);
  EXPECT_EQ(rec->name, "pvc-1");
}

TEST_F(ControllerTest, CreateIsIdempotentAndDetectsIncompatibleRepeats) {
  ::csi::v1::CreateVolumeResponse a, b;
  ASSERT_TRUE(Create(CreateReq("pvc-1", 64 * kMiB), &a).ok());
  ASSERT_TRUE(Create(CreateReq("pvc-1", 64 * kMiB), &b).ok());
  EXPECT_EQ(a.volume().volume_id(), b.volume().volume_id());
  EXPECT_EQ(a.volume().capacity_bytes(), b.volume().capacity_bytes());

  ::csi::v1::CreateVolumeResponse c;
  EXPECT_EQ(Create(CreateReq("pvc-1", 128 * kMiB), &c).error_code(),
            grpc::ALREADY_EXISTS);
  EXPECT_EQ(Create(CreateReq("pvc-1", 64 * kMiB, "xfs"), &c).error_code(),
            grpc::ALREADY_EXISTS);
  auto with_limit = CreateReq("pvc-1", 32 * kMiB);
  with_limit.mutable_capacity_range()->set_limit_bytes(48 * kMiB);
  EXPECT_EQ(Create(with_limit, &c).error_code(), grpc::ALREADY_EXISTS);
}

TEST_F(ControllerTest, LimitBytesIsHonoured) {
  auto r = CreateReq("pvc-l", 33 * kMiB);
  r.mutable_capacity_range()->set_limit_bytes(34 * kMiB);  // 2 MiB round-up
  ::csi::v1::CreateVolumeResponse resp;                    // would exceed it
  ASSERT_TRUE(Create(r, &resp).ok());
  EXPECT_GE(resp.volume().capacity_bytes(), static_cast<int64_t>(33 * kMiB));
  EXPECT_LE(resp.volume().capacity_bytes(), static_cast<int64_t>(34 * kMiB));

  auto bad = CreateReq("pvc-m", 64 * kMiB);
  bad.mutable_capacity_range()->set_limit_bytes(32 * kMiB);
  EXPECT_EQ(Create(bad, &resp).error_code(), grpc::OUT_OF_RANGE);
}

TEST_F(ControllerTest, ParametersAreValidated) {
  ::csi::v1::CreateVolumeResponse resp;
  auto r = CreateReq("pvc-p", 64 * kMiB);
  (*r.mutable_parameters())["daxlease.io/bogus"] = "1";
  grpc::Status s = Create(r, &resp);
  EXPECT_EQ(s.error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StrContains(s.error_message(), "daxlease.io/bogus"));

  r = CreateReq("pvc-p", 64 * kMiB);
  (*r.mutable_parameters())["daxlease.io/share"] = "true";
  (*r.mutable_parameters())["daxlease.io/recallGraceSeconds"] = "45";
  (*r.mutable_parameters())["csi.storage.k8s.io/pvc/name"] = "claim";
  EXPECT_TRUE(Create(r, &resp).ok());
  EXPECT_EQ(resp.volume().volume_context().at("daxlease.io/recallGraceSeconds"),
            "45");

  r = CreateReq("pvc-q", 64 * kMiB);
  (*r.mutable_parameters())["daxlease.io/recallGraceSeconds"] = "soon";
  EXPECT_EQ(Create(r, &resp).error_code(), grpc::INVALID_ARGUMENT);
  r = CreateReq("pvc-q", 64 * kMiB, "btrfs");
  EXPECT_EQ(Create(r, &resp).error_code(), grpc::INVALID_ARGUMENT);

  r = CreateReq("pvc-q", 64 * kMiB);
  (*r.mutable_parameters())["daxlease.io/mode"] = "devdax";
  EXPECT_EQ(Create(r, &resp).error_code(), grpc::INVALID_ARGUMENT)
      << "devdax cannot be mounted";
  r.clear_volume_capabilities();
  *r.add_volume_capabilities() = BlockCap();
  r.mutable_parameters()->erase("csi.storage.k8s.io/fstype");
  s = Create(r, &resp);
  EXPECT_EQ(s.error_code(), grpc::INVALID_ARGUMENT) << "fake has no devdax";

  r = CreateReq("pvc-q", 64 * kMiB);
  std::string big(5000, 'x');
  (*r.mutable_parameters())["csi.storage.k8s.io/pv/name"] = big;
  EXPECT_EQ(Create(r, &resp).error_code(), grpc::INVALID_ARGUMENT);
  // None of the refusals left a record behind.
  EXPECT_FALSE(Record(VolumeIdForName("pvc-q")).has_value());
}

TEST_F(ControllerTest, FsTypeFromCapabilityAndConflicts) {
  ::csi::v1::CreateVolumeRequest r;
  r.set_name("pvc-x");
  *r.add_volume_capabilities() = MountCap("xfs");
  ::csi::v1::CreateVolumeResponse resp;
  ASSERT_TRUE(Create(r, &resp).ok());
  EXPECT_EQ(resp.volume().volume_context().at("csi.storage.k8s.io/fstype"),
            "xfs");
  EXPECT_GE(resp.volume().capacity_bytes(), static_cast<int64_t>(kGiB))
      << "default size";

  (*r.mutable_parameters())["csi.storage.k8s.io/fstype"] = "ext4";
  r.set_name("pvc-y");
  EXPECT_EQ(Create(r, &resp).error_code(), grpc::INVALID_ARGUMENT);
}

TEST_F(ControllerTest, BadRequests) {
  ::csi::v1::CreateVolumeResponse resp;
  auto r = CreateReq("", 64 * kMiB);
  EXPECT_EQ(Create(r, &resp).error_code(), grpc::INVALID_ARGUMENT);
  r = CreateReq(std::string(129, 'n'), 64 * kMiB);
  EXPECT_EQ(Create(r, &resp).error_code(), grpc::INVALID_ARGUMENT);
  r = CreateReq("pvc-c", 64 * kMiB);
  r.clear_volume_capabilities();
  EXPECT_EQ(Create(r, &resp).error_code(), grpc::INVALID_ARGUMENT);
  r = CreateReq("pvc-c", 64 * kMiB);
  r.mutable_volume_capabilities(0)->mutable_access_mode()->set_mode(
      VolumeCapability::AccessMode::MULTI_NODE_MULTI_WRITER);
  EXPECT_EQ(Create(r, &resp).error_code(), grpc::INVALID_ARGUMENT);
  r = CreateReq("pvc-c", 64 * kMiB);
  r.mutable_capacity_range()->set_required_bytes(-1);
  EXPECT_EQ(Create(r, &resp).error_code(), grpc::INVALID_ARGUMENT);
  r = CreateReq("pvc-c", 64 * kMiB);
  r.mutable_volume_content_source()->mutable_snapshot()->set_snapshot_id("s");
  EXPECT_EQ(Create(r, &resp).error_code(), grpc::INVALID_ARGUMENT);
}

TEST_F(ControllerTest, OutOfCapacityIsResourceExhaustedAndLeavesNothing) {
  ::csi::v1::CreateVolumeResponse resp;
  grpc::Status s = Create(CreateReq("pvc-huge", 9 * kGiB), &resp);
  EXPECT_EQ(s.error_code(), grpc::RESOURCE_EXHAUSTED);
  EXPECT_FALSE(Record(VolumeIdForName("pvc-huge")).has_value());
  EXPECT_TRUE(Create(CreateReq("pvc-huge", 1 * kGiB), &resp).ok())
      << "the name can be used again";
}

TEST_F(ControllerTest, TopologyRequirementsExcludingThisNode) {
  auto r = CreateReq("pvc-t", 64 * kMiB);
  (*r.mutable_accessibility_requirements()
        ->add_requisite()
        ->mutable_segments())["daxlease.io/node"] = "node-b";
  ::csi::v1::CreateVolumeResponse resp;
  EXPECT_EQ(Create(r, &resp).error_code(), grpc::RESOURCE_EXHAUSTED);
  (*r.mutable_accessibility_requirements()
        ->add_requisite()
        ->mutable_segments())["daxlease.io/node"] = "node-a";
  EXPECT_TRUE(Create(r, &resp).ok());
}

TEST_F(ControllerTest, DeleteIsIdempotentAndRefusedWhileStaged) {
  std::string id = MakeVolume("pvc-d");
  ASSERT_TRUE(Stage(id, MountCap()).ok());
  EXPECT_EQ(Delete(id).error_code(), grpc::FAILED_PRECONDITION);
  ASSERT_TRUE(Unstage(id).ok());
  EXPECT_TRUE(Delete(id).ok());
  EXPECT_TRUE(Delete(id).ok());
  EXPECT_FALSE(Record(id).has_value());
  EXPECT_FALSE(backend_.Get(id).ok());
  EXPECT_EQ(Delete("").error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_EQ(Delete("../etc").error_code(), grpc::INVALID_ARGUMENT);
}

TEST_F(ControllerTest, ListVolumesPaginates) {
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i)
    ids.push_back(MakeVolume("pvc-l" + std::to_string(i)));
  std::sort(ids.begin(), ids.end());
  std::vector<std::string> seen;
  std::string token;
  int pages = 0;
  do {
    ::csi::v1::ListVolumesRequest r;
    r.set_max_entries(2);
    r.set_starting_token(token);
    ::csi::v1::ListVolumesResponse resp;
    ASSERT_TRUE(controller_->ListVolumes(nullptr, &r, &resp).ok());
    for (const auto& e : resp.entries()) seen.push_back(e.volume().volume_id());
    token = resp.next_token();
    ++pages;
  } while (!token.empty());
  EXPECT_EQ(pages, 3);
  EXPECT_EQ(seen, ids);

  ::csi::v1::ListVolumesRequest bad;
  bad.set_starting_token("not-a-token");
  ::csi::v1::ListVolumesResponse resp;
  EXPECT_EQ(controller_->ListVolumes(nullptr, &bad, &resp).error_code(),
            grpc::ABORTED);
  bad.set_starting_token("99");
  EXPECT_EQ(controller_->ListVolumes(nullptr, &bad, &resp).error_code(),
            grpc::ABORTED);
  bad.set_starting_token("");
  bad.set_max_entries(-1);
  EXPECT_EQ(controller_->ListVolumes(nullptr, &bad, &resp).error_code(),
            grpc::INVALID_ARGUMENT);
}

TEST_F(ControllerTest, GetCapacityPerTopologyAndMode) {
  MakeVolume("pvc-c1", 1 * kGiB);
  ::csi::v1::GetCapacityRequest r;
  ::csi::v1::GetCapacityResponse resp;
  ASSERT_TRUE(controller_->GetCapacity(nullptr, &r, &resp).ok());
  EXPECT_EQ(resp.available_capacity(), static_cast<int64_t>(7 * kGiB));
  EXPECT_EQ(resp.maximum_volume_size().value(), static_cast<int64_t>(7 * kGiB));
  EXPECT_EQ(resp.minimum_volume_size().value(),
            static_cast<int64_t>(16 * kMiB));
  {
    // xfs (a parameter, or a mount capability's fs_type) needs 300 MiB+;
    // block access of the same class does not.
    ::csi::v1::GetCapacityRequest x;
    (*x.mutable_parameters())["csi.storage.k8s.io/fstype"] = "xfs";
    ASSERT_TRUE(controller_->GetCapacity(nullptr, &x, &resp).ok());
    EXPECT_GE(resp.minimum_volume_size().value(),
              static_cast<int64_t>(300 * kMiB));
    x.clear_parameters();
    *x.add_volume_capabilities() = MountCap("xfs");
    ASSERT_TRUE(controller_->GetCapacity(nullptr, &x, &resp).ok());
    EXPECT_GE(resp.minimum_volume_size().value(),
              static_cast<int64_t>(300 * kMiB));
    x.clear_volume_capabilities();
    *x.add_volume_capabilities() = BlockCap();
    (*x.mutable_parameters())["csi.storage.k8s.io/fstype"] = "xfs";
    ASSERT_TRUE(controller_->GetCapacity(nullptr, &x, &resp).ok());
    EXPECT_EQ(resp.minimum_volume_size().value(),
              static_cast<int64_t>(16 * kMiB));
    // Conflicting filesystems: refused as CreateVolume refuses them.
    x.clear_volume_capabilities();
    *x.add_volume_capabilities() = MountCap("ext4");
    EXPECT_EQ(controller_->GetCapacity(nullptr, &x, &resp).error_code(),
              grpc::INVALID_ARGUMENT);
  }

  (*r.mutable_accessible_topology()->mutable_segments())["daxlease.io/node"] =
      "node-b";
  ASSERT_TRUE(controller_->GetCapacity(nullptr, &r, &resp).ok());
  EXPECT_EQ(resp.available_capacity(), 0);

  r.clear_accessible_topology();
  (*r.mutable_parameters())["daxlease.io/mode"] = "devdax";
  ASSERT_TRUE(controller_->GetCapacity(nullptr, &r, &resp).ok());
  EXPECT_EQ(resp.available_capacity(), 0);
  (*r.mutable_parameters())["daxlease.io/mode"] = "nvme";
  EXPECT_EQ(controller_->GetCapacity(nullptr, &r, &resp).error_code(),
            grpc::INVALID_ARGUMENT);
}

// external-provisioner's capacity tracking (v2.x) asks with one mount
// capability whose access mode is UNKNOWN: capacity does not depend on the
// access mode, so the answer is the one without capabilities.
TEST_F(ControllerTest, GetCapacityIgnoresAnUnknownAccessMode) {
  ::csi::v1::GetCapacityRequest r;
  auto* cap = r.add_volume_capabilities();
  cap->mutable_mount();
  cap->mutable_access_mode()->set_mode(
      ::csi::v1::VolumeCapability::AccessMode::UNKNOWN);
  ::csi::v1::GetCapacityResponse resp;
  grpc::Status s = controller_->GetCapacity(nullptr, &r, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(resp.available_capacity(), static_cast<int64_t>(8 * kGiB));
  // The access type still counts: a bad filesystem is refused.
  cap->mutable_mount()->set_fs_type("btrfs");
  EXPECT_EQ(controller_->GetCapacity(nullptr, &r, &resp).error_code(),
            grpc::INVALID_ARGUMENT);
}

TEST_F(ControllerTest, DevdaxVolumeContextNamesNoFilesystem) {
  FakeVolumeBackend devdax_backend(8 * kGiB, /*devdax=*/true);
  ControllerService controller(
      config_, DriverDeps{&devdax_backend, &mounter_, &formatter_, store_.get(),
                          locks_.get()});
  ::csi::v1::CreateVolumeRequest r = CreateReq("pvc-dd", 64 * kMiB);
  (*r.mutable_parameters())["daxlease.io/mode"] = "devdax";
  r.mutable_parameters()->erase("csi.storage.k8s.io/fstype");
  r.clear_volume_capabilities();
  *r.add_volume_capabilities() = BlockCap();
  ::csi::v1::CreateVolumeResponse resp;
  grpc::Status s = controller.CreateVolume(nullptr, &r, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  const auto& ctx = resp.volume().volume_context();
  EXPECT_EQ(ctx.at("daxlease.io/mode"), "devdax");
  EXPECT_EQ(ctx.count("csi.storage.k8s.io/fstype"), 0u)
      << "a devdax volume carries no filesystem";
}

TEST_F(ControllerTest, GetVolumeAndConditionWhenMediaVanishes) {
  std::string id = MakeVolume("pvc-g");
  ::csi::v1::ControllerGetVolumeRequest r;
  r.set_volume_id(id);
  ::csi::v1::ControllerGetVolumeResponse resp;
  ASSERT_TRUE(controller_->ControllerGetVolume(nullptr, &r, &resp).ok());
  EXPECT_EQ(resp.volume().volume_id(), id);
  EXPECT_FALSE(resp.status().volume_condition().abnormal());
  backend_.DropMedia(id);
  ASSERT_TRUE(controller_->ControllerGetVolume(nullptr, &r, &resp).ok());
  EXPECT_TRUE(resp.status().volume_condition().abnormal());
  r.set_volume_id("no-such-volume");
  EXPECT_EQ(controller_->ControllerGetVolume(nullptr, &r, &resp).error_code(),
            grpc::NOT_FOUND);
}

TEST_F(ControllerTest, ValidateVolumeCapabilities) {
  std::string id = MakeVolume("pvc-v");
  ::csi::v1::ValidateVolumeCapabilitiesRequest r;
  r.set_volume_id(id);
  *r.add_volume_capabilities() = MountCap("ext4");
  ::csi::v1::ValidateVolumeCapabilitiesResponse resp;
  ASSERT_TRUE(controller_->ValidateVolumeCapabilities(nullptr, &r, &resp).ok());
  EXPECT_TRUE(resp.has_confirmed());

  *r.mutable_volume_capabilities(0) = MountCap("xfs");
  resp.Clear();
  ASSERT_TRUE(controller_->ValidateVolumeCapabilities(nullptr, &r, &resp).ok());
  EXPECT_FALSE(resp.has_confirmed());
  EXPECT_FALSE(resp.message().empty());

  *r.mutable_volume_capabilities(0) =
      MountCap("", VolumeCapability::AccessMode::MULTI_NODE_READER_ONLY);
  resp.Clear();
  ASSERT_TRUE(controller_->ValidateVolumeCapabilities(nullptr, &r, &resp).ok());
  EXPECT_FALSE(resp.has_confirmed());

  r.set_volume_id("no-such-volume");
  EXPECT_EQ(
      controller_->ValidateVolumeCapabilities(nullptr, &r, &resp).error_code(),
      grpc::NOT_FOUND);
  r.set_volume_id(id);
  r.clear_volume_capabilities();
  EXPECT_EQ(
      controller_->ValidateVolumeCapabilities(nullptr, &r, &resp).error_code(),
      grpc::INVALID_ARGUMENT);
}

TEST_F(ControllerTest, ExpandGrowsAndRefreshesAStagedDevice) {
  std::string id = MakeVolume("pvc-e", 64 * kMiB);
  ::csi::v1::ControllerExpandVolumeRequest r;
  r.set_volume_id(id);
  r.mutable_capacity_range()->set_required_bytes(128 * kMiB);
  ::csi::v1::ControllerExpandVolumeResponse resp;
  ASSERT_TRUE(controller_->ControllerExpandVolume(nullptr, &r, &resp).ok());
  EXPECT_EQ(resp.capacity_bytes(), static_cast<int64_t>(128 * kMiB));
  EXPECT_TRUE(resp.node_expansion_required());
  EXPECT_EQ(backend_.Get(id)->capacity_bytes, 128 * kMiB);
  EXPECT_EQ(Record(id)->capacity_bytes, 128 * kMiB);
  EXPECT_EQ(backend_.refresh_calls(), 0) << "not staged";

  ASSERT_TRUE(Stage(id, BlockCap()).ok());
  r.mutable_capacity_range()->set_required_bytes(256 * kMiB);
  *r.mutable_volume_capability() = BlockCap();
  ASSERT_TRUE(controller_->ControllerExpandVolume(nullptr, &r, &resp).ok());
  EXPECT_FALSE(resp.node_expansion_required());
  EXPECT_EQ(backend_.refresh_calls(), 1);
  // Idempotent: same size again.
  ASSERT_TRUE(controller_->ControllerExpandVolume(nullptr, &r, &resp).ok());
  EXPECT_EQ(resp.capacity_bytes(), static_cast<int64_t>(256 * kMiB));

  r.mutable_capacity_range()->set_required_bytes(100 * kGiB);
  EXPECT_EQ(
      controller_->ControllerExpandVolume(nullptr, &r, &resp).error_code(),
      grpc::RESOURCE_EXHAUSTED);
  r.clear_capacity_range();
  EXPECT_EQ(
      controller_->ControllerExpandVolume(nullptr, &r, &resp).error_code(),
      grpc::INVALID_ARGUMENT);
  r.set_volume_id("no-such-volume");
  r.mutable_capacity_range()->set_required_bytes(128 * kMiB);
  EXPECT_EQ(
      controller_->ControllerExpandVolume(nullptr, &r, &resp).error_code(),
      grpc::NOT_FOUND);
}

// ndctl: a staged volume's mount (or bind) holds the old namespace's device,
// so an offline backend refuses to grow it and changes nothing; unstaged it
// grows.
TEST_F(ControllerTest, OfflineBackendRefusesToGrowAStagedVolume) {
  backend_.SetExpandsOnline(false);
  std::string id = MakeVolume("pvc-off", 64 * kMiB);
  ASSERT_TRUE(Stage(id, BlockCap()).ok());
  ::csi::v1::ControllerExpandVolumeRequest r;
  r.set_volume_id(id);
  r.mutable_capacity_range()->set_required_bytes(128 * kMiB);
  ::csi::v1::ControllerExpandVolumeResponse resp;
  grpc::Status s = controller_->ControllerExpandVolume(nullptr, &r, &resp);
  EXPECT_EQ(s.error_code(), grpc::FAILED_PRECONDITION);
  EXPECT_TRUE(absl::StrContains(s.error_message(), "unstage it first"))
      << s.error_message();
  EXPECT_EQ(backend_.Get(id)->capacity_bytes, 64 * kMiB);
  EXPECT_EQ(Record(id)->capacity_bytes, 64 * kMiB);
  // Already large enough: OK even while staged.
  r.mutable_capacity_range()->set_required_bytes(64 * kMiB);
  EXPECT_TRUE(controller_->ControllerExpandVolume(nullptr, &r, &resp).ok());
}

TEST_F(ControllerTest, ConcurrentCallOnOneVolumeIsAborted) {
  std::string id = MakeVolume("pvc-busy");
  auto held = locks_->TryLock(id);
  ASSERT_TRUE(held.ok());
  grpc::Status s = Delete(id);
  EXPECT_EQ(s.error_code(), grpc::ABORTED);
  EXPECT_TRUE(
      absl::StrContains(s.error_message(), "operation pending for volume"));
  ::csi::v1::CreateVolumeResponse resp;
  EXPECT_EQ(Create(CreateReq("pvc-busy", 64 * kMiB), &resp).error_code(),
            grpc::ABORTED);
  // Another volume is not blocked.
  EXPECT_TRUE(Create(CreateReq("pvc-free", 64 * kMiB), &resp).ok());
}

TEST_F(ControllerTest, ParallelCreatesOfDifferentVolumesAllSucceed) {
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      ::csi::v1::CreateVolumeResponse resp;
      if (Create(CreateReq("pvc-par" + std::to_string(i), 64 * kMiB), &resp)
              .ok())
        ++ok;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 8);
}

TEST_F(ControllerTest, CapabilitiesListed) {
  ::csi::v1::ControllerGetCapabilitiesRequest r;
  ::csi::v1::ControllerGetCapabilitiesResponse resp;
  ASSERT_TRUE(controller_->ControllerGetCapabilities(nullptr, &r, &resp).ok());
  std::set<int> got;
  for (const auto& c : resp.capabilities()) got.insert(c.rpc().type());
  using Rpc = ::csi::v1::ControllerServiceCapability::RPC;
  EXPECT_EQ(got, (std::set<int>{Rpc::CREATE_DELETE_VOLUME, Rpc::GET_CAPACITY,
                                Rpc::LIST_VOLUMES, Rpc::EXPAND_VOLUME,
                                Rpc::GET_VOLUME, Rpc::VOLUME_CONDITION}));

  backend_.SetSupportsExpansion(false);  // ndctl: no in-place growth
  resp.Clear();
  ASSERT_TRUE(controller_->ControllerGetCapabilities(nullptr, &r, &resp).ok());
  for (const auto& c : resp.capabilities()) {
    EXPECT_NE(c.rpc().type(), Rpc::EXPAND_VOLUME);
  }
  EXPECT_EQ(resp.capabilities_size(), 5);
}

}  // namespace
}  // namespace daxlease::csi

namespace daxlease::csi {
namespace {

class FormatAtCreateTest : public ServiceTest {
 protected:
  void SetUp() override {
    backend_.set_format_at_create(true);
    ServiceTest::SetUp();
  }
};

TEST_F(FormatAtCreateTest, CreateFormatsTheMediaAndStageOnlyMounts) {
  std::string id = MakeVolume("pvc-fmt");
  EXPECT_EQ(formatter_.format_calls(), 1);
  EXPECT_TRUE(Record(id)->formatted);
  EXPECT_TRUE(backend_.last_create_spec().synced_by_format)
      << "mkfs syncs the new media: the backend need not";
  auto fs = formatter_.Detect("/dev/fake-media/" + id);
  ASSERT_TRUE(fs.ok());
  EXPECT_EQ(*fs, "ext4");
  EXPECT_FALSE(backend_.IsAttached(id)) << "formatted without an attach";
  ASSERT_TRUE(Stage(id, MountCap()).ok());
  EXPECT_EQ(formatter_.format_calls(), 1) << "no mkfs on the stage path";
  auto m = mounter_.GetMount(StagingPath(id));
  ASSERT_TRUE(m.ok() && m->has_value());
  EXPECT_EQ((*m)->fs_type, "ext4");
}

TEST_F(FormatAtCreateTest, BlockOnlyVolumesAreNotFormatted) {
  ::csi::v1::CreateVolumeRequest r = CreateReq("pvc-raw", 64 * kMiB);
  *r.mutable_volume_capabilities(0) = BlockCap();
  ::csi::v1::CreateVolumeResponse resp;
  ASSERT_TRUE(Create(r, &resp).ok());
  EXPECT_EQ(formatter_.format_calls(), 0);
  EXPECT_FALSE(Record(resp.volume().volume_id())->formatted);
  EXPECT_FALSE(backend_.last_create_spec().synced_by_format)
      << "no mkfs follows: the backend syncs the media itself";
}

TEST_F(FormatAtCreateTest, AdoptedMediaWithAFilesystemIsNeverFormatted) {
  const std::string id = VolumeIdForName("pvc-adopt");
  backend_.AddMedia(id, 64 * kMiB);
  formatter_.SetFilesystem("/dev/fake-media/" + id, "xfs");
  ::csi::v1::CreateVolumeResponse resp;
  grpc::Status s = Create(CreateReq("pvc-adopt", 64 * kMiB), &resp);
  EXPECT_EQ(s.error_code(), grpc::FAILED_PRECONDITION) << s.error_message();
  EXPECT_EQ(formatter_.format_calls(), 0);
  EXPECT_TRUE(backend_.Get(id).ok()) << "adopted media is kept";
  formatter_.SetFilesystem("/dev/fake-media/" + id, "ext4");
  ASSERT_TRUE(Create(CreateReq("pvc-adopt", 64 * kMiB), &resp).ok());
  EXPECT_EQ(formatter_.format_calls(), 0);
  EXPECT_TRUE(Record(id)->formatted);
}

TEST_F(FormatAtCreateTest, FailedFormatLeavesNothing) {
  formatter_.FailNext("Format", absl::InternalError("mkfs died"));
  ::csi::v1::CreateVolumeResponse resp;
  EXPECT_FALSE(Create(CreateReq("pvc-fail", 64 * kMiB), &resp).ok());
  const std::string id = VolumeIdForName("pvc-fail");
  EXPECT_FALSE(backend_.Get(id).ok());
  EXPECT_FALSE(Record(id).has_value());
  EXPECT_TRUE(Create(CreateReq("pvc-fail", 64 * kMiB), &resp).ok());
}

}  // namespace
}  // namespace daxlease::csi
