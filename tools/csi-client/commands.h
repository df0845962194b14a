// The command table of daxlease-csi-client and the parsing of a command line
// into a CSI request.
//
// One table entry per RPC: its kebab-case name, the full gRPC method, and the
// flags that fill request fields (by dotted field path, through protobuf
// reflection). Adding a command is adding a table row; there is no per-RPC
// code. `call METHOD --json '{...}'` sends any request of the csi.v1 services
// as proto3 JSON, for bad-input tests.
//
// Thread safety: everything here is pure; the table is immutable.
#ifndef DAXLEASE_TOOLS_CSI_CLIENT_COMMANDS_H_
#define DAXLEASE_TOOLS_CSI_CLIENT_COMMANDS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/message.h"

namespace daxlease::csiclient {

enum class FlagKind {
  kString,
  kBytes,  // int64 byte count; accepts K/M/G/T and Ki/Mi/Gi/Ti suffixes
  kInt32,
  kBool,  // present = true, takes no value
  kMap,   // k=v, repeatable
};

// A command-line flag and the request field it fills.
struct FlagSpec {
  const char* name;        // without the leading "--"
  const char* field_path;  // dotted path in the request, e.g.
                           // "capacity_range.required_bytes"
  FlagKind kind;
  const char* help;
};

// Whether a command takes the volume capability flags (--block, --fstype,
// --mount-flag, --access-mode) and always sends a capability.
enum class CapabilityUse { kNone, kOptional, kAlways };

struct CommandSpec {
  const char* name;    // kebab-case RPC name: "node-stage-volume"
  const char* method;  // "/csi.v1.Node/NodeStageVolume"
  std::vector<FlagSpec> flags;
  CapabilityUse capability;
};

// The command table (every RPC the daxlease plugin serves).
const std::vector<CommandSpec>& Commands();

// A parsed command: which method to call with which request.
struct Invocation {
  std::string method;
  std::unique_ptr<google::protobuf::Message> request;
};

// Parses `COMMAND [flags...]` (the global flags such as --endpoint already
// removed). Returns InvalidArgument with a message fit for the user on an
// unknown command, unknown flag, missing flag value or malformed value.
absl::StatusOr<Invocation> ParseCommand(const std::vector<std::string>& args);

// A new, empty response message for a full method name from Invocation.
absl::StatusOr<std::unique_ptr<google::protobuf::Message>> NewResponse(
    absl::string_view method);

// Human-readable usage text listing every command and its flags.
std::string Usage();

// Parses "64Mi", "1G", "4096" into bytes.
absl::StatusOr<int64_t> ParseByteCount(absl::string_view text);

}  // namespace daxlease::csiclient

#endif  // DAXLEASE_TOOLS_CSI_CLIENT_COMMANDS_H_
