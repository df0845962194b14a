// libFuzzer target: kubeconfig parsing (lib/k8s/config.h, yaml-cpp), as
// `--kubeconfig`, $KUBECONFIG and ~/.kube/config are read. Input: YAML text.
// The base directory for relative file names is an empty directory, so a
// config that names files reads nothing of the repository's.
#include <stddef.h>
#include <stdint.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "lib/k8s/config.h"

namespace {

// Never destroyed: the exit handler that removes it runs after static
// destructors would have.
const std::string& BaseDir() {
  static const std::string* const dir = [] {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "daxlease-fuzz-kc-XXXXXX")
            .string();
    if (mkdtemp(tmpl.data()) == nullptr) abort();
    atexit([] { std::filesystem::remove_all(BaseDir()); });
    return new std::string(tmpl);
  }();
  return *dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string yaml(reinterpret_cast<const char*>(data), size);
  daxlease::k8s::ParseKubeConfig(yaml, BaseDir()).IgnoreError();
  // A named context, the path most kubeconfigs with several clusters take.
  daxlease::k8s::ParseKubeConfig(yaml, BaseDir(), "ctx").IgnoreError();
  return 0;
}
