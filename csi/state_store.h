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
//   dropped after the mount is gone. The entry is added by SaveMounts into
//   `<dir>/<volume-id>.mounts.json`, renamed into place without any fsync:
//   what it describes (mounts, loop devices) does not survive a power loss
//   either, while the all-or-nothing rename is what a kill -9 needs. A
//   mounts file a power loss tore is dropped with a warning (the entries
//   it held described mounts that are gone). It is dropped durably by
//   Save, which writes the whole record and then removes the mounts file
//   (a stale entry brought back by a power loss would hold off
//   DeleteVolume).
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
  // What CreateVolume filled the volume from: "snapshot:<id>",
  // "volume:<id>", or "" (blank).
  std::string content_source;
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
  // Replaces the record, stage and publish entries included, and removes
  // the mounts file. kDurable: once it returns the record survives a power
  // loss (one fsync of the record, one of the directory). kAtomic: the
  // directory is not fsynced.
  absl::Status Save(const VolumeRecord& rec,
                    sys::Durability durability = sys::Durability::kDurable);
  // Records `rec`'s stage and publish entries only (the rest of `rec` must
  // be as last saved), in the mounts file, without fsync: for adding an
  // entry before its mount is made. Load returns them over the record's.
  absl::Status SaveMounts(const VolumeRecord& rec);
  // Durably (the directory is fsynced). OK when already gone.
  absl::Status Remove(absl::string_view id);
  // Every record, sorted by ID. A corrupt file is reported as an error
  // naming it (never silently dropped: that would leak its volume).
  absl::StatusOr<std::vector<VolumeRecord>> LoadAll();

  const std::string& dir() const { return dir_; }

 private:
  std::string PathFor(absl::string_view id) const;
  std::string MountsPathFor(absl::string_view id) const;
  std::string dir_;
  sys::Env* const env_;
};

}  // namespace daxlease::csi

#endif  // DAXLEASE_CSI_STATE_STORE_H_
