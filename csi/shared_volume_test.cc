// The CSI services with a node agent (FakeAgentConnection): DaxVolumes are
// recorded and forgotten through the agent, shared volumes are served by
// their owner and published as directories on any node of the fabric, and
// an agent that is down fails the call with UNAVAILABLE leaving nothing
// half-done.
#include "absl/strings/match.h"
#include "csi/fake_agent_connection.h"
#include "csi/media_service.h"
#include "csi/repair.h"
#include "csi/service_test_env.h"
#include "csi/shared_publish.h"
#include "csi/snapshot_store.h"
#include "csi/validation.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace daxlease::csi {
namespace {

using ::csi::v1::VolumeCapability;
using AccessMode = ::csi::v1::VolumeCapability::AccessMode;

class SharedVolumeTest : public ServiceTest {
 protected:
  void SetUp() override {
    ServiceTest::SetUp();
    config_.fabric = "fabric-1";
    for (const FakeAgentConnection* a : {&agent_, &b_agent_}) {
      mounter_.AddPath(a->socket_path());
      mounter_.AddPath(SocketDir(*a));
    }
    remote_store_ = std::make_unique<StateStore>(dir_ + "/remote");
    ASSERT_TRUE(remote_store_->Init().ok());
    WireAgent();
  }

  DriverDeps AgentDeps() {
    DriverDeps d = deps();
    d.agent = &agent_;
    d.remote_store = remote_store_.get();
    return d;
  }
  void WireAgent() {
    controller_ = std::make_unique<ControllerService>(config_, AgentDeps());
    node_ = std::make_unique<NodeService>(config_, AgentDeps());
  }

  // A second node of the same fabric, with its own stores and agent, over
  // the same fake mount table (its paths differ).
  void StartNodeB() {
    b_store_ = std::make_unique<StateStore>(dir_ + "/b-state");
    b_remote_ = std::make_unique<StateStore>(dir_ + "/b-remote");
    ASSERT_TRUE(b_store_->Init().ok());
    ASSERT_TRUE(b_remote_->Init().ok());
    DriverConfig c = config_;
    c.node_id = "node-b";
    DriverDeps d{&b_backend_, &mounter_, &formatter_,    b_store_.get(),
                 &b_locks_,   &b_agent_, b_remote_.get()};
    node_b_ = std::make_unique<NodeService>(c, d);
  }

  ::csi::v1::CreateVolumeRequest SharedReq(const std::string& name) {
    ::csi::v1::CreateVolumeRequest r = CreateReq(name, 64 * kMiB);
    (*r.mutable_parameters())["daxlease.io/share"] = "true";
    (*r.mutable_parameters())["daxlease.io/recallGraceSeconds"] = "7";
    *r.mutable_volume_capabilities(0) =
        MountCap("", AccessMode::MULTI_NODE_MULTI_WRITER);
    return r;
  }

  // Creates a shared volume on node-a; its volume (with context) in `vol`.
  std::string MakeShared(const std::string& name, ::csi::v1::Volume* vol) {
    ::csi::v1::CreateVolumeResponse resp;
    grpc::Status s = Create(SharedReq(name), &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    *vol = resp.volume();
    return resp.volume().volume_id();
  }

  static VolumeCapability SharedCap() {
    return MountCap("", AccessMode::MULTI_NODE_MULTI_WRITER);
  }

  ::csi::v1::NodePublishVolumeRequest PublishReq(const ::csi::v1::Volume& vol,
                                                 const std::string& target) {
    ::csi::v1::NodePublishVolumeRequest r;
    r.set_volume_id(vol.volume_id());
    r.set_staging_target_path(StagingPath(vol.volume_id()));
    r.set_target_path(target);
    *r.mutable_volume_capability() = SharedCap();
    *r.mutable_volume_context() = vol.volume_context();
    (*r.mutable_volume_context())[kContextPodName] = "writer-0";
    (*r.mutable_volume_context())[kContextPodNamespace] = "apps";
    (*r.mutable_volume_context())[kContextPodUid] = "uid-1";
    return r;
  }
  grpc::Status StageOn(NodeService& n, const ::csi::v1::Volume& vol) {
    ::csi::v1::NodeStageVolumeRequest r;
    r.set_volume_id(vol.volume_id());
    r.set_staging_target_path(StagingPath(vol.volume_id()));
    *r.mutable_volume_capability() = SharedCap();
    *r.mutable_volume_context() = vol.volume_context();
    ::csi::v1::NodeStageVolumeResponse resp;
    return n.NodeStageVolume(nullptr, &r, &resp);
  }
  grpc::Status PublishOn(NodeService& n, const ::csi::v1::Volume& vol,
                         const std::string& target) {
    auto r = PublishReq(vol, target);
    ::csi::v1::NodePublishVolumeResponse resp;
    return n.NodePublishVolume(nullptr, &r, &resp);
  }
  grpc::Status UnpublishOn(NodeService& n, const std::string& id,
                           const std::string& target) {
    ::csi::v1::NodeUnpublishVolumeRequest r;
    r.set_volume_id(id);
    r.set_target_path(target);
    ::csi::v1::NodeUnpublishVolumeResponse resp;
    return n.NodeUnpublishVolume(nullptr, &r, &resp);
  }
  grpc::Status UnstageOn(NodeService& n, const std::string& id) {
    ::csi::v1::NodeUnstageVolumeRequest r;
    r.set_volume_id(id);
    r.set_staging_target_path(StagingPath(id));
    ::csi::v1::NodeUnstageVolumeResponse resp;
    return n.NodeUnstageVolume(nullptr, &r, &resp);
  }

  bool Mounted(const std::string& path) {
    auto m = mounter_.GetMount(path);
    return m.ok() && m->has_value();
  }
  std::vector<std::string> MountsUnder(const std::string& root) {
    std::vector<std::string> out;
    for (const sys::MountInfo& m : mounter_.Mounts()) {
      if (m.target == root || absl::StartsWith(m.target, root + "/")) {
        out.push_back(m.target);
      }
    }
    return out;
  }

  static std::string SocketDir(const FakeAgentConnection& a) {
    return a.socket_path().substr(0, a.socket_path().rfind('/'));
  }

  FakeAgentConnection agent_{"/run/daxlease-a/agent.sock"};
  std::unique_ptr<StateStore> remote_store_;

  FakeVolumeBackend b_backend_{8 * kGiB};
  FakeAgentConnection b_agent_{"/run/daxlease-b/agent.sock"};
  VolumeLocks b_locks_;
  std::unique_ptr<StateStore> b_store_, b_remote_;
  std::unique_ptr<NodeService> node_b_;
};

TEST_F(SharedVolumeTest, CreateRecordsTheDaxVolumeAndFabricTopology) {
  ::csi::v1::Volume vol;
  std::string id = MakeShared("pvc-shared", &vol);
  ASSERT_TRUE(agent_.IsRecorded(id));
  AgentVolume v = agent_.Recorded(id);
  EXPECT_EQ(v.owner_node, "node-a");
  EXPECT_EQ(v.size_bytes, static_cast<uint64_t>(vol.capacity_bytes()));
  EXPECT_EQ(v.mode, VolumeMode::kFsdax);
  EXPECT_EQ(v.fs_type, "ext4");
  EXPECT_TRUE(v.share);
  EXPECT_EQ(v.recall_grace_seconds, 7);
  ASSERT_EQ(vol.accessible_topology_size(), 1);
  EXPECT_THAT(vol.accessible_topology(0).segments(),
              ::testing::UnorderedElementsAre(
                  ::testing::Pair("daxlease.io/fabric", "fabric-1")));
  EXPECT_EQ(vol.volume_context().at(kContextOwnerNode), "node-a");
  EXPECT_EQ(vol.volume_context().at(kContextFabric), "fabric-1");

  // An unshared volume stays on its node, and is recorded too.
  std::string plain = MakeVolume("pvc-plain");
  EXPECT_FALSE(agent_.Recorded(plain).share);
  ::csi::v1::ControllerGetVolumeRequest g;
  g.set_volume_id(plain);
  ::csi::v1::ControllerGetVolumeResponse got;
  ASSERT_TRUE(controller_->ControllerGetVolume(nullptr, &g, &got).ok());
  EXPECT_THAT(got.volume().accessible_topology(0).segments(),
              ::testing::UnorderedElementsAre(
                  ::testing::Pair("daxlease.io/node", "node-a")));
}

TEST_F(SharedVolumeTest, CreateWithTheAgentDownLeavesNothing) {
  agent_.SetDown(true);
  ::csi::v1::CreateVolumeResponse resp;
  grpc::Status s = Create(SharedReq("pvc-down"), &resp);
  EXPECT_EQ(s.error_code(), grpc::UNAVAILABLE) << s.error_message();
  std::string id = VolumeIdForName("pvc-down");
  EXPECT_FALSE(Record(id).has_value());
  EXPECT_FALSE(backend_.Get(id).ok()) << "media of a failed create is gone";

  agent_.SetDown(false);
  ASSERT_TRUE(Create(SharedReq("pvc-down"), &resp).ok());
  EXPECT_TRUE(agent_.IsRecorded(id));
}

TEST_F(SharedVolumeTest, DeleteRefusedWhileLeasesHoldAccess) {
  ::csi::v1::Volume vol;
  std::string id = MakeShared("pvc-del", &vol);
  agent_.SetHoldsAccess(id, true);
  grpc::Status s = Delete(id);
  EXPECT_EQ(s.error_code(), grpc::FAILED_PRECONDITION) << s.error_message();
  EXPECT_TRUE(backend_.Get(id).ok());
  ASSERT_TRUE(Record(id).has_value());
  // Not "deleting": start-up repair would otherwise finish the delete.
  EXPECT_EQ(Record(id)->phase, VolumePhase::kReady);

  agent_.SetHoldsAccess(id, false);
  agent_.SetDown(true);
  EXPECT_EQ(Delete(id).error_code(), grpc::UNAVAILABLE);
  EXPECT_TRUE(backend_.Get(id).ok());

  agent_.SetDown(false);
  ASSERT_TRUE(Delete(id).ok());
  EXPECT_FALSE(agent_.IsRecorded(id));
  EXPECT_FALSE(backend_.Get(id).ok());
}

TEST_F(SharedVolumeTest, StageServesTheVolumeOnItsOwner) {
  ::csi::v1::Volume vol;
  std::string id = MakeShared("pvc-serve", &vol);
  agent_.SetDown(true);
  grpc::Status s = StageOn(*node_, vol);
  EXPECT_EQ(s.error_code(), grpc::UNAVAILABLE) << s.error_message();
  EXPECT_FALSE(Mounted(StagingPath(id)));
  EXPECT_FALSE(backend_.IsAttached(id));
  EXPECT_FALSE(Record(id)->stage.has_value());

  agent_.SetDown(false);
  ASSERT_TRUE(StageOn(*node_, vol).ok());
  ASSERT_TRUE(agent_.IsServed(id));
  EXPECT_EQ(agent_.Served(id).path, StagingPath(id));

  // Unstage asks the agent to stop; it refuses while leases hold access.
  agent_.SetHoldsAccess(id, true);
  EXPECT_EQ(UnstageOn(*node_, id).error_code(), grpc::FAILED_PRECONDITION);
  EXPECT_TRUE(Mounted(StagingPath(id)));
  agent_.SetHoldsAccess(id, false);
  ASSERT_TRUE(UnstageOn(*node_, id).ok());
  EXPECT_FALSE(agent_.IsServed(id));
  EXPECT_FALSE(Mounted(StagingPath(id)));
}

// ControllerExpandVolume of a served volume with holders: the image and the
// filesystem grow at once, then the call answers UNAVAILABLE ("recall in
// progress") while the agent recalls the holders, and once they are out the
// agent grows and remaps the data (complete); a retry after that is OK
// without another recall. Without holders it completes in one call.
TEST_F(SharedVolumeTest, ExpandWithHoldersWaitsForTheRecallThenRemaps) {
  ::csi::v1::Volume vol;
  std::string id = MakeShared("pvc-grow", &vol);
  ASSERT_TRUE(StageOn(*node_, vol).ok());
  agent_.SetHoldsAccess(id, true);
  ::csi::v1::ControllerExpandVolumeRequest r;
  r.set_volume_id(id);
  r.mutable_capacity_range()->set_required_bytes(128 * kMiB);
  ::csi::v1::ControllerExpandVolumeResponse resp;
  for (int i = 0; i < 2; ++i) {
    grpc::Status s = controller_->ControllerExpandVolume(nullptr, &r, &resp);
    EXPECT_EQ(s.error_code(), grpc::UNAVAILABLE) << s.error_message();
    EXPECT_THAT(s.error_message(), ::testing::HasSubstr("recall in progress"));
    // The backend and the filesystem already grew; the holders' data not.
    EXPECT_EQ(Record(id)->capacity_bytes, 128 * kMiB);
    EXPECT_EQ(agent_.Served(id).size_bytes, 64 * kMiB);
  }
  EXPECT_GE(formatter_.grow_calls(), 2);
  grpc::Status s = controller_->ControllerExpandVolume(nullptr, &r, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(resp.capacity_bytes(), static_cast<int64_t>(128 * kMiB));
  EXPECT_FALSE(resp.node_expansion_required());
  EXPECT_EQ(agent_.Served(id).size_bytes, 128 * kMiB);
  EXPECT_EQ(agent_.calls("ReshapeVolume"), 4);  // 3 asks + 1 complete

  // No holders: one call, no recall.
  agent_.SetHoldsAccess(id, false);
  r.mutable_capacity_range()->set_required_bytes(256 * kMiB);
  s = controller_->ControllerExpandVolume(nullptr, &r, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(agent_.Served(id).size_bytes, 256 * kMiB);
  EXPECT_EQ(agent_.calls("ReshapeVolume"), 6);

  // The agent down: UNAVAILABLE, nothing lost; retried later it finishes.
  agent_.SetDown(true);
  r.mutable_capacity_range()->set_required_bytes(512 * kMiB);
  EXPECT_EQ(
      controller_->ControllerExpandVolume(nullptr, &r, &resp).error_code(),
      grpc::UNAVAILABLE);
  agent_.SetDown(false);
  ASSERT_TRUE(controller_->ControllerExpandVolume(nullptr, &r, &resp).ok());
  EXPECT_EQ(agent_.Served(id).size_bytes, 512 * kMiB);
}

// CreateSnapshot of a served volume runs under the agent's Snapshot
// recall: UNAVAILABLE ("recall in progress", which the external-snapshotter
// retries) and nothing recorded while it runs; then the copy is taken with
// the volume Quiesced and its filesystem frozen, the holders are let back
// in, and the snapshot is ready. A retry answers from the record.
TEST_F(SharedVolumeTest, SnapshotOfAServedVolumeCopiesUnderTheRecall) {
  backend_.set_supports_snapshots(true);
  SnapshotStore snapshots(dir_ + "/snapshot-state");
  ASSERT_TRUE(snapshots.Init().ok());
  DriverDeps d = AgentDeps();
  d.snapshots = &snapshots;
  controller_ = std::make_unique<ControllerService>(config_, d);
  ::csi::v1::Volume vol;
  const std::string id = MakeShared("pvc-snap", &vol);
  ASSERT_TRUE(StageOn(*node_, vol).ok());
  bool quiesced_at_copy = false;
  std::set<std::string> frozen_at_copy;
  backend_.OnCopy([&](absl::string_view v) {
    quiesced_at_copy = agent_.Quiesced(v);
    frozen_at_copy = mounter_.Frozen();
  });
  ::csi::v1::CreateSnapshotRequest r;
  r.set_name("snap-1");
  r.set_source_volume_id(id);
  ::csi::v1::CreateSnapshotResponse resp;
  for (int i = 0; i < 2; ++i) {
    grpc::Status s = controller_->CreateSnapshot(nullptr, &r, &resp);
    EXPECT_EQ(s.error_code(), grpc::UNAVAILABLE) << s.error_message();
    EXPECT_THAT(s.error_message(), ::testing::HasSubstr("recall in progress"));
    auto all = snapshots.LoadAll();
    ASSERT_TRUE(all.ok());
    EXPECT_THAT(*all, ::testing::IsEmpty()) << "recorded before the copy";
  }
  grpc::Status s = controller_->CreateSnapshot(nullptr, &r, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(resp.snapshot().ready_to_use());
  EXPECT_EQ(resp.snapshot().size_bytes(), static_cast<int64_t>(64 * kMiB));
  EXPECT_TRUE(quiesced_at_copy) << "copied while holders could write";
  EXPECT_THAT(frozen_at_copy, ::testing::ElementsAre(StagingPath(id)));
  EXPECT_FALSE(agent_.Quiesced(id)) << "holders not let back in";
  EXPECT_THAT(mounter_.Frozen(), ::testing::IsEmpty());
  EXPECT_EQ(agent_.calls("SnapshotVolume"), 4);  // 3 asks + 1 complete
  s = controller_->CreateSnapshot(nullptr, &r, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(agent_.calls("SnapshotVolume"), 4) << "a retry recalled again";

  // A failed copy still lets the holders back in; the retry copies again.
  agent_.SetSnapshotRecallPolls(0);
  backend_.FailNext("CreateSnapshot", absl::ResourceExhaustedError("full"));
  r.set_name("snap-2");
  s = controller_->CreateSnapshot(nullptr, &r, &resp);
  EXPECT_EQ(s.error_code(), grpc::RESOURCE_EXHAUSTED) << s.error_message();
  EXPECT_FALSE(agent_.Quiesced(id));
  ASSERT_TRUE(controller_->CreateSnapshot(nullptr, &r, &resp).ok());
  EXPECT_TRUE(resp.snapshot().ready_to_use());

  // The agent down: UNAVAILABLE, nothing recorded.
  agent_.SetDown(true);
  r.set_name("snap-3");
  EXPECT_EQ(controller_->CreateSnapshot(nullptr, &r, &resp).error_code(),
            grpc::UNAVAILABLE);
  auto all = snapshots.LoadAll();
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 2u);
}

// A plugin killed during the copy of a served volume: the restart removes
// the unfinished snapshot (complete or absent) and lets the holders back in
// at once instead of leaving the volume Quiesced until the CO retries.
TEST_F(SharedVolumeTest, RestartAfterACopyUnderRecallLetsTheHoldersBackIn) {
  backend_.set_supports_snapshots(true);
  SnapshotStore snapshots(dir_ + "/snapshot-state");
  ASSERT_TRUE(snapshots.Init().ok());
  ::csi::v1::Volume vol;
  const std::string id = MakeShared("pvc-snap-crash", &vol);
  ASSERT_TRUE(StageOn(*node_, vol).ok());
  agent_.SetSnapshotRecallPolls(0);
  ASSERT_TRUE(agent_.SnapshotVolume(id, false).ok());
  ASSERT_TRUE(agent_.Quiesced(id));
  // What the killed CreateSnapshot left: its record, still creating.
  SnapshotRecord rec;
  rec.id = "snap-crash";
  rec.name = "snap-crash";
  rec.source_volume_id = id;
  rec.frozen_path = StagingPath(id);
  ASSERT_TRUE(snapshots.Save(rec).ok());

  DriverDeps d = AgentDeps();
  d.snapshots = &snapshots;
  ASSERT_TRUE(RecoverSnapshots(d).ok());
  auto left = snapshots.Load("snap-crash");
  ASSERT_TRUE(left.ok());
  EXPECT_FALSE(left->has_value()) << "a half-made snapshot survived";
  EXPECT_FALSE(agent_.Quiesced(id)) << "holders left out after the restart";
}

TEST_F(SharedVolumeTest, OwnerPublishIsADirectoryWithMountDescriptorSocket) {
  ::csi::v1::Volume vol;
  std::string id = MakeShared("pvc-own", &vol);
  ASSERT_TRUE(StageOn(*node_, vol).ok());
  const std::string t = TargetPath(id);
  grpc::Status published = PublishOn(*node_, vol, t);
  ASSERT_TRUE(published.ok()) << published.error_message();

  auto top = mounter_.GetMount(t);
  ASSERT_TRUE(top.ok() && top->has_value());
  EXPECT_EQ((*top)->fs_type, "tmpfs");
  auto volume = mounter_.GetMount(t + "/volume");
  ASSERT_TRUE(volume.ok() && volume->has_value());
  EXPECT_EQ((*volume)->source, Record(id)->stage->device);
  // The agent's socket directory (a restarted agent's new socket shows
  // there), and agent.sock a link into it.
  auto sock_dir = mounter_.GetMount(t + "/agent");
  ASSERT_TRUE(sock_dir.ok() && sock_dir->has_value());
  EXPECT_EQ((*sock_dir)->source, "/run/daxlease-a");
  EXPECT_TRUE((*sock_dir)->read_only);
  EXPECT_EQ(mounter_.SymlinkValue(t + "/agent.sock"), "agent/agent.sock");

  ASSERT_TRUE(agent_.IsPublished(id, t));
  AgentPublish p = agent_.Published(id, t);
  EXPECT_TRUE(p.owner_local);
  EXPECT_EQ(p.owner_node, "node-a");
  EXPECT_EQ(p.pod.name, "writer-0");
  EXPECT_EQ(p.pod.ns, "apps");
  EXPECT_EQ(p.pod.uid, "uid-1");
  EXPECT_EQ(mounter_.FileContent(t + "/daxlease.json"), FakeDescriptor(p));
  EXPECT_TRUE(Record(id)->publishes.at(t).shared_dir);

  // Idempotent.
  int mounts = mounter_.mount_calls();
  published = PublishOn(*node_, vol, t);
  ASSERT_TRUE(published.ok()) << published.error_message();
  EXPECT_EQ(mounter_.mount_calls(), mounts);
}

// A shared devdax volume (no filesystem): staged as its device alone and
// served as the device; a mount-access publish is the published directory
// with no volume/ bind (libdaxlease maps the device the descriptor names);
// without share, mount access stays refused.
TEST_F(SharedVolumeTest, SharedDevdaxIsServedAsTheDeviceAndPublishedAsADir) {
  FakeVolumeBackend devdax_backend(8 * kGiB, /*devdax=*/true);
  DriverDeps d = AgentDeps();
  d.backend = &devdax_backend;
  ControllerService controller(config_, d);
  NodeService node(config_, d);
  ::csi::v1::CreateVolumeRequest r = SharedReq("pvc-dd-shared");
  (*r.mutable_parameters())["daxlease.io/mode"] = "devdax";
  r.mutable_parameters()->erase("csi.storage.k8s.io/fstype");
  ::csi::v1::CreateVolumeResponse resp;
  grpc::Status s = controller.CreateVolume(nullptr, &r, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  const ::csi::v1::Volume& vol = resp.volume();
  const std::string id = vol.volume_id();

  ASSERT_TRUE(StageOn(node, vol).ok());
  EXPECT_FALSE(Mounted(StagingPath(id))) << "no filesystem to mount";
  ASSERT_TRUE(Record(id)->stage.has_value());
  EXPECT_TRUE(Record(id)->stage->block);
  ASSERT_TRUE(agent_.IsServed(id));
  EXPECT_EQ(agent_.Served(id).mode, VolumeMode::kDevdax);
  EXPECT_EQ(agent_.Served(id).path, Record(id)->stage->device);
  ASSERT_TRUE(StageOn(node, vol).ok()) << "idempotent";

  const std::string t = TargetPath(id);
  grpc::Status published = PublishOn(node, vol, t);
  ASSERT_TRUE(published.ok()) << published.error_message();
  auto top = mounter_.GetMount(t);
  ASSERT_TRUE(top.ok() && top->has_value());
  EXPECT_EQ((*top)->fs_type, "tmpfs");
  EXPECT_FALSE(Mounted(t + "/volume"));
  ASSERT_TRUE(agent_.IsPublished(id, t));
  EXPECT_TRUE(agent_.Published(id, t).owner_local);
  EXPECT_TRUE(Record(id)->publishes.at(t).shared_dir);

  ASSERT_TRUE(UnpublishOn(node, id, t).ok());
  ASSERT_TRUE(UnstageOn(node, id).ok());
  EXPECT_FALSE(agent_.IsServed(id));
  EXPECT_FALSE(devdax_backend.IsAttached(id));

  // Not shared: a devdax volume has block access only.
  ::csi::v1::CreateVolumeRequest plain = r;
  plain.set_name("pvc-dd-plain");
  plain.mutable_parameters()->erase("daxlease.io/share");
  s = controller.CreateVolume(nullptr, &plain, &resp);
  EXPECT_EQ(s.error_code(), grpc::INVALID_ARGUMENT) << s.error_message();
}

// A shared devdax volume on a backend that grows by a copy to new media
// (ndctl): ControllerExpandVolume waits for the Reshape recall (UNAVAILABLE,
// nothing grown yet: the old device stays mapped by the agent), then the
// agent stops serving, the backend grows, and the agent serves the device
// again at the new size before the reshape completes. A grow the backend
// refuses lets the holders back in at the old size and says why.
TEST_F(SharedVolumeTest, DevdaxOnACopyingBackendGrowsAfterTheRecall) {
  FakeVolumeBackend devdax_backend(8 * kGiB, /*devdax=*/true);
  devdax_backend.SetExpandsOnline(false);
  DriverDeps d = AgentDeps();
  d.backend = &devdax_backend;
  ControllerService controller(config_, d);
  NodeService node(config_, d);
  ::csi::v1::CreateVolumeRequest cr = SharedReq("pvc-dd-grow");
  (*cr.mutable_parameters())["daxlease.io/mode"] = "devdax";
  cr.mutable_parameters()->erase("csi.storage.k8s.io/fstype");
  ::csi::v1::CreateVolumeResponse created;
  grpc::Status s = controller.CreateVolume(nullptr, &cr, &created);
  ASSERT_TRUE(s.ok()) << s.error_message();
  const std::string id = created.volume().volume_id();
  ASSERT_TRUE(StageOn(node, created.volume()).ok());
  agent_.SetHoldsAccess(id, true);

  ::csi::v1::ControllerExpandVolumeRequest r;
  r.set_volume_id(id);
  r.mutable_capacity_range()->set_required_bytes(128 * kMiB);
  ::csi::v1::ControllerExpandVolumeResponse resp;
  for (int i = 0; i < 2; ++i) {
    s = controller.ControllerExpandVolume(nullptr, &r, &resp);
    EXPECT_EQ(s.error_code(), grpc::UNAVAILABLE) << s.error_message();
    EXPECT_THAT(s.error_message(), ::testing::HasSubstr("recall in progress"));
    EXPECT_EQ(Record(id)->capacity_bytes, 64 * kMiB);
    EXPECT_EQ(devdax_backend.Get(id)->capacity_bytes, 64 * kMiB);
    EXPECT_TRUE(agent_.IsServed(id));
  }
  EXPECT_EQ(agent_.calls("StopServing"), 0);
  agent_.SetHoldsAccess(id, false);  // the recall released them
  s = controller.ControllerExpandVolume(nullptr, &r, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(resp.capacity_bytes(), static_cast<int64_t>(128 * kMiB));
  EXPECT_FALSE(resp.node_expansion_required());
  EXPECT_EQ(agent_.calls("StopServing"), 1);
  EXPECT_EQ(Record(id)->capacity_bytes, 128 * kMiB);
  ASSERT_TRUE(agent_.IsServed(id));
  EXPECT_EQ(agent_.Served(id).size_bytes, 128 * kMiB);
  EXPECT_EQ(agent_.Served(id).path, Record(id)->stage->device);
  EXPECT_EQ(agent_.calls("ReshapeVolume"), 4);  // 3 asks + 1 complete

  // No room for the copy: the error, and the agent serves the old size.
  r.mutable_capacity_range()->set_required_bytes(16 * kGiB);
  EXPECT_EQ(controller.ControllerExpandVolume(nullptr, &r, &resp).error_code(),
            grpc::RESOURCE_EXHAUSTED);
  ASSERT_TRUE(agent_.IsServed(id));
  EXPECT_EQ(agent_.Served(id).size_bytes, 128 * kMiB);
  EXPECT_EQ(Record(id)->capacity_bytes, 128 * kMiB);
}

// A directory an older plugin published, agent.sock a bind of the socket
// file: publishing it again keeps that bind, unpublishing removes it too.
TEST_F(SharedVolumeTest, OlderPluginsSocketFileBindIsKeptThenUnmounted) {
  ::csi::v1::Volume vol;
  std::string id = MakeShared("pvc-old", &vol);
  ASSERT_TRUE(StageOn(*node_, vol).ok());
  const std::string t = TargetPath(id);
  ASSERT_TRUE(PublishOn(*node_, vol, t).ok());
  ASSERT_TRUE(mounter_.Unmount(t + "/agent").ok());
  ASSERT_TRUE(mounter_.RemovePath(t + "/agent.sock").ok());
  ASSERT_TRUE(mounter_.MakeFile(t + "/agent.sock").ok());
  ASSERT_TRUE(
      mounter_.BindMount(agent_.socket_path(), t + "/agent.sock", false).ok());

  grpc::Status again = PublishOn(*node_, vol, t);
  ASSERT_TRUE(again.ok()) << again.error_message();
  EXPECT_EQ((*mounter_.GetMount(t + "/agent.sock"))->source,
            agent_.socket_path());
  ASSERT_TRUE(UnpublishOn(*node_, id, t).ok());
  EXPECT_THAT(MountsUnder(t), ::testing::IsEmpty());
}

TEST_F(SharedVolumeTest, PublishWithTheAgentDownLeavesNothing) {
  ::csi::v1::Volume vol;
  std::string id = MakeShared("pvc-pdown", &vol);
  ASSERT_TRUE(StageOn(*node_, vol).ok());
  agent_.SetDown(true);
  const std::string t = TargetPath(id);
  grpc::Status s = PublishOn(*node_, vol, t);
  EXPECT_EQ(s.error_code(), grpc::UNAVAILABLE) << s.error_message();
  EXPECT_THAT(MountsUnder(t), ::testing::IsEmpty());
  EXPECT_FALSE(mounter_.PathExists(t));
  EXPECT_TRUE(Record(id)->publishes.empty());
  EXPECT_FALSE(mounter_.FileContent(t + "/daxlease.json").has_value());
}

TEST_F(SharedVolumeTest, UnpublishReleasesThroughTheAgentFirst) {
  ::csi::v1::Volume vol;
  std::string id = MakeShared("pvc-unp", &vol);
  ASSERT_TRUE(StageOn(*node_, vol).ok());
  const std::string t = TargetPath(id);
  grpc::Status published = PublishOn(*node_, vol, t);
  ASSERT_TRUE(published.ok()) << published.error_message();

  agent_.SetDown(true);
  EXPECT_EQ(UnpublishOn(*node_, id, t).error_code(), grpc::UNAVAILABLE);
  EXPECT_EQ(MountsUnder(t).size(), 3u) << "nothing leaves the pod unflushed";
  EXPECT_TRUE(Record(id)->publishes.count(t));

  agent_.SetDown(false);
  ASSERT_TRUE(UnpublishOn(*node_, id, t).ok());
  EXPECT_FALSE(agent_.IsPublished(id, t));
  EXPECT_THAT(MountsUnder(t), ::testing::IsEmpty());
  EXPECT_TRUE(Record(id)->publishes.empty());
  ASSERT_TRUE(UnpublishOn(*node_, id, t).ok()) << "idempotent";
}

TEST_F(SharedVolumeTest, AnotherNodeOfTheFabricGetsDescriptorAndSocket) {
  ::csi::v1::Volume vol;
  std::string id = MakeShared("pvc-remote", &vol);
  StartNodeB();
  ASSERT_TRUE(StageOn(*node_b_, vol).ok());
  EXPECT_FALSE(b_backend_.IsAttached(id));
  const std::string t = "/k/pods/p2/" + id;
  ASSERT_TRUE(PublishOn(*node_b_, vol, t).ok());

  EXPECT_EQ((*mounter_.GetMount(t))->fs_type, "tmpfs");
  EXPECT_EQ((*mounter_.GetMount(t + "/agent"))->source, "/run/daxlease-b");
  EXPECT_EQ(mounter_.SymlinkValue(t + "/agent.sock"), "agent/agent.sock");
  EXPECT_FALSE(Mounted(t + "/volume")) << "no local memory on node-b";
  ASSERT_TRUE(b_agent_.IsPublished(id, t));
  AgentPublish p = b_agent_.Published(id, t);
  EXPECT_FALSE(p.owner_local);
  EXPECT_EQ(p.owner_node, "node-a");
  EXPECT_EQ(mounter_.FileContent(t + "/daxlease.json"), FakeDescriptor(p));
  EXPECT_FALSE(agent_.IsPublished(id, t)) << "node-a's agent is not asked";

  // Unpublish while node-b's agent is down keeps the directory.
  b_agent_.SetDown(true);
  EXPECT_EQ(UnpublishOn(*node_b_, id, t).error_code(), grpc::UNAVAILABLE);
  EXPECT_EQ(MountsUnder(t).size(), 2u);
  b_agent_.SetDown(false);
  ASSERT_TRUE(UnpublishOn(*node_b_, id, t).ok());
  EXPECT_THAT(MountsUnder(t), ::testing::IsEmpty());
  EXPECT_FALSE(b_agent_.IsPublished(id, t));
  ASSERT_TRUE(UnstageOn(*node_b_, id).ok());
  auto left = b_remote_->LoadAll();
  ASSERT_TRUE(left.ok());
  EXPECT_THAT(*left, ::testing::IsEmpty());
}

TEST_F(SharedVolumeTest, RemotePublishWithTheAgentDownLeavesNothing) {
  ::csi::v1::Volume vol;
  std::string id = MakeShared("pvc-rdown", &vol);
  StartNodeB();
  ASSERT_TRUE(StageOn(*node_b_, vol).ok());
  b_agent_.SetDown(true);
  const std::string t = "/k/pods/p2/" + id;
  grpc::Status s = PublishOn(*node_b_, vol, t);
  EXPECT_EQ(s.error_code(), grpc::UNAVAILABLE) << s.error_message();
  EXPECT_THAT(MountsUnder(t), ::testing::IsEmpty());
  EXPECT_FALSE(mounter_.PathExists(t));

  // An agent that never ran (no socket) is the same.
  b_agent_.SetDown(false);
  ASSERT_TRUE(mounter_.RemovePath(b_agent_.socket_path()).ok());
  s = PublishOn(*node_b_, vol, t);
  EXPECT_EQ(s.error_code(), grpc::UNAVAILABLE) << s.error_message();
  EXPECT_THAT(s.error_message(), ::testing::HasSubstr("agent"));
  EXPECT_THAT(MountsUnder(t), ::testing::IsEmpty());
  EXPECT_FALSE(b_agent_.IsPublished(id, t));
  auto rec = b_remote_->Load(id);
  ASSERT_TRUE(rec.ok() && rec->has_value());
  EXPECT_TRUE((*rec)->publishes.empty());
}

TEST_F(SharedVolumeTest, AnotherFabricOrNoAgentIsRefused) {
  ::csi::v1::Volume vol;
  std::string id = MakeShared("pvc-far", &vol);
  (*vol.mutable_volume_context())[kContextFabric] = "fabric-2";
  StartNodeB();
  grpc::Status s = StageOn(*node_b_, vol);
  EXPECT_EQ(s.error_code(), grpc::FAILED_PRECONDITION) << s.error_message();
  EXPECT_THAT(s.error_message(), ::testing::HasSubstr("fabric"));

  // A plugin without an agent cannot reach another node's volume.
  DriverConfig c = config_;
  c.node_id = "node-c";
  StateStore c_store(dir_ + "/c-state");
  ASSERT_TRUE(c_store.Init().ok());
  VolumeLocks c_locks;
  FakeVolumeBackend c_backend{kGiB};
  NodeService lone(
      c, DriverDeps{&c_backend, &mounter_, &formatter_, &c_store, &c_locks});
  (*vol.mutable_volume_context())[kContextFabric] = "fabric-1";
  s = StageOn(lone, vol);
  EXPECT_EQ(s.error_code(), grpc::FAILED_PRECONDITION) << s.error_message();
  EXPECT_THAT(s.error_message(), ::testing::HasSubstr("agent"));
}

TEST_F(SharedVolumeTest, NodeGetInfoReportsTheFabricAndFsdaxSharing) {
  ::csi::v1::NodeGetInfoRequest r;
  ::csi::v1::NodeGetInfoResponse resp;
  ASSERT_TRUE(node_->NodeGetInfo(nullptr, &r, &resp).ok());
  EXPECT_THAT(resp.accessible_topology().segments(),
              ::testing::UnorderedElementsAre(
                  ::testing::Pair("daxlease.io/node", "node-a"),
                  ::testing::Pair("daxlease.io/fabric", "fabric-1"),
                  ::testing::Pair("daxlease.io/fsdax-sharing", "true")));
  // RDMA verbs without on-demand paging: devdax only.
  agent_.SetCanShareFsdax(false);
  ASSERT_TRUE(node_->NodeGetInfo(nullptr, &r, &resp).ok());
  EXPECT_EQ(
      resp.accessible_topology().segments().at("daxlease.io/fsdax-sharing"),
      "false");
  // An agent that does not answer: the key is left out, the call answers.
  agent_.SetDown(true);
  ::csi::v1::NodeGetInfoResponse down;
  ASSERT_TRUE(node_->NodeGetInfo(nullptr, &r, &down).ok());
  EXPECT_EQ(
      down.accessible_topology().segments().count("daxlease.io/fsdax-sharing"),
      0u);
}

// A shared devdax volume migrates from node-a (its creator, staged and
// published there) to node-b (staged and published there as a remote
// node), through the plugins' NodeMedia service as the agents call it:
// node-b's plugin makes the namespace and takes the volume's records (its
// stage and publish become an owner's), node-a's frees the old namespace
// after the switch and keeps only a remote node's records. Then every
// CSI call works on both nodes as for a volume created on node-b: node-a
// unpublishes, unstages, stages and publishes again as a remote node;
// node-b unstages (the agent stops serving) and DeleteVolume frees its
// namespace. Nothing of the volume is left on either node.
TEST_F(SharedVolumeTest, MigratedDevdaxMediaAndRecordsFollowTheOwner) {
  FakeVolumeBackend a_backend(8 * kGiB, /*devdax=*/true);
  FakeVolumeBackend b_backend(8 * kGiB, /*devdax=*/true);
  DriverDeps a = AgentDeps();
  a.backend = &a_backend;
  ControllerService a_controller(config_, a);
  NodeService a_node(config_, a);
  MediaService a_media(config_, a);
  StartNodeB();
  DriverConfig bc = config_;
  bc.node_id = "node-b";
  DriverDeps b{&b_backend, &mounter_, &formatter_,    b_store_.get(),
               &b_locks_,  &b_agent_, b_remote_.get()};
  ControllerService b_controller(bc, b);
  NodeService b_node(bc, b);
  MediaService b_media(bc, b);

  ::csi::v1::CreateVolumeRequest cr = SharedReq("pvc-dd-move");
  (*cr.mutable_parameters())["daxlease.io/mode"] = "devdax";
  cr.mutable_parameters()->erase("csi.storage.k8s.io/fstype");
  ::csi::v1::CreateVolumeResponse created;
  grpc::Status s = a_controller.CreateVolume(nullptr, &cr, &created);
  ASSERT_TRUE(s.ok()) << s.error_message();
  const ::csi::v1::Volume& vol = created.volume();
  const std::string id = vol.volume_id();
  const std::string ta = TargetPath(id);
  const std::string tb = "/k/pods/p2/" + id;
  ASSERT_TRUE(StageOn(a_node, vol).ok());
  ASSERT_TRUE(PublishOn(a_node, vol, ta).ok());
  ASSERT_TRUE(StageOn(b_node, vol).ok());
  ASSERT_TRUE(PublishOn(b_node, vol, tb).ok());
  ASSERT_TRUE(b_remote_->Load(id)->has_value());

  // The target's media, twice (the agent retries after a crash).
  ::daxlease::media::v1::CreateMediaRequest mk;
  mk.set_volume_id(id);
  mk.set_mode("devdax");
  mk.set_size_bytes(static_cast<uint64_t>(vol.capacity_bytes()));
  auto made = b_media.Create(mk);
  ASSERT_TRUE(made.ok()) << made.status();
  EXPECT_GE(made->size_bytes(), static_cast<uint64_t>(vol.capacity_bytes()));
  auto again = b_media.Create(mk);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->device(), made->device());
  ASSERT_TRUE(b_backend.Get(id).ok());
  auto brec = b_store_->Load(id);
  ASSERT_TRUE(brec.ok() && brec->has_value());
  EXPECT_EQ((*brec)->mode, VolumeMode::kDevdax);
  ASSERT_TRUE((*brec)->stage.has_value());
  EXPECT_EQ((*brec)->stage->staging_path, StagingPath(id));
  EXPECT_EQ((*brec)->stage->device, made->device());
  EXPECT_TRUE((*brec)->stage->block);
  ASSERT_TRUE((*brec)->publishes.count(tb));
  EXPECT_TRUE((*brec)->publishes.at(tb).shared_dir);
  EXPECT_FALSE(b_remote_->Load(id)->has_value()) << "the records moved";

  // The source's old media, after the verified switch (the agent unmapped
  // it). Twice: the second finds nothing to do.
  ::daxlease::media::v1::FreeMediaRequest fr;
  fr.set_volume_id(id);
  fr.set_owner_node("node-b");
  ASSERT_TRUE(a_media.Free(fr).ok());
  ASSERT_TRUE(a_media.Free(fr).ok());
  EXPECT_EQ(a_backend.Get(id).status().code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(Record(id).has_value());
  auto arem = remote_store_->Load(id);
  ASSERT_TRUE(arem.ok() && arem->has_value());
  ASSERT_TRUE((*arem)->stage.has_value());
  EXPECT_EQ((*arem)->stage->staging_path, StagingPath(id));
  EXPECT_TRUE((*arem)->publishes.count(ta));

  // node-a is a remote node now: unpublish and unstage, then a new pod
  // there stages and publishes remotely (its context still names node-a).
  ASSERT_TRUE(UnpublishOn(a_node, id, ta).ok());
  ASSERT_TRUE(UnstageOn(a_node, id).ok());
  EXPECT_FALSE(remote_store_->Load(id)->has_value());
  s = StageOn(a_node, vol);
  ASSERT_TRUE(s.ok()) << s.error_message();
  s = PublishOn(a_node, vol, ta);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_FALSE(a_backend.Get(id).ok()) << "no media on node-a";
  ASSERT_TRUE(UnpublishOn(a_node, id, ta).ok());
  ASSERT_TRUE(UnstageOn(a_node, id).ok());

  // node-b is the owner now: its unstage stops the agent serving, its
  // DeleteVolume frees the namespace.
  ASSERT_TRUE(UnpublishOn(b_node, id, tb).ok());
  const int stops = b_agent_.calls("StopServing");
  ASSERT_TRUE(UnstageOn(b_node, id).ok());
  EXPECT_EQ(b_agent_.calls("StopServing"), stops + 1);
  ::csi::v1::DeleteVolumeRequest dr;
  dr.set_volume_id(id);
  ::csi::v1::DeleteVolumeResponse dresp;
  // Sent to its creator (as the CO does), which has no record now: the
  // DaxVolume goes (the new owner's agent then frees its media through
  // node-b's plugin, as the next call does here).
  ASSERT_TRUE(agent_.IsRecorded(id));
  s = a_controller.DeleteVolume(nullptr, &dr, &dresp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_FALSE(agent_.IsRecorded(id));
  s = b_controller.DeleteVolume(nullptr, &dr, &dresp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_FALSE(b_backend.Get(id).ok());
  EXPECT_FALSE(b_store_->Load(id)->has_value());
  EXPECT_THAT(*remote_store_->LoadAll(), ::testing::IsEmpty());
  EXPECT_THAT(*b_remote_->LoadAll(), ::testing::IsEmpty());
}

// FreeMedia's durable steps: when the backend's Delete runs (where a kill
// -9 would cut it), the stage and publish are with the remote records and
// the local record is emptied and marked deleting; a Delete that fails
// (the device still in use) leaves exactly that, the call answers its
// error, and a restarted plugin (RecoverVolumes) finishes the free. Media
// without any record (a CreateMedia cut before its record, its migration
// then failed) is freed all the same. Nothing leaks.
TEST_F(SharedVolumeTest, MediaFreeIsFinishedAfterACrashAndLeaksNothing) {
  FakeVolumeBackend a_backend(8 * kGiB, /*devdax=*/true);
  DriverDeps a = AgentDeps();
  a.backend = &a_backend;
  ControllerService a_controller(config_, a);
  NodeService a_node(config_, a);
  MediaService a_media(config_, a);
  ::csi::v1::CreateVolumeRequest cr = SharedReq("pvc-dd-crash");
  (*cr.mutable_parameters())["daxlease.io/mode"] = "devdax";
  cr.mutable_parameters()->erase("csi.storage.k8s.io/fstype");
  ::csi::v1::CreateVolumeResponse created;
  ASSERT_TRUE(a_controller.CreateVolume(nullptr, &cr, &created).ok());
  const std::string id = created.volume().volume_id();
  ASSERT_TRUE(StageOn(a_node, created.volume()).ok());

  bool checked = false;
  a_backend.OnDelete([&](absl::string_view) {
    auto local = store_->Load(id);
    auto remote = remote_store_->Load(id);
    ASSERT_TRUE(local.ok() && local->has_value());
    EXPECT_EQ((*local)->phase, VolumePhase::kDeleting);
    EXPECT_FALSE((*local)->stage.has_value());
    ASSERT_TRUE(remote.ok() && remote->has_value());
    ASSERT_TRUE((*remote)->stage.has_value());
    EXPECT_EQ((*remote)->stage->staging_path, StagingPath(id));
    checked = true;
  });
  a_backend.FailNext("Delete",
                     absl::FailedPreconditionError("/dev/dax0.1 is open"));
  ::daxlease::media::v1::FreeMediaRequest fr;
  fr.set_volume_id(id);
  fr.set_owner_node("node-b");
  EXPECT_EQ(a_media.Free(fr).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(a_backend.Get(id).ok()) << "nothing freed yet";
  ASSERT_TRUE(store_->Load(id)->has_value());

  // The plugin restarts: its recovery finishes the delete.
  ASSERT_TRUE(RecoverVolumes(a).ok());
  EXPECT_TRUE(checked) << "the state a kill -9 in Delete leaves";
  EXPECT_FALSE(a_backend.Get(id).ok()) << "the restart finished the free";
  EXPECT_FALSE(store_->Load(id)->has_value());
  ASSERT_TRUE(a_media.Free(fr).ok()) << "the agent's retry: nothing left";
  ASSERT_TRUE(UnstageOn(a_node, id).ok());
  EXPECT_THAT(*remote_store_->LoadAll(), ::testing::IsEmpty());

  // Media without a record.
  a_backend.OnDelete(nullptr);
  a_backend.AddMedia("pvc-orphan", 64 * kMiB);
  fr.set_volume_id("pvc-orphan");
  ASSERT_TRUE(a_media.Free(fr).ok());
  EXPECT_FALSE(a_backend.Get("pvc-orphan").ok());
}

}  // namespace
}  // namespace daxlease::csi
