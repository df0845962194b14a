#include "lib/k8s/resource.h"

#include "gtest/gtest.h"

namespace daxlease::k8s {
namespace {

TEST(ResourceTest, CoreGroupNamespacedPaths) {
  Resource cm = ConfigMapResource();
  EXPECT_EQ(ResourcePath(cm, "default"),
            "/api/v1/namespaces/default/configmaps");
  EXPECT_EQ(ResourcePath(cm, "default", "c1"),
            "/api/v1/namespaces/default/configmaps/c1");
  EXPECT_EQ(ResourcePath(cm, ""), "/api/v1/configmaps");  // all namespaces
  EXPECT_EQ(cm.ApiVersion(), "v1");
  EXPECT_EQ(cm.Name(), "configmaps");
}

TEST(ResourceTest, ClusterScopedGroupWithSubresource) {
  Resource dv{"daxlease.io", "v1alpha1", "daxvolumes", false};
  EXPECT_EQ(ResourcePath(dv, "", "vol-1", "status"),
            "/apis/daxlease.io/v1alpha1/daxvolumes/vol-1/status");
  // A namespace given for a cluster-scoped resource is not put in the path.
  EXPECT_EQ(ResourcePath(dv, "ignored", "vol-1"),
            "/apis/daxlease.io/v1alpha1/daxvolumes/vol-1");
  EXPECT_EQ(dv.ApiVersion(), "daxlease.io/v1alpha1");
  EXPECT_EQ(dv.Name(), "daxvolumes.daxlease.io");
  // A subresource without a name makes no sense and is dropped.
  EXPECT_EQ(ResourcePath(dv, "", "", "status"),
            "/apis/daxlease.io/v1alpha1/daxvolumes");
}

TEST(ResourceTest, WellKnown) {
  EXPECT_EQ(ResourcePath(CoordinationLeaseResource(), "kube-system", "op"),
            "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/op");
  EXPECT_EQ(ResourcePath(CrdResource(), "", "x.example.com"),
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
            "x.example.com");
  EXPECT_EQ(ResourcePath(NamespaceResource(), "", "ns1"),
            "/api/v1/namespaces/ns1");
}

TEST(ResourceTest, ObjectKeys) {
  EXPECT_EQ(ObjectKey("ns", "a"), "ns/a");
  EXPECT_EQ(ObjectKey("", "a"), "a");
  EXPECT_EQ(SplitObjectKey("ns/a"),
            std::make_pair(std::string("ns"), std::string("a")));
  EXPECT_EQ(SplitObjectKey("a"),
            std::make_pair(std::string(""), std::string("a")));
}

}  // namespace
}  // namespace daxlease::k8s
