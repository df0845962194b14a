// operator_pass_bench: the operator's CPU and heap per reconcile pass over
// one volume of N leases, in process (no API server): the cache reader's
// Read, ComputePlan, the comparison the reconciler writes from, for a
// volume whose N leases are all Granted (a pass with nothing to do, the
// pass lease creations and informer resyncs trigger), all Pending (the
// grant pass) and with a recall that starts (the recall's first pass). Also
// the heap that N cached leases take: as parsed (the cache reader), as the
// informer's JSON and as the operator's informer keeps it (its
// resourceVersion: InformerOptions::cache_versions_only).
//
//   operator_pass_bench [--sizes 1000,10000] [--reps 5]
//
// Heap figures are glibc's mallinfo2 in-use bytes (arena + mmap), deltas.
#include <malloc.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "lib/api/json.h"
#include "lib/api/resources.h"
#include "lib/base/clock.h"
#include "lib/k8s/fake_client.h"
#include "lib/k8s/informer.h"
#include "operator/cache_reader.h"
#include "operator/controller.h"
#include "operator/plan.h"

namespace daxlease::op {
namespace {

const absl::Time kNow = absl::FromUnixSeconds(1'700'000'000);

int64_t HeapInUse() {
  struct mallinfo2 m = mallinfo2();
  return static_cast<int64_t>(m.uordblks + m.hblkhd);
}

double MiB(int64_t b) { return static_cast<double>(b) / (1024.0 * 1024.0); }

api::DaxVolume Volume() {
  api::DaxVolume v;
  v.metadata.name = "bench-vol";
  v.metadata.uid = "bench-vol-uid";
  v.metadata.resource_version = "1";
  v.spec.size_bytes = 1 << 30;
  v.spec.owner_node = "owner";
  v.spec.share = true;
  v.status.phase = api::VolumePhase::kReady;
  v.status.epoch = 3;
  v.metadata.finalizers = {api::kVolumeFinalizer};
  return v;
}

std::vector<api::DaxLease> PendingLeases(int n) {
  std::vector<api::DaxLease> out;
  out.reserve(n);
  for (int i = 0; i < n; ++i) {
    api::DaxLease l;
    l.metadata.name = absl::StrCat("bench-vol-l", i);
    l.metadata.uid = absl::StrCat("0000-uid-", i);
    l.metadata.generation = 1;
    l.metadata.resource_version = absl::StrCat(10 + i);
    l.spec = {"bench-vol", absl::StrCat("node-", i % 10), "",
              api::Access::kReadWrite};
    out.push_back(std::move(l));
  }
  return out;
}

template <typename F>
double MedianMs(int reps, F&& f) {
  std::vector<double> ms;
  for (int r = 0; r < reps; ++r) {
    absl::Time t0 = absl::Now();
    f();
    ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - t0));
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

void RunSize(int n, int reps) {
  World pending;
  pending.volume_name = "bench-vol";
  pending.volume = Volume();
  for (api::DaxLease& l : PendingLeases(n))
    pending.leases.push_back(std::move(l));
  Plan grant = ComputePlan(pending, kNow, {});
  World granted = grant.desired;
  for (size_t i = 0; i < granted.leases.size(); ++i) {
    granted.leases[i].Mutable().metadata.resource_version =
        absl::StrCat(10 + n + static_cast<int>(i));
  }
  granted.volume->metadata.resource_version = absl::StrCat(20 + 2 * n);

  // Heap: the informer's JSON of N granted leases, and as parsed.
  int64_t h0 = HeapInUse();
  std::vector<k8s::Json> json;
  json.reserve(n);
  for (const api::DaxLease& l : granted.leases) json.push_back(api::ToJson(l));
  const int64_t json_bytes = HeapInUse() - h0;
  h0 = HeapInUse();
  std::vector<k8s::Json> stubs;
  stubs.reserve(n);
  for (const k8s::Json& j : json) {
    stubs.push_back(k8s::Json(k8s::ResourceVersionOf(j)));
  }
  const int64_t stub_bytes = HeapInUse() - h0;
  stubs.clear();
  stubs.shrink_to_fit();
  h0 = HeapInUse();
  std::vector<api::DaxLease> parsed(granted.leases.begin(),
                                    granted.leases.end());
  const int64_t parsed_bytes = HeapInUse() - h0;
  parsed.clear();
  parsed.shrink_to_fit();

  base::FakeClock clock(kNow);
  k8s::FakeKubeClient fake(clock);
  auto options = [](const k8s::Resource& r) {
    k8s::InformerOptions o;
    o.resource = r;
    return o;
  };
  k8s::Informer vols(fake, clock, options(api::DaxVolumeResource()));
  k8s::Informer leases(fake, clock, options(api::DaxLeaseResource()));
  k8s::Informer recalls(fake, clock, options(api::DaxRecallResource()));
  CacheWorldReader reader(vols, leases, recalls);
  reader.Wrote(api::DaxVolumeResource(), api::ToJson(*granted.volume));
  h0 = HeapInUse();
  const absl::Time o0 = absl::Now();
  for (const k8s::Json& j : json) {
    reader.Observe(api::DaxLeaseResource(), j, false);
  }
  const double observe_ms = absl::ToDoubleMilliseconds(absl::Now() - o0);
  const int64_t reader_bytes = HeapInUse() - h0;

  int64_t read_peak = 0;
  const double read_ms = MedianMs(reps, [&] {
    const int64_t b = HeapInUse();
    absl::StatusOr<World> w = reader.Read("bench-vol");
    read_peak = std::max(read_peak, HeapInUse() - b);
    if (!w.ok() || static_cast<int>(w->leases.size()) != n) std::abort();
  });
  int64_t plan_peak = 0;
  const double idle_plan_ms = MedianMs(reps, [&] {
    const int64_t b = HeapInUse();
    Plan p = ComputePlan(granted, kNow, {});
    plan_peak = std::max(plan_peak, HeapInUse() - b);
    if (!(p.desired.leases == granted.leases)) {
      std::fprintf(stderr, "idle pass is not idle\n");
    }
  });
  const double compare_ms = MedianMs(reps, [&] {
    int changed = 0;
    for (size_t i = 0; i < granted.leases.size(); ++i) {
      changed += granted.leases[i] == grant.desired.leases[i] ? 0 : 1;
    }
    if (changed < 0) std::abort();
  });
  const double grant_plan_ms =
      MedianMs(reps, [&] { Plan p = ComputePlan(pending, kNow, {}); });

  World recalling = granted;
  api::DaxRecall r;
  r.metadata.name = "bench-recall";
  r.metadata.uid = "bench-recall-uid";
  r.metadata.resource_version = absl::StrCat(30 + 2 * n);
  r.metadata.creation_timestamp = kNow;
  r.spec = {"bench-vol", api::RecallReason::kManual, 60};
  recalling.recalls.push_back(r);
  const double recall_plan_ms =
      MedianMs(reps, [&] { Plan p = ComputePlan(recalling, kNow, {}); });
  const double copy_ms = MedianMs(reps, [&] { World w = granted; });

  std::printf(
      "N=%-6d read %7.1f ms  plan(idle) %7.1f ms  plan(grant N) %7.1f ms  "
      "plan(recall start) %7.1f ms  compare %5.1f ms  world copy %6.1f ms  "
      "observe N %6.1f ms\n",
      n, read_ms, idle_plan_ms, grant_plan_ms, recall_plan_ms, compare_ms,
      copy_ms, observe_ms);
  std::printf(
      "         heap: informer JSON %.1f MiB (as cached: versions %.1f MiB), "
      "parsed leases %.1f MiB, cache reader %.1f MiB; per pass: Read "
      "+%.1f MiB, ComputePlan +%.1f MiB\n",
      MiB(json_bytes), MiB(stub_bytes), MiB(parsed_bytes), MiB(reader_bytes),
      MiB(read_peak), MiB(plan_peak));
}

int Main(int argc, char** argv) {
  std::vector<int> sizes = {1000, 10000};
  int reps = 5;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--sizes=", 0) == 0) {
      sizes.clear();
      for (absl::string_view s : absl::StrSplit(a.substr(8), ',')) {
        int n;
        if (!absl::SimpleAtoi(s, &n) || n < 1) return 2;
        sizes.push_back(n);
      }
    } else if (a.rfind("--reps=", 0) == 0) {
      if (!absl::SimpleAtoi(a.substr(7), &reps) || reps < 1) return 2;
    } else {
      std::fprintf(stderr, "usage: operator_pass_bench [--sizes=] [--reps=]\n");
      return 2;
    }
  }
  for (int n : sizes) RunSize(n, reps);
  return 0;
}

}  // namespace
}  // namespace daxlease::op

int main(int argc, char** argv) { return daxlease::op::Main(argc, argv); }
