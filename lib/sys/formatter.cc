#include "lib/sys/formatter.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "lib/base/log.h"
#include "lib/base/status.h"
#include "lib/sys/blkid.h"
#include "lib/sys/command.h"

namespace daxlease::sys {
namespace {

// Bounds on the external tools, far above what they need on a healthy
// device (mkfs of a lazily initialised ext4 or an xfs takes seconds even for
// hundreds of GiB; e2fsck -f reads every inode table, so it gets the most),
// and short enough that a hung device does not wedge a volume forever: the
// command's process group is killed and the call fails DeadlineExceeded, so
// the CO retries.
constexpr absl::Duration kMkfsTimeout = absl::Minutes(10);
constexpr absl::Duration kFsckTimeout = absl::Minutes(30);
constexpr absl::Duration kGrowTimeout = absl::Minutes(10);

class SystemFormatter final : public Formatter {
 private:
  // xfs grows only mounted: mounted in a mount namespace of its own
  // (unshare -m, propagation private), so nobody else sees the mount and it
  // cannot outlive the command (killed, the namespace goes and the mount
  // with it; an image file's loop device is autoclear), grown, unmounted.
  // nouuid: the source of a copied filesystem may be mounted at the same
  // time; once unmounted (clean log) the copy gets a UUID of its own, or
  // xfs would refuse to mount it beside its source.
  static absl::Status GrowXfsOffline(absl::string_view device) {
    struct stat st;
    if (::stat(std::string(device).c_str(), &st) != 0) {
      return base::ErrnoStatus("stat", device, errno);
    }
    std::string dir = "/tmp/daxlease-xfs-grow-XXXXXX";
    if (::mkdtemp(dir.data()) == nullptr) {
      return base::ErrnoStatus("mkdtemp", dir, errno);
    }
    const std::string options = S_ISREG(st.st_mode) ? "nouuid,loop" : "nouuid";
    base::LogInfo("sys.grow_offline",
                  {{"device", std::string(device)}, {"fstype", "xfs"}});
    absl::StatusOr<CommandResult> r = RunCommandOk(
        {"unshare", "--mount", "--propagation", "private", "sh", "-c",
         "mount -t xfs -o \"$3\" \"$1\" \"$2\" || exit; rc=0; "
         "xfs_growfs \"$2\" || rc=$?; umount \"$2\" || exit; "
         "if [ $rc -eq 0 ]; then xfs_admin -U generate \"$1\" >/dev/null "
         "|| rc=$?; fi; exit $rc",
         "xfs-grow", std::string(device), dir, options},
        {.timeout = kGrowTimeout});
    ::rmdir(dir.c_str());
    return r.status();
  }

 public:
  absl::StatusOr<std::string> Detect(absl::string_view device) override {
    return ProbeFilesystemType(device);
  }

  absl::Status Format(absl::string_view device, absl::string_view fs_type,
                      const std::vector<std::string>& extra_args) override {
    if (fs_type != "ext4" && fs_type != "xfs" && fs_type != "ext3" &&
        fs_type != "ext2") {
      return absl::InvalidArgumentError(
          absl::StrCat("unsupported filesystem type '", fs_type, "'"));
    }
    std::vector<std::string> argv = {absl::StrCat("mkfs.", fs_type)};
    argv.insert(argv.end(), extra_args.begin(), extra_args.end());
    argv.emplace_back(device);
    base::LogInfo("sys.mkfs", {{"device", std::string(device)},
                               {"fstype", std::string(fs_type)}});
    return RunCommandOk(argv, {.timeout = kMkfsTimeout}).status();
  }

  absl::Status Grow(absl::string_view device, absl::string_view mount_path,
                    absl::string_view fs_type) override {
    std::vector<std::string> argv;
    const bool ext =
        fs_type == "ext4" || fs_type == "ext3" || fs_type == "ext2";
    if (fs_type == "xfs" && mount_path.empty()) {
      return GrowXfsOffline(device);
    } else if (fs_type == "xfs") {
      argv = {"xfs_growfs", std::string(mount_path)};
    } else if (ext && mount_path.empty()) {
      // resize2fs refuses an unmounted filesystem that was not just checked.
      // e2fsck -p exits 1 when it fixed something, which is fine here.
      ASSIGN_OR_RETURN(CommandResult fsck,
                       RunCommand({"e2fsck", "-f", "-p", std::string(device)},
                                  {.timeout = kFsckTimeout}));
      if (fsck.exit_code != 0 && fsck.exit_code != 1) {
        return absl::DataLossError(
            absl::StrCat("e2fsck -f -p ", device, " exited ", fsck.exit_code,
                         ": ", fsck.stderr_text, fsck.stdout_text));
      }
      argv = {"resize2fs", std::string(device)};
    } else if (ext) {
      argv = {"resize2fs", std::string(device)};
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot grow filesystem type '", fs_type, "'"));
    }
    return RunCommandOk(argv, {.timeout = kGrowTimeout}).status();
  }
};

}  // namespace

std::unique_ptr<Formatter> NewSystemFormatter() {
  return std::make_unique<SystemFormatter>();
}

absl::Status FakeFormatter::TakeFailure(absl::string_view op) {
  auto it = failures_.find(std::string(op));
  if (it == failures_.end()) return absl::OkStatus();
  absl::Status s = it->second;
  failures_.erase(it);
  return s;
}

absl::StatusOr<std::string> FakeFormatter::Detect(absl::string_view device) {
  absl::MutexLock l(&mu_);
  if (absl::Status s = TakeFailure("Detect"); !s.ok()) return s;
  auto it = fs_.find(std::string(device));
  return it == fs_.end() ? std::string() : it->second;
}

absl::Status FakeFormatter::Format(absl::string_view device,
                                   absl::string_view fs_type,
                                   const std::vector<std::string>& extra_args) {
  absl::MutexLock l(&mu_);
  if (absl::Status s = TakeFailure("Format"); !s.ok()) return s;
  ++format_calls_;
  last_args_ = extra_args;
  fs_[std::string(device)] = std::string(fs_type);
  return absl::OkStatus();
}

absl::Status FakeFormatter::Grow(absl::string_view device,
                                 absl::string_view mount_path,
                                 absl::string_view fs_type) {
  absl::MutexLock l(&mu_);
  if (absl::Status s = TakeFailure("Grow"); !s.ok()) return s;
  ++grow_calls_;
  return absl::OkStatus();
}

void FakeFormatter::SetFilesystem(absl::string_view device,
                                  absl::string_view fs_type) {
  absl::MutexLock l(&mu_);
  fs_[std::string(device)] = std::string(fs_type);
}

void FakeFormatter::FailNext(absl::string_view op, absl::Status status) {
  absl::MutexLock l(&mu_);
  failures_[std::string(op)] = std::move(status);
}

int FakeFormatter::format_calls() const {
  absl::MutexLock l(&mu_);
  return format_calls_;
}
int FakeFormatter::grow_calls() const {
  absl::MutexLock l(&mu_);
  return grow_calls_;
}
std::vector<std::string> FakeFormatter::last_format_args() const {
  absl::MutexLock l(&mu_);
  return last_args_;
}

}  // namespace daxlease::sys
