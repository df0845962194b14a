// Writes the seed corpus of csi_requests_fuzz into a directory:
//   csi_requests_seeds tests/fuzz/corpus/csi_requests
// Each seed is a short, valid call sequence (see csi_requests_format.h) that
// reaches deep into the services; the fuzzer mutates from there. Run it
// again when the format or the request shapes change, and commit the output.
#include <cstdio>
#include <fstream>
#include <string>

#include "csi/validation.h"
#include "proto/csi.pb.h"
#include "tests/fuzz/csi_requests_format.h"

namespace daxlease::csi::fuzz {
namespace {

using ::csi::v1::VolumeCapability;
using Mode = VolumeCapability::AccessMode::Mode;

constexpr int64_t kMiB = 1 << 20;

VolumeCapability MountCap(
    const std::string& fs = "ext4",
    Mode mode = VolumeCapability::AccessMode::SINGLE_NODE_WRITER) {
  VolumeCapability c;
  c.mutable_mount()->set_fs_type(fs);
  c.mutable_access_mode()->set_mode(mode);
  return c;
}
VolumeCapability BlockCap() {
  VolumeCapability c;
  c.mutable_block();
  c.mutable_access_mode()->set_mode(
      VolumeCapability::AccessMode::SINGLE_NODE_WRITER);
  return c;
}

class Seq {
 public:
  template <typename M>
  Seq& Add(Op op, const M& msg) {
    AppendStep(out_, op, msg.SerializeAsString());
    return *this;
  }
  Seq& Raw(Op op, const std::string& payload) {
    AppendStep(out_, op, payload);
    return *this;
  }
  const std::string& str() const { return out_; }

 private:
  std::string out_;
};

::csi::v1::CreateVolumeRequest Create(const std::string& name, int64_t bytes,
                                      const VolumeCapability& cap,
                                      const std::string& fs = "ext4",
                                      bool share = false) {
  ::csi::v1::CreateVolumeRequest r;
  r.set_name(name);
  r.mutable_capacity_range()->set_required_bytes(bytes);
  *r.add_volume_capabilities() = cap;
  if (!fs.empty()) (*r.mutable_parameters())[kParamFsType] = fs;
  if (share) {
    (*r.mutable_parameters())[kParamShare] = "true";
    (*r.mutable_parameters())[kParamRecallGrace] = "45";
  }
  auto* topo = r.mutable_accessibility_requirements()->add_requisite();
  (*topo->mutable_segments())[kTopologyKey] = "node-a";
  return r;
}

std::string Staging(const std::string& id) { return "/k/staging/" + id; }
std::string Target(const std::string& id) { return "/k/pods/p1/" + id; }

// create, stage, publish, stats, expand (controller + node), unpublish,
// unstage, delete.
Seq Lifecycle(const std::string& name, const VolumeCapability& cap,
              const std::string& fs, bool share = false) {
  const std::string id = VolumeIdForName(name);
  Seq s;
  s.Add(Op::kCreateVolume, Create(name, 64 * kMiB, cap, fs, share));
  ::csi::v1::NodeStageVolumeRequest stage;
  stage.set_volume_id(id);
  stage.set_staging_target_path(Staging(id));
  *stage.mutable_volume_capability() = cap;
  s.Add(Op::kNodeStageVolume, stage);
  ::csi::v1::NodePublishVolumeRequest pub;
  pub.set_volume_id(id);
  pub.set_staging_target_path(Staging(id));
  pub.set_target_path(Target(id));
  *pub.mutable_volume_capability() = cap;
  s.Add(Op::kNodePublishVolume, pub);
  ::csi::v1::NodeGetVolumeStatsRequest stats;
  stats.set_volume_id(id);
  stats.set_volume_path(Target(id));
  s.Add(Op::kNodeGetVolumeStats, stats);
  ::csi::v1::ControllerExpandVolumeRequest cexp;
  cexp.set_volume_id(id);
  cexp.mutable_capacity_range()->set_required_bytes(128 * kMiB);
  *cexp.mutable_volume_capability() = cap;
  s.Add(Op::kControllerExpandVolume, cexp);
  ::csi::v1::NodeExpandVolumeRequest nexp;
  nexp.set_volume_id(id);
  nexp.set_volume_path(Target(id));
  nexp.set_staging_target_path(Staging(id));
  nexp.mutable_capacity_range()->set_required_bytes(128 * kMiB);
  *nexp.mutable_volume_capability() = cap;
  s.Add(Op::kNodeExpandVolume, nexp);
  ::csi::v1::ControllerGetVolumeRequest get;
  get.set_volume_id(id);
  s.Add(Op::kControllerGetVolume, get);
  ::csi::v1::NodeUnpublishVolumeRequest unpub;
  unpub.set_volume_id(id);
  unpub.set_target_path(Target(id));
  s.Add(Op::kNodeUnpublishVolume, unpub);
  ::csi::v1::NodeUnstageVolumeRequest unstage;
  unstage.set_volume_id(id);
  unstage.set_staging_target_path(Staging(id));
  s.Add(Op::kNodeUnstageVolume, unstage);
  ::csi::v1::DeleteVolumeRequest del;
  del.set_volume_id(id);
  s.Add(Op::kDeleteVolume, del);
  return s;
}

// create two volumes, stage one, restart, list with paging, capacity,
// validate capabilities.
Seq RestartAndQueries() {
  const std::string a = VolumeIdForName("pvc-a");
  Seq s;
  s.Add(Op::kCreateVolume, Create("pvc-a", 32 * kMiB, MountCap()));
  s.Add(Op::kCreateVolume, Create("pvc-b", 400 * kMiB, MountCap("xfs"), "xfs"));
  ::csi::v1::NodeStageVolumeRequest stage;
  stage.set_volume_id(a);
  stage.set_staging_target_path(Staging(a));
  *stage.mutable_volume_capability() = MountCap();
  s.Add(Op::kNodeStageVolume, stage);
  s.Raw(Op::kRestart, "");
  ::csi::v1::ListVolumesRequest list;
  list.set_max_entries(1);
  s.Add(Op::kListVolumes, list);
  list.set_starting_token("1");
  s.Add(Op::kListVolumes, list);
  ::csi::v1::GetCapacityRequest cap;
  *cap.add_volume_capabilities() = MountCap("xfs");
  (*cap.mutable_parameters())[kParamMode] = "fsdax";
  (*cap.mutable_accessible_topology()->mutable_segments())[kTopologyKey] =
      "node-a";
  s.Add(Op::kGetCapacity, cap);
  ::csi::v1::ValidateVolumeCapabilitiesRequest v;
  v.set_volume_id(a);
  *v.add_volume_capabilities() =
      MountCap("ext4", VolumeCapability::AccessMode::MULTI_NODE_MULTI_WRITER);
  *v.add_volume_capabilities() = BlockCap();
  (*v.mutable_volume_context())["daxlease.io/share"] = "false";
  s.Add(Op::kValidateVolumeCapabilities, v);
  s.Add(Op::kGetPluginInfo, ::csi::v1::GetPluginInfoRequest());
  s.Add(Op::kProbe, ::csi::v1::ProbeRequest());
  return s;
}

// A stage whose mount fails once, then its retry, then a restart.
Seq FailedStage() {
  const std::string id = VolumeIdForName("pvc-f");
  Seq s;
  s.Add(Op::kCreateVolume, Create("pvc-f", 64 * kMiB, MountCap()));
  s.Raw(Op::kFailNext, std::string(1, '\x07'));  // FakeMounter Mount
  ::csi::v1::NodeStageVolumeRequest stage;
  stage.set_volume_id(id);
  stage.set_staging_target_path(Staging(id));
  *stage.mutable_volume_capability() = MountCap();
  stage.mutable_volume_capability()->mutable_mount()->add_mount_flags(
      "noatime");
  s.Add(Op::kNodeStageVolume, stage);
  s.Add(Op::kNodeStageVolume, stage);
  s.Raw(Op::kRestart, "");
  s.Add(Op::kNodeStageVolume, stage);
  return s;
}

bool Write(const std::string& dir, const std::string& name, const Seq& s) {
  std::ofstream f(dir + "/" + name, std::ios::binary | std::ios::trunc);
  f << s.str();
  return static_cast<bool>(f);
}

}  // namespace
}  // namespace daxlease::csi::fuzz

int main(int argc, char** argv) {
  using namespace daxlease::csi::fuzz;
  if (argc != 2) {
    fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  bool ok =
      Write(dir, "lifecycle_mount_ext4",
            Lifecycle("pvc-1", MountCap(), "ext4")) &&
      Write(dir, "lifecycle_block", Lifecycle("pvc-2", BlockCap(), "")) &&
      Write(dir, "lifecycle_shared_xfs",
            Lifecycle(
                "pvc-3",
                MountCap("xfs",
                         VolumeCapability::AccessMode::MULTI_NODE_MULTI_WRITER),
                "xfs", /*share=*/true)) &&
      Write(dir, "restart_and_queries", RestartAndQueries()) &&
      Write(dir, "failed_stage", FailedStage());
  return ok ? 0 : 1;
}
