// daxlease_io_output.h against the lines client/tools/daxlease_io.c prints
// (its printf formats), and against what must not parse: a line cut short by
// a writer still running, a line of another kind, a format that changed.
#include "tests/twonode/daxlease_io_output.h"

#include <optional>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace daxlease::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::Eq;
using ::testing::Optional;

TEST(ParsePersistedLineTest, ReadsTheThreeFields) {
  const std::optional<PersistedLine> p =
      ParsePersistedLine("persisted seq=12 index=11 epoch=3");
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->seq, 12u);
  EXPECT_EQ(p->index, 11u);
  EXPECT_EQ(p->epoch, 3);
}

TEST(ParsePersistedLineTest, RejectsAnythingElse) {
  for (const char* line : {
           "", "revoked seq=5 unpersisted=4096",
           "error seq=3 DAXLEASE_E_IO: read failed",
           "persisted seq=12 index=11",              // cut short
           "persisted seq=12 index=11 epoch=",       // cut short
           "persisted seq=12 index=11 epoch=3 x=1",  // a field more
           "persisted seq=-1 index=0 epoch=1",
           "persisted seq=+1 index=0 epoch=1",
           "persisted seq=1  index=0 epoch=1",
           "persisted index=0 seq=1 epoch=1",
           " persisted seq=1 index=0 epoch=1",
           "persisted seq=1 index=0 epoch=1\r",
           "persisted seq=99999999999999999999 index=0 epoch=1",  // > 2^64
       }) {
    EXPECT_EQ(ParsePersistedLine(line), std::nullopt) << line;
  }
}

TEST(LastPersistedSeqTest, TheLastWholePersistedLine) {
  EXPECT_THAT(LastPersistedSeq("persisted seq=1 index=0 epoch=1\n"),
              Optional(Eq(1u)));
  EXPECT_THAT(LastPersistedSeq("persisted seq=1 index=0 epoch=1\n"
                               "persisted seq=2 index=1 epoch=1\n"
                               "error seq=3 DAXLEASE_E_IO: x\n"
                               "persisted seq=3 index=2 epoch=2\n"
                               "revoked seq=4 unpersisted=4096\n"
                               "\n"),
              Optional(Eq(3u)));
}

// A running writer's log may end in the middle of a line: "persisted seq=10"
// of "persisted seq=100 ...", which the line before must win over.
TEST(LastPersistedSeqTest, IgnoresALineNotYetWhole) {
  EXPECT_THAT(LastPersistedSeq("persisted seq=99 index=98 epoch=1\n"
                               "persisted seq=10"),
              Optional(Eq(99u)));
  EXPECT_EQ(LastPersistedSeq("persisted seq=1 index=0 epoch=1"), std::nullopt);
}

TEST(LastPersistedSeqTest, NoneOrNotInTheFormatIsNoValue) {
  EXPECT_EQ(LastPersistedSeq(""), std::nullopt);
  EXPECT_EQ(LastPersistedSeq("\n\n"), std::nullopt);
  EXPECT_EQ(LastPersistedSeq("revoked seq=1 unpersisted=4096\n"), std::nullopt);
  // The last persisted line changed format: not the line before it.
  EXPECT_EQ(LastPersistedSeq("persisted seq=1 index=0 epoch=1\n"
                             "persisted seq=2 idx=1 epoch=1\n"),
            std::nullopt);
}

TEST(ParseVerifyTest, ReadsTheSummary) {
  const std::optional<VerifySummary> s = ParseVerify(
      "blocks=16384 valid=16000 empty=384 corrupt=0 maxseq=52000\n");
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->blocks, 16384u);
  EXPECT_EQ(s->valid, 16000u);
  EXPECT_EQ(s->empty, 384u);
  EXPECT_EQ(s->corrupt, 0u);
  EXPECT_EQ(s->maxseq, 52000u);
  EXPECT_THAT(s->corrupt_at, ::testing::IsEmpty());
}

TEST(ParseVerifyTest, ReadsTheCorruptBlocksNamed) {
  std::optional<VerifySummary> s = ParseVerify(
      "blocks=10 valid=9 empty=0 corrupt=1 maxseq=9\ncorrupt_at=9\n");
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->corrupt, 1u);
  EXPECT_THAT(s->corrupt_at, ElementsAre(9u));
  // 20 corrupt: the first 16 named.
  s = ParseVerify(
      "blocks=20 valid=0 empty=0 corrupt=20 maxseq=0\n"
      "corrupt_at=0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15\n");
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->corrupt_at.size(), 16u);
  EXPECT_EQ(s->corrupt_at.back(), 15u);
}

TEST(ParseVerifyTest, RejectsAnythingElse) {
  for (const char* out : {
           "",
           "\n",
           // No newline: cut short.
           "blocks=10 valid=10 empty=0 corrupt=0 maxseq=10",
           // A field missing, renamed or more.
           "blocks=10 valid=10 empty=0 corrupt=0\n",
           "blocks=10 valid=10 empty=0 corrupt=0 max=10\n",
           "blocks=10 valid=10 empty=0 corrupt=0 maxseq=10 x=1\n",
           // The counts do not add up.
           "blocks=10 valid=10 empty=1 corrupt=0 maxseq=10\n",
           // Corrupt blocks but not named, or named wrong.
           "blocks=10 valid=9 empty=0 corrupt=1 maxseq=9\n",
           "blocks=10 valid=9 empty=0 corrupt=1 maxseq=9\ncorrupt_at=\n",
           "blocks=10 valid=9 empty=0 corrupt=1 maxseq=9\ncorrupt_at=3,4\n",
           "blocks=10 valid=9 empty=0 corrupt=1 maxseq=9\ncorrupt_at=x\n",
           // Something after the summary.
           "blocks=10 valid=10 empty=0 corrupt=0 maxseq=10\nmore\n",
           // Something before it.
           "attach: ok\nblocks=10 valid=10 empty=0 corrupt=0 maxseq=10\n",
       }) {
    EXPECT_EQ(ParseVerify(out), std::nullopt) << out;
  }
}

}  // namespace
}  // namespace daxlease::testing
