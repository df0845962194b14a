// KeepingConnector: a FabricConnector (AnyConnector: tcp or verbs by the
// grant's endpoint) that keeps a reference to the last region it handed
// out, so a test can issue an RDMA op through a holder's own connection
// after the library stopped using it (a fenced holder's late write). For
// tests only.
#ifndef DAXLEASE_NODE_AGENT_TESTING_KEEPING_CONNECTOR_H_
#define DAXLEASE_NODE_AGENT_TESTING_KEEPING_CONNECTOR_H_

#include <memory>
#include <mutex>

#include "absl/status/statusor.h"
#include "node-agent/fabric/fabric.h"
#include "node-agent/fabric/verbs_fabric.h"

namespace daxlease::agent::testing {

class KeepingConnector : public fabric::FabricConnector {
 public:
  absl::StatusOr<std::unique_ptr<fabric::RemoteRegion>> Connect(
      const fabric::GrantInfo& grant) override;
  // The region of the last successful Connect; null before one.
  std::shared_ptr<fabric::RemoteRegion> last();

 private:
  fabric::AnyConnector inner_;
  std::mutex mu_;
  std::shared_ptr<fabric::RemoteRegion> last_;
};

}  // namespace daxlease::agent::testing

#endif  // DAXLEASE_NODE_AGENT_TESTING_KEEPING_CONNECTOR_H_
