#include "lib/k8s/rest_client.h"

#include <deque>

#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace daxlease::k8s {
namespace {

using ::testing::HasSubstr;

const Resource kWidgets{"example.com", "v1", "widgets", true};

// Replays scripted responses and records requests.
class ScriptedTransport : public HttpTransport {
 public:
  struct Reply {
    absl::StatusOr<HttpResponse> response;
    std::vector<std::string> chunks;  // streamed body for Stream()
  };
  void Push(long code, std::string body, std::string retry_after = "") {
    replies_.push_back({HttpResponse{code, std::move(body), retry_after}, {}});
  }
  void PushError(absl::Status s) { replies_.push_back({s, {}}); }
  void PushStream(std::vector<std::string> chunks) {
    replies_.push_back({HttpResponse{200, "", ""}, std::move(chunks)});
  }

  absl::StatusOr<HttpResponse> Do(const HttpRequest& req) override {
    requests.push_back(req);
    if (replies_.empty()) return absl::InternalError("no scripted reply");
    Reply r = std::move(replies_.front());
    replies_.pop_front();
    return r.response;
  }
  absl::StatusOr<HttpResponse> Stream(
      const HttpRequest& req,
      const std::function<bool(absl::string_view)>& on_data,
      const std::atomic<bool>*) override {
    requests.push_back(req);
    Reply r = std::move(replies_.front());
    replies_.pop_front();
    if (r.response.ok() && r.response->code == 200) {
      for (const std::string& c : r.chunks) {
        if (!on_data(c)) break;
      }
    }
    return r.response;
  }

  std::vector<HttpRequest> requests;

 private:
  std::deque<Reply> replies_;
};

class RestKubeClientTest : public ::testing::Test {
 protected:
  RestKubeClientTest() {
    auto t = std::make_unique<ScriptedTransport>();
    transport_ = t.get();
    client_ = std::make_unique<RestKubeClient>(std::move(t), clock_);
  }
  base::FakeClock clock_;
  ScriptedTransport* transport_;
  std::unique_ptr<RestKubeClient> client_;
};

TEST_F(RestKubeClientTest, GetBuildsPathAndParses) {
  transport_->Push(200, R"({"metadata":{"name":"a","resourceVersion":"5"}})");
  absl::StatusOr<Json> o = client_->Get(kWidgets, "ns", "a");
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(ResourceVersionOf(*o), "5");
  ASSERT_EQ(transport_->requests.size(), 1u);
  EXPECT_EQ(transport_->requests[0].method, "GET");
  EXPECT_EQ(transport_->requests[0].path,
            "/apis/example.com/v1/namespaces/ns/widgets/a");
}

TEST_F(RestKubeClientTest, RetriesUnavailableWithBackoffThroughClock) {
  absl::Time start = clock_.Now();
  transport_->Push(503, "busy");
  transport_->PushError(absl::UnavailableError("connection refused"));
  transport_->Push(429, "slow down", "2");
  transport_->Push(200, "{}");
  EXPECT_TRUE(client_->Get(kWidgets, "ns", "a").ok());
  EXPECT_EQ(transport_->requests.size(), 4u);
  // 100 ms + 200 ms + Retry-After 2 s.
  EXPECT_EQ(clock_.Now() - start, absl::Milliseconds(2300));
}

TEST_F(RestKubeClientTest, RetriesAreBounded) {
  for (int i = 0; i < 5; ++i) transport_->Push(500, "boom");
  absl::Status s = client_->Get(kWidgets, "ns", "a").status();
  EXPECT_TRUE(absl::IsUnavailable(s)) << s;
  EXPECT_THAT(s.message(), HasSubstr("5 attempts"));
  EXPECT_EQ(transport_->requests.size(), 5u);
}

// A POST with generateName that fails ambiguously may have made the object:
// sending it again could make a second one, so the error is returned. A 429
// (refused unprocessed) is retried; a POST with a fixed name is retried (a
// repeat is refused by the server as AlreadyExists).
TEST_F(RestKubeClientTest,
       GenerateNameCreateIsNotRetriedAfterAmbiguousFailure) {
  Json gen = {{"metadata", {{"generateName", "vol-recall-"}}}};
  transport_->Push(504, "gateway timeout");
  EXPECT_FALSE(client_->Create(kWidgets, gen).ok());
  EXPECT_EQ(transport_->requests.size(), 1u);
  transport_->PushError(absl::UnavailableError("connection reset"));
  EXPECT_FALSE(client_->Create(kWidgets, gen).ok());
  EXPECT_EQ(transport_->requests.size(), 2u);
  transport_->Push(429, "slow down");
  transport_->Push(201, R"({"metadata":{"name":"vol-recall-x"}})");
  EXPECT_TRUE(client_->Create(kWidgets, gen).ok());
  EXPECT_EQ(transport_->requests.size(), 4u);
  Json named = {{"metadata", {{"name", "a"}, {"namespace", "ns"}}}};
  transport_->Push(503, "busy");
  transport_->Push(201, R"({"metadata":{"name":"a"}})");
  EXPECT_TRUE(client_->Create(kWidgets, named).ok());
  EXPECT_EQ(transport_->requests.size(), 6u);
}

TEST_F(RestKubeClientTest, ConflictIsNotRetried) {
  transport_->Push(
      409,
      R"({"kind":"Status","code":409,"reason":"Conflict","message":"modified"})");
  Json obj = {{"metadata",
               {{"name", "a"}, {"namespace", "ns"}, {"resourceVersion", "3"}}}};
  absl::Status s = client_->Update(kWidgets, obj).status();
  EXPECT_TRUE(IsConflict(s)) << s;
  ASSERT_EQ(transport_->requests.size(), 1u);
  EXPECT_EQ(transport_->requests[0].method, "PUT");
  EXPECT_EQ(transport_->requests[0].content_type, "application/json");
  // Update without a resourceVersion is refused locally.
  obj["metadata"].erase("resourceVersion");
  EXPECT_EQ(client_->Update(kWidgets, obj).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(RestKubeClientTest, StatusPatchAndDeletePaths) {
  transport_->Push(200, "{}");
  transport_->Push(200, "{}");
  transport_->Push(200, "{}");
  ASSERT_TRUE(client_
                  ->Patch(kWidgets, "ns", "a", PatchType::kMerge,
                          {{"status", {{"x", 1}}}}, "status")
                  .ok());
  ASSERT_TRUE(
      client_->Patch(kWidgets, "ns", "a", PatchType::kJson, Json::array())
          .ok());
  ASSERT_TRUE(client_->Delete(kWidgets, "ns", "a", "9").ok());
  const auto& r = transport_->requests;
  EXPECT_EQ(r[0].path, "/apis/example.com/v1/namespaces/ns/widgets/a/status");
  EXPECT_EQ(r[0].content_type, "application/merge-patch+json");
  EXPECT_EQ(r[1].content_type, "application/json-patch+json");
  EXPECT_EQ(r[2].method, "DELETE");
  EXPECT_EQ(Json::parse(r[2].body)["preconditions"]["resourceVersion"], "9");
}

TEST_F(RestKubeClientTest, ListQueryAndItems) {
  transport_->Push(200, R"({"kind":"WidgetList","apiVersion":"example.com/v1",
    "metadata":{"resourceVersion":"42","continue":"tok"},
    "items":[{"metadata":{"name":"a"}},{"metadata":{"name":"b"}}]})");
  ListOptions o;
  o.label_selector = "app=x,env in (a,b)";
  o.limit = 2;
  absl::StatusOr<ListResult> l = client_->List(kWidgets, "ns", o);
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->resource_version, "42");
  EXPECT_EQ(l->continue_token, "tok");
  ASSERT_EQ(l->items.size(), 2u);
  EXPECT_EQ(l->items[0]["kind"], "Widget");
  EXPECT_EQ(l->items[0]["apiVersion"], "example.com/v1");
  EXPECT_EQ(transport_->requests[0].path,
            "/apis/example.com/v1/namespaces/ns/widgets?labelSelector=app%3Dx%"
            "2Cenv%20in%20%28a%2Cb%29&limit=2");
}

TEST_F(RestKubeClientTest, WatchParsesEventsSplitAcrossChunks) {
  transport_->PushStream(
      {R"({"type":"ADDED","object":{"metadata":{"name":"a","resourceVersion":"2"}}})"
       "\n{\"type\":\"MODI",
       R"(FIED","object":{"metadata":{"name":"a","resourceVersion":"3"}}})"
       "\n",
       R"({"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"9"}}})"
       "\n"});
  std::vector<std::string> seen;
  WatchOptions wo;
  wo.resource_version = "1";
  wo.timeout_seconds = 30;
  absl::Status s =
      client_->Watch(kWidgets, "ns", wo, [&](const WatchEvent& ev) {
        seen.push_back(std::string(WatchEventTypeName(ev.type)) + "@" +
                       ResourceVersionOf(ev.object));
        return true;
      });
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(seen,
            (std::vector<std::string>{"ADDED@2", "MODIFIED@3", "BOOKMARK@9"}));
  EXPECT_EQ(
      transport_->requests[0].path,
      "/apis/example.com/v1/namespaces/ns/widgets?watch=1&resourceVersion=1&"
      "allowWatchBookmarks=true&timeoutSeconds=30");
}

TEST_F(RestKubeClientTest, WatchErrorEventIsGone) {
  transport_->PushStream(
      {R"j({"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired","message":"too old resource version: 1 (50)"}})j"
       "\n"});
  absl::Status s = client_->Watch(kWidgets, "ns", {},
                                  [](const WatchEvent&) { return true; });
  EXPECT_TRUE(IsGone(s)) << s;
  EXPECT_THAT(s.message(), HasSubstr("too old resource version"));
  transport_->Push(
      410, R"({"kind":"Status","code":410,"reason":"Gone","message":"gone"})");
  EXPECT_TRUE(IsGone(client_->Watch(kWidgets, "ns", {},
                                    [](const WatchEvent&) { return true; })));
}

TEST_F(RestKubeClientTest, WatchHandlerCanStop) {
  transport_->PushStream(
      {"{\"type\":\"ADDED\",\"object\":{}}\n{\"type\":\"ADDED\",\"object\":{}}"
       "\n"});
  int n = 0;
  EXPECT_TRUE(client_
                  ->Watch(kWidgets, "ns", {},
                          [&](const WatchEvent&) {
                            ++n;
                            return false;
                          })
                  .ok());
  EXPECT_EQ(n, 1);
}

}  // namespace
}  // namespace daxlease::k8s
