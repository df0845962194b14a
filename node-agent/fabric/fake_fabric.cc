#include "node-agent/fabric/fake_fabric.h"

#include <algorithm>
#include <cstring>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "lib/base/status.h"

namespace daxlease::fabric {

absl::Status FakeFabric::RegisterVolume(Region region) {
  absl::MutexLock l(&mu_);
  if (regions_.contains(region.volume)) {
    return absl::AlreadyExistsError(region.volume);
  }
  ++registrations_[region.volume];
  regions_[region.volume] = std::move(region);
  return absl::OkStatus();
}

absl::Status FakeFabric::DeregisterVolume(const std::string& volume) {
  absl::MutexLock l(&mu_);
  if (!regions_.contains(volume)) return absl::OkStatus();
  for (auto it = grants_.begin(); it != grants_.end();) {
    it = it->first.volume == volume ? grants_.erase(it) : std::next(it);
  }
  min_epoch_.erase(volume);
  regions_.erase(volume);
  return absl::OkStatus();
}

absl::StatusOr<GrantInfo> FakeFabric::Grant(const GrantKey& key,
                                            Access access) {
  absl::MutexLock l(&mu_);
  auto r = regions_.find(key.volume);
  if (r == regions_.end()) {
    return absl::FailedPreconditionError(
        absl::StrCat("volume ", key.volume, " is not registered"));
  }
  if (key.epoch < min_epoch_[key.volume]) {
    return absl::PermissionDeniedError(
        absl::StrCat("grant ", key.DebugString(), ": stale epoch"));
  }
  auto it = grants_.find(key);
  if (it != grants_.end() && !it->second.second) {
    return absl::PermissionDeniedError(
        absl::StrCat("grant ", key.DebugString(), " was revoked"));
  }
  grants_[key] = {access, true};
  GrantInfo info;
  info.key = key;
  info.access = access;
  info.fabric = "fake";
  info.endpoint = "fake:0";
  info.credential = GrantCredential(secret_, key, access);
  info.size_bytes = r->second.length;
  return info;
}

absl::StatusOr<bool> FakeFabric::Invalidate(const GrantKey& key) {
  absl::MutexLock l(&mu_);
  auto it = grants_.find(key);
  if (it == grants_.end()) {
    grants_[key] = {Access::kReadOnly, false};
    return false;
  }
  if (!it->second.second) return false;
  it->second.second = false;
  ++invalidations_;
  return true;
}

absl::StatusOr<int> FakeFabric::InvalidateBefore(const std::string& volume,
                                                 int64_t epoch) {
  absl::MutexLock l(&mu_);
  min_epoch_[volume] = std::max(min_epoch_[volume], epoch);
  int n = 0;
  for (auto& [k, g] : grants_) {
    if (k.volume == volume && k.epoch < epoch && g.second) {
      g.second = false;
      ++invalidations_;
      ++n;
    }
  }
  return n;
}

bool FakeFabric::IsRegistered(const std::string& volume) const {
  absl::MutexLock l(&mu_);
  return regions_.contains(volume);
}

bool FakeFabric::IsLive(const GrantKey& key) const {
  absl::MutexLock l(&mu_);
  auto it = grants_.find(key);
  return it != grants_.end() && it->second.second;
}

int FakeFabric::invalidations() const {
  absl::MutexLock l(&mu_);
  return invalidations_;
}

int FakeFabric::registrations(const std::string& volume) const {
  absl::MutexLock l(&mu_);
  auto it = registrations_.find(volume);
  return it == registrations_.end() ? 0 : it->second;
}

class FakeRemoteRegion final : public RemoteRegion {
 public:
  FakeRemoteRegion(FakeFabric& f, GrantInfo g, int registration)
      : f_(f), g_(std::move(g)), registration_(registration) {}
  uint64_t size() const override { return g_.size_bytes; }

  absl::Status Read(uint64_t offset, absl::Span<char> out) override {
    absl::MutexLock l(&f_.mu_);
    char* base = nullptr;
    RETURN_IF_ERROR(Check(offset, out.size(), false, &base));
    std::memcpy(out.data(), base + offset, out.size());
    f_.read_bytes_ += out.size();
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> Digests(uint64_t offset, uint64_t len,
                                      uint64_t chunk) override {
    absl::MutexLock l(&f_.mu_);
    char* base = nullptr;
    RETURN_IF_ERROR(Check(offset, len, false, &base));
    if (!f_.digests_refusal_.ok()) return f_.digests_refusal_;
    auto r = f_.regions_.find(g_.key.volume);
    if (!r->second.digests) {
      return absl::UnimplementedError("the owner serves no chunk digests");
    }
    ++f_.digest_calls_;
    return r->second.digests(offset, len, chunk);
  }
  absl::Status Write(uint64_t offset, absl::Span<const char> data) override {
    absl::MutexLock l(&f_.mu_);
    char* base = nullptr;
    RETURN_IF_ERROR(Check(offset, data.size(), true, &base));
    std::memcpy(base + offset, data.data(), data.size());
    return absl::OkStatus();
  }
  absl::Status Persist(uint64_t offset, uint64_t len) override {
    absl::MutexLock l(&f_.mu_);
    char* base = nullptr;
    return Check(offset, len, false, &base);
  }

 private:
  absl::Status Check(uint64_t offset, uint64_t len, bool write, char** base)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(f_.mu_) {
    auto it = f_.grants_.find(g_.key);
    if (it == f_.grants_.end() || !it->second.second ||
        f_.registrations_[g_.key.volume] != registration_) {
      return absl::PermissionDeniedError("revoked");
    }
    if (write && it->second.first != Access::kReadWrite) {
      return absl::PermissionDeniedError("grant is read-only");
    }
    auto r = f_.regions_.find(g_.key.volume);
    if (r == f_.regions_.end()) return absl::UnavailableError("unregistered");
    if (offset > r->second.length || len > r->second.length - offset) {
      return absl::OutOfRangeError("outside the volume");
    }
    *base = r->second.base;
    return absl::OkStatus();
  }

  FakeFabric& f_;
  GrantInfo g_;
  const int registration_;  // FakeFabric::registrations_ when connected
};

absl::StatusOr<std::unique_ptr<RemoteRegion>> FakeFabric::Connector::Connect(
    const GrantInfo& grant) {
  absl::MutexLock l(&f_.mu_);
  if (grant.key.epoch < f_.min_epoch_[grant.key.volume]) {
    return absl::PermissionDeniedError("stale epoch");
  }
  auto it = f_.grants_.find(grant.key);
  if (it == f_.grants_.end()) return absl::UnavailableError("not granted yet");
  if (!it->second.second) return absl::PermissionDeniedError("revoked");
  if (grant.credential !=
      GrantCredential(f_.secret_, grant.key, grant.access)) {
    return absl::PermissionDeniedError("credential does not match");
  }
  // The size is the owner's, as a real fabric's handshake answers it.
  GrantInfo g = grant;
  auto r = f_.regions_.find(grant.key.volume);
  if (r == f_.regions_.end()) return absl::UnavailableError("unregistered");
  g.size_bytes = r->second.length;
  return std::make_unique<FakeRemoteRegion>(
      f_, g, f_.registrations_[grant.key.volume]);
}

}  // namespace daxlease::fabric
