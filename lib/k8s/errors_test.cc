#include "lib/k8s/errors.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace daxlease::k8s {
namespace {

using ::testing::HasSubstr;

std::string StatusBody(int code, const char* reason, const char* msg) {
  return std::string(
             "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"status\":"
             "\"Failure\",\"code\":") +
         std::to_string(code) + ",\"reason\":\"" + reason +
         "\",\"message\":\"" + msg + "\"}";
}

TEST(ErrorsTest, SuccessIsOk) {
  EXPECT_TRUE(StatusFromHttp(200, "{}").ok());
  EXPECT_TRUE(StatusFromHttp(201, "").ok());
}

TEST(ErrorsTest, ConflictIsAbortedAndAlreadyExistsIsDistinct) {
  absl::Status c = StatusFromHttp(409, StatusBody(409, "Conflict", "modified"));
  EXPECT_TRUE(IsConflict(c));
  EXPECT_FALSE(absl::IsAlreadyExists(c));
  EXPECT_THAT(c.message(), HasSubstr("HTTP 409 Conflict: modified"));
  absl::Status e =
      StatusFromHttp(409, StatusBody(409, "AlreadyExists", "exists"));
  EXPECT_TRUE(absl::IsAlreadyExists(e));
  EXPECT_FALSE(IsConflict(e));
}

TEST(ErrorsTest, CodeMapping) {
  EXPECT_TRUE(
      absl::IsNotFound(StatusFromHttp(404, StatusBody(404, "NotFound", "x"))));
  EXPECT_TRUE(IsGone(StatusFromHttp(410, StatusBody(410, "Expired", "old"))));
  absl::Status inv = StatusFromHttp(
      422, StatusBody(422, "Invalid", "spec.size: Invalid value: 0"));
  EXPECT_EQ(inv.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(inv.message(), HasSubstr("spec.size: Invalid value: 0"));
  EXPECT_EQ(StatusFromHttp(403, "").code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(StatusFromHttp(401, "").code(), absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(IsRetryable(StatusFromHttp(429, "")));
  EXPECT_TRUE(IsRetryable(StatusFromHttp(503, "")));
  EXPECT_EQ(StatusFromHttp(504, "").code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_FALSE(IsRetryable(StatusFromHttp(400, "")));
}

TEST(ErrorsTest, NonStatusBodyIsKeptInMessage) {
  absl::Status s = StatusFromHttp(502, "<html>bad gateway</html>");
  EXPECT_THAT(s.message(), HasSubstr("bad gateway"));
}

TEST(ErrorsTest, WatchErrorEventStatus) {
  EXPECT_TRUE(IsGone(StatusFromApiStatus(410, "Expired", "too old")));
  EXPECT_TRUE(StatusFromApiStatus(200, "", "").ok());
}

}  // namespace
}  // namespace daxlease::k8s
