#include "node-agent/agent/agent.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/api/conditions.h"
#include "lib/api/json.h"
#include "lib/api/label_value.h"
#include "lib/base/log.h"
#include "lib/base/status.h"
#include "lib/k8s/fake_client.h"
#include "lib/sys/file.h"
#include "node-agent/agent/fake_node_media.h"
#include "node-agent/fabric/fake_fabric.h"
#include "prometheus/registry.h"

namespace daxlease::agent {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// `size` bytes that differ from page to page (`step` spreads them within
// a page), for data a copy must carry byte for byte.
std::string PagePattern(uint64_t size, uint64_t step) {
  std::string pattern(size, '\0');
  for (size_t i = 0; i < pattern.size(); ++i) {
    pattern[i] = static_cast<char>((i * step + i / 4096) & 0xff);
  }
  return pattern;
}

// Polls `pred` every 10 ms until it holds, for up to 30 s of wall time (a
// migration's copy into file media here writes tens of MiB to the disk,
// which a loaded CI machine's other tests share; a count of polls was 5 s
// plus however long the predicates took). Nothing here waits for a
// predicate that must stay false, so the bound only delays a failure.
bool WaitFor(const std::function<bool()>& pred) {
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return pred();
}

// One node that both owns the volume and holds a lease on it; the test
// plays the operator by patching lease status.
class AgentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/agent_test.XXXXXX";
    dir_ = mkdtemp(tmpl);
    ASSERT_TRUE(sys::MakeDirs(dir_ + "/mnt").ok());
    AgentConfig c;
    c.node = "node-a";
    c.state_dir = dir_ + "/state";
    c.socket_path = dir_ + "/agent.sock";
    c.secret = "test-secret";
    c.resync = absl::Milliseconds(20);
    if (channel_) {
      c.channel_report = [this](const chpb::AgentReport& r) {
        std::lock_guard<std::mutex> l(reports_mu_);
        reports_.MergeFrom(r);
        ++report_calls_;
      };
    }
    Configure(c);
    config_ = c;
    agent_ =
        std::make_unique<Agent>(c, kube_, clock_, fabric_, "10.0.0.1:7390");
    ASSERT_TRUE(agent_->Start().ok());
  }
  // A subclass's changes to the agent's configuration (after dir_ exists).
  virtual void Configure(AgentConfig& c) {}
  // A new agent process on the same state and fabric.
  void RestartAgent() {
    agent_.reset();
    agent_ = std::make_unique<Agent>(config_, kube_, clock_, fabric_,
                                     "10.0.0.1:7390");
    ASSERT_TRUE(agent_->Start().ok());
  }
  void TearDown() override {
    agent_.reset();
    kube_.Shutdown();
    std::string cmd = "rm -rf " + dir_;
    ASSERT_EQ(system(cmd.c_str()), 0);
  }

  // Records volume_ (4 MiB) and serves `serve_bytes` of it: `want_served`.
  void RecordAndServe(uint64_t serve_bytes = 2 << 20,
                      uint64_t want_served = 2 << 20) {
    pb::RecordVolumeRequest rec;
    rec.set_volume_id(volume_);
    rec.set_size_bytes(4 << 20);
    rec.set_mode(pb::FSDAX);
    rec.set_fs_type("ext4");
    rec.set_share(true);
    ASSERT_TRUE(agent_->RecordVolume(rec).ok());
    pb::ServeVolumeRequest serve;
    serve.set_volume_id(volume_);
    serve.set_mode(pb::FSDAX);
    serve.set_mount_path(dir_ + "/mnt");
    serve.set_size_bytes(serve_bytes);
    auto r = agent_->ServeVolume(serve);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->served_bytes(), want_served);
    EXPECT_EQ(r->data_path(), dir_ + "/mnt/.daxlease/data");
  }

  std::string PublishPod(const std::string& uid) {
    pb::PublishRequest p;
    p.set_volume_id(volume_);
    p.set_target_path(dir_ + "/target-" + uid);
    p.set_pod_namespace("default");
    p.set_pod_name("pod-" + uid);
    p.set_pod_uid(uid);
    auto r = agent_->Publish(p);
    EXPECT_TRUE(r.ok()) << r.status();
    descriptor_ = k8s::Json::parse(r->descriptor_json());
    return r->lease_name();
  }

  void OperatorSets(const std::string& lease, k8s::Json status) {
    auto r = kube_.Patch(DaxLeaseResource(), "", lease, k8s::PatchType::kMerge,
                         k8s::Json{{"status", status}}, "status");
    ASSERT_TRUE(r.ok()) << r.status();
    agent_->Kick();
  }
  void VolumeEpoch(int64_t epoch) {
    auto r =
        kube_.Patch(DaxVolumeResource(), "", volume_, k8s::PatchType::kMerge,
                    k8s::Json{{"status", {{"epoch", epoch}}}}, "status");
    ASSERT_TRUE(r.ok()) << r.status();
  }
  api::DaxLease Lease(const std::string& name) {
    auto j = kube_.Get(DaxLeaseResource(), "", name);
    EXPECT_TRUE(j.ok());
    return *api::FromJson<api::DaxLease>(*j);
  }
  std::optional<pb::SessionEvent> NextOfKind(Session& s,
                                             pb::SessionEvent::Kind kind) {
    for (int i = 0; i < 50; ++i) {
      auto ev = s.Next(absl::Milliseconds(100));
      if (ev.has_value() && ev->kind() == kind) return ev;
    }
    return std::nullopt;
  }

  // What the agent answered on the recall channel so far (merged), and
  // forgets it.
  chpb::AgentReport TakeReports() {
    std::lock_guard<std::mutex> l(reports_mu_);
    chpb::AgentReport r;
    r.Swap(&reports_);
    return r;
  }

  bool channel_ = false;        // set by a subclass's constructor
  std::string volume_ = "vol";  // what RecordAndServe and PublishPod use
  AgentConfig config_;
  std::mutex reports_mu_;
  chpb::AgentReport reports_;
  int report_calls_ = 0;
  std::string dir_;
  base::FakeClock clock_;
  k8s::FakeKubeClient kube_{clock_};
  fabric::FakeFabric fabric_{"test-secret"};
  std::unique_ptr<Agent> agent_;
  k8s::Json descriptor_;
};

// A fabric that cannot share fsdax (RDMA verbs without on-demand paging):
// a shared fsdax volume is refused at RecordVolume (CreateVolume) with the
// reason; devdax and unshared fsdax are recorded; Status reports it.
TEST_F(AgentTest, SharedFsdaxRefusedWhereTheFabricCannotShareIt) {
  EXPECT_TRUE(agent_->Status().fsdax_sharing());
  fabric_.SetFsdaxRefusal(absl::FailedPreconditionError(
      "RDMA device rxe0 has no on-demand paging (ODP)"));
  pb::RecordVolumeRequest rec;
  rec.set_volume_id("fs-shared");
  rec.set_size_bytes(4 << 20);
  rec.set_mode(pb::FSDAX);
  rec.set_fs_type("ext4");
  rec.set_share(true);
  absl::Status st = agent_->RecordVolume(rec);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  EXPECT_NE(st.message().find("no on-demand paging (ODP)"),
            absl::string_view::npos)
      << st;
  EXPECT_NE(st.message().find("devdax"), absl::string_view::npos) << st;
  EXPECT_FALSE(kube_.Get(DaxVolumeResource(), "", "fs-shared").ok());
  rec.set_share(false);
  EXPECT_TRUE(agent_->RecordVolume(rec).ok());
  rec.set_volume_id("dd-shared");
  rec.set_mode(pb::DEVDAX);
  rec.clear_fs_type();
  rec.set_share(true);
  EXPECT_TRUE(agent_->RecordVolume(rec).ok());
  pb::StatusResponse status = agent_->Status();
  EXPECT_FALSE(status.fsdax_sharing());
  EXPECT_NE(status.fsdax_sharing_refusal().find("ODP"), std::string::npos);
}

TEST_F(AgentTest, RecordCreatesTheVolumeOnceAndRefusesAnotherSpec) {
  RecordAndServe();
  auto v = kube_.Get(DaxVolumeResource(), "", "vol");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ((*v)["spec"]["ownerNode"], "node-a");
  EXPECT_EQ((*v)["metadata"]["annotations"][kFabricEndpointAnnotation],
            "10.0.0.1:7390");
  pb::RecordVolumeRequest other;
  other.set_volume_id("vol");
  other.set_size_bytes(8 << 20);
  other.set_mode(pb::FSDAX);
  EXPECT_EQ(agent_->RecordVolume(other).code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(fabric_.IsRegistered("vol"));
}

// A volume restored from a snapshot of a shared volume arrives with its
// data file: made when the source was, as large as its filesystem had room
// for, less than the capacity the plugin asks to serve. The agent serves
// what the file holds (before, ServeVolume refused: "holds N bytes, fewer
// than" the capacity, and the restored volume never staged).
TEST_F(AgentTest, ServesAnExistingDataFileSmallerThanTheCapacity) {
  ASSERT_TRUE(sys::MakeDirs(dir_ + "/mnt/.daxlease").ok());
  ASSERT_TRUE(sys::Fallocate(dir_ + "/mnt/.daxlease/data", 2 << 20).ok());
  RecordAndServe(/*serve_bytes=*/4 << 20, /*want_served=*/2 << 20);
}

// The plugin asks the owner to serve on every stage and every grow step, and
// ServeVolume is idempotent: agent.serving is logged when the call changed
// what is served (the volume mapped), not on every call.
TEST_F(AgentTest, ServingIsLoggedOnceNotOnEveryIdempotentCall) {
  const std::string log_path = dir_ + "/agent.log";
  const int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  ASSERT_GE(fd, 0);
  base::SetLogFd(fd);
  auto serving_lines = [&] {
    absl::StatusOr<std::string> log = sys::ReadFile(log_path);
    EXPECT_TRUE(log.ok()) << log.status();
    int n = 0;
    for (size_t at = 0; log.ok() && (at = log->find("event=agent.serving ",
                                                    at)) != std::string::npos;
         ++at) {
      ++n;
    }
    return n;
  };
  RecordAndServe();
  pb::ServeVolumeRequest again;
  again.set_volume_id(volume_);
  again.set_mode(pb::FSDAX);
  again.set_mount_path(dir_ + "/mnt");
  again.set_size_bytes(2 << 20);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(agent_->ServeVolume(again).ok());
  const int after_repeats = serving_lines();
  // Stopped, then served again (the grow path's new device): logged again.
  ASSERT_TRUE(agent_->StopServing(volume_).ok());
  ASSERT_TRUE(agent_->ServeVolume(again).ok());
  const int after_reserve = serving_lines();
  base::SetLogFd(2);
  close(fd);
  EXPECT_EQ(after_repeats, 1);
  EXPECT_EQ(after_reserve, 2);
}

TEST_F(AgentTest, GrantRecallAndReleaseReachTheSessionAndTheApi) {
  RecordAndServe();
  std::string lease = PublishPod("u1");
  EXPECT_EQ(descriptor_["lease"], lease);
  EXPECT_EQ(Lease(lease).spec.holder_node, "node-a");

  auto s = agent_->OpenSession(lease, descriptor_["attachToken"]);
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_TRUE(NextOfKind(**s, pb::SessionEvent::PENDING).has_value());

  VolumeEpoch(1);
  OperatorSets(lease, {{"state", "Granted"}, {"epoch", 1}});
  auto granted = NextOfKind(**s, pb::SessionEvent::GRANTED);
  ASSERT_TRUE(granted.has_value());
  EXPECT_EQ(granted->grant().endpoint(), "10.0.0.1:7390");
  EXPECT_EQ(granted->grant().epoch(), 1);
  // The owner granted that key, and the holder's credential opens it.
  fabric::GrantInfo info;
  info.key = {"vol", Lease(lease).metadata.uid, "node-a", 1};
  info.access = fabric::Access::kReadWrite;
  info.credential = granted->grant().credential();
  ASSERT_TRUE(WaitFor([&] { return fabric_.IsLive(info.key); }));
  auto remote = fabric_.connector().Connect(info);
  ASSERT_TRUE(remote.ok()) << remote.status();
  EXPECT_TRUE((*remote)->Write(0, "data").ok());

  OperatorSets(lease, {{"state", "Recalling"}, {"recallID", "r1"}});
  auto recalling = NextOfKind(**s, pb::SessionEvent::RECALLING);
  ASSERT_TRUE(recalling.has_value());
  EXPECT_EQ(recalling->recall_id(), "r1");
  // Not acked yet: the agent does not release for its client.
  EXPECT_EQ(Lease(lease).status.released_recall_id, "");
  EXPECT_EQ(agent_
                ->AckRecall(lease, descriptor_["attachToken"], "other",
                            recalling->session_id())
                .code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(agent_
                  ->AckRecall(lease, descriptor_["attachToken"], "r1",
                              recalling->session_id())
                  .ok());
  EXPECT_EQ(Lease(lease).status.released_recall_id, "r1");

  // Released: the grant is cut, and the agent asks for the next generation.
  OperatorSets(lease, {{"state", "Released"}});
  ASSERT_TRUE(WaitFor([&] { return !fabric_.IsLive(info.key); }));
  ASSERT_TRUE(WaitFor([&] {
    return kube_
        .Get(DaxLeaseResource(), "", lease.substr(0, lease.rfind('-')) + "-2")
        .ok();
  }));
}

TEST_F(AgentTest, RevokedLeaseIsFencedExactlyOnceThenAcknowledged) {
  RecordAndServe();
  std::string lease = PublishPod("u2");
  auto s = agent_->OpenSession(lease, descriptor_["attachToken"]);
  ASSERT_TRUE(s.ok());
  VolumeEpoch(1);
  OperatorSets(lease, {{"state", "Granted"}, {"epoch", 1}});
  fabric::GrantKey key{"vol", Lease(lease).metadata.uid, "node-a", 1};
  ASSERT_TRUE(WaitFor([&] { return fabric_.IsLive(key); }));

  OperatorSets(lease, {{"state", "Revoked"},
                       {"recallID", "r9"},
                       {"fenceRequired", true},
                       {"reason", "DeadlineExceeded"}});
  ASSERT_TRUE(
      WaitFor([&] { return Lease(lease).status.fenced_recall_id == "r9"; }));
  EXPECT_FALSE(fabric_.IsLive(key));
  // More passes do not fence again.
  for (int i = 0; i < 5; ++i) agent_->ReconcileOnce();
  EXPECT_EQ(fabric_.invalidations(), 1);

  auto revoked = NextOfKind(**s, pb::SessionEvent::REVOKED);
  ASSERT_TRUE(revoked.has_value());
  OperatorSets(lease, {{"fenceRequired", false}});
  ASSERT_TRUE(WaitFor([&] {
    return agent_
        ->AckRevocation(lease, descriptor_["attachToken"],
                        revoked->session_id())
        .ok();
  }));
  ASSERT_TRUE(
      WaitFor([&] { return Lease(lease).status.revocation_acknowledged; }));
}

// A Linux lease break makes the owner drop its mapping once the break's
// recall is done (or its grace ran out) and deregister the volume from the
// fabric, which forgets every key it invalidated (the real fabrics do). A
// grant revoked before the break must stay revoked under the new
// registration: the owner cuts it again from the lease objects before it
// grants anything.
TEST_F(AgentTest, RevokedGrantStaysRevokedAcrossALeaseBreak) {
  // The break signal is never raised here (OnLeaseBreak is called), but the
  // lease is taken with it: ignored, so a stray one cannot end the test.
  const int sig = SIGRTMIN + 3;
  struct sigaction ignore = {}, old = {};
  ignore.sa_handler = SIG_IGN;
  ASSERT_EQ(sigaction(sig, &ignore, &old), 0);
  config_.lease_signal = sig;
  RestartAgent();
  RecordAndServe();
  std::string lease = PublishPod("u3");
  VolumeEpoch(1);
  OperatorSets(lease, {{"state", "Granted"}, {"epoch", 1}});
  const fabric::GrantKey key{"vol", Lease(lease).metadata.uid, "node-a", 1};
  ASSERT_TRUE(WaitFor([&] { return fabric_.IsLive(key); }));
  fabric::GrantInfo info;
  info.key = key;
  info.access = fabric::Access::kReadWrite;
  info.credential = fabric::GrantCredential("test-secret", key, info.access);
  // Revoked at the volume's epoch: no epoch floor covers it.
  OperatorSets(lease, {{"state", "Revoked"},
                       {"recallID", "r7"},
                       {"fenceRequired", true},
                       {"reason", "DeadlineExceeded"}});
  ASSERT_TRUE(
      WaitFor([&] { return Lease(lease).status.fenced_recall_id == "r7"; }));
  ASSERT_FALSE(fabric_.IsLive(key));

  // The agent's fd of the data file, as the break signal names it.
  const std::string data = dir_ + "/mnt/.daxlease/data";
  int fd = -1;
  for (int i = 0; i < 1024 && fd < 0; ++i) {
    char target[4096];
    const std::string link = "/proc/self/fd/" + std::to_string(i);
    const ssize_t n = readlink(link.c_str(), target, sizeof(target) - 1);
    if (n > 0 && std::string(target, static_cast<size_t>(n)) == data) fd = i;
  }
  ASSERT_GE(fd, 0) << "no fd of " << data;
  agent_->OnLeaseBreak(fd);
  clock_.Advance(config_.lease_break_grace + absl::Seconds(1));
  agent_->Kick();
  ASSERT_TRUE(WaitFor([&] { return fabric_.registrations("vol") == 2; }));
  for (int i = 0; i < 5; ++i) agent_->ReconcileOnce();
  EXPECT_FALSE(fabric_.IsLive(key));
  auto c = fabric_.connector().Connect(info);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kPermissionDenied)
      << c.status();
  ASSERT_EQ(sigaction(sig, &old, nullptr), 0);
}

// A lease break ends with the owner deregistering the volume, which cuts
// every grant of it. The break's recall moves the volume to the next epoch
// and the holders are granted again there, often before the agent sees the
// recall Complete: a holder that connected at the new epoch was cut by the
// deregistration (its calls failed "revoked" until it was granted again).
// While a break is served, no grant is made; holders are told UNAVAILABLE
// (not granted yet), retry, and connect once the volume is registered again,
// for good.
TEST_F(AgentTest, LeaseBreakDoesNotCutGrantsOfTheNewEpoch) {
  const int sig = SIGRTMIN + 3;
  struct sigaction ignore = {}, old = {};
  ignore.sa_handler = SIG_IGN;
  ASSERT_EQ(sigaction(sig, &ignore, &old), 0);
  config_.lease_signal = sig;
  RestartAgent();
  RecordAndServe();
  std::string lease = PublishPod("u4");
  VolumeEpoch(1);
  OperatorSets(lease, {{"state", "Granted"}, {"epoch", 1}});
  const std::string uid = Lease(lease).metadata.uid;
  ASSERT_TRUE(WaitFor([&] {
    return fabric_.IsLive({"vol", uid, "node-a", 1});
  }));

  const std::string data = dir_ + "/mnt/.daxlease/data";
  int fd = -1;
  for (int i = 0; i < 1024 && fd < 0; ++i) {
    char target[4096];
    const std::string link = "/proc/self/fd/" + std::to_string(i);
    const ssize_t n = readlink(link.c_str(), target, sizeof(target) - 1);
    if (n > 0 && std::string(target, static_cast<size_t>(n)) == data) fd = i;
  }
  ASSERT_GE(fd, 0) << "no fd of " << data;
  agent_->OnLeaseBreak(fd);
  auto recalls = kube_.List(DaxRecallResource(), "", {});
  ASSERT_TRUE(recalls.ok());
  ASSERT_EQ(recalls->items.size(), 1u);
  const std::string recall = k8s::NameOf(recalls->items[0]);

  // The operator's recall: released, and granted again at epoch 2.
  VolumeEpoch(2);
  OperatorSets(lease, {{"state", "Granted"}, {"epoch", 2}});
  const fabric::GrantKey key{"vol", uid, "node-a", 2};
  fabric::GrantInfo info;
  info.key = key;
  info.access = fabric::Access::kReadWrite;
  info.credential = fabric::GrantCredential("test-secret", key, info.access);
  // The holder connects as soon as the owner lets it; until then it is told
  // to retry, never that it was revoked.
  std::unique_ptr<fabric::RemoteRegion> region;
  auto try_connect = [&] {
    auto c = fabric_.connector().Connect(info);
    EXPECT_TRUE(c.ok() || absl::IsUnavailable(c.status())) << c.status();
    if (c.ok()) region = *std::move(c);
    return region != nullptr;
  };
  for (int i = 0; i < 20 && !try_connect(); ++i) {
    agent_->ReconcileOnce();
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }

  // The agent sees the break's recall Complete: the break is done.
  ASSERT_TRUE(
      kube_
          .Patch(DaxRecallResource(), "", recall, k8s::PatchType::kMerge,
                 k8s::Json{{"status", {{"phase", "Complete"}}}}, "status")
          .ok());
  agent_->Kick();
  ASSERT_TRUE(WaitFor([&] { return fabric_.registrations("vol") == 2; }));
  ASSERT_TRUE(WaitFor([&] { return region != nullptr || try_connect(); }));
  for (int i = 0; i < 5; ++i) agent_->ReconcileOnce();
  EXPECT_TRUE(fabric_.IsLive(key));
  absl::Status w = region->Write(0, "after the break");
  EXPECT_TRUE(w.ok()) << w;
  ASSERT_EQ(sigaction(sig, &old, nullptr), 0);
}

// A volume whose name is longer than a label value (a DaxVolume made by
// hand, 72 characters): its lease is labelled with the label value that
// stands for the name, and the volume's label selector lists it.
TEST_F(AgentTest, LeaseOfAVolumeWithALongNameIsLabelledWithALabelValue) {
  volume_ = "hand-made-" + std::string(62, 'v');
  RecordAndServe();
  const std::string lease = PublishPod("u1");
  EXPECT_EQ(Lease(lease).spec.volume, volume_);
  const std::string label = Lease(lease).metadata.labels[api::kVolumeLabel];
  EXPECT_LE(label.size(), 63u);
  EXPECT_EQ(label, api::LabelValueFor(volume_));
  k8s::ListOptions o;
  o.label_selector = api::VolumeLabelSelector(volume_);
  auto list = kube_.List(DaxLeaseResource(), "", o);
  ASSERT_TRUE(list.ok()) << list.status();
  ASSERT_EQ(list->items.size(), 1u);
  EXPECT_EQ(k8s::NameOf(list->items[0]), lease);
}

TEST_F(AgentTest, WrongTokenOrUnknownLeaseIsRefused) {
  RecordAndServe();
  std::string lease = PublishPod("u3");
  EXPECT_EQ(agent_->OpenSession(lease, "00").status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(agent_->OpenSession("dl-nope-1", "00").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(AgentTest, ForgetRefusesWhileALeaseHoldsAccess) {
  RecordAndServe();
  std::string lease = PublishPod("u4");
  VolumeEpoch(1);
  OperatorSets(lease, {{"state", "Granted"}, {"epoch", 1}});
  absl::Status st = agent_->ForgetVolume("vol");
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(st.message(), HasSubstr(lease));
  OperatorSets(lease, {{"state", "Released"}});
  ASSERT_TRUE(agent_->Unpublish("vol", dir_ + "/target-u4").ok());
  // The renewed generation may exist (Pending): it holds nothing.
  EXPECT_TRUE(agent_->ForgetVolume("vol").ok());
  EXPECT_FALSE(kube_.Get(DaxVolumeResource(), "", "vol").ok());
}

TEST_F(AgentTest, RestartRebuildsFromStateAndApi) {
  RecordAndServe();
  std::string lease = PublishPod("u5");
  std::string token = descriptor_["attachToken"];
  VolumeEpoch(1);
  OperatorSets(lease, {{"state", "Granted"}, {"epoch", 1}});
  fabric::GrantKey key{"vol", Lease(lease).metadata.uid, "node-a", 1};
  ASSERT_TRUE(WaitFor([&] { return fabric_.IsLive(key); }));

  agent_.reset();
  fabric::FakeFabric fresh("test-secret");
  AgentConfig c;
  c.node = "node-a";
  c.state_dir = dir_ + "/state";
  c.secret = "test-secret";
  c.resync = absl::Milliseconds(20);
  Agent again(c, kube_, clock_, fresh, "10.0.0.1:7390");
  ASSERT_TRUE(again.Start().ok());
  EXPECT_TRUE(fresh.IsRegistered("vol"));
  EXPECT_TRUE(fresh.IsLive(key));
  auto s = again.OpenSession(lease, token);
  ASSERT_TRUE(s.ok()) << s.status();
  again.Stop();
}

// The same node with the recall channel on: the test plays the operator by
// storing the lease status (as the operator does before it asks) and by
// asking on the channel (OnChannelMessage).
class ChannelAgentTest : public AgentTest {
 protected:
  ChannelAgentTest() { channel_ = true; }

  chpb::OperatorMessage Recall(const std::string& lease, const std::string& id,
                               int64_t epoch) {
    chpb::OperatorMessage m;
    chpb::RecallItem* r = m.add_recalls();
    r->set_lease(lease);
    r->set_volume("vol");
    r->set_recall_id(id);
    r->set_epoch(epoch);
    r->set_deadline_unix_ms(1234567);
    return m;
  }
};

// The recall reaches the session from the channel before the informer shows
// it; the ack goes on the channel once the client acked, never in the
// status; asked again (a new stream), it is answered again at once.
TEST_F(ChannelAgentTest, RecallIsToldAtOnceAndAckedOnTheChannelOnly) {
  RecordAndServe();
  std::string lease = PublishPod("c1");
  auto s = agent_->OpenSession(lease, descriptor_["attachToken"]);
  ASSERT_TRUE(s.ok()) << s.status();
  VolumeEpoch(1);
  OperatorSets(lease, {{"state", "Granted"}, {"epoch", 1}});
  ASSERT_TRUE(NextOfKind(**s, pb::SessionEvent::GRANTED).has_value());

  agent_->OnChannelMessage(Recall(lease, "r1", 1));
  auto recalling = NextOfKind(**s, pb::SessionEvent::RECALLING);
  ASSERT_TRUE(recalling.has_value());
  EXPECT_EQ(recalling->recall_id(), "r1");
  EXPECT_EQ(recalling->deadline_unix_ms(), 1234567);
  agent_->ReconcileOnce();
  EXPECT_EQ(TakeReports().acks_size(), 0);  // the client has not flushed

  ASSERT_TRUE(agent_
                  ->AckRecall(lease, descriptor_["attachToken"], "r1",
                              recalling->session_id())
                  .ok());
  chpb::AgentReport r = TakeReports();
  ASSERT_EQ(r.acks_size(), 1);
  EXPECT_EQ(r.acks(0).lease(), lease);
  EXPECT_EQ(r.acks(0).recall_id(), "r1");
  EXPECT_EQ(r.acks(0).epoch(), 1);
  EXPECT_TRUE(r.acks(0).flushed());
  // Once: more passes do not answer again.
  for (int i = 0; i < 3; ++i) agent_->ReconcileOnce();
  EXPECT_EQ(TakeReports().acks_size(), 0);
  // Asked again (a new leader): answered from the state, at once.
  agent_->OnChannelMessage(Recall(lease, "r1", 1));
  EXPECT_EQ(TakeReports().acks_size(), 1);
  // The operator stores Recalling; the agent writes no status field.
  OperatorSets(lease, {{"state", "Recalling"}, {"recallID", "r1"}});
  for (int i = 0; i < 3; ++i) agent_->ReconcileOnce();
  EXPECT_EQ(Lease(lease).status.released_recall_id, "");
}

// A lease nobody here holds any more (unpublished, an earlier generation)
// has nothing to flush: acked at once, in one report with the others.
TEST_F(ChannelAgentTest, RecallOfALeaseNotHeldHereIsAckedAtOnceInOneReport) {
  chpb::OperatorMessage m = Recall("dl-gone-1", "r2", 3);
  *m.add_recalls() = Recall("dl-gone-2", "r2", 3).recalls(0);
  int calls;
  {
    std::lock_guard<std::mutex> l(reports_mu_);
    calls = report_calls_;
  }
  agent_->OnChannelMessage(m);
  chpb::AgentReport r = TakeReports();
  EXPECT_EQ(r.acks_size(), 2);
  std::lock_guard<std::mutex> l(reports_mu_);
  EXPECT_EQ(report_calls_, calls + 1);
}

// A client attached before a restart has not reconnected yet: the agent
// does not ack for it.
TEST_F(ChannelAgentTest, RecallWaitsForAClientThatWasAttached) {
  RecordAndServe();
  std::string lease = PublishPod("c2");
  std::string token = descriptor_["attachToken"];
  auto s = agent_->OpenSession(lease, token);
  ASSERT_TRUE(s.ok());
  VolumeEpoch(1);
  OperatorSets(lease, {{"state", "Granted"}, {"epoch", 1}});
  RestartAgent();  // the client stays "attached" in the state file
  agent_->OnChannelMessage(Recall(lease, "r3", 1));
  EXPECT_EQ(TakeReports().acks_size(), 0);
  auto again = agent_->OpenSession(lease, token);
  ASSERT_TRUE(again.ok()) << again.status();
  auto ev = NextOfKind(**again, pb::SessionEvent::RECALLING);
  ASSERT_TRUE(ev.has_value());
  ASSERT_TRUE(agent_->AckRecall(lease, token, "r3", ev->session_id()).ok());
  EXPECT_EQ(TakeReports().acks_size(), 1);
}

// The owner cuts the grant when asked, then confirms; the status field is
// not written, and passes do not fence again.
TEST_F(ChannelAgentTest, FenceIsCutThenConfirmedOnTheChannel) {
  RecordAndServe();
  std::string lease = PublishPod("c3");
  VolumeEpoch(1);
  OperatorSets(lease, {{"state", "Granted"}, {"epoch", 1}});
  fabric::GrantKey key{"vol", Lease(lease).metadata.uid, "node-a", 1};
  ASSERT_TRUE(WaitFor([&] { return fabric_.IsLive(key); }));
  OperatorSets(lease, {{"state", "Revoked"},
                       {"recallID", "r4"},
                       {"fenceRequired", true},
                       {"reason", "DeadlineExceeded"}});
  for (int i = 0; i < 3; ++i) agent_->ReconcileOnce();
  EXPECT_EQ(TakeReports().fences_size(), 0);  // not asked: not confirmed

  chpb::OperatorMessage m;
  chpb::FenceItem* f = m.add_fences();
  f->set_lease(lease);
  f->set_volume("vol");
  f->set_recall_id("r4");
  f->set_epoch(1);
  f->set_holder_node("node-a");
  agent_->OnChannelMessage(m);
  EXPECT_FALSE(fabric_.IsLive(key));
  chpb::AgentReport r = TakeReports();
  ASSERT_EQ(r.fences_size(), 1);
  EXPECT_EQ(r.fences(0).lease(), lease);
  EXPECT_EQ(r.fences(0).recall_id(), "r4");
  EXPECT_EQ(r.fences(0).epoch(), 1);
  for (int i = 0; i < 3; ++i) agent_->ReconcileOnce();
  EXPECT_EQ(TakeReports().fences_size(), 0);
  EXPECT_EQ(Lease(lease).status.fenced_recall_id, "");
  EXPECT_EQ(fabric_.invalidations(), 1);
}

// The owner restarts after it fenced a grant on the channel, while the
// lease object still reads Recalling at the volume's epoch (with the
// channel the lease objects lag the recall; the operator does not ask again
// for a fence it stored): the restarted agent, on a fresh fabric, does not
// grant it again, and a holder reconnecting is told it was revoked. Once the
// volume's epoch moves past it, the record goes.
TEST_F(ChannelAgentTest, FencedGrantStaysCutAcrossARestartWhileTheLeaseLags) {
  RecordAndServe();
  std::string lease = PublishPod("c5");
  VolumeEpoch(1);
  OperatorSets(lease,
               {{"state", "Recalling"}, {"epoch", 1}, {"recallID", "r5"}});
  fabric::GrantKey key{"vol", Lease(lease).metadata.uid, "node-a", 1};
  ASSERT_TRUE(WaitFor([&] { return fabric_.IsLive(key); }));
  chpb::OperatorMessage m;
  chpb::FenceItem* f = m.add_fences();
  f->set_lease(lease);
  f->set_volume("vol");
  f->set_recall_id("r5");
  f->set_epoch(1);
  f->set_holder_node("node-a");
  f->set_lease_uid(key.lease_uid);
  agent_->OnChannelMessage(m);
  EXPECT_FALSE(fabric_.IsLive(key));
  ASSERT_EQ(TakeReports().fences_size(), 1);
  auto state = [&] {
    auto s = sys::ReadFile(dir_ + "/state/state.json");
    return s.ok() ? k8s::Json::parse(*s) : k8s::Json::object();
  };
  ASSERT_EQ(state()["fenced"].size(), 1u);
  EXPECT_EQ(state()["fenced"][0]["lease"], lease);

  agent_.reset();
  fabric::FakeFabric fresh("test-secret");
  Agent again(config_, kube_, clock_, fresh, "10.0.0.1:7390");
  ASSERT_TRUE(again.Start().ok());
  EXPECT_TRUE(fresh.IsRegistered("vol"));
  for (int i = 0; i < 3; ++i) again.ReconcileOnce();
  EXPECT_FALSE(fresh.IsLive(key));
  EXPECT_TRUE(absl::IsPermissionDenied(
      fresh.Grant(key, fabric::Access::kReadWrite).status()))
      << "a holder reconnecting with the grant is told it was revoked";
  // Asked again (the confirmation was lost with the old process): confirmed
  // from the state, nothing live to cut.
  again.OnChannelMessage(m);
  EXPECT_EQ(TakeReports().fences_size(), 1);
  EXPECT_EQ(fresh.invalidations(), 0);

  VolumeEpoch(2);  // the recall is Complete
  again.Kick();
  EXPECT_TRUE(WaitFor([&] { return state()["fenced"].empty(); }));
  again.Stop();
}

// The operator asks the owner to fence a lease its own watch has not shown
// it yet (the channel outruns the informer): the fence item names the
// grant, so it is cut and confirmed at once, not on a later pass, and the
// fabric refuses that grant from then on.
TEST_F(ChannelAgentTest, FenceOfALeaseNotSeenYetIsCutAndConfirmedAtOnce) {
  RecordAndServe();
  VolumeEpoch(1);
  chpb::OperatorMessage m;
  chpb::FenceItem* f = m.add_fences();
  f->set_lease("dl-not-seen-1");
  f->set_volume("vol");
  f->set_recall_id("r6");
  f->set_epoch(1);
  f->set_holder_node("node-b");
  f->set_lease_uid("uid-not-seen");
  agent_->OnChannelMessage(m);
  chpb::AgentReport r = TakeReports();
  ASSERT_EQ(r.fences_size(), 1);
  EXPECT_EQ(r.fences(0).lease(), "dl-not-seen-1");
  EXPECT_EQ(r.fences(0).recall_id(), "r6");
  fabric::GrantKey key{"vol", "uid-not-seen", "node-b", 1};
  EXPECT_TRUE(absl::IsPermissionDenied(
      fabric_.Grant(key, fabric::Access::kReadWrite).status()));

  // Without the uid (an operator from before it), a lease that exists is
  // looked up; one that is gone is dropped, not confirmed.
  std::string known = PublishPod("c6");
  chpb::OperatorMessage old;
  chpb::FenceItem* o = old.add_fences();
  o->set_lease(known);
  o->set_volume("vol");
  o->set_recall_id("r7");
  o->set_epoch(1);
  o->set_holder_node("node-a");
  chpb::FenceItem* gone = old.add_fences();
  *gone = *o;
  gone->set_lease("dl-deleted-1");
  agent_->OnChannelMessage(old);
  r = TakeReports();
  ASSERT_EQ(r.fences_size(), 1);
  EXPECT_EQ(r.fences(0).lease(), known);
  for (int i = 0; i < 3; ++i) agent_->ReconcileOnce();
  EXPECT_EQ(TakeReports().fences_size(), 0);
}

// A fenced revoke is told to the session at once; acked on the channel once
// the client saw it, not in the status.
TEST_F(ChannelAgentTest, RevocationIsToldThenAckedOnTheChannel) {
  RecordAndServe();
  std::string lease = PublishPod("c4");
  auto s = agent_->OpenSession(lease, descriptor_["attachToken"]);
  ASSERT_TRUE(s.ok());
  VolumeEpoch(1);
  OperatorSets(lease, {{"state", "Granted"}, {"epoch", 1}});
  ASSERT_TRUE(NextOfKind(**s, pb::SessionEvent::GRANTED).has_value());

  chpb::OperatorMessage m;
  chpb::RevokedItem* v = m.add_revoked();
  v->set_lease(lease);
  v->set_volume("vol");
  v->set_epoch(1);
  v->set_reason("DeadlineExceeded");
  agent_->OnChannelMessage(m);
  auto revoked = NextOfKind(**s, pb::SessionEvent::REVOKED);
  ASSERT_TRUE(revoked.has_value());
  EXPECT_EQ(TakeReports().revocation_acks_size(), 0);
  ASSERT_TRUE(agent_
                  ->AckRevocation(lease, descriptor_["attachToken"],
                                  revoked->session_id())
                  .ok());
  chpb::AgentReport r = TakeReports();
  ASSERT_EQ(r.revocation_acks_size(), 1);
  EXPECT_EQ(r.revocation_acks(0).lease(), lease);
  EXPECT_EQ(r.revocation_acks(0).epoch(), 1);
  OperatorSets(lease, {{"state", "Revoked"}, {"fenceRequired", false}});
  for (int i = 0; i < 3; ++i) agent_->ReconcileOnce();
  EXPECT_FALSE(Lease(lease).status.revocation_acknowledged);
}

// The lease's watch ran ahead of the volume's: the lease is Granted at
// epoch 2 while this agent still sees the volume at epoch 1 on this node. A
// migration switched the owner at epoch 2, so the client is told to wait,
// not to map this node's media (being freed); once the volume at epoch 2 is
// seen, the grant names the new owner's endpoint and no local path.
TEST_F(AgentTest, GrantNewerThanItsViewOfTheVolumeWaitsForIt) {
  RecordAndServe();
  std::string lease = PublishPod("u7");
  auto s = agent_->OpenSession(lease, descriptor_["attachToken"]);
  ASSERT_TRUE(s.ok()) << s.status();
  VolumeEpoch(1);
  OperatorSets(lease, {{"state", "Granted"}, {"epoch", 1}});
  auto local = NextOfKind(**s, pb::SessionEvent::GRANTED);
  ASSERT_TRUE(local.has_value());
  EXPECT_FALSE(local->grant().local_path().empty());

  OperatorSets(lease, {{"state", "Granted"}, {"epoch", 2}});
  auto waiting = NextOfKind(**s, pb::SessionEvent::PENDING);
  ASSERT_TRUE(waiting.has_value());
  EXPECT_THAT(waiting->message(), HasSubstr("epoch 2"));

  ASSERT_TRUE(
      kube_
          .Patch(DaxVolumeResource(), "", "vol", k8s::PatchType::kMerge,
                 k8s::Json{{"metadata",
                            {{"annotations",
                              {{kFabricEndpointAnnotation, "10.0.0.2:7390"}}}}},
                           {"spec", {{"ownerNode", "node-b"}}}})
          .ok());
  VolumeEpoch(2);
  agent_->Kick();
  auto remote = NextOfKind(**s, pb::SessionEvent::GRANTED);
  ASSERT_TRUE(remote.has_value());
  EXPECT_EQ(remote->grant().epoch(), 2);
  EXPECT_EQ(remote->grant().endpoint(), "10.0.0.2:7390");
  EXPECT_EQ(remote->grant().local_path(), "");
}

// Killed between freeing a migrated volume's data and writing its state
// file: restarted, it finds the volume in its state but the owner moved. It
// neither creates the data file again nor offers it on the fabric (the
// migration's reconcile finishes the free).
TEST_F(AgentTest, RestartAfterTheMediaWasMigratedAwayDoesNotRecreateIt) {
  RecordAndServe();
  const std::string data = dir_ + "/mnt/.daxlease/data";
  ASSERT_TRUE(sys::PathExists(data));
  agent_.reset();
  ASSERT_TRUE(sys::RemoveFile(data).ok());
  ASSERT_TRUE(kube_
                  .Patch(DaxVolumeResource(), "", "vol", k8s::PatchType::kMerge,
                         k8s::Json{{"spec", {{"ownerNode", "node-b"}}}})
                  .ok());
  fabric::FakeFabric fresh("test-secret");
  AgentConfig c;
  c.node = "node-a";
  c.state_dir = dir_ + "/state";
  c.secret = "test-secret";
  c.resync = absl::Milliseconds(20);
  Agent again(c, kube_, clock_, fresh, "10.0.0.1:7390");
  ASSERT_TRUE(again.Start().ok());  // maps, then reconciles once
  EXPECT_FALSE(sys::PathExists(data));
  EXPECT_FALSE(fresh.IsRegistered("vol"));
  again.Stop();
}

// The owner of a shared devdax volume whose migration to node-b is
// Complete: the volume's media is a whole device (an ndctl namespace),
// which only the node's CSI plugin frees (NodeMedia). `media` null: the
// agent has no way to free it.
class DevdaxSourceTest : public AgentTest {
 protected:
  void Configure(AgentConfig& c) override {
    ASSERT_TRUE(sys::MakeDirs(dir_ + "/plugin").ok());
    media_ = std::make_unique<FakeNodeMedia>(dir_ + "/plugin");
    if (with_media_) c.node_media = media_.get();
    c.metrics = &metrics_;
  }
  // Bytes node-a (this fixture's agent) hashed as a migration's source.
  double SourceHashedBytes() {
    for (const auto& f : registry_.Collect()) {
      if (f.name == "daxlease_agent_migration_source_hashed_bytes_total" &&
          !f.metric.empty()) {
        return f.metric[0].counter.value;
      }
    }
    return -1;
  }
  prometheus::Registry registry_;
  AgentMetrics metrics_{registry_};
  // The plugin's CreateVolume, the agent's RecordVolume + ServeVolume of
  // the device; then the operator's Complete migration to node-b, the
  // volume owned by node-b at epoch 2.
  // The plugin's CreateVolume of a devdax "vol" of `size` bytes (its device
  // in device_; `patterned`: filled with bytes that differ from page to
  // page), the agent's RecordVolume + ServeVolume of it.
  void ServeDevdax(uint64_t size = 4 << 20, bool patterned = false) {
    auto dev = media_->Create("vol", pb::DEVDAX, size);
    ASSERT_TRUE(dev.ok()) << dev.status();
    device_ = dev->device;
    if (patterned) {
      ASSERT_TRUE(sys::WriteFileAtomic(device_, PagePattern(size, 7)).ok());
    }
    pb::RecordVolumeRequest rec;
    rec.set_volume_id("vol");
    rec.set_size_bytes(size);
    rec.set_mode(pb::DEVDAX);
    rec.set_share(true);
    ASSERT_TRUE(agent_->RecordVolume(rec).ok());
    pb::ServeVolumeRequest serve;
    serve.set_volume_id("vol");
    serve.set_mode(pb::DEVDAX);
    serve.set_device(device_);
    serve.set_size_bytes(size);
    auto r = agent_->ServeVolume(serve);
    ASSERT_TRUE(r.ok()) << r.status();
  }
  // The configuration of a second agent, node-b (the migration target),
  // whose plugin is `media_b` and which reaches node-a over its fabric.
  AgentConfig NodeBConfig(FakeNodeMedia& media_b) {
    AgentConfig cb = config_;
    cb.node = "node-b";
    cb.state_dir = dir_ + "/state-b";
    cb.socket_path = dir_ + "/agent-b.sock";
    cb.connector = &fabric_.connector();
    cb.node_media = &media_b;
    cb.metrics = nullptr;
    return cb;
  }
  // node-b (NodeBConfig): its plugin under plugin-b, its fabric, its agent.
  struct NodeB {
    explicit NodeB(const std::string& plugin_dir)
        : media(plugin_dir), fabric("test-secret") {}
    FakeNodeMedia media;
    fabric::FakeFabric fabric;
    std::unique_ptr<Agent> agent;
  };
  std::unique_ptr<NodeB> StartNodeB() {
    EXPECT_TRUE(sys::MakeDirs(dir_ + "/plugin-b").ok());
    auto b = std::make_unique<NodeB>(dir_ + "/plugin-b");
    b->agent = std::make_unique<Agent>(NodeBConfig(b->media), kube_, clock_,
                                       b->fabric, "10.0.0.2:7390");
    EXPECT_TRUE(b->agent->Start().ok());
    return b;
  }
  // The DaxMigration "m1" of "vol" to node-b.
  void CreateMigrationM1() {
    api::DaxMigration m;
    m.metadata.name = "m1";
    m.metadata.uid = "m1-uid";
    m.spec.volume = "vol";
    m.spec.target_node = "node-b";
    ASSERT_TRUE(kube_.Create(DaxMigrationResource(), api::ToJson(m)).ok());
  }
  // The operator's write of m1's `phase` (from node-a, at epoch 1); kicks
  // node-a's agent and `node_b`'s.
  void SetMigrationPhase(const char* phase, NodeB* node_b = nullptr) {
    ASSERT_TRUE(kube_
                    .Patch(DaxMigrationResource(), "", "m1",
                           k8s::PatchType::kMerge,
                           k8s::Json{{"status",
                                      {{"phase", phase},
                                       {"sourceNode", "node-a"},
                                       {"epoch", 1}}}},
                           "status")
                    .ok());
    agent_->Kick();
    if (node_b != nullptr) node_b->agent->Kick();
  }
  // Waits for both of m1's checksums: equal, every one of `size` bytes
  // copied.
  // A holder's write of `n` bytes 'Z' at `offset` of `path` (the owner's
  // device or data file), through the page cache the owner's mapping shares.
  void HolderWrites(const std::string& path, uint64_t offset, size_t n) {
    const int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0) << path;
    const std::string change(n, 'Z');
    EXPECT_EQ(
        pwrite(fd, change.data(), change.size(), static_cast<off_t>(offset)),
        static_cast<ssize_t>(change.size()));
    close(fd);
  }
  void ExpectCopyVerified(uint64_t size) {
    ASSERT_TRUE(WaitFor([&] {
      k8s::Json st = MigrationStatus();
      return !st.value("targetChecksum", "").empty() &&
             !st.value("sourceChecksum", "").empty();
    })) << MigrationStatus().dump();
    EXPECT_EQ(MigrationStatus()["targetChecksum"],
              MigrationStatus()["sourceChecksum"]);
    EXPECT_EQ(MigrationStatus().value("bytesCopied", uint64_t{0}), size);
  }
  // m1's status as stored ({} when gone).
  k8s::Json MigrationStatus() {
    auto j = kube_.Get(DaxMigrationResource(), "", "m1");
    return j.ok() ? (*j)["status"] : k8s::Json::object();
  }
  void ServeThenMigrateAway() {
    ServeDevdax();
    ASSERT_TRUE(fabric_.IsRegistered("vol"));
    api::DaxMigration m;
    m.metadata.name = "m1";
    m.spec.volume = "vol";
    m.spec.target_node = "node-b";
    ASSERT_TRUE(kube_.Create(DaxMigrationResource(), api::ToJson(m)).ok());
    ASSERT_TRUE(kube_
                    .Patch(DaxMigrationResource(), "", "m1",
                           k8s::PatchType::kMerge,
                           k8s::Json{{"status",
                                      {{"phase", "Complete"},
                                       {"sourceNode", "node-a"},
                                       {"epoch", 1},
                                       {"bytesTotal", 4 << 20},
                                       {"bytesCopied", 4 << 20}}}},
                           "status")
                    .ok());
    ASSERT_TRUE(kube_
                    .Patch(DaxVolumeResource(), "", "vol",
                           k8s::PatchType::kMerge,
                           k8s::Json{{"spec", {{"ownerNode", "node-b"}}}})
                    .ok());
    VolumeEpoch(2);
    agent_->Kick();
  }
  bool SourceMediaFreed() {
    auto j = kube_.Get(DaxMigrationResource(), "", "m1");
    return j.ok() && (*j)["status"].value("sourceMediaFreed", false);
  }
  // Condition `type` of DaxMigration `name` as stored (nullopt: none).
  std::optional<api::Condition> MigrationCondition(
      const std::string& type, const std::string& name = "m1") {
    auto j = kube_.Get(DaxMigrationResource(), "", name);
    if (!j.ok()) return std::nullopt;
    auto m = api::FromJson<api::DaxMigration>(*j);
    if (!m.ok()) return std::nullopt;
    const api::Condition* c = api::FindCondition(m->status.conditions, type);
    if (c == nullptr) return std::nullopt;
    return *c;
  }
  // The stored condition `type` of `name` is False, FreeFailed, at refusal
  // `attempt`.
  bool RefusedAt(int attempt, const std::string& type,
                 const std::string& name = "m1") {
    auto c = MigrationCondition(type, name);
    return c.has_value() && c->status == api::ConditionStatus::kFalse &&
           c->reason == api::kMediaFreeFailedReason &&
           absl::StrContains(c->message,
                             absl::StrCat("(attempt ", attempt, ")"));
  }
  // A few more passes after `pred` held.
  void Settle(const std::function<bool()>& pred) {
    ASSERT_TRUE(WaitFor(pred));
    for (int i = 0; i < 5; ++i) agent_->ReconcileOnce();
  }

  bool with_media_ = true;
  std::unique_ptr<FakeNodeMedia> media_;
  std::string device_;
};

// After the verified switch the old namespace is freed through the plugin,
// and only then is sourceMediaFreed written (before, the agent unmapped the
// device and wrote sourceMediaFreed: true while the namespace stayed
// allocated).
TEST_F(DevdaxSourceTest, OldDeviceIsFreedThroughThePluginThenReported) {
  ServeThenMigrateAway();
  ASSERT_TRUE(WaitFor([&] { return SourceMediaFreed(); }));
  EXPECT_EQ(media_->free_calls(), 1);
  EXPECT_TRUE(media_->Volumes().empty());
  EXPECT_FALSE(sys::PathExists(device_));
  EXPECT_FALSE(fabric_.IsRegistered("vol"));
  // Nothing is served any more, nothing freed twice.
  RestartAgent();
  agent_->ReconcileOnce();
  EXPECT_EQ(media_->free_calls(), 1);
  EXPECT_FALSE(fabric_.IsRegistered("vol"));
}

// The plugin refuses (the device still open somewhere) or is down, and the
// agent is killed meanwhile: sourceMediaFreed stays false, the restarted
// agent neither maps nor serves the old device, and frees it once the
// plugin can.
TEST_F(DevdaxSourceTest, FreeIsRetriedAcrossARestartAndReportedOnlyOnceDone) {
  media_->SetFreeError(absl::FailedPreconditionError("/dev/dax0.1 is open"));
  ServeThenMigrateAway();
  Settle([&] { return media_->free_calls() >= 1; });
  EXPECT_FALSE(SourceMediaFreed());
  EXPECT_TRUE(sys::PathExists(device_));
  EXPECT_FALSE(fabric_.IsRegistered("vol"));
  RestartAgent();
  Settle([&] { return media_->free_calls() >= 2; });
  EXPECT_FALSE(SourceMediaFreed());
  EXPECT_FALSE(fabric_.IsRegistered("vol"));
  media_->SetFreeError(absl::OkStatus());
  // The refusal's wait, however late the free's job recorded the refusal
  // (free_calls counts the call before its refusal is recorded, and the
  // wait starts then: one Advance made before it never came due).
  ASSERT_TRUE(WaitFor([&] {
    clock_.Advance(absl::Seconds(1));
    agent_->Kick();
    return SourceMediaFreed();
  }));
  EXPECT_FALSE(sys::PathExists(device_));
}

TEST(MediaFreeRetryDelayTest, DoublesFromOneSecondUpToTheMaximumForGood) {
  const absl::Duration max = absl::Minutes(5);
  EXPECT_EQ(MediaFreeRetryDelay(1, max), absl::Seconds(1));
  EXPECT_EQ(MediaFreeRetryDelay(2, max), absl::Seconds(2));
  EXPECT_EQ(MediaFreeRetryDelay(3, max), absl::Seconds(4));
  EXPECT_EQ(MediaFreeRetryDelay(9, max), absl::Seconds(256));
  EXPECT_EQ(MediaFreeRetryDelay(10, max), max);
  EXPECT_EQ(MediaFreeRetryDelay(1'000'000, max), max);
  EXPECT_EQ(MediaFreeRetryDelay(1, absl::Milliseconds(300)),
            absl::Milliseconds(300));
}

class DevdaxSourceBackoffTest : public DevdaxSourceTest {
 protected:
  void Configure(AgentConfig& c) override {
    DevdaxSourceTest::Configure(c);
    c.media_free_retry_max = absl::Seconds(8);
  }
};

// A plugin that keeps refusing FreeMedia (the device still open) is asked
// again after 1 s, 2 s, 4 s, then every 8 s (--media-free-retry-max), on
// the agent's clock; no pass in between asks (before, every refusal's job
// asked for a pass, which asked again at once: a busy loop without bound).
// The migration's SourceMediaFreed condition says each refusal with the
// plugin's error and the attempt, and turns True once freed.
TEST_F(DevdaxSourceBackoffTest, RefusedFreeIsAskedAgainAfterADoublingWait) {
  media_->SetFreeError(absl::FailedPreconditionError("/dev/dax0.1 is open"));
  ServeThenMigrateAway();
  ASSERT_TRUE(WaitFor([&] { return media_->free_calls() >= 1; }));
  // Passes run every 20 ms and on every event; the clock stands still.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_EQ(media_->free_calls(), 1) << "asked again without waiting";
  ASSERT_TRUE(
      WaitFor([&] { return RefusedAt(1, api::kSourceMediaFreedCondition); }));
  auto c = MigrationCondition(api::kSourceMediaFreedCondition);
  EXPECT_THAT(c->message, HasSubstr("/dev/dax0.1 is open"));
  EXPECT_THAT(c->message, HasSubstr("node-a"));
  EXPECT_FALSE(SourceMediaFreed());
  // The operator's conditions stay beside it.
  {
    auto j = kube_.Get(DaxMigrationResource(), "", "m1");
    ASSERT_TRUE(j.ok());
    auto m = api::FromJson<api::DaxMigration>(*j);
    ASSERT_TRUE(m.ok());
    std::vector<api::Condition> cs = m->status.conditions;
    api::SetCondition(
        cs, {api::kMigrationSucceededCondition, api::ConditionStatus::kTrue, 1,
             clock_.Now(), "Moved", "moved to node-b"});
    k8s::Json list = k8s::Json::array();
    for (const auto& x : cs) list.push_back(api::ToJson(x));
    ASSERT_TRUE(
        kube_
            .Patch(DaxMigrationResource(), "", "m1", k8s::PatchType::kMerge,
                   k8s::Json{{"status", {{"conditions", list}}}}, "status")
            .ok());
  }

  // The waits: 1 s after the first refusal, then 2, 4, 8, 8.
  int calls = 1;
  for (absl::Duration wait :
       {absl::Seconds(1), absl::Seconds(2), absl::Seconds(4), absl::Seconds(8),
        absl::Seconds(8)}) {
    clock_.Advance(wait - absl::Milliseconds(1));
    agent_->Kick();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    EXPECT_EQ(media_->free_calls(), calls) << "asked before " << wait;
    clock_.Advance(absl::Milliseconds(1));
    ++calls;
    ASSERT_TRUE(WaitFor([&] { return media_->free_calls() == calls; }))
        << "not asked again after " << wait;
    ASSERT_TRUE(WaitFor([&] {
      return RefusedAt(calls, api::kSourceMediaFreedCondition);
    })) << "attempt "
        << calls << " not told";
  }
  EXPECT_FALSE(SourceMediaFreed());
  EXPECT_TRUE(sys::PathExists(device_));
  auto succeeded = MigrationCondition(api::kMigrationSucceededCondition);
  ASSERT_TRUE(succeeded.has_value());
  EXPECT_EQ(succeeded->reason, "Moved");

  // The device is closed: the next ask frees it, and it is told.
  media_->SetFreeError(absl::OkStatus());
  clock_.Advance(absl::Seconds(8));
  ASSERT_TRUE(WaitFor([&] { return SourceMediaFreed(); }));
  ASSERT_TRUE(WaitFor([&] {
    auto c = MigrationCondition(api::kSourceMediaFreedCondition);
    return c.has_value() && c->status == api::ConditionStatus::kTrue;
  }));
  c = MigrationCondition(api::kSourceMediaFreedCondition);
  EXPECT_EQ(c->reason, api::kMediaFreedReason);
  EXPECT_THAT(c->message, HasSubstr("after 6 refused attempts"));
  EXPECT_EQ(media_->free_calls(), 7);
  EXPECT_FALSE(sys::PathExists(device_));
  EXPECT_TRUE(MigrationCondition(api::kMigrationSucceededCondition));
}

// A free that succeeds at once is told too: SourceMediaFreed True, Freed.
TEST_F(DevdaxSourceTest, FreedMediaIsToldOnTheCondition) {
  ServeThenMigrateAway();
  ASSERT_TRUE(WaitFor([&] {
    auto c = MigrationCondition(api::kSourceMediaFreedCondition);
    return c.has_value() && c->status == api::ConditionStatus::kTrue;
  }));
  EXPECT_EQ(MigrationCondition(api::kSourceMediaFreedCondition)->reason,
            api::kMediaFreedReason);
  EXPECT_TRUE(SourceMediaFreed());
  EXPECT_FALSE(MigrationCondition(api::kTargetMediaFreedCondition));
}

// The pre-copy (phase PreCopying, the volume still Ready) reads every
// chunk; a holder then changes one chunk on the source; inside the pause
// (Copying) the target asks the source's chunk digests over the fabric and
// reads that chunk only. Its checksum (the kept digests and the new one)
// matches the source's, and the device holds the source's bytes.
TEST_F(DevdaxSourceTest, PreCopyThenThePauseReadsOnlyTheChangedChunk) {
  const uint64_t size = 2 * kChecksumChunk + (4 << 20);  // 3 chunks
  ServeDevdax(size, /*patterned=*/true);
  VolumeEpoch(1);

  std::unique_ptr<NodeB> b = StartNodeB();
  FakeNodeMedia& media_b = b->media;
  auto status = [&] { return MigrationStatus(); };
  auto phase = [&](const char* p) { SetMigrationPhase(p, b.get()); };
  CreateMigrationM1();
  phase("PreCopying");
  ASSERT_TRUE(WaitFor([&] {
    return status().value("preCopiedBytes", uint64_t{0}) == size;
  })) << status().dump();
  EXPECT_EQ(status().value("bytesTotal", uint64_t{0}), size);
  EXPECT_EQ(status().value("targetChecksum", ""), "");
  EXPECT_EQ(status().value("sourceChecksum", ""), "")
      << "the source sums inside the pause only";
  EXPECT_EQ(fabric_.read_bytes(), size);
  EXPECT_EQ(fabric_.digest_calls(), 1)
      << "the pre-copy asks once (the first chunk) whether the source can "
         "tell later which chunks changed";

  // A holder writes into chunk 1 after the pre-copy (through the owner's
  // shared mapping of the device, as a local client does).
  HolderWrites(device_, kChecksumChunk + 4096, 1000);
  phase("Copying");
  ExpectCopyVerified(size);
  EXPECT_EQ(status().value("refetchedBytes", uint64_t{0}), kChecksumChunk);
  EXPECT_EQ(status().value("targetFailure", ""), "");
  EXPECT_EQ(fabric_.digest_calls(), 2);
  EXPECT_EQ(fabric_.read_bytes(), size + kChecksumChunk)
      << "the unchanged chunks are not read again";
  ASSERT_EQ(media_b.Volumes().size(), 1u);
  EXPECT_EQ(*sys::ReadFile(media_b.Volumes().at("vol")),
            *sys::ReadFile(device_));
  b->agent->Stop();
}

// Inside the pause the source hashes its data once: its checksum and the
// target's DIGESTS over the migration's grant take the same digests
// (daxlease_agent_migration_source_hashed_bytes_total counts the volume
// once). Before the pause (PreCopying) nothing is kept: a DIGESTS then is
// hashed afresh and sees a later change.
TEST_F(DevdaxSourceTest, ThePauseHashesTheSourceOnceForItsChecksumAndDigests) {
  const uint64_t size = 2 * kChecksumChunk + (4 << 20);  // 3 chunks
  ServeDevdax(size, /*patterned=*/true);
  VolumeEpoch(1);
  CreateMigrationM1();
  auto phase = [&](const char* p) { SetMigrationPhase(p); };
  auto status = [&] { return MigrationStatus(); };
  // The target, as node-b's agent connects: the migration's read-only grant.
  auto created = kube_.Get(DaxMigrationResource(), "", "m1");
  ASSERT_TRUE(created.ok()) << created.status();
  const fabric::GrantKey key{
      "vol",
      absl::StrCat("migration/", (*created)["metadata"].value("uid", "")),
      "node-b", 1};
  fabric::GrantInfo info;
  info.key = key;
  info.access = fabric::Access::kReadOnly;
  info.credential = fabric::GrantCredential("test-secret", key, info.access);
  auto connect = [&] {
    std::unique_ptr<fabric::RemoteRegion> r;
    EXPECT_TRUE(WaitFor([&] {
      auto c = fabric_.connector().Connect(info);
      if (c.ok()) r = *std::move(c);
      return r != nullptr;
    }));
    return r;
  };

  phase("PreCopying");
  std::unique_ptr<fabric::RemoteRegion> target = connect();
  ASSERT_NE(target, nullptr);
  auto before = target->Digests(0, size, kChecksumChunk);
  ASSERT_TRUE(before.ok()) << before.status();
  EXPECT_EQ(SourceHashedBytes(), static_cast<double>(size));
  HolderWrites(device_, kChecksumChunk, 1);

  phase("Copying");
  ASSERT_TRUE(WaitFor([&] {
    return !status().value("sourceChecksum", "").empty();
  })) << status().dump();
  EXPECT_EQ(SourceHashedBytes(), static_cast<double>(2 * size));
  auto in_pause = target->Digests(0, size, kChecksumChunk);
  ASSERT_TRUE(in_pause.ok()) << in_pause.status();
  EXPECT_EQ(SourceHashedBytes(), static_cast<double>(2 * size))
      << "the DIGESTS in the pause took the checksum's digests";
  EXPECT_EQ(*ChecksumOfDigests(size, *in_pause),
            status().value("sourceChecksum", ""));
  EXPECT_EQ(in_pause->substr(0, 16), before->substr(0, 16));
  EXPECT_NE(in_pause->substr(16, 16), before->substr(16, 16))
      << "the change after the pre-copy's DIGESTS shows";
  auto file = FileChecksum(device_, size, nullptr);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(status().value("sourceChecksum", ""), *file);
}

// A source whose fabric serves no chunk digests (the verbs fabric before
// DIGESTS: Unimplemented; a source agent of an earlier version closes the
// connection on the request: Unavailable, asked twice) gets no pre-copy:
// the target reports preCopyFailure NoDigests at once, before it makes any
// media or reads a byte (a pre-copy would be read again in full inside the
// pause). The copy inside the pause then reads everything, and matches.
class DevdaxNoDigestsTest
    : public DevdaxSourceTest,
      public ::testing::WithParamInterface<absl::StatusCode> {};

TEST_P(DevdaxNoDigestsTest, PreCopyIsSkippedAtOnceThenThePauseCopiesAll) {
  const uint64_t size = 2 * kChecksumChunk + (4 << 20);  // 3 chunks
  ServeDevdax(size, /*patterned=*/true);
  VolumeEpoch(1);
  fabric_.SetDigestsRefusal(absl::Status(GetParam(), "no digests here"));

  std::unique_ptr<NodeB> b = StartNodeB();
  FakeNodeMedia& media_b = b->media;
  auto status = [&] { return MigrationStatus(); };
  auto phase = [&](const char* p) { SetMigrationPhase(p, b.get()); };
  CreateMigrationM1();
  phase("PreCopying");
  ASSERT_TRUE(WaitFor([&] {
    return !status().value("preCopyFailure", "").empty();
  })) << status().dump();
  const std::string failure = status().value("preCopyFailure", "");
  EXPECT_THAT(failure, StartsWith("NoDigests: "));
  EXPECT_THAT(failure, HasSubstr("serves no chunk digests"));
  EXPECT_THAT(failure, HasSubstr("no digests here"));
  EXPECT_THAT(failure, HasSubstr("copying in full inside the pause"));
  EXPECT_EQ(status().value("preCopiedBytes", uint64_t{0}), 0u);
  EXPECT_EQ(fabric_.read_bytes(), 0u) << "nothing pre-copied";
  EXPECT_EQ(media_b.create_calls(), 0) << "no media made for it";
  EXPECT_TRUE(media_b.Volumes().empty());
  // Not started again while the phase stays PreCopying.
  b->agent->Kick();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(fabric_.read_bytes(), 0u);
  EXPECT_EQ(media_b.create_calls(), 0);

  phase("Copying");
  ExpectCopyVerified(size);
  EXPECT_EQ(status().value("targetFailure", ""), "");
  EXPECT_EQ(fabric_.read_bytes(), size) << "read once, in the pause";
  EXPECT_EQ(fabric_.digest_calls(), 0);
  ASSERT_EQ(media_b.Volumes().size(), 1u);
  EXPECT_EQ(*sys::ReadFile(media_b.Volumes().at("vol")),
            *sys::ReadFile(device_));
  b->agent->Stop();
}

INSTANTIATE_TEST_SUITE_P(
    SourceWithoutDigests, DevdaxNoDigestsTest,
    ::testing::Values(absl::StatusCode::kUnimplemented,
                      absl::StatusCode::kUnavailable),
    [](const ::testing::TestParamInfo<absl::StatusCode>& i) {
      return i.param == absl::StatusCode::kUnimplemented ? "FabricWithout"
                                                         : "EarlierAgent";
    });

// Both sides of a devdax migration in one process (node-a the source, this
// fixture's agent; node-b the target, over node-a's fabric): node-b's agent
// asks its plugin for the namespace (recorded in its state first), copies
// every byte into the device, and its checksum matches node-a's; after the
// switch node-b serves the device it copied into and node-a's plugin frees
// the old one. A second migration that fails leaves no media on node-b.
TEST_F(DevdaxSourceTest, TargetCopiesIntoAPluginMadeDeviceThenServesIt) {
  ServeDevdax(4 << 20, /*patterned=*/true);
  VolumeEpoch(1);

  std::unique_ptr<NodeB> b = StartNodeB();
  FakeNodeMedia& media_b = b->media;
  fabric::FakeFabric& fabric_b = b->fabric;
  std::unique_ptr<Agent>& agent_b = b->agent;

  api::DaxMigration m;
  m.metadata.name = "m1";
  m.spec.volume = "vol";
  m.spec.target_node = "node-b";
  ASSERT_TRUE(kube_.Create(DaxMigrationResource(), api::ToJson(m)).ok());
  ASSERT_TRUE(kube_
                  .Patch(DaxMigrationResource(), "", "m1",
                         k8s::PatchType::kMerge,
                         k8s::Json{{"status",
                                    {{"phase", "Copying"},
                                     {"sourceNode", "node-a"},
                                     {"epoch", 1},
                                     {"bytesTotal", 4 << 20}}}},
                         "status")
                  .ok());
  agent_->Kick();
  agent_b->Kick();
  auto status = [&] {
    auto j = kube_.Get(DaxMigrationResource(), "", "m1");
    return j.ok() ? (*j)["status"] : k8s::Json::object();
  };
  ASSERT_TRUE(WaitFor([&] {
    k8s::Json st = status();
    return !st.value("targetChecksum", "").empty() &&
           !st.value("sourceChecksum", "").empty();
  })) << status().dump();
  EXPECT_EQ(status()["targetChecksum"], status()["sourceChecksum"]);
  EXPECT_EQ(status().value("bytesCopied", 0), 4 << 20);
  EXPECT_EQ(status().value("targetFailure", ""), "");
  ASSERT_EQ(media_b.Volumes().size(), 1u);
  const std::string new_device = media_b.Volumes().at("vol");
  EXPECT_EQ(*sys::ReadFile(new_device), *sys::ReadFile(device_));

  // The switch (the operator's): node-b owns the volume at epoch 2.
  ASSERT_TRUE(
      kube_
          .Patch(DaxMigrationResource(), "", "m1", k8s::PatchType::kMerge,
                 k8s::Json{{"status", {{"phase", "Complete"}}}}, "status")
          .ok());
  ASSERT_TRUE(
      kube_
          .Patch(DaxVolumeResource(), "", "vol", k8s::PatchType::kMerge,
                 k8s::Json{{"metadata",
                            {{"annotations",
                              {{kFabricEndpointAnnotation, "10.0.0.2:7390"}}}}},
                           {"spec", {{"ownerNode", "node-b"}}}})
          .ok());
  VolumeEpoch(2);
  agent_->Kick();
  agent_b->Kick();
  ASSERT_TRUE(WaitFor([&] { return fabric_b.IsRegistered("vol"); }));
  ASSERT_TRUE(WaitFor([&] { return SourceMediaFreed(); }));
  EXPECT_FALSE(sys::PathExists(device_)) << "the old namespace is freed";
  EXPECT_TRUE(sys::PathExists(new_device));
  agent_b->Stop();

  // Restarted, node-b serves the device again (its state names it).
  agent_b = std::make_unique<Agent>(NodeBConfig(media_b), kube_, clock_,
                                    fabric_b, "10.0.0.2:7390");
  ASSERT_TRUE(agent_b->Start().ok());
  EXPECT_TRUE(fabric_b.IsRegistered("vol"));
  EXPECT_EQ(media_b.free_calls(), 0);
  agent_b->Stop();
}

// A devdax migration to a node whose plugin has no room fails with the
// plugin's reason, and one that fails after the media was made frees it.
TEST_F(DevdaxSourceTest, TargetWithoutRoomFailsAndAFailedCopyFreesItsMedia) {
  ServeDevdax();
  VolumeEpoch(1);

  ASSERT_TRUE(sys::MakeDirs(dir_ + "/plugin-b").ok());
  FakeNodeMedia media_b(dir_ + "/plugin-b");
  media_b.SetCreateError(
      absl::ResourceExhaustedError("no region has 6 MiB free"));
  fabric::FakeFabric fabric_b("test-secret");
  AgentConfig cb = NodeBConfig(media_b);
  Agent agent_b(cb, kube_, clock_, fabric_b, "10.0.0.2:7390");
  ASSERT_TRUE(agent_b.Start().ok());
  auto start = [&](const std::string& name) {
    api::DaxMigration m;
    m.metadata.name = name;
    m.spec.volume = "vol";
    m.spec.target_node = "node-b";
    ASSERT_TRUE(kube_.Create(DaxMigrationResource(), api::ToJson(m)).ok());
    ASSERT_TRUE(kube_
                    .Patch(DaxMigrationResource(), "", name,
                           k8s::PatchType::kMerge,
                           k8s::Json{{"status",
                                      {{"phase", "Copying"},
                                       {"sourceNode", "node-a"},
                                       {"epoch", 1},
                                       {"bytesTotal", 4 << 20}}}},
                           "status")
                    .ok());
    agent_->Kick();
    agent_b.Kick();
  };
  auto status = [&](const std::string& name) {
    auto j = kube_.Get(DaxMigrationResource(), "", name);
    return j.ok() ? (*j)["status"] : k8s::Json::object();
  };
  start("m1");
  ASSERT_TRUE(WaitFor(
      [&] { return !status("m1").value("targetFailure", "").empty(); }));
  EXPECT_THAT(status("m1").value("targetFailure", ""),
              HasSubstr("InsufficientCapacity"));
  EXPECT_TRUE(media_b.Volumes().empty());

  // The operator fails the migration; the next one gets media, and fails
  // after the copy (as a checksum mismatch would): the media goes.
  ASSERT_TRUE(kube_
                  .Patch(DaxMigrationResource(), "", "m1",
                         k8s::PatchType::kMerge,
                         k8s::Json{{"status", {{"phase", "Failed"}}}}, "status")
                  .ok());
  media_b.SetCreateError(absl::OkStatus());
  start("m2");
  ASSERT_TRUE(WaitFor(
      [&] { return !status("m2").value("targetChecksum", "").empty(); }));
  EXPECT_EQ(media_b.Volumes().size(), 1u);
  ASSERT_TRUE(kube_
                  .Patch(DaxMigrationResource(), "", "m2",
                         k8s::PatchType::kMerge,
                         k8s::Json{{"status", {{"phase", "Failed"}}}}, "status")
                  .ok());
  agent_b.Kick();
  ASSERT_TRUE(
      WaitFor([&] { return status("m2").value("targetMediaFreed", false); }));
  EXPECT_TRUE(media_b.Volumes().empty());
  EXPECT_FALSE(fabric_b.IsRegistered("vol"));
  agent_b.Stop();
}

// A rolled-back devdax migration whose target plugin refuses to free the
// namespace it made: targetMediaFreed stays false, TargetMediaFreed is
// False (FreeFailed, the plugin's error, the attempt), the free is asked
// again after 1 s and 2 s of the agent's clock, not before; once it
// succeeds the condition turns True and targetMediaFreed is written.
TEST_F(DevdaxSourceTest, TargetMediaFreeRefusedOnRollbackBacksOffAndIsTold) {
  ServeDevdax();
  VolumeEpoch(1);

  ASSERT_TRUE(sys::MakeDirs(dir_ + "/plugin-b").ok());
  FakeNodeMedia media_b(dir_ + "/plugin-b");
  fabric::FakeFabric fabric_b("test-secret");
  AgentConfig cb = NodeBConfig(media_b);
  Agent agent_b(cb, kube_, clock_, fabric_b, "10.0.0.2:7390");
  ASSERT_TRUE(agent_b.Start().ok());
  api::DaxMigration m;
  m.metadata.name = "m1";
  m.spec.volume = "vol";
  m.spec.target_node = "node-b";
  ASSERT_TRUE(kube_.Create(DaxMigrationResource(), api::ToJson(m)).ok());
  auto phase = [&](const std::string& p) {
    ASSERT_TRUE(kube_
                    .Patch(DaxMigrationResource(), "", "m1",
                           k8s::PatchType::kMerge,
                           k8s::Json{{"status",
                                      {{"phase", p},
                                       {"sourceNode", "node-a"},
                                       {"epoch", 1},
                                       {"bytesTotal", 4 << 20}}}},
                           "status")
                    .ok());
    agent_->Kick();
    agent_b.Kick();
  };
  auto status = [&] {
    auto j = kube_.Get(DaxMigrationResource(), "", "m1");
    return j.ok() ? (*j)["status"] : k8s::Json::object();
  };
  phase("Copying");
  ASSERT_TRUE(
      WaitFor([&] { return !status().value("targetChecksum", "").empty(); }));
  ASSERT_EQ(media_b.Volumes().size(), 1u);
  const std::string made = media_b.Volumes().at("vol");

  // Rolled back (a checksum mismatch, say) while the device is still open.
  media_b.SetFreeError(absl::UnavailableError("plugin restarting"));
  phase("Failed");
  ASSERT_TRUE(WaitFor([&] { return media_b.free_calls() >= 1; }));
  ASSERT_TRUE(
      WaitFor([&] { return RefusedAt(1, api::kTargetMediaFreedCondition); }));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(media_b.free_calls(), 1) << "asked again without waiting";
  auto c = MigrationCondition(api::kTargetMediaFreedCondition);
  EXPECT_THAT(c->message, HasSubstr("plugin restarting"));
  EXPECT_THAT(c->message, HasSubstr("node-b"));
  EXPECT_THAT(c->message, HasSubstr(made));
  EXPECT_FALSE(status().value("targetMediaFreed", false));
  EXPECT_FALSE(MigrationCondition(api::kSourceMediaFreedCondition));

  clock_.Advance(absl::Seconds(1));
  ASSERT_TRUE(WaitFor([&] { return media_b.free_calls() == 2; }));
  ASSERT_TRUE(
      WaitFor([&] { return RefusedAt(2, api::kTargetMediaFreedCondition); }));
  clock_.Advance(absl::Milliseconds(1999));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(media_b.free_calls(), 2) << "asked before 2 s";

  media_b.SetFreeError(absl::OkStatus());
  clock_.Advance(absl::Milliseconds(1));
  ASSERT_TRUE(
      WaitFor([&] { return status().value("targetMediaFreed", false); }));
  ASSERT_TRUE(WaitFor([&] {
    auto c = MigrationCondition(api::kTargetMediaFreedCondition);
    return c.has_value() && c->status == api::ConditionStatus::kTrue;
  }));
  EXPECT_EQ(MigrationCondition(api::kTargetMediaFreedCondition)->reason,
            api::kMediaFreedReason);
  EXPECT_TRUE(media_b.Volumes().empty());
  EXPECT_EQ(media_b.free_calls(), 3);
  agent_b.Stop();
}

// How node-b's agent may write a migration's file media.
enum class MediaWrites {
  kDirect,    // O_DIRECT (the test's directory is on a file system that
              // takes it: ext4 on this project's hosts)
  kRefused,   // the open with O_DIRECT fails with EINVAL (tmpfs before
              // Linux 6.6, some FUSE file systems): buffered, logged once
  kDisabled,  // --migration-direct-writes=false: buffered, nothing tried
};

// A shared fsdax volume migrates to node-b, whose media is a file under its
// media directory (not a device): the pre-copy, a holder's change to one
// chunk, then the copy inside the pause. The volume's size is no multiple
// of 4 KiB (the agent serves an existing data file of any size as it is,
// e.g. one restored from a snapshot; the CSI plugin's capacities are whole
// pages), so its last bytes go through the page cache in every mode.
class FileMediaMigrationTest
    : public DevdaxSourceTest,
      public ::testing::WithParamInterface<MediaWrites> {
 protected:
  // node-b's agent, its media opened through the seam that records (and,
  // kRefused, refuses) the direct opens.
  std::unique_ptr<NodeB> StartFileNodeB() {
    EXPECT_TRUE(sys::MakeDirs(dir_ + "/plugin-b").ok());
    auto b = std::make_unique<NodeB>(dir_ + "/plugin-b");
    AgentConfig cb = NodeBConfig(b->media);
    cb.migration_direct_writes = GetParam() != MediaWrites::kDisabled;
    cb.open_media = [this](const std::string& path,
                           int flags) -> absl::StatusOr<sys::UniqueFd> {
      direct_opens_ += (flags & O_DIRECT) != 0 ? 1 : 0;
      if (GetParam() == MediaWrites::kRefused) {
        return base::ErrnoStatus("open", path, EINVAL);
      }
      return sys::OpenFd(path, flags);
    };
    b->agent =
        std::make_unique<Agent>(cb, kube_, clock_, b->fabric, "10.0.0.2:7390");
    EXPECT_TRUE(b->agent->Start().ok());
    return b;
  }
  // The owner's data file of "vol", made here with `size` patterned bytes
  // before the agent serves it (as a restored volume's is).
  std::string ServeFsdax(uint64_t size) {
    const std::string data = dir_ + "/mnt/.daxlease/data";
    EXPECT_TRUE(sys::MakeDirs(dir_ + "/mnt/.daxlease").ok());
    EXPECT_TRUE(sys::WriteFileAtomic(data, PagePattern(size, 13)).ok());
    pb::RecordVolumeRequest rec;
    rec.set_volume_id("vol");
    rec.set_size_bytes(size);
    rec.set_mode(pb::FSDAX);
    rec.set_fs_type("ext4");
    rec.set_share(true);
    EXPECT_TRUE(agent_->RecordVolume(rec).ok());
    pb::ServeVolumeRequest serve;
    serve.set_volume_id("vol");
    serve.set_mode(pb::FSDAX);
    serve.set_mount_path(dir_ + "/mnt");
    serve.set_size_bytes(size);
    auto r = agent_->ServeVolume(serve);
    EXPECT_TRUE(r.ok()) << r.status();
    if (r.ok()) {
      EXPECT_EQ(r->served_bytes(), size);
    }
    return data;
  }
  // Pages of the file at `path` in the page cache (mincore), and all of its
  // pages.
  std::pair<uint64_t, uint64_t> CachedPages(const std::string& path) {
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    EXPECT_GE(fd, 0) << path;
    struct stat st {};
    EXPECT_EQ(fstat(fd, &st), 0);
    const uint64_t size = static_cast<uint64_t>(st.st_size);
    const uint64_t pages = (size + 4095) / 4096;
    void* p = mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    EXPECT_NE(p, MAP_FAILED);
    std::vector<unsigned char> in(pages);
    EXPECT_EQ(mincore(p, size, in.data()), 0);
    munmap(p, size);
    uint64_t cached = 0;
    for (unsigned char c : in) cached += c & 1;
    return {cached, pages};
  }
  std::atomic<int> direct_opens_{0};
};

// The pre-copy and the copy in the pause write node-b's file media direct
// (none of it in the page cache but the last, partial page), or buffered
// where the file system refuses O_DIRECT (logged once for the two opens) or
// direct writes are off; either way the checksums match and the media holds
// the source's bytes, read back through the page cache.
TEST_P(FileMediaMigrationTest, CopiesEveryByteDirectOrBufferedWhereRefused) {
  const uint64_t size = 2 * kChecksumChunk + (4 << 20) + 1000;  // 3 chunks
  ASSERT_NE(size % 4096, 0u);
  const std::string log_path = dir_ + "/agents.log";
  const int log_fd =
      open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  ASSERT_GE(log_fd, 0);
  base::SetLogFd(log_fd);
  absl::Cleanup restore_log = [log_fd] {
    base::SetLogFd(2);
    close(log_fd);
  };
  const std::string source = ServeFsdax(size);
  VolumeEpoch(1);
  std::unique_ptr<NodeB> b = StartFileNodeB();
  auto status = [&] { return MigrationStatus(); };
  auto phase = [&](const char* p) { SetMigrationPhase(p, b.get()); };
  CreateMigrationM1();
  phase("PreCopying");
  ASSERT_TRUE(WaitFor([&] {
    return status().value("preCopiedBytes", uint64_t{0}) == size;
  })) << status().dump();
  const std::string media = dir_ + "/state-b/media/vol/data";
  ASSERT_TRUE(sys::PathExists(media));
  // A holder changes chunk 1 on the source.
  HolderWrites(source, kChecksumChunk + 100, 5000);
  phase("Copying");
  ExpectCopyVerified(size);
  EXPECT_EQ(status().value("targetFailure", ""), "");
  EXPECT_EQ(status().value("refetchedBytes", uint64_t{0}), kChecksumChunk);
  EXPECT_EQ(fabric_.read_bytes(), size + kChecksumChunk);
  ASSERT_TRUE(WaitFor([&] {
    auto log = sys::ReadFile(log_path);
    return log.ok() && absl::StrContains(*log, "event=agent.migration_copied ");
  }));

  const auto [cached, pages] = CachedPages(media);
  if (GetParam() == MediaWrites::kDirect) {
    EXPECT_LE(cached, 1u) << "of " << pages
                          << " pages; direct writes leave none but the "
                             "partial last one in the page cache";
  } else {
    EXPECT_GT(cached, pages / 2) << "buffered writes go through the cache";
  }
  // Read back (through the page cache: after direct writes it reads the
  // storage, and sees what was written).
  auto copied = sys::ReadFile(media);
  ASSERT_TRUE(copied.ok()) << copied.status();
  EXPECT_EQ(copied->size(), size);
  EXPECT_TRUE(*copied == *sys::ReadFile(source))
      << "node-b's media differs from the source";

  auto log = sys::ReadFile(log_path);
  ASSERT_TRUE(log.ok());
  auto count = [&](const std::string& what) {
    int n = 0;
    for (size_t at = 0; (at = log->find(what, at)) != std::string::npos; ++at) {
      ++n;
    }
    return n;
  };
  const char* writes =
      GetParam() == MediaWrites::kDirect ? "writes=direct" : "writes=buffered";
  // The pre-copy's and the copy's lines: their start and their end.
  for (const char* ev :
       {"event=agent.migration_pre_copying ", "event=agent.migration_copying ",
        "event=agent.migration_pre_copied ", "event=agent.migration_copied "}) {
    const size_t at = log->find(ev);
    ASSERT_NE(at, std::string::npos) << ev;
    const std::string line = log->substr(at, log->find('\n', at) - at);
    EXPECT_THAT(line, HasSubstr(writes));
  }
  EXPECT_EQ(direct_opens_.load(), GetParam() == MediaWrites::kDisabled ? 0 : 2);
  EXPECT_EQ(count("event=agent.migration_direct_writes_refused "),
            GetParam() == MediaWrites::kRefused ? 1 : 0);
  b->agent->Stop();
}

// Page cache and direct writes: node-b's media is mapped, and every page of
// it read through that mapping (cached and mapped with the pre-copy's
// bytes), before the copy in the pause writes the chunk a holder changed
// (direct where the mode says); the mapping stays through the copy, as a
// reader's would. Afterwards that same mapping and read(2) see the source's
// bytes: no page cached before a direct write survives it (the kernel
// writes back and drops the range's cached pages, unmapping them, and fails
// loudly in dmesg, "Page cache invalidation failure", only when a page is
// dirtied again meanwhile, which nothing does to a media being copied).
TEST_P(FileMediaMigrationTest, MappingCachedBeforeTheCopySeesWhatItWrote) {
  const uint64_t size = 2 * kChecksumChunk + (4 << 20) + 1000;
  const std::string source = ServeFsdax(size);
  VolumeEpoch(1);
  std::unique_ptr<NodeB> b = StartFileNodeB();
  auto status = [&] { return MigrationStatus(); };
  CreateMigrationM1();
  SetMigrationPhase("PreCopying", b.get());
  ASSERT_TRUE(WaitFor([&] {
    return status().value("preCopiedBytes", uint64_t{0}) == size;
  })) << status().dump();
  const std::string media = dir_ + "/state-b/media/vol/data";
  const int fd = open(media.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0) << media;
  void* p = mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  close(fd);
  ASSERT_NE(p, MAP_FAILED);
  absl::Cleanup unmap = [p, size] { munmap(p, size); };
  const char* view = static_cast<const char*>(p);
  auto pre_copied = sys::ReadFile(source);
  ASSERT_TRUE(pre_copied.ok());
  // Every page faulted in (cached and mapped), holding the pre-copy.
  ASSERT_EQ(std::memcmp(view, pre_copied->data(), size), 0)
      << "the pre-copy's media differs from the source";
  const auto [cached, pages] = CachedPages(media);
  EXPECT_EQ(cached, pages);
  // The holder changes bytes of chunk 1 (the copy in the pause reads the
  // whole chunk again).
  HolderWrites(source, kChecksumChunk + 100, 3 * 4096);
  HolderWrites(source, kChecksumChunk + (1 << 20), 4096);
  SetMigrationPhase("Copying", b.get());
  ExpectCopyVerified(size);
  EXPECT_EQ(status().value("refetchedBytes", uint64_t{0}), kChecksumChunk);
  auto want = sys::ReadFile(source);
  ASSERT_TRUE(want.ok());
  ASSERT_TRUE(*want != *pre_copied);
  // The mapping made before the copy, per 4 KiB page.
  uint64_t stale = 0, first_stale = size;
  for (uint64_t off = 0; off < size; off += 4096) {
    const uint64_t n = std::min<uint64_t>(4096, size - off);
    if (std::memcmp(view + off, want->data() + off, n) != 0) {
      if (stale++ == 0) first_stale = off;
    }
  }
  EXPECT_EQ(stale, 0u) << "pages of the mapping made before the copy still "
                          "show the pre-copy's bytes, the first at "
                       << first_stale;
  auto read_back = sys::ReadFile(media);
  ASSERT_TRUE(read_back.ok());
  EXPECT_TRUE(*read_back == *want) << "read(2) of node-b's media differs";
  b->agent->Stop();
}

INSTANTIATE_TEST_SUITE_P(WriteModes, FileMediaMigrationTest,
                         ::testing::Values(MediaWrites::kDirect,
                                           MediaWrites::kRefused,
                                           MediaWrites::kDisabled),
                         [](const ::testing::TestParamInfo<MediaWrites>& i) {
                           switch (i.param) {
                             case MediaWrites::kDirect:
                               return "Direct";
                             case MediaWrites::kRefused:
                               return "DirectRefusedFallsBackToBuffered";
                             case MediaWrites::kDisabled:
                               return "DirectWritesOff";
                           }
                           return "";
                         });

class DevdaxSourceWithoutPluginTest : public DevdaxSourceTest {
 protected:
  DevdaxSourceWithoutPluginTest() { with_media_ = false; }
};

// An agent that cannot reach its node's plugin (no NodeMedia) unmaps and
// stops serving the old device but does not say it is freed: the
// namespace is still allocated.
TEST_F(DevdaxSourceWithoutPluginTest, NeverReportsAnUnfreedDeviceFreed) {
  ServeThenMigrateAway();
  Settle([&] { return !fabric_.IsRegistered("vol"); });
  EXPECT_FALSE(SourceMediaFreed());
  EXPECT_TRUE(sys::PathExists(device_));
}

// The agent's /metrics with a session gauge that follows the clients.
class AgentMetricsTest : public AgentTest {
 protected:
  void Configure(AgentConfig& c) override {
    c.metrics = &metrics_;
    c.resync = absl::Hours(1);  // no periodic pass hides a stale gauge
  }
  double Gauge(const std::string& name) {
    for (const auto& f : registry_.Collect()) {
      if (f.name == name && !f.metric.empty()) return f.metric[0].gauge.value;
    }
    return -1;
  }
  prometheus::Registry registry_;
  AgentMetrics metrics_{registry_};
};

// A client that attaches is counted by daxlease_agent_sessions at once, and
// uncounted when it detaches, without waiting for the agent's next pass (the
// e2e test read 0 sessions with a client persisting through its grant).
TEST_F(AgentMetricsTest, SessionsGaugeFollowsAttachAndDetachAtOnce) {
  RecordAndServe();
  std::string lease = PublishPod("u1");
  agent_->ReconcileOnce();
  EXPECT_EQ(Gauge("daxlease_agent_publishes"), 1);
  EXPECT_EQ(Gauge("daxlease_agent_sessions"), 0);
  auto s = agent_->OpenSession(lease, descriptor_["attachToken"]);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(Gauge("daxlease_agent_sessions"), 1);
  agent_->CloseSession(*s);
  EXPECT_EQ(Gauge("daxlease_agent_sessions"), 0);
}

}  // namespace
}  // namespace daxlease::agent
