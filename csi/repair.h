// Finishing or undoing the node-side steps that a crash (or a failed call)
// left half-done, from what the state store recorded. Used by the node
// service on retry/failure and by RecoverVolumes at startup.
//
// Every function is idempotent: it checks the world (mount table, attached
// device) before each step, so running it twice, or after a crash in the
// middle of it, converges. The caller holds the volume's lock (or runs
// before the server starts).
#ifndef DAXLEASE_CSI_REPAIR_H_
#define DAXLEASE_CSI_REPAIR_H_

#include <string>

#include "absl/status/status.h"
#include "csi/driver.h"
#include "csi/state_store.h"

namespace daxlease::csi {

// Unmounts `target`, removes the target directory/file, forgets the publish.
absl::Status TearDownPublish(const DriverDeps& deps, VolumeRecord* rec,
                             const std::string& target);

// Unmounts the staging path (mount access), detaches the device, forgets
// the stage. REQUIRES: no publish left.
absl::Status TearDownStage(const DriverDeps& deps, VolumeRecord* rec);

// At startup, before serving: for every record, finishes interrupted
// deletes (phase kDeleting), completes size bookkeeping after an
// interrupted expansion, detaches devices of volumes that are not
// staged and devices the backend left over media that is gone. Stage and
// publish entries are left to the CO's retries (all their steps are
// idempotent). Media that no record knows (a lost state directory, or a
// CreateVolume that died before its record, which the CO's retry adopts) is
// logged and never touched. Problems with one volume are logged and do not stop
// the others; the returned status is the first error.
absl::Status RecoverVolumes(const DriverDeps& deps);

// At startup, after RecoverVolumes, when snapshots are on: thaws the staging
// mounts of the volumes staged with mount access (a snapshot or clone that
// a crash interrupted leaves its source frozen, and FITHAW of a filesystem
// that is not frozen is a no-op), removes snapshots whose copy a crash
// interrupted (kCreating: media and record) and partial copies, and
// finishes interrupted deletes. A snapshot is then complete or absent. The
// holders of a served volume whose copy was interrupted are let back in
// (the agent's SnapshotVolume complete; only logged when that fails).
absl::Status RecoverSnapshots(const DriverDeps& deps);

}  // namespace daxlease::csi

#endif  // DAXLEASE_CSI_REPAIR_H_
