// SnapshotStore: the plugin's records of its snapshots, one small JSON file
// per snapshot (`<dir>/<snapshot-id>.json`), replaced atomically like the
// volume records (csi/state_store.h), apart from them so that a snapshot is
// never read as a volume.
//
// What a record means (docs/csi.md, "Snapshots and clones"):
// - kCreating is written, durably, before the copy starts (so ListSnapshots
//   answers ready_to_use=false meanwhile, and a restarted plugin knows what
//   to undo): the copy may be partial. It names the filesystem frozen for
//   the copy, which a restart thaws.
// - kReady is written, durably, after the copy is complete and durable.
// - kDeleting is written, durably, before the copy is destroyed.
// A restarted plugin removes kCreating snapshots (media and record) and
// finishes kDeleting ones: a snapshot is complete or absent, never half.
//
// Thread safety: as StateStore (the caller holds the snapshot's lock for
// writes; LoadAll may run beside writers).
#ifndef DAXLEASE_CSI_SNAPSHOT_STORE_H_
#define DAXLEASE_CSI_SNAPSHOT_STORE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "csi/volume_backend.h"
#include "lib/sys/env.h"

namespace daxlease::csi {

enum class SnapshotPhase { kCreating, kReady, kDeleting };

struct SnapshotRecord {
  std::string id;
  std::string name;
  std::string source_volume_id;
  uint64_t size_bytes = 0;
  // The source volume's, which a restore must match.
  VolumeMode mode = VolumeMode::kFsdax;
  std::string fs_type;
  bool formatted = false;  // the copy carries the filesystem fs_type
  int64_t creation_unix_nanos = 0;
  SnapshotPhase phase = SnapshotPhase::kCreating;
  // kCreating: the staging mount frozen for the copy ("" when none).
  std::string frozen_path;
};

std::string SnapshotRecordToJson(const SnapshotRecord& rec);
absl::StatusOr<SnapshotRecord> SnapshotRecordFromJson(absl::string_view json);

class SnapshotStore {
 public:
  explicit SnapshotStore(std::string dir, sys::Env* env = sys::DefaultEnv())
      : dir_(std::move(dir)), env_(env) {}

  absl::Status Init();
  absl::StatusOr<std::optional<SnapshotRecord>> Load(absl::string_view id);
  // Durable (temp, fsync, rename, directory fsync).
  absl::Status Save(const SnapshotRecord& rec);
  absl::Status Remove(absl::string_view id);
  // Every record, sorted by ID; a corrupt one is an error naming it.
  absl::StatusOr<std::vector<SnapshotRecord>> LoadAll();

 private:
  std::string PathFor(absl::string_view id) const;
  std::string dir_;
  sys::Env* const env_;
};

}  // namespace daxlease::csi

#endif  // DAXLEASE_CSI_SNAPSHOT_STORE_H_
