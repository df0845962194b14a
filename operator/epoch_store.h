// The epoch high-water mark of every DaxVolume name: the highest epoch any
// volume of that name has reached. A DaxVolume is deleted only after the
// operator has raised this mark to its epoch (the volume finalizer), and a
// volume first seen without an epoch starts above the mark, so a volume
// deleted and created again never grants at an epoch a holder of the old
// one may still present (docs/operator.md, "Deleting a volume").
//
// Stored in ConfigMaps in the operator's namespace, `<name>-00` to
// `<name>-3f` (data: volume name -> decimal epoch; the shard is FNV-1a of the
// volume name mod 64, so about a million names fit within the 1 MiB object
// limit). They are not owned by any DaxVolume (no ownerReference), so
// deleting a volume does not garbage-collect them, and the operator never
// removes an entry: a name may come back at any time.
#ifndef DAXLEASE_OPERATOR_EPOCH_STORE_H_
#define DAXLEASE_OPERATOR_EPOCH_STORE_H_

#include <cstdint>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "lib/k8s/client.h"

namespace daxlease::op {

struct EpochStoreOptions {
  std::string ns = "default";
  std::string name = "daxlease-epochs";  // prefix of the 64 shards
};

class EpochStore {
 public:
  // `client` must outlive the store.
  EpochStore(k8s::KubeClient& client, EpochStoreOptions options)
      : client_(client), options_(std::move(options)) {}

  // The mark of `volume`; 0 if none (no ConfigMap, no entry). An entry that
  // is not a non-negative integer is DataLoss: the operator cannot know
  // which epochs are safe, so it does not guess.
  absl::StatusOr<int64_t> Read(const std::string& volume);

  // Makes the mark of `volume` at least `epoch`. Idempotent. Creates the
  // ConfigMap when absent; every update carries the resourceVersion read,
  // so concurrent raises never lose one (Aborted: retry).
  absl::Status Raise(const std::string& volume, int64_t epoch);

 private:
  std::string ShardOf(const std::string& volume) const;

  k8s::KubeClient& client_;
  const EpochStoreOptions options_;
};

}  // namespace daxlease::op

#endif  // DAXLEASE_OPERATOR_EPOCH_STORE_H_
