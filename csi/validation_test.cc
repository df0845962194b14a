#include "csi/validation.h"

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace daxlease::csi {
namespace {

TEST(ValidationTest, VolumeIds) {
  EXPECT_TRUE(ValidateVolumeId("pvc-1-0123456789abcdef").ok());
  EXPECT_TRUE(ValidateVolumeId("no-such-volume").ok());
  EXPECT_FALSE(ValidateVolumeId("").ok());
  EXPECT_FALSE(ValidateVolumeId("a/b").ok());
  EXPECT_FALSE(ValidateVolumeId("..").ok());
  EXPECT_FALSE(ValidateVolumeId(std::string("a\0b", 3)).ok());
  EXPECT_FALSE(ValidateVolumeId(std::string(129, 'a')).ok());
}

// Only the documented alphabet: what VolumeIdForName makes ([a-z0-9-],
// starting with a letter or digit). Everything else is INVALID_ARGUMENT.
TEST(ValidationTest, VolumeIdsOutsideTheAlphabetAreInvalid) {
  EXPECT_TRUE(ValidateVolumeId("a").ok());
  EXPECT_TRUE(ValidateVolumeId("0-a-").ok());
  EXPECT_TRUE(ValidateVolumeId(std::string(128, 'z')).ok());
  for (const std::string& bad :
       {std::string("pvc\n1"), std::string("pvc\t1"), std::string("pvc\x01"),
        std::string("pvc\x7f"), std::string("pvc\x1b[31m"),
        std::string("pvc 1"), std::string("Pvc-1"), std::string("pvc_1"),
        std::string("pvc.1"), std::string("."), std::string("-pvc"),
        std::string("--force"), std::string("pvc\xc3\xa9"),
        std::string("pvc;rm"), std::string("pvc$x"), std::string("*")}) {
    absl::Status s = ValidateVolumeId(bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument)
        << absl::CEscape(bad);
    EXPECT_TRUE(absl::StrContains(s.message(), "volume_id")) << s.message();
  }
}

TEST(ValidationTest, Names) {
  EXPECT_TRUE(ValidateName(std::string(128, 'n')).ok());
  EXPECT_FALSE(ValidateName(std::string(129, 'n')).ok());
  EXPECT_FALSE(ValidateName("").ok());
}

TEST(ValidationTest, Paths) {
  std::vector<std::string> roots = {"/var/lib/kubelet", "/tmp/t/"};
  EXPECT_TRUE(ValidatePath("p", "/var/lib/kubelet/pods/x", roots).ok());
  EXPECT_TRUE(ValidatePath("p", "/tmp/t/x", roots).ok());
  EXPECT_FALSE(ValidatePath("p", "/var/lib/kubelet", roots).ok())
      << "root itself";
  EXPECT_FALSE(ValidatePath("p", "/var/lib/kubeletx/a", roots).ok());
  EXPECT_FALSE(ValidatePath("p", "/var/lib/kubelet/../../etc", roots).ok());
  EXPECT_FALSE(ValidatePath("p", "var/lib/kubelet/a", roots).ok());
  EXPECT_FALSE(ValidatePath("p", "", roots).ok());
  EXPECT_TRUE(ValidatePath("p", "/var/lib/kubelet/a..b", roots).ok());
  absl::Status s = ValidatePath("target_path", "/etc", roots);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("target_path"), absl::string_view::npos);
}

// Paths that are only looked up in a volume's record: anything well-formed
// passes (where the volume is not, the call answers NotFound), malformed
// paths do not.
TEST(ValidationTest, LookupPaths) {
  EXPECT_TRUE(ValidateLookupPath("volume_path", "some/path").ok());
  EXPECT_TRUE(ValidateLookupPath("volume_path", "/etc").ok());
  EXPECT_TRUE(ValidateLookupPath("volume_path", "/k/a..b").ok());
  EXPECT_EQ(ValidateLookupPath("volume_path", "").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateLookupPath("volume_path", "/k/../etc").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateLookupPath("volume_path", "..").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateLookupPath("volume_path", std::string("/k/a\0b", 6)).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ValidationTest, Parameters) {
  google::protobuf::Map<std::string, std::string> p;
  p["daxlease.io/mode"] = "devdax";
  p["daxlease.io/share"] = "true";
  p["daxlease.io/recallGraceSeconds"] = "10";
  p["csi.storage.k8s.io/fstype"] = "xfs";
  p["csi.storage.k8s.io/pvc/namespace"] = "default";
  auto v = ValidateParameters(p);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->mode, VolumeMode::kDevdax);
  EXPECT_TRUE(v->share);
  EXPECT_EQ(v->recall_grace_seconds, 10);
  EXPECT_EQ(v->fs_type, "xfs");
  EXPECT_EQ(v->normalized.size(), 3u);

  for (auto [k, val] : std::vector<std::pair<std::string, std::string>>{
           {"daxlease.io/mode", "pmem"},
           {"daxlease.io/share", "yes"},
           {"daxlease.io/recallGraceSeconds", "0"},
           {"csi.storage.k8s.io/fstype", "ext3"},
           {"daxlease.io/unknown", "x"},
           {"mode", "fsdax"}}) {
    google::protobuf::Map<std::string, std::string> bad;
    bad[k] = val;
    EXPECT_EQ(ValidateParameters(bad).status().code(),
              absl::StatusCode::kInvalidArgument)
        << k;
  }
  google::protobuf::Map<std::string, std::string> big;
  big["csi.storage.k8s.io/x"] = std::string(4097, 'x');
  EXPECT_FALSE(ValidateParameters(big).ok());
}

TEST(ValidationTest, Sizes) {
  ::csi::v1::CapacityRange r;
  auto s = ComputeSize(nullptr, kMinVolumeBytes);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->bytes, kDefaultVolumeBytes);
  r.set_required_bytes(1);
  EXPECT_EQ(ComputeSize(&r, kMinVolumeBytes)->bytes, kMinVolumeBytes);
  r.set_required_bytes((3 << 20) + 5);
  EXPECT_EQ(ComputeSize(&r, 0)->bytes, 4u << 20);
  r.set_limit_bytes((3 << 20) + 4096);
  EXPECT_EQ(ComputeSize(&r, 0)->bytes, (3u << 20) + 4096);
  r.set_limit_bytes(1 << 20);
  EXPECT_EQ(ComputeSize(&r, 0).status().code(), absl::StatusCode::kOutOfRange);
  r.set_required_bytes(-5);
  r.set_limit_bytes(0);
  EXPECT_EQ(ComputeSize(&r, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  r.set_required_bytes(0);
  r.set_limit_bytes(100 << 20);
  EXPECT_EQ(ComputeSize(&r, kMinVolumeBytes)->bytes, 100u << 20);

  ::csi::v1::CapacityRange want;
  want.set_required_bytes(10);
  want.set_limit_bytes(20);
  EXPECT_TRUE(CapacityMatches(15, &want));
  EXPECT_FALSE(CapacityMatches(25, &want));
  EXPECT_FALSE(CapacityMatches(5, &want));
}

TEST(ValidationTest, VolumeIdsAreDeterministicKubernetesNames) {
  std::string a = VolumeIdForName("pvc-3f2a_B.C");
  EXPECT_EQ(a, VolumeIdForName("pvc-3f2a_B.C"));
  EXPECT_NE(a, VolumeIdForName("pvc-3f2a_B.D"));
  for (const std::string& name :
       {std::string("pvc-3f2a_B.C"), std::string(128, 'Z'), std::string("___"),
        std::string("a")}) {
    std::string id = VolumeIdForName(name);
    EXPECT_LE(id.size(), 63u) << id;
    EXPECT_TRUE(std::isalnum(static_cast<unsigned char>(id.front()))) << id;
    EXPECT_TRUE(std::isalnum(static_cast<unsigned char>(id.back()))) << id;
    for (char c : id) {
      EXPECT_TRUE((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')
          << id;
    }
  }
}

TEST(ValidationTest, CapabilitiesAndFsType) {
  ::csi::v1::VolumeCapability c;
  EXPECT_FALSE(ValidateCapability(c, false).ok()) << "no access type";
  c.mutable_mount()->set_fs_type("xfs");
  EXPECT_FALSE(ValidateCapability(c, false).ok()) << "no access mode";
  c.mutable_access_mode()->set_mode(
      ::csi::v1::VolumeCapability::AccessMode::MULTI_NODE_READER_ONLY);
  EXPECT_FALSE(ValidateCapability(c, false).ok());
  auto shared = ValidateCapability(c, true);
  ASSERT_TRUE(shared.ok());
  EXPECT_TRUE(shared->reader_only);
  c.mutable_access_mode()->set_mode(
      ::csi::v1::VolumeCapability::AccessMode::SINGLE_NODE_WRITER);
  c.mutable_mount()->add_mount_flags("noatime,dax");
  EXPECT_FALSE(ValidateCapability(c, false).ok()) << "comma injection";

  VolumeParameters p;
  CapabilityInfo xfs;
  xfs.fs_type = "xfs";
  EXPECT_EQ(*ResolveFsType(p, {}), "ext4");
  EXPECT_EQ(*ResolveFsType(p, {xfs}), "xfs");
  p.fs_type = "ext4";
  EXPECT_FALSE(ResolveFsType(p, {xfs}).ok());
}

TEST(ValidationTest, TopologyAndTokens) {
  ::csi::v1::TopologyRequirement req;
  EXPECT_TRUE(TopologyAllowsNode(req, "n1"));
  (*req.add_requisite()->mutable_segments())["daxlease.io/node"] = "n2";
  EXPECT_FALSE(TopologyAllowsNode(req, "n1"));
  (*req.add_requisite()->mutable_segments())["daxlease.io/node"] = "n1";
  EXPECT_TRUE(TopologyAllowsNode(req, "n1"));

  EXPECT_EQ(*ParseStartingToken("", 3), 0u);
  EXPECT_EQ(*ParseStartingToken("3", 3), 3u);
  EXPECT_EQ(ParseStartingToken("4", 3).status().code(),
            absl::StatusCode::kAborted);
  EXPECT_EQ(ParseStartingToken("x", 3).status().code(),
            absl::StatusCode::kAborted);
}

}  // namespace
}  // namespace daxlease::csi
