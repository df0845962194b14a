#include "csi/driver.h"

namespace daxlease::csi {

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()),
                      std::string(s.message()));
}

std::vector<std::string> MkfsArgs(absl::string_view fs_type, uint64_t bytes,
                                  bool prezeroed) {
  if (fs_type == "xfs") {
    std::vector<std::string> args = {"-q",        "-K", "-b",
                                     "size=4096", "-m", "reflink=0"};
    if (bytes >= (1ull << 30)) args.insert(args.end(), {"-d", "su=2m,sw=1"});
    return args;
  }
  std::string ext = "stride=512,stripe_width=512,nodiscard";
  if (prezeroed) ext += ",assume_storage_prezeroed=1";
  return {"-q", "-F", "-b", "4096", "-E", ext};
}

}  // namespace daxlease::csi
