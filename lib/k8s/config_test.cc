#include "lib/k8s/config.h"

#include <stdlib.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace daxlease::k8s {
namespace {

using ::testing::HasSubstr;

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/k8s_config_test.XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }
  void Write(const std::string& name, const std::string& text) const {
    std::ofstream(path_ + "/" + name) << text;
  }

 private:
  std::string path_;
};

TEST(KubeConfigTest, InlineDataAndToken) {
  std::string yaml = absl::StrCat(R"(apiVersion: v1
kind: Config
current-context: lab
clusters:
- name: c
  cluster:
    server: https://127.0.0.1:6443/
    certificate-authority-data: )",
                                  absl::Base64Escape("CA PEM"), R"(
users:
- name: u
  user:
    token: secret
    client-certificate-data: )",
                                  absl::Base64Escape("CERT"), R"(
    client-key-data: )",
                                  absl::Base64Escape("KEY"), R"(
contexts:
- name: lab
  context: {cluster: c, user: u, namespace: team}
)");
  absl::StatusOr<KubeConfig> c = ParseKubeConfig(yaml, "/nowhere");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->server, "https://127.0.0.1:6443");
  EXPECT_EQ(c->ca_pem, "CA PEM");
  EXPECT_EQ(c->client_cert_pem, "CERT");
  EXPECT_EQ(c->client_key_pem, "KEY");
  EXPECT_EQ(c->token, "secret");
  EXPECT_EQ(c->default_namespace, "team");
  EXPECT_FALSE(c->insecure_skip_tls_verify);
}

TEST(KubeConfigTest, RelativeFilesAndNamedContext) {
  TempDir dir;
  dir.Write("ca.crt", "CA FROM FILE");
  dir.Write("admin.crt", "CERT FROM FILE");
  dir.Write("admin.key", "KEY FROM FILE");
  dir.Write("kubeconfig", R"(
current-context: other
clusters:
- {name: c, cluster: {server: "https://h:1", certificate-authority: ca.crt}}
- {name: d, cluster: {server: "https://d:2", insecure-skip-tls-verify: true}}
users:
- {name: u, user: {client-certificate: admin.crt, client-key: admin.key}}
contexts:
- {name: lab, context: {cluster: c, user: u}}
- {name: other, context: {cluster: d, user: u}}
)");
  absl::StatusOr<KubeConfig> c =
      LoadKubeConfig(dir.path() + "/kubeconfig", "lab");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->server, "https://h:1");
  EXPECT_EQ(c->ca_pem, "CA FROM FILE");
  EXPECT_EQ(c->client_cert_pem, "CERT FROM FILE");
  EXPECT_EQ(c->client_key_pem, "KEY FROM FILE");
  EXPECT_EQ(c->default_namespace, "default");
  absl::StatusOr<KubeConfig> d = LoadKubeConfig(dir.path() + "/kubeconfig");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->server, "https://d:2");
  EXPECT_TRUE(d->insecure_skip_tls_verify);
}

TEST(KubeConfigTest, Errors) {
  EXPECT_EQ(ParseKubeConfig("- a\n- b\n", "/").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseKubeConfig("a: [\n", "/").status().code(),
            absl::StatusCode::kInvalidArgument);
  absl::Status missing =
      ParseKubeConfig("current-context: x\ncontexts: []\n", "/").status();
  EXPECT_THAT(missing.message(), HasSubstr("no contexts entry named 'x'"));
  absl::Status nofile = ParseKubeConfig(R"(
current-context: x
clusters: [{name: c, cluster: {server: "https://h", certificate-authority: /no/such/ca}}]
contexts: [{name: x, context: {cluster: c}}]
)",
                                        "/")
                            .status();
  EXPECT_EQ(nofile.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(LoadKubeConfig("/no/such/kubeconfig").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(KubeConfigTest, InCluster) {
  TempDir dir;
  dir.Write("token", "sa-token\n");
  dir.Write("ca.crt", "SA CA");
  dir.Write("namespace", "daxlease-system");
  unsetenv("KUBERNETES_SERVICE_HOST");
  EXPECT_EQ(LoadInClusterConfig(dir.path()).status().code(),
            absl::StatusCode::kFailedPrecondition);
  setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1", 1);
  setenv("KUBERNETES_SERVICE_PORT", "443", 1);
  absl::StatusOr<KubeConfig> c = LoadInClusterConfig(dir.path());
  unsetenv("KUBERNETES_SERVICE_HOST");
  unsetenv("KUBERNETES_SERVICE_PORT");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->server, "https://10.0.0.1:443");
  EXPECT_EQ(c->ca_pem, "SA CA");
  EXPECT_EQ(c->token_file, dir.path() + "/token");
  EXPECT_EQ(c->default_namespace, "daxlease-system");
}

}  // namespace
}  // namespace daxlease::k8s
