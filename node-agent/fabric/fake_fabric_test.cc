#include "node-agent/fabric/fake_fabric.h"

#include <vector>

#include "gtest/gtest.h"

namespace daxlease::fabric {
namespace {

TEST(FakeFabricTest, KeepsTheFabricRules) {
  FakeFabric f;
  std::vector<char> mem(4096);
  Region r{"vol", mem.data(), mem.size(), nullptr, nullptr};
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

// As TcpFabric: DeregisterVolume cuts every grant and forgets the volume's
// invalidated keys and epoch floor; a region connected before stays cut
// even when its key is granted again under the next registration.
TEST(FakeFabricTest, DeregisterForgetsTheVolumeAsTheRealFabricsDo) {
  FakeFabric f;
  std::vector<char> mem(4096);
  Region r{"vol", mem.data(), mem.size(), nullptr, nullptr};
  ASSERT_TRUE(f.RegisterVolume(r).ok());
  GrantKey k{"vol", "uid", "n", 2};
  auto g = f.Grant(k, Access::kReadWrite);
  ASSERT_TRUE(g.ok());
  auto c = f.connector().Connect(*g);
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(*f.Invalidate(k));
  ASSERT_TRUE(f.InvalidateBefore("vol", 2).ok());
  ASSERT_TRUE(f.DeregisterVolume("vol").ok());
  EXPECT_FALSE(f.IsRegistered("vol"));
  ASSERT_TRUE(f.RegisterVolume(r).ok());
  EXPECT_EQ(f.registrations("vol"), 2);
  EXPECT_TRUE(f.Grant(k, Access::kReadWrite).ok());  // forgotten
  EXPECT_TRUE(f.Grant({"vol", "uid", "n", 1}, Access::kReadWrite).ok());
  EXPECT_EQ((*c)->Write(0, "x").code(), absl::StatusCode::kPermissionDenied);
}

}  // namespace
}  // namespace daxlease::fabric
