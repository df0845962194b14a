// RestKubeClient against the real kube-apiserver of the k8s fixture.
#include <atomic>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/k8s/client.h"
#include "lib/k8s/config.h"
#include "tests/k8s/k8s_testing.h"
#include "tests/testing/prereq.h"

namespace daxlease::k8s {
namespace {

using ::testing::HasSubstr;

const Resource kWidgets = testing::WidgetResource();
using testing::Widget;
using testing::WidgetCrd;

class ClientK8sTest : public ::testing::Test {
 protected:
  void SetUp() override {
    DAXLEASE_REQUIRE(!testing::KubeconfigPath().empty(),
                     "DAXLEASE_KUBECONFIG unset: run through ctest -L k8s "
                     "(fixture k8s_control_plane_start)");
    auto c = testing::NewClient();
    ASSERT_TRUE(c.ok()) << c.status();
    client_ = std::move(*c);
    ASSERT_TRUE(testing::EnsureCrd(*client_, WidgetCrd()).ok());
    auto ns = testing::CreateTestNamespace(*client_, "k8s-client");
    ASSERT_TRUE(ns.ok()) << ns.status();
    ns_ = *ns;
  }
  std::unique_ptr<RestKubeClient> client_;
  std::string ns_;
};

TEST_F(ClientK8sTest, CrudAndStatusSubresource) {
  absl::StatusOr<Json> created = client_->Create(kWidgets, Widget(ns_, "w", 3));
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ(GenerationOf(*created), 1);
  EXPECT_TRUE(absl::IsAlreadyExists(
      client_->Create(kWidgets, Widget(ns_, "w", 3)).status()));

  // Status through the status subresource only.
  Json s = *created;
  s["status"] = {{"phase", "Ready"}};
  absl::StatusOr<Json> with_status = client_->UpdateStatus(kWidgets, s);
  ASSERT_TRUE(with_status.ok()) << with_status.status();
  EXPECT_EQ((*with_status)["status"]["phase"], "Ready");
  Json u = *with_status;
  u["spec"]["size"] = 4;
  u["status"]["phase"] = "IgnoredByMainResource";
  absl::StatusOr<Json> updated = client_->Update(kWidgets, u);
  ASSERT_TRUE(updated.ok()) << updated.status();
  EXPECT_EQ((*updated)["spec"]["size"], 4);
  EXPECT_EQ((*updated)["status"]["phase"], "Ready");
  EXPECT_EQ(GenerationOf(*updated), 2);

  // Merge patch (status) and JSON patch (spec, guarded by a test op).
  absl::StatusOr<Json> p =
      client_->Patch(kWidgets, ns_, "w", PatchType::kMerge,
                     {{"status", {{"count", 7}}}}, "status");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ((*p)["status"]["count"], 7);
  EXPECT_EQ((*p)["status"]["phase"], "Ready");
  Json jp =
      Json::array({{{"op", "test"}, {"path", "/spec/size"}, {"value", 4}},
                   {{"op", "replace"}, {"path", "/spec/size"}, {"value", 5}}});
  absl::StatusOr<Json> j =
      client_->Patch(kWidgets, ns_, "w", PatchType::kJson, jp);
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_EQ((*j)["spec"]["size"], 5);
  EXPECT_FALSE(client_->Patch(kWidgets, ns_, "w", PatchType::kJson, jp).ok());

  // Server-side validation: 422 -> InvalidArgument with the server's message.
  absl::Status invalid =
      client_->Create(kWidgets, Widget(ns_, "bad", 0)).status();
  EXPECT_EQ(invalid.code(), absl::StatusCode::kInvalidArgument) << invalid;
  EXPECT_THAT(invalid.message(), HasSubstr("spec.size"));

  absl::StatusOr<Json> got = client_->Get(kWidgets, ns_, "w");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ((*got)["spec"]["size"], 5);
  ASSERT_TRUE(client_->Delete(kWidgets, ns_, "w").ok());
  EXPECT_TRUE(absl::IsNotFound(client_->Get(kWidgets, ns_, "w").status()));
  EXPECT_TRUE(absl::IsNotFound(client_->Delete(kWidgets, ns_, "w")));
}

TEST_F(ClientK8sTest, StaleUpdateIsConflict) {
  Json v1 = *client_->Create(kWidgets, Widget(ns_, "c", 1));
  Json a = v1, b = v1;
  a["spec"]["size"] = 2;
  b["spec"]["size"] = 3;
  ASSERT_TRUE(client_->Update(kWidgets, a).ok());
  absl::Status stale = client_->Update(kWidgets, b).status();
  EXPECT_TRUE(IsConflict(stale)) << stale;
  b["status"] = {{"phase", "x"}};
  EXPECT_TRUE(IsConflict(client_->UpdateStatus(kWidgets, b).status()));
  // A merge patch pinned to the old version, and a delete precondition.
  Json pinned = {{"metadata", {{"resourceVersion", ResourceVersionOf(v1)}}},
                 {"spec", {{"size", 9}}}};
  EXPECT_TRUE(IsConflict(
      client_->Patch(kWidgets, ns_, "c", PatchType::kMerge, pinned).status()));
  EXPECT_TRUE(
      IsConflict(client_->Delete(kWidgets, ns_, "c", ResourceVersionOf(v1))));
  EXPECT_EQ((*client_->Get(kWidgets, ns_, "c"))["spec"]["size"], 2);
}

TEST_F(ClientK8sTest, ConcurrentStatusWritersLoseNoUpdate) {
  ASSERT_TRUE(client_->Create(kWidgets, Widget(ns_, "counter", 1)).ok());
  constexpr int kWriters = 4, kEach = 15;
  std::atomic<int> conflicts_seen{0};
  std::vector<std::thread> writers;
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&, w] {
      auto c = testing::NewClient();  // one connection pool per writer
      ASSERT_TRUE(c.ok());
      for (int i = 0; i < kEach; ++i) {
        int attempts = 0;
        absl::StatusOr<Json> r = UpdateWithRetry(
            **c, kWidgets, ns_, "counter",
            [&](Json& o) {
              ++attempts;
              Json& st = o["status"];
              if (!st.is_object()) st = Json::object();
              st["count"] = st.value("count", 0) + 1;
              Json& mine = st["writers"][std::to_string(w)];
              mine = mine.is_number() ? mine.get<int>() + 1 : 1;
              return true;
            },
            /*status=*/true, /*attempts=*/100);
        ASSERT_TRUE(r.ok()) << r.status();
        conflicts_seen += attempts - 1;
      }
    });
  }
  for (auto& t : writers) t.join();
  Json final_obj = *client_->Get(kWidgets, ns_, "counter");
  EXPECT_EQ(final_obj["status"]["count"], kWriters * kEach);
  for (int w = 0; w < kWriters; ++w) {
    EXPECT_EQ(final_obj["status"]["writers"][std::to_string(w)], kEach);
  }
  // The race is real: writers did collide and retry.
  RecordProperty("conflicts", conflicts_seen.load());
  std::cout << "conflicts retried: " << conflicts_seen.load() << "\n";
}

TEST_F(ClientK8sTest, ListPaginationAndSelectors) {
  for (int i = 0; i < 23; ++i) {
    Json w = Widget(ns_, absl::StrCat("p", i), i + 1);
    w["metadata"]["labels"] = {{"parity", i % 2 ? "odd" : "even"}};
    ASSERT_TRUE(client_->Create(kWidgets, w).ok());
  }
  ListOptions page;
  page.limit = 10;
  std::set<std::string> names;
  int pages = 0;
  while (true) {
    absl::StatusOr<ListResult> r = client_->List(kWidgets, ns_, page);
    ASSERT_TRUE(r.ok()) << r.status();
    ++pages;
    EXPECT_LE(r->items.size(), 10u);
    for (const Json& o : r->items) names.insert(NameOf(o));
    if (r->continue_token.empty()) break;
    page.continue_token = r->continue_token;
  }
  EXPECT_EQ(pages, 3);
  EXPECT_EQ(names.size(), 23u);

  ListOptions odd;
  odd.label_selector = "parity=odd";
  odd.limit = 4;
  absl::StatusOr<ListResult> all_odd = ListAll(*client_, kWidgets, ns_, odd);
  ASSERT_TRUE(all_odd.ok()) << all_odd.status();
  EXPECT_EQ(all_odd->items.size(), 11u);
  EXPECT_EQ(all_odd->items[0]["kind"], "Widget");
  ListOptions by_name;
  by_name.field_selector = "metadata.name=p7";
  absl::StatusOr<ListResult> one = client_->List(kWidgets, ns_, by_name);
  ASSERT_TRUE(one.ok()) << one.status();
  ASSERT_EQ(one->items.size(), 1u);
  EXPECT_EQ(one->items[0]["spec"]["size"], 8);
  // Across namespaces (cluster-wide list of a namespaced resource).
  ListOptions sel;
  sel.field_selector = absl::StrCat("metadata.namespace=", ns_);
  EXPECT_EQ(ListAll(*client_, kWidgets, "", sel)->items.size(), 23u);
}

TEST_F(ClientK8sTest, WatchResumesFromLastResourceVersion) {
  ASSERT_TRUE(client_->Create(kWidgets, Widget(ns_, "before", 1)).ok());
  ListResult list = *client_->List(kWidgets, ns_, {});
  ASSERT_TRUE(client_->Create(kWidgets, Widget(ns_, "a", 1)).ok());
  ASSERT_TRUE(client_
                  ->Patch(kWidgets, ns_, "a", PatchType::kMerge,
                          {{"spec", {{"size", 2}}}})
                  .ok());
  std::vector<std::string> seen;
  std::string last_rv;
  WatchOptions wo;
  wo.resource_version = list.resource_version;
  wo.timeout_seconds = 2;
  auto record = [&](const WatchEvent& ev) {
    if (ev.type != WatchEvent::Type::kBookmark) {
      seen.push_back(
          absl::StrCat(WatchEventTypeName(ev.type), " ", NameOf(ev.object)));
    }
    last_rv = ResourceVersionOf(ev.object);
    return true;
  };
  // The server ends the watch after 2 s: OK, and the events so far.
  absl::Status s = client_->Watch(kWidgets, ns_, wo, record);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(seen, (std::vector<std::string>{"ADDED a", "MODIFIED a"}));
  // Changes while nobody watches; resume from the last version seen.
  ASSERT_TRUE(client_->Delete(kWidgets, ns_, "a").ok());
  ASSERT_TRUE(client_->Create(kWidgets, Widget(ns_, "b", 1)).ok());
  seen.clear();
  wo.resource_version = last_rv;
  s = client_->Watch(kWidgets, ns_, wo, [&](const WatchEvent& ev) {
    record(ev);
    return seen.size() < 2;
  });
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(seen, (std::vector<std::string>{"DELETED a", "ADDED b"}));
}

TEST_F(ClientK8sTest, WatchFromTooOldVersionIsGone) {
  ASSERT_TRUE(client_->Create(kWidgets, Widget(ns_, "x", 1)).ok());
  WatchOptions wo;
  wo.resource_version = "1";
  wo.timeout_seconds = 5;
  absl::Status s =
      client_->Watch(kWidgets, ns_, wo, [](const WatchEvent&) { return true; });
  EXPECT_TRUE(IsGone(s)) << s;
}

TEST_F(ClientK8sTest, WatchCancel) {
  WatchCanceller cancel;
  absl::Status s;
  absl::Time start = absl::Now();
  std::thread t([&] {
    WatchOptions wo;
    wo.resource_version = client_->List(kWidgets, ns_, {})->resource_version;
    s = client_->Watch(
        kWidgets, ns_, wo, [](const WatchEvent&) { return true; }, &cancel);
  });
  absl::SleepFor(absl::Milliseconds(300));
  cancel.Cancel();
  t.join();
  EXPECT_TRUE(absl::IsCancelled(s)) << s;
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
}

TEST_F(ClientK8sTest, ClusterScopedAndRbac) {
  // Namespaces are cluster-scoped: get by name, no namespace in the path.
  absl::StatusOr<Json> ns = client_->Get(NamespaceResource(), "", ns_);
  ASSERT_TRUE(ns.ok()) << ns.status();
  EXPECT_EQ(NameOf(*ns), ns_);
  std::string user = testing::UserKubeconfigPath();
  DAXLEASE_REQUIRE(!user.empty(), "DAXLEASE_K8S_USER_KUBECONFIG unset");
  auto unprivileged = testing::NewClient(user);
  ASSERT_TRUE(unprivileged.ok()) << unprivileged.status();
  absl::Status denied = (*unprivileged)->List(kWidgets, ns_, {}).status();
  EXPECT_EQ(denied.code(), absl::StatusCode::kPermissionDenied) << denied;
  EXPECT_THAT(denied.message(), HasSubstr("daxlease-test-user"));
}

TEST_F(ClientK8sTest, TokenAuthenticationFromConfig) {
  absl::StatusOr<KubeConfig> cfg = LoadKubeConfig(testing::KubeconfigPath());
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  // The user kubeconfig authenticates with a bearer token.
  absl::StatusOr<KubeConfig> user =
      LoadKubeConfig(testing::UserKubeconfigPath());
  ASSERT_TRUE(user.ok()) << user.status();
  EXPECT_FALSE(user->token.empty());
  EXPECT_TRUE(user->client_cert_pem.empty());
  EXPECT_FALSE(cfg->client_cert_pem.empty());
  // A wrong CA fails TLS verification: Unavailable, not a crash.
  KubeConfig wrong = *cfg;
  wrong.ca_pem = "not a certificate";
  RetryPolicy once;
  once.max_attempts = 1;
  auto c = RestKubeClient::Create(wrong, once);
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(
      absl::IsUnavailable((*c)->Get(NamespaceResource(), "", ns_).status()));
}

}  // namespace
}  // namespace daxlease::k8s
