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

absl::StatusOr<std::string> FileChunkDigests(const std::string& path,
                                             uint64_t size,
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
  std::string out;
  absl::Status st;
  for (uint64_t off = 0; off < size; off += kChecksumChunk) {
    if (cancel != nullptr && cancel->load()) {
      st = absl::CancelledError("checksum cancelled");
      break;
    }
    auto d = HashChunks(base, size, off, std::min(kChecksumChunk, size - off));
    if (!d.ok()) {
      st = d.status();
      break;
    }
    out += *d;
  }
  if (p != nullptr) munmap(p, size);
  if (!st.ok()) return st;
  return out;
}

absl::StatusOr<std::string> ChecksumOfDigests(uint64_t size,
                                              absl::string_view digests) {
  ChunkDigests sum(size);
  if (digests.size() != sum.chunks() * sizeof(ChunkDigest)) {
    return absl::InvalidArgumentError(
        absl::StrCat(digests.size(), " bytes of digests for ", size,
                     " bytes of data (", sum.chunks(), " chunks)"));
  }
  for (uint64_t i = 0; i < sum.chunks(); ++i) {
    ChunkDigest d;
    std::memcpy(d.data(), digests.data() + i * d.size(), d.size());
    sum.Set(i, d);
  }
  return sum.Finish();
}

absl::StatusOr<std::string> FileChecksum(const std::string& path, uint64_t size,
                                         const std::atomic<bool>* cancel) {
  ASSIGN_OR_RETURN(std::string digests, FileChunkDigests(path, size, cancel));
  return ChecksumOfDigests(size, digests);
}

absl::StatusOr<std::string> FrozenDigests::Get(const Compute& compute,
                                               bool* computed) {
  std::unique_lock<std::mutex> l(mu_);
  cv_.wait(l, [&] { return !computing_; });
  if (computed != nullptr) *computed = !digests_.has_value();
  if (digests_.has_value()) return *digests_;
  computing_ = true;
  l.unlock();
  absl::StatusOr<std::string> d = compute();
  l.lock();
  computing_ = false;
  if (d.ok()) digests_ = *d;
  cv_.notify_all();
  return d;
}

}  // namespace daxlease::agent
