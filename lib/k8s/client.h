// KubeClient: the Kubernetes API as the rest of daxlease sees it. Objects are
// plain JSON (nlohmann::json) in the API's wire form; typed wrappers (the CRD
// types) convert at the edge.
//
// Implementations: RestKubeClient (rest_client.h, HTTP via libcurl) and
// FakeKubeClient (fake_client.h, an honest in-memory API server for unit
// tests).
//
// Failure contract for every call: see errors.h. In short NotFound,
// AlreadyExists, Aborted (409 Conflict: the object changed since you read it;
// re-read and retry), OutOfRange (410 Gone: re-list), InvalidArgument (422/400
// with the server's message), PermissionDenied, Unavailable (429/5xx after the
// bounded retries of the implementation).
//
// Thread safety: all methods may be called concurrently from any thread.
#ifndef DAXLEASE_LIB_K8S_CLIENT_H_
#define DAXLEASE_LIB_K8S_CLIENT_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "lib/k8s/errors.h"
#include "lib/k8s/resource.h"
#include "nlohmann/json.hpp"

namespace daxlease::k8s {

using Json = nlohmann::json;

struct ListOptions {
  std::string label_selector;  // "app=x,tier!=db,env,!legacy"
  std::string field_selector;  // "metadata.name=foo"
  int64_t limit = 0;           // page size; 0 = everything in one response
  std::string continue_token;  // from the previous page's ListResult
  // "" = most recent (quorum read). "0" = any (cache). Otherwise "not older".
  std::string resource_version;
};

// One page of a list.
struct ListResult {
  std::vector<Json> items;       // full objects (apiVersion/kind filled in)
  std::string resource_version;  // of the list: start a watch from here
  std::string continue_token;    // empty on the last page
};

enum class PatchType {
  kMerge,  // application/merge-patch+json (RFC 7386)
  kJson,   // application/json-patch+json (RFC 6902), `patch` is an array
};

struct WatchOptions {
  std::string label_selector;
  std::string field_selector;
  // Events after this version. Empty = start with synthetic ADDED events of
  // the current state (avoid; list first and watch from the list's version).
  std::string resource_version;
  // The server ends the stream after this long (0 = server default, 5-10
  // min). Watch() then returns OK and the caller re-watches from the last
  // resourceVersion it saw.
  int64_t timeout_seconds = 0;
  bool allow_bookmarks = true;
};

struct WatchEvent {
  enum class Type { kAdded, kModified, kDeleted, kBookmark };
  Type type;
  Json object;  // the object (for kDeleted: its last state); for bookmarks
                // only metadata.resourceVersion is meaningful
};
const char* WatchEventTypeName(WatchEvent::Type t);

// Return false to end the watch (Watch() then returns OK).
using WatchHandler = std::function<bool(const WatchEvent&)>;

// Lets another thread end a blocking Watch(). Thread-safe; once cancelled,
// stays cancelled. Watch() notices within about 100 ms.
class WatchCanceller {
 public:
  void Cancel() { cancelled_.store(true); }
  bool cancelled() const { return cancelled_.load(); }
  // For transports that poll the flag.
  const std::atomic<bool>* flag() const { return &cancelled_; }

 private:
  std::atomic<bool> cancelled_{false};
};

class KubeClient {
 public:
  virtual ~KubeClient() = default;

  // GET one object. `ns` must be empty for cluster-scoped resources.
  virtual absl::StatusOr<Json> Get(const Resource& r, absl::string_view ns,
                                   absl::string_view name) = 0;

  // One page of the collection (all namespaces when `ns` is empty). Follow
  // `continue_token` for more, or use ListAll().
  virtual absl::StatusOr<ListResult> List(const Resource& r,
                                          absl::string_view ns,
                                          const ListOptions& opts) = 0;

  // POST. Namespace and name come from obj.metadata (generateName works).
  // Returns the stored object (with resourceVersion, uid, ...).
  // AlreadyExists when the name is taken.
  virtual absl::StatusOr<Json> Create(const Resource& r, const Json& obj) = 0;

  // PUT of the whole object (status ignored when the resource has a status
  // subresource). obj.metadata.resourceVersion must be set: a stale one gives
  // Aborted (409), so read-modify-write loops retry on IsConflict().
  virtual absl::StatusOr<Json> Update(const Resource& r, const Json& obj) = 0;

  // PUT of .../status: only the status is taken from `obj`. Same 409 rule.
  virtual absl::StatusOr<Json> UpdateStatus(const Resource& r,
                                            const Json& obj) = 0;

  // PATCH of the object, or of a subresource ("status"). A merge patch with
  // metadata.resourceVersion, or a JSON patch with a "test" op, gives an
  // optimistic-concurrency patch (409 / 422 on mismatch); without those the
  // patch applies to whatever is current and never conflicts.
  virtual absl::StatusOr<Json> Patch(const Resource& r, absl::string_view ns,
                                     absl::string_view name, PatchType type,
                                     const Json& patch,
                                     absl::string_view subresource = "") = 0;

  // DELETE. With `resource_version` non-empty, a precondition (409 if the
  // object changed). NotFound when already gone (callers wanting idempotency
  // treat that as success). An object with finalizers only gets a
  // deletionTimestamp until its finalizers are removed.
  virtual absl::Status Delete(const Resource& r, absl::string_view ns,
                              absl::string_view name,
                              absl::string_view resource_version = "") = 0;

  // Blocks, calling `handler` for each event in order, until: the server ends
  // the stream (timeout) -> OK; the handler returns false -> OK; `cancel` ->
  // Cancelled; the version is too old (410, as a response or an ERROR event)
  // -> OutOfRange: re-list and watch from the new list's version; transport
  // failure -> Unavailable. Events are not replayed across calls: the caller
  // resumes with the last resourceVersion it saw.
  virtual absl::Status Watch(const Resource& r, absl::string_view ns,
                             const WatchOptions& opts,
                             const WatchHandler& handler,
                             WatchCanceller* cancel = nullptr) = 0;
};

// A KubeClient that passes every call to another one. A test's client that
// changes one call (fails it, holds it, counts it) overrides that call alone.
class ForwardingKubeClient : public KubeClient {
 public:
  explicit ForwardingKubeClient(KubeClient& inner) : inner_(inner) {}
  absl::StatusOr<Json> Get(const Resource& r, absl::string_view ns,
                           absl::string_view name) override {
    return inner_.Get(r, ns, name);
  }
  absl::StatusOr<ListResult> List(const Resource& r, absl::string_view ns,
                                  const ListOptions& opts) override {
    return inner_.List(r, ns, opts);
  }
  absl::StatusOr<Json> Create(const Resource& r, const Json& obj) override {
    return inner_.Create(r, obj);
  }
  absl::StatusOr<Json> Update(const Resource& r, const Json& obj) override {
    return inner_.Update(r, obj);
  }
  absl::StatusOr<Json> UpdateStatus(const Resource& r,
                                    const Json& obj) override {
    return inner_.UpdateStatus(r, obj);
  }
  absl::StatusOr<Json> Patch(const Resource& r, absl::string_view ns,
                             absl::string_view name, PatchType type,
                             const Json& patch,
                             absl::string_view subresource = "") override {
    return inner_.Patch(r, ns, name, type, patch, subresource);
  }
  absl::Status Delete(const Resource& r, absl::string_view ns,
                      absl::string_view name,
                      absl::string_view resource_version = "") override {
    return inner_.Delete(r, ns, name, resource_version);
  }
  absl::Status Watch(const Resource& r, absl::string_view ns,
                     const WatchOptions& opts, const WatchHandler& handler,
                     WatchCanceller* cancel = nullptr) override {
    return inner_.Watch(r, ns, opts, handler, cancel);
  }

 protected:
  KubeClient& inner_;
};

// Lists every page (`opts.limit` sized, following continue tokens). If a
// continue token expires (410) mid-way, restarts the list once from scratch.
absl::StatusOr<ListResult> ListAll(KubeClient& c, const Resource& r,
                                   absl::string_view ns,
                                   const ListOptions& opts = {});

// Read-modify-write with conflict retry: Get, `mutate` the object (return
// false to write nothing), Update (or UpdateStatus when `status` is true),
// repeated on IsConflict() up to `attempts` times. Returns the stored object
// (or the read one when `mutate` returned false). Aborted after the last
// conflicting attempt.
absl::StatusOr<Json> UpdateWithRetry(KubeClient& c, const Resource& r,
                                     absl::string_view ns,
                                     absl::string_view name,
                                     const std::function<bool(Json&)>& mutate,
                                     bool status = false, int attempts = 10);

// Small accessors for the metadata of wire-form objects ("" when absent).
std::string NameOf(const Json& obj);
std::string NamespaceOf(const Json& obj);
std::string ResourceVersionOf(const Json& obj);
std::string UidOf(const Json& obj);
int64_t GenerationOf(const Json& obj);  // 0 when absent
// ObjectKey(NamespaceOf(obj), NameOf(obj)).
std::string KeyOf(const Json& obj);

}  // namespace daxlease::k8s

#endif  // DAXLEASE_LIB_K8S_CLIENT_H_
