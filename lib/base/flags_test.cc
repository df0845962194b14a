#include "lib/base/flags.h"

#include "gtest/gtest.h"

namespace daxlease::base {
namespace {

TEST(FlagsTest, DashedNamesBecomeUnderscoredValuesStay) {
  EXPECT_EQ(
      UnderscoreFlagNames({"prog", "--node-id=a-b", "--state-dir", "/var/x-y",
                           "-v", "pos-arg", "--max-volumes"}),
      (std::vector<std::string>{"prog", "--node_id=a-b", "--state_dir",
                                "/var/x-y", "-v", "pos-arg", "--max_volumes"}));
}

TEST(FlagsTest, NothingAfterDoubleDashAndNotArgvZero) {
  EXPECT_EQ(UnderscoreFlagNames({"--odd-prog", "--a-b", "--", "--c-d"}),
            (std::vector<std::string>{"--odd-prog", "--a_b", "--", "--c-d"}));
  EXPECT_EQ(UnderscoreFlagNames({"prog", "--already_fine=--x-y"}),
            (std::vector<std::string>{"prog", "--already_fine=--x-y"}));
}

}  // namespace
}  // namespace daxlease::base
