#include "operator/controller.h"

#include <malloc.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "lib/api/resources.h"
#include "lib/base/log.h"

namespace daxlease::op {
namespace {

k8s::WorkQueueOptions QueueOptions(OperatorMetrics* metrics) {
  k8s::WorkQueueOptions o;
  o.observer = metrics;
  o.base_delay = absl::Milliseconds(5);
  o.max_delay = absl::Seconds(10);
  o.qps = 0;  // per-volume backoff is enough: there are few volumes
  return o;
}
}  // namespace

void PassCoalescer::Ran(const std::string& volume, absl::Duration took) {
  absl::MutexLock l(&mu_);
  last_[volume] = took;
}

absl::Duration PassCoalescer::DelayFor(const std::string& volume) const {
  absl::MutexLock l(&mu_);
  auto it = last_.find(volume);
  const absl::Duration took =
      it == last_.end() ? absl::ZeroDuration() : it->second;
  return std::clamp(took, min_, max_);
}

Controller::Controller(k8s::KubeClient& client, base::Clock& clock,
                       EventSink& events, ControllerOptions options)
    : client_(client),
      clock_(clock),
      options_(options),
      events_(events),
      queue_(clock, QueueOptions(options.metrics)),
      coalescer_(options.coalesce_min, options.coalesce_max) {}

Controller::~Controller() { Stop(); }

void Controller::EnqueueVolume(const std::string& volume) {
  queue_.Add(volume);
}

void Controller::Enqueue(const k8s::Json& obj, bool is_volume, bool coalesce) {
  if (is_volume) {
    queue_.Add(k8s::NameOf(obj));
    return;
  }
  auto spec = obj.find("spec");
  if (spec == obj.end() || !spec->is_object()) return;
  auto v = spec->find("volume");
  if (v == spec->end() || !v->is_string() || v->get<std::string>().empty()) {
    return;
  }
  const std::string& volume = v->get_ref<const std::string&>();
  if (coalesce) {
    queue_.AddAfter(volume, coalescer_.DelayFor(volume));
  } else {
    queue_.Add(volume);
  }
}

absl::Status Controller::Start() {
  absl::MutexLock l(&lifecycle_mu_);
  if (started_ || stopped_) {
    return absl::FailedPreconditionError("controller already started/stopped");
  }
  started_ = true;
  const k8s::Resource kinds[] = {
      api::DaxVolumeResource(), api::DaxLeaseResource(),
      api::DaxRecallResource(), api::DaxMigrationResource()};
  for (const k8s::Resource& resource : kinds) {
    k8s::InformerOptions io;
    io.resource = resource;
    io.resync = options_.resync;
    io.drop_managed_fields = true;  // never read; most of the bytes
    if (resource.plural == api::DaxLeaseResource().plural) {
      // The reader parses each version once and keeps that, with the
      // volume it belongs to; any JSON of N leases on top (even a stub of
      // three fields, about 1 KB each) was a large part of the operator's
      // memory.
      io.cache_versions_only = true;
    }
    informers_.push_back(std::make_unique<k8s::Informer>(client_, clock_, io));
  }
  reader_ = std::make_unique<CacheWorldReader>(
      *informers_[0], *informers_[1], *informers_[2], informers_[3].get());
  ReconcilerOptions ro = options_.reconciler;
  ro.metrics = options_.metrics;
  if (!ro.requeue) ro.requeue = [this](const std::string& v) { queue_.Add(v); };
  reconciler_ =
      std::make_unique<Reconciler>(client_, clock_, events_, ro, reader_.get());
  for (size_t i = 0; i < informers_.size(); ++i) {
    const k8s::Resource r = kinds[i];
    const bool vol = i == 0;
    const bool lease = i == 1;
    // The volume an object was filed under before the event: a lease's old
    // object, a resync's and a vanished lease's are stubs without a volume
    // (cache_versions_only), so the reader says where it was.
    auto was_under = [this](const std::string& volume) {
      if (!volume.empty()) queue_.Add(volume);
    };
    informers_[i]->AddHandlers({
        [this, r, vol, lease](const k8s::Json& o) {
          if (!lease) {
            base::LogDebug("controller.added",
                           {{"kind", r.plural}, {"name", k8s::NameOf(o)}});
          }
          // A new lease: coalesced with the others of its burst.
          if (reader_->Observe(r, o, false)) Enqueue(o, vol, lease);
        },
        [this, r, vol, lease, was_under](const k8s::Json& a,
                                         const k8s::Json& b) {
          if (!lease) {
            base::LogDebug("controller.updated",
                           {{"kind", r.plural},
                            {"name", k8s::NameOf(b)},
                            {"rv", k8s::ResourceVersionOf(b)}});
          }
          std::string was;
          if (!reader_->Observe(r, b, false, &was)) return;  // our own echo
          was_under(was);
          Enqueue(a, vol);
          Enqueue(b, vol);
        },
        [this, r, vol, was_under](const k8s::Json& o) {
          std::string was;
          reader_->Observe(r, o, true, &was);
          was_under(was);
          Enqueue(o, vol);
        },
    });
  }
  for (auto& inf : informers_) inf->Start();
  for (auto& inf : informers_) {
    if (!inf->WaitForSync(options_.sync_timeout)) {
      return absl::DeadlineExceededError("informer caches did not sync");
    }
  }
  for (int i = 0; i < std::max(1, options_.workers); ++i) {
    workers_.emplace_back([this] { Work(); });
  }
  base::LogInfo("controller.started",
                {{"workers", absl::StrCat(options_.workers)}});
  return absl::OkStatus();
}

void Controller::Stop() {
  absl::MutexLock l(&lifecycle_mu_);
  if (stopped_) return;
  stopped_ = true;
  queue_.ShutDown();
  for (auto& inf : informers_) inf->Stop();
  for (std::thread& t : workers_) t.join();
}

int64_t Controller::passes() const { return passes_.load(); }

void Controller::Work() {
  while (std::optional<std::string> key = queue_.Get()) {
    absl::Time start = clock_.Now();
    base::LogDebug("reconcile.begin", {{"volume", *key}});
    absl::StatusOr<ReconcileResult> r = reconciler_->Reconcile(*key);
    ++passes_;
    coalescer_.Ran(*key, clock_.Now() - start);
    if (OperatorMetrics* m = options_.metrics; m != nullptr) {
      const absl::Duration took = clock_.Now() - start;
      m->Reconciled(!r.ok() ? OperatorMetrics::Result::kError
                    : r->requeue_at != absl::InfiniteFuture()
                        ? OperatorMetrics::Result::kRequeueAfter
                        : OperatorMetrics::Result::kSuccess,
                    took);
      m->Worked(took);
    }
    if (r.ok()) {
      if (options_.trim_after_leases > 0 &&
          r->leases >= options_.trim_after_leases) {
        if (options_.trim) {
          options_.trim();
        } else {
          malloc_trim(0);
        }
      }
      queue_.Forget(*key);
      if (r->requeue_at != absl::InfiniteFuture()) {
        // A little past the deadline so the pass sees it expired.
        queue_.AddAfter(*key,
                        r->requeue_at - clock_.Now() + absl::Milliseconds(10));
      }
      base::LogDebug(
          "reconcile.done",
          {{"volume", *key},
           {"writes", absl::StrCat(r->writes)},
           {"ms",
            absl::StrCat(absl::ToInt64Milliseconds(clock_.Now() - start))}});
    } else {
      base::Log(
          k8s::IsConflict(r.status()) || absl::IsNotFound(r.status())
              ? base::LogLevel::kDebug
              : base::LogLevel::kWarn,
          "reconcile.retry",
          {{"volume", *key}, {"error", std::string(r.status().message())}});
      // A 409 is expected when agents write while we do, but the cache we
      // read from may not have their write yet: re-reading at once would
      // compute the same stale pass and conflict again. So every failure,
      // conflicts included, waits the per-volume backoff (5 ms, doubling;
      // reset by the next successful pass).
      queue_.AddRateLimited(*key);
    }
    queue_.Done(*key);
  }
}

}  // namespace daxlease::op
