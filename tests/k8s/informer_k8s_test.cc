// Informer against the real kube-apiserver: list + watch, resume, and the
// re-list after a real 410 Gone.
#include <atomic>
#include <mutex>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "lib/k8s/client.h"
#include "lib/k8s/informer.h"
#include "lib/k8s/informer_recorder.h"
#include "tests/k8s/k8s_testing.h"
#include "tests/testing/prereq.h"

namespace daxlease::k8s {
namespace {

// Widgets (a CRD): their watch cache starts when the CRD is created, so a
// watch from resourceVersion "1" is always older than it: a real 410.
const Resource kWidgets = testing::WidgetResource();

Json Item(const std::string& ns, const std::string& name, int v) {
  return testing::Widget(ns, name, v);
}

// Delegates to a real client; the N-th Watch call (1-based) is sent with a
// resourceVersion of "1", older than the server's watch window, so the real
// server answers 410 Gone as it does after a long disconnect.
class ExpiringWatchClient : public ForwardingKubeClient {
 public:
  ExpiringWatchClient(KubeClient& real, int expire_call)
      : ForwardingKubeClient(real), expire_call_(expire_call) {}
  absl::Status Watch(const Resource& r, absl::string_view ns,
                     const WatchOptions& o, const WatchHandler& h,
                     WatchCanceller* cancel) override {
    WatchOptions opts = o;
    int n = ++calls_;
    if (n == expire_call_) opts.resource_version = "1";
    absl::Status s = inner_.Watch(r, ns, opts, h, cancel);
    if (n == expire_call_) {
      std::lock_guard<std::mutex> l(mu_);
      expired_status_ = s.ToString();
    }
    return s;
  }
  // What the expired watch returned ("" until it has): written on the
  // informer's thread, read on the test's.
  std::string ExpiredStatus() {
    std::lock_guard<std::mutex> l(mu_);
    return expired_status_;
  }

 private:
  const int expire_call_;
  std::atomic<int> calls_{0};
  std::mutex mu_;
  std::string expired_status_;  // guarded by mu_
};

class InformerK8sTest : public ::testing::Test {
 protected:
  void SetUp() override {
    DAXLEASE_REQUIRE(!testing::KubeconfigPath().empty(),
                     "DAXLEASE_KUBECONFIG unset: run through ctest -L k8s");
    auto c = testing::NewClient();
    ASSERT_TRUE(c.ok()) << c.status();
    client_ = std::move(*c);
    ASSERT_TRUE(testing::EnsureCrd(*client_, testing::WidgetCrd()).ok());
    auto ns = testing::CreateTestNamespace(*client_, "k8s-informer");
    ASSERT_TRUE(ns.ok()) << ns.status();
    ns_ = *ns;
  }
  InformerOptions Options() {
    InformerOptions o;
    o.resource = kWidgets;
    o.ns = ns_;
    o.page_size = 3;
    return o;
  }
  std::unique_ptr<RestKubeClient> client_;
  std::string ns_;
  // Resync redeliveries are not changes here; the real server may be slow.
  InformerRecorder rec_{/*record_resyncs=*/false, absl::Seconds(20)};
};

TEST_F(InformerK8sTest, ListsWatchesAndSurvivesServerTimeouts) {
  for (int i = 0; i < 7; ++i) {
    ASSERT_TRUE(
        client_->Create(kWidgets, Item(ns_, absl::StrCat("c", i), 1)).ok());
  }
  InformerOptions o = Options();
  o.watch_timeout = absl::Seconds(1);  // the server ends each watch after 1 s
  Informer inf(*client_, base::RealClock(), o);
  inf.AddHandlers(rec_.Handlers());
  inf.Start();
  ASSERT_TRUE(inf.WaitForSync(absl::Seconds(20)));
  EXPECT_EQ(inf.List().size(), 7u);
  absl::SleepFor(absl::Milliseconds(2500));  // let a couple of watches end
  ASSERT_TRUE(client_
                  ->Patch(kWidgets, ns_, "c3", PatchType::kMerge,
                          {{"spec", {{"size", 5}}}})
                  .ok());
  ASSERT_TRUE(client_->Delete(kWidgets, ns_, "c4").ok());
  ASSERT_TRUE(client_->Create(kWidgets, Item(ns_, "new", 1)).ok());
  ASSERT_TRUE(rec_.WaitFor("update c3"));
  ASSERT_TRUE(rec_.WaitFor("delete c4"));
  ASSERT_TRUE(rec_.WaitFor("add new"));
  EXPECT_EQ((*inf.Get(ObjectKey(ns_, "c3")))["spec"]["size"], 5);
  EXPECT_FALSE(inf.Get(ObjectKey(ns_, "c4")).has_value());
  EXPECT_EQ(inf.list_count(), 1);   // resumed, never re-listed
  EXPECT_GE(inf.watch_count(), 3);  // the server ended watches; we re-watched
  inf.Stop();
}

TEST_F(InformerK8sTest, RelistsAfterGoneAndCatchesUp) {
  for (const char* n : {"keep", "gone", "edit"}) {
    ASSERT_TRUE(client_->Create(kWidgets, Item(ns_, n, 1)).ok());
  }
  // The first watch runs 1 s; the second is answered 410 by the server.
  ExpiringWatchClient expiring(*client_, 2);
  InformerOptions o = Options();
  o.watch_timeout = absl::Seconds(1);
  Informer inf(expiring, base::RealClock(), o);
  inf.AddHandlers(rec_.Handlers());
  inf.Start();
  ASSERT_TRUE(inf.WaitForSync(absl::Seconds(20)));
  ASSERT_TRUE(client_->Delete(kWidgets, ns_, "gone").ok());
  ASSERT_TRUE(client_
                  ->Patch(kWidgets, ns_, "edit", PatchType::kMerge,
                          {{"spec", {{"size", 9}}}})
                  .ok());
  ASSERT_TRUE(rec_.WaitFor("delete gone"));
  ASSERT_TRUE(rec_.WaitFor("update edit"));
  for (int i = 0; i < 100 && inf.list_count() < 2; ++i) {
    absl::SleepFor(absl::Milliseconds(100));
  }
  const std::string expired = expiring.ExpiredStatus();
  EXPECT_EQ(inf.list_count(), 2) << expired;
  EXPECT_NE(expired.find("OUT_OF_RANGE"), std::string::npos) << expired;
  // After the re-list it watches again.
  ASSERT_TRUE(client_->Create(kWidgets, Item(ns_, "after", 1)).ok());
  ASSERT_TRUE(rec_.WaitFor("add after"));
  EXPECT_EQ(inf.List().size(), 3u);
  inf.Stop();
}

}  // namespace
}  // namespace daxlease::k8s
