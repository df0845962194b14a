#include "node-agent/fabric/fake_fabric.h"

#include <vector>

#include "gtest/gtest.h"

namespace daxlease::fabric {
namespace {

TEST(FakeFabricTest, KeepsTheFabricRules) {
  FakeFabric f;
  std::vector<char> mem(4096);
  Region r{"vol", mem.data(), mem.size(), nullptr};
  ASSERT_TRUE(f.RegisterVolume(r).ok());
  EXPECT_EQ(f.RegisterVolume(r).code(), absl::StatusCode::kAlreadyExists);
  GrantKey k{"vol", "uid", "n", 1};
  auto g = f.Grant(k, Access::kReadWrite);
  ASSERT_TRUE(g.ok());
  auto c = f.connector().Connect(*g);
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE((*c)->Write(0, "hi").ok());
  EXPECT_EQ(mem[0], 'h');
  EXPECT_TRUE(*f.Invalidate(k));
  EXPECT_FALSE(*f.Invalidate(k));
  EXPECT_EQ(f.invalidations(), 1);
  EXPECT_EQ((*c)->Write(0, "x").code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(f.Grant(k, Access::kReadWrite).status().code(),
            absl::StatusCode::kPermissionDenied);
}

}  // namespace
}  // namespace daxlease::fabric
