#include "tools/csi-client/commands.h"

#include <cctype>
#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/util/json_util.h"
#include "proto/csi.pb.h"

namespace daxlease::csiclient {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::MethodDescriptor;
using google::protobuf::Reflection;

constexpr FlagKind kStr = FlagKind::kString;
constexpr FlagKind kBytes = FlagKind::kBytes;
constexpr FlagKind kMap = FlagKind::kMap;

// Flags shared by several commands.
const FlagSpec kVolumeId{"volume-id", "volume_id", kStr, "volume ID"};
const FlagSpec kStaging{"staging-target-path", "staging_target_path", kStr,
                        "staging directory (node-global)"};
const FlagSpec kTarget{"target-path", "target_path", kStr,
                       "publish target (directory, or file for --block)"};
const FlagSpec kRequired{"capacity-bytes", "capacity_range.required_bytes",
                         kBytes, "required size (e.g. 64Mi, 1Gi)"};
const FlagSpec kLimit{"limit-bytes", "capacity_range.limit_bytes", kBytes,
                      "size limit"};
const FlagSpec kParam{"param", "parameters", kMap,
                      "k=v plugin parameter (repeatable)"};
const FlagSpec kContext{"context", "volume_context", kMap,
                        "k=v volume context (repeatable)"};
const FlagSpec kPublishContext{"publish-context", "publish_context", kMap,
                               "k=v publish context (repeatable)"};
const FlagSpec kSecret{"secret", "secrets", kMap, "k=v secret (repeatable)"};

// Flags that build a VolumeCapability; handled outside the field paths.
const std::vector<FlagSpec>& CapabilityFlags() {
  static const auto* flags = new std::vector<FlagSpec>{
      {"block", "", FlagKind::kBool, "block access (default: mount)"},
      {"fstype", "", kStr, "filesystem type for mount access (ext4, xfs)"},
      {"mount-flag", "", kStr, "mount option (repeatable)"},
      {"access-mode", "", kStr,
       "single-node-writer (default), single-node-reader-only, ..."},
  };
  return *flags;
}

bool HasCapabilityFlag(absl::string_view name) {
  for (const FlagSpec& f : CapabilityFlags()) {
    if (name == f.name) return true;
  }
  return false;
}

const google::protobuf::FileDescriptor* CsiFile() {
  return csi::v1::ProbeRequest::descriptor()->file();
}

// "/csi.v1.Node/NodeStageVolume" -> descriptor.
const MethodDescriptor* FindMethodByPath(absl::string_view path) {
  std::vector<std::string> parts = absl::StrSplit(path, '/');
  if (parts.size() != 3 || !parts[0].empty()) return nullptr;
  const auto* service =
      CsiFile()->pool()->FindServiceByName(std::string(parts[1]));
  return service == nullptr ? nullptr : service->FindMethodByName(parts[2]);
}

std::string MethodPath(const MethodDescriptor* m) {
  return absl::StrCat("/", m->service()->full_name(), "/", m->name());
}

// Accepts "/csi.v1.Node/NodeGetInfo", "csi.v1.Node.NodeGetInfo",
// "NodeGetInfo" or "node-get-info".
const MethodDescriptor* ResolveMethod(absl::string_view name) {
  if (const MethodDescriptor* m = FindMethodByPath(name)) return m;
  if (const auto* m = CsiFile()->pool()->FindMethodByName(std::string(name))) {
    return m;
  }
  std::string flat =
      absl::AsciiStrToLower(absl::StrReplaceAll(name, {{"-", ""}}));
  for (int s = 0; s < CsiFile()->service_count(); ++s) {
    const auto* service = CsiFile()->service(s);
    for (int i = 0; i < service->method_count(); ++i) {
      if (absl::AsciiStrToLower(service->method(i)->name()) == flat) {
        return service->method(i);
      }
    }
  }
  return nullptr;
}

absl::Status UsageError(absl::string_view msg) {
  return absl::InvalidArgumentError(msg);
}

// Walks a dotted path to the message holding the last field.
absl::StatusOr<std::pair<Message*, const FieldDescriptor*>> ResolveField(
    Message* msg, absl::string_view path) {
  std::vector<std::string> parts = absl::StrSplit(path, '.');
  for (size_t i = 0; i < parts.size(); ++i) {
    const FieldDescriptor* field =
        msg->GetDescriptor()->FindFieldByName(parts[i]);
    if (field == nullptr) {
      return absl::InternalError(absl::StrCat("command table: no field ", path,
                                              " in ",
                                              msg->GetDescriptor()->name()));
    }
    if (i + 1 == parts.size()) return std::make_pair(msg, field);
    msg = msg->GetReflection()->MutableMessage(msg, field);
  }
  return absl::InternalError("command table: empty field path");
}

absl::Status SetFlag(Message* request, const FlagSpec& flag,
                     absl::string_view value) {
  auto resolved = ResolveField(request, flag.field_path);
  if (!resolved.ok()) return resolved.status();
  auto [msg, field] = *resolved;
  const Reflection* r = msg->GetReflection();
  switch (flag.kind) {
    case FlagKind::kString:
      r->SetString(msg, field, std::string(value));
      return absl::OkStatus();
    case FlagKind::kBool:
      r->SetBool(msg, field, true);
      return absl::OkStatus();
    case FlagKind::kInt32: {
      int32_t n;
      if (!absl::SimpleAtoi(value, &n)) {
        return UsageError(
            absl::StrCat("--", flag.name, ": not an integer: ", value));
      }
      r->SetInt32(msg, field, n);
      return absl::OkStatus();
    }
    case FlagKind::kBytes: {
      absl::StatusOr<int64_t> n = ParseByteCount(value);
      if (!n.ok()) {
        return UsageError(
            absl::StrCat("--", flag.name, ": ", n.status().message()));
      }
      r->SetInt64(msg, field, *n);
      return absl::OkStatus();
    }
    case FlagKind::kMap: {
      std::pair<std::string, std::string> kv =
          absl::StrSplit(value, absl::MaxSplits('=', 1));
      if (value.find('=') == absl::string_view::npos) {
        return UsageError(
            absl::StrCat("--", flag.name, ": expected key=value, got ", value));
      }
      Message* entry = r->AddMessage(msg, field);
      const Descriptor* d = entry->GetDescriptor();
      entry->GetReflection()->SetString(entry, d->FindFieldByName("key"),
                                        kv.first);
      entry->GetReflection()->SetString(entry, d->FindFieldByName("value"),
                                        kv.second);
      return absl::OkStatus();
    }
  }
  return absl::InternalError("unreachable");
}

struct CapabilityArgs {
  bool any = false;
  bool block = false;
  std::string fstype;
  std::vector<std::string> mount_flags;
  std::string access_mode;
};

absl::StatusOr<csi::v1::VolumeCapability> BuildCapability(
    const CapabilityArgs& args) {
  csi::v1::VolumeCapability cap;
  if (args.block) {
    if (!args.fstype.empty() || !args.mount_flags.empty()) {
      return UsageError(
          "--block cannot be combined with --fstype/--mount-flag");
    }
    cap.mutable_block();
  } else {
    cap.mutable_mount()->set_fs_type(args.fstype);
    for (const std::string& f : args.mount_flags) {
      cap.mutable_mount()->add_mount_flags(f);
    }
  }
  auto mode = csi::v1::VolumeCapability::AccessMode::SINGLE_NODE_WRITER;
  if (!args.access_mode.empty()) {
    std::string name = absl::AsciiStrToUpper(
        absl::StrReplaceAll(args.access_mode, {{"-", "_"}}));
    if (!csi::v1::VolumeCapability::AccessMode::Mode_Parse(name, &mode)) {
      return UsageError(
          absl::StrCat("--access-mode: unknown mode ", args.access_mode));
    }
  }
  cap.mutable_access_mode()->set_mode(mode);
  return cap;
}

absl::Status AttachCapability(Message* request,
                              const csi::v1::VolumeCapability& cap) {
  const Descriptor* d = request->GetDescriptor();
  const Reflection* r = request->GetReflection();
  if (const FieldDescriptor* f = d->FindFieldByName("volume_capabilities")) {
    r->AddMessage(request, f)->CopyFrom(cap);
    return absl::OkStatus();
  }
  if (const FieldDescriptor* f = d->FindFieldByName("volume_capability")) {
    r->MutableMessage(request, f)->CopyFrom(cap);
    return absl::OkStatus();
  }
  return absl::InternalError(
      absl::StrCat("command table: ", d->name(), " has no capability field"));
}

// Splits "--name=value" / "--name value"; bool flags take no value.
struct FlagToken {
  std::string name;
  std::optional<std::string> inline_value;
};

std::optional<FlagToken> AsFlag(absl::string_view arg) {
  if (arg.size() < 3 || arg.substr(0, 2) != "--") return std::nullopt;
  arg.remove_prefix(2);
  FlagToken t;
  size_t eq = arg.find('=');
  if (eq == absl::string_view::npos) {
    t.name = std::string(arg);
  } else {
    t.name = std::string(arg.substr(0, eq));
    t.inline_value = std::string(arg.substr(eq + 1));
  }
  return t;
}

absl::StatusOr<Invocation> ParseCall(const std::vector<std::string>& args) {
  if (args.size() < 2) return UsageError("call: missing METHOD");
  const MethodDescriptor* m = ResolveMethod(args[1]);
  if (m == nullptr) {
    return UsageError(absl::StrCat("call: unknown method ", args[1]));
  }
  std::string json = "{}";
  for (size_t i = 2; i < args.size(); ++i) {
    std::optional<FlagToken> t = AsFlag(args[i]);
    if (!t || t->name != "json") {
      return UsageError(absl::StrCat("call: unexpected argument ", args[i]));
    }
    if (t->inline_value) {
      json = *t->inline_value;
    } else if (i + 1 < args.size()) {
      json = args[++i];
    } else {
      return UsageError("call: --json needs a value");
    }
  }
  Invocation inv;
  inv.method = MethodPath(m);
  inv.request.reset(google::protobuf::MessageFactory::generated_factory()
                        ->GetPrototype(m->input_type())
                        ->New());
  google::protobuf::util::JsonParseOptions opts;
  opts.ignore_unknown_fields = false;
  auto st = google::protobuf::util::JsonStringToMessage(json, inv.request.get(),
                                                        opts);
  if (!st.ok()) {
    return UsageError(absl::StrCat("call: --json is not a valid ",
                                   m->input_type()->full_name(), ": ",
                                   std::string(st.message())));
  }
  return inv;
}

}  // namespace

const std::vector<CommandSpec>& Commands() {
  using C = CapabilityUse;
  static const auto* table = new std::vector<CommandSpec>{
      {"get-plugin-info", "/csi.v1.Identity/GetPluginInfo", {}, C::kNone},
      {"get-plugin-capabilities",
       "/csi.v1.Identity/GetPluginCapabilities",
       {},
       C::kNone},
      {"probe", "/csi.v1.Identity/Probe", {}, C::kNone},
      {"create-volume",
       "/csi.v1.Controller/CreateVolume",
       {{"name", "name", kStr, "volume name (idempotency key)"},
        kRequired,
        kLimit,
        kParam,
        kSecret,
        {"mutable-param", "mutable_parameters", kMap,
         "k=v mutable parameter (repeatable)"}},
       C::kAlways},
      {"delete-volume",
       "/csi.v1.Controller/DeleteVolume",
       {kVolumeId, kSecret},
       C::kNone},
      {"list-volumes",
       "/csi.v1.Controller/ListVolumes",
       {{"max-entries", "max_entries", FlagKind::kInt32, "page size"},
        {"starting-token", "starting_token", kStr, "next_token of a page"}},
       C::kNone},
      {"get-capacity",
       "/csi.v1.Controller/GetCapacity",
       {kParam,
        {"topology", "accessible_topology.segments", kMap,
         "k=v topology segment (repeatable)"}},
       C::kOptional},
      {"controller-get-volume",
       "/csi.v1.Controller/ControllerGetVolume",
       {kVolumeId},
       C::kNone},
      {"controller-expand-volume",
       "/csi.v1.Controller/ControllerExpandVolume",
       {kVolumeId, kRequired, kLimit, kSecret},
       C::kOptional},
      {"validate-volume-capabilities",
       "/csi.v1.Controller/ValidateVolumeCapabilities",
       {kVolumeId, kParam, kContext, kSecret},
       C::kAlways},
      {"controller-get-capabilities",
       "/csi.v1.Controller/ControllerGetCapabilities",
       {},
       C::kNone},
      {"node-stage-volume",
       "/csi.v1.Node/NodeStageVolume",
       {kVolumeId, kStaging, kContext, kPublishContext, kSecret},
       C::kAlways},
      {"node-publish-volume",
       "/csi.v1.Node/NodePublishVolume",
       {kVolumeId,
        kStaging,
        kTarget,
        {"readonly", "readonly", FlagKind::kBool, "publish read-only"},
        kContext,
        kPublishContext,
        kSecret},
       C::kAlways},
      {"node-unpublish-volume",
       "/csi.v1.Node/NodeUnpublishVolume",
       {kVolumeId, kTarget},
       C::kNone},
      {"node-unstage-volume",
       "/csi.v1.Node/NodeUnstageVolume",
       {kVolumeId, kStaging},
       C::kNone},
      {"node-get-volume-stats",
       "/csi.v1.Node/NodeGetVolumeStats",
       {kVolumeId,
        {"volume-path", "volume_path", kStr, "published or staged path"},
        kStaging},
       C::kNone},
      {"node-expand-volume",
       "/csi.v1.Node/NodeExpandVolume",
       {kVolumeId,
        {"volume-path", "volume_path", kStr, "published or staged path"},
        kStaging,
        kRequired,
        kLimit},
       C::kOptional},
      {"node-get-info", "/csi.v1.Node/NodeGetInfo", {}, C::kNone},
      {"node-get-capabilities",
       "/csi.v1.Node/NodeGetCapabilities",
       {},
       C::kNone},
  };
  return *table;
}

absl::StatusOr<int64_t> ParseByteCount(absl::string_view text) {
  static const auto* suffixes =
      new std::vector<std::pair<std::string, int64_t>>{
          {"Ki", int64_t{1} << 10},
          {"Mi", int64_t{1} << 20},
          {"Gi", int64_t{1} << 30},
          {"Ti", int64_t{1} << 40},
          {"K", 1000},
          {"M", 1000 * 1000},
          {"G", 1000 * 1000 * 1000},
          {"T", int64_t{1000} * 1000 * 1000 * 1000},
      };
  int64_t multiplier = 1;
  for (const auto& [suffix, mult] : *suffixes) {
    if (absl::EndsWith(text, suffix)) {
      text.remove_suffix(suffix.size());
      multiplier = mult;
      break;
    }
  }
  int64_t n;
  if (!absl::SimpleAtoi(text, &n) || n < 0 ||
      (n > 0 && multiplier > INT64_MAX / n)) {
    return absl::InvalidArgumentError(absl::StrCat("not a byte count: ", text));
  }
  return n * multiplier;
}

absl::StatusOr<Invocation> ParseCommand(const std::vector<std::string>& args) {
  if (args.empty()) return UsageError("missing COMMAND");
  if (args[0] == "call") return ParseCall(args);
  const CommandSpec* spec = nullptr;
  for (const CommandSpec& c : Commands()) {
    if (args[0] == c.name) spec = &c;
  }
  if (spec == nullptr) {
    return UsageError(absl::StrCat("unknown command ", args[0]));
  }
  const MethodDescriptor* m = FindMethodByPath(spec->method);
  if (m == nullptr) {
    return absl::InternalError(
        absl::StrCat("command table: no method ", spec->method));
  }
  Invocation inv;
  inv.method = spec->method;
  inv.request.reset(google::protobuf::MessageFactory::generated_factory()
                        ->GetPrototype(m->input_type())
                        ->New());

  CapabilityArgs cap;
  for (size_t i = 1; i < args.size(); ++i) {
    std::optional<FlagToken> t = AsFlag(args[i]);
    if (!t) {
      return UsageError(
          absl::StrCat(spec->name, ": unexpected argument ", args[i]));
    }
    const FlagSpec* flag = nullptr;
    for (const FlagSpec& f : spec->flags) {
      if (t->name == f.name) flag = &f;
    }
    bool is_cap =
        spec->capability != CapabilityUse::kNone && HasCapabilityFlag(t->name);
    if (flag == nullptr && !is_cap) {
      return UsageError(absl::StrCat(spec->name, ": unknown flag --", t->name));
    }
    bool is_bool = is_cap ? t->name == "block" : flag->kind == FlagKind::kBool;
    std::string value;
    if (is_bool) {
      if (t->inline_value) {
        return UsageError(absl::StrCat("--", t->name, " takes no value"));
      }
    } else if (t->inline_value) {
      value = *t->inline_value;
    } else if (i + 1 < args.size()) {
      value = args[++i];
    } else {
      return UsageError(absl::StrCat("--", t->name, " needs a value"));
    }
    if (is_cap) {
      cap.any = true;
      if (t->name == "block") cap.block = true;
      if (t->name == "fstype") cap.fstype = value;
      if (t->name == "mount-flag") cap.mount_flags.push_back(value);
      if (t->name == "access-mode") cap.access_mode = value;
      continue;
    }
    absl::Status st = SetFlag(inv.request.get(), *flag, value);
    if (!st.ok()) return st;
  }
  if (spec->capability == CapabilityUse::kAlways ||
      (spec->capability == CapabilityUse::kOptional && cap.any)) {
    absl::StatusOr<csi::v1::VolumeCapability> c = BuildCapability(cap);
    if (!c.ok()) return c.status();
    absl::Status st = AttachCapability(inv.request.get(), *c);
    if (!st.ok()) return st;
  }
  return inv;
}

absl::StatusOr<std::unique_ptr<Message>> NewResponse(absl::string_view method) {
  const MethodDescriptor* m = FindMethodByPath(method);
  if (m == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("unknown method ", method));
  }
  return std::unique_ptr<Message>(
      google::protobuf::MessageFactory::generated_factory()
          ->GetPrototype(m->output_type())
          ->New());
}

std::string Usage() {
  std::string out =
      "usage: daxlease-csi-client --endpoint unix:///path.sock "
      "[--timeout SECONDS] COMMAND [flags]\n"
      "Prints the response as proto3 JSON. On an RPC error prints "
      "code=CODE message=\"...\" on stderr and exits with the numeric gRPC "
      "code; usage errors exit 64.\n\ncommands:\n";
  auto add_flag = [&out](const FlagSpec& f) {
    const char* value = f.kind == FlagKind::kBool  ? ""
                        : f.kind == FlagKind::kMap ? " K=V"
                                                   : " VALUE";
    absl::StrAppend(&out, "      --", f.name, value, "  ", f.help, "\n");
  };
  for (const CommandSpec& c : Commands()) {
    absl::StrAppend(&out, "  ", c.name, "    (", c.method, ")\n");
    for (const FlagSpec& f : c.flags) add_flag(f);
    if (c.capability != CapabilityUse::kNone) {
      for (const FlagSpec& f : CapabilityFlags()) add_flag(f);
    }
  }
  absl::StrAppend(&out,
                  "  call METHOD --json '{...}'\n"
                  "      sends any csi.v1 request given as proto3 JSON; METHOD "
                  "is e.g. NodeStageVolume, node-stage-volume or "
                  "/csi.v1.Node/NodeStageVolume\n");
  return out;
}

}  // namespace daxlease::csiclient
