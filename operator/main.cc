// daxlease-operator: parses flags and wires the controller to the API server
// behind leader election. All behaviour lives in the library parts.
#include <malloc.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "lib/base/clock.h"
#include "lib/base/flags.h"
#include "lib/base/log.h"
#include "lib/base/proc_status.h"
#include "lib/base/version.h"
#include "lib/channel/authenticator.h"
#include "lib/channel/leader_record.h"
#include "lib/channel/server.h"
#include "lib/channel/tls.h"
#include "lib/k8s/config.h"
#include "lib/k8s/leader_election.h"
#include "lib/k8s/rest_client.h"
#include "lib/metrics/metrics_server.h"
#include "operator/channel_relay.h"
#include "operator/controller.h"
#include "operator/events.h"
#include "operator/metrics.h"

ABSL_FLAG(std::string, kubeconfig, "",
          "kubeconfig file; empty: $KUBECONFIG, in-cluster, ~/.kube/config");
ABSL_FLAG(bool, leader_elect, true, "contend for leadership before acting");
ABSL_FLAG(absl::Duration, leader_election_lease_duration, absl::Seconds(15),
          "how long a standby waits on an unrenewed leader lease");
ABSL_FLAG(absl::Duration, leader_election_renew_deadline, absl::Seconds(10),
          "how long the leader keeps trying to renew before giving up");
ABSL_FLAG(absl::Duration, leader_election_retry_period, absl::Seconds(2),
          "interval between acquire/renew attempts");
ABSL_FLAG(std::string, leader_election_namespace, "default",
          "namespace of the coordination.k8s.io Lease");
ABSL_FLAG(std::string, leader_election_name, "daxlease-operator-leader",
          "name of the coordination.k8s.io Lease used as the leader lock "
          "(not a DaxLease)");
ABSL_FLAG(std::string, identity, "",
          "leader election identity; empty: hostname_pid");
ABSL_FLAG(absl::Duration, default_grace, absl::Seconds(30),
          "recall grace when neither the DaxRecall nor the DaxVolume sets one");
ABSL_FLAG(absl::Duration, migration_stall_timeout, absl::Seconds(60),
          "a DaxMigration whose target reports no copy progress for this "
          "long fails (the volume stays with its owner)");
ABSL_FLAG(bool, migration_pre_copy, true,
          "a DaxMigration's target copies the volume while it is still Ready "
          "(PreCopying) before the recall, so the pause holds only the "
          "chunks that changed since (false: the whole copy in the pause)");
ABSL_FLAG(absl::Duration, migration_pre_copy_timeout, absl::Minutes(10),
          "a pre-copy still running after this long gives way to the recall "
          "(the rest is copied inside the pause)");
ABSL_FLAG(int, workers, 2, "volumes reconciled concurrently");
ABSL_FLAG(int, malloc_arenas, 2,
          "glibc malloc arenas (M_ARENA_MAX); 0: glibc's default (8 per "
          "core), or MALLOC_ARENA_MAX from the environment");
ABSL_FLAG(int, write_concurrency, 8, "concurrent lease writes per volume");
ABSL_FLAG(absl::Duration, recall_display_hold, absl::Milliseconds(200),
          "with the channel: how long after a recall starts the writes that "
          "only show it running (the volume's Recalling, the recall's "
          "counts) are held; 0: not held");
ABSL_FLAG(absl::Duration, resync, absl::Seconds(30),
          "periodic re-examination of every object");
ABSL_FLAG(std::string, epoch_store, "default/daxlease-epochs",
          "NAMESPACE/NAME: the ConfigMaps NAME-00..NAME-3f keep each volume "
          "name's highest epoch, so a recreated volume starts above it");
ABSL_FLAG(std::string, metrics_address, "",
          "host:port to serve Prometheus metrics at /metrics (empty: off; "
          "the chart uses 0.0.0.0:8080)");

ABSL_FLAG(std::string, channel_address, "",
          "host:port to serve the recall channel on while leading (gRPC over "
          "TLS; empty: off, agents answer recalls in DaxLease status fields)");
ABSL_FLAG(std::string, channel_advertise, "",
          "host[:port] agents dial, published in --channel-record (empty: "
          "$POD_IP, else the --channel-address host; the port defaults to "
          "the one bound)");
ABSL_FLAG(std::string, channel_record, "default/daxlease-operator-channel",
          "NAMESPACE/NAME of the ConfigMap the leader publishes its channel "
          "endpoint and certificate in");
ABSL_FLAG(std::string, channel_agent_service_account, "default:daxlease-agent",
          "NAMESPACE:NAME of the agents' service account; channel tokens "
          "must be of it and bound to a pod, whose node they speak for");

namespace daxlease::op {
namespace {

// What agents dial: --channel-advertise, else $POD_IP or the listen host,
// with the bound port unless one is given.
std::string AdvertisedEndpoint(const std::string& listen, int port) {
  std::string host = absl::GetFlag(FLAGS_channel_advertise);
  if (host.empty()) {
    const char* pod_ip = std::getenv("POD_IP");
    host = pod_ip != nullptr && *pod_ip != 0
               ? pod_ip
               : listen.substr(0, listen.rfind(':'));
  }
  if (host.find(':') != std::string::npos && host.back() != ']') return host;
  return absl::StrCat(host, ":", port);
}

// On SIGUSR1 (docs/operator.md, "Memory"): glibc's totals over every arena
// as one log line (heap bytes in use, free but kept, mmapped, and the RSS
// now and at its peak), then malloc_info's per-arena XML on stderr.
void LogMallocState() {
  const struct mallinfo2 mi = mallinfo2();
  std::string rss, hwm;
  if (absl::StatusOr<base::ProcMemory> m = base::ReadProcMemory(); m.ok()) {
    rss = absl::StrCat(m->rss_kib, " kB");
    hwm = absl::StrCat(m->rss_peak_kib, " kB");
  } else {
    rss = hwm = std::string(m.status().message());
  }
  base::LogInfo("operator.malloc",
                {{"in_use_bytes", absl::StrCat(mi.uordblks)},
                 {"free_kept_bytes", absl::StrCat(mi.fordblks)},
                 {"heap_bytes", absl::StrCat(mi.arena)},
                 {"mmapped_bytes", absl::StrCat(mi.hblkhd)},
                 {"rss", rss},
                 {"rss_peak", hwm}});
  malloc_info(0, stderr);
  std::fflush(stderr);
}

std::string DefaultIdentity() {
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  return absl::StrCat(host, "_", getpid());
}

int Main() {
  // Before any thread starts. glibc gives threads arenas of their own, up to
  // 8 per core, and each keeps what its threads freed: the operator's ~50
  // threads (the channel's gRPC streams, lease writers, informers, workers)
  // spread a large recall's memory over many arenas. Two arenas lowered
  // the peak RSS of a recall of 10000 leases (docs/operator.md).
  if (const int arenas = absl::GetFlag(FLAGS_malloc_arenas);
      arenas > 0 && std::getenv("MALLOC_ARENA_MAX") == nullptr) {
    mallopt(M_ARENA_MAX, arenas);
  }
  // Signals are taken synchronously by sigwait below; block them before any
  // thread starts so every thread inherits the mask.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  // SIGUSR1: log the allocator's state (see below), for measuring memory.
  sigaddset(&sigs, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

  absl::StatusOr<k8s::KubeConfig> config =
      k8s::LoadDefaultConfig(absl::GetFlag(FLAGS_kubeconfig));
  if (!config.ok()) {
    base::LogError("operator.config", {{"error", config.status().ToString()}});
    return 2;
  }
  auto client = k8s::RestKubeClient::Create(*config);
  if (!client.ok()) {
    base::LogError("operator.client", {{"error", client.status().ToString()}});
    return 2;
  }
  base::Clock& clock = base::RealClock();
  KubeEventRecorder events(**client, clock, "daxlease-operator");
  ControllerOptions opts;
  opts.workers = absl::GetFlag(FLAGS_workers);
  opts.resync = absl::GetFlag(FLAGS_resync);
  opts.reconciler.write_concurrency = absl::GetFlag(FLAGS_write_concurrency);
  opts.reconciler.plan.default_grace = absl::GetFlag(FLAGS_default_grace);
  opts.reconciler.plan.migration.stall_timeout =
      absl::GetFlag(FLAGS_migration_stall_timeout);
  opts.reconciler.plan.migration.pre_copy =
      absl::GetFlag(FLAGS_migration_pre_copy);
  opts.reconciler.plan.migration.pre_copy_timeout =
      absl::GetFlag(FLAGS_migration_pre_copy_timeout);
  std::vector<std::string> store =
      absl::StrSplit(absl::GetFlag(FLAGS_epoch_store), '/');
  if (store.size() != 2 || store[0].empty() || store[1].empty()) {
    base::LogError("operator.flags",
                   {{"error", "--epoch-store must be NAMESPACE/NAME"}});
    return 2;
  }
  opts.reconciler.epochs = {store[0], store[1]};
  // Standbys serve it too (the series stay at zero until they lead), so a
  // scrape of every replica shows which one works.
  auto registry = std::make_shared<prometheus::Registry>();
  OperatorMetrics op_metrics(*registry, opts.workers);
  opts.metrics = &op_metrics;
  std::unique_ptr<metrics::MetricsServer> metrics_server;
  if (const std::string addr = absl::GetFlag(FLAGS_metrics_address);
      !addr.empty()) {
    auto started = metrics::MetricsServer::Start(addr, registry);
    if (!started.ok()) {
      base::LogError("operator.metrics",
                     {{"error", started.status().ToString()}});
      return 2;
    }
    metrics_server = *std::move(started);
    base::LogInfo("operator.metrics",
                  {{"port", absl::StrCat(metrics_server->port())}});
  }
  // The recall channel (docs/operator.md, "The recall channel").
  const std::string channel_address = absl::GetFlag(FLAGS_channel_address);
  std::atomic<Controller*> controller_ptr{nullptr};
  ChannelRelay relay([&](const std::string& volume) {
    if (Controller* c = controller_ptr.load()) c->EnqueueVolume(volume);
  });
  std::optional<channel::RecordLocation> record;
  if (!channel_address.empty()) {
    absl::StatusOr<channel::RecordLocation> at =
        channel::ParseRecordLocation(absl::GetFlag(FLAGS_channel_record));
    if (!at.ok()) {
      base::LogError("operator.flags", {{"error", at.status().ToString()}});
      return 2;
    }
    record = *at;
    opts.reconciler.channel = &relay;
    opts.reconciler.lag_lease_writes = true;
    opts.reconciler.recall_display_hold =
        absl::GetFlag(FLAGS_recall_display_hold);
  }
  channel::TokenReviewAuthenticator authenticator(
      **client, absl::GetFlag(FLAGS_channel_agent_service_account));
  std::unique_ptr<channel::ChannelServer> channel_server;
  std::thread record_keeper;
  std::atomic<bool> stop_keeper{false};
  Controller controller(**client, clock, events, opts);
  controller_ptr = &controller;

  std::atomic<bool> shutting_down{false};
  auto start_channel = [&](const std::string& identity) -> absl::Status {
    absl::StatusOr<channel::Certificate> cert =
        channel::SelfSignedCertificate();
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::unique_ptr<channel::ChannelServer>> server =
        channel::ChannelServer::Start(channel_address, *cert, authenticator,
                                      relay.Handlers());
    if (!server.ok()) return server.status();
    channel_server = *std::move(server);
    relay.SetServer(channel_server.get());
    channel::LeaderRecord mine{
        AdvertisedEndpoint(channel_address, channel_server->port()),
        cert->cert_pem, identity};
    absl::Status st = channel::WriteLeaderRecord(**client, *record, mine);
    if (!st.ok()) return st;
    base::LogInfo("operator.channel",
                  {{"endpoint", mine.endpoint},
                   {"port", absl::StrCat(channel_server->port())}});
    // A deposed leader's late write must not send the agents away.
    record_keeper = std::thread([&, mine] {
      while (!stop_keeper.load()) {
        absl::SleepFor(absl::Seconds(2));
        absl::StatusOr<channel::LeaderRecord> now =
            channel::ReadLeaderRecord(**client, *record);
        if (!now.ok() || !(*now == mine)) {
          (void)channel::WriteLeaderRecord(**client, *record, mine);
        }
      }
    });
    return absl::OkStatus();
  };
  const std::string identity = absl::GetFlag(FLAGS_identity).empty()
                                   ? DefaultIdentity()
                                   : absl::GetFlag(FLAGS_identity);
  auto start = [&] {
    if (record.has_value()) {
      absl::Status ch = start_channel(identity);
      if (!ch.ok()) {
        base::LogError("operator.channel", {{"error", ch.ToString()}});
        _exit(1);
      }
    }
    absl::Status st = controller.Start();
    if (!st.ok()) {
      base::LogError("operator.start", {{"error", st.ToString()}});
      _exit(1);
    }
  };
  // Declared before the elector, which holds a reference to it.
  std::unique_ptr<k8s::RestKubeClient> elect_client;
  std::optional<k8s::LeaderElector> elector;
  if (absl::GetFlag(FLAGS_leader_elect)) {
    k8s::LeaderElectionConfig le;
    le.lock_namespace = absl::GetFlag(FLAGS_leader_election_namespace);
    le.lock_name = absl::GetFlag(FLAGS_leader_election_name);
    le.identity = identity;
    le.lease_duration = absl::GetFlag(FLAGS_leader_election_lease_duration);
    le.renew_deadline = absl::GetFlag(FLAGS_leader_election_renew_deadline);
    le.retry_period = absl::GetFlag(FLAGS_leader_election_retry_period);
    k8s::LeaderCallbacks cb;
    cb.on_started_leading = [&, id = le.identity] {
      base::LogInfo("operator.leading", {{"identity", id}});
      // Off the elector's thread: the cache sync may take a while.
      std::thread(start).detach();
    };
    cb.on_stopped_leading = [&] {
      if (shutting_down.load()) return;
      // Another replica may be acting now: stop at once; the Deployment
      // restarts us as a standby.
      base::LogError("operator.leadership_lost");
      _exit(1);
    };
    cb.on_new_leader = [](const std::string& id) {
      base::LogInfo("operator.leader", {{"identity", id}});
    };
    absl::Status valid = k8s::LeaderElector::Validate(le);
    if (!valid.ok()) {
      base::LogError("operator.flags", {{"error", valid.ToString()}});
      return 2;
    }
    // The elector gets its own client: one try per request, ending before
    // the next retry period. A request stuck in the shared client's retries
    // could otherwise keep IsLeader() true past the renew deadline while
    // another replica already leads.
    k8s::RetryPolicy elect_retry;
    elect_retry.max_attempts = 1;
    elect_retry.request_timeout = le.retry_period;
    auto made = k8s::RestKubeClient::Create(*config, elect_retry);
    if (!made.ok()) {
      base::LogError("operator.client", {{"error", made.status().ToString()}});
      return 2;
    }
    elect_client = *std::move(made);
    elector.emplace(*elect_client, clock, le, cb);
    absl::Status st = elector->Start();
    if (!st.ok()) {
      base::LogError("operator.elect", {{"error", st.ToString()}});
      return 1;
    }
  } else {
    start();
  }
  base::LogInfo("operator.up", {{"version", base::kVersion}});

  int sig = 0;
  while (sigwait(&sigs, &sig) == 0 && sig == SIGUSR1) LogMallocState();
  base::LogInfo("operator.stopping", {{"signal", absl::StrCat(sig)}});
  shutting_down = true;
  controller.Stop();
  stop_keeper = true;
  if (record_keeper.joinable()) record_keeper.join();
  if (channel_server != nullptr) channel_server->Stop();
  if (elector.has_value()) elector->Stop();
  return 0;
}

}  // namespace
}  // namespace daxlease::op

int main(int argc, char** argv) {
  daxlease::base::ParseFlags(
      argc, argv,
      "daxlease-operator [flags]: grants, recalls and revokes DAX volume "
      "leases");
  return daxlease::op::Main();
}
