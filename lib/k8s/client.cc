#include "lib/k8s/client.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace daxlease::k8s {
namespace {

std::string MetaString(const Json& obj, const char* field) {
  auto m = obj.find("metadata");
  if (m == obj.end() || !m->is_object()) return "";
  auto f = m->find(field);
  if (f == m->end() || !f->is_string()) return "";
  return f->get<std::string>();
}

}  // namespace

const char* WatchEventTypeName(WatchEvent::Type t) {
  switch (t) {
    case WatchEvent::Type::kAdded:
      return "ADDED";
    case WatchEvent::Type::kModified:
      return "MODIFIED";
    case WatchEvent::Type::kDeleted:
      return "DELETED";
    case WatchEvent::Type::kBookmark:
      return "BOOKMARK";
  }
  return "UNKNOWN";
}

std::string NameOf(const Json& obj) { return MetaString(obj, "name"); }
std::string NamespaceOf(const Json& obj) {
  return MetaString(obj, "namespace");
}
std::string ResourceVersionOf(const Json& obj) {
  return MetaString(obj, "resourceVersion");
}
std::string UidOf(const Json& obj) { return MetaString(obj, "uid"); }
int64_t GenerationOf(const Json& obj) {
  auto m = obj.find("metadata");
  if (m == obj.end() || !m->is_object()) return 0;
  auto g = m->find("generation");
  if (g == m->end() || !g->is_number_integer()) return 0;
  return g->get<int64_t>();
}
std::string KeyOf(const Json& obj) {
  return ObjectKey(NamespaceOf(obj), NameOf(obj));
}

absl::StatusOr<ListResult> ListAll(KubeClient& c, const Resource& r,
                                   absl::string_view ns,
                                   const ListOptions& opts) {
  for (int attempt = 0;; ++attempt) {
    ListResult all;
    ListOptions page = opts;
    page.continue_token.clear();
    absl::Status failed;
    while (true) {
      absl::StatusOr<ListResult> res = c.List(r, ns, page);
      if (!res.ok()) {
        failed = res.status();
        break;
      }
      if (all.resource_version.empty()) {
        all.resource_version = res->resource_version;
      }
      for (Json& item : res->items) all.items.push_back(std::move(item));
      if (res->continue_token.empty()) return all;
      page.continue_token = res->continue_token;
      page.resource_version.clear();  // not allowed together with continue
    }
    // An expired continue token: the server compacted past our snapshot.
    if (IsGone(failed) && attempt == 0 && !page.continue_token.empty()) {
      continue;
    }
    return failed;
  }
}

absl::StatusOr<Json> UpdateWithRetry(KubeClient& c, const Resource& r,
                                     absl::string_view ns,
                                     absl::string_view name,
                                     const std::function<bool(Json&)>& mutate,
                                     bool status, int attempts) {
  absl::Status last = absl::AbortedError("no attempt made");
  for (int i = 0; i < attempts; ++i) {
    absl::StatusOr<Json> obj = c.Get(r, ns, name);
    if (!obj.ok()) return obj.status();
    if (!mutate(*obj)) return obj;
    absl::StatusOr<Json> stored =
        status ? c.UpdateStatus(r, *obj) : c.Update(r, *obj);
    if (stored.ok() || !IsConflict(stored.status())) return stored;
    last = stored.status();
  }
  return absl::AbortedError(absl::StrCat("still conflicting after ", attempts,
                                         " attempts: ", last.message()));
}

}  // namespace daxlease::k8s
