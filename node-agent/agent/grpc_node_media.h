// GrpcNodeMedia: NodeMedia through the node's CSI plugin (daxlease-csi's
// NodeMedia service on its CSI socket, proto/media.proto).
#ifndef DAXLEASE_NODE_AGENT_AGENT_GRPC_NODE_MEDIA_H_
#define DAXLEASE_NODE_AGENT_AGENT_GRPC_NODE_MEDIA_H_

#include <memory>
#include <string>

#include "absl/time/time.h"
#include "node-agent/agent/node_media.h"

namespace daxlease::agent {

// `socket`: the plugin's unix socket (absolute path). Each call waits at
// most `timeout` (a free erases the namespace first: give it minutes).
std::unique_ptr<NodeMedia> NewGrpcNodeMedia(const std::string& socket,
                                            absl::Duration timeout);

}  // namespace daxlease::agent

#endif  // DAXLEASE_NODE_AGENT_AGENT_GRPC_NODE_MEDIA_H_
