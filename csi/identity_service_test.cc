#include "csi/identity_service.h"

#include "csi/fake_volume_backend.h"
#include "gtest/gtest.h"
#include "lib/base/version.h"

namespace daxlease::csi {
namespace {

TEST(IdentityTest, InfoCapabilitiesProbe) {
  FakeVolumeBackend backend(1 << 30);
  IdentityService svc(&backend);
  ::csi::v1::GetPluginInfoRequest ireq;
  ::csi::v1::GetPluginInfoResponse info;
  ASSERT_TRUE(svc.GetPluginInfo(nullptr, &ireq, &info).ok());
  EXPECT_EQ(info.name(), "dax.daxlease.io");
  EXPECT_EQ(info.vendor_version(), base::kVersion);

  ::csi::v1::GetPluginCapabilitiesRequest creq;
  ::csi::v1::GetPluginCapabilitiesResponse caps;
  ASSERT_TRUE(svc.GetPluginCapabilities(nullptr, &creq, &caps).ok());
  bool controller = false, topology = false, online = false;
  for (const auto& c : caps.capabilities()) {
    if (c.has_service()) {
      controller |= c.service().type() ==
                    ::csi::v1::PluginCapability::Service::CONTROLLER_SERVICE;
      topology |= c.service().type() == ::csi::v1::PluginCapability::Service::
                                            VOLUME_ACCESSIBILITY_CONSTRAINTS;
    }
    if (c.has_volume_expansion()) {
      online |= c.volume_expansion().type() ==
                ::csi::v1::PluginCapability::VolumeExpansion::ONLINE;
    }
  }
  EXPECT_TRUE(controller && topology && online);

  ::csi::v1::ProbeRequest preq;
  ::csi::v1::ProbeResponse probe;
  ASSERT_TRUE(svc.Probe(nullptr, &preq, &probe).ok());
  EXPECT_TRUE(probe.ready().value());
  backend.SetReady(absl::UnavailableError("no loop driver"));
  ASSERT_TRUE(svc.Probe(nullptr, &preq, &probe).ok());
  ASSERT_TRUE(probe.has_ready());
  EXPECT_FALSE(probe.ready().value());
}

// A backend that cannot grow volumes in place (ndctl) must not advertise
// expansion, or external-resizer would send calls that can only fail.
TEST(IdentityTest, NoExpansionCapabilityWhenBackendCannotGrow) {
  FakeVolumeBackend backend(1 << 30);
  backend.SetSupportsExpansion(false);
  IdentityService svc(&backend);
  ::csi::v1::GetPluginCapabilitiesRequest creq;
  ::csi::v1::GetPluginCapabilitiesResponse caps;
  ASSERT_TRUE(svc.GetPluginCapabilities(nullptr, &creq, &caps).ok());
  int services = 0;
  for (const auto& c : caps.capabilities()) {
    EXPECT_FALSE(c.has_volume_expansion());
    services += c.has_service() ? 1 : 0;
  }
  EXPECT_EQ(services, 2);
}

// ndctl grows by a copy to a new namespace, only while nothing uses the
// volume: OFFLINE, so external-resizer does not expand a volume in use.
TEST(IdentityTest, OfflineExpansionWhenBackendGrowsOnlyUnused) {
  FakeVolumeBackend backend(1 << 30);
  backend.SetExpandsOnline(false);
  IdentityService svc(&backend);
  ::csi::v1::GetPluginCapabilitiesRequest creq;
  ::csi::v1::GetPluginCapabilitiesResponse caps;
  ASSERT_TRUE(svc.GetPluginCapabilities(nullptr, &creq, &caps).ok());
  int expansion = 0;
  for (const auto& c : caps.capabilities()) {
    if (!c.has_volume_expansion()) continue;
    ++expansion;
    EXPECT_EQ(c.volume_expansion().type(),
              ::csi::v1::PluginCapability::VolumeExpansion::OFFLINE);
  }
  EXPECT_EQ(expansion, 1);
}

}  // namespace
}  // namespace daxlease::csi
