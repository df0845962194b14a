#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "csi/ndctl_backend.h"
#include "gtest/gtest.h"

namespace daxlease::csi {
namespace {

constexpr uint64_t k2M = 2 * kMiB;
constexpr uint64_t k16M = 16 * kMiB;

TEST(MapDevUsableBytes, MatchesWhatTheKernelGaveInTheLab) {
  // ndctl create-namespace -m fsdax -s 512M -> 502 MiB; -m devdax -s 256M ->
  // 250 MiB (6.1 kernel, 2 MiB alignment; the QEMU lab, tests/lab/).
  EXPECT_EQ(MapDevUsableBytes(512 * kMiB, k2M), 502 * kMiB);
  EXPECT_EQ(MapDevUsableBytes(256 * kMiB, k2M), 250 * kMiB);
}

TEST(MapDevUsableBytes, TinyNamespacesHaveNothingUsable) {
  EXPECT_EQ(MapDevUsableBytes(0, k2M), 0u);
  EXPECT_EQ(MapDevUsableBytes(kPfnInfoBytes, k2M), 0u);
  EXPECT_EQ(MapDevUsableBytes(k2M, k2M), 0u);
}

TEST(NamespaceBytesFor, UsableIsNeverBelowTheRequestAndSizeIsAligned) {
  for (uint64_t req :
       {uint64_t{1}, kMiB, 14 * kMiB, 15 * kMiB, 16 * kMiB, 100 * kMiB,
        250 * kMiB, 251 * kMiB, 502 * kMiB, 503 * kMiB, 1000 * kMiB + 4095}) {
    auto ns = NamespaceBytesFor(req, k16M, k2M);
    ASSERT_TRUE(ns.ok()) << req;
    EXPECT_EQ(*ns % k16M, 0u) << req;
    EXPECT_GE(*ns, kMinNamespaceBytes) << req;
    EXPECT_GE(MapDevUsableBytes(*ns, k2M), req) << req;
    // and it is the smallest such size
    if (*ns > kMinNamespaceBytes) {
      EXPECT_LT(MapDevUsableBytes(*ns - k16M, k2M), req) << req;
    }
  }
}

TEST(NamespaceBytesFor, EnlargesForTheMetadata) {
  // 256 MiB usable needs more than 256 MiB of namespace.
  auto ns = NamespaceBytesFor(256 * kMiB, k16M, k2M);
  ASSERT_TRUE(ns.ok());
  EXPECT_EQ(*ns, 272 * kMiB);
  // exactly what a 512 MiB namespace gives needs no more
  ns = NamespaceBytesFor(502 * kMiB, k16M, k2M);
  ASSERT_TRUE(ns.ok());
  EXPECT_EQ(*ns, 512 * kMiB);
}

TEST(NamespaceBytesFor, RejectsZero) {
  EXPECT_EQ(NamespaceBytesFor(0, k16M, k2M).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(NamespaceBytesFor(kMiB, 0, k2M).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// VolumeNamespaceUuid("pvc-1") as every release so far has made it.
constexpr char kPvc1Uuid[] = "68f7febd1af288ba97b1ff62585a43a9";

std::vector<RegionSpace> TwoRegions() {
  return {{"region0", 1024 * kMiB, 600 * kMiB, 400 * kMiB, k16M},
          {"region1", 2048 * kMiB, 300 * kMiB, 300 * kMiB, k16M}};
}

TEST(ChooseRegion, BestFitPicksTheSmallestRangeThatHolds) {
  auto p = ChooseRegion(TwoRegions(), 200 * kMiB, 0, k2M);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->region, "region1");
  EXPECT_GE(p->usable_bytes, 200 * kMiB);
  p = ChooseRegion(TwoRegions(), 350 * kMiB, 0, k2M);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->region, "region0");
}

TEST(ChooseRegion, FragmentedFreeSpaceIsNotEnough) {
  // 600 MiB free in region0 but only 400 MiB contiguous.
  auto p = ChooseRegion(TwoRegions(), 500 * kMiB, 0, k2M);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(ChooseRegion, NoRegionsIsExhausted) {
  EXPECT_EQ(ChooseRegion({}, kMiB, 0, k2M).status().code(),
            absl::StatusCode::kResourceExhausted);
}

TEST(ChooseRegion, RoundingAboveTheLimitIsOutOfRange) {
  // 100 MiB rounds up to a 112 MiB namespace = 110 MiB usable > limit.
  auto p = ChooseRegion(TwoRegions(), 100 * kMiB, 100 * kMiB, k2M);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_TRUE(ChooseRegion(TwoRegions(), 100 * kMiB, 200 * kMiB, k2M).ok());
}

TEST(CapacityOf, ReportsTheLargestCreatableNotTheFreeTotal) {
  Capacity c = CapacityOf(TwoRegions(), k2M);
  EXPECT_EQ(c.total_bytes, 3072 * kMiB);
  EXPECT_EQ(c.available_bytes, 900 * kMiB);
  EXPECT_EQ(c.max_volume_bytes, MapDevUsableBytes(400 * kMiB, k2M));
  // The reported maximum is really creatable, one byte more is not.
  EXPECT_TRUE(ChooseRegion(TwoRegions(), c.max_volume_bytes, 0, k2M).ok());
  EXPECT_EQ(ChooseRegion(TwoRegions(), c.max_volume_bytes + 1, 0, k2M)
                .status()
                .code(),
            absl::StatusCode::kResourceExhausted);
}

TEST(CapacityOf, RangesBelowTheMinimumCountAsNothing) {
  std::vector<RegionSpace> r = {
      {"region0", 64 * kMiB, 8 * kMiB, 8 * kMiB, k16M}};
  EXPECT_EQ(CapacityOf(r, k2M).max_volume_bytes, 0u);
}

TEST(VolumeNamespaceUuid, DeterministicDistinctAndVersioned) {
  auto a = VolumeNamespaceUuid("pvc-1");
  EXPECT_EQ(a, VolumeNamespaceUuid("pvc-1"));
  EXPECT_NE(a, VolumeNamespaceUuid("pvc-2"));
  EXPECT_EQ(a[6] >> 4, 8);
  EXPECT_EQ(a[8] >> 6, 2);
}

TEST(VolumeNamespaceUuid, UnchangedForExistingVolumes) {
  // Namespaces made by earlier releases must still be found as ours.
  auto u = VolumeNamespaceUuid("pvc-1");
  EXPECT_EQ(u, VolumeNamespaceUuid("pvc-1"));
  char hex[33];
  for (int i = 0; i < 16; ++i) std::snprintf(hex + 2 * i, 3, "%02x", u[i]);
  EXPECT_STREQ(hex, kPvc1Uuid);
}

TEST(SnapshotNamespace, NeverAVolumesNameOrUuid) {
  EXPECT_NE(SnapshotNamespaceUuid("pvc-1"), VolumeNamespaceUuid("pvc-1"));
  EXPECT_EQ(SnapshotNamespaceUuid("s1"), SnapshotNamespaceUuid("s1"));
  EXPECT_NE(SnapshotNamespaceUuid("s1"), SnapshotNamespaceUuid("s2"));
  EXPECT_EQ(*SnapshotNamespaceName("snap-1"), "s:snap-1");
  // The label holds 63 characters: "s:" + 61.
  EXPECT_TRUE(SnapshotNamespaceName(std::string(61, 'a')).ok());
  EXPECT_EQ(SnapshotNamespaceName(std::string(62, 'a')).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(SnapshotNamespaceName("").ok());
}

TEST(SnapshotNamespaceBytes, HeaderGapAndDataAlignedAndAtLeast16MiB) {
  EXPECT_EQ(SnapshotNamespaceBytes(2 * kMiB, k16M), k16M);
  EXPECT_EQ(SnapshotNamespaceBytes(14 * kMiB, k16M), k16M);
  EXPECT_EQ(SnapshotNamespaceBytes(14 * kMiB + 1, k16M), 2 * k16M);
  EXPECT_EQ(SnapshotNamespaceBytes(1024 * kMiB, k16M), 1040 * kMiB);
  EXPECT_EQ(SnapshotNamespaceBytes(1, 0), 0u);
}

TEST(ChooseRegionForSnapshot, BestFitOrExhausted) {
  auto p = ChooseRegionForSnapshot(TwoRegions(), 100 * kMiB);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->region, "region1");
  EXPECT_EQ(p->namespace_bytes, 112 * kMiB);
  EXPECT_EQ(p->usable_bytes, 100 * kMiB);
  auto none = ChooseRegionForSnapshot(TwoRegions(), 4096 * kMiB);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(SnapshotHeader, RoundTripsAndOnlyTheStateWordMarksCompletion) {
  SnapshotHeader h;
  h.snapshot_id = "snap-0123456789abcdef";
  h.data_bytes = 502 * kMiB;
  h.mode = VolumeMode::kDevdax;
  const std::string copying = EncodeSnapshotHeader(h);
  ASSERT_EQ(copying.size(), kSnapshotHeaderBytes);
  auto d = DecodeSnapshotHeader(copying);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_FALSE(d->complete);
  EXPECT_EQ(d->snapshot_id, h.snapshot_id);
  EXPECT_EQ(d->data_bytes, h.data_bytes);
  EXPECT_EQ(d->mode, VolumeMode::kDevdax);
  h.complete = true;
  const std::string complete = EncodeSnapshotHeader(h);
  // Everything but the 8-byte state word is the same: rewriting the first
  // sector tears nothing else.
  for (size_t i = 0; i < complete.size(); ++i) {
    if (i >= kSnapshotStateOffset && i < kSnapshotStateOffset + 8) continue;
    ASSERT_EQ(complete[i], copying[i]) << i;
  }
  EXPECT_TRUE(DecodeSnapshotHeader(complete)->complete);
}

TEST(SnapshotHeader, ZerosAndDamageAreNotASnapshot) {
  EXPECT_EQ(DecodeSnapshotHeader(std::string(kSnapshotHeaderBytes, '\0'))
                .status()
                .code(),
            absl::StatusCode::kDataLoss);
  SnapshotHeader h;
  h.snapshot_id = "s";
  h.data_bytes = 2 * kMiB;
  std::string b = EncodeSnapshotHeader(h);
  b[17] ^= 1;  // data bytes
  EXPECT_FALSE(DecodeSnapshotHeader(b).ok());
  b = EncodeSnapshotHeader(h);
  b[kSnapshotStateOffset] = 'X';  // half a state word
  EXPECT_FALSE(DecodeSnapshotHeader(b).ok());
  EXPECT_FALSE(DecodeSnapshotHeader("DXLSNAP1").ok());
}

}  // namespace
TEST(GrowMarker, RoundTripsAndRefusesATornWrite) {
  for (const bool switched : {false, true}) {
    for (const int gen : {0, 1}) {
      absl::StatusOr<GrowMarker> m =
          ParseGrowMarker(EncodeGrowMarker(GrowMarker{switched, gen}));
      ASSERT_TRUE(m.ok()) << m.status();
      EXPECT_EQ(m->switched, switched);
      EXPECT_EQ(m->generation, gen);
    }
  }
  EXPECT_EQ(EncodeGrowMarker(GrowMarker{true, 1}), "switched 1\n");
  // A crash between the truncate and the write of the first marker.
  EXPECT_EQ(ParseGrowMarker("").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(ParseGrowMarker("copy").status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(ParseGrowMarker("copying 2\n").status().code(),
            absl::StatusCode::kDataLoss);
}

}  // namespace daxlease::csi
