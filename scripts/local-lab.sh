#!/usr/bin/env bash
# The README's main job: on a fresh Debian 12 machine, install what is
# needed, build daxlease, start the daxlease-csi plugin (file backend) on a
# private socket and state directory, and drive one volume through its whole
# lifecycle with daxlease-csi-client, printing every step. Cleans up on exit.
#
#   scripts/local-lab.sh [--fstype ext4|xfs] [--no-operator] [--no-two-nodes]
#                        [--cluster] [--skip-deps] [--skip-build]
# (default ext4; xfs on machines whose root lacks CAP_SYS_RESOURCE, which
# ext4 needs to grow online)
#
# Then, unless --no-operator: start a real control plane (etcd +
# kube-apiserver v1.20.2, tests/k8s/control-plane.sh; the first run builds
# the apiserver from Debian's source package, 5-20 min, cached afterwards),
# apply the CRDs, start daxlease-operator and run one lease recall with three
# holders whose agents the script plays: two flush and release, one stays
# silent and is revoked at the deadline, the owner confirms the fence, the
# recall completes and the volume's epoch moves on. kubectl shows each step.
#
# Then, unless --no-two-nodes: two simulated nodes on this machine
# (tests/twonode/netns.sh: network namespaces node-a 198.51.100.1 and node-b
# 198.51.100.2 joined by a veth pair), each with its own daxlease-agent and
# daxlease-csi (--agent-socket, --fabric=lab-fabric). A shared volume is
# created and staged on node-a and published on both nodes through real CSI
# calls; daxlease-io (libdaxlease) writes a checksummed pattern on node-a
# while a recall runs, node-b reads it back remotely and checks every block;
# then two writers stay attached, one on node-a (a local mapping) and one on
# node-b (through the fabric), each on its own blocks, while the volume grows
# (ControllerExpandVolume retried as the external-resizer does: UNAVAILABLE
# while the Reshape recall runs, then OK) and moves to node-b and back
# (`kubectl daxlease migrate`, its bytesCopied progress, both checksums);
# each change's pause window (the recall's start to Ready at the next epoch)
# is printed, and at the end every block is verified (daxlease-io verify:
# intact, the newest of each range its writer's last persisted block); then a
# writer on node-b is stopped (SIGSTOP) during a recall, revoked and fenced at
# the deadline, and told REVOKED when continued. `kubectl daxlease status` and
# the data check are shown at each step. The shared volume is xfs when ext4
# cannot grow online here (no CAP_SYS_RESOURCE).
#
# Then, with --cluster: the way users install it (scripts/lab/cluster.sh): a real
# single-node Kubernetes (kubelet, containerd; built once, cached), the images and the CSI
# sidecars built locally, `helm install`, a pod with a claim, kubectl get pvc,pv,pods,
# kubectl daxlease status and a recall of the pod's volume.
#
# Environment: DAXLEASE_BUILD_DIR (default: build); DAXLEASE_CSI_BINARY to run
# another daxlease-csi binary than the one built.
# Needs root (loop devices, mkfs, mount); re-executes itself with sudo.
#
# Each stage is one step_* function.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${DAXLEASE_BUILD_DIR:-build}
FSTYPE=""         # default: ext4, or xfs where ext4 cannot grow online
SKIP_DEPS=0
SKIP_BUILD=0
WITH_OPERATOR=1
WITH_TWO_NODES=1
WITH_CLUSTER=0
LAB_PIDS=()       # daemons and clients of the two-node part, killed on exit
SIZE=320Mi        # xfs needs at least 300 MiB
GROWN_SIZE=640Mi

ORIG_ARGS=("$@")
usage() { sed -n '2,40p' "$0" | sed 's/^# \{0,1\}//'; }

while (($#)); do
  case "$1" in
    --fstype) FSTYPE=${2:?--fstype needs ext4 or xfs}; shift 2 ;;
    --skip-deps) SKIP_DEPS=1; shift ;;
    --skip-build) SKIP_BUILD=1; shift ;;
    --no-operator) WITH_OPERATOR=0; shift ;;
    --no-two-nodes) WITH_TWO_NODES=0; shift ;;
    --cluster) WITH_CLUSTER=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "local-lab: unknown argument $1" >&2; usage >&2; exit 64 ;;
  esac
done
case "$FSTYPE" in ext4|xfs|"") ;; *) echo "local-lab: --fstype must be ext4 or xfs" >&2; exit 64 ;; esac

# --------------------------------------------------------------- output

if [[ -t 1 ]]; then
  BOLD=$'\e[1m'; DIM=$'\e[2m'; GREEN=$'\e[32m'; RED=$'\e[31m'; RESET=$'\e[0m'
else
  BOLD=""; DIM=""; GREEN=""; RED=""; RESET=""
fi
STEP=0
step() { STEP=$((STEP + 1)); printf '\n%s== %d. %s%s\n' "$BOLD" "$STEP" "$*" "$RESET"; }
note() { printf '%s   %s%s\n' "$DIM" "$*" "$RESET"; }
ok()   { printf '%s   ok: %s%s\n' "$GREEN" "$*" "$RESET"; }
die()  { printf '%slocal-lab: %s%s\n' "$RED" "$*" "$RESET" >&2; exit 1; }
indent() { sed 's/^/     /'; }

# Runs a shell command, showing it and its output.
show() {
  printf '   $ %s\n' "$*"
  "$@" 2>&1 | indent
  return "${PIPESTATUS[0]}"
}

# Calls the plugin through daxlease-csi-client; the response (JSON) is shown
# and kept in $REPLY_JSON.
csi() {
  printf '   $ %sdaxlease-csi-client %s\n' "${NODE_TAG:-}" "$*"
  local out rc=0
  out=$("$CLIENT" --endpoint "unix://$SOCKET" "$@" 2>&1) || rc=$?
  printf '%s\n' "$out" | indent
  if ((rc != 0)); then
    die "daxlease-csi-client $1 failed (exit $rc); plugin log: ${CSI_LOG:-$LAB_DIR/csi.log}"
  fi
  REPLY_JSON=$out
}

# json_field NAME: the first string value of "NAME" in $REPLY_JSON.
json_field() {
  printf '%s' "$REPLY_JSON" | grep -o "\"$1\": *\"[^\"]*\"" | head -1 |
    sed 's/.*: *"\(.*\)"/\1/'
}

# ext4 online resize needs CAP_SYS_RESOURCE (bit 24 of CapEff).
has_cap_sys_resource() {
  local caps
  caps=$(awk '/^CapEff:/ {print $2}' /proc/self/status)
  (( (16#$caps >> 24) & 1 ))
}

# --------------------------------------------------------------- steps

step_require_root() {
  if ((EUID != 0)); then
    if command -v sudo >/dev/null; then
      echo "local-lab: needs root for loop devices and mounts; re-running with sudo"
      exec sudo -E DAXLEASE_BUILD_DIR="$BUILD_DIR" "$0" "${ORIG_ARGS[@]}"
    fi
    die "needs root (loop devices, mkfs, mount) and sudo is not installed"
  fi
}

step_install_deps() {
  step "Install the Debian packages (scripts/install-deps.sh)"
  if ((SKIP_DEPS)); then note "skipped (--skip-deps)"; return; fi
  "$REPO/scripts/install-deps.sh" 2>&1 | indent
}

step_build() {
  step "Build daxlease (scripts/build.sh $BUILD_DIR)"
  if ((SKIP_BUILD)); then
    note "skipped (--skip-build)"
  else
    (cd "$REPO" && scripts/build.sh "$BUILD_DIR") 2>&1 | tail -3 | indent
  fi
  CSI="${DAXLEASE_CSI_BINARY:-$REPO/$BUILD_DIR/csi/daxlease-csi}"
  CLIENT="$REPO/$BUILD_DIR/tools/csi-client/daxlease-csi-client"
  [[ -x $CSI && -x $CLIENT ]] || die "binaries not found under $REPO/$BUILD_DIR"
  ok "$CSI"
  ok "$CLIENT"
}

step_start_csi() {
  step "Start daxlease-csi (file backend) on a private socket"
  LAB_DIR=$(mktemp -d /var/tmp/daxlease-lab.XXXXXX)
  STATE_DIR=$LAB_DIR/state
  KUBELET_DIR=$LAB_DIR/kubelet
  SOCKET=$LAB_DIR/csi.sock
  mkdir -p "$STATE_DIR" "$KUBELET_DIR"
  note "lab directory: $LAB_DIR (removed on exit)"
  local args=(--endpoint="unix://$SOCKET" --node-id="$(hostname)"
              --state-dir="$STATE_DIR" --backend=file
              --allowed-roots="$KUBELET_DIR")
  printf '   $ daxlease-csi %s &\n' "${args[*]}"
  "$CSI" "${args[@]}" >"$LAB_DIR/csi.log" 2>&1 &
  CSI_PID=$!
  local i
  for i in $(seq 1 100); do
    if ! kill -0 "$CSI_PID" 2>/dev/null; then
      indent <"$LAB_DIR/csi.log"
      CSI_PID=""
      die "daxlease-csi exited during start-up (log above)"
    fi
    if "$CLIENT" --endpoint "unix://$SOCKET" --timeout 1 probe >/dev/null 2>&1; then
      ok "plugin pid $CSI_PID answers on unix://$SOCKET"
      return
    fi
    sleep 0.2
  done
  die "daxlease-csi did not answer Probe within 20 s; log: $LAB_DIR/csi.log"
}

step_volume_lifecycle() {
  step "Who is the plugin?"
  csi get-plugin-info
  csi get-plugin-capabilities
  csi probe
  csi node-get-info
  csi get-capacity

  step "CreateVolume: $SIZE, $FSTYPE"
  csi create-volume --name lab-volume-1 --capacity-bytes "$SIZE" \
    --param csi.storage.k8s.io/fstype="$FSTYPE" --fstype "$FSTYPE"
  VOL=$(json_field volumeId)
  [[ -n $VOL ]] || die "no volumeId in the CreateVolume response"
  ok "volume $VOL"
  csi list-volumes

  step "NodeStageVolume: loop device + mkfs.$FSTYPE + mount at the staging path"
  STAGING=$KUBELET_DIR/plugins/kubernetes.io/csi/dax.daxlease.io/$VOL/globalmount
  mkdir -p "$STAGING"
  csi node-stage-volume --volume-id "$VOL" --staging-target-path "$STAGING" \
    --fstype "$FSTYPE"
  show findmnt --target "$STAGING"

  step "NodePublishVolume: bind mount into a pod's volume directory"
  TARGET=$KUBELET_DIR/pods/lab-pod-1/volumes/kubernetes.io~csi/$VOL/mount
  mkdir -p "$(dirname "$TARGET")"
  csi node-publish-volume --volume-id "$VOL" --staging-target-path "$STAGING" \
    --target-path "$TARGET" --fstype "$FSTYPE"
  show findmnt --target "$TARGET"

  step "Write a file through the published path and read it back"
  local message="hello from daxlease, written at $(date -u +%FT%TZ)"
  printf '   $ echo "%s" > %s/hello.txt && sync\n' "$message" "$TARGET"
  echo "$message" >"$TARGET/hello.txt"
  sync "$TARGET/hello.txt"
  show cat "$TARGET/hello.txt"
  [[ $(cat "$STAGING/hello.txt") == "$message" ]] ||
    die "the file is not visible through the staging mount"
  ok "same bytes through the staging mount"

  step "Expand online: $SIZE -> $GROWN_SIZE (ControllerExpandVolume + NodeExpandVolume)"
  show df -h "$TARGET"
  csi controller-expand-volume --volume-id "$VOL" --capacity-bytes "$GROWN_SIZE"
  if [[ $FSTYPE == ext4 ]] && ! has_cap_sys_resource; then
    note "this machine drops CAP_SYS_RESOURCE even for root, and ext4 cannot"
    note "grow online without it: NodeExpandVolume skipped (try --fstype xfs;"
    note "ext4 online growth is checked in the QEMU lab, tests/lab/run.sh file_backend_nodax)"
  else
    csi node-expand-volume --volume-id "$VOL" --volume-path "$TARGET" \
      --staging-target-path "$STAGING" --capacity-bytes "$GROWN_SIZE" \
      --fstype "$FSTYPE"
    show df -h "$TARGET"
  fi

  step "NodeGetVolumeStats"
  csi node-get-volume-stats --volume-id "$VOL" --volume-path "$TARGET"
  show cat "$TARGET/hello.txt"
  [[ $(cat "$TARGET/hello.txt") == "$message" ]] || die "the file changed"
  ok "data intact after the expansion"

  step "NodeUnpublishVolume, NodeUnstageVolume, DeleteVolume"
  csi node-unpublish-volume --volume-id "$VOL" --target-path "$TARGET"
  csi node-unstage-volume --volume-id "$VOL" --staging-target-path "$STAGING"
  csi delete-volume --volume-id "$VOL"
  csi list-volumes
  if findmnt -rn -o TARGET | grep -q "^$LAB_DIR"; then
    die "mounts left under $LAB_DIR"
  fi
  ok "no mounts left under the lab directory"
}

# stop_daemon NAME PID LOG LINES: SIGTERM, expect exit 0, show its last lines.
stop_daemon() {
  local name=$1 pid=$2 log=$3 lines=$4 rc=0
  kill -TERM "$pid"
  wait "$pid" || rc=$?
  ((rc == 0)) || die "$name exited with $rc; its log: $log"
  ok "$name exited 0; its last lines:"
  tail -n "$lines" "$log" | indent
}

step_stop_csi() {
  step "Stop daxlease-csi (SIGTERM)"
  local pid=$CSI_PID
  CSI_PID=""
  stop_daemon daxlease-csi "$pid" "$LAB_DIR/csi.log" 5
}

# --------------------------------------------------------------- operator

# kubectl against the lab's control plane, shown with its output.
kc() {
  printf '   $ kubectl %s\n' "$*"
  kubectl --kubeconfig "$CP_DIR/kubeconfig" "$@" 2>&1 | indent
  return "${PIPESTATUS[0]}"
}

# kubectl daxlease (the project's plugin), shown with its output.
kd() {
  printf '   $ kubectl daxlease %s\n' "$*"
  "$KUBECTL_DAXLEASE" --kubeconfig "$CP_DIR/kubeconfig" "$@" 2>&1 | indent
  return "${PIPESTATUS[0]}"
}

# agent_patch LEASE JSON: a merge patch of the lease's status subresource,
# as a node agent writes it (kubectl 1.20 has no --subresource).
agent_patch() {
  printf '   $ PATCH daxleases/%s/status %s\n' "$1" "$2"
  curl -fsS --cacert "$DAXLEASE_K8S_CA" \
    -H "Authorization: Bearer $DAXLEASE_K8S_ADMIN_TOKEN" \
    -H 'Content-Type: application/merge-patch+json' -X PATCH \
    --data "$2" "$DAXLEASE_K8S_SERVER/apis/daxlease.io/v1alpha1/daxleases/$1/status" \
    >/dev/null || die "PATCH daxleases/$1/status failed"
}

# jget KIND NAME JSONPATH: one field of one object.
jget() {
  kubectl --kubeconfig "$CP_DIR/kubeconfig" get "$1" "$2" -o "jsonpath=$3" 2>/dev/null
}

# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.2 s.
wait_for() {
  local limit=$1 what=$2 i
  shift 2
  for i in $(seq 1 $((limit * 5))); do
    if "$@"; then ok "$what"; return 0; fi
    sleep 0.2
  done
  die "timed out after ${limit} s waiting for: $what"
}

lease_is() { [[ $(jget daxleases "$1" '{.status.state}') == "$2" ]]; }
revoked_for_fence() {
  lease_is "$1" Revoked && [[ $(jget daxleases "$1" '{.status.fenceRequired}') == true ]]
}
volume_moved_on() {
  [[ $(jget daxvolumes lab-shared '{.status.phase}') == Ready ]] &&
    (($(jget daxvolumes lab-shared '{.status.epoch}') > $1))
}
recall_is() { [[ $(jget daxrecalls "$1" '{.status.phase}') == "$2" ]]; }
operator_leads() {
  [[ $(kubectl --kubeconfig "$CP_DIR/kubeconfig" -n default get lease daxlease-operator-leader \
        -o 'jsonpath={.spec.holderIdentity}' 2>/dev/null) == lab-operator ]]
}

step_control_plane() {
  step "Start a real control plane: etcd + kube-apiserver v1.20.2 on loopback"
  CP_DIR=$LAB_DIR/control-plane
  note "tests/k8s/control-plane.sh start (the first run builds kube-apiserver; cached)"
  "$REPO/tests/k8s/control-plane.sh" start "$CP_DIR" 2>&1 | indent
  [[ ${PIPESTATUS[0]} -eq 0 ]] || die "the control plane did not start; logs in $CP_DIR"
  set -a
  # shellcheck disable=SC1091
  source "$CP_DIR/env"
  set +a
  ok "kube-apiserver at $DAXLEASE_K8S_SERVER"

  step "Install the daxlease CRDs"
  kc apply -f "$REPO/manifests/crd/" || die "kubectl apply failed"
  kc wait --for condition=established --timeout=60s \
    crd/daxvolumes.daxlease.io crd/daxleases.daxlease.io \
    crd/daxrecalls.daxlease.io crd/daxmigrations.daxlease.io ||
    die "the CRDs were not established"
}

step_start_operator() {
  step "Start daxlease-operator (leader election on the coordination.k8s.io Lease daxlease-operator-leader)"
  OPERATOR="$REPO/$BUILD_DIR/operator/daxlease-operator"
  KUBECTL_DAXLEASE="$REPO/$BUILD_DIR/operator/kubectl-daxlease"
  [[ -x $OPERATOR && -x $KUBECTL_DAXLEASE ]] ||
    die "operator binaries not found under $REPO/$BUILD_DIR"
  local args=(--kubeconfig="$CP_DIR/kubeconfig" --identity=lab-operator)
  printf '   $ daxlease-operator %s &\n' "${args[*]}"
  "$OPERATOR" "${args[@]}" >"$LAB_DIR/operator.log" 2>&1 &
  OPERATOR_PID=$!
  wait_for 30 "operator pid $OPERATOR_PID holds the leader lease" operator_leads
}

step_recall() {
  local node l epoch recall id new_epoch
  node=$(hostname)
  step "A shared DAX volume owned by $node, with three holders on other nodes"
  printf '   $ kubectl apply -f - (DaxVolume lab-shared; DaxLeases holder-a, -b, -c)\n'
  kubectl --kubeconfig "$CP_DIR/kubeconfig" apply -f - 2>&1 <<YAML | indent
apiVersion: daxlease.io/v1alpha1
kind: DaxVolume
metadata: {name: lab-shared}
spec: {sizeBytes: 1073741824, mode: devdax, ownerNode: "$node", share: true}
---
apiVersion: daxlease.io/v1alpha1
kind: DaxLease
metadata: {name: holder-a}
spec: {volume: lab-shared, holderNode: node-a, access: ReadWrite}
---
apiVersion: daxlease.io/v1alpha1
kind: DaxLease
metadata: {name: holder-b}
spec: {volume: lab-shared, holderNode: node-b, access: ReadOnly}
---
apiVersion: daxlease.io/v1alpha1
kind: DaxLease
metadata: {name: holder-c}
spec: {volume: lab-shared, holderNode: node-c, access: ReadOnly}
YAML
  for l in holder-a holder-b holder-c; do
    wait_for 30 "$l Granted" lease_is "$l" Granted
  done
  epoch=$(jget daxvolumes lab-shared '{.status.epoch}')
  kc get daxvolumes,daxleases
  kd status lab-shared

  step "Recall every lease of lab-shared (grace 20 s: the script plays the agents, slowly on a loaded machine)"
  note "(a Manual recall returns the volume to Ready at the next epoch; Reshape and"
  note " Migrate recalls leave it Quiesced for the node agent's reshape or copy)"
  kd recall lab-shared --grace 20 --reason Manual || die "kubectl daxlease recall failed"
  recall=$(kubectl --kubeconfig "$CP_DIR/kubeconfig" get daxrecalls -o name | head -1)
  recall=${recall#*/}
  [[ -n $recall ]] || die "no DaxRecall was created"
  for l in holder-a holder-b holder-c; do
    wait_for 30 "$l Recalling" lease_is "$l" Recalling
  done
  id=$(jget daxrecalls "$recall" '{.status.recallID}')
  kd status lab-shared

  step "A new holder asks during the recall: it waits (Pending)"
  kubectl --kubeconfig "$CP_DIR/kubeconfig" create -f - 2>&1 <<YAML | indent
apiVersion: daxlease.io/v1alpha1
kind: DaxLease
metadata: {name: holder-d}
spec: {volume: lab-shared, holderNode: node-d, access: ReadOnly}
YAML
  wait_for 30 "holder-d Pending" lease_is holder-d Pending
  kc get daxleases holder-d \
    -o 'jsonpath={.status.conditions[0].reason}: {.status.conditions[0].message}{"\n"}'

  step "The agents of node-a and node-b flush and release; node-c never answers"
  agent_patch holder-a "{\"status\":{\"releasedRecallID\":\"$id\"}}"
  agent_patch holder-b "{\"status\":{\"releasedRecallID\":\"$id\"}}"
  wait_for 30 "holder-a Released" lease_is holder-a Released
  wait_for 30 "holder-b Released" lease_is holder-b Released
  kd status lab-shared

  step "At the deadline holder-c is revoked; the owner fences it"
  wait_for 30 "holder-c Revoked, fence required" revoked_for_fence holder-c
  kc get daxleases holder-c \
    -o 'jsonpath=reason={.status.reason} fenceRequired={.status.fenceRequired}{"\n"}'
  note "the owner's agent drops holder-c's RDMA registration, then confirms:"
  agent_patch holder-c "{\"status\":{\"fencedRecallID\":\"$id\"}}"
  wait_for 30 "recall $recall Complete" recall_is "$recall" Complete
  kc get daxrecalls
  # The volume is written last (after the recall), so wait for it.
  wait_for 30 "volume lab-shared Ready at a new epoch" volume_moved_on "$epoch"
  new_epoch=$(jget daxvolumes lab-shared '{.status.epoch}')
  ok "volume epoch $epoch -> $new_epoch: the fenced holder's old epoch is stale"

  step "Back to Ready: the waiting holder is granted at the new epoch"
  wait_for 30 "holder-d Granted" lease_is holder-d Granted
  [[ $(jget daxleases holder-d '{.status.epoch}') == "$new_epoch" ]] ||
    die "holder-d was not granted at epoch $new_epoch"
  kd status lab-shared
  kc get events --sort-by=.lastTimestamp
}

step_stop_operator() {
  step "Stop daxlease-operator and the control plane"
  local pid=$OPERATOR_PID
  OPERATOR_PID=""
  stop_daemon daxlease-operator "$pid" "$LAB_DIR/operator.log" 3
  "$REPO/tests/k8s/control-plane.sh" stop "$CP_DIR" 2>&1 | indent
  ok "control plane stopped"
}

# --------------------------------------------------------------- two nodes

# A program inside a node's network namespace, in the foreground.
in_node() { local ns=$1; shift; nsenter --net="/run/netns/$ns" "$@"; }

# bg_in_node NS LOG PROGRAM ARGS...: started in the background inside a
# node's network namespace (nsenter execs it: $! is the program); its pid in
# BG_PID and in LAB_PIDS (killed on exit).
bg_in_node() {
  local ns=$1 log=$2
  shift 2
  nsenter --net="/run/netns/$ns" "$@" >"$log" 2>&1 &
  BG_PID=$!
  LAB_PIDS+=("$BG_PID")
}

# on_node a|b: the node's CSI socket and tag for csi().
on_node() {
  SOCKET=$NODES_DIR/node-$1/csi.sock
  CSI_LOG=$NODES_DIR/node-$1/csi.log
  NODE_TAG="[node-$1] "
}

# io NODE ARGS...: daxlease-io inside the node, shown with its output.
io() {
  local n=$1
  shift
  printf '   $ [node-%s] daxlease-io %s\n' "$n" "$*"
  in_node "$(ns_of "$n")" env DAXLEASE_IO_TIMEOUT_MS=60000 "$IO" "$@" 2>&1 | indent
  return "${PIPESTATUS[0]}"
}
ns_of() { if [[ $1 == a ]]; then echo "$NODE_A_NETNS"; else echo "$NODE_B_NETNS"; fi; }

log_has() { grep -q "$2" "$1" 2>/dev/null; }
recall_done() { [[ $(jget daxrecalls "$1" '{.status.phase}') == Complete ]]; }
# The last recall of volume $VOL2 created by kubectl daxlease recall.
last_recall() {
  kubectl --kubeconfig "$CP_DIR/kubeconfig" get daxrecalls \
    --sort-by=.metadata.creationTimestamp -o name | grep "/$VOL2-recall-" | tail -1 | cut -d/ -f2
}

step_two_nodes_up() {
  step "Two simulated nodes: network namespaces joined by a veth pair"
  AGENT="$REPO/$BUILD_DIR/node-agent/daxlease-agent"
  IO="$REPO/$BUILD_DIR/client/daxlease-io"
  [[ -x $AGENT && -x $IO ]] || die "daxlease-agent / daxlease-io not found under $REPO/$BUILD_DIR"
  NODES_DIR=$LAB_DIR/twonode
  printf '   $ tests/twonode/netns.sh up %s %s\n' "$NODES_DIR" "$DAXLEASE_K8S_SERVER"
  "$REPO/tests/twonode/netns.sh" up "$NODES_DIR" "$DAXLEASE_K8S_SERVER" 2>&1 | indent
  [[ ${PIPESTATUS[0]} -eq 0 ]] || die "netns.sh up failed"
  # shellcheck disable=SC1091
  source "$NODES_DIR/netns.env"
  show in_node "$NODE_A_NETNS" ip -brief addr
  show in_node "$NODE_B_NETNS" ip -brief addr
  head -c 32 /dev/urandom >"$NODES_DIR/agent-secret"

  local n ns addr d
  for n in a b; do
    ns=$(ns_of $n)
    if [[ $n == a ]]; then addr=$NODE_A_ADDR; else addr=$NODE_B_ADDR; fi
    d=$NODES_DIR/node-$n
    mkdir -p "$d/kubelet"
    step "node-$n: daxlease-agent and daxlease-csi inside $ns ($addr)"
    local agent_args=(--node-id="node-$n" --kubeconfig="$CP_DIR/kubeconfig"
                      --socket="$d/run/agent.sock" --state-dir="$d/agent"
                      --listen="$addr:7390" --secret-file="$NODES_DIR/agent-secret")
    printf '   $ [node-%s] daxlease-agent %s &\n' "$n" "${agent_args[*]}"
    bg_in_node "$ns" "$d/agent.log" "$AGENT" "${agent_args[@]}"
    wait_for 30 "node-$n agent pid $BG_PID listens on $d/run/agent.sock" test -S "$d/run/agent.sock"
    local csi_args=(--endpoint="unix://$d/csi.sock" --node-id="node-$n"
                    --state-dir="$d/csi" --backend=file --allowed-roots="$d/kubelet"
                    --fabric=lab-fabric --agent-socket="$d/run/agent.sock")
    printf '   $ [node-%s] daxlease-csi %s &\n' "$n" "${csi_args[*]}"
    bg_in_node "$ns" "$d/csi.log" "$CSI" "${csi_args[@]}"
    wait_for 30 "node-$n plugin pid $BG_PID answers" \
      "$CLIENT" --endpoint "unix://$d/csi.sock" --timeout 1 probe
    on_node $n
    csi node-get-info
  done
}

# stage_publish NODE POD: NodeStage + NodePublish of $VOL2 for POD, with the
# volume context of CreateVolume and kubelet's pod info; the target in TARGET.
stage_publish() {
  local n=$1 pod=$2 d=$NODES_DIR/node-$1
  local staging=$d/kubelet/plugins/kubernetes.io/csi/dax.daxlease.io/$VOL2/globalmount
  # Shorter than kubelet's pods/<uid>/volumes/kubernetes.io~csi/<pv>/mount:
  # libdaxlease connects to <target>/agent.sock, and a unix socket path is
  # at most 107 bytes.
  TARGET=$d/kubelet/pods/$pod/mount
  mkdir -p "$staging" "$(dirname "$TARGET")"
  on_node "$n"
  csi node-stage-volume --volume-id "$VOL2" --staging-target-path "$staging" \
    --fstype "$SHARED_FSTYPE" --access-mode multi-node-multi-writer "${VOL2_CONTEXT[@]}"
  csi node-publish-volume --volume-id "$VOL2" --staging-target-path "$staging" \
    --target-path "$TARGET" --fstype "$SHARED_FSTYPE" --access-mode multi-node-multi-writer \
    "${VOL2_CONTEXT[@]}" --context csi.storage.k8s.io/pod.name="$pod" \
    --context csi.storage.k8s.io/pod.namespace=default \
    --context csi.storage.k8s.io/pod.uid="uid-$pod"
}

step_two_nodes_volume() {
  step "A shared volume on node-a (CreateVolume through node-a's plugin and agent)"
  on_node a
  csi create-volume --name lab-shared-volume --capacity-bytes "$SIZE" --fstype "$SHARED_FSTYPE" \
    --param csi.storage.k8s.io/fstype="$SHARED_FSTYPE" \
    --access-mode multi-node-multi-writer --param daxlease.io/share=true \
    --param daxlease.io/recallGraceSeconds=10
  VOL2=$(json_field volumeId)
  [[ -n $VOL2 ]] || die "no volumeId"
  VOL2_CONTEXT=(--context daxlease.io/share=true --context daxlease.io/ownerNode=node-a
                --context daxlease.io/fabric=lab-fabric)
  printf '%s' "$REPLY_JSON" | grep -q '"daxlease.io/fabric": "lab-fabric"' ||
    die "the volume is not accessible from the fabric"
  ok "accessible from every node of lab-fabric; the owner's agent recorded the DaxVolume:"
  kc get daxvolumes "$VOL2"

  step "Publish it on node-a (local memory) and on node-b (through the fabric)"
  stage_publish a writer-pod
  ON_A=$TARGET
  stage_publish b reader-pod
  ON_B=$TARGET
  show ls -l "$ON_A" "$ON_B"
  show cat "$ON_B/daxlease.json"
  kd status "$VOL2"
}

step_two_nodes_recall() {
  local before after recall
  step "A writer on node-a (daxlease-io pattern: checksummed 4 KiB blocks 0-1023, each persisted)"
  printf '   $ [node-a] daxlease-io pattern %s 4096 20 0 1024 &\n' "$ON_A"
  bg_in_node "$NODE_A_NETNS" "$NODES_DIR/writer-a.log" "$IO" pattern "$ON_A" 4096 20 0 1024
  WRITER=$BG_PID
  wait_for 60 "the writer persisted 200 blocks" log_has "$NODES_DIR/writer-a.log" "persisted seq=200 "
  note "the remote reader on node-b reads block 0's header (magic, seq, index, sum) meanwhile:"
  printf '   $ [node-b] daxlease-io cat %s 0 32 | od -A d -t x8\n' "$ON_B"
  in_node "$NODE_B_NETNS" "$IO" cat "$ON_B" 0 32 | od -A d -t x8 | indent

  step "Recall every lease of $VOL2 while the writer runs (grace 5 s)"
  before=$(jget daxvolumes "$VOL2" '{.status.epoch}')
  kd recall "$VOL2" --grace 5 --reason Manual || die "kubectl daxlease recall failed"
  recall=$(last_recall)
  kd status "$VOL2"
  wait_for 60 "recall $recall Complete (both holders flushed and released)" recall_done "$recall"
  kc get daxrecalls "$recall" \
    -o 'jsonpath=released={.status.released} revoked={.status.revoked}{"\n"}'
  local revoked
  revoked=$(jget daxrecalls "$recall" '{.status.revoked}')
  [[ ${revoked:-0} == 0 ]] || die "a holder was revoked"
  wait_for 30 "volume Ready at a new epoch" volume_moved_on2 "$before"
  after=$(jget daxvolumes "$VOL2" '{.status.epoch}')
  ok "epoch $before -> $after"
  kd status "$VOL2"

  step "The writer goes on at the new epoch; node-b checks every byte"
  local rc=0
  wait "$WRITER" || rc=$?
  ((rc == 0)) || die "the writer exited $rc: $(tail -3 "$NODES_DIR/writer-a.log")"
  tail -n 1 "$NODES_DIR/writer-a.log" | indent
  ok "writer finished: $(grep -c '^persisted' "$NODES_DIR/writer-a.log") blocks persisted, no error"
  io b verify "$ON_B" 4096 || die "node-b found corrupt blocks"
  ok "node-b (remote, through the TCP fabric) reads every block intact"
}

# --------------------------------------------------------------- grow and migrate under holders

# Two writers stay attached through a grow and two migrations: W_A on node-a
# (the owner: a local mapping) on blocks [W_A_FIRST, +W_BLOCKS), W_B on node-b
# (through the fabric) on the next W_BLOCKS. Paced at 1 ms a block, each
# range wraps every few seconds, so every block is rewritten throughout.
W_BLOCKS=4096
W_A_FIRST=1024
W_B_FIRST=$((1024 + 4096))

epoch_of() { jget daxvolumes "$VOL2" '{.status.epoch}'; }
# persisted_at LOG EPOCH: the writer persisted a block at that epoch.
persisted_at() { grep -q " epoch=$2\$" "$1" 2>/dev/null; }
ready_at() {
  [[ $(jget daxvolumes "$VOL2" '{.status.phase}') == Ready && $(epoch_of) == "$1" ]]
}
# seconds_between T0 T1 (RFC 3339, fractional seconds): T1 - T0, 2 decimals.
seconds_between() {
  awk -v a="$(date -u -d "$1" +%s.%N)" -v b="$(date -u -d "$2" +%s.%N)" \
    'BEGIN {printf "%.2f", b - a}'
}
# pause_window RECALL: from the recall's start (every holder told to flush
# and wait) to the volume Ready at the next epoch (holders granted again),
# both as the operator stamped them. Kept in PAUSE.
pause_window() {
  local started ready
  started=$(jget daxrecalls "$1" '{.status.startedAt}')
  ready=$(jget daxvolumes "$VOL2" '{.status.conditions[?(@.type=="Ready")].lastTransitionTime}')
  [[ -n $started && -n $ready ]] || die "no startedAt on $1 or no Ready time on $VOL2"
  PAUSE=$(seconds_between "$started" "$ready")
  ok "pause window (DaxRecall $1 startedAt $started -> DaxVolume Ready $ready): ${PAUSE} s"
}
# recall_clean RECALL REASON: Complete, of that reason, nobody revoked.
recall_clean() {
  kc get daxrecalls "$1" \
    -o 'custom-columns=RECALL:.metadata.name,REASON:.spec.reason,PHASE:.status.phase,RELEASED:.status.released,REVOKED:.status.revoked'
  [[ $(jget daxrecalls "$1" '{.spec.reason}') == "$2" ]] || die "$1 is not a $2 recall"
  [[ $(jget daxrecalls "$1" '{.status.phase}') == Complete ]] || die "$1 is not Complete"
  [[ $(jget daxrecalls "$1" '{.status.revoked}') =~ ^0?$ ]] || die "a holder was revoked by $1"
  ok "$1: reason $2, Complete, every holder released, none revoked"
}
# writers_resume EPOCH: both writers persisted a block at EPOCH.
writers_resume() {
  wait_for 60 "node-a's writer writes at epoch $1" persisted_at "$NODES_DIR/w-a.log" "$1"
  wait_for 60 "node-b's writer writes at epoch $1" persisted_at "$NODES_DIR/w-b.log" "$1"
}

step_two_nodes_holders() {
  local n first
  step "Two holders that stay attached: a writer on node-a (local) and one on node-b (remote)"
  for n in a b; do
    if [[ $n == a ]]; then first=$W_A_FIRST; else first=$W_B_FIRST; fi
    local dir=$ON_A
    [[ $n == b ]] && dir=$ON_B
    printf '   $ [node-%s] DAXLEASE_IO_PACE_MS=1 daxlease-io pattern %s 4096 3600 %s %s &\n' \
      "$n" "$dir" "$first" "$W_BLOCKS"
    bg_in_node "$(ns_of $n)" "$NODES_DIR/w-$n.log" env DAXLEASE_IO_TIMEOUT_MS=60000 \
      DAXLEASE_IO_PACE_MS=1 "$IO" pattern "$dir" 4096 3600 "$first" "$W_BLOCKS"
    if [[ $n == a ]]; then W_A=$BG_PID; else W_B=$BG_PID; fi
  done
  wait_for 60 "node-a's writer persisted 100 blocks" log_has "$NODES_DIR/w-a.log" "persisted seq=100 "
  wait_for 60 "node-b's writer persisted 100 blocks" log_has "$NODES_DIR/w-b.log" "persisted seq=100 "
  # VOL2, a CSI volume ID (at most 57 characters), is its own label value.
  kc get daxleases -l "daxlease.io/volume=$VOL2" \
    -o 'custom-columns=LEASE:.metadata.name,NODE:.spec.holderNode,STATE:.status.state,EPOCH:.status.epoch'
}

step_two_nodes_grow() {
  local e0 recall rc out last="" start now
  e0=$(epoch_of)
  recall=$VOL2-reshape-e$e0
  step "Grow $VOL2 $SIZE -> $GROWN_SIZE under both writers (ControllerExpandVolume on the owner, node-a)"
  show df -h "$ON_A/volume"
  note "the external-resizer retries ControllerExpandVolume with backoff; the script every 0.5 s,"
  note "showing each new answer (the code says where the grow is: docs/csi.md, \"Expansion with holders\"):"
  printf '   $ [node-a] daxlease-csi-client controller-expand-volume --volume-id %s --capacity-bytes %s\n' \
    "$VOL2" "$GROWN_SIZE"
  start=$(date +%s.%N)
  while :; do
    rc=0
    out=$("$CLIENT" --endpoint "unix://$NODES_DIR/node-a/csi.sock" controller-expand-volume \
            --volume-id "$VOL2" --capacity-bytes "$GROWN_SIZE" 2>&1) || rc=$?
    now=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN {printf "%5.1f", b - a}')
    if ((rc == 0)); then printf '%s\n' "$out" | sed "s/^/     [+${now} s] /"; break; fi
    # UNAVAILABLE (14): the recall runs; ABORTED (10): another change holds the volume.
    ((rc == 14 || rc == 10)) || { printf '%s\n' "$out" | indent; die "controller-expand-volume failed (exit $rc)"; }
    if [[ $out != "$last" ]]; then
      printf '     [+%s s] %s\n' "$now" "$out"
      if [[ -z $last ]]; then
        kc get daxrecalls "$recall"
        kd status "$VOL2"
      fi
      last=$out
    fi
    (($(awk -v n="$now" 'BEGIN {print (n > 180)}'))) && die "the grow did not finish in 180 s"
    sleep 0.5
  done
  printf '%s' "$out" | grep -q '"capacityBytes"' || die "no capacityBytes in the answer"
  ok "ControllerExpandVolume OK after ${now# } s"
  wait_for 30 "volume Ready at epoch $((e0 + 1))" ready_at $((e0 + 1))
  recall_clean "$recall" Reshape
  pause_window "$recall"
  GROW_PAUSE=$PAUSE
  kd status "$VOL2"
  show df -h "$ON_A/volume"
  writers_resume $((e0 + 1))
}

# migrate_to NODE: `kubectl daxlease migrate`, its progress, its checks.
migrate_to() {
  local to=$1 e0 name line last="" start now recall sum
  e0=$(epoch_of)
  step "Migrate $VOL2 to $to under both writers: kubectl daxlease migrate"
  printf '   $ kubectl daxlease migrate %s --to %s\n' "$VOL2" "$to"
  line=$("$KUBECTL_DAXLEASE" --kubeconfig "$CP_DIR/kubeconfig" migrate "$VOL2" --to "$to") ||
    die "kubectl daxlease migrate failed"
  printf '%s\n' "$line" | indent
  name=${line#*/}
  name=${name%% *}
  note "progress (phase, bytesCopied/bytesTotal), polled every 0.2 s:"
  start=$(date +%s.%N)
  while :; do
    line=$(jget daxmigrations "$name" '{.status.phase} {.status.bytesCopied}/{.status.bytesTotal}')
    now=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN {printf "%5.1f", b - a}')
    if [[ $line != "$last" ]]; then
      printf '     [+%s s] %s\n' "$now" "$line"
      last=$line
    fi
    case $line in
      Complete*) break ;;
      Failed*) kc get daxmigrations "$name" -o yaml; die "migration $name Failed" ;;
    esac
    (($(awk -v n="$now" 'BEGIN {print (n > 180)}'))) && die "migration $name did not finish in 180 s"
    sleep 0.2
  done
  kc get daxmigrations "$name" \
    -o 'custom-columns=MIGRATION:.metadata.name,FROM:.status.sourceNode,TO:.spec.targetNode,PHASE:.status.phase,COPIED:.status.bytesCopied,COPY_MS:.status.copyMilliseconds'
  kd status "$VOL2"
  sum=$(jget daxmigrations "$name" '{.status.sourceChecksum}')
  [[ $sum == xxh3x16m:* && $(jget daxmigrations "$name" '{.status.targetChecksum}') == "$sum" ]] ||
    die "the checksums of source and target differ"
  ok "source and target checksums match: $sum"
  [[ $(jget daxvolumes "$VOL2" '{.spec.ownerNode}') == "$to" ]] || die "the owner is not $to"
  wait_for 30 "volume Ready at epoch $((e0 + 1)), owned by $to" ready_at $((e0 + 1))
  recall=$(jget daxmigrations "$name" '{.status.recall}')
  recall_clean "$recall" Migrate
  local ms bytes
  ms=$(jget daxmigrations "$name" '{.status.copyMilliseconds}')
  bytes=$(jget daxmigrations "$name" '{.status.bytesTotal}')
  ((ms > 0)) && ok "copy: $((bytes >> 20)) MiB in $ms ms ($(awk -v b="$bytes" -v m="$ms" 'BEGIN {printf "%.0f", b / m / 1000}') MB/s)"
  pause_window "$recall"
  MIGRATE_PAUSES+=("$PAUSE")
  writers_resume $((e0 + 1))
}

step_two_nodes_migrate() {
  MIGRATE_PAUSES=()
  migrate_to node-b
  note "node-a's writer now reaches the volume through the fabric; node-b's maps it locally"
  migrate_to node-a
}

# verify_range NODE DIR FIRST LOG: every block of that writer's range intact
# and its newest block the writer's last persisted one.
verify_range() {
  local n=$1 dir=$2 first=$3 log=$4 seq out
  seq=$(grep -o '^persisted seq=[0-9]*' "$log" | tail -1 | cut -d= -f2)
  printf '   $ [node-%s] daxlease-io verify %s 4096 %s %s\n' "$n" "$dir" "$first" "$W_BLOCKS"
  out=$(in_node "$(ns_of "$n")" "$IO" verify "$dir" 4096 "$first" "$W_BLOCKS" 2>&1) ||
    { printf '%s\n' "$out" | indent; die "corrupt blocks"; }
  printf '%s\n' "$out" | indent
  [[ $out == *" corrupt=0 "* && $out == *" maxseq=$seq" ]] ||
    die "blocks $first+$W_BLOCKS: expected corrupt=0 maxseq=$seq (the writer's last persisted block)"
  ok "blocks $first..$((first + W_BLOCKS - 1)): every block intact, the newest is seq $seq, the last the writer persisted"
}

# The epochs a writer's blocks were persisted at. A line says epoch=0 when a
# recall began between the persist and the print (no grant at that moment).
epochs_of() { grep -o 'epoch=[1-9][0-9]*' "$1" | cut -d= -f2 | uniq | tr '\n' ' '; }

step_two_nodes_verify() {
  local n pid rc
  step "Stop both writers (SIGTERM: each ends after the block in hand) and verify every byte"
  for n in a b; do
    if [[ $n == a ]]; then pid=$W_A; else pid=$W_B; fi
    kill -TERM "$pid"
    rc=0
    wait "$pid" || rc=$?
    ((rc == 0)) || die "node-$n's writer exited $rc: $(tail -3 "$NODES_DIR/w-$n.log")"
    ! grep -q '^error' "$NODES_DIR/w-$n.log" || die "node-$n's writer saw errors"
    ok "node-$n's writer: $(grep -c '^persisted' "$NODES_DIR/w-$n.log") blocks persisted, no error, exit 0; epochs $(epochs_of "$NODES_DIR/w-$n.log")"
  done
  note "node-a's range read remotely on node-b, node-b's read on node-a (the owner's memory):"
  verify_range b "$ON_B" "$W_A_FIRST" "$NODES_DIR/w-a.log"
  verify_range a "$ON_A" "$W_B_FIRST" "$NODES_DIR/w-b.log"
  io b verify "$ON_B" 4096 || die "node-b found corrupt blocks"
  ok "the whole volume, read remotely on node-b: no corrupt block"
  printf '\n%s   grow pause window: %s s; migration pause windows: %s s%s\n' \
    "$BOLD" "$GROW_PAUSE" "${MIGRATE_PAUSES[*]}" "$RESET"
}

step_two_nodes_revoke() {
  local recall rc=0
  step "A writer on node-b (remote) that stops answering: SIGSTOP during a recall"
  printf '   $ [node-b] daxlease-io pattern %s 4096 300 &\n' "$ON_B"
  bg_in_node "$NODE_B_NETNS" "$NODES_DIR/writer-b.log" "$IO" pattern "$ON_B" 4096 300
  WRITER=$BG_PID
  wait_for 60 "node-b's writer persisted 50 blocks" log_has "$NODES_DIR/writer-b.log" "persisted seq=50 "
  show kill -STOP "$WRITER"
  kd recall "$VOL2" --grace 3 --reason Manual || die "kubectl daxlease recall failed"
  recall=$(last_recall)
  wait_for 60 "recall $recall Complete" recall_done "$recall"
  kc get daxrecalls "$recall" \
    -o 'jsonpath=released={.status.released} revoked={.status.revoked}{"\n"}'
  [[ $(jget daxrecalls "$recall" '{.status.revoked}') == 1 ]] || die "node-b's writer was not revoked"
  kc get daxleases -l "daxlease.io/volume=$VOL2" \
    -o 'custom-columns=LEASE:.metadata.name,NODE:.spec.holderNode,STATE:.status.state,REASON:.status.reason,FENCED:.status.fencedRecallID'
  kd status "$VOL2"

  step "SIGCONT: the stopped writer's next call gets REVOKED; it is alive and says so"
  show kill -CONT "$WRITER"
  wait "$WRITER" || rc=$?
  tail -n 2 "$NODES_DIR/writer-b.log" | indent
  ((rc == 3)) || die "node-b's writer exited $rc, not 3 (REVOKED)"
  ok "exit 3 (REVOKED): its unflushed writes are reported lost, not silently dropped"

  step "Data check on node-a (the owner's memory): every block intact"
  io a verify "$ON_A" 4096 || die "corrupt blocks on node-a"
  ok "no block torn: nothing the fenced writer sent after the fence landed"
}

step_two_nodes_down() {
  step "Unpublish, unstage and stop the two nodes"
  local n pod d
  for n in b a; do
    d=$NODES_DIR/node-$n
    if [[ $n == a ]]; then pod=writer-pod; else pod=reader-pod; fi
    on_node $n
    csi node-unpublish-volume --volume-id "$VOL2" \
      --target-path "$d/kubelet/pods/$pod/mount"
    csi node-unstage-volume --volume-id "$VOL2" \
      --staging-target-path "$d/kubelet/plugins/kubernetes.io/csi/dax.daxlease.io/$VOL2/globalmount"
  done
  kd status "$VOL2"
  local pid
  for pid in "${LAB_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${LAB_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  LAB_PIDS=()
  "$REPO/tests/twonode/netns.sh" down "$NODES_DIR" 2>&1 | indent
  ok "agents and plugins stopped, namespaces removed"
}
volume_moved_on2() {
  [[ $(jget daxvolumes "$VOL2" '{.status.phase}') == Ready ]] &&
    (($(jget daxvolumes "$VOL2" '{.status.epoch}') > $1))
}

# Always runs: stop the plugin, unmount and detach what is left, remove the
# lab directory.
cleanup() {
  local rc=$?
  set +e
  if [[ -n ${CSI_PID:-} ]]; then kill -KILL "$CSI_PID" 2>/dev/null; wait "$CSI_PID" 2>/dev/null; fi
  local pid
  for pid in "${LAB_PIDS[@]}"; do kill -CONT "$pid" 2>/dev/null; kill -KILL "$pid" 2>/dev/null; done
  for pid in "${LAB_PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  if [[ -n ${NODES_DIR:-} && -f $NODES_DIR/netns.env ]]; then
    if ((rc != 0)); then
      local f
      for f in "$NODES_DIR"/node-?/*.log "$NODES_DIR"/writer-?.log; do
        [[ -f $f ]] || continue
        echo "--- last lines of $f:" >&2
        tail -n 8 "$f" >&2
      done
    fi
  fi
  if [[ -n ${OPERATOR_PID:-} ]]; then
    if ((rc != 0)) && [[ -f $LAB_DIR/operator.log ]]; then
      echo "--- last lines of the operator log:" >&2
      tail -n 20 "$LAB_DIR/operator.log" >&2
    fi
    kill -KILL "$OPERATOR_PID" 2>/dev/null
    wait "$OPERATOR_PID" 2>/dev/null
  fi
  lab_cluster_stop
  if [[ -n ${CP_DIR:-} && -f $CP_DIR/pids ]]; then
    "$REPO/tests/k8s/control-plane.sh" stop "$CP_DIR" >/dev/null 2>&1
  fi
  if [[ -n ${LAB_DIR:-} && -d $LAB_DIR ]]; then
    if ((rc != 0)) && [[ -f $LAB_DIR/csi.log ]]; then
      echo "--- last lines of the plugin log:" >&2
      tail -n 20 "$LAB_DIR/csi.log" >&2
    fi
    findmnt -rn -o TARGET | grep "^$LAB_DIR" | sort -r |
      while read -r m; do umount -l "$m"; done
    local f
    for f in /sys/block/loop*/loop/backing_file; do
      [[ -r $f && $(cat "$f") == "$LAB_DIR"/* ]] || continue
      f=${f#/sys/block/}
      losetup -d "/dev/${f%%/*}"
    done
    if [[ -n ${NODES_DIR:-} && -f $NODES_DIR/netns.env ]]; then
      "$REPO/tests/twonode/netns.sh" down "$NODES_DIR" >/dev/null 2>&1
    fi
    rm -rf "$LAB_DIR"
  fi
  if ((rc == 0)); then
    printf '\n%slocal-lab: done; everything cleaned up.%s\n' "$GREEN" "$RESET"
  else
    printf '\n%slocal-lab: failed (exit %d); cleaned up.%s\n' "$RED" "$rc" "$RESET" >&2
  fi
}

# shellcheck source=scripts/lab/cluster.sh
source "$REPO/scripts/lab/cluster.sh"

main() {
  step_require_root
  if [[ -z $FSTYPE ]]; then
    if has_cap_sys_resource; then FSTYPE=ext4; else FSTYPE=xfs; fi
  fi
  # The shared volume grows while published: online only.
  SHARED_FSTYPE=$FSTYPE
  if [[ $FSTYPE == ext4 ]] && ! has_cap_sys_resource; then SHARED_FSTYPE=xfs; fi
  trap cleanup EXIT
  step_install_deps
  step_build
  step_start_csi
  step_volume_lifecycle
  step_stop_csi
  if ((WITH_OPERATOR)); then
    step_control_plane
    step_start_operator
    step_recall
    if ((WITH_TWO_NODES)); then
      step_two_nodes_up
      step_two_nodes_volume
      step_two_nodes_recall
      step_two_nodes_holders
      step_two_nodes_grow
      step_two_nodes_migrate
      step_two_nodes_verify
      step_two_nodes_revoke
      step_two_nodes_down
    fi
    step_stop_operator
  fi
  if ((WITH_CLUSTER)); then lab_cluster; fi
}

main
