// FakeKubeClient: an honest in-memory API server for unit tests of code that
// takes a KubeClient (reconcilers, informers, leader election).
//
// What it does as the real server does:
//  - one global, strictly increasing resourceVersion (as etcd's revision);
//    every write gives the object a new one; lists carry the current one;
//  - Update/UpdateStatus/Delete-with-precondition and a merge patch carrying
//    metadata.resourceVersion return Aborted (409 Conflict) when stale;
//    Create of an existing name returns AlreadyExists; missing -> NotFound;
//  - uid, creationTimestamp (from the injected clock), generation (starts at
//    1, bumped when anything but metadata/status changes);
//  - status subresource (per resource, on by default): Update ignores status,
//    UpdateStatus / Patch(..., "status") change only status;
//  - finalizers: Delete of an object with finalizers sets deletionTimestamp
//    (an update); the object goes when an update empties its finalizers;
//  - merge patch (RFC 7386) and JSON patch (RFC 6902, a failing "test" ->
//    InvalidArgument as the server's 422);
//  - label selectors; field selectors on metadata.name / metadata.namespace
//    only (what v1.20 serves for custom resources), others InvalidArgument;
//  - paginated lists with continue tokens (consistent snapshot per list);
//  - watches: events from any retained resourceVersion; versions older than
//    the retained history (see Compact) give OutOfRange (410 Gone);
//  - generateName;
//  - label keys and values checked on every write (422 Invalid) and in
//    label selectors (400), as the server checks them (label_syntax.h).
// Not modelled: admission, validation schemas, server-side apply, RBAC.
//
// Fault injection: FailNext() makes the next calls of one verb fail.
// Thread-safe. Blocking Watch() calls end on Cancel of their canceller, on
// their handler returning false, or on Shutdown().
#ifndef DAXLEASE_LIB_K8S_FAKE_CLIENT_H_
#define DAXLEASE_LIB_K8S_FAKE_CLIENT_H_

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "lib/base/clock.h"
#include "lib/k8s/client.h"

namespace daxlease::k8s {

class FakeKubeClient final : public KubeClient {
 public:
  enum class Verb {
    kGet,
    kList,
    kCreate,
    kUpdate,
    kUpdateStatus,
    kPatch,
    kDelete,
    kWatch
  };

  // `clock` (for timestamps) must outlive the fake.
  explicit FakeKubeClient(base::Clock& clock);
  ~FakeKubeClient() override;

  // Declares whether `r` has a status subresource (default: yes).
  void SetStatusSubresource(const Resource& r, bool enabled);

  // The next `count` calls of `verb` (any resource) fail with `status`.
  void FailNext(Verb verb, absl::Status status, int count = 1);

  // Forgets watch history at or below `resource_version` (as etcd
  // compaction): watches from older versions get OutOfRange. 0 = everything
  // up to now.
  void Compact(int64_t resource_version = 0);

  // Ends every watch that is blocked right now with `status` (as a dropped
  // connection: Unavailable; or an expired version: OutOfRange). Events not
  // yet delivered are not delivered by those calls.
  void BreakWatches(absl::Status status);

  // Ends all blocking watches (they return OK) and refuses new ones.
  void Shutdown();

  int64_t CurrentResourceVersion() const;
  // Number of successful writes (create/update/patch/delete) so far.
  int64_t WriteCount() const;
  // Blocks until at least `n` Watch calls have their deadline fixed and are
  // waiting for events (so a test may advance the clock past their timeout),
  // or `timeout` of real time passes. Returns whether they are.
  bool AwaitActiveWatches(int n, absl::Duration timeout) const;

  absl::StatusOr<Json> Get(const Resource& r, absl::string_view ns,
                           absl::string_view name) override;
  absl::StatusOr<ListResult> List(const Resource& r, absl::string_view ns,
                                  const ListOptions& opts) override;
  absl::StatusOr<Json> Create(const Resource& r, const Json& obj) override;
  absl::StatusOr<Json> Update(const Resource& r, const Json& obj) override;
  absl::StatusOr<Json> UpdateStatus(const Resource& r,
                                    const Json& obj) override;
  absl::StatusOr<Json> Patch(const Resource& r, absl::string_view ns,
                             absl::string_view name, PatchType type,
                             const Json& patch,
                             absl::string_view subresource = "") override;
  absl::Status Delete(const Resource& r, absl::string_view ns,
                      absl::string_view name,
                      absl::string_view resource_version = "") override;
  absl::Status Watch(const Resource& r, absl::string_view ns,
                     const WatchOptions& opts, const WatchHandler& handler,
                     WatchCanceller* cancel = nullptr) override;

 private:
  struct Event {
    int64_t rv;
    std::string resource;  // Resource::Name()
    WatchEvent::Type type;
    Json object;
  };
  using Store = std::map<std::string, Json>;  // key "ns/name" -> object

  absl::Status TakeInjected(Verb v) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool HasStatus(const Resource& r) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<Json> Write(const Resource& r, Json updated, const Json& old,
                             bool status_only)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Record(const Resource& r, WatchEvent::Type t, const Json& obj)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<Json> PutLocked(const Resource& r, const Json& obj,
                                 bool status_only)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  base::Clock& clock_;
  mutable absl::Mutex mu_;
  int64_t rv_ ABSL_GUARDED_BY(mu_) = 1;
  int64_t writes_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t compacted_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t uid_seq_ ABSL_GUARDED_BY(mu_) = 0;
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  int64_t break_seq_ ABSL_GUARDED_BY(mu_) = 0;
  int active_watches_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status break_status_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Store> stores_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, bool> status_subresource_ ABSL_GUARDED_BY(mu_);
  std::deque<Event> history_ ABSL_GUARDED_BY(mu_);
  std::map<Verb, std::deque<absl::Status>> injected_ ABSL_GUARDED_BY(mu_);
  // Paginated list snapshots by continue token.
  std::map<std::string, ListResult> continues_ ABSL_GUARDED_BY(mu_);
  int64_t continue_seq_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace daxlease::k8s

#endif  // DAXLEASE_LIB_K8S_FAKE_CLIENT_H_
