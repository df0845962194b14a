#include "lib/api/label_value.h"

#include <map>
#include <string>

#include "gtest/gtest.h"
#include "lib/api/types.h"
#include "lib/k8s/selector.h"

namespace daxlease::api {
namespace {

// A label value: at most 63 characters, alphanumeric at both ends, only
// alphanumerics, '-', '_' and '.' between.
bool IsLabelValue(const std::string& v) {
  auto alnum = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9');
  };
  if (v.size() > 63) return false;
  if (v.empty()) return true;
  if (!alnum(v.front()) || !alnum(v.back())) return false;
  for (char c : v) {
    if (!alnum(c) && c != '-' && c != '_' && c != '.') return false;
  }
  return true;
}

TEST(LabelValueForTest, AShortNameIsItself) {
  EXPECT_EQ(LabelValueFor("vol-1-to-node-b-abcd1234"),
            "vol-1-to-node-b-abcd1234");
  const std::string n63(63, 'a');
  EXPECT_EQ(LabelValueFor(n63), n63);
}

// What `kubectl daxlease migrate` names a migration of a volume whose ID is
// as long as the CSI driver makes them (57 characters).
TEST(LabelValueForTest, ALongNameIsCutAndHashedIntoALabelValue) {
  const std::string vol = std::string(40, 'p') + "-0123456789abcdef";
  const std::string name = vol + "-to-node-b-abcd1234";
  const std::string v = LabelValueFor(name);
  EXPECT_EQ(v.size(), 63u);
  EXPECT_TRUE(IsLabelValue(v)) << v;
  EXPECT_EQ(v.substr(0, 46), name.substr(0, 46));
  EXPECT_EQ(LabelValueFor(name), v);  // stable
  // Names alike in their first 46 characters stay apart; a cut at a dot or
  // a dash still ends alphanumeric.
  EXPECT_NE(LabelValueFor(vol + "-to-node-c-abcd1234"), v);
  const std::string dotted = std::string(45, 'a') + ".b" + std::string(30, 'c');
  EXPECT_TRUE(IsLabelValue(LabelValueFor(dotted))) << LabelValueFor(dotted);
}

// A DaxVolume made by hand may have a name longer than a label value: the
// selector of its objects selects the label value written for it (and only
// that), and parses as a label selector.
TEST(LabelValueForTest, VolumeSelectorSelectsWhatIsWrittenForTheVolume) {
  EXPECT_EQ(VolumeLabelSelector("pvc-1"), "daxlease.io/volume=pvc-1");
  const std::string vol = "hand-made-" + std::string(62, 'v');
  ASSERT_GT(vol.size(), 63u);
  const std::string selector = VolumeLabelSelector(vol);
  EXPECT_EQ(selector, std::string(kVolumeLabel) + "=" + LabelValueFor(vol));
  auto parsed = k8s::LabelSelector::Parse(selector);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  using Labels = std::map<std::string, std::string>;
  EXPECT_TRUE(parsed->Matches(Labels{{kVolumeLabel, LabelValueFor(vol)}}));
  EXPECT_FALSE(parsed->Matches(Labels{{kVolumeLabel, vol.substr(0, 63)}}));
  EXPECT_FALSE(
      parsed->Matches(Labels{{kVolumeLabel, LabelValueFor(vol + "-2")}}));
}

}  // namespace
}  // namespace daxlease::api
