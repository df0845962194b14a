#include "node-agent/agent/agent.h"

#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "lib/api/json.h"
#include "lib/api/label_value.h"
#include "lib/base/crash_point.h"
#include "lib/base/log.h"
#include "lib/base/status.h"
#include "lib/sys/file.h"

namespace daxlease::agent {
namespace {

constexpr char kStateFile[] = "state.json";
constexpr uint64_t k2MiB = 2ull << 20;

template <typename T>
k8s::Resource Crd() {
  return k8s::Resource{api::kGroup, api::kVersion, api::Resource<T>::kPlural,
                       false};
}

std::string RandomHex(size_t bytes) {
  std::string raw(bytes, '\0');
  size_t got = 0;
  while (got < bytes) {
    ssize_t n = getrandom(raw.data() + got, bytes - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      // getrandom does not fail for small sizes after boot; be loud if it
      // somehow does rather than hand out a guessable token.
      base::LogError("agent.getrandom_failed",
                     {{"errno", std::to_string(errno)}});
      abort();
    }
    got += static_cast<size_t>(n);
  }
  return absl::BytesToHexString(raw);
}

uint64_t Fnv1a(absl::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ull;
  }
  return h;
}

bool HoldsAccess(const api::DaxLease& l) {
  if (!l.status.state.has_value()) return false;
  switch (*l.status.state) {
    case api::LeaseState::kGranted:
    case api::LeaseState::kRecalling:
      return true;
    case api::LeaseState::kRevoked:
      return l.status.fence_required;
    default:
      return false;
  }
}

fabric::Access FabricAccess(api::Access a) {
  return a == api::Access::kReadWrite ? fabric::Access::kReadWrite
                                      : fabric::Access::kReadOnly;
}

int64_t ToUnixMs(absl::Time t) { return absl::ToUnixMillis(t); }

bool ConstantTimeEquals(const std::string& a, const std::string& b) {
  unsigned char d = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    d |= static_cast<unsigned char>(a[i] ^ b[i]);
  }
  return d == 0;
}

}  // namespace

k8s::Resource DaxVolumeResource() { return Crd<api::DaxVolume>(); }
k8s::Resource DaxLeaseResource() { return Crd<api::DaxLease>(); }
k8s::Resource DaxRecallResource() { return Crd<api::DaxRecall>(); }
k8s::Resource DaxMigrationResource() { return Crd<api::DaxMigration>(); }

// ---- Session
// -------------------------------------------------------------------

std::optional<pb::SessionEvent> Session::Next(absl::Duration timeout) {
  std::unique_lock<std::mutex> l(mu_);
  cv_.wait_for(l, absl::ToChronoNanoseconds(timeout),
               [&] { return closed_ || pending_.has_value(); });
  if (closed_ || !pending_.has_value()) return std::nullopt;
  pb::SessionEvent ev = std::move(*pending_);
  pending_.reset();
  return ev;
}

bool Session::closed() const {
  std::lock_guard<std::mutex> l(mu_);
  return closed_;
}

void Session::Offer(const pb::SessionEvent& event) {
  pb::SessionEvent ev = event;
  ev.set_session_id(id_);
  std::string key = ev.SerializeAsString();
  std::lock_guard<std::mutex> l(mu_);
  if (key == last_key_) return;
  last_key_ = std::move(key);
  pending_ = std::move(ev);
  cv_.notify_all();
}

void Session::Close() {
  std::lock_guard<std::mutex> l(mu_);
  closed_ = true;
  cv_.notify_all();
}

// ---- Agent
// ---------------------------------------------------------------------

Agent::Agent(AgentConfig config, k8s::KubeClient& client, base::Clock& clock,
             fabric::Fabric& fabric, std::string fabric_endpoint)
    : config_(std::move(config)),
      client_(client),
      clock_(clock),
      fabric_(fabric),
      fabric_endpoint_(std::move(fabric_endpoint)) {}

Agent::~Agent() { Stop(); }

absl::Status Agent::Start() {
  RETURN_IF_ERROR(sys::MakeDirs(config_.state_dir, 0700));
  RETURN_IF_ERROR(LoadState());
  k8s::InformerHandlers kick{
      [this](const k8s::Json&) { Kick(); },
      [this](const k8s::Json&, const k8s::Json&) { Kick(); },
      [this](const k8s::Json&) { Kick(); }};
  k8s::InformerOptions vo;
  vo.resource = DaxVolumeResource();
  vo.resync = absl::Seconds(30);
  k8s::InformerOptions lo = vo;
  lo.resource = DaxLeaseResource();
  k8s::InformerOptions mo = vo;
  mo.resource = DaxMigrationResource();
  volumes_ = std::make_unique<k8s::Informer>(client_, clock_, vo);
  leases_ = std::make_unique<k8s::Informer>(client_, clock_, lo);
  migrations_ = std::make_unique<k8s::Informer>(client_, clock_, mo);
  volumes_->AddHandlers(kick);
  leases_->AddHandlers(kick);
  migrations_->AddHandlers(kick);
  volumes_->Start();
  leases_->Start();
  migrations_->Start();
  if (!volumes_->WaitForSync(absl::Seconds(60)) ||
      !leases_->WaitForSync(absl::Seconds(60)) ||
      !migrations_->WaitForSync(absl::Seconds(60))) {
    return absl::UnavailableError("API server: informers did not sync in 60s");
  }
  {
    std::lock_guard<std::mutex> l(mu_);
    for (auto& [name, s] : served_) {
      auto vol = CachedVolume(name);
      if (vol.has_value() && vol->spec.owner_node != config_.node) {
        // Migrated away: its media is freed (or about to be) once the
        // migration is Complete; mapping it would create the data file
        // again (a kill -9 between the free and the state file).
        continue;
      }
      absl::Status st = MapAndRegisterLocked(s);
      if (!st.ok()) {
        base::LogError("agent.remap_failed",
                       {{"volume", name}, {"error", st.ToString()}});
      }
    }
  }
  ReconcileOnce();
  thread_ = std::thread([this] { Run(); });
  base::LogInfo("agent.started",
                {{"node", config_.node}, {"fabric", fabric_endpoint_}});
  return absl::OkStatus();
}

void Agent::Stop() {
  {
    std::lock_guard<std::mutex> l(kick_mu_);
    if (stopping_) return;
    stopping_ = true;
    kick_cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
  std::map<std::string, Job> jobs;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (auto& [t, p] : publishes_) {
      for (auto& s : p.sessions) s->Close();
    }
    jobs.swap(jobs_);
  }
  for (auto& [k, j] : jobs) {
    j.cancel->store(true);
    if (j.thread.joinable()) j.thread.join();
  }
  if (volumes_) volumes_->Stop();
  if (leases_) leases_->Stop();
  if (migrations_) migrations_->Stop();
}

void Agent::Kick() {
  std::lock_guard<std::mutex> l(kick_mu_);
  kicked_ = true;
  kick_cv_.notify_all();
}

void Agent::WakeAt(absl::Duration due) {
  std::lock_guard<std::mutex> l(kick_mu_);
  if (due < wake_due_) {
    wake_due_ = due;
    kick_cv_.notify_all();  // the wait is cut to the new time
  }
}

void Agent::Run() {
  while (true) {
    {
      std::unique_lock<std::mutex> l(kick_mu_);
      // At least every resync, and at the earliest WakeAt (which may move
      // while this waits).
      const auto resync_at = std::chrono::steady_clock::now() +
                             absl::ToChronoNanoseconds(config_.resync);
      while (!kicked_ && !stopping_ && clock_.Monotonic() < wake_due_) {
        const auto now = std::chrono::steady_clock::now();
        if (now >= resync_at) break;
        auto until = resync_at;
        if (wake_due_ != absl::InfiniteDuration()) {
          until = std::min(until, now + absl::ToChronoNanoseconds(std::max(
                                            absl::ZeroDuration(),
                                            wake_due_ - clock_.Monotonic())));
        }
        kick_cv_.wait_until(l, until);
      }
      if (stopping_) return;
      kicked_ = false;
      if (clock_.Monotonic() >= wake_due_) {
        wake_due_ = absl::InfiniteDuration();
      }
    }
    ReconcileOnce();
  }
}

// ---- state file
// -------------------------------------------------------------------

absl::Status Agent::LoadState() {
  std::string path = absl::StrCat(config_.state_dir, "/", kStateFile);
  auto data = sys::ReadFile(path);
  if (absl::IsNotFound(data.status())) return absl::OkStatus();
  if (!data.ok()) return data.status();
  k8s::Json j = k8s::Json::parse(*data, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::DataLossError(absl::StrCat(path, " is not JSON"));
  }
  std::lock_guard<std::mutex> l(mu_);
  const k8s::Json served = j.value("served", k8s::Json::object());
  const k8s::Json publishes = j.value("publishes", k8s::Json::object());
  for (const auto& [vol, s] : served.items()) {
    Served sv;
    sv.req.set_volume_id(vol);
    sv.req.set_mode(s.value("mode", "fsdax") == "devdax" ? pb::DEVDAX
                                                         : pb::FSDAX);
    sv.req.set_mount_path(s.value("mountPath", ""));
    sv.req.set_device(s.value("device", ""));
    sv.req.set_dax(s.value("dax", false));
    sv.data_path = s.value("dataPath", "");
    sv.size = s.value("size", uint64_t{0});
    sv.migrated = s.value("migrated", false);
    served_[vol] = std::move(sv);
  }
  const k8s::Json incoming = j.value("incoming", k8s::Json::object());
  for (const auto& [vol, in] : incoming.items()) {
    Incoming i;
    i.migration = in.value("migration", "");
    i.data_path = in.value("dataPath", "");
    i.size = in.value("size", uint64_t{0});
    i.checksum = in.value("checksum", "");
    i.device = in.value("device", false);
    incoming_[vol] = std::move(i);
  }
  const k8s::Json outgoing = j.value("outgoing", k8s::Json::object());
  for (const auto& [vol, o] : outgoing.items()) {
    outgoing_[vol] = Outgoing{o.value("migration", ""), o.value("device", "")};
  }
  for (const auto& [target, p] : publishes.items()) {
    Published pub;
    pub.req.set_volume_id(p.value("volume", ""));
    pub.req.set_target_path(target);
    pub.req.set_pod_namespace(p.value("podNamespace", ""));
    pub.req.set_pod_name(p.value("podName", ""));
    pub.req.set_pod_uid(p.value("podUID", ""));
    pub.req.set_read_only(p.value("readOnly", false));
    pub.req.set_owner_local(p.value("ownerLocal", false));
    pub.lease_name = p.value("lease", "");
    pub.token = p.value("token", "");
    pub.generation = p.value("generation", int64_t{1});
    pub.revoked = p.value("revoked", false);
    pub.attached = p.value("attached", false);
    for (const auto& r : p.value("retired", k8s::Json::array())) {
      if (r.is_string()) pub.retired.push_back(r.get<std::string>());
    }
    publishes_[target] = std::move(pub);
  }
  for (const auto& f : j.value("fenced", k8s::Json::array())) {
    if (!f.is_object()) continue;
    fabric::GrantKey key{f.value("volume", ""), f.value("leaseUID", ""),
                         f.value("holderNode", ""),
                         f.value("epoch", int64_t{0})};
    fenced_[key] = f.value("lease", "");
  }
  base::LogInfo("agent.state_loaded",
                {{"served", std::to_string(served_.size())},
                 {"publishes", std::to_string(publishes_.size())}});
  return absl::OkStatus();
}

absl::Status Agent::SaveStateLocked() {
  k8s::Json j = {{"served", k8s::Json::object()},
                 {"publishes", k8s::Json::object()}};
  for (const auto& [vol, s] : served_) {
    j["served"][vol] = {
        {"mode", s.req.mode() == pb::DEVDAX ? "devdax" : "fsdax"},
        {"mountPath", s.req.mount_path()},
        {"device", s.req.device()},
        {"dax", s.req.dax()},
        {"dataPath", s.data_path},
        {"size", s.size},
        {"migrated", s.migrated}};
  }
  j["incoming"] = k8s::Json::object();
  for (const auto& [vol, i] : incoming_) {
    j["incoming"][vol] = {{"migration", i.migration},
                          {"dataPath", i.data_path},
                          {"size", i.size},
                          {"checksum", i.checksum},
                          {"device", i.device}};
  }
  j["outgoing"] = k8s::Json::object();
  for (const auto& [vol, o] : outgoing_) {
    j["outgoing"][vol] = {{"migration", o.migration}, {"device", o.device}};
  }
  for (const auto& [target, p] : publishes_) {
    j["publishes"][target] = {{"volume", p.req.volume_id()},
                              {"podNamespace", p.req.pod_namespace()},
                              {"podName", p.req.pod_name()},
                              {"podUID", p.req.pod_uid()},
                              {"readOnly", p.req.read_only()},
                              {"ownerLocal", p.req.owner_local()},
                              {"lease", p.lease_name},
                              {"token", p.token},
                              {"generation", p.generation},
                              {"revoked", p.revoked},
                              {"attached", p.attached},
                              {"retired", p.retired}};
  }
  j["fenced"] = k8s::Json::array();
  for (const auto& [key, lease] : fenced_) {
    j["fenced"].push_back({{"volume", key.volume},
                           {"leaseUID", key.lease_uid},
                           {"holderNode", key.holder_node},
                           {"epoch", key.epoch},
                           {"lease", lease}});
  }
  RETURN_IF_ERROR(sys::WriteFileAtomic(
      absl::StrCat(config_.state_dir, "/", kStateFile), j.dump(2)));
  fenced_unsaved_ = false;
  return absl::OkStatus();
}

// ---- cache reads
// ------------------------------------------------------------------

std::optional<api::DaxVolume> Agent::CachedVolume(
    const std::string& name) const {
  auto j = volumes_->Get(name);
  if (!j.has_value()) return std::nullopt;
  auto v = api::FromJson<api::DaxVolume>(*j);
  if (!v.ok()) return std::nullopt;
  return *v;
}

std::optional<api::DaxLease> Agent::CachedLease(const std::string& name) const {
  auto j = leases_->Get(name);
  if (!j.has_value()) return std::nullopt;
  auto l = api::FromJson<api::DaxLease>(*j);
  if (!l.ok()) return std::nullopt;
  return *l;
}

std::vector<api::DaxLease> Agent::LeasesOf(const std::string& volume) const {
  std::vector<api::DaxLease> out;
  for (const auto& j : leases_->List()) {
    auto l = api::FromJson<api::DaxLease>(j);
    if (l.ok() && l->spec.volume == volume) out.push_back(std::move(*l));
  }
  return out;
}

absl::Status Agent::PatchLeaseStatus(const std::string& name,
                                     const k8s::Json& st) {
  auto r = client_.Patch(DaxLeaseResource(), "", name, k8s::PatchType::kMerge,
                         k8s::Json{{"status", st}}, "status");
  if (!r.ok()) {
    base::LogWarn("agent.lease_patch_failed",
                  {{"lease", name}, {"error", r.status().ToString()}});
    return r.status();
  }
  return absl::OkStatus();
}

// ---- CSI
// ----------------------------------------------------------------------------

absl::Status Agent::RecordVolume(const pb::RecordVolumeRequest& req) {
  if (req.volume_id().empty() || req.size_bytes() == 0 ||
      (req.mode() != pb::FSDAX && req.mode() != pb::DEVDAX)) {
    return absl::InvalidArgumentError(
        "RecordVolume needs volume_id, size_bytes > 0 and a mode");
  }
  api::DaxVolume v;
  v.metadata.name = req.volume_id();
  v.spec.size_bytes = static_cast<int64_t>(req.size_bytes());
  v.spec.mode = req.mode() == pb::DEVDAX ? api::VolumeMode::kDevdax
                                         : api::VolumeMode::kFsdax;
  if (req.fs_type() == "xfs") {
    v.spec.fs_type = api::FsType::kXfs;
  } else if (req.fs_type() == "ext4") {
    v.spec.fs_type = api::FsType::kExt4;
  } else if (!req.fs_type().empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("fs_type '", req.fs_type(), "' is not ext4 or xfs"));
  }
  v.spec.owner_node = config_.node;
  v.spec.share = req.share();
  if (req.share() && req.mode() == pb::FSDAX) {
    // Refused up front (CreateVolume), not at the first stage: a shared
    // fsdax volume this node's fabric cannot serve would never be reached.
    absl::Status can = fabric_.CanShareFsdax();
    if (!can.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "shared fsdax volume ", req.volume_id(), " refused on node ",
          config_.node, ": ", can.message(), " (daxlease.io/mode=devdax)"));
    }
  }
  if (req.recall_grace_seconds() > 0) {
    v.spec.recall_grace_seconds = req.recall_grace_seconds();
  }
  auto existing = client_.Get(DaxVolumeResource(), "", req.volume_id());
  if (existing.ok()) {
    auto cur = api::FromJson<api::DaxVolume>(*existing);
    if (!cur.ok()) return cur.status();
    if (cur->spec.size_bytes != v.spec.size_bytes ||
        cur->spec.mode != v.spec.mode ||
        cur->spec.owner_node != v.spec.owner_node ||
        cur->spec.share != v.spec.share) {
      return absl::AlreadyExistsError(absl::StrCat(
          "DaxVolume ", req.volume_id(), " exists with another spec"));
    }
    return absl::OkStatus();
  }
  if (!absl::IsNotFound(existing.status())) return existing.status();
  k8s::Json obj = api::ToJson(v);
  obj.erase("status");
  auto created = client_.Create(DaxVolumeResource(), obj);
  if (absl::IsAlreadyExists(created.status())) return RecordVolume(req);
  if (!created.ok()) return created.status();
  base::LogInfo("agent.volume_recorded", {{"volume", req.volume_id()}});
  return absl::OkStatus();
}

absl::Status Agent::ForgetVolume(const std::string& volume_id) {
  auto list = k8s::ListAll(client_, DaxLeaseResource(), "");
  if (!list.ok()) return list.status();
  for (const auto& j : list->items) {
    auto l = api::FromJson<api::DaxLease>(j);
    if (l.ok() && l->spec.volume == volume_id && HoldsAccess(*l)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "lease ", l->metadata.name, " of volume ", volume_id,
          " holds access (", api::EnumName(*l->status.state), ")"));
    }
  }
  RETURN_IF_ERROR(StopServing(volume_id));
  absl::Status st = client_.Delete(DaxVolumeResource(), "", volume_id);
  if (!st.ok() && !absl::IsNotFound(st)) return st;
  base::LogInfo("agent.volume_forgotten", {{"volume", volume_id}});
  return absl::OkStatus();
}

absl::Status Agent::MapAndRegisterLocked(Served& s) {
  if (s.map == nullptr) {
    uint64_t create = 0;
    if (s.req.mode() == pb::FSDAX && !sys::PathExists(s.data_path)) {
      std::string dir = s.data_path.substr(0, s.data_path.rfind('/'));
      RETURN_IF_ERROR(sys::MakeDirs(dir, 0755));
      ASSIGN_OR_RETURN(sys::FsUsage usage, sys::StatFs(dir));
      uint64_t room = usage.available_bytes / k2MiB * k2MiB;
      create = s.size == 0 ? room : std::min(s.size, room);
      if (create == 0) {
        return absl::ResourceExhaustedError(
            absl::StrCat("no room for ", s.data_path));
      }
      s.size = create;
    }
    ASSIGN_OR_RETURN(s.map, MappedVolume::Map(s.data_path, s.size, create));
    s.size = s.map->size();
  }
  if (!s.registered) {
    fabric::Region r;
    r.volume = s.req.volume_id();
    r.base = s.map->base();
    r.length = s.map->size();
    MappedVolume* m = s.map.get();
    r.persist = [m](uint64_t off, uint64_t len) {
      return m->Persist(off, len);
    };
    // A migration's target asks inside the pause (docs/agent.md,
    // "Migration"): the chunks it must read again.
    // In the pause of a migration from this node, the digests of the whole
    // volume are the ones its checksum takes (hashed once).
    r.digests = [this, m, volume = s.req.volume_id()](
                    uint64_t off, uint64_t len,
                    uint64_t chunk) -> absl::StatusOr<std::string> {
      if (chunk != kChecksumChunk) {
        return absl::InvalidArgumentError(
            absl::StrCat("chunk digests are of ", kChecksumChunk,
                         " bytes here, not ", chunk));
      }
      auto hash = [&] {
        if (config_.metrics != nullptr) config_.metrics->SourceHashed(len);
        return HashChunks(m->base(), m->size(), off, len);
      };
      std::shared_ptr<FrozenDigests> frozen = FrozenDigestsOf(volume);
      if (frozen == nullptr || off != 0 || len != m->size()) return hash();
      return frozen->Get(hash);
    };
    absl::Status st = fabric_.RegisterVolume(r);
    if (!st.ok() && !absl::IsAlreadyExists(st)) return st;
    s.registered = true;
  }
  return absl::OkStatus();
}

absl::StatusOr<pb::ServeVolumeResponse> Agent::ServeVolume(
    const pb::ServeVolumeRequest& req) {
  if (req.volume_id().empty() ||
      (req.mode() == pb::FSDAX && req.mount_path().empty()) ||
      (req.mode() == pb::DEVDAX && req.device().empty()) ||
      req.mode() == pb::VOLUME_MODE_UNSPECIFIED) {
    return absl::InvalidArgumentError(
        "ServeVolume needs volume_id, a mode and mount_path (fsdax) or "
        "device (devdax)");
  }
  ASSIGN_OR_RETURN(k8s::Json vj,
                   client_.Get(DaxVolumeResource(), "", req.volume_id()));
  ASSIGN_OR_RETURN(api::DaxVolume vol, api::FromJson<api::DaxVolume>(vj));
  if (vol.spec.owner_node != config_.node) {
    return absl::FailedPreconditionError(
        absl::StrCat("volume ", req.volume_id(), " is owned by ",
                     vol.spec.owner_node, ", not ", config_.node));
  }
  pb::ServeVolumeResponse resp;
  // Whether this call changed what is served (logged then only: the plugin
  // asks again on every stage and grow step).
  bool mapped_now = false;
  {
    std::lock_guard<std::mutex> l(mu_);
    Served& s = served_[req.volume_id()];
    if (s.map == nullptr) {
      mapped_now = true;
      s.req = req;
      s.data_path = req.mode() == pb::DEVDAX
                        ? req.device()
                        : absl::StrCat(req.mount_path(), "/", kDataFile);
      s.size = req.size_bytes();
      // A data file there already (a volume restored from a snapshot of a
      // shared one) holds what the filesystem had room for when it was
      // made, as a new one is cut to: maybe less than the capacity.
      absl::StatusOr<uint64_t> held =
          req.mode() == pb::FSDAX && sys::PathExists(s.data_path)
              ? sys::FileSize(s.data_path)
              : s.size;
      absl::Status st = held.status();
      if (st.ok()) {
        s.size = std::min(s.size, *held);
        st = MapAndRegisterLocked(s);
      }
      if (!st.ok()) {
        served_.erase(req.volume_id());
        return st;
      }
      RETURN_IF_ERROR(SaveStateLocked());
    }
    resp.set_served_bytes(s.size);
    resp.set_data_path(s.data_path);
  }
  if (vol.metadata.annotations[kFabricEndpointAnnotation] != fabric_endpoint_) {
    auto r = client_.Patch(
        DaxVolumeResource(), "", req.volume_id(), k8s::PatchType::kMerge,
        k8s::Json{{"metadata",
                   {{"annotations",
                     {{kFabricEndpointAnnotation, fabric_endpoint_}}}}}});
    if (!r.ok()) return r.status();
  }
  if (mapped_now) {
    base::LogInfo("agent.serving",
                  {{"volume", req.volume_id()},
                   {"path", resp.data_path()},
                   {"bytes", std::to_string(resp.served_bytes())}});
  }
  Kick();
  return resp;
}

absl::Status Agent::StopServing(const std::string& volume_id) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = served_.find(volume_id);
  if (it == served_.end()) return absl::OkStatus();
  for (const auto& lease : LeasesOf(volume_id)) {
    if (lease.spec.holder_node != config_.node && HoldsAccess(lease)) {
      return absl::FailedPreconditionError(
          absl::StrCat("lease ", lease.metadata.name, " on ",
                       lease.spec.holder_node, " holds access to ", volume_id));
    }
  }
  RETURN_IF_ERROR(fabric_.DeregisterVolume(volume_id));
  served_.erase(it);
  RETURN_IF_ERROR(SaveStateLocked());
  base::LogInfo("agent.stopped_serving", {{"volume", volume_id}});
  return absl::OkStatus();
}

// ---- reshape (docs/csi.md, "Expansion with holders")

absl::StatusOr<uint64_t> Agent::GrownSizeLocked(const Served& s,
                                                uint64_t size_bytes) const {
  ASSIGN_OR_RETURN(uint64_t file_bytes, sys::FileSize(s.data_path));
  uint64_t target = file_bytes;
  if (s.req.mode() == pb::FSDAX) {
    // What the grown filesystem holds beside the file, as at first serve:
    // the new size or the room there is, in whole 2 MiB pages; never less
    // than today.
    std::string dir = s.data_path.substr(0, s.data_path.rfind('/'));
    ASSIGN_OR_RETURN(sys::FsUsage usage, sys::StatFs(dir));
    target = std::min<uint64_t>(size_bytes, file_bytes + usage.available_bytes);
    target = std::max<uint64_t>(target / k2MiB * k2MiB, file_bytes);
  }
  return std::max<uint64_t>(target, s.size);
}

absl::Status Agent::RemapGrownLocked(Served& s, uint64_t size_bytes) {
  const std::string& name = s.req.volume_id();
  ASSIGN_OR_RETURN(uint64_t file_bytes, sys::FileSize(s.data_path));
  ASSIGN_OR_RETURN(uint64_t target, GrownSizeLocked(s, size_bytes));
  if (s.map != nullptr && s.registered && s.map->size() == target) {
    return absl::OkStatus();
  }
  // No lease holds access (the caller checked): nobody uses the mapping.
  RETURN_IF_ERROR(fabric_.DeregisterVolume(name));
  s.registered = false;
  s.map.reset();  // also gives the Linux lease up: the file changes now
  // Not all the free space statfs reports need fit (the filesystem keeps
  // blocks for its extent trees): ENOSPC steps the target back 2 MiB at a
  // time.
  while (s.req.mode() == pb::FSDAX && file_bytes < target) {
    absl::Status st = sys::FallocateTail(s.data_path, target);
    if (st.ok()) break;
    if (!absl::IsResourceExhausted(st) || target - file_bytes <= k2MiB) {
      return st;
    }
    target -= k2MiB;
  }
  s.size = target;
  RETURN_IF_ERROR(MapAndRegisterLocked(s));
  base::LogInfo("agent.volume_remapped",
                {{"volume", name},
                 {"from_bytes", std::to_string(file_bytes)},
                 {"bytes", std::to_string(s.size)}});
  return absl::OkStatus();
}

absl::StatusOr<Agent::OwnedVolume> Agent::OwnedVolumeFor(
    const std::string& name, absl::string_view kind) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!served_.contains(name)) {
      return absl::FailedPreconditionError(
          absl::StrCat("volume ", name, " is not served on ", config_.node));
    }
  }
  ASSIGN_OR_RETURN(k8s::Json vj, client_.Get(DaxVolumeResource(), "", name));
  OwnedVolume o;
  ASSIGN_OR_RETURN(o.vol, api::FromJson<api::DaxVolume>(vj));
  if (o.vol.spec.owner_node != config_.node) {
    return absl::FailedPreconditionError(
        absl::StrCat("volume ", name, " is owned by ", o.vol.spec.owner_node,
                     ", not ", config_.node));
  }
  o.phase = o.vol.status.phase.value_or(api::VolumePhase::kReady);
  o.prefix = absl::StrCat(name, "-", kind, "-");
  o.active = o.vol.status.active_recall;
  o.ours = !o.active.empty() && o.active.rfind(o.prefix, 0) == 0;
  return o;
}

absl::StatusOr<pb::ReshapeVolumeResponse> Agent::ReshapeVolume(
    const pb::ReshapeVolumeRequest& req) {
  const std::string& name = req.volume_id();
  if (name.empty() || req.size_bytes() == 0) {
    return absl::InvalidArgumentError(
        "ReshapeVolume needs volume_id and size_bytes > 0");
  }
  ASSIGN_OR_RETURN(OwnedVolume owned, OwnedVolumeFor(name, "reshape"));
  const auto& [vol, phase, prefix, active, ours] = owned;
  pb::ReshapeVolumeResponse resp;
  // The recall this reshape needs, if any; "" when the volume may change
  // without one (no lease holds access).
  std::string recall;
  if (phase == api::VolumePhase::kReady) {
    if (!req.complete()) {
      // Done when the data already holds what the size and the filesystem
      // allow (a grow within what it had), or a grow to this size already
      // ended (a retry after the end; the record's size is set last).
      std::lock_guard<std::mutex> l(mu_);
      Served& s = served_[name];
      ASSIGN_OR_RETURN(uint64_t target, GrownSizeLocked(s, req.size_bytes()));
      // A device (devdax) does not grow under its mapping: the plugin
      // serves a larger one instead (ndctl's copy), so its size says.
      const bool holds = s.map != nullptr && (s.req.mode() == pb::DEVDAX
                                                  ? s.size >= req.size_bytes()
                                                  : target <= s.map->size());
      if (s.map != nullptr &&
          (holds ||
           vol.spec.size_bytes >= static_cast<int64_t>(req.size_bytes()))) {
        resp.set_stage(pb::ReshapeVolumeResponse::DONE);
        resp.set_served_bytes(s.size);
        return resp;
      }
    }
    // One recall name per epoch: a reshape recall ends at the next epoch,
    // so a name is never reused, and a retry finds its own.
    const std::string mine = absl::StrCat(prefix, "e", vol.status.epoch);
    auto existing = client_.Get(DaxRecallResource(), "", mine);
    if (!existing.ok() && !absl::IsNotFound(existing.status())) {
      return existing.status();
    }
    int holders = 0;
    if (!existing.ok()) {
      auto list = k8s::ListAll(client_, DaxLeaseResource(), "");
      if (!list.ok()) return list.status();
      for (const auto& j : list->items) {
        auto l = api::FromJson<api::DaxLease>(j);
        holders += l.ok() && l->spec.volume == name && HoldsAccess(*l);
      }
    }
    if (existing.ok() || holders > 0) {
      if (!existing.ok()) {
        k8s::Json r = api::NewRecallObject(name, api::RecallReason::kReshape);
        r["metadata"]["name"] = mine;
        auto c = client_.Create(DaxRecallResource(), r);
        if (!c.ok() && !absl::IsAlreadyExists(c.status())) return c.status();
        base::LogInfo("agent.reshape_recall",
                      {{"volume", name},
                       {"recall", mine},
                       {"holders", std::to_string(holders)},
                       {"bytes", std::to_string(req.size_bytes())}});
      }
      return absl::UnavailableError(
          absl::StrCat("recall in progress: DaxRecall ", mine,
                       " (Reshape) is asking the holders of ", name,
                       " to flush and unmap; retry"));
    }
  } else if (ours && (phase == api::VolumePhase::kQuiesced ||
                      phase == api::VolumePhase::kReshaping)) {
    recall = active;
  } else if (ours && phase == api::VolumePhase::kRecalling) {
    return absl::UnavailableError(
        absl::StrCat("recall in progress: DaxRecall ", active,
                     " (Reshape) is asking the holders of ", name,
                     " to flush and unmap; retry"));
  } else {
    return absl::AbortedError(absl::StrCat(
        "volume ", name, " is ", api::EnumName(phase),
        active.empty() ? "" : absl::StrCat(" for DaxRecall ", active),
        "; it can grow once that is over"));
  }
  if (!req.complete()) {
    resp.set_stage(pb::ReshapeVolumeResponse::CHANGE);
    resp.set_recall(recall);
    return resp;
  }
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = served_.find(name);
    if (it == served_.end()) {
      return absl::FailedPreconditionError(
          absl::StrCat("volume ", name, " is not served on ", config_.node));
    }
    RETURN_IF_ERROR(RemapGrownLocked(it->second, req.size_bytes()));
    RETURN_IF_ERROR(SaveStateLocked());
    resp.set_served_bytes(it->second.size);
  }
  // Then the record: the spec's size, and (after a recall) the mark that
  // lets the operator return the volume to Ready at the next epoch.
  k8s::Json patch = {
      {"spec",
       {{"sizeBytes",
         std::max<int64_t>(vol.spec.size_bytes,
                           static_cast<int64_t>(req.size_bytes()))}}}};
  if (!recall.empty()) {
    patch["metadata"] = {{"annotations", {{api::kReshapedAnnotation, recall}}}};
  }
  auto r = client_.Patch(DaxVolumeResource(), "", name, k8s::PatchType::kMerge,
                         patch);
  if (!r.ok()) return r.status();
  base::LogInfo("agent.reshaped",
                {{"volume", name},
                 {"recall", recall},
                 {"bytes", std::to_string(resp.served_bytes())}});
  resp.set_stage(pb::ReshapeVolumeResponse::DONE);
  resp.set_recall(recall);
  Kick();
  return resp;
}

// ---- snapshot (docs/csi.md, "Snapshots of shared volumes")

absl::StatusOr<pb::SnapshotVolumeResponse> Agent::SnapshotVolume(
    const pb::SnapshotVolumeRequest& req) {
  const std::string& name = req.volume_id();
  if (name.empty()) {
    return absl::InvalidArgumentError("SnapshotVolume needs volume_id");
  }
  ASSIGN_OR_RETURN(OwnedVolume owned, OwnedVolumeFor(name, "snapshot"));
  const auto& [vol, phase, prefix, active, ours] = owned;
  pb::SnapshotVolumeResponse resp;
  if (req.complete()) {
    // The copy is taken: let the holders back in. Once the recall is over
    // (a retry), nothing is left to do.
    if (ours && phase == api::VolumePhase::kQuiesced) {
      k8s::Json patch = {
          {"metadata",
           {{"annotations", {{api::kSnapshottedAnnotation, active}}}}}};
      auto r = client_.Patch(DaxVolumeResource(), "", name,
                             k8s::PatchType::kMerge, patch);
      if (!r.ok()) return r.status();
      base::LogInfo("agent.snapshotted",
                    {{"volume", name}, {"recall", active}});
      resp.set_recall(active);
      Kick();
    } else if (ours) {
      return absl::FailedPreconditionError(absl::StrCat(
          "volume ", name, " is ", api::EnumName(phase), " for DaxRecall ",
          active, ": no copy may have been taken yet"));
    }
    resp.set_stage(pb::SnapshotVolumeResponse::DONE);
    return resp;
  }
  auto in_progress = [&](const std::string& recall) {
    return absl::UnavailableError(
        absl::StrCat("recall in progress: DaxRecall ", recall,
                     " (Snapshot) is asking the holders of ", name,
                     " to flush and unmap; retry"));
  };
  if (phase == api::VolumePhase::kReady) {
    // Always a recall, even with no holder: the Quiesced volume grants
    // nothing while the copy runs. One name per epoch: a snapshot recall
    // ends at the next epoch, so a retry finds its own.
    const std::string mine = absl::StrCat(prefix, "e", vol.status.epoch);
    k8s::Json r = api::NewRecallObject(name, api::RecallReason::kSnapshot);
    r["metadata"]["name"] = mine;
    auto c = client_.Create(DaxRecallResource(), r);
    if (!c.ok() && !absl::IsAlreadyExists(c.status())) return c.status();
    if (c.ok()) {
      base::LogInfo("agent.snapshot_recall",
                    {{"volume", name}, {"recall", mine}});
    }
    return in_progress(mine);
  }
  if (ours && phase == api::VolumePhase::kRecalling) {
    return in_progress(active);
  }
  if (!ours || phase != api::VolumePhase::kQuiesced) {
    return absl::AbortedError(absl::StrCat(
        "volume ", name, " is ", api::EnumName(phase),
        active.empty() ? "" : absl::StrCat(" for DaxRecall ", active),
        "; a snapshot can be taken once that is over"));
  }
  // Quiesced for our recall: every holder flushed and acked (or was
  // fenced), so what they acknowledged is in the data file and nothing else
  // reaches it. Copy now.
  resp.set_stage(pb::SnapshotVolumeResponse::COPY);
  resp.set_recall(active);
  return resp;
}

std::string Agent::LeaseName(const std::string& volume,
                             const std::string& target,
                             int64_t generation) const {
  uint64_t h = Fnv1a(absl::StrCat(volume, "|", config_.node, "|", target));
  return absl::StrCat("dl-", absl::Hex(h, absl::kZeroPad16), "-", generation);
}

absl::Status Agent::CreateLease(const Published& p) {
  api::DaxLease l;
  l.metadata.name = p.lease_name;
  l.metadata.labels[api::kVolumeLabel] = api::LabelValueFor(p.req.volume_id());
  l.spec.volume = p.req.volume_id();
  l.spec.holder_node = config_.node;
  l.spec.holder_pod =
      p.req.pod_namespace().empty()
          ? p.req.pod_name()
          : absl::StrCat(p.req.pod_namespace(), "/", p.req.pod_name());
  l.spec.access =
      p.req.read_only() ? api::Access::kReadOnly : api::Access::kReadWrite;
  k8s::Json obj = api::ToJson(l);
  obj.erase("status");
  auto r = client_.Create(DaxLeaseResource(), obj);
  if (!r.ok() && !absl::IsAlreadyExists(r.status())) return r.status();
  base::LogInfo("agent.lease_requested",
                {{"lease", p.lease_name}, {"volume", p.req.volume_id()}});
  return absl::OkStatus();
}

absl::Status Agent::RenewLeaseLocked(Published& p) {
  const std::string old = p.lease_name;
  p.generation++;
  p.lease_name =
      LeaseName(p.req.volume_id(), p.req.target_path(), p.generation);
  p.retired.push_back(old);
  RETURN_IF_ERROR(SaveStateLocked());
  RETURN_IF_ERROR(CreateLease(p));
  base::LogInfo("agent.lease_renewed", {{"old", old}, {"lease", p.lease_name}});
  return absl::OkStatus();
}

absl::StatusOr<pb::PublishResponse> Agent::Publish(
    const pb::PublishRequest& req) {
  if (req.volume_id().empty() || req.target_path().empty()) {
    return absl::InvalidArgumentError("Publish needs volume_id, target_path");
  }
  ASSIGN_OR_RETURN(k8s::Json vj,
                   client_.Get(DaxVolumeResource(), "", req.volume_id()));
  ASSIGN_OR_RETURN(api::DaxVolume vol, api::FromJson<api::DaxVolume>(vj));
  if (!vol.spec.share && vol.spec.owner_node != config_.node) {
    return absl::FailedPreconditionError(
        absl::StrCat("volume ", req.volume_id(), " is not shared and lives on ",
                     vol.spec.owner_node));
  }
  std::lock_guard<std::mutex> l(mu_);
  auto it = publishes_.find(req.target_path());
  if (it != publishes_.end() && it->second.req.volume_id() != req.volume_id()) {
    return absl::AlreadyExistsError(absl::StrCat(
        req.target_path(), " already publishes ", it->second.req.volume_id()));
  }
  if (it == publishes_.end()) {
    Published p;
    p.req = req;
    p.token = RandomHex(16);
    p.lease_name = LeaseName(req.volume_id(), req.target_path(), 1);
    publishes_[req.target_path()] = std::move(p);
    absl::Status st = SaveStateLocked();
    if (!st.ok()) {
      publishes_.erase(req.target_path());
      return st;
    }
    it = publishes_.find(req.target_path());
  }
  RETURN_IF_ERROR(CreateLease(it->second));
  const Published& p = it->second;
  k8s::Json d = {
      {"version", 1},
      {"volume", req.volume_id()},
      {"lease", p.lease_name},
      {"attachToken", p.token},
      {"node", config_.node},
      {"ownerNode", vol.spec.owner_node},
      {"mode", vol.spec.mode == api::VolumeMode::kDevdax ? "devdax" : "fsdax"},
      {"access", req.read_only() ? "ReadOnly" : "ReadWrite"},
      {"ownerLocal", req.owner_local()},
      {"agentSocket", config_.socket_path}};
  if (req.owner_local()) {
    auto s = served_.find(req.volume_id());
    // The pod's own open of the file would break our Linux lease (and
    // start a recall): give it up before the pod can see the descriptor.
    if (s != served_.end() && s->second.map != nullptr) {
      RETURN_IF_ERROR(s->second.map->DropLease());
    }
    if (vol.spec.mode == api::VolumeMode::kDevdax && s != served_.end()) {
      d["localData"] = s->second.data_path;
    } else {
      d["localData"] = absl::StrCat("volume/", kDataFile);
    }
  }
  pb::PublishResponse resp;
  resp.set_descriptor_json(d.dump(2));
  resp.set_lease_name(p.lease_name);
  Kick();
  return resp;
}

absl::Status Agent::Unpublish(const std::string& volume_id,
                              const std::string& target_path) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = publishes_.find(target_path);
  if (it == publishes_.end()) return absl::OkStatus();
  for (auto& s : it->second.sessions) s->Close();
  std::vector<std::string> leases = it->second.retired;
  leases.push_back(it->second.lease_name);
  for (const std::string& name : leases) {
    absl::Status st = client_.Delete(DaxLeaseResource(), "", name);
    if (!st.ok() && !absl::IsNotFound(st)) return st;
  }
  publishes_.erase(it);
  RETURN_IF_ERROR(SaveStateLocked());
  base::LogInfo("agent.unpublished",
                {{"volume", volume_id}, {"target", target_path}});
  return absl::OkStatus();
}

// ---- clients
// ----------------------------------------------------------------------

// A publish is found by its attach token (only the pod's directory holds
// it); the lease name must be one of that publish's generations, so a
// client keeps working across the renewals after recalls.
Agent::Published* Agent::FindPublishLocked(const std::string& lease_name,
                                           const std::string& token,
                                           absl::Status* err) {
  auto base_of = [](const std::string& n) { return n.substr(0, n.rfind('-')); };
  for (auto& [t, p] : publishes_) {
    if (token.size() != p.token.size() || !ConstantTimeEquals(token, p.token)) {
      continue;
    }
    if (base_of(p.lease_name) != base_of(lease_name)) {
      *err = absl::PermissionDeniedError(
          absl::StrCat("attach token is not for lease ", lease_name));
      return nullptr;
    }
    return &p;
  }
  for (auto& [t, p] : publishes_) {
    if (base_of(p.lease_name) == base_of(lease_name)) {
      *err = absl::PermissionDeniedError(
          absl::StrCat("attach token does not match lease ", lease_name,
                       ": the volume is not published to this pod"));
      return nullptr;
    }
  }
  *err = absl::NotFoundError(absl::StrCat(
      "lease ", lease_name, " is not published on node ", config_.node));
  return nullptr;
}

absl::StatusOr<std::shared_ptr<Session>> Agent::OpenSession(
    const std::string& lease_name, const std::string& attach_token) {
  std::lock_guard<std::mutex> l(mu_);
  absl::Status err;
  Published* p = FindPublishLocked(lease_name, attach_token, &err);
  if (p == nullptr) return err;
  if (p->revoked && p->sessions.empty()) {
    // A new attach after a revocation: request the next generation once the
    // revoked lease holds nothing (fenced and acknowledged).
    auto lease = CachedLease(p->lease_name);
    if (!lease.has_value() || lease->status.revocation_acknowledged ||
        lease->status.state == api::LeaseState::kReleased ||
        revocation_reported_.contains(p->lease_name)) {
      p->revoked = false;
      RETURN_IF_ERROR(RenewLeaseLocked(*p));
    }
  }
  auto s = std::make_shared<Session>();
  s->id_ = RandomHex(8);
  s->publish_ = p->req.target_path();
  p->sessions.insert(s);
  UpdateGaugesLocked();  // /metrics counts the session now, not next pass
  if (!p->attached) {
    p->attached = true;
    RETURN_IF_ERROR(SaveStateLocked());
  }
  const api::DaxLease* lp = nullptr;
  auto lease = CachedLease(p->lease_name);
  if (lease.has_value()) lp = &*lease;
  auto vol = CachedVolume(p->req.volume_id());
  s->Offer(EventFor(*p, lp, vol.has_value() ? &*vol : nullptr));
  base::LogInfo("agent.session_opened", {{"lease", p->lease_name}});
  return s;
}

void Agent::CloseSession(const std::shared_ptr<Session>& s) {
  s->Close();
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = publishes_.find(s->publish_);
    if (it != publishes_.end()) {
      it->second.sessions.erase(s);
      UpdateGaugesLocked();
      if (it->second.sessions.empty() && it->second.attached) {
        it->second.attached = false;
        (void)SaveStateLocked();
      }
    }
  }
  Kick();
}

absl::Status Agent::AckRecall(const std::string& lease_name,
                              const std::string& attach_token,
                              const std::string& recall_id,
                              const std::string& session_id) {
  std::lock_guard<std::mutex> l(mu_);
  absl::Status err;
  Published* p = FindPublishLocked(lease_name, attach_token, &err);
  if (p == nullptr) return err;
  const std::string name = p->lease_name;
  auto lease = CachedLease(name);
  // With the channel the recall may be asked before the informer shows it.
  const chpb::RecallItem* asked =
      ChannelRecallLocked(name, lease.has_value() ? &*lease : nullptr);
  const bool asked_now = asked != nullptr && asked->recall_id() == recall_id;
  if (!asked_now &&
      (!lease.has_value() || lease->status.recall_id != recall_id ||
       lease->status.state != api::LeaseState::kRecalling)) {
    // Already released (this ack was the last of several) is fine.
    if (lease.has_value() &&
        (lease->status.released_recall_id == recall_id ||
         (lease->status.recall_id == recall_id &&
          lease->status.state == api::LeaseState::kReleased))) {
      return absl::OkStatus();
    }
    return absl::FailedPreconditionError(absl::StrCat(
        "lease ", lease_name, " is not recalling with ID ", recall_id));
  }
  bool all = true;
  for (auto& s : p->sessions) {
    std::lock_guard<std::mutex> sl(s->mu_);
    if (session_id.empty() || s->id_ == session_id)
      s->acked_recall_ = recall_id;
    all = all && s->acked_recall_ == recall_id;
  }
  if (!all) return absl::OkStatus();
  if (channel()) {
    AnswerChannelLocked();  // answered when asked (now, or when it comes)
    return absl::OkStatus();
  }
  RETURN_IF_ERROR(PatchLeaseStatus(name, {{"releasedRecallID", recall_id}}));
  // The release is stored; this agent has not noted it.
  base::CrashPoint("agent.recall.released");
  RecallAckedLocked(*p, recall_id);
  base::LogInfo("agent.recall_acked", {{"lease", name}, {"recall", recall_id}});
  return absl::OkStatus();
}

absl::Status Agent::AckRevocation(const std::string& lease_name,
                                  const std::string& attach_token,
                                  const std::string& session_id) {
  std::lock_guard<std::mutex> l(mu_);
  absl::Status err;
  Published* p = FindPublishLocked(lease_name, attach_token, &err);
  if (p == nullptr) return err;
  const std::string name = p->lease_name;
  auto lease = CachedLease(name);
  if ((!lease.has_value() ||
       lease->status.state != api::LeaseState::kRevoked) &&
      !(channel() && p->revoked)) {
    if (lease.has_value() && lease->status.revocation_acknowledged) {
      return absl::OkStatus();
    }
    return absl::FailedPreconditionError(
        absl::StrCat("lease ", lease_name, " is not revoked"));
  }
  bool all = true;
  for (auto& s : p->sessions) {
    std::lock_guard<std::mutex> sl(s->mu_);
    if (session_id.empty() || s->id_ == session_id) {
      s->acked_revocation_ = true;
    }
    all = all && s->acked_revocation_;
  }
  if (channel()) {
    AnswerChannelLocked();
    return absl::OkStatus();
  }
  if (!all || lease->status.fence_required) return absl::OkStatus();
  RETURN_IF_ERROR(PatchLeaseStatus(name, {{"revocationAcknowledged", true}}));
  base::LogInfo("agent.revocation_acked", {{"lease", name}});
  return absl::OkStatus();
}

pb::StatusResponse Agent::Status() {
  std::lock_guard<std::mutex> l(mu_);
  pb::StatusResponse r;
  r.set_node_name(config_.node);
  absl::Status fsdax = fabric_.CanShareFsdax();
  r.set_fsdax_sharing(fsdax.ok());
  r.set_fsdax_sharing_refusal(std::string(fsdax.message()));
  for (const auto& [v, s] : served_) r.add_owned_volumes(v);
  for (const auto& [t, p] : publishes_) r.add_leases(p.lease_name);
  return r;
}

// ---- lease breaks
// ----------------------------------------------------------------

void Agent::OnLeaseBreak(int fd) {
  std::lock_guard<std::mutex> l(mu_);
  for (auto& [vol, s] : served_) {
    if (s.map == nullptr || s.map->fd() != fd || s.lease_broken_at) continue;
    s.lease_broken_at = clock_.Now();
    if (config_.metrics != nullptr) config_.metrics->LeaseBroken();
    base::LogWarn("agent.lease_broken",
                  {{"volume", vol}, {"path", s.data_path}});
    k8s::Json recall = api::NewRecallObject(vol, api::RecallReason::kEvict);
    recall["metadata"]["generateName"] = absl::StrCat(vol, "-lease-break-");
    auto r = client_.Create(DaxRecallResource(), recall);
    if (r.ok()) {
      s.break_recall = k8s::NameOf(*r);
    } else {
      base::LogError("agent.lease_break_recall_failed",
                     {{"volume", vol}, {"error", r.status().ToString()}});
    }
  }
  Kick();
}

// ---- reconcile
// --------------------------------------------------------------------

void Agent::ReconcileOnce() {
  std::lock_guard<std::mutex> l(mu_);
  ReconcileMigrationsLocked();
  ReconcileOwnerLocked();
  ReconcileHolderLocked();
  AnswerChannelLocked();
  UpdateGaugesLocked();
}

void Agent::UpdateGaugesLocked() {
  if (config_.metrics == nullptr) return;
  int mapped = 0;
  uint64_t bytes = 0;
  for (const auto& [v, s] : served_) {
    if (s.map == nullptr) continue;
    ++mapped;
    bytes += s.size;
  }
  int sessions = 0;
  for (const auto& [t, p] : publishes_) {
    sessions += static_cast<int>(p.sessions.size());
  }
  config_.metrics->Set(mapped, bytes, static_cast<int>(publishes_.size()),
                       sessions);
}

void Agent::RecallAckedLocked(const Published& p, const std::string& id) {
  if (config_.metrics == nullptr) return;
  config_.metrics->RecallAcked(p.recall_seen == id
                                   ? clock_.Now() - p.recall_seen_at
                                   : absl::ZeroDuration());
}

void Agent::ReconcileOwnerLocked() {
  // Migrated media whose DaxVolume is gone (deleted through the node that
  // created it): nothing else frees it.
  for (auto it = served_.begin(); it != served_.end();) {
    if (!it->second.migrated || volumes_->Get(it->first).has_value()) {
      ++it;
      continue;
    }
    (void)fabric_.DeregisterVolume(it->first);
    it->second.map.reset();
    if (it->second.req.mode() == pb::DEVDAX) {
      // A namespace the plugin made: the plugin frees it.
      outgoing_[it->first] = Outgoing{"", it->second.data_path};
      const std::string volume = it->first;
      it = served_.erase(it);
      (void)SaveStateLocked();
      FreeOutgoingLocked(volume);
      continue;
    }
    absl::Status st = sys::RemoveFile(it->second.data_path);
    if (!st.ok() && !absl::IsNotFound(st)) {
      ++it;
      continue;
    }
    const std::string path = it->second.data_path;
    rmdir(path.substr(0, path.rfind('/')).c_str());
    base::LogInfo("agent.migrated_media_freed",
                  {{"volume", it->first}, {"path", path}});
    it = served_.erase(it);
    (void)SaveStateLocked();
  }
  for (auto& [name, s] : served_) {
    auto vol = CachedVolume(name);
    if (vol.has_value() && vol->spec.owner_node != config_.node) {
      // Migrated away: no grant from here any more (the media goes once
      // the migration is Complete, ReconcileMigrationsLocked).
      if (s.registered) {
        (void)fabric_.DeregisterVolume(name);
        s.registered = false;
        base::LogInfo("agent.owner_moved",
                      {{"volume", name}, {"owner", vol->spec.owner_node}});
      }
      continue;
    }
    if (s.map == nullptr || !s.registered) {
      absl::Status st = MapAndRegisterLocked(s);
      if (!st.ok()) continue;
    }
    if (!vol.has_value()) continue;
    const int64_t epoch = vol->status.epoch;
    // A restarted owner may listen elsewhere: holders read it from here.
    if (vol->metadata.annotations[kFabricEndpointAnnotation] !=
        fabric_endpoint_) {
      (void)client_.Patch(
          DaxVolumeResource(), "", name, k8s::PatchType::kMerge,
          k8s::Json{{"metadata",
                     {{"annotations",
                       {{kFabricEndpointAnnotation, fabric_endpoint_}}}}}});
    }
    // Fenced on the channel (before a restart, or before this lease was
    // seen): cut in the fabric before anything is granted, so a holder
    // that reconnects is told it was revoked.
    for (auto f = fenced_.lower_bound(fabric::GrantKey{name, "", "", 0});
         f != fenced_.end() && f->first.volume == name; ++f) {
      (void)fabric_.Invalidate(f->first);
    }
    for (const auto& lease : LeasesOf(name)) {
      fabric::GrantKey key{name, lease.metadata.uid, lease.spec.holder_node,
                           lease.status.epoch};
      const auto state = lease.status.state;
      if ((state == api::LeaseState::kGranted ||
           state == api::LeaseState::kRecalling) &&
          lease.status.epoch == epoch) {
        // A lease object that lags the recall which revoked it.
        if (fenced_.contains(key)) continue;
        // A lease break being served ends with the volume deregistered,
        // which cuts every grant: one made now (the break's recall grants
        // the holders again at the next epoch) would be cut right after its
        // holder connected. Made once the volume is registered again; until
        // then a holder is told UNAVAILABLE (not granted yet) and retries.
        if (s.lease_broken_at.has_value()) continue;
        auto g = fabric_.Grant(key, FabricAccess(lease.spec.access));
        if (!g.ok() && !absl::IsPermissionDenied(g.status())) {
          base::LogWarn(
              "agent.grant_failed",
              {{"grant", key.DebugString()}, {"error", g.status().ToString()}});
        }
      } else if (!channel() && state == api::LeaseState::kRevoked &&
                 lease.status.fence_required &&
                 lease.status.fenced_recall_id != lease.status.recall_id) {
        auto cut = fabric_.Invalidate(key);
        if (!cut.ok()) {
          base::LogError("agent.fence_failed",
                         {{"grant", key.DebugString()},
                          {"error", cut.status().ToString()}});
          continue;
        }
        base::LogWarn("agent.fenced", {{"lease", lease.metadata.name},
                                       {"grant", key.DebugString()},
                                       {"recall", lease.status.recall_id}});
        if (PatchLeaseStatus(lease.metadata.name,
                             {{"fencedRecallID", lease.status.recall_id}})
                .ok() &&
            config_.metrics != nullptr) {
          config_.metrics->Fenced();
        }
      } else if (state == api::LeaseState::kRevoked ||
                 state == api::LeaseState::kReleased) {
        (void)fabric_.Invalidate(key);
      }
    }
    (void)fabric_.InvalidateBefore(name, epoch);

    // The Linux lease: held while no client on this node maps the file
    // itself (its open would break our lease) and no break is being served.
    if (config_.lease_signal == 0 || s.req.mode() != pb::FSDAX || s.migrated) {
      continue;
    }
    bool local_clients = false;
    for (const auto& [t, p] : publishes_) {
      local_clients |= p.req.volume_id() == name && p.req.owner_local();
    }
    if (s.lease_broken_at.has_value()) {
      bool done = clock_.Now() - *s.lease_broken_at > config_.lease_break_grace;
      if (!s.break_recall.empty() && !done) {
        auto r = client_.Get(DaxRecallResource(), "", s.break_recall);
        done = !r.ok() ||
               r->value("status", k8s::Json::object()).value("phase", "") ==
                   "Complete";
      }
      if (!done) continue;
      // Holders are fenced or released: let the local change through, and
      // drop the mapping (the file may shrink under it).
      (void)fabric_.DeregisterVolume(name);
      s.registered = false;
      s.map.reset();
      s.lease_broken_at.reset();
      s.break_recall.clear();
      base::LogInfo("agent.lease_break_done", {{"volume", name}});
      continue;
    }
    if (local_clients) {
      (void)s.map->DropLease();
    } else if (!s.map->lease_held()) {
      absl::Status st = s.map->TakeLease(config_.lease_signal);
      if (!st.ok() && !absl::IsUnavailable(st)) {
        base::LogWarn("agent.lease_failed",
                      {{"volume", name}, {"error", st.ToString()}});
      }
    }
  }
  PruneFencedLocked();
}

pb::SessionEvent Agent::EventFor(Published& p, const api::DaxLease* l,
                                 const api::DaxVolume* v) {
  pb::SessionEvent ev;
  ev.set_lease_name(p.lease_name);
  if (p.revoked) {
    ev.set_kind(pb::SessionEvent::REVOKED);
    ev.set_message("the lease was revoked");
    if (l != nullptr) ev.set_recall_id(l->status.recall_id);
    return ev;
  }
  if (const chpb::RecallItem* r = ChannelRecallLocked(p.lease_name, l)) {
    ev.set_kind(pb::SessionEvent::RECALLING);
    ev.set_epoch(r->epoch());
    ev.set_recall_id(r->recall_id());
    if (r->deadline_unix_ms() > 0) {
      ev.set_deadline_unix_ms(r->deadline_unix_ms());
    }
    return ev;
  }
  if (l == nullptr || !l->status.state.has_value() ||
      *l->status.state == api::LeaseState::kPending) {
    ev.set_kind(pb::SessionEvent::PENDING);
    const api::Condition* c =
        l == nullptr ? nullptr
                     : api::FindCondition(l->status.conditions, "Granted");
    ev.set_message(c != nullptr ? c->message : "waiting for the operator");
    return ev;
  }
  ev.set_epoch(l->status.epoch);
  switch (*l->status.state) {
    case api::LeaseState::kGranted: {
      if (v != nullptr && v->status.epoch < l->status.epoch) {
        // This agent's view of the volume is older than the grant (the two
        // watches deliver independently). At the grant's epoch the owner,
        // its endpoint and whether the memory is here may have changed (a
        // migration switches them before it grants): deciding from the old
        // view would map the old owner's media, which is being freed.
        ev.set_kind(pb::SessionEvent::PENDING);
        ev.set_message(absl::StrCat("granted at epoch ", l->status.epoch,
                                    "; waiting to see the volume at it"));
        return ev;
      }
      std::string endpoint;
      if (v != nullptr) {
        auto a = v->metadata.annotations.find(kFabricEndpointAnnotation);
        if (a != v->metadata.annotations.end()) endpoint = a->second;
      }
      if (endpoint.empty() && !p.req.owner_local()) {
        ev.set_kind(pb::SessionEvent::PENDING);
        ev.set_message("granted; the owner does not serve the volume yet");
        return ev;
      }
      ev.set_kind(pb::SessionEvent::GRANTED);
      pb::Grant* g = ev.mutable_grant();
      g->set_volume_id(p.req.volume_id());
      g->set_epoch(l->status.epoch);
      g->set_access(l->spec.access == api::Access::kReadWrite ? pb::READ_WRITE
                                                              : pb::READ_ONLY);
      g->set_fabric(fabric::FabricOf(endpoint));
      g->set_endpoint(endpoint);
      g->set_lease_uid(l->metadata.uid);
      g->set_holder_node(config_.node);
      fabric::GrantKey key{p.req.volume_id(), l->metadata.uid, config_.node,
                           l->status.epoch};
      g->set_credential(fabric::GrantCredential(config_.secret, key,
                                                FabricAccess(l->spec.access)));
      // The volume's memory is on this node: map it. A publish made on the
      // owner maps it through its own directory; after a migration the data
      // is the agent's media, mapped by its absolute path (a client that
      // cannot open it goes through the fabric).
      auto s = served_.find(p.req.volume_id());
      const bool here = v != nullptr && v->spec.owner_node == config_.node &&
                        s != served_.end();
      if (here) {
        g->set_size_bytes(s->second.size);
        if (s->second.migrated || s->second.req.mode() == pb::DEVDAX) {
          g->set_local_path(s->second.data_path);
        } else if (p.req.owner_local()) {
          g->set_local_path(absl::StrCat("volume/", kDataFile));
        } else {
          g->set_local_path(s->second.data_path);
        }
      }
      return ev;
    }
    case api::LeaseState::kRecalling:
      ev.set_kind(pb::SessionEvent::RECALLING);
      ev.set_recall_id(l->status.recall_id);
      if (l->status.deadline.has_value()) {
        ev.set_deadline_unix_ms(ToUnixMs(*l->status.deadline));
      }
      return ev;
    case api::LeaseState::kRevoked:
      ev.set_kind(pb::SessionEvent::REVOKED);
      ev.set_recall_id(l->status.recall_id);
      ev.set_message(absl::StrCat("revoked: ", l->status.reason));
      return ev;
    default:
      ev.set_kind(pb::SessionEvent::RELEASED);
      ev.set_message("released; requesting access again");
      return ev;
  }
}

void Agent::ReconcileHolderLocked() {
  bool dirty = false;
  for (auto& [target, p] : publishes_) {
    auto lease = CachedLease(p.lease_name);
    auto vol = CachedVolume(p.req.volume_id());
    if (!lease.has_value()) {
      // Created by Publish, or lost (deleted by hand): make sure it exists.
      (void)CreateLease(p);
    } else {
      const auto state = lease->status.state;
      if (state == api::LeaseState::kRecalling &&
          p.recall_seen != lease->status.recall_id) {
        p.recall_seen = lease->status.recall_id;
        p.recall_seen_at = clock_.Now();
      }
      // Nobody attached: nothing to flush or to tell. (With the channel,
      // AnswerChannelLocked answers when asked.)
      if (!channel() && state == api::LeaseState::kRecalling &&
          lease->status.released_recall_id != lease->status.recall_id) {
        bool all = !p.sessions.empty();
        for (auto& s : p.sessions) {
          std::lock_guard<std::mutex> sl(s->mu_);
          all = all && s->acked_recall_ == lease->status.recall_id;
        }
        // With no session, ack only if no client was attached when the
        // agent last knew (after a restart clients reconnect first).
        if ((p.sessions.empty() && !p.attached) ||
            (!p.sessions.empty() && all)) {
          if (PatchLeaseStatus(p.lease_name,
                               {{"releasedRecallID", lease->status.recall_id}})
                  .ok()) {
            base::CrashPoint("agent.recall.released");
            RecallAckedLocked(p, lease->status.recall_id);
          }
        }
      }
      if (state == api::LeaseState::kRevoked && !p.revoked) {
        p.revoked = true;
        dirty = true;
        base::LogWarn(
            "agent.lease_revoked",
            {{"lease", p.lease_name},
             {"recall", lease->status.recall_id},
             {"fenced", lease->status.fence_required ? "no" : "yes"}});
      }
      if (!channel() && state == api::LeaseState::kRevoked &&
          !lease->status.fence_required &&
          !lease->status.revocation_acknowledged) {
        bool all = !p.attached || !p.sessions.empty();
        for (auto& s : p.sessions) {
          std::lock_guard<std::mutex> sl(s->mu_);
          all = all && s->acked_revocation_;
        }
        if (all) {
          (void)PatchLeaseStatus(p.lease_name,
                                 {{"revocationAcknowledged", true}});
        }
      }
      if (state == api::LeaseState::kReleased && !p.revoked) {
        // Released after a recall: request the next generation so the
        // publish is granted again at the new epoch.
        (void)RenewLeaseLocked(p);
        lease.reset();
      }
      if (lease.has_value() && !p.retired.empty() &&
          lease->status.state == api::LeaseState::kGranted) {
        std::vector<std::string> keep;
        for (const std::string& old : p.retired) {
          absl::Status st = client_.Delete(DaxLeaseResource(), "", old);
          if (!st.ok() && !absl::IsNotFound(st)) keep.push_back(old);
        }
        p.retired = std::move(keep);
        dirty = true;
      }
    }
    pb::SessionEvent ev = EventFor(p, lease.has_value() ? &*lease : nullptr,
                                   vol.has_value() ? &*vol : nullptr);
    for (auto& s : p.sessions) s->Offer(ev);
  }
  if (dirty) (void)SaveStateLocked();
}

}  // namespace daxlease::agent
