// Test environment for the CSI service unit tests: fakes for every boundary
// and a real state store in a temp directory, so a "restart" is a new
// service object over the same directory and the same fakes.
#ifndef DAXLEASE_CSI_SERVICE_TEST_ENV_H_
#define DAXLEASE_CSI_SERVICE_TEST_ENV_H_

#include <stdlib.h>

#include <memory>
#include <string>

#include "csi/controller_service.h"
#include "csi/fake_volume_backend.h"
#include "csi/node_service.h"
#include "gtest/gtest.h"
#include "lib/sys/fake_mounter.h"
#include "lib/sys/formatter.h"

namespace daxlease::csi {

inline constexpr uint64_t kGiB = 1ull << 30;
inline constexpr uint64_t kMiB = 1ull << 20;

class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/daxlease-csi-unit-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    store_ = std::make_unique<StateStore>(dir_ + "/state");
    ASSERT_TRUE(store_->Init().ok());
    config_.node_id = "node-a";
    config_.allowed_roots = {"/k"};
    config_.max_volumes_per_node = 7;
    for (int i = 0; i < 16; ++i) {
      mounter_.AddPath("/dev/fakeloop" + std::to_string(i));
    }
    Restart();
  }
  void TearDown() override {
    std::string cmd = "rm -rf " + dir_;
    ASSERT_EQ(system(cmd.c_str()), 0);
  }

  // New service objects (and locks) over the same state dir and fakes:
  // what a plugin restart looks like to the services.
  void Restart() {
    store_ = std::make_unique<StateStore>(dir_ + "/state");
    locks_ = std::make_unique<VolumeLocks>();
    controller_ = std::make_unique<ControllerService>(config_, deps());
    node_ = std::make_unique<NodeService>(config_, deps());
  }

  DriverDeps deps() {
    return DriverDeps{&backend_, &mounter_, &formatter_, store_.get(),
                      locks_.get()};
  }

  static ::csi::v1::VolumeCapability MountCap(
      const std::string& fs = "",
      ::csi::v1::VolumeCapability::AccessMode::Mode mode =
          ::csi::v1::VolumeCapability::AccessMode::SINGLE_NODE_WRITER) {
    ::csi::v1::VolumeCapability c;
    c.mutable_mount()->set_fs_type(fs);
    c.mutable_access_mode()->set_mode(mode);
    return c;
  }
  static ::csi::v1::VolumeCapability BlockCap() {
    ::csi::v1::VolumeCapability c;
    c.mutable_block();
    c.mutable_access_mode()->set_mode(
        ::csi::v1::VolumeCapability::AccessMode::SINGLE_NODE_WRITER);
    return c;
  }

  ::csi::v1::CreateVolumeRequest CreateReq(const std::string& name,
                                           uint64_t bytes,
                                           const std::string& fs = "ext4") {
    ::csi::v1::CreateVolumeRequest r;
    r.set_name(name);
    r.mutable_capacity_range()->set_required_bytes(static_cast<int64_t>(bytes));
    *r.add_volume_capabilities() = MountCap();
    (*r.mutable_parameters())["csi.storage.k8s.io/fstype"] = fs;
    return r;
  }

  grpc::Status Create(const ::csi::v1::CreateVolumeRequest& r,
                      ::csi::v1::CreateVolumeResponse* out) {
    return controller_->CreateVolume(nullptr, &r, out);
  }

  // Creates a volume and returns its ID (fails the test otherwise).
  std::string MakeVolume(const std::string& name, uint64_t bytes = 64 * kMiB) {
    ::csi::v1::CreateVolumeResponse resp;
    grpc::Status s = Create(CreateReq(name, bytes), &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp.volume().volume_id();
  }

  std::string StagingPath(const std::string& id) { return "/k/staging/" + id; }
  std::string TargetPath(const std::string& id) { return "/k/pods/p1/" + id; }

  grpc::Status Stage(const std::string& id,
                     const ::csi::v1::VolumeCapability& cap) {
    ::csi::v1::NodeStageVolumeRequest r;
    r.set_volume_id(id);
    r.set_staging_target_path(StagingPath(id));
    *r.mutable_volume_capability() = cap;
    ::csi::v1::NodeStageVolumeResponse resp;
    return node_->NodeStageVolume(nullptr, &r, &resp);
  }
  grpc::Status Publish(const std::string& id,
                       const ::csi::v1::VolumeCapability& cap,
                       bool read_only = false) {
    ::csi::v1::NodePublishVolumeRequest r;
    r.set_volume_id(id);
    r.set_staging_target_path(StagingPath(id));
    r.set_target_path(TargetPath(id));
    r.set_readonly(read_only);
    *r.mutable_volume_capability() = cap;
    ::csi::v1::NodePublishVolumeResponse resp;
    return node_->NodePublishVolume(nullptr, &r, &resp);
  }
  grpc::Status Unpublish(const std::string& id) {
    ::csi::v1::NodeUnpublishVolumeRequest r;
    r.set_volume_id(id);
    r.set_target_path(TargetPath(id));
    ::csi::v1::NodeUnpublishVolumeResponse resp;
    return node_->NodeUnpublishVolume(nullptr, &r, &resp);
  }
  grpc::Status Unstage(const std::string& id) {
    ::csi::v1::NodeUnstageVolumeRequest r;
    r.set_volume_id(id);
    r.set_staging_target_path(StagingPath(id));
    ::csi::v1::NodeUnstageVolumeResponse resp;
    return node_->NodeUnstageVolume(nullptr, &r, &resp);
  }
  grpc::Status Delete(const std::string& id) {
    ::csi::v1::DeleteVolumeRequest r;
    r.set_volume_id(id);
    ::csi::v1::DeleteVolumeResponse resp;
    return controller_->DeleteVolume(nullptr, &r, &resp);
  }

  std::optional<VolumeRecord> Record(const std::string& id) {
    auto r = store_->Load(id);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : std::nullopt;
  }

  std::string dir_;
  DriverConfig config_;
  FakeVolumeBackend backend_{8 * kGiB};
  sys::FakeMounter mounter_;
  sys::FakeFormatter formatter_;
  std::unique_ptr<StateStore> store_;
  std::unique_ptr<VolumeLocks> locks_;
  std::unique_ptr<ControllerService> controller_;
  std::unique_ptr<NodeService> node_;
};

}  // namespace daxlease::csi

#endif  // DAXLEASE_CSI_SERVICE_TEST_ENV_H_
