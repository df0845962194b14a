// VerbsFabric's pieces that need no RDMA device. The fabric itself runs in
// the QEMU lab over Soft-RoCE (tests/lab/guest/verbs_fabric.sh).
#include "node-agent/fabric/verbs_fabric.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace daxlease::fabric {
namespace {

using ::testing::HasSubstr;

TEST(VerbsEndpoint, ParsesAndRefuses) {
  auto hp = ParseVerbsEndpoint("verbs://192.0.2.1:7391");
  ASSERT_TRUE(hp.ok()) << hp.status();
  EXPECT_EQ(hp->first, "192.0.2.1");
  EXPECT_EQ(hp->second, 7391);
  EXPECT_FALSE(ParseVerbsEndpoint("192.0.2.1:7391").ok());
  EXPECT_FALSE(ParseVerbsEndpoint("verbs://192.0.2.1").ok());
  EXPECT_FALSE(ParseVerbsEndpoint("verbs://192.0.2.1:0").ok());
  EXPECT_FALSE(ParseVerbsEndpoint("verbs://:7391").ok());
  EXPECT_EQ(FabricOf("verbs://192.0.2.1:7391"), "verbs");
  EXPECT_EQ(FabricOf("10.0.0.1:7390"), "tcp");
}

TEST(VerbsHelloReply, RoundTripsAndRefusesGarbage) {
  VerbsHelloReply r;
  r.code = 0;
  r.size_bytes = 256u << 20;
  r.addr = 0x7f0012345000;
  r.rkey = 0xabcdef01;
  r.message = "";
  auto back = DecodeHelloReply(EncodeHelloReply(r));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->size_bytes, r.size_bytes);
  EXPECT_EQ(back->addr, r.addr);
  EXPECT_EQ(back->rkey, r.rkey);
  VerbsHelloReply refused;
  refused.code = static_cast<int>(absl::StatusCode::kPermissionDenied);
  refused.message = "grant v/l@n#3 was revoked";
  back = DecodeHelloReply(EncodeHelloReply(refused));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->code, refused.code);
  EXPECT_EQ(back->message, refused.message);
  EXPECT_EQ(back->rkey, 0u);
  EXPECT_EQ(back->features, 0u);
  std::string bytes = EncodeHelloReply(refused);
  // Cut inside the message (the features, 4 bytes, follow it).
  EXPECT_FALSE(DecodeHelloReply(bytes.substr(0, bytes.size() - 5)).ok());
  EXPECT_FALSE(DecodeHelloReply("short").ok());
  bytes[0] ^= 1;
  EXPECT_FALSE(DecodeHelloReply(bytes).ok());
}

// The features bit says the owner answers requests (DIGESTS); the reply of
// an owner of an earlier version ends with the message: no features, and
// its holders (which stop at the message) read a new reply as before.
TEST(VerbsHelloReply, CarriesFeaturesAndReadsAnEarlierOwnersReply) {
  VerbsHelloReply r;
  r.size_bytes = 64u << 20;
  r.rkey = 7;
  r.message = "ok";
  r.features = kVerbsFeatureRequests;
  const std::string bytes = EncodeHelloReply(r);
  auto back = DecodeHelloReply(bytes);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->features, kVerbsFeatureRequests);
  EXPECT_EQ(back->message, "ok");
  // Without the trailing features: what an earlier owner sends.
  back = DecodeHelloReply(bytes.substr(0, bytes.size() - 4));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->features, 0u);
  EXPECT_EQ(back->rkey, 7u);
  EXPECT_EQ(back->size_bytes, 64u << 20);
}

TEST(VerbsRequest, RoundTripsAndRefusesGarbage) {
  VerbsRequest q;
  q.offset = uint64_t{16} << 20;
  q.length = uint64_t{1} << 40;
  q.chunk = uint64_t{16} << 20;
  q.reply_capacity = VerbsReplyBytes(65536);
  const std::string bytes = EncodeVerbsRequest(q);
  auto back = DecodeVerbsRequest(bytes);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->version, kVerbsRequestVersion);
  EXPECT_EQ(back->op, kVerbsOpDigests);
  EXPECT_EQ(back->offset, q.offset);
  EXPECT_EQ(back->length, q.length);
  EXPECT_EQ(back->chunk, q.chunk);
  EXPECT_EQ(back->reply_capacity, q.reply_capacity);
  // Another version or op decodes (the owner answers it UNIMPLEMENTED).
  VerbsRequest later = q;
  later.version = 2;
  later.op = 9;
  back = DecodeVerbsRequest(EncodeVerbsRequest(later));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->version, 2u);
  EXPECT_EQ(back->op, 9u);
  EXPECT_EQ(
      DecodeVerbsRequest(bytes.substr(0, bytes.size() - 1)).status().code(),
      absl::StatusCode::kDataLoss);
  std::string bad = bytes;
  bad[0] ^= 1;
  EXPECT_FALSE(DecodeVerbsRequest(bad).ok());
  // A FabricHello-sized garbage message is not a request either.
  EXPECT_FALSE(DecodeVerbsRequest(std::string(100, 'x')).ok());
}

TEST(VerbsReply, RoundTripsFitsItsReceiveAndRefusesGarbage) {
  VerbsReply ok;
  ok.payload = std::string(64 * kDigestBytes, 'd');
  std::string bytes = EncodeVerbsReply(ok);
  EXPECT_LE(bytes.size(), VerbsReplyBytes(ok.payload.size()));
  auto back = DecodeVerbsReply(bytes);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->code, 0);
  EXPECT_EQ(back->payload, ok.payload);
  EXPECT_EQ(back->message, "");
  // An error: code and message, no payload; a long message is cut so that
  // the reply fits the receive the holder posted for no digests at all.
  VerbsReply refused;
  refused.code = static_cast<int>(absl::StatusCode::kPermissionDenied);
  refused.message = std::string(5000, 'm');
  bytes = EncodeVerbsReply(refused);
  EXPECT_LE(bytes.size(), VerbsReplyBytes(0));
  back = DecodeVerbsReply(bytes);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->code, refused.code);
  EXPECT_EQ(back->message, std::string(kVerbsReplyMessageBytes, 'm'));
  EXPECT_TRUE(back->payload.empty());
  // Truncated, corrupted, unknown code.
  bytes = EncodeVerbsReply(ok);
  EXPECT_EQ(DecodeVerbsReply(bytes.substr(0, bytes.size() - 1)).status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_FALSE(DecodeVerbsReply("short").ok());
  std::string bad = bytes;
  bad[0] ^= 1;
  EXPECT_FALSE(DecodeVerbsReply(bad).ok());
  VerbsReply odd;
  odd.code = 99;
  EXPECT_FALSE(DecodeVerbsReply(EncodeVerbsReply(odd)).ok());
}

TEST(VerbsRegistration, FsdaxWithoutOdpIsRefusedNamingTheReason) {
  absl::Status pinned = absl::FailedPreconditionError(
      "ibv_reg_mr: Operation not supported (errno 95): the kernel refuses a "
      "long-term pin of this memory");
  absl::Status st = RegistrationRefusal("pvc-1", "rxe0", pinned, false);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(st.message(), HasSubstr("pvc-1"));
  EXPECT_THAT(st.message(), HasSubstr("fsdax"));
  EXPECT_THAT(st.message(), HasSubstr("rxe0 has no on-demand paging"));
  EXPECT_THAT(st.message(), HasSubstr("devdax"));
  // Other failures (resources, arguments) are passed on as they are.
  absl::Status enomem = absl::ResourceExhaustedError("ibv_reg_mr: ENOMEM");
  EXPECT_EQ(RegistrationRefusal("pvc-1", "rxe0", enomem, false), enomem);
}

TEST(VerbsFabricStart, RefusesTheWildcardAddress) {
  VerbsFabricOptions o;
  o.listen = "0.0.0.0:0";
  o.secret = "0123456789abcdef";
  auto f = VerbsFabric::Start(o);
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(f.status().message(), HasSubstr("RDMA device"));
  o.secret.clear();
  o.listen = "127.0.0.1:0";
  EXPECT_EQ(VerbsFabric::Start(o).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(VerbsFabricStart, WithoutRdmaIsUnavailable) {
  VerbsFabricOptions o;
  o.listen = "127.0.0.1:0";
  o.secret = "0123456789abcdef";
  auto f = VerbsFabric::Start(o);
  if (f.ok()) GTEST_SKIP() << "this machine has RDMA: the lab test covers it";
  EXPECT_EQ(f.status().code(), absl::StatusCode::kUnavailable) << f.status();
}

// AnyConnector: tcp endpoints go to TcpFabric, verbs:// to the verbs side.
TEST(AnyConnector, RoutesByEndpoint) {
  TcpFabricOptions o;
  o.listen = "127.0.0.1:0";
  o.secret = "0123456789abcdef";
  auto tcp = TcpFabric::Start(o);
  ASSERT_TRUE(tcp.ok()) << tcp.status();
  std::vector<char> mem(1 << 16, 0);
  ASSERT_TRUE(
      (*tcp)
          ->RegisterVolume({"v", mem.data(), mem.size(), nullptr, nullptr})
          .ok());
  auto info = (*tcp)->Grant({"v", "l", "n", 1}, Access::kReadWrite);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->fabric, "tcp");
  AnyConnector any;
  auto r = any.Connect(*info);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE((*r)->Write(10, absl::MakeConstSpan("abc", 3)).ok());
  EXPECT_EQ(std::string(mem.data() + 10, 3), "abc");

  GrantInfo verbs = *info;
  verbs.fabric = "verbs";
  verbs.endpoint = "verbs://127.0.0.1:1";
  auto v = any.Connect(verbs);
  EXPECT_FALSE(v.ok());
  if (!v.ok()) {
    EXPECT_EQ(v.status().code(), absl::StatusCode::kUnavailable) << v.status();
  }
}

}  // namespace
}  // namespace daxlease::fabric
