// CacheWorldReader: serves a volume's world from the controller's informer
// caches instead of listing the API server on every pass.
//
// Two things make a cache safe to reconcile from: every write is guarded by
// the resourceVersion read (a stale read costs a 409 and a retry, never a
// lost update), and objects this operator just wrote are served from an
// overlay until the watch delivers that version or a newer one, so the next
// pass does not act on a version it has already replaced.
//
// Leases are parsed once per version, when the informer (or our own write)
// delivers them, not on every pass: a pass over N leases copies N parsed
// objects instead of copying and parsing N JSON documents.
//
// Thread-safe: Observe* from the informer threads, Read/Wrote from workers.
#ifndef DAXLEASE_OPERATOR_CACHE_READER_H_
#define DAXLEASE_OPERATOR_CACHE_READER_H_

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>

#include "absl/synchronization/mutex.h"
#include "lib/k8s/informer.h"
#include "operator/reconciler.h"

namespace daxlease::op {

class CacheWorldReader final : public WorldReader {
 public:
  // The informers (DaxVolume, DaxLease, DaxRecall) must outlive the reader.
  // `migrations` may be null (no DaxMigration is read).
  CacheWorldReader(const k8s::Informer& volumes, const k8s::Informer& leases,
                   const k8s::Informer& recalls,
                   const k8s::Informer* migrations = nullptr);

  // Informer events: keep the volume -> lease/recall index and retire
  // overlay entries the cache has caught up with. `obj` is the new state;
  // `deleted` for a delete event. Returns whether the event asks for a pass
  // over its volume: false only for the echo of a DaxLease version written
  // through WroteNeedingNoPass (nothing in it is new to this operator).
  // `was` (may be null) gets the volume the object was filed under before
  // the event (empty: none). A DaxLease is filed under the volume its
  // parsed version belongs to, so a stub of a version already seen (its
  // informer caches versions only: a resync, a lease that vanished while
  // the watch was down) keeps it where it was; a stub of an unseen version
  // changes nothing and asks for no pass.
  bool Observe(const k8s::Resource& r, const k8s::Json& obj, bool deleted,
               std::string* was = nullptr);

  absl::StatusOr<World> Read(const std::string& volume) override;
  void Wrote(const k8s::Resource& r, const k8s::Json& stored) override;
  void WroteNeedingNoPass(const k8s::Resource& r,
                          const k8s::Json& stored) override;

 private:
  // The newer of the cached object and our own write of it.
  std::optional<k8s::Json> Merge(const std::string& plural,
                                 const std::string& name,
                                 std::optional<k8s::Json> cached);

  // A DaxLease as parsed (or why it could not be), and its version.
  struct ParsedLease {
    int64_t rv = -1;
    std::string name;
    std::string volume;                 // api::OwningVolume
    absl::StatusOr<SharedLease> lease;  // shared with the worlds read
  };
  static std::shared_ptr<const ParsedLease> ParseLease(const k8s::Json& obj);

  const k8s::Informer& volumes_;
  const k8s::Informer& leases_;
  const k8s::Informer& recalls_;
  const k8s::Informer* migrations_;
  absl::Mutex mu_;
  // plural -> volume -> object names (leases, recalls).
  std::map<std::string, std::map<std::string, std::set<std::string>>> index_
      ABSL_GUARDED_BY(mu_);
  // plural -> name -> object as we last wrote it.
  std::map<std::string, std::map<std::string, k8s::Json>> overlay_
      ABSL_GUARDED_BY(mu_);
  // DaxLeases: name -> as the informer has it, and as we last wrote it
  // (instead of the two maps above).
  std::map<std::string, std::shared_ptr<const ParsedLease>> leases_cached_
      ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::shared_ptr<const ParsedLease>> leases_wrote_
      ABSL_GUARDED_BY(mu_);
  // DaxLease versions (name, resourceVersion) written through
  // WroteNeedingNoPass whose watch event has not come yet.
  std::set<std::pair<std::string, int64_t>> no_pass_ ABSL_GUARDED_BY(mu_);
};

// resourceVersion as a number for ordering (etcd revisions); -1 if it is not
// one.
int64_t ResourceVersionNumber(const k8s::Json& obj);

}  // namespace daxlease::op

#endif  // DAXLEASE_OPERATOR_CACHE_READER_H_
