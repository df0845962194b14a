#include "lib/base/flags.h"

#include <utility>

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"

namespace daxlease::base {

std::vector<std::string> UnderscoreFlagNames(std::vector<std::string> args) {
  for (size_t i = 1; i < args.size(); ++i) {
    std::string& a = args[i];
    if (a == "--") break;
    if (!absl::StartsWith(a, "--")) continue;
    const size_t end = std::min(a.find('='), a.size());
    for (size_t j = 2; j < end; ++j) {
      if (a[j] == '-') a[j] = '_';
    }
  }
  return args;
}

void ParseFlags(int argc, char** argv, absl::string_view usage) {
  absl::SetProgramUsageMessage(
      std::string(usage) +
      "\n(flags may be written with dashes or underscores)");
  absl::FlagsUsageConfig config;
  // A daemon defines its flags in its main.cc; absl's default filter looks
  // for a file named like the program, which none of ours is.
  auto own = [](absl::string_view file) {
    return absl::EndsWith(file, "/main.cc") || file == "main.cc";
  };
  config.contains_helpshort_flags = own;
  config.contains_help_flags = own;
  absl::SetFlagsUsageConfig(config);
  std::vector<std::string> args =
      UnderscoreFlagNames(std::vector<std::string>(argv, argv + argc));
  std::vector<char*> cargs;
  for (std::string& a : args) cargs.push_back(a.data());
  absl::ParseCommandLine(static_cast<int>(cargs.size()), cargs.data());
}

}  // namespace daxlease::base
