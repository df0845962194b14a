#!/usr/bin/env bash
# A real single-node Kubernetes v1.20.2 on this machine, for the e2e label and the local lab:
# the control plane of control-plane.sh (etcd + kube-apiserver) plus kube-controller-manager,
# kube-scheduler, containerd (runc, CNI bridge) and a kubelet, as one node.
#
#   tests/k8s/cluster.sh start DIR   build (cached) + start; waits for the node to be Ready
#                                    and the default ServiceAccount to exist
#   tests/k8s/cluster.sh stop DIR    deletes pods, stops what `start DIR` started, removes the
#                                    host state it made (mounts, netns, bridge, cgroups)
#   tests/k8s/cluster.sh check DIR   prints what `stop` would have left behind; exit 1 if any
#   tests/k8s/cluster.sh env DIR     prints DIR/env (shell assignments)
#
# start writes DIR/env: control-plane.sh's variables plus DAXLEASE_NODE (node name),
# DAXLEASE_KUBELET_DIR (the kubelet's root: the chart's kubeletDir), DAXLEASE_CONTAINERD_SOCK,
# DAXLEASE_CONTAINERD_NAMESPACE (k8s.io: import images there), DAXLEASE_K8S_HOST/PORT (the
# apiserver on loopback, for hostNetwork pods: no kube-proxy runs).
#
# Everything lives under DIR: containerd's config/root/state/socket, the kubelet root, the
# CNI config and IPAM state. Nothing system-wide is configured: no systemd unit, no
# /etc/cni, no /var/lib/kubelet, no host iptables chains (kubelet makeIPTablesUtilChains:
# false, bridge ipMasq: false). The bridge's name and pod subnet derive from DIR, so clusters
# in different directories do not collide; kubelet ports are picked free.
# Processes started are recorded in DIR/node-pids ("name pid"); stop signals only those,
# after checking /proc/PID/cmdline still names the binary.
#
# Facts behind the configuration (all verified on Debian 12, no systemd, cgroup v1 hybrid):
#   - root may lack CAP_SYS_RESOURCE: runc cannot set a negative oom_score_adj, so the CRI
#     plugin gets restrict_oom_score_adj = true (else every sandbox fails: "can't get final
#     child's PID from pipe: EOF");
#   - the sandbox image is the pause binary from the same Kubernetes source tree, built
#     statically, packed by images/build-images.sh as k8s.gcr.io/pause:3.2 (v1.20's default);
#   - without a CNI config the node stays NotReady: bridge + host-local from
#     containernetworking-plugins;
#   - the apiserver reaches the kubelet by InternalIP (control-plane.sh), so --node-ip must be
#     a non-loopback address: the host's first global IPv4;
#   - kubelet never removes the pod cgroups it made in the unified hierarchy: stop does;
#   - the kubelet grows a mounted volume's filesystem (NodeExpandVolume) only when it next
#     syncs the pod: syncFrequency 10 s instead of 1 min keeps online expansion quick.
# Cold: the Kubernetes build (build-kube.sh, ~8 min on 2 idle cores). Warm: node Ready in
# ~30 s, stop ~15 s.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
t0=$SECONDS
say() { echo "[cluster +$((SECONDS - t0))s] $*" >&2; }
fail() { say "FAILED: $*"; exit 1; }
usage() { sed -n '6,11p' "$0" >&2; exit 2; }
(($# == 2)) || usage
cmd=$1
mkdir -p "$2"
dir=$(cd "$2" && pwd -P)
node_dir=$dir/node
readonly NODE=${DAXLEASE_NODE_NAME:-daxlease-node}
sock=$node_dir/containerd/containerd.sock
kubelet_dir=$node_dir/kubelet
hash=$(echo -n "$dir" | md5sum | cut -c1-8)
bridge=dxl${hash:0:6}
cgroup_root=daxlease-$hash
subnet=10.$((200 + 0x${hash:0:2} % 50)).$((0x${hash:2:2})).0/24

ours() {
  local pid=$1 bin=$2
  local argv0=""
  [[ -n $pid && -r /proc/$pid/cmdline ]] || return 1
  IFS= read -r -d '' argv0 <"/proc/$pid/cmdline" || [[ -n $argv0 ]] || return 1
  [[ $argv0 == *"$bin"* ]]
}

stop_pid() {
  local pid=$1 bin=$2
  ours "$pid" "$bin" || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 150); do
    ours "$pid" "$bin" || return 0
    sleep 0.1
  done
  say "$bin ($pid) ignored SIGTERM for 15 s; SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
}

start_bg() { # name cmd...
  local name=$1
  shift
  # setsid: out of ctest's process group; fds to files so nobody waits on our stdout.
  setsid "$@" </dev/null >"$dir/$name.log" 2>&1 &
  echo "$name $!" >>"$dir/node-pids"
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_port() {
  local p
  for _ in $(seq 1 100); do
    p=$((20000 + RANDOM % 30000))
    port_free "$p" && { echo "$p"; return 0; }
  done
  fail "no free port"
}

kc() { kubectl --kubeconfig "$dir/kubeconfig" "$@"; }

wait_for() { # what seconds command...
  local what=$1 secs=$2
  shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || fail "timed out after ${secs}s waiting for $what"
    sleep 0.5
  done
}

ctr_ok() { [[ -S $sock ]] && ctr --address "$sock" --connect-timeout 1s version; }
node_ready() {
  [[ $(kc get node "$NODE" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}') == True ]]
}

node_cert() {
  local pki=$dir/pki
  [[ -f $pki/node.crt ]] && return 0
  (
    cd "$pki"
    printf 'extendedKeyUsage=clientAuth\n' >node.ext
    openssl req -newkey rsa:2048 -nodes -keyout node.key -out node.csr \
      -subj "/O=system:nodes/CN=system:node:$NODE" 2>/dev/null
    openssl x509 -req -in node.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out node.crt -days 365 \
      -extfile node.ext 2>/dev/null
    rm -f node.csr node.ext
    chmod 600 node.key
  )
}

write_configs() {
  local node_ip=$1 kubelet_port=$2 healthz_port=$3
  mkdir -p "$node_dir"/{containerd,cni/net.d,cni/ipam} "$kubelet_dir/volume-plugins"
  sed -e "s|$dir/pki/admin.crt|$dir/pki/node.crt|" -e "s|$dir/pki/admin.key|$dir/pki/node.key|" \
    "$dir/kubeconfig" >"$dir/kubeconfig-node"
  cat >"$node_dir/containerd/config.toml" <<EOF
version = 2
root = "$node_dir/containerd/root"
state = "$node_dir/containerd/state"
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "k8s.gcr.io/pause:3.2"
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$node_dir/containerd/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$node_dir/cni/net.d"
EOF
  cat >"$node_dir/cni/net.d/10-daxlease.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "daxlease-e2e",
  "plugins": [
    {"type": "bridge", "bridge": "$bridge", "isGateway": true, "ipMasq": false,
     "ipam": {"type": "host-local", "dataDir": "$node_dir/cni/ipam",
              "ranges": [[{"subnet": "$subnet"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "loopback"}
  ]
}
EOF
  cat >"$kubelet_dir/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failSwapOn: false
address: $node_ip
port: $kubelet_port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $healthz_port
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "$dir/pki/ca.crt"}
authorization: {mode: Webhook}
clusterDomain: cluster.local
volumePluginDir: "$kubelet_dir/volume-plugins"
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
syncFrequency: 10s
makeIPTablesUtilChains: false
cgroupRoot: /$cgroup_root
featureGates: {CSIStorageCapacity: true, GenericEphemeralVolume: true}
EOF
}

do_start() {
  if [[ -f $dir/node-pids ]]; then
    if node_ready 2>/dev/null; then
      say "already running ($dir)"
      return 0
    fi
    say "stale state in $dir: stopping it first"
    do_stop
  fi
  for tool in containerd runc ctr openssl iptables; do
    command -v "$tool" >/dev/null || fail "$tool missing (scripts/install-deps.sh)"
  done
  [[ -x /usr/lib/cni/bridge ]] || fail "CNI plugins missing (containernetworking-plugins)"
  local bins
  mapfile -t bins < <("$here/build-kube.sh" kube-controller-manager kube-scheduler kubelet)
  local kcm=${bins[0]} sched=${bins[1]} kubelet=${bins[2]}
  local node_ip
  node_ip=$(ip -4 -o addr show scope global | awk '{print $4}' | cut -d/ -f1 | head -1)
  [[ -n $node_ip ]] || fail "no global IPv4 address for --node-ip (the apiserver reaches the kubelet there)"

  iptables-save 2>/dev/null | grep -c KUBE- >"$dir/iptables-kube-before" || true
  DAXLEASE_K8S_SERVICE_ACCOUNTS=1 "$here/control-plane.sh" start "$dir"
  node_cert
  : >"$dir/node-pids"
  write_configs "$node_ip" "$(pick_port)" "$(pick_port)"

  local d
  for d in $(cgroup_dirs); do mkdir -p "$d"; done
  start_bg containerd containerd --config "$node_dir/containerd/config.toml"
  wait_for containerd 30 ctr_ok
  say "containerd up ($sock)"
  "$repo/images/build-images.sh" pause --import "$sock" >&2

  start_bg kube-controller-manager "$kcm" --kubeconfig="$dir/kubeconfig" \
    --leader-elect=false --port=0 --secure-port=0 --controllers='*' \
    --service-account-private-key-file="$dir/pki/sa.key" --root-ca-file="$dir/pki/ca.crt" \
    --cluster-signing-cert-file="$dir/pki/ca.crt" --cluster-signing-key-file="$dir/pki/ca.key" \
    --use-service-account-credentials=false --flex-volume-plugin-dir="$kubelet_dir/volume-plugins" \
    --feature-gates=CSIStorageCapacity=true,GenericEphemeralVolume=true --v=1
  start_bg kube-scheduler "$sched" --kubeconfig="$dir/kubeconfig" --leader-elect=false \
    --port=0 --secure-port=0 --feature-gates=CSIStorageCapacity=true,GenericEphemeralVolume=true \
    --v=1
  start_bg kubelet "$kubelet" --config="$kubelet_dir/config.yaml" \
    --kubeconfig="$dir/kubeconfig-node" --container-runtime=remote \
    --container-runtime-endpoint="unix://$sock" --hostname-override="$NODE" --node-ip="$node_ip" \
    --cert-dir="$kubelet_dir/pki" --root-dir="$kubelet_dir" --v="${DAXLEASE_KUBELET_V:-2}"
  wait_for "node $NODE Ready (log: $dir/kubelet.log)" 180 node_ready
  say "node $NODE Ready"
  wait_for "the default ServiceAccount" 60 kc get serviceaccount default
  local server
  server=$(sed -n 's/^DAXLEASE_K8S_SERVER=//p' "$dir/env")
  sed -i '/^DAXLEASE_NODE=/,$d' "$dir/env"
  cat >>"$dir/env" <<ENV
DAXLEASE_NODE=$NODE
DAXLEASE_KUBELET_DIR=$kubelet_dir
DAXLEASE_CONTAINERD_SOCK=$sock
DAXLEASE_CONTAINERD_NAMESPACE=k8s.io
DAXLEASE_K8S_HOST=127.0.0.1
DAXLEASE_K8S_PORT=${server##*:}
ENV
  say "ready: kubectl --kubeconfig $dir/kubeconfig get nodes"
}

# Unmounts everything below PATH, deepest first.
unmount_below() {
  local m
  for _ in 1 2 3; do
    awk -v p="$1" '$2 == p || index($2, p "/") == 1 {print $2}' /proc/self/mounts | sort -r |
      while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
  done
}

# The kubelet's cgroupRoot, in every hierarchy (v1 controllers and the unified one): pods of
# this cluster live below it, apart from any other kubelet's /kubepods.
cgroup_dirs() {
  local h
  for h in /sys/fs/cgroup /sys/fs/cgroup/*; do
    [[ -d $h && -f $h/cgroup.procs ]] && echo "$h/$cgroup_root"
  done
}

remove_cgroups() {
  local d
  # rmdir removes only empty cgroups (no tasks, no children): depth first. The kubelet never
  # removes the pod cgroups it made in the unified hierarchy.
  for d in $(cgroup_dirs); do
    [[ -d $d ]] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
  return 0
}

do_stop() {
  if [[ -f $dir/node-pids ]]; then
    # Pods first, while the kubelet can still unmount their volumes.
    if kc get --raw /readyz >/dev/null 2>&1 && ours "$(awk '$1 == "kubelet" {print $2}' "$dir/node-pids")" kubelet; then
      # Up to the kubelet's one-minute container GC: see tests/e2e/helm_e2e.sh.
      kc delete pods --all --all-namespaces --grace-period=2 --timeout=150s >/dev/null 2>&1 || true
    fi
    local name pid
    while read -r name pid; do
      [[ $name == kubelet ]] && { say "stopping kubelet ($pid)"; stop_pid "$pid" kubelet; }
    done <"$dir/node-pids"
    if ctr_ok >/dev/null 2>&1; then
      local id
      for id in $(ctr --address "$sock" -n k8s.io task ls -q 2>/dev/null); do
        timeout 20 ctr --address "$sock" -n k8s.io task rm -f "$id" >/dev/null 2>&1 || true
      done
      for id in $(ctr --address "$sock" -n k8s.io container ls -q 2>/dev/null); do
        timeout 20 ctr --address "$sock" -n k8s.io container rm "$id" >/dev/null 2>&1 || true
      done
    fi
    while read -r name pid; do
      [[ $name == kubelet ]] || { say "stopping $name ($pid)"; stop_pid "$pid" "$name"; }
    done < <(tac "$dir/node-pids")
    # Shims of our containerd only: their command line names our socket.
    for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $sock" || true); do
      ours "$pid" containerd-shim && kill -KILL "$pid" 2>/dev/null || true
    done
    rm -f "$dir/node-pids"
  fi
  "$here/control-plane.sh" stop "$dir" >&2 || true
  # Host state: mounts under our dirs, the bridge, pod netns, pod cgroups.
  local ns
  unmount_below "$kubelet_dir"
  unmount_below "$node_dir/containerd"
  ip link show "$bridge" >/dev/null 2>&1 && ip link del "$bridge"
  # Pod netns files whose namespace is gone from every process and mount (ours died with
  # their sandboxes): CNI leaves the bind mounts under /run/netns. Only cni-* entries that
  # no longer hold a veth (their peer went with our bridge) are removed.
  for ns in /run/netns/cni-*; do
    [[ -e $ns ]] || continue
    if [[ -z $(ip netns exec "$(basename "$ns")" ip -o link show type veth 2>/dev/null) ]]; then
      grep -q " $ns " /proc/self/mounts && umount "$ns" 2>/dev/null
      rm -f "$ns"
    fi
  done
  remove_cgroups
  rm -rf "$node_dir/cni/ipam" "$kubelet_dir"
}

do_check() {
  local left=0 n d
  n=$(awk -v p="$node_dir" 'index($2, p "/") == 1 || $2 == p' /proc/self/mounts | wc -l)
  ((n == 0)) || { say "left: $n mounts under $node_dir"; left=1; }
  ip link show "$bridge" >/dev/null 2>&1 && { say "left: bridge $bridge"; left=1; }
  # Rules naming our subnet or bridge, or KUBE-* rules beyond those present before start
  # (another cluster on this machine may own some).
  local rules
  rules=$(iptables-save 2>/dev/null || true)
  if grep -q -e "$subnet" -e "$bridge" <<<"$rules"; then
    say "left: iptables rules for $subnet / $bridge"
    left=1
  fi
  n=$(grep -c KUBE- <<<"$rules" || true)
  if ((n > $(cat "$dir/iptables-kube-before" 2>/dev/null || echo 0))); then
    say "left: $n KUBE-* iptables lines (were $(cat "$dir/iptables-kube-before" 2>/dev/null || echo 0))"
    left=1
  fi
  n=0
  for d in $(cgroup_dirs); do [[ -d $d ]] && n=$((n + 1)); done
  ((n == 0)) || { say "left: $n cgroups named $cgroup_root"; left=1; }
  if [[ -f $dir/node-pids ]]; then
    say "left: $dir/node-pids"
    left=1
  fi
  if pgrep -f "containerd-shim-runc-v2 .*-address $sock" >/dev/null; then
    say "left: containerd shims"
    left=1
  fi
  ((left == 0)) && say "clean: no mount, bridge, iptables rule, cgroup or process left"
  return "$left"
}

case $cmd in
  start) do_start ;;
  stop) do_stop ;;
  check) do_check ;;
  env) cat "$dir/env" ;;
  *) usage ;;
esac
