// Request validation for the CSI services: plain functions over request
// values, no I/O. Every refusal is InvalidArgument (or the code the CSI spec
// names) with a message that says which field is wrong and why.
#ifndef DAXLEASE_CSI_VALIDATION_H_
#define DAXLEASE_CSI_VALIDATION_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "csi/volume_backend.h"
#include "proto/csi.pb.h"

namespace daxlease::csi {

inline constexpr char kDriverName[] = "dax.daxlease.io";
inline constexpr char kTopologyKey[] = "daxlease.io/node";
inline constexpr char kParamMode[] = "daxlease.io/mode";
inline constexpr char kParamShare[] = "daxlease.io/share";
inline constexpr char kParamRecallGrace[] = "daxlease.io/recallGraceSeconds";
inline constexpr char kParamFsType[] = "csi.storage.k8s.io/fstype";
inline constexpr size_t kMaxNameBytes = 128;
inline constexpr size_t kMaxParametersBytes = 4096;
inline constexpr size_t kMaxIdBytes = 128;
inline constexpr uint64_t kDefaultVolumeBytes = 1ull << 30;
inline constexpr uint64_t kVolumeAlignment = 2ull << 20;  // DAX huge page
inline constexpr uint64_t kMinVolumeBytes = 16ull << 20;
inline constexpr uint64_t kMinXfsVolumeBytes = 300ull << 20;  // mkfs.xfs floor

// The daxlease.io/ and fstype parameters of a request, validated.
struct VolumeParameters {
  VolumeMode mode = VolumeMode::kFsdax;
  std::string fs_type;  // from csi.storage.k8s.io/fstype; "" if not given
  bool share = false;
  int recall_grace_seconds = 30;
  // What is kept and compared for idempotency: the known keys as given.
  std::map<std::string, std::string> normalized;
};

// A volume capability, validated.
struct CapabilityInfo {
  bool block = false;
  std::string fs_type;  // mount only, "" if not given
  std::vector<std::string> mount_flags;
  bool reader_only = false;  // *_READER_ONLY access mode
  bool multi_node = false;
};

// 1 to kMaxIdBytes bytes of [a-z0-9-], starting with a letter or a digit
// (the alphabet VolumeIdForName produces); anything else, control characters
// included, is InvalidArgument. Checked before a volume ID is used to build
// any path or reaches a log line. A well-formed unknown ID is NotFound.
absl::Status ValidateVolumeId(absl::string_view id);
// The same rules for a snapshot ID (SnapshotIdForName makes them).
absl::Status ValidateSnapshotId(absl::string_view id);
// The same rules, naming `field` in the message.
absl::Status ValidateId(absl::string_view field, absl::string_view id);

// CreateVolume name: non-empty, at most 128 bytes.
absl::Status ValidateName(absl::string_view name);

// `field` names the request field in the message. Non-empty, absolute, no
// ".." component, no NUL, and under one of `allowed_roots` (a root itself is
// not allowed, only paths below it).
absl::Status ValidatePath(absl::string_view field, absl::string_view path,
                          const std::vector<std::string>& allowed_roots);

// A path that is only compared with the paths recorded for a volume, never
// created, mounted or removed (NodeGetVolumeStats.volume_path,
// NodeExpandVolume.volume_path / staging_target_path): non-empty, no NUL, no
// ".." component. A relative path or one outside the allowed roots passes:
// no volume is ever staged or published there, so the call answers NotFound
// ("volume does not exist on the specified path", CSI spec; csi-sanity sends
// "some/path" and expects NOT_FOUND).
absl::Status ValidateLookupPath(absl::string_view field,
                                absl::string_view path);

// Parameters of CreateVolume / GetCapacity / ValidateVolumeCapabilities:
// total size (keys + values) at most 4 KiB; daxlease.io/mode fsdax|devdax;
// daxlease.io/share true|false; daxlease.io/recallGraceSeconds 1..86400;
// csi.storage.k8s.io/fstype ext4|xfs; other csi.storage.k8s.io/* keys
// (passed by external-provisioner) ignored; any other key refused.
absl::StatusOr<VolumeParameters> ValidateParameters(
    const google::protobuf::Map<std::string, std::string>& params);

// A string map of a request (volume_context, publish_context, secrets):
// keys + values at most 4 KiB.
absl::Status ValidateMapSize(
    absl::string_view field,
    const google::protobuf::Map<std::string, std::string>& map);

// Access type mount (fs_type "" | ext4 | xfs) or block; access mode one of
// the SINGLE_NODE_* modes, or a MULTI_NODE_* mode only when `allow_multi_node`
// (volumes created with daxlease.io/share=true).
absl::StatusOr<CapabilityInfo> ValidateCapability(
    const ::csi::v1::VolumeCapability& cap, bool allow_multi_node);

// The filesystem type a volume gets: the parameter, else the mount
// capability's fs_type, else ext4; InvalidArgument when they disagree.
absl::StatusOr<std::string> ResolveFsType(
    const VolumeParameters& params, const std::vector<CapabilityInfo>& caps);

// The size to allocate for `range` (CSI: 0 means unspecified): at least
// required_bytes and `min_bytes`, rounded up to kVolumeAlignment, never
// above limit_bytes (then rounded to 4 KiB only). InvalidArgument for
// negative values, OutOfRange when limit < required or the limit is below
// the minimum.
struct SizeRequest {
  uint64_t bytes = 0;
  uint64_t limit = 0;  // 0 = none
};
absl::StatusOr<SizeRequest> ComputeSize(const ::csi::v1::CapacityRange* range,
                                        uint64_t min_bytes);

// Whether an existing volume of `capacity` satisfies `range`.
bool CapacityMatches(uint64_t capacity, const ::csi::v1::CapacityRange* range);

// The deterministic volume ID for a CreateVolume name: a valid Kubernetes
// object name ([a-z0-9-], starts and ends alphanumeric, <= 63 chars) made of
// a readable prefix of the name and a 64-bit hash of the whole name.
std::string VolumeIdForName(absl::string_view name);

// Whether a TopologyRequirement lets the volume live on `node_id`: true when
// there is no requisite list, or one requisite topology has
// daxlease.io/node == node_id (other keys ignored).
bool TopologyAllowsNode(const ::csi::v1::TopologyRequirement& req,
                        absl::string_view node_id);

// Whether `path` is `root` or below it (string-wise, on '/' boundaries).
bool PathIsUnder(absl::string_view path, absl::string_view root);

// ListVolumes tokens: the decimal offset into the sorted list.
// Aborted for a token that is not a number or beyond `count` (CSI spec).
absl::StatusOr<size_t> ParseStartingToken(absl::string_view token,
                                          size_t count);

}  // namespace daxlease::csi

#endif  // DAXLEASE_CSI_VALIDATION_H_
