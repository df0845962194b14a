// FakeNodeMedia: NodeMedia in memory, for the agent's tests. Create makes a
// regular file of the asked size under a directory (what the agent maps as
// the "device"); Free removes it. A test may make Free fail (a device still
// in use, a plugin gone) and counts the calls.
#ifndef DAXLEASE_NODE_AGENT_AGENT_FAKE_NODE_MEDIA_H_
#define DAXLEASE_NODE_AGENT_AGENT_FAKE_NODE_MEDIA_H_

#include <map>
#include <mutex>
#include <string>

#include "node-agent/agent/node_media.h"

namespace daxlease::agent {

class FakeNodeMedia : public NodeMedia {
 public:
  // Media files go under `dir` (which must exist).
  explicit FakeNodeMedia(std::string dir) : dir_(std::move(dir)) {}

  absl::StatusOr<Media> Create(const std::string& volume,
                               ::daxlease::agent::v1::VolumeMode mode,
                               uint64_t size_bytes) override;
  absl::Status Free(const std::string& volume,
                    const std::string& owner_node) override;

  // The next Free (Create) calls answer `st` (OK: they work again).
  void SetFreeError(absl::Status st);
  void SetCreateError(absl::Status st);
  // Volumes with media now (by volume: the device path).
  std::map<std::string, std::string> Volumes() const;
  int free_calls() const;
  int create_calls() const;

 private:
  const std::string dir_;
  mutable std::mutex mu_;
  std::map<std::string, Media> media_;
  absl::Status free_error_;
  absl::Status create_error_;
  int free_calls_ = 0;
  int create_calls_ = 0;
};

}  // namespace daxlease::agent

#endif  // DAXLEASE_NODE_AGENT_AGENT_FAKE_NODE_MEDIA_H_
