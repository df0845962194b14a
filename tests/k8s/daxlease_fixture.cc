#include "tests/k8s/daxlease_fixture.h"

#include <unistd.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "tests/k8s/k8s_testing.h"
#include "tests/testing/prereq.h"

namespace daxlease::k8s::testing {

void DaxleaseK8sTest::SetUp() {
  kubeconfig_ = KubeconfigPath();
  DAXLEASE_REQUIRE(!kubeconfig_.empty(),
                   "no test control plane (the k8s CTest fixture starts "
                   "one; run ctest -L k8s)");
  auto c = NewClient(kubeconfig_);
  ASSERT_TRUE(c.ok()) << c.status();
  client_ = std::move(*c);
  absl::Status crds = InstallDaxleaseCrds(kubeconfig_);
  ASSERT_TRUE(crds.ok()) << crds;
  std::string test =
      ::testing::UnitTest::GetInstance()->current_test_info()->name();
  prefix_ = absl::StrCat(absl::AsciiStrToLower(test).substr(0, name_chars_),
                         "-", getpid());
}

void DaxleaseK8sTest::TearDown() {
  if (client_ == nullptr || prefix_.empty()) return;
  for (const Resource& r :
       {api::DaxLeaseResource(), api::DaxRecallResource(),
        api::DaxMigrationResource(), api::DaxVolumeResource()}) {
    auto list = ListAll(*client_, r, "");
    if (!list.ok()) continue;
    for (const Json& o : list->items) {
      const std::string name = NameOf(o);
      const std::string volume =
          o.value("spec", Json::object()).value("volume", "");
      if (name.rfind(prefix_, 0) != 0 && volume.rfind(prefix_, 0) != 0) {
        continue;
      }
      (void)client_->Patch(r, "", name, PatchType::kMerge,
                           {{"metadata", {{"finalizers", nullptr}}}});
      (void)client_->Delete(r, "", name);
    }
  }
}

std::string DaxleaseK8sTest::N(const std::string& suffix) const {
  return absl::StrCat(prefix_, "-", suffix);
}

void DaxleaseK8sTest::CreateVolume(const std::string& name,
                                   const std::string& owner_node) {
  api::DaxVolume v;
  v.metadata.name = name;
  v.spec.size_bytes = 1 << 30;
  v.spec.mode = api::VolumeMode::kFsdax;
  v.spec.fs_type = api::FsType::kExt4;
  v.spec.owner_node = owner_node;
  v.spec.share = true;
  auto st = client_->Create(api::DaxVolumeResource(), api::ToJson(v));
  ASSERT_TRUE(st.ok()) << st.status();
}

void DaxleaseK8sTest::CreateLease(const std::string& name,
                                  const std::string& volume,
                                  const std::string& node) {
  api::DaxLease l;
  l.metadata.name = name;
  l.spec = {volume, node, "default/pod", api::Access::kReadWrite};
  auto st = client_->Create(api::DaxLeaseResource(), api::ToJson(l));
  ASSERT_TRUE(st.ok()) << st.status();
}

void DaxleaseK8sTest::CreateRecall(const std::string& name,
                                   const std::string& volume, int64_t grace) {
  api::DaxRecall r;
  r.metadata.name = name;
  r.spec = {volume, api::RecallReason::kManual, grace};
  auto st = client_->Create(api::DaxRecallResource(), api::ToJson(r));
  ASSERT_TRUE(st.ok()) << st.status();
}

}  // namespace daxlease::k8s::testing
