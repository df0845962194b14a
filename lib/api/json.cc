#include "lib/api/json.h"

#include <array>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "lib/base/status.h"

namespace daxlease::api {
namespace {

using nlohmann::json;

template <typename E>
struct EnumTable;

#define DAXLEASE_ENUM_TABLE(E, ...)                                        \
  template <>                                                              \
  struct EnumTable<E> {                                                    \
    static constexpr char kName[] = #E;                                    \
    static constexpr std::pair<E, const char*> kEntries[] = {__VA_ARGS__}; \
  }

DAXLEASE_ENUM_TABLE(ConditionStatus, {ConditionStatus::kTrue, "True"},
                    {ConditionStatus::kFalse, "False"},
                    {ConditionStatus::kUnknown, "Unknown"});
DAXLEASE_ENUM_TABLE(VolumeMode, {VolumeMode::kFsdax, "fsdax"},
                    {VolumeMode::kDevdax, "devdax"});
DAXLEASE_ENUM_TABLE(FsType, {FsType::kExt4, "ext4"}, {FsType::kXfs, "xfs"});
DAXLEASE_ENUM_TABLE(VolumePhase, {VolumePhase::kCreating, "Creating"},
                    {VolumePhase::kReady, "Ready"},
                    {VolumePhase::kRecalling, "Recalling"},
                    {VolumePhase::kQuiesced, "Quiesced"},
                    {VolumePhase::kReshaping, "Reshaping"},
                    {VolumePhase::kMigrating, "Migrating"},
                    {VolumePhase::kFailed, "Failed"});
DAXLEASE_ENUM_TABLE(Access, {Access::kReadOnly, "ReadOnly"},
                    {Access::kReadWrite, "ReadWrite"});
DAXLEASE_ENUM_TABLE(LeaseState, {LeaseState::kPending, "Pending"},
                    {LeaseState::kGranted, "Granted"},
                    {LeaseState::kRecalling, "Recalling"},
                    {LeaseState::kReleased, "Released"},
                    {LeaseState::kRevoked, "Revoked"});
DAXLEASE_ENUM_TABLE(RecallReason, {RecallReason::kReshape, "Reshape"},
                    {RecallReason::kMigrate, "Migrate"},
                    {RecallReason::kEvict, "Evict"},
                    {RecallReason::kManual, "Manual"},
                    {RecallReason::kSnapshot, "Snapshot"});
DAXLEASE_ENUM_TABLE(RecallPhase, {RecallPhase::kPending, "Pending"},
                    {RecallPhase::kRecalling, "Recalling"},
                    {RecallPhase::kComplete, "Complete"},
                    {RecallPhase::kFailed, "Failed"});
DAXLEASE_ENUM_TABLE(MigrationPhase, {MigrationPhase::kPending, "Pending"},
                    {MigrationPhase::kPreCopying, "PreCopying"},
                    {MigrationPhase::kRecalling, "Recalling"},
                    {MigrationPhase::kCopying, "Copying"},
                    {MigrationPhase::kSwitching, "Switching"},
                    {MigrationPhase::kComplete, "Complete"},
                    {MigrationPhase::kFailed, "Failed"});
#undef DAXLEASE_ENUM_TABLE

// Internal parse failure; converted to a status at the FromJson boundary.
struct ParseError {
  std::string message;
};

// --- writers: omit defaults ---
void PutString(json& j, const char* key, const std::string& v) {
  if (!v.empty()) j[key] = v;
}
void PutInt(json& j, const char* key, int64_t v) {
  if (v != 0) j[key] = v;
}
void PutBool(json& j, const char* key, bool v) {
  if (v) j[key] = true;
}
void PutTime(json& j, const char* key, const std::optional<absl::Time>& t) {
  if (t.has_value()) j[key] = FormatWireTime(*t);
}
template <typename E>
void PutEnum(json& j, const char* key, const std::optional<E>& v) {
  if (v.has_value()) j[key] = EnumName(*v);
}
void PutConditions(json& j, const std::vector<Condition>& cs) {
  if (cs.empty()) return;
  json arr = json::array();
  for (const Condition& c : cs) arr.push_back(ToJson(c));
  j["conditions"] = std::move(arr);
}

// --- readers: missing = default, wrong type = ParseError ---
const json* Field(const json& j, const char* key) {
  if (!j.is_object()) return nullptr;
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return nullptr;
  return &*it;
}
std::string GetString(const json& j, const char* key) {
  const json* f = Field(j, key);
  if (f == nullptr) return "";
  if (!f->is_string()) throw ParseError{absl::StrCat(key, ": not a string")};
  return f->get<std::string>();
}
int64_t GetInt(const json& j, const char* key) {
  const json* f = Field(j, key);
  if (f == nullptr) return 0;
  if (!f->is_number_integer()) {
    throw ParseError{absl::StrCat(key, ": not an integer")};
  }
  return f->get<int64_t>();
}
std::optional<int64_t> GetOptInt(const json& j, const char* key) {
  if (Field(j, key) == nullptr) return std::nullopt;
  return GetInt(j, key);
}
bool GetBool(const json& j, const char* key) {
  const json* f = Field(j, key);
  if (f == nullptr) return false;
  if (!f->is_boolean()) throw ParseError{absl::StrCat(key, ": not a bool")};
  return f->get<bool>();
}
std::optional<absl::Time> GetTime(const json& j, const char* key) {
  std::string s = GetString(j, key);
  if (s.empty()) return std::nullopt;
  absl::StatusOr<absl::Time> t = ParseWireTime(s);
  if (!t.ok()) throw ParseError{absl::StrCat(key, ": ", t.status().message())};
  return *t;
}
template <typename E>
std::optional<E> GetEnum(const json& j, const char* key) {
  std::string s = GetString(j, key);
  if (s.empty()) return std::nullopt;
  absl::StatusOr<E> e = ParseEnum<E>(s);
  if (!e.ok()) throw ParseError{absl::StrCat(key, ": ", e.status().message())};
  return *e;
}
std::map<std::string, std::string> GetStringMap(const json& j,
                                                const char* key) {
  std::map<std::string, std::string> out;
  const json* f = Field(j, key);
  if (f == nullptr) return out;
  if (!f->is_object()) throw ParseError{absl::StrCat(key, ": not an object")};
  for (auto it = f->begin(); it != f->end(); ++it) {
    if (!it->is_string()) {
      throw ParseError{absl::StrCat(key, ".", it.key(), ": not a string")};
    }
    out[it.key()] = it->get<std::string>();
  }
  return out;
}
std::vector<std::string> GetStringList(const json& j, const char* key) {
  std::vector<std::string> out;
  const json* f = Field(j, key);
  if (f == nullptr) return out;
  if (!f->is_array()) throw ParseError{absl::StrCat(key, ": not an array")};
  out.reserve(f->size());
  for (const json& s : *f) {
    if (!s.is_string()) throw ParseError{absl::StrCat(key, ": not a string")};
    out.push_back(s.get<std::string>());
  }
  return out;
}
const json& Sub(const json& j, const char* key) {
  static const json kEmpty = json::object();
  const json* f = Field(j, key);
  if (f == nullptr) return kEmpty;
  if (!f->is_object()) throw ParseError{absl::StrCat(key, ": not an object")};
  return *f;
}

ObjectMeta ReadMeta(const json& j) {
  ObjectMeta m;
  m.name = GetString(j, "name");
  m.uid = GetString(j, "uid");
  m.resource_version = GetString(j, "resourceVersion");
  m.generation = GetInt(j, "generation");
  m.creation_timestamp = GetTime(j, "creationTimestamp");
  m.deletion_timestamp = GetTime(j, "deletionTimestamp");
  if (const json* f = Field(j, "finalizers")) {
    if (!f->is_array()) throw ParseError{"finalizers: not an array"};
    for (const json& s : *f) {
      if (!s.is_string()) throw ParseError{"finalizers: not a string"};
      m.finalizers.push_back(s.get<std::string>());
    }
  }
  m.labels = GetStringMap(j, "labels");
  m.annotations = GetStringMap(j, "annotations");
  return m;
}

std::vector<Condition> ReadConditions(const json& status) {
  std::vector<Condition> out;
  const json* f = Field(status, "conditions");
  if (f == nullptr) return out;
  if (!f->is_array()) throw ParseError{"conditions: not an array"};
  for (const json& cj : *f) {
    Condition c;
    c.type = GetString(cj, "type");
    c.status = GetEnum<ConditionStatus>(cj, "status")
                   .value_or(ConditionStatus::kUnknown);
    c.observed_generation = GetInt(cj, "observedGeneration");
    c.last_transition_time =
        GetTime(cj, "lastTransitionTime").value_or(absl::UnixEpoch());
    c.reason = GetString(cj, "reason");
    c.message = GetString(cj, "message");
    out.push_back(std::move(c));
  }
  return out;
}

json Envelope(const char* kind, const ObjectMeta& meta) {
  json j = json::object();
  j["apiVersion"] = kApiVersion;
  j["kind"] = kind;
  j["metadata"] = ToJson(meta);
  return j;
}

DaxVolume ReadVolume(const json& j) {
  DaxVolume v;
  v.metadata = ReadMeta(Sub(j, "metadata"));
  const json& spec = Sub(j, "spec");
  v.spec.size_bytes = GetInt(spec, "sizeBytes");
  v.spec.mode = GetEnum<VolumeMode>(spec, "mode").value_or(VolumeMode::kFsdax);
  v.spec.fs_type = GetEnum<FsType>(spec, "fsType");
  v.spec.owner_node = GetString(spec, "ownerNode");
  v.spec.share = GetBool(spec, "share");
  v.spec.recall_grace_seconds = GetOptInt(spec, "recallGraceSeconds");
  const json& st = Sub(j, "status");
  v.status.phase = GetEnum<VolumePhase>(st, "phase");
  v.status.owner = GetString(st, "owner");
  v.status.capacity_bytes = GetInt(st, "capacityBytes");
  v.status.epoch = GetInt(st, "epoch");
  v.status.holders = static_cast<int32_t>(GetInt(st, "holders"));
  v.status.dax = GetBool(st, "dax");
  v.status.active_recall = GetString(st, "activeRecall");
  v.status.conditions = ReadConditions(st);
  return v;
}

DaxLease ReadLease(const json& j) {
  DaxLease l;
  l.metadata = ReadMeta(Sub(j, "metadata"));
  const json& spec = Sub(j, "spec");
  l.spec.volume = GetString(spec, "volume");
  l.spec.holder_node = GetString(spec, "holderNode");
  l.spec.holder_pod = GetString(spec, "holderPod");
  l.spec.access = GetEnum<Access>(spec, "access").value_or(Access::kReadOnly);
  const json& st = Sub(j, "status");
  l.status.state = GetEnum<LeaseState>(st, "state");
  if (st.contains("boundTo") && st["boundTo"].is_object()) {
    const json& b = st["boundTo"];
    l.status.bound_to =
        LeaseBinding{GetString(b, "volume"), GetString(b, "holderNode"),
                     GetString(b, "holderPod")};
  }
  l.status.epoch = GetInt(st, "epoch");
  l.status.recall_id = GetString(st, "recallID");
  l.status.deadline = GetTime(st, "deadline");
  l.status.reason = GetString(st, "reason");
  l.status.released_recall_id = GetString(st, "releasedRecallID");
  l.status.fence_required = GetBool(st, "fenceRequired");
  l.status.fenced_recall_id = GetString(st, "fencedRecallID");
  l.status.revocation_acknowledged = GetBool(st, "revocationAcknowledged");
  l.status.conditions = ReadConditions(st);
  return l;
}

DaxRecall ReadRecall(const json& j) {
  DaxRecall r;
  r.metadata = ReadMeta(Sub(j, "metadata"));
  const json& spec = Sub(j, "spec");
  r.spec.volume = GetString(spec, "volume");
  r.spec.reason =
      GetEnum<RecallReason>(spec, "reason").value_or(RecallReason::kManual);
  r.spec.grace_seconds = GetOptInt(spec, "graceSeconds");
  const json& st = Sub(j, "status");
  r.status.phase = GetEnum<RecallPhase>(st, "phase");
  r.status.recall_id = GetString(st, "recallID");
  r.status.epoch = GetInt(st, "epoch");
  r.status.released = static_cast<int32_t>(GetInt(st, "released"));
  r.status.revoked = static_cast<int32_t>(GetInt(st, "revoked"));
  r.status.outstanding = static_cast<int32_t>(GetInt(st, "outstanding"));
  r.status.revoked_leases = GetStringList(st, "revokedLeases");
  r.status.fenced_leases = GetStringList(st, "fencedLeases");
  r.status.started_at = GetTime(st, "startedAt");
  r.status.deadline = GetTime(st, "deadline");
  r.status.completed_at = GetTime(st, "completedAt");
  r.status.conditions = ReadConditions(st);
  return r;
}

DaxMigration ReadMigration(const json& j) {
  DaxMigration m;
  m.metadata = ReadMeta(Sub(j, "metadata"));
  const json& spec = Sub(j, "spec");
  m.spec.volume = GetString(spec, "volume");
  m.spec.target_node = GetString(spec, "targetNode");
  const json& st = Sub(j, "status");
  m.status.phase = GetEnum<MigrationPhase>(st, "phase");
  m.status.source_node = GetString(st, "sourceNode");
  m.status.recall = GetString(st, "recall");
  m.status.epoch = GetInt(st, "epoch");
  m.status.bytes_total = GetInt(st, "bytesTotal");
  m.status.bytes_copied = GetInt(st, "bytesCopied");
  m.status.copy_millis = GetInt(st, "copyMilliseconds");
  m.status.source_checksum = GetString(st, "sourceChecksum");
  m.status.target_checksum = GetString(st, "targetChecksum");
  m.status.target_endpoint = GetString(st, "targetEndpoint");
  m.status.target_failure = GetString(st, "targetFailure");
  m.status.source_media_freed = GetBool(st, "sourceMediaFreed");
  m.status.target_media_freed = GetBool(st, "targetMediaFreed");
  m.status.last_progress_time = GetTime(st, "lastProgressTime");
  m.status.started_at = GetTime(st, "startedAt");
  m.status.completed_at = GetTime(st, "completedAt");
  m.status.conditions = ReadConditions(st);
  m.status.pre_copied_bytes = GetInt(st, "preCopiedBytes");
  m.status.pre_copy_millis = GetInt(st, "preCopyMilliseconds");
  m.status.pre_copy_failure = GetString(st, "preCopyFailure");
  m.status.refetched_bytes = GetInt(st, "refetchedBytes");
  return m;
}

template <typename T>
T Read(const json& j);
template <>
DaxVolume Read<DaxVolume>(const json& j) {
  return ReadVolume(j);
}
template <>
DaxLease Read<DaxLease>(const json& j) {
  return ReadLease(j);
}
template <>
DaxRecall Read<DaxRecall>(const json& j) {
  return ReadRecall(j);
}
template <>
DaxMigration Read<DaxMigration>(const json& j) {
  return ReadMigration(j);
}

}  // namespace

template <typename E>
std::string EnumName(E value) {
  for (const auto& [e, name] : EnumTable<E>::kEntries) {
    if (e == value) return name;
  }
  return "";
}

template <typename E>
absl::StatusOr<E> ParseEnum(absl::string_view name) {
  for (const auto& [e, n] : EnumTable<E>::kEntries) {
    if (name == n) return e;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown ", EnumTable<E>::kName, " \"", name, "\""));
}

template <typename E>
std::vector<std::string> EnumNames() {
  std::vector<std::string> out;
  for (const auto& [e, n] : EnumTable<E>::kEntries) out.push_back(n);
  return out;
}

#define DAXLEASE_INSTANTIATE_ENUM(E)                          \
  template std::string EnumName<E>(E);                        \
  template absl::StatusOr<E> ParseEnum<E>(absl::string_view); \
  template std::vector<std::string> EnumNames<E>();
DAXLEASE_INSTANTIATE_ENUM(ConditionStatus)
DAXLEASE_INSTANTIATE_ENUM(VolumeMode)
DAXLEASE_INSTANTIATE_ENUM(FsType)
DAXLEASE_INSTANTIATE_ENUM(VolumePhase)
DAXLEASE_INSTANTIATE_ENUM(Access)
DAXLEASE_INSTANTIATE_ENUM(LeaseState)
DAXLEASE_INSTANTIATE_ENUM(RecallReason)
DAXLEASE_INSTANTIATE_ENUM(RecallPhase)
DAXLEASE_INSTANTIATE_ENUM(MigrationPhase)
#undef DAXLEASE_INSTANTIATE_ENUM

std::string FormatWireTime(absl::Time t) {
  return absl::FormatTime("%Y-%m-%d%ET%H:%M:%E*SZ", t, absl::UTCTimeZone());
}

absl::StatusOr<absl::Time> ParseWireTime(absl::string_view s) {
  absl::Time t;
  std::string err;
  if (!absl::ParseTime(absl::RFC3339_full, std::string(s), &t, &err)) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad RFC 3339 time \"", s, "\": ", err));
  }
  return t;
}

nlohmann::json ToJson(const ObjectMeta& m) {
  json j = json::object();
  PutString(j, "name", m.name);
  PutString(j, "uid", m.uid);
  PutString(j, "resourceVersion", m.resource_version);
  PutInt(j, "generation", m.generation);
  PutTime(j, "creationTimestamp", m.creation_timestamp);
  PutTime(j, "deletionTimestamp", m.deletion_timestamp);
  if (!m.finalizers.empty()) j["finalizers"] = m.finalizers;
  if (!m.labels.empty()) j["labels"] = m.labels;
  if (!m.annotations.empty()) j["annotations"] = m.annotations;
  return j;
}

nlohmann::json ToJson(const Condition& c) {
  json j = json::object();
  j["type"] = c.type;
  j["status"] = EnumName(c.status);
  PutInt(j, "observedGeneration", c.observed_generation);
  j["lastTransitionTime"] = FormatWireTime(c.last_transition_time);
  j["reason"] = c.reason;
  PutString(j, "message", c.message);
  return j;
}

nlohmann::json ToJson(const DaxVolumeStatus& s) {
  json j = json::object();
  PutEnum(j, "phase", s.phase);
  PutString(j, "owner", s.owner);
  PutInt(j, "capacityBytes", s.capacity_bytes);
  PutInt(j, "epoch", s.epoch);
  PutInt(j, "holders", s.holders);
  PutBool(j, "dax", s.dax);
  PutString(j, "activeRecall", s.active_recall);
  PutConditions(j, s.conditions);
  return j;
}

nlohmann::json ToJson(const DaxVolume& v) {
  json j = Envelope("DaxVolume", v.metadata);
  json spec = json::object();
  spec["sizeBytes"] = v.spec.size_bytes;
  spec["mode"] = EnumName(v.spec.mode);
  PutEnum(spec, "fsType", v.spec.fs_type);
  spec["ownerNode"] = v.spec.owner_node;
  PutBool(spec, "share", v.spec.share);
  if (v.spec.recall_grace_seconds.has_value()) {
    spec["recallGraceSeconds"] = *v.spec.recall_grace_seconds;
  }
  j["spec"] = std::move(spec);
  json st = ToJson(v.status);
  if (!st.empty()) j["status"] = std::move(st);
  return j;
}

std::string OwningVolume(const nlohmann::json& obj) {
  auto string_at = [](const json& o, const char* a, const char* b) {
    auto x = o.find(a);
    if (x == o.end() || !x->is_object()) return std::string();
    auto y = x->find(b);
    if (y == x->end() || !y->is_string()) return std::string();
    return y->get<std::string>();
  };
  if (!obj.is_object()) return "";
  auto st = obj.find("status");
  if (st != obj.end() && st->is_object()) {
    std::string bound = string_at(*st, "boundTo", "volume");
    if (!bound.empty()) return bound;
  }
  return string_at(obj, "spec", "volume");
}

nlohmann::json ToJson(const DaxLeaseStatus& s) {
  json j = json::object();
  PutEnum(j, "state", s.state);
  if (s.bound_to.has_value()) {
    json b = json::object();
    PutString(b, "volume", s.bound_to->volume);
    PutString(b, "holderNode", s.bound_to->holder_node);
    PutString(b, "holderPod", s.bound_to->holder_pod);
    j["boundTo"] = std::move(b);
  }
  PutInt(j, "epoch", s.epoch);
  PutString(j, "recallID", s.recall_id);
  PutTime(j, "deadline", s.deadline);
  PutString(j, "reason", s.reason);
  PutString(j, "releasedRecallID", s.released_recall_id);
  PutBool(j, "fenceRequired", s.fence_required);
  PutString(j, "fencedRecallID", s.fenced_recall_id);
  PutBool(j, "revocationAcknowledged", s.revocation_acknowledged);
  PutConditions(j, s.conditions);
  return j;
}

nlohmann::json ToJson(const DaxLease& l) {
  json j = Envelope("DaxLease", l.metadata);
  json spec = json::object();
  spec["volume"] = l.spec.volume;
  spec["holderNode"] = l.spec.holder_node;
  PutString(spec, "holderPod", l.spec.holder_pod);
  spec["access"] = EnumName(l.spec.access);
  j["spec"] = std::move(spec);
  json st = ToJson(l.status);
  if (!st.empty()) j["status"] = std::move(st);
  return j;
}

nlohmann::json ToJson(const DaxRecallStatus& s) {
  json j = json::object();
  PutEnum(j, "phase", s.phase);
  PutString(j, "recallID", s.recall_id);
  PutInt(j, "epoch", s.epoch);
  PutInt(j, "released", s.released);
  PutInt(j, "revoked", s.revoked);
  PutInt(j, "outstanding", s.outstanding);
  if (!s.revoked_leases.empty()) j["revokedLeases"] = s.revoked_leases;
  if (!s.fenced_leases.empty()) j["fencedLeases"] = s.fenced_leases;
  PutTime(j, "startedAt", s.started_at);
  PutTime(j, "deadline", s.deadline);
  PutTime(j, "completedAt", s.completed_at);
  PutConditions(j, s.conditions);
  return j;
}

nlohmann::json ToJson(const DaxRecall& r) {
  json j = Envelope("DaxRecall", r.metadata);
  json spec = json::object();
  spec["volume"] = r.spec.volume;
  spec["reason"] = EnumName(r.spec.reason);
  if (r.spec.grace_seconds.has_value()) {
    spec["graceSeconds"] = *r.spec.grace_seconds;
  }
  j["spec"] = std::move(spec);
  json st = ToJson(r.status);
  if (!st.empty()) j["status"] = std::move(st);
  return j;
}

nlohmann::json NewRecallObject(const std::string& volume, RecallReason reason) {
  DaxRecall r;
  r.metadata.finalizers = {kRecallFinalizer};
  r.spec.volume = volume;
  r.spec.reason = reason;
  return ToJson(r);
}

nlohmann::json ToJson(const DaxMigrationStatus& s) {
  json j = json::object();
  PutEnum(j, "phase", s.phase);
  PutString(j, "sourceNode", s.source_node);
  PutString(j, "recall", s.recall);
  PutInt(j, "epoch", s.epoch);
  PutInt(j, "bytesTotal", s.bytes_total);
  PutInt(j, "bytesCopied", s.bytes_copied);
  PutInt(j, "copyMilliseconds", s.copy_millis);
  PutString(j, "sourceChecksum", s.source_checksum);
  PutString(j, "targetChecksum", s.target_checksum);
  PutString(j, "targetEndpoint", s.target_endpoint);
  PutString(j, "targetFailure", s.target_failure);
  PutBool(j, "sourceMediaFreed", s.source_media_freed);
  PutBool(j, "targetMediaFreed", s.target_media_freed);
  PutTime(j, "lastProgressTime", s.last_progress_time);
  PutTime(j, "startedAt", s.started_at);
  PutTime(j, "completedAt", s.completed_at);
  PutInt(j, "preCopiedBytes", s.pre_copied_bytes);
  PutInt(j, "preCopyMilliseconds", s.pre_copy_millis);
  PutString(j, "preCopyFailure", s.pre_copy_failure);
  PutInt(j, "refetchedBytes", s.refetched_bytes);
  PutConditions(j, s.conditions);
  return j;
}

nlohmann::json ToJson(const DaxMigration& m) {
  json j = Envelope("DaxMigration", m.metadata);
  j["spec"] = {{"volume", m.spec.volume}, {"targetNode", m.spec.target_node}};
  json st = ToJson(m.status);
  if (!st.empty()) j["status"] = std::move(st);
  return j;
}

template <typename T>
absl::StatusOr<T> FromJson(const nlohmann::json& j) {
  if (!j.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(Resource<T>::kKind, ": not a JSON object"));
  }
  try {
    return Read<T>(j);
  } catch (const ParseError& e) {
    // The error names the object when it can; a malformed metadata is
    // itself the error, so naming must not throw again.
    auto meta = j.find("metadata");
    std::string name = "(unnamed)";
    if (meta != j.end() && meta->is_object()) {
      auto n = meta->find("name");
      if (n != meta->end() && n->is_string()) name = n->get<std::string>();
    }
    return absl::InvalidArgumentError(
        absl::StrCat(Resource<T>::kKind, " ", name, ": ", e.message));
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(Resource<T>::kKind, ": ", e.what()));
  }
}

template <typename T>
absl::StatusOr<std::vector<T>> ListFromJson(const nlohmann::json& list) {
  std::vector<T> out;
  if (!list.is_object()) {
    return absl::InvalidArgumentError("list: not a JSON object");
  }
  auto it = list.find("items");
  if (it == list.end() || it->is_null()) return out;
  if (!it->is_array()) return absl::InvalidArgumentError("items: not an array");
  out.reserve(it->size());
  for (const json& item : *it) {
    ASSIGN_OR_RETURN(T t, FromJson<T>(item));
    out.push_back(std::move(t));
  }
  return out;
}

#define DAXLEASE_INSTANTIATE_KIND(T)                             \
  template absl::StatusOr<T> FromJson<T>(const nlohmann::json&); \
  template absl::StatusOr<std::vector<T>> ListFromJson<T>(       \
      const nlohmann::json&);
DAXLEASE_INSTANTIATE_KIND(DaxVolume)
DAXLEASE_INSTANTIATE_KIND(DaxLease)
DAXLEASE_INSTANTIATE_KIND(DaxRecall)
DAXLEASE_INSTANTIATE_KIND(DaxMigration)
#undef DAXLEASE_INSTANTIATE_KIND

nlohmann::json CreateMergePatch(const nlohmann::json& from,
                                const nlohmann::json& to) {
  if (!from.is_object() || !to.is_object()) return to;
  json patch = json::object();
  for (auto it = from.begin(); it != from.end(); ++it) {
    if (!to.contains(it.key())) patch[it.key()] = nullptr;
  }
  for (auto it = to.begin(); it != to.end(); ++it) {
    auto old = from.find(it.key());
    if (old == from.end()) {
      patch[it.key()] = *it;
    } else if (*old != *it) {
      if (old->is_object() && it->is_object()) {
        patch[it.key()] = CreateMergePatch(*old, *it);
      } else {
        patch[it.key()] = *it;
      }
    }
  }
  return patch;
}

}  // namespace daxlease::api
