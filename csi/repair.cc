#include "csi/repair.h"

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "csi/shared_publish.h"
#include "lib/base/log.h"
#include "lib/base/status.h"

namespace daxlease::csi {

absl::Status TearDownPublish(const DriverDeps& deps, VolumeRecord* rec,
                             const std::string& target) {
  auto it = rec->publishes.find(target);
  if (it == rec->publishes.end()) return absl::OkStatus();
  // No intent is written first: every step is idempotent and the record
  // still names the target until the end, so a crash in the middle is
  // finished by the CO's retry (or by RecoverVolumes).
  if (it->second.shared_dir) {
    RETURN_IF_ERROR(UnmountPublishedDirContents(deps, target));
  }
  RETURN_IF_ERROR(deps.mounter->Unmount(target));
  RETURN_IF_ERROR(deps.mounter->RemovePath(target));
  rec->publishes.erase(target);
  return deps.store->Save(*rec);
}

absl::Status TearDownStage(const DriverDeps& deps, VolumeRecord* rec) {
  if (!rec->stage.has_value()) return absl::OkStatus();
  StageRecord& st = *rec->stage;
  // As in TearDownPublish: idempotent steps, the record updated last.
  if (!st.block) RETURN_IF_ERROR(deps.mounter->Unmount(st.staging_path));
  RETURN_IF_ERROR(deps.backend->Detach(rec->id));
  rec->stage.reset();
  return deps.store->Save(*rec);
}

namespace {

absl::Status RecoverOne(const DriverDeps& deps, VolumeRecord rec) {
  const std::string id = rec.id;
  if (rec.phase == VolumePhase::kDeleting) {
    base::LogInfo("csi.recover.finish_delete", {{"volume", id}});
    for (const auto& [t, p] : std::map(rec.publishes)) {
      RETURN_IF_ERROR(TearDownPublish(deps, &rec, t));
    }
    RETURN_IF_ERROR(TearDownStage(deps, &rec));
    RETURN_IF_ERROR(deps.backend->Detach(id));
    RETURN_IF_ERROR(deps.backend->Delete(id));
    return deps.store->Remove(id);
  }
  // Stage and publish entries need nothing here: every step of staging,
  // publishing and their undoing is idempotent, so the CO's retry (or its
  // NodeUnpublish/NodeUnstage) converges from any prefix of them.
  if (!rec.stage.has_value()) {
    // A device left attached without a stage (e.g. died between attach and
    // recording the stage, or after unmount in an unstage).
    ASSIGN_OR_RETURN(auto dev, deps.backend->FindAttached(id));
    if (dev.has_value()) {
      base::LogInfo("csi.recover.detach",
                    {{"volume", id}, {"device", dev->path}});
      RETURN_IF_ERROR(deps.backend->Detach(id));
    }
  }
  if (rec.phase == VolumePhase::kReady) {
    auto vol = deps.backend->Get(id);
    if (vol.ok() && vol->capacity_bytes > rec.capacity_bytes) {
      // An expansion grew the media but died before recording it.
      base::LogInfo(
          "csi.recover.capacity",
          {{"volume", id}, {"bytes", absl::StrCat(vol->capacity_bytes)}});
      rec.capacity_bytes = vol->capacity_bytes;
      RETURN_IF_ERROR(deps.store->Save(rec));
    } else if (!vol.ok()) {
      base::LogWarn("csi.recover.media_missing",
                    {{"volume", id}, {"error", vol.status().ToString()}});
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status RecoverVolumes(const DriverDeps& deps) {
  absl::Status first;
  ASSIGN_OR_RETURN(std::vector<VolumeRecord> records, deps.store->LoadAll());
  std::set<std::string> known;
  for (VolumeRecord& rec : records) {
    known.insert(rec.id);
    absl::Status s = RecoverOne(deps, rec);
    if (!s.ok()) {
      base::LogError("csi.recover.failed",
                     {{"volume", rec.id}, {"error", s.ToString()}});
      first.Update(s);
    }
  }
  // Devices left over media that is gone (a plugin killed between an
  // image's deletion and its device's release, or its state wiped).
  absl::Status orphans = deps.backend->DetachOrphanedDevices();
  if (!orphans.ok()) {
    base::LogError("csi.recover.orphans", {{"error", orphans.ToString()}});
    first.Update(orphans);
  }
  // Media without a record is never deleted: this plugin writes a volume's
  // record before its media, so such media is not a half-done create of
  // ours but a lost or foreign state directory, and may hold data.
  ASSIGN_OR_RETURN(std::vector<Volume> media, deps.backend->List());
  for (const Volume& v : media) {
    if (known.count(v.id)) continue;
    base::LogWarn(
        "csi.recover.unknown_media",
        {{"volume", v.id},
         {"bytes", absl::StrCat(v.capacity_bytes)},
         {"action",
          "left untouched: no record in the state directory (restore it if "
          "it was lost; delete the media by hand if it is not wanted)"}});
  }
  return first;
}

absl::Status RecoverSnapshots(const DriverDeps& deps) {
  if (deps.snapshots == nullptr || !deps.backend->SupportsSnapshots()) {
    return absl::OkStatus();
  }
  absl::Status first;
  auto note = [&](absl::string_view what, const std::string& id,
                  const absl::Status& s) {
    if (s.ok()) return;
    base::LogError("csi.recover.failed",
                   {{std::string(what), id}, {"error", s.ToString()}});
    first.Update(s);
  };
  ASSIGN_OR_RETURN(std::vector<VolumeRecord> volumes, deps.store->LoadAll());
  for (const VolumeRecord& rec : volumes) {
    if (!rec.stage.has_value() || rec.stage->block) continue;
    absl::StatusOr<std::optional<sys::MountInfo>> mount =
        deps.mounter->GetMount(rec.stage->staging_path);
    if (!mount.ok() || !mount->has_value()) continue;  // nothing to thaw
    note("volume", rec.id, deps.mounter->Thaw(rec.stage->staging_path));
  }
  note("snapshots", "", deps.backend->DropPartialCopies());
  ASSIGN_OR_RETURN(std::vector<SnapshotRecord> snaps,
                   deps.snapshots->LoadAll());
  for (const SnapshotRecord& snap : snaps) {
    if (snap.phase == SnapshotPhase::kReady) continue;
    base::LogInfo(
        "csi.recover.snapshot_removed",
        {{"snapshot", snap.id},
         {"phase",
          snap.phase == SnapshotPhase::kCreating ? "creating" : "deleting"}});
    absl::Status s = deps.backend->DeleteSnapshot(snap.id);
    if (s.ok()) s = deps.snapshots->Remove(snap.id);
    note("snapshot", snap.id, s);
    // A copy of a served volume ran under its Snapshot recall: let the
    // holders back in now rather than at the CO's retry (which recalls
    // again). Only logged when the agent cannot be reached: the retry ends
    // that recall as well.
    if (snap.phase != SnapshotPhase::kCreating || deps.agent == nullptr) {
      continue;
    }
    auto vol = std::find_if(
        volumes.begin(), volumes.end(),
        [&](const VolumeRecord& v) { return v.id == snap.source_volume_id; });
    if (vol == volumes.end() || !IsShared(vol->parameters) ||
        !vol->stage.has_value() || vol->stage->block) {
      continue;
    }
    absl::StatusOr<std::string> resumed =
        deps.agent->SnapshotVolume(vol->id, true);
    if (resumed.ok()) {
      base::LogInfo("csi.recover.snapshot_resumed",
                    {{"volume", vol->id}, {"recall", *resumed}});
    } else {
      base::LogError(
          "csi.recover.failed",
          {{"volume", vol->id}, {"error", resumed.status().ToString()}});
    }
  }
  return first;
}

}  // namespace daxlease::csi
