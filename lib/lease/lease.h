// The daxlease lease and recall protocol (docs/design.md §6) as one pure
// state machine over values. docs/lease-protocol.md describes the same rules
// in prose and docs/model/ checks them with SPIN; the three must agree.
//
// Pure: no I/O, no clock reads (time is always an argument), no threads, no
// globals. Every function is deterministic in its arguments. Nothing here
// asserts on input: a state built from API objects that breaks a protocol
// invariant is refused with InvalidArgument by Validate() (which Apply() and
// Step() run first), and an event that is illegal in the current state is
// refused with an error and leaves the state unchanged.
//
// How the parts use it:
//  - the operator builds a VolumeState from a DaxVolume (+ its DaxRecall) and
//    its DaxLease records, calls Apply() for each message it receives and
//    Step() on every reconcile (and at NextDeadline()), persists the changed
//    lease records (or the DaxRecall's record of them: operator/plan.h) FIRST,
//    the volume phase/epoch AFTER, and carries out each returned Action as
//    soon as the record WhenToCarryOut() names for it is stored (a recall
//    once the DaxRecall's start is, before the volume's write).
//  - the owner agent answers "may this holder touch memory" with
//    CheckAccess(), fences on Action kFence and reports FenceConfirmed.
//  - the client acks a recall with HolderAck (only after flushing), reports
//    Progress while flushing, and acknowledges a revocation with
//    RevocationAck before it re-requests.
//
// Thread safety: values; no shared state. Concurrent use of distinct values is
// safe; a single value needs external synchronization like any struct.
#ifndef DAXLEASE_LIB_LEASE_LEASE_H_
#define DAXLEASE_LIB_LEASE_LEASE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace daxlease::lease {

// ---------------------------------------------------------------- states

// State of one lease (DaxLease.status.state). Names match the CRD strings.
//   Pending   requested, holds no access.
//   Granted   holds access under `Lease::epoch`.
//   Recalling asked to return by `deadline`; still holds access until it acks
//             or is fenced. If `reason != kNone` the revoke has been decided
//             ("fencing"): the owner must fence it; the holder may no longer
//             ack it away.
//   Released  returned cleanly (flushed ack or release), or a revocation the
//             holder acknowledged (then `reason` records why). No access.
//   Revoked   fenced by the owner; the holder has not acknowledged yet.
//             Sticky: the holder must RevocationAck before re-requesting.
enum class LeaseState { kPending, kGranted, kRecalling, kReleased, kRevoked };

// Phase of a volume as far as the protocol is concerned (the operator's
// DaxVolume.status.phase also has Creating and Failed, which are outside it).
//   Ready      grants allowed at `epoch`.
//   Recalling  a recall is in progress: no grant is given.
//   Quiesced   recall complete: no lease holds access; the volume may change.
//   Reshaping / Migrating  the change is running; no grant.
// Leaving Quiesced/Reshaping/Migrating for Ready bumps the epoch by one.
enum class VolumePhase {
  kReady,
  kRecalling,
  kQuiesced,
  kReshaping,
  kMigrating
};

enum class Access { kReadOnly, kReadWrite };

// Why a lease was revoked (DaxLease.status.reason).
//   kDeadlineExceeded  no flushed ack before the (possibly extended) deadline.
//   kNotFlushed        the holder acked but said its flush failed.
enum class RevokeReason { kNone, kDeadlineExceeded, kNotFlushed };

// DaxRecall.spec.reason.
enum class RecallReason { kReshape, kMigrate, kEvict, kManual, kSnapshot };

// What a recall is for, once complete (BeginChange).
enum class ChangeKind { kReshape, kMigrate };

// Timing; per volume (DaxVolume.spec.recallGraceSeconds sets `grace`).
struct Config {
  // Deadline given to each lease when a recall starts.
  absl::Duration grace = absl::Seconds(30);
  // A Progress report moves the lease deadline to now + extension ...
  absl::Duration extension = absl::Seconds(30);
  // ... but never past recall start + max_recall (the cap).
  absl::Duration max_recall = absl::Seconds(120);
};

// One DaxLease.
struct Lease {
  std::string id;  // DaxLease name; unique within the volume, non-empty
  std::string holder_node;
  std::string holder_pod;
  Access access = Access::kReadWrite;
  LeaseState state = LeaseState::kPending;
  // Epoch of the grant (0 = never granted). Granted/Recalling leases carry the
  // volume's current epoch; the holder presents it on every message.
  uint64_t epoch = 0;
  // Recall this lease is (or was last) answering. Set on Recalling, kept after.
  std::string recall_id;
  // Deadline of the recall for this lease; meaningful only while Recalling.
  absl::Time deadline = absl::InfiniteFuture();
  RevokeReason reason = RevokeReason::kNone;

  // Recalling with a decided revoke, waiting for the owner's fence.
  bool fencing() const {
    return state == LeaseState::kRecalling && reason != RevokeReason::kNone;
  }
  // Granted or Recalling: the holder may still reach memory (until fenced).
  bool holds_access() const {
    return state == LeaseState::kGranted || state == LeaseState::kRecalling;
  }
};

// The recall in progress (DaxRecall). Present iff phase != kReady.
struct Recall {
  std::string id;  // non-empty
  RecallReason reason = RecallReason::kManual;
  absl::Time started_at;
  absl::Duration grace = absl::Seconds(30);  // deadline = started_at + grace
  absl::Time cap;                            // no deadline goes past this
};

struct VolumeState {
  std::string volume;  // DaxVolume name (only used in messages)
  VolumePhase phase = VolumePhase::kReady;
  uint64_t epoch = 1;  // >= 1, only grows
  // DaxVolume.spec.share and spec.ownerNode: an unshared volume is granted
  // only to leases held on its owner node.
  bool shared = true;
  std::string owner_node;
  std::optional<Recall> recall;
  Config config;
  std::vector<Lease> leases;

  // nullptr if absent.
  const Lease* Find(absl::string_view lease_id) const;
  Lease* Find(absl::string_view lease_id);
};

// ---------------------------------------------------------------- events
// Who sends each is in docs/lease-protocol.md. Holder messages carry the
// epoch of their grant; a message with another epoch is stale and refused.

// Holder (client via its agent): create the lease or re-request it.
// Absent -> Pending; Released -> Pending. Pending: no-op (access updated).
// Refused: Revoked (ack the revocation first), Granted/Recalling (already
// holds one).
struct Request {
  std::string lease_id;
  std::string holder_node;
  std::string holder_pod;
  Access access = Access::kReadWrite;
};

// Operator: Pending -> Granted at the volume's epoch. Refused as MayGrant()
// refuses. Granted at the current epoch: no-op.
struct Grant {
  std::string lease_id;
};

// Operator: Ready -> Recalling. Every Granted lease -> Recalling with this
// recall ID and deadline now + grace; cap = now + max(config.max_recall,
// grace). `grace` zero means config.grace. Same ID while that recall is still
// running (phase != Ready): no-op. Another ID while one is running:
// FailedPrecondition. With no lease holding access the recall completes at once
// (Quiesced).
struct StartRecall {
  std::string recall_id;
  RecallReason reason = RecallReason::kManual;
  absl::Duration grace = absl::ZeroDuration();
};

// Holder: answer to a recall. `flushed` promises that everything written
// under the lease is on the media and the mappings are dropped.
// Recalling(not fencing) + flushed -> Released. Recalling + !flushed -> the
// revoke is decided at once (reason kNotFlushed, Action kFence).
// Duplicate of an accepted ack (Released, same recall ID): no-op.
// Refused: stale epoch or recall ID, lease fencing / Revoked, not Recalling.
struct HolderAck {
  std::string lease_id;
  std::string recall_id;
  uint64_t epoch = 0;
  bool flushed = false;
};

// Holder: still flushing. Recalling(not fencing): deadline = max(deadline,
// min(now + config.extension, recall cap)). Refused like HolderAck.
struct Progress {
  std::string lease_id;
  std::string recall_id;
  uint64_t epoch = 0;
};

// Owner agent: the holder's access under `epoch` is gone (memory windows
// invalidated, registrations dropped). Recalling(fencing) -> Revoked.
// Revoked at that epoch: no-op. Refused: any other state (a fence is only
// confirmed after it was asked for), stale epoch.
struct FenceConfirmed {
  std::string lease_id;
  uint64_t epoch = 0;
};

// Holder: has seen its revocation. Revoked -> Released (reason kept).
// Released with a reason at that epoch: no-op. Refused otherwise.
struct RevocationAck {
  std::string lease_id;
  uint64_t epoch = 0;
};

// Holder: gives the lease up; promises the same as a flushed ack.
// Granted -> Released; Recalling(not fencing) -> Released; Pending ->
// Released (withdrawn; `epoch` ignored). Released: no-op. Refused: fencing,
// Revoked, stale epoch.
struct Release {
  std::string lease_id;
  uint64_t epoch = 0;
};

// Operator: Quiesced -> Reshaping / Migrating.
struct BeginChange {
  ChangeKind kind = ChangeKind::kReshape;
};

// Operator: reshape/migration done. Reshaping/Migrating -> Ready, epoch + 1,
// recall cleared. `owner_node` non-empty: the volume's owner becomes that
// node (a migration whose copy was verified); only from Migrating
// (FailedPrecondition otherwise). The owner thus changes only while no lease
// holds access, and together with the epoch: every grant at the new epoch is
// the new owner's, every grant of the old owner is at an older epoch.
// Empty: the owner stays (a reshape, or a migration rolled back).
struct ChangeDone {
  std::string owner_node;
};

// Operator: a recall that changes nothing (Evict, Manual; Snapshot once its
// copy is taken) is over. Quiesced -> Ready, epoch + 1, recall cleared.
struct Resume {};

// Operator: the running recall was cancelled (its DaxRecall deleted). A
// recall cannot be undone (a holder may already have flushed and unmapped,
// the owner may be fencing), so cancelling finishes it now: every Recalling
// lease without a decided revoke gets deadline min(deadline, now), and the
// next Step() revokes the ones that have not acked, as at any deadline.
// Recalling with this ID: applied; Quiesced/Reshaping/Migrating with this ID
// (already over): no-op. Refused: another recall ID, or phase Ready.
struct CancelRecall {
  std::string recall_id;
};

// Operator: drop the lease record (DaxLease deleted, e.g. its pod is gone).
// Allowed for Pending, Released and Revoked (fenced: nothing left to reach).
// Refused for Granted/Recalling: their access must be returned or fenced
// first (the finalizer's job). Absent: no-op.
struct Forget {
  std::string lease_id;
};

using Event = std::variant<Request, Grant, StartRecall, HolderAck, Progress,
                           FenceConfirmed, RevocationAck, Release, BeginChange,
                           ChangeDone, Resume, Forget, CancelRecall>;

// ---------------------------------------------------------------- actions
// Side effects the caller must carry out after persisting the new state.
// Each is idempotent on the receiving side (messages are re-sent after a
// crash, so receivers must tolerate duplicates).
enum class ActionKind {
  kNotifyGranted,  // lease: tell the holder it is granted at its epoch
  kNotifyRecall,  // lease: tell the holder to flush + ack recall_id by deadline
  kDeadlineExtended,  // lease: deadline moved (persist; tell the holder)
  kFence,             // lease: owner agent must fence it, then FenceConfirmed
  kNotifyRevoked,     // lease: tell the holder "revoked" (reason)
  kReleased,          // lease: now Released
  kRecallComplete,    // volume: Quiesced; DaxRecall Complete
  kEpochBumped,  // volume: Ready at a new epoch; pending leases may be granted
};

struct Action {
  ActionKind kind;
  std::string lease_id;  // empty for volume actions
  friend bool operator==(const Action&, const Action&) = default;
};

struct Outcome {
  VolumeState state;
  std::vector<Action> actions;
};

// Which durable record an action must wait for: the caller carries an
// action out (tells anyone outside the operator) once the record named here
// is stored, and never before; it need not wait for any other write of the
// same pass. This is what keeps the protocol's proofs when the messages
// travel apart from the records (docs/lease-protocol.md §3.1):
//   kRecallStart     the recall's start: its ID, the volume's epoch, its
//                    start and its deadline (the DaxRecall Recalling). By
//                    that record every lease that holds access at that
//                    epoch is Recalling until that deadline (a lease record
//                    that still says Granted is read through it), so the
//                    holders may be asked at once, before the volume's and
//                    the leases' own writes.
//   kLease           the lease's own record in its new state: a grant at its
//                    epoch (the owner re-reads it before opening a window),
//                    a moved deadline, a release.
//   kRevoke          the decided revoke (on the recall's record or the
//                    lease's): the owner is asked to fence only what any
//                    later operator would revoke too.
//   kFenceConfirmed  the confirmed fence: the holder is told "revoked" only
//                    once that is on record (sticky across any crash).
//   kOutcome         the recall Complete with its counts and revokes.
//   kEpoch           the volume at its new epoch (after the outcome): no
//                    grant is made or told at an epoch not yet stored.
enum class StoredFirst {
  kRecallStart,
  kLease,
  kRevoke,
  kFenceConfirmed,
  kOutcome,
  kEpoch,
};
StoredFirst WhenToCarryOut(ActionKind kind);
inline StoredFirst WhenToCarryOut(const Action& a) {
  return WhenToCarryOut(a.kind);
}

// ---------------------------------------------------------------- functions

// Checks that `s` is a state the protocol can reach (see lease.cc for the
// list: unique ids, epoch >= 1, recall present iff not Ready, no lease holds
// access once Quiesced, Granted/Recalling leases at the volume's epoch,
// Recalling leases carry the running recall's ID, Revoked has a reason, ...).
// Use it when building a state from API objects. InvalidArgument on breach.
absl::Status Validate(const VolumeState& s);

// Applies one event at time `now`. On success returns the new state and the
// actions; on refusal returns the error and `s` is untouched (it is const).
// Codes: InvalidArgument (malformed event or invalid `s`), NotFound (unknown
// lease), FailedPrecondition (illegal in this state, stale epoch or recall
// ID), Unavailable (Grant while a recall is in progress: retry later).
// Also completes the recall (kRecallComplete) when the event leaves no lease
// holding access. Does NOT enforce deadlines: that is Step()'s job, so an ack
// that arrives before Step() fenced the lease is accepted.
absl::StatusOr<Outcome> Apply(const VolumeState& s, const Event& e,
                              absl::Time now);

// Result of ApplyAll.
struct BatchOutcome {
  VolumeState state;
  std::vector<Action> actions;  // of the accepted events, in event order
  // One per event: OK, or why it was refused (the state is as before it).
  std::vector<absl::Status> results;
};

// Applies `events` in order at time `now`, exactly as calling Apply() on the
// state each accepted event produced, skipping refused events: the same
// final state, the accepted events' actions concatenated, and results[i] the
// status Apply() would have returned for events[i] (lease_test checks this
// on random sequences). Unlike a loop of Apply(), it copies and validates `s`
// once and looks leases up by ID in O(1), so a batch costs O(leases +
// events) (a Forget that removes a lease costs O(leases)). For the operator,
// which turns one pass's agent signals and grants into hundreds of events.
// InvalidArgument (nothing applied) if `s` is invalid.
absl::StatusOr<BatchOutcome> ApplyAll(const VolumeState& s,
                                      const std::vector<Event>& events,
                                      absl::Time now);

// Time-driven and repair step; idempotent (Step of its own result at the same
// `now` returns no actions). In this order:
//  1. phase Recalling: a Granted lease (a crash between persisting the
//     volume and its leases) -> Recalling with deadline now + grace
//     (capped), kNotifyRecall.
//  2. every Recalling lease with deadline <= now and no decided revoke ->
//     reason kDeadlineExceeded, kFence. A lease already fencing -> kFence
//     again (re-ask the owner: fencing is idempotent).
//  3. phase Recalling and no lease holds access -> Quiesced, kRecallComplete.
// InvalidArgument only if `s` is invalid.
absl::StatusOr<Outcome> Step(const VolumeState& s, absl::Time now);

// ---- decisions (read-only)

// May lease `lease_id` be granted now? OK; NotFound; FailedPrecondition (not
// Pending); PermissionDenied (the volume is not shared and the lease's holder
// node is not its owner: never, until the volume's spec changes);
// Unavailable (volume not Ready: recall in progress, retry later).
absl::Status MayGrant(const VolumeState& s, absl::string_view lease_id);

// Recalling leases with no decided revoke whose deadline <= now (the ones
// Step(now) will start fencing), in lease order.
std::vector<std::string> LeasesToRevoke(const VolumeState& s, absl::Time now);

// Leases whose revoke is decided and whose fence is not yet confirmed.
std::vector<std::string> LeasesToFence(const VolumeState& s);

// True iff a recall is running (phase Recalling) and no lease holds access,
// i.e. every recalled lease is Released or Revoked (fenced).
bool RecallComplete(const VolumeState& s);

// What ends a recall once the volume is Quiesced (the operator acts on it):
//   kResume        at once (Manual, Evict): Resume.
//   kAfterCopy     Snapshot: the volume stays Quiesced (no holder can write,
//                  none is granted) until the owner says the copy is taken,
//                  then Resume. The media does not change.
//   kChange        Reshape, Migrate: BeginChange, then ChangeDone once the
//                  owner says the change is done.
enum class QuiescedUntil { kResume, kAfterCopy, kChange };
QuiescedUntil WhatEndsRecall(RecallReason reason);

// Earliest deadline Step() must run at (min deadline of Recalling leases
// without a decided revoke); InfiniteFuture if none. For requeue.
absl::Time NextDeadline(const VolumeState& s);

// True iff `epoch` is older than the lease's grant epoch (or the volume's
// epoch if the lease is absent or was never granted).
bool IsStaleEpoch(const VolumeState& s, absl::string_view lease_id,
                  uint64_t epoch);

// True iff `recall_id` is not the recall the lease is answering now (the
// lease is not Recalling, or under another ID).
bool IsStaleRecall(const VolumeState& s, absl::string_view lease_id,
                   absl::string_view recall_id);

// Owner agent: may the holder of `lease_id` presenting `epoch` touch memory?
// OK iff the lease is Granted, or Recalling without a decided revoke, at
// exactly `epoch` == the volume's epoch. PermissionDenied otherwise (with
// the reason: revoked, fencing, stale epoch, not granted). NotFound if absent.
// The owner must call it on a fresh read of the lease before opening a
// window, and must in addition keep a sticky per-lease "fenced up to epoch"
// mark and never open a window for an epoch it has fenced (the model in
// docs/model checks exactly this combination).
absl::Status CheckAccess(const VolumeState& s, absl::string_view lease_id,
                         uint64_t epoch);

// ---- names (the CRD strings) and parsing, for building from API objects.
absl::string_view Name(LeaseState v);
absl::string_view Name(VolumePhase v);
absl::string_view Name(Access v);
absl::string_view Name(RevokeReason v);  // kNone -> ""
absl::string_view Name(RecallReason v);
absl::string_view Name(ActionKind v);
absl::string_view Name(StoredFirst v);
// InvalidArgument on an unknown string. ParseRevokeReason("") -> kNone.
absl::StatusOr<LeaseState> ParseLeaseState(absl::string_view s);
absl::StatusOr<VolumePhase> ParseVolumePhase(absl::string_view s);
absl::StatusOr<Access> ParseAccess(absl::string_view s);
absl::StatusOr<RevokeReason> ParseRevokeReason(absl::string_view s);
absl::StatusOr<RecallReason> ParseRecallReason(absl::string_view s);

}  // namespace daxlease::lease

#endif  // DAXLEASE_LIB_LEASE_LEASE_H_
