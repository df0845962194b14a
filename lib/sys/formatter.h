// Formatter: detecting, making and growing filesystems on a block device.
// The boundary the CSI node service formats through, so unit tests replace
// it with FakeFormatter. The real one probes with libblkid and runs
// mkfs.<type>, resize2fs and xfs_growfs (argv, no shell).
//
// Thread-safe; callers serialize calls on one device.
#ifndef DAXLEASE_LIB_SYS_FORMATTER_H_
#define DAXLEASE_LIB_SYS_FORMATTER_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace daxlease::sys {

class Formatter {
 public:
  virtual ~Formatter() = default;

  // The signature on `device` ("ext4", "xfs", ...) or "" when it carries
  // none. An error means "unknown": the caller must not format.
  virtual absl::StatusOr<std::string> Detect(absl::string_view device) = 0;

  // mkfs.<fs_type> <extra_args...> <device>. Not idempotent by itself: it
  // destroys what is there, so callers Detect first and format only "".
  // Returns once what mkfs wrote is durable: mke2fs and mkfs.xfs fsync the
  // device or image file they wrote before they exit (for an image file
  // that fsync also makes its size and allocation durable).
  virtual absl::Status Format(absl::string_view device,
                              absl::string_view fs_type,
                              const std::vector<std::string>& extra_args) = 0;

  // Grows the filesystem to the size of its device. Online (`mount_path`
  // is where it is mounted): resize2fs <device> for ext2/3/4 (the kernel
  // wants CAP_SYS_RESOURCE for that), xfs_growfs <mount_path> for xfs.
  // Offline (`mount_path` empty, the filesystem not mounted anywhere):
  // e2fsck -f -p then resize2fs for ext2/3/4; for xfs a mount in a private
  // mount namespace (nouuid; `device` may be an image file: a loop device),
  // xfs_growfs, unmount. Idempotent (a filesystem that already fills its
  // device stays as it is).
  virtual absl::Status Grow(absl::string_view device,
                            absl::string_view mount_path,
                            absl::string_view fs_type) = 0;
};

std::unique_ptr<Formatter> NewSystemFormatter();

// In-memory Formatter: remembers which device was formatted with what.
class FakeFormatter final : public Formatter {
 public:
  absl::StatusOr<std::string> Detect(absl::string_view device) override;
  absl::Status Format(absl::string_view device, absl::string_view fs_type,
                      const std::vector<std::string>& extra_args) override;
  absl::Status Grow(absl::string_view device, absl::string_view mount_path,
                    absl::string_view fs_type) override;

  void SetFilesystem(absl::string_view device, absl::string_view fs_type);
  void FailNext(absl::string_view op, absl::Status status);
  int format_calls() const;
  int grow_calls() const;
  std::vector<std::string> last_format_args() const;

 private:
  absl::Status TakeFailure(absl::string_view op)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  mutable absl::Mutex mu_;
  std::map<std::string, std::string> fs_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, absl::Status> failures_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> last_args_ ABSL_GUARDED_BY(mu_);
  int format_calls_ ABSL_GUARDED_BY(mu_) = 0;
  int grow_calls_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace daxlease::sys

#endif  // DAXLEASE_LIB_SYS_FORMATTER_H_
