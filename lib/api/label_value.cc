#include "lib/api/label_value.h"

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "lib/api/types.h"

namespace daxlease::api {

std::string LabelValueFor(std::string_view name) {
  constexpr size_t kMaxLabelValue = 63;
  if (name.size() <= kMaxLabelValue) return std::string(name);
  uint64_t h = 0xcbf29ce484222325ULL;  // FNV-1a 64
  for (unsigned char c : name) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  // A name starts with an alphanumeric character, as a label value must;
  // the hex digits end it with one.
  return absl::StrFormat("%s-%016x", name.substr(0, kMaxLabelValue - 17), h);
}

std::string VolumeLabelSelector(std::string_view volume) {
  return absl::StrCat(kVolumeLabel, "=", LabelValueFor(volume));
}

}  // namespace daxlease::api
