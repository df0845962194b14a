#include "operator/reconciler.h"

#include <algorithm>
#include <atomic>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "lib/api/json.h"
#include "lib/api/resources.h"
#include "lib/base/crash_point.h"
#include "lib/base/log.h"
#include "lib/base/status.h"
#include "operator/channel_relay.h"
#include "operator/lease_display.h"

namespace daxlease::op {
namespace {

// T: the type parsed; Out: what `out` keeps of it (T, or SharedLease).
template <typename T, typename Out = T>
absl::Status ListFor(k8s::KubeClient& client, const k8s::Resource& r,
                     const std::string& volume, std::vector<Out>& out,
                     std::vector<std::string>& unreadable) {
  k8s::ListOptions opts;
  opts.limit = 500;
  ASSIGN_OR_RETURN(k8s::ListResult list, k8s::ListAll(client, r, "", opts));
  for (const k8s::Json& item : list.items) {
    if (api::OwningVolume(item) != volume) continue;
    absl::StatusOr<T> t = api::FromJson<T>(item);
    if (!t.ok()) {
      unreadable.push_back(absl::StrCat(api::Resource<T>::kKind, "/",
                                        k8s::NameOf(item), ": ",
                                        t.status().message()));
      continue;
    }
    out.push_back(*std::move(t));
  }
  return absl::OkStatus();
}

// Writes one object's difference: finalizers (main resource) and status
// (status subresource), each a merge patch guarded by resourceVersion.
template <typename T>
absl::Status WriteObject(k8s::KubeClient& client, WorldReader& reader,
                         const k8s::Resource& r, const T& before,
                         const T& after, int& writes,
                         std::string* final_rv = nullptr,
                         bool needs_no_pass = false) {
  std::string rv = before.metadata.resource_version;
  auto told = [&](const k8s::Json& stored) {
    if (needs_no_pass) {
      reader.WroteNeedingNoPass(r, stored);
    } else {
      reader.Wrote(r, stored);
    }
  };
  const bool finalizers_changed =
      before.metadata.finalizers != after.metadata.finalizers;
  const bool adding =
      after.metadata.finalizers.size() >= before.metadata.finalizers.size();
  auto write_finalizers = [&]() -> absl::Status {
    k8s::Json patch = {
        {"metadata",
         {{"resourceVersion", rv}, {"finalizers", after.metadata.finalizers}}}};
    ASSIGN_OR_RETURN(k8s::Json stored,
                     client.Patch(r, "", before.metadata.name,
                                  k8s::PatchType::kMerge, patch));
    rv = k8s::ResourceVersionOf(stored);
    told(stored);
    ++writes;
    return absl::OkStatus();
  };
  if (finalizers_changed && adding) RETURN_IF_ERROR(write_finalizers());
  k8s::Json diff = api::CreateMergePatch(api::ToJson(before.status),
                                         api::ToJson(after.status));
  if (!diff.empty()) {
    k8s::Json patch = {{"metadata", {{"resourceVersion", rv}}},
                       {"status", std::move(diff)}};
    ASSIGN_OR_RETURN(k8s::Json stored,
                     client.Patch(r, "", before.metadata.name,
                                  k8s::PatchType::kMerge, patch, "status"));
    rv = k8s::ResourceVersionOf(stored);
    told(stored);
    ++writes;
  }
  if (finalizers_changed && !adding) RETURN_IF_ERROR(write_finalizers());
  if (final_rv != nullptr) *final_rv = rv;
  return absl::OkStatus();
}

// Whether a running recall's write changes only what shows it running (its
// counts and its condition), none of its record.
bool OnlyCountsChange(const api::DaxRecall& a, const api::DaxRecall& b) {
  api::DaxRecall shown = b;
  shown.status.released = a.status.released;
  shown.status.revoked = a.status.revoked;
  shown.status.outstanding = a.status.outstanding;
  shown.status.conditions = a.status.conditions;
  return shown == a;
}

// Whether a volume's write changes only what shows a recall running (phase,
// holders, active recall, conditions), not its epoch, spec or metadata.
bool OnlyRecallDisplayChanges(const api::DaxVolume& a,
                              const api::DaxVolume& b) {
  if (b.status.phase != api::VolumePhase::kRecalling) return false;
  api::DaxVolume shown = b;
  shown.status.phase = a.status.phase;
  shown.status.holders = a.status.holders;
  shown.status.active_recall = a.status.active_recall;
  shown.status.conditions = a.status.conditions;
  return shown == a;
}

}  // namespace

absl::Status WriteLease(k8s::KubeClient& client, WorldReader& reader,
                        const api::DaxLease& before, const api::DaxLease& after,
                        int& writes, std::string* final_rv,
                        bool needs_no_pass) {
  return WriteObject(client, reader, api::DaxLeaseResource(), before, after,
                     writes, final_rv, needs_no_pass);
}

Reconciler::Reconciler(k8s::KubeClient& client, base::Clock& clock,
                       EventSink& events, ReconcilerOptions options,
                       WorldReader* reader)
    : client_(client),
      clock_(clock),
      events_(events),
      options_(options),
      api_reader_(client),
      reader_(reader != nullptr ? *reader : api_reader_),
      epochs_(client, options.epochs) {
  if (options_.lag_lease_writes) {
    display_ = std::make_unique<LeaseDisplay>(
        client_, reader_,
        options_.requeue ? options_.requeue : [](const std::string&) {},
        std::max(1, options_.write_concurrency), options_.display_hold);
  }
}

Reconciler::~Reconciler() = default;

absl::StatusOr<World> ApiWorldReader::Read(const std::string& volume) {
  World w;
  w.volume_name = volume;
  absl::StatusOr<k8s::Json> v =
      client_.Get(api::DaxVolumeResource(), "", volume);
  if (v.ok()) {
    absl::StatusOr<api::DaxVolume> parsed = api::FromJson<api::DaxVolume>(*v);
    if (!parsed.ok()) return parsed.status();
    w.volume = *std::move(parsed);
  } else if (!absl::IsNotFound(v.status())) {
    return v.status();
  }
  RETURN_IF_ERROR(ListFor<api::DaxLease>(client_, api::DaxLeaseResource(),
                                         volume, w.leases, w.unreadable));
  RETURN_IF_ERROR(ListFor<api::DaxRecall>(client_, api::DaxRecallResource(),
                                          volume, w.recalls, w.unreadable));
  RETURN_IF_ERROR(
      ListFor<api::DaxMigration>(client_, api::DaxMigrationResource(), volume,
                                 w.migrations, w.unreadable));
  return w;
}

absl::StatusOr<ReconcileResult> Reconciler::Reconcile(
    const std::string& volume) {
  const absl::Duration t0 = clock_.Monotonic();
  Steps steps;
  steps.t0 = t0;
  steps.clock = &clock_;
  ASSIGN_OR_RETURN(World before, reader_.Read(volume));
  steps.Mark("read");
  if (display_ != nullptr) display_->Overlay(before);
  if (options_.channel != nullptr) options_.channel->Overlay(before);
  if (before.volume.has_value() && before.volume->status.epoch < 1) {
    ASSIGN_OR_RETURN(before.epoch_high_water, epochs_.Read(volume));
  }
  Plan plan = ComputePlan(before, clock_.Now(), options_.plan);
  steps.Mark("plan");
  ReconcileResult result;
  result.requeue_at = plan.requeue_at;
  result.leases = before.leases.size();
  Held held;
  absl::Status st = Write(before, plan, result.writes, steps, held);
  if (st.ok() && held.any) {
    result.requeue_at =
        std::min(result.requeue_at,
                 clock_.Now() + std::max(absl::ZeroDuration(),
                                         held.until - clock_.Monotonic()));
  }
  if (st.ok() && held.volume) {
    // Its phase event comes with the write, if one is still to make.
    std::erase_if(plan.events, [&](const EventSpec& e) {
      return e.kind == "DaxVolume" && before.volume.has_value() &&
             e.name == before.volume->metadata.name &&
             absl::StartsWith(e.message, "phase ");
    });
  }
  if (result.writes > 0) {
    base::LogDebug("reconcile.steps",
                   {{"volume", volume},
                    {"leases", absl::StrCat(before.leases.size())},
                    {"events", absl::StrCat(plan.events.size())},
                    {"ms", steps.text}});
  }
  // Events describe what was written; on failure the next pass recomputes
  // them, so only a successful pass records.
  if (st.ok()) {
    // Asked only now: whatever it asks is stored. The pass is done with
    // the channel's answers: let go of them first, so the relay changes
    // them in place instead of copying them (channel_relay.h).
    before.channel_answers.reset();
    plan.desired.channel_answers.reset();
    if (options_.channel != nullptr) options_.channel->Stored(plan.desired);
    if (options_.metrics != nullptr) options_.metrics->Stored(volume, plan);
    for (const EventSpec& e : plan.events) {
      base::Log(e.warning ? base::LogLevel::kWarn : base::LogLevel::kInfo,
                "operator.transition",
                {{"volume", volume},
                 {"kind", e.kind},
                 {"name", e.name},
                 {"reason", e.reason},
                 {"message", e.message}});
      events_.Record(e);
    }
  }
  if (!st.ok()) return st;
  return result;
}

absl::Status Reconciler::Write(const World& before, const Plan& plan,
                               int& writes, Steps& steps, Held& held) {
  const World& after = plan.desired;
  // 0. Recalls a migration asks for; the migration records its recall only
  // after (a lost migration write finds the recall by its label).
  for (const api::DaxRecall& r : plan.create_recalls) {
    k8s::Json obj = api::ToJson(r);
    obj.erase("status");
    absl::StatusOr<k8s::Json> created =
        client_.Create(api::DaxRecallResource(), obj);
    if (!created.ok() && !absl::IsAlreadyExists(created.status())) {
      return created.status();
    }
    if (created.ok()) {
      reader_.Wrote(api::DaxRecallResource(), *created);
      ++writes;
      if (r.spec.reason == api::RecallReason::kMigrate) {
        // The recall exists; the migration does not name it yet.
        base::CrashPoint("operator.migration.recall_created");
      }
    }
  }
  auto starts = [&](size_t i) {
    return before.recalls[i].status.phase != api::RecallPhase::kRecalling &&
           after.recalls[i].status.phase == api::RecallPhase::kRecalling;
  };
  // Whether the recall's writes that only show it are held for a while
  // after its start (recall_display_hold); so are the events.
  const bool hold_window = display_ != nullptr &&
                           options_.recall_display_hold > absl::ZeroDuration();
  // 1. Recalls starting now: the recall is committed before any lease
  // carries its ID.
  bool started = false;
  for (size_t i = 0; i < after.recalls.size(); ++i) {
    if (!starts(i)) continue;
    // Its start, and then its outcome, do not share the API server with
    // event creates (events.h): quiet until the pass that stores its
    // outcome, or the window's end.
    if (hold_window) {
      events_.Quiet(after.volume_name, options_.recall_display_hold);
    }
    RETURN_IF_ERROR(WriteObject(client_, reader_, api::DaxRecallResource(),
                                before.recalls[i], after.recalls[i], writes));
    started = true;
    steps.Mark("recall_started");
  }
  // Whether this pass holds the writes that only show the running recall
  // (recall_display_hold).
  bool holding = false;
  if (hold_window) {
    const bool running =
        std::any_of(after.recalls.begin(), after.recalls.end(),
                    [](const api::DaxRecall& r) {
                      return r.status.phase == api::RecallPhase::kRecalling;
                    });
    const absl::Duration now = clock_.Monotonic();
    absl::MutexLock l(&started_mu_);
    if (!running) {
      recall_started_.erase(after.volume_name);
    } else {
      if (started) recall_started_[after.volume_name] = now;
      auto it = recall_started_.find(after.volume_name);
      if (it != recall_started_.end() &&
          now < it->second + options_.recall_display_hold) {
        holding = true;
        held.until = it->second + options_.recall_display_hold;
      }
    }
  }
  // 1b. The recall's start with its deadline is stored: its holders are
  // asked now (lease::WhenToCarryOut: kRecallStart), while the volume's and
  // the leases' writes that only show it are still to come.
  if (options_.channel != nullptr && !plan.ask_at_recall_start.empty()) {
    options_.channel->AskRecalls(after, plan.ask_at_recall_start);
    steps.Mark("asked");
  }
  // 2. Leases, in parallel: every changed one, or with the display lagging
  // (lease_display.h) only those the recall's record does not cover; the
  // others go to the display after the volume.
  std::vector<size_t> changed;
  std::vector<size_t> lagging;
  for (size_t i = 0; i < after.leases.size(); ++i) {
    if (before.leases[i] == after.leases[i]) continue;  // shared, mostly
    if (display_ != nullptr &&
        !plan.durable_leases.contains(after.leases[i]->metadata.name)) {
      lagging.push_back(i);
    } else {
      changed.push_back(i);
    }
  }
  if (!changed.empty()) {
    std::atomic<size_t> next{0};
    std::atomic<int> lease_writes{0};
    absl::Mutex mu;
    absl::Status first_error;
    auto worker = [&] {
      int local = 0;
      for (size_t k = next++; k < changed.size(); k = next++) {
        size_t i = changed[k];
        absl::Status s =
            WriteObject(client_, reader_, api::DaxLeaseResource(),
                        *before.leases[i], *after.leases[i], local);
        if (!s.ok()) {
          absl::MutexLock l(&mu);
          if (first_error.ok()) first_error = s;
        }
      }
      lease_writes += local;
    };
    size_t n = std::min<size_t>(
        changed.size(),
        static_cast<size_t>(std::max(1, options_.write_concurrency)));
    std::vector<std::thread> threads;
    for (size_t t = 1; t < n; ++t) threads.emplace_back(worker);
    worker();
    for (std::thread& t : threads) t.join();
    writes += lease_writes.load();
    RETURN_IF_ERROR(first_error);
    steps.Mark("leases");
  }
  // 3. Other recall changes (counts, Complete) before the volume moves on.
  for (size_t i = 0; i < after.recalls.size(); ++i) {
    if (starts(i) || before.recalls[i] == after.recalls[i]) continue;
    if (holding &&
        after.recalls[i].status.phase == api::RecallPhase::kRecalling &&
        OnlyCountsChange(before.recalls[i], after.recalls[i])) {
      held.any = true;
      continue;
    }
    RETURN_IF_ERROR(WriteObject(client_, reader_, api::DaxRecallResource(),
                                before.recalls[i], after.recalls[i], writes));
    steps.Mark(after.recalls[i].status.phase == api::RecallPhase::kComplete
                   ? "recall_complete"
                   : "recall");
  }
  // 3b. Migrations, before the volume: a decision (Failed and its reason,
  // Switching) is stored before the volume change it makes.
  for (size_t i = 0; i < after.migrations.size(); ++i) {
    if (before.migrations[i] == after.migrations[i]) continue;
    RETURN_IF_ERROR(WriteObject(client_, reader_, api::DaxMigrationResource(),
                                before.migrations[i], after.migrations[i],
                                writes));
    const auto phase = after.migrations[i].status.phase;
    if (phase.has_value() && phase != before.migrations[i].status.phase) {
      // The migration's new phase is stored, the volume's change is not
      // (operator.migration.recalling, .copying, .switching, .complete,
      // .failed).
      base::CrashPoint(absl::StrCat(
          "operator.migration.", absl::AsciiStrToLower(api::EnumName(*phase))));
    }
  }
  // 4. A volume whose finalizer goes: its epoch is recorded first, so a
  // volume of the same name created later starts above it.
  if (plan.raise_epoch_high_water.has_value()) {
    RETURN_IF_ERROR(
        epochs_.Raise(after.volume_name, *plan.raise_epoch_high_water));
    ++writes;
  }
  // 5. The volume last.
  if (holding && before.volume.has_value() &&
      OnlyRecallDisplayChanges(*before.volume, *after.volume)) {
    held.any = held.volume = true;
  } else if (before.volume.has_value() && !(*before.volume == *after.volume)) {
    api::DaxVolume read = *before.volume;
    // A migration's owner switch: spec.ownerNode and the fabric endpoint in
    // one write to the main resource, before the status that lets holders
    // in at the next epoch (their agents see the new owner first).
    const std::string& endpoint_before =
        read.metadata.annotations[api::kFabricEndpointAnnotation];
    auto endpoint_after =
        after.volume->metadata.annotations.find(api::kFabricEndpointAnnotation);
    if (read.spec.owner_node != after.volume->spec.owner_node ||
        (endpoint_after != after.volume->metadata.annotations.end() &&
         endpoint_after->second != endpoint_before)) {
      k8s::Json meta = {{"resourceVersion", read.metadata.resource_version}};
      if (endpoint_after != after.volume->metadata.annotations.end()) {
        meta["annotations"] = {
            {api::kFabricEndpointAnnotation, endpoint_after->second}};
      }
      k8s::Json patch = {
          {"metadata", meta},
          {"spec", {{"ownerNode", after.volume->spec.owner_node}}}};
      ASSIGN_OR_RETURN(
          k8s::Json stored,
          client_.Patch(api::DaxVolumeResource(), "", read.metadata.name,
                        k8s::PatchType::kMerge, patch));
      reader_.Wrote(api::DaxVolumeResource(), stored);
      ++writes;
      read.metadata.resource_version = k8s::ResourceVersionOf(stored);
      if (read.spec.owner_node != after.volume->spec.owner_node) {
        // The owner is switched in the spec; the status (Ready at the
        // next epoch) is not written yet.
        base::CrashPoint("operator.migration.owner_switched");
      }
    }
    RETURN_IF_ERROR(WriteObject(client_, reader_, api::DaxVolumeResource(),
                                read, *after.volume, writes));
    steps.Mark("volume");
  }
  // The recall's outcome is stored (or its window is over): the events
  // may go.
  if (hold_window && !holding) events_.Unquiet(after.volume_name);
  // A recall's outcome and the volume's epoch are stored; the lease objects
  // do not show them yet (the case a new leader must read through the
  // recall: plan.h).
  if (plan.tally.recalls_completed > 0 ||
      (before.volume.has_value() && before.volume->status.epoch >= 1 &&
       before.volume->status.epoch != after.volume->status.epoch)) {
    base::CrashPoint("operator.recall.outcome_stored");
  }
  // 6. The lease writes that only show what is stored now; held while the
  // volume's recall runs on (lease_display.h).
  if (display_ != nullptr) {
    const bool running =
        std::any_of(after.recalls.begin(), after.recalls.end(),
                    [](const api::DaxRecall& r) {
                      return r.status.phase == api::RecallPhase::kRecalling;
                    });
    for (size_t i : lagging) {
      display_->Enqueue(after.volume_name, before.leases[i], after.leases[i],
                        running);
    }
    if (!running) display_->Release(after.volume_name);
  }
  return absl::OkStatus();
}

}  // namespace daxlease::op
