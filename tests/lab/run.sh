#!/usr/bin/env bash
# Runs lab tests inside one QEMU guest with an emulated NVDIMM and a NIC for
# Soft-RoCE, prints the guest's output, and exits 0 only when every named
# test passed.
#
# usage: tests/lab/run.sh [--build-dir DIR] [--accel auto|kvm|tcg] [--keep] TEST...
#   TEST: a script name under tests/lab/guest/ without .sh (e.g. csi_lifecycle),
#         or "all" for every test the CTest registration runs.
# env:   DAXLEASE_LAB_CACHE (kernel + base initramfs cache, default
#        /var/cache/daxlease/lab), LAB_SMP (default 2), LAB_TIMEOUT (s, default 900)
# Exit:  0 all passed; 1 a test failed or the guest did not finish; 2 usage;
#        3 a host prerequisite (qemu, apt) is missing.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD_DIR=$ROOT/build
ACCEL=${LAB_ACCEL:-auto}
KEEP=0
TESTS=()
ALL=(ndctl_backend csi_lifecycle csi_snapshot csi_grow file_backend_nodax capacity verbs verbs_fabric bench)
while [ $# -gt 0 ]; do
  case "$1" in
  --build-dir) BUILD_DIR=$2; shift ;;
  --accel) ACCEL=$2; shift ;;
  --keep) KEEP=1 ;;
  all) TESTS+=("${ALL[@]}") ;;
  -*) echo "unknown option $1" >&2; exit 2 ;;
  *) TESTS+=("$1") ;;
  esac
  shift
done
[ ${#TESTS[@]} -gt 0 ] || { echo "usage: $0 [--build-dir DIR] TEST... | all" >&2; exit 2; }
command -v qemu-system-x86_64 >/dev/null || { echo "lab: qemu-system-x86_64 missing (scripts/install-deps.sh)" >&2; exit 3; }

# KVM only where hardware virtualisation really works: vmx/svm in cpuinfo and
# not the kvm_pvm hypervisor (which runs only specially built guest kernels).
if [ "$ACCEL" = auto ]; then
  ACCEL=tcg
  if [ -w /dev/kvm ] && grep -qw -e vmx -e svm /proc/cpuinfo && [ ! -d /sys/module/kvm_pvm ]; then ACCEL=kvm; fi
fi
if [ "$ACCEL" = kvm ]; then ACC=(-accel kvm -cpu host,-arch-capabilities); else ACC=(-accel tcg -cpu max); fi

W=$(mktemp -d /tmp/daxlease-lab.XXXXXX)
cleanup() { if [ $KEEP = 1 ]; then echo "lab: kept $W" >&2; else rm -rf "$W"; fi; }
trap cleanup EXIT

t0=${EPOCHREALTIME/./}
ms() { echo $(((${EPOCHREALTIME/./} - t0) / 1000)); }
"$HERE/build-guest.sh" "$BUILD_DIR" "$W"
echo "lab: guest built in $(ms) ms; accel $ACCEL; tests: ${TESTS[*]}"

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
  tr -d '\r' | tee "$W/console.log"
qrc=${PIPESTATUS[0]}
set -e
boot_ms=$(((${EPOCHREALTIME/./} - t1) / 1000))
ready=$(awk '/^LAB-READY/{sub(/.*uptime=/, ""); print; exit}' "$W/console.log")
echo "lab: qemu exit $qrc after $boot_ms ms (guest ready at uptime ${ready:-?} s)"

cp "$W/console.log" "$BUILD_DIR/lab-console.log" 2>/dev/null && echo "lab: console log in $BUILD_DIR/lab-console.log"
bad=0
grep -q '^LAB-DONE' "$W/console.log" || { echo "lab: the guest did not finish"; bad=1; }
for t in "${TESTS[@]}"; do
  line=$(grep -a "^LAB-TEST-END $t " "$W/console.log" || true)
  case "$line" in
  *" rc=0 "*) echo "lab: PASS $t" ;;
  "") echo "lab: FAIL $t (did not run to the end)"; bad=1 ;;
  *) echo "lab: FAIL $t (${line#LAB-TEST-END })"; bad=1 ;;
  esac
done
exit $bad
