#!/usr/bin/env bash
# The test command: installs what the tests need, builds, and runs every CTest
# label (unit, integration, k8s, twonode, model, lab, e2e).
#   scripts/test.sh            all labels
#   scripts/test.sh -L unit    only one label (any ctest arguments pass through)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh build
cd build
ctest --output-on-failure --timeout 1800 "$@"
