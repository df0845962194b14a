// Agent: the logic of daxlease-agent, one per node (docs/agent.md).
//
// Owner role, for each volume this node serves (ServeVolume): keeps it
// mapped and registered with the Fabric, grants every lease that is Granted
// or Recalling at the volume's current epoch (one grant per lease and
// epoch), invalidates the grants of leases that are no longer entitled, and
// fences a revoked lease exactly once before writing `fencedRecallID`. Holds
// a Linux lease on the backing file; a lease break becomes a DaxRecall.
//
// Holder role, for each publish on this node: creates the DaxLease, keeps
// each attached client's session told of the lease's state (Pending,
// Granted + the grant, Recalling, Revoked), and writes `releasedRecallID`
// once every attached client acked the recall, `revocationAcknowledged` once
// every attached client saw the revocation. After a recall the lease is
// Released; while the publish lives the agent requests a new lease (the
// next generation) so clients are granted again at the new epoch.
//
// Everything the agent knows is either in the API objects (read through
// informers) or in its state file (served volumes and publishes), written
// before the API object it names is created; a restarted agent rebuilds
// from both.
//
// With the recall channel (AgentConfig::channel_report; docs/node-agent.md,
// "The recall channel") the operator asks on it instead of waiting for the
// agent to read the lease status: a recall reaches the sessions as soon as
// the channel delivers it, and the agent answers there (acks, fence
// confirmations, revocation acks, batched) from its current state each time
// it is asked; it then writes none of `releasedRecallID`, `fencedRecallID`,
// `revocationAcknowledged`. An answer it cannot deliver waits in the
// channel client (the operator asks again on the next stream); it never
// falls back to the status fields.
//
// Thread safety: every public method may be called from any thread.
#ifndef DAXLEASE_NODE_AGENT_AGENT_AGENT_H_
#define DAXLEASE_NODE_AGENT_AGENT_AGENT_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "lib/api/types.h"
#include "lib/base/clock.h"
#include "lib/k8s/client.h"
#include "lib/k8s/informer.h"
#include "lib/sys/fd.h"
#include "node-agent/agent/checksum.h"
#include "node-agent/agent/mapped_volume.h"
#include "node-agent/agent/metrics.h"
#include "node-agent/agent/node_media.h"
#include "node-agent/fabric/fabric.h"
#include "proto/agent.pb.h"
#include "proto/channel.pb.h"

namespace daxlease::agent {

namespace pb = ::daxlease::agent::v1;
namespace chpb = ::daxlease::channel::v1;

// Annotation on a DaxVolume: the owner agent's fabric endpoint.
using ::daxlease::api::kFabricEndpointAnnotation;
// Name of the descriptor file in a published directory.
inline constexpr char kDescriptorFile[] = "daxlease.json";
// Where, under an fsdax volume's mount, the shared data lives.
inline constexpr char kDataFile[] = ".daxlease/data";

k8s::Resource DaxVolumeResource();
k8s::Resource DaxLeaseResource();
k8s::Resource DaxRecallResource();
k8s::Resource DaxMigrationResource();

struct AgentConfig {
  std::string node;         // this node's name
  std::string state_dir;    // state.json lives here
  std::string socket_path;  // written into descriptors (agentSocket)
  std::string secret;       // the agents' shared secret (grant credentials)
  // Passes run at least this often even without events.
  absl::Duration resync = absl::Seconds(2);
  // Signal for lease breaks (F_SETSIG); 0: no fcntl leases.
  int lease_signal = 0;
  // How long after a lease break the agent gives the file up even if the
  // recall has not completed (below /proc/sys/fs/lease-break-time, 45 s).
  absl::Duration lease_break_grace = absl::Seconds(30);
  // Series (metrics.h), updated by every pass. Not owned; null: none.
  AgentMetrics* metrics = nullptr;
  // Migrations (docs/agent.md, "Migration"): where this node creates the
  // media of volumes that migrate to it (<media_dir>/<volume>/data; empty:
  // <state_dir>/media), and how it reads the source's data (the holder
  // side of the fabric). Not owned; null: this node cannot be a target.
  std::string media_dir;
  fabric::FabricConnector* connector = nullptr;
  // The most a migration copy reads per second (0: no limit), so a copy
  // leaves the fabric to the holders of other volumes.
  uint64_t migration_bytes_per_second = 0;
  // Connections a migration copy reads on at once (each its own chunks).
  int migration_streams = 2;
  // A migration's file media (anything but devdax) is written with O_DIRECT:
  // straight to the storage, no page cache, the closest a file comes to
  // persistent memory (docs/agent.md, "Migration"). false: through the page
  // cache, written back chunk by chunk (the flag --migration-direct-writes).
  bool migration_direct_writes = true;
  // Opens a migration's file media for its direct writes (`flags` include
  // O_DIRECT). Null: open(2). A seam: tests make it refuse as a file system
  // without direct I/O does (EINVAL), and see the copy fall back to buffered
  // writes.
  std::function<absl::StatusOr<sys::UniqueFd>(const std::string& path,
                                              int flags)>
      open_media;
  // The node's CSI plugin, for media only it makes, frees and records (a
  // devdax volume's namespace; node_media.h). Not owned; null: a devdax
  // volume that migrated away stays allocated (and is not reported freed).
  NodeMedia* node_media = nullptr;
  // A free the plugin refused (NodeMedia::Free: the device still open, the
  // plugin down) is asked again after 1 s, then after twice the last wait,
  // up to this; then at this rate for good (never given up: leaked media is
  // worse than the asks). MediaFreeRetryDelay. The flag
  // --media-free-retry-max.
  absl::Duration media_free_retry_max = absl::Minutes(5);
  // The recall channel: answers go here (lib/channel's ChannelClient::Report,
  // which batches them and keeps them for the next stream while
  // disconnected); the operator's messages come to OnChannelMessage. Empty:
  // no channel, the agent answers in the lease status fields.
  std::function<void(const chpb::AgentReport&)> channel_report;
};

// How long the agent waits before it asks the plugin again to free media
// it refused `refusals` (>= 1) times in a row: 1 s, 2 s, 4 s, ... up to
// `max` (and `max` for ever after).
absl::Duration MediaFreeRetryDelay(int refusals, absl::Duration max);

// One attached client's view of its lease. Events are coalesced: a reader
// gets the latest state, never a backlog.
class Session {
 public:
  // Blocks until an event newer than the last one returned is there, or
  // `timeout`, or Close(). nullopt on timeout or close (see closed()).
  std::optional<pb::SessionEvent> Next(absl::Duration timeout);
  bool closed() const;
  const std::string& id() const { return id_; }

 private:
  friend class Agent;
  void Offer(const pb::SessionEvent& ev);
  void Close();

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::string id_;
  std::string publish_;  // target path
  std::optional<pb::SessionEvent> pending_;
  std::string last_key_;
  bool closed_ = false;
  std::string acked_recall_;
  bool acked_revocation_ = false;
};

class Agent {
 public:
  // `client`, `clock` and `fabric` must outlive the agent. `fabric_endpoint`
  // is what holders are told (the owner's TcpFabric endpoint).
  Agent(AgentConfig config, k8s::KubeClient& client, base::Clock& clock,
        fabric::Fabric& fabric, std::string fabric_endpoint);
  ~Agent();  // Stop()
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  // Loads the state file, starts the informers (waits for their first
  // list), remaps the volumes it served, and starts the reconcile thread.
  absl::Status Start();
  void Stop();

  // CSI (proto/agent.proto has the contract of each).
  absl::Status RecordVolume(const pb::RecordVolumeRequest& req);
  absl::Status ForgetVolume(const std::string& volume_id);
  absl::StatusOr<pb::ServeVolumeResponse> ServeVolume(
      const pb::ServeVolumeRequest& req);
  absl::Status StopServing(const std::string& volume_id);
  absl::StatusOr<pb::ReshapeVolumeResponse> ReshapeVolume(
      const pb::ReshapeVolumeRequest& req);
  absl::StatusOr<pb::SnapshotVolumeResponse> SnapshotVolume(
      const pb::SnapshotVolumeRequest& req);
  absl::StatusOr<pb::PublishResponse> Publish(const pb::PublishRequest& req);
  absl::Status Unpublish(const std::string& volume_id,
                         const std::string& target_path);

  // libdaxlease.
  absl::StatusOr<std::shared_ptr<Session>> OpenSession(
      const std::string& lease_name, const std::string& attach_token);
  void CloseSession(const std::shared_ptr<Session>& s);
  // `session_id` names the acking session (empty: every session of the
  // publish).
  absl::Status AckRecall(const std::string& lease_name,
                         const std::string& attach_token,
                         const std::string& recall_id,
                         const std::string& session_id);
  absl::Status AckRevocation(const std::string& lease_name,
                             const std::string& attach_token,
                             const std::string& session_id);
  pb::StatusResponse Status();

  // A lease-break signal arrived for `fd`.
  void OnLeaseBreak(int fd);

  // The operator asked on the recall channel (on the channel client's
  // thread): recalls reach the publishes' sessions at once, fences are cut
  // in the fabric, revocations are told; whatever is answerable now is
  // answered at once, the rest as soon as the sessions answer. Idempotent:
  // an item asked again (a new stream, a new leader) is answered again from
  // the current state.
  void OnChannelMessage(const chpb::OperatorMessage& m);

  // One reconcile pass (the thread runs these; tests may call it).
  void ReconcileOnce();
  // Asks the reconcile thread for a pass soon.
  void Kick();

 private:
  struct Served {
    pb::ServeVolumeRequest req;
    std::string data_path;
    uint64_t size = 0;
    std::unique_ptr<MappedVolume> map;
    bool registered = false;
    std::optional<absl::Time> lease_broken_at;
    std::string break_recall;  // DaxRecall created for the break
    // The data came here by a migration (media under media_dir, not a CSI
    // staging mount): clients on this node map it by its absolute path.
    bool migrated = false;
  };
  // A volume migrating to this node: media made (recorded before it is
  // created, so a restart frees what a failed migration left).
  struct Incoming {
    std::string migration;  // DaxMigration name
    std::string data_path;
    uint64_t size = 0;
    std::string checksum;  // of the finished copy ("" while copying)
    // The pre-copy's digest of each chunk as it wrote it to the media
    // (nullopt: not written whole). In memory only: a restarted agent copies
    // in full.
    std::vector<std::optional<ChunkDigest>> pre_copied;
    // The media is a device the plugin made (config_.node_media: a devdax
    // volume's namespace; data_path "" until it answered), not a file.
    bool device = false;
  };
  // A devdax volume that migrated away: its device is unmapped and no
  // longer served, the plugin has not freed it yet (recorded before the
  // volume leaves served_, so a restart goes on freeing it).
  struct Outgoing {
    std::string migration;  // DaxMigration name (its sourceMediaFreed)
    std::string device;
  };
  // Media of a migration the plugin refused to free (NodeMedia::Free), by
  // FreeKey: asked again no sooner than `due`, and told on the migration's
  // condition (SourceMediaFreed, TargetMediaFreed; lib/api/conditions.h).
  // Memory only: a restarted agent asks at once and counts from 1 again.
  struct FreeRetry {
    std::string migration;  // DaxMigration name ("": none to tell)
    std::string device;
    bool source = true;  // the source's old media; else the target's
    int refusals = 0;    // in a row
    std::string error;   // the last refusal
    absl::Duration due;  // clock_.Monotonic() of the next ask
    absl::Time next_at;  // the same, wall time (the logs and the message)
    bool freed = false;  // freed since: the condition turns True
  };
  // A copy (target) or checksum (source) running beside the reconcile.
  struct Job {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> cancel;
    std::shared_ptr<std::atomic<bool>> done;
  };
  struct Published {
    pb::PublishRequest req;
    std::string lease_name;
    std::string token;
    int64_t generation = 1;
    bool revoked = false;  // saw the lease Revoked: sticky until re-attach
    // A client was attached when last recorded. Persisted, so a restarted
    // agent does not ack a recall for clients that have not reconnected yet.
    bool attached = false;
    // Earlier generations' leases, deleted once the current one is granted
    // (until then they show the recall that released or revoked them, and
    // the operator counts them in it). Persisted.
    std::vector<std::string> retired;
    std::set<std::shared_ptr<Session>> sessions;
    // The recall this publish's lease was last seen Recalling under, and
    // when (the start of the clients' flush, for the metrics).
    std::string recall_seen;
    absl::Time recall_seen_at;
  };

  absl::Status LoadState();
  absl::Status SaveStateLocked();
  absl::Status MapAndRegisterLocked(Served& s);
  // Grows the data file to what `size_bytes` allows and maps it again.
  absl::Status RemapGrownLocked(Served& s, uint64_t size_bytes);
  // The data file's size once grown for `size_bytes`: that, or what the
  // filesystem holds, in 2 MiB pages; never less than today.
  absl::StatusOr<uint64_t> GrownSizeLocked(const Served& s,
                                           uint64_t size_bytes) const;
  // A volume this node owns and serves, read for a change that needs a
  // recall of `kind` ("reshape", "snapshot"): FailedPrecondition when it is
  // not served here or owned by another node.
  struct OwnedVolume {
    api::DaxVolume vol;
    api::VolumePhase phase;
    std::string prefix;  // "<volume>-<kind>-": the names of its recalls
    std::string active;  // the volume's active recall ("": none)
    bool ours = false;   // `active` is one of this kind's
  };
  absl::StatusOr<OwnedVolume> OwnedVolumeFor(const std::string& name,
                                             absl::string_view kind);
  absl::Status CreateLease(const Published& p);
  // Moves `p` to its next generation's lease (saved, created); the old one
  // is retired.
  absl::Status RenewLeaseLocked(Published& p);
  std::string LeaseName(const std::string& volume, const std::string& target,
                        int64_t generation) const;
  std::vector<api::DaxLease> LeasesOf(const std::string& volume) const;
  std::optional<api::DaxVolume> CachedVolume(const std::string& name) const;
  std::optional<api::DaxLease> CachedLease(const std::string& name) const;
  absl::Status PatchLeaseStatus(const std::string& name, const k8s::Json& st);
  Published* FindPublishLocked(const std::string& lease_name,
                               const std::string& token, absl::Status* err);
  void ReconcileOwnerLocked();
  void ReconcileHolderLocked();
  // Migrations (migration.cc): the target's copy and adoption, the
  // source's grant, checksum and freeing of its media.
  void ReconcileMigrationsLocked();
  void StartJobLocked(const std::string& key,
                      std::function<void(const std::atomic<bool>&)> body);
  // The target's copy: `pre_copy` (phase PreCopying, the volume still
  // Ready) reads every chunk and keeps their digests in incoming_ (in
  // memory); the copy (phase Copying, inside the pause) then asks the
  // source's digests over the fabric and reads only the chunks that differ
  // (all of them without a pre-copy, or when the source cannot tell).
  void CopyIn(const api::DaxMigration& m, const api::DaxVolume& vol,
              bool pre_copy, const std::atomic<bool>& cancel);
  // A copy or pre-copy of migration `name` is running (its media in use).
  bool CopyJobLocked(const std::string& name) const;
  // The target's media for `m` (recorded in incoming_ first): the path to
  // map, or the error with the migration's failure reason in `reason` ("":
  // cancelled, nothing to report).
  absl::StatusOr<std::string> MakeFileMedia(const api::DaxMigration& m,
                                            uint64_t size, std::string* reason);
  absl::StatusOr<std::string> MakeDeviceMedia(const api::DaxMigration& m,
                                              uint64_t size,
                                              const std::atomic<bool>& cancel,
                                              std::string* reason);
  void SumSource(const api::DaxMigration& m, const std::string& path,
                 uint64_t size, const std::atomic<bool>& cancel);
  // The frozen digests of `volume` while this node is the source of a
  // migration in its pause (Copying at the volume's epoch), else null.
  std::shared_ptr<FrozenDigests> FrozenDigestsOf(const std::string& volume);
  absl::Status PatchMigrationStatus(const std::string& name,
                                    const k8s::Json& st);
  void FreeIncomingLocked(const std::string& volume);
  // Asks the plugin (config_.node_media) to free outgoing_[volume]'s device
  // beside the reconcile; once freed, forgets it and writes the migration's
  // sourceMediaFreed.
  void FreeOutgoingLocked(const std::string& volume);
  // Whether the plugin may be asked to free the media of `key` now (not
  // while a refusal's wait runs; the reconcile thread is woken at its end).
  bool FreeDueLocked(const std::string& key);
  // The plugin refused to free `key`'s media with `error`: counts it, sets
  // the next ask, logs both.
  void FreeRefusedLocked(const std::string& key, const std::string& volume,
                         const std::string& migration,
                         const std::string& device, bool source,
                         const absl::Status& error);
  // The plugin freed `key`'s media: the condition turns True.
  void FreeDoneLocked(const std::string& key, const std::string& migration);
  // Writes `m`'s SourceMediaFreed / TargetMediaFreed condition where this
  // node is the side whose media goes: False while the plugin refuses, True
  // once freed (or the status says so); forgets what is told.
  void ReportMediaFreedLocked(const api::DaxMigration& m);
  // Sets `c` among `m`'s conditions, a patch of the status subresource
  // under the resourceVersion read (so the operator's conditions stay; a
  // conflict is retried by a later pass). OK when nothing changed.
  absl::Status SetMigrationConditionLocked(const api::DaxMigration& m,
                                           api::Condition c);
  // Asks the reconcile thread for a pass at `due` (clock_.Monotonic()).
  void WakeAt(absl::Duration due);
  // Serves the verified copy in incoming_[volume] (this node owns it now).
  void ServeIncomingLocked(const std::string& volume);
  std::string MediaDir() const;
  // Tells config_.metrics the ack of `p`'s lease for recall `id`.
  void RecallAckedLocked(const Published& p, const std::string& id);
  void UpdateGaugesLocked();
  pb::SessionEvent EventFor(Published& p, const api::DaxLease* l,
                            const api::DaxVolume* v);
  void Run();

  // The recall channel (no-ops without one).
  bool channel() const { return static_cast<bool>(config_.channel_report); }
  // The recall asked on the channel for `lease`, while the stored lease `l`
  // (the informer's, may lag behind the channel) is not past it.
  const chpb::RecallItem* ChannelRecallLocked(const std::string& lease,
                                              const api::DaxLease* l) const;
  // Whether every client of `p` acked `recall_id` (none attached counts as
  // flushed only if none was attached when the agent last knew).
  bool ReleasedLocked(const Published& p, const std::string& recall_id) const;
  Published* PublishOfLeaseLocked(const std::string& lease);
  // Answers every asked item it can now (one report), forgets items whose
  // outcome the stored leases show.
  void AnswerChannelLocked();
  // The fences asked: each grant recorded in fenced_ (saved), cut, then
  // confirmed into `report`.
  void FenceAskedLocked(chpb::AgentReport& report);
  // The uid of lease `name`: the informer's, else the API server's (the
  // informer may not have seen it yet). NotFound: the lease is gone.
  absl::StatusOr<std::string> LeaseUidLocked(const std::string& name) const;
  // Drops fenced_ keys no grant can be made under any more.
  void PruneFencedLocked();

  const AgentConfig config_;
  k8s::KubeClient& client_;
  base::Clock& clock_;
  fabric::Fabric& fabric_;
  const std::string fabric_endpoint_;

  std::unique_ptr<k8s::Informer> volumes_;
  std::unique_ptr<k8s::Informer> leases_;
  std::unique_ptr<k8s::Informer> migrations_;

  std::mutex mu_;  // state below; held across API writes of one pass
  std::map<std::string, Served> served_;        // by volume
  std::map<std::string, Published> publishes_;  // by target path
  std::map<std::string, Incoming> incoming_;    // by volume
  std::map<std::string, Outgoing> outgoing_;    // by volume
  std::set<std::string> kept_said_;  // outgoing_ volumes logged as kept
  // by "copy/" or "sum/" + migration name, "free/" + volume
  std::map<std::string, Job> jobs_;
  // by "out/" (outgoing_) or "in/" (incoming_) + volume
  std::map<std::string, FreeRetry> free_retries_;

  // Asked on the recall channel, by lease; `answered` once answered on the
  // current ask (a new ask of the same item answers again).
  template <typename Item>
  struct Asked {
    Item item;
    bool answered = false;
  };
  std::map<std::string, Asked<chpb::RecallItem>> asked_recalls_;
  std::map<std::string, Asked<chpb::FenceItem>> asked_fences_;
  std::map<std::string, Asked<chpb::RevokedItem>> asked_revoked_;
  // Leases whose revocation this agent acked on the channel (a new attach
  // may then request the next generation). Memory only: after a restart the
  // operator asks again for what it has not stored, and a new attach waits
  // for the lease object to show the revocation acknowledged (Released).
  std::set<std::string> revocation_reported_;
  // Grants this owner was asked on the channel to fence (value: the lease
  // name), in state.json before the cut is confirmed. With the channel the
  // lease objects only show the recall, and may lag it: a lease the recall
  // revoked can still read Recalling at the volume's epoch. The fabric
  // remembers a cut grant only while the process lives, so a restarted owner
  // would grant it again from that lease object until the object caught up
  // (the operator does not ask again for a fence it stored). Kept until the
  // volume's epoch moves past the grant's (or this node stops serving it).
  std::map<fabric::GrantKey, std::string> fenced_;
  bool fenced_unsaved_ = false;  // fenced_ has keys state.json lacks

  // The volumes this node is the migration source of, in the pause: the
  // digests its checksum and the target's DIGESTS share (by volume; the
  // migration's name beside). A lock of its own, never held while waiting
  // for anything: the fabric's threads take it when a holder asks DIGESTS,
  // while a pass holding mu_ may be waiting for their operations (a cut).
  std::mutex frozen_mu_;
  std::map<std::string, std::pair<std::string, std::shared_ptr<FrozenDigests>>>
      frozen_;

  // Whether a file system's refusal of direct writes was logged (once: every
  // migration to it after falls back the same way; its copying line says
  // writes=buffered).
  std::atomic<bool> direct_refusal_logged_{false};

  std::mutex kick_mu_;
  std::condition_variable kick_cv_;
  bool kicked_ = false;
  bool stopping_ = false;
  // The earliest pass asked for by WakeAt (clock_.Monotonic()).
  absl::Duration wake_due_ = absl::InfiniteDuration();
  std::thread thread_;
};

}  // namespace daxlease::agent

#endif  // DAXLEASE_NODE_AGENT_AGENT_AGENT_H_
