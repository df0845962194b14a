#include "tools/csi-client/commands.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "proto/csi.pb.h"

namespace daxlease::csiclient {
namespace {

using ::testing::HasSubstr;

template <typename T>
T As(const Invocation& inv) {
  T out;
  out.CopyFrom(*inv.request);
  return out;
}

TEST(CommandsTest, EveryCommandNamesARealMethodAndField) {
  for (const CommandSpec& c : Commands()) {
    std::vector<std::string> args = {c.name};
    auto inv = ParseCommand(args);
    ASSERT_TRUE(inv.ok()) << c.name << ": " << inv.status();
    EXPECT_EQ(inv->method, c.method);
    EXPECT_TRUE(NewResponse(c.method).ok()) << c.method;
    for (const FlagSpec& f : c.flags) {
      std::string value = f.kind == FlagKind::kMap     ? "k=v"
                          : f.kind == FlagKind::kBytes ? "1Mi"
                          : f.kind == FlagKind::kInt32 ? "3"
                                                       : "x";
      std::vector<std::string> a = {c.name, std::string("--") + f.name};
      if (f.kind != FlagKind::kBool) a.push_back(value);
      auto r = ParseCommand(a);
      EXPECT_TRUE(r.ok()) << c.name << " --" << f.name << ": " << r.status();
    }
  }
}

TEST(CommandsTest, CreateVolumeFillsCapacityParamsAndMountCapability) {
  auto inv = ParseCommand({"create-volume", "--name", "pvc-1",
                           "--capacity-bytes", "64Mi", "--limit-bytes=1Gi",
                           "--param", "daxlease.io/mode=fsdax", "--param",
                           "csi.storage.k8s.io/fstype=xfs", "--fstype", "xfs"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(inv->method, "/csi.v1.Controller/CreateVolume");
  auto req = As<csi::v1::CreateVolumeRequest>(*inv);
  EXPECT_EQ(req.name(), "pvc-1");
  EXPECT_EQ(req.capacity_range().required_bytes(), 64 << 20);
  EXPECT_EQ(req.capacity_range().limit_bytes(), 1 << 30);
  EXPECT_EQ(req.parameters().at("daxlease.io/mode"), "fsdax");
  EXPECT_EQ(req.parameters().at("csi.storage.k8s.io/fstype"), "xfs");
  ASSERT_EQ(req.volume_capabilities_size(), 1);
  EXPECT_EQ(req.volume_capabilities(0).mount().fs_type(), "xfs");
  EXPECT_EQ(req.volume_capabilities(0).access_mode().mode(),
            csi::v1::VolumeCapability::AccessMode::SINGLE_NODE_WRITER);
}

TEST(CommandsTest, PublishBlockReadonlySetsSingularCapability) {
  auto inv = ParseCommand({"node-publish-volume", "--volume-id", "v",
                           "--staging-target-path", "/s", "--target-path", "/t",
                           "--readonly", "--block", "--access-mode",
                           "single-node-reader-only"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  auto req = As<csi::v1::NodePublishVolumeRequest>(*inv);
  EXPECT_TRUE(req.readonly());
  EXPECT_TRUE(req.volume_capability().has_block());
  EXPECT_EQ(req.volume_capability().access_mode().mode(),
            csi::v1::VolumeCapability::AccessMode::SINGLE_NODE_READER_ONLY);
  EXPECT_EQ(req.target_path(), "/t");
}

TEST(CommandsTest, OptionalCapabilityOnlyWhenAsked) {
  auto plain = ParseCommand(
      {"node-expand-volume", "--volume-id", "v", "--capacity-bytes", "2G"});
  ASSERT_TRUE(plain.ok());
  auto req = As<csi::v1::NodeExpandVolumeRequest>(*plain);
  EXPECT_FALSE(req.has_volume_capability());
  EXPECT_EQ(req.capacity_range().required_bytes(), 2000000000);
  auto with =
      ParseCommand({"node-expand-volume", "--volume-id", "v", "--block"});
  ASSERT_TRUE(with.ok());
  EXPECT_TRUE(As<csi::v1::NodeExpandVolumeRequest>(*with)
                  .volume_capability()
                  .has_block());
}

TEST(CommandsTest, UsageErrors) {
  EXPECT_THAT(ParseCommand({"nope"}).status().message(),
              HasSubstr("unknown command"));
  EXPECT_THAT(
      ParseCommand({"delete-volume", "--bogus", "1"}).status().message(),
      HasSubstr("unknown flag --bogus"));
  EXPECT_THAT(ParseCommand({"delete-volume", "--volume-id"}).status().message(),
              HasSubstr("needs a value"));
  EXPECT_THAT(
      ParseCommand({"create-volume", "--param", "novalue"}).status().message(),
      HasSubstr("key=value"));
  EXPECT_THAT(ParseCommand({"create-volume", "--capacity-bytes", "12Q"})
                  .status()
                  .message(),
              HasSubstr("byte count"));
  EXPECT_THAT(ParseCommand({"create-volume", "--access-mode", "everyone"})
                  .status()
                  .message(),
              HasSubstr("unknown mode"));
  EXPECT_THAT(ParseCommand({"create-volume", "--block", "--fstype", "ext4"})
                  .status()
                  .message(),
              HasSubstr("cannot be combined"));
  // Capability flags are only for commands that carry a capability.
  EXPECT_FALSE(ParseCommand({"delete-volume", "--block"}).ok());
}

TEST(CommandsTest, CallSendsArbitraryJson) {
  auto inv = ParseCommand({"call", "NodeStageVolume", "--json",
                           R"({"volumeId":"../x","stagingTargetPath":""})"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(inv->method, "/csi.v1.Node/NodeStageVolume");
  EXPECT_EQ(As<csi::v1::NodeStageVolumeRequest>(*inv).volume_id(), "../x");

  for (const char* name :
       {"/csi.v1.Controller/DeleteVolume", "csi.v1.Controller.DeleteVolume",
        "delete-volume", "DeleteVolume"}) {
    auto r = ParseCommand({"call", name});
    ASSERT_TRUE(r.ok()) << name << ": " << r.status();
    EXPECT_EQ(r->method, "/csi.v1.Controller/DeleteVolume");
  }
  EXPECT_FALSE(ParseCommand({"call", "NoSuchRpc"}).ok());
  EXPECT_THAT(ParseCommand({"call", "Probe", "--json", R"({"bogus":1})"})
                  .status()
                  .message(),
              HasSubstr("not a valid"));
}

TEST(CommandsTest, ByteCounts) {
  EXPECT_EQ(*ParseByteCount("4096"), 4096);
  EXPECT_EQ(*ParseByteCount("300Mi"), 300LL << 20);
  EXPECT_EQ(*ParseByteCount("1G"), 1000000000);
  EXPECT_FALSE(ParseByteCount("-1").ok());
  EXPECT_FALSE(ParseByteCount("Mi").ok());
  EXPECT_FALSE(ParseByteCount("99999999999Ti").ok());
}

TEST(CommandsTest, UsageListsEveryCommand) {
  std::string usage = Usage();
  for (const CommandSpec& c : Commands()) {
    EXPECT_THAT(usage, HasSubstr(c.name));
  }
}

}  // namespace
}  // namespace daxlease::csiclient
