#include "lib/sys/blkid.h"

#include <blkid/blkid.h>
#include <fcntl.h>

#include <cerrno>
#include <memory>

#include "absl/strings/str_cat.h"
#include "lib/base/status.h"
#include "lib/sys/fd.h"

namespace daxlease::sys {
namespace {

struct ProbeDeleter {
  void operator()(blkid_probe p) const { blkid_free_probe(p); }
};
using ProbePtr =
    std::unique_ptr<std::remove_pointer_t<blkid_probe>, ProbeDeleter>;

}  // namespace

absl::StatusOr<std::string> ProbeFilesystemType(absl::string_view device) {
  ASSIGN_OR_RETURN(UniqueFd fd, OpenFd(device, O_RDONLY));
  ProbePtr probe(blkid_new_probe());
  if (!probe) return absl::InternalError("blkid_new_probe failed");
  if (blkid_probe_set_device(probe.get(), fd.get(), 0, 0) != 0) {
    return base::ErrnoStatus("blkid_probe_set_device", device,
                             errno != 0 ? errno : EIO);
  }
  blkid_probe_enable_superblocks(probe.get(), 1);
  blkid_probe_set_superblocks_flags(probe.get(),
                                    BLKID_SUBLKS_TYPE | BLKID_SUBLKS_USAGE);
  blkid_probe_enable_partitions(probe.get(), 1);
  blkid_probe_set_partitions_flags(probe.get(), BLKID_PARTS_ENTRY_DETAILS);
  // 0: found, 1: nothing, -2: ambivalent (several signatures), -1: error.
  int rc = blkid_do_safeprobe(probe.get());
  if (rc == 1) return std::string();
  if (rc == -2) {
    return std::string("ambivalent");  // several signatures: not empty
  }
  if (rc < 0) {
    return absl::InternalError(
        absl::StrCat("blkid probe of ", device, " failed"));
  }
  const char* value = nullptr;
  size_t len = 0;
  if (blkid_probe_lookup_value(probe.get(), "TYPE", &value, &len) == 0 &&
      value != nullptr) {
    return std::string(value);
  }
  if (blkid_probe_lookup_value(probe.get(), "PTTYPE", &value, &len) == 0 &&
      value != nullptr) {
    return absl::StrCat("PTTYPE:", value);
  }
  return std::string("unknown");
}

}  // namespace daxlease::sys
