#include "lib/rdma/verbs.h"

#include <infiniband/verbs.h>

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
