// NodeMedia: the media of a volume that only this node's CSI plugin can
// make, free and record (docs/agent.md, "Migration media"). A migrated
// fsdax volume's data is a file the agent makes itself under --media-dir;
// a devdax volume's data is a whole device (an ndctl namespace), which
// only the plugin's backend allocates and frees, and which the plugin
// keeps a record of (its per-volume state). The agent asks it through this
// interface: the source's, after a verified switch, to free the old
// namespace and drop its record; the target's, to make one for the copy.
//
// Implementations: GrpcNodeMedia (the plugin's NodeMedia service on its
// socket), FakeNodeMedia (tests). Every method is idempotent and may be
// called from any thread.
#ifndef DAXLEASE_NODE_AGENT_AGENT_NODE_MEDIA_H_
#define DAXLEASE_NODE_AGENT_AGENT_NODE_MEDIA_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "proto/agent.pb.h"

namespace daxlease::agent {

class NodeMedia {
 public:
  struct Media {
    std::string device;       // "/dev/dax0.1" (what the agent maps)
    uint64_t size_bytes = 0;  // usable bytes, at least what was asked
  };
  virtual ~NodeMedia() = default;

  // Makes media for `volume` of `mode` holding at least `size_bytes`, and
  // the plugin records the volume as one of its own (no stage). Creating
  // it again returns the same media. ResourceExhausted: no room on this
  // node; InvalidArgument: the backend cannot make that mode.
  virtual absl::StatusOr<Media> Create(const std::string& volume,
                                       ::daxlease::agent::v1::VolumeMode mode,
                                       uint64_t size_bytes) = 0;

  // Frees the media of `volume` and the plugin's record of it (a stage or
  // publish the CO made stays, as for a volume of another node, so its
  // unstage and unpublish still work). OK when there is none.
  // FailedPrecondition while the device is still in use (mapped, open);
  // Unavailable when the plugin cannot be reached. The caller retries.
  // `owner_node`: the node that owns the volume now ("": unknown).
  virtual absl::Status Free(const std::string& volume,
                            const std::string& owner_node) = 0;
};

}  // namespace daxlease::agent

#endif  // DAXLEASE_NODE_AGENT_AGENT_NODE_MEDIA_H_
