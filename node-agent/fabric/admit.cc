#include "node-agent/fabric/admit.h"

namespace daxlease::fabric {

HelloRequest FromHello(const agent::v1::FabricHello& hello) {
  return HelloRequest{GrantKey{hello.volume_id(), hello.lease_uid(),
                               hello.holder_node(), hello.epoch()},
                      hello.access() == agent::v1::READ_WRITE
                          ? Access::kReadWrite
                          : Access::kReadOnly,
                      hello.credential()};
}

}  // namespace daxlease::fabric
