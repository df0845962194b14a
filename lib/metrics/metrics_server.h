// The /metrics HTTP endpoint of a daxlease daemon: serves one prometheus-cpp
// registry in the text exposition format, from prometheus-cpp's embedded
// server on its own threads. The daemons' main.cc start it from a
// --metrics-address flag; everything else only records into the registry.
#ifndef DAXLEASE_LIB_METRICS_METRICS_SERVER_H_
#define DAXLEASE_LIB_METRICS_METRICS_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "prometheus/registry.h"

namespace prometheus {
class Exposer;
}

namespace daxlease::metrics {

class MetricsServer {
 public:
  // Listens on `address` ("host:port"; port 0 picks a free one) and serves
  // `registry` at /metrics until destroyed. Fails with Unavailable when the
  // address cannot be bound (prometheus-cpp throws; the exception stops here).
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(
      const std::string& address,
      std::shared_ptr<prometheus::Registry> registry);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // The port it listens on (the chosen one when asked for port 0).
  int port() const { return port_; }

 private:
  MetricsServer(std::unique_ptr<prometheus::Exposer> exposer, int port);
  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_;
};

}  // namespace daxlease::metrics

#endif  // DAXLEASE_LIB_METRICS_METRICS_SERVER_H_
