// C++ views of the daxlease.io/v1alpha1 custom resources (docs/design.md §5).
//
// The CRD YAML under manifests/crd/ is the one definition of these kinds;
// these structs mirror it field for field, and types_schema_test.cc checks
// that every field name and enum value used here exists in that YAML.
//
// Plain values: copyable, no I/O, not synchronized. JSON conversion lives in
// json.h.
#ifndef DAXLEASE_LIB_API_TYPES_H_
#define DAXLEASE_LIB_API_TYPES_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"

namespace daxlease::api {

inline constexpr char kGroup[] = "daxlease.io";
inline constexpr char kVersion[] = "v1alpha1";
inline constexpr char kApiVersion[] = "daxlease.io/v1alpha1";

// Finalizer the operator puts on a lease while the holder may still have
// mappings (Granted, Recalling, unacknowledged Revoked).
inline constexpr char kLeaseFinalizer[] = "daxlease.io/lease-protection";

// Finalizer on every DaxRecall, put there by whoever creates it (kubectl
// daxlease recall, the node agent, the operator's migrations), so the
// operator's recall start is one status write: a recall the leases answer
// stays until it is over (Complete and every lease object shows its
// outcome). The operator adds it to a recall created without it, and
// removes it from one that never started (deleted while Pending, or Failed).
inline constexpr char kRecallFinalizer[] = "daxlease.io/recall-protection";

// Finalizer the operator puts on every DaxVolume: the volume stays while any
// of its leases holds access, and goes only once its epoch is recorded as
// the name's high-water mark (operator/epoch_store.h).
inline constexpr char kVolumeFinalizer[] = "daxlease.io/volume-protection";

// Annotation the owner agent puts on a DaxVolume once the change a Reshape
// recall was for is done (the data grew and is mapped again): value = that
// DaxRecall's name. The operator then returns the Quiesced volume to Ready
// at epoch + 1 (docs/operator.md, "Reshape").
inline constexpr char kReshapedAnnotation[] = "daxlease.io/reshaped";

// Annotation on a DaxVolume: the owner agent's fabric endpoint (host:port);
// written by the owner agent, and by the operator when a migration moves the
// owner (the target agent's endpoint, with spec.ownerNode).
inline constexpr char kFabricEndpointAnnotation[] =
    "daxlease.io/fabric-endpoint";

// On a DaxMigration's recall: value = LabelValueFor(its name), label_value.h.
inline constexpr char kMigrationLabel[] = "daxlease.io/migration";

// Annotation the owner agent puts on a DaxVolume once the copy a Snapshot
// recall was for is taken: value = that DaxRecall's name. The operator then
// returns the Quiesced volume to Ready at epoch + 1 (docs/operator.md,
// "Snapshot").
inline constexpr char kSnapshottedAnnotation[] = "daxlease.io/snapshotted";

// Largest DaxRecall.spec.graceSeconds / DaxVolume.spec.recallGraceSeconds
// the CRDs accept (a day, as the CSI StorageClass parameter).
inline constexpr int64_t kMaxGraceSeconds = 86400;

// Label the agent puts on every lease it creates, and the operator on its
// Migrate recalls: value = LabelValueFor(spec.volume) (label_value.h; the
// name itself up to 63 characters), so the leases of one volume are one
// label-selected list (VolumeLabelSelector).
inline constexpr char kVolumeLabel[] = "daxlease.io/volume";

// The subset of metav1.ObjectMeta the operator reads or writes.
struct ObjectMeta {
  std::string name;
  std::string uid;
  std::string resource_version;
  int64_t generation = 0;
  std::optional<absl::Time> creation_timestamp;
  std::optional<absl::Time> deletion_timestamp;
  std::vector<std::string> finalizers;
  std::map<std::string, std::string> labels;
  std::map<std::string, std::string> annotations;

  friend bool operator==(const ObjectMeta&, const ObjectMeta&) = default;
};

enum class ConditionStatus { kTrue, kFalse, kUnknown };

// metav1.Condition.
struct Condition {
  std::string type;
  ConditionStatus status = ConditionStatus::kUnknown;
  int64_t observed_generation = 0;
  absl::Time last_transition_time = absl::UnixEpoch();
  std::string reason;
  std::string message;

  friend bool operator==(const Condition&, const Condition&) = default;
};

// Sets `c` in `conditions` by type. lastTransitionTime changes only when the
// status changes (as meta.SetStatusCondition does); reason, message and
// observedGeneration are always updated. Returns true if anything changed.
bool SetCondition(std::vector<Condition>& conditions, Condition c);
const Condition* FindCondition(const std::vector<Condition>& conditions,
                               const std::string& type);

// ---- DaxVolume -------------------------------------------------------------

enum class VolumeMode { kFsdax, kDevdax };
enum class FsType { kExt4, kXfs };
enum class VolumePhase {
  kCreating,
  kReady,
  kRecalling,
  kQuiesced,
  kReshaping,
  kMigrating,
  kFailed
};

struct DaxVolumeSpec {
  int64_t size_bytes = 0;
  VolumeMode mode = VolumeMode::kFsdax;
  std::optional<FsType> fs_type;
  std::string owner_node;
  bool share = false;
  std::optional<int64_t> recall_grace_seconds;

  friend bool operator==(const DaxVolumeSpec&, const DaxVolumeSpec&) = default;
};

struct DaxVolumeStatus {
  std::optional<VolumePhase> phase;
  std::string owner;
  int64_t capacity_bytes = 0;
  int64_t epoch = 0;
  int32_t holders = 0;
  bool dax = false;
  std::string active_recall;  // DaxRecall name, empty when none.
  std::vector<Condition> conditions;

  friend bool operator==(const DaxVolumeStatus&,
                         const DaxVolumeStatus&) = default;
};

struct DaxVolume {
  ObjectMeta metadata;
  DaxVolumeSpec spec;
  DaxVolumeStatus status;
  friend bool operator==(const DaxVolume&, const DaxVolume&) = default;
};

// ---- DaxLease --------------------------------------------------------------

enum class Access { kReadOnly, kReadWrite };
enum class LeaseState { kPending, kGranted, kRecalling, kReleased, kRevoked };

struct DaxLeaseSpec {
  std::string volume;
  std::string holder_node;
  std::string holder_pod;
  Access access = Access::kReadOnly;

  friend bool operator==(const DaxLeaseSpec&, const DaxLeaseSpec&) = default;
};

// spec.volume, spec.holderNode and spec.holderPod as the operator first
// accepted them (DaxLease.status.boundTo). They are immutable in effect: the
// operator keeps acting on these values and reports a changed spec.
struct LeaseBinding {
  std::string volume;
  std::string holder_node;
  std::string holder_pod;
  friend bool operator==(const LeaseBinding&, const LeaseBinding&) = default;
};

struct DaxLeaseStatus {
  std::optional<LeaseState> state;
  std::optional<LeaseBinding> bound_to;  // written by the operator
  int64_t epoch = 0;
  std::string recall_id;
  std::optional<absl::Time> deadline;
  std::string reason;
  // Written by agents, read by the operator:
  std::string released_recall_id;  // holder: flushed + unmapped for this recall
  bool fence_required = false;     // operator: owner must fence this holder
  std::string fenced_recall_id;    // owner: holder fenced for this recall
  bool revocation_acknowledged = false;  // holder: client saw the revoke
  std::vector<Condition> conditions;

  friend bool operator==(const DaxLeaseStatus&,
                         const DaxLeaseStatus&) = default;
};

struct DaxLease {
  ObjectMeta metadata;
  DaxLeaseSpec spec;
  DaxLeaseStatus status;
  friend bool operator==(const DaxLease&, const DaxLease&) = default;
};

// ---- DaxRecall -------------------------------------------------------------

enum class RecallReason { kReshape, kMigrate, kEvict, kManual, kSnapshot };
enum class RecallPhase { kPending, kRecalling, kComplete, kFailed };

struct DaxRecallSpec {
  std::string volume;
  RecallReason reason = RecallReason::kManual;
  std::optional<int64_t> grace_seconds;

  friend bool operator==(const DaxRecallSpec&, const DaxRecallSpec&) = default;
};

// The recall's durable record (docs/operator.md, "What is durable"): its
// start (phase Recalling, recallID, epoch, startedAt, deadline) is stored
// before any holder is asked; each decided revoke (revokedLeases) before the
// owner is asked to fence; each confirmed fence (fencedLeases) and then the
// outcome (Complete) before the volume moves to the next epoch. A lease
// still Granted or Recalling at `epoch` in its own object is read through
// this record: Recalling while the recall runs; once Complete, Revoked if
// fenced, else Released. The lease objects themselves may lag.
// revokedLeases and fencedLeases are bounded (plan.h kRecallRecordBytes);
// a revoke that does not fit is written on its lease object first instead.
struct DaxRecallStatus {
  std::optional<RecallPhase> phase;
  std::string recall_id;
  int64_t epoch = 0;  // the volume's epoch the recall runs at (0: unknown)
  int32_t released = 0;
  int32_t revoked = 0;
  int32_t outstanding = 0;
  std::vector<std::string> revoked_leases;  // revoke decided, sorted
  std::vector<std::string> fenced_leases;   // fence confirmed, sorted
  std::optional<absl::Time> started_at;
  std::optional<absl::Time> deadline;
  std::optional<absl::Time> completed_at;
  std::vector<Condition> conditions;

  friend bool operator==(const DaxRecallStatus&,
                         const DaxRecallStatus&) = default;
};

struct DaxRecall {
  ObjectMeta metadata;
  DaxRecallSpec spec;
  DaxRecallStatus status;
  friend bool operator==(const DaxRecall&, const DaxRecall&) = default;
};

// ---- DaxMigration ----------------------------------------------------------

enum class MigrationPhase {
  kPending,
  kPreCopying,
  kRecalling,
  kCopying,
  kSwitching,
  kComplete,
  kFailed
};

struct DaxMigrationSpec {
  std::string volume;
  std::string target_node;
  friend bool operator==(const DaxMigrationSpec&,
                         const DaxMigrationSpec&) = default;
};

// Written by the operator: phase, source_node, recall, epoch, bytes_total,
// started_at, completed_at, conditions. Written by the target agent:
// target_endpoint, bytes_copied, copy_millis, target_checksum,
// target_failure, last_progress_time, target_media_freed, pre_copied_bytes,
// pre_copy_millis, pre_copy_failure, refetched_bytes. Written by the
// source agent: source_checksum, source_media_freed. (docs/operator.md,
// "Migration".)
struct DaxMigrationStatus {
  std::optional<MigrationPhase> phase;
  std::string source_node;  // the owner when the migration began
  std::string recall;       // the DaxRecall (reason Migrate) it runs
  int64_t epoch = 0;        // the volume's epoch under that recall
  int64_t bytes_total = 0;
  int64_t bytes_copied = 0;
  int64_t copy_millis = 0;      // the copy alone (throughput = total / this)
  std::string source_checksum;  // "xxh3x16m:<hex>" of the source's data
  std::string target_checksum;  // of the target's copy, read back
  std::string target_endpoint;  // the target agent's fabric endpoint
  std::string target_failure;   // "<Reason>: <message>" from the target
  // The side that lost freed its media: the source's after Complete, the
  // target's after Failed (what a deletion waits for).
  bool source_media_freed = false;
  bool target_media_freed = false;
  std::optional<absl::Time> last_progress_time;  // the target's last report
  std::optional<absl::Time> started_at;
  std::optional<absl::Time> completed_at;
  std::vector<Condition> conditions;
  // The pre-copy (phase PreCopying, before the recall): bytes the target
  // read while the volume was still Ready, how long that took, and why it
  // stopped short ("<Reason>: <message>"; the migration then copies in
  // full inside the pause, it does not fail for it).
  int64_t pre_copied_bytes = 0;
  int64_t pre_copy_millis = 0;
  std::string pre_copy_failure;
  // Inside the pause: bytes read again because the source's chunk digests
  // differed from the pre-copy's (the whole volume without a pre-copy).
  int64_t refetched_bytes = 0;
  friend bool operator==(const DaxMigrationStatus&,
                         const DaxMigrationStatus&) = default;
};

struct DaxMigration {
  ObjectMeta metadata;
  DaxMigrationSpec spec;
  DaxMigrationStatus status;
  friend bool operator==(const DaxMigration&, const DaxMigration&) = default;
};

// Resource coordinates for the REST path /apis/daxlease.io/v1alpha1/<plural>.
template <typename T>
struct Resource;
template <>
struct Resource<DaxVolume> {
  static constexpr char kKind[] = "DaxVolume";
  static constexpr char kPlural[] = "daxvolumes";
};
template <>
struct Resource<DaxLease> {
  static constexpr char kKind[] = "DaxLease";
  static constexpr char kPlural[] = "daxleases";
};
template <>
struct Resource<DaxRecall> {
  static constexpr char kKind[] = "DaxRecall";
  static constexpr char kPlural[] = "daxrecalls";
};
template <>
struct Resource<DaxMigration> {
  static constexpr char kKind[] = "DaxMigration";
  static constexpr char kPlural[] = "daxmigrations";
};

}  // namespace daxlease::api

#endif  // DAXLEASE_LIB_API_TYPES_H_
