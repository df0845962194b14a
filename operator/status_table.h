// What `kubectl daxlease status` prints, as pure functions over the API
// objects and the time (the plugin binary only fetches and writes).
#ifndef DAXLEASE_OPERATOR_STATUS_TABLE_H_
#define DAXLEASE_OPERATOR_STATUS_TABLE_H_

#include <string>
#include <vector>

#include "absl/time/time.h"
#include "lib/api/types.h"

namespace daxlease::op {

// Columns padded to their widest cell, two spaces apart, header first.
std::string FormatTable(const std::vector<std::vector<std::string>>& rows);

// "12s", "3m05s", "expired" (when `until` <= now), "-" for none.
std::string TimeLeft(std::optional<absl::Time> until, absl::Time now);

// The volumes (all given), then for each its leases, then the recalls in
// progress with their time left, then the migrations (all given: running
// ones with their bytes copied, finished ones with their outcome). Objects
// are printed in name order.
std::string FormatStatus(const std::vector<api::DaxVolume>& volumes,
                         const std::vector<api::DaxLease>& leases,
                         const std::vector<api::DaxRecall>& recalls,
                         absl::Time now,
                         const std::vector<api::DaxMigration>& migrations = {});

}  // namespace daxlease::op

#endif  // DAXLEASE_OPERATOR_STATUS_TABLE_H_
