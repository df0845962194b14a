#include "lib/metrics/csi_operations.h"

#include <map>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"

namespace daxlease::metrics {
namespace {

std::map<std::string, std::string> Labels(const prometheus::ClientMetric& m) {
  std::map<std::string, std::string> out;
  for (const auto& l : m.label) out[l.name] = l.value;
  return out;
}

TEST(GrpcCodeNameTest, SpellsGoCodeNames) {
  EXPECT_EQ(GrpcCodeName(0), "OK");
  EXPECT_EQ(GrpcCodeName(3), "InvalidArgument");
  EXPECT_EQ(GrpcCodeName(10), "Aborted");
  EXPECT_EQ(GrpcCodeName(16), "Unauthenticated");
  EXPECT_EQ(GrpcCodeName(17), "Code(17)");
  EXPECT_EQ(GrpcCodeName(-1), "Code(-1)");
}

TEST(CsiOperationsTest, OneSeriesPerMethodAndCode) {
  prometheus::Registry registry;
  CsiOperations ops(registry, "dax.daxlease.io");
  ops.Observe("/csi.v1.Node/NodeStageVolume", 0, 0.2);
  ops.Observe("/csi.v1.Node/NodeStageVolume", 0, 3);
  ops.Observe("/csi.v1.Controller/CreateVolume", 10, 0.01);

  auto families = registry.Collect();
  ASSERT_EQ(families.size(), 1u);
  EXPECT_EQ(families[0].name, "csi_plugin_operations_seconds");
  ASSERT_EQ(families[0].metric.size(), 2u);
  int seen = 0;
  for (const auto& m : families[0].metric) {
    auto labels = Labels(m);
    EXPECT_EQ(labels["driver_name"], "dax.daxlease.io");
    if (labels["method_name"] == "/csi.v1.Node/NodeStageVolume") {
      EXPECT_EQ(labels["grpc_status_code"], "OK");
      EXPECT_EQ(m.histogram.sample_count, 2u);
      EXPECT_DOUBLE_EQ(m.histogram.sample_sum, 3.2);
      // 0.2 s falls in the 0.25 bucket, 3 s only from the 5 s bucket on.
      EXPECT_EQ(m.histogram.bucket[1].cumulative_count, 1u);
      EXPECT_EQ(m.histogram.bucket[5].cumulative_count, 2u);
      ++seen;
    } else {
      EXPECT_EQ(labels["method_name"], "/csi.v1.Controller/CreateVolume");
      EXPECT_EQ(labels["grpc_status_code"], "Aborted");
      EXPECT_EQ(m.histogram.sample_count, 1u);
      ++seen;
    }
  }
  EXPECT_EQ(seen, 2);
}

}  // namespace
}  // namespace daxlease::metrics
