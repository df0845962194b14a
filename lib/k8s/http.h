// The HTTP boundary of the Kubernetes client. CurlTransport (curl_transport.cc,
// the only file that includes <curl/curl.h>) talks TLS to the API server;
// tests of RestKubeClient substitute a scripted transport.
#ifndef DAXLEASE_LIB_K8S_HTTP_H_
#define DAXLEASE_LIB_K8S_HTTP_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "lib/k8s/config.h"

namespace daxlease::k8s {

struct HttpRequest {
  std::string method;  // GET, POST, PUT, PATCH, DELETE
  std::string path;    // "/apis/...?...", appended to the configured server
  std::string content_type;  // for a body
  std::string body;
  // Whole-request timeout; 0 = none (watch streams: the server ends them).
  absl::Duration timeout = absl::Seconds(30);
};

struct HttpResponse {
  long code = 0;  // HTTP status
  std::string body;
  std::string retry_after;  // Retry-After header, if any
};

class HttpTransport {
 public:
  virtual ~HttpTransport() = default;

  // One request/response. A transport-level failure (connect, TLS, timeout)
  // is Unavailable (DeadlineExceeded for a timeout); any HTTP response,
  // whatever its code, is returned as a value. Thread-safe.
  virtual absl::StatusOr<HttpResponse> Do(const HttpRequest& req) = 0;

  // A streaming GET: `on_data` receives the body in arbitrary chunks as it
  // arrives while the code is 2xx (return false to stop). A non-2xx response
  // is returned whole, without calling on_data. Returns when the server ends
  // the stream, on_data returns false, or `*cancel` becomes true (polled
  // about every 100 ms) -> Cancelled. Thread-safe.
  virtual absl::StatusOr<HttpResponse> Stream(
      const HttpRequest& req,
      const std::function<bool(absl::string_view)>& on_data,
      const std::atomic<bool>* cancel) = 0;
};

// libcurl with the config's CA, client certificate/key, bearer token (or
// token file, re-read per request). The PEM material stays in memory.
absl::StatusOr<std::unique_ptr<HttpTransport>> NewCurlTransport(
    const KubeConfig& config);

}  // namespace daxlease::k8s

#endif  // DAXLEASE_LIB_K8S_HTTP_H_
