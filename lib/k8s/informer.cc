#include "lib/k8s/informer.h"

#include <algorithm>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "lib/base/log.h"
#include "lib/k8s/resource.h"

namespace daxlease::k8s {

Informer::Informer(KubeClient& client, base::Clock& clock,
                   InformerOptions options)
    : client_(client), clock_(clock), options_(std::move(options)) {}

Informer::~Informer() { Stop(); }

void Informer::AddHandlers(InformerHandlers handlers) {
  handlers_.push_back(std::move(handlers));
}

void Informer::Start() {
  if (started_) return;
  started_ = true;
  last_resync_ = clock_.Now();
  thread_ = std::thread([this] { Run(); });
}

void Informer::Stop() {
  if (!stop_.HasBeenNotified()) stop_.Notify();
  cancel_.Cancel();
  if (thread_.joinable()) thread_.join();
}

bool Informer::WaitForSync(absl::Duration timeout) {
  return synced_.WaitForNotificationWithTimeout(timeout);
}

bool Informer::HasSynced() const { return synced_.HasBeenNotified(); }

std::optional<Json> Informer::Get(absl::string_view key) const {
  absl::MutexLock l(&mu_);
  auto it = cache_.find(std::string(key));
  if (it == cache_.end()) return std::nullopt;
  return Shown(it->first, it->second);
}

std::vector<Json> Informer::List() const {
  absl::MutexLock l(&mu_);
  std::vector<Json> out;
  out.reserve(cache_.size());
  for (const auto& [k, v] : cache_) out.push_back(Shown(k, v));
  return out;
}

std::vector<std::string> Informer::ListKeys() const {
  absl::MutexLock l(&mu_);
  std::vector<std::string> out;
  for (const auto& [k, v] : cache_) out.push_back(k);
  return out;
}

std::string Informer::LastResourceVersion() const {
  absl::MutexLock l(&mu_);
  return rv_;
}

int64_t Informer::list_count() const {
  absl::MutexLock l(&mu_);
  return lists_;
}

int64_t Informer::watch_count() const {
  absl::MutexLock l(&mu_);
  return watches_;
}

absl::Status Informer::ListAndReplace() {
  ListOptions lo;
  lo.label_selector = options_.label_selector;
  lo.field_selector = options_.field_selector;
  lo.limit = options_.page_size;
  absl::StatusOr<ListResult> list =
      ListAll(client_, options_.resource, options_.ns, lo);
  if (!list.ok()) return list.status();
  std::map<std::string, Json> fresh;
  for (Json& obj : list->items) {
    Trim(obj);
    std::string key = KeyOf(obj);
    fresh.emplace(std::move(key), std::move(obj));
  }
  // Diff against the cache so handlers see what changed while we were away.
  std::vector<Json> added;
  std::vector<std::pair<Json, Json>> updated;
  std::vector<Json> deleted;
  {
    absl::MutexLock l(&mu_);
    for (const auto& [key, obj] : cache_) {
      auto it = fresh.find(key);
      if (it == fresh.end()) {
        deleted.push_back(Shown(key, obj));
      } else if (ResourceVersionOf(it->second) != CachedVersion(obj)) {
        updated.emplace_back(Shown(key, obj), it->second);
      }
    }
    for (const auto& [key, obj] : fresh) {
      if (cache_.count(key) == 0) added.push_back(obj);
    }
    if (options_.cache_transform || options_.cache_versions_only) {
      for (auto& [key, obj] : fresh) obj = Cached(obj);
    }
    cache_ = std::move(fresh);
    rv_ = list->resource_version;
    ++lists_;
  }
  for (const InformerHandlers& h : handlers_) {
    if (h.on_delete) {
      for (const Json& o : deleted) h.on_delete(o);
    }
    if (h.on_add) {
      for (const Json& o : added) h.on_add(o);
    }
    if (h.on_update) {
      for (const auto& [o, n] : updated) h.on_update(o, n);
    }
  }
  return absl::OkStatus();
}

void Informer::Trim(Json& obj) const {
  if (!options_.drop_managed_fields) return;
  auto meta = obj.find("metadata");
  if (meta != obj.end() && meta->is_object()) meta->erase("managedFields");
}

Json Informer::Cached(const Json& obj) const {
  if (options_.cache_versions_only) return ResourceVersionOf(obj);
  return options_.cache_transform ? options_.cache_transform(obj) : obj;
}

Json Informer::Shown(const std::string& key, const Json& cached) const {
  if (!options_.cache_versions_only) return cached;
  auto [ns, name] = SplitObjectKey(key);
  Json meta = {{"name", name}, {"resourceVersion", cached}};
  if (!ns.empty()) meta["namespace"] = ns;
  return {{"metadata", std::move(meta)}};
}

std::string Informer::CachedVersion(const Json& cached) const {
  if (options_.cache_versions_only) {
    return cached.is_string() ? cached.get<std::string>() : "";
  }
  return ResourceVersionOf(cached);
}

void Informer::Apply(const WatchEvent& event) {
  std::string rv = ResourceVersionOf(event.object);
  if (event.type == WatchEvent::Type::kBookmark) {
    absl::MutexLock l(&mu_);
    if (!rv.empty()) rv_ = rv;
    return;
  }
  WatchEvent trimmed;
  const WatchEvent* e = &event;
  if (options_.drop_managed_fields) {
    trimmed = event;
    Trim(trimmed.object);
    e = &trimmed;
  }
  const WatchEvent& ev = *e;
  const std::string key = KeyOf(ev.object);
  std::optional<Json> old;
  // Outside the lock: Get and List callers do not wait for the transform.
  std::optional<Json> cached;
  if (ev.type != WatchEvent::Type::kDeleted) cached = Cached(ev.object);
  {
    absl::MutexLock l(&mu_);
    auto it = cache_.find(key);
    if (it != cache_.end()) old = Shown(it->first, it->second);
    if (ev.type == WatchEvent::Type::kDeleted) {
      if (it != cache_.end()) cache_.erase(it);
    } else if (it != cache_.end()) {
      it->second = *std::move(cached);
    } else {
      cache_.emplace(key, *std::move(cached));
    }
    if (!rv.empty()) rv_ = rv;
  }
  for (const InformerHandlers& h : handlers_) {
    if (ev.type == WatchEvent::Type::kDeleted) {
      if (h.on_delete) h.on_delete(ev.object);
    } else if (old.has_value()) {
      if (h.on_update) h.on_update(*old, ev.object);
    } else if (h.on_add) {
      h.on_add(ev.object);
    }
  }
}

void Informer::MaybeResync() {
  if (options_.resync <= absl::ZeroDuration()) return;
  if (clock_.Now() - last_resync_ < options_.resync) return;
  last_resync_ = clock_.Now();
  for (const Json& obj : List()) {
    for (const InformerHandlers& h : handlers_) {
      if (h.on_update) h.on_update(obj, obj);
    }
  }
}

void Informer::Run() {
  const std::string what = options_.resource.Name();
  absl::Duration backoff = absl::Milliseconds(100);
  bool need_list = true;
  while (!stop_.HasBeenNotified()) {
    if (need_list) {
      absl::Status s = ListAndReplace();
      if (!s.ok()) {
        base::LogWarn(
            "k8s.informer.list_failed",
            {{"resource", what}, {"error", std::string(s.message())}});
        stop_.WaitForNotificationWithTimeout(backoff);
        backoff = std::min(backoff * 2, options_.max_backoff);
        continue;
      }
      need_list = false;
      if (!synced_.HasBeenNotified()) synced_.Notify();
    }
    MaybeResync();
    WatchOptions wo;
    wo.label_selector = options_.label_selector;
    wo.field_selector = options_.field_selector;
    wo.resource_version = LastResourceVersion();
    int64_t timeout = absl::ToInt64Seconds(options_.watch_timeout);
    if (options_.resync > absl::ZeroDuration()) {
      timeout = std::min(timeout, absl::ToInt64Seconds(options_.resync));
    }
    wo.timeout_seconds = std::max<int64_t>(timeout, 1);
    {
      absl::MutexLock l(&mu_);
      ++watches_;
    }
    bool got_event = false;
    absl::Status s = client_.Watch(
        options_.resource, options_.ns, wo,
        [&](const WatchEvent& ev) {
          got_event = true;
          Apply(ev);
          MaybeResync();
          return !stop_.HasBeenNotified();
        },
        &cancel_);
    if (stop_.HasBeenNotified()) break;
    if (s.ok()) {
      backoff = absl::Milliseconds(100);
      continue;  // server timeout: watch again from the last version
    }
    if (IsGone(s)) {
      base::LogInfo("k8s.informer.relist",
                    {{"resource", what}, {"reason", std::string(s.message())}});
      need_list = true;
      continue;
    }
    base::LogWarn("k8s.informer.watch_failed",
                  {{"resource", what}, {"error", std::string(s.message())}});
    if (got_event) backoff = absl::Milliseconds(100);
    stop_.WaitForNotificationWithTimeout(backoff);
    backoff = std::min(backoff * 2, options_.max_backoff);
  }
}

}  // namespace daxlease::k8s
