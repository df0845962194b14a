// GrantCredential: HMAC-SHA256 with OpenSSL (included here only).
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "node-agent/fabric/fabric.h"

namespace daxlease::fabric {

std::string GrantCredential(const std::string& secret, const GrantKey& key,
                            Access access) {
  // Fields are length-prefixed so no two keys serialize alike.
  std::string msg = "daxlease-grant-v1";
  for (const std::string& f :
       {key.volume, key.lease_uid, key.holder_node, std::to_string(key.epoch),
        std::string(access == Access::kReadWrite ? "rw" : "ro")}) {
    absl::StrAppend(&msg, "|", f.size(), ":", f);
  }
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(msg.data()), msg.size(), out,
       &len);
  return std::string(reinterpret_cast<const char*>(out), len);
}

}  // namespace daxlease::fabric
