#!/usr/bin/env bash
# The README's main job: on a fresh Debian 12 machine, install what is
# needed, build daxlease, start the daxlease-csi plugin (file backend) on a
# private socket and state directory, and drive one volume through its whole
# lifecycle with daxlease-csi-client, printing every step. Cleans up on exit.
#
#   scripts/local-lab.sh [--fstype ext4|xfs] [--skip-deps] [--skip-build]
# (default ext4; xfs on machines whose root lacks CAP_SYS_RESOURCE, which
# ext4 needs to grow online)
#
# Environment: DAXLEASE_BUILD_DIR (default: build); DAXLEASE_CSI_BINARY to run
# another daxlease-csi binary than the one built.
# Needs root (loop devices, mkfs, mount); re-executes itself with sudo.
#
# Later issues grow this into the local lab (kube-apiserver + etcd, the
# operator, two simulated nodes); each stage is one step_* function.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${DAXLEASE_BUILD_DIR:-build}
FSTYPE=""         # default: ext4, or xfs where ext4 cannot grow online
SKIP_DEPS=0
SKIP_BUILD=0
SIZE=320Mi        # xfs needs at least 300 MiB
GROWN_SIZE=640Mi

ORIG_ARGS=("$@")
usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; }

while (($#)); do
  case "$1" in
    --fstype) FSTYPE=${2:?--fstype needs ext4 or xfs}; shift 2 ;;
    --skip-deps) SKIP_DEPS=1; shift ;;
    --skip-build) SKIP_BUILD=1; shift ;;
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
  printf '   $ daxlease-csi-client %s\n' "$*"
  local out rc=0
  out=$("$CLIENT" --endpoint "unix://$SOCKET" "$@" 2>&1) || rc=$?
  printf '%s\n' "$out" | indent
  if ((rc != 0)); then
    die "daxlease-csi-client $1 failed (exit $rc); plugin log: $LAB_DIR/csi.log"
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

step_stop_csi() {
  step "Stop daxlease-csi (SIGTERM)"
  kill -TERM "$CSI_PID"
  local rc=0
  wait "$CSI_PID" || rc=$?
  CSI_PID=""
  ((rc == 0)) || die "daxlease-csi exited with $rc"
  ok "exited 0; its log:"
  tail -n 5 "$LAB_DIR/csi.log" | indent
}

# Always runs: stop the plugin, unmount and detach what is left, remove the
# lab directory.
cleanup() {
  local rc=$?
  set +e
  if [[ -n ${CSI_PID:-} ]]; then kill -KILL "$CSI_PID" 2>/dev/null; wait "$CSI_PID" 2>/dev/null; fi
  if [[ -n ${LAB_DIR:-} && -d $LAB_DIR ]]; then
    if ((rc != 0)) && [[ -f $LAB_DIR/csi.log ]]; then
      echo "--- last lines of the plugin log:" >&2
      tail -n 20 "$LAB_DIR/csi.log" >&2
    fi
    findmnt -rn -o TARGET | grep "^$LAB_DIR" | sort -r |
      while read -r m; do umount -l "$m"; done
    local f
    for f in /sys/block/loop*/loop/backing_file; do
      [[ -r $f && $(cat "$f") == "$STATE_DIR"/* ]] || continue
      f=${f#/sys/block/}
      losetup -d "/dev/${f%%/*}"
    done
    rm -rf "$LAB_DIR"
  fi
  if ((rc == 0)); then
    printf '\n%slocal-lab: done; everything cleaned up.%s\n' "$GREEN" "$RESET"
  else
    printf '\n%slocal-lab: failed (exit %d); cleaned up.%s\n' "$RED" "$rc" "$RESET" >&2
  fi
}

main() {
  step_require_root
  if [[ -z $FSTYPE ]]; then
    if has_cap_sys_resource; then FSTYPE=ext4; else FSTYPE=xfs; fi
  fi
  trap cleanup EXIT
  step_install_deps
  step_build
  step_start_csi
  step_volume_lifecycle
  step_stop_csi
}

main
