#include "operator/cache_reader.h"

#include <cstdint>
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

std::shared_ptr<const CacheWorldReader::ParsedLease>
CacheWorldReader::ParseLease(const k8s::Json& obj) {
  auto p = std::make_shared<ParsedLease>();
  p->rv = ResourceVersionNumber(obj);
  p->name = k8s::NameOf(obj);
  p->volume = VolumeOf(obj);
  absl::StatusOr<api::DaxLease> lease = api::FromJson<api::DaxLease>(obj);
  if (lease.ok()) {
    p->lease = SharedLease(*std::move(lease));
  } else {
    p->lease = lease.status();
  }
  return p;
}

bool CacheWorldReader::Observe(const k8s::Resource& r, const k8s::Json& obj,
                               bool deleted, std::string* was) {
  if (was != nullptr) was->clear();
  const std::string name = k8s::NameOf(obj);
  const bool lease = r.plural == api::DaxLeaseResource().plural;
  // Parsed outside the lock (the informer's thread, not a pass), once per
  // version (a resync delivers every object again unchanged).
  std::shared_ptr<const ParsedLease> parsed;
  if (lease && !deleted) {
    const int64_t rv = ResourceVersionNumber(obj);
    {
      absl::MutexLock l(&mu_);
      auto it = leases_cached_.find(name);
      if (it != leases_cached_.end() && rv >= 0 && it->second->rv == rv) {
        parsed = it->second;
      }
    }
    if (parsed == nullptr) {
      // A stub (the informer's cache keeps versions only) of a version
      // never delivered whole: nothing to file it by.
      if (obj.size() == 1 && obj.contains("metadata")) return false;
      parsed = ParseLease(obj);
    }
  }
  absl::MutexLock l(&mu_);
  if (r.plural != api::DaxVolumeResource().plural) {
    auto& by_volume = index_[r.plural];
    // The volume a lease names may change (bad input): drop old entries.
    for (auto& [vol, names] : by_volume) {
      if (names.erase(name) > 0 && was != nullptr) *was = vol;
    }
    if (!deleted) {
      by_volume[parsed != nullptr ? parsed->volume : VolumeOf(obj)].insert(
          name);
    }
  }
  if (lease) {
    if (deleted) {
      leases_cached_.erase(name);
    } else {
      leases_cached_[name] = parsed;
    }
    const int64_t rv = ResourceVersionNumber(obj);
    auto it = leases_wrote_.find(name);
    if (it != leases_wrote_.end() && (deleted || rv >= it->second->rv)) {
      leases_wrote_.erase(it);
    }
    // Our own no-pass write coming back: the version the cache now holds
    // is the one Wrote already serves. Versions up to it are retired.
    bool echo = false;
    for (auto q = no_pass_.lower_bound({name, INT64_MIN});
         q != no_pass_.end() && q->first == name &&
         (deleted || q->second <= rv);) {
      echo |= !deleted && rv >= 0 && q->second == rv;
      q = no_pass_.erase(q);
    }
    return !echo;
  }
  auto& overlay = overlay_[r.plural];
  auto it = overlay.find(name);
  if (it == overlay.end()) return true;
  if (deleted ||
      ResourceVersionNumber(obj) >= ResourceVersionNumber(it->second)) {
    overlay.erase(it);
  }
  return true;
}

void CacheWorldReader::Wrote(const k8s::Resource& r, const k8s::Json& stored) {
  if (r.plural == api::DaxLeaseResource().plural) {
    std::shared_ptr<const ParsedLease> parsed = ParseLease(stored);
    absl::MutexLock l(&mu_);
    auto& slot = leases_wrote_[parsed->name];
    if (slot == nullptr || parsed->rv > slot->rv) slot = std::move(parsed);
    return;
  }
  absl::MutexLock l(&mu_);
  k8s::Json& slot = overlay_[r.plural][k8s::NameOf(stored)];
  if (slot.is_null() ||
      ResourceVersionNumber(stored) > ResourceVersionNumber(slot)) {
    slot = stored;
  }
}

void CacheWorldReader::WroteNeedingNoPass(const k8s::Resource& r,
                                          const k8s::Json& stored) {
  Wrote(r, stored);
  if (r.plural != api::DaxLeaseResource().plural) return;
  const int64_t rv = ResourceVersionNumber(stored);
  if (rv < 0) return;
  absl::MutexLock l(&mu_);
  // Unless its event came first (then it already asked for its pass).
  auto c = leases_cached_.find(k8s::NameOf(stored));
  if (c != leases_cached_.end() && c->second->rv >= rv) return;
  no_pass_.insert({k8s::NameOf(stored), rv});
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
  // The newer of the informer's and our own write of each lease; copied
  // outside the lock.
  std::vector<std::shared_ptr<const ParsedLease>> leases;
  {
    absl::MutexLock l(&mu_);
    leases.reserve(lease_names.size());
    for (const std::string& n : lease_names) {
      auto c = leases_cached_.find(n);
      auto o = leases_wrote_.find(n);
      if (o != leases_wrote_.end()) {
        if (c == leases_cached_.end() || c->second->rv < o->second->rv) {
          leases.push_back(o->second);
          continue;
        }
        leases_wrote_.erase(o);
      }
      if (c != leases_cached_.end()) leases.push_back(c->second);
    }
  }
  w.leases.reserve(leases.size());
  for (const auto& p : leases) {
    if (!p->lease.ok()) {
      w.unreadable.push_back(absl::StrCat(api::Resource<api::DaxLease>::kKind,
                                          "/", p->name, ": ",
                                          p->lease.status().message()));
      continue;
    }
    w.leases.push_back(*p->lease);
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
