#include "operator/status_table.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "lib/api/conditions.h"
#include "lib/api/json.h"

namespace daxlease::op {
namespace {

template <typename T>
std::vector<const T*> Sorted(const std::vector<T>& v) {
  std::vector<const T*> out;
  for (const T& t : v) out.push_back(&t);
  std::sort(out.begin(), out.end(), [](const T* a, const T* b) {
    return a->metadata.name < b->metadata.name;
  });
  return out;
}

template <typename E>
std::string Opt(const std::optional<E>& e) {
  return e.has_value() ? api::EnumName(*e) : "-";
}

std::string OrDash(const std::string& s) { return s.empty() ? "-" : s; }

// The condition on the media of the side that lost (the source's after
// Complete, the target's after Failed), nullptr while neither applies.
const char* MediaConditionType(const api::DaxMigration& m) {
  if (m.status.phase == api::MigrationPhase::kComplete) {
    return api::kSourceMediaFreedCondition;
  }
  if (m.status.phase == api::MigrationPhase::kFailed) {
    return api::kTargetMediaFreedCondition;
  }
  return nullptr;
}

// MEDIA: "freed", the reason it is not (FreeFailed), "freeing" while the
// agent has said nothing yet, "-" for a migration still running.
std::string MediaCell(const api::DaxMigration& m) {
  const char* type = MediaConditionType(m);
  if (type == nullptr) return "-";
  const bool source = m.status.phase == api::MigrationPhase::kComplete;
  const api::Condition* c = api::FindCondition(m.status.conditions, type);
  if (c != nullptr && c->status == api::ConditionStatus::kFalse) {
    return c->reason;
  }
  if ((c != nullptr && c->status == api::ConditionStatus::kTrue) ||
      (source ? m.status.source_media_freed : m.status.target_media_freed)) {
    return "freed";
  }
  return "freeing";
}

}  // namespace

std::string FormatTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (const auto& row : rows) {
    if (width.size() < row.size()) width.resize(row.size(), 0);
    for (size_t i = 0; i < row.size(); ++i) {
      width[i] = std::max(width[i], row[i].size());
    }
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size())
        line += std::string(width[i] - row[i].size() + 2, ' ');
    }
    out += line + "\n";
  }
  return out;
}

std::string TimeLeft(std::optional<absl::Time> until, absl::Time now) {
  if (!until.has_value()) return "-";
  absl::Duration d = *until - now;
  if (d <= absl::ZeroDuration()) return "expired";
  int64_t s = absl::ToInt64Seconds(absl::Ceil(d, absl::Seconds(1)));
  if (s < 60) return absl::StrCat(s, "s");
  return absl::StrFormat("%dm%02ds", s / 60, s % 60);
}

std::string FormatStatus(const std::vector<api::DaxVolume>& volumes,
                         const std::vector<api::DaxLease>& leases,
                         const std::vector<api::DaxRecall>& recalls,
                         absl::Time now,
                         const std::vector<api::DaxMigration>& migrations) {
  std::string out;
  std::vector<std::vector<std::string>> vrows = {
      {"VOLUME", "PHASE", "EPOCH", "HOLDERS", "OWNER", "MODE", "RECALL"}};
  for (const api::DaxVolume* v : Sorted(volumes)) {
    vrows.push_back(
        {v->metadata.name, Opt(v->status.phase), absl::StrCat(v->status.epoch),
         absl::StrCat(v->status.holders), v->spec.owner_node,
         api::EnumName(v->spec.mode), OrDash(v->status.active_recall)});
  }
  if (vrows.size() == 1) return "No DaxVolumes found.\n";
  out += FormatTable(vrows);

  for (const api::DaxVolume* v : Sorted(volumes)) {
    std::vector<std::vector<std::string>> lrows = {{"  LEASE", "NODE", "POD",
                                                    "ACCESS", "STATE", "EPOCH",
                                                    "TIME LEFT", "REASON"}};
    for (const api::DaxLease* l : Sorted(leases)) {
      if (l->spec.volume != v->metadata.name) continue;
      std::string state = Opt(l->status.state);
      if (l->status.fence_required) state += " (fencing)";
      bool recalling = l->status.state == api::LeaseState::kRecalling;
      lrows.push_back({"  " + l->metadata.name, l->spec.holder_node,
                       OrDash(l->spec.holder_pod),
                       api::EnumName(l->spec.access), state,
                       absl::StrCat(l->status.epoch),
                       recalling ? TimeLeft(l->status.deadline, now) : "-",
                       OrDash(l->status.reason)});
    }
    out += absl::StrCat("\nVolume ", v->metadata.name, ": ", lrows.size() - 1,
                        " lease(s)\n");
    if (lrows.size() > 1) out += FormatTable(lrows);
  }

  std::vector<std::vector<std::string>> rrows = {
      {"RECALL", "VOLUME", "REASON", "PHASE", "RELEASED", "REVOKED",
       "OUTSTANDING", "TIME LEFT"}};
  for (const api::DaxRecall* r : Sorted(recalls)) {
    if (r->status.phase == api::RecallPhase::kComplete ||
        r->status.phase == api::RecallPhase::kFailed) {
      continue;
    }
    rrows.push_back(
        {r->metadata.name, r->spec.volume, api::EnumName(r->spec.reason),
         Opt(r->status.phase), absl::StrCat(r->status.released),
         absl::StrCat(r->status.revoked), absl::StrCat(r->status.outstanding),
         TimeLeft(r->status.deadline, now)});
  }
  out += "\n";
  if (rrows.size() == 1) {
    out += "No recalls in progress.\n";
  } else {
    out += "Recalls in progress:\n" + FormatTable(rrows);
  }
  if (migrations.empty()) return out;
  std::vector<std::vector<std::string>> mrows = {{"MIGRATION", "VOLUME", "FROM",
                                                  "TO", "PHASE", "COPIED",
                                                  "REASON", "MEDIA"}};
  // Media an agent could not free yet: its condition's message (the node,
  // the plugin's error, the attempt, the next one).
  std::string unfreed;
  for (const api::DaxMigration* m : Sorted(migrations)) {
    // Before the recall, the pre-copy's progress; after it, the copy's
    // (with a pre-copy: the chunks kept count as copied) and what it read.
    const bool pre = m->status.phase == api::MigrationPhase::kPreCopying ||
                     m->status.phase == api::MigrationPhase::kRecalling;
    const int64_t done =
        pre ? m->status.pre_copied_bytes : m->status.bytes_copied;
    std::string copied = absl::StrCat(done);
    if (m->status.bytes_total > 0) {
      absl::StrAppend(&copied, "/", m->status.bytes_total, " (",
                      done * 100 / m->status.bytes_total, "%",
                      pre && done > 0 ? " pre-copied" : "", ")");
    }
    if (!pre && m->status.pre_copied_bytes > 0 &&
        !m->status.target_checksum.empty()) {
      absl::StrAppend(&copied, ", ", m->status.refetched_bytes,
                      " read in the pause");
    }
    std::string reason = "-";
    for (const char* type :
         {api::kMigrationFailedCondition, api::kMigrationSucceededCondition,
          api::kMigrationProgressingCondition}) {
      const api::Condition* c = api::FindCondition(m->status.conditions, type);
      if (c != nullptr && c->status == api::ConditionStatus::kTrue) {
        reason = c->reason;
        break;
      }
    }
    // Deleted mid-flow, it finishes or rolls back first (its finalizer).
    std::string phase = Opt(m->status.phase);
    if (m->metadata.deletion_timestamp.has_value()) {
      absl::StrAppend(&phase, " (deleting)");
    }
    mrows.push_back({m->metadata.name, m->spec.volume,
                     OrDash(m->status.source_node), m->spec.target_node, phase,
                     copied, reason, MediaCell(*m)});
    if (const char* type = MediaConditionType(*m); type != nullptr) {
      const api::Condition* c = api::FindCondition(m->status.conditions, type);
      if (c != nullptr && c->status == api::ConditionStatus::kFalse) {
        absl::StrAppend(&unfreed, "  ", m->metadata.name, ": ", type,
                        " False (", c->reason, "): ", c->message, "\n");
      }
    }
  }
  out += "\nMigrations:\n" + FormatTable(mrows);
  if (!unfreed.empty()) out += "\nMedia not freed yet:\n" + unfreed;
  return out;
}

}  // namespace daxlease::op
