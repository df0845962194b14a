// The checksum both ends of a migration compute over a volume's data
// (docs/agent.md, "Migration"): the data in chunks of kChecksumChunk bytes,
// XXH3-128 of each, and XXH3-128 of those digests in order (each in
// xxHash's canonical, big-endian form), written "xxh3x16m:<hex>". Chunked so
// that the target hashes each chunk as it lands, while it is in the caches
// (no second pass over the volume after the copy), and chunks may be hashed
// in any order. The source hashes what is in its own mapping of its own
// media, the target the bytes it received and writes to its media, so a
// copy that lost or changed a byte on the way does not match.
//
// XXH3 is not a cryptographic hash: it detects accidental corruption (a
// lost, duplicated, misplaced or flipped piece; 2^-128 odds of missing one),
// not a forgery. No adversary chooses the bytes on the way: the fabric
// authenticates who reads (an HMAC per volume, grant, node and epoch), and
// a party that could write the media could as well write the data before
// it is hashed. SHA-256 (the former "sha256x16m") cost 10x the CPU, which on
// a loaded host was the copy's limit. The name changes with the algorithm,
// so two agents that hash differently never agree on a checksum: the
// migration fails (ChecksumAlgorithmMismatch) and stays with its source.
#ifndef DAXLEASE_NODE_AGENT_AGENT_CHECKSUM_H_
#define DAXLEASE_NODE_AGENT_AGENT_CHECKSUM_H_

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace daxlease::agent {

inline constexpr uint64_t kChecksumChunk = uint64_t{16} << 20;
// The checksum's name, before the ':' of every checksum.
inline constexpr char kChecksumName[] = "xxh3x16m";

// One chunk's digest: XXH3-128 in canonical (big-endian) byte order.
using ChunkDigest = std::array<unsigned char, 16>;

// The digests of a volume's chunks, filled in any order.
// Thread safety: Add for distinct chunks may run concurrently; Finish after
// every Add returned.
class ChunkDigests {
 public:
  explicit ChunkDigests(uint64_t size);

  uint64_t chunks() const { return digests_.size(); }
  // Hashes chunk `index`: the `n` bytes at `data` (kChecksumChunk, fewer
  // for the last chunk).
  void Add(uint64_t index, const char* data, uint64_t n);
  // Chunk `index`'s digest, hashed piece by piece (ChunkHasher).
  void Set(uint64_t index, const ChunkDigest& digest);
  const ChunkDigest& Get(uint64_t index) const { return digests_.at(index); }
  // "xxh3x16m:<hex>". REQUIRES: every chunk added.
  std::string Finish() const;

 private:
  std::vector<ChunkDigest> digests_;
};

// The digest of one chunk fed in pieces, in order, so that each piece is
// hashed while it is in the caches (the target: as it arrives). Not
// thread-safe; one per chunk being copied.
class ChunkHasher {
 public:
  ChunkHasher();
  ~ChunkHasher();
  ChunkHasher(const ChunkHasher&) = delete;
  ChunkHasher& operator=(const ChunkHasher&) = delete;

  void Update(const char* data, uint64_t n);
  // The digest of every piece given since the last Finish (or since made);
  // the hasher then starts over.
  ChunkDigest Finish();

 private:
  struct State;  // xxHash's streaming state, in checksum.cc only
  std::unique_ptr<State> state_;
};

// The digests of the chunks of [offset, offset + len) of the `size` bytes at
// `base`, one ChunkDigest after another (what a migration's source sends
// its target over the fabric: RemoteRegion::Digests). InvalidArgument when
// `offset` is not at a chunk or the range leaves the data.
absl::StatusOr<std::string> HashChunks(const char* base, uint64_t size,
                                       uint64_t offset, uint64_t len);

// The chunks a migration's target reads again inside the pause: those whose
// digest from its pre-copy (`have`, one per chunk; nullopt: not known, e.g.
// cut short) is unknown or differs from the source's (`source`: HashChunks
// of the whole volume). Every chunk when `source` does not hold one digest
// per chunk. In increasing order.
std::vector<uint64_t> ChunksToFetch(
    const std::vector<std::optional<ChunkDigest>>& have,
    absl::string_view source);

// The checksum of the file's first `size` bytes, read through a mapping of
// its own. Cancelled (when `cancel` turns true) between chunks; NotFound and
// the other errors of open/mmap with the path.
absl::StatusOr<std::string> FileChecksum(const std::string& path, uint64_t size,
                                         const std::atomic<bool>* cancel);

// FileChecksum's chunk digests (HashChunks of the whole file's first `size`
// bytes), with its errors.
absl::StatusOr<std::string> FileChunkDigests(const std::string& path,
                                             uint64_t size,
                                             const std::atomic<bool>* cancel);

// The checksum of `size` bytes whose chunk digests are `digests` (HashChunks
// of the whole): InvalidArgument when it does not hold one per chunk.
absl::StatusOr<std::string> ChecksumOfDigests(uint64_t size,
                                              absl::string_view digests);

// The chunk digests of a volume's data while nothing can change it (a
// migration's source inside the pause), hashed once for everyone who asks
// then: the source's own checksum and the target's DIGESTS both need them,
// and the pause waits for both. Whoever asks first computes; the others
// wait for that and take the same digests. A failed computation is not
// kept (the next asker computes again). Thread-safe.
class FrozenDigests {
 public:
  using Compute = std::function<absl::StatusOr<std::string>()>;
  // `computed`, when given: whether this call ran `compute`.
  absl::StatusOr<std::string> Get(const Compute& compute,
                                  bool* computed = nullptr);

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool computing_ = false;
  std::optional<std::string> digests_;
};

}  // namespace daxlease::agent

#endif  // DAXLEASE_NODE_AGENT_AGENT_CHECKSUM_H_
