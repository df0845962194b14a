// The only file of daxlease that includes <curl/curl.h>.
#include <curl/curl.h>

#include <cerrno>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "lib/base/status.h"
#include "lib/k8s/http.h"

namespace daxlease::k8s {
namespace {

void GlobalInit() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

struct EasyDeleter {
  void operator()(CURL* c) const { curl_easy_cleanup(c); }
};
using Easy = std::unique_ptr<CURL, EasyDeleter>;

struct SlistDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};
using Slist = std::unique_ptr<curl_slist, SlistDeleter>;

struct MultiDeleter {
  void operator()(CURLM* m) const { curl_multi_cleanup(m); }
};
using Multi = std::unique_ptr<CURLM, MultiDeleter>;

// Per-transfer state shared with the callbacks.
struct Transfer {
  CURL* easy = nullptr;
  HttpResponse* resp = nullptr;
  const std::function<bool(absl::string_view)>* on_data = nullptr;
  bool stopped_by_handler = false;
};

size_t WriteCb(char* ptr, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  size_t len = size * n;
  long code = 0;
  curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &code);
  if (t->on_data != nullptr && code >= 200 && code < 300) {
    if (!(*t->on_data)(absl::string_view(ptr, len))) {
      t->stopped_by_handler = true;
      return 0;  // aborts the transfer (CURLE_WRITE_ERROR)
    }
    return len;
  }
  t->resp->body.append(ptr, len);
  return len;
}

size_t HeaderCb(char* ptr, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  absl::string_view line(ptr, size * n);
  if (absl::StartsWithIgnoreCase(line, "retry-after:")) {
    t->resp->retry_after =
        std::string(absl::StripAsciiWhitespace(line.substr(12)));
  }
  return size * n;
}

class CurlTransport final : public HttpTransport {
 public:
  explicit CurlTransport(KubeConfig config) : config_(std::move(config)) {}

  absl::StatusOr<HttpResponse> Do(const HttpRequest& req) override {
    Easy easy = TakeHandle();
    if (easy == nullptr) return absl::InternalError("curl_easy_init failed");
    HttpResponse resp;
    Transfer t{easy.get(), &resp, nullptr};
    Slist headers;
    RETURN_IF_ERROR(Setup(easy.get(), req, &t, &headers));
    char err[CURL_ERROR_SIZE] = {0};
    curl_easy_setopt(easy.get(), CURLOPT_ERRORBUFFER, err);
    CURLcode rc = curl_easy_perform(easy.get());
    curl_easy_setopt(easy.get(), CURLOPT_ERRORBUFFER, nullptr);
    if (rc != CURLE_OK) return CurlError(rc, err, req);
    curl_easy_getinfo(easy.get(), CURLINFO_RESPONSE_CODE, &resp.code);
    ReturnHandle(std::move(easy));
    return resp;
  }

  absl::StatusOr<HttpResponse> Stream(
      const HttpRequest& req,
      const std::function<bool(absl::string_view)>& on_data,
      const std::atomic<bool>* cancel) override {
    Easy easy(curl_easy_init());
    Multi multi(curl_multi_init());
    if (easy == nullptr || multi == nullptr) {
      return absl::InternalError("curl init failed");
    }
    HttpResponse resp;
    Transfer t{easy.get(), &resp, &on_data};
    Slist headers;
    RETURN_IF_ERROR(Setup(easy.get(), req, &t, &headers));
    char err[CURL_ERROR_SIZE] = {0};
    curl_easy_setopt(easy.get(), CURLOPT_ERRORBUFFER, err);
    curl_multi_add_handle(multi.get(), easy.get());
    CURLcode rc = CURLE_OK;
    bool cancelled = false;
    while (true) {
      int running = 0;
      CURLMcode mc = curl_multi_perform(multi.get(), &running);
      if (mc != CURLM_OK) {
        curl_multi_remove_handle(multi.get(), easy.get());
        return absl::UnavailableError(
            absl::StrCat("curl_multi_perform: ", curl_multi_strerror(mc)));
      }
      int queued = 0;
      while (CURLMsg* msg = curl_multi_info_read(multi.get(), &queued)) {
        if (msg->msg == CURLMSG_DONE) rc = msg->data.result;
      }
      if (running == 0) break;
      if (cancel != nullptr && cancel->load()) {
        cancelled = true;
        break;
      }
      curl_multi_poll(multi.get(), nullptr, 0, 100, nullptr);
    }
    curl_multi_remove_handle(multi.get(), easy.get());
    if (cancelled) return absl::CancelledError("watch cancelled");
    curl_easy_getinfo(easy.get(), CURLINFO_RESPONSE_CODE, &resp.code);
    if (rc == CURLE_WRITE_ERROR && t.stopped_by_handler) return resp;
    if (rc != CURLE_OK) return CurlError(rc, err, req);
    return resp;
  }

 private:
  Easy TakeHandle() {
    {
      absl::MutexLock l(&mu_);
      if (!idle_.empty()) {
        Easy e = std::move(idle_.back());
        idle_.pop_back();
        curl_easy_reset(e.get());  // keeps live connections and sessions
        return e;
      }
    }
    return Easy(curl_easy_init());
  }

  void ReturnHandle(Easy e) {
    absl::MutexLock l(&mu_);
    if (idle_.size() < 16) idle_.push_back(std::move(e));
  }

  absl::Status Setup(CURL* c, const HttpRequest& req, Transfer* t,
                     Slist* headers) {
    std::string url = config_.server + req.path;
    curl_easy_setopt(c, CURLOPT_URL, url.c_str());  // libcurl copies strings
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS,
                     static_cast<long>(absl::ToInt64Milliseconds(req.timeout)));
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, &WriteCb);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, t);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, &HeaderCb);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, t);
    if (req.method == "GET") {
      curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    } else {
      curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, req.method.c_str());
    }
    if (!req.body.empty() || req.method == "POST" || req.method == "PUT" ||
        req.method == "PATCH") {
      curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE,
                       static_cast<curl_off_t>(req.body.size()));
      curl_easy_setopt(c, CURLOPT_COPYPOSTFIELDS, req.body.c_str());
      curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, req.method.c_str());
    }
    // TLS. Blobs are copied by libcurl (CURL_BLOB_COPY).
    if (!config_.ca_pem.empty()) {
      curl_blob ca{const_cast<char*>(config_.ca_pem.data()),
                   config_.ca_pem.size(), CURL_BLOB_COPY};
      curl_easy_setopt(c, CURLOPT_CAINFO_BLOB, &ca);
    }
    if (!config_.client_cert_pem.empty()) {
      curl_blob cert{const_cast<char*>(config_.client_cert_pem.data()),
                     config_.client_cert_pem.size(), CURL_BLOB_COPY};
      curl_blob key{const_cast<char*>(config_.client_key_pem.data()),
                    config_.client_key_pem.size(), CURL_BLOB_COPY};
      curl_easy_setopt(c, CURLOPT_SSLCERTTYPE, "PEM");
      curl_easy_setopt(c, CURLOPT_SSLCERT_BLOB, &cert);
      curl_easy_setopt(c, CURLOPT_SSLKEYTYPE, "PEM");
      curl_easy_setopt(c, CURLOPT_SSLKEY_BLOB, &key);
    }
    if (config_.insecure_skip_tls_verify) {
      curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
      curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    curl_slist* h = nullptr;
    h = curl_slist_append(h, "Accept: application/json");
    if (!req.content_type.empty()) {
      h = curl_slist_append(
          h, absl::StrCat("Content-Type: ", req.content_type).c_str());
    }
    std::string token = config_.token;
    if (!config_.token_file.empty()) {
      std::ifstream in(config_.token_file);
      if (!in) {
        curl_slist_free_all(h);
        return base::ErrnoStatus("open", config_.token_file, errno);
      }
      std::ostringstream s;
      s << in.rdbuf();
      token = std::string(absl::StripAsciiWhitespace(s.str()));
    }
    if (!token.empty()) {
      h = curl_slist_append(
          h, absl::StrCat("Authorization: Bearer ", token).c_str());
    }
    h = curl_slist_append(h, "User-Agent: daxlease-k8s/0.1");
    headers->reset(h);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    return absl::OkStatus();
  }

  static absl::Status CurlError(CURLcode rc, const char* err,
                                const HttpRequest& req) {
    std::string msg =
        absl::StrCat(req.method, " ", req.path, ": ", curl_easy_strerror(rc));
    if (err[0] != '\0') absl::StrAppend(&msg, " (", err, ")");
    if (rc == CURLE_OPERATION_TIMEDOUT) {
      return absl::DeadlineExceededError(msg);
    }
    return absl::UnavailableError(msg);
  }

  const KubeConfig config_;
  absl::Mutex mu_;
  std::vector<Easy> idle_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

absl::StatusOr<std::unique_ptr<HttpTransport>> NewCurlTransport(
    const KubeConfig& config) {
  if (config.server.empty()) {
    return absl::InvalidArgumentError("kube config has no server");
  }
  GlobalInit();
  return std::make_unique<CurlTransport>(config);
}

}  // namespace daxlease::k8s
