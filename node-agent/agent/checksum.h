// The checksum both ends of a migration compute over a volume's data
// (docs/agent.md, "Migration"): SHA-256 of the file's first `size` bytes,
// read through a mapping of its own, as "sha256:<hex>". Each side reads
// what is on its own media, so a copy that lost or changed a byte on the
// way, in the page cache or on write-back does not match.
#ifndef DAXLEASE_NODE_AGENT_AGENT_CHECKSUM_H_
#define DAXLEASE_NODE_AGENT_AGENT_CHECKSUM_H_

#include <atomic>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace daxlease::agent {

// Cancelled (when `cancel` turns true) between 64 MiB steps; NotFound and
// the other errors of open/mmap with the path.
absl::StatusOr<std::string> FileChecksum(const std::string& path, uint64_t size,
                                         const std::atomic<bool>* cancel);

}  // namespace daxlease::agent

#endif  // DAXLEASE_NODE_AGENT_AGENT_CHECKSUM_H_
