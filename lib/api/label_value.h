// Label values made from object names. A label value holds at most 63
// characters; an object name (a DNS subdomain) up to 253, and the names
// daxlease makes can be longer than 63: `kubectl daxlease migrate` names a
// DaxMigration after its volume, whose ID alone may be 57 characters, and a
// DaxVolume made by hand may have any name a DNS subdomain may.
#ifndef DAXLEASE_LIB_API_LABEL_VALUE_H_
#define DAXLEASE_LIB_API_LABEL_VALUE_H_

#include <string>
#include <string_view>

namespace daxlease::api {

// The label value that stands for the object name `name`: `name` itself
// when it fits (63 characters at most), else its first 46 characters, a
// dash and the 16 hex digits of its FNV-1a hash (63 characters), so that
// long names stay apart. Pure. Compare a label with LabelValueFor(name),
// never with the name.
std::string LabelValueFor(std::string_view name);

// The label selector of the objects of volume `volume` (leases, and the
// operator's Migrate recalls): "daxlease.io/volume=" +
// LabelValueFor(volume), as kVolumeLabel is written.
std::string VolumeLabelSelector(std::string_view volume);

}  // namespace daxlease::api

#endif  // DAXLEASE_LIB_API_LABEL_VALUE_H_
