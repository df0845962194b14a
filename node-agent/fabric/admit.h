// The owner side's admission of a holder's FabricHello, one protocol for
// every fabric (TcpFabric, VerbsFabric): the grant a hello names and whether
// the hello may use it. The fabrics differ in what they do once admitted
// (serve requests on a socket, bind a memory window); the rules do not.
#ifndef DAXLEASE_NODE_AGENT_FABRIC_ADMIT_H_
#define DAXLEASE_NODE_AGENT_FABRIC_ADMIT_H_

#include <map>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "node-agent/fabric/fabric.h"
#include "node-agent/fabric/wire.h"
#include "proto/agent.pb.h"

namespace daxlease::fabric {

// What a FabricHello asks for.
struct HelloRequest {
  GrantKey key;
  Access access = Access::kReadOnly;
  std::string credential;
};
HelloRequest FromHello(const agent::v1::FabricHello& hello);

// The volume and the grant an admitted hello uses.
template <typename Volume, typename Grant>
struct Admitted {
  std::shared_ptr<Volume> volume;
  std::shared_ptr<Grant> grant;
};

// Admits `hello` against a fabric's served volumes (id -> volume with
// `min_epoch` and `grants`: GrantKey -> grant with `cut`, `credential` and
// `access`). Unavailable when the volume is not served here or the grant
// not made yet (the holder may retry); PermissionDenied for a stale epoch,
// a revoked (cut) grant, a credential that does not match (compared in
// constant time) or a write access the grant does not give.
// REQUIRES: the caller holds the lock that guards `volumes` and the grants'
// `cut`.
template <typename Volume,
          typename Grant =
              typename decltype(Volume::grants)::mapped_type::element_type>
absl::StatusOr<Admitted<Volume, Grant>> AdmitHello(
    const std::map<std::string, std::shared_ptr<Volume>>& volumes,
    const HelloRequest& hello) {
  const GrantKey& key = hello.key;
  auto vit = volumes.find(key.volume);
  if (vit == volumes.end()) {
    return absl::UnavailableError(
        absl::StrCat("volume ", key.volume, " is not served here"));
  }
  if (key.epoch < vit->second->min_epoch) {
    return absl::PermissionDeniedError(absl::StrCat(
        "grant ", key.DebugString(), ": stale epoch (the volume is at ",
        vit->second->min_epoch, ")"));
  }
  auto git = vit->second->grants.find(key);
  if (git == vit->second->grants.end()) {
    return absl::UnavailableError(absl::StrCat(
        "no grant for ", key.DebugString(), " (not granted yet?)"));
  }
  const Grant& g = *git->second;
  if (g.cut) {
    return absl::PermissionDeniedError(
        absl::StrCat("grant ", key.DebugString(), " was revoked"));
  }
  if (!wire::ConstantTimeEquals(g.credential, hello.credential)) {
    return absl::PermissionDeniedError("credential does not match");
  }
  if (hello.access == Access::kReadWrite && g.access != Access::kReadWrite) {
    return absl::PermissionDeniedError("grant is read-only");
  }
  return Admitted<Volume, Grant>{vit->second, git->second};
}

}  // namespace daxlease::fabric

#endif  // DAXLEASE_NODE_AGENT_FABRIC_ADMIT_H_
