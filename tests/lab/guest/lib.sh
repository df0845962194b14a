# Shared helpers of the lab guest (busybox sh), sourced by /init and the tests.
# Debian's busybox prefers its own applets over $PATH: the real ip, modprobe
# and mount are called by full path.
IP=/usr/sbin/ip
MODPROBE=/usr/sbin/modprobe
# shellcheck disable=SC2034 # used by the tests that source this file
MOUNT=/usr/bin/mount
CLIENT=/usr/local/bin/daxlease-csi-client
CSI_SOCK=/run/daxlease/csi.sock
CSI_EP=unix://$CSI_SOCK
CSI_STATE=/var/lib/daxlease/csi
KUBELET=/var/lib/kubelet
GUEST_IP=10.0.2.15

up() { cut -d' ' -f1 /proc/uptime; }
say() { echo "[$(up)] $*"; }
FAILS=0
pass() { echo "CHECK PASS: $*"; }
fail() { echo "CHECK FAIL: $*"; FAILS=$((FAILS + 1)); }
# check "what" cmd...: runs cmd, PASS when it exits 0
check() {
	what=$1; shift
	if "$@"; then pass "$what"; else fail "$what (exit $?: $*)"; fi
}
# finish: the test's exit status (number of failed checks)
finish() { echo "checks failed: $FAILS"; exit $FAILS; }

# The CSI tests' helpers (the caller sets STG, the staging root, and POD, the
# pods' volume root).
# first_get KEY: the first "KEY": "value" in /tmp/out.json
first_get() {
	tr -d '\n' </tmp/out.json | grep -o "\"$1\": *\"[^\"]*\"" | head -1 | sed 's/.*: *"//; s/"$//'
}
# stage_publish NAME ID mount|block: stages at $STG/NAME, publishes at TGT
# (set here: $POD/NAME/dev or $POD/NAME/mount)
stage_publish() {
	mkdir -p $STG/$1
	if [ $3 = block ]; then acc=--block; TGT=$POD/$1/dev; else acc="--fstype ext4"; TGT=$POD/$1/mount; fi
	# shellcheck disable=SC2086
	check "$1: NodeStageVolume" csi node-stage-volume --volume-id $2 --staging-target-path $STG/$1 $acc
	[ -s /tmp/err ] && cat /tmp/err
	# shellcheck disable=SC2086
	check "$1: NodePublishVolume" csi node-publish-volume --volume-id $2 --staging-target-path $STG/$1 --target-path $TGT $acc
	[ -s /tmp/err ] && cat /tmp/err
}
unpublish_unstage() {
	check "$1: NodeUnpublishVolume" csi node-unpublish-volume --volume-id $2 --target-path $3
	check "$1: NodeUnstageVolume" csi node-unstage-volume --volume-id $2 --staging-target-path $STG/$1
}

lab_setup() {
	t0=$(up)
	for m in nfit nd_pmem nd_btt dax_pmem device_dax ext4 xfs loop virtio_pci virtio_net; do
		$MODPROBE "$m" 2>/dev/null || echo "modprobe $m failed (built in?)"
	done
	echo "lab-setup: modules loaded ($t0 -> $(up))"
	i=0
	while [ ! -e /sys/bus/nd/devices/region0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
	# A fresh QEMU label area is all zero: without labels the region is one raw
	# namespace that cannot be sized. (Only the lab does this; the driver never
	# initialises labels, which would destroy every namespace.)
	ndctl disable-region all >/dev/null
	ndctl init-labels all >/dev/null || echo "init-labels failed"
	ndctl enable-region all >/dev/null
	echo "lab-setup: labels initialised ($(up))"
	$IP link set lo up
	$IP link set eth0 up 2>/dev/null && $IP addr add $GUEST_IP/24 dev eth0
	mkdir -p $KUBELET /run/daxlease $CSI_STATE
}

# Soft-RoCE on eth0 (rxe0).
setup_rxe() {
	for m in rdma_rxe ib_uverbs rdma_ucm; do $MODPROBE $m || echo "modprobe $m failed"; done
	rdma link add rxe0 type rxe netdev eth0
}

# start_csi BACKEND [extra flags]: starts daxlease-csi in the background; CSI_PID.
start_csi() {
	backend=$1; shift
	rm -f /tmp/csi.log.$backend.prev
	[ -f /tmp/csi.log.$backend ] && mv /tmp/csi.log.$backend /tmp/csi.log.$backend.prev
	daxlease-csi --endpoint=$CSI_EP --node-id=labnode --state-dir=$CSI_STATE/$backend \
		--backend=$backend --allowed-roots=$KUBELET "$@" >/tmp/csi.log.$backend 2>&1 &
	CSI_PID=$!
	i=0
	while [ $i -lt 100 ]; do
		$CLIENT --endpoint $CSI_EP probe >/dev/null 2>&1 && return 0
		kill -0 $CSI_PID 2>/dev/null || break
		sleep 0.1; i=$((i + 1))
	done
	echo "daxlease-csi did not come up:"; cat /tmp/csi.log.$backend
	return 1
}
stop_csi() {
	[ -n "$CSI_PID" ] || return 0
	kill -TERM $CSI_PID 2>/dev/null
	wait $CSI_PID 2>/dev/null
	rc=$?
	CSI_PID=
	return $rc
}
# crash_csi: SIGKILL, as a node losing the plugin would.
crash_csi() { kill -KILL $CSI_PID 2>/dev/null; wait $CSI_PID 2>/dev/null; CSI_PID=; }

# csi ARGS...: the client; stdout to /tmp/out.json, stderr to /tmp/err; returns its exit code
csi() {
	$CLIENT --endpoint $CSI_EP "$@" >/tmp/out.json 2>/tmp/err
	rc=$?
	return $rc
}
# json_get KEY: the last "KEY": value in /tmp/out.json (string or number, unquoted)
json_get() {
	tr -d '\n' </tmp/out.json | sed -n "s/.*\"$1\": *\"\{0,1\}\([^\",}]*\)\"\{0,1\}.*/\1/p" | head -1
}
dump_csi_log() { echo "--- daxlease-csi log ($1)"; tail -n "${2:-40}" /tmp/csi.log.$1; }

# mounted_dax DIR: is DIR a mount whose options say dax?
mounted_dax() {
	awk -v d="$1" '$2 == d { print $4 }' /proc/mounts | grep -q -E '(^|,)dax(=always)?(,|$)'
}
