#include "node-agent/fabric/wire.h"

#include <sys/socket.h>
#include <sys/uio.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace daxlease::fabric::wire {

absl::Status ReadFull(int fd, void* buf, size_t len) {
  char* p = static_cast<char*>(buf);
  while (len > 0) {
    ssize_t n = recv(fd, p, len, 0);
    if (n == 0) return absl::UnavailableError("connection closed by peer");
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::UnavailableError(absl::StrCat("recv: ", strerror(errno)));
    }
    p += n;
    len -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::Status WriteFull(int fd, const void* buf, size_t len) {
  const char* p = static_cast<const char*>(buf);
  while (len > 0) {
    ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::UnavailableError(absl::StrCat("send: ", strerror(errno)));
    }
    p += n;
    len -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadFrame(int fd, uint32_t max) {
  uint32_t len = 0;
  absl::Status st = ReadFull(fd, &len, sizeof(len));
  if (!st.ok()) return st;
  if (len > max) {
    return absl::InvalidArgumentError(
        absl::StrCat("frame of ", len, " bytes exceeds ", max));
  }
  std::string s(len, '\0');
  st = ReadFull(fd, s.data(), len);
  if (!st.ok()) return st;
  return s;
}

absl::Status WriteFrame(int fd, absl::string_view data) {
  uint32_t len = static_cast<uint32_t>(data.size());
  iovec iov[2] = {{&len, sizeof(len)},
                  {const_cast<char*>(data.data()), data.size()}};
  msghdr msg{};
  msg.msg_iov = iov;
  msg.msg_iovlen = 2;
  ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL);
  if (n < 0)
    return absl::UnavailableError(absl::StrCat("send: ", strerror(errno)));
  size_t total = sizeof(len) + data.size();
  if (static_cast<size_t>(n) == total) return absl::OkStatus();
  // Short send: finish byte by byte through WriteFull.
  std::string all(reinterpret_cast<const char*>(&len), sizeof(len));
  all.append(data.data(), data.size());
  return WriteFull(fd, all.data() + n, total - static_cast<size_t>(n));
}

absl::Status WriteReply(int fd, const absl::Status& status, const char* payload,
                        uint64_t len) {
  ReplyHeader h{};
  h.code = static_cast<int32_t>(status.code());
  std::string msg(status.message());
  h.message_length = static_cast<uint32_t>(msg.size());
  h.length = status.ok() ? len : 0;
  std::string head(reinterpret_cast<const char*>(&h), sizeof(h));
  head.append(msg);
  absl::Status st = WriteFull(fd, head.data(), head.size());
  if (st.ok() && h.length > 0) st = WriteFull(fd, payload, h.length);
  return st;
}

absl::Status ReadReply(int fd, absl::Status* remote, char* out,
                       uint64_t expect) {
  ReplyHeader h{};
  absl::Status st = ReadFull(fd, &h, sizeof(h));
  if (!st.ok()) return st;
  if (h.message_length > 64 * 1024) {
    return absl::DataLossError("reply message too long");
  }
  std::string msg(h.message_length, '\0');
  st = ReadFull(fd, msg.data(), msg.size());
  if (!st.ok()) return st;
  if (h.code != 0) {
    *remote = absl::Status(static_cast<absl::StatusCode>(h.code), msg);
    return absl::OkStatus();
  }
  if (h.length != (out == nullptr ? 0 : expect)) {
    return absl::DataLossError(
        absl::StrCat("reply carries ", h.length, " bytes, expected ", expect));
  }
  *remote = absl::OkStatus();
  if (h.length > 0) return ReadFull(fd, out, h.length);
  return absl::OkStatus();
}

bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char d = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    d |= static_cast<unsigned char>(a[i] ^ b[i]);
  }
  return d == 0;
}

}  // namespace daxlease::fabric::wire
