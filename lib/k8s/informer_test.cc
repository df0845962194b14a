#include "lib/k8s/informer.h"

#include "gtest/gtest.h"
#include "lib/k8s/fake_client.h"
#include "lib/k8s/informer_recorder.h"

namespace daxlease::k8s {
namespace {

const Resource kWidgets{"example.com", "v1", "widgets", true};

Json Widget(const std::string& name, int size = 1) {
  return {{"metadata", {{"name", name}, {"namespace", "ns"}}},
          {"spec", {{"size", size}}}};
}

// What an informer's handlers were handed, each as "event name size" (size
// "-" for an object without a spec; an update names its old object).
class SizeLog {
 public:
  InformerHandlers Handlers() {
    return {[this](const Json& n) { Add("add " + NameOf(n) + " " + Size(n)); },
            [this](const Json& old_obj, const Json& n) {
              Add("update " + NameOf(old_obj) + " " + Size(old_obj) + "->" +
                  Size(n));
            },
            [this](const Json& last) {
              Add("delete " + NameOf(last) + " " + Size(last));
            }};
  }
  std::vector<std::string> seen() {
    absl::MutexLock l(&mu_);
    return seen_;
  }

 private:
  static std::string Size(const Json& obj) {
    return obj.contains("spec") ? obj["spec"]["size"].dump() : "-";
  }
  void Add(std::string event) {
    absl::MutexLock l(&mu_);
    seen_.push_back(std::move(event));
  }
  absl::Mutex mu_;
  std::vector<std::string> seen_;
};

class InformerTest : public ::testing::Test {
 protected:
  InformerOptions Options() {
    InformerOptions o;
    o.resource = kWidgets;
    o.ns = "ns";
    o.page_size = 2;
    return o;
  }
  base::FakeClock clock_;
  FakeKubeClient fake_{clock_};
  InformerRecorder rec_;
};

TEST_F(InformerTest, ListsThenWatches) {
  for (const char* n : {"a", "b", "c"})
    ASSERT_TRUE(fake_.Create(kWidgets, Widget(n)).ok());
  Informer inf(fake_, clock_, Options());
  inf.AddHandlers(rec_.Handlers());
  inf.Start();
  ASSERT_TRUE(inf.WaitForSync(absl::Seconds(10)));
  EXPECT_EQ(inf.ListKeys(), (std::vector<std::string>{"ns/a", "ns/b", "ns/c"}));
  ASSERT_TRUE(fake_
                  .Patch(kWidgets, "ns", "b", PatchType::kMerge,
                         {{"spec", {{"size", 5}}}})
                  .ok());
  ASSERT_TRUE(fake_.Delete(kWidgets, "ns", "c").ok());
  ASSERT_TRUE(rec_.WaitFor("delete c"));
  EXPECT_EQ(rec_.Events(), (std::vector<std::string>{"add a", "add b", "add c",
                                                     "update b", "delete c"}));
  EXPECT_EQ((*inf.Get("ns/b"))["spec"]["size"], 5);
  EXPECT_FALSE(inf.Get("ns/c").has_value());
  EXPECT_EQ(inf.LastResourceVersion(),
            std::to_string(fake_.CurrentResourceVersion()));
  inf.Stop();
}

TEST_F(InformerTest, DropsManagedFieldsWhenAsked) {
  Json a = Widget("a");
  a["metadata"]["managedFields"] = Json::array({{{"manager", "kubectl"}}});
  ASSERT_TRUE(fake_.Create(kWidgets, a).ok());
  InformerOptions o = Options();
  o.drop_managed_fields = true;
  Informer inf(fake_, clock_, o);
  inf.AddHandlers(rec_.Handlers());
  inf.Start();
  ASSERT_TRUE(inf.WaitForSync(absl::Seconds(10)));
  Json b = Widget("b");
  b["metadata"]["managedFields"] = Json::array({{{"manager", "kubectl"}}});
  ASSERT_TRUE(fake_.Create(kWidgets, b).ok());
  ASSERT_TRUE(rec_.WaitFor("add b"));
  for (const char* key : {"ns/a", "ns/b"}) {
    std::optional<Json> got = inf.Get(key);
    ASSERT_TRUE(got.has_value()) << key;
    EXPECT_FALSE((*got)["metadata"].contains("managedFields")) << key;
    EXPECT_EQ((*got)["spec"]["size"], 1) << key;
  }
  inf.Stop();
}

TEST_F(InformerTest, CachesTheTransformAndDeliversWholeObjects) {
  ASSERT_TRUE(fake_.Create(kWidgets, Widget("a", 7)).ok());
  InformerOptions o = Options();
  o.cache_transform = [](const Json& obj) {
    return Json{{"metadata", obj["metadata"]}};
  };
  Informer inf(fake_, clock_, o);
  SizeLog log;
  inf.AddHandlers(log.Handlers());
  inf.AddHandlers(rec_.Handlers());
  inf.Start();
  ASSERT_TRUE(inf.WaitForSync(absl::Seconds(10)));
  ASSERT_TRUE(fake_.Create(kWidgets, Widget("b", 8)).ok());
  ASSERT_TRUE(fake_
                  .Patch(kWidgets, "ns", "b", PatchType::kMerge,
                         {{"spec", {{"size", 9}}}})
                  .ok());
  ASSERT_TRUE(fake_.Delete(kWidgets, "ns", "a").ok());
  ASSERT_TRUE(rec_.WaitFor("delete a"));
  EXPECT_EQ(log.seen(),
            (std::vector<std::string>{"add a 7", "add b 8", "update b -->9",
                                      "delete a 7"}));
  std::optional<Json> b = inf.Get("ns/b");
  ASSERT_TRUE(b.has_value());
  EXPECT_FALSE(b->contains("spec"));
  EXPECT_EQ(NameOf(*b), "b");
  EXPECT_FALSE(ResourceVersionOf(*b).empty());
  inf.Stop();
}

// cache_versions_only: handlers get what was delivered whole, the cache
// (Get, List, an update's old object, a relist's delete of what vanished
// meanwhile) hands out stubs of name, namespace and resourceVersion.
TEST_F(InformerTest, CachesVersionsOnlyAndDeliversWholeObjects) {
  for (const char* n : {"a", "gone", "edit"}) {
    ASSERT_TRUE(fake_.Create(kWidgets, Widget(n, 7)).ok());
  }
  InformerOptions o = Options();
  o.cache_versions_only = true;
  Informer inf(fake_, clock_, o);
  SizeLog log;
  inf.AddHandlers(log.Handlers());
  inf.AddHandlers(rec_.Handlers());
  inf.Start();
  ASSERT_TRUE(inf.WaitForSync(absl::Seconds(10)));
  ASSERT_TRUE(fake_
                  .Patch(kWidgets, "ns", "a", PatchType::kMerge,
                         {{"spec", {{"size", 9}}}})
                  .ok());
  ASSERT_TRUE(rec_.WaitFor("update a"));
  std::optional<Json> a = inf.Get("ns/a");
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(*a, (Json{{"metadata",
                       {{"name", "a"},
                        {"namespace", "ns"},
                        {"resourceVersion", ResourceVersionOf(*fake_.Get(
                                                kWidgets, "ns", "a"))}}}}));
  // A relist (the watch's version compacted) diffs by version.
  fake_.FailNext(FakeKubeClient::Verb::kWatch,
                 absl::OutOfRangeError("too old resource version"));
  fake_.BreakWatches(absl::UnavailableError("connection reset"));
  ASSERT_TRUE(fake_.Delete(kWidgets, "ns", "gone").ok());
  ASSERT_TRUE(fake_
                  .Patch(kWidgets, "ns", "edit", PatchType::kMerge,
                         {{"spec", {{"size", 8}}}})
                  .ok());
  ASSERT_TRUE(rec_.WaitFor("delete gone"));
  ASSERT_TRUE(rec_.WaitFor("update edit"));
  EXPECT_EQ(log.seen(),
            (std::vector<std::string>{"add a 7", "add edit 7", "add gone 7",
                                      "update a -->9", "delete gone -",
                                      "update edit -->8"}));
  EXPECT_EQ(inf.list_count(), 2);
  EXPECT_EQ(inf.ListKeys(), (std::vector<std::string>{"ns/a", "ns/edit"}));
  for (const Json& j : inf.List()) EXPECT_FALSE(j.contains("spec"));
  inf.Stop();
}

TEST_F(InformerTest, ResumesAfterDroppedWatchWithoutRelist) {
  Informer inf(fake_, clock_, Options());
  inf.AddHandlers(rec_.Handlers());
  inf.Start();
  ASSERT_TRUE(inf.WaitForSync(absl::Seconds(10)));
  ASSERT_TRUE(fake_.Create(kWidgets, Widget("a")).ok());
  ASSERT_TRUE(rec_.WaitFor("add a"));
  // The connection drops; the change happens while the informer backs off.
  fake_.BreakWatches(absl::UnavailableError("connection reset by peer"));
  ASSERT_TRUE(fake_.Create(kWidgets, Widget("b")).ok());
  ASSERT_TRUE(rec_.WaitFor("add b"));
  EXPECT_EQ(inf.list_count(), 1);
  EXPECT_GE(inf.watch_count(), 2);
  inf.Stop();
}

TEST_F(InformerTest, RelistsOnGoneAndReportsWhatChangedMeanwhile) {
  for (const char* n : {"keep", "gone", "edit"}) {
    ASSERT_TRUE(fake_.Create(kWidgets, Widget(n)).ok());
  }
  Informer inf(fake_, clock_, Options());
  inf.AddHandlers(rec_.Handlers());
  inf.Start();
  ASSERT_TRUE(inf.WaitForSync(absl::Seconds(10)));
  // Drop the watch; the re-watch finds its version compacted (410).
  fake_.FailNext(FakeKubeClient::Verb::kWatch,
                 absl::OutOfRangeError("too old resource version"));
  fake_.BreakWatches(absl::UnavailableError("connection reset"));
  // Within the informer's 100 ms backoff:
  ASSERT_TRUE(fake_.Delete(kWidgets, "ns", "gone").ok());
  ASSERT_TRUE(fake_
                  .Patch(kWidgets, "ns", "edit", PatchType::kMerge,
                         {{"spec", {{"size", 9}}}})
                  .ok());
  ASSERT_TRUE(fake_.Create(kWidgets, Widget("new")).ok());
  ASSERT_TRUE(rec_.WaitFor("delete gone"));
  ASSERT_TRUE(rec_.WaitFor("update edit"));
  ASSERT_TRUE(rec_.WaitFor("add new"));
  EXPECT_EQ(inf.list_count(), 2);
  EXPECT_EQ(inf.ListKeys(),
            (std::vector<std::string>{"ns/edit", "ns/keep", "ns/new"}));
  // And it keeps watching afterwards.
  ASSERT_TRUE(fake_.Delete(kWidgets, "ns", "keep").ok());
  ASSERT_TRUE(rec_.WaitFor("delete keep"));
  inf.Stop();
}

TEST_F(InformerTest, ResyncRedeliversCachedObjects) {
  ASSERT_TRUE(fake_.Create(kWidgets, Widget("a")).ok());
  InformerOptions o = Options();
  o.resync = absl::Seconds(30);
  Informer inf(fake_, clock_, o);
  inf.AddHandlers(rec_.Handlers());
  inf.Start();
  ASSERT_TRUE(inf.WaitForSync(absl::Seconds(10)));
  // The watch must have fixed its deadline before the clock moves past it,
  // or it would wait out 30 s from the new time instead.
  ASSERT_TRUE(fake_.AwaitActiveWatches(1, absl::Seconds(10)));
  clock_.Advance(absl::Seconds(31));  // also ends the watch (timeoutSeconds=30)
  ASSERT_TRUE(rec_.WaitFor("update a"));
  inf.Stop();
}

TEST_F(InformerTest, ListFailureIsRetried) {
  fake_.FailNext(FakeKubeClient::Verb::kList, absl::UnavailableError("down"),
                 2);
  ASSERT_TRUE(fake_.Create(kWidgets, Widget("a")).ok());
  Informer inf(fake_, clock_, Options());
  inf.Start();
  ASSERT_TRUE(inf.WaitForSync(absl::Seconds(10)));
  EXPECT_TRUE(inf.Get("ns/a").has_value());
  inf.Stop();
  inf.Stop();  // idempotent
}

}  // namespace
}  // namespace daxlease::k8s
