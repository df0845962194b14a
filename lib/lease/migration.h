// The migration protocol (docs/lease-protocol.md, "Migration") as one pure
// step function over values, beside the lease state machine it drives.
//
// A DaxMigration moves a volume's data and ownership to another node while
// its holders stay attached. Its phases and what moves each one on:
//   Pending    -> PreCopying the volume is Ready and no earlier migration of
//                            it is running (config.pre_copy): the source is
//                            the owner at that moment; the target copies the
//                            whole volume while it stays Ready, under a
//                            read-only migration grant that is no lease (a
//                            recall never waits for it).
//   PreCopying -> Recalling  the target reported the pre-copy done, or it
//                            failed (preCopyFailure), made no progress for
//                            `stall_timeout`, or ran past
//                            `pre_copy_timeout`: the migration goes on
//                            without it (the copy inside the pause is then
//                            whole), it never fails for it. Needs the
//                            volume Ready: the recall named
//                            RecallName(volume, epoch) is created.
//   Pending    -> Recalling  as PreCopying -> Recalling, without a pre-copy
//                            (config.pre_copy false).
//   Recalling  -> Copying    the recall completed (volume Quiesced): the
//                            volume goes Migrating (BeginChange); the target
//                            agent copies from the source (after a
//                            pre-copy: only the chunks whose digests differ
//                            from the source's).
//   Copying    -> Switching  the target copied every byte and both agents'
//                            checksums match: ChangeDone with the target as
//                            owner (Ready at epoch + 1).
//   Switching  -> Complete   the volume is Ready past the migration's epoch
//                            with the target as owner: the source may free
//                            its media.
//   any        -> Failed     the target reported a failure (no capacity, ...),
//                            made no progress for `stall_timeout` (it or the
//                            source is gone), the checksums differ, or the
//                            recall was lost: ChangeDone without an owner
//                            (rolled back: Ready at epoch + 1, old owner);
//                            the target frees what it made.
// Deleted (the DaxMigration has a deletionTimestamp; its finalizer keeps it):
// a copy not yet verified fails (Deleted) and rolls back; a verified copy
// (or a switch already made) finishes. The finalizer may go (`forget`) once
// the volume has left the migration's recall and the side that lost freed
// its media: the source's after Complete, the target's after Failed.
// Every branch is idempotent: after a crash between the writes of one pass
// (migration first, then the volume) the next pass finds the same decision
// or its completion.
//
// Pure: no I/O, no clock reads. Thread safety: values.
#ifndef DAXLEASE_LIB_LEASE_MIGRATION_H_
#define DAXLEASE_LIB_LEASE_MIGRATION_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "lib/lease/lease.h"

namespace daxlease::lease {

enum class MigrationPhase {
  kPending,
  kPreCopying,
  kRecalling,
  kCopying,
  kSwitching,
  kComplete,
  kFailed
};

// One DaxMigration as the protocol sees it.
struct Migration {
  std::string id;  // DaxMigration name
  std::string target_node;
  MigrationPhase phase = MigrationPhase::kPending;
  // Set when it leaves Pending.
  std::string source_node;
  std::string recall;  // the DaxRecall's name
  uint64_t epoch = 0;  // the volume's epoch under that recall
  // Reported by the agents.
  uint64_t bytes_total = 0;
  uint64_t bytes_copied = 0;
  std::string source_checksum;
  std::string target_checksum;
  std::string target_failure;  // "<Reason>: <message>"
  absl::Time last_progress = absl::InfinitePast();
  bool target_started = false;  // the target reported (targetEndpoint)
  // The pre-copy, as the target reported it (preCopiedBytes of bytesTotal;
  // preCopyFailure "<Reason>: <message>").
  uint64_t pre_copied_bytes = 0;
  std::string pre_copy_failure;
  // When it left Pending (startedAt).
  absl::Time started = absl::InfinitePast();
  bool source_media_freed = false;
  bool target_media_freed = false;
  // Deletion was asked for (the finalizer holds the object).
  bool deleting = false;
};

struct MigrationConfig {
  // Copying with no report from the target for this long: Failed
  // (TargetUnresponsive). Covers a target or source that is gone; an agent
  // restarted within it picks the copy up again.
  absl::Duration stall_timeout = absl::Seconds(60);
  // Copy while the volume is still Ready (PreCopying) before the recall.
  bool pre_copy = true;
  // PreCopying longer than this (from `started`): the recall starts anyway.
  absl::Duration pre_copy_timeout = absl::Minutes(10);
};

// The volume as one migration sees it.
struct MigrationView {
  const VolumeState* volume = nullptr;  // nullptr: no such DaxVolume
  // Name of the DaxRecall of volume->recall ("" when none), and the
  // migration that recall was created for ("" when not one's).
  std::string recall_name;
  std::string recall_for;
  // An earlier migration of the same volume has not finished.
  bool earlier_running = false;
};

struct MigrationStep {
  Migration migration;  // the next state
  // Create this DaxRecall (reason Migrate, for this migration) when absent.
  std::string create_recall;
  // Apply to the volume (BeginChange or ChangeDone), in this pass.
  std::optional<Event> volume_event;
  // The condition to show: Progressing (while running), Succeeded or
  // Failed, with reason and message.
  std::string condition;
  std::string reason;
  std::string message;
  // Step again by then even if nothing changes (the stall deadline).
  absl::Time recheck_at = absl::InfiniteFuture();
  // Deleting, and nothing is left to do: the finalizer may go.
  bool forget = false;
};

// The name of the recall a migration of `volume` at `epoch` runs.
std::string MigrationRecallName(absl::string_view volume, uint64_t epoch);

// One decision. Never fails: a migration that cannot proceed says why in
// the step's condition.
MigrationStep StepMigration(const Migration& m, const MigrationView& v,
                            absl::Time now, const MigrationConfig& config);

bool MigrationFinished(MigrationPhase p);
absl::string_view Name(MigrationPhase p);

}  // namespace daxlease::lease

#endif  // DAXLEASE_LIB_LEASE_MIGRATION_H_
