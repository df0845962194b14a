// Command-line parsing shared by the daxlease daemons (absl flags).
//
// Flags are spelled with dashes on the command line, as Kubernetes
// components do (--node-id, --leader-election-name); absl flag names are
// identifiers (node_id). ParseFlags translates the name part of every
// --flag before parsing and makes --help list the program's own flags (those
// defined in its main.cc) instead of "No flags matched".
#ifndef DAXLEASE_LIB_BASE_FLAGS_H_
#define DAXLEASE_LIB_BASE_FLAGS_H_

#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace daxlease::base {

// argv with each "--some-name[=value]" turned into "--some_name[=value]".
// Values, single-dash and positional arguments, and everything after "--",
// are left alone.
std::vector<std::string> UnderscoreFlagNames(std::vector<std::string> args);

// Sets the usage message and --help's file filter, translates the names
// and parses (absl::ParseCommandLine: exits on --help or a bad flag).
// The daemons take no positional arguments; any are ignored.
void ParseFlags(int argc, char** argv, absl::string_view usage);

}  // namespace daxlease::base

#endif  // DAXLEASE_LIB_BASE_FLAGS_H_
