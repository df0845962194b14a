#include "lib/k8s/fake_client.h"

#include <algorithm>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "lib/base/status.h"
#include "lib/k8s/label_syntax.h"
#include "lib/k8s/selector.h"

namespace daxlease::k8s {
namespace {

constexpr size_t kMaxHistory = 100000;

std::string Timestamp(absl::Time t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", t, absl::UTCTimeZone());
}

// Everything but metadata and status: what a generation bump is about.
Json SpecPart(const Json& obj) {
  Json out = obj;
  if (out.is_object()) {
    out.erase("metadata");
    out.erase("status");
  }
  return out;
}

absl::Status NotFound(const Resource& r, absl::string_view name) {
  return StatusFromApiStatus(
      404, "NotFound", absl::StrCat(r.Name(), " \"", name, "\" not found"));
}

absl::Status Conflict(const Resource& r, absl::string_view name) {
  return StatusFromApiStatus(
      409, "Conflict",
      absl::StrCat("Operation cannot be fulfilled on ", r.Name(), " \"", name,
                   "\": the object has been modified; please apply your "
                   "changes to the latest version and try again"));
}

std::vector<std::string> Finalizers(const Json& obj) {
  std::vector<std::string> out;
  if (obj.contains("metadata") && obj["metadata"].contains("finalizers") &&
      obj["metadata"]["finalizers"].is_array()) {
    for (const Json& f : obj["metadata"]["finalizers"]) {
      if (f.is_string()) out.push_back(f.get<std::string>());
    }
  }
  return out;
}

bool Deleting(const Json& obj) {
  return obj.contains("metadata") &&
         obj["metadata"].contains("deletionTimestamp") &&
         !obj["metadata"]["deletionTimestamp"].is_null();
}

struct Filter {
  LabelSelector labels;
  FieldSelector fields;
  bool Matches(const Json& obj) const {
    return labels.Matches(obj) && fields.Matches(obj);
  }
};

absl::StatusOr<Filter> MakeFilter(absl::string_view label_selector,
                                  absl::string_view field_selector) {
  Filter f;
  ASSIGN_OR_RETURN(f.labels, LabelSelector::Parse(label_selector));
  ASSIGN_OR_RETURN(f.fields, FieldSelector::Parse(field_selector));
  for (const std::string& p : f.fields.Paths()) {
    if (p != "metadata.name" && p != "metadata.namespace") {
      return StatusFromApiStatus(
          400, "BadRequest", absl::StrCat("field label not supported: ", p));
    }
  }
  return f;
}

// The server's 422 for labels it refuses (validation of every write).
absl::Status CheckLabels(const Resource& r, const Json& obj) {
  absl::Status st = ValidateObjectLabels(obj);
  if (st.ok()) return st;
  return StatusFromApiStatus(422, "Invalid",
                             absl::StrCat(r.Name(), " \"", NameOf(obj),
                                          "\" is invalid: ", st.message()));
}

bool InNamespace(const Resource& r, absl::string_view ns, const Json& obj) {
  return !r.namespaced || ns.empty() || NamespaceOf(obj) == ns;
}

}  // namespace

FakeKubeClient::FakeKubeClient(base::Clock& clock) : clock_(clock) {}

FakeKubeClient::~FakeKubeClient() { Shutdown(); }

void FakeKubeClient::SetStatusSubresource(const Resource& r, bool enabled) {
  absl::MutexLock l(&mu_);
  status_subresource_[r.Name()] = enabled;
}

void FakeKubeClient::FailNext(Verb verb, absl::Status status, int count) {
  absl::MutexLock l(&mu_);
  for (int i = 0; i < count; ++i) injected_[verb].push_back(status);
}

void FakeKubeClient::Compact(int64_t resource_version) {
  absl::MutexLock l(&mu_);
  compacted_ = resource_version <= 0 ? rv_ : resource_version;
  while (!history_.empty() && history_.front().rv <= compacted_) {
    history_.pop_front();
  }
  continues_.clear();
}

void FakeKubeClient::BreakWatches(absl::Status status) {
  absl::MutexLock l(&mu_);
  ++break_seq_;
  break_status_ = std::move(status);
}

void FakeKubeClient::Shutdown() {
  absl::MutexLock l(&mu_);
  shutdown_ = true;
}

int64_t FakeKubeClient::CurrentResourceVersion() const {
  absl::MutexLock l(&mu_);
  return rv_;
}

int64_t FakeKubeClient::WriteCount() const {
  absl::MutexLock l(&mu_);
  return writes_;
}

bool FakeKubeClient::AwaitActiveWatches(int n, absl::Duration timeout) const {
  absl::MutexLock l(&mu_);
  auto enough = [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return active_watches_ >= n;
  };
  return mu_.AwaitWithTimeout(absl::Condition(&enough), timeout);
}

absl::Status FakeKubeClient::TakeInjected(Verb v) {
  auto it = injected_.find(v);
  if (it == injected_.end() || it->second.empty()) return absl::OkStatus();
  absl::Status s = it->second.front();
  it->second.pop_front();
  return s;
}

bool FakeKubeClient::HasStatus(const Resource& r) const {
  auto it = status_subresource_.find(r.Name());
  return it == status_subresource_.end() || it->second;
}

void FakeKubeClient::Record(const Resource& r, WatchEvent::Type t,
                            const Json& obj) {
  history_.push_back({rv_, r.Name(), t, obj});
  while (history_.size() > kMaxHistory) {
    compacted_ = history_.front().rv;
    history_.pop_front();
  }
  ++writes_;
}

absl::StatusOr<Json> FakeKubeClient::Write(const Resource& r, Json updated,
                                           const Json& old, bool status_only) {
  const std::string name = NameOf(old);
  const std::string key = KeyOf(old);
  if (status_only) {
    Json next = old;
    if (updated.contains("status")) {
      next["status"] = updated["status"];
    } else {
      next.erase("status");
    }
    updated = std::move(next);
  } else {
    Json& m = updated["metadata"];
    const Json& om = old["metadata"];
    for (const char* f : {"uid", "creationTimestamp", "deletionTimestamp",
                          "namespace", "name", "generation"}) {
      if (om.contains(f)) {
        m[f] = om[f];
      } else {
        m.erase(f);
      }
    }
    if (HasStatus(r)) {
      if (old.contains("status")) {
        updated["status"] = old["status"];
      } else {
        updated.erase("status");
      }
    }
    if (SpecPart(updated) != SpecPart(old)) {
      m["generation"] = GenerationOf(old) + 1;
    }
    if (Deleting(old)) {
      // No new finalizers on an object being deleted.
      for (const std::string& f : Finalizers(updated)) {
        std::vector<std::string> was = Finalizers(old);
        if (std::find(was.begin(), was.end(), f) == was.end()) {
          return StatusFromApiStatus(
              422, "Invalid",
              absl::StrCat(r.Name(), " \"", name,
                           "\": no new finalizers can be added if the object "
                           "is being deleted"));
        }
      }
    }
  }
  RETURN_IF_ERROR(CheckLabels(r, updated));
  if (updated == old) return old;  // a no-op write keeps the version
  ++rv_;
  updated["metadata"]["resourceVersion"] = absl::StrCat(rv_);
  Store& store = stores_[r.Name()];
  if (Deleting(updated) && Finalizers(updated).empty()) {
    store.erase(key);
    Record(r, WatchEvent::Type::kDeleted, updated);
    return updated;
  }
  store[key] = updated;
  Record(r, WatchEvent::Type::kModified, updated);
  return updated;
}

absl::StatusOr<Json> FakeKubeClient::Get(const Resource& r,
                                         absl::string_view ns,
                                         absl::string_view name) {
  absl::MutexLock l(&mu_);
  RETURN_IF_ERROR(TakeInjected(Verb::kGet));
  const Store& store = stores_[r.Name()];
  auto it = store.find(ObjectKey(r.namespaced ? ns : "", name));
  if (it == store.end()) return NotFound(r, name);
  return it->second;
}

absl::StatusOr<ListResult> FakeKubeClient::List(const Resource& r,
                                                absl::string_view ns,
                                                const ListOptions& opts) {
  absl::MutexLock l(&mu_);
  RETURN_IF_ERROR(TakeInjected(Verb::kList));
  ListResult snapshot;
  if (!opts.continue_token.empty()) {
    auto it = continues_.find(opts.continue_token);
    if (it == continues_.end()) {
      return StatusFromApiStatus(
          410, "Expired",
          "The provided continue parameter is too old to display a "
          "consistent list result. You can start a new list without the "
          "continue parameter.");
    }
    snapshot = std::move(it->second);
    continues_.erase(it);
  } else {
    ASSIGN_OR_RETURN(Filter f,
                     MakeFilter(opts.label_selector, opts.field_selector));
    snapshot.resource_version = absl::StrCat(rv_);
    for (const auto& [key, obj] : stores_[r.Name()]) {
      if (InNamespace(r, ns, obj) && f.Matches(obj)) {
        snapshot.items.push_back(obj);
      }
    }
  }
  if (opts.limit > 0 &&
      snapshot.items.size() > static_cast<size_t>(opts.limit)) {
    ListResult rest;
    rest.resource_version = snapshot.resource_version;
    rest.items.assign(snapshot.items.begin() + opts.limit,
                      snapshot.items.end());
    snapshot.items.resize(opts.limit);
    std::string token = absl::StrCat("fake-continue-", ++continue_seq_);
    continues_[token] = std::move(rest);
    snapshot.continue_token = token;
  }
  return snapshot;
}

absl::StatusOr<Json> FakeKubeClient::Create(const Resource& r,
                                            const Json& obj) {
  absl::MutexLock l(&mu_);
  RETURN_IF_ERROR(TakeInjected(Verb::kCreate));
  if (!obj.is_object()) return absl::InvalidArgumentError("not an object");
  Json o = obj;
  Json& m = o["metadata"];
  if (!m.is_object()) m = Json::object();
  if (r.namespaced && NamespaceOf(o).empty()) {
    return StatusFromApiStatus(422, "Invalid",
                               "metadata.namespace: Required value");
  }
  if (!r.namespaced) m.erase("namespace");
  if (NameOf(o).empty()) {
    if (!m.contains("generateName")) {
      return StatusFromApiStatus(422, "Invalid",
                                 "metadata.name: Required value");
    }
    // The server keeps at most 58 characters of the prefix (then 5 random
    // ones: a name from generateName fits a 63-character DNS label).
    const std::string prefix = m["generateName"].get<std::string>();
    m["name"] = absl::StrFormat("%s%05d", prefix.substr(0, 58),
                                (uid_seq_ + 1) % 100000);
  }
  if (absl::Status st = ValidateObjectName(NameOf(o)); !st.ok()) {
    return StatusFromApiStatus(422, "Invalid",
                               absl::StrCat(r.Name(), " \"", NameOf(o),
                                            "\" is invalid: ", st.message()));
  }
  RETURN_IF_ERROR(CheckLabels(r, o));
  Store& store = stores_[r.Name()];
  const std::string key = KeyOf(o);
  if (store.count(key) != 0) {
    return StatusFromApiStatus(
        409, "AlreadyExists",
        absl::StrCat(r.Name(), " \"", NameOf(o), "\" already exists"));
  }
  if (!ResourceVersionOf(o).empty()) {
    return StatusFromApiStatus(
        400, "BadRequest",
        "resourceVersion should not be set on objects to be created");
  }
  if (HasStatus(r)) o.erase("status");
  o["apiVersion"] = r.ApiVersion();
  ++rv_;
  m["resourceVersion"] = absl::StrCat(rv_);
  m["uid"] = absl::StrCat("fake-uid-", ++uid_seq_);
  m["creationTimestamp"] = Timestamp(clock_.Now());
  m["generation"] = 1;
  m.erase("deletionTimestamp");
  store[key] = o;
  Record(r, WatchEvent::Type::kAdded, o);
  return o;
}

absl::StatusOr<Json> FakeKubeClient::PutLocked(const Resource& r,
                                               const Json& obj,
                                               bool status_only) {
  const std::string name = NameOf(obj);
  if (name.empty()) {
    return StatusFromApiStatus(422, "Invalid", "metadata.name: Required value");
  }
  if (status_only && !HasStatus(r)) return NotFound(r, name);
  Store& store = stores_[r.Name()];
  auto it = store.find(ObjectKey(r.namespaced ? NamespaceOf(obj) : "", name));
  if (it == store.end()) return NotFound(r, name);
  const std::string rv = ResourceVersionOf(obj);
  if (rv.empty()) {
    return StatusFromApiStatus(
        422, "Invalid",
        "metadata.resourceVersion: Invalid value: 0x0: must be specified "
        "for an update");
  }
  if (rv != ResourceVersionOf(it->second)) return Conflict(r, name);
  Json old = it->second;
  return Write(r, obj, old, status_only);
}

absl::StatusOr<Json> FakeKubeClient::Update(const Resource& r,
                                            const Json& obj) {
  absl::MutexLock l(&mu_);
  RETURN_IF_ERROR(TakeInjected(Verb::kUpdate));
  return PutLocked(r, obj, false);
}

absl::StatusOr<Json> FakeKubeClient::UpdateStatus(const Resource& r,
                                                  const Json& obj) {
  absl::MutexLock l(&mu_);
  RETURN_IF_ERROR(TakeInjected(Verb::kUpdateStatus));
  return PutLocked(r, obj, true);
}

absl::StatusOr<Json> FakeKubeClient::Patch(const Resource& r,
                                           absl::string_view ns,
                                           absl::string_view name,
                                           PatchType type, const Json& patch,
                                           absl::string_view subresource) {
  absl::MutexLock l(&mu_);
  RETURN_IF_ERROR(TakeInjected(Verb::kPatch));
  const bool status_only = subresource == "status";
  if (!subresource.empty() && !status_only) {
    return absl::InvalidArgumentError(
        absl::StrCat("fake: unsupported subresource ", subresource));
  }
  if (status_only && !HasStatus(r)) return NotFound(r, name);
  Store& store = stores_[r.Name()];
  auto it = store.find(ObjectKey(r.namespaced ? ns : "", name));
  if (it == store.end()) return NotFound(r, name);
  Json old = it->second;
  Json patched = old;
  if (type == PatchType::kMerge) {
    if (!patch.is_object()) {
      return StatusFromApiStatus(400, "BadRequest",
                                 "merge patch must be a JSON object");
    }
    if (patch.contains("metadata") && patch["metadata"].is_object() &&
        patch["metadata"].contains("resourceVersion") &&
        patch["metadata"]["resourceVersion"] !=
            old["metadata"]["resourceVersion"]) {
      return Conflict(r, name);
    }
    patched.merge_patch(patch);
  } else {
    try {
      patched = old.patch(patch);
    } catch (const Json::exception& e) {
      return StatusFromApiStatus(422, "Invalid",
                                 absl::StrCat("json patch: ", e.what()));
    }
    if (ResourceVersionOf(patched) != ResourceVersionOf(old)) {
      return Conflict(r, name);
    }
  }
  return Write(r, std::move(patched), old, status_only);
}

absl::Status FakeKubeClient::Delete(const Resource& r, absl::string_view ns,
                                    absl::string_view name,
                                    absl::string_view resource_version) {
  absl::MutexLock l(&mu_);
  RETURN_IF_ERROR(TakeInjected(Verb::kDelete));
  Store& store = stores_[r.Name()];
  auto it = store.find(ObjectKey(r.namespaced ? ns : "", name));
  if (it == store.end()) return NotFound(r, name);
  if (!resource_version.empty() &&
      resource_version != ResourceVersionOf(it->second)) {
    return Conflict(r, name);
  }
  Json obj = it->second;
  if (!Finalizers(obj).empty()) {
    if (Deleting(obj)) return absl::OkStatus();
    Json next = obj;
    next["metadata"]["deletionTimestamp"] = Timestamp(clock_.Now());
    ++rv_;
    next["metadata"]["resourceVersion"] = absl::StrCat(rv_);
    it->second = next;
    Record(r, WatchEvent::Type::kModified, next);
    return absl::OkStatus();
  }
  ++rv_;
  obj["metadata"]["resourceVersion"] = absl::StrCat(rv_);
  store.erase(it);
  Record(r, WatchEvent::Type::kDeleted, obj);
  return absl::OkStatus();
}

absl::Status FakeKubeClient::Watch(const Resource& r, absl::string_view ns,
                                   const WatchOptions& opts,
                                   const WatchHandler& handler,
                                   WatchCanceller* cancel) {
  std::vector<WatchEvent> pending;
  int64_t from = 0;
  absl::Time deadline = absl::InfiniteFuture();
  Filter filter;
  int64_t my_break = 0;
  {
    absl::MutexLock l(&mu_);
    RETURN_IF_ERROR(TakeInjected(Verb::kWatch));
    if (shutdown_) return absl::OkStatus();
    my_break = break_seq_;
    ASSIGN_OR_RETURN(filter,
                     MakeFilter(opts.label_selector, opts.field_selector));
    if (opts.timeout_seconds > 0) {
      deadline = clock_.Now() + absl::Seconds(opts.timeout_seconds);
    }
    if (opts.resource_version.empty() || opts.resource_version == "0") {
      for (const auto& [key, obj] : stores_[r.Name()]) {
        if (InNamespace(r, ns, obj) && filter.Matches(obj)) {
          pending.push_back({WatchEvent::Type::kAdded, obj});
        }
      }
      from = rv_;
    } else {
      if (!absl::SimpleAtoi(opts.resource_version, &from)) {
        return StatusFromApiStatus(400, "BadRequest",
                                   "invalid resourceVersion");
      }
      if (from < compacted_) {
        return StatusFromApiStatus(410, "Expired",
                                   absl::StrCat("too old resource version: ",
                                                from, " (", compacted_, ")"));
      }
    }
  }
  const std::string rname = r.Name();
  {
    absl::MutexLock l(&mu_);
    ++active_watches_;
  }
  absl::Cleanup inactive = [this] {
    absl::MutexLock l(&mu_);
    --active_watches_;
  };
  while (true) {
    for (const WatchEvent& ev : pending) {
      if (!handler(ev)) return absl::OkStatus();
    }
    pending.clear();
    absl::MutexLock l(&mu_);
    auto ready = [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
      return shutdown_ || rv_ > from || break_seq_ != my_break ||
             (cancel != nullptr && cancel->cancelled());
    };
    while (!ready()) {
      if (clock_.Now() >= deadline) return absl::OkStatus();
      mu_.AwaitWithTimeout(absl::Condition(&ready), absl::Milliseconds(20));
    }
    if (cancel != nullptr && cancel->cancelled()) {
      return absl::CancelledError("watch cancelled");
    }
    if (shutdown_) return absl::OkStatus();
    if (break_seq_ != my_break) return break_status_;
    if (from < compacted_) {
      return StatusFromApiStatus(410, "Expired", "too old resource version");
    }
    auto first =
        std::upper_bound(history_.begin(), history_.end(), from,
                         [](int64_t v, const Event& e) { return v < e.rv; });
    for (auto e = first; e != history_.end(); ++e) {
      const Event& ev = *e;
      if (ev.resource == rname && InNamespace(r, ns, ev.object) &&
          filter.Matches(ev.object)) {
        pending.push_back({ev.type, ev.object});
      }
    }
    from = rv_;
  }
}

}  // namespace daxlease::k8s
