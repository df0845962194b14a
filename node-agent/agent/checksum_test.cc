// ChunkDigests and FileChecksum agree whatever order the chunks come in (and
// however a chunk is cut into pieces), a single changed byte changes the
// checksum, the chunk digest is XXH3-128 (xxHash's own test vectors) and the
// checksum's format is pinned (agents of different builds must agree).
#include "node-agent/agent/checksum.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
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
  EXPECT_THAT(*file, ::testing::StartsWith("xxh3x16m:"));

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

// xxHash's sanity-check input (xxhsum's XSUM_fillTestBuffer).
std::string XxhTestBuffer(size_t len) {
  std::string b(len, '\0');
  uint64_t gen = 2654435761U;
  for (size_t i = 0; i < len; ++i) {
    b[i] = static_cast<char>(gen >> 56);
    gen *= 11400714785074694797ULL;
  }
  return b;
}

std::string Hex(const ChunkDigest& d) {
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(d.data()), d.size()));
}

// A chunk's digest is XXH3-128 (seed 0) in canonical byte order: xxHash's
// published vectors (xxhsum's sanity check, XSUM_XXH128_testdata: high then
// low 64 bits), fed whole and byte by byte.
TEST(ChecksumTest, ChunkDigestIsXxh3With128Bits) {
  struct Vector {
    size_t len;
    const char* hex;
  };
  for (const Vector& v : {
           Vector{0, "99aa06d3014798d86001c324468d497f"},
           Vector{1, "a6cd5e9392000f6ac44bdff4074eecdb"},
           Vector{222, "337e09641b948717f1aebd597cec6b3a"},
           Vector{2048, "f736557fd47073a5dd59e2c3a5f038e0"},
           Vector{2367, "e89c0f6ff369b427cb37aeb9e5d361ed"},
       }) {
    const std::string data = XxhTestBuffer(v.len);
    ChunkHasher whole;
    whole.Update(data.data(), data.size());
    EXPECT_EQ(Hex(whole.Finish()), v.hex) << v.len;
    ChunkHasher bytes;
    for (char c : data) bytes.Update(&c, 1);
    EXPECT_EQ(Hex(bytes.Finish()), v.hex) << v.len;
  }
  ChunkHasher abc;
  abc.Update("abc", 3);
  EXPECT_EQ(Hex(abc.Finish()), "06b05ab6733a618578af5f94892f3950");
}

// The checksum is XXH3-128 of the chunk digests in order, named "xxh3x16m":
// an empty volume (no chunk) is XXH3-128 of nothing; a one-chunk volume the
// digest of its chunk's digest. Pinned: a change here is a new checksum
// name, or agents of two builds would fail each other's migrations.
TEST(ChecksumTest, ChecksumFormatIsPinned) {
  EXPECT_EQ(ChunkDigests(0).Finish(),
            "xxh3x16m:99aa06d3014798d86001c324468d497f");
  const std::string data = XxhTestBuffer(2367);
  ChunkDigests one(data.size());
  ASSERT_EQ(one.chunks(), 1u);
  one.Add(0, data.data(), data.size());
  ChunkHasher of_digest;
  ChunkHasher h;
  h.Update(data.data(), data.size());
  const ChunkDigest d = h.Finish();
  of_digest.Update(reinterpret_cast<const char*>(d.data()), d.size());
  EXPECT_EQ(one.Finish(), absl::StrCat("xxh3x16m:", Hex(of_digest.Finish())));
  EXPECT_EQ(one.Finish(), "xxh3x16m:04c23ae3ef2c8f0f1f456814efc5cb54");
}

TEST(ChecksumTest, MissingFileIsNotFoundWithThePath) {
  auto sum = FileChecksum("/nonexistent/daxlease-data", 4096, nullptr);
  EXPECT_EQ(sum.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(sum.status().message(), ::testing::HasSubstr("/nonexistent"));
}

// The digest diff a migration's target makes inside the pause: a chunk a
// holder changed after the pre-copy is fetched again, an unchanged one is
// not, one the pre-copy never finished is; the source's digests are
// HashChunks' (the same digests ChunkDigests combines).
TEST(ChecksumTest, ChunksToFetchAreTheChangedAndTheUnknown) {
  const uint64_t size = 3 * kChecksumChunk + 100;
  std::string data(size, '\0');
  for (uint64_t i = 0; i < size; ++i) data[i] = static_cast<char>(i * 7 + 1);
  // The pre-copy's view: every chunk as it was, chunk 3 not finished.
  std::vector<std::optional<ChunkDigest>> have(4);
  ChunkDigests before(size);
  for (uint64_t i = 0; i < 3; ++i) {
    before.Add(i, data.data() + i * kChecksumChunk, kChecksumChunk);
    have[i] = before.Get(i);
  }
  // A holder writes one byte of chunk 1 after the pre-copy.
  data[kChecksumChunk + 5] ^= 1;
  auto source = HashChunks(data.data(), size, 0, size);
  ASSERT_TRUE(source.ok()) << source.status();
  ASSERT_EQ(source->size(), 4 * sizeof(ChunkDigest));
  EXPECT_THAT(ChunksToFetch(have, *source), ::testing::ElementsAre(1, 3));
  // Nothing changed and everything known: nothing is read again.
  have[1] = std::nullopt;
  for (uint64_t i = 0; i < 4; ++i) {
    ChunkDigest d;
    std::memcpy(d.data(), source->data() + i * d.size(), d.size());
    have[i] = d;
  }
  EXPECT_TRUE(ChunksToFetch(have, *source).empty());
  // Digests that are not one per chunk (another chunk size): all of them.
  EXPECT_THAT(ChunksToFetch(have, source->substr(16)),
              ::testing::ElementsAre(0, 1, 2, 3));
  // The digests combine into the checksum the file has.
  ChunkDigests all(size);
  for (uint64_t i = 0; i < 4; ++i) all.Set(i, *have[i]);
  const std::string path =
      ::testing::TempDir() + "/chunks-" + std::to_string(getpid());
  {
    std::ofstream out(path, std::ios::binary);
    out.write(data.data(), static_cast<std::streamsize>(size));
  }
  EXPECT_EQ(all.Finish(), *FileChecksum(path, size, nullptr));
  unlink(path.c_str());
  // A range must start at a chunk and stay inside the data.
  EXPECT_FALSE(HashChunks(data.data(), size, 5, 10).ok());
  EXPECT_FALSE(HashChunks(data.data(), size, 0, size + 1).ok());
  auto tail = HashChunks(data.data(), size, 3 * kChecksumChunk, 100);
  ASSERT_TRUE(tail.ok());
  EXPECT_EQ(*tail, source->substr(3 * sizeof(ChunkDigest)));
}

// The digests of a file, taken apart and summed again, are its checksum; a
// string of the wrong length for the size is refused, naming both.
TEST(ChecksumTest, ChecksumOfTheFilesDigestsIsTheFileChecksum) {
  const uint64_t size = kChecksumChunk + 777;
  std::string data(size, '\0');
  for (uint64_t i = 0; i < size; ++i) data[i] = static_cast<char>(i * 13 + 1);
  const std::string path =
      ::testing::TempDir() + "/digests-" + std::to_string(getpid());
  {
    std::ofstream out(path, std::ios::binary);
    out.write(data.data(), static_cast<std::streamsize>(size));
  }
  auto digests = FileChunkDigests(path, size, nullptr);
  ASSERT_TRUE(digests.ok()) << digests.status();
  EXPECT_EQ(*digests, *HashChunks(data.data(), size, 0, size));
  EXPECT_EQ(*ChecksumOfDigests(size, *digests),
            *FileChecksum(path, size, nullptr));
  auto short_by_one = ChecksumOfDigests(size, digests->substr(16));
  EXPECT_EQ(short_by_one.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(short_by_one.status().message(),
              ::testing::HasSubstr("16 bytes of digests for"));
  unlink(path.c_str());
}

// FrozenDigests: whoever asks first computes, askers meanwhile wait for it
// and take its digests without computing; a failure is not kept.
TEST(ChecksumTest, FrozenDigestsAreComputedOnceForEveryAsker) {
  FrozenDigests frozen;
  std::atomic<int> computes{0};
  bool computed = false;
  auto failed = frozen.Get(
      [&]() -> absl::StatusOr<std::string> {
        ++computes;
        return absl::CancelledError("checksum cancelled");
      },
      &computed);
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(computed);

  std::mutex gate_mu;
  std::condition_variable gate_cv;
  bool open = false;
  auto slow = [&]() -> absl::StatusOr<std::string> {
    ++computes;
    std::unique_lock<std::mutex> l(gate_mu);
    gate_cv.wait(l, [&] { return open; });
    return std::string("digests");
  };
  std::vector<std::thread> askers;
  std::vector<absl::StatusOr<std::string>> got(4);
  std::vector<char> ran(4, 0);
  for (int i = 0; i < 4; ++i) {
    askers.emplace_back([&, i] {
      bool c = false;
      got[i] = frozen.Get(slow, &c);
      ran[i] = c;
    });
  }
  while (computes.load() < 2) std::this_thread::yield();  // one computes
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  {
    std::lock_guard<std::mutex> l(gate_mu);
    open = true;
  }
  gate_cv.notify_all();
  for (auto& t : askers) t.join();
  EXPECT_EQ(computes.load(), 2) << "the failure, then one computation";
  EXPECT_EQ(std::count(ran.begin(), ran.end(), 1), 1);
  for (const auto& g : got) EXPECT_EQ(g.value_or(""), "digests");
  EXPECT_EQ(frozen.Get(slow, &computed).value_or(""), "digests");
  EXPECT_FALSE(computed);
}
}  // namespace
}  // namespace daxlease::agent
