// The input format of csi_requests_fuzz, shared with the seed generator:
// a sequence of steps `op:u8 len:u16le payload[len]`. A trailing step that
// is cut short gets what is left as its payload.
#ifndef DAXLEASE_TESTS_FUZZ_CSI_REQUESTS_FORMAT_H_
#define DAXLEASE_TESTS_FUZZ_CSI_REQUESTS_FORMAT_H_

#include <stddef.h>
#include <stdint.h>

#include <string>

namespace daxlease::csi::fuzz {

// Values are part of the committed seeds: append, never renumber.
enum class Op : uint8_t {
  kRestart,   // new services over the same store and fakes + RecoverVolumes
  kFailNext,  // payload[0] picks a fake operation that fails once
  kGetPluginInfo,
  kProbe,
  kCreateVolume,
  kDeleteVolume,
  kValidateVolumeCapabilities,
  kListVolumes,
  kGetCapacity,
  kControllerGetVolume,
  kControllerExpandVolume,
  kNodeStageVolume,
  kNodeUnstageVolume,
  kNodePublishVolume,
  kNodeUnpublishVolume,
  kNodeGetVolumeStats,
  kNodeExpandVolume,
  kCount,
};

template <typename F>
void ForEachStep(const uint8_t* data, size_t size, F&& step) {
  size_t i = 0;
  while (i < size) {
    uint8_t op = data[i++];
    size_t len = 0;
    if (i < size) len = data[i++];
    if (i < size) len |= static_cast<size_t>(data[i++]) << 8;
    if (len > size - i) len = size - i;
    step(op, data + i, len);
    i += len;
  }
}

inline void AppendStep(std::string& out, Op op, const std::string& payload) {
  out.push_back(static_cast<char>(op));
  out.push_back(static_cast<char>(payload.size() & 0xff));
  out.push_back(static_cast<char>((payload.size() >> 8) & 0xff));
  out += payload;
}

}  // namespace daxlease::csi::fuzz

#endif  // DAXLEASE_TESTS_FUZZ_CSI_REQUESTS_FORMAT_H_
