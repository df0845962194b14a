// snapshot_bench: what a snapshot of a file-backend volume costs against a
// plain copy of the same media.
//
// One ext4 volume (default 1 GiB) is created and staged on the real
// daxlease-csi and filled with data (default 90 % of it, fsynced). Then, in
// the same run and interleaved:
//   snapshot: CreateSnapshot over gRPC while the volume stays staged (the
//             freeze, the copy of the image's data extents, fsync, rename,
//             the two durable records, the thaw), then DeleteSnapshot
//             (not timed);
//   cp:       `cp --reflink=never --sparse=always IMAGE COPY` of the same
//             image, then fsync of the copy (what the snapshot owes too);
// and prints the medians and the ratio snapshot / cp. On a filesystem with
// reflinks the snapshot is a reflink and the ratio is far below 1.
//
//   snapshot_bench [--iterations N] [--size-mib M] [--fill-percent P]
//
// Needs root and loop devices; without them it says so and exits 0.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "lib/base/status.h"
#include "tests/bench/csi_bench_env.h"
#include "tests/integration/plugin_harness.h"

namespace daxlease::bench {
namespace {

using testing::CallJson;

// Pulls "volumeId" (or another string field) out of a proto3 JSON answer.
std::string Field(const std::string& json, const std::string& key) {
  size_t at = json.find("\"" + key + "\"");
  if (at == std::string::npos) return "";
  at = json.find(':', at);
  if (at == std::string::npos) return "";
  at = json.find('"', at);
  if (at == std::string::npos) return "";
  ++at;
  return json.substr(at, json.find('"', at) - at);
}

int Main(int argc, char** argv) {
  int iterations = 5;
  int64_t size_mib = 1024;
  int fill_percent = 90;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    bool ok = true;
    if (flag == "--iterations") {
      ok = absl::SimpleAtoi(argv[i + 1], &iterations);
    } else if (flag == "--size-mib") {
      ok = absl::SimpleAtoi(argv[i + 1], &size_mib);
    } else if (flag == "--fill-percent") {
      ok = absl::SimpleAtoi(argv[i + 1], &fill_percent);
    } else {
      ok = false;
    }
    if (!ok) {
      std::fprintf(stderr,
                   "usage: snapshot_bench [--iterations N] [--size-mib M] "
                   "[--fill-percent P]\n");
      return 64;
    }
  }
  absl::StatusOr<std::optional<CsiBenchEnv>> env =
      StartCsiBenchEnv("snapshot_bench", "daxlease-snapbench-");
  if (!env.ok()) {
    std::fprintf(stderr, "%s\n", env.status().ToString().c_str());
    return 1;
  }
  if (!env->has_value()) return 0;  // skipped, and said why
  const std::string& base = (*env)->base;
  const testing::PluginOptions& o = (*env)->options;
  const std::string staging = (*env)->root + "/staging";
  if (!testing::MakeDirs(staging).ok()) return 1;
  auto ch = (*env)->plugin->channel();
  auto fail = [&](const absl::Status& s) {
    std::fprintf(stderr, "snapshot_bench: %s\n", s.ToString().c_str());
    (void)testing::ForceCleanup({base}, o.state_dir);
    return 1;
  };
  const int64_t size = size_mib << 20;
  auto created = CallJson(
      ch, "/csi.v1.Controller/CreateVolume",
      absl::StrCat(R"({"name":"bench-snap","capacityRange":{"requiredBytes":")",
                   size,
                   R"("},"volumeCapabilities":[{"mount":{"fsType":"ext4"},)"
                   R"("accessMode":{"mode":"SINGLE_NODE_WRITER"}}]})"));
  if (!created.ok()) return fail(created.status());
  const std::string vol = Field(*created, "volumeId");
  auto staged = CallJson(
      ch, "/csi.v1.Node/NodeStageVolume",
      absl::StrCat(R"({"volumeId":")", vol, R"(","stagingTargetPath":")",
                   staging,
                   R"(","volumeCapability":{"mount":{"fsType":"ext4"},)"
                   R"("accessMode":{"mode":"SINGLE_NODE_WRITER"}}})"));
  if (!staged.ok()) return fail(staged.status());
  // The data: distinct 1 MiB blocks, fsynced.
  const int64_t fill = size / 100 * fill_percent;
  for (int64_t off = 0; off < fill; off += 1 << 20) {
    absl::Status s = testing::WriteAndSync(
        staging + "/data", off,
        testing::Pattern(1 << 20, static_cast<uint32_t>(off >> 20)));
    if (!s.ok()) return fail(s);
  }
  const std::string image = o.state_dir + "/volumes/" + vol + ".img";
  const std::string copy = base + "/copy.img";

  std::vector<double> snap_ms, cp_ms;
  auto snapshot_once = [&](int i) -> absl::Status {
    const absl::Time t0 = absl::Now();
    auto made = CallJson(ch, "/csi.v1.Controller/CreateSnapshot",
                         absl::StrCat(R"({"name":"bench-)", i,
                                      R"(","sourceVolumeId":")", vol, R"("})"),
                         absl::Minutes(10));
    if (!made.ok()) return made.status();
    snap_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - t0));
    auto gone = CallJson(ch, "/csi.v1.Controller/DeleteSnapshot",
                         absl::StrCat(R"({"snapshotId":")",
                                      Field(*made, "snapshotId"), R"("})"));
    return gone.status();
  };
  auto cp_once = [&]() -> absl::Status {
    const absl::Time t0 = absl::Now();
    RETURN_IF_ERROR(
        Run({"cp", "--reflink=never", "--sparse=always", image, copy}));
    RETURN_IF_ERROR(Fsync(copy));
    cp_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - t0));
    if (::unlink(copy.c_str()) != 0) {
      return base::ErrnoStatus("unlink", copy, errno);
    }
    return absl::OkStatus();
  };
  // Warm-up, not counted.
  absl::Status s = snapshot_once(1000);
  if (s.ok()) s = cp_once();
  snap_ms.clear();
  cp_ms.clear();
  for (int i = 0; s.ok() && i < iterations; ++i) {
    if (i % 2 == 0) {
      s = snapshot_once(i);
      if (s.ok()) s = cp_once();
    } else {
      s = cp_once();
      if (s.ok()) s = snapshot_once(i);
    }
  }
  if (!s.ok()) return fail(s);
  (void)CallJson(ch, "/csi.v1.Node/NodeUnstageVolume",
                 absl::StrCat(R"({"volumeId":")", vol,
                              R"(","stagingTargetPath":")", staging, R"("})"));
  (void)CallJson(ch, "/csi.v1.Controller/DeleteVolume",
                 absl::StrCat(R"({"volumeId":")", vol, R"("})"));
  const double snap = Median(snap_ms), cp = Median(cp_ms);
  std::printf(
      "snapshot_bench: %lld MiB ext4 volume, %d%% filled, staged; %d "
      "iterations, medians\n"
      "  CreateSnapshot (freeze, sparse copy, fsync, records, thaw): %8.1f ms\n"
      "  cp --sparse=always of the same image + fsync:             %8.1f ms\n"
      "  ratio snapshot / cp: %.2f\n",
      static_cast<long long>(size_mib), fill_percent, iterations, snap, cp,
      cp > 0 ? snap / cp : 0.0);
  (void)testing::ForceCleanup({base}, o.state_dir);
  return 0;
}

}  // namespace
}  // namespace daxlease::bench

int main(int argc, char** argv) { return daxlease::bench::Main(argc, argv); }
