// csi_lifecycle_bench: how much the CSI driver adds to the raw cost of a
// volume's lifecycle.
//
// For 1 GiB ext4 volumes it times, in the same run and interleaved:
//   driver: CreateVolume + NodeStageVolume + NodePublishVolume, then
//           NodeUnpublishVolume + NodeUnstageVolume + DeleteVolume, over gRPC
//           on the real daxlease-csi (file backend);
//   direct: fallocate + loop device + mkfs.ext4 + mount + bind mount, then
//           umount x2 + loop detach + unlink, done by this process;
//   direct+durable state: the direct work plus the persistence the driver
//           owes (image fsync; one temp+fsync+rename+directory-fsync record
//           write per step the driver records; the record's durable removal);
// and prints the medians and ratios. The goal: create+stage+publish through
// the driver at or below the raw fallocate+losetup+mkfs+mount pipeline
// measured in the same run (ratio <= 1.0), while staying crash-safe. The
// driver gets there by doing less, not by skipping durability: with its
// image pool (--pool-depth, default 1: docs/csi.md, "Pre-formatted images")
// CreateVolume renames an image formatted ahead in the background (the
// refill's time is printed apart; the next timed run of either side starts
// only once the pool is full again, so the refill never overlaps the direct
// side), and it makes one durable record write (at CreateVolume): the stage
// and publish entries are renamed into place without fsync, since what they
// describe does not survive a power loss either (docs/csi.md, "State and
// crash safety"). --pool-depth 0 measures the driver without the pool: it
// formats at CreateVolume on the image file itself (no loop device under
// mkfs), knowing a fresh image reads as zeros. The ratio against
// direct+durable state (the raw work plus the old driver's 7 record writes)
// is printed too, for comparison.
//
//   csi_lifecycle_bench [--iterations N] [--size-mib M] [--pool-depth D]
//
// Needs root and loop devices; without them it says so and exits 0.
#include <dirent.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "lib/base/status.h"
#include "proto/csi.grpc.pb.h"
#include "tests/bench/csi_bench_env.h"
#include "tests/integration/plugin_harness.h"

namespace daxlease::bench {
namespace {

using testing::PluginProcess;

struct Timing {
  std::vector<double> setup_ms;
  std::vector<double> teardown_ms;
  // Per step ("CreateVolume", "mkfs.ext4", ...), in first-seen order.
  std::vector<std::string> step_order;
  std::map<std::string, std::vector<double>> step_ms;

  void AddStep(const std::string& name, absl::Duration d) {
    if (!step_ms.count(name)) step_order.push_back(name);
    step_ms[name].push_back(absl::ToDoubleMilliseconds(d));
  }
};

// Times one step into `t` (if not null).
class StepTimer {
 public:
  StepTimer(Timing* t, std::string name)
      : t_(t), name_(std::move(name)), start_(absl::Now()) {}
  ~StepTimer() {
    if (t_ != nullptr) t_->AddStep(name_, absl::Now() - start_);
  }

 private:
  Timing* t_;
  std::string name_;
  absl::Time start_;
};

double Ms(absl::Duration d) { return absl::ToDoubleMilliseconds(d); }

absl::Status FromGrpc(const grpc::Status& s, absl::string_view what) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      absl::StrCat(what, ": ", s.error_message()));
}

csi::v1::VolumeCapability Ext4Cap() {
  csi::v1::VolumeCapability cap;
  cap.mutable_mount()->set_fs_type("ext4");
  cap.mutable_access_mode()->set_mode(
      csi::v1::VolumeCapability::AccessMode::SINGLE_NODE_WRITER);
  return cap;
}

template <typename Stub, typename Req, typename Resp>
absl::Status Rpc(const std::shared_ptr<grpc::Channel>& ch,
                 grpc::Status (Stub::*fn)(grpc::ClientContext*, const Req&,
                                          Resp*),
                 const Req& req, Resp* resp, Timing* t) {
  std::string name = req.GetDescriptor()->name();
  name.resize(name.size() - std::string("Request").size());
  StepTimer timer(t, name);
  Stub stub(ch);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(5));
  return FromGrpc((stub.*fn)(&ctx, req, resp), req.GetDescriptor()->name());
}

// Waits until `images` holds `depth` pooled images and none in the making:
// the driver's pool is full again. Returns how long that took.
absl::StatusOr<absl::Duration> WaitPoolFull(const std::string& images,
                                            int depth) {
  const absl::Time t0 = absl::Now();
  if (depth == 0) return absl::ZeroDuration();
  while (absl::Now() - t0 < absl::Minutes(2)) {
    int ready = 0;
    bool filling = false;
    if (DIR* d = ::opendir(images.c_str()); d != nullptr) {
      while (dirent* e = ::readdir(d)) {
        absl::string_view n = e->d_name;
        if (absl::EndsWith(n, ".pool")) ++ready;
        if (absl::EndsWith(n, ".pool.partial")) filling = true;
      }
      ::closedir(d);
    }
    if (ready >= depth && !filling) return absl::Now() - t0;
    absl::SleepFor(absl::Milliseconds(2));
  }
  return absl::DeadlineExceededError(
      absl::StrCat("the image pool in ", images, " did not fill in 2 min"));
}

// One lifecycle through the driver.
absl::Status DriverOnce(PluginProcess& plugin, const std::string& root, int i,
                        int64_t size, Timing* t) {
  auto ch = plugin.channel();
  using csi::v1::Controller;
  using csi::v1::Node;
  const std::string staging = absl::StrCat(root, "/staging/d", i);
  const std::string target = absl::StrCat(root, "/pods/d", i);
  RETURN_IF_ERROR(testing::MakeDirs(staging));

  absl::Time t0 = absl::Now();
  csi::v1::CreateVolumeRequest create;
  create.set_name(absl::StrCat("bench-", i));
  create.mutable_capacity_range()->set_required_bytes(size);
  (*create.mutable_parameters())["csi.storage.k8s.io/fstype"] = "ext4";
  *create.add_volume_capabilities() = Ext4Cap();
  csi::v1::CreateVolumeResponse created;
  RETURN_IF_ERROR(
      Rpc(ch, &Controller::Stub::CreateVolume, create, &created, t));
  const std::string vol = created.volume().volume_id();
  csi::v1::NodeStageVolumeRequest stage;
  stage.set_volume_id(vol);
  stage.set_staging_target_path(staging);
  *stage.mutable_volume_capability() = Ext4Cap();
  csi::v1::NodeStageVolumeResponse staged;
  RETURN_IF_ERROR(Rpc(ch, &Node::Stub::NodeStageVolume, stage, &staged, t));
  csi::v1::NodePublishVolumeRequest publish;
  publish.set_volume_id(vol);
  publish.set_staging_target_path(staging);
  publish.set_target_path(target);
  *publish.mutable_volume_capability() = Ext4Cap();
  csi::v1::NodePublishVolumeResponse published;
  RETURN_IF_ERROR(
      Rpc(ch, &Node::Stub::NodePublishVolume, publish, &published, t));
  absl::Time t1 = absl::Now();

  csi::v1::NodeUnpublishVolumeRequest unpublish;
  unpublish.set_volume_id(vol);
  unpublish.set_target_path(target);
  csi::v1::NodeUnpublishVolumeResponse unpublished;
  RETURN_IF_ERROR(
      Rpc(ch, &Node::Stub::NodeUnpublishVolume, unpublish, &unpublished, t));
  csi::v1::NodeUnstageVolumeRequest unstage;
  unstage.set_volume_id(vol);
  unstage.set_staging_target_path(staging);
  csi::v1::NodeUnstageVolumeResponse unstaged;
  RETURN_IF_ERROR(
      Rpc(ch, &Node::Stub::NodeUnstageVolume, unstage, &unstaged, t));
  csi::v1::DeleteVolumeRequest del;
  del.set_volume_id(vol);
  csi::v1::DeleteVolumeResponse deleted;
  RETURN_IF_ERROR(Rpc(ch, &Controller::Stub::DeleteVolume, del, &deleted, t));
  absl::Time t2 = absl::Now();
  t->setup_ms.push_back(Ms(t1 - t0));
  t->teardown_ms.push_back(Ms(t2 - t1));
  return absl::OkStatus();
}

// The durable write the driver owes after each step (csi/state_store.cc):
// a small record written to a temp file, fsync, rename, fsync of the
// directory. `state_dir` empty: nothing (the plain direct side).
absl::Status DurableRecord(const std::string& state_dir, int i, Timing* t,
                           const char* what) {
  if (state_dir.empty()) return absl::OkStatus();
  StepTimer timer(t, absl::StrCat("state:", what));
  const std::string path = absl::StrCat(state_dir, "/x", i, ".json");
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return base::ErrnoStatus("open", tmp, errno);
  const std::string body(600, 'x');  // about the size of a volume record
  bool ok = ::write(fd, body.data(), body.size()) ==
                static_cast<ssize_t>(body.size()) &&
            ::fsync(fd) == 0;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    return base::ErrnoStatus("write+fsync+rename", path, errno);
  }
  return Fsync(state_dir);
}

// One lifecycle done by hand, the way the file backend must do it. With a
// non-empty `state_dir` it also does the durability the driver owes (the
// image fsynced once allocated, one durable record write after each step
// that the driver records, the record's removal made durable), so the
// driver can be compared with the same work plus the same persistence.
absl::Status DirectOnce(const std::string& dir, const std::string& root, int i,
                        int64_t size, Timing* t,
                        const std::string& state_dir = "") {
  const std::string file = absl::StrCat(dir, "/direct-", i, ".img");
  const std::string staging = absl::StrCat(root, "/staging/x", i);
  const std::string target = absl::StrCat(root, "/pods/x", i);
  RETURN_IF_ERROR(testing::MakeDirs(staging));

  absl::Time t0 = absl::Now();
  std::optional<StepTimer> step;
  step.emplace(t, "fallocate");
  int fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return base::ErrnoStatus("open", file, errno);
  if (int err = ::posix_fallocate(fd, 0, size); err != 0) {
    ::close(fd);
    return base::ErrnoStatus("posix_fallocate", file, err);
  }
  if (!state_dir.empty() && ::fsync(fd) != 0) {
    return base::ErrnoStatus("fsync", file, errno);
  }
  step.reset();
  RETURN_IF_ERROR(DurableRecord(state_dir, i, t, "create"));
  step.emplace(t, "loop attach");
  int ctl = ::open("/dev/loop-control", O_RDWR | O_CLOEXEC);
  if (ctl < 0) return base::ErrnoStatus("open", "/dev/loop-control", errno);
  int n = ::ioctl(ctl, LOOP_CTL_GET_FREE);
  ::close(ctl);
  if (n < 0) return base::ErrnoStatus("LOOP_CTL_GET_FREE", "", errno);
  const std::string dev = absl::StrCat("/dev/loop", n);
  int loop = ::open(dev.c_str(), O_RDWR | O_CLOEXEC);
  if (loop < 0) return base::ErrnoStatus("open", dev, errno);
  loop_config cfg{};
  cfg.fd = static_cast<uint32_t>(fd);
  cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR;
  std::snprintf(reinterpret_cast<char*>(cfg.info.lo_file_name), LO_NAME_SIZE,
                "%s", file.c_str());
  if (::ioctl(loop, LOOP_CONFIGURE, &cfg) != 0) {
    int err = errno;
    ::close(loop);
    ::close(fd);
    return base::ErrnoStatus("LOOP_CONFIGURE", dev, err);
  }
  ::close(fd);
  step.reset();
  RETURN_IF_ERROR(DurableRecord(state_dir, i, t, "stage-intent"));
  step.emplace(t, "mkfs.ext4");
  // The raw pipeline: mkfs on the loop device with the driver's base options
  // (csi/driver.cc MkfsArgs), as an admin would run it.
  RETURN_IF_ERROR(Run({"mkfs.ext4", "-q", "-F", "-b", "4096", "-E",
                       "stride=512,stripe_width=512,nodiscard", dev}));
  step.emplace(t, "mount");
  if (::mount(dev.c_str(), staging.c_str(), "ext4", 0, nullptr) != 0) {
    return base::ErrnoStatus("mount", staging, errno);
  }
  step.reset();
  RETURN_IF_ERROR(DurableRecord(state_dir, i, t, "staged"));
  step.emplace(t, "mkdir target");
  RETURN_IF_ERROR(testing::MakeDirs(target));
  step.reset();
  // The driver records a publish before the bind.
  RETURN_IF_ERROR(DurableRecord(state_dir, i, t, "published"));
  step.emplace(t, "bind mount");
  if (::mount(staging.c_str(), target.c_str(), nullptr, MS_BIND, nullptr) !=
      0) {
    return base::ErrnoStatus("mount --bind", target, errno);
  }
  step.reset();
  absl::Time t1 = absl::Now();

  step.emplace(t, "umount bind");
  if (::umount2(target.c_str(), 0) != 0) {
    return base::ErrnoStatus("umount", target, errno);
  }
  ::rmdir(target.c_str());
  step.reset();
  RETURN_IF_ERROR(DurableRecord(state_dir, i, t, "unpublished"));
  step.emplace(t, "umount");
  if (::umount2(staging.c_str(), 0) != 0) {
    return base::ErrnoStatus("umount", staging, errno);
  }
  step.emplace(t, "loop detach");
  ::ioctl(loop, LOOP_CLR_FD, 0);
  ::close(loop);
  step.reset();
  RETURN_IF_ERROR(DurableRecord(state_dir, i, t, "unstaged"));
  step.emplace(t, "unlink");
  if (::unlink(file.c_str()) != 0)
    return base::ErrnoStatus("unlink", file, errno);
  step.reset();
  if (!state_dir.empty()) {
    StepTimer timer(t, "state:remove");
    const std::string rec = absl::StrCat(state_dir, "/x", i, ".json");
    if (::unlink(rec.c_str()) != 0) {
      return base::ErrnoStatus("unlink", rec, errno);
    }
    RETURN_IF_ERROR(Fsync(state_dir));
  }
  absl::Time t2 = absl::Now();
  t->setup_ms.push_back(Ms(t1 - t0));
  t->teardown_ms.push_back(Ms(t2 - t1));
  return absl::OkStatus();
}

int Main(int argc, char** argv) {
  int iterations = 5;
  int64_t size_mib = 1024;
  int pool_depth = 1;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--iterations" && i + 1 < argc) {
      if (!absl::SimpleAtoi(argv[++i], &iterations) || iterations < 1) {
        std::fprintf(stderr, "bad --iterations\n");
        return 64;
      }
    } else if (a == "--size-mib" && i + 1 < argc) {
      if (!absl::SimpleAtoi(argv[++i], &size_mib) || size_mib < 16) {
        std::fprintf(stderr, "bad --size-mib\n");
        return 64;
      }
    } else if (a == "--pool-depth" && i + 1 < argc) {
      if (!absl::SimpleAtoi(argv[++i], &pool_depth) || pool_depth < 0) {
        std::fprintf(stderr, "bad --pool-depth\n");
        return 64;
      }
    } else {
      std::fprintf(stderr,
                   "usage: %s [--iterations N] [--size-mib M] "
                   "[--pool-depth D]\n",
                   argv[0]);
      return 64;
    }
  }
  absl::StatusOr<std::optional<CsiBenchEnv>> env = StartCsiBenchEnv(
      "csi_lifecycle_bench", "daxlease-bench-",
      {absl::StrCat("--image-pool-depth=", pool_depth),
       absl::StrCat("--image-pool-classes=ext4:", size_mib, "Mi")});
  if (!env.ok()) {
    std::fprintf(stderr, "%s\n", env.status().ToString().c_str());
    return 1;
  }
  if (!env->has_value()) return 0;  // skipped, and said why
  const std::string& root = (*env)->root;
  const std::string direct_dir = (*env)->base + "/direct";
  const std::string direct_state = (*env)->base + "/direct-state";
  for (const std::string& d : {direct_dir, direct_state}) {
    if (!testing::MakeDirs(d).ok()) return 1;
  }
  testing::PluginProcess& plugin = *(*env)->plugin;
  const std::string images = (*env)->options.state_dir + "/volumes";
  const int64_t size = size_mib << 20;
  Timing driver, direct, durable;
  std::vector<double> refill_ms;
  // Each run starts with the pool full; the time the refill after a
  // driver run took is recorded.
  auto pool_full = [&](bool after_driver) -> absl::Status {
    ASSIGN_OR_RETURN(absl::Duration waited, WaitPoolFull(images, pool_depth));
    if (after_driver) refill_ms.push_back(Ms(waited));
    return absl::OkStatus();
  };
  auto driver_once = [&](int i, Timing* t) -> absl::Status {
    RETURN_IF_ERROR(pool_full(false));
    RETURN_IF_ERROR(DriverOnce(plugin, root, i, size, t));
    return pool_full(t == &driver);
  };
  auto direct_once = [&](int i, Timing* t,
                         const std::string& state = "") -> absl::Status {
    RETURN_IF_ERROR(pool_full(false));
    return DirectOnce(direct_dir, root, i, size, t, state);
  };
  // Warm-up (page cache, binaries), not counted.
  Timing warm;
  absl::Status s = direct_once(1000, &warm);
  if (s.ok()) s = driver_once(1000, &warm);
  // Interleaved so that drift on a shared machine hits both sides alike.
  // The third side, direct + durable state, uses IDs from 2000 on.
  for (int i = 0; s.ok() && i < iterations; ++i) {
    if (i % 2 == 0) {
      s = driver_once(i, &driver);
      if (s.ok()) s = direct_once(i, &direct);
      if (s.ok()) s = direct_once(2000 + i, &durable, direct_state);
    } else {
      s = direct_once(2000 + i, &durable, direct_state);
      if (s.ok()) s = direct_once(i, &direct);
      if (s.ok()) s = driver_once(i, &driver);
    }
  }
  if (!s.ok()) {
    std::fprintf(stderr, "csi_lifecycle_bench: %s\n", s.ToString().c_str());
    return 1;
  }
  double ds = Median(driver.setup_ms), dt = Median(driver.teardown_ms);
  double xs = Median(direct.setup_ms), xt = Median(direct.teardown_ms);
  std::printf(
      "csi_lifecycle_bench: %d iterations, %lld MiB ext4, image pool depth "
      "%d, medians\n",
      iterations, static_cast<long long>(size_mib), pool_depth);
  std::printf("  %-44s %10s %10s %7s\n", "", "driver ms", "direct ms", "ratio");
  std::printf("  %-44s %10.1f %10.1f %7.3f\n",
              "create+stage+publish (vs fallocate..mount)", ds, xs, ds / xs);
  std::printf("  %-44s %10.1f %10.1f %7.3f\n",
              "unpublish+unstage+delete (vs umount..rm)", dt, xt, dt / xt);
  std::printf("  %-44s %10.1f %10.1f %7.3f\n", "whole lifecycle", ds + dt,
              xs + xt, (ds + dt) / (xs + xt));
  std::printf(
      "  goal: create+stage+publish ratio <= 1.0 vs the raw pipeline -> %s\n",
      ds / xs <= 1.0 ? "met" : "NOT met");
  // The driver must also keep its state durable (kill -9 / power loss): the
  // same direct work plus the same durable writes (image fsync, one
  // temp+fsync+rename+dir-fsync record write per recorded step, 7 per
  // lifecycle) is the floor for any crash-safe driver.
  double ys = Median(durable.setup_ms), yt = Median(durable.teardown_ms);
  std::printf("  %-44s %10.1f %10.1f %7.3f\n",
              "vs direct+durable state: create..publish", ds, ys, ds / ys);
  std::printf("  %-44s %10.1f %10.1f %7.3f\n",
              "vs direct+durable state: unpublish..delete", dt, yt, dt / yt);
  std::printf("  %-44s %10.1f %10.1f %7.3f\n",
              "vs direct+durable state: whole lifecycle", ds + dt, ys + yt,
              (ds + dt) / (ys + yt));
  if (pool_depth > 0) {
    // The plugin logs each pooled image it made, with how long it took
    // (fallocate + mkfs + rename), off every call's path.
    std::vector<double> fill_ms;
    std::ifstream log((*env)->options.log_path);
    for (std::string line; std::getline(log, line);) {
      if (!absl::StrContains(line, "event=\"file_backend.pool.filled\"") &&
          !absl::StrContains(line, "event=file_backend.pool.filled")) {
        continue;
      }
      size_t at = line.find(" ms=");
      double ms = 0;
      if (at == std::string::npos) continue;
      std::string v = line.substr(at + 4);
      v = v.substr(0, v.find(' '));
      v.erase(std::remove(v.begin(), v.end(), '"'), v.end());
      if (absl::SimpleAtod(v, &ms)) fill_ms.push_back(ms);
    }
    std::printf(
        "  image pool, in the background: %.1f ms to make a pooled image "
        "(median of %zu: fallocate+mkfs+rename); the pool was full again "
        "%.1f ms after a driver run ended\n",
        Median(fill_ms), fill_ms.size(), Median(refill_ms));
  }
  for (const Timing* side : {&driver, &direct, &durable}) {
    std::printf("  %s steps (median ms):", side == &driver ? "driver"
                                           : side == &direct
                                               ? "direct"
                                               : "direct+durable state");
    for (const std::string& name : side->step_order) {
      std::printf(" %s %.1f;", name.c_str(), Median(side->step_ms.at(name)));
    }
    std::printf("\n");
  }
  return 0;
}

}  // namespace
}  // namespace daxlease::bench

int main(int argc, char** argv) { return daxlease::bench::Main(argc, argv); }
