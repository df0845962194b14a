// Informer: keeps a local cache of one resource (optionally one namespace and
// selectors) in step with the API server by list + watch, and tells event
// handlers about changes, as client-go's SharedIndexInformer does.
//
// Behaviour:
//  - Start() lists every page, fills the cache, calls OnAdd for each object,
//    marks itself synced, then watches from the list's resourceVersion;
//  - a watch that ends (server timeout, connection drop, transport error) is
//    restarted from the last resourceVersion seen (backoff on errors, up to
//    `max_backoff`); a 410 Gone re-lists and reconciles the cache against the
//    new list (OnAdd / OnUpdate for changes, OnDelete for objects that vanished
//    while the watch was down), so handlers never miss a final state;
//  - every `resync` (0 = never) each cached object is delivered again as
//    OnUpdate(obj, obj), so level-based reconcilers get a periodic nudge;
//  - bookmarks only advance the resourceVersion.
// Handlers are called from the informer's one thread, in event order, never
// concurrently; they must not block for long (enqueue a key and return).
// Cache reads (Get, List) are thread-safe and return copies.
#ifndef DAXLEASE_LIB_K8S_INFORMER_H_
#define DAXLEASE_LIB_K8S_INFORMER_H_

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "lib/base/clock.h"
#include "lib/k8s/client.h"

namespace daxlease::k8s {

struct InformerOptions {
  Resource resource;
  std::string ns;  // empty: all namespaces (or a cluster-scoped resource)
  std::string label_selector;
  std::string field_selector;
  int64_t page_size = 500;
  absl::Duration resync = absl::ZeroDuration();
  // Server-side timeout of each watch request; the informer re-watches.
  absl::Duration watch_timeout = absl::Minutes(5);
  absl::Duration max_backoff = absl::Seconds(10);
  // Cache and deliver objects without metadata.managedFields (the server's
  // field-ownership bookkeeping, often most of a small object's bytes), for
  // a client that never reads it.
  bool drop_managed_fields = false;
  // What the cache keeps of each object: cache_transform(obj) instead of
  // obj (after drop_managed_fields). Handlers still get every added, updated
  // or deleted object whole, as delivered; what was cached is what Get,
  // List, a resync's OnUpdate(obj, obj), OnUpdate's old object and the
  // OnDelete of an object that vanished while the watch was down see. For a
  // client that keeps its own parsed copy of each object (by
  // resourceVersion) and needs only a few fields of the cached one; it must
  // keep metadata.name, namespace and resourceVersion. Null: the object.
  std::function<Json(const Json&)> cache_transform;
  // Cache only each object's key and resourceVersion (instead of
  // cache_transform): for a client that keeps its own copy of every object
  // it needs. Handlers still get every added, updated or deleted object
  // whole, as delivered; where the cached object would be handed out (Get,
  // List, a resync's OnUpdate(obj, obj), OnUpdate's old object, the
  // OnDelete of an object that vanished while the watch was down) it is a
  // stub holding only metadata.name, namespace and resourceVersion.
  bool cache_versions_only = false;
};

struct InformerHandlers {
  std::function<void(const Json& obj)> on_add;
  std::function<void(const Json& old_obj, const Json& new_obj)> on_update;
  std::function<void(const Json& last_obj)> on_delete;
};

class Informer {
 public:
  // `client` and `clock` must outlive the informer.
  Informer(KubeClient& client, base::Clock& clock, InformerOptions options);
  // Stops if running.
  ~Informer();
  Informer(const Informer&) = delete;
  Informer& operator=(const Informer&) = delete;

  // Before Start() only.
  void AddHandlers(InformerHandlers handlers);

  // Starts the background thread (list + watch). Once only.
  void Start();
  // Ends the watch and joins the thread. Idempotent.
  void Stop();

  // Blocks until the first list has been applied (true), or `timeout`
  // (false). Real time.
  bool WaitForSync(absl::Duration timeout);
  bool HasSynced() const;

  // Copies from the cache. `key` as ObjectKey(ns, name).
  std::optional<Json> Get(absl::string_view key) const;
  std::vector<Json> List() const;
  std::vector<std::string> ListKeys() const;
  // The last resourceVersion applied to the cache.
  std::string LastResourceVersion() const;

  // Counters for tests and metrics.
  int64_t list_count() const;   // successful full lists (1 + re-lists)
  int64_t watch_count() const;  // watch requests started

 private:
  void Run();
  absl::Status ListAndReplace();
  void Apply(const WatchEvent& ev);
  void Trim(Json& obj) const;  // options_.drop_managed_fields
  // What the cache stores of `obj` (options_.cache_transform,
  // cache_versions_only), what it hands out for a stored value, and its
  // resourceVersion.
  Json Cached(const Json& obj) const;
  Json Shown(const std::string& key, const Json& cached) const;
  std::string CachedVersion(const Json& cached) const;
  void MaybeResync();

  KubeClient& client_;
  base::Clock& clock_;
  const InformerOptions options_;
  std::vector<InformerHandlers> handlers_;
  std::thread thread_;
  bool started_ = false;
  WatchCanceller cancel_;
  absl::Notification stop_;
  absl::Notification synced_;
  absl::Time last_resync_;

  mutable absl::Mutex mu_;
  std::map<std::string, Json> cache_ ABSL_GUARDED_BY(mu_);
  std::string rv_ ABSL_GUARDED_BY(mu_);
  int64_t lists_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t watches_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace daxlease::k8s

#endif  // DAXLEASE_LIB_K8S_INFORMER_H_
