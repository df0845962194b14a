#include "csi/state_store.h"

#include <exception>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "lib/base/log.h"
#include "lib/base/status.h"
#include "nlohmann/json.hpp"

namespace daxlease::csi {
namespace {

using nlohmann::json;

const char* VolumePhaseName(VolumePhase p) {
  return p == VolumePhase::kDeleting ? "deleting" : "ready";
}

// Thrown (and caught below) for the record of a CreateVolume that an older
// version left unfinished: such versions wrote "creating" before the
// media. Since records are written after the media, it reads as no record:
// the media (if any) is adopted by the CO's retry, as media without a
// record always is.
struct LegacyCreating {};

template <typename E>
E ParsePhase(const std::string& s,
             std::initializer_list<std::pair<const char*, E>> names) {
  for (const auto& [n, e] : names) {
    if (s == n) return e;
  }
  throw std::runtime_error("unknown phase '" + s + "'");
}

}  // namespace

namespace {

json MountsToJson(const VolumeRecord& rec) {
  json j = json::object();
  if (rec.stage.has_value()) {
    const StageRecord& s = *rec.stage;
    j["stage"] = {{"stagingPath", s.staging_path},
                  {"block", s.block},
                  {"fsType", s.fs_type},
                  {"mountFlags", s.mount_flags},
                  {"device", s.device}};
  }
  json pubs = json::array();
  for (const auto& [target, p] : rec.publishes) {
    json pj = {{"targetPath", p.target_path},
               {"readOnly", p.read_only},
               {"block", p.block}};
    if (p.shared_dir) pj["sharedDir"] = true;
    pubs.push_back(pj);
  }
  j["publishes"] = pubs;
  return j;
}

// Throws on a malformed document (the callers catch).
void MountsFromJson(const json& j, VolumeRecord& rec) {
  rec.stage.reset();
  rec.publishes.clear();
  if (j.contains("stage") && !j["stage"].is_null()) {
    const json& s = j["stage"];
    StageRecord st;
    st.staging_path = s.at("stagingPath").get<std::string>();
    st.block = s.value("block", false);
    st.fs_type = s.value("fsType", "");
    st.mount_flags = s.value("mountFlags", std::vector<std::string>());
    st.device = s.value("device", "");
    // Older versions also wrote a "phase" (staging/staged/unstaging);
    // every step of staging and unstaging is idempotent, so an entry
    // means "the CO asked for this stage" whatever its phase said.
    rec.stage = st;
  }
  if (j.contains("publishes")) {
    for (const json& p : j["publishes"]) {
      PublishRecord pr;
      pr.target_path = p.at("targetPath").get<std::string>();
      pr.read_only = p.value("readOnly", false);
      pr.block = p.value("block", false);  // an old "phase": as above
      pr.shared_dir = p.value("sharedDir", false);
      rec.publishes[pr.target_path] = pr;
    }
  }
}

}  // namespace

std::string RecordToJson(const VolumeRecord& rec) {
  json j = MountsToJson(rec);
  j["id"] = rec.id;
  j["name"] = rec.name;
  j["capacityBytes"] = rec.capacity_bytes;
  j["mode"] = std::string(VolumeModeName(rec.mode));
  j["fsType"] = rec.fs_type;
  j["parameters"] = rec.parameters;
  j["phase"] = VolumePhaseName(rec.phase);
  j["formatted"] = rec.formatted;
  if (!rec.content_source.empty()) j["contentSource"] = rec.content_source;
  return j.dump(2);
}

absl::StatusOr<VolumeRecord> RecordFromJson(absl::string_view text) {
  // nlohmann reports errors by exceptions; they stop here.
  try {
    json j = json::parse(text.begin(), text.end());
    VolumeRecord rec;
    rec.id = j.at("id").get<std::string>();
    rec.name = j.at("name").get<std::string>();
    // Only a non-negative integer: nlohmann converts a float with a
    // static_cast, which is undefined behaviour out of range (1e300).
    const json& capacity = j.at("capacityBytes");
    if (!capacity.is_number_unsigned()) {
      return absl::DataLossError(
          "corrupt volume record: capacityBytes is not a non-negative integer");
    }
    rec.capacity_bytes = capacity.get<uint64_t>();
    auto mode = ParseVolumeMode(j.at("mode").get<std::string>());
    if (!mode.ok()) return mode.status();
    rec.mode = *mode;
    rec.fs_type = j.value("fsType", "");
    rec.parameters =
        j.value("parameters", std::map<std::string, std::string>());
    const std::string phase = j.at("phase").get<std::string>();
    if (phase == "creating") throw LegacyCreating{};
    rec.phase = ParsePhase<VolumePhase>(
        phase,
        {{"ready", VolumePhase::kReady}, {"deleting", VolumePhase::kDeleting}});
    rec.formatted = j.value("formatted", false);
    rec.content_source = j.value("contentSource", "");
    MountsFromJson(j, rec);
    return rec;
  } catch (const LegacyCreating&) {
    return absl::NotFoundError(
        "record of an unfinished CreateVolume of an older version");
  } catch (const std::exception& e) {
    return absl::DataLossError(
        absl::StrCat("corrupt volume record: ", e.what()));
  }
}

absl::Status StateStore::Init() { return env_->MakeDirs(dir_, 0700); }

std::string StateStore::PathFor(absl::string_view id) const {
  return absl::StrCat(dir_, "/", id, ".json");
}

// Volume IDs have no '.' (ValidateVolumeId), so this never names a record.
std::string StateStore::MountsPathFor(absl::string_view id) const {
  return absl::StrCat(dir_, "/", id, ".mounts.json");
}

absl::StatusOr<std::optional<VolumeRecord>> StateStore::Load(
    absl::string_view id) {
  std::string path = PathFor(id);
  auto text = env_->ReadFile(path);
  if (!text.ok()) {
    if (absl::IsNotFound(text.status())) return std::optional<VolumeRecord>();
    return text.status();
  }
  auto rec = RecordFromJson(*text);
  if (absl::IsNotFound(rec.status())) {
    base::LogWarn("csi.state.legacy_creating_record", {{"path", path}});
    return std::optional<VolumeRecord>();
  }
  if (!rec.ok()) return base::Annotate(rec.status(), path);
  const std::string mounts_path = MountsPathFor(id);
  auto mounts = env_->ReadFile(mounts_path);
  if (mounts.ok()) {
    try {
      MountsFromJson(json::parse(*mounts), *rec);
    } catch (const std::exception& e) {
      // Written without fsync, so only a power loss can tear it; the
      // mounts it described went with the power. The record's own
      // entries (the last durable ones) stand.
      base::LogWarn("csi.state.torn_mounts_record",
                    {{"path", mounts_path}, {"error", e.what()}});
    }
  } else if (!absl::IsNotFound(mounts.status())) {
    return mounts.status();
  }
  return std::optional<VolumeRecord>(std::move(*rec));
}

absl::Status StateStore::Save(const VolumeRecord& rec,
                              sys::Durability durability) {
  // The record first, then the mounts file it supersedes, then one
  // directory fsync for both: a crash in between leaves the mounts file
  // over the new record, which is what it was before the call (the CO's
  // retry of the call does it again).
  RETURN_IF_ERROR(sys::WriteFileAtomic(env_, PathFor(rec.id), RecordToJson(rec),
                                       sys::Durability::kAtomic));
  RETURN_IF_ERROR(env_->RemoveFile(MountsPathFor(rec.id)));
  if (durability != sys::Durability::kDurable) return absl::OkStatus();
  return env_->Sync(dir_);
}

absl::Status StateStore::SaveMounts(const VolumeRecord& rec) {
  return sys::WriteFileAtomic(env_, MountsPathFor(rec.id),
                              MountsToJson(rec).dump(2),
                              sys::Durability::kVolatile);
}

absl::Status StateStore::Remove(absl::string_view id) {
  RETURN_IF_ERROR(env_->RemoveFile(MountsPathFor(id)));
  RETURN_IF_ERROR(env_->RemoveFile(PathFor(id)));
  return env_->Sync(dir_);
}

absl::StatusOr<std::vector<VolumeRecord>> StateStore::LoadAll() {
  ASSIGN_OR_RETURN(std::vector<std::string> names, env_->ListDir(dir_));
  std::vector<VolumeRecord> out;
  for (const std::string& name : names) {
    if (!absl::EndsWith(name, ".json")) continue;  // skips *.json.tmp
    std::string id = name.substr(0, name.size() - 5);
    if (absl::StrContains(id, '.')) continue;  // <id>.mounts.json
    ASSIGN_OR_RETURN(auto rec, Load(id));
    if (rec.has_value()) out.push_back(std::move(*rec));
  }
  return out;
}

}  // namespace daxlease::csi
