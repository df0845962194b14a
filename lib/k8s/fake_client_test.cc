#include "lib/k8s/fake_client.h"

#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace daxlease::k8s {
namespace {

const Resource kWidgets{"example.com", "v1", "widgets", true};
const Resource kVolumes{"daxlease.io", "v1alpha1", "daxvolumes", false};

Json Widget(const std::string& name, int size) {
  return {{"apiVersion", "example.com/v1"},
          {"kind", "Widget"},
          {"metadata", {{"name", name}, {"namespace", "ns"}}},
          {"spec", {{"size", size}}}};
}

class FakeKubeClientTest : public ::testing::Test {
 protected:
  base::FakeClock clock_;
  FakeKubeClient fake_{clock_};
};

TEST_F(FakeKubeClientTest, CreateAssignsMetadataAndGetReturnsIt) {
  absl::StatusOr<Json> w = fake_.Create(kWidgets, Widget("a", 1));
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_FALSE(ResourceVersionOf(*w).empty());
  EXPECT_FALSE(UidOf(*w).empty());
  EXPECT_EQ(GenerationOf(*w), 1);
  EXPECT_EQ((*w)["metadata"]["creationTimestamp"], "2023-11-14T22:13:20Z");
  absl::StatusOr<Json> got = fake_.Get(kWidgets, "ns", "a");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, *w);
  EXPECT_TRUE(absl::IsNotFound(fake_.Get(kWidgets, "other", "a").status()));
  EXPECT_TRUE(
      absl::IsAlreadyExists(fake_.Create(kWidgets, Widget("a", 2)).status()));
  Json no_ns = Widget("b", 1);
  no_ns["metadata"].erase("namespace");
  EXPECT_EQ(fake_.Create(kWidgets, no_ns).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(FakeKubeClientTest, StaleUpdateConflicts) {
  Json v1 = *fake_.Create(kWidgets, Widget("a", 1));
  Json edit = v1;
  edit["spec"]["size"] = 2;
  absl::StatusOr<Json> v2 = fake_.Update(kWidgets, edit);
  ASSERT_TRUE(v2.ok()) << v2.status();
  EXPECT_GT(std::stoll(ResourceVersionOf(*v2)),
            std::stoll(ResourceVersionOf(v1)));
  EXPECT_EQ(GenerationOf(*v2), 2);
  // Writing from the old copy again: 409.
  edit["spec"]["size"] = 3;
  absl::Status stale = fake_.Update(kWidgets, edit).status();
  EXPECT_TRUE(IsConflict(stale)) << stale;
  EXPECT_THAT(stale.message(), ::testing::HasSubstr("has been modified"));
  // Without a resourceVersion: rejected, not blindly applied.
  edit["metadata"].erase("resourceVersion");
  EXPECT_EQ(fake_.Update(kWidgets, edit).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*fake_.Get(kWidgets, "ns", "a"))["spec"]["size"], 2);
}

TEST_F(FakeKubeClientTest, StatusSubresource) {
  Json w = Widget("a", 1);
  w["status"] = {{"phase", "Ignored on create"}};
  Json v1 = *fake_.Create(kWidgets, w);
  EXPECT_FALSE(v1.contains("status"));
  // Update ignores status; UpdateStatus ignores everything else.
  Json s = v1;
  s["status"] = {{"phase", "Ready"}};
  s["spec"]["size"] = 99;
  Json v2 = *fake_.UpdateStatus(kWidgets, s);
  EXPECT_EQ(v2["status"]["phase"], "Ready");
  EXPECT_EQ(v2["spec"]["size"], 1);
  EXPECT_EQ(GenerationOf(v2), 1);  // status writes do not bump generation
  Json u = v2;
  u["status"]["phase"] = "Hacked";
  u["spec"]["size"] = 5;
  Json v3 = *fake_.Update(kWidgets, u);
  EXPECT_EQ(v3["status"]["phase"], "Ready");
  EXPECT_EQ(v3["spec"]["size"], 5);
  // Stale status write: 409.
  EXPECT_TRUE(IsConflict(fake_.UpdateStatus(kWidgets, s).status()));
  // Merge patch of status.
  Json v4 = *fake_.Patch(kWidgets, "ns", "a", PatchType::kMerge,
                         {{"status", {{"released", 2}}}}, "status");
  EXPECT_EQ(v4["status"]["phase"], "Ready");
  EXPECT_EQ(v4["status"]["released"], 2);
  // Without a status subresource, status is part of the object.
  fake_.SetStatusSubresource(kWidgets, false);
  EXPECT_TRUE(absl::IsNotFound(fake_.UpdateStatus(kWidgets, v4).status()));
  Json plain = v4;
  plain["status"]["phase"] = "Direct";
  EXPECT_EQ((*fake_.Update(kWidgets, plain))["status"]["phase"], "Direct");
}

TEST_F(FakeKubeClientTest, NoOpUpdateKeepsResourceVersion) {
  Json v1 = *fake_.Create(kWidgets, Widget("a", 1));
  Json same = *fake_.Update(kWidgets, v1);
  EXPECT_EQ(ResourceVersionOf(same), ResourceVersionOf(v1));
}

TEST_F(FakeKubeClientTest, PatchesAndOptimisticConcurrency) {
  Json v1 = *fake_.Create(kWidgets, Widget("a", 1));
  Json v2 = *fake_.Patch(kWidgets, "ns", "a", PatchType::kMerge,
                         {{"spec", {{"color", "blue"}}}});
  EXPECT_EQ(v2["spec"]["size"], 1);
  EXPECT_EQ(v2["spec"]["color"], "blue");
  // A merge patch pinned to the old version conflicts.
  Json pinned = {{"metadata", {{"resourceVersion", ResourceVersionOf(v1)}}},
                 {"spec", {{"size", 7}}}};
  EXPECT_TRUE(IsConflict(
      fake_.Patch(kWidgets, "ns", "a", PatchType::kMerge, pinned).status()));
  // JSON patch with a failing test op: 422 (InvalidArgument), nothing written.
  Json jp =
      Json::array({{{"op", "test"}, {"path", "/spec/size"}, {"value", 5}},
                   {{"op", "replace"}, {"path", "/spec/size"}, {"value", 6}}});
  EXPECT_EQ(
      fake_.Patch(kWidgets, "ns", "a", PatchType::kJson, jp).status().code(),
      absl::StatusCode::kInvalidArgument);
  jp[0]["value"] = 1;
  Json v3 = *fake_.Patch(kWidgets, "ns", "a", PatchType::kJson, jp);
  EXPECT_EQ(v3["spec"]["size"], 6);
  EXPECT_TRUE(absl::IsNotFound(
      fake_.Patch(kWidgets, "ns", "zz", PatchType::kMerge, Json::object())
          .status()));
}

TEST_F(FakeKubeClientTest, FinalizersDelayDeletion) {
  Json w = Widget("a", 1);
  w["metadata"]["finalizers"] = {"daxlease.io/lease"};
  Json v1 = *fake_.Create(kWidgets, w);
  ASSERT_TRUE(fake_.Delete(kWidgets, "ns", "a").ok());
  Json v2 = *fake_.Get(kWidgets, "ns", "a");
  EXPECT_TRUE(v2["metadata"].contains("deletionTimestamp"));
  // No new finalizers while deleting.
  Json add = v2;
  add["metadata"]["finalizers"].push_back("another");
  EXPECT_EQ(fake_.Update(kWidgets, add).status().code(),
            absl::StatusCode::kInvalidArgument);
  Json clear = v2;
  clear["metadata"]["finalizers"] = Json::array();
  ASSERT_TRUE(fake_.Update(kWidgets, clear).ok());
  EXPECT_TRUE(absl::IsNotFound(fake_.Get(kWidgets, "ns", "a").status()));
  EXPECT_TRUE(absl::IsNotFound(fake_.Delete(kWidgets, "ns", "a")));
}

TEST_F(FakeKubeClientTest, DeletePrecondition) {
  Json v1 = *fake_.Create(kWidgets, Widget("a", 1));
  ASSERT_TRUE(fake_
                  .Patch(kWidgets, "ns", "a", PatchType::kMerge,
                         {{"spec", {{"size", 2}}}})
                  .ok());
  EXPECT_TRUE(
      IsConflict(fake_.Delete(kWidgets, "ns", "a", ResourceVersionOf(v1))));
  EXPECT_TRUE(fake_.Delete(kWidgets, "ns", "a").ok());
}

TEST_F(FakeKubeClientTest, ClusterScopedAndGenerateName) {
  Json v = {{"metadata", {{"generateName", "vol-"}, {"namespace", "dropped"}}},
            {"spec", {{"sizeBytes", 1}}}};
  Json created = *fake_.Create(kVolumes, v);
  EXPECT_THAT(NameOf(created), ::testing::StartsWith("vol-"));
  EXPECT_EQ(NamespaceOf(created), "");
  EXPECT_TRUE(fake_.Get(kVolumes, "", NameOf(created)).ok());
}

// Names are checked as the API server checks them: a lowercase RFC 1123
// subdomain of at most 253 characters (422, nothing stored); a generated
// name keeps at most 58 characters of its prefix.
TEST_F(FakeKubeClientTest, InvalidNamesAreRefused) {
  for (const std::string& name :
       {std::string("Upper"), std::string("a_b"), std::string("-a"),
        std::string("a-"), std::string("a..b"), std::string("a/b"),
        std::string("../etc"), std::string("a b"), std::string(254, 'a')}) {
    SCOPED_TRACE(name);
    absl::Status created = fake_.Create(kWidgets, Widget(name, 1)).status();
    EXPECT_EQ(created.code(), absl::StatusCode::kInvalidArgument) << created;
    EXPECT_THAT(created.message(), ::testing::HasSubstr("metadata.name"));
  }
  EXPECT_EQ(fake_.WriteCount(), 0);
  for (const std::string& name :
       {std::string("a"), std::string("vol-1.node-2"), std::string(253, 'a')}) {
    EXPECT_TRUE(fake_.Create(kWidgets, Widget(name, 1)).ok()) << name;
  }
  Json v = {{"metadata", {{"generateName", std::string(70, 'g')}}}};
  Json created = *fake_.Create(kVolumes, v);
  EXPECT_EQ(NameOf(created).size(), 63u);
  v["metadata"]["generateName"] = "Vol-";
  EXPECT_EQ(fake_.Create(kVolumes, v).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Labels are checked as the API server checks them (a key a qualified name
// with an optional DNS-subdomain prefix, a value at most 63 characters of
// [-_.A-Za-z0-9] that starts and ends alphanumeric), on every write: a label
// the real server refuses is refused here too (422), not stored.
TEST_F(FakeKubeClientTest, InvalidLabelsAreRefusedOnEveryWrite) {
  const std::string long_value(64, 'a');
  for (const auto& [key, value] :
       std::vector<std::pair<std::string, std::string>>{
           {"daxlease.io/volume", long_value},
           {"app", "-x"},
           {"app", "x-"},
           {"app", "a b"},
           {"app", "x/y"},
           {"Bad_Prefix/app", "x"},
           {"example.com/", "x"},
           {"a/b/c", "x"},
           {std::string(64, 'k'), "x"},
           {"-app", "x"}}) {
    SCOPED_TRACE(key + "=" + value);
    Json w = Widget("w", 1);
    w["metadata"]["labels"] = {{key, value}};
    absl::Status created = fake_.Create(kWidgets, w).status();
    EXPECT_EQ(created.code(), absl::StatusCode::kInvalidArgument) << created;
    EXPECT_THAT(created.message(), ::testing::HasSubstr("metadata.labels"));
  }
  EXPECT_EQ(fake_.WriteCount(), 0);
  Json good = Widget("w", 1);
  good["metadata"]["labels"] = {{"daxlease.io/volume", std::string(63, 'a')},
                                {"app", ""},
                                {"x", "A_b.c-9"}};
  Json v1 = *fake_.Create(kWidgets, good);
  Json edit = v1;
  edit["metadata"]["labels"]["app"] = long_value;
  EXPECT_EQ(fake_.Update(kWidgets, edit).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(fake_
                .Patch(kWidgets, "ns", "w", PatchType::kMerge,
                       {{"metadata", {{"labels", {{"app", "x."}}}}}})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(fake_.Get(kWidgets, "ns", "w")->at("metadata").at("labels"),
            v1["metadata"]["labels"]);
  // A selector naming a value no label may hold is refused too (400).
  ListOptions too_long;
  too_long.label_selector = "daxlease.io/volume=" + long_value;
  EXPECT_EQ(fake_.List(kWidgets, "ns", too_long).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(FakeKubeClientTest, ListSelectorsAndPagination) {
  for (int i = 0; i < 5; ++i) {
    Json w = Widget("w" + std::to_string(i), i);
    w["metadata"]["labels"] = {{"parity", i % 2 ? "odd" : "even"}};
    ASSERT_TRUE(fake_.Create(kWidgets, w).ok());
  }
  ListOptions even;
  even.label_selector = "parity=even";
  EXPECT_EQ(fake_.List(kWidgets, "ns", even)->items.size(), 3u);
  ListOptions by_name;
  by_name.field_selector = "metadata.name=w3";
  EXPECT_EQ(fake_.List(kWidgets, "", by_name)->items.size(), 1u);
  ListOptions bad;
  bad.field_selector = "spec.size=1";
  EXPECT_EQ(fake_.List(kWidgets, "ns", bad).status().code(),
            absl::StatusCode::kInvalidArgument);

  ListOptions page;
  page.limit = 2;
  ListResult p1 = *fake_.List(kWidgets, "ns", page);
  ASSERT_EQ(p1.items.size(), 2u);
  ASSERT_FALSE(p1.continue_token.empty());
  // A write between pages does not change the snapshot.
  ASSERT_TRUE(fake_.Delete(kWidgets, "ns", "w4").ok());
  page.continue_token = p1.continue_token;
  ListResult p2 = *fake_.List(kWidgets, "ns", page);
  page.continue_token = p2.continue_token;
  ListResult p3 = *fake_.List(kWidgets, "ns", page);
  EXPECT_EQ(p2.items.size() + p3.items.size(), 3u);
  EXPECT_TRUE(p3.continue_token.empty());
  EXPECT_EQ(NameOf(p3.items.back()), "w4");
  EXPECT_EQ(p1.resource_version, p3.resource_version);
  // Used or unknown continue tokens: 410.
  EXPECT_TRUE(IsGone(fake_.List(kWidgets, "ns", page).status()));
  page.continue_token = "bogus";
  EXPECT_TRUE(IsGone(fake_.List(kWidgets, "ns", page).status()));
}

TEST_F(FakeKubeClientTest, WatchFromVersionAndCompaction) {
  ASSERT_TRUE(fake_.Create(kWidgets, Widget("a", 1)).ok());
  ListResult list = *fake_.List(kWidgets, "ns", {});
  ASSERT_TRUE(fake_.Create(kWidgets, Widget("b", 1)).ok());
  ASSERT_TRUE(fake_.Delete(kWidgets, "ns", "a").ok());
  std::vector<std::string> seen;
  WatchOptions wo;
  wo.resource_version = list.resource_version;
  absl::Status s = fake_.Watch(kWidgets, "ns", wo, [&](const WatchEvent& ev) {
    seen.push_back(std::string(WatchEventTypeName(ev.type)) + " " +
                   NameOf(ev.object));
    return seen.size() < 2;
  });
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(seen, (std::vector<std::string>{"ADDED b", "DELETED a"}));

  fake_.Compact();
  s = fake_.Watch(kWidgets, "ns", wo, [](const WatchEvent&) { return true; });
  EXPECT_TRUE(IsGone(s)) << s;
}

TEST_F(FakeKubeClientTest, WatchBlocksUntilEventsAndCancel) {
  WatchCanceller cancel;
  std::vector<std::string> seen;
  absl::Notification got;
  absl::Status result;
  WatchOptions wo;
  wo.resource_version = std::to_string(fake_.CurrentResourceVersion());
  std::thread t([&] {
    result = fake_.Watch(
        kWidgets, "ns", wo,
        [&](const WatchEvent& ev) {
          seen.push_back(NameOf(ev.object));
          if (!got.HasBeenNotified()) got.Notify();
          return true;
        },
        &cancel);
  });
  ASSERT_TRUE(fake_.Create(kWidgets, Widget("x", 1)).ok());
  ASSERT_TRUE(got.WaitForNotificationWithTimeout(absl::Seconds(10)));
  cancel.Cancel();
  t.join();
  EXPECT_TRUE(absl::IsCancelled(result)) << result;
  EXPECT_EQ(seen, std::vector<std::string>{"x"});
}

TEST_F(FakeKubeClientTest, BreakWatchesAndInjectedFailures) {
  absl::Status result;
  absl::Notification started;
  std::thread t([&] {
    WatchOptions wo;
    wo.resource_version = "1";
    started.Notify();
    result =
        fake_.Watch(kWidgets, "ns", wo, [](const WatchEvent&) { return true; });
  });
  started.WaitForNotification();
  // A watch that starts after the break never sees it: wait until it runs.
  EXPECT_TRUE(fake_.AwaitActiveWatches(1, absl::Seconds(10)));
  fake_.BreakWatches(absl::UnavailableError("connection reset"));
  t.join();
  EXPECT_TRUE(absl::IsUnavailable(result)) << result;

  fake_.FailNext(FakeKubeClient::Verb::kUpdate, absl::AbortedError("injected"),
                 1);
  Json v = *fake_.Create(kWidgets, Widget("a", 1));
  EXPECT_TRUE(IsConflict(fake_.Update(kWidgets, v).status()));
  EXPECT_TRUE(fake_.Update(kWidgets, v).ok());
}

}  // namespace
}  // namespace daxlease::k8s
