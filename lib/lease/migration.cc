#include "lib/lease/migration.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "lib/api/conditions.h"

namespace daxlease::lease {
namespace {

// The algorithm a checksum names: what precedes its ':' (all of it if none).
absl::string_view AlgorithmOf(absl::string_view checksum) {
  return checksum.substr(0, checksum.find(':'));
}

class Stepper {
 public:
  Stepper(const Migration& m, const MigrationView& v, absl::Time now,
          const MigrationConfig& c)
      : v_(v), vol_(v.volume), now_(now), c_(c) {
    out_.migration = m;
  }

  MigrationStep Run() {
    Migration& n = out_.migration;
    if (n.phase == MigrationPhase::kComplete) {
      // The switch is written before Complete; finish it if it was lost.
      if (Ours() && vol_->phase == VolumePhase::kMigrating) {
        out_.volume_event = ChangeDone{n.target_node};
      }
      MayForget();
      return Say(api::kMigrationSucceededCondition, "Moved", Moved());
    }
    if (n.phase == MigrationPhase::kFailed) {
      RollBack();
      MayForget();
      return std::move(out_);  // the caller keeps the Failed condition
    }
    if (vol_ == nullptr) {
      return Fail("VolumeNotFound", "the DaxVolume does not exist");
    }
    if (n.deleting && !Verified() && n.phase != MigrationPhase::kSwitching) {
      if (n.phase == MigrationPhase::kPending && !v_.recall_for.empty() &&
          v_.recall_for == n.id && vol_->recall.has_value()) {
        n.recall = v_.recall_name;  // adopted, so that it is rolled back
        n.source_node = vol_->owner_node;
        n.epoch = vol_->epoch;
      }
      return Fail("Deleted",
                  "the DaxMigration was deleted before the copy was verified");
    }
    switch (n.phase) {
      case MigrationPhase::kPending:
        return Pending();
      case MigrationPhase::kPreCopying:
        return PreCopying();
      case MigrationPhase::kRecalling:
        return Recalling();
      case MigrationPhase::kCopying:
        return Copying();
      case MigrationPhase::kSwitching:
        return Switching();
      default:
        return std::move(out_);
    }
  }

 private:
  // The volume's running (or just completed) recall is this migration's.
  bool Ours() const {
    return vol_ != nullptr && vol_->recall.has_value() &&
           !out_.migration.recall.empty() &&
           v_.recall_name == out_.migration.recall;
  }

  // The volume's recall is this migration's, but the migration's own write
  // naming it was lost (it is written after the recall is created).
  bool OurRecallWriteLost() const {
    return !v_.recall_for.empty() && v_.recall_for == out_.migration.id &&
           vol_->recall.has_value();
  }

  // Every byte copied and both checksums equal.
  bool Verified() const {
    const Migration& n = out_.migration;
    return n.bytes_total > 0 && n.bytes_copied >= n.bytes_total &&
           !n.source_checksum.empty() && n.source_checksum == n.target_checksum;
  }

  // A finished migration being deleted: its finalizer may go once the
  // volume left its recall (the switch or the rollback is stored) and the
  // side that lost freed its media (a target that never started made none).
  void MayForget() {
    const Migration& n = out_.migration;
    if (!n.deleting || out_.volume_event.has_value()) return;
    if (vol_ != nullptr && Ours()) return;
    out_.forget =
        vol_ == nullptr || (n.phase == MigrationPhase::kComplete
                                ? n.source_media_freed
                                : n.target_media_freed || !n.target_started);
  }

  std::string Moved() const {
    const Migration& n = out_.migration;
    return absl::StrCat("moved from ", n.source_node, " to ", n.target_node,
                        " (", n.bytes_copied, " bytes, checksums match)");
  }

  MigrationStep Say(const char* condition, std::string reason,
                    std::string message) {
    out_.condition = condition;
    out_.reason = std::move(reason);
    out_.message = std::move(message);
    return std::move(out_);
  }
  MigrationStep Progress(std::string reason, std::string message) {
    return Say(api::kMigrationProgressingCondition, std::move(reason),
               std::move(message));
  }

  // The volume leaves this migration's change with its owner unchanged.
  void RollBack() {
    if (!Ours()) return;
    if (vol_->phase == VolumePhase::kQuiesced) {
      out_.volume_event = Resume{};
    } else if (vol_->phase == VolumePhase::kMigrating) {
      out_.volume_event = ChangeDone{};
    }
  }

  MigrationStep Fail(std::string reason, std::string message) {
    Migration& n = out_.migration;
    n.phase = MigrationPhase::kFailed;
    RollBack();
    if (!n.source_node.empty()) {
      absl::StrAppend(&message, "; the volume stays on ", n.source_node);
    }
    return Say(api::kMigrationFailedCondition, std::move(reason),
               std::move(message));
  }

  MigrationStep Pending() {
    Migration& n = out_.migration;
    if (OurRecallWriteLost()) {
      n.recall = v_.recall_name;
      return Start();
    }
    if (n.target_node == vol_->owner_node) {
      return Fail("SameNode",
                  absl::StrCat("the volume already lives on ", n.target_node));
    }
    if (!vol_->shared) {
      return Fail("NotShared",
                  "only a shared volume migrates (its holders on other "
                  "nodes follow it over the fabric)");
    }
    if (v_.earlier_running) {
      return Progress("WaitingForEarlierMigration",
                      "another migration of this volume runs first");
    }
    if (vol_->phase != VolumePhase::kReady) {
      return Progress("WaitingForVolume",
                      absl::StrCat("the volume is ", Name(vol_->phase)));
    }
    if (c_.pre_copy) {
      n.phase = MigrationPhase::kPreCopying;
      n.source_node = vol_->owner_node;
      n.epoch = vol_->epoch;
      n.last_progress = now_;
      n.started = now_;
      out_.recheck_at = now_ + c_.stall_timeout + absl::Seconds(1);
      return Progress(
          "PreCopying",
          absl::StrCat(n.target_node, " copies from ", n.source_node,
                       " while the volume stays Ready"));
    }
    n.recall = MigrationRecallName(vol_->volume, vol_->epoch);
    return Start();
  }

  // The pre-copy ends (done, failed, stalled or too long) and the recall
  // starts once the volume is Ready; a pre-copy that fell short only makes
  // the copy inside the pause longer.
  MigrationStep PreCopying() {
    Migration& n = out_.migration;
    if (OurRecallWriteLost()) {
      n.recall = v_.recall_name;
      return Start();
    }
    std::string why;
    if (n.bytes_total > 0 && n.pre_copied_bytes >= n.bytes_total) {
      why = absl::StrCat("pre-copied ", n.pre_copied_bytes, " bytes");
    } else if (!n.pre_copy_failure.empty()) {
      why = absl::StrCat("the pre-copy failed (", n.pre_copy_failure,
                         "); the copy is whole inside the pause");
    } else if (now_ - n.last_progress > c_.stall_timeout) {
      why = absl::StrCat("no pre-copy progress from ", n.target_node, " for ",
                         absl::FormatDuration(now_ - n.last_progress),
                         "; the copy is whole inside the pause");
    } else if (n.started != absl::InfinitePast() &&
               now_ - n.started > c_.pre_copy_timeout) {
      why = absl::StrCat("the pre-copy ran past ",
                         absl::FormatDuration(c_.pre_copy_timeout),
                         "; the rest is copied inside the pause");
    } else {
      out_.recheck_at = std::min(n.last_progress + c_.stall_timeout,
                                 n.started == absl::InfinitePast()
                                     ? absl::InfiniteFuture()
                                     : n.started + c_.pre_copy_timeout) +
                        absl::Seconds(1);
      return Progress(
          "PreCopying",
          absl::StrCat(n.pre_copied_bytes, " of ",
                       n.bytes_total > 0 ? absl::StrCat(n.bytes_total)
                                         : std::string("?"),
                       " bytes pre-copied while the volume stays Ready"));
    }
    if (vol_->phase != VolumePhase::kReady) {
      return Progress("WaitingForVolume",
                      absl::StrCat(why, "; the volume is ", Name(vol_->phase)));
    }
    n.recall = MigrationRecallName(vol_->volume, vol_->epoch);
    MigrationStep st = Start();
    st.message = absl::StrCat(why, "; ", st.message);
    return st;
  }

  MigrationStep Start() {
    Migration& n = out_.migration;
    n.phase = MigrationPhase::kRecalling;
    n.source_node = vol_->owner_node;
    n.epoch = vol_->epoch;
    out_.create_recall = n.recall;
    return Progress("Recalling",
                    absl::StrCat("recall ", n.recall,
                                 " asks the holders to flush and unmap"));
  }

  MigrationStep Recalling() {
    Migration& n = out_.migration;
    if (!Ours()) {
      if (vol_->epoch > n.epoch) {
        return Fail("RecallLost",
                    absl::StrCat("the volume went on to epoch ", vol_->epoch,
                                 " without recall ", n.recall));
      }
      out_.create_recall = n.recall;  // idempotent: it may not exist yet
      return Progress("Recalling", absl::StrCat("waiting for recall ", n.recall,
                                                " to start (the volume is ",
                                                Name(vol_->phase), ")"));
    }
    if (vol_->phase == VolumePhase::kRecalling) {
      return Progress("Recalling", absl::StrCat("recall ", n.recall,
                                                " asks the holders to flush "
                                                "and unmap"));
    }
    if (vol_->phase == VolumePhase::kQuiesced) {
      out_.volume_event = BeginChange{ChangeKind::kMigrate};
    }
    n.phase = MigrationPhase::kCopying;
    n.last_progress = now_;
    out_.recheck_at = now_ + c_.stall_timeout;
    return Progress("Copying",
                    absl::StrCat("holders are paused; ", n.target_node,
                                 " copies from ", n.source_node));
  }

  MigrationStep Copying() {
    Migration& n = out_.migration;
    if (!Ours()) {
      if (vol_->owner_node == n.target_node && vol_->epoch > n.epoch) {
        n.phase = MigrationPhase::kComplete;
        return Say(api::kMigrationSucceededCondition, "Moved", Moved());
      }
      return Fail("RecallLost",
                  absl::StrCat("the volume left recall ", n.recall,
                               " before the copy was verified"));
    }
    if (vol_->phase == VolumePhase::kQuiesced) {
      out_.volume_event = BeginChange{ChangeKind::kMigrate};
    }
    if (!n.target_failure.empty()) {
      const size_t colon = n.target_failure.find(':');
      std::string reason = colon == std::string::npos
                               ? "TargetFailed"
                               : n.target_failure.substr(0, colon);
      if (reason.empty() || reason.find(' ') != std::string::npos) {
        reason = "TargetFailed";
      }
      return Fail(std::move(reason),
                  absl::StrCat(n.target_node, ": ", n.target_failure));
    }
    if (n.bytes_total > 0 && n.bytes_copied >= n.bytes_total &&
        !n.source_checksum.empty() && !n.target_checksum.empty()) {
      // "<algorithm>:<hex>": agents of two versions may hash differently;
      // their checksums never match, and the reason says why.
      const absl::string_view src_alg = AlgorithmOf(n.source_checksum);
      const absl::string_view dst_alg = AlgorithmOf(n.target_checksum);
      if (src_alg != dst_alg) {
        return Fail(
            "ChecksumAlgorithmMismatch",
            absl::StrCat("the source (", n.source_node, ") sums with ", src_alg,
                         ", the target (", n.target_node, ") with ", dst_alg,
                         ": agents of different versions; run the "
                         "same agent version on both nodes"));
      }
      if (n.source_checksum != n.target_checksum) {
        return Fail("ChecksumMismatch",
                    absl::StrCat("source ", n.source_checksum, ", target ",
                                 n.target_checksum));
      }
      n.phase = MigrationPhase::kSwitching;
      out_.volume_event = ChangeDone{n.target_node};
      return Progress(
          "Switching",
          absl::StrCat("copy verified; ", n.target_node,
                       " owns the volume from epoch ", vol_->epoch + 1));
    }
    if (now_ - n.last_progress > c_.stall_timeout) {
      return Fail("TargetUnresponsive",
                  absl::StrCat("no progress from ", n.target_node, " for ",
                               absl::FormatDuration(now_ - n.last_progress),
                               " (target or source agent gone)"));
    }
    out_.recheck_at = n.last_progress + c_.stall_timeout + absl::Seconds(1);
    return Progress(
        "Copying",
        absl::StrCat(
            n.bytes_copied, " of ",
            n.bytes_total > 0 ? absl::StrCat(n.bytes_total) : std::string("?"),
            " bytes copied",
            n.bytes_total > 0 && n.bytes_copied >= n.bytes_total
                ? "; waiting for the checksums"
                : ""));
  }

  MigrationStep Switching() {
    Migration& n = out_.migration;
    if (Ours() && vol_->phase == VolumePhase::kMigrating) {
      out_.volume_event = ChangeDone{n.target_node};
      return Progress("Switching", "switching the owner");
    }
    if (vol_->owner_node == n.target_node && vol_->epoch > n.epoch) {
      n.phase = MigrationPhase::kComplete;
      return Say(api::kMigrationSucceededCondition, "Moved", Moved());
    }
    return Fail("RecallLost",
                absl::StrCat("the volume left recall ", n.recall,
                             " without switching to ", n.target_node));
  }

  MigrationStep out_;
  const MigrationView& v_;
  const VolumeState* vol_;
  const absl::Time now_;
  const MigrationConfig& c_;
};

}  // namespace

std::string MigrationRecallName(absl::string_view volume, uint64_t epoch) {
  return absl::StrCat(volume, "-migrate-e", epoch);
}

MigrationStep StepMigration(const Migration& m, const MigrationView& v,
                            absl::Time now, const MigrationConfig& config) {
  return Stepper(m, v, now, config).Run();
}

bool MigrationFinished(MigrationPhase p) {
  return p == MigrationPhase::kComplete || p == MigrationPhase::kFailed;
}

absl::string_view Name(MigrationPhase p) {
  switch (p) {
    case MigrationPhase::kPending:
      return "Pending";
    case MigrationPhase::kPreCopying:
      return "PreCopying";
    case MigrationPhase::kRecalling:
      return "Recalling";
    case MigrationPhase::kCopying:
      return "Copying";
    case MigrationPhase::kSwitching:
      return "Switching";
    case MigrationPhase::kComplete:
      return "Complete";
    case MigrationPhase::kFailed:
      return "Failed";
  }
  return "";
}

}  // namespace daxlease::lease
