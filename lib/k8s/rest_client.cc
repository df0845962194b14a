#include "lib/k8s/rest_client.h"

#include <algorithm>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "lib/base/log.h"
#include "lib/base/status.h"

namespace daxlease::k8s {
namespace {

std::string QueryEscape(absl::string_view s) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (absl::ascii_isalnum(c) || c == '-' || c == '_' || c == '.' ||
        c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

void AddParam(std::string* path, absl::string_view key,
              absl::string_view value) {
  if (value.empty()) return;
  absl::StrAppend(path, path->find('?') == std::string::npos ? "?" : "&", key,
                  "=", QueryEscape(value));
}

absl::Status RequireName(const Json& obj) {
  if (NameOf(obj).empty()) {
    return absl::InvalidArgumentError("object has no metadata.name");
  }
  return absl::OkStatus();
}

absl::StatusOr<WatchEvent::Type> ParseEventType(absl::string_view t) {
  if (t == "ADDED") return WatchEvent::Type::kAdded;
  if (t == "MODIFIED") return WatchEvent::Type::kModified;
  if (t == "DELETED") return WatchEvent::Type::kDeleted;
  if (t == "BOOKMARK") return WatchEvent::Type::kBookmark;
  return absl::InternalError(absl::StrCat("unknown watch event type ", t));
}

HttpRequest MakeRequest(std::string method, std::string path,
                        std::string content_type = "", std::string body = "") {
  HttpRequest r;
  r.method = std::move(method);
  r.path = std::move(path);
  r.content_type = std::move(content_type);
  r.body = std::move(body);
  return r;
}

}  // namespace

RestKubeClient::RestKubeClient(std::unique_ptr<HttpTransport> transport,
                               base::Clock& clock, RetryPolicy retry)
    : transport_(std::move(transport)), clock_(clock), retry_(retry) {}

absl::StatusOr<std::unique_ptr<RestKubeClient>> RestKubeClient::Create(
    const KubeConfig& config, RetryPolicy retry) {
  ASSIGN_OR_RETURN(std::unique_ptr<HttpTransport> t, NewCurlTransport(config));
  return std::make_unique<RestKubeClient>(std::move(t), base::RealClock(),
                                          retry);
}

absl::StatusOr<Json> RestKubeClient::Call(HttpRequest req, bool idempotent) {
  req.timeout = retry_.request_timeout;
  absl::Duration backoff = retry_.initial_backoff;
  absl::Status last;
  for (int attempt = 1;; ++attempt) {
    absl::StatusOr<HttpResponse> resp = transport_->Do(req);
    absl::Duration wait = backoff;
    if (resp.ok()) {
      if (resp->code >= 200 && resp->code < 300) {
        if (resp->body.empty()) return Json::object();
        Json j = Json::parse(resp->body, nullptr, false);
        if (j.is_discarded()) {
          return absl::InternalError(absl::StrCat(req.method, " ", req.path,
                                                  ": response is not JSON"));
        }
        return j;
      }
      last = StatusFromHttp(resp->code, resp->body);
      bool retryable = resp->code == 429 || (idempotent && resp->code >= 500);
      if (!retryable) return last;
      int64_t secs = 0;
      if (absl::SimpleAtoi(resp->retry_after, &secs) && secs > 0) {
        wait = std::min(absl::Seconds(secs), retry_.max_backoff);
      }
    } else {
      last = resp.status();
      if (!absl::IsUnavailable(last) || !idempotent) return last;
    }
    if (attempt >= retry_.max_attempts) {
      return base::Annotate(last, absl::StrCat(req.method, " ", req.path, " (",
                                               attempt, " attempts)"));
    }
    base::LogDebug("k8s.retry", {{"method", req.method},
                                 {"path", req.path},
                                 {"attempt", absl::StrCat(attempt)},
                                 {"error", std::string(last.message())}});
    clock_.SleepFor(wait);
    backoff = std::min(backoff * 2, retry_.max_backoff);
  }
}

absl::StatusOr<Json> RestKubeClient::Get(const Resource& r,
                                         absl::string_view ns,
                                         absl::string_view name) {
  return Call(MakeRequest("GET", ResourcePath(r, ns, name)));
}

absl::StatusOr<ListResult> RestKubeClient::List(const Resource& r,
                                                absl::string_view ns,
                                                const ListOptions& opts) {
  std::string path = ResourcePath(r, ns);
  AddParam(&path, "labelSelector", opts.label_selector);
  AddParam(&path, "fieldSelector", opts.field_selector);
  if (opts.limit > 0) AddParam(&path, "limit", absl::StrCat(opts.limit));
  AddParam(&path, "continue", opts.continue_token);
  AddParam(&path, "resourceVersion", opts.resource_version);
  ASSIGN_OR_RETURN(Json list, Call(MakeRequest("GET", path)));
  ListResult out;
  std::string kind = list.value("kind", "");
  if (absl::EndsWith(kind, "List")) kind.resize(kind.size() - 4);
  if (list.contains("metadata") && list["metadata"].is_object()) {
    out.resource_version = list["metadata"].value("resourceVersion", "");
    out.continue_token = list["metadata"].value("continue", "");
  }
  if (list.contains("items") && list["items"].is_array()) {
    for (Json& item : list["items"]) {
      if (!item.contains("apiVersion")) item["apiVersion"] = r.ApiVersion();
      if (!item.contains("kind") && !kind.empty()) item["kind"] = kind;
      out.items.push_back(std::move(item));
    }
  }
  return out;
}

absl::StatusOr<Json> RestKubeClient::Create(const Resource& r,
                                            const Json& obj) {
  if (NameOf(obj).empty() &&
      !(obj.contains("metadata") && obj["metadata"].contains("generateName"))) {
    return absl::InvalidArgumentError(
        "object has neither metadata.name nor metadata.generateName");
  }
  // With a fixed name a repeated POST is refused (AlreadyExists), so it may
  // be retried; with generateName it would make a second object.
  const bool idempotent = !NameOf(obj).empty();
  return Call(MakeRequest("POST", ResourcePath(r, NamespaceOf(obj)),
                          "application/json", obj.dump()),
              idempotent);
}

absl::StatusOr<Json> RestKubeClient::Put(const Resource& r, const Json& obj,
                                         absl::string_view subresource) {
  RETURN_IF_ERROR(RequireName(obj));
  if (ResourceVersionOf(obj).empty()) {
    return absl::InvalidArgumentError(
        "update needs metadata.resourceVersion (read the object first)");
  }
  return Call(MakeRequest(
      "PUT", ResourcePath(r, NamespaceOf(obj), NameOf(obj), subresource),
      "application/json", obj.dump()));
}

absl::StatusOr<Json> RestKubeClient::Update(const Resource& r,
                                            const Json& obj) {
  return Put(r, obj, "");
}

absl::StatusOr<Json> RestKubeClient::UpdateStatus(const Resource& r,
                                                  const Json& obj) {
  return Put(r, obj, "status");
}

absl::StatusOr<Json> RestKubeClient::Patch(const Resource& r,
                                           absl::string_view ns,
                                           absl::string_view name,
                                           PatchType type, const Json& patch,
                                           absl::string_view subresource) {
  const char* ct = type == PatchType::kMerge ? "application/merge-patch+json"
                                             : "application/json-patch+json";
  return Call(
      {"PATCH", ResourcePath(r, ns, name, subresource), ct, patch.dump()});
}

absl::Status RestKubeClient::Delete(const Resource& r, absl::string_view ns,
                                    absl::string_view name,
                                    absl::string_view resource_version) {
  HttpRequest req = MakeRequest("DELETE", ResourcePath(r, ns, name));
  if (!resource_version.empty()) {
    Json opts = {{"kind", "DeleteOptions"},
                 {"apiVersion", "v1"},
                 {"preconditions",
                  {{"resourceVersion", std::string(resource_version)}}}};
    req.content_type = "application/json";
    req.body = opts.dump();
  }
  return Call(std::move(req)).status();
}

absl::Status RestKubeClient::Watch(const Resource& r, absl::string_view ns,
                                   const WatchOptions& opts,
                                   const WatchHandler& handler,
                                   WatchCanceller* cancel) {
  std::string path = ResourcePath(r, ns);
  AddParam(&path, "watch", "1");
  AddParam(&path, "labelSelector", opts.label_selector);
  AddParam(&path, "fieldSelector", opts.field_selector);
  AddParam(&path, "resourceVersion", opts.resource_version);
  if (opts.allow_bookmarks) AddParam(&path, "allowWatchBookmarks", "true");
  if (opts.timeout_seconds > 0) {
    AddParam(&path, "timeoutSeconds", absl::StrCat(opts.timeout_seconds));
  }
  HttpRequest req = MakeRequest("GET", path);
  req.timeout = opts.timeout_seconds > 0
                    ? absl::Seconds(opts.timeout_seconds + 30)
                    : absl::ZeroDuration();

  std::string buffer;
  absl::Status stream_status;  // an ERROR event or a malformed line
  bool stopped = false;
  auto on_data = [&](absl::string_view chunk) -> bool {
    buffer.append(chunk.data(), chunk.size());
    size_t start = 0, nl;
    while ((nl = buffer.find('\n', start)) != std::string::npos) {
      absl::string_view line(buffer.data() + start, nl - start);
      start = nl + 1;
      if (absl::StripAsciiWhitespace(line).empty()) continue;
      Json ev = Json::parse(line, nullptr, false);
      if (!ev.is_object() || !ev.contains("type") || !ev.contains("object")) {
        stream_status = absl::InternalError(
            absl::StrCat("watch ", path, ": malformed event"));
        return false;
      }
      std::string type = ev["type"].get<std::string>();
      if (type == "ERROR") {
        const Json& st = ev["object"];
        stream_status =
            StatusFromApiStatus(st.value("code", 500), st.value("reason", ""),
                                st.value("message", ""));
        return false;
      }
      absl::StatusOr<WatchEvent::Type> t = ParseEventType(type);
      if (!t.ok()) {
        stream_status = t.status();
        return false;
      }
      WatchEvent we{*t, std::move(ev["object"])};
      if (!handler(we)) {
        stopped = true;
        return false;
      }
    }
    buffer.erase(0, start);
    return true;
  };
  absl::StatusOr<HttpResponse> resp = transport_->Stream(
      req, on_data, cancel == nullptr ? nullptr : cancel->flag());
  if (!stream_status.ok()) return stream_status;
  if (stopped) return absl::OkStatus();
  if (!resp.ok()) return resp.status();
  if (resp->code < 200 || resp->code >= 300) {
    return StatusFromHttp(resp->code, resp->body);
  }
  return absl::OkStatus();
}

}  // namespace daxlease::k8s
