#!/usr/bin/env bash
# e2e fixture setup: builds (cached) Kubernetes, the CSI sidecars and the images, starts the
# single-node cluster in DIR (tests/k8s/cluster.sh) and imports the images into its containerd.
#   tests/e2e/cluster_up.sh BUILD_DIR DIR
# Skips (exit 77, DIR/skip says why) without root or without the sidecars' sources.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
source "$repo/tests/e2e/lib.sh"
build=$1
mkdir -p "$2"
dir=$(cd "$2" && pwd -P)
rm -f "$dir/skip"
no() { echo "$*" >"$dir/skip"; skip "$*"; }
[[ $(id -u) -eq 0 ]] || no "needs root (containerd, kubelet, mounts)"
[[ -e /dev/loop-control ]] || no "needs loop devices (/dev/loop-control)"
rc=0
"$repo/tests/k8s/build-csi-sidecars.sh" >/dev/null || rc=$?
((rc == 3)) && no "no kubernetes-csi sidecar sources (set DAXLEASE_CSI_SIDECAR_SRC)"
((rc == 0)) || fail "building the CSI sidecars"
plugin_loops >"$dir/loops-before"
t=$SECONDS
"$repo/tests/k8s/cluster.sh" start "$dir/cluster"
say "cluster up in $((SECONDS - t))s"
prefix=$dir/prefix
rm -rf "$prefix"
cmake --install "$build" --prefix "$prefix" --strip >/dev/null
sock=$(sed -n 's/^DAXLEASE_CONTAINERD_SOCK=//p' "$dir/cluster/env")
t=$SECONDS
"$repo/images/build-images.sh" --prefix "$prefix" --import "$sock" busybox sidecars csi operator >/dev/null
say "images built and imported in $((SECONDS - t))s"
cp "$dir/cluster/env" "$dir/env"
