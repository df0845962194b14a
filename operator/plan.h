// The operator's reconcile decision as plain code over values: given every
// API object that concerns one DaxVolume (the volume, its leases, its
// recalls) and the time, compute what those objects should look like.
//
// The volume is the unit of reconcile because the protocol's invariants span
// all of a volume's leases (docs/design.md §6): a recall touches every
// lease, a grant depends on the volume and the recalls. Every protocol
// decision is taken by lib/lease; this file only translates API objects to a
// lease::VolumeState and back:
//   - agent signals in lease status (with the recall channel on, the
//     answers it took instead: World::channel_answers) become lease events:
//     releasedRecallID == recallID -> HolderAck (flushed), fencedRecallID ==
//     recallID on a lease marked fenceRequired -> FenceConfirmed,
//     revocationAcknowledged -> RevocationAck; a lease without a state ->
//     Request; a deleted lease that holds no access -> Forget;
//   - a lease whose revoke is decided but not yet fenced (lease::Lease::
//     fencing()) is shown as state Revoked with fenceRequired=true; once the
//     owner confirms the fence it is Revoked with fenceRequired=false;
//   - the recall in progress is the DaxRecall whose status.phase is
//     Recalling; its status.recallID (= its uid), startedAt and deadline are
//     the lease::Recall.
//   - the DaxRecall is the recall's durable record (api::DaxRecallStatus):
//     a lease whose own object still says Granted or Recalling at the
//     epoch a recall ran at is read through it: Recalling (fencing if in
//     revokedLeases, Revoked if in fencedLeases) while it runs; once it is
//     Complete, Revoked if fenced, else Released. So the lease objects may
//     lag (Plan::durable_leases says which lease writes may not).
// Crash safety comes from the write order (see Reconciler): a recall's status
// is written Recalling (with its epoch and deadline) before any holder is
// asked; each decided revoke is on the recall (or, beyond its bound, on the
// lease object) before the owner is asked to fence; the fence confirmations
// and Complete are on the recall before the volume returns to Ready at the
// next epoch; every other lease write may come later. Rebuilding from any
// prefix of those writes yields a valid state that the next pass finishes.
#ifndef DAXLEASE_OPERATOR_PLAN_H_
#define DAXLEASE_OPERATOR_PLAN_H_

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "lib/api/conditions.h"
#include "lib/api/types.h"
#include "lib/lease/lease.h"
#include "lib/lease/migration.h"

namespace daxlease::op {

// Recall finalizer (lib/api/types.h): its creators put it on every
// DaxRecall; the operator adds it to one created without it.
using api::kRecallFinalizer;
// Migration finalizer: a DaxMigration deleted mid-flow stays until its
// volume is back out of its recall (switched or rolled back, at a new epoch)
// and the side that lost freed its media (lib/lease/migration.h).
inline constexpr char kMigrationFinalizer[] =
    "daxlease.io/migration-protection";

// Bound on the bytes of lease names (plus 3 each, for JSON quotes and comma)
// in one DaxRecall's status.revokedLeases; fencedLeases is a subset, so both
// lists stay under 768 KiB and the object well under etcd's 1.5 MiB request
// limit whatever the lease names (up to 253 bytes). About 17,000 revokes of
// 20-byte names fit; a revoke beyond the bound is written on its lease
// object before the owner is asked (Plan::durable_leases), as before the
// record existed.
inline constexpr size_t kRecallRecordBytes = 384 * 1024;

// Condition types (lib/api/conditions.h: the agents and kubectl daxlease
// read and write the same names).
using api::kLeaseGrantedCondition;
using api::kMigrationFailedCondition;
using api::kMigrationProgressingCondition;
using api::kMigrationSucceededCondition;
using api::kRecallCompleteCondition;
using api::kVolumeReadyCondition;

// One DaxLease, shared read-only between the reader's cache, the worlds read
// from it, the plans computed from them and the lease display, and copied
// on the first edit through this handle (copy on write): a pass over N
// leases copies N pointers, and only the leases it changes. An edit through
// one handle never shows through another, whichever thread holds it.
// Reading converts implicitly to `const api::DaxLease&` (range loops and
// reference bindings over World::leases read as before); editing is
// explicit, Mutable().
class SharedLease {
 public:
  SharedLease() : p_(std::make_shared<api::DaxLease>()) {}
  // NOLINTNEXTLINE(google-explicit-constructor): a World built from values
  SharedLease(api::DaxLease lease)
      : p_(std::make_shared<api::DaxLease>(std::move(lease))) {}

  const api::DaxLease& operator*() const { return *p_; }
  const api::DaxLease* operator->() const { return p_.get(); }
  // NOLINTNEXTLINE(google-explicit-constructor): reads as a DaxLease
  operator const api::DaxLease&() const { return *p_; }

  // The lease to edit: this handle's own copy, made now unless no other
  // handle shares it. The reference is valid until the handle is copied,
  // assigned or destroyed.
  api::DaxLease& Mutable();
  // Whether `o` shares this lease (no copy was made between them).
  bool SharesWith(const SharedLease& o) const { return p_ == o.p_; }

  friend bool operator==(const SharedLease& a, const SharedLease& b) {
    return a.p_ == b.p_ || *a.p_ == *b.p_;
  }

 private:
  // Never null. Mutated only through Mutable(), and only while this handle
  // is its only owner.
  std::shared_ptr<api::DaxLease> p_;
};

// What the agents said about one lease: the signals the plan turns into
// lib/lease events (see above). On the status-field path they are the
// lease's own status fields; with the recall channel on, the answers the
// channel took (World::channel_answers).
struct AgentAnswers {
  std::string released_recall_id;  // holder: flushed + unmapped
  std::string fenced_recall_id;    // owner: holder fenced
  // Holder: its client saw the revoke of the lease at this epoch (0: not
  // said); acknowledges the revoke of a lease read at this epoch only.
  int64_t revocation_acked_epoch = 0;

  friend bool operator==(const AgentAnswers&, const AgentAnswers&) = default;
};

// Everything about one volume, as read from the API server.
struct World {
  std::string volume_name;
  std::optional<api::DaxVolume> volume;  // nullopt: no such DaxVolume
  std::vector<SharedLease> leases;       // api::OwningVolume == volume_name
  std::vector<api::DaxRecall> recalls;   // spec.volume == volume_name
  std::vector<api::DaxMigration> migrations;  // spec.volume == volume_name
  // Objects naming this volume (api::OwningVolume) that could not be parsed,
  // as "DaxLease/name: error". While any is here the volume makes no
  // progress (fail closed: it may be a lease holding access).
  std::vector<std::string> unreadable;
  // The highest epoch an earlier DaxVolume of this name reached (EpochStore;
  // 0: none). Read only when it matters: the volume has no epoch yet (it
  // starts above the mark) or is being deleted.
  int64_t epoch_high_water = 0;
  // Leases whose status here is the operator's own write not yet stored
  // (lease display lag, operator/lease_display.h). A Complete recall keeps
  // its finalizer while any is: the record must outlive the lag.
  std::set<std::string> display_pending;
  // With the recall channel on (operator/channel_relay.h): the answers it
  // took, by lease name (a lease not here answered nothing), which the plan
  // reads instead of the agent-written status fields (releasedRecallID,
  // fencedRecallID, revocationAcknowledged): any agent credential can write
  // those for any lease, so with the channel on they release nothing. Kept
  // beside the leases, not written into them, so a pass over N acks copies
  // no lease to read them; shared, so the plan's copy of the World copies
  // none of them either. It is the relay's own record of what it took (a
  // snapshot: the relay copies it before a change while a pass holds it),
  // so it may name leases of other volumes too. Null: no channel, the
  // status fields answer.
  std::shared_ptr<const std::map<std::string, AgentAnswers>> channel_answers;

  // The plan's working copy (Plan::desired): every field but
  // display_pending, which only the world read is asked about (a name per
  // pending lease: about 1 MB at N = 10000). A field added to World stops
  // this from compiling until it is copied here too (the structured binding
  // names every field), and PlanTest.WorldWithoutDisplayCopiesEveryOtherField
  // fails if it is named but not copied.
  World WithoutDisplay() const;

  // Field by field; channel_answers compare by identity (the same record).
  friend bool operator==(const World&, const World&) = default;
};

inline World World::WithoutDisplay() const {
  const auto& [name, vol, leases_read, recalls_read, migrations_read,
               unreadable_read, high_water, display, answers] = *this;
  (void)display;  // left out: the reason to have this method
  World w;
  w.volume_name = name;
  w.volume = vol;
  w.leases = leases_read;
  w.recalls = recalls_read;
  w.migrations = migrations_read;
  w.unreadable = unreadable_read;
  w.epoch_high_water = high_water;
  w.channel_answers = answers;
  return w;
}

// A core/v1 Event to record about one object.
struct EventSpec {
  std::string kind;  // DaxVolume, DaxLease, DaxRecall
  std::string name;
  std::string uid;
  bool warning = false;
  std::string reason;
  std::string message;
};

struct PlanOptions {
  // Grace when neither the recall nor the volume sets one.
  absl::Duration default_grace = absl::Seconds(30);
  // Migrations (lib/lease/migration.h).
  lease::MigrationConfig migration;
};

// A pass's protocol side effects, counted from lib/lease's actions
// (Plan::actions). The operator carries every action out by writing the
// objects of Plan::desired (the holders' and the owner's agents watch them);
// these counts are what its metrics report.
struct ActionTally {
  int grants = 0;        // kNotifyGranted: a lease granted
  int recalls_sent = 0;  // kNotifyRecall: a holder asked to flush and ack
  int releases = 0;      // kReleased: a lease returned (ack, release)
  // kFence on a lease that was not fencing as read: a revoke decided (a
  // missed deadline, an unflushed ack, a cancelled recall). Step re-asks
  // the owner for every lease still fencing; those are not counted again.
  int revocations = 0;
  int fences = 0;             // kNotifyRevoked: the owner confirmed a fence
  int recalls_completed = 0;  // kRecallComplete
};

struct Plan {
  // The objects as they should be (same order and count as the World's;
  // a lease whose record may go has its finalizer removed here).
  World desired;
  std::vector<EventSpec> events;
  // When the volume must be reconciled again even if nothing changes (a
  // recall deadline); InfiniteFuture if never.
  absl::Time requeue_at = absl::InfiniteFuture();
  // Set when the volume's finalizer goes in this pass: the epoch to record
  // as the name's high-water mark first (before the volume is written).
  std::optional<int64_t> raise_epoch_high_water;
  // Every action lib/lease returned for the events and steps this pass
  // applied, in order, and their tally. Valid once the pass's writes
  // succeed (a failed pass is recomputed from what was stored).
  std::vector<lease::Action> actions;
  ActionTally tally;
  // DaxRecalls to create (first, before any other write; AlreadyExists is
  // success): the recalls migrations run.
  std::vector<api::DaxRecall> create_recalls;
  // Leases whose holders may be asked to flush and ack as soon as the recall
  // they answer is stored with its deadline (lease::WhenToCarryOut of their
  // kNotifyRecall: kRecallStart): the Reconciler asks them on the recall
  // channel right after the recall's start is written, before the volume's
  // and the leases' own writes. In lease order; each is Recalling, without
  // a decided revoke, in `desired`.
  std::vector<std::string> ask_at_recall_start;
  // How long each recall that completes in this pass ran (startedAt to now).
  std::vector<absl::Duration> recall_durations;
  // Leases whose write must be stored with the recall's (before the recall
  // and the volume, before anyone is asked): revokes the recall's record
  // had no room for. Every other lease write only shows what the DaxRecall
  // and the volume already record, and may lag.
  std::set<std::string> durable_leases;
};

// Pure and deterministic. Never fails: an object the operator cannot act on
// keeps its state and gets a condition saying why.
Plan ComputePlan(const World& world, absl::Time now, const PlanOptions& opts);

}  // namespace daxlease::op

#endif  // DAXLEASE_OPERATOR_PLAN_H_
