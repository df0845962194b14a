#include "client/volume.h"

#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include "gtest/gtest.h"

namespace daxlease::client {
namespace {

TEST(DirtyRangesTest, MergesAndSplits) {
  DirtyRanges d;
  d.Add(0, 10);
  d.Add(5, 10);
  d.Add(100, 10);
  EXPECT_EQ(d.Total(), 25u);
  d.Remove(3, 4);  // [0,3) [7,15) [100,110)
  EXPECT_EQ(d.Total(), 21u);
  EXPECT_EQ(d.Span(), (std::pair<uint64_t, uint64_t>{0, 110}));
  d.Remove(0, 200);
  EXPECT_EQ(d.Total(), 0u);
  EXPECT_EQ(d.Span(), (std::pair<uint64_t, uint64_t>{0, 0}));
  d.Add(10, 5);
  d.Add(0, 10);  // touching ranges merge
  EXPECT_EQ(d.Total(), 15u);
}

class DescriptorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/descriptor_test.XXXXXX";
    dir_ = mkdtemp(tmpl);
  }
  void TearDown() override {
    std::string cmd = "rm -rf " + dir_;
    ASSERT_EQ(system(cmd.c_str()), 0);
  }
  void Write(const std::string& s) {
    std::ofstream(dir_ + "/daxlease.json") << s;
  }
  std::string dir_;
};

TEST_F(DescriptorTest, ReadsTheAgentsFormat) {
  Write(R"({"version":1,"volume":"v","lease":"dl-1","attachToken":"ab",
            "ownerLocal":true,"access":"ReadOnly","agentSocket":"/run/a.sock"})");
  auto d = ReadDescriptor(dir_);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->volume, "v");
  EXPECT_TRUE(d->owner_local);
  EXPECT_TRUE(d->read_only);
  EXPECT_EQ(d->agent_socket, "/run/a.sock");
}

TEST_F(DescriptorTest, MissingOrMalformedIsAClearError) {
  EXPECT_EQ(ReadDescriptor(dir_).status().code(), absl::StatusCode::kNotFound);
  Write("{not json");
  EXPECT_EQ(ReadDescriptor(dir_).status().code(),
            absl::StatusCode::kInvalidArgument);
  Write(R"({"version":2,"volume":"v","lease":"l","attachToken":"t"})");
  EXPECT_EQ(ReadDescriptor(dir_).status().code(),
            absl::StatusCode::kInvalidArgument);
  Write(R"({"version":1,"volume":"v","lease":5,"attachToken":"t"})");
  EXPECT_EQ(ReadDescriptor(dir_).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace daxlease::client
