#include "csi/snapshot_store.h"

#include <exception>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "lib/base/status.h"
#include "nlohmann/json.hpp"

namespace daxlease::csi {
namespace {

using nlohmann::json;

const char* PhaseName(SnapshotPhase p) {
  switch (p) {
    case SnapshotPhase::kCreating:
      return "creating";
    case SnapshotPhase::kReady:
      return "ready";
    case SnapshotPhase::kDeleting:
      return "deleting";
  }
  return "?";
}

}  // namespace

std::string SnapshotRecordToJson(const SnapshotRecord& rec) {
  json j;
  j["id"] = rec.id;
  j["name"] = rec.name;
  j["sourceVolumeId"] = rec.source_volume_id;
  j["sizeBytes"] = rec.size_bytes;
  j["mode"] = std::string(VolumeModeName(rec.mode));
  j["fsType"] = rec.fs_type;
  j["formatted"] = rec.formatted;
  j["creationUnixNanos"] = rec.creation_unix_nanos;
  j["phase"] = PhaseName(rec.phase);
  if (!rec.frozen_path.empty()) j["frozenPath"] = rec.frozen_path;
  return j.dump(2);
}

absl::StatusOr<SnapshotRecord> SnapshotRecordFromJson(absl::string_view text) {
  try {
    json j = json::parse(text.begin(), text.end());
    SnapshotRecord rec;
    rec.id = j.at("id").get<std::string>();
    rec.name = j.at("name").get<std::string>();
    rec.source_volume_id = j.at("sourceVolumeId").get<std::string>();
    const json& size = j.at("sizeBytes");
    if (!size.is_number_unsigned()) {
      return absl::DataLossError(
          "corrupt snapshot record: sizeBytes is not a non-negative integer");
    }
    rec.size_bytes = size.get<uint64_t>();
    auto mode = ParseVolumeMode(j.at("mode").get<std::string>());
    if (!mode.ok()) return mode.status();
    rec.mode = *mode;
    rec.fs_type = j.value("fsType", "");
    rec.formatted = j.value("formatted", false);
    const json& created = j.at("creationUnixNanos");
    if (!created.is_number_integer()) {
      return absl::DataLossError(
          "corrupt snapshot record: creationUnixNanos is not an integer");
    }
    rec.creation_unix_nanos = created.get<int64_t>();
    const std::string phase = j.at("phase").get<std::string>();
    if (phase == "creating") {
      rec.phase = SnapshotPhase::kCreating;
    } else if (phase == "ready") {
      rec.phase = SnapshotPhase::kReady;
    } else if (phase == "deleting") {
      rec.phase = SnapshotPhase::kDeleting;
    } else {
      return absl::DataLossError(
          absl::StrCat("corrupt snapshot record: unknown phase '", phase, "'"));
    }
    rec.frozen_path = j.value("frozenPath", "");
    return rec;
  } catch (const std::exception& e) {
    return absl::DataLossError(
        absl::StrCat("corrupt snapshot record: ", e.what()));
  }
}

absl::Status SnapshotStore::Init() { return env_->MakeDirs(dir_, 0700); }

std::string SnapshotStore::PathFor(absl::string_view id) const {
  return absl::StrCat(dir_, "/", id, ".json");
}

absl::StatusOr<std::optional<SnapshotRecord>> SnapshotStore::Load(
    absl::string_view id) {
  std::string path = PathFor(id);
  auto text = env_->ReadFile(path);
  if (!text.ok()) {
    if (absl::IsNotFound(text.status())) return std::optional<SnapshotRecord>();
    return text.status();
  }
  auto rec = SnapshotRecordFromJson(*text);
  if (!rec.ok()) return base::Annotate(rec.status(), path);
  return std::optional<SnapshotRecord>(std::move(*rec));
}

absl::Status SnapshotStore::Save(const SnapshotRecord& rec) {
  return sys::WriteFileAtomic(env_, PathFor(rec.id), SnapshotRecordToJson(rec),
                              sys::Durability::kDurable);
}

absl::Status SnapshotStore::Remove(absl::string_view id) {
  RETURN_IF_ERROR(env_->RemoveFile(PathFor(id)));
  return env_->Sync(dir_);
}

absl::StatusOr<std::vector<SnapshotRecord>> SnapshotStore::LoadAll() {
  ASSIGN_OR_RETURN(std::vector<std::string> names, env_->ListDir(dir_));
  std::vector<SnapshotRecord> out;
  for (const std::string& name : names) {
    if (!absl::EndsWith(name, ".json")) continue;  // skips *.json.tmp
    ASSIGN_OR_RETURN(auto rec, Load(name.substr(0, name.size() - 5)));
    if (rec.has_value()) out.push_back(std::move(*rec));
  }
  return out;
}

}  // namespace daxlease::csi
