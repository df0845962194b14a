// JSON wire form of the daxlease.io/v1alpha1 kinds (field names as in the CRD
// YAML under manifests/crd/), plus the enum <-> string tables and RFC 3339
// time used on the wire.
//
// ToJson omits fields at their default (empty string, 0, false, nullopt) so
// the output is what kubectl would show; FromJson treats a missing field as
// its default, so FromJson(ToJson(x)) == x. FromJson never throws: a wrong
// type or an unknown enum value is an InvalidArgument status naming the
// field. All functions are pure and thread-safe.
#ifndef DAXLEASE_LIB_API_JSON_H_
#define DAXLEASE_LIB_API_JSON_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "lib/api/types.h"
#include "nlohmann/json.hpp"

namespace daxlease::api {

// Wire name of an enum value ("Granted", "fsdax", "True", ...).
template <typename E>
std::string EnumName(E value);
// Inverse of EnumName; InvalidArgument for an unknown name.
template <typename E>
absl::StatusOr<E> ParseEnum(absl::string_view name);
// Every wire name of E, in declaration order (used by the schema test).
template <typename E>
std::vector<std::string> EnumNames();

// RFC 3339 in UTC ("2026-11-25T22:00:00Z"), with a fraction only when the
// time has one ("...:00.25Z"), so a deadline read back is never earlier than
// the one written.
std::string FormatWireTime(absl::Time t);
absl::StatusOr<absl::Time> ParseWireTime(absl::string_view s);

nlohmann::json ToJson(const ObjectMeta& m);
nlohmann::json ToJson(const Condition& c);
nlohmann::json ToJson(const DaxVolume& v);
nlohmann::json ToJson(const DaxLease& l);
nlohmann::json ToJson(const DaxRecall& r);
nlohmann::json ToJson(const DaxMigration& m);
nlohmann::json ToJson(const DaxVolumeStatus& s);
nlohmann::json ToJson(const DaxLeaseStatus& s);
nlohmann::json ToJson(const DaxRecallStatus& s);
nlohmann::json ToJson(const DaxMigrationStatus& s);

// The DaxRecall a recall's creator POSTs (an agent's Reshape, Snapshot or
// lease-break recall): `spec` of `volume` and `reason`, and kRecallFinalizer,
// so that the operator's start is one write. The caller names it
// (metadata.name, or metadata.generateName for the API server to complete).
nlohmann::json NewRecallObject(const std::string& volume, RecallReason reason);

// T is one of DaxVolume, DaxLease, DaxRecall, DaxMigration.
template <typename T>
absl::StatusOr<T> FromJson(const nlohmann::json& j);
// Parses the "items" of a list response.
template <typename T>
absl::StatusOr<std::vector<T>> ListFromJson(const nlohmann::json& list);

// The volume a DaxLease or DaxRecall object belongs to: status.boundTo.volume
// when the operator has recorded it (a later change of spec.volume does not
// move the object), else spec.volume; "" if neither is a string. Reads the
// raw object, so it works for objects FromJson refuses.
std::string OwningVolume(const nlohmann::json& obj);

// RFC 7386 merge patch that turns `from` into `to` (removed keys become
// null; arrays are replaced whole). Empty object when they are equal.
nlohmann::json CreateMergePatch(const nlohmann::json& from,
                                const nlohmann::json& to);

}  // namespace daxlease::api

#endif  // DAXLEASE_LIB_API_JSON_H_
