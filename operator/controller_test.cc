// The controller end to end over the in-memory API server: informers, the
// cache reader with its overlay, the work queue and deadline requeue (driven
// by a FakeClock).
#include "operator/controller.h"

#include <atomic>
#include <chrono>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/api/json.h"
#include "lib/api/resources.h"
#include "lib/base/clock.h"
#include "lib/k8s/fake_client.h"
#include "operator/cache_reader.h"
#include "operator/lease_display.h"
#include "operator/metrics.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"

namespace daxlease::op {
namespace {

bool Eventually(const std::function<bool()>& pred) {
  for (int i = 0; i < 500; ++i) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return pred();
}

class ControllerTest : public testing::Test {
 protected:
  ControllerTest() : fake_(clock_) {}
  ~ControllerTest() override {
    controller_.Stop();
    fake_.Shutdown();
  }

  std::optional<api::DaxLease> Lease(const std::string& n) {
    auto j = fake_.Get(api::DaxLeaseResource(), "", n);
    if (!j.ok()) return std::nullopt;
    auto l = api::FromJson<api::DaxLease>(*j);
    if (!l.ok()) return std::nullopt;
    return *l;
  }
  std::optional<api::DaxRecall> Recall(const std::string& n) {
    auto j = fake_.Get(api::DaxRecallResource(), "", n);
    if (!j.ok()) return std::nullopt;
    auto r = api::FromJson<api::DaxRecall>(*j);
    if (!r.ok()) return std::nullopt;
    return *r;
  }
  bool LeaseIs(const std::string& n, api::LeaseState s) {
    auto l = Lease(n);
    return l && l->status.state == s;
  }

  // The shared DaxVolume "vol" (1 byte) owned by "owner", in `client`
  // (fake_ when null).
  void CreateSharedVolume(k8s::FakeKubeClient* client = nullptr) {
    api::DaxVolume v;
    v.metadata.name = "vol";
    v.spec.size_bytes = 1;
    v.spec.owner_node = "owner";
    v.spec.share = true;
    k8s::FakeKubeClient& in = client != nullptr ? *client : fake_;
    ASSERT_TRUE(in.Create(api::DaxVolumeResource(), api::ToJson(v)).ok());
  }

  // The registry in the text format a scrape returns.
  std::string Scrape() {
    return prometheus::TextSerializer().Serialize(registry_.Collect());
  }

  static ControllerOptions WithMetrics(OperatorMetrics& m) {
    ControllerOptions o;
    o.metrics = &m;
    return o;
  }

  base::FakeClock clock_;
  k8s::FakeKubeClient fake_;
  FakeEventSink events_;
  prometheus::Registry registry_;
  OperatorMetrics metrics_{registry_, 2};
  Controller controller_{fake_, clock_, events_, WithMetrics(metrics_)};
};

using testing::HasSubstr;

TEST_F(ControllerTest, GrantsRecallsAndRevokesAtTheDeadline) {
  CreateSharedVolume();
  ASSERT_TRUE(controller_.Start().ok());
  for (const char* n : {"a", "b"}) {
    api::DaxLease l;
    l.metadata.name = n;
    l.spec = {"vol", std::string("node-") + n, "", api::Access::kReadWrite};
    ASSERT_TRUE(fake_.Create(api::DaxLeaseResource(), api::ToJson(l)).ok());
  }
  ASSERT_TRUE(Eventually([&] {
    return LeaseIs("a", api::LeaseState::kGranted) &&
           LeaseIs("b", api::LeaseState::kGranted);
  }));

  api::DaxRecall r;
  r.metadata.name = "r";
  r.spec = {"vol", api::RecallReason::kManual, 10};
  ASSERT_TRUE(fake_.Create(api::DaxRecallResource(), api::ToJson(r)).ok());
  ASSERT_TRUE(Eventually([&] {
    return LeaseIs("a", api::LeaseState::kRecalling) &&
           LeaseIs("b", api::LeaseState::kRecalling);
  }));
  std::string id = Recall("r")->status.recall_id;
  ASSERT_TRUE(fake_
                  .Patch(api::DaxLeaseResource(), "", "a",
                         k8s::PatchType::kMerge,
                         {{"status", {{"releasedRecallID", id}}}}, "status")
                  .ok());
  ASSERT_TRUE(
      Eventually([&] { return LeaseIs("a", api::LeaseState::kReleased); }));

  // Nothing changes until the deadline; then the requeued pass revokes b.
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_TRUE(LeaseIs("b", api::LeaseState::kRecalling));
  clock_.Advance(absl::Seconds(11));
  ASSERT_TRUE(Eventually([&] {
    auto l = Lease("b");
    return l && l->status.state == api::LeaseState::kRevoked &&
           l->status.fence_required;
  }));
  ASSERT_TRUE(fake_
                  .Patch(api::DaxLeaseResource(), "", "b",
                         k8s::PatchType::kMerge,
                         {{"status", {{"fencedRecallID", id}}}}, "status")
                  .ok());
  ASSERT_TRUE(Eventually([&] {
    auto rc = Recall("r");
    return rc && rc->status.phase == api::RecallPhase::kComplete;
  }));
  EXPECT_GT(controller_.passes(), 0);

  // The series moved as the protocol did: two grants, one revocation, one
  // fence, one recall of 11 s (fake clock); a: Released, b: Revoked. The
  // pass counts after its writes succeed, so the recall can read Complete a
  // moment before the pass that wrote it has counted: wait for the count.
  std::string text;
  ASSERT_TRUE(Eventually([&] {
    text = Scrape();
    return absl::StrContains(text,
                             "daxlease_operator_recalls_completed_total 1");
  })) << text;
  EXPECT_THAT(text, HasSubstr("daxlease_operator_grants_total 2"));
  EXPECT_THAT(text, HasSubstr("daxlease_operator_revocations_total 1"));
  EXPECT_THAT(text, HasSubstr("daxlease_operator_fences_total 1"));
  EXPECT_THAT(text, HasSubstr("daxlease_operator_recalls_completed_total 1"));
  EXPECT_THAT(text,
              HasSubstr("daxlease_operator_recall_duration_seconds_count 1"));
  EXPECT_THAT(text,
              HasSubstr("daxlease_operator_recall_duration_seconds_bucket{le="
                        "\"30\"} 1"));
  EXPECT_THAT(text,
              HasSubstr("daxlease_operator_recall_duration_seconds_bucket{le="
                        "\"10\"} 0"));
  EXPECT_THAT(text,
              HasSubstr("daxlease_operator_leases{state=\"Released\"} 1"));
  EXPECT_THAT(text, HasSubstr("daxlease_operator_leases{state=\"Revoked\"} 1"));
  EXPECT_THAT(text, HasSubstr("daxlease_operator_leases{state=\"Granted\"} 0"));
  EXPECT_THAT(text, HasSubstr("controller_runtime_reconcile_total{controller="
                              "\"daxvolume\",result=\"success\"}"));
  EXPECT_THAT(text, testing::Not(HasSubstr(
                        "controller_runtime_reconcile_total{controller="
                        "\"daxvolume\",result=\"success\"} 0")));
  EXPECT_THAT(text, testing::Not(HasSubstr(
                        "controller_runtime_reconcile_total{controller="
                        "\"daxvolume\",result=\"requeue_after\"} 0")));
  EXPECT_THAT(text, testing::Not(HasSubstr("workqueue_adds_total{name="
                                           "\"daxvolume\"} 0")));
}

// A burst of lease creations is served by one pass over their volume, not
// one pass each: every creation waits the volume's coalescing delay (here
// 1 s of the fake clock), and the pass after it grants them all.
TEST_F(ControllerTest, ABurstOfLeaseCreationsIsOnePass) {
  CreateSharedVolume();
  ControllerOptions o;
  o.coalesce_min = absl::Seconds(1);
  Controller c(fake_, clock_, events_, o);
  ASSERT_TRUE(c.Start().ok());
  auto volume = [&] {
    auto j = fake_.Get(api::DaxVolumeResource(), "", "vol");
    EXPECT_TRUE(j.ok());
    auto parsed = api::FromJson<api::DaxVolume>(j.ok() ? *j : k8s::Json{});
    return parsed.ok() ? *parsed : api::DaxVolume{};
  };
  ASSERT_TRUE(Eventually(
      [&] { return volume().status.phase == api::VolumePhase::kReady; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const int64_t passes = c.passes();
  const int64_t writes = fake_.WriteCount();
  constexpr int kLeases = 20;
  for (int i = 0; i < kLeases; ++i) {
    api::DaxLease l;
    l.metadata.name = absl::StrCat("l", i);
    l.spec = {"vol", absl::StrCat("node-", i), "", api::Access::kReadWrite};
    ASSERT_TRUE(fake_.Create(api::DaxLeaseResource(), api::ToJson(l)).ok());
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(c.passes(), passes);  // the burst waits
  EXPECT_FALSE(LeaseIs("l0", api::LeaseState::kGranted));
  clock_.Advance(absl::Seconds(1));
  ASSERT_TRUE(Eventually([&] {
    for (int i = 0; i < kLeases; ++i) {
      if (!LeaseIs(absl::StrCat("l", i), api::LeaseState::kGranted)) {
        return false;
      }
    }
    return true;
  }));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(volume().status.holders, kLeases);
  // The creates, each lease's finalizer and status, and one volume write
  // (holders 0 -> 20), not one volume write per grant.
  EXPECT_EQ(fake_.WriteCount() - writes, kLeases + 2 * kLeases + 1);
  c.Stop();
}

// The allocator is trimmed after a successful pass over at least
// trim_after_leases leases, not after smaller ones, and never when 0.
TEST_F(ControllerTest, TrimsAfterAPassOverManyLeasesOnly) {
  CreateSharedVolume();
  std::atomic<int> trims{0}, never{0};
  ControllerOptions o;
  o.trim_after_leases = 3;
  o.trim = [&] { ++trims; };
  Controller c(fake_, clock_, events_, o);
  ControllerOptions off;
  off.trim_after_leases = 0;
  off.trim = [&] { ++never; };
  k8s::FakeKubeClient other_fake(clock_);
  CreateSharedVolume(&other_fake);
  Controller c_off(other_fake, clock_, events_, off);
  ASSERT_TRUE(c.Start().ok());
  ASSERT_TRUE(c_off.Start().ok());
  auto add = [&](k8s::FakeKubeClient& f, int i) {
    api::DaxLease l;
    l.metadata.name = absl::StrCat("l", i);
    l.spec = {"vol", absl::StrCat("node-", i), "", api::Access::kReadWrite};
    ASSERT_TRUE(f.Create(api::DaxLeaseResource(), api::ToJson(l)).ok());
  };
  for (int i = 0; i < 2; ++i) {
    add(fake_, i);
    add(other_fake, i);
  }
  ASSERT_TRUE(Eventually([&] {
    return LeaseIs("l0", api::LeaseState::kGranted) &&
           LeaseIs("l1", api::LeaseState::kGranted);
  }));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(trims.load(), 0) << "passes over 2 leases";
  add(fake_, 2);
  add(other_fake, 2);
  ASSERT_TRUE(Eventually([&] { return trims.load() > 0; }))
      << "a pass over 3 leases trims";
  ASSERT_TRUE(Eventually([&] {
    auto j = other_fake.Get(api::DaxLeaseResource(), "", "l2");
    auto l = api::FromJson<api::DaxLease>(j.ok() ? *j : k8s::Json{});
    return l.ok() && l->status.state == api::LeaseState::kGranted;
  }));
  c_off.Stop();
  EXPECT_EQ(never.load(), 0) << "0: never";
  c.Stop();
}

TEST(PassCoalescerTest, WaitsAsLongAsTheVolumesLastPassWithinBounds) {
  PassCoalescer c(absl::Milliseconds(2), absl::Seconds(1));
  EXPECT_EQ(c.DelayFor("v"), absl::Milliseconds(2));  // no pass yet
  c.Ran("v", absl::Milliseconds(300));
  EXPECT_EQ(c.DelayFor("v"), absl::Milliseconds(300));
  EXPECT_EQ(c.DelayFor("w"), absl::Milliseconds(2));
  c.Ran("v", absl::Seconds(7));
  EXPECT_EQ(c.DelayFor("v"), absl::Seconds(1));
  c.Ran("v", absl::ZeroDuration());
  EXPECT_EQ(c.DelayFor("v"), absl::Milliseconds(2));
}

// A 409 means the pass read something stale; the cache it reads from may
// still be stale, so the volume is retried after a backoff on the injected
// clock, not at once.
TEST_F(ControllerTest, ConflictRequeuesAfterABackoffNotAtOnce) {
  CreateSharedVolume();
  ASSERT_TRUE(controller_.Start().ok());
  auto add_lease = [&](const std::string& n) {
    api::DaxLease l;
    l.metadata.name = n;
    l.spec = {"vol", "node-" + n, "", api::Access::kReadWrite};
    ASSERT_TRUE(fake_.Create(api::DaxLeaseResource(), api::ToJson(l)).ok());
  };
  add_lease("a");
  ASSERT_TRUE(
      Eventually([&] { return LeaseIs("a", api::LeaseState::kGranted); }));
  // Settled: wait until no pass has run for a while.
  int64_t passes = controller_.passes();
  for (int i = 0; i < 50; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    int64_t now = controller_.passes();
    if (now == passes && i > 5) break;
    passes = now;
  }

  fake_.FailNext(k8s::FakeKubeClient::Verb::kPatch,
                 absl::AbortedError("HTTP 409 Conflict"));
  add_lease("b");
  ASSERT_TRUE(Eventually([&] { return controller_.passes() > passes; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(controller_.passes(), passes + 1)
      << "a conflict was retried without waiting";
  EXPECT_FALSE(LeaseIs("b", api::LeaseState::kGranted));
  clock_.Advance(absl::Milliseconds(50));
  EXPECT_TRUE(
      Eventually([&] { return LeaseIs("b", api::LeaseState::kGranted); }));
  const std::string text = Scrape();
  EXPECT_THAT(text, HasSubstr("controller_runtime_reconcile_errors_total{"
                              "controller=\"daxvolume\"} 1"));
  EXPECT_THAT(text, HasSubstr("workqueue_retries_total{name=\"daxvolume\"} 1"));
}

// A CacheWorldReader over informers of a fake API server that are never
// started: the tests feed it events (Observe) and writes themselves.
class CacheWorldReaderTest : public testing::Test {
 protected:
  static k8s::InformerOptions Of(const k8s::Resource& r) {
    k8s::InformerOptions o;
    o.resource = r;
    return o;
  }

  base::FakeClock clock;
  k8s::FakeKubeClient fake{clock};
  k8s::Informer volumes{fake, clock, Of(api::DaxVolumeResource())};
  k8s::Informer leases{fake, clock, Of(api::DaxLeaseResource())};
  k8s::Informer recalls{fake, clock, Of(api::DaxRecallResource())};
  CacheWorldReader reader{volumes, leases, recalls};
};

// The controller's DaxLease informer caches versions only: an update's old
// object, a resync's and a vanished lease's are stubs of name and version.
// The reader files a lease by its parsed version, so a stub of a version it
// has seen keeps the lease where it was and says where; a stub of a version
// never delivered whole changes nothing.
TEST_F(CacheWorldReaderTest, AStubOfASeenVersionKeepsTheLeaseWhereItWas) {
  const k8s::Resource lr = api::DaxLeaseResource();
  api::DaxLease l;
  l.metadata.name = "l";
  l.metadata.resource_version = "42";
  l.spec = {"vol", "node-a", "ns/pod", api::Access::kReadWrite};
  l.status.state = api::LeaseState::kGranted;
  l.status.bound_to = api::LeaseBinding{"vol-bound", "node-a", "ns/pod"};
  auto stub = [](int rv) {
    return k8s::Json{
        {"metadata", {{"name", "l"}, {"resourceVersion", std::to_string(rv)}}}};
  };
  std::string was = "x";
  EXPECT_TRUE(reader.Observe(lr, api::ToJson(l), false, &was));
  EXPECT_EQ(was, "") << "new";
  EXPECT_TRUE(reader.Observe(lr, stub(42), false, &was));  // a resync
  EXPECT_EQ(was, "vol-bound");
  ASSERT_TRUE(reader.Read("vol-bound").ok());
  ASSERT_EQ(reader.Read("vol-bound")->leases.size(), 1u);
  EXPECT_EQ(reader.Read("vol-bound")->leases[0]->spec.holder_node, "node-a");
  EXPECT_TRUE(reader.Read("vol-bound")->unreadable.empty());
  EXPECT_TRUE(reader.Read("")->leases.empty());
  EXPECT_FALSE(reader.Observe(lr, stub(43), false, &was)) << "unseen";
  EXPECT_EQ(reader.Read("vol-bound")->leases[0]->metadata.resource_version,
            "42");
  // Vanished while the watch was down: deleted as a stub.
  EXPECT_TRUE(reader.Observe(lr, stub(42), true, &was));
  EXPECT_EQ(was, "vol-bound");
  EXPECT_TRUE(reader.Read("vol-bound")->leases.empty());
}

// The display's writes (LeaseDisplay, through WroteNeedingNoPass) come back
// on the watch; their echo asks for no pass, any other event does.
TEST_F(CacheWorldReaderTest, TheEchoOfANoPassWriteAsksForNoPass) {
  const k8s::Resource lr = api::DaxLeaseResource();
  auto lease = [](int rv) {
    return k8s::Json{
        {"metadata", {{"name", "l"}, {"resourceVersion", std::to_string(rv)}}},
        {"spec", {{"volume", "v"}, {"holderNode", "n"}}}};
  };
  EXPECT_TRUE(reader.Observe(lr, lease(5), false));
  reader.WroteNeedingNoPass(lr, lease(7));
  EXPECT_FALSE(reader.Observe(lr, lease(7), false));  // the echo
  EXPECT_TRUE(reader.Observe(lr, lease(7), false));   // a resync of it
  ASSERT_TRUE(reader.Read("v").ok());
  EXPECT_EQ(reader.Read("v")->leases.size(), 1u);
  reader.Wrote(lr, lease(9));  // a pass's write: its echo asks for a pass
  EXPECT_TRUE(reader.Observe(lr, lease(9), false));
  // Two display writes (finalizers, then status): both echoes are ours.
  reader.WroteNeedingNoPass(lr, lease(11));
  reader.WroteNeedingNoPass(lr, lease(12));
  EXPECT_FALSE(reader.Observe(lr, lease(11), false));
  EXPECT_FALSE(reader.Observe(lr, lease(12), false));
  // Another writer's version after ours retires ours (a relist skipped it).
  reader.WroteNeedingNoPass(lr, lease(14));
  EXPECT_TRUE(reader.Observe(lr, lease(15), false));
  EXPECT_TRUE(reader.Observe(lr, lease(14), false));
  // The event came before the writer was told: it already asked.
  EXPECT_TRUE(reader.Observe(lr, lease(17), false));
  reader.WroteNeedingNoPass(lr, lease(17));
  EXPECT_TRUE(reader.Observe(lr, lease(17), false));
  // A delete always asks.
  reader.WroteNeedingNoPass(lr, lease(19));
  EXPECT_TRUE(reader.Observe(lr, lease(19), true));
  // Other kinds are never echoes to skip.
  k8s::Json recall = {{"metadata", {{"name", "r"}, {"resourceVersion", "21"}}},
                      {"spec", {{"volume", "v"}}}};
  reader.WroteNeedingNoPass(api::DaxRecallResource(), recall);
  EXPECT_TRUE(reader.Observe(api::DaxRecallResource(), recall, false));
}

// Every world read shares the cache's parsed leases (plan.h SharedLease):
// no copy per pass, and an edit of one world (a pass's overlay, its plan)
// never reaches the cache or another world.
TEST_F(CacheWorldReaderTest, WorldsShareTheCachedLeasesAndEditsDoNotLeak) {
  api::DaxLease l;
  l.metadata.name = "l";
  l.metadata.resource_version = "5";
  l.spec = {"v", "n", "ns/pod", api::Access::kReadWrite};
  l.status.state = api::LeaseState::kGranted;
  l.status.epoch = 1;
  reader.Observe(api::DaxLeaseResource(), api::ToJson(l), false);
  absl::StatusOr<World> a = reader.Read("v");
  absl::StatusOr<World> b = reader.Read("v");
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_EQ(a->leases.size(), 1u);
  ASSERT_EQ(b->leases.size(), 1u);
  EXPECT_TRUE(a->leases[0].SharesWith(b->leases[0]));
  const api::DaxLease as_cached = *b->leases[0];
  a->leases[0].Mutable().status.state = api::LeaseState::kRecalling;
  a->leases[0].Mutable().metadata.finalizers.push_back(api::kLeaseFinalizer);
  EXPECT_EQ(b->leases[0]->status.state, api::LeaseState::kGranted);
  absl::StatusOr<World> c = reader.Read("v");
  ASSERT_TRUE(c.ok());
  ASSERT_EQ(c->leases.size(), 1u);
  EXPECT_EQ(*c->leases[0], as_cached) << "an edit of a world reached the cache";
  EXPECT_TRUE(c->leases[0].SharesWith(b->leases[0]));
  // Once every other world is gone, an edit still copies: the cache holds
  // the lease too.
  b = absl::UnknownError("dropped");
  a = absl::UnknownError("dropped");
  c->leases[0].Mutable().status.epoch = 7;
  absl::StatusOr<World> d = reader.Read("v");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->leases[0]->status.epoch, 1);
}

// A LeaseDisplay's reader, never read (the display only tells it of writes).
class NoWorldReader final : public WorldReader {
 public:
  absl::StatusOr<World> Read(const std::string&) override {
    return absl::UnimplementedError("not read");
  }
};

// Lease `name` of volume v, Granted at epoch 1, as created in `fake` (its
// resourceVersion is the stored one).
SharedLease StoredGrantedLease(k8s::FakeKubeClient& fake,
                               const std::string& name) {
  api::DaxLease read;
  read.metadata.name = name;
  read.spec = {"v", "n", "ns/pod", api::Access::kReadWrite};
  read.status.state = api::LeaseState::kGranted;
  read.status.epoch = 1;
  absl::StatusOr<k8s::Json> stored =
      fake.Create(api::DaxLeaseResource(), api::ToJson(read));
  EXPECT_TRUE(stored.ok()) << stored.status();
  if (stored.ok()) {
    read.metadata.resource_version = k8s::ResourceVersionOf(*stored);
  }
  return read;
}

// A pending display write is shown to the next pass as the very lease the
// pass planned (shared: a pass over N pending writes copies none), with the
// agents' fields as read; a lease read at another version is left as read.
TEST(LeaseDisplayTest, OverlayShowsAPendingWriteWithoutCopyingIt) {
  base::FakeClock clock;
  k8s::FakeKubeClient fake(clock);
  NoWorldReader reader;
  LeaseDisplay display(
      fake, reader, [](const std::string&) {}, 1, absl::Hours(1));
  api::DaxLease read;
  read.metadata.name = "l";
  read.metadata.resource_version = "5";
  read.spec = {"v", "n", "ns/pod", api::Access::kReadWrite};
  read.status.state = api::LeaseState::kGranted;
  read.status.epoch = 1;
  const SharedLease cached(read);
  api::DaxLease planned = read;
  planned.status.state = api::LeaseState::kReleased;
  planned.status.recall_id = "r";
  const SharedLease after(planned);
  display.Enqueue("v", cached, after, /*hold=*/true);  // held: not written
  ASSERT_EQ(display.pending(), 1);

  World w;
  w.volume_name = "v";
  w.leases = {cached};
  display.Overlay(w);
  EXPECT_TRUE(w.leases[0].SharesWith(after));
  EXPECT_TRUE(w.display_pending.contains("l"));

  // An ack read on the lease object is kept: shown on this world's copy.
  api::DaxLease acked = read;
  acked.status.released_recall_id = "r";
  World w2;
  w2.leases = {SharedLease(acked)};
  display.Overlay(w2);
  EXPECT_FALSE(w2.leases[0].SharesWith(after));
  EXPECT_EQ(w2.leases[0]->status.state, api::LeaseState::kReleased);
  EXPECT_EQ(w2.leases[0]->status.released_recall_id, "r");
  EXPECT_EQ(after->status.released_recall_id, "");

  // Another writer's version: the write will conflict; left as read.
  api::DaxLease newer = read;
  newer.metadata.resource_version = "9";
  const SharedLease other(newer);
  World w3;
  w3.leases = {other};
  display.Overlay(w3);
  EXPECT_TRUE(w3.leases[0].SharesWith(other));
  EXPECT_FALSE(w3.display_pending.contains("l"));
  EXPECT_EQ(fake.WriteCount(), 0);
}

// A held write that only shows its recall's start (Granted as stored,
// Recalling for the running recall) keeps no copy of the lease: a pass reads
// the stored lease through the recall's record to the same state, so the
// world is left as read (shared with the cache) and the display keeps a
// name. When the hold is over the display writes nothing of its own: it asks
// for a pass, whose writes are no longer held.
TEST(LeaseDisplayTest, AHeldRecallStartKeepsNoCopyOfTheLease) {
  base::FakeClock clock;
  k8s::FakeKubeClient fake(clock);
  NoWorldReader reader;
  absl::Mutex mu;
  std::vector<std::string> asked;
  LeaseDisplay display(
      fake, reader,
      [&](const std::string& v) {
        absl::MutexLock l(&mu);
        asked.push_back(v);
      },
      1, absl::Milliseconds(50));
  const SharedLease cached = StoredGrantedLease(fake, "l");
  api::DaxLease planned = *cached;
  planned.status.state = api::LeaseState::kRecalling;
  planned.status.recall_id = "r";
  const SharedLease after(planned);
  const int64_t writes_before = fake.WriteCount();
  display.Enqueue("v", cached, after, /*hold=*/true);
  ASSERT_EQ(display.pending(), 1);

  World w;
  w.volume_name = "v";
  w.leases = {cached};
  display.Overlay(w);
  EXPECT_TRUE(w.leases[0].SharesWith(cached)) << "left as read";
  EXPECT_TRUE(w.display_pending.contains("l")) << "still pending";

  // The hold ends: nothing written by the display, a pass asked for.
  auto passes_asked = [&] {
    absl::MutexLock l(&mu);
    return asked.size();
  };
  for (int i = 0; i < 2000 && passes_asked() == 0; ++i) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  ASSERT_EQ(passes_asked(), 1u);
  EXPECT_EQ(asked[0], "v");
  EXPECT_EQ(display.pending(), 0);
  EXPECT_EQ(fake.WriteCount(), writes_before);

  // That pass's write is not held again while the recall runs on.
  display.Enqueue("v", cached, after, /*hold=*/true);
  for (int i = 0; i < 2000 && display.pending() > 0; ++i) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  EXPECT_EQ(display.pending(), 0);
  EXPECT_EQ(fake.WriteCount(), writes_before + 1);
  absl::StatusOr<k8s::Json> now = fake.Get(api::DaxLeaseResource(), "", "l");
  ASSERT_TRUE(now.ok());
  EXPECT_EQ((*now)["status"]["state"], "Recalling");
}

// The recall ends within the hold: a restated write the ending pass did not
// replace is dropped, with a pass asked for; one it replaced (Released) is
// written, once.
TEST(LeaseDisplayTest, ARecallEndingWithinTheHoldWritesWhatItsLastPassDecided) {
  base::FakeClock clock;
  k8s::FakeKubeClient fake(clock);
  NoWorldReader reader;
  std::atomic<int> passes{0};
  LeaseDisplay display(
      fake, reader, [&](const std::string&) { ++passes; }, 1, absl::Hours(1));
  std::vector<SharedLease> cached;
  for (const char* name : {"a", "b"}) {
    cached.push_back(StoredGrantedLease(fake, name));
    api::DaxLease recalling = *cached.back();
    recalling.status.state = api::LeaseState::kRecalling;
    recalling.status.recall_id = "r";
    display.Enqueue("v", cached.back(), SharedLease(recalling),
                    /*hold=*/true);
  }
  const int64_t writes_before = fake.WriteCount();
  api::DaxLease released = *cached[0];
  released.status.state = api::LeaseState::kReleased;
  released.status.recall_id = "r";
  display.Enqueue("v", cached[0], SharedLease(released), /*hold=*/false);
  display.Release("v");
  for (int i = 0; i < 2000 && display.pending() > 0; ++i) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  EXPECT_EQ(display.pending(), 0);
  EXPECT_EQ(fake.WriteCount(), writes_before + 1) << "a, Released, once";
  absl::StatusOr<k8s::Json> a = fake.Get(api::DaxLeaseResource(), "", "a");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ((*a)["status"]["state"], "Released");
  absl::StatusOr<k8s::Json> b = fake.Get(api::DaxLeaseResource(), "", "b");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(k8s::ResourceVersionOf(*b), cached[1]->metadata.resource_version)
      << "b: not written, for a pass to say";
  EXPECT_GE(passes.load(), 1);
}

}  // namespace
}  // namespace daxlease::op
