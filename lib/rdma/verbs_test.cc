#include "lib/rdma/verbs.h"

#include <infiniband/verbs.h>

#include <cstdint>
#include <utility>
#include <vector>

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

}  // namespace
}  // namespace daxlease::rdma
