// TLS material for the recall channel: each operator leader makes a fresh
// self-signed certificate when it starts leading and publishes it with its
// endpoint (leader_record.h). Agents trust exactly that certificate, which
// they read from the API server over their own authenticated connection, so
// the API server is the root of trust and no CA key has to be kept anywhere.
#ifndef DAXLEASE_LIB_CHANNEL_TLS_H_
#define DAXLEASE_LIB_CHANNEL_TLS_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace daxlease::channel {

// The name every channel certificate carries (subjectAltName DNS) and that
// clients check (gRPC's target name override), whatever address they dial.
inline constexpr char kServerName[] = "daxlease-operator.channel";

struct Certificate {
  std::string cert_pem;
  std::string key_pem;
};

// A P-256 key and a self-signed certificate for kServerName valid for
// `validity` from now. Internal error if OpenSSL fails.
absl::StatusOr<Certificate> SelfSignedCertificate(
    absl::Duration validity = absl::Hours(24 * 365));

}  // namespace daxlease::channel

#endif  // DAXLEASE_LIB_CHANNEL_TLS_H_
