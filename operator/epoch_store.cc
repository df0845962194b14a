#include "operator/epoch_store.h"

#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "lib/base/status.h"
#include "lib/k8s/resource.h"

namespace daxlease::op {
namespace {

absl::StatusOr<int64_t> EntryOf(const k8s::Json& cm, const std::string& key) {
  auto data = cm.find("data");
  if (data == cm.end() || !data->is_object()) return 0;
  auto it = data->find(key);
  if (it == data->end()) return 0;
  int64_t v = -1;
  if (!it->is_string() || !absl::SimpleAtoi(it->get<std::string>(), &v) ||
      v < 0) {
    return absl::DataLossError(
        absl::StrCat("epoch high-water mark of volume ", key,
                     " is not an integer: ", it->dump()));
  }
  return v;
}

constexpr uint32_t kShards = 64;

}  // namespace

std::string EpochStore::ShardOf(const std::string& volume) const {
  uint32_t h = 2166136261u;  // FNV-1a: stable across builds and machines
  for (unsigned char c : volume) {
    h ^= c;
    h *= 16777619u;
  }
  return absl::StrCat(options_.name, "-",
                      absl::Hex(h % kShards, absl::kZeroPad2));
}

absl::StatusOr<int64_t> EpochStore::Read(const std::string& volume) {
  absl::StatusOr<k8s::Json> cm =
      client_.Get(k8s::ConfigMapResource(), options_.ns, ShardOf(volume));
  if (absl::IsNotFound(cm.status())) return 0;
  if (!cm.ok()) return cm.status();
  return EntryOf(*cm, volume);
}

absl::Status EpochStore::Raise(const std::string& volume, int64_t epoch) {
  absl::StatusOr<k8s::Json> cm =
      client_.Get(k8s::ConfigMapResource(), options_.ns, ShardOf(volume));
  if (absl::IsNotFound(cm.status())) {
    k8s::Json obj = {
        {"apiVersion", "v1"},
        {"kind", "ConfigMap"},
        {"metadata", {{"name", ShardOf(volume)}, {"namespace", options_.ns}}},
        {"data", {{volume, absl::StrCat(epoch)}}}};
    absl::StatusOr<k8s::Json> made =
        client_.Create(k8s::ConfigMapResource(), obj);
    if (absl::IsAlreadyExists(made.status())) {
      return absl::AbortedError("epoch store created concurrently; retry");
    }
    return made.status();
  }
  if (!cm.ok()) return cm.status();
  ASSIGN_OR_RETURN(int64_t stored, EntryOf(*cm, volume));
  if (stored >= epoch) return absl::OkStatus();
  k8s::Json patch = {
      {"metadata", {{"resourceVersion", k8s::ResourceVersionOf(*cm)}}},
      {"data", {{volume, absl::StrCat(epoch)}}}};
  return client_
      .Patch(k8s::ConfigMapResource(), options_.ns, ShardOf(volume),
             k8s::PatchType::kMerge, patch)
      .status();
}

}  // namespace daxlease::op
