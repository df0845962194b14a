#include "operator/controller.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "lib/base/log.h"

namespace daxlease::op {
namespace {

k8s::WorkQueueOptions QueueOptions() {
  k8s::WorkQueueOptions o;
  o.base_delay = absl::Milliseconds(5);
  o.max_delay = absl::Seconds(10);
  o.qps = 0;  // per-volume backoff is enough: there are few volumes
  return o;
}

}  // namespace

Controller::Controller(k8s::KubeClient& client, base::Clock& clock,
                       EventSink& events, ControllerOptions options)
    : client_(client),
      clock_(clock),
      options_(options),
      reconciler_(client, clock, events, options.reconciler),
      queue_(clock, QueueOptions()) {}

Controller::~Controller() { Stop(); }

void Controller::Enqueue(const k8s::Json& obj, bool is_volume) {
  if (is_volume) {
    queue_.Add(k8s::NameOf(obj));
    return;
  }
  auto spec = obj.find("spec");
  if (spec == obj.end() || !spec->is_object()) return;
  auto v = spec->find("volume");
  if (v != spec->end() && v->is_string() && !v->get<std::string>().empty()) {
    queue_.Add(v->get<std::string>());
  }
}

absl::Status Controller::Start() {
  absl::MutexLock l(&lifecycle_mu_);
  if (started_ || stopped_) {
    return absl::FailedPreconditionError("controller already started/stopped");
  }
  started_ = true;
  for (const auto& [resource, is_volume] :
       {std::pair{VolumeResource(), true}, std::pair{LeaseResource(), false},
        std::pair{RecallResource(), false}}) {
    k8s::InformerOptions io;
    io.resource = resource;
    io.resync = options_.resync;
    auto inf = std::make_unique<k8s::Informer>(client_, clock_, io);
    const bool vol = is_volume;
    inf->AddHandlers({
        [this, vol](const k8s::Json& o) { Enqueue(o, vol); },
        [this, vol](const k8s::Json& a, const k8s::Json& b) {
          Enqueue(a, vol);
          Enqueue(b, vol);
        },
        [this, vol](const k8s::Json& o) { Enqueue(o, vol); },
    });
    inf->Start();
    informers_.push_back(std::move(inf));
  }
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
    absl::StatusOr<ReconcileResult> r = reconciler_.Reconcile(*key);
    ++passes_;
    if (r.ok()) {
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
      queue_.AddRateLimited(*key);
    }
    queue_.Done(*key);
  }
}

}  // namespace daxlease::op
