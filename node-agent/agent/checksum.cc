// FileChecksum with OpenSSL's SHA-256 (included here only).
#include "node-agent/agent/checksum.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <memory>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "lib/base/status.h"

namespace daxlease::agent {

absl::StatusOr<std::string> FileChecksum(const std::string& path, uint64_t size,
                                         const std::atomic<bool>* cancel) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return base::ErrnoStatus("open", path, errno);
  void* p =
      size == 0 ? nullptr : mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  const int err = errno;
  close(fd);
  if (p == MAP_FAILED) return base::ErrnoStatus("mmap", path, err);
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(),
                                                         EVP_MD_CTX_free);
  EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr);
  constexpr uint64_t kStep = uint64_t{64} << 20;
  const char* base = static_cast<const char*>(p);
  absl::Status st;
  for (uint64_t off = 0; off < size; off += kStep) {
    if (cancel != nullptr && cancel->load()) {
      st = absl::CancelledError("checksum cancelled");
      break;
    }
    const uint64_t n = std::min(kStep, size - off);
    madvise(const_cast<char*>(base + off), n, MADV_SEQUENTIAL);
    EVP_DigestUpdate(ctx.get(), base + off, n);
  }
  if (p != nullptr) munmap(p, size);
  if (!st.ok()) return st;
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx.get(), md, &len);
  return absl::StrCat("sha256:", absl::BytesToHexString(absl::string_view(
                                     reinterpret_cast<char*>(md), len)));
}

}  // namespace daxlease::agent
