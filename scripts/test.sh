#!/usr/bin/env bash
# The test command: installs what the tests need, builds, and runs every CTest
# label (unit, integration, k8s, twonode, model, lab, e2e).
#   scripts/test.sh            all labels
#   scripts/test.sh -L unit    only one label (any ctest arguments pass through)
# Two tests at a time (CTEST_PARALLEL_LEVEL, default 2: the machine's cores);
# the control-plane, two-node, model, lab and e2e tests run alone
# (RUN_SERIAL), the unit and integration tests beside each other.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh build
cd build
export CTEST_PARALLEL_LEVEL=${CTEST_PARALLEL_LEVEL:-2}
ctest --output-on-failure --timeout 1800 "$@"
