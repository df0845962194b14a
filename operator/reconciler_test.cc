#include "operator/reconciler.h"

#include <atomic>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/api/json.h"
#include "lib/api/resources.h"
#include "lib/base/clock.h"
#include "lib/base/status.h"
#include "lib/k8s/fake_client.h"
#include "operator/channel_relay.h"
#include "operator/lease_display.h"

namespace daxlease::op {
namespace {

using k8s::Json;

// Delegates to a FakeKubeClient and runs `before_patch` once, just before the
// first Patch: another writer acting between the operator's read and write.
class InterposingClient final : public k8s::ForwardingKubeClient {
 public:
  explicit InterposingClient(k8s::KubeClient& c) : ForwardingKubeClient(c) {}
  std::function<void()> before_patch;
  absl::StatusOr<Json> Patch(const k8s::Resource& r, absl::string_view ns,
                             absl::string_view name, k8s::PatchType t,
                             const Json& p, absl::string_view sub) override {
    if (before_patch) {
      auto f = std::move(before_patch);
      before_patch = nullptr;
      f();
    }
    return inner_.Patch(r, ns, name, t, p, sub);
  }
};

// Delegates to a FakeKubeClient and cuts the pass at one write: writes are
// numbered from 0 over every Create/Update/UpdateStatus/Patch/Delete, and
// write `cut_at` either fails with a 409 and is not applied (kConflict), or
// is applied and the operator dies right after it (kCrash: the pass ends
// with an error, as a process killed there would).
class CuttingClient final : public k8s::ForwardingKubeClient {
 public:
  enum class Mode { kConflict, kCrash };
  CuttingClient(k8s::KubeClient& c, int cut_at, Mode mode)
      : ForwardingKubeClient(c), cut_at_(cut_at), mode_(mode) {}
  bool cut() const { return cut_; }

  absl::StatusOr<Json> Create(const k8s::Resource& r, const Json& o) override {
    return Cut([&] { return inner_.Create(r, o); });
  }
  absl::StatusOr<Json> Update(const k8s::Resource& r, const Json& o) override {
    return Cut([&] { return inner_.Update(r, o); });
  }
  absl::StatusOr<Json> UpdateStatus(const k8s::Resource& r,
                                    const Json& o) override {
    return Cut([&] { return inner_.UpdateStatus(r, o); });
  }
  absl::StatusOr<Json> Patch(const k8s::Resource& r, absl::string_view ns,
                             absl::string_view name, k8s::PatchType t,
                             const Json& p, absl::string_view sub) override {
    return Cut([&] { return inner_.Patch(r, ns, name, t, p, sub); });
  }
  absl::Status Delete(const k8s::Resource& r, absl::string_view ns,
                      absl::string_view name, absl::string_view rv) override {
    return Cut([&]() -> absl::StatusOr<Json> {
             RETURN_IF_ERROR(inner_.Delete(r, ns, name, rv));
             return Json::object();
           })
        .status();
  }

 private:
  absl::StatusOr<Json> Cut(const std::function<absl::StatusOr<Json>()>& w) {
    if (writes_++ != cut_at_) return w();
    cut_ = true;
    if (mode_ == Mode::kConflict) {
      return absl::AbortedError("injected 409 Conflict");
    }
    absl::StatusOr<Json> stored = w();
    if (!stored.ok()) return stored;
    return absl::UnavailableError("injected crash after the write");
  }

  const int cut_at_;
  const Mode mode_;
  int writes_ = 0;
  bool cut_ = false;
};

class ReconcilerTest : public testing::Test {
 protected:
  ReconcilerTest() : fake_(clock_), client_(fake_) {}

  void CreateVolume(int64_t epoch = 1) {
    api::DaxVolume v;
    v.metadata.name = "vol";
    v.spec.size_bytes = 4096;
    v.spec.owner_node = "owner";
    v.spec.share = true;
    ASSERT_TRUE(fake_.Create(api::DaxVolumeResource(), api::ToJson(v)).ok());
    ASSERT_TRUE(fake_
                    .Patch(api::DaxVolumeResource(), "", "vol",
                           k8s::PatchType::kMerge,
                           {{"status", {{"phase", "Ready"}, {"epoch", epoch}}}},
                           "status")
                    .ok());
  }
  void CreateLease(const std::string& name) {
    api::DaxLease l;
    l.metadata.name = name;
    l.spec = {"vol", "node-" + name, "default/pod-" + name,
              api::Access::kReadWrite};
    ASSERT_TRUE(fake_.Create(api::DaxLeaseResource(), api::ToJson(l)).ok());
  }
  // Options with the lagging lease display, which shows nothing on its own
  // within a test (display_hold 1 h), and the running recall's display
  // writes held for `recall_hold` (zero: not held, the default).
  static ReconcilerOptions HeldDisplay(
      absl::Duration recall_hold = absl::ZeroDuration()) {
    ReconcilerOptions o;
    o.lag_lease_writes = true;
    o.display_hold = absl::Hours(1);
    o.recall_display_hold = recall_hold;
    return o;
  }
  // The volume at epoch 1 with these leases, each granted (the start of
  // most tests).
  void GrantedVolume(const std::vector<std::string>& leases) {
    CreateVolume(1);
    for (const std::string& n : leases) CreateLease(n);
    Converge();
    for (const std::string& n : leases) {
      ASSERT_EQ(L(n).status.state, api::LeaseState::kGranted) << n;
    }
  }
  // `finalizer`: as its creators make it (else as written by hand).
  void CreateRecall(const std::string& name, int64_t grace,
                    bool finalizer = false) {
    api::DaxRecall r;
    r.metadata.name = name;
    if (finalizer) r.metadata.finalizers = {api::kRecallFinalizer};
    r.spec = {"vol", api::RecallReason::kManual, grace};
    ASSERT_TRUE(fake_.Create(api::DaxRecallResource(), api::ToJson(r)).ok());
  }
  // What an agent does: a merge patch of the lease status, no precondition.
  void AgentPatch(const std::string& lease, Json status) {
    ASSERT_TRUE(fake_
                    .Patch(api::DaxLeaseResource(), "", lease,
                           k8s::PatchType::kMerge,
                           {{"status", std::move(status)}}, "status")
                    .ok());
  }
  template <typename T>
  T Read(const k8s::Resource& r, const std::string& name) {
    absl::StatusOr<Json> j = fake_.Get(r, "", name);
    EXPECT_TRUE(j.ok()) << j.status();
    absl::StatusOr<T> t = api::FromJson<T>(j.ok() ? *j : Json::object());
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? *t : T{};
  }
  api::DaxLease L(const std::string& n) {
    return Read<api::DaxLease>(api::DaxLeaseResource(), n);
  }
  api::DaxRecall R(const std::string& n) {
    return Read<api::DaxRecall>(api::DaxRecallResource(), n);
  }
  api::DaxVolume V() {
    return Read<api::DaxVolume>(api::DaxVolumeResource(), "vol");
  }
  // The volume's Ready condition as stored now (a copy), if it has one.
  std::optional<api::Condition> VolumeReady() {
    const api::DaxVolume v = V();
    const api::Condition* c =
        api::FindCondition(v.status.conditions, kVolumeReadyCondition);
    if (c == nullptr) return std::nullopt;
    return *c;
  }

  // Reconciles until a pass writes nothing, retrying conflicts as the
  // controller does.
  void Converge() {
    for (int i = 0; i < 20; ++i) {
      absl::StatusOr<ReconcileResult> r = reconciler_.Reconcile("vol");
      if (!r.ok()) {
        ASSERT_TRUE(k8s::IsConflict(r.status())) << r.status();
        continue;
      }
      if (r->writes == 0) return;
    }
    FAIL() << "did not converge";
  }

  base::FakeClock clock_;
  k8s::FakeKubeClient fake_;
  InterposingClient client_;
  FakeEventSink events_;
  Reconciler reconciler_{client_, clock_, events_};
};

// Delegates to a FakeKubeClient; DaxLease writes wait until open() (the
// lease display of a lagging operator, held back).
class GatedLeaseClient final : public k8s::ForwardingKubeClient {
 public:
  explicit GatedLeaseClient(k8s::KubeClient& c) : ForwardingKubeClient(c) {}
  void open() {
    absl::MutexLock l(&mu_);
    open_ = true;
  }
  absl::StatusOr<Json> Patch(const k8s::Resource& r, absl::string_view ns,
                             absl::string_view name, k8s::PatchType t,
                             const Json& p, absl::string_view sub) override {
    if (r.plural == api::DaxLeaseResource().plural) {
      absl::MutexLock l(&mu_);
      mu_.Await(absl::Condition(&open_));
    }
    return inner_.Patch(r, ns, name, t, p, sub);
  }

 private:
  absl::Mutex mu_;
  bool open_ ABSL_GUARDED_BY(mu_) = false;
};

// With the lease writes lagging (the channel path), a pass stores the
// recall's start and outcome and the volume's epoch and hands its lease
// writes to the display: the recall completes and the volume moves to
// epoch 2 while the lease objects still say Granted. Then the display
// writes them Released and the recall's finalizer goes.
TEST_F(ReconcilerTest, LaggingLeaseWritesComeAfterTheRecallsOutcome) {
  GrantedVolume({"a", "b"});
  GatedLeaseClient gated(fake_);
  ReconcilerOptions o;
  o.lag_lease_writes = true;
  o.write_concurrency = 2;
  Reconciler lagging(gated, clock_, events_, o);
  CreateRecall("r", 60);
  ASSERT_TRUE(lagging.Reconcile("vol").ok());
  EXPECT_EQ(R("r").status.phase, api::RecallPhase::kRecalling);
  EXPECT_EQ(R("r").status.epoch, 1);
  EXPECT_EQ(V().status.phase, api::VolumePhase::kRecalling);
  EXPECT_EQ(L("a").status.state, api::LeaseState::kGranted) << "lagging";
  EXPECT_EQ(lagging.display()->pending(), 2);
  const std::string id = R("r").status.recall_id;
  AgentPatch("a", {{"releasedRecallID", id}});
  AgentPatch("b", {{"releasedRecallID", id}});
  ASSERT_TRUE(lagging.Reconcile("vol").ok());
  EXPECT_EQ(R("r").status.phase, api::RecallPhase::kComplete);
  EXPECT_EQ(R("r").status.released, 2);
  EXPECT_EQ(V().status.epoch, 2);
  EXPECT_EQ(V().status.phase, api::VolumePhase::kReady);
  EXPECT_EQ(L("a").status.state, api::LeaseState::kGranted) << "lagging";
  EXPECT_FALSE(R("r").metadata.finalizers.empty());
  gated.open();
  // Passes, each after the display has written what the last one left.
  for (int i = 0; i < 6; ++i) {
    while (lagging.display()->pending() > 0) {
      absl::SleepFor(absl::Milliseconds(1));
    }
    (void)lagging.Reconcile("vol");
  }
  EXPECT_EQ(L("a").status.state, api::LeaseState::kReleased);
  EXPECT_EQ(L("b").status.state, api::LeaseState::kReleased);
  EXPECT_EQ(L("a").status.recall_id, id);
  EXPECT_TRUE(R("r").metadata.finalizers.empty());
  EXPECT_EQ(V().status.epoch, 2);
}

// Counts the DaxLease patches it passes on to a FakeKubeClient.
class CountingLeaseClient final : public k8s::ForwardingKubeClient {
 public:
  explicit CountingLeaseClient(k8s::KubeClient& c) : ForwardingKubeClient(c) {}
  int lease_patches() const { return lease_patches_.load(); }
  absl::StatusOr<Json> Patch(const k8s::Resource& r, absl::string_view ns,
                             absl::string_view name, k8s::PatchType t,
                             const Json& p, absl::string_view sub) override {
    if (r.plural == api::DaxLeaseResource().plural) ++lease_patches_;
    return inner_.Patch(r, ns, name, t, p, sub);
  }

 private:
  std::atomic<int> lease_patches_{0};
};

// While the recall runs, the display holds the lease writes that only show
// it (no API write competes with the recall's own); the pass that stores
// the outcome lets them go, and each lease is written once: Released,
// never Recalling.
TEST_F(ReconcilerTest, LeaseWritesHeldWhileTheRecallRunsAreWrittenOnce) {
  GrantedVolume({"a", "b"});
  CountingLeaseClient counting(fake_);
  ReconcilerOptions o = HeldDisplay();
  Reconciler lagging(counting, clock_, events_, o);
  CreateRecall("r", 60);
  ASSERT_TRUE(lagging.Reconcile("vol").ok());
  ASSERT_TRUE(lagging.Reconcile("vol").ok());
  EXPECT_EQ(R("r").status.phase, api::RecallPhase::kRecalling);
  absl::SleepFor(absl::Milliseconds(150));
  EXPECT_EQ(counting.lease_patches(), 0) << "held while the recall runs";
  EXPECT_EQ(lagging.display()->pending(), 2);
  EXPECT_EQ(L("a").status.state, api::LeaseState::kGranted);
  const std::string id = R("r").status.recall_id;
  AgentPatch("a", {{"releasedRecallID", id}});
  AgentPatch("b", {{"releasedRecallID", id}});
  ASSERT_TRUE(lagging.Reconcile("vol").ok());
  EXPECT_EQ(R("r").status.phase, api::RecallPhase::kComplete);
  EXPECT_EQ(V().status.epoch, 2);
  for (int i = 0; i < 2000 && lagging.display()->pending() > 0; ++i) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  EXPECT_EQ(lagging.display()->pending(), 0);
  EXPECT_EQ(L("a").status.state, api::LeaseState::kReleased);
  EXPECT_EQ(L("b").status.state, api::LeaseState::kReleased);
  EXPECT_EQ(L("a").status.recall_id, id);
  EXPECT_EQ(counting.lease_patches(), 2) << "one status write per lease";
}

// Counts the patches of each kind (plural) it passes on.
class CountingPatchClient final : public k8s::ForwardingKubeClient {
 public:
  explicit CountingPatchClient(k8s::KubeClient& c) : ForwardingKubeClient(c) {}
  int patches(const k8s::Resource& r) {
    absl::MutexLock l(&mu_);
    return patches_[r.plural];
  }
  absl::StatusOr<Json> Patch(const k8s::Resource& r, absl::string_view ns,
                             absl::string_view name, k8s::PatchType t,
                             const Json& p, absl::string_view sub) override {
    {
      absl::MutexLock l(&mu_);
      ++patches_[r.plural];
    }
    return inner_.Patch(r, ns, name, t, p, sub);
  }

 private:
  absl::Mutex mu_;
  std::map<std::string, int> patches_ ABSL_GUARDED_BY(mu_);
};

// recall_display_hold: a recall answered within the hold is stored as its
// start and then its outcome, nothing between: the volume is never written
// Recalling (Ready at epoch 1, then Ready at epoch 2, as when a crash loses
// that write) and the recall's counts are not written mid-way. Nothing
// durable is held, and the pass that holds asks for one at the hold's end.
TEST_F(ReconcilerTest, ARecallAnsweredWithinTheHoldWritesNothingBetween) {
  GrantedVolume({"a", "b"});
  CountingPatchClient counting(fake_);
  ReconcilerOptions o = HeldDisplay(absl::Seconds(1));
  Reconciler holding(counting, clock_, events_, o);
  events_.Take();
  CreateRecall("r", 60, /*finalizer=*/true);
  absl::StatusOr<ReconcileResult> started = holding.Reconcile("vol");
  ASSERT_TRUE(started.ok()) << started.status();
  EXPECT_EQ(R("r").status.phase, api::RecallPhase::kRecalling);
  EXPECT_EQ(R("r").status.epoch, 1);
  EXPECT_TRUE(R("r").status.deadline.has_value());
  EXPECT_EQ(V().status.phase, api::VolumePhase::kReady) << "held";
  EXPECT_LE(started->requeue_at, clock_.Now() + absl::Seconds(1));
  for (const EventSpec& e : events_.Take()) {
    EXPECT_FALSE(e.kind == "DaxVolume" && e.reason == "Recalling")
        << "the phase event comes with the write: " << e.message;
  }
  const std::string id = R("r").status.recall_id;
  AgentPatch("a", {{"releasedRecallID", id}});
  clock_.Advance(absl::Milliseconds(500));
  ASSERT_TRUE(holding.Reconcile("vol").ok());
  EXPECT_EQ(R("r").status.released, 0) << "counts held";
  EXPECT_EQ(V().status.phase, api::VolumePhase::kReady) << "held";
  AgentPatch("b", {{"releasedRecallID", id}});
  ASSERT_TRUE(holding.Reconcile("vol").ok());
  EXPECT_EQ(R("r").status.phase, api::RecallPhase::kComplete);
  EXPECT_EQ(R("r").status.released, 2);
  EXPECT_EQ(V().status.phase, api::VolumePhase::kReady);
  EXPECT_EQ(V().status.epoch, 2);
  EXPECT_EQ(counting.patches(api::DaxRecallResource()), 2)
      << "the start, then the outcome";
  EXPECT_EQ(counting.patches(api::DaxVolumeResource()), 1)
      << "Ready at the next epoch only";
}

// What a pass did, in order: the API writes (as "patch <plural> <name>
// <status.phase or ->") and the event sink's quiets, in one log.
class WriteLog {
 public:
  void Add(std::string what) {
    absl::MutexLock l(&mu_);
    log_.push_back(std::move(what));
  }
  std::vector<std::string> Take() {
    absl::MutexLock l(&mu_);
    return std::move(log_);
  }

 private:
  absl::Mutex mu_;
  std::vector<std::string> log_ ABSL_GUARDED_BY(mu_);
};

class LoggingPatchClient final : public k8s::ForwardingKubeClient {
 public:
  LoggingPatchClient(k8s::KubeClient& c, WriteLog& log)
      : ForwardingKubeClient(c), log_(log) {}
  absl::StatusOr<Json> Patch(const k8s::Resource& r, absl::string_view ns,
                             absl::string_view name, k8s::PatchType t,
                             const Json& p, absl::string_view sub) override {
    std::string phase = "-";
    if (auto st = p.find("status"); st != p.end() && st->is_object()) {
      phase = st->value("phase", "-");
    }
    log_.Add(absl::StrCat("patch ", r.plural, " ", name, " ", phase));
    return inner_.Patch(r, ns, name, t, p, sub);
  }

 private:
  WriteLog& log_;
};

class QuietLoggingSink final : public FakeEventSink {
 public:
  explicit QuietLoggingSink(WriteLog& log) : log_(log) {}
  void Quiet(const std::string& key, absl::Duration at_most) override {
    log_.Add(absl::StrCat("quiet ", key, " ", absl::FormatDuration(at_most)));
  }
  void Unquiet(const std::string& key) override {
    log_.Add(absl::StrCat("unquiet ", key));
  }

 private:
  WriteLog& log_;
};

// The recall's start and outcome do not share the API server with the
// events (events.h): the sink is quieted for the volume before the start is
// written, for at most the hold, and stays quiet through the passes between
// (an ack that does not end the recall) until the outcome and the volume's
// epoch are stored. The pass's own events are recorded after that.
TEST_F(ReconcilerTest, EventsAreQuietFromARecallsStartToItsOutcome) {
  GrantedVolume({"a", "b"});
  WriteLog log;
  LoggingPatchClient logging(fake_, log);
  QuietLoggingSink sink(log);
  ReconcilerOptions o = HeldDisplay(absl::Milliseconds(200));
  Reconciler holding(logging, clock_, sink, o);
  CreateRecall("r", 60, /*finalizer=*/true);
  ASSERT_TRUE(holding.Reconcile("vol").ok());
  EXPECT_THAT(log.Take(),
              ::testing::ElementsAre("quiet vol 200ms",
                                     "patch daxrecalls r Recalling"));
  const std::string id = R("r").status.recall_id;
  AgentPatch("a", {{"releasedRecallID", id}});
  ASSERT_TRUE(holding.Reconcile("vol").ok());
  EXPECT_THAT(log.Take(), ::testing::IsEmpty()) << "still quiet, nothing shown";
  sink.Take();
  AgentPatch("b", {{"releasedRecallID", id}});
  ASSERT_TRUE(holding.Reconcile("vol").ok());
  while (holding.display()->pending() > 0)
    absl::SleepFor(absl::Milliseconds(1));
  // Then the lease display's writes (after the outcome, in any order).
  std::vector<std::string> done = log.Take();
  ASSERT_GE(done.size(), 3u);
  EXPECT_THAT(std::vector<std::string>(done.begin(), done.begin() + 3),
              ::testing::ElementsAre("patch daxrecalls r Complete",
                                     "patch daxvolumes vol -", "unquiet vol"));
  for (size_t i = 3; i < done.size(); ++i) {
    EXPECT_TRUE(absl::StartsWith(done[i], "patch daxleases ")) << done[i];
  }
  EXPECT_EQ(V().status.epoch, 2);
  EXPECT_THAT(sink.Take(), ::testing::Not(::testing::IsEmpty()))
      << "the outcome's events are recorded (and sent once unquieted)";
}

// Without the hold (or without the lagging display) nothing is quieted.
TEST_F(ReconcilerTest, EventsAreNotQuietWithoutTheHold) {
  GrantedVolume({"a"});
  WriteLog log;
  LoggingPatchClient logging(fake_, log);
  QuietLoggingSink sink(log);
  ReconcilerOptions o = HeldDisplay();
  Reconciler lagging(logging, clock_, sink, o);
  CreateRecall("r", 60, /*finalizer=*/true);
  ASSERT_TRUE(lagging.Reconcile("vol").ok());
  for (const std::string& e : log.Take()) {
    EXPECT_FALSE(absl::StrContains(e, "quiet")) << e;
  }
}

// A leader that dies right after storing the outcome of a recall whose
// volume write was held leaves the volume Ready at the recall's epoch: its
// successor reads it as Quiesced for that recall (plan.h), so the epoch
// moves on before anything is granted and no lease is granted at epoch 1.
TEST_F(ReconcilerTest, ALeaderDyingAfterAHeldRecallsOutcomeMovesTheEpochOn) {
  GrantedVolume({"a", "b"});
  ReconcilerOptions o = HeldDisplay(absl::Seconds(1));
  CreateRecall("r", 60, /*finalizer=*/true);
  {
    Reconciler first(client_, clock_, events_, o);
    ASSERT_TRUE(first.Reconcile("vol").ok());
  }
  ASSERT_EQ(V().status.phase, api::VolumePhase::kReady) << "held";
  const std::string id = R("r").status.recall_id;
  AgentPatch("a", {{"releasedRecallID", id}});
  AgentPatch("b", {{"releasedRecallID", id}});
  {
    // Its first write is the outcome; it dies right after.
    CuttingClient dying(fake_, 0, CuttingClient::Mode::kCrash);
    Reconciler second(dying, clock_, events_, o);
    EXPECT_FALSE(second.Reconcile("vol").ok());
    ASSERT_TRUE(dying.cut());
  }
  ASSERT_EQ(R("r").status.phase, api::RecallPhase::kComplete);
  ASSERT_EQ(V().status.phase, api::VolumePhase::kReady);
  ASSERT_EQ(V().status.epoch, 1) << "the volume's write was lost";
  Reconciler successor(client_, clock_, events_, o);
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(successor.Reconcile("vol").ok());
    while (successor.display()->pending() > 0) {
      absl::SleepFor(absl::Milliseconds(1));
    }
  }
  EXPECT_EQ(V().status.phase, api::VolumePhase::kReady);
  EXPECT_EQ(V().status.epoch, 2);
  for (const char* n : {"a", "b"}) {
    EXPECT_EQ(L(n).status.state, api::LeaseState::kReleased) << n;
    EXPECT_EQ(L(n).status.recall_id, id) << n;
  }
}

// Past the hold, a running recall is shown as before: the volume Recalling
// and the recall's counts, written by the pass the hold asked for.
TEST_F(ReconcilerTest, ARecallRunningPastTheHoldIsShown) {
  GrantedVolume({"a", "b"});
  ReconcilerOptions o = HeldDisplay(absl::Milliseconds(50));
  Reconciler holding(client_, clock_, events_, o);
  CreateRecall("r", 60);
  absl::StatusOr<ReconcileResult> started = holding.Reconcile("vol");
  ASSERT_TRUE(started.ok()) << started.status();
  EXPECT_EQ(V().status.phase, api::VolumePhase::kReady) << "held";
  AgentPatch("a", {{"releasedRecallID", R("r").status.recall_id}});
  clock_.Advance(started->requeue_at - clock_.Now());
  ASSERT_TRUE(holding.Reconcile("vol").ok());
  EXPECT_EQ(V().status.phase, api::VolumePhase::kRecalling);
  EXPECT_EQ(V().status.active_recall, "r");
  EXPECT_EQ(R("r").status.released, 1);
  EXPECT_EQ(R("r").status.outstanding, 1);
  EXPECT_EQ(R("r").status.phase, api::RecallPhase::kRecalling);
}

// A revoke decided at the deadline is not held, although the recall runs
// on (waiting for the fence): the holder's agent reads it from the lease
// object and tells its clients even if the owner never confirms. The
// acked lease's Released is still held until the recall ends.
TEST_F(ReconcilerTest, ARevokeIsWrittenWhileTheRecallRuns) {
  GrantedVolume({"a", "b"});
  CountingLeaseClient counting(fake_);
  ReconcilerOptions o = HeldDisplay();
  Reconciler lagging(counting, clock_, events_, o);
  CreateRecall("r", 2);
  ASSERT_TRUE(lagging.Reconcile("vol").ok());
  ASSERT_TRUE(lagging.Reconcile("vol").ok());
  const std::string id = R("r").status.recall_id;
  AgentPatch("a", {{"releasedRecallID", id}});
  ASSERT_TRUE(lagging.Reconcile("vol").ok());
  clock_.Advance(absl::Seconds(3));
  ASSERT_TRUE(lagging.Reconcile("vol").ok());
  EXPECT_EQ(R("r").status.phase, api::RecallPhase::kRecalling);
  for (int i = 0; i < 2000 && counting.lease_patches() < 1; ++i) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  absl::SleepFor(absl::Milliseconds(150));
  EXPECT_EQ(L("b").status.state, api::LeaseState::kRevoked);
  EXPECT_TRUE(L("b").status.fence_required);
  EXPECT_EQ(L("b").status.recall_id, id);
  EXPECT_EQ(L("a").status.state, api::LeaseState::kGranted) << "held";
  EXPECT_EQ(counting.lease_patches(), 1);
}

// Once the display has written the recall's Recalling (held at most
// display_hold), nothing is released without an ack.
TEST_F(ReconcilerTest, LaggingLeaseWritesReleaseNothingWithoutAnAck) {
  GrantedVolume({"a", "b"});
  ReconcilerOptions o;
  o.lag_lease_writes = true;
  o.display_hold = absl::Milliseconds(20);
  Reconciler lagging(client_, clock_, events_, o);
  CreateRecall("r", 60);
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(lagging.Reconcile("vol").ok());
    while (lagging.display()->pending() > 0) {
      absl::SleepFor(absl::Milliseconds(1));
    }
  }
  EXPECT_EQ(L("a").status.state, api::LeaseState::kRecalling);
  EXPECT_EQ(R("r").status.phase, api::RecallPhase::kRecalling);
  EXPECT_EQ(V().status.epoch, 1);
}

TEST_F(ReconcilerTest, FullRecallWithTwoAcksOneRevokedAndFenced) {
  GrantedVolume({"a", "b", "c"});
  EXPECT_EQ(L("a").status.state, api::LeaseState::kGranted);
  EXPECT_EQ(V().status.holders, 3);
  EXPECT_THAT(L("a").metadata.finalizers,
              testing::ElementsAre(api::kLeaseFinalizer));

  CreateRecall("r", 3);
  Converge();
  std::string id = R("r").status.recall_id;
  ASSERT_FALSE(id.empty());
  EXPECT_EQ(L("c").status.state, api::LeaseState::kRecalling);
  EXPECT_EQ(V().status.phase, api::VolumePhase::kRecalling);

  AgentPatch("a", {{"releasedRecallID", id}});
  AgentPatch("b", {{"releasedRecallID", id}});
  Converge();
  EXPECT_EQ(L("a").status.state, api::LeaseState::kReleased);
  EXPECT_EQ(R("r").status.outstanding, 1);

  clock_.Advance(absl::Seconds(3));
  absl::StatusOr<ReconcileResult> early = reconciler_.Reconcile("vol");
  ASSERT_TRUE(early.ok());
  Converge();
  EXPECT_EQ(L("c").status.state, api::LeaseState::kRevoked);
  EXPECT_TRUE(L("c").status.fence_required);
  EXPECT_EQ(L("c").status.reason, "DeadlineExceeded");
  EXPECT_EQ(R("r").status.phase, api::RecallPhase::kRecalling);

  AgentPatch("c", {{"fencedRecallID", id}});
  Converge();
  EXPECT_EQ(R("r").status.phase, api::RecallPhase::kComplete);
  EXPECT_EQ(R("r").status.released, 2);
  EXPECT_EQ(R("r").status.revoked, 1);
  EXPECT_TRUE(R("r").metadata.finalizers.empty());
  EXPECT_EQ(V().status.phase, api::VolumePhase::kReady);
  EXPECT_EQ(V().status.epoch, 2);

  bool recall_event = false, revoke_event = false;
  for (const EventSpec& e : events_.Take()) {
    recall_event |= e.kind == "DaxRecall" && e.reason == "Complete";
    revoke_event |= e.name == "c" && e.reason == "Revoked" && e.warning;
  }
  EXPECT_TRUE(recall_event);
  EXPECT_TRUE(revoke_event);
}

TEST_F(ReconcilerTest, SettledWorldWritesNothing) {
  GrantedVolume({"a"});
  int64_t writes = fake_.WriteCount();
  absl::StatusOr<ReconcileResult> r = reconciler_.Reconcile("vol");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->writes, 0);
  EXPECT_EQ(fake_.WriteCount(), writes);
}

// An agent's ack lands between the operator's read and its write: the
// operator's guarded patch gets 409, nothing the agent wrote is lost, and
// the retry acts on the ack.
TEST_F(ReconcilerTest, ConcurrentAgentWriteIsNotOverwritten) {
  GrantedVolume({"a", "b"});
  CreateRecall("r", 30);
  Converge();
  std::string id = R("r").status.recall_id;
  AgentPatch("a", {{"releasedRecallID", id}});
  // Operator reads (a acked), then b acks before the operator writes a.
  client_.before_patch = [&] {
    AgentPatch("a", {{"revocationAcknowledged", false}});
  };
  absl::StatusOr<ReconcileResult> r = reconciler_.Reconcile("vol");
  EXPECT_TRUE(k8s::IsConflict(r.status())) << r.status();
  AgentPatch("b", {{"releasedRecallID", id}});
  Converge();
  EXPECT_EQ(L("a").status.released_recall_id, id);
  EXPECT_EQ(L("a").status.state, api::LeaseState::kReleased);
  EXPECT_EQ(L("b").status.state, api::LeaseState::kReleased);
  EXPECT_EQ(R("r").status.phase, api::RecallPhase::kComplete);
}

TEST_F(ReconcilerTest, InjectedConflictIsReturnedForRetry) {
  CreateVolume();
  CreateLease("a");
  fake_.FailNext(k8s::FakeKubeClient::Verb::kPatch,
                 absl::AbortedError("HTTP 409 Conflict"));
  EXPECT_TRUE(k8s::IsConflict(reconciler_.Reconcile("vol").status()));
  Converge();
  EXPECT_EQ(L("a").status.state, api::LeaseState::kGranted);
}

TEST_F(ReconcilerTest, UnknownVolumeGetsConditionNotError) {
  CreateLease("a");
  CreateRecall("r", 5);
  Converge();
  api::DaxLease a = L("a");
  const api::Condition* c =
      api::FindCondition(a.status.conditions, kLeaseGrantedCondition);
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->reason, "VolumeNotFound");
  EXPECT_EQ(L("a").status.state, api::LeaseState::kPending);
  EXPECT_EQ(R("r").status.phase, api::RecallPhase::kPending);
  // The volume appears: the recall (nobody holds access yet) completes at
  // once, then the lease is granted at the epoch after it.
  CreateVolume(5);
  Converge();
  EXPECT_EQ(R("r").status.phase, api::RecallPhase::kComplete);
  EXPECT_EQ(L("a").status.state, api::LeaseState::kGranted);
  EXPECT_EQ(L("a").status.epoch, 6);
}

// The holder's agent deletes its Granted lease at unpublish: the operator
// releases it (no recall needed) and the object goes. Before, it stayed
// Granted (DeletionBlocked) until some recall came.
TEST_F(ReconcilerTest, DeletedGrantedLeaseIsReleasedWithoutARecall) {
  GrantedVolume({"a", "b"});
  ASSERT_EQ(L("a").status.state, api::LeaseState::kGranted);
  ASSERT_TRUE(fake_.Delete(api::DaxLeaseResource(), "", "a").ok());
  Converge();
  EXPECT_TRUE(
      absl::IsNotFound(fake_.Get(api::DaxLeaseResource(), "", "a").status()));
  EXPECT_EQ(V().status.holders, 1);
  EXPECT_EQ(V().status.epoch, 1);  // a release moves no epoch
  EXPECT_EQ(L("b").status.state, api::LeaseState::kGranted);
  bool released_event = false;
  for (const EventSpec& e : events_.Take()) {
    released_event |= e.name == "a" && e.reason == "Released";
  }
  EXPECT_TRUE(released_event) << "the owner is told through state Released";
}

// A DaxVolume cannot disappear while a lease holds access; once it goes its
// epoch is the name's high-water mark, and a volume created again under the
// same name starts above it. Before: the volume vanished at once and the new
// one started at epoch 1, an epoch holders of the old one had presented.
TEST_F(ReconcilerTest, VolumeFinalizerAndEpochsMonotonicPerName) {
  GrantedVolume({"a"});
  CreateRecall("r", 30);
  Converge();
  AgentPatch("a", {{"releasedRecallID", R("r").status.recall_id}});
  CreateLease("b");
  Converge();
  ASSERT_EQ(V().status.epoch, 2);
  ASSERT_EQ(L("b").status.state, api::LeaseState::kGranted);
  ASSERT_THAT(V().metadata.finalizers,
              testing::Contains(api::kVolumeFinalizer));

  ASSERT_TRUE(fake_.Delete(api::DaxVolumeResource(), "", "vol").ok());
  Converge();
  ASSERT_TRUE(fake_.Get(api::DaxVolumeResource(), "", "vol").ok())
      << "the volume went while lease b holds access";
  const std::optional<api::Condition> c = VolumeReady();
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->reason, "DeletionBlocked");
  EXPECT_THAT(c->message, testing::HasSubstr("b"));
  CreateLease("c");  // no grant on a volume being deleted
  Converge();
  EXPECT_EQ(L("c").status.state, api::LeaseState::kPending);

  ASSERT_TRUE(fake_.Delete(api::DaxLeaseResource(), "", "b").ok());
  ASSERT_TRUE(fake_.Delete(api::DaxLeaseResource(), "", "c").ok());
  Converge();
  EXPECT_TRUE(absl::IsNotFound(
      fake_.Get(api::DaxVolumeResource(), "", "vol").status()));
  EpochStore store(fake_, {});
  EXPECT_EQ(store.Read("vol").value(), 2);

  // The same name again, with no status (as a user creates it).
  api::DaxVolume v;
  v.metadata.name = "vol";
  v.spec.size_bytes = 4096;
  v.spec.owner_node = "owner";
  v.spec.share = true;
  ASSERT_TRUE(fake_.Create(api::DaxVolumeResource(), api::ToJson(v)).ok());
  CreateLease("d");
  Converge();
  EXPECT_EQ(V().status.epoch, 3);
  EXPECT_EQ(L("d").status.state, api::LeaseState::kGranted);
  EXPECT_EQ(L("d").status.epoch, 3);
}

TEST_F(ReconcilerTest, RecallDeletedMidwayStillCompletes) {
  GrantedVolume({"a"});
  CreateRecall("r", 30);
  Converge();
  std::string id = R("r").status.recall_id;
  ASSERT_TRUE(fake_.Delete(api::DaxRecallResource(), "", "r").ok());
  AgentPatch("a", {{"releasedRecallID", id}});
  Converge();
  EXPECT_TRUE(
      absl::IsNotFound(fake_.Get(api::DaxRecallResource(), "", "r").status()));
  EXPECT_EQ(V().status.phase, api::VolumePhase::kReady);
  EXPECT_EQ(V().status.epoch, 2);
}

// A recall channel server that, at each message, records what the API
// server had stored by then.
class SnapshotServer final : public channel::ChannelServer {
 public:
  std::function<void(const std::string&, const channel::pb::OperatorMessage&)>
      on_send;
  int port() const override { return 1; }
  bool Send(const std::string& node,
            const channel::pb::OperatorMessage& m) override {
    on_send(node, m);
    return true;
  }
  std::vector<std::string> Connected() const override { return {}; }
  void Stop() override {}
};

// The holders are asked as soon as the recall's start is stored with its
// deadline, in the pass that starts it, before the volume's write (and the
// lagging lease writes): the recall created with its finalizer makes that
// one status write. Each node is asked once; the answer completes it.
TEST_F(ReconcilerTest, HoldersAreAskedRightAfterTheRecallStartIsStored) {
  GrantedVolume({"a", "b"});
  ChannelRelay relay([](const std::string&) {});
  std::atomic<int> patches{0};
  struct Seen {
    std::string node;
    int recalls = 0;
    std::optional<api::RecallPhase> recall_phase;
    absl::Time recall_deadline;
    std::optional<api::VolumePhase> volume_phase;
    int patches = 0;
  };
  std::vector<Seen> seen;
  SnapshotServer server;
  server.on_send = [&](const std::string& node,
                       const channel::pb::OperatorMessage& m) {
    const api::DaxRecall r = R("r");
    seen.push_back({node, m.recalls_size(), r.status.phase,
                    r.status.deadline.value_or(absl::InfinitePast()),
                    V().status.phase, patches.load()});
    EXPECT_EQ(m.recalls(0).deadline_unix_ms(),
              absl::ToUnixMillis(*r.status.deadline))
        << "asked with the stored deadline";
  };
  relay.SetServer(&server);
  class PatchCounter final : public k8s::ForwardingKubeClient {
   public:
    PatchCounter(k8s::KubeClient& c, std::atomic<int>& n)
        : ForwardingKubeClient(c), n_(n) {}
    absl::StatusOr<Json> Patch(const k8s::Resource& r, absl::string_view ns,
                               absl::string_view name, k8s::PatchType t,
                               const Json& p, absl::string_view sub) override {
      ++n_;
      return inner_.Patch(r, ns, name, t, p, sub);
    }

   private:
    std::atomic<int>& n_;
  } client(fake_, patches);
  ReconcilerOptions o = HeldDisplay();
  o.channel = &relay;
  Reconciler channel(client, clock_, events_, o);
  CreateRecall("r", 30, /*finalizer=*/true);
  absl::StatusOr<ReconcileResult> pass = channel.Reconcile("vol");
  ASSERT_TRUE(pass.ok()) << pass.status();
  ASSERT_EQ(seen.size(), 2u) << "one message per node";
  for (const Seen& s : seen) {
    EXPECT_EQ(s.recalls, 1) << s.node;
    EXPECT_EQ(s.recall_phase, api::RecallPhase::kRecalling) << s.node;
    EXPECT_NE(s.recall_deadline, absl::InfinitePast()) << s.node;
    EXPECT_EQ(s.volume_phase, api::VolumePhase::kReady)
        << s.node << ": asked before the volume's write";
    EXPECT_EQ(s.patches, 1) << s.node << ": after one write, the recall's";
  }
  EXPECT_EQ(pass->writes, 2) << "the recall's start and the volume";
  EXPECT_EQ(V().status.phase, api::VolumePhase::kRecalling);
  EXPECT_EQ(L("a").status.state, api::LeaseState::kGranted) << "lagging";
  // The pass's own Stored() asks nobody again on the same streams.
  ASSERT_TRUE(channel.Reconcile("vol").ok());
  EXPECT_EQ(seen.size(), 2u);
}

// A recall created with its finalizer and deleted before it started (it
// waited behind a running one) loses the finalizer and goes; the running
// one is untouched.
TEST_F(ReconcilerTest, ARecallDeletedBeforeItStartedGoes) {
  GrantedVolume({"a"});
  CreateRecall("r1", 30, /*finalizer=*/true);
  Converge();
  ASSERT_EQ(R("r1").status.phase, api::RecallPhase::kRecalling);
  clock_.Advance(absl::Seconds(1));
  CreateRecall("r2", 30, /*finalizer=*/true);
  Converge();
  ASSERT_EQ(R("r2").status.phase, api::RecallPhase::kPending);
  ASSERT_TRUE(fake_.Delete(api::DaxRecallResource(), "", "r2").ok());
  ASSERT_TRUE(R("r2").metadata.deletion_timestamp.has_value())
      << "held by its finalizer";
  Converge();
  EXPECT_TRUE(
      absl::IsNotFound(fake_.Get(api::DaxRecallResource(), "", "r2").status()));
  EXPECT_EQ(R("r1").status.phase, api::RecallPhase::kRecalling);
  EXPECT_EQ(R("r1").metadata.finalizers,
            std::vector<std::string>{api::kRecallFinalizer});
}

// A recall with a lease waiting for it (b asks while a is being recalled),
// cut after each single write of every pass, once with a 409 and once with a
// crash: whatever prefix of a pass is stored, the following passes bring the
// volume back to Ready at the next epoch with b granted at that epoch.
TEST(ReconcilerCutTest, EveryPrefixOfARecallPassIsResumable) {
  for (auto mode :
       {CuttingClient::Mode::kConflict, CuttingClient::Mode::kCrash}) {
    const char* mode_name =
        mode == CuttingClient::Mode::kConflict ? "409" : "crash";
    bool cut = true;
    for (int cut_at = 0; cut; ++cut_at) {
      SCOPED_TRACE(absl::StrCat(mode_name, " at write ", cut_at));
      base::FakeClock clock;
      k8s::FakeKubeClient fake(clock);
      FakeEventSink events;
      ReconcilerOptions opts;
      opts.write_concurrency = 1;  // a crash stops every later write
      auto settle = [&](Reconciler& rec) {
        for (int i = 0; i < 10; ++i) {
          absl::StatusOr<ReconcileResult> r = rec.Reconcile("vol");
          if (r.ok() && r->writes == 0) return;
        }
        ADD_FAILURE() << "setup did not settle";
      };
      {
        Reconciler setup(fake, clock, events, opts);
        api::DaxVolume v;
        v.metadata.name = "vol";
        v.spec.size_bytes = 4096;
        v.spec.owner_node = "node-a";
        v.spec.share = true;
        ASSERT_TRUE(fake.Create(api::DaxVolumeResource(), api::ToJson(v)).ok());
        ASSERT_TRUE(fake.Patch(api::DaxVolumeResource(), "", "vol",
                               k8s::PatchType::kMerge,
                               {{"status", {{"phase", "Ready"}, {"epoch", 1}}}},
                               "status")
                        .ok());
        api::DaxLease a;
        a.metadata.name = "a";
        a.spec = {"vol", "node-a", "default/pod-a", api::Access::kReadWrite};
        ASSERT_TRUE(fake.Create(api::DaxLeaseResource(), api::ToJson(a)).ok());
        settle(setup);
      }
      api::DaxRecall r;
      r.metadata.name = "r";
      r.spec = {"vol", api::RecallReason::kManual, 60};
      ASSERT_TRUE(fake.Create(api::DaxRecallResource(), api::ToJson(r)).ok());
      api::DaxLease b;
      b.metadata.name = "b";
      b.spec = {"vol", "node-b", "default/pod-b", api::Access::kReadWrite};
      ASSERT_TRUE(fake.Create(api::DaxLeaseResource(), api::ToJson(b)).ok());

      CuttingClient cutting(fake, cut_at, mode);
      Reconciler rec(cutting, clock, events, opts);
      auto read = [&](const k8s::Resource& res, const std::string& name) {
        absl::StatusOr<Json> j = fake.Get(res, "", name);
        return j.ok() ? *j : Json::object();
      };
      bool settled = false;
      for (int pass = 0; pass < 20 && !settled; ++pass) {
        absl::StatusOr<ReconcileResult> res = rec.Reconcile("vol");
        // The agent of a: acks the recall it is asked to answer.
        auto al =
            api::FromJson<api::DaxLease>(read(api::DaxLeaseResource(), "a"));
        ASSERT_TRUE(al.ok()) << al.status();
        bool agent_acted = false;
        if (al->status.state == api::LeaseState::kRecalling &&
            al->status.released_recall_id != al->status.recall_id) {
          ASSERT_TRUE(
              fake.Patch(api::DaxLeaseResource(), "", "a",
                         k8s::PatchType::kMerge,
                         {{"status",
                           {{"releasedRecallID", al->status.recall_id}}}},
                         "status")
                  .ok());
          agent_acted = true;
        }
        settled = res.ok() && res->writes == 0 && !agent_acted;
        clock.Advance(absl::Milliseconds(100));
      }
      cut = cutting.cut();
      ASSERT_TRUE(settled) << "the passes did not settle";
      auto vol =
          api::FromJson<api::DaxVolume>(read(api::DaxVolumeResource(), "vol"));
      auto lb =
          api::FromJson<api::DaxLease>(read(api::DaxLeaseResource(), "b"));
      auto rc =
          api::FromJson<api::DaxRecall>(read(api::DaxRecallResource(), "r"));
      ASSERT_TRUE(vol.ok() && lb.ok() && rc.ok());
      EXPECT_EQ(vol->status.phase, api::VolumePhase::kReady);
      EXPECT_EQ(vol->status.epoch, 2);
      EXPECT_EQ(rc->status.phase, api::RecallPhase::kComplete);
      EXPECT_EQ(lb->status.state, api::LeaseState::kGranted);
      EXPECT_EQ(lb->status.epoch, 2);
      if (HasFailure()) return;
    }
  }
}

// Deleting a running recall ends it now: the lease that acked stays
// Released, the one that did not is revoked (fenceRequired) without waiting
// for its 60 s deadline; once fenced the recall is gone and the volume is
// Ready at the next epoch.
TEST_F(ReconcilerTest, DeletingARunningRecallRevokesOutstandingLeasesAtOnce) {
  GrantedVolume({"a", "b"});
  CreateRecall("r", 60);
  Converge();
  std::string id = R("r").status.recall_id;
  AgentPatch("a", {{"releasedRecallID", id}});
  Converge();
  ASSERT_TRUE(fake_.Delete(api::DaxRecallResource(), "", "r").ok());
  Converge();
  EXPECT_EQ(L("a").status.state, api::LeaseState::kReleased);
  EXPECT_EQ(L("b").status.state, api::LeaseState::kRevoked);
  EXPECT_TRUE(L("b").status.fence_required);
  EXPECT_EQ(V().status.phase, api::VolumePhase::kRecalling);
  AgentPatch("b", {{"fencedRecallID", id}});
  Converge();
  EXPECT_TRUE(
      absl::IsNotFound(fake_.Get(api::DaxRecallResource(), "", "r").status()));
  EXPECT_EQ(V().status.phase, api::VolumePhase::kReady);
  EXPECT_EQ(V().status.epoch, 2);
}

// A granted lease whose spec.volume is changed (by hand) stays with the
// volume it was granted on: the recall waits for it, the change is reported,
// and the other volume never sees it.
TEST_F(ReconcilerTest, ChangedLeaseSpecIsRefusedAndTheLeaseStaysAccounted) {
  GrantedVolume({"a"});
  ASSERT_EQ(L("a").status.state, api::LeaseState::kGranted);
  ASSERT_TRUE(L("a").status.bound_to.has_value());
  ASSERT_TRUE(
      fake_
          .Patch(
              api::DaxLeaseResource(), "", "a", k8s::PatchType::kMerge,
              {{"spec", {{"volume", "elsewhere"}, {"holderNode", "node-x"}}}})
          .ok());
  CreateRecall("r", 30);
  Converge();
  EXPECT_EQ(L("a").status.state, api::LeaseState::kRecalling);
  EXPECT_EQ(R("r").status.phase, api::RecallPhase::kRecalling)
      << "a recall completed while a lease holding access was unaccounted for";
  const auto c_obj = L("a");  // FindCondition points into it
  const api::Condition* c =
      api::FindCondition(c_obj.status.conditions, kLeaseGrantedCondition);
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->reason, "SpecChanged");
  EXPECT_EQ(L("a").status.bound_to->volume, "vol");
  const std::optional<api::Condition> vc = VolumeReady();
  ASSERT_TRUE(vc.has_value());
  EXPECT_EQ(vc->reason, "InvalidState");
  EXPECT_THAT(vc->message, testing::HasSubstr("DaxLease/a"));
  AgentPatch("a", {{"releasedRecallID", R("r").status.recall_id}});
  Converge();
  EXPECT_EQ(R("r").status.phase, api::RecallPhase::kComplete);
  EXPECT_EQ(V().status.epoch, 2);
}

// An object of the volume that cannot be parsed might be a lease holding
// access: the volume makes no progress (InvalidState naming it) until it is
// fixed, so the recall does not complete without it.
TEST_F(ReconcilerTest, UnreadableLeaseFailsClosed) {
  GrantedVolume({"a", "b"});
  CreateRecall("r", 30);
  Converge();
  std::string id = R("r").status.recall_id;
  AgentPatch("a", {{"state", "Bogus"}});
  AgentPatch("b", {{"releasedRecallID", id}});
  Converge();
  EXPECT_EQ(R("r").status.phase, api::RecallPhase::kRecalling);
  EXPECT_EQ(V().status.phase, api::VolumePhase::kRecalling);
  const std::optional<api::Condition> c = VolumeReady();
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->reason, "InvalidState");
  EXPECT_THAT(c->message, testing::HasSubstr("DaxLease/a"));
  // Fixed: the recall goes on.
  AgentPatch("a", {{"state", "Recalling"}, {"releasedRecallID", id}});
  Converge();
  EXPECT_EQ(R("r").status.phase, api::RecallPhase::kComplete);
}

}  // namespace
}  // namespace daxlease::op
