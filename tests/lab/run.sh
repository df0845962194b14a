#!/usr/bin/env bash
# Runs lab tests inside QEMU guests with emulated NVDIMMs and NICs for
# Soft-RoCE, prints the guests' output, and exits 0 only when every named
# test passed.
#
# usage: tests/lab/run.sh [--build-dir DIR] [--accel auto|kvm|tcg] [--keep] TEST...
#   TEST: a script name under tests/lab/guest/ without .sh (e.g. csi_lifecycle),
#         "one" for every one-guest test, "two" for every two-guest test, or
#         "all" for both (CTest runs "one" and "two" as two tests). Tests named two_guest_* run in a pair of guests (below); the
#         others in one guest.
# env:   DAXLEASE_LAB_CACHE (kernel + base initramfs cache, default
#        /var/cache/daxlease/lab), LAB_SMP (default 2), LAB_TIMEOUT (s per guest run, default 900;
#        2100 for the pair: each guest gets one CPU), LAB_PAIR_GRACE (s a guest of the
#        pair may run on after the other exited, default 300)
# Exit:  0 all passed; 1 a test failed or a guest did not finish; 2 usage;
#        3 a host prerequisite (qemu, apt) is missing.
#
# Two guests: a real control plane on the host (tests/k8s/control-plane.sh:
# etcd + kube-apiserver on loopback) with the CRDs and daxlease-operator;
# two guests (-smp 1 each) joined by a private link (QEMU stream netdev over
# a unix socket; 192.0.2.1 and .2, rxe0 on it in each); each guest's other
# NIC is user-mode networking restricted to the guest, whose one way out is
# a forward of kubernetes:6443 (10.0.2.100) to the host's API server
# (socat). Each guest runs daxlease-agent --fabric=verbs and daxlease-csi
# --backend=ndctl; the guests meet at each step over the link (peer_sync in
# guest/lib.sh). A test passes when it passed in both guests.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD_DIR=$ROOT/build
ACCEL=${LAB_ACCEL:-auto}
KEEP=0
TESTS=()
TWO=()
ALL=(ndctl_backend csi_lifecycle csi_snapshot csi_grow file_backend_nodax capacity verbs verbs_fabric bench)
ALL_TWO=(two_guest_recall two_guest_revoke two_guest_inflight two_guest_bench two_guest_grow
  two_guest_migrate)
while [ $# -gt 0 ]; do
  case "$1" in
  --build-dir) BUILD_DIR=$2; shift ;;
  --accel) ACCEL=$2; shift ;;
  --keep) KEEP=1 ;;
  all) TESTS+=("${ALL[@]}"); TWO+=("${ALL_TWO[@]}") ;;
  one) TESTS+=("${ALL[@]}") ;;
  two) TWO+=("${ALL_TWO[@]}") ;;
  two_guest_*) TWO+=("$1") ;;
  -*) echo "unknown option $1" >&2; exit 2 ;;
  *) TESTS+=("$1") ;;
  esac
  shift
done
[ $((${#TESTS[@]} + ${#TWO[@]})) -gt 0 ] || { echo "usage: $0 [--build-dir DIR] TEST... | two | all" >&2; exit 2; }
command -v qemu-system-x86_64 >/dev/null || { echo "lab: qemu-system-x86_64 missing (scripts/install-deps.sh)" >&2; exit 3; }

# KVM only where hardware virtualisation really works: vmx/svm in cpuinfo and
# not the kvm_pvm hypervisor (which runs only specially built guest kernels).
if [ "$ACCEL" = auto ]; then
  ACCEL=tcg
  if [ -w /dev/kvm ] && grep -qw -e vmx -e svm /proc/cpuinfo && [ ! -d /sys/module/kvm_pvm ]; then ACCEL=kvm; fi
fi
if [ "$ACCEL" = kvm ]; then ACC=(-accel kvm -cpu host,-arch-capabilities); else ACC=(-accel tcg -cpu max); fi

W=$(mktemp -d /tmp/daxlease-lab.XXXXXX)
OPERATOR_PID=
cleanup() {
  if [ -n "$OPERATOR_PID" ]; then kill -TERM "$OPERATOR_PID" 2>/dev/null; wait "$OPERATOR_PID" 2>/dev/null; fi
  [ -f "$W/cp/pids" ] && "$ROOT/tests/k8s/control-plane.sh" stop "$W/cp" >/dev/null 2>&1
  if [ $KEEP = 1 ]; then echo "lab: kept $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT

t0=${EPOCHREALTIME/./}
ms() { echo $(((${EPOCHREALTIME/./} - t0) / 1000)); }
"$HERE/build-guest.sh" "$BUILD_DIR" "$W"
echo "lab: guest built in $(ms) ms; accel $ACCEL; tests: ${TESTS[*]} ${TWO[*]}"
bad=0

# uptime_of LOG MARKER TEST: the guest uptime on TEST's MARKER line
uptime_of() { sed -n "s/^$2 $3 .*uptime=\([0-9.]*\).*/\1/p" "$1" | head -1; }

run_one() {
  # A fresh sparse backing file per run: an all-zero label area, independent runs.
  truncate -s 2G "$W/pmem.img"
  list=$(IFS=,; echo "${TESTS[*]}")
  t1=${EPOCHREALTIME/./}
  set +e
  timeout "${LAB_TIMEOUT:-900}" qemu-system-x86_64 "${ACC[@]}" \
    -machine pc,nvdimm=on -smp "${LAB_SMP:-2}" -m 2G,slots=4,maxmem=8G \
    -object memory-backend-file,id=mem1,share=on,mem-path="$W/pmem.img",size=2G \
    -device nvdimm,id=nvdimm1,memdev=mem1,label-size=128K \
    -netdev user,id=n0,restrict=on -device virtio-net-pci,netdev=n0 \
    -kernel "$W/vmlinux" -initrd "$W/initrd.img" \
    -append "console=ttyS0 loglevel=3 panic=-1 rdinit=/init lab.tests=$list" \
    -display none -serial stdio -monitor none -no-reboot </dev/null 2>&1 |
    sed -u 's/\r//g' | tee "$W/console.log"
  qrc=${PIPESTATUS[0]}
  set -e
  boot_ms=$(((${EPOCHREALTIME/./} - t1) / 1000))
  ready=$(awk '/^LAB-READY/{sub(/.*uptime=/, ""); print; exit}' "$W/console.log")
  echo "lab: qemu exit $qrc after $boot_ms ms (guest ready at uptime ${ready:-?} s)"

  cp "$W/console.log" "$BUILD_DIR/lab-console.log" 2>/dev/null && echo "lab: console log in $BUILD_DIR/lab-console.log"
  grep -q '^LAB-DONE' "$W/console.log" || { echo "lab: the guest did not finish"; bad=1; }
  for t in "${TESTS[@]}"; do
    line=$(grep -a "^LAB-TEST-END $t " "$W/console.log" || true)
    case "$line" in
    *" rc=0 "*) echo "lab: PASS $t" ;;
    "") echo "lab: FAIL $t (did not run to the end)"; bad=1 ;;
    *) echo "lab: FAIL $t (${line#LAB-TEST-END })"; bad=1 ;;
    esac
  done
}

# pair_watch: beside a running pair, once a second. A guest kernel's NETDEV
# WATCHDOG on the link (its transmit queue stuck for 5 s) is reported with
# what each QEMU says of its network and run state (its monitor socket), so a
# stall can be told apart from a guest that is only slow. And a guest still
# running LAB_PAIR_GRACE s (default 300) after the other one exited is
# stopped: it can only be waiting at a peer_sync for a peer that is gone,
# which would otherwise hold the run until LAB_TIMEOUT.
pair_watch() {
  local i other seen=() gone=() qpid=() grace=${LAB_PAIR_GRACE:-300}
  while sleep 1; do
    for i in 1 2; do
      if [ -z "${seen[$i]:-}" ] && grep -aq 'NETDEV WATCHDOG' "$W/console-$i.log" 2>/dev/null; then
        seen[$i]=1
        echo "lab: guest $i: link watchdog (transmit queue stuck) at host $(date -u +%T); the QEMUs say:"
        for other in 1 2; do
          [ -S "$W/monitor-$other.sock" ] || continue
          printf 'info status\ninfo network\n' |
            timeout 5 socat -t 2 - "UNIX-CONNECT:$W/monitor-$other.sock" 2>/dev/null |
            sed -u "s/\r//g; s/\x1b\[[0-9;]*[A-Za-z]//g; /^(qemu)/d; /^QEMU .* monitor/d; s/^/lab:   qemu $other: /"
        done
      fi
      # QEMU writes its pidfile once it runs (and may remove it on exit)
      [ -n "${qpid[$i]:-}" ] || qpid[$i]=$(cat "$W/qemu-$i.pid" 2>/dev/null) || continue
      if [ -z "${gone[$i]:-}" ] && ! kill -0 "${qpid[$i]}" 2>/dev/null; then gone[$i]=$SECONDS; fi
    done
    for i in 1 2; do
      other=$((3 - i))
      [ -n "${gone[$other]:-}" ] && [ -z "${gone[$i]:-}" ] || continue
      [ $((SECONDS - gone[other])) -ge "$grace" ] || continue
      [ -n "${qpid[$i]:-}" ] || continue
      echo "lab: guest $i still running ${grace} s after guest $other exited: stopped (LAB_PAIR_GRACE)"
      kill -TERM "${qpid[$i]}" 2>/dev/null
      gone[$i]=$SECONDS
    done
  done
}

# The host side of the two-guest tests: control plane, CRDs, operator, the
# per-run files for the guests (/lab-run), then the pair.
run_two() {
  local cp=$W/cp port t1 list i pids=()
  # the guests' one way to the API server is a socat forward
  command -v socat >/dev/null || { echo "lab: socat missing (scripts/install-deps.sh)" >&2; exit 3; }
  echo "lab: two guests: control plane (tests/k8s/control-plane.sh), CRDs, operator"
  "$ROOT/tests/k8s/control-plane.sh" start "$cp" >"$W/cp.log" 2>&1 ||
    { cat "$W/cp.log"; echo "lab: FAIL: the control plane did not start"; bad=1; return; }
  local server kc=$cp/kubeconfig
  server=$(sed -n 's/^DAXLEASE_K8S_SERVER=//p' "$cp/env")
  port=${server##*:}
  kubectl --kubeconfig "$kc" apply -f "$ROOT/manifests/crd/" >/dev/null &&
    kubectl --kubeconfig "$kc" wait --for condition=established --timeout=60s \
      crd/daxvolumes.daxlease.io crd/daxleases.daxlease.io crd/daxrecalls.daxlease.io \
      crd/daxmigrations.daxlease.io >/dev/null ||
    { echo "lab: FAIL: the CRDs were not established"; bad=1; return; }
  local operator
  operator=$(find "$BUILD_DIR" -name daxlease-operator -type f -perm -u+x -not -path '*/CMakeFiles/*' | head -1)
  [ -n "$operator" ] || { echo "lab: FAIL: daxlease-operator not built"; bad=1; return; }
  "$operator" --kubeconfig="$kc" --identity=lab-operator >"$W/operator.log" 2>&1 &
  OPERATOR_PID=$!

  # What the guests need to reach the API server as the admin, and the
  # agents' shared secret: a third archive on the initramfs.
  mkdir -p "$W/run/lab-run"
  cp "$cp/pki/ca.crt" "$cp/pki/admin.crt" "$cp/pki/admin.key" "$W/run/lab-run/"
  cat >"$W/run/lab-run/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster: {server: "https://kubernetes:6443", certificate-authority: /lab-run/ca.crt}
users:
- name: admin
  user: {client-certificate: /lab-run/admin.crt, client-key: /lab-run/admin.key}
contexts:
- name: lab
  context: {cluster: lab, user: admin, namespace: default}
current-context: lab
KC
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$W/run/lab-run/agent-secret"
  (cd "$W/run" && find . | cpio -o -H newc -R 0:0 --quiet) >"$W/run.cpio"
  cat "$W/initrd.img" "$W/run.cpio" >"$W/initrd-two.img"

  list=$(IFS=,; echo "${TWO[*]}")
  local sock=$W/link.sock
  rm -f "$sock"
  t1=${EPOCHREALTIME/./}
  set +e
  for i in 1 2; do
    truncate -s 1G "$W/pmem$i.img"
    local link
    if [ $i = 1 ]; then link="stream,id=l0,server=on,addr.type=unix,addr.path=$sock"
    else
      # the client end must find the listening socket
      for _ in $(seq 1 200); do [ -S "$sock" ] && break; sleep 0.05; done
      link="stream,id=l0,server=off,addr.type=unix,addr.path=$sock"
    fi
    timeout "${LAB_TIMEOUT:-2100}" qemu-system-x86_64 "${ACC[@]}" \
      -machine pc,nvdimm=on -smp 1 -m 1536M,slots=4,maxmem=8G \
      -object memory-backend-file,id=mem1,share=on,mem-path="$W/pmem$i.img",size=1G \
      -device nvdimm,id=nvdimm1,memdev=mem1,label-size=128K \
      -netdev "user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:6443-cmd:socat STDIO TCP:127.0.0.1:$port" \
      -device virtio-net-pci,netdev=n0,mac=52:54:00:12:34:0$i \
      -netdev "$link" -device virtio-net-pci,netdev=l0,mac=52:54:00:c0:00:0$i \
      -kernel "$W/vmlinux" -initrd "$W/initrd-two.img" \
      -append "console=ttyS0 loglevel=3 panic=-1 rdinit=/init lab.tests=$list lab.role=$i" \
      -display none -serial stdio -monitor "unix:$W/monitor-$i.sock,server=on,wait=off" \
      -pidfile "$W/qemu-$i.pid" -no-reboot </dev/null 2>&1 |
      sed -u 's/\r//g' | tee "$W/console-$i.log" | sed -u "s/^/[guest$i] /" &
    pids+=($!)
  done
  pair_watch &
  local watch=$!
  for i in "${pids[@]}"; do wait "$i"; done
  kill "$watch" 2>/dev/null; wait "$watch" 2>/dev/null
  set -e
  local wall_ms=$(((${EPOCHREALTIME/./} - t1) / 1000))
  for i in 1 2; do
    cp "$W/console-$i.log" "$BUILD_DIR/lab-console-two-$i.log" 2>/dev/null
    echo "lab: guest $i ready at uptime $(awk '/^LAB-READY/{sub(/.*uptime=/, ""); print; exit}' "$W/console-$i.log") s"
    grep -q '^LAB-DONE' "$W/console-$i.log" || { echo "lab: guest $i did not finish"; bad=1; }
    grep -aq -E 'BUG:|Oops|Kernel panic' "$W/console-$i.log" && { echo "lab: guest $i: kernel oops/panic"; bad=1; }
  done
  cp "$W/operator.log" "$BUILD_DIR/lab-operator.log" 2>/dev/null
  echo "lab: two guests: wall $wall_ms ms; console logs in $BUILD_DIR/lab-console-two-{1,2}.log, the operator's in $BUILD_DIR/lab-operator.log"
  for t in "${TWO[@]}"; do
    local ok=1 why=
    for i in 1 2; do
      line=$(grep -a "^LAB-TEST-END $t " "$W/console-$i.log" || true)
      case "$line" in
      *" rc=0 "*) ;;
      "") ok=0; why+=" guest $i: did not run to the end" ;;
      *) ok=0; why+=" guest $i: ${line#LAB-TEST-END }" ;;
      esac
    done
    local b e
    b=$(uptime_of "$W/console-1.log" LAB-TEST-BEGIN "$t"); e=$(uptime_of "$W/console-1.log" LAB-TEST-END "$t")
    local took=?
    [ -n "$b" ] && [ -n "$e" ] && took=$(echo "$e - $b" | bc)
    if [ $ok = 1 ]; then echo "lab: PASS $t (${took} s)"; else echo "lab: FAIL $t (${took} s):$why"; bad=1; fi
  done
  grep -h '^FIGURE\|^BENCH' "$W/console-1.log" "$W/console-2.log" | sed 's/^/lab: /' || true
  if [ $bad = 1 ]; then echo "--- operator log (last lines)"; tail -n 30 "$W/operator.log"; fi
}

[ ${#TESTS[@]} -eq 0 ] || run_one
[ ${#TWO[@]} -eq 0 ] || run_two
exit $bad
