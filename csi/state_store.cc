#include "csi/state_store.h"

#include <exception>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "lib/base/status.h"
#include "lib/sys/file.h"
#include "nlohmann/json.hpp"

namespace daxlease::csi {
namespace {

using nlohmann::json;

const char* VolumePhaseName(VolumePhase p) {
  switch (p) {
    case VolumePhase::kCreating:
      return "creating";
    case VolumePhase::kReady:
      return "ready";
    case VolumePhase::kDeleting:
      return "deleting";
  }
  return "creating";
}
const char* StagePhaseName(StagePhase p) {
  switch (p) {
    case StagePhase::kStaging:
      return "staging";
    case StagePhase::kStaged:
      return "staged";
    case StagePhase::kUnstaging:
      return "unstaging";
  }
  return "staging";
}
const char* PublishPhaseName(PublishPhase p) {
  switch (p) {
    case PublishPhase::kPublishing:
      return "publishing";
    case PublishPhase::kPublished:
      return "published";
    case PublishPhase::kUnpublishing:
      return "unpublishing";
  }
  return "publishing";
}

template <typename E>
E ParsePhase(const std::string& s,
             std::initializer_list<std::pair<const char*, E>> names) {
  for (const auto& [n, e] : names) {
    if (s == n) return e;
  }
  throw std::runtime_error("unknown phase '" + s + "'");
}

}  // namespace

std::string RecordToJson(const VolumeRecord& rec) {
  json j;
  j["id"] = rec.id;
  j["name"] = rec.name;
  j["capacityBytes"] = rec.capacity_bytes;
  j["mode"] = std::string(VolumeModeName(rec.mode));
  j["fsType"] = rec.fs_type;
  j["parameters"] = rec.parameters;
  j["phase"] = VolumePhaseName(rec.phase);
  if (rec.stage.has_value()) {
    const StageRecord& s = *rec.stage;
    j["stage"] = {{"stagingPath", s.staging_path},
                  {"block", s.block},
                  {"fsType", s.fs_type},
                  {"mountFlags", s.mount_flags},
                  {"device", s.device},
                  {"phase", StagePhaseName(s.phase)}};
  }
  json pubs = json::array();
  for (const auto& [target, p] : rec.publishes) {
    pubs.push_back({{"targetPath", p.target_path},
                    {"readOnly", p.read_only},
                    {"block", p.block},
                    {"phase", PublishPhaseName(p.phase)}});
  }
  j["publishes"] = pubs;
  return j.dump(2);
}

absl::StatusOr<VolumeRecord> RecordFromJson(absl::string_view text) {
  // nlohmann reports errors by exceptions; they stop here.
  try {
    json j = json::parse(text.begin(), text.end());
    VolumeRecord rec;
    rec.id = j.at("id").get<std::string>();
    rec.name = j.at("name").get<std::string>();
    rec.capacity_bytes = j.at("capacityBytes").get<uint64_t>();
    auto mode = ParseVolumeMode(j.at("mode").get<std::string>());
    if (!mode.ok()) return mode.status();
    rec.mode = *mode;
    rec.fs_type = j.value("fsType", "");
    rec.parameters =
        j.value("parameters", std::map<std::string, std::string>());
    rec.phase = ParsePhase<VolumePhase>(j.at("phase").get<std::string>(),
                                        {{"creating", VolumePhase::kCreating},
                                         {"ready", VolumePhase::kReady},
                                         {"deleting", VolumePhase::kDeleting}});
    if (j.contains("stage") && !j["stage"].is_null()) {
      const json& s = j["stage"];
      StageRecord st;
      st.staging_path = s.at("stagingPath").get<std::string>();
      st.block = s.value("block", false);
      st.fs_type = s.value("fsType", "");
      st.mount_flags = s.value("mountFlags", std::vector<std::string>());
      st.device = s.value("device", "");
      st.phase =
          ParsePhase<StagePhase>(s.at("phase").get<std::string>(),
                                 {{"staging", StagePhase::kStaging},
                                  {"staged", StagePhase::kStaged},
                                  {"unstaging", StagePhase::kUnstaging}});
      rec.stage = st;
    }
    if (j.contains("publishes")) {
      for (const json& p : j["publishes"]) {
        PublishRecord pr;
        pr.target_path = p.at("targetPath").get<std::string>();
        pr.read_only = p.value("readOnly", false);
        pr.block = p.value("block", false);
        pr.phase = ParsePhase<PublishPhase>(
            p.at("phase").get<std::string>(),
            {{"publishing", PublishPhase::kPublishing},
             {"published", PublishPhase::kPublished},
             {"unpublishing", PublishPhase::kUnpublishing}});
        rec.publishes[pr.target_path] = pr;
      }
    }
    return rec;
  } catch (const std::exception& e) {
    return absl::DataLossError(
        absl::StrCat("corrupt volume record: ", e.what()));
  }
}

absl::Status StateStore::Init() { return sys::MakeDirs(dir_, 0700); }

std::string StateStore::PathFor(absl::string_view id) const {
  return absl::StrCat(dir_, "/", id, ".json");
}

absl::StatusOr<std::optional<VolumeRecord>> StateStore::Load(
    absl::string_view id) {
  std::string path = PathFor(id);
  auto text = sys::ReadFile(path);
  if (!text.ok()) {
    if (absl::IsNotFound(text.status())) return std::optional<VolumeRecord>();
    return text.status();
  }
  auto rec = RecordFromJson(*text);
  if (!rec.ok()) return base::Annotate(rec.status(), path);
  return std::optional<VolumeRecord>(std::move(*rec));
}

absl::Status StateStore::Save(const VolumeRecord& rec) {
  return sys::WriteFileAtomic(PathFor(rec.id), RecordToJson(rec));
}

absl::Status StateStore::Remove(absl::string_view id) {
  RETURN_IF_ERROR(sys::RemoveFile(PathFor(id)));
  return sys::Fsync(dir_);
}

absl::StatusOr<std::vector<VolumeRecord>> StateStore::LoadAll() {
  ASSIGN_OR_RETURN(std::vector<std::string> names, sys::ListDir(dir_));
  std::vector<VolumeRecord> out;
  for (const std::string& name : names) {
    if (!absl::EndsWith(name, ".json")) continue;  // skips *.json.tmp
    std::string id = name.substr(0, name.size() - 5);
    ASSIGN_OR_RETURN(auto rec, Load(id));
    if (rec.has_value()) out.push_back(std::move(*rec));
  }
  return out;
}

}  // namespace daxlease::csi
