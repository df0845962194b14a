// StateStore: the plugin's memory on disk. One small JSON file per volume
// (`<dir>/<volume-id>.json`) holds what the CSI calls decided: the request
// name and parameters, the size, and every stage and publish with the phase
// it reached. Each file is replaced atomically (temp + fsync + rename), so
// after kill -9 a restarted plugin reads exactly the last completed step and
// can finish or roll back the one that was in flight.
//
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

namespace daxlease::csi {

// Phases are written *before* the step they name starts; "done" phases
// after it finished.
enum class VolumePhase { kCreating, kReady, kDeleting };
enum class StagePhase { kStaging, kStaged, kUnstaging };
enum class PublishPhase { kPublishing, kPublished, kUnpublishing };

struct PublishRecord {
  std::string target_path;
  bool read_only = false;
  bool block = false;
  PublishPhase phase = PublishPhase::kPublishing;
};

struct StageRecord {
  std::string staging_path;
  bool block = false;
  std::string fs_type;
  std::vector<std::string> mount_flags;
  std::string device;  // set once attached
  StagePhase phase = StagePhase::kStaging;
};

struct VolumeRecord {
  std::string id;
  std::string name;
  uint64_t capacity_bytes = 0;
  VolumeMode mode = VolumeMode::kFsdax;
  std::string fs_type;  // "ext4" | "xfs"
  // The validated daxlease.io/* parameters (and the fstype), as given.
  std::map<std::string, std::string> parameters;
  VolumePhase phase = VolumePhase::kCreating;
  std::optional<StageRecord> stage;
  std::map<std::string, PublishRecord> publishes;  // by target path
};

// JSON round trip (exposed for tests).
std::string RecordToJson(const VolumeRecord& rec);
absl::StatusOr<VolumeRecord> RecordFromJson(absl::string_view json);

class StateStore {
 public:
  explicit StateStore(std::string dir) : dir_(std::move(dir)) {}

  // Creates the directory. Call once before anything else.
  absl::Status Init();

  // nullopt when there is no record for `id`.
  absl::StatusOr<std::optional<VolumeRecord>> Load(absl::string_view id);
  absl::Status Save(const VolumeRecord& rec);
  // OK when already gone.
  absl::Status Remove(absl::string_view id);
  // Every record, sorted by ID. A corrupt file is reported as an error
  // naming it (never silently dropped: that would leak its volume).
  absl::StatusOr<std::vector<VolumeRecord>> LoadAll();

  const std::string& dir() const { return dir_; }

 private:
  std::string PathFor(absl::string_view id) const;
  std::string dir_;
};

}  // namespace daxlease::csi

#endif  // DAXLEASE_CSI_STATE_STORE_H_
