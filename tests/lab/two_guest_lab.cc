// daxlease-lab-two: the pieces of the two-guest lab tests (guest/two_*.sh)
// that a shell cannot do: a recall driven and checked through the real API
// server, and a remote holder that stops answering and is then shown to be
// fenced.
//
//   daxlease-lab-two recall KUBECONFIG VOLUME GRACE RELEASED REVOKED
//       creates a Manual DaxRecall of VOLUME (as kubectl daxlease recall
//       does), waits for it to complete, checks its released/revoked counts,
//       that each revoked lease's fence was confirmed by the owner, and that
//       the volume is Ready again at exactly its epoch + 1. Prints
//       "FIGURE recall_complete_ms N ms" and "EPOCH a -> b". Exit 0 when all
//       hold.
//   daxlease-lab-two holder DIR OFFSET
//       attaches to the published directory DIR through libdaxlease (RDMA
//       to the owner), writes and persists "kept" at OFFSET, prints
//       "holder: persisted" and stops itself (SIGSTOP: the process answers
//       nothing, its recall is never acked). When continued: an RDMA write
//       through its own old connection (window key) must be refused, the
//       library must report REVOKED for its next call, and the process lives
//       to say so. Exit 0 when all hold.
//   daxlease-lab-two inflight DIR OFFSET GO_FILE
//       attaches to DIR through libdaxlease (RDMA to the owner), writes and
//       persists generation 0 of a 4 MiB pattern at OFFSET, prints
//       "inflight: persisted" and waits for a recall. Its pre-flush hook
//       does not flush: it rewrites the 4 MiB (generation 1, 2, ...: four
//       1 MiB RDMA WRITEs in flight at a time, each hundreds of packets)
//       until one is refused, so the recall's deadline passes with a large
//       write in flight: the owner invalidates the window under it. Checks
//       the refused write got PERMISSION_DENIED and the library REVOKED,
//       detaches; once GO_FILE exists (the owner has digested its memory)
//       attaches again: granted at the new epoch, the library connects a
//       fresh QP; reads the 4 MiB back (a prefix of the refused generation,
//       whatever of it was placed before the window went, then the previous
//       generation whole: nothing after the fence), writes, persists and
//       reads back 1 MiB at OFFSET + 8 MiB. Prints "FIGURE
//       inflight_refused_write_landed_bytes N" and "inflight: reconnected
//       at epoch E". Exit 0 when all hold.
//   daxlease-lab-two bench DIR MIB
//       through libdaxlease over RDMA: MIB 1 MiB writes (then one persist)
//       and MIB 1 MiB reads over the volume's first 16 MiB, and 1000 64-byte
//       reads; prints "BENCH libdaxlease write_MBps|read_MBps|
//       read_lat_typical_us|read_lat_avg_us|read_lat_min_us N" (MB = 2^20
//       bytes, as perftest counts), then "BENCH probe" lines: the cost of
//       the primitives a small read uses, and 64-byte reads through the
//       library and through its remote region directly, interleaved.
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/volume.h"
#include "lib/api/json.h"
#include "lib/api/resources.h"
#include "lib/api/types.h"
#include "lib/k8s/config.h"
#include "lib/k8s/rest_client.h"
#include "node-agent/fabric/verbs_fabric.h"
#include "node-agent/testing/keeping_connector.h"
#include "operator/kubectl_recall.h"

namespace daxlease {
namespace {

int Fail(const std::string& why) {
  std::fprintf(stderr, "daxlease-lab-two: %s\n", why.c_str());
  return 1;
}

absl::StatusOr<api::DaxVolume> GetVolume(k8s::KubeClient& c,
                                         const std::string& name) {
  auto j = c.Get(api::DaxVolumeResource(), "", name);
  if (!j.ok()) return j.status();
  return api::FromJson<api::DaxVolume>(*j);
}

int Recall(const std::string& kubeconfig, const std::string& volume, int grace,
           int want_released, int want_revoked) {
  auto config = k8s::LoadDefaultConfig(kubeconfig);
  if (!config.ok()) return Fail(config.status().ToString());
  auto client = k8s::RestKubeClient::Create(*config);
  if (!client.ok()) return Fail(client.status().ToString());
  k8s::KubeClient& c = **client;
  auto before = GetVolume(c, volume);
  if (!before.ok()) return Fail(before.status().ToString());
  const int64_t epoch0 = before->status.epoch;
  api::DaxRecall r;
  r.spec.volume = volume;
  r.spec.grace_seconds = grace;
  r.spec.reason = api::RecallReason::kManual;
  const absl::Time t0 = absl::Now();
  auto created = op::CreateRecallOnce(
      c, r, absl::StrCat(volume, "-lab-", absl::ToUnixMillis(t0)));
  if (!created.ok()) return Fail(created.status().ToString());
  const std::string name = k8s::NameOf(*created);
  std::printf("recall %s created (epoch %lld, grace %d s)\n", name.c_str(),
              static_cast<long long>(epoch0), grace);
  std::fflush(stdout);
  api::DaxRecall done;
  for (;;) {
    auto j = c.Get(api::DaxRecallResource(), "", name);
    if (j.ok()) {
      auto got = api::FromJson<api::DaxRecall>(*j);
      if (got.ok() && got->status.phase == api::RecallPhase::kComplete) {
        done = *got;
        break;
      }
    }
    if (absl::Now() - t0 > absl::Seconds(grace + 120)) {
      return Fail(absl::StrCat("recall ", name, " not Complete after ",
                               grace + 120, " s"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::printf("FIGURE recall_complete_ms %.1f ms\n",
              absl::ToDoubleMilliseconds(absl::Now() - t0));
  std::printf("recall %s: released %d revoked %d\n", name.c_str(),
              done.status.released, done.status.revoked);
  int bad = 0;
  if (done.status.released != want_released ||
      done.status.revoked != want_revoked) {
    std::printf("CHECK FAIL: want released %d revoked %d\n", want_released,
                want_revoked);
    ++bad;
  }
  if (want_revoked > 0) {
    // Every revoked lease of this recall: the owner confirmed its fence.
    auto leases = c.List(api::DaxLeaseResource(), "", {});
    if (!leases.ok()) return Fail(leases.status().ToString());
    int fenced = 0;
    for (const k8s::Json& l : leases->items) {
      auto lease = api::FromJson<api::DaxLease>(l);
      if (lease.ok() && lease->spec.volume == volume &&
          lease->status.fenced_recall_id == done.status.recall_id) {
        ++fenced;
      }
    }
    std::printf("fences confirmed for recall %s: %d\n",
                done.status.recall_id.c_str(), fenced);
    if (fenced != want_revoked) ++bad;
  }
  // The volume resumes at the next epoch.
  for (;;) {
    auto v = GetVolume(c, volume);
    if (v.ok() && v->status.phase == api::VolumePhase::kReady &&
        v->status.epoch > epoch0) {
      std::printf("EPOCH %lld -> %lld\n", static_cast<long long>(epoch0),
                  static_cast<long long>(v->status.epoch));
      if (v->status.epoch != epoch0 + 1) ++bad;
      break;
    }
    if (absl::Now() - t0 > absl::Seconds(grace + 180)) {
      return Fail("the volume did not return to Ready at a new epoch");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::fflush(stdout);
  return bad == 0 ? 0 : 1;
}

using agent::testing::KeepingConnector;

int Holder(const std::string& dir, uint64_t off) {
  auto keeping = std::make_unique<KeepingConnector>();
  KeepingConnector* kc = keeping.get();
  client::AttachOptions o;
  o.timeout = absl::Seconds(120);
  auto vol = client::Volume::Attach(dir, o, std::move(keeping));
  if (!vol.ok()) return Fail(vol.status().ToString());
  if ((*vol)->is_local()) return Fail("attached locally, not through RDMA");
  absl::Status st = (*vol)->Write(off, "kept", 4);
  if (st.ok()) st = (*vol)->Persist(off, 4);
  if (!st.ok()) return Fail(st.ToString());
  std::shared_ptr<fabric::RemoteRegion> raw = kc->last();
  if (raw == nullptr) return Fail("no RDMA connection was made");
  std::printf("holder: persisted at epoch %lld\n",
              static_cast<long long>((*vol)->epoch()));
  std::fflush(stdout);
  ::raise(SIGSTOP);  // silent: no thread of this process runs until SIGCONT
  std::printf("holder: continued\n");
  int bad = 0;
  absl::Status late = raw->Write(off + 64, absl::MakeConstSpan("late-rdma", 9));
  std::printf("holder: late RDMA write: %s\n", late.ToString().c_str());
  if (late.code() != absl::StatusCode::kPermissionDenied) ++bad;
  const absl::Time t0 = absl::Now();
  while (!(*vol)->revoked() && absl::Now() - t0 < absl::Seconds(60)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  absl::Status call = (*vol)->Write(off + 128, "late", 4);
  std::printf("holder: next library call: %s (revoked=%d)\n",
              call.ToString().c_str(), (*vol)->revoked() ? 1 : 0);
  if (call.code() != absl::StatusCode::kPermissionDenied || !(*vol)->revoked())
    ++bad;
  std::printf("holder: alive, %s\n", bad == 0 ? "all as expected" : "FAILED");
  std::fflush(stdout);
  return bad == 0 ? 0 : 1;
}

// The inflight test's pattern: generation `gen` of the 4 MiB at `offset`;
// every 8 bytes say which generation and where.
constexpr uint64_t kInflightBytes = 4u << 20;
void FillGeneration(std::vector<char>& buf, uint64_t offset, uint32_t gen) {
  for (size_t i = 0; i + 8 <= buf.size(); i += 8) {
    const uint64_t v = (uint64_t{gen} << 40) ^ ((offset + i) * 0x9E3779B1u);
    std::memcpy(buf.data() + i, &v, 8);
  }
}

// Attaches to `dir` over RDMA, retrying while the publish is still revoked
// (the agent asks for the next lease once the revocation is acknowledged).
absl::StatusOr<std::unique_ptr<client::Volume>> AttachRemote(
    const std::string& dir, absl::Duration within) {
  client::AttachOptions o;
  o.timeout = absl::Seconds(120);
  const absl::Time give_up = absl::Now() + within;
  while (true) {
    auto vol = client::Volume::Attach(dir, o,
                                      std::make_unique<fabric::AnyConnector>());
    if (vol.ok() && (*vol)->is_local())
      return absl::FailedPreconditionError("attached locally, not over RDMA");
    if (vol.ok() || !absl::IsPermissionDenied(vol.status()) ||
        absl::Now() > give_up) {
      return vol;
    }
    std::printf("inflight: attach: %s; again\n",
                vol.status().ToString().c_str());
    std::fflush(stdout);
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
}

int Inflight(const std::string& dir, uint64_t off, const std::string& go) {
  auto vol = AttachRemote(dir, absl::Seconds(60));
  if (!vol.ok()) return Fail(vol.status().ToString());
  std::vector<char> buf(kInflightBytes);
  FillGeneration(buf, off, 0);
  absl::Status st = (*vol)->Write(off, buf.data(), buf.size());
  if (st.ok()) st = (*vol)->Persist(off, buf.size());
  if (!st.ok()) return Fail(st.ToString());
  const int64_t epoch0 = (*vol)->epoch();
  std::printf("inflight: persisted at epoch %lld\n",
              static_cast<long long>(epoch0));
  std::fflush(stdout);

  // The recall's pre-flush hook rewrites the range until a write is refused.
  std::atomic<uint32_t> refused_gen{0};
  absl::Status refused;
  std::atomic<bool> hook_done{false};
  client::Volume* v = vol->get();
  v->SetPreflushHook([&, v] {
    std::vector<char> g(kInflightBytes);
    // Said before the first rewrite: under heavy load the deadline can
    // come during generation 1 (its write refused mid-transfer).
    std::printf("inflight: recalled; rewriting the range\n");
    std::fflush(stdout);
    const absl::Time t0 = absl::Now();
    for (uint32_t gen = 1; absl::Now() - t0 < absl::Seconds(300); ++gen) {
      FillGeneration(g, off, gen);
      absl::Status w = v->Write(off, g.data(), g.size());
      if (!w.ok()) {
        refused = w;
        refused_gen.store(gen);
        break;
      }
    }
    hook_done.store(true);
  });
  const absl::Time t0 = absl::Now();
  while (!(v->revoked() && hook_done.load()) &&
         absl::Now() - t0 < absl::Seconds(400)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  int bad = 0;
  const uint32_t k = refused_gen.load();
  std::printf("inflight: write of generation %u refused: %s (revoked=%d)\n", k,
              refused.ToString().c_str(), v->revoked() ? 1 : 0);
  if (k == 0 || !absl::IsPermissionDenied(refused) || !v->revoked()) ++bad;
  absl::Status next = v->Read(off, buf.data(), 64);
  std::printf("inflight: next library call: %s\n", next.ToString().c_str());
  if (!absl::IsPermissionDenied(next)) ++bad;
  (void)v->Detach();  // the refused generation was never persisted: lost
  vol->reset();
  std::fflush(stdout);

  // The owner digests its memory first; then attach again.
  while (::access(go.c_str(), F_OK) != 0) {
    if (absl::Now() - t0 > absl::Seconds(900)) return Fail("no go file");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  auto again = AttachRemote(dir, absl::Seconds(120));
  if (!again.ok()) return Fail(again.status().ToString());
  client::Volume& w = **again;
  const int64_t epoch1 = w.epoch();
  std::printf("inflight: attached again at epoch %lld\n",
              static_cast<long long>(epoch1));
  if (epoch1 <= epoch0) ++bad;
  // What is there: a prefix of generation k (placed before the window
  // went), then generation k - 1 whole.
  std::vector<char> got(kInflightBytes), want(kInflightBytes);
  st = w.Read(off, got.data(), got.size());
  if (!st.ok())
    return Fail(absl::StrCat("read after reconnect: ", st.ToString()));
  FillGeneration(want, off, k);
  uint64_t landed = 0;
  while (landed < got.size() && got[landed] == want[landed]) ++landed;
  landed &= ~uint64_t{7};
  FillGeneration(want, off, k == 0 ? 0 : k - 1);
  const bool rest_ok = std::memcmp(got.data() + landed, want.data() + landed,
                                   got.size() - landed) == 0;
  std::printf("FIGURE inflight_refused_write_landed_bytes %llu of %llu\n",
              static_cast<unsigned long long>(landed),
              static_cast<unsigned long long>(got.size()));
  std::printf(
      "inflight: refused generation %u: %llu bytes placed before the "
      "fence%s, the rest generation %u whole: %s\n",
      k, static_cast<unsigned long long>(landed),
      landed > 0 ? " (cut mid-transfer)" : "", k == 0 ? 0 : k - 1,
      rest_ok ? "yes" : "NO");
  if (!rest_ok || landed == got.size()) ++bad;
  // And the reconnected QP works both ways.
  std::vector<char> fresh(1u << 20), back(1u << 20);
  FillGeneration(fresh, off + (8u << 20), 1000);
  st = w.Write(off + (8u << 20), fresh.data(), fresh.size());
  if (st.ok()) st = w.Persist(off + (8u << 20), fresh.size());
  if (st.ok()) st = w.Read(off + (8u << 20), back.data(), back.size());
  const bool same = st.ok() && back == fresh;
  std::printf(
      "inflight: reconnected at epoch %lld: 1 MiB written, persisted, "
      "read back: %s %s\n",
      static_cast<long long>(epoch1), st.ToString().c_str(),
      same ? "(bytes equal)" : "(BYTES DIFFER)");
  if (!same) ++bad;
  st = w.Detach();
  if (!st.ok()) {
    std::printf("inflight: detach: %s\n", st.ToString().c_str());
    ++bad;
  }
  std::printf("inflight: %s\n", bad == 0 ? "all as expected" : "FAILED");
  std::fflush(stdout);
  return bad == 0 ? 0 : 1;
}

// Where the time of a small remote read goes: the cost of the primitives
// the path uses, and 64-byte reads timed as a whole loop (no clock per op)
// through the library and through its remote region directly.
void Probe(client::Volume& vol, fabric::RemoteRegion* region, uint64_t span) {
  std::string cs = "?";
  if (FILE* f = std::fopen(
          "/sys/devices/system/clocksource/clocksource0/current_clocksource",
          "r")) {
    char b[64] = {};
    if (std::fgets(b, sizeof b, f) != nullptr) cs = b;
    std::fclose(f);
    while (!cs.empty() && cs.back() == '\n') cs.pop_back();
  }
  std::printf("BENCH probe clocksource %s\n", cs.c_str());
  auto ns_per = [](int n, auto&& f) {
    const absl::Time t0 = absl::Now();
    for (int i = 0; i < n; ++i) f(i);
    return absl::ToDoubleNanoseconds(absl::Now() - t0) / n;
  };
  volatile int64_t sink = 0;
  std::printf("BENCH probe ns absl_now %.0f\n", ns_per(20000, [&](int) {
                sink = absl::ToUnixNanos(absl::Now());
              }));
  std::printf("BENCH probe ns clock_monotonic %.0f\n", ns_per(20000, [&](int) {
                timespec ts;
                clock_gettime(CLOCK_MONOTONIC, &ts);
                sink = ts.tv_nsec;
              }));
  std::printf("BENCH probe ns clock_monotonic_coarse %.0f\n",
              ns_per(20000, [&](int) {
                timespec ts;
                clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
                sink = ts.tv_nsec;
              }));
  std::mutex m;
  std::printf("BENCH probe ns std_mutex %.0f\n", ns_per(100000, [&](int) {
                std::lock_guard<std::mutex> l(m);
                sink = sink + 1;
              }));
  std::printf("BENCH probe ns syscall_getppid %.0f\n",
              ns_per(20000, [&](int) { sink = getppid(); }));
  // 64-byte reads four ways, interleaved in chunks of 50 so all see the
  // same load: through the library or its remote region directly, each at
  // a 4 KiB stride (a new page each time) or at one offset (as ib_read_lat).
  char small[64];
  const char* names[4] = {"volume_stride", "region_stride", "volume_fixed",
                          "region_fixed"};
  std::vector<double> us[4];
  for (int chunk = 0; chunk < 20; ++chunk) {
    for (int way = 0; way < 4; ++way) {
      if (region == nullptr && (way & 1) != 0) continue;
      for (int i = 0; i < 50; ++i) {
        const uint64_t off =
            way < 2 ? (static_cast<uint64_t>(chunk * 50 + i) * 4096) % span : 0;
        const absl::Time t0 = absl::Now();
        if ((way & 1) == 0) {
          (void)vol.Read(off, small, sizeof small);
        } else {
          (void)region->Read(off, absl::MakeSpan(small, sizeof small));
        }
        us[way].push_back(absl::ToDoubleMicroseconds(absl::Now() - t0));
      }
    }
  }
  for (int way = 0; way < 4; ++way) {
    std::vector<double>& v = us[way];
    if (v.empty()) continue;
    std::sort(v.begin(), v.end());
    double sum = 0;
    for (double x : v) sum += x;
    std::printf(
        "BENCH probe read64 %s min %.1f p10 %.1f median %.1f mean %.1f us\n",
        names[way], v.front(), v[v.size() / 10], v[v.size() / 2],
        sum / v.size());
  }
  std::fflush(stdout);
}

// Remote bandwidth and latency through libdaxlease (RDMA to the owner),
// the shapes perftest measures: 1 MiB RDMA WRITEs and READs, 64-byte READs.
int Bench(const std::string& dir, uint64_t mib) {
  client::AttachOptions o;
  o.timeout = absl::Seconds(120);
  auto keeping = std::make_unique<agent::testing::KeepingConnector>();
  agent::testing::KeepingConnector* kc = keeping.get();
  auto vol = client::Volume::Attach(dir, o, std::move(keeping));
  if (!vol.ok()) return Fail(vol.status().ToString());
  if ((*vol)->is_local()) return Fail("attached locally, not through RDMA");
  constexpr uint64_t kMsg = 1u << 20;
  const uint64_t span = std::min<uint64_t>((*vol)->size(), 16u << 20);
  std::vector<char> buf(kMsg);
  for (size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<char>(i * 7);
  auto run = [&](bool write) -> absl::StatusOr<double> {
    const absl::Time t0 = absl::Now();
    for (uint64_t i = 0; i < mib; ++i) {
      const uint64_t off = (i * kMsg) % span;
      absl::Status st = write ? (*vol)->Write(off, buf.data(), kMsg)
                              : (*vol)->Read(off, buf.data(), kMsg);
      if (!st.ok()) return st;
    }
    if (write) {
      absl::Status st = (*vol)->Persist(0, span);
      if (!st.ok()) return st;
    }
    return static_cast<double>(mib * kMsg) / (1 << 20) /
           absl::ToDoubleSeconds(absl::Now() - t0);
  };
  auto w = run(true);
  if (!w.ok()) return Fail(w.status().ToString());
  auto r = run(false);
  if (!r.ok()) return Fail(r.status().ToString());
  // Before the latency loop, which is last: the lab runs ib_read_lat right
  // after this program.
  Probe(**vol, kc->last().get(), span);
  // 64-byte reads, one at a time: the median and the mean, in microseconds.
  std::vector<double> lat;
  char small[64];
  for (int i = 0; i < 1000; ++i) {
    const absl::Time t0 = absl::Now();
    absl::Status st = (*vol)->Read((i * 4096) % span, small, sizeof(small));
    if (!st.ok()) return Fail(st.ToString());
    lat.push_back(absl::ToDoubleMicroseconds(absl::Now() - t0));
  }
  double sum = 0;
  for (double v : lat) sum += v;
  std::sort(lat.begin(), lat.end());
  std::printf("BENCH libdaxlease write_MBps %.2f\n", *w);
  std::printf("BENCH libdaxlease read_MBps %.2f\n", *r);
  std::printf("BENCH libdaxlease read_lat_typical_us %.2f\n",
              lat[lat.size() / 2]);
  std::printf("BENCH libdaxlease read_lat_avg_us %.2f\n", sum / lat.size());
  std::printf("BENCH libdaxlease read_lat_min_us %.2f\n", lat.front());
  std::fflush(stdout);
  return (*vol)->Detach().ok() ? 0 : 1;
}

int Main(int argc, char** argv) {
  const std::string cmd = argc > 1 ? argv[1] : "";
  int grace = 0, released = 0, revoked = 0;
  uint64_t off = 0;
  if (cmd == "recall" && argc == 7 && absl::SimpleAtoi(argv[4], &grace) &&
      absl::SimpleAtoi(argv[5], &released) &&
      absl::SimpleAtoi(argv[6], &revoked)) {
    return Recall(argv[2], argv[3], grace, released, revoked);
  }
  if (cmd == "holder" && argc == 4 && absl::SimpleAtoi(argv[3], &off)) {
    return Holder(argv[2], off);
  }
  if (cmd == "inflight" && argc == 5 && absl::SimpleAtoi(argv[3], &off)) {
    return Inflight(argv[2], off, argv[4]);
  }
  if (cmd == "bench" && argc == 4 && absl::SimpleAtoi(argv[3], &off)) {
    return Bench(argv[2], off);
  }
  std::fprintf(stderr,
               "usage: daxlease-lab-two recall KUBECONFIG VOLUME GRACE "
               "RELEASED REVOKED\n"
               "       daxlease-lab-two holder DIR OFFSET\n"
               "       daxlease-lab-two inflight DIR OFFSET GO_FILE\n"
               "       daxlease-lab-two bench DIR MIB\n");
  return 2;
}

}  // namespace
}  // namespace daxlease

int main(int argc, char** argv) { return daxlease::Main(argc, argv); }
