// ChunkDigests and FileChecksum with OpenSSL's SHA-256 (included here only).
#include "node-agent/agent/checksum.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "lib/base/status.h"

namespace daxlease::agent {

static_assert(sizeof(std::array<unsigned char, SHA256_DIGEST_LENGTH>) ==
              SHA256_DIGEST_LENGTH);

ChunkDigests::ChunkDigests(uint64_t size)
    : digests_((size + kChecksumChunk - 1) / kChecksumChunk) {}

void ChunkDigests::Add(uint64_t index, const char* data, uint64_t n) {
  SHA256(reinterpret_cast<const unsigned char*>(data), n,
         digests_.at(index).data());
}

void ChunkDigests::Set(uint64_t index,
                       const std::array<unsigned char, 32>& digest) {
  digests_.at(index) = digest;
}

struct ChunkHasher::State {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  ~State() { EVP_MD_CTX_free(ctx); }
};

ChunkHasher::ChunkHasher() : state_(std::make_unique<State>()) {
  EVP_DigestInit_ex(state_->ctx, EVP_sha256(), nullptr);
}

ChunkHasher::~ChunkHasher() = default;

void ChunkHasher::Update(const char* data, uint64_t n) {
  EVP_DigestUpdate(state_->ctx, data, n);
}

std::array<unsigned char, 32> ChunkHasher::Finish() {
  std::array<unsigned char, 32> md{};
  unsigned int len = 0;
  EVP_DigestFinal_ex(state_->ctx, md.data(), &len);
  EVP_DigestInit_ex(state_->ctx, EVP_sha256(), nullptr);
  return md;
}

std::string ChunkDigests::Finish() const {
  unsigned char md[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(digests_.data()),
         digests_.size() * SHA256_DIGEST_LENGTH, md);
  return absl::StrCat("sha256x16m:",
                      absl::BytesToHexString(absl::string_view(
                          reinterpret_cast<char*>(md), sizeof(md))));
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
