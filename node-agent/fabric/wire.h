// The TCP fabric's framing (docs/agent.md, "TCP fabric wire format"): a
// length-prefixed handshake, then fixed-size little-endian request and reply
// headers followed by raw payload. Blocking helpers over a socket fd; EOF and
// errors become Unavailable.
#ifndef DAXLEASE_NODE_AGENT_FABRIC_WIRE_H_
#define DAXLEASE_NODE_AGENT_FABRIC_WIRE_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace daxlease::fabric::wire {

inline constexpr uint32_t kOpRead = 1;
inline constexpr uint32_t kOpWrite = 2;
inline constexpr uint32_t kOpPersist = 3;
// The owner's chunk digests of [offset, offset + length): the request's
// `reserved` field carries the chunk size; the reply's payload is 16 bytes
// per chunk (Region::digests).
inline constexpr uint32_t kOpDigests = 4;
// Largest payload of one request; the holder side splits bigger ones.
inline constexpr uint64_t kMaxOpBytes = 16ull << 20;

struct RequestHeader {
  uint32_t op;
  uint32_t reserved;
  uint64_t offset;
  uint64_t length;
};
static_assert(sizeof(RequestHeader) == 24);

struct ReplyHeader {
  int32_t code;  // absl/gRPC status code
  uint32_t message_length;
  uint64_t length;  // payload bytes that follow the message
};
static_assert(sizeof(ReplyHeader) == 16);

absl::Status ReadFull(int fd, void* buf, size_t len);
absl::Status WriteFull(int fd, const void* buf, size_t len);
// u32 length + bytes; refuses frames longer than `max`.
absl::StatusOr<std::string> ReadFrame(int fd, uint32_t max);
absl::Status WriteFrame(int fd, absl::string_view data);
// Reply header (+ message) + `len` bytes of `payload` when `status` is OK.
absl::Status WriteReply(int fd, const absl::Status& status, const char* payload,
                        uint64_t len);
// Reads one reply into `remote`; its payload (when OK) into `out`, which
// must hold `expect` bytes (a payload of another length is DataLoss).
absl::Status ReadReply(int fd, absl::Status* remote, char* out,
                       uint64_t expect);

bool ConstantTimeEquals(absl::string_view a, absl::string_view b);

}  // namespace daxlease::fabric::wire

#endif  // DAXLEASE_NODE_AGENT_FABRIC_WIRE_H_
