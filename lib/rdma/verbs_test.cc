#include "lib/rdma/verbs.h"

#include <fcntl.h>
#include <infiniband/verbs.h>
#include <time.h>
#include <unistd.h>

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace daxlease::rdma {
namespace {

TEST(ToIbvAccess, MapsEachBitAndNothingElse) {
  EXPECT_EQ(ToIbvAccess(0), 0);
  EXPECT_EQ(ToIbvAccess(kLocalWrite), IBV_ACCESS_LOCAL_WRITE);
  EXPECT_EQ(ToIbvAccess(kRemoteWrite), IBV_ACCESS_REMOTE_WRITE);
  EXPECT_EQ(ToIbvAccess(kRemoteRead), IBV_ACCESS_REMOTE_READ);
  EXPECT_EQ(ToIbvAccess(kMwBind), IBV_ACCESS_MW_BIND);
  EXPECT_EQ(ToIbvAccess(kOnDemand), IBV_ACCESS_ON_DEMAND);
  EXPECT_EQ(ToIbvAccess(kLocalWrite | kMwBind),
            IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_MW_BIND);
}

TEST(PrefetchPieces, CoverTheRangeInEntriesOf32BitLength) {
  using Pieces = std::vector<std::pair<uint64_t, uint32_t>>;
  EXPECT_EQ(PrefetchPieces(0x1000, 0), Pieces{});
  EXPECT_EQ(PrefetchPieces(0x1000, 4096), (Pieces{{0x1000, 4096}}));
  EXPECT_EQ(PrefetchPieces(100, 25, 10),
            (Pieces{{100, 10}, {110, 10}, {120, 5}}));
  // A 5 GiB volume: four 1 GiB entries and the rest; none wraps 32 bits.
  const uint64_t gib = uint64_t{1} << 30;
  Pieces big = PrefetchPieces(0x7f0000000000, 5 * gib + 4096);
  ASSERT_EQ(big.size(), 6u);
  uint64_t at = 0x7f0000000000, total = 0;
  for (const auto& [addr, len] : big) {
    EXPECT_EQ(addr, at);
    EXPECT_GT(len, 0u);
    at += len;
    total += len;
  }
  EXPECT_EQ(total, 5 * gib + 4096);
  EXPECT_EQ(big.back().second, 4096u);
}

TEST(Device, OpeningAnUnknownDeviceIsNotFound) {
  auto dev = Device::Open("daxlease-no-such-device");
  ASSERT_FALSE(dev.ok());
  EXPECT_EQ(dev.status().code(), absl::StatusCode::kNotFound);
}

TEST(ListDevices, WorksWithOrWithoutDevices) {
  auto names = ListDevices();
  ASSERT_TRUE(names.ok()) << names.status();
  for (const auto& n : *names) EXPECT_FALSE(n.empty());
}

// The tests below need an RDMA device (no connection): on a machine without
// one they skip; the lab's `verbs` test runs them on rxe.
std::optional<Device> FirstDevice() {
  absl::StatusOr<std::vector<std::string>> names = ListDevices();
  if (!names.ok() || names->empty()) return std::nullopt;
  absl::StatusOr<Device> dev = Device::Open("");
  if (!dev.ok()) return std::nullopt;
  return *std::move(dev);
}

#define NEED_DEVICE(dev)                                                   \
  std::optional<Device> dev = FirstDevice();                               \
  if (!dev.has_value()) {                                                  \
    GTEST_SKIP() << "no RDMA device here (the lab's verbs test runs this " \
                    "on rxe)";                                             \
  }

absl::Duration ThreadCpu() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return absl::DurationFromTimespec(ts);
}

TEST(CompletionQueue, WithoutAChannelThereIsNothingToArmOrAwait) {
  NEED_DEVICE(dev);
  absl::StatusOr<CompletionQueue> cq = CompletionQueue::Create(dev->get(), 4);
  ASSERT_TRUE(cq.ok()) << cq.status();
  EXPECT_EQ(cq->channel_fd(), -1);
  EXPECT_EQ(cq->Arm().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(cq->TakeEvents().status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(cq->Await(absl::Now(), absl::ZeroDuration()).status().code(),
            absl::StatusCode::kFailedPrecondition);
  // Wait still works, by polling.
  EXPECT_EQ(cq->Wait(absl::Milliseconds(5)).status().code(),
            absl::StatusCode::kDeadlineExceeded);
}

TEST(CompletionQueue, ItsChannelIsNonBlockingAndHasNoEventUnarmed) {
  NEED_DEVICE(dev);
  absl::StatusOr<CompletionQueue> cq =
      CompletionQueue::CreateWithChannel(dev->get(), 4);
  ASSERT_TRUE(cq.ok()) << cq.status();
  ASSERT_GE(cq->channel_fd(), 0);
  EXPECT_NE(::fcntl(cq->channel_fd(), F_GETFL) & O_NONBLOCK, 0);
  absl::StatusOr<int> n = cq->TakeEvents();
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 0);
  EXPECT_TRUE(cq->Arm().ok());
  EXPECT_TRUE(cq->Arm().ok());  // arming twice is fine
  n = cq->TakeEvents();
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 0);  // no completion, no event
}

// The point of the channel: a long wait sleeps in the kernel, so it leaves
// the CPU to whoever must produce the completion (on rxe, the kernel).
TEST(CompletionQueue, AwaitSleepsUntilTheDeadlineWithoutSpinning) {
  NEED_DEVICE(dev);
  absl::StatusOr<CompletionQueue> cq =
      CompletionQueue::CreateWithChannel(dev->get(), 4);
  ASSERT_TRUE(cq.ok()) << cq.status();
  const absl::Duration wait = absl::Milliseconds(300);
  const absl::Time t0 = absl::Now();
  const absl::Duration cpu0 = ThreadCpu();
  auto wc = cq->Await(t0 + wait, absl::ZeroDuration());
  const absl::Duration cpu = ThreadCpu() - cpu0;
  const absl::Duration took = absl::Now() - t0;
  EXPECT_EQ(wc.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_GE(took, wait);
  // A poller would have used most of the 300 ms; a sleeper a few syscalls.
  EXPECT_LT(cpu, wait / 5) << "thread CPU " << cpu << " in " << took;
  // Wait sleeps the same way on a CQ with a channel.
  const absl::Duration cpu1 = ThreadCpu();
  EXPECT_EQ(cq->Wait(wait).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_LT(ThreadCpu() - cpu1, wait / 5);
}

TEST(CompletionQueue, AwaitSpinsForItsSpinThenSleeps) {
  NEED_DEVICE(dev);
  absl::StatusOr<CompletionQueue> cq =
      CompletionQueue::CreateWithChannel(dev->get(), 4);
  ASSERT_TRUE(cq.ok()) << cq.status();
  const absl::Time t0 = absl::Now();
  auto wc = cq->Await(t0 + absl::Milliseconds(50), absl::Milliseconds(20));
  EXPECT_EQ(wc.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_GE(absl::Now() - t0, absl::Milliseconds(50));
}

TEST(CompletionQueue, AwaitEndsWhenTheWakeDescriptorIsReadable) {
  NEED_DEVICE(dev);
  absl::StatusOr<CompletionQueue> cq =
      CompletionQueue::CreateWithChannel(dev->get(), 4);
  ASSERT_TRUE(cq.ok()) << cq.status();
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  ASSERT_EQ(::write(p[1], "x", 1), 1);
  const absl::Time t0 = absl::Now();
  auto wc = cq->Await(t0 + absl::Seconds(10), absl::ZeroDuration(), p[0]);
  ASSERT_TRUE(wc.ok()) << wc.status();
  EXPECT_FALSE(wc->has_value());
  EXPECT_LT(absl::Now() - t0, absl::Seconds(5));
  ::close(p[0]);
  ::close(p[1]);
}

}  // namespace
}  // namespace daxlease::rdma
