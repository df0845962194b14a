#include "csi/volume_backend.h"

#include "absl/strings/str_cat.h"

namespace daxlease::csi {

absl::string_view VolumeModeName(VolumeMode mode) {
  return mode == VolumeMode::kDevdax ? "devdax" : "fsdax";
}

absl::StatusOr<VolumeMode> ParseVolumeMode(absl::string_view name) {
  if (name == "fsdax") return VolumeMode::kFsdax;
  if (name == "devdax") return VolumeMode::kDevdax;
  return absl::InvalidArgumentError(absl::StrCat("invalid volume mode '", name,
                                                 "': must be fsdax or devdax"));
}

}  // namespace daxlease::csi
