// The operator against a real kube-apiserver + etcd (label k8s): the CRDs,
// the server's validation, and the real daxlease-operator binary driving
// recalls while the test plays the node agents.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/api/json.h"
#include "lib/api/label_value.h"
#include "lib/api/resources.h"
#include "operator/reconciler.h"
#include "tests/k8s/daxlease_fixture.h"
#include "tests/k8s/k8s_testing.h"

namespace daxlease::op {
namespace {

using k8s::Json;
using k8s::testing::WaitFor;

// The daxlease-operator binary as a child process on `kubeconfig`.
class OperatorProcess : public k8s::testing::ChildProcess {
 public:
  OperatorProcess(const std::string& kubeconfig, std::vector<std::string> args,
                  const std::string& log_name)
      : ChildProcess(Argv(kubeconfig, std::move(args)), log_name) {}

 private:
  static std::vector<std::string> Argv(const std::string& kubeconfig,
                                       std::vector<std::string> args) {
    std::vector<std::string> argv = {DAXLEASE_OPERATOR_BIN,
                                     "--kubeconfig=" + kubeconfig};
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
  }
};

class OperatorK8sTest : public k8s::testing::DaxleaseK8sTest {
 protected:
  // Short enough for a standby to take over within the tests' waits, long
  // enough that a leader on a loaded machine (each renewal may take the
  // retry period, its timeout) does not lose the lock by accident.
  std::vector<std::string> OperatorArgs(const std::string& identity) {
    return {"--leader-election-name=" + prefix_, "--identity=" + identity,
            "--leader-election-lease-duration=6s",
            "--leader-election-renew-deadline=4s",
            "--leader-election-retry-period=1s", "--resync=5s",
            // No agent runs here to pre-copy: migrations start at the
            // recall (the pre-copy: tests/twonode/migration_twonode_test).
            "--migration-pre-copy=false"};
  }

  using DaxleaseK8sTest::CreateLease;
  // Lease `name` (ending in its node's letter) for a pod on node-<letter>.
  void CreateLease(const std::string& name, const std::string& volume) {
    CreateLease(name, volume, "node-" + name.substr(name.size() - 1));
  }
  // As the node agent will: a merge patch of the lease's status.
  void AgentPatch(const std::string& lease, Json status) {
    auto st = client_->Patch(api::DaxLeaseResource(), "", lease,
                             k8s::PatchType::kMerge,
                             {{"status", std::move(status)}}, "status");
    ASSERT_TRUE(st.ok()) << st.status();
  }
  // As the target and source agents will: a merge patch of the migration's
  // status.
  void MigrationPatch(const std::string& name, Json status) {
    auto st = client_->Patch(api::DaxMigrationResource(), "", name,
                             k8s::PatchType::kMerge,
                             {{"status", std::move(status)}}, "status");
    ASSERT_TRUE(st.ok()) << st.status();
  }
  // `kubectl daxlease status VOLUME`'s output.
  std::string PluginStatus(const std::string& volume) {
    FILE* p = popen(absl::StrCat(DAXLEASE_PLUGIN_BIN, " --kubeconfig ",
                                 kubeconfig_, " status ", volume)
                        .c_str(),
                    "r");
    if (p == nullptr) return "";
    char buf[8192] = {0};
    size_t n = fread(buf, 1, sizeof(buf) - 1, p);
    pclose(p);
    return std::string(buf, n);
  }
  // A shared volume on node-owner with lease `a` (node-a) granted, and a
  // DaxMigration `m` to node-target whose Migrate recall `a` acked: the
  // volume is Migrating, the migration Copying. Returns the epoch before.
  int64_t MigrateUntilCopying(const std::string& vol, const OperatorProcess& op,
                              std::string migration = "") {
    if (migration.empty()) migration = N("m");
    CreateVolume(vol);
    CreateLease(N("a"), vol);
    EXPECT_TRUE(
        WaitFor([&] { return LeaseIs(N("a"), api::LeaseState::kGranted); },
                absl::Seconds(30)))
        << op.Log();
    EXPECT_TRUE(WaitFor([&] { return Volume(vol)->status.holders == 1; },
                        absl::Seconds(10)));
    const int64_t epoch0 = Volume(vol)->status.epoch;
    api::DaxMigration m;
    m.metadata.name = migration;
    m.spec = {vol, "node-target"};
    auto made = client_->Create(api::DaxMigrationResource(), api::ToJson(m));
    EXPECT_TRUE(made.ok()) << made.status();
    std::string recall;
    EXPECT_TRUE(WaitFor(
        [&] {
          auto mm = Migration(migration);
          if (!mm || mm->status.recall.empty()) return false;
          recall = mm->status.recall;
          auto r = Recall(recall);
          return r && !r->status.recall_id.empty() &&
                 LeaseIs(N("a"), api::LeaseState::kRecalling);
        },
        absl::Seconds(20)))
        << op.Log();
    AgentPatch(N("a"),
               {{"releasedRecallID", Recall(recall)->status.recall_id}});
    EXPECT_TRUE(WaitFor(
        [&] {
          auto mm = Migration(migration);
          return mm && mm->status.phase == api::MigrationPhase::kCopying &&
                 Volume(vol)->status.phase == api::VolumePhase::kMigrating;
        },
        absl::Seconds(20)))
        << op.Log();
    return epoch0;
  }
  // MigrateUntilCopying, then the target reports `progress` and `m` is
  // deleted; waits for the volume to be Ready at the next epoch. Returns the
  // epoch before.
  int64_t MigrateThenDeleteMidFlow(const std::string& vol,
                                   const OperatorProcess& op, Json progress) {
    const int64_t epoch0 = MigrateUntilCopying(vol, op);
    if (HasFailure()) return epoch0;
    progress["targetEndpoint"] = "10.0.0.9:7390";
    progress["lastProgressTime"] = api::FormatWireTime(absl::Now());
    MigrationPatch(N("m"), std::move(progress));
    EXPECT_TRUE(client_->Delete(api::DaxMigrationResource(), "", N("m")).ok());
    EXPECT_TRUE(WaitFor(
        [&] {
          auto v = Volume(vol);
          return v && v->status.phase == api::VolumePhase::kReady &&
                 v->status.epoch == epoch0 + 1;
        },
        absl::Seconds(20)))
        << op.Log();
    return epoch0;
  }
  // A deleted migration `m` is kept (its finalizer) until the node named by
  // `freed` (targetMediaFreed or sourceMediaFreed) says its media is gone;
  // then it goes.
  void ExpectKeptUntilMediaFreed(const char* freed, const OperatorProcess& op) {
    absl::SleepFor(absl::Seconds(1));
    ASSERT_TRUE(Migration(N("m")).has_value());
    MigrationPatch(N("m"), {{freed, true}});
    EXPECT_TRUE(WaitFor([&] { return !Migration(N("m")).has_value(); },
                        absl::Seconds(10)))
        << op.Log();
  }
};

TEST_F(OperatorK8sTest, CrdsApplyAndServerRejectsInvalidObjects) {
  std::string out;
  ASSERT_EQ(k8s::testing::Kubectl(kubeconfig_, "get crd -o name", &out), 0)
      << out;
  for (const char* crd :
       {"daxvolumes", "daxleases", "daxrecalls", "daxmigrations"}) {
    EXPECT_THAT(out, ::testing::HasSubstr(absl::StrCat(crd, ".daxlease.io")));
  }
  // Short names and the category resolve.
  EXPECT_EQ(k8s::testing::Kubectl(kubeconfig_, "get dv,dl,drc,dmig", &out), 0)
      << out;
  EXPECT_EQ(k8s::testing::Kubectl(kubeconfig_, "get dax", &out), 0) << out;

  auto rejected = [&](const k8s::Resource& r, Json obj) {
    auto st = client_->Create(r, obj);
    EXPECT_TRUE(absl::IsInvalidArgument(st.status()))
        << obj.dump() << " -> " << st.status();
  };
  Json meta = {{"name", N("bad")}};
  auto vol = [&](Json spec) {
    return Json{{"apiVersion", api::kApiVersion},
                {"kind", "DaxVolume"},
                {"metadata", meta},
                {"spec", spec}};
  };
  rejected(api::DaxVolumeResource(),
           vol({{"sizeBytes", 0}, {"mode", "fsdax"}, {"ownerNode", "n"}}));
  rejected(api::DaxVolumeResource(),
           vol({{"sizeBytes", 1}, {"mode", "tape"}, {"ownerNode", "n"}}));
  rejected(api::DaxVolumeResource(),
           vol({{"sizeBytes", 1}, {"mode", "fsdax"}}));
  rejected(
      api::DaxLeaseResource(),
      {{"apiVersion", api::kApiVersion},
       {"kind", "DaxLease"},
       {"metadata", meta},
       {"spec",
        {{"volume", "v"}, {"holderNode", "n"}, {"access", "Everything"}}}});
  rejected(api::DaxRecallResource(),
           {{"apiVersion", api::kApiVersion},
            {"kind", "DaxRecall"},
            {"metadata", meta},
            {"spec", {{"volume", "v"}, {"graceSeconds", 0}}}});
  rejected(api::DaxRecallResource(),
           {{"apiVersion", api::kApiVersion},
            {"kind", "DaxRecall"},
            {"metadata", meta},
            {"spec", {{"volume", "v"}, {"graceSeconds", 86401}}}});
  rejected(api::DaxVolumeResource(), vol({{"sizeBytes", 1},
                                          {"mode", "fsdax"},
                                          {"ownerNode", "n"},
                                          {"recallGraceSeconds", 86401}}));
  rejected(api::DaxRecallResource(), {{"apiVersion", api::kApiVersion},
                                      {"kind", "DaxRecall"},
                                      {"metadata", meta},
                                      {"spec", {{"reason", "Manual"}}}});
  // A valid object is accepted, and a bad status is refused too.
  CreateVolume(N("ok"));
  auto bad_status = client_->Patch(
      api::DaxVolumeResource(), "", N("ok"), k8s::PatchType::kMerge,
      {{"status", {{"phase", "Exploded"}}}}, "status");
  EXPECT_TRUE(absl::IsInvalidArgument(bad_status.status()))
      << bad_status.status();
  // The defaulted reason is served back.
  CreateRecall(N("rc"), N("ok"), 5);
  auto rc = client_->Get(api::DaxRecallResource(), "", N("rc"));
  ASSERT_TRUE(rc.ok());
  EXPECT_EQ((*rc)["spec"]["reason"], "Manual");
}

// The names a user types: `daxlease` is the DaxLease kind (while the
// category was also `daxlease`, the category won: `kubectl get daxlease`
// listed DaxVolumes and DaxRecalls too), `daxlease NAME` and `dl` name
// DaxLeases only, and the category `dax` lists every kind.
TEST_F(OperatorK8sTest, KubectlNamesResolveAsAUserExpects) {
  CreateVolume(N("vol"));
  CreateLease(N("lease-a"), N("vol"));
  const std::string lease = "daxlease.daxlease.io/" + N("lease-a");
  const std::string volume = "daxvolume.daxlease.io/" + N("vol");
  std::string out;

  EXPECT_EQ(k8s::testing::Kubectl(
                kubeconfig_, "get daxlease " + N("lease-a") + " -o name", &out),
            0)
      << out;
  EXPECT_EQ(absl::StripAsciiWhitespace(out), lease);
  EXPECT_EQ(k8s::testing::Kubectl(kubeconfig_, "get dl " + N("lease-a"), &out),
            0)
      << out;
  EXPECT_THAT(out, ::testing::HasSubstr(N("vol")));  // the Volume column
  EXPECT_EQ(k8s::testing::Kubectl(
                kubeconfig_, "get daxvolume " + N("vol") + " -o name", &out),
            0)
      << out;
  EXPECT_EQ(absl::StripAsciiWhitespace(out), volume);

  EXPECT_EQ(k8s::testing::Kubectl(kubeconfig_, "get dl -o name", &out), 0)
      << out;
  EXPECT_THAT(out, ::testing::HasSubstr(lease));
  EXPECT_THAT(out, ::testing::Not(::testing::HasSubstr("daxvolume.")));
  for (const char* lease_kind : {"daxlease", "daxleases", "DaxLease"}) {
    EXPECT_EQ(
        k8s::testing::Kubectl(
            kubeconfig_, absl::StrCat("get ", lease_kind, " -o name"), &out),
        0)
        << out;
    EXPECT_THAT(out, ::testing::HasSubstr(lease)) << lease_kind;
    EXPECT_THAT(out, ::testing::Not(::testing::HasSubstr("daxvolume.")))
        << lease_kind;
  }

  EXPECT_EQ(k8s::testing::Kubectl(kubeconfig_, "get dax -o name", &out), 0)
      << out;
  EXPECT_THAT(out, ::testing::HasSubstr(lease));
  EXPECT_THAT(out, ::testing::HasSubstr(volume));
}

// The main scenario with the real binary: three holders, two ack,
// one never does; new leases during the recall wait; the plugin creates the
// recall and shows it.
TEST_F(OperatorK8sTest, RecallTwoAckOneRevokedFencedEpochBumped) {
  std::vector<std::string> args = OperatorArgs("op-a");
  args.push_back("--metrics-address=127.0.0.1:0");
  OperatorProcess op(kubeconfig_, args, prefix_);
  // /metrics, scraped from the running operator. Other tests' objects on
  // the same API server move the same series, so the checks are on growth.
  int port = -1;
  ASSERT_TRUE(WaitFor(
      [&] {
        port = k8s::testing::LoggedMetricsPort(op.Log(), "operator.metrics");
        return port > 0;
      },
      absl::Seconds(10)))
      << op.Log();
  auto scrape = [&](const std::string& series) {
    auto text = k8s::testing::ScrapeMetrics(port);
    EXPECT_TRUE(text.ok()) << text.status();
    return text.ok() ? k8s::testing::MetricValue(*text, series) : -1;
  };
  const std::string revocations = "daxlease_operator_revocations_total";
  const std::string fences = "daxlease_operator_fences_total";
  const std::string recalls = "daxlease_operator_recall_duration_seconds_count";
  const std::string granted = "daxlease_operator_leases{state=\"Granted\"}";
  const std::string passes =
      "controller_runtime_reconcile_total{controller=\"daxvolume\","
      "result=\"success\"}";
  const std::string adds = "workqueue_adds_total{name=\"daxvolume\"}";
  std::string vol = N("vol");
  CreateVolume(vol);
  for (const char* s : {"a", "b", "c"}) CreateLease(N(s), vol);
  ASSERT_TRUE(WaitFor(
      [&] {
        return LeaseIs(N("a"), api::LeaseState::kGranted) &&
               LeaseIs(N("b"), api::LeaseState::kGranted) &&
               LeaseIs(N("c"), api::LeaseState::kGranted);
      },
      absl::Seconds(30)))
      << op.Log();
  // The volume is written after its leases.
  ASSERT_TRUE(WaitFor([&] { return Volume(vol)->status.holders == 3; },
                      absl::Seconds(10)));
  int64_t epoch0 = Volume(vol)->status.epoch;
  EXPECT_TRUE(WaitFor([&] { return scrape(granted) >= 3; }, absl::Seconds(10)));
  EXPECT_GT(scrape(passes), 0);
  EXPECT_GT(scrape(adds), 0);
  const double revocations0 = scrape(revocations);
  const double fences0 = scrape(fences);
  const double recalls0 = scrape(recalls);
  ASSERT_GE(revocations0, 0);

  // kubectl daxlease recall VOLUME --grace 5: time for the steps below
  // (two plugin runs) before a and b ack, on a loaded machine.
  std::string out;
  std::string plugin =
      absl::StrCat(DAXLEASE_PLUGIN_BIN, " --kubeconfig ", kubeconfig_);
  FILE* p =
      popen(absl::StrCat(plugin, " recall ", vol, " --grace 5").c_str(), "r");
  ASSERT_NE(p, nullptr);
  char buf[512] = {0};
  size_t n = fread(buf, 1, sizeof(buf) - 1, p);
  ASSERT_EQ(pclose(p), 0) << std::string(buf, n);
  std::string created(buf, n);
  ASSERT_THAT(created, ::testing::HasSubstr("daxrecall.daxlease.io/"));
  std::string recall = created.substr(created.find('/') + 1);
  recall = std::string(
      absl::StripAsciiWhitespace(recall.substr(0, recall.find(' '))));

  ASSERT_TRUE(
      WaitFor([&] { return LeaseIs(N("c"), api::LeaseState::kRecalling); },
              absl::Seconds(10)))
      << op.Log();
  std::string id = Recall(recall)->status.recall_id;
  ASSERT_FALSE(id.empty());
  // The volume is written after its leases (crash-safe order), so it may
  // lag the lease seen above by one write.
  EXPECT_TRUE(WaitFor(
      [&] { return Volume(vol)->status.phase == api::VolumePhase::kRecalling; },
      absl::Seconds(10)))
      << op.Log();

  // A new lease during the recall waits, saying why.
  CreateLease(N("d"), vol);
  ASSERT_TRUE(WaitFor(
      [&] {
        auto l = Lease(N("d"));
        const api::Condition* c =
            l ? api::FindCondition(l->status.conditions, "Granted") : nullptr;
        return c != nullptr && c->reason == "RecallInProgress" &&
               l->status.state == api::LeaseState::kPending;
      },
      absl::Seconds(10)));

  // The plugin shows the recall in progress.
  p = popen(absl::StrCat(plugin, " status ", vol).c_str(), "r");
  char sbuf[8192] = {0};
  n = fread(sbuf, 1, sizeof(sbuf) - 1, p);
  pclose(p);
  EXPECT_THAT(std::string(sbuf, n),
              ::testing::HasSubstr("Recalls in progress"));

  AgentPatch(N("a"), {{"releasedRecallID", id}});
  AgentPatch(N("b"), {{"releasedRecallID", id}});
  ASSERT_TRUE(WaitFor(
      [&] {
        return LeaseIs(N("a"), api::LeaseState::kReleased) &&
               LeaseIs(N("b"), api::LeaseState::kReleased);
      },
      absl::Seconds(10)))
      << op.Log();
  // c never answers: revoked at the deadline, marked for fencing.
  ASSERT_TRUE(WaitFor(
      [&] {
        auto l = Lease(N("c"));
        return l && l->status.state == api::LeaseState::kRevoked &&
               l->status.fence_required &&
               l->status.reason == "DeadlineExceeded";
      },
      absl::Seconds(10)))
      << op.Log();
  // The recall's counts are written after its leases (crash-safe order).
  EXPECT_TRUE(WaitFor(
      [&] {
        auto r = Recall(recall);
        return r && r->status.phase == api::RecallPhase::kRecalling &&
               r->status.released == 2 && r->status.revoked == 1;
      },
      absl::Seconds(10)))
      << op.Log();
  EXPECT_EQ(Lease(N("d"))->status.state, api::LeaseState::kPending);

  // The owner agent confirms the fence: the recall completes.
  AgentPatch(N("c"), {{"fencedRecallID", id}});
  ASSERT_TRUE(
      WaitFor([&] { return RecallIs(recall, api::RecallPhase::kComplete); },
              absl::Seconds(10)))
      << op.Log();
  // The volume is written after the recall (crash-safe order).
  ASSERT_TRUE(WaitFor(
      [&] {
        auto v = Volume(vol);
        return v && v->status.phase == api::VolumePhase::kReady &&
               v->status.epoch == epoch0 + 1;
      },
      absl::Seconds(10)))
      << op.Log();
  EXPECT_EQ(Lease(N("c"))->status.state, api::LeaseState::kRevoked);
  EXPECT_FALSE(Lease(N("c"))->status.fence_required);
  // Counted once the pass that wrote them returned.
  EXPECT_TRUE(WaitFor(
      [&] {
        return scrape(revocations) >= revocations0 + 1 &&
               scrape(fences) >= fences0 + 1 &&
               scrape(recalls) >= recalls0 + 1 &&
               scrape("daxlease_operator_leases{state=\"Revoked\"}") >= 1;
      },
      absl::Seconds(10)))
      << "revocations " << scrape(revocations) << " fences " << scrape(fences)
      << " recalls " << scrape(recalls);
  // The waiting lease is granted at the new epoch.
  ASSERT_TRUE(
      WaitFor([&] { return LeaseIs(N("d"), api::LeaseState::kGranted); },
              absl::Seconds(10)));
  EXPECT_EQ(Lease(N("d"))->status.epoch, epoch0 + 1);

  // Events were recorded for the transitions.
  ASSERT_TRUE(WaitFor(
      [&] {
        k8s::testing::Kubectl(
            kubeconfig_,
            absl::StrCat("get events -n default --field-selector "
                         "involvedObject.name=",
                         N("c"), " -o name"),
            &out);
        return out.find("event") != std::string::npos;
      },
      absl::Seconds(10)))
      << out;
}

TEST_F(OperatorK8sTest, OperatorKilledMidRecallIsFinishedByTheNextOne) {
  std::string vol = N("vol");
  auto op = std::make_unique<OperatorProcess>(kubeconfig_, OperatorArgs("op-1"),
                                              prefix_ + "-1");
  CreateVolume(vol);
  for (const char* s : {"a", "b"}) CreateLease(N(s), vol);
  ASSERT_TRUE(WaitFor(
      [&] {
        return LeaseIs(N("a"), api::LeaseState::kGranted) &&
               LeaseIs(N("b"), api::LeaseState::kGranted);
      },
      absl::Seconds(30)))
      << op->Log();
  ASSERT_TRUE(WaitFor([&] { return Volume(vol)->status.holders == 2; },
                      absl::Seconds(10)));
  int64_t epoch0 = Volume(vol)->status.epoch;
  CreateRecall(N("r"), vol, 3);
  ASSERT_TRUE(
      WaitFor([&] { return LeaseIs(N("b"), api::LeaseState::kRecalling); },
              absl::Seconds(10)));
  std::string id = Recall(N("r"))->status.recall_id;
  AgentPatch(N("a"), {{"releasedRecallID", id}});
  ASSERT_TRUE(
      WaitFor([&] { return LeaseIs(N("a"), api::LeaseState::kReleased); },
              absl::Seconds(10)));
  op->Kill(SIGKILL);  // no lease release: the successor waits it out

  // While no operator runs, the deadline passes and b acks late? No: b stays
  // silent; the new operator must revoke it from the stored deadline.
  absl::SleepFor(absl::Seconds(1));
  op = std::make_unique<OperatorProcess>(kubeconfig_, OperatorArgs("op-2"),
                                         prefix_ + "-2");
  ASSERT_TRUE(WaitFor(
      [&] {
        auto l = Lease(N("b"));
        return l && l->status.state == api::LeaseState::kRevoked &&
               l->status.fence_required;
      },
      absl::Seconds(20)))
      << op->Log();
  AgentPatch(N("b"), {{"fencedRecallID", id}});
  ASSERT_TRUE(
      WaitFor([&] { return RecallIs(N("r"), api::RecallPhase::kComplete); },
              absl::Seconds(10)))
      << op->Log();
  ASSERT_TRUE(WaitFor([&] { return Volume(vol)->status.epoch == epoch0 + 1; },
                      absl::Seconds(10)));
  EXPECT_EQ(Recall(N("r"))->status.released, 1);
  EXPECT_EQ(Recall(N("r"))->status.revoked, 1);
}

TEST_F(OperatorK8sTest, TwoOperatorsOnlyOneLeadsStandbyTakesOver) {
  OperatorProcess a(kubeconfig_, OperatorArgs("op-a"), prefix_ + "-a");
  ASSERT_TRUE(WaitFor(
      [&] { return a.Log().find("controller.started") != std::string::npos; },
      absl::Seconds(20)))
      << a.Log();
  OperatorProcess b(kubeconfig_, OperatorArgs("op-b"), prefix_ + "-b");
  auto holder = [&] {
    auto l = client_->Get(k8s::CoordinationLeaseResource(), "default", prefix_);
    if (!l.ok()) return std::string();
    return (*l)["spec"].value("holderIdentity", std::string());
  };
  EXPECT_EQ(holder(), "op-a");
  // The leader acts, the standby does not.
  std::string vol = N("vol");
  CreateVolume(vol);
  CreateLease(N("a"), vol);
  ASSERT_TRUE(
      WaitFor([&] { return LeaseIs(N("a"), api::LeaseState::kGranted); },
              absl::Seconds(10)));
  absl::SleepFor(absl::Seconds(1));
  EXPECT_EQ(b.Log().find("controller.started"), std::string::npos) << b.Log();
  EXPECT_TRUE(b.running());

  a.Kill(SIGKILL);
  ASSERT_TRUE(WaitFor([&] { return holder() == "op-b"; }, absl::Seconds(15)))
      << b.Log();
  ASSERT_TRUE(WaitFor(
      [&] { return b.Log().find("controller.started") != std::string::npos; },
      absl::Seconds(10)))
      << b.Log();
  CreateLease(N("b"), vol);
  EXPECT_TRUE(
      WaitFor([&] { return LeaseIs(N("b"), api::LeaseState::kGranted); },
              absl::Seconds(10)))
      << b.Log();
}

// A DaxMigration deleted mid-copy is not forgotten with its volume stranded
// (Migrating for good): its finalizer keeps it until the volume is back on
// its owner at the next epoch and the target freed its media.
TEST_F(OperatorK8sTest, MigrationDeletedMidCopyRollsBackToTheOwner) {
  OperatorProcess op(kubeconfig_, OperatorArgs("op-a"), prefix_);
  const std::string vol = N("vol");
  const int64_t epoch0 = MigrateThenDeleteMidFlow(
      vol, op, {{"bytesTotal", 1 << 30}, {"bytesCopied", 1 << 20}});
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(Volume(vol)->spec.owner_node, "node-owner");
  // Kept (deleting) until the target says its media is gone.
  auto m = Migration(N("m"));
  ASSERT_TRUE(m.has_value());
  EXPECT_TRUE(m->metadata.deletion_timestamp.has_value());
  EXPECT_EQ(m->status.phase, api::MigrationPhase::kFailed);
  const api::Condition* failed =
      api::FindCondition(m->status.conditions, "Failed");
  ASSERT_NE(failed, nullptr);
  EXPECT_EQ(failed->reason, "Deleted");
  EXPECT_THAT(PluginStatus(vol), ::testing::HasSubstr("Failed (deleting)"));
  ExpectKeptUntilMediaFreed("targetMediaFreed", op);
  ASSERT_FALSE(HasFailure());
  // The holder is granted again at the new epoch (its next generation).
  CreateLease(N("b"), vol);
  EXPECT_TRUE(
      WaitFor([&] { return LeaseIs(N("b"), api::LeaseState::kGranted); },
              absl::Seconds(10)))
      << op.Log();
  EXPECT_EQ(Lease(N("b"))->status.epoch, epoch0 + 1);
}

// Deleted once the copy is verified: the switch is finished (owner
// node-target at the next epoch); it goes once the source freed its media.
TEST_F(OperatorK8sTest, MigrationDeletedWithAVerifiedCopyFinishesTheSwitch) {
  OperatorProcess op(kubeconfig_, OperatorArgs("op-a"), prefix_);
  const std::string vol = N("vol");
  MigrateThenDeleteMidFlow(vol, op,
                           {{"bytesTotal", 1 << 20},
                            {"bytesCopied", 1 << 20},
                            {"sourceChecksum", "sha256:ab"},
                            {"targetChecksum", "sha256:ab"}});
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(Volume(vol)->spec.owner_node, "node-target");
  EXPECT_EQ(Volume(vol)->metadata.annotations[api::kFabricEndpointAnnotation],
            "10.0.0.9:7390");
  ASSERT_TRUE(WaitFor(
      [&] {
        auto m = Migration(N("m"));
        return m && m->status.phase == api::MigrationPhase::kComplete;
      },
      absl::Seconds(10)))
      << op.Log();
  EXPECT_THAT(PluginStatus(vol), ::testing::HasSubstr("Complete (deleting)"));
  ExpectKeptUntilMediaFreed("sourceMediaFreed", op);
}

// A volume ID as long as the CSI driver makes them (57 characters: 40 of the
// name, a dash, 16 hex digits) migrates: `kubectl daxlease migrate` names
// the DaxMigration after the volume (81 characters here), longer than a label
// value may be (63), yet the Migrate recall's migration label is accepted by
// the API server and still names the migration (the recall runs, the
// migration goes on to Copying).
TEST_F(OperatorK8sTest, MigrationOfAVolumeWithALongIdRecallsAndCopies) {
  OperatorProcess op(kubeconfig_, OperatorArgs("op-a"), prefix_);
  std::string vol = N("v");
  vol.resize(40, 'x');
  vol += "-0123456789abcdef";
  ASSERT_EQ(vol.size(), 57u);
  const std::string migration = vol + "-to-node-target-abcd1234";
  MigrateUntilCopying(vol, op, migration);
  ASSERT_FALSE(HasFailure());
  auto m = Migration(migration);
  ASSERT_TRUE(m.has_value());
  auto r = Recall(m->status.recall);
  ASSERT_TRUE(r.has_value());
  const std::string label = r->metadata.labels[api::kMigrationLabel];
  EXPECT_LE(label.size(), 63u) << label;
  EXPECT_EQ(label, api::LabelValueFor(migration));
}

// A DaxVolume made by hand whose name (72 characters) is longer than a label
// value migrates: the Migrate recall's volume label is accepted by the API
// server, stands for the volume, and the volume's label selector lists it.
TEST_F(OperatorK8sTest,
       MigrationOfAHandMadeVolumeWithALongNameRecallsAndCopies) {
  OperatorProcess op(kubeconfig_, OperatorArgs("op-a"), prefix_);
  std::string vol = N("v");
  vol.resize(72, 'x');
  MigrateUntilCopying(vol, op);
  ASSERT_FALSE(HasFailure());
  auto m = Migration(N("m"));
  ASSERT_TRUE(m.has_value());
  auto r = Recall(m->status.recall);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->spec.volume, vol);
  EXPECT_EQ(r->metadata.labels[api::kVolumeLabel], api::LabelValueFor(vol));
  k8s::ListOptions o;
  o.label_selector = api::VolumeLabelSelector(vol);
  auto list = client_->List(api::DaxRecallResource(), "", o);
  ASSERT_TRUE(list.ok()) << list.status();
  ASSERT_EQ(list->items.size(), 1u);
  EXPECT_EQ(k8s::NameOf(list->items[0]), m->status.recall);
}

// Agents acking all at once while the operator writes the same objects: every
// ack survives (the operator's writes are resourceVersion-guarded) and the
// recall completes with every lease Released.
TEST_F(OperatorK8sTest, ConcurrentStatusWritersLoseNoUpdate) {
  OperatorProcess op(kubeconfig_, OperatorArgs("op-a"), prefix_);
  constexpr int kLeases = 20;
  std::string vol = N("vol");
  CreateVolume(vol);
  for (int i = 0; i < kLeases; ++i) CreateLease(N(absl::StrCat("l", i)), vol);
  ASSERT_TRUE(WaitFor(
      [&] {
        auto v = Volume(vol);
        return v && v->status.holders == kLeases;
      },
      absl::Seconds(30)))
      << op.Log();
  CreateRecall(N("r"), vol, 60);
  ASSERT_TRUE(WaitFor(
      [&] {
        auto r = Recall(N("r"));
        return r && r->status.outstanding == kLeases;
      },
      absl::Seconds(20)))
      << op.Log();
  std::string id = Recall(N("r"))->status.recall_id;
  std::vector<std::thread> agents;
  std::atomic<int> failures{0};
  for (int i = 0; i < kLeases; ++i) {
    agents.emplace_back([&, i] {
      auto c = k8s::testing::NewClient(kubeconfig_);
      if (!c.ok()) {
        ++failures;
        return;
      }
      auto st = (*c)->Patch(api::DaxLeaseResource(), "",
                            N(absl::StrCat("l", i)), k8s::PatchType::kMerge,
                            {{"status", {{"releasedRecallID", id}}}}, "status");
      if (!st.ok()) ++failures;
    });
  }
  for (auto& t : agents) t.join();
  EXPECT_EQ(failures.load(), 0);
  ASSERT_TRUE(
      WaitFor([&] { return RecallIs(N("r"), api::RecallPhase::kComplete); },
              absl::Seconds(20)))
      << op.Log();
  EXPECT_EQ(Recall(N("r"))->status.released, kLeases);
  for (int i = 0; i < kLeases; ++i) {
    auto l = Lease(N(absl::StrCat("l", i)));
    ASSERT_TRUE(l.has_value());
    EXPECT_EQ(l->status.state, api::LeaseState::kReleased);
    EXPECT_EQ(l->status.released_recall_id, id);
  }
}

}  // namespace
}  // namespace daxlease::op
