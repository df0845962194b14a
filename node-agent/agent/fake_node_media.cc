#include "node-agent/agent/fake_node_media.h"

#include "absl/strings/str_cat.h"
#include "lib/sys/file.h"

namespace daxlease::agent {

absl::StatusOr<NodeMedia::Media> FakeNodeMedia::Create(
    const std::string& volume, ::daxlease::agent::v1::VolumeMode mode,
    uint64_t size_bytes) {
  std::lock_guard<std::mutex> l(mu_);
  ++create_calls_;
  if (!create_error_.ok()) return create_error_;
  if (mode != ::daxlease::agent::v1::DEVDAX) {
    return absl::InvalidArgumentError("the fake makes devdax media only");
  }
  auto it = media_.find(volume);
  if (it != media_.end()) return it->second;
  Media m;
  m.device = absl::StrCat(dir_, "/", volume, ".dev");
  m.size_bytes = size_bytes;
  // A regular file of the size, zeros (a namespace after an erase).
  if (absl::Status st =
          sys::WriteFileAtomic(m.device, std::string(size_bytes, '\0'));
      !st.ok()) {
    return st;
  }
  media_[volume] = m;
  return m;
}

absl::Status FakeNodeMedia::Free(const std::string& volume,
                                 const std::string& owner_node) {
  std::lock_guard<std::mutex> l(mu_);
  ++free_calls_;
  if (!free_error_.ok()) return free_error_;
  auto it = media_.find(volume);
  const std::string path = it != media_.end()
                               ? it->second.device
                               : absl::StrCat(dir_, "/", volume, ".dev");
  absl::Status st = sys::RemoveFile(path);
  if (!st.ok() && !absl::IsNotFound(st)) return st;
  if (it != media_.end()) media_.erase(it);
  return absl::OkStatus();
}

void FakeNodeMedia::SetFreeError(absl::Status st) {
  std::lock_guard<std::mutex> l(mu_);
  free_error_ = std::move(st);
}

void FakeNodeMedia::SetCreateError(absl::Status st) {
  std::lock_guard<std::mutex> l(mu_);
  create_error_ = std::move(st);
}

std::map<std::string, std::string> FakeNodeMedia::Volumes() const {
  std::lock_guard<std::mutex> l(mu_);
  std::map<std::string, std::string> out;
  for (const auto& [v, m] : media_) out[v] = m.device;
  return out;
}

int FakeNodeMedia::free_calls() const {
  std::lock_guard<std::mutex> l(mu_);
  return free_calls_;
}

int FakeNodeMedia::create_calls() const {
  std::lock_guard<std::mutex> l(mu_);
  return create_calls_;
}

}  // namespace daxlease::agent
