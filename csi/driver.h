// What the CSI services share: the configuration from the command line and
// the boundaries they act through. Built by main.cc (or a test) and handed
// to each service's constructor; the services own none of it.
#ifndef DAXLEASE_CSI_DRIVER_H_
#define DAXLEASE_CSI_DRIVER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "csi/agent_connection.h"
#include "csi/snapshot_store.h"
#include "csi/state_store.h"
#include "csi/volume_backend.h"
#include "csi/volume_locks.h"
#include "grpcpp/support/status.h"
#include "lib/sys/formatter.h"
#include "lib/sys/mounter.h"

namespace daxlease::csi {

struct DriverConfig {
  std::string node_id;
  // Staging and target paths must be below one of these.
  std::vector<std::string> allowed_roots = {"/var/lib/kubelet"};
  int64_t max_volumes_per_node = 64;
  // The RDMA fabric this node is on (topology daxlease.io/fabric); shared
  // volumes are accessible from every node of it. "" = none.
  std::string fabric;
};

struct DriverDeps {
  VolumeBackend* backend = nullptr;
  sys::Mounter* mounter = nullptr;
  sys::Formatter* formatter = nullptr;
  StateStore* store = nullptr;
  VolumeLocks* locks = nullptr;
  // The node agent; nullptr when none is configured (no DaxVolumes, no
  // leases: shared volumes are plain mounts on their own node).
  AgentConnection* agent = nullptr;
  // Records of shared volumes of other nodes published here (no media
  // here); required with `agent`.
  StateStore* remote_store = nullptr;
  // Snapshot records; nullptr: no snapshots (the capability is not
  // advertised).
  SnapshotStore* snapshots = nullptr;
};

// absl::Status codes are gRPC's; this only changes the type.
grpc::Status ToGrpc(const absl::Status& s);

// mkfs arguments for 2 MiB DAX pages (docs/design.md §4), without discard
// (discard on a loop device punches holes into the preallocated image).
// xfs gets the 2 MiB stripe unit only from 1 GiB up: below that mkfs.xfs
// refuses it (the log would be too small). `prezeroed`: the media is known
// to read as zeros (a fresh fallocate), so ext4 skips zeroing its journal
// and inode tables (-E assume_storage_prezeroed=1, e2fsprogs >= 1.47).
std::vector<std::string> MkfsArgs(absl::string_view fs_type, uint64_t bytes,
                                  bool prezeroed = false);

}  // namespace daxlease::csi

#endif  // DAXLEASE_CSI_DRIVER_H_
