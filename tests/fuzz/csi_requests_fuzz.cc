// libFuzzer target: the CSI services (Identity, Controller, Node) and the
// start-up repair over the fakes (FakeVolumeBackend, FakeMounter,
// FakeFormatter) and a real StateStore, driven by a sequence of requests.
//
// Input: a sequence of steps, each `op:u8 len:u16le payload[len]`. `op`
// picks an RPC and the payload is the request's binary protobuf (a step whose
// payload does not parse is skipped), or a control step: restart the plugin
// (new services over the same store and fakes, then RecoverVolumes), or make
// the next call of one fake operation fail. Seeds: corpus/csi_requests/, made
// by csi_requests_seeds.cc.
//
// Besides what the sanitizers catch, every step checks that no mount target
// lies outside the allowed root and that the state store wrote nothing
// outside its directory.
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>

#include "absl/status/status.h"
#include "csi/controller_service.h"
#include "csi/fake_volume_backend.h"
#include "csi/identity_service.h"
#include "csi/node_service.h"
#include "csi/repair.h"
#include "csi/state_store.h"
#include "csi/validation.h"
#include "csi/volume_locks.h"
#include "lib/base/log.h"
#include "lib/sys/fake_mounter.h"
#include "lib/sys/formatter.h"
#include "tests/fuzz/csi_requests_format.h"

namespace daxlease::csi {
namespace {

namespace fs = std::filesystem;
using fuzz::Op;

constexpr char kRoot[] = "/k";

// Where the state stores live: tmpfs when there is one (a Save fsyncs).
// Never destroyed: the exit handler that removes it runs after static
// destructors would have.
const fs::path& WorkDir() {
  static const fs::path* const dir = [] {
    std::error_code ec;
    fs::path base = fs::is_directory("/dev/shm", ec)
                        ? fs::path("/dev/shm")
                        : fs::temp_directory_path();
    std::string tmpl = (base / "daxlease-fuzz-csi-XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) abort();
    atexit([] { fs::remove_all(WorkDir()); });
    return new fs::path(tmpl);
  }();
  return *dir;
}

// One plugin: the fakes outlive "restarts", the services do not.
class Plugin {
 public:
  explicit Plugin(const fs::path& dir)
      : dir_(dir), store_((dir / "state").string()) {
    fs::create_directories(dir_);
    if (!store_.Init().ok()) abort();
    config_.node_id = "node-a";
    config_.allowed_roots = {kRoot};
    for (int i = 0; i < 16; ++i) {
      mounter_.AddPath("/dev/fakeloop" + std::to_string(i));
    }
    Restart();
  }

  void Restart() {
    locks_ = std::make_unique<VolumeLocks>();
    DriverDeps deps{&backend_, &mounter_, &formatter_, &store_, locks_.get()};
    identity_ = std::make_unique<IdentityService>(&backend_);
    controller_ = std::make_unique<ControllerService>(config_, deps);
    node_ = std::make_unique<NodeService>(config_, deps);
    RecoverVolumes(deps).IgnoreError();
  }

  void FailNext(uint8_t which) {
    static constexpr const char* kBackendOps[] = {
        "Create", "Get",    "Delete",       "Expand",
        "Attach", "Detach", "RefreshDevice"};
    static constexpr const char* kMounterOps[] = {
        "Mount",   "BindMount", "Unmount",    "GetMount",
        "MakeDir", "MakeFile",  "RemovePath", "StatFs"};
    static constexpr const char* kFormatterOps[] = {"Detect", "Format", "Grow"};
    const absl::Status err = absl::InternalError("injected by the fuzzer");
    constexpr size_t kB = std::size(kBackendOps), kM = std::size(kMounterOps),
                     kF = std::size(kFormatterOps);
    size_t i = which % (kB + kM + kF);
    if (i < kB) {
      backend_.FailNext(kBackendOps[i], err);
    } else if (i < kB + kM) {
      mounter_.FailNext(kMounterOps[i - kB], err);
    } else {
      formatter_.FailNext(kFormatterOps[i - kB - kM], err);
    }
  }

  // Parses `payload` as Req and calls `method` of `service` with it.
  template <typename Req, typename Resp, typename Service>
  void Call(Service* service,
            grpc::Status (Service::*method)(grpc::ServerContext*, const Req*,
                                            Resp*),
            const uint8_t* payload, size_t size) {
    Req req;
    if (!req.ParseFromArray(payload, static_cast<int>(size))) return;
    Resp resp;
    (service->*method)(nullptr, &req, &resp);
  }

  void Step(uint8_t op, const uint8_t* p, size_t n) {
    ControllerService* c = controller_.get();
    NodeService* nd = node_.get();
    IdentityService* id = identity_.get();
    switch (static_cast<Op>(op % static_cast<uint8_t>(Op::kCount))) {
      case Op::kRestart:
        Restart();
        break;
      case Op::kFailNext:
        FailNext(n > 0 ? p[0] : 0);
        break;
      case Op::kGetPluginInfo:
        Call(id, &IdentityService::GetPluginInfo, p, n);
        break;
      case Op::kProbe:
        Call(id, &IdentityService::Probe, p, n);
        break;
      case Op::kCreateVolume:
        Call(c, &ControllerService::CreateVolume, p, n);
        break;
      case Op::kDeleteVolume:
        Call(c, &ControllerService::DeleteVolume, p, n);
        break;
      case Op::kValidateVolumeCapabilities:
        Call(c, &ControllerService::ValidateVolumeCapabilities, p, n);
        break;
      case Op::kListVolumes:
        Call(c, &ControllerService::ListVolumes, p, n);
        break;
      case Op::kGetCapacity:
        Call(c, &ControllerService::GetCapacity, p, n);
        break;
      case Op::kControllerGetVolume:
        Call(c, &ControllerService::ControllerGetVolume, p, n);
        break;
      case Op::kControllerExpandVolume:
        Call(c, &ControllerService::ControllerExpandVolume, p, n);
        break;
      case Op::kNodeStageVolume:
        Call(nd, &NodeService::NodeStageVolume, p, n);
        break;
      case Op::kNodeUnstageVolume:
        Call(nd, &NodeService::NodeUnstageVolume, p, n);
        break;
      case Op::kNodePublishVolume:
        Call(nd, &NodeService::NodePublishVolume, p, n);
        break;
      case Op::kNodeUnpublishVolume:
        Call(nd, &NodeService::NodeUnpublishVolume, p, n);
        break;
      case Op::kNodeGetVolumeStats:
        Call(nd, &NodeService::NodeGetVolumeStats, p, n);
        break;
      case Op::kNodeExpandVolume:
        Call(nd, &NodeService::NodeExpandVolume, p, n);
        break;
      case Op::kCount:
        break;
    }
    CheckConfinement();
  }

 private:
  void CheckConfinement() {
    for (const sys::MountInfo& m : mounter_.Mounts()) {
      if (!PathIsUnder(m.target, kRoot) || m.target == kRoot) {
        fprintf(stderr, "mount outside the allowed root: %s\n",
                m.target.c_str());
        abort();
      }
    }
    for (const fs::directory_entry& e : fs::directory_iterator(dir_)) {
      if (e.path().filename() != "state") {
        fprintf(stderr, "state store wrote outside its directory: %s\n",
                e.path().c_str());
        abort();
      }
    }
  }

  fs::path dir_;
  DriverConfig config_;
  FakeVolumeBackend backend_{8ull << 30};
  sys::FakeMounter mounter_;
  sys::FakeFormatter formatter_;
  StateStore store_;
  std::unique_ptr<VolumeLocks> locks_;
  std::unique_ptr<IdentityService> identity_;
  std::unique_ptr<ControllerService> controller_;
  std::unique_ptr<NodeService> node_;
};

}  // namespace
}  // namespace daxlease::csi

// The services log every step; formatted still, but not written out.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
  if (fd < 0) abort();
  daxlease::base::SetLogFd(fd);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace fs = std::filesystem;
  const fs::path dir = daxlease::csi::WorkDir() / "run";
  {
    daxlease::csi::Plugin plugin(dir);
    daxlease::csi::fuzz::ForEachStep(
        data, size,
        [&](uint8_t op, const uint8_t* p, size_t n) { plugin.Step(op, p, n); });
  }
  fs::remove_all(dir);
  return 0;
}
