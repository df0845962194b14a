#!/usr/bin/env bash
# e2e fixture cleanup: stops the cluster and fails if it left a mount, bridge, iptables rule,
# cgroup, loop device or process behind.
#   tests/e2e/cluster_down.sh DIR
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
source "$repo/tests/e2e/lib.sh"
mkdir -p "$1"
dir=$(cd "$1" && pwd -P)
[[ -f $dir/skip ]] && skip "$(<"$dir/skip")"
t=$SECONDS
"$repo/tests/k8s/cluster.sh" stop "$dir/cluster"
say "cluster stopped in $((SECONDS - t))s"
loops=$(losetup -l -n -O BACK-FILE 2>/dev/null | grep -c -F "$dir/" || true)
((loops == 0)) || fail "$loops loop devices over files in $dir left"
before=$(cat "$dir/loops-before" 2>/dev/null || echo 0)
loops=$(plugin_loops)
((loops <= before)) || fail "loop devices of the node plugin: $before before the cluster, $loops after:
$(losetup -l -n -O NAME,BACK-FILE | grep /volumes/pvc-)"
"$repo/tests/k8s/cluster.sh" check "$dir/cluster"
rm -f "$dir/env"
