// FakeFabric: an in-memory Fabric for unit tests of the owner and holder
// logic. It keeps the same rules as TcpFabric (one registration per volume,
// idempotent grants, invalidate exactly once, revoked keys never come back
// while the volume is registered; DeregisterVolume cuts every grant and
// forgets the volume's invalidated keys and epoch floor, as TcpFabric and
// VerbsFabric do) and counts calls. Its Connector gives RemoteRegions over the
// registered memory that fail with PermissionDenied once their grant is cut.
#ifndef DAXLEASE_NODE_AGENT_FABRIC_FAKE_FABRIC_H_
#define DAXLEASE_NODE_AGENT_FABRIC_FAKE_FABRIC_H_

#include <map>
#include <memory>
#include <set>
#include <string>

#include "absl/synchronization/mutex.h"
#include "node-agent/fabric/fabric.h"

namespace daxlease::fabric {

class FakeFabric final : public Fabric {
 public:
  explicit FakeFabric(std::string secret = "fake-secret")
      : secret_(std::move(secret)) {}

  absl::Status RegisterVolume(Region region) override;
  absl::Status DeregisterVolume(const std::string& volume) override;
  absl::StatusOr<GrantInfo> Grant(const GrantKey& key, Access access) override;
  absl::StatusOr<bool> Invalidate(const GrantKey& key) override;
  absl::StatusOr<int> InvalidateBefore(const std::string& volume,
                                       int64_t epoch) override;

  bool IsRegistered(const std::string& volume) const;
  bool IsLive(const GrantKey& key) const;
  int invalidations() const;  // Invalidate calls that cut a live grant
  // RegisterVolume calls that registered `volume` so far.
  int registrations(const std::string& volume) const;
  // Bytes read through RemoteRegions (Read, and ReadStream's pieces), and
  // Digests calls answered.
  uint64_t read_bytes() const {
    absl::MutexLock l(&mu_);
    return read_bytes_;
  }
  int digest_calls() const {
    absl::MutexLock l(&mu_);
    return digest_calls_;
  }

  // CanShareFsdax answers `refusal` (OK by default), as verbs without ODP.
  absl::Status CanShareFsdax() const override {
    absl::MutexLock l(&mu_);
    return fsdax_refusal_;
  }
  void SetFsdaxRefusal(absl::Status refusal) {
    absl::MutexLock l(&mu_);
    fsdax_refusal_ = std::move(refusal);
  }

  // Digests answers `refusal` when it is not OK (an owner whose fabric
  // serves no digests: Unimplemented; one of an earlier version that
  // closes the connection: Unavailable), not counted in digest_calls.
  void SetDigestsRefusal(absl::Status refusal) {
    absl::MutexLock l(&mu_);
    digests_refusal_ = std::move(refusal);
  }

  // Connects to this fabric's grants (endpoint is ignored).
  FabricConnector& connector() { return connector_; }

 private:
  class Connector final : public FabricConnector {
   public:
    explicit Connector(FakeFabric& f) : f_(f) {}
    absl::StatusOr<std::unique_ptr<RemoteRegion>> Connect(
        const GrantInfo& grant) override;

   private:
    FakeFabric& f_;
  };
  friend class FakeRemoteRegion;

  const std::string secret_;
  mutable absl::Mutex mu_;
  std::map<std::string, Region> regions_ ABSL_GUARDED_BY(mu_);
  std::map<GrantKey, std::pair<Access, bool>> grants_
      ABSL_GUARDED_BY(mu_);  // live?
  int invalidations_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t read_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  int digest_calls_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, int64_t> min_epoch_ ABSL_GUARDED_BY(mu_);
  // Per volume, how many times it was registered: a region connected under
  // an earlier registration stays cut, as the real fabrics close it.
  std::map<std::string, int> registrations_ ABSL_GUARDED_BY(mu_);
  absl::Status fsdax_refusal_ ABSL_GUARDED_BY(mu_);
  absl::Status digests_refusal_ ABSL_GUARDED_BY(mu_);
  Connector connector_{*this};
};

}  // namespace daxlease::fabric

#endif  // DAXLEASE_NODE_AGENT_FABRIC_FAKE_FABRIC_H_
