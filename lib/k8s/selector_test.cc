#include "lib/k8s/selector.h"

#include "gtest/gtest.h"

namespace daxlease::k8s {
namespace {

bool Match(const char* sel, std::map<std::string, std::string> labels) {
  absl::StatusOr<LabelSelector> s = LabelSelector::Parse(sel);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() && s->Matches(labels);
}

TEST(LabelSelectorTest, EqualityAndInequality) {
  EXPECT_TRUE(Match("", {}));
  EXPECT_TRUE(Match("app=x", {{"app", "x"}}));
  EXPECT_TRUE(Match("app==x", {{"app", "x"}}));
  EXPECT_FALSE(Match("app=x", {{"app", "y"}}));
  EXPECT_FALSE(Match("app=x", {}));
  EXPECT_TRUE(Match("app!=x", {}));  // absent counts as "not x"
  EXPECT_FALSE(Match("app!=x", {{"app", "x"}}));
  EXPECT_TRUE(Match("app=x, tier=db", {{"app", "x"}, {"tier", "db"}}));
  EXPECT_FALSE(Match("app=x,tier=db", {{"app", "x"}}));
}

TEST(LabelSelectorTest, ExistenceAndSets) {
  EXPECT_TRUE(Match("app", {{"app", ""}}));
  EXPECT_FALSE(Match("app", {}));
  EXPECT_TRUE(Match("!app", {}));
  EXPECT_FALSE(Match("!app", {{"app", "x"}}));
  EXPECT_TRUE(Match("env in (a, b)", {{"env", "b"}}));
  EXPECT_FALSE(Match("env in (a,b)", {{"env", "c"}}));
  EXPECT_TRUE(Match("env notin (a,b),app", {{"env", "c"}, {"app", "1"}}));
  EXPECT_FALSE(Match("env notin (a,b)", {{"env", "a"}}));
  EXPECT_TRUE(Match("daxlease.io/volume=v1", {{"daxlease.io/volume", "v1"}}));
}

TEST(LabelSelectorTest, RejectsGarbage) {
  EXPECT_FALSE(LabelSelector::Parse("=x").ok());
  EXPECT_FALSE(LabelSelector::Parse("env within (a)").ok());
  EXPECT_FALSE(LabelSelector::Parse("a b").ok());
}

// As the API server parses a selector: keys and values must be what a
// label may hold.
TEST(LabelSelectorTest, RejectsKeysAndValuesNoLabelMayHold) {
  EXPECT_TRUE(LabelSelector::Parse("k=" + std::string(63, 'v')).ok());
  EXPECT_FALSE(LabelSelector::Parse("k=" + std::string(64, 'v')).ok());
  EXPECT_FALSE(LabelSelector::Parse("k!=-v").ok());
  EXPECT_FALSE(LabelSelector::Parse("k in (a, b.)").ok());
  EXPECT_FALSE(LabelSelector::Parse("a/b/c").ok());
  EXPECT_FALSE(LabelSelector::Parse("Example.com/k=v").ok());
  EXPECT_FALSE(LabelSelector::Parse(std::string(64, 'k') + "=v").ok());
  EXPECT_TRUE(LabelSelector::Parse("example.com/K_1=v,k in (a, B_2)").ok());
  EXPECT_TRUE(LabelSelector::Parse("k=").ok());  // the empty value
}

TEST(LabelSelectorTest, MatchesObjectLabels) {
  nlohmann::json obj = {{"metadata", {{"labels", {{"app", "x"}}}}}};
  EXPECT_TRUE(LabelSelector::Parse("app=x")->Matches(obj));
  EXPECT_FALSE(LabelSelector::Parse("app=y")->Matches(obj));
  EXPECT_TRUE(LabelSelector::Parse("!app")->Matches(nlohmann::json::object()));
}

TEST(FieldSelectorTest, PathsAndValues) {
  nlohmann::json obj = {{"metadata", {{"name", "a"}, {"namespace", "n"}}},
                        {"spec", {{"size", 3}}}};
  EXPECT_TRUE(FieldSelector::Parse("metadata.name=a")->Matches(obj));
  EXPECT_TRUE(FieldSelector::Parse("metadata.name==a,metadata.namespace=n")
                  ->Matches(obj));
  EXPECT_FALSE(FieldSelector::Parse("metadata.name!=a")->Matches(obj));
  EXPECT_TRUE(FieldSelector::Parse("spec.size=3")->Matches(obj));
  EXPECT_TRUE(FieldSelector::Parse("spec.missing!=3")->Matches(obj));
  EXPECT_FALSE(FieldSelector::Parse("nonsense").ok());
  EXPECT_EQ(FieldSelector::Parse("a.b=1,c=2")->Paths(),
            (std::vector<std::string>{"a.b", "c"}));
}

}  // namespace
}  // namespace daxlease::k8s
