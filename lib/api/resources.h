// Where the daxlease.io/v1alpha1 kinds live on the API server, as
// k8s::Resource values for lib/k8s's clients and informers. All four are
// cluster-scoped.
#ifndef DAXLEASE_LIB_API_RESOURCES_H_
#define DAXLEASE_LIB_API_RESOURCES_H_

#include "lib/api/types.h"
#include "lib/k8s/resource.h"

namespace daxlease::api {

// The resource of kind T (DaxVolume, DaxLease, DaxRecall, DaxMigration).
template <typename T>
k8s::Resource ResourceOf() {
  return k8s::Resource{kGroup, kVersion, Resource<T>::kPlural, false};
}

inline k8s::Resource DaxVolumeResource() { return ResourceOf<DaxVolume>(); }
inline k8s::Resource DaxLeaseResource() { return ResourceOf<DaxLease>(); }
inline k8s::Resource DaxRecallResource() { return ResourceOf<DaxRecall>(); }
inline k8s::Resource DaxMigrationResource() {
  return ResourceOf<DaxMigration>();
}

}  // namespace daxlease::api

#endif  // DAXLEASE_LIB_API_RESOURCES_H_
