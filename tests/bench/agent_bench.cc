// agent_bench: the data plane's figures, each against its baseline in the
// same run (docs/agent.md, "Benchmarks").
//
//   local   libdaxlease read/write on the owner node (its own mapping) vs
//           memcpy through a raw mmap of the same file; goal >= 0.98
//   remote  libdaxlease read/write through the TCP fabric vs a plain TCP
//           stream between the same two endpoints; goal >= 0.90
//   attach  daxlease_attach: a new publish (lease created, granted, fabric
//           connected) and a re-attach of a granted publish
//   recall  one DaxRecall of N = 1, 10, 100 attached remote holders, from
//           creation to Complete (every client flushes, unmaps and acks)
//   grow    the pause window of a grow of a 1 GiB volume (--grow-mib) with
//           live holders, an owner-local and a remote writer: from the
//           first ReshapeVolume (the Reshape recall starts) to Ready at
//           epoch + 1, and to both writers writing again
//
// The stack is the real one in one process: the operator's Controller, two
// Agents (node-a owns the volume, node-b holds it) with their gRPC sockets
// and a TcpFabric on loopback, libdaxlease clients; the API server is the
// fake one (lib/k8s/fake_client.h) unless --kubeconfig names a real one.
//
//   agent_bench [--mib 256] [--runs 3] [--sizes 1,10,100] [--grow-mib 1024]
//               [--kubeconfig PATH] [--only local|remote|attach|recall|grow]
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "daxlease.h"
#include "grpcpp/grpcpp.h"
#include "lib/api/json.h"
#include "lib/base/clock.h"
#include "lib/k8s/fake_client.h"
#include "node-agent/agent/agent.h"
#include "node-agent/agent_client/agent_client.h"
#include "node-agent/fabric/tcp_fabric.h"
#include "node-agent/fabric/wire.h"
#include "node-agent/testing/agent_node.h"
#include "operator/controller.h"
#include "operator/events.h"
#include "tests/k8s/k8s_testing.h"

namespace daxlease {
namespace {

constexpr char kSecret[] = "agent-bench-secret";

void Die(const std::string& msg) {
  std::fprintf(stderr, "agent_bench: %s\n", msg.c_str());
  std::exit(1);
}

double Now() {
  return std::chrono::duration<double>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

bool WaitFor(const std::function<bool()>& pred, double seconds) {
  const double end = Now() + seconds;
  while (Now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return pred();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}
double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  if (v.empty()) return 0;
  size_t i = std::min(v.size() - 1, static_cast<size_t>(p * v.size()));
  return v[i];
}

// One node: an agent with its socket and a TcpFabric on loopback.
class Bench {
 public:
  Bench(k8s::KubeClient& kube, std::string prefix)
      : kube_(kube), prefix_(std::move(prefix)) {
    // tmpfs: memory like a DAX mapping, no writeback under the figures.
    char tmpl[] = "/dev/shm/agent_bench.XXXXXX";
    if (mkdtemp(tmpl) == nullptr) Die("mkdtemp");
    dir_ = tmpl;
    op::ControllerOptions o;
    o.resync = absl::Seconds(1);
    controller_ =
        std::make_unique<op::Controller>(kube_, base::RealClock(), events_, o);
    if (!controller_->Start().ok()) Die("controller did not start");
    a_ = StartNode(prefix_ + "node-a");
    b_ = StartNode(prefix_ + "node-b");
  }
  ~Bench() {
    b_.reset();
    a_.reset();
    controller_->Stop();
    for (const std::string& v : volumes_) Forget(v);
    std::string cmd = "rm -rf " + dir_;
    (void)!system(cmd.c_str());
  }

  // Records and serves a volume of `bytes` on node-a; returns its data file.
  std::string Serve(const std::string& vol, uint64_t bytes) {
    agent::pb::RecordVolumeRequest rec;
    rec.set_volume_id(prefix_ + vol);
    rec.set_size_bytes(bytes);
    rec.set_mode(agent::pb::FSDAX);
    rec.set_fs_type("ext4");
    rec.set_share(true);
    rec.set_recall_grace_seconds(30);
    absl::Status st = a_->agent().RecordVolume(rec);
    if (!st.ok()) Die(st.ToString());
    volumes_.push_back(prefix_ + vol);
    std::string mnt = absl::StrCat(dir_, "/mnt-", vol);
    mkdir(mnt.c_str(), 0755);
    mounts_[vol] = mnt;
    agent::pb::ServeVolumeRequest serve;
    serve.set_volume_id(prefix_ + vol);
    serve.set_mode(agent::pb::FSDAX);
    serve.set_mount_path(mnt);
    serve.set_size_bytes(bytes);
    auto served = a_->agent().ServeVolume(serve);
    if (!served.ok()) Die(served.status().ToString());
    return served->data_path();
  }

  // Publishes `vol` to `pod` on node a (owner-local) or b; returns the
  // directory the pod would see.
  std::string Publish(const std::string& vol, const std::string& pod,
                      bool on_owner) {
    agent::testing::AgentNode& node = on_owner ? *a_ : *b_;
    std::string target = absl::StrCat(dir_, "/pub-", pod);
    mkdir(target.c_str(), 0755);
    agent::pb::PublishRequest p;
    p.set_volume_id(prefix_ + vol);
    p.set_target_path(target);
    p.set_pod_namespace("bench");
    p.set_pod_name(prefix_ + pod);
    p.set_pod_uid(prefix_ + pod + "-uid");
    p.set_owner_local(on_owner);
    auto r = node.agent().Publish(p);
    if (!r.ok()) Die(r.status().ToString());
    std::ofstream(target + "/daxlease.json") << r->descriptor_json();
    if (symlink(node.socket().c_str(), (target + "/agent.sock").c_str()) != 0) {
      Die("symlink");
    }
    if (on_owner &&
        symlink(mounts_[vol].c_str(), (target + "/volume").c_str()) != 0) {
      Die("symlink");
    }
    return target;
  }

  daxlease_volume* Attach(const std::string& dir) {
    daxlease_attach_opts o = DAXLEASE_ATTACH_OPTS_INIT;
    o.timeout_ms = 120000;
    daxlease_volume* v = nullptr;
    int rc = daxlease_attach(dir.c_str(), &o, &v);
    if (rc != DAXLEASE_OK) {
      Die(absl::StrCat("attach ", dir, ": ", daxlease_errmsg()));
    }
    return v;
  }

  // Creates a DaxRecall of `vol`; returns seconds until it is Complete.
  double Recall(const std::string& vol) {
    k8s::Json r = {{"apiVersion", api::kApiVersion},
                   {"kind", "DaxRecall"},
                   {"metadata", {{"generateName", prefix_ + vol + "-"}}},
                   {"spec",
                    {{"volume", prefix_ + vol},
                     {"reason", "Manual"},
                     {"graceSeconds", 30}}}};
    const double start = Now();
    auto c = kube_.Create(agent::DaxRecallResource(), r);
    if (!c.ok()) Die(c.status().ToString());
    const std::string name = k8s::NameOf(*c);
    std::string phase;
    if (!WaitFor(
            [&] {
              auto g = kube_.Get(agent::DaxRecallResource(), "", name);
              phase = g.ok() ? g->value("status", k8s::Json::object())
                                   .value("phase", "")
                             : "";
              return phase == "Complete";
            },
            120)) {
      Die(absl::StrCat("recall ", name, " not Complete in 120 s (", phase,
                       ")"));
    }
    const double took = Now() - start;
    auto g = kube_.Get(agent::DaxRecallResource(), "", name);
    if (g.ok() &&
        g->value("status", k8s::Json::object()).value("revoked", 0) != 0) {
      Die(absl::StrCat("recall ", name, " revoked a holder"));
    }
    (void)kube_.Delete(agent::DaxRecallResource(), "", name);
    return took;
  }

  agent::testing::AgentNode& owner() { return *a_; }
  const std::string& prefix() const { return prefix_; }

  bool VolumeReadyAt(const std::string& vol, int64_t epoch) {
    auto v = kube_.Get(agent::DaxVolumeResource(), "", prefix_ + vol);
    if (!v.ok()) return false;
    const k8s::Json st = v->value("status", k8s::Json::object());
    return st.value("phase", "") == "Ready" &&
           st.value("epoch", int64_t{0}) == epoch;
  }

 private:
  void Forget(const std::string& vol) {
    for (const k8s::Resource& r :
         {agent::DaxLeaseResource(), agent::DaxRecallResource()}) {
      auto list = k8s::ListAll(kube_, r, "");
      if (!list.ok()) continue;
      for (const k8s::Json& o : list->items) {
        if (o.value("spec", k8s::Json::object()).value("volume", "") != vol) {
          continue;
        }
        (void)kube_.Patch(r, "", k8s::NameOf(o), k8s::PatchType::kMerge,
                          {{"metadata", {{"finalizers", nullptr}}}});
        (void)kube_.Delete(r, "", k8s::NameOf(o));
      }
    }
    (void)kube_.Patch(agent::DaxVolumeResource(), "", vol,
                      k8s::PatchType::kMerge,
                      {{"metadata", {{"finalizers", nullptr}}}});
    (void)kube_.Delete(agent::DaxVolumeResource(), "", vol);
  }

  k8s::KubeClient& kube_;
  const std::string prefix_;
  std::string dir_;
  op::FakeEventSink events_;
  std::unique_ptr<op::Controller> controller_;
  std::unique_ptr<agent::testing::AgentNode> StartNode(
      const std::string& name) {
    agent::testing::AgentNodeOptions o;
    o.name = name;
    o.dir = dir_;
    o.secret = kSecret;
    auto n = agent::testing::AgentNode::Start(o, kube_);
    if (!n.ok()) Die(n.status().ToString());
    return *std::move(n);
  }
  std::unique_ptr<agent::testing::AgentNode> a_, b_;
  std::vector<std::string> volumes_;
  std::map<std::string, std::string> mounts_;
};

void Row(const std::string& what, const std::string& unit, double got,
         double base, double goal) {
  double ratio = base > 0 ? got / base : 0;
  std::printf("%-34s %10.1f %10.1f %-6s %6.3f %s\n", what.c_str(), got, base,
              unit.c_str(), ratio,
              goal <= 0 ? "" : (ratio >= goal ? "ok" : "BELOW GOAL"));
  std::fflush(stdout);
}

// Best of `runs` passes of `fn` over `bytes`: MiB/s.
double Rate(int runs, uint64_t bytes, const std::function<void()>& fn) {
  double best = 0;
  for (int r = 0; r < runs; ++r) {
    const double start = Now();
    fn();
    best = std::max(best, bytes / (Now() - start) / (1 << 20));
  }
  return best;
}

void LocalBench(Bench& b, uint64_t bytes, int runs) {
  std::string data = b.Serve("local", bytes);
  daxlease_volume* v = b.Attach(b.Publish("local", "local-pod", true));
  if (!daxlease_is_local(v)) Die("owner-local attach is not local");
  int fd = open(data.c_str(), O_RDWR);
  if (fd < 0) Die("open " + data);
  char* raw = static_cast<char*>(
      mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
  if (raw == MAP_FAILED) Die("mmap " + data);
  std::vector<char> buf(1 << 20, 'x');
  // Fault everything in once through both mappings.
  for (uint64_t off = 0; off < bytes; off += buf.size()) {
    memcpy(raw + off, buf.data(), buf.size());
    daxlease_write(v, off, buf.data(), buf.size());
  }
  std::printf("\n%-34s %10s %10s %-6s %6s\n", "local (owner node)", "libdax",
              "raw mmap", "unit", "ratio");
  for (size_t chunk : {size_t{4096}, size_t{65536}, size_t{1} << 20}) {
    auto lib_w = [&] {
      for (uint64_t off = 0; off < bytes; off += chunk) {
        if (daxlease_write(v, off, buf.data(), chunk) != DAXLEASE_OK) {
          Die(daxlease_errmsg());
        }
      }
    };
    auto raw_w = [&] {
      for (uint64_t off = 0; off < bytes; off += chunk) {
        memcpy(raw + off, buf.data(), chunk);
      }
    };
    auto lib_r = [&] {
      for (uint64_t off = 0; off < bytes; off += chunk) {
        if (daxlease_read(v, off, buf.data(), chunk) != DAXLEASE_OK) {
          Die(daxlease_errmsg());
        }
      }
    };
    auto raw_r = [&] {
      for (uint64_t off = 0; off < bytes; off += chunk) {
        memcpy(buf.data(), raw + off, chunk);
      }
    };
    // Interleave so drift in the machine's load hits both alike.
    double lw = 0, rw = 0, lr = 0, rr = 0;
    for (int r = 0; r < runs; ++r) {
      rw = std::max(rw, Rate(1, bytes, raw_w));
      lw = std::max(lw, Rate(1, bytes, lib_w));
      rr = std::max(rr, Rate(1, bytes, raw_r));
      lr = std::max(lr, Rate(1, bytes, lib_r));
    }
    Row(absl::StrCat("write ", chunk / 1024, " KiB"), "MiB/s", lw, rw, 0.98);
    Row(absl::StrCat("read ", chunk / 1024, " KiB"), "MiB/s", lr, rr, 0.98);
  }
  {
    void* p = nullptr;
    size_t len = 0;
    if (daxlease_direct_acquire(v, &p, &len) != DAXLEASE_OK) {
      Die(daxlease_errmsg());
    }
    char* d = static_cast<char*>(p);
    double dw = 0, rw = 0;
    for (int r = 0; r < runs; ++r) {
      rw = std::max(rw, Rate(1, bytes, [&] {
                      for (uint64_t off = 0; off < bytes; off += 4096) {
                        memcpy(raw + off, buf.data(), 4096);
                      }
                    }));
      dw = std::max(dw, Rate(1, bytes, [&] {
                      for (uint64_t off = 0; off < bytes; off += 4096) {
                        memcpy(d + off, buf.data(), 4096);
                      }
                    }));
    }
    daxlease_direct_release(v);
    Row("write 4 KiB, direct pointer", "MiB/s", dw, rw, 0.98);
  }
  munmap(raw, bytes);
  close(fd);
  daxlease_detach(v);
}

// A plain TCP stream between the same endpoints: a server that, per
// connection, either receives `bytes` into `mem` ('w') or sends them from it
// ('r'), in `chunk` pieces, one ack at the end.
class PlainTcp {
 public:
  explicit PlainTcp(char* mem) : mem_(mem) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
        listen(fd_, 4) != 0) {
      Die("plain tcp listen");
    }
    socklen_t len = sizeof(a);
    getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
  }
  ~PlainTcp() { close(fd_); }

  // One transfer of `bytes` in `chunk` pieces, direction 'w' or 'r'.
  void Run(char dir, uint64_t bytes, size_t chunk, char* buf) {
    std::thread server([&] {
      int c = accept(fd_, nullptr, nullptr);
      int one = 1;
      setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      for (uint64_t off = 0; off < bytes; off += chunk) {
        absl::Status st = dir == 'w'
                              ? fabric::wire::ReadFull(c, mem_ + off, chunk)
                              : fabric::wire::WriteFull(c, mem_ + off, chunk);
        if (!st.ok()) Die(st.ToString());
      }
      char ack = 1;
      (void)fabric::wire::WriteFull(c, &ack, 1);
      close(c);
    });
    int c = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(port_));
    if (connect(c, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
      Die("plain tcp connect");
    }
    int one = 1;
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    for (uint64_t off = 0; off < bytes; off += chunk) {
      absl::Status st = dir == 'w' ? fabric::wire::WriteFull(c, buf, chunk)
                                   : fabric::wire::ReadFull(c, buf, chunk);
      if (!st.ok()) Die(st.ToString());
    }
    char ack;
    (void)fabric::wire::ReadFull(c, &ack, 1);
    close(c);
    server.join();
  }

 private:
  char* mem_;
  int fd_ = -1;
  int port_ = 0;
};

void RemoteBench(Bench& b, uint64_t bytes, int runs) {
  std::string data = b.Serve("remote", bytes);
  daxlease_volume* v = b.Attach(b.Publish("remote", "remote-pod", false));
  if (daxlease_is_local(v)) Die("remote attach is local");
  // The baseline moves bytes into and out of the same owner memory.
  int fd = open(data.c_str(), O_RDWR);
  char* mem = static_cast<char*>(
      mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
  if (mem == MAP_FAILED) Die("mmap " + data);
  PlainTcp plain(mem);
  std::vector<char> buf(16 << 20, 'y');
  std::printf("\n%-34s %10s %10s %-6s %6s\n", "remote (TCP fabric, loopback)",
              "libdax", "plain TCP", "unit", "ratio");
  for (size_t chunk : {size_t{65536}, size_t{1} << 20, size_t{4} << 20}) {
    auto lib_w = [&] {
      for (uint64_t off = 0; off < bytes; off += chunk) {
        if (daxlease_write(v, off, buf.data(), chunk) != DAXLEASE_OK) {
          Die(daxlease_errmsg());
        }
      }
    };
    auto lib_r = [&] {
      for (uint64_t off = 0; off < bytes; off += chunk) {
        if (daxlease_read(v, off, buf.data(), chunk) != DAXLEASE_OK) {
          Die(daxlease_errmsg());
        }
      }
    };
    double lw = 0, pw = 0, lr = 0, pr = 0;
    for (int r = 0; r < runs; ++r) {
      pw = std::max(pw, Rate(1, bytes, [&] {
                      plain.Run('w', bytes, chunk, buf.data());
                    }));
      lw = std::max(lw, Rate(1, bytes, lib_w));
      pr = std::max(pr, Rate(1, bytes, [&] {
                      plain.Run('r', bytes, chunk, buf.data());
                    }));
      lr = std::max(lr, Rate(1, bytes, lib_r));
    }
    Row(absl::StrCat("write ", chunk / 1024, " KiB"), "MiB/s", lw, pw, 0.90);
    Row(absl::StrCat("read ", chunk / 1024, " KiB"), "MiB/s", lr, pr, 0.90);
  }
  // Persist of one 4 KiB block after a write: the round trip a holder pays.
  std::vector<double> lat;
  for (int i = 0; i < 200; ++i) {
    daxlease_write(v, 0, buf.data(), 4096);
    const double start = Now();
    daxlease_persist(v, 0, 4096);
    lat.push_back((Now() - start) * 1e6);
  }
  std::printf("%-34s %10.1f us median, %.1f us p90\n", "persist 4 KiB (msync)",
              Median(lat), Percentile(lat, 0.9));
  munmap(mem, bytes);
  close(fd);
  daxlease_detach(v);
}

void AttachBench(Bench& b, int n) {
  b.Serve("attach", 8 << 20);
  std::printf("\n%-34s %10s %10s\n", "attach (ms)", "median", "p90");
  for (bool local : {false, true}) {
    std::vector<double> first, again;
    for (int i = 0; i < n; ++i) {
      std::string pod = absl::StrCat("attach-", local ? "l" : "r", i);
      double start = Now();
      std::string dir = b.Publish("attach", pod, local);
      daxlease_volume* v = b.Attach(dir);
      first.push_back((Now() - start) * 1e3);
      daxlease_detach(v);
      start = Now();
      v = b.Attach(dir);
      again.push_back((Now() - start) * 1e3);
      daxlease_detach(v);
    }
    const char* where = local ? "owner-local" : "remote";
    std::printf("%-34s %10.2f %10.2f\n",
                absl::StrCat(where, ": publish + first attach").c_str(),
                Median(first), Percentile(first, 0.9));
    std::printf("%-34s %10.2f %10.2f\n",
                absl::StrCat(where, ": re-attach (granted)").c_str(),
                Median(again), Percentile(again, 0.9));
  }
}

void RecallBench(Bench& b, const std::vector<int>& sizes, int runs) {
  std::printf("\n%-34s %10s %10s %10s\n", "recall of N live holders (ms)",
              "median", "min", "max");
  for (int n : sizes) {
    const std::string vol = absl::StrCat("recall-", n);
    b.Serve(vol, 8 << 20);
    std::vector<daxlease_volume*> vs(n);
    for (int i = 0; i < n; ++i) {
      vs[i] = b.Attach(b.Publish(vol, absl::StrCat(vol, "-pod-", i), false));
      if (daxlease_write(vs[i], 4096 * i, "live", 4) != DAXLEASE_OK) {
        Die(daxlease_errmsg());
      }
    }
    std::vector<double> took;
    for (int r = 0; r < runs; ++r) {
      int64_t epoch = daxlease_epoch(vs[0]);
      took.push_back(b.Recall(vol) * 1e3);
      // Every holder is granted again at the next epoch before the next run.
      if (!WaitFor(
              [&] {
                for (auto* v : vs) {
                  if (daxlease_epoch(v) <= epoch) return false;
                }
                return true;
              },
              120)) {
        Die("holders were not granted again after the recall");
      }
    }
    std::sort(took.begin(), took.end());
    std::printf("%-34s %10.1f %10.1f %10.1f\n",
                absl::StrCat("N = ", n, " (", runs, " runs)").c_str(),
                Median(took), took.front(), took.back());
    std::fflush(stdout);
    for (auto* v : vs) daxlease_detach(v);
  }
}

// A client writing 4 KiB blocks (each persisted) over its half of the
// volume's first `span` bytes until stopped; counts the writes per epoch.
class Writer {
 public:
  Writer(daxlease_volume* v, uint64_t first, uint64_t span) : v_(v) {
    t_ = std::thread([this, first, span] {
      char block[4096];
      std::memset(block, 0x5a, sizeof(block));
      for (uint64_t i = 0; !stop_.load(); ++i) {
        const uint64_t off = first + (i * sizeof(block)) % span;
        int rc = daxlease_write(v_, off, block, sizeof(block));
        if (rc == DAXLEASE_OK) rc = daxlease_persist(v_, off, sizeof(block));
        if (rc != DAXLEASE_OK) {
          if (errors_++ == 0) first_error_ = daxlease_errmsg();
          if (rc == DAXLEASE_E_REVOKED) break;  // sticky: do not spin
          continue;
        }
        last_epoch_.store(daxlease_epoch(v_));
      }
    });
  }
  ~Writer() { Stop(); }
  void Stop() {
    stop_.store(true);
    if (t_.joinable()) t_.join();
  }
  int64_t last_epoch() const { return last_epoch_.load(); }
  int errors() const { return errors_.load(); }
  std::string first_error() const {
    return errors_.load() > 0 ? first_error_ : "";
  }

 private:
  daxlease_volume* v_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> last_epoch_{0};
  std::atomic<int> errors_{0};
  std::string first_error_;  // written once, before errors_ turns 1
  std::thread t_;
};

void GrowBench(Bench& b, uint64_t mib, int runs) {
  const std::string vol = "grow";
  const std::string data = b.Serve(vol, mib << 20);
  daxlease_volume* local = b.Attach(b.Publish(vol, "grow-local", true));
  daxlease_volume* remote = b.Attach(b.Publish(vol, "grow-remote", false));
  const uint64_t size0 = daxlease_size(remote);
  std::printf("\n%-34s %10s %10s %10s\n",
              absl::StrCat("grow of ", size0 >> 20, " MiB, 2 live holders (ms)")
                  .c_str(),
              "median", "min", "max");
  Writer lw(local, 0, size0 / 2), rw(remote, size0 / 2, size0 / 2);
  auto a = agent::NewGrpcAgentClient(b.owner().socket(), absl::Seconds(30));
  std::vector<double> recalled, ready, back;
  uint64_t size = size0;
  for (int r = 0; r < runs; ++r) {
    const int64_t epoch = daxlease_epoch(remote);
    if (!WaitFor(
            [&] {
              return lw.last_epoch() == epoch && rw.last_epoch() == epoch;
            },
            60)) {
      Die("the writers are not writing before the grow");
    }
    size += 64 << 20;
    agent::pb::ReshapeVolumeRequest req;
    req.set_volume_id(b.prefix() + vol);
    req.set_size_bytes(size);
    const double start = Now();
    absl::StatusOr<agent::pb::ReshapeVolumeResponse> ans;
    if (!WaitFor(
            [&] {
              ans = a->ReshapeVolume(req);
              return ans.ok() || !absl::IsUnavailable(ans.status());
            },
            120) ||
        !ans.ok() || ans->stage() != agent::pb::ReshapeVolumeResponse::CHANGE) {
      Die(absl::StrCat(
          "reshape did not reach CHANGE: ",
          ans.ok() ? ans->DebugString() : ans.status().ToString()));
    }
    recalled.push_back((Now() - start) * 1e3);
    req.set_complete(true);
    ans = a->ReshapeVolume(req);
    if (!ans.ok()) Die(ans.status().ToString());
    if (!WaitFor([&] { return b.VolumeReadyAt(vol, epoch + 1); }, 120)) {
      Die("the volume did not return to Ready at epoch + 1");
    }
    ready.push_back((Now() - start) * 1e3);
    if (!WaitFor(
            [&] { return lw.last_epoch() > epoch && rw.last_epoch() > epoch; },
            120)) {
      Die(absl::StrCat("the writers did not go on after the grow: epochs ",
                       lw.last_epoch(), " ", rw.last_epoch(), " (was ", epoch,
                       "), errors ", lw.errors(), " ", rw.errors(), ": ",
                       lw.first_error(), " / ", rw.first_error()));
    }
    back.push_back((Now() - start) * 1e3);
    if (daxlease_size(remote) != ans->served_bytes() ||
        daxlease_size(local) != ans->served_bytes()) {
      Die("a holder does not see the grown size");
    }
  }
  lw.Stop();
  rw.Stop();
  if (lw.errors() + rw.errors() > 0) Die("a writer saw an error");
  auto row = [&](const std::string& what, std::vector<double> v) {
    std::sort(v.begin(), v.end());
    std::printf("%-34s %10.1f %10.1f %10.1f\n", what.c_str(), Median(v),
                v.front(), v.back());
  };
  row(absl::StrCat("recall start -> Quiesced (", runs, ")"), recalled);
  row(absl::StrCat("recall start -> Ready e+1 (", runs, ")"), ready);
  row(absl::StrCat("recall start -> both writing (", runs, ")"), back);
  std::fflush(stdout);
  daxlease_detach(local);
  daxlease_detach(remote);
  (void)data;
}

int Main(int argc, char** argv) {
  uint64_t mib = 256;
  int runs = 3;
  std::vector<int> sizes = {1, 10, 100};
  uint64_t grow_mib = 1024;
  std::string kubeconfig;
  std::string only;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) Die(a + " needs a value");
      return argv[++i];
    };
    if (a == "--mib") {
      if (!absl::SimpleAtoi(next(), &mib) || mib == 0) Die("bad --mib");
    } else if (a == "--runs") {
      if (!absl::SimpleAtoi(next(), &runs) || runs <= 0) Die("bad --runs");
    } else if (a == "--sizes") {
      sizes.clear();
      for (absl::string_view p : absl::StrSplit(next(), ',')) {
        int n;
        if (!absl::SimpleAtoi(p, &n) || n <= 0) Die("bad --sizes");
        sizes.push_back(n);
      }
    } else if (a == "--grow-mib") {
      if (!absl::SimpleAtoi(next(), &grow_mib) || grow_mib == 0) {
        Die("bad --grow-mib");
      }
    } else if (a == "--kubeconfig") {
      kubeconfig = next();
    } else if (a == "--only") {
      only = next();
    } else {
      Die("usage: agent_bench [--mib N] [--runs N] [--sizes 1,10,100] "
          "[--grow-mib N] [--kubeconfig PATH] "
          "[--only local|remote|attach|recall|grow]");
    }
  }
  std::unique_ptr<k8s::KubeClient> real;
  std::unique_ptr<k8s::FakeKubeClient> fake;
  k8s::KubeClient* kube = nullptr;
  if (!kubeconfig.empty()) {
    auto c = k8s::testing::NewClient(kubeconfig);
    if (!c.ok()) Die(c.status().ToString());
    real = std::move(*c);
    absl::Status st = k8s::testing::InstallDaxleaseCrds(kubeconfig);
    if (!st.ok()) Die(st.ToString());
    kube = real.get();
  } else {
    fake = std::make_unique<k8s::FakeKubeClient>(base::RealClock());
    kube = fake.get();
  }
  std::printf("agent_bench: API server %s, %llu MiB per pass, best of %d\n",
              kubeconfig.empty() ? "fake (in process)" : kubeconfig.c_str(),
              static_cast<unsigned long long>(mib), runs);
  const uint64_t bytes = mib << 20;
  {
    Bench b(*kube, absl::StrCat("bench", getpid(), "-"));
    if (only.empty() || only == "local") LocalBench(b, bytes, runs);
    if (only.empty() || only == "remote") RemoteBench(b, bytes, runs);
    if (only.empty() || only == "attach") AttachBench(b, 20);
    if (only.empty() || only == "recall") RecallBench(b, sizes, runs);
    if (only.empty() || only == "grow") GrowBench(b, grow_mib, runs);
  }
  if (fake != nullptr) fake->Shutdown();
  return 0;
}

}  // namespace
}  // namespace daxlease

int main(int argc, char** argv) { return daxlease::Main(argc, argv); }
