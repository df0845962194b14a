#include "node-agent/fabric/window.h"

#include <map>
#include <memory>
#include <set>

#include "gtest/gtest.h"

namespace daxlease::fabric {
namespace {

// The verbs of one window, as rxe's kernel would see them: a second
// LOCAL_INV of a key fails the test (the kernel panics).
class FakeWindowVerbs : public WindowVerbs {
 public:
  absl::StatusOr<uint32_t> Bind() override {
    ++binds;
    if (bind_fails) return absl::InternalError("BIND_MW completed with 5");
    return next_rkey++;
  }
  absl::Status LocalInvalidate(uint32_t rkey) override {
    ++invalidates;
    if (!invalidated.insert(rkey).second) {
      ADD_FAILURE() << "second LOCAL_INV of rkey " << rkey
                    << ": rxe would panic the kernel";
    }
    if (invalidate_fails) return absl::InternalError("flushed");
    return absl::OkStatus();
  }
  void Deallocate() override { ++deallocs; }

  bool bind_fails = false;
  bool invalidate_fails = false;
  int binds = 0, invalidates = 0, deallocs = 0;
  uint32_t next_rkey = 0x100;
  std::set<uint32_t> invalidated;
};

using State = WindowFsm::State;

TEST(WindowFsm, BoundWindowIsInvalidatedExactlyOnce) {
  FakeWindowVerbs v;
  WindowFsm w;
  auto rkey = w.Bind(v);
  ASSERT_TRUE(rkey.ok()) << rkey.status();
  EXPECT_EQ(w.state(), State::kBound);
  EXPECT_EQ(w.rkey(), *rkey);
  EXPECT_TRUE(w.Revoke(v));
  EXPECT_EQ(w.state(), State::kInvalidated);
  EXPECT_EQ(w.rkey(), 0u);
  // Every later revoke or release is a no-op: no second LOCAL_INV.
  EXPECT_FALSE(w.Revoke(v));
  w.Release(v);
  EXPECT_FALSE(w.Revoke(v));
  EXPECT_EQ(v.invalidates, 1);
  EXPECT_EQ(v.deallocs, 0);
  EXPECT_TRUE(w.reusable());
}

TEST(WindowFsm, RevokeOfAnUnboundWindowMakesNoVerbsCall) {
  FakeWindowVerbs v;
  WindowFsm w;
  EXPECT_FALSE(w.Revoke(v));
  w.Release(v);
  EXPECT_EQ(v.invalidates, 0);
  EXPECT_EQ(v.deallocs, 0);
  EXPECT_EQ(w.state(), State::kUnbound);
}

TEST(WindowFsm, UnconfirmedInvalidateDeallocatesAndIsNeverRetried) {
  FakeWindowVerbs v;
  WindowFsm w;
  ASSERT_TRUE(w.Bind(v).ok());
  v.invalidate_fails = true;  // a LOCAL_INV flushed by a QP in error
  EXPECT_TRUE(w.Revoke(v));
  EXPECT_EQ(w.state(), State::kDeallocated);
  EXPECT_EQ(v.deallocs, 1);
  EXPECT_FALSE(w.Revoke(v));
  w.Release(v);
  EXPECT_EQ(v.invalidates, 1);
  EXPECT_EQ(v.deallocs, 1);
  EXPECT_FALSE(w.reusable());
  EXPECT_EQ(w.Bind(v).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(WindowFsm, RebindGivesANewKeyEachInvalidatedOnce) {
  FakeWindowVerbs v;
  WindowFsm w;
  auto first = w.Bind(v);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(w.Bind(v).status().code(), absl::StatusCode::kFailedPrecondition)
      << "a bound window is not bound again";
  ASSERT_TRUE(w.Revoke(v));
  auto second = w.Bind(v);
  ASSERT_TRUE(second.ok());
  EXPECT_NE(*first, *second);
  ASSERT_TRUE(w.Revoke(v));
  EXPECT_EQ(v.invalidated, (std::set<uint32_t>{*first, *second}));
  EXPECT_EQ(w.binds(), 2);
  EXPECT_EQ(w.invalidates(), 2);
}

TEST(WindowFsm, FailedBindDeallocates) {
  FakeWindowVerbs v;
  v.bind_fails = true;
  WindowFsm w;
  EXPECT_FALSE(w.Bind(v).ok());
  EXPECT_EQ(w.state(), State::kDeallocated);
  EXPECT_EQ(v.deallocs, 1);
  EXPECT_FALSE(w.Revoke(v));
  EXPECT_EQ(v.invalidates, 0);
}

TEST(WindowFsm, ReleaseRevokesABoundWindow) {
  FakeWindowVerbs v;
  WindowFsm w;
  ASSERT_TRUE(w.Bind(v).ok());
  w.Release(v);
  EXPECT_EQ(v.invalidates, 1);
  EXPECT_EQ(w.state(), State::kInvalidated);
}

class CountingWindow : public PooledWindow {
 public:
  explicit CountingWindow(int* live) : live_(live) { ++*live_; }
  ~CountingWindow() override { --*live_; }

 private:
  int* live_;
};

TEST(WindowPool, TakeUsesWindowsAllocatedAheadThenCountsMisses) {
  int allocated = 0, live = 0;
  WindowPool pool(
      [&]() -> absl::StatusOr<std::unique_ptr<PooledWindow>> {
        ++allocated;
        return std::make_unique<CountingWindow>(&live);
      },
      2);
  ASSERT_TRUE(pool.Fill().ok());
  EXPECT_EQ(allocated, 2);
  EXPECT_EQ(pool.available(), 2u);
  auto a = pool.Take();
  auto b = pool.Take();
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(allocated, 2) << "a grant must not wait on allocation";
  EXPECT_EQ(pool.misses(), 0u);
  auto c = pool.Take();
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(allocated, 3);
  EXPECT_EQ(pool.misses(), 1u);
  ASSERT_TRUE(pool.Fill().ok());
  EXPECT_EQ(pool.available(), 2u);
}

TEST(WindowPool, PutKeepsReusableWindowsAndDropsTheRest) {
  int live = 0;
  WindowPool pool(
      [&]() -> absl::StatusOr<std::unique_ptr<PooledWindow>> {
        return std::make_unique<CountingWindow>(&live);
      },
      0);
  FakeWindowVerbs v;
  auto invalidated = std::make_unique<CountingWindow>(&live);
  ASSERT_TRUE(invalidated->fsm.Bind(v).ok());
  ASSERT_TRUE(invalidated->fsm.Revoke(v));
  auto bound = std::make_unique<CountingWindow>(&live);
  ASSERT_TRUE(bound->fsm.Bind(v).ok());
  auto dead = std::make_unique<CountingWindow>(&live);
  v.bind_fails = true;
  ASSERT_FALSE(dead->fsm.Bind(v).ok());
  EXPECT_EQ(live, 3);
  pool.Put(std::move(invalidated));
  pool.Put(std::move(bound));  // a caller bug: dropped, never handed out
  pool.Put(std::move(dead));
  EXPECT_EQ(pool.available(), 1u);
  EXPECT_EQ(live, 1);
  auto again = pool.Take();
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)->fsm.state(), State::kInvalidated);
  pool.Clear();
}

TEST(WindowPool, FillReportsAnAllocationFailure) {
  WindowPool pool(
      []() -> absl::StatusOr<std::unique_ptr<PooledWindow>> {
        return absl::ResourceExhaustedError("ibv_alloc_mw: ENOMEM");
      },
      4);
  EXPECT_EQ(pool.Fill().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(pool.Take().status().code(), absl::StatusCode::kResourceExhausted);
}

}  // namespace
}  // namespace daxlease::fabric
