// RestKubeClient: KubeClient over HTTP (an HttpTransport, normally libcurl).
#ifndef DAXLEASE_LIB_K8S_REST_CLIENT_H_
#define DAXLEASE_LIB_K8S_REST_CLIENT_H_

#include <memory>

#include "lib/base/clock.h"
#include "lib/k8s/client.h"
#include "lib/k8s/config.h"
#include "lib/k8s/http.h"

namespace daxlease::k8s {

struct RetryPolicy {
  // Attempts for a request answered with 429 or 5xx or failing in transport
  // (connection refused, reset). 1 = no retry. A Create with
  // metadata.generateName is not idempotent (a second POST makes a second
  // object), so after an ambiguous failure (5xx, transport error) it is not
  // retried and the error is returned: only 429 retries it. Backoff doubles
  // from `initial_backoff` up to `max_backoff`; a Retry-After header (seconds)
  // is honoured up to `max_backoff`. Sleeps go through the client's Clock.
  int max_attempts = 5;
  absl::Duration initial_backoff = absl::Milliseconds(100);
  absl::Duration max_backoff = absl::Seconds(5);
  // Timeout of each non-watch request (an attempt that times out counts as
  // a failed attempt: DeadlineExceeded, not retried). A leader elector's
  // client wants this well below its renew deadline, with max_attempts 1.
  absl::Duration request_timeout = absl::Seconds(30);
};

class RestKubeClient final : public KubeClient {
 public:
  // `clock` must outlive the client.
  RestKubeClient(std::unique_ptr<HttpTransport> transport, base::Clock& clock,
                 RetryPolicy retry = {});

  // Convenience: libcurl transport for `config`, the real clock.
  static absl::StatusOr<std::unique_ptr<RestKubeClient>> Create(
      const KubeConfig& config, RetryPolicy retry = {});

  absl::StatusOr<Json> Get(const Resource& r, absl::string_view ns,
                           absl::string_view name) override;
  absl::StatusOr<ListResult> List(const Resource& r, absl::string_view ns,
                                  const ListOptions& opts) override;
  absl::StatusOr<Json> Create(const Resource& r, const Json& obj) override;
  absl::StatusOr<Json> Update(const Resource& r, const Json& obj) override;
  absl::StatusOr<Json> UpdateStatus(const Resource& r,
                                    const Json& obj) override;
  absl::StatusOr<Json> Patch(const Resource& r, absl::string_view ns,
                             absl::string_view name, PatchType type,
                             const Json& patch,
                             absl::string_view subresource = "") override;
  absl::Status Delete(const Resource& r, absl::string_view ns,
                      absl::string_view name,
                      absl::string_view resource_version = "") override;
  absl::Status Watch(const Resource& r, absl::string_view ns,
                     const WatchOptions& opts, const WatchHandler& handler,
                     WatchCanceller* cancel = nullptr) override;

 private:
  // `idempotent` false: a request that may have been carried out when it
  // failed (5xx, a transport error) is not sent again; only 429 (the server
  // refused it unprocessed) is retried.
  absl::StatusOr<Json> Call(HttpRequest req, bool idempotent = true);
  absl::StatusOr<Json> Put(const Resource& r, const Json& obj,
                           absl::string_view subresource);

  std::unique_ptr<HttpTransport> transport_;
  base::Clock& clock_;
  RetryPolicy retry_;
};

}  // namespace daxlease::k8s

#endif  // DAXLEASE_LIB_K8S_REST_CLIENT_H_
