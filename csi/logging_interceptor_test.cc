#include "csi/logging_interceptor.h"

#include "gtest/gtest.h"
#include "proto/csi.pb.h"

namespace daxlease::csi {
namespace {

TEST(LoggingInterceptorTest, VolumeIdComesFromIdOrNameOnly) {
  ::csi::v1::NodeStageVolumeRequest stage;
  stage.set_volume_id("pvc-1");
  (*stage.mutable_secrets())["password"] = "hunter2";
  EXPECT_EQ(RequestVolumeId(stage), "pvc-1");
  ::csi::v1::CreateVolumeRequest create;
  create.set_name("claim-7");
  EXPECT_EQ(RequestVolumeId(create), "claim-7");
  ::csi::v1::NodeGetInfoRequest info;
  EXPECT_EQ(RequestVolumeId(info), "");
}

}  // namespace
}  // namespace daxlease::csi
