#!/usr/bin/env bash
# Configures and builds daxlease into BUILD_DIR (default: build/); only the
# targets BUILD_TARGET (space-separated) when that is set.
#   scripts/build.sh [BUILD_DIR] [extra cmake args...]
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${1:-build}
shift || true
launcher=()
if command -v ccache >/dev/null; then
  # Paths under the checkout are hashed relative to it, so another clone or
  # build directory (CI's fresh checkout) reuses the cache. The price: the
  # compile directory recorded in debug info may name the other checkout.
  # Another price: a source edited while its compile runs is cached under its
  # old text; .ci/run therefore keeps a cache of its own (CCACHE_DIR).
  export CCACHE_BASEDIR=$PWD CCACHE_NOHASHDIR=1
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
fi
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo} \
  "${launcher[@]}" "$@" >/dev/null
cmake --build "$build_dir" -j "$(nproc)" ${BUILD_TARGET:+--target $BUILD_TARGET}
