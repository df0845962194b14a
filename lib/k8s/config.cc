#include "lib/k8s/config.h"

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "lib/base/status.h"
#include "yaml-cpp/yaml.h"

namespace daxlease::k8s {
namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return base::ErrnoStatus("open", path, errno);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string Resolve(absl::string_view base_dir, const std::string& path) {
  if (path.empty() || path[0] == '/' || base_dir.empty()) return path;
  return absl::StrCat(base_dir, "/", path);
}

// Finds the entry `name` in a kubeconfig list (clusters/users/contexts) and
// returns its `field` map.
absl::StatusOr<YAML::Node> Named(const YAML::Node& root, const char* list,
                                 const std::string& name, const char* field) {
  const YAML::Node entries = root[list];
  if (entries && entries.IsSequence()) {
    for (const YAML::Node& e : entries) {
      if (e["name"] && e["name"].as<std::string>() == name) {
        if (!e[field] || !e[field].IsMap()) {
          return absl::InvalidArgumentError(absl::StrCat(
              "kubeconfig: ", list, " entry '", name, "' has no ", field));
        }
        return e[field];
      }
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("kubeconfig: no ", list, " entry named '", name, "'"));
}

// Reads inline base64 `<key>-data`, else the file `<key>`; "" when neither.
absl::StatusOr<std::string> Material(const YAML::Node& m,
                                     const std::string& key,
                                     absl::string_view base_dir) {
  if (m[key + "-data"]) {
    std::string out;
    if (!absl::Base64Unescape(m[key + "-data"].as<std::string>(), &out)) {
      return absl::InvalidArgumentError(
          absl::StrCat("kubeconfig: ", key, "-data is not base64"));
    }
    return out;
  }
  if (m[key]) return ReadFile(Resolve(base_dir, m[key].as<std::string>()));
  return std::string();
}

}  // namespace

absl::StatusOr<KubeConfig> ParseKubeConfig(absl::string_view yaml,
                                           absl::string_view base_dir,
                                           absl::string_view context) {
  KubeConfig cfg;
  try {
    YAML::Node root = YAML::Load(std::string(yaml));
    if (!root.IsMap()) {
      return absl::InvalidArgumentError("kubeconfig: not a YAML map");
    }
    std::string ctx_name(context);
    if (ctx_name.empty() && root["current-context"]) {
      ctx_name = root["current-context"].as<std::string>();
    }
    if (ctx_name.empty()) {
      return absl::InvalidArgumentError("kubeconfig: no current-context");
    }
    ASSIGN_OR_RETURN(YAML::Node ctx,
                     Named(root, "contexts", ctx_name, "context"));
    if (!ctx["cluster"]) {
      return absl::InvalidArgumentError("kubeconfig: context has no cluster");
    }
    ASSIGN_OR_RETURN(
        YAML::Node cluster,
        Named(root, "clusters", ctx["cluster"].as<std::string>(), "cluster"));
    if (!cluster["server"]) {
      return absl::InvalidArgumentError("kubeconfig: cluster has no server");
    }
    cfg.server = cluster["server"].as<std::string>();
    while (!cfg.server.empty() && cfg.server.back() == '/') {
      cfg.server.pop_back();
    }
    ASSIGN_OR_RETURN(cfg.ca_pem,
                     Material(cluster, "certificate-authority", base_dir));
    if (cluster["insecure-skip-tls-verify"]) {
      cfg.insecure_skip_tls_verify =
          cluster["insecure-skip-tls-verify"].as<bool>();
    }
    if (ctx["namespace"]) {
      cfg.default_namespace = ctx["namespace"].as<std::string>();
    }
    if (ctx["user"]) {
      ASSIGN_OR_RETURN(
          YAML::Node user,
          Named(root, "users", ctx["user"].as<std::string>(), "user"));
      ASSIGN_OR_RETURN(cfg.client_cert_pem,
                       Material(user, "client-certificate", base_dir));
      ASSIGN_OR_RETURN(cfg.client_key_pem,
                       Material(user, "client-key", base_dir));
      if (user["token"]) cfg.token = user["token"].as<std::string>();
      if (user["tokenFile"]) {
        cfg.token_file = Resolve(base_dir, user["tokenFile"].as<std::string>());
      }
      if (cfg.client_cert_pem.empty() != cfg.client_key_pem.empty()) {
        return absl::InvalidArgumentError(
            "kubeconfig: client certificate and key must come together");
      }
    }
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("kubeconfig: bad YAML: ", e.what()));
  }
  return cfg;
}

absl::StatusOr<KubeConfig> LoadKubeConfig(absl::string_view path,
                                          absl::string_view context) {
  std::string p(path);
  ASSIGN_OR_RETURN(std::string text, ReadFile(p));
  size_t slash = p.rfind('/');
  std::string dir = slash == std::string::npos ? "." : p.substr(0, slash);
  if (dir.empty()) dir = "/";
  absl::StatusOr<KubeConfig> cfg = ParseKubeConfig(text, dir, context);
  if (!cfg.ok()) return base::Annotate(cfg.status(), p);
  return cfg;
}

absl::StatusOr<KubeConfig> LoadInClusterConfig(absl::string_view sa_dir) {
  const char* host = std::getenv("KUBERNETES_SERVICE_HOST");
  const char* port = std::getenv("KUBERNETES_SERVICE_PORT");
  if (host == nullptr || port == nullptr || *host == '\0') {
    return absl::FailedPreconditionError(
        "not in a cluster: KUBERNETES_SERVICE_HOST/PORT unset");
  }
  KubeConfig cfg;
  std::string h(host);
  if (h.find(':') != std::string::npos) h = absl::StrCat("[", h, "]");  // IPv6
  cfg.server = absl::StrCat("https://", h, ":", port);
  std::string dir(sa_dir);
  cfg.token_file = dir + "/token";
  ASSIGN_OR_RETURN(cfg.token, ReadFile(cfg.token_file));
  ASSIGN_OR_RETURN(cfg.ca_pem, ReadFile(dir + "/ca.crt"));
  absl::StatusOr<std::string> ns = ReadFile(dir + "/namespace");
  if (ns.ok()) {
    cfg.default_namespace = std::string(absl::StripAsciiWhitespace(*ns));
  }
  return cfg;
}

absl::StatusOr<KubeConfig> LoadDefaultConfig(absl::string_view explicit_path) {
  if (!explicit_path.empty()) return LoadKubeConfig(explicit_path);
  const char* env = std::getenv("KUBECONFIG");
  if (env != nullptr && *env != '\0') {
    std::string first(env);
    first = first.substr(0, first.find(':'));
    return LoadKubeConfig(first);
  }
  if (std::getenv("KUBERNETES_SERVICE_HOST") != nullptr) {
    return LoadInClusterConfig();
  }
  const char* home = std::getenv("HOME");
  if (home == nullptr) {
    return absl::FailedPreconditionError("no kubeconfig: HOME unset");
  }
  return LoadKubeConfig(absl::StrCat(home, "/.kube/config"));
}

}  // namespace daxlease::k8s
