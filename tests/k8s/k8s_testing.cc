#include "tests/k8s/k8s_testing.h"

#include <unistd.h>

#include <cstdlib>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "lib/base/status.h"
#include "lib/k8s/config.h"

namespace daxlease::k8s::testing {
namespace {

std::string ReadableEnvFile(const char* var) {
  const char* v = std::getenv(var);
  if (v == nullptr || *v == '\0' || access(v, R_OK) != 0) return "";
  return v;
}

}  // namespace

std::string KubeconfigPath() { return ReadableEnvFile("DAXLEASE_KUBECONFIG"); }
std::string UserKubeconfigPath() {
  std::string p = ReadableEnvFile("DAXLEASE_K8S_USER_KUBECONFIG");
  if (!p.empty()) return p;
  std::string admin = KubeconfigPath();
  if (admin.empty()) return "";
  p = admin.substr(0, admin.rfind('/') + 1) + "kubeconfig-user";
  return access(p.c_str(), R_OK) == 0 ? p : "";
}

Resource WidgetResource() {
  return {"k8stest.daxlease.io", "v1", "widgets", true};
}

Json WidgetCrd() {
  return Json::parse(R"({
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.k8stest.daxlease.io"},
    "spec": {
      "group": "k8stest.daxlease.io",
      "scope": "Namespaced",
      "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
      "versions": [{
        "name": "v1", "served": true, "storage": true,
        "subresources": {"status": {}},
        "schema": {"openAPIV3Schema": {
          "type": "object",
          "properties": {
            "spec": {"type": "object", "required": ["size"],
                     "properties": {"size": {"type": "integer", "minimum": 1},
                                    "color": {"type": "string"}}},
            "status": {"type": "object",
                       "properties": {"phase": {"type": "string"},
                                      "count": {"type": "integer"},
                                      "writers": {"type": "object",
                                                  "additionalProperties": {"type": "integer"}}}}
          }}}
      }]
    }})");
}

Json Widget(const std::string& ns, const std::string& name, int size) {
  return {{"apiVersion", "k8stest.daxlease.io/v1"},
          {"kind", "Widget"},
          {"metadata", {{"name", name}, {"namespace", ns}}},
          {"spec", {{"size", size}}}};
}

std::string RandomSuffix() {
  static std::mt19937_64 rng(std::random_device{}() ^ getpid());
  return absl::StrFormat("%08x", static_cast<uint32_t>(rng()));
}

absl::StatusOr<std::unique_ptr<RestKubeClient>> NewClient(
    const std::string& kubeconfig) {
  std::string path = kubeconfig.empty() ? KubeconfigPath() : kubeconfig;
  if (path.empty()) return absl::FailedPreconditionError("no kubeconfig");
  ASSIGN_OR_RETURN(KubeConfig cfg, LoadKubeConfig(path));
  return RestKubeClient::Create(cfg);
}

absl::StatusOr<std::string> CreateTestNamespace(KubeClient& c,
                                                absl::string_view prefix) {
  std::string name = absl::StrCat(prefix, "-", RandomSuffix());
  Json ns = {{"apiVersion", "v1"},
             {"kind", "Namespace"},
             {"metadata", {{"name", name}}}};
  RETURN_IF_ERROR(c.Create(NamespaceResource(), ns).status());
  return name;
}

absl::Status EnsureCrd(KubeClient& c, const Json& crd) {
  absl::StatusOr<Json> created = c.Create(CrdResource(), crd);
  if (!created.ok() && !absl::IsAlreadyExists(created.status())) {
    return created.status();
  }
  const Json& spec = crd["spec"];
  Resource r{spec["group"].get<std::string>(),
             spec["versions"][0]["name"].get<std::string>(),
             spec["names"]["plural"].get<std::string>(),
             spec["scope"].get<std::string>() == "Namespaced"};
  absl::Time deadline = absl::Now() + absl::Seconds(60);
  absl::Status last;
  while (absl::Now() < deadline) {
    absl::StatusOr<Json> got = c.Get(CrdResource(), "", NameOf(crd));
    bool established = false;
    if (got.ok() && got->contains("status") &&
        (*got)["status"].contains("conditions")) {
      for (const Json& cond : (*got)["status"]["conditions"]) {
        if (cond.value("type", "") == "Established" &&
            cond.value("status", "") == "True") {
          established = true;
        }
      }
    }
    if (established) {
      ListOptions one;
      one.limit = 1;
      last = c.List(r, "", one).status();
      if (last.ok()) return absl::OkStatus();
    } else if (!got.ok()) {
      last = got.status();
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
  return absl::DeadlineExceededError(absl::StrCat(
      "CRD ", NameOf(crd), " not served after 60 s: ", last.message()));
}

}  // namespace daxlease::k8s::testing
