// kubectl-daxlease: the kubectl plugin (`kubectl daxlease ...`).
//   kubectl daxlease status [VOLUME]
//   kubectl daxlease recall VOLUME [--grace SECONDS] [--reason Manual|Evict]
//   kubectl daxlease migrate VOLUME --to NODE
// Finds the cluster as kubectl does: --kubeconfig, else $KUBECONFIG, else
// ~/.kube/config (in a pod: the service account).
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "lib/api/json.h"
#include "lib/api/resources.h"
#include "lib/base/clock.h"
#include "lib/k8s/config.h"
#include "lib/k8s/rest_client.h"
#include "operator/kubectl_recall.h"
#include "operator/reconciler.h"
#include "operator/status_table.h"

namespace daxlease::op {
namespace {

constexpr char kUsage[] =
    "Usage:\n"
    "  kubectl daxlease status [VOLUME]            volumes, leases, recalls\n"
    "  kubectl daxlease recall VOLUME [--grace S] [--reason Manual|Evict]\n"
    "  kubectl daxlease migrate VOLUME --to NODE   move the volume's data and "
    "ownership (a DaxMigration)\n"
    "Options: --kubeconfig PATH\n";

// 8 characters of [a-z0-9]: a name suffix no other caller picks.
std::string RandomTag() {
  static constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  std::random_device rd;
  std::string tag;
  for (int i = 0; i < 8; ++i) tag += kAlphabet[rd() % 36];
  return tag;
}

int Fail(const std::string& msg) {
  std::fprintf(stderr, "error: %s\n", msg.c_str());
  return 1;
}

template <typename T>
absl::StatusOr<std::vector<T>> ListKind(k8s::KubeClient& c,
                                        const k8s::Resource& r) {
  absl::StatusOr<k8s::ListResult> list = k8s::ListAll(c, r, "", {});
  if (!list.ok()) return list.status();
  std::vector<T> out;
  for (const k8s::Json& item : list->items) {
    absl::StatusOr<T> t = api::FromJson<T>(item);
    if (t.ok()) out.push_back(*std::move(t));
  }
  return out;
}

int Status(k8s::KubeClient& c, const std::string& volume) {
  auto volumes = ListKind<api::DaxVolume>(c, api::DaxVolumeResource());
  if (!volumes.ok()) return Fail(volumes.status().ToString());
  auto leases = ListKind<api::DaxLease>(c, api::DaxLeaseResource());
  if (!leases.ok()) return Fail(leases.status().ToString());
  auto recalls = ListKind<api::DaxRecall>(c, api::DaxRecallResource());
  if (!recalls.ok()) return Fail(recalls.status().ToString());
  auto migrations = ListKind<api::DaxMigration>(c, api::DaxMigrationResource());
  if (!migrations.ok()) migrations = std::vector<api::DaxMigration>{};
  if (!volume.empty()) {
    std::erase_if(*migrations, [&](const api::DaxMigration& m) {
      return m.spec.volume != volume;
    });
    std::erase_if(*volumes, [&](const api::DaxVolume& v) {
      return v.metadata.name != volume;
    });
    std::erase_if(*recalls, [&](const api::DaxRecall& r) {
      return r.spec.volume != volume;
    });
    if (volumes->empty()) {
      return Fail(absl::StrCat("DaxVolume \"", volume, "\" not found"));
    }
  }
  std::fputs(FormatStatus(*volumes, *leases, *recalls, base::RealClock().Now(),
                          *migrations)
                 .c_str(),
             stdout);
  return 0;
}

int Migrate(k8s::KubeClient& c, const std::string& volume,
            const std::string& to) {
  if (to.empty()) return Fail("migrate needs --to NODE");
  if (!c.Get(api::DaxVolumeResource(), "", volume).ok()) {
    return Fail(absl::StrCat("DaxVolume \"", volume, "\" not found"));
  }
  api::DaxMigration m;
  // Our own name (a random tag): a retried POST finds its first try.
  m.metadata.name = absl::StrCat(volume, "-to-", to, "-", RandomTag());
  m.spec.volume = volume;
  m.spec.target_node = to;
  k8s::Json obj = api::ToJson(m);
  obj.erase("status");
  absl::StatusOr<k8s::Json> created =
      c.Create(api::DaxMigrationResource(), obj);
  if (!created.ok() && !absl::IsAlreadyExists(created.status())) {
    return Fail(created.status().ToString());
  }
  std::printf("daxmigration.daxlease.io/%s created\n", m.metadata.name.c_str());
  return 0;
}

int Recall(k8s::KubeClient& c, const std::string& volume,
           std::optional<int64_t> grace, const std::string& reason) {
  api::DaxRecall r;
  r.spec.volume = volume;
  r.spec.grace_seconds = grace;
  absl::StatusOr<api::RecallReason> rr =
      api::ParseEnum<api::RecallReason>(reason);
  if (!rr.ok()) return Fail(rr.status().ToString());
  if (absl::Status by_hand = CheckRecallReasonByHand(*rr); !by_hand.ok()) {
    return Fail(std::string(by_hand.message()));
  }
  r.spec.reason = *rr;
  if (!c.Get(api::DaxVolumeResource(), "", volume).ok()) {
    return Fail(absl::StrCat("DaxVolume \"", volume, "\" not found"));
  }
  // The name is ours alone (a random tag), so the create is idempotent and
  // an answer lost on the way back never makes a second recall.
  absl::StatusOr<k8s::Json> created =
      CreateRecallOnce(c, r, absl::StrCat(volume, "-recall-", RandomTag()));
  if (!created.ok()) return Fail(created.status().ToString());
  std::printf("daxrecall.daxlease.io/%s created\n",
              k8s::NameOf(*created).c_str());
  return 0;
}

int Main(int argc, char** argv) {
  std::vector<std::string> pos;
  std::string kubeconfig, reason = "Manual", to;
  std::optional<int64_t> grace;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&](const std::string& flag) -> std::optional<std::string> {
      if (a == flag && i + 1 < argc) return std::string(argv[++i]);
      if (absl::StartsWith(a, flag + "=")) return a.substr(flag.size() + 1);
      return std::nullopt;
    };
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (auto v = value("--kubeconfig")) {
      kubeconfig = *v;
    } else if (auto v = value("--grace")) {
      int64_t g = 0;
      if (!absl::SimpleAtoi(*v, &g) || g < 1) {
        return Fail("--grace needs a whole number of seconds >= 1");
      }
      grace = g;
    } else if (auto v = value("--reason")) {
      reason = *v;
    } else if (auto v = value("--to")) {
      to = *v;
    } else if (absl::StartsWith(a, "-")) {
      return Fail(absl::StrCat("unknown option ", a, "\n", kUsage));
    } else {
      pos.push_back(a);
    }
  }
  if (pos.empty() ||
      (pos[0] != "status" && pos[0] != "recall" && pos[0] != "migrate") ||
      (pos[0] != "status" && pos.size() != 2) || pos.size() > 2) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  absl::StatusOr<k8s::KubeConfig> config = k8s::LoadDefaultConfig(kubeconfig);
  if (!config.ok()) return Fail(config.status().ToString());
  auto client = k8s::RestKubeClient::Create(*config);
  if (!client.ok()) return Fail(client.status().ToString());
  if (pos[0] == "status") return Status(**client, pos.size() > 1 ? pos[1] : "");
  if (pos[0] == "migrate") return Migrate(**client, pos[1], to);
  return Recall(**client, pos[1], grace, reason);
}

}  // namespace
}  // namespace daxlease::op

int main(int argc, char** argv) { return daxlease::op::Main(argc, argv); }
