#include "lib/channel/tls.h"

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>

#include "absl/strings/str_cat.h"

namespace daxlease::channel {
namespace {

template <typename T, void (*F)(T*)>
struct Deleter {
  void operator()(T* p) const { F(p); }
};
using PKey = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;
using Cert = std::unique_ptr<X509, Deleter<X509, X509_free>>;
using Bio = std::unique_ptr<BIO, Deleter<BIO, BIO_free_all>>;
using Ext = std::unique_ptr<X509_EXTENSION,
                            Deleter<X509_EXTENSION, X509_EXTENSION_free>>;

absl::Status Failed(const char* what) {
  return absl::InternalError(absl::StrCat("openssl: ", what));
}

absl::StatusOr<std::string> BioText(BIO* b) {
  char* data = nullptr;
  long n = BIO_get_mem_data(b, &data);
  if (n <= 0) return Failed("empty PEM");
  return std::string(data, static_cast<size_t>(n));
}

}  // namespace

absl::StatusOr<Certificate> SelfSignedCertificate(absl::Duration validity) {
  PKey key(EVP_EC_gen("P-256"));
  if (!key) return Failed("EVP_EC_gen");
  Cert x(X509_new());
  if (!x) return Failed("X509_new");
  X509_set_version(x.get(), 2);
  unsigned char serial[16];
  if (RAND_bytes(serial, sizeof(serial)) != 1) return Failed("RAND_bytes");
  serial[0] &= 0x7f;
  BIGNUM* bn = BN_bin2bn(serial, sizeof(serial), nullptr);
  if (bn == nullptr) return Failed("BN_bin2bn");
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x.get()));
  BN_free(bn);
  X509_gmtime_adj(X509_getm_notBefore(x.get()), -60);
  X509_gmtime_adj(X509_getm_notAfter(x.get()),
                  static_cast<long>(absl::ToInt64Seconds(validity)));
  X509_set_pubkey(x.get(), key.get());
  X509_NAME* name = X509_get_subject_name(x.get());
  X509_NAME_add_entry_by_txt(
      name, "CN", MBSTRING_ASC,
      reinterpret_cast<const unsigned char*>(kServerName), -1, -1, 0);
  X509_set_issuer_name(x.get(), name);
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, x.get(), x.get(), nullptr, nullptr, 0);
  const std::string san = absl::StrCat("DNS:", kServerName);
  for (auto [nid, value] :
       {std::pair<int, const char*>{NID_subject_alt_name, san.c_str()},
        {NID_basic_constraints, "critical,CA:TRUE"},
        {NID_key_usage, "critical,digitalSignature,keyCertSign"}}) {
    Ext ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value));
    if (!ext || X509_add_ext(x.get(), ext.get(), -1) != 1) {
      return Failed("X509_add_ext");
    }
  }
  if (X509_sign(x.get(), key.get(), EVP_sha256()) == 0) {
    return Failed("X509_sign");
  }
  Certificate out;
  Bio cb(BIO_new(BIO_s_mem()));
  if (!cb || PEM_write_bio_X509(cb.get(), x.get()) != 1) {
    return Failed("PEM_write_bio_X509");
  }
  absl::StatusOr<std::string> cert = BioText(cb.get());
  if (!cert.ok()) return cert.status();
  out.cert_pem = *std::move(cert);
  Bio kb(BIO_new(BIO_s_mem()));
  if (!kb || PEM_write_bio_PrivateKey(kb.get(), key.get(), nullptr, nullptr, 0,
                                      nullptr, nullptr) != 1) {
    return Failed("PEM_write_bio_PrivateKey");
  }
  absl::StatusOr<std::string> k = BioText(kb.get());
  if (!k.ok()) return k.status();
  out.key_pem = *std::move(k);
  return out;
}

}  // namespace daxlease::channel
