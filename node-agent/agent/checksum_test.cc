// ChunkDigests and FileChecksum agree whatever order the chunks come in (and
// however a chunk is cut into pieces), and a single changed byte changes the
// checksum.
#include "node-agent/agent/checksum.h"

#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace daxlease::agent {
namespace {

TEST(ChecksumTest, ChunksInAnyOrderMatchTheFileReadInOrder) {
  // Two whole chunks and a partial one.
  const uint64_t size = 2 * kChecksumChunk + 12345;
  std::string data(size, '\0');
  for (uint64_t i = 0; i < size; ++i) data[i] = static_cast<char>(i * 131 + 7);
  const std::string path =
      ::testing::TempDir() + "/checksum-" + std::to_string(getpid());
  {
    std::ofstream out(path, std::ios::binary);
    out.write(data.data(), static_cast<std::streamsize>(size));
  }
  auto file = FileChecksum(path, size, nullptr);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_THAT(*file, ::testing::StartsWith("sha256x16m:"));

  ChunkDigests d(size);
  ASSERT_EQ(d.chunks(), 3u);
  for (uint64_t i : {2, 0, 1}) {
    const uint64_t off = i * kChecksumChunk;
    d.Add(i, data.data() + off, std::min(kChecksumChunk, size - off));
  }
  EXPECT_EQ(d.Finish(), *file);

  data[kChecksumChunk + 5] ^= 1;
  ChunkDigests changed(size);
  for (uint64_t i = 0; i < 3; ++i) {
    const uint64_t off = i * kChecksumChunk;
    changed.Add(i, data.data() + off, std::min(kChecksumChunk, size - off));
  }
  EXPECT_NE(changed.Finish(), *file);
  unlink(path.c_str());
}

// A chunk hashed in pieces of any sizes (as the migration target hashes the
// pieces it receives) has the digest of the whole chunk; the hasher starts
// over after Finish.
TEST(ChecksumTest, ChunksHashedInPiecesMatchWholeChunks) {
  const uint64_t size = kChecksumChunk + 4097;
  std::string data(size, '\0');
  for (uint64_t i = 0; i < size; ++i) data[i] = static_cast<char>(i * 31 + 3);
  ChunkDigests whole(size);
  whole.Add(0, data.data(), kChecksumChunk);
  whole.Add(1, data.data() + kChecksumChunk, 4097);
  ChunkDigests pieces(size);
  ChunkHasher h;
  for (uint64_t off = 0; off < kChecksumChunk;) {
    const uint64_t n = std::min<uint64_t>(kChecksumChunk - off,
                                          off == 0 ? 1 : (uint64_t{1} << 20));
    h.Update(data.data() + off, n);
    off += n;
  }
  pieces.Set(0, h.Finish());
  h.Update(data.data() + kChecksumChunk, 4000);
  h.Update(data.data() + kChecksumChunk + 4000, 97);
  pieces.Set(1, h.Finish());
  EXPECT_EQ(pieces.Finish(), whole.Finish());
}

TEST(ChecksumTest, MissingFileIsNotFoundWithThePath) {
  auto sum = FileChecksum("/nonexistent/daxlease-data", 4096, nullptr);
  EXPECT_EQ(sum.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(sum.status().message(), ::testing::HasSubstr("/nonexistent"));
}

}  // namespace
}  // namespace daxlease::agent
