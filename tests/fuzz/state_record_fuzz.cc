// libFuzzer target: the CSI state store's record parser
// (csi/state_store.h RecordFromJson), which a restarted plugin runs on every
// file in its state directory. Input: the file's bytes.
//
// Besides what the sanitizers catch, a record it accepts must survive a
// round trip: RecordToJson of it parses again to the same JSON.
#include <stddef.h>
#include <stdint.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "csi/state_store.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace daxlease::csi;
  absl::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<VolumeRecord> rec = RecordFromJson(text);
  if (!rec.ok()) return 0;
  const std::string once = RecordToJson(*rec);
  absl::StatusOr<VolumeRecord> back = RecordFromJson(once);
  if (!back.ok() || RecordToJson(*back) != once) {
    fprintf(stderr, "round trip changed the record\nfirst:\n%s\n%s\n",
            once.c_str(),
            back.ok() ? RecordToJson(*back).c_str()
                      : std::string(back.status().message()).c_str());
    abort();
  }
  return 0;
}
