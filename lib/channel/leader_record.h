// Where agents find the operator leader's recall channel: a ConfigMap
// (default default/daxlease-operator-channel) with data
//   endpoint: host:port the leader serves the channel on
//   certificate: its self-signed certificate (PEM), the one agents trust
//   identity: the leader's election identity
// The leader writes it when it starts leading and again whenever it finds
// another value there (a deposed leader's late write); agents read it to
// (re)connect, so a leadership move needs no restart of anything. Only the
// operator's service account may write it (RBAC); agents only read it.
#ifndef DAXLEASE_LIB_CHANNEL_LEADER_RECORD_H_
#define DAXLEASE_LIB_CHANNEL_LEADER_RECORD_H_

#include <string>

#include "absl/status/statusor.h"
#include "lib/k8s/client.h"

namespace daxlease::channel {

struct LeaderRecord {
  std::string endpoint;
  std::string certificate;
  std::string identity;
  friend bool operator==(const LeaderRecord&, const LeaderRecord&) = default;
};

struct RecordLocation {
  std::string ns = "default";
  std::string name = "daxlease-operator-channel";
};

// Parses "NAMESPACE/NAME". InvalidArgument otherwise.
absl::StatusOr<RecordLocation> ParseRecordLocation(const std::string& s);

// The record as stored; NotFound when there is none, InvalidArgument when it
// lacks the endpoint or the certificate.
absl::StatusOr<LeaderRecord> ReadLeaderRecord(k8s::KubeClient& c,
                                              const RecordLocation& at);

// Creates or overwrites the record (idempotent).
absl::Status WriteLeaderRecord(k8s::KubeClient& c, const RecordLocation& at,
                               const LeaderRecord& r);

}  // namespace daxlease::channel

#endif  // DAXLEASE_LIB_CHANNEL_LEADER_RECORD_H_
