#include "lib/k8s/client.h"

#include <thread>

#include "gtest/gtest.h"
#include "lib/k8s/fake_client.h"

namespace daxlease::k8s {
namespace {

const Resource kWidgets{"example.com", "v1", "widgets", true};

Json Widget(const std::string& name) {
  return {{"metadata", {{"name", name}, {"namespace", "ns"}}},
          {"spec", {{"n", 0}}}};
}

TEST(ClientHelpersTest, Accessors) {
  Json o = {{"metadata",
             {{"name", "a"},
              {"namespace", "n"},
              {"resourceVersion", "7"},
              {"uid", "u"},
              {"generation", 3}}}};
  EXPECT_EQ(NameOf(o), "a");
  EXPECT_EQ(NamespaceOf(o), "n");
  EXPECT_EQ(ResourceVersionOf(o), "7");
  EXPECT_EQ(UidOf(o), "u");
  EXPECT_EQ(GenerationOf(o), 3);
  EXPECT_EQ(KeyOf(o), "n/a");
  EXPECT_EQ(NameOf(Json::object()), "");
  EXPECT_EQ(GenerationOf(Json::array()), 0);
}

TEST(ClientHelpersTest, ListAllFollowsContinueTokens) {
  base::FakeClock clock;
  FakeKubeClient fake(clock);
  for (int i = 0; i < 7; ++i) {
    ASSERT_TRUE(fake.Create(kWidgets, Widget("w" + std::to_string(i))).ok());
  }
  ListOptions o;
  o.limit = 3;
  absl::StatusOr<ListResult> all = ListAll(fake, kWidgets, "ns", o);
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->items.size(), 7u);
  EXPECT_TRUE(all->continue_token.empty());
  EXPECT_FALSE(all->resource_version.empty());
}

TEST(ClientHelpersTest, ListAllRestartsOnceOnExpiredContinue) {
  base::FakeClock clock;
  FakeKubeClient fake(clock);
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(fake.Create(kWidgets, Widget("w" + std::to_string(i))).ok());
  }
  ListOptions o;
  o.limit = 2;
  // The second page fails as an expired continue token would.
  fake.FailNext(FakeKubeClient::Verb::kList, absl::OkStatus(), 1);
  fake.FailNext(FakeKubeClient::Verb::kList,
                absl::OutOfRangeError("continue expired"), 1);
  absl::StatusOr<ListResult> all = ListAll(fake, kWidgets, "ns", o);
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->items.size(), 4u);
}

TEST(ClientHelpersTest, UpdateWithRetryLosesNoIncrement) {
  base::FakeClock clock;
  FakeKubeClient fake(clock);
  ASSERT_TRUE(fake.Create(kWidgets, Widget("c")).ok());
  constexpr int kThreads = 4, kEach = 25;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kEach; ++i) {
        absl::StatusOr<Json> r = UpdateWithRetry(
            fake, kWidgets, "ns", "c",
            [](Json& o) {
              o["spec"]["n"] = o["spec"]["n"].get<int>() + 1;
              return true;
            },
            false, 1000);
        ASSERT_TRUE(r.ok()) << r.status();
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ((*fake.Get(kWidgets, "ns", "c"))["spec"]["n"], kThreads * kEach);
}

TEST(ClientHelpersTest, UpdateWithRetryGivesUp) {
  base::FakeClock clock;
  FakeKubeClient fake(clock);
  ASSERT_TRUE(fake.Create(kWidgets, Widget("c")).ok());
  fake.FailNext(FakeKubeClient::Verb::kUpdate, absl::AbortedError("conflict"),
                3);
  auto bump = [](Json& o) {
    o["spec"]["n"] = 1;
    return true;
  };
  EXPECT_TRUE(IsConflict(
      UpdateWithRetry(fake, kWidgets, "ns", "c", bump, false, 3).status()));
  EXPECT_TRUE(UpdateWithRetry(fake, kWidgets, "ns", "c", bump, false, 3).ok());
  // mutate returning false writes nothing.
  int64_t writes = fake.WriteCount();
  EXPECT_TRUE(UpdateWithRetry(fake, kWidgets, "ns", "c", [](Json&) {
                return false;
              }).ok());
  EXPECT_EQ(fake.WriteCount(), writes);
}

}  // namespace
}  // namespace daxlease::k8s
