#include "operator/cache_reader.h"

#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "lib/api/json.h"
#include "lib/api/resources.h"
#include "lib/base/log.h"

namespace daxlease::op {
namespace {

std::string VolumeOf(const k8s::Json& obj) { return api::OwningVolume(obj); }

template <typename T>
void AddParsed(const std::optional<k8s::Json>& j, std::vector<T>& out,
               std::vector<std::string>& unreadable) {
  if (!j.has_value()) return;
  absl::StatusOr<T> t = api::FromJson<T>(*j);
  if (!t.ok()) {
    unreadable.push_back(absl::StrCat(api::Resource<T>::kKind, "/",
                                      k8s::NameOf(*j), ": ",
                                      t.status().message()));
    return;
  }
  out.push_back(*std::move(t));
}

}  // namespace

int64_t ResourceVersionNumber(const k8s::Json& obj) {
  int64_t n = -1;
  if (!absl::SimpleAtoi(k8s::ResourceVersionOf(obj), &n)) return -1;
  return n;
}

CacheWorldReader::CacheWorldReader(const k8s::Informer& volumes,
                                   const k8s::Informer& leases,
                                   const k8s::Informer& recalls,
                                   const k8s::Informer* migrations)
    : volumes_(volumes),
      leases_(leases),
      recalls_(recalls),
      migrations_(migrations) {}

void CacheWorldReader::Observe(const k8s::Resource& r, const k8s::Json& obj,
                               bool deleted) {
  const std::string name = k8s::NameOf(obj);
  absl::MutexLock l(&mu_);
  if (r.plural != api::DaxVolumeResource().plural) {
    auto& by_volume = index_[r.plural];
    // The volume a lease names may change (bad input): drop old entries.
    for (auto& [vol, names] : by_volume) names.erase(name);
    if (!deleted) by_volume[VolumeOf(obj)].insert(name);
  }
  auto& overlay = overlay_[r.plural];
  auto it = overlay.find(name);
  if (it == overlay.end()) return;
  if (deleted ||
      ResourceVersionNumber(obj) >= ResourceVersionNumber(it->second)) {
    overlay.erase(it);
  }
}

void CacheWorldReader::Wrote(const k8s::Resource& r, const k8s::Json& stored) {
  absl::MutexLock l(&mu_);
  k8s::Json& slot = overlay_[r.plural][k8s::NameOf(stored)];
  if (slot.is_null() ||
      ResourceVersionNumber(stored) > ResourceVersionNumber(slot)) {
    slot = stored;
  }
}

std::optional<k8s::Json> CacheWorldReader::Merge(
    const std::string& plural, const std::string& name,
    std::optional<k8s::Json> cached) {
  absl::MutexLock l(&mu_);
  auto& overlay = overlay_[plural];
  auto it = overlay.find(name);
  if (it == overlay.end()) return cached;
  if (!cached.has_value() ||
      ResourceVersionNumber(*cached) < ResourceVersionNumber(it->second)) {
    return it->second;
  }
  overlay.erase(it);
  return cached;
}

absl::StatusOr<World> CacheWorldReader::Read(const std::string& volume) {
  World w;
  w.volume_name = volume;
  std::set<std::string> lease_names, recall_names, migration_names;
  {
    absl::MutexLock l(&mu_);
    lease_names = index_[api::DaxLeaseResource().plural][volume];
    recall_names = index_[api::DaxRecallResource().plural][volume];
    migration_names = index_[api::DaxMigrationResource().plural][volume];
  }
  std::optional<k8s::Json> v =
      Merge(api::DaxVolumeResource().plural, volume, volumes_.Get(volume));
  if (v.has_value()) {
    absl::StatusOr<api::DaxVolume> parsed = api::FromJson<api::DaxVolume>(*v);
    if (!parsed.ok()) return parsed.status();
    w.volume = *std::move(parsed);
  }
  for (const std::string& n : lease_names) {
    AddParsed(Merge(api::DaxLeaseResource().plural, n, leases_.Get(n)),
              w.leases, w.unreadable);
  }
  for (const std::string& n : recall_names) {
    AddParsed(Merge(api::DaxRecallResource().plural, n, recalls_.Get(n)),
              w.recalls, w.unreadable);
  }
  if (migrations_ != nullptr) {
    for (const std::string& n : migration_names) {
      AddParsed(
          Merge(api::DaxMigrationResource().plural, n, migrations_->Get(n)),
          w.migrations, w.unreadable);
    }
  }
  return w;
}

}  // namespace daxlease::op
