// ChunkDigests and FileChecksum with xxHash's XXH3-128 (included here only,
// inlined: the agent needs the header at build time, no library at run
// time).
#include "node-agent/agent/checksum.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "lib/base/status.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace daxlease::agent {
namespace {

static_assert(sizeof(XXH128_canonical_t) == sizeof(ChunkDigest));

ChunkDigest Canonical(XXH128_hash_t h) {
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, h);
  ChunkDigest d;
  std::memcpy(d.data(), c.digest, d.size());
  return d;
}

}  // namespace

ChunkDigests::ChunkDigests(uint64_t size)
    : digests_((size + kChecksumChunk - 1) / kChecksumChunk) {}

void ChunkDigests::Add(uint64_t index, const char* data, uint64_t n) {
  digests_.at(index) = Canonical(XXH3_128bits(data, n));
}

void ChunkDigests::Set(uint64_t index, const ChunkDigest& digest) {
  digests_.at(index) = digest;
}

std::string ChunkDigests::Finish() const {
  const ChunkDigest sum = Canonical(
      XXH3_128bits(digests_.data(), digests_.size() * sizeof(ChunkDigest)));
  return absl::StrCat(
      kChecksumName, ":",
      absl::BytesToHexString(absl::string_view(
          reinterpret_cast<const char*>(sum.data()), sum.size())));
}

struct ChunkHasher::State {
  XXH3_state_t* st = XXH3_createState();
  ~State() { XXH3_freeState(st); }
};

ChunkHasher::ChunkHasher() : state_(std::make_unique<State>()) {
  XXH3_128bits_reset(state_->st);
}

ChunkHasher::~ChunkHasher() = default;

void ChunkHasher::Update(const char* data, uint64_t n) {
  XXH3_128bits_update(state_->st, data, n);
}

ChunkDigest ChunkHasher::Finish() {
  const ChunkDigest d = Canonical(XXH3_128bits_digest(state_->st));
  XXH3_128bits_reset(state_->st);
  return d;
}

absl::StatusOr<std::string> HashChunks(const char* base, uint64_t size,
                                       uint64_t offset, uint64_t len) {
  if (offset % kChecksumChunk != 0 || offset > size || len > size - offset) {
    return absl::InvalidArgumentError(absl::StrCat(
        "digests of [", offset, ", +", len, ") of ", size,
        " bytes: not at a chunk of ", kChecksumChunk, " or past the end"));
  }
  std::string out;
  out.reserve((len + kChecksumChunk - 1) / kChecksumChunk *
              sizeof(ChunkDigest));
  for (uint64_t off = offset; off < offset + len; off += kChecksumChunk) {
    const ChunkDigest d = Canonical(
        XXH3_128bits(base + off, std::min(kChecksumChunk, offset + len - off)));
    out.append(reinterpret_cast<const char*>(d.data()), d.size());
  }
  return out;
}

std::vector<uint64_t> ChunksToFetch(
    const std::vector<std::optional<ChunkDigest>>& have,
    absl::string_view source) {
  std::vector<uint64_t> fetch;
  const bool comparable = source.size() == have.size() * sizeof(ChunkDigest);
  for (uint64_t i = 0; i < have.size(); ++i) {
    if (!comparable || !have[i].has_value() ||
        std::memcmp(have[i]->data(), source.data() + i * sizeof(ChunkDigest),
                    sizeof(ChunkDigest)) != 0) {
      fetch.push_back(i);
    }
  }
  return fetch;
}

absl::StatusOr<std::string> FileChecksum(const std::string& path, uint64_t size,
                                         const std::atomic<bool>* cancel) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return base::ErrnoStatus("open", path, errno);
  void* p =
      size == 0 ? nullptr : mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  const int err = errno;
  close(fd);
  if (p == MAP_FAILED) return base::ErrnoStatus("mmap", path, err);
  const char* base = static_cast<const char*>(p);
  if (size > 0) madvise(p, size, MADV_SEQUENTIAL);
  ChunkDigests digests(size);
  absl::Status st;
  for (uint64_t i = 0; i < digests.chunks(); ++i) {
    if (cancel != nullptr && cancel->load()) {
      st = absl::CancelledError("checksum cancelled");
      break;
    }
    const uint64_t off = i * kChecksumChunk;
    digests.Add(i, base + off, std::min(kChecksumChunk, size - off));
  }
  if (p != nullptr) munmap(p, size);
  if (!st.ok()) return st;
  return digests.Finish();
}

}  // namespace daxlease::agent
