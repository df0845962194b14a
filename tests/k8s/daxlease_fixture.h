// DaxleaseK8sTest: the fixture of the tests that run daxlease's own
// processes against the shared control plane (label k8s): the operator's,
// the channel's and the node agent's. SetUp installs the CRDs, makes an
// admin client and a name prefix of this test's own; TearDown deletes,
// best effort, every DaxLease, DaxRecall, DaxMigration and DaxVolume that
// the test made (named with the prefix, or whose spec.volume is), dropping
// their finalizers first, so the next test sees none of them. Between them,
// the objects as a user or an agent writes and reads them.
#ifndef DAXLEASE_TESTS_K8S_DAXLEASE_FIXTURE_H_
#define DAXLEASE_TESTS_K8S_DAXLEASE_FIXTURE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "gtest/gtest.h"
#include "lib/api/json.h"
#include "lib/api/resources.h"
#include "lib/api/types.h"
#include "lib/k8s/client.h"

namespace daxlease::k8s::testing {

class DaxleaseK8sTest : public ::testing::Test {
 protected:
  // `name_chars`: how much of the test's (lowercased) name starts prefix_,
  // before "-<pid>"; short enough for the names built from it.
  explicit DaxleaseK8sTest(size_t name_chars = 30) : name_chars_(name_chars) {}

  // Skips when there is no control plane (fails under CI). A subclass that
  // overrides it calls it first and returns if IsSkipped() or
  // HasFatalFailure().
  void SetUp() override;
  // A subclass stops its processes first, then calls it.
  void TearDown() override;

  // prefix_ + "-" + suffix: a name of this test's.
  std::string N(const std::string& suffix) const;

  // Creates (failing the test if it cannot) a shared 1 GiB ext4 fsdax
  // DaxVolume owned by `owner_node`, a read-write DaxLease of `volume` for a
  // pod on `node`, a Manual DaxRecall of `volume` with `grace` seconds.
  void CreateVolume(const std::string& name,
                    const std::string& owner_node = "node-owner");
  void CreateLease(const std::string& name, const std::string& volume,
                   const std::string& node);
  void CreateRecall(const std::string& name, const std::string& volume,
                    int64_t grace);

  // The object as stored now; nullopt when it is missing or unreadable.
  template <typename T>
  std::optional<T> Get(const Resource& r, const std::string& name) {
    auto j = client_->Get(r, "", name);
    if (!j.ok()) return std::nullopt;
    auto t = api::FromJson<T>(*j);
    if (!t.ok()) return std::nullopt;
    return *t;
  }
  std::optional<api::DaxLease> Lease(const std::string& name) {
    return Get<api::DaxLease>(api::DaxLeaseResource(), name);
  }
  std::optional<api::DaxRecall> Recall(const std::string& name) {
    return Get<api::DaxRecall>(api::DaxRecallResource(), name);
  }
  std::optional<api::DaxVolume> Volume(const std::string& name) {
    return Get<api::DaxVolume>(api::DaxVolumeResource(), name);
  }
  std::optional<api::DaxMigration> Migration(const std::string& name) {
    return Get<api::DaxMigration>(api::DaxMigrationResource(), name);
  }
  bool LeaseIs(const std::string& name, api::LeaseState s) {
    auto l = Lease(name);
    return l.has_value() && l->status.state == s;
  }
  bool RecallIs(const std::string& name, api::RecallPhase p) {
    auto r = Recall(name);
    return r.has_value() && r->status.phase == p;
  }

  std::string kubeconfig_;
  std::unique_ptr<KubeClient> client_;
  std::string prefix_;

 private:
  const size_t name_chars_;
};

}  // namespace daxlease::k8s::testing

#endif  // DAXLEASE_TESTS_K8S_DAXLEASE_FIXTURE_H_
