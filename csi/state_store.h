// StateStore: the plugin's memory on disk. One small JSON file per volume
// (`<dir>/<volume-id>.json`) holds what the CSI calls decided: the request
// name and parameters, the size, and the stage and publishes the CO asked
// for. Each file is replaced atomically (temp + fsync + rename), so after
// kill -9 a restarted plugin reads exactly the last completed step and can
// finish or roll back the one that was in flight (docs/csi.md, "Crash
// safety", says which write each call makes and why).
//
// What a record means:
// - A record exists once the volume's media exists and is complete (the
//   record is written after the media, durably); phase kDeleting is
//   written, durably, before the media is destroyed, so no ready record
//   ever names destroyed media.
// - A stage / publish entry is written before its mount is made and
//   dropped after the mount is gone. The entry is added kAtomic (no
//   directory fsync): what it describes (mounts, loop devices) does not
//   survive a power loss either, while the all-or-nothing rename is what a
//   kill -9 needs. It is dropped durably (a stale entry brought back by a
//   power loss would hold off DeleteVolume).
//
// All file-system calls go through a sys::Env (tests inject faults).
// Thread safety: Load/Save/Remove are safe to call concurrently for
// different volumes; the caller holds the volume's lock (VolumeLocks) for
// writes. LoadAll may run concurrently with writers (it sees each file
// either before or after a replacement).
#ifndef DAXLEASE_CSI_STATE_STORE_H_
#define DAXLEASE_CSI_STATE_STORE_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "csi/volume_backend.h"
#include "lib/sys/env.h"

namespace daxlease::csi {

// kReady: the media exists and is complete. kDeleting: written before the
// media is destroyed; recovery finishes the delete.
enum class VolumePhase { kReady, kDeleting };

struct PublishRecord {
  std::string target_path;
  bool read_only = false;
  bool block = false;
  // A shared volume's published directory (csi/shared_publish.h) rather
  // than a bind mount of the volume.
  bool shared_dir = false;
};

struct StageRecord {
  std::string staging_path;
  bool block = false;
  std::string fs_type;
  std::vector<std::string> mount_flags;
  std::string device;  // the attached device
};

struct VolumeRecord {
  std::string id;
  std::string name;
  uint64_t capacity_bytes = 0;
  VolumeMode mode = VolumeMode::kFsdax;
  std::string fs_type;  // "ext4" | "xfs"
  // The validated daxlease.io/* parameters (and the fstype), as given.
  std::map<std::string, std::string> parameters;
  // True when CreateVolume made the filesystem (fs_type) on the media, so
  // staging mounts it without probing or formatting.
  bool formatted = false;
  VolumePhase phase = VolumePhase::kReady;
  std::optional<StageRecord> stage;
  std::map<std::string, PublishRecord> publishes;  // by target path
};

// JSON round trip (exposed for tests).
std::string RecordToJson(const VolumeRecord& rec);
absl::StatusOr<VolumeRecord> RecordFromJson(absl::string_view json);

class StateStore {
 public:
  explicit StateStore(std::string dir, sys::Env* env = sys::DefaultEnv())
      : dir_(std::move(dir)), env_(env) {}

  // Creates the directory. Call once before anything else.
  absl::Status Init();

  // nullopt when there is no record for `id`.
  absl::StatusOr<std::optional<VolumeRecord>> Load(absl::string_view id);
  // Replaces the record. kDurable for what survives a power loss (the
  // volume's existence and phase), kAtomic for stage/publish entries.
  absl::Status Save(const VolumeRecord& rec,
                    sys::Durability durability = sys::Durability::kDurable);
  // Durably (the directory is fsynced). OK when already gone.
  absl::Status Remove(absl::string_view id);
  // Every record, sorted by ID. A corrupt file is reported as an error
  // naming it (never silently dropped: that would leak its volume).
  absl::StatusOr<std::vector<VolumeRecord>> LoadAll();

  const std::string& dir() const { return dir_; }

 private:
  std::string PathFor(absl::string_view id) const;
  std::string dir_;
  sys::Env* const env_;
};

}  // namespace daxlease::csi

#endif  // DAXLEASE_CSI_STATE_STORE_H_
