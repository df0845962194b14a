#include "tests/integration/plugin_harness.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/impl/codegen/proto_utils.h"
#include "lib/base/status.h"
#include "proto/csi.grpc.pb.h"
#include "proto/csi.pb.h"

namespace daxlease::testing {
namespace {

namespace fs = std::filesystem;

// gRPC reads an idle client connection only from its backup poller, every
// 5 s by default. A server stopping gracefully (daxlease-csi on SIGTERM, an
// agent) sends GOAWAY and a ping and waits for each connected client's
// answer: with this process's channel idle, each stop took 0-5 s (most of
// an integration test's time). Set before gRPC initialises (at the first
// channel) and inherited by the daemons the tests start; not overriding a
// value from the environment.
[[maybe_unused]] const bool kFastIdlePolling = [] {
  return ::setenv("GRPC_CLIENT_CHANNEL_BACKUP_POLL_INTERVAL_MS", "100",
                  /*overwrite=*/0) == 0;
}();

absl::Status FromGrpc(const grpc::Status& s) {
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      s.error_message());
}

// Canonical absolute path, or the input when it does not exist.
std::string Canonical(absl::string_view p) {
  std::error_code ec;
  fs::path c = fs::weakly_canonical(fs::path(std::string(p)), ec);
  return ec ? std::string(p) : c.string();
}

bool IsAtOrUnder(absl::string_view path, absl::string_view root) {
  if (path == root) return true;
  return absl::StartsWith(path, root) && path.size() > root.size() &&
         (root.back() == '/' || path[root.size()] == '/');
}

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string UnescapeMountPath(absl::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() &&
        std::isdigit(static_cast<unsigned char>(s[i + 1]))) {
      int v = (s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0');
      out.push_back(static_cast<char>(v));
      i += 3;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

std::vector<std::string> ArgvFor(const PluginOptions& o) {
  std::vector<std::string> argv = {
      o.binary,
      absl::StrCat("--endpoint=unix://", o.socket_path),
      absl::StrCat("--node-id=", o.node_id),
      absl::StrCat("--state-dir=", o.state_dir),
      "--backend=file",
      absl::StrCat("--allowed-roots=", absl::StrJoin(o.allowed_roots, ",")),
      absl::StrCat("--capacity-bytes=", o.capacity_bytes),
  };
  argv.insert(argv.end(), o.extra_args.begin(), o.extra_args.end());
  if (o.max_volumes_per_node > 0) {
    argv.push_back(
        absl::StrCat("--max-volumes-per-node=", o.max_volumes_per_node));
  }
  return argv;
}

}  // namespace

std::string CsiBinary() {
  if (const char* env = std::getenv("DAXLEASE_CSI_BINARY")) return env;
#ifdef DAXLEASE_CSI_BINARY
  return DAXLEASE_CSI_BINARY;
#else
  return "";
#endif
}

bool CanUseLoopDevices() {
  if (::geteuid() != 0) return false;
  int fd = ::open("/dev/loop-control", O_RDWR | O_CLOEXEC);
  if (fd < 0) return false;
  ::close(fd);
  return true;
}

std::shared_ptr<grpc::Channel> Connect(absl::string_view socket_path) {
  grpc::ChannelArguments args;
  // Reconnect quickly after a plugin restart.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 50);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 200);
  return grpc::CreateCustomChannel(absl::StrCat("unix://", socket_path),
                                   grpc::InsecureChannelCredentials(), args);
}

absl::Status WaitForProbe(absl::string_view socket_path, absl::Duration timeout,
                          pid_t pid) {
  absl::Time deadline = absl::Now() + timeout;
  absl::Status last = absl::UnavailableError("never probed");
  while (absl::Now() < deadline) {
    if (pid > 0) {
      int status;
      pid_t r = ::waitpid(pid, &status, WNOHANG);
      if (r == pid) {
        return absl::FailedPreconditionError(
            absl::StrCat("plugin exited during start-up, wait status ", status,
                         "; last probe: ", last.ToString()));
      }
    }
    auto stub = csi::v1::Identity::NewStub(Connect(socket_path));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::milliseconds(500));
    csi::v1::ProbeResponse resp;
    grpc::Status s = stub->Probe(&ctx, csi::v1::ProbeRequest(), &resp);
    if (s.ok() && (!resp.has_ready() || resp.ready().value())) {
      return absl::OkStatus();
    }
    last = s.ok() ? absl::UnavailableError("probe: not ready") : FromGrpc(s);
    absl::SleepFor(absl::Milliseconds(50));
  }
  return absl::DeadlineExceededError(
      absl::StrCat("plugin on ", socket_path, " not ready: ", last.ToString()));
}

absl::StatusOr<pid_t> PluginProcess::Spawn(const PluginOptions& o) {
  std::vector<std::string> args = ArgvFor(o);
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  // The environment is built before the fork (the child only execs).
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) env_strings.push_back(*e);
  env_strings.insert(env_strings.end(), o.extra_env.begin(), o.extra_env.end());
  std::vector<char*> envp;
  for (std::string& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) return base::ErrnoStatus("fork", o.binary, errno);
  if (pid == 0) {
    if (!o.log_path.empty()) {
      int fd = ::open(o.log_path.c_str(),
                      O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
    }
    ::execve(argv[0], argv.data(), envp.data());
    ::_exit(127);
  }
  return pid;
}

absl::StatusOr<int> PluginProcess::WaitExit(pid_t pid, absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  while (true) {
    int status;
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0) return base::ErrnoStatus("waitpid", "", errno);
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("pid ", pid, " still running"));
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
}

absl::StatusOr<std::unique_ptr<PluginProcess>> PluginProcess::Start(
    const PluginOptions& options, absl::Duration ready_timeout) {
  std::unique_ptr<PluginProcess> p(new PluginProcess(options));
  RETURN_IF_ERROR(p->StartAndWait(ready_timeout));
  return p;
}

absl::Status PluginProcess::StartAndWait(absl::Duration ready_timeout) {
  ASSIGN_OR_RETURN(pid_, Spawn(options_));
  absl::Status s = WaitForProbe(options_.socket_path, ready_timeout, pid_);
  if (!s.ok()) {
    (void)Kill9();
    pid_ = -1;
    return base::Annotate(s, absl::StrCat("log: ", options_.log_path));
  }
  channel_ = Connect(options_.socket_path);
  return absl::OkStatus();
}

PluginProcess::~PluginProcess() { (void)Kill9(); }

absl::Status PluginProcess::Kill9() {
  if (pid_ <= 0) return absl::OkStatus();
  ::kill(pid_, SIGKILL);
  absl::StatusOr<int> st = WaitExit(pid_, absl::Seconds(30));
  pid_ = -1;
  channel_.reset();
  return st.status();
}

absl::StatusOr<int> PluginProcess::Terminate(absl::Duration timeout) {
  if (pid_ <= 0) return absl::FailedPreconditionError("not running");
  ::kill(pid_, SIGTERM);
  absl::StatusOr<int> st = WaitExit(pid_, timeout);
  if (st.ok()) {
    pid_ = -1;
    channel_.reset();
  }
  return st;
}

absl::Status PluginProcess::Restart(absl::Duration ready_timeout) {
  RETURN_IF_ERROR(Kill9());
  return StartAndWait(ready_timeout);
}

absl::StatusOr<std::string> CallJson(const std::shared_ptr<grpc::Channel>& ch,
                                     absl::string_view method,
                                     absl::string_view request_json,
                                     absl::Duration timeout) {
  std::vector<std::string> parts = absl::StrSplit(method, '/');
  const auto* pool = csi::v1::ProbeRequest::descriptor()->file()->pool();
  const google::protobuf::ServiceDescriptor* service =
      parts.size() == 3 ? pool->FindServiceByName(parts[1]) : nullptr;
  const google::protobuf::MethodDescriptor* m =
      service ? service->FindMethodByName(parts[2]) : nullptr;
  if (m == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("no method ", method));
  }
  auto* factory = google::protobuf::MessageFactory::generated_factory();
  std::unique_ptr<google::protobuf::Message> req(
      factory->GetPrototype(m->input_type())->New());
  std::unique_ptr<google::protobuf::Message> resp(
      factory->GetPrototype(m->output_type())->New());
  auto parsed = google::protobuf::util::JsonStringToMessage(
      std::string(request_json), req.get());
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "test bug: bad request JSON: ", std::string(parsed.message())));
  }
  grpc::TemplatedGenericStub<google::protobuf::Message,
                             google::protobuf::Message>
      stub(ch);
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  grpc::CompletionQueue cq;
  auto call = stub.PrepareUnaryCall(&ctx, std::string(method), *req, &cq);
  call->StartCall();
  grpc::Status status;
  call->Finish(resp.get(), &status, reinterpret_cast<void*>(1));
  void* tag;
  bool ok;
  if (!cq.Next(&tag, &ok) || !ok) {
    return absl::InternalError("completion queue failed");
  }
  if (!status.ok()) return FromGrpc(status);
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(*resp, &out);
  return out;
}

std::vector<std::string> MountsUnder(absl::string_view root) {
  std::string r = Canonical(root);
  std::vector<std::string> out;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ');
    if (f.size() < 5) continue;
    std::string mp = UnescapeMountPath(f[4]);
    if (IsAtOrUnder(mp, r)) out.push_back(mp);
  }
  return out;
}

namespace {

// lo_file_name of an attached loop device ("" when unknown): the path its
// attacher gave, cut at 63 bytes (still at or under a shorter `dir`).
std::string LoopFileName(const std::string& dev) {
  int fd = ::open(dev.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  struct loop_info64 info;
  std::memset(&info, 0, sizeof(info));
  int r = ::ioctl(fd, LOOP_GET_STATUS64, &info);
  ::close(fd);
  if (r != 0) return "";
  std::string name(
      reinterpret_cast<const char*>(info.lo_file_name),
      strnlen(reinterpret_cast<const char*>(info.lo_file_name), LO_NAME_SIZE));
  return name;
}

}  // namespace

std::vector<std::string> LoopDevicesBackedUnder(absl::string_view dir) {
  std::string d = Canonical(dir);
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/sys/block", ec)) {
    std::string name = e.path().filename().string();
    if (!absl::StartsWith(name, "loop")) continue;
    std::ifstream in(e.path() / "loop" / "backing_file");
    std::string backing;
    if (!std::getline(in, backing)) continue;
    absl::string_view b = backing;
    absl::ConsumeSuffix(&b, " (deleted)");
    std::string dev = absl::StrCat("/dev/", name);
    if (IsAtOrUnder(b, d) || IsAtOrUnder(LoopFileName(dev), d)) {
      out.push_back(dev);
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> ForceCleanup(const std::vector<std::string>& roots,
                                      absl::string_view state_dir) {
  std::vector<std::string> cleaned;
  for (int round = 0; round < 3; ++round) {
    std::vector<std::string> mounts;
    for (const std::string& r : roots) {
      for (std::string& m : MountsUnder(r)) mounts.push_back(std::move(m));
    }
    if (mounts.empty()) break;
    // Deepest (and latest) first.
    std::reverse(mounts.begin(), mounts.end());
    std::stable_sort(mounts.begin(), mounts.end(),
                     [](const std::string& a, const std::string& b) {
                       return a.size() > b.size();
                     });
    for (const std::string& m : mounts) {
      cleaned.push_back(absl::StrCat("mount ", m));
      ::umount2(m.c_str(), MNT_DETACH);
    }
  }
  if (!state_dir.empty()) {
    for (const std::string& dev : LoopDevicesBackedUnder(state_dir)) {
      cleaned.push_back(absl::StrCat("loop ", dev));
      int fd = ::open(dev.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd >= 0) {
        ::ioctl(fd, LOOP_CLR_FD, 0);
        ::close(fd);
      }
    }
  }
  return cleaned;
}

namespace {

constexpr char kTempRoot[] = "/var/tmp";
constexpr char kOwnerLock[] = "/.owner.lock";

void RemoveTree(const std::string& path) {
  ForceCleanup({path}, path);
  std::error_code ec;
  fs::remove_all(path, ec);
}

// Whether the TempDir at `path` has no live owner: its lock can be taken, or
// (made before the lock, or its owner died between mkdtemp and the lock)
// there is no lock file and the directory is 10 minutes old.
bool Abandoned(const std::string& path) {
  const std::string lock = path + kOwnerLock;
  int fd = ::open(lock.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    struct stat st;
    return errno == ENOENT && ::lstat(path.c_str(), &st) == 0 &&
           S_ISDIR(st.st_mode) && ::time(nullptr) - st.st_mtime > 600;
  }
  const bool free = ::flock(fd, LOCK_EX | LOCK_NB) == 0;
  ::close(fd);
  return free;
}

}  // namespace

std::vector<std::string> RemoveAbandonedTempDirs(absl::string_view prefix) {
  std::vector<std::string> removed;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(kTempRoot, ec)) {
    const std::string name = e.path().filename().string();
    if (!absl::StartsWith(name, prefix) || name.size() != prefix.size() + 6) {
      continue;
    }
    const std::string path = e.path().string();
    if (!Abandoned(path)) continue;
    RemoveTree(path);
    removed.push_back(path);
  }
  return removed;
}

absl::StatusOr<std::unique_ptr<TempDir>> TempDir::Create(
    absl::string_view prefix) {
  (void)RemoveAbandonedTempDirs(prefix);
  std::string templ = absl::StrCat(kTempRoot, "/", prefix, "XXXXXX");
  if (::mkdtemp(templ.data()) == nullptr) {
    return base::ErrnoStatus("mkdtemp", templ, errno);
  }
  // Close-on-exec: the plugins the tests start must not hold it.
  const std::string lock = templ + kOwnerLock;
  int fd =
      ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0 || ::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    absl::Status st = base::ErrnoStatus("lock", lock, errno);
    if (fd >= 0) ::close(fd);
    RemoveTree(templ);
    return st;
  }
  return std::unique_ptr<TempDir>(new TempDir(templ, fd));
}

TempDir::~TempDir() {
  RemoveTree(path_);
  ::close(lock_fd_);
}

absl::Status MakeDirs(absl::string_view path) {
  std::error_code ec;
  fs::create_directories(std::string(path), ec);
  if (ec) return base::ErrnoStatus("mkdir -p", path, ec.value());
  return absl::OkStatus();
}

absl::StatusOr<int64_t> BlockDeviceSize(absl::string_view path) {
  int fd = ::open(std::string(path).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return base::ErrnoStatus("open", path, errno);
  uint64_t size = 0;
  int r = ::ioctl(fd, BLKGETSIZE64, &size);
  int err = errno;
  ::close(fd);
  if (r != 0) return base::ErrnoStatus("ioctl(BLKGETSIZE64)", path, err);
  return static_cast<int64_t>(size);
}

absl::StatusOr<int64_t> FilesystemBytes(absl::string_view path) {
  struct statvfs st;
  if (::statvfs(std::string(path).c_str(), &st) != 0) {
    return base::ErrnoStatus("statvfs", path, errno);
  }
  return static_cast<int64_t>(st.f_blocks) * static_cast<int64_t>(st.f_frsize);
}

std::string Pattern(size_t size, uint32_t seed) {
  std::string out(size, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < size; ++i) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    out[i] = static_cast<char>(x & 0xff);
  }
  return out;
}

absl::Status WriteAndSync(absl::string_view path, int64_t offset,
                          absl::string_view data) {
  std::string p(path);
  int fd = ::open(p.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return base::ErrnoStatus("open", path, errno);
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::pwrite(fd, data.data() + done, data.size() - done,
                         offset + static_cast<int64_t>(done));
    if (n < 0) {
      int err = errno;
      ::close(fd);
      return base::ErrnoStatus("pwrite", path, err);
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    int err = errno;
    ::close(fd);
    return base::ErrnoStatus("fsync", path, err);
  }
  ::close(fd);
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadAt(absl::string_view path, int64_t offset,
                                   size_t size) {
  int fd = ::open(std::string(path).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return base::ErrnoStatus("open", path, errno);
  std::string out(size, '\0');
  size_t done = 0;
  while (done < size) {
    ssize_t n = ::pread(fd, out.data() + done, size - done,
                        offset + static_cast<int64_t>(done));
    if (n < 0) {
      int err = errno;
      ::close(fd);
      return base::ErrnoStatus("pread", path, err);
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  out.resize(done);
  return out;
}

}  // namespace daxlease::testing
