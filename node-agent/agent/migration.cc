// The agent's side of a DaxMigration (docs/agent.md, "Migration"). The
// operator decides (lib/lease/migration.h); the agents do and report:
//  - target, phase PreCopying (the volume still Ready): the copy below,
//    whole, reporting preCopiedBytes (preCopyFailure when it fails: the
//    migration goes on without it), keeping each chunk's digest in memory;
//    then in Copying it asks the source's chunk digests over the fabric and
//    reads only the chunks that differ.
//  - target (spec.targetNode == this node), phase Copying: records the
//    media in the state file, creates it (<media_dir>/<volume>/data, the
//    source's size; a devdax volume: a namespace the node's plugin makes,
//    NodeMedia; no room: targetFailure InsufficientCapacity), reads the
//    source's data over the fabric with a read-only migration grant
//    (lease_uid "migration/<uid>", the migration's epoch) in pieces of
//    1 MiB on config_.migration_streams connections (one's network copy
//    overlaps another's hashing and writing), hashing each piece as it
//    lands (checksum.h) and writing it to the media, reporting bytesCopied
//    and lastProgressTime, then persists and writes targetChecksum. Once the
//    volume's owner is this node it serves the copy (Served::migrated); once
//    the migration Failed it frees the media and says so (targetMediaFreed).
//  - source (status.sourceNode == this node, the owner), phases PreCopying
//    and Copying: grants the migration key (no lease: a recall never waits
//    for it); in Copying writes sourceChecksum of its data. Once
//    the migration is Complete and the owner moved, it unmaps and deletes
//    its data file (freed only after the copy was verified; a devdax
//    volume's namespace: the plugin frees it) and says so once it is gone
//    (sourceMediaFreed). A deleted DaxMigration waits for these two.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <memory>
#include <mutex>
#include <new>
#include <thread>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "lib/api/conditions.h"
#include "lib/api/json.h"
#include "lib/base/crash_point.h"
#include "lib/base/log.h"
#include "lib/base/status.h"
#include "lib/sys/fd.h"
#include "lib/sys/file.h"
#include "node-agent/agent/agent.h"
#include "node-agent/agent/checksum.h"

namespace daxlease::agent {
namespace {

std::string MigrationLeaseUid(const api::DaxMigration& m) {
  return absl::StrCat("migration/", m.metadata.uid);
}

// The largest fabric read of the copy: a piece small enough to be hashed
// and written while it is still in the caches.
constexpr uint64_t kCopyPiece = uint64_t{1} << 20;

// Whether the source answers Digests, asked for the first chunk only: OK,
// or the status of its refusal (Unimplemented: its fabric does not serve
// them; Unavailable: it closed the connection, as an agent of an earlier
// version does on a request it does not know).
absl::Status ProbeDigests(fabric::RemoteRegion& source, uint64_t size) {
  return source.Digests(0, std::min(size, kChecksumChunk), kChecksumChunk)
      .status();
}

// This thread's CPU time so far, in microseconds.
int64_t ThreadCpuMicros() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return int64_t{ts.tv_sec} * 1000000 + ts.tv_nsec / 1000;
}

// pwrite(2) of all `n` bytes at `offset` of `fd` (the file at `path`).
absl::Status PwriteFull(int fd, const char* data, uint64_t n, uint64_t offset,
                        const std::string& path) {
  while (n > 0) {
    const ssize_t w = pwrite(fd, data, n, static_cast<off_t>(offset));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return base::ErrnoStatus("pwrite", path, w < 0 ? errno : EIO);
    data += w;
    n -= static_cast<uint64_t>(w);
    offset += static_cast<uint64_t>(w);
  }
  return absl::OkStatus();
}

// A stream's buffer, aligned for O_DIRECT (the file system's memory
// alignment for direct I/O; never less than a page).
struct AlignedDelete {
  std::align_val_t align;
  void operator()(char* p) const { ::operator delete[](p, align); }
};
using AlignedBuffer = std::unique_ptr<char[], AlignedDelete>;

AlignedBuffer MakeAlignedBuffer(uint64_t n, uint64_t align) {
  const std::align_val_t a{align};
  return AlignedBuffer(static_cast<char*>(::operator new[](n, a)),
                       AlignedDelete{a});
}

// The alignments of the direct writes on `fd`: file offsets and lengths,
// and memory. What the kernel gives (statx STATX_DIOALIGN; ext4 here: 512
// each), but never less than a page: a direct write of part of a file
// system block makes ext4 serialize it with every other (and zero around
// it), and a page shared by a direct and a buffered write would go through
// the page cache twice. A page each where the kernel does not say (tmpfs).
// 0 offset alignment: the file system says it does no direct I/O here.
struct DirectAlignment {
  uint64_t offset = 4096;
  uint64_t memory = 4096;
};
DirectAlignment DirectAlignmentOf(int fd) {
  DirectAlignment a;
  struct statx stx {};
  if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
      (stx.stx_mask & STATX_DIOALIGN) != 0) {
    a.offset = stx.stx_dio_offset_align == 0
                   ? 0
                   : std::max<uint64_t>(stx.stx_dio_offset_align, 4096);
    a.memory = std::max<uint64_t>(stx.stx_dio_mem_align, 4096);
  }
  return a;
}

// Writes a migration's file media: with O_DIRECT where the file system
// takes it, straight to the storage, past the page cache; through the
// media's buffered fd where it does not. Persistent memory has no page
// cache (on a DAX file system reads and writes go to the media), so a file
// media written direct is the closest this emulation comes; and on a VM
// whose balloon hands free memory back to the host (free page reporting),
// every new page of page cache costs a host fault, which made a buffered
// copy several times slower than the disk and its figures swing tenfold
// (docs/agent.md, "Migration"). The pages of a direct write are not in the
// page cache afterwards (the kernel writes back and drops any cached page of
// the range first), so a later read through a mapping or read(2) sees what
// was written. Thread-safe: the copy's streams share one writer, each on
// its own chunks.
class MediaWriter {
 public:
  // `buffered_fd` (the media's mapping's fd, not owned) outlives the writer.
  // `refusal_logged`: whether the agent already logged a file system's
  // refusal of direct I/O (logged once).
  MediaWriter(int buffered_fd, std::string path, std::string migration,
              std::atomic<bool>* refusal_logged)
      : buffered_fd_(buffered_fd),
        path_(std::move(path)),
        migration_(std::move(migration)),
        refusal_logged_(refusal_logged) {}

  // Direct writes from now on, on `fd` (opened with O_DIRECT), at the
  // alignments the kernel gives for it. False (and buffered writes) when the
  // file system says it does no direct I/O on it.
  bool UseDirect(sys::UniqueFd fd) {
    const DirectAlignment a = DirectAlignmentOf(fd.get());
    if (a.offset == 0) {
      Refused(absl::InvalidArgumentError(
          absl::StrCat("statx(", path_, "): no direct I/O alignment")));
      return false;
    }
    direct_fd_ = std::move(fd);
    align_ = a;
    direct_.store(true);
    return true;
  }
  // The file system refused direct writes (its open, or a write, failed
  // with EINVAL): buffered writes from now on, logged once per agent.
  void Refused(const absl::Status& why) {
    direct_.store(false);
    if (!refusal_logged_->exchange(true)) {
      base::LogWarn("agent.migration_direct_writes_refused",
                    {{"migration", migration_},
                     {"path", path_},
                     {"error", why.ToString()},
                     {"fallback", "buffered writes through the page cache"}});
    }
  }
  bool direct() const { return direct_.load(); }
  // The alignment a stream's buffer needs (at least a page).
  uint64_t memory_alignment() const { return align_.memory; }

  // Writes all `n` bytes of `data` at `offset`. Direct: the whole blocks of
  // them (when `data` there is aligned as direct I/O needs), the rest, an
  // unaligned head or tail (the media's last bytes when its size is no
  // multiple of the block), through the page cache; `*buffered` is set when
  // any byte went that way (its chunk then needs a write-back).
  absl::Status Write(const char* data, uint64_t n, uint64_t offset,
                     bool* buffered) {
    if (direct_.load()) {
      const uint64_t a = align_.offset;
      const uint64_t head = std::min(n, (a - offset % a) % a);
      const uint64_t body = (n - head) / a * a;
      const char* p = data + head;
      if (body > 0 && reinterpret_cast<uintptr_t>(p) % align_.memory == 0) {
        if (head > 0) {
          *buffered = true;
          RETURN_IF_ERROR(PwriteFull(buffered_fd_, data, head, offset, path_));
        }
        absl::Status st =
            PwriteFull(direct_fd_.get(), p, body, offset + head, path_);
        if (st.ok()) {
          const uint64_t tail = n - head - body;
          if (tail == 0) return absl::OkStatus();
          *buffered = true;
          return PwriteFull(buffered_fd_, p + body, tail, offset + head + body,
                            path_);
        }
        if (!absl::IsInvalidArgument(st)) return st;
        // EINVAL: the file system takes the open but not the write. The
        // piece again, buffered (what landed direct is the same bytes).
        Refused(st);
      }
    }
    *buffered = true;
    return PwriteFull(buffered_fd_, data, n, offset, path_);
  }

  // Whether any write may have gone direct (UseDirect took an fd): the
  // persist is then Sync's.
  bool opened_direct() const { return direct_fd_.valid(); }
  // Makes every byte written durable, with the file's extents (the direct
  // writes turned preallocated, unwritten extents into written ones, which
  // the journal must hold): fdatasync, which also writes back what went
  // through the page cache and flushes the storage's volatile write cache.
  absl::Status Sync() {
    const int fd = direct_fd_.valid() ? direct_fd_.get() : buffered_fd_;
    if (fdatasync(fd) != 0) return base::ErrnoStatus("fdatasync", path_, errno);
    return absl::OkStatus();
  }

 private:
  const int buffered_fd_;
  const std::string path_;
  const std::string migration_;
  std::atomic<bool>* const refusal_logged_;
  sys::UniqueFd direct_fd_;
  DirectAlignment align_;
  std::atomic<bool> direct_{false};
};

}  // namespace

std::string Agent::MediaDir() const {
  return config_.media_dir.empty() ? absl::StrCat(config_.state_dir, "/media")
                                   : config_.media_dir;
}

absl::Status Agent::PatchMigrationStatus(const std::string& name,
                                         const k8s::Json& st) {
  auto r =
      client_.Patch(DaxMigrationResource(), "", name, k8s::PatchType::kMerge,
                    k8s::Json{{"status", st}}, "status");
  if (!r.ok()) {
    base::LogWarn("agent.migration_patch_failed",
                  {{"migration", name}, {"error", r.status().ToString()}});
  }
  return r.status();
}

void Agent::StartJobLocked(const std::string& key,
                           std::function<void(const std::atomic<bool>&)> body) {
  auto it = jobs_.find(key);
  if (it != jobs_.end()) {
    if (!it->second.done->load()) return;  // still running
    if (it->second.thread.joinable()) it->second.thread.join();
    jobs_.erase(it);
  }
  Job j;
  j.cancel = std::make_shared<std::atomic<bool>>(false);
  j.done = std::make_shared<std::atomic<bool>>(false);
  auto cancel = j.cancel;
  auto done = j.done;
  j.thread = std::thread([body = std::move(body), cancel, done, this] {
    body(*cancel);
    done->store(true);
    Kick();
  });
  jobs_[key] = std::move(j);
}

void Agent::FreeIncomingLocked(const std::string& volume) {
  auto it = incoming_.find(volume);
  if (it == incoming_.end()) return;
  if (it->second.device) {
    // A namespace of the plugin's (or nothing yet: Free is OK then).
    if (config_.node_media == nullptr) return;
    const std::string migration = it->second.migration;
    const std::string device = it->second.data_path;
    auto vol = CachedVolume(volume);
    const std::string owner = vol.has_value() ? vol->spec.owner_node : "";
    const std::string key = "in/" + volume;
    if (!FreeDueLocked(key)) return;  // refused lately: asked at its time
    StartJobLocked("free/" + volume, [this, key, volume, migration, device,
                                      owner](const auto&) {
      absl::Status st = config_.node_media->Free(volume, owner);
      std::lock_guard<std::mutex> l(mu_);
      if (!st.ok()) {
        FreeRefusedLocked(key, volume, migration, device, /*source=*/false, st);
        return;
      }
      FreeDoneLocked(key, migration);
      auto in = incoming_.find(volume);
      if (in == incoming_.end() || in->second.migration != migration) return;
      incoming_.erase(in);
      (void)SaveStateLocked();
      base::LogInfo(
          "agent.migration_media_freed",
          {{"volume", volume}, {"migration", migration}, {"device", device}});
    });
    return;
  }
  const std::string path = it->second.data_path;
  absl::Status st = sys::RemoveFile(path);
  if (!st.ok() && !absl::IsNotFound(st)) {
    base::LogError("agent.media_free_failed",
                   {{"volume", volume}, {"error", st.ToString()}});
    return;
  }
  rmdir(path.substr(0, path.rfind('/')).c_str());
  base::LogInfo("agent.migration_media_freed",
                {{"volume", volume}, {"path", path}});
  incoming_.erase(it);
  (void)SaveStateLocked();
}

void Agent::ReconcileMigrationsLocked() {
  // Finished jobs go; a job whose migration left its phase is cancelled.
  for (auto it = jobs_.begin(); it != jobs_.end();) {
    if (it->second.done->load()) {
      if (it->second.thread.joinable()) it->second.thread.join();
      it = jobs_.erase(it);
    } else {
      ++it;
    }
  }
  std::set<std::string> live;
  std::set<std::string> frozen;  // volumes in a pause this node is source of
  for (const k8s::Json& j : migrations_->List()) {
    auto m = api::FromJson<api::DaxMigration>(j);
    if (!m.ok()) continue;
    const std::string& name = m->metadata.name;
    const std::string& volume = m->spec.volume;
    const api::MigrationPhase phase =
        m->status.phase.value_or(api::MigrationPhase::kPending);
    auto vol = CachedVolume(volume);
    ReportMediaFreedLocked(*m);
    const bool copying = phase == api::MigrationPhase::kCopying &&
                         vol.has_value() &&
                         vol->status.epoch == m->status.epoch;
    // Before the recall: the volume is still Ready and served by its owner.
    const bool pre_copying = phase == api::MigrationPhase::kPreCopying &&
                             vol.has_value() &&
                             vol->status.epoch == m->status.epoch;

    if (m->spec.target_node == config_.node) {
      auto in = incoming_.find(volume);
      const bool mine = in != incoming_.end() && in->second.migration == name;
      auto pre_job = jobs_.find("precopy/" + name);
      const bool pre_running =
          pre_job != jobs_.end() && !pre_job->second.done->load();
      const bool pre_copied =
          mine && !in->second.pre_copied.empty() &&
          std::all_of(in->second.pre_copied.begin(),
                      in->second.pre_copied.end(),
                      [](const auto& d) { return d.has_value(); });
      if (copying && m->status.target_failure.empty() &&
          (!mine || in->second.checksum.empty())) {
        if (pre_running) {
          // Cancelled below (not live); the copy starts once it stopped
          // writing the media (its end kicks another pass).
        } else {
          live.insert("copy/" + name);
          api::DaxMigration mc = *m;
          api::DaxVolume vc = *vol;
          StartJobLocked("copy/" + name, [this, mc, vc](const auto& cancel) {
            CopyIn(mc, vc, /*pre_copy=*/false, cancel);
          });
        }
      } else if (pre_copying && m->status.pre_copy_failure.empty() &&
                 !pre_copied &&
                 (m->status.bytes_total == 0 ||
                  m->status.pre_copied_bytes < m->status.bytes_total)) {
        live.insert("precopy/" + name);
        api::DaxMigration mc = *m;
        api::DaxVolume vc = *vol;
        StartJobLocked("precopy/" + name, [this, mc, vc](const auto& cancel) {
          CopyIn(mc, vc, /*pre_copy=*/true, cancel);
        });
      } else if (phase == api::MigrationPhase::kFailed && mine) {
        if (!CopyJobLocked(name)) {
          FreeIncomingLocked(volume);
        }  // else: cancelled below, freed on the next pass
      } else if (mine && !in->second.checksum.empty() && vol.has_value() &&
                 vol->spec.owner_node == config_.node &&
                 vol->status.epoch > m->status.epoch) {
        // The owner is this node now: serve the verified copy.
        ServeIncomingLocked(volume);
      }
    }

    if (m->spec.target_node == config_.node &&
        phase == api::MigrationPhase::kFailed &&
        !m->status.target_media_freed && !CopyJobLocked(name)) {
      auto in = incoming_.find(volume);
      if (in == incoming_.end() || in->second.migration != name) {
        // Nothing of this migration's is left here (what a deletion of
        // the DaxMigration waits for).
        (void)PatchMigrationStatus(name, {{"targetMediaFreed", true}});
      }
    }

    if (m->status.source_node == config_.node) {
      auto s = served_.find(volume);
      if (s == served_.end()) {
        // Freed, and killed before it said so (a device the plugin still
        // has to free is in outgoing_: said once it is freed).
        if (phase == api::MigrationPhase::kComplete &&
            !m->status.source_media_freed && vol.has_value() &&
            vol->spec.owner_node != config_.node &&
            !outgoing_.contains(volume)) {
          (void)PatchMigrationStatus(name, {{"sourceMediaFreed", true}});
        }
        continue;
      }
      if ((copying || pre_copying) && vol->spec.owner_node == config_.node) {
        // The target's read-only access, for this migration and epoch: no
        // lease (a recall never waits for it); before the recall for the
        // pre-copy, after it for the copy (the same key: one epoch).
        fabric::GrantKey key{volume, MigrationLeaseUid(*m), m->spec.target_node,
                             m->status.epoch};
        auto g = fabric_.Grant(key, fabric::Access::kReadOnly);
        if (!g.ok()) {
          base::LogWarn(
              "agent.migration_grant_failed",
              {{"migration", name}, {"error", g.status().ToString()}});
        } else {
          // The target may read (the copy starts or goes on).
          base::CrashPoint("agent.migration.source_granted");
        }
        if (copying) {
          // Inside the pause: the data no holder changes any more.
          std::lock_guard<std::mutex> fl(frozen_mu_);
          auto& f = frozen_[volume];
          if (f.first != name || f.second == nullptr) {
            f = {name, std::make_shared<FrozenDigests>()};
          }
          frozen.insert(volume);
        }
        if (copying && m->status.source_checksum.empty()) {
          // Inside the pause only: the data no holder changes any more.
          live.insert("sum/" + name);
          const std::string path = s->second.data_path;
          const uint64_t size = s->second.size;
          const api::DaxMigration mc = *m;
          StartJobLocked("sum/" + name,
                         [this, mc, path, size](const auto& cancel) {
                           SumSource(mc, path, size, cancel);
                         });
        }
      } else if (phase == api::MigrationPhase::kComplete && vol.has_value() &&
                 vol->spec.owner_node != config_.node) {
        // Verified and switched: the old media goes.
        (void)fabric_.DeregisterVolume(volume);
        s->second.map.reset();
        s->second.registered = false;
        const std::string path = s->second.data_path;
        const bool migrated = s->second.migrated;
        if (s->second.req.mode() == pb::DEVDAX) {
          // The data is the whole device (a namespace the plugin made):
          // only the plugin frees it. Named in outgoing_ in the same state
          // write that stops serving it.
          outgoing_[volume] = Outgoing{name, path};
          served_.erase(s);
          if (absl::Status st = SaveStateLocked(); !st.ok()) {
            base::LogError("agent.state_save_failed",
                           {{"volume", volume}, {"error", st.ToString()}});
          }
          // Unmapped and no longer served; the device is still allocated.
          base::CrashPoint("agent.migration.source_released");
          base::LogInfo(
              "agent.migrated_away",
              {{"volume", volume}, {"migration", name}, {"device", path}});
          FreeOutgoingLocked(volume);
          continue;
        }
        absl::Status st = sys::RemoveFile(path);
        if (!st.ok() && !absl::IsNotFound(st)) {
          base::LogError("agent.media_free_failed",
                         {{"volume", volume}, {"error", st.ToString()}});
          continue;
        }
        if (migrated) rmdir(path.substr(0, path.rfind('/')).c_str());
        // The data is gone; the state file still serves it.
        base::CrashPoint("agent.migration.source_freed");
        served_.erase(s);
        (void)SaveStateLocked();
        (void)PatchMigrationStatus(name, {{"sourceMediaFreed", true}});
        base::LogInfo(
            "agent.migrated_away",
            {{"volume", volume}, {"migration", name}, {"path", path}});
      }
    }
  }
  {
    std::lock_guard<std::mutex> fl(frozen_mu_);
    std::erase_if(frozen_,
                  [&](const auto& f) { return !frozen.contains(f.first); });
  }
  // Devices that migrated away and still wait for the plugin's free.
  for (const auto& [volume, o] : outgoing_) {
    live.insert("free/" + volume);
    FreeOutgoingLocked(volume);
  }
  for (auto& [key, j] : jobs_) {
    if (!live.contains(key)) j.cancel->store(true);
  }
  // Media of a migration that no longer exists (deleted while running): a
  // verified copy this node owns now is served (the switch was stored
  // before the DaxMigration could go), anything else freed.
  std::vector<std::string> orphans, switched;
  for (const auto& [vol, in] : incoming_) {
    auto v = CachedVolume(vol);
    if (migrations_->Get(in.migration).has_value() ||
        CopyJobLocked(in.migration)) {
      continue;
    }
    if (v.has_value() && v->spec.owner_node == config_.node) {
      if (!in.checksum.empty()) switched.push_back(vol);
    } else {
      orphans.push_back(vol);
    }
  }
  for (const std::string& v : orphans) FreeIncomingLocked(v);
  for (const std::string& v : switched) ServeIncomingLocked(v);
  // Refusals whose media is no longer waiting to be freed here, and frees
  // nobody is left to be told of (the migration is gone).
  for (auto it = free_retries_.begin(); it != free_retries_.end();) {
    const FreeRetry& f = it->second;
    const std::string volume = it->first.substr(it->first.find('/') + 1);
    bool waiting = false;
    if (f.source) {
      auto o = outgoing_.find(volume);
      waiting = o != outgoing_.end() && o->second.migration == f.migration;
    } else {
      auto in = incoming_.find(volume);
      waiting = in != incoming_.end() && in->second.migration == f.migration;
    }
    const bool gone =
        f.migration.empty() || !migrations_->Get(f.migration).has_value();
    if (f.freed ? gone : !waiting) {
      it = free_retries_.erase(it);
    } else {
      ++it;
    }
  }
}

bool Agent::CopyJobLocked(const std::string& name) const {
  return jobs_.contains("copy/" + name) || jobs_.contains("precopy/" + name);
}

void Agent::FreeOutgoingLocked(const std::string& volume) {
  auto o = outgoing_.find(volume);
  if (o == outgoing_.end()) return;
  if (config_.node_media == nullptr) {
    // Said once per process: the namespace stays allocated until an agent
    // with a plugin to ask (--plugin-socket) frees it.
    if (!kept_said_.insert(volume).second) return;
    base::LogWarn("agent.migration_media_kept",
                  {{"volume", volume},
                   {"device", o->second.device},
                   {"reason", "no plugin to free it (--plugin-socket)"}});
    return;
  }
  const Outgoing out = o->second;
  auto vol = CachedVolume(volume);
  const std::string owner = vol.has_value() ? vol->spec.owner_node : "";
  const std::string key = "out/" + volume;
  if (!FreeDueLocked(key)) return;  // refused lately: asked at its time
  StartJobLocked("free/" + volume, [this, key, volume, out,
                                    owner](const auto&) {
    absl::Status st = config_.node_media->Free(volume, owner);
    {
      std::lock_guard<std::mutex> l(mu_);
      if (!st.ok()) {
        FreeRefusedLocked(key, volume, out.migration, out.device,
                          /*source=*/true, st);
        return;
      }
      FreeDoneLocked(key, out.migration);
      auto it = outgoing_.find(volume);
      if (it == outgoing_.end() || it->second.migration != out.migration) {
        return;
      }
      outgoing_.erase(it);
      if (absl::Status s = SaveStateLocked(); !s.ok()) {
        base::LogError("agent.state_save_failed",
                       {{"volume", volume}, {"error", s.ToString()}});
        return;
      }
    }
    base::CrashPoint("agent.migration.source_freed");
    if (!out.migration.empty()) {
      (void)PatchMigrationStatus(out.migration, {{"sourceMediaFreed", true}});
    }
    base::LogInfo("agent.migration_media_freed", {{"volume", volume},
                                                  {"migration", out.migration},
                                                  {"device", out.device}});
  });
}

absl::Duration MediaFreeRetryDelay(int refusals, absl::Duration max) {
  absl::Duration d = absl::Seconds(1);
  for (int i = 1; i < refusals && d < max; ++i) d *= 2;
  return std::min(d, max);
}

bool Agent::FreeDueLocked(const std::string& key) {
  auto r = free_retries_.find(key);
  if (r == free_retries_.end() || r->second.freed) return true;
  if (clock_.Monotonic() >= r->second.due) return true;
  WakeAt(r->second.due);
  return false;
}

void Agent::FreeRefusedLocked(const std::string& key, const std::string& volume,
                              const std::string& migration,
                              const std::string& device, bool source,
                              const absl::Status& error) {
  FreeRetry& r = free_retries_[key];
  if (r.freed || r.migration != migration) r = FreeRetry{};
  r.migration = migration;
  r.device = device;
  r.source = source;
  ++r.refusals;
  r.error = error.ToString();
  const absl::Duration wait =
      MediaFreeRetryDelay(r.refusals, config_.media_free_retry_max);
  r.due = clock_.Monotonic() + wait;
  r.next_at = clock_.Now() + wait;
  base::LogWarn("agent.migration_media_free_failed",
                {{"volume", volume},
                 {"migration", migration},
                 {"side", source ? "source" : "target"},
                 {"device", device},
                 {"attempt", std::to_string(r.refusals)},
                 {"error", r.error},
                 {"retry_in", absl::FormatDuration(wait)},
                 {"next_attempt", api::FormatWireTime(r.next_at)}});
  WakeAt(r.due);
}

void Agent::FreeDoneLocked(const std::string& key,
                           const std::string& migration) {
  auto r = free_retries_.find(key);
  if (r == free_retries_.end()) return;
  if (migration.empty() || r->second.migration != migration) {
    free_retries_.erase(r);  // nobody to tell
    return;
  }
  r->second.freed = true;
}

absl::Status Agent::SetMigrationConditionLocked(const api::DaxMigration& m,
                                                api::Condition c) {
  std::vector<api::Condition> conditions = m.status.conditions;
  if (!api::SetCondition(conditions, std::move(c))) return absl::OkStatus();
  k8s::Json list = k8s::Json::array();
  for (const api::Condition& x : conditions) list.push_back(api::ToJson(x));
  // The whole list (a merge patch replaces arrays), under the version it
  // was read at: a 409 rather than a write over the operator's conditions.
  auto r = client_.Patch(
      DaxMigrationResource(), "", m.metadata.name, k8s::PatchType::kMerge,
      k8s::Json{
          {"metadata", {{"resourceVersion", m.metadata.resource_version}}},
          {"status", {{"conditions", std::move(list)}}}},
      "status");
  if (!r.ok()) {
    base::LogInfo(
        "agent.migration_condition_not_written",
        {{"migration", m.metadata.name}, {"error", r.status().ToString()}});
  }
  return r.status();
}

void Agent::ReportMediaFreedLocked(const api::DaxMigration& m) {
  const std::string& volume = m.spec.volume;
  for (const bool source : {true, false}) {
    if ((source ? m.status.source_node : m.spec.target_node) != config_.node) {
      continue;
    }
    const char* type = source ? api::kSourceMediaFreedCondition
                              : api::kTargetMediaFreedCondition;
    const std::string side = source ? "source" : "target";
    const api::Condition* now = api::FindCondition(m.status.conditions, type);
    const bool stored_true =
        now != nullptr && now->status == api::ConditionStatus::kTrue;
    auto r = free_retries_.find((source ? "out/" : "in/") + volume);
    if (r != free_retries_.end() && r->second.migration != m.metadata.name) {
      r = free_retries_.end();  // another migration's media
    }
    api::Condition c;
    c.type = type;
    c.observed_generation = m.metadata.generation;
    c.last_transition_time = clock_.Now();
    if (r != free_retries_.end() && !r->second.freed) {
      const FreeRetry& f = r->second;
      c.status = api::ConditionStatus::kFalse;
      c.reason = api::kMediaFreeFailedReason;
      c.message = absl::StrCat(
          "the ", side, " media ", f.device, " on ", config_.node,
          " is not freed: the CSI plugin refused FreeMedia (attempt ",
          f.refusals, "): ", f.error.substr(0, 4096), "; asked again at ",
          api::FormatWireTime(f.next_at));
    } else if (r != free_retries_.end()) {
      if (stored_true) {
        free_retries_.erase(r);
        continue;
      }
      c.status = api::ConditionStatus::kTrue;
      c.reason = api::kMediaFreedReason;
      c.message = absl::StrCat("the ", side, " media ", r->second.device,
                               " on ", config_.node, " is freed (after ",
                               r->second.refusals, " refused attempt",
                               r->second.refusals == 1 ? "" : "s", ")");
    } else if (!stored_true &&
               (source ? m.status.source_media_freed
                       : (m.status.target_media_freed &&
                          m.status.phase == api::MigrationPhase::kFailed))) {
      c.status = api::ConditionStatus::kTrue;
      c.reason = api::kMediaFreedReason;
      c.message = absl::StrCat("nothing of the ", side, " media is left on ",
                               config_.node);
    } else {
      continue;
    }
    if (SetMigrationConditionLocked(m, std::move(c)).ok() &&
        r != free_retries_.end() && r->second.freed) {
      free_retries_.erase(r);
    }
  }
}

void Agent::ServeIncomingLocked(const std::string& volume) {
  auto in = incoming_.find(volume);
  if (in == incoming_.end()) return;
  Served& s = served_[volume];
  s.req.set_volume_id(volume);
  if (in->second.device) {
    s.req.set_mode(pb::DEVDAX);
    s.req.set_device(in->second.data_path);
  } else {
    s.req.set_mode(pb::FSDAX);
    s.req.set_mount_path(
        in->second.data_path.substr(0, in->second.data_path.rfind('/')));
  }
  s.data_path = in->second.data_path;
  s.size = in->second.size;
  s.migrated = true;
  s.map.reset();
  s.registered = false;
  absl::Status st = MapAndRegisterLocked(s);
  if (!st.ok()) {
    base::LogError("agent.migration_serve_failed",
                   {{"volume", volume}, {"error", st.ToString()}});
    served_.erase(volume);
    return;
  }
  const std::string migration = in->second.migration;
  incoming_.erase(in);
  (void)SaveStateLocked();
  base::CrashPoint("agent.migration.serving");
  base::LogInfo("agent.migration_serving", {{"volume", volume},
                                            {"migration", migration},
                                            {"bytes", std::to_string(s.size)}});
}

std::shared_ptr<FrozenDigests> Agent::FrozenDigestsOf(
    const std::string& volume) {
  std::lock_guard<std::mutex> l(frozen_mu_);
  auto f = frozen_.find(volume);
  return f == frozen_.end() ? nullptr : f->second.second;
}

void Agent::SumSource(const api::DaxMigration& m, const std::string& path,
                      uint64_t size, const std::atomic<bool>& cancel) {
  const absl::Time start = clock_.Now();
  // The digests the target's DIGESTS took in this pause, or hashed here
  // and kept for it.
  auto hash = [&] {
    if (config_.metrics != nullptr) config_.metrics->SourceHashed(size);
    return FileChunkDigests(path, size, &cancel);
  };
  std::shared_ptr<FrozenDigests> frozen = FrozenDigestsOf(m.spec.volume);
  bool hashed = true;
  absl::StatusOr<std::string> digests =
      frozen == nullptr ? hash() : frozen->Get(hash, &hashed);
  absl::StatusOr<std::string> sum =
      digests.ok() ? ChecksumOfDigests(size, *digests) : digests.status();
  if (!sum.ok()) {
    base::LogWarn(
        "agent.migration_checksum_failed",
        {{"migration", m.metadata.name}, {"error", sum.status().ToString()}});
    return;
  }
  (void)PatchMigrationStatus(m.metadata.name, {{"sourceChecksum", *sum}});
  base::CrashPoint("agent.migration.source_summed");
  base::LogInfo(
      "agent.migration_source_checksum",
      {{"migration", m.metadata.name},
       {"checksum", *sum},
       {"digests", hashed ? "hashed" : "shared with the target's DIGESTS"},
       {"ms",
        std::to_string(absl::ToInt64Milliseconds(clock_.Now() - start))}});
}

absl::StatusOr<std::string> Agent::MakeFileMedia(const api::DaxMigration& m,
                                                 uint64_t size,
                                                 std::string* reason) {
  const std::string& volume = m.spec.volume;
  const std::string dir = absl::StrCat(MediaDir(), "/", volume);
  const std::string path = absl::StrCat(dir, "/data");
  {
    std::lock_guard<std::mutex> l(mu_);
    Incoming& in = incoming_[volume];
    in.migration = m.metadata.name;
    in.data_path = path;
    in.device = false;
    in.size = size;
    in.checksum.clear();
    in.pre_copied.clear();  // the copy that follows writes over it
    if (!SaveStateLocked().ok()) {
      *reason = "StateNotSaved";
      return absl::InternalError("the agent's state file cannot be written");
    }
  }
  if (absl::Status st = sys::MakeDirs(dir, 0700); !st.ok()) {
    *reason = "MediaNotCreated";
    return st;
  }
  // Room for the media beside what a previous try left.
  auto usage = sys::StatFs(dir);
  const uint64_t have = sys::FileSize(path).value_or(0);
  if (usage.ok() && usage->available_bytes + have < size) {
    *reason = "InsufficientCapacity";
    return absl::ResourceExhaustedError(
        absl::StrCat(size, " bytes needed in ", MediaDir(), ", ",
                     usage->available_bytes + have, " available"));
  }
  return path;
}

absl::StatusOr<std::string> Agent::MakeDeviceMedia(
    const api::DaxMigration& m, uint64_t size, const std::atomic<bool>& cancel,
    std::string* reason) {
  const std::string& volume = m.spec.volume;
  const std::string& name = m.metadata.name;
  if (config_.node_media == nullptr) {
    *reason = "MediaNotCreated";
    return absl::FailedPreconditionError(
        "a devdax volume's media is a namespace that only this node's CSI "
        "plugin makes, and this agent has none to ask (--plugin-socket)");
  }
  // Recorded before the plugin makes it: a restart frees what a failed
  // migration left (FreeIncomingLocked). Media of this volume that is
  // still to be freed (it migrated away from here, or an earlier migration
  // here failed) goes first: the plugin would hand it back, and the free
  // would take it from under this copy.
  while (true) {
    {
      std::lock_guard<std::mutex> l(mu_);
      auto earlier = incoming_.find(volume);
      if (!outgoing_.contains(volume) &&
          (earlier == incoming_.end() || earlier->second.migration == name)) {
        Incoming& in = incoming_[volume];
        in.migration = name;
        in.device = true;
        in.size = size;
        in.checksum.clear();
        in.pre_copied.clear();  // the copy that follows writes over it
        if (!SaveStateLocked().ok()) {
          *reason = "StateNotSaved";
          return absl::InternalError(
              "the agent's state file cannot be written");
        }
        break;
      }
    }
    if (cancel.load()) return absl::CancelledError("cancelled");
    absl::SleepFor(absl::Milliseconds(200));
  }
  absl::StatusOr<NodeMedia::Media> media;
  while (true) {
    media = config_.node_media->Create(volume, pb::DEVDAX, size);
    // The plugin busy with the volume, or restarting: asked again.
    if (media.ok() || (!absl::IsAborted(media.status()) &&
                       !absl::IsUnavailable(media.status()))) {
      break;
    }
    base::LogWarn("agent.migration_media_create_retry",
                  {{"migration", name}, {"error", media.status().ToString()}});
    if (cancel.load()) return absl::CancelledError("cancelled");
    absl::SleepFor(absl::Milliseconds(500));
  }
  if (!media.ok()) {
    *reason = absl::IsResourceExhausted(media.status()) ? "InsufficientCapacity"
                                                        : "MediaNotCreated";
    return media.status();
  }
  if (media->size_bytes < size) {
    *reason = "MediaNotCreated";
    return absl::InternalError(absl::StrCat("the plugin made ", media->device,
                                            " of ", media->size_bytes,
                                            " bytes, ", size, " needed"));
  }
  {
    std::lock_guard<std::mutex> l(mu_);
    auto in = incoming_.find(volume);
    if (in == incoming_.end() || in->second.migration != name) {
      return absl::CancelledError("the migration's media was given up");
    }
    in->second.data_path = media->device;
    (void)SaveStateLocked();
  }
  base::LogInfo("agent.migration_media_made",
                {{"migration", name},
                 {"device", media->device},
                 {"bytes", std::to_string(media->size_bytes)}});
  return media->device;
}

void Agent::CopyIn(const api::DaxMigration& m, const api::DaxVolume& vol,
                   bool pre_copy, const std::atomic<bool>& cancel) {
  const std::string& name = m.metadata.name;
  const std::string& volume = m.spec.volume;
  // A pre-copy that fails says so in preCopyFailure: the migration goes on
  // and copies in full inside the pause (it never fails for it).
  auto fail = [&](const std::string& reason, const std::string& msg) {
    base::LogError(
        pre_copy ? "agent.migration_pre_copy_failed" : "agent.migration_failed",
        {{"migration", name}, {"reason", reason}, {"error", msg}});
    (void)PatchMigrationStatus(name,
                               {{pre_copy ? "preCopyFailure" : "targetFailure",
                                 absl::StrCat(reason, ": ", msg)}});
  };
  if (config_.connector == nullptr) {
    fail("NoFabric", "this agent has no fabric connector");
    return;
  }
  auto now_str = [&] { return api::FormatWireTime(clock_.Now()); };
  (void)PatchMigrationStatus(name, {{"targetEndpoint", fabric_endpoint_},
                                    {"lastProgressTime", now_str()}});
  fabric::GrantInfo grant;
  grant.key = {volume, MigrationLeaseUid(m), config_.node, m.status.epoch};
  grant.access = fabric::Access::kReadOnly;
  auto ep = vol.metadata.annotations.find(kFabricEndpointAnnotation);
  if (ep != vol.metadata.annotations.end()) grant.endpoint = ep->second;
  grant.fabric = fabric::FabricOf(grant.endpoint);
  grant.credential =
      fabric::GrantCredential(config_.secret, grant.key, grant.access);
  // Connects until the source answers (it grants once it sees the phase).
  auto connect = [&](std::unique_ptr<fabric::RemoteRegion>& r) -> bool {
    while (!cancel.load()) {
      auto c = config_.connector->Connect(grant);
      if (c.ok()) {
        r = std::move(*c);
        return true;
      }
      absl::SleepFor(absl::Milliseconds(100));
    }
    return false;
  };
  std::unique_ptr<fabric::RemoteRegion> first;
  if (!connect(first)) return;
  const uint64_t size = first->size();
  if (pre_copy) {
    // A pre-copy pays off only when, inside the pause, the source can tell
    // which chunks changed since (Digests): asked now on the first chunk,
    // before any media is made. A source that cannot gets no pre-copy: it
    // would be read again in full inside the pause anyway, and the
    // operator starts the recall at once on the failure below.
    absl::Status probe = ProbeDigests(*first, size);
    if (absl::IsUnavailable(probe)) {
      // A source agent of an earlier version closes the connection on a
      // request it does not know (TCP); or the connection was lost: once
      // more on a fresh one.
      first.reset();
      if (!connect(first)) return;
      probe = ProbeDigests(*first, size);
    }
    if (absl::IsUnimplemented(probe) || absl::IsUnavailable(probe)) {
      base::LogWarn("agent.migration_pre_copy_skipped",
                    {{"migration", name},
                     {"from", grant.endpoint},
                     {"error", probe.ToString()}});
      (void)PatchMigrationStatus(
          name, {{"preCopyFailure",
                  absl::StrCat("NoDigests: the source's fabric serves no "
                               "chunk digests (",
                               probe.message(),
                               "); copying in full inside the pause")}});
      return;
    }
  }
  // What the pre-copy left on the media (this migration's, same size):
  // taken before the media is made again, which forgets it.
  std::vector<std::optional<ChunkDigest>> have;
  if (!pre_copy) {
    std::lock_guard<std::mutex> l(mu_);
    auto in = incoming_.find(volume);
    if (in != incoming_.end() && in->second.migration == name &&
        in->second.size == size) {
      have = in->second.pre_copied;
    }
  }
  // The media: a devdax volume's data is a whole device, a namespace this
  // node's plugin makes; anything else a file under the media directory.
  const bool device = vol.spec.mode == api::VolumeMode::kDevdax;
  std::string reason;
  auto made = device ? MakeDeviceMedia(m, size, cancel, &reason)
                     : MakeFileMedia(m, size, &reason);
  if (!made.ok()) {
    if (!reason.empty()) fail(reason, std::string(made.status().message()));
    return;
  }
  const std::string path = *made;
  auto map = MappedVolume::Map(path, size, device ? 0 : size);
  if (!map.ok()) {
    fail(map.status().code() == absl::StatusCode::kResourceExhausted
             ? "InsufficientCapacity"
             : "MediaNotCreated",
         map.status().ToString());
    return;
  }
  // The media exists (and the state file names it); no byte copied yet.
  base::CrashPoint("agent.migration.media_created");
  ChunkDigests digests(size);
  // Chunks whose digest (in `digests`) is what the media holds: set by a
  // stream once it wrote the whole chunk, or kept from the pre-copy.
  std::vector<char> known(digests.chunks(), 0);
  // The chunks to read: every one, or after a pre-copy those whose digest
  // differs from the source's now (inside the pause: no holder writes).
  std::vector<uint64_t> fetch;
  const absl::Time start = clock_.Now();
  absl::Duration digests_took;
  if (!have.empty() && have.size() == digests.chunks()) {
    auto src = first->Digests(0, size, kChecksumChunk);
    digests_took = clock_.Now() - start;
    if (src.ok()) {
      fetch = ChunksToFetch(have, *src);
      for (uint64_t i = 0; i < have.size(); ++i) {
        if (have[i].has_value()) {
          digests.Set(i, *have[i]);
          known[i] = 1;
        }
      }
      for (uint64_t i : fetch) known[i] = 0;
    } else {
      // The verbs fabric, or a source agent of an earlier version (which
      // closes the connection on a request it does not know).
      base::LogWarn("agent.migration_digests_unavailable",
                    {{"migration", name},
                     {"error", src.status().ToString()},
                     {"fallback", "read every chunk"}});
      if (!absl::IsUnimplemented(src.status())) first.reset();
    }
  }
  if (fetch.empty() && std::count(known.begin(), known.end(), 1) == 0) {
    for (uint64_t i = 0; i < digests.chunks(); ++i) fetch.push_back(i);
  }
  uint64_t to_fetch = 0;
  for (uint64_t i : fetch) {
    to_fetch += std::min(size, (i + 1) * kChecksumChunk) - i * kChecksumChunk;
  }
  const char* copied_field = pre_copy ? "preCopiedBytes" : "bytesCopied";
  (void)PatchMigrationStatus(name, {{"bytesTotal", size},
                                    {copied_field, size - to_fetch},
                                    {"lastProgressTime", now_str()}});
  // A file media is written direct where its file system takes it
  // (MediaWriter); a device through its mapping.
  MediaWriter writer((*map)->fd(), path, name, &direct_refusal_logged_);
  if (!device && config_.migration_direct_writes) {
    auto direct = config_.open_media != nullptr
                      ? config_.open_media(path, O_WRONLY | O_DIRECT)
                      : sys::OpenFd(path, O_WRONLY | O_DIRECT);
    if (direct.ok()) {
      writer.UseDirect(*std::move(direct));
    } else if (absl::IsInvalidArgument(direct.status())) {
      // EINVAL: a file system without direct I/O (tmpfs before Linux 6.6,
      // some FUSE ones).
      writer.Refused(direct.status());
    } else {
      base::LogWarn("agent.migration_direct_open_failed",
                    {{"migration", name},
                     {"path", path},
                     {"error", direct.status().ToString()},
                     {"fallback", "buffered writes through the page cache"}});
    }
  }
  const char* writes = device            ? "mapping"
                       : writer.direct() ? "direct"
                                         : "buffered";
  const int streams = std::max(1, config_.migration_streams);
  base::LogInfo(
      pre_copy ? "agent.migration_pre_copying" : "agent.migration_copying",
      {{"migration", name},
       {"from", grant.endpoint},
       {"bytes", std::to_string(size)},
       {"fetch_bytes", std::to_string(to_fetch)},
       {"fetch_chunks", std::to_string(fetch.size())},
       {"digests_ms", std::to_string(absl::ToInt64Milliseconds(digests_took))},
       {"streams", std::to_string(streams)},
       {"writes", writes}});
  const uint64_t rate = config_.migration_bytes_per_second;
  // Read in pieces of at most 1 MiB (paced: a quarter second's worth, if
  // less, in whole pages: every piece but the media's last stays aligned
  // for direct writes), each into the stream's own buffer.
  const uint64_t piece =
      rate > 0 ? std::clamp<uint64_t>(rate / 4, 4096, kCopyPiece) / 4096 * 4096
               : kCopyPiece;
  const uint64_t buf_align = writer.memory_alignment();
  std::atomic<uint64_t> next_fetch{0};
  // Bytes the media holds as the source's (kept from the pre-copy or read
  // now), and bytes read now.
  std::atomic<uint64_t> copied{size - to_fetch};
  std::atomic<uint64_t> fetched{0};
  // The first write to the media, or start of its write-back, that failed:
  // the copy stops and fails.
  std::mutex write_mu;
  absl::Status write_error;
  std::string write_reason;
  std::atomic<bool> write_failed{false};
  // Where the streams' time went (summed over streams; the copied log).
  std::atomic<int64_t> read_us{0}, hash_us{0}, write_us{0}, wb_us{0};
  // The streams' time on a CPU (their wall time less this: waiting for the
  // socket, a lock, or their turn on a CPU).
  std::atomic<int64_t> cpu_us{0};
  auto since = [&](absl::Time t) {
    return absl::ToInt64Microseconds(clock_.Now() - t);
  };
  // One stream: claims the next chunk to fetch and reads it on its
  // connection with ReadStream (TCP: every piece's request sent at once, so
  // the source streams the chunk while this thread works; one request per
  // piece, each waiting for the last, left the source idle most of the time:
  // see docs/agent.md, "Migration"), each piece into the stream's own
  // buffer, hashes it there while it is in the caches and writes it to the
  // media with pwrite (MediaWriter: O_DIRECT where the file system takes
  // it; a devdax device: through its mapping, as write(2) on device DAX
  // fails); then, if any of the chunk went through the page cache, starts
  // its write-back so that the persist at the end only waits for the last.
  // A lost connection (the source restarted) is made again and the read
  // goes on from the first piece not written. Receiving straight into a
  // mapping of the new media took a page fault per 4 KiB page (the file
  // system allocating each block as it is first written): about 1.6x slower
  // than this buffer and pwrite.
  auto stream = [&](std::unique_ptr<fabric::RemoteRegion> r) {
    const int64_t cpu0 = ThreadCpuMicros();
    absl::Cleanup on_cpu = [&] { cpu_us += ThreadCpuMicros() - cpu0; };
    AlignedBuffer buf = MakeAlignedBuffer(piece, buf_align);
    ChunkHasher hasher;
    for (uint64_t k = next_fetch++; k < fetch.size(); k = next_fetch++) {
      const uint64_t i = fetch[k];
      const uint64_t begin = i * kChecksumChunk;
      const uint64_t end = std::min(size, begin + kChecksumChunk);
      uint64_t off = begin;  // the first byte not written yet
      int64_t landed_us = 0;
      bool buffered = false;  // some of the chunk is in the page cache
      auto landed = [&](uint64_t at, absl::Span<const char> d) {
        const absl::Time t0 = clock_.Now();
        hasher.Update(d.data(), d.size());
        const absl::Time t1 = clock_.Now();
        absl::Status st;
        if (device) {
          // A device DAX mapping (no write(2) on the character device).
          std::memcpy((*map)->base() + at, d.data(), d.size());
        } else {
          st = writer.Write(d.data(), d.size(), at, &buffered);
        }
        const absl::Time t2 = clock_.Now();
        hash_us += absl::ToInt64Microseconds(t1 - t0);
        write_us += absl::ToInt64Microseconds(t2 - t1);
        landed_us += absl::ToInt64Microseconds(t2 - t0);
        if (!st.ok()) {
          std::lock_guard<std::mutex> l(write_mu);
          if (write_error.ok()) {
            write_error = st;
            write_reason = "MediaNotWritten";
          }
          write_failed.store(true);
          return st;
        }
        off = at + d.size();
        copied += d.size();
        const uint64_t done = fetched += d.size();
        if (rate > 0) {
          // This many bytes may not have taken less than this long.
          const absl::Time due =
              start + absl::Seconds(static_cast<double>(done) / rate);
          while (clock_.Now() < due && !cancel.load()) {
            absl::SleepFor(
                std::min(due - clock_.Now(), absl::Milliseconds(100)));
          }
        }
        if (cancel.load()) return absl::CancelledError("copy cancelled");
        return absl::OkStatus();
      };
      while (off < end) {
        if (cancel.load() || write_failed.load()) return;
        if (r == nullptr && !connect(r)) return;
        // Paced: one piece per request, so that no more than a piece is
        // asked for ahead of the rate.
        const uint64_t len = rate > 0 ? std::min(piece, end - off) : end - off;
        landed_us = 0;
        const absl::Time t = clock_.Now();
        absl::Status st =
            r->ReadStream(off, len, absl::MakeSpan(buf.get(), piece), landed);
        read_us += since(t) - landed_us;
        if (cancel.load() || write_failed.load()) return;
        if (!st.ok()) {
          base::LogWarn("agent.migration_read_failed",
                        {{"migration", name},
                         {"offset", std::to_string(off)},
                         {"error", st.ToString()}});
          r.reset();
        }
      }
      digests.Set(i, hasher.Finish());
      const absl::Time t = clock_.Now();
      // Direct writes are on the storage already (maybe in its volatile
      // cache, which the persist flushes): nothing to start.
      absl::Status wst = buffered ? (*map)->StartWriteback(begin, end - begin)
                                  : absl::OkStatus();
      wb_us += since(t);
      if (!wst.ok()) {
        std::lock_guard<std::mutex> l(write_mu);
        if (write_error.ok()) {
          write_error = wst;
          write_reason = "MediaNotPersisted";
        }
        write_failed.store(true);
        return;
      }
      known[i] = 1;  // this chunk only: no other stream writes it
    }
  };
  // The pre-copy's digests of what the media holds, also when it stopped
  // short (the chunks it finished spare the copy a read). REQUIRES: the
  // streams joined.
  auto keep_pre_copied = [&] {
    if (!pre_copy) return;
    std::lock_guard<std::mutex> l(mu_);
    auto in = incoming_.find(volume);
    if (in == incoming_.end() || in->second.migration != name) return;
    in->second.pre_copied.assign(digests.chunks(), std::nullopt);
    for (uint64_t i = 0; i < digests.chunks(); ++i) {
      if (known[i]) in->second.pre_copied[i] = digests.Get(i);
    }
  };
  {
    std::vector<std::thread> threads;
    threads.emplace_back(stream, std::move(first));
    for (int k = 1; k < streams; ++k) threads.emplace_back(stream, nullptr);
    // Progress every 0.5 s until every byte landed or the copy is cancelled.
    absl::Time reported = start;
    while (copied.load() < size && !cancel.load() && !write_failed.load()) {
      absl::SleepFor(absl::Milliseconds(20));
      if (fetched.load() >= to_fetch / 2) {
        base::CrashPoint(pre_copy ? "agent.migration.mid_pre_copy"
                                  : "agent.migration.mid_copy");
      }
      const uint64_t now_copied = copied.load();
      // Every byte is said only by the report at the end: a pre-copy's
      // preCopiedBytes = bytesTotal moves the operator on to the recall,
      // which must not come before that report (and its digests).
      if (clock_.Now() - reported >= absl::Milliseconds(500) &&
          now_copied < size) {
        reported = clock_.Now();
        (void)PatchMigrationStatus(name, {{copied_field, now_copied},
                                          {"lastProgressTime", now_str()}});
      }
    }
    for (std::thread& t : threads) t.join();
  }
  if (!pre_copy && to_fetch == 0) {
    // Nothing to read: the crash point of a copy half done is here.
    base::CrashPoint("agent.migration.mid_copy");
  }
  keep_pre_copied();
  if (write_failed.load()) {
    fail(write_reason, write_error.ToString());
    return;
  }
  if (cancel.load()) return;
  const absl::Time copied_at = clock_.Now();
  const absl::Duration took = copied_at - start;
  if (pre_copy) {
    // Not persisted: the copy inside the pause persists the whole media
    // before it reports its checksum.
    map->reset();
    (void)PatchMigrationStatus(
        name, {{"preCopiedBytes", size},
               {"preCopyMilliseconds", absl::ToInt64Milliseconds(took)},
               {"lastProgressTime", now_str()}});
    base::CrashPoint("agent.migration.pre_copied");
    base::LogInfo(
        "agent.migration_pre_copied",
        {{"migration", name},
         {"bytes", std::to_string(size)},
         {"copy_ms", std::to_string(absl::ToInt64Milliseconds(took))},
         {"read_ms", std::to_string(read_us.load() / 1000)},
         {"hash_ms", std::to_string(hash_us.load() / 1000)},
         {"write_ms", std::to_string(write_us.load() / 1000)},
         {"writeback_ms", std::to_string(wb_us.load() / 1000)},
         {"cpu_ms", std::to_string(cpu_us.load() / 1000)},
         {"writes", (writer.direct() || device) ? writes : "buffered"}});
    return;
  }
  // Direct writes: fdatasync (the data and the extents the writes made);
  // else msync of the mapping (a devdax device: its cache lines flushed).
  if (absl::Status st =
          writer.opened_direct() ? writer.Sync() : (*map)->Persist(0, size);
      !st.ok()) {
    fail("MediaNotPersisted", st.ToString());
    return;
  }
  map->reset();
  const absl::Duration persist = clock_.Now() - copied_at;
  const std::string sum = digests.Finish();
  {
    std::lock_guard<std::mutex> l(mu_);
    auto in = incoming_.find(volume);
    if (in == incoming_.end() || in->second.migration != name) return;
    in->second.checksum = sum;
    (void)SaveStateLocked();
  }
  (void)PatchMigrationStatus(
      name, {{"bytesCopied", size},
             {"refetchedBytes", fetched.load()},
             {"copyMilliseconds", absl::ToInt64Milliseconds(took)},
             {"targetChecksum", sum},
             {"lastProgressTime", now_str()}});
  base::CrashPoint("agent.migration.copied");
  base::LogInfo(
      "agent.migration_copied",
      {{"migration", name},
       {"bytes", std::to_string(size)},
       {"read_bytes", std::to_string(fetched.load())},
       {"digests_ms", std::to_string(absl::ToInt64Milliseconds(digests_took))},
       {"copy_ms", std::to_string(absl::ToInt64Milliseconds(took))},
       {"persist_ms", std::to_string(absl::ToInt64Milliseconds(persist))},
       {"read_ms", std::to_string(read_us.load() / 1000)},
       {"hash_ms", std::to_string(hash_us.load() / 1000)},
       {"write_ms", std::to_string(write_us.load() / 1000)},
       {"writeback_ms", std::to_string(wb_us.load() / 1000)},
       {"cpu_ms", std::to_string(cpu_us.load() / 1000)},
       {"writes", (writer.direct() || device) ? writes : "buffered"},
       {"total_ms",
        std::to_string(absl::ToInt64Milliseconds(clock_.Now() - start))},
       {"checksum", sum}});
}

}  // namespace daxlease::agent
