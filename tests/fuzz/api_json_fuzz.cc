// libFuzzer target: the JSON decoding of every daxlease.io/v1alpha1 kind
// (lib/api/json.h), as the operator and the kubectl plugin decode what the
// API server sends: a single object, and a list's items. Input: JSON text.
//
// Besides what the sanitizers catch, it checks json.h's contract: FromJson
// never throws, and whatever it accepts survives a round trip unchanged
// (FromJson(ToJson(x)) == x).
#include <stddef.h>
#include <stdint.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/status/statusor.h"
#include "lib/api/json.h"
#include "lib/api/types.h"
#include "nlohmann/json.hpp"

namespace daxlease::api {
namespace {

template <typename T>
void Check(const nlohmann::json& j) {
  absl::StatusOr<T> v = FromJson<T>(j);
  if (v.ok()) {
    nlohmann::json again = ToJson(*v);
    absl::StatusOr<T> back = FromJson<T>(again);
    if (!back.ok() || !(*back == *v)) {
      fprintf(stderr, "round trip changed the object\nin:  %s\nout: %s\n%s\n",
              j.dump().c_str(), again.dump().c_str(),
              back.ok() ? "(parsed, not equal)"
                        : std::string(back.status().message()).c_str());
      abort();
    }
  }
  ListFromJson<T>(j).IgnoreError();
}

}  // namespace
}  // namespace daxlease::api

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace daxlease::api;
  nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr,
                                           /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  Check<DaxVolume>(j);
  Check<DaxLease>(j);
  Check<DaxRecall>(j);
  Check<DaxMigration>(j);
  if (j.is_string()) ParseWireTime(j.get<std::string>()).IgnoreError();
  return 0;
}
