#include "operator/epoch_store.h"

#include "gtest/gtest.h"
#include "lib/base/clock.h"
#include "lib/k8s/fake_client.h"
#include "lib/k8s/resource.h"

namespace daxlease::op {
namespace {

TEST(EpochStoreTest, RaisesOnlyUpwardsAndReadsBack) {
  base::FakeClock clock;
  k8s::FakeKubeClient fake(clock);
  EpochStore store(fake, {"ops", "epochs"});
  EXPECT_EQ(store.Read("vol").value(), 0);
  ASSERT_TRUE(store.Raise("vol", 7).ok());
  EXPECT_EQ(store.Read("vol").value(), 7);
  ASSERT_TRUE(store.Raise("vol", 3).ok());  // never lowered
  EXPECT_EQ(store.Read("vol").value(), 7);
  ASSERT_TRUE(store.Raise("vol", 9).ok());
  EXPECT_EQ(store.Read("vol").value(), 9);
  for (int i = 0; i < 20; ++i) {  // other names, other shards
    ASSERT_TRUE(store.Raise("v" + std::to_string(i), i + 1).ok());
  }
  EXPECT_EQ(store.Read("v13").value(), 14);
  EXPECT_EQ(store.Read("vol").value(), 9);
  EXPECT_EQ(store.Read("other").value(), 0);
}

// An entry the operator cannot read is not taken as "no mark": guessing
// could restart a volume at an epoch a holder still presents.
TEST(EpochStoreTest, UnreadableEntryIsDataLoss) {
  base::FakeClock clock;
  k8s::FakeKubeClient fake(clock);
  EpochStore store(fake, {"ops", "epochs"});
  ASSERT_TRUE(store.Raise("vol", 2).ok());
  absl::StatusOr<k8s::ListResult> l =
      fake.List(k8s::ConfigMapResource(), "ops", {});
  ASSERT_TRUE(l.ok() && l->items.size() == 1u);
  ASSERT_TRUE(fake.Patch(k8s::ConfigMapResource(), "ops",
                         k8s::NameOf(l->items[0]), k8s::PatchType::kMerge,
                         {{"data", {{"vol", "two"}}}})
                  .ok());
  EXPECT_TRUE(absl::IsDataLoss(store.Read("vol").status()));
  EXPECT_TRUE(absl::IsDataLoss(store.Raise("vol", 3)));
}

}  // namespace
}  // namespace daxlease::op
