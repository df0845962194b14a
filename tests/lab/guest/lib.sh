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

# ---- two guests (run.sh boots a pair for the two_guest_* tests) -------------
# Guest N (lab.role=N on the kernel command line) is node-N at 192.0.2.N on
# eth1, the private link to the other guest (rxe0 runs on it); eth0 is the
# user-mode NIC whose only way out is the forward to the host's API server,
# at kubernetes:6443 (10.0.2.100). The runner puts the kubeconfig, its
# certificates and the agents' secret in /lab-run.
LAB_ROLE=$(sed -n 's/.*lab\.role=\([0-9]\).*/\1/p' /proc/cmdline)
LINK_IP=192.0.2.$LAB_ROLE
PEER_IP=192.0.2.$((3 - ${LAB_ROLE:-1}))
NODE=node-$LAB_ROLE
KUBECONFIG_LAB=/lab-run/kubeconfig
AGENT_SOCK=/run/daxlease-agent/agent.sock
TWO_FABRIC=lab-rdma
TWO_VOL_NAME=lab-two-shared

# peer_sync TAG [DATA]: both guests meet here (over the private link, busybox
# nc); guest 1's DATA is printed on both sides. Fails after 10 minutes.
peer_sync() {
	_tag=$1
	_i=0
	if [ "$LAB_ROLE" = 1 ]; then
		_got=$(timeout 600 nc -l -p 7401)
		[ "$_got" = "$_tag" ] || { echo "peer_sync $_tag: got '$_got'" >&2; return 1; }
		until echo "$_tag ${2:-}" | nc "$PEER_IP" 7402 2>/dev/null; do
			_i=$((_i + 1)); [ $_i -lt 3000 ] || return 1; sleep 0.2
		done
		echo "${2:-}"
	else
		until echo "$_tag" | nc "$PEER_IP" 7401 2>/dev/null; do
			_i=$((_i + 1)); [ $_i -lt 3000 ] || return 1; sleep 0.2
		done
		_got=$(timeout 600 nc -l -p 7402)
		case "$_got" in
		"$_tag" | "$_tag "*) echo "${_got#"$_tag"}" | sed 's/^ //' ;;
		*) echo "peer_sync $_tag: got '$_got'" >&2; return 1 ;;
		esac
	fi
}

# wait_log FILE PATTERN SECONDS [TENTHS]: looks every TENTHS tenths of a
# second (default 1; a long wait looks less often: each look is a process,
# and a TCG guest has one CPU for it and the work it waits for)
wait_log() {
	_i=0 _n=${4:-1}
	while ! grep -q "$2" "$1" 2>/dev/null; do
		_i=$((_i + _n)); [ $_i -lt $(($3 * 10)) ] || return 1; sleep $((_n / 10)).$((_n % 10))
	done
}
# persisted FILE: how many blocks daxlease-io pattern persisted so far
persisted() { grep -c '^persisted' "$1" 2>/dev/null || echo 0; }

# two_up: once per boot: the link, rxe0 on it, the API server's name, then
# daxlease-agent (--fabric=verbs; a migration's devdax media through the
# plugin's socket) and daxlease-csi (ndctl, with the agent).
two_up() {
	[ -f /run/two-up ] && return 0
	$IP link set eth1 up && $IP addr add "$LINK_IP/24" dev eth1 || return 1
	echo "10.0.2.100 kubernetes" >>/etc/hosts
	for m in rdma_rxe ib_uverbs rdma_ucm; do $MODPROBE $m || return 1; done
	rdma link add rxe0 type rxe netdev eth1 || return 1
	mkdir -p "$(dirname $AGENT_SOCK)" /var/lib/daxlease/agent
	say "$NODE: daxlease-agent --fabric=verbs on $LINK_IP"
	daxlease-agent --node-id=$NODE --kubeconfig=$KUBECONFIG_LAB --socket=$AGENT_SOCK \
		--state-dir=/var/lib/daxlease/agent --fabric=verbs --listen=$LINK_IP:7390 \
		--secret-file=/lab-run/agent-secret --plugin-socket=$CSI_SOCK >/tmp/agent.log 2>&1 &
	AGENT_PID=$!
	_i=0
	while [ ! -S $AGENT_SOCK ]; do
		kill -0 $AGENT_PID 2>/dev/null && [ $_i -lt 1200 ] || { tail -n 30 /tmp/agent.log; return 1; }
		sleep 0.1; _i=$((_i + 1))
	done
	say "$NODE: agent up; daxlease-csi --backend=ndctl"
	two_csi || return 1
	say "$NODE: plugin up"
	touch /run/two-up
}
# two_csi: daxlease-csi as two_up starts it (ndctl, with the agent); also to
# restart it after two_csi_kill.
two_csi() { start_csi ndctl --node-id=$NODE --fabric=$TWO_FABRIC --agent-socket=$AGENT_SOCK; }
# two_csi_kill: SIGKILL of this guest's daxlease-csi, whichever test started
# it (each test is a process of its own), until it is gone.
two_csi_kill() {
	_p=$(pidof daxlease-csi) || return 1
	kill -KILL $_p
	_i=0
	while pidof daxlease-csi >/dev/null; do
		_i=$((_i + 1)); [ $_i -lt 100 ] || return 1; sleep 0.1
	done
	CSI_PID=
}
# two_args [POD]: the CSI arguments of a two-guest shared volume: CTX (owned
# by node-1, shared over the lab fabric), ACC (multi-node-multi-writer) and,
# given a pod name, POD (its name, namespace default and uid-NAME).
two_args() {
	CTX="--context daxlease.io/share=true --context daxlease.io/ownerNode=node-1 --context daxlease.io/fabric=$TWO_FABRIC"
	ACC="--access-mode multi-node-multi-writer"
	[ -z "$1" ] || POD="--context csi.storage.k8s.io/pod.name=$1 --context csi.storage.k8s.io/pod.namespace=default --context csi.storage.k8s.io/pod.uid=uid-$1"
}
# ns_of ID: the namespaces named ID ("namespaceX.Y size" per line)
ns_of() {
	ndctl list -N 2>/dev/null | tr -d ' \n' | sed 's/},{/}\n{/g' | grep "\"name\":\"$1\"" |
		sed -n 's/.*"dev":"\([^"]*\)".*"size":\([0-9]*\).*/\1 \2/p'
}
# log_s FILE EVENT: the time of day (s) of EVENT's last line in a daxlease log
log_s() {
	grep -a "event=$2" "$1" | tail -n 1 | sed -n 's/^ts=[^T]*T\([0-9:.]*\)Z.*/\1/p' |
		awk -F: '{ printf "%.3f", $1 * 3600 + $2 * 60 + $3 }'
}
# two_writers_up NAME: a shared devdax volume NAME (64 MiB) owned by node-1
# under two live writers, for the reshape and migration tests. node-1 creates,
# stages and publishes it, fills 1 MiB blocks FILL_FIRST.. (FILL_COUNT of
# them, each persisted once or more) and starts a local writer of N BLOCK-byte
# blocks from 0; node-2 stages and publishes it (remote) and starts an RDMA
# writer of N blocks from N. Sets VOL and W (the writer's pid); expects STG,
# TGT, ACC, CTX and POD (two_args).
two_writers_up() {
	if [ "$LAB_ROLE" = 1 ]; then
		check "shared devdax volume created (64 MiB)" csi create-volume --name "$1" --capacity-bytes 64Mi \
			--param daxlease.io/mode=devdax --param daxlease.io/share=true \
			--param daxlease.io/recallGraceSeconds=60 $ACC
		VOL=$(json_get volumeId)
		check "staged on its owner (served by the agent)" csi node-stage-volume --volume-id "$VOL" --staging-target-path $STG $ACC $CTX
		check "published on its owner (local mapping)" csi node-publish-volume --volume-id "$VOL" \
			--staging-target-path $STG --target-path $TGT $ACC $CTX $POD
		daxlease-io pattern $TGT $MiB 600 $FILL_FIRST $FILL_COUNT >/tmp/fill.log 2>&1 &
		_f=$!
		check "the rest of the volume filled" wait_log /tmp/fill.log "persisted seq=$FILL_COUNT " 300
		kill -TERM $_f
		wait $_f
		DAXLEASE_IO_TIMEOUT_MS=120000 daxlease-io pattern $TGT $BLOCK 1200 0 $N >/tmp/writer.log 2>&1 &
		W=$!
		check "node-1's local writer persists" wait_log /tmp/writer.log "persisted seq=50 " 300
		peer_sync "$1-volume" "$VOL" >/dev/null || fail "meeting node-2"
	else
		VOL=$(peer_sync "$1-volume") || fail "meeting node-1"
		say "volume $VOL"
		check "staged on node-2 (remote)" csi node-stage-volume --volume-id "$VOL" --staging-target-path $STG $ACC $CTX
		check "published on node-2 (descriptor + agent socket)" csi node-publish-volume --volume-id "$VOL" \
			--staging-target-path $STG --target-path $TGT $ACC $CTX $POD
		DAXLEASE_IO_TIMEOUT_MS=120000 daxlease-io pattern $TGT $BLOCK 1200 $N $N >/tmp/writer.log 2>&1 &
		W=$!
		check "node-2's RDMA writer persists" wait_log /tmp/writer.log "persisted seq=50 " 600
	fi
}
# verify_all WHEN: both writers' ranges and the filled blocks checked here
verify_all() {
	daxlease-io verify $TGT $BLOCK 0 $((2 * N)) >/tmp/verify.log 2>&1
	daxlease-io verify $TGT $MiB $FILL_FIRST $FILL_COUNT >>/tmp/verify.log 2>&1
	cat /tmp/verify.log
	check "$1: every block of both writers' ranges valid ($NODE)" \
		grep -q "blocks=$((2 * N)) valid=$((2 * N)) empty=0 corrupt=0" /tmp/verify.log
	check "$1: every byte of the filled rest valid ($NODE)" \
		grep -q "blocks=$FILL_COUNT valid=$FILL_COUNT empty=0 corrupt=0" /tmp/verify.log
}
# dax_chardev: the device of the guest's (one) devdax namespace
dax_chardev() { echo /dev/$(ndctl list -N | tr -d ' \n' | sed -n 's/.*"chardev":"\([^"]*\)".*/\1/p'); }
dump_two_logs() {
	echo "--- agent log ($NODE)"; tail -n "${1:-30}" /tmp/agent.log
	dump_csi_log ndctl "${1:-30}"
}
# cpu_sampler: every 5 s until killed, where this guest's CPU went, to
# /tmp/cpu.log: the time of day, /proc/stat's cpu ticks (user nice system
# idle iowait irq softirq; rxe works in softirq), the processes forked since
# boot, and the ticks of the agent, the plugin and the writers so far.
cpu_sampler() {
	while :; do
		_l="$(date -u +%T) $(head -n 1 /proc/stat | tr -s ' ' | cut -d' ' -f2-8)"
		_l="$_l forks=$(sed -n 's/^processes //p' /proc/stat)"
		for _n in daxlease-agent daxlease-csi daxlease-io; do
			_t=0
			for _p in $(pidof $_n); do
				_t=$((_t + $(awk '{ print $14 + $15 }' /proc/$_p/stat 2>/dev/null || echo 0)))
			done
			_l="$_l $_n=$_t"
		done
		echo "$_l" >>/tmp/cpu.log
		sleep 5
	done
}
# dump_moves TAG: what this guest's agent and plugin logged of migrations and
# recalls (every line naming one, a warning or an error), prefixed "TAG|" so
# that the console log (kept in the build dir) tells why a move took long.
dump_moves() {
	grep -a -h -E 'migrat|recall|media|level=(warn|error)' /tmp/agent.log | sed "s/^/$1| agent: /"
	for _l in /tmp/csi.log.ndctl.prev /tmp/csi.log.ndctl; do
		[ -f $_l ] && grep -a -h -E 'media|level=(warn|error)|started|listening' $_l | sed "s/^/$1| plugin: /"
	done
	[ -f /tmp/cpu.log ] && sed "s/^/$1| cpu: /" /tmp/cpu.log
}
