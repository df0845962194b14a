// ChannelClient: an agent's end of the recall channel. Finds the leader in
// its record (leader_record.h), connects over TLS trusting only the
// certificate published there, presents the agent's token, and keeps the
// stream open; when it ends (the leader died or moved, the network broke)
// it reads the record again and reconnects, so a leadership move needs no
// restart. Messages from the operator go to `on_message` (on the client's
// thread, in order); answers given to Report are batched: everything
// queued while a write is in flight goes out as one AgentReport.
//
// Answers are soft state: a report queued while disconnected is sent on
// the next stream, and the operator re-sends whatever is still outstanding
// when a stream opens, so the agent answers it again from its current
// state. Thread-safe.
#ifndef DAXLEASE_LIB_CHANNEL_CLIENT_H_
#define DAXLEASE_LIB_CHANNEL_CLIENT_H_

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "lib/channel/leader_record.h"
#include "lib/k8s/client.h"
#include "proto/channel.pb.h"

namespace grpc {
class ClientContext;
}

namespace daxlease::channel {

namespace pb = ::daxlease::channel::v1;

struct ChannelClientOptions {
  RecordLocation record;
  // The credential, read again for every connection (projected tokens are
  // rotated by the kubelet).
  std::function<absl::StatusOr<std::string>()> token;
  // Wait between attempts while there is no leader to reach, doubling up
  // to max_retry while attempts fail (a refused token is not retried hot).
  absl::Duration retry = absl::Milliseconds(100);
  absl::Duration max_retry = absl::Seconds(2);
};

class ChannelClient {
 public:
  // `client` (to read the record) must outlive this.
  ChannelClient(k8s::KubeClient& client, ChannelClientOptions options,
                std::function<void(const pb::OperatorMessage&)> on_message);
  ~ChannelClient();  // Stop()
  ChannelClient(const ChannelClient&) = delete;
  ChannelClient& operator=(const ChannelClient&) = delete;

  void Start();
  void Stop();  // idempotent

  // Queues answers (merged with what is queued).
  void Report(const pb::AgentReport& report);

  // The node the operator authenticated the current stream as ("" while
  // not connected).
  std::string node() const;
  // Streams opened so far.
  int64_t connects() const { return connects_.load(); }
  // Ends the current stream (a test's network break); the client reconnects.
  void Disconnect();

 private:
  void Run();
  // True if the operator accepted the stream (it sent our node).
  bool RunStream(const LeaderRecord& rec, const std::string& token);

  k8s::KubeClient& client_;
  const ChannelClientOptions options_;
  const std::function<void(const pb::OperatorMessage&)> on_message_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  bool started_ = false;
  std::string node_;
  grpc::ClientContext* ctx_ = nullptr;  // of the open stream
  pb::AgentReport pending_;
  bool writing_ = false;  // a stream's writer may take pending_
  std::atomic<int64_t> connects_{0};
  std::thread thread_;
};

}  // namespace daxlease::channel

#endif  // DAXLEASE_LIB_CHANNEL_CLIENT_H_
