#include "csi/validation.h"

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace daxlease::csi {
namespace {

using ::csi::v1::VolumeCapability;

uint64_t RoundUp(uint64_t v, uint64_t align) {
  return (v + align - 1) / align * align;
}

}  // namespace

absl::Status ValidateId(absl::string_view field, absl::string_view id) {
  if (id.empty())
    return absl::InvalidArgumentError(absl::StrCat(field, " is required"));
  if (id.size() > kMaxIdBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " is longer than ", kMaxIdBytes, " bytes"));
  }
  // The alphabet VolumeIdForName produces. A volume ID names files, loop
  // backing images, ndctl labels and log lines: no separators, no control
  // characters, nothing a tool could read as an option.
  auto allowed = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
  };
  for (char c : id) {
    if (!allowed(c)) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, " '", absl::CHexEscape(id),
          "' may contain only lower-case letters, digits and '-'"));
    }
  }
  if (id.front() == '-') {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " '", id, "' must start with a letter or a digit"));
  }
  return absl::OkStatus();
}

absl::Status ValidateVolumeId(absl::string_view id) {
  return ValidateId("volume_id", id);
}

absl::Status ValidateSnapshotId(absl::string_view id) {
  return ValidateId("snapshot_id", id);
}

absl::Status ValidateName(absl::string_view name) {
  if (name.empty()) return absl::InvalidArgumentError("name is required");
  if (name.size() > kMaxNameBytes) {
    return absl::InvalidArgumentError(absl::StrCat("name is ", name.size(),
                                                   " bytes, at most ",
                                                   kMaxNameBytes, " allowed"));
  }
  return absl::OkStatus();
}

bool PathIsUnder(absl::string_view path, absl::string_view root) {
  while (root.size() > 1 && absl::EndsWith(root, "/")) root.remove_suffix(1);
  if (root == "/") return absl::StartsWith(path, "/");
  if (!absl::StartsWith(path, root)) return false;
  return path.size() == root.size() || path[root.size()] == '/';
}

absl::Status ValidatePath(absl::string_view field, absl::string_view path,
                          const std::vector<std::string>& allowed_roots) {
  if (path.empty())
    return absl::InvalidArgumentError(absl::StrCat(field, " is required"));
  if (absl::StrContains(path, absl::string_view("\0", 1))) {
    return absl::InvalidArgumentError(absl::StrCat(field, " contains NUL"));
  }
  if (path[0] != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " '", path, "' must be an absolute path"));
  }
  for (absl::string_view part : absl::StrSplit(path, '/')) {
    if (part == "..") {
      return absl::InvalidArgumentError(
          absl::StrCat(field, " '", path, "' must not contain '..'"));
    }
  }
  for (const std::string& root : allowed_roots) {
    if (PathIsUnder(path, root)) {
      std::string trimmed(path);
      while (trimmed.size() > 1 && trimmed.back() == '/') trimmed.pop_back();
      std::string r = root;
      while (r.size() > 1 && r.back() == '/') r.pop_back();
      if (trimmed == r) continue;  // the root itself
      return absl::OkStatus();
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat(field, " '", path, "' is outside the allowed roots (",
                   absl::StrJoin(allowed_roots, ","), ")"));
}

absl::Status ValidateLookupPath(absl::string_view field,
                                absl::string_view path) {
  if (path.empty())
    return absl::InvalidArgumentError(absl::StrCat(field, " is required"));
  if (absl::StrContains(path, absl::string_view("\0", 1))) {
    return absl::InvalidArgumentError(absl::StrCat(field, " contains NUL"));
  }
  for (absl::string_view part : absl::StrSplit(path, '/')) {
    if (part == "..") {
      return absl::InvalidArgumentError(
          absl::StrCat(field, " '", path, "' must not contain '..'"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateMapSize(
    absl::string_view field,
    const google::protobuf::Map<std::string, std::string>& map) {
  size_t total = 0;
  for (const auto& [k, v] : map) total += k.size() + v.size();
  if (total > kMaxParametersBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " is ", total, " bytes, at most ",
                     kMaxParametersBytes, " allowed"));
  }
  return absl::OkStatus();
}

absl::StatusOr<VolumeParameters> ValidateParameters(
    const google::protobuf::Map<std::string, std::string>& params) {
  size_t total = 0;
  for (const auto& [k, v] : params) total += k.size() + v.size();
  if (total > kMaxParametersBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("parameters are ", total, " bytes, at most ",
                     kMaxParametersBytes, " allowed"));
  }
  VolumeParameters out;
  for (const auto& [k, v] : params) {
    if (k == kParamMode) {
      auto mode = ParseVolumeMode(v);
      if (!mode.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "parameter ", kParamMode, "='", v, "' must be fsdax or devdax"));
      }
      out.mode = *mode;
      out.normalized[k] = v;
    } else if (k == kParamShare) {
      if (v != "true" && v != "false") {
        return absl::InvalidArgumentError(absl::StrCat(
            "parameter ", kParamShare, "='", v, "' must be true or false"));
      }
      out.share = v == "true";
      out.normalized[k] = v;
    } else if (k == kParamRecallGrace) {
      int secs = 0;
      if (!absl::SimpleAtoi(v, &secs) || secs < 1 || secs > 86400) {
        return absl::InvalidArgumentError(
            absl::StrCat("parameter ", kParamRecallGrace, "='", v,
                         "' must be a whole number of seconds in 1..86400"));
      }
      out.recall_grace_seconds = secs;
      out.normalized[k] = v;
    } else if (k == kParamFsType) {
      if (v != "ext4" && v != "xfs") {
        return absl::InvalidArgumentError(absl::StrCat(
            "parameter ", kParamFsType, "='", v, "' must be ext4 or xfs"));
      }
      out.fs_type = v;
    } else if (absl::StartsWith(k, "csi.storage.k8s.io/")) {
      // PVC/PV names and secrets references from external-provisioner.
    } else if (absl::StartsWith(k, "daxlease.io/")) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown parameter '", k, "' (known: ", kParamMode, ", ",
                       kParamShare, ", ", kParamRecallGrace, ")"));
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown parameter '", k,
                       "': parameters use the daxlease.io/ prefix"));
    }
  }
  return out;
}

absl::StatusOr<CapabilityInfo> ValidateCapability(const VolumeCapability& cap,
                                                  bool allow_multi_node) {
  CapabilityInfo info;
  switch (cap.access_type_case()) {
    case VolumeCapability::kBlock:
      info.block = true;
      break;
    case VolumeCapability::kMount: {
      const auto& m = cap.mount();
      if (!m.fs_type().empty() && m.fs_type() != "ext4" &&
          m.fs_type() != "xfs") {
        return absl::InvalidArgumentError(
            absl::StrCat("volume_capability.mount.fs_type '", m.fs_type(),
                         "' is not supported (ext4, xfs)"));
      }
      if (!m.volume_mount_group().empty()) {
        return absl::InvalidArgumentError(
            "volume_capability.mount.volume_mount_group is not supported");
      }
      info.fs_type = m.fs_type();
      for (const std::string& f : m.mount_flags()) {
        if (f.empty() || absl::StrContains(f, ",") ||
            absl::StrContains(f, absl::string_view("\0", 1))) {
          return absl::InvalidArgumentError(
              absl::StrCat("invalid mount flag '", absl::CEscape(f), "'"));
        }
        info.mount_flags.push_back(f);
      }
      break;
    }
    default:
      return absl::InvalidArgumentError(
          "volume_capability needs an access type (mount or block)");
  }
  if (!cap.has_access_mode()) {
    return absl::InvalidArgumentError(
        "volume_capability.access_mode is required");
  }
  using Mode = VolumeCapability::AccessMode;
  switch (cap.access_mode().mode()) {
    case Mode::SINGLE_NODE_WRITER:
    case Mode::SINGLE_NODE_SINGLE_WRITER:
    case Mode::SINGLE_NODE_MULTI_WRITER:
      break;
    case Mode::SINGLE_NODE_READER_ONLY:
      info.reader_only = true;
      break;
    case Mode::MULTI_NODE_READER_ONLY:
    case Mode::MULTI_NODE_SINGLE_WRITER:
    case Mode::MULTI_NODE_MULTI_WRITER:
      if (!allow_multi_node) {
        return absl::InvalidArgumentError(absl::StrCat(
            "access mode ", Mode::Mode_Name(cap.access_mode().mode()),
            " is not supported: volumes are node-local (multi-node access "
            "needs daxlease.io/share=true)"));
      }
      info.multi_node = true;
      info.reader_only =
          cap.access_mode().mode() == Mode::MULTI_NODE_READER_ONLY;
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "access mode ", Mode::Mode_Name(cap.access_mode().mode()),
          " is not supported"));
  }
  return info;
}

absl::StatusOr<std::string> ResolveFsType(
    const VolumeParameters& params, const std::vector<CapabilityInfo>& caps) {
  std::string fs = params.fs_type;
  for (const CapabilityInfo& c : caps) {
    if (c.block || c.fs_type.empty()) continue;
    if (fs.empty()) {
      fs = c.fs_type;
    } else if (fs != c.fs_type) {
      return absl::InvalidArgumentError(
          absl::StrCat("filesystem type conflict: ", fs,
                       " vs volume capability fs_type ", c.fs_type));
    }
  }
  return fs.empty() ? std::string("ext4") : fs;
}

absl::StatusOr<SizeRequest> ComputeSize(const ::csi::v1::CapacityRange* range,
                                        uint64_t min_bytes) {
  int64_t required = range == nullptr ? 0 : range->required_bytes();
  int64_t limit = range == nullptr ? 0 : range->limit_bytes();
  if (required < 0 || limit < 0) {
    return absl::InvalidArgumentError(
        "capacity_range values must not be negative");
  }
  if (limit > 0 && required > limit) {
    return absl::OutOfRangeError(absl::StrCat("capacity_range.required_bytes ",
                                              required, " exceeds limit_bytes ",
                                              limit));
  }
  SizeRequest out;
  out.limit = static_cast<uint64_t>(limit);
  uint64_t want = required > 0 ? static_cast<uint64_t>(required)
                               : std::max(kDefaultVolumeBytes, min_bytes);
  if (limit > 0 && required == 0) want = std::min(want, out.limit);
  want = std::max(want, min_bytes);
  uint64_t aligned = RoundUp(want, kVolumeAlignment);
  if (out.limit > 0 && aligned > out.limit) aligned = RoundUp(want, 4096);
  if (out.limit > 0 && aligned > out.limit) {
    return absl::OutOfRangeError(
        absl::StrCat("capacity_range.limit_bytes ", limit,
                     " is below the smallest volume (", want, " bytes)"));
  }
  out.bytes = aligned;
  return out;
}

bool CapacityMatches(uint64_t capacity, const ::csi::v1::CapacityRange* range) {
  if (range == nullptr) return true;
  if (range->required_bytes() > 0 &&
      capacity < static_cast<uint64_t>(range->required_bytes())) {
    return false;
  }
  if (range->limit_bytes() > 0 &&
      capacity > static_cast<uint64_t>(range->limit_bytes())) {
    return false;
  }
  return true;
}

std::string VolumeIdForName(absl::string_view name) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a 64
  for (unsigned char c : name) {
    h ^= c;
    h *= 1099511628211ull;
  }
  std::string prefix;
  for (char c : name) {
    char l = absl::ascii_tolower(static_cast<unsigned char>(c));
    if ((l >= 'a' && l <= 'z') || (l >= '0' && l <= '9')) {
      prefix.push_back(l);
    } else if (!prefix.empty() && prefix.back() != '-') {
      prefix.push_back('-');
    }
    if (prefix.size() >= 40) break;
  }
  while (!prefix.empty() && prefix.back() == '-') prefix.pop_back();
  if (prefix.empty()) prefix = "vol";
  return absl::StrFormat("%s-%016x", prefix, h);
}

bool TopologyAllowsNode(const ::csi::v1::TopologyRequirement& req,
                        absl::string_view node_id) {
  if (req.requisite().empty()) return true;
  for (const auto& topo : req.requisite()) {
    auto it = topo.segments().find(kTopologyKey);
    if (it != topo.segments().end() && it->second == node_id) return true;
  }
  return false;
}

absl::StatusOr<size_t> ParseStartingToken(absl::string_view token,
                                          size_t count) {
  if (token.empty()) return 0;
  uint64_t v = 0;
  if (!absl::SimpleAtoi(token, &v) || v > count) {
    return absl::AbortedError(
        absl::StrCat("starting_token '", token, "' is not valid"));
  }
  return static_cast<size_t>(v);
}

}  // namespace daxlease::csi
