# Two guests: remote bandwidth and latency through libdaxlease (node-2
# reading and writing node-1's shared devdax volume over RDMA:
# daxlease-lab-two bench) against perftest between the same two guests in
# the same run (ib_write_bw, ib_read_bw: 1 MiB messages; ib_read_lat: 64
# bytes), two interleaved rounds, best of each side; prints the ratios (goal
# >= 0.90; under TCG the absolute figures mean little, the ratio does), and
# node-1's window bind and invalidate latencies from its agent's log. A
# benchmark: the goal is reported, not asserted; the checks are that each
# side ran.
. /lab/lib.sh
MIB=${LAB_TWO_BENCH_MIB:-32}
check "$NODE: link, rxe, agent and plugin up" two_up
[ $FAILS -eq 0 ] || finish
STG=$KUBELET/plugins/kubernetes.io/csi/dax.daxlease.io/bench/globalmount
TGT=$KUBELET/pods/bench/mount
mkdir -p $STG "$(dirname $TGT)"
two_args
# The RoCE v2 GID of rxe0 with an IPv4 address (perftest exchanges QP
# numbers over TCP and needs the GID index).
GIDX=
for n in $(seq 0 15); do
	ty=$(cat /sys/class/infiniband/rxe0/ports/1/gid_attrs/types/$n 2>/dev/null) || continue
	g=$(cat /sys/class/infiniband/rxe0/ports/1/gids/$n)
	case "$ty:$g" in "RoCE v2:0000:0000:0000:0000:0000:ffff:"*) GIDX=$n; break ;; esac
done
check "rxe0 has a RoCE v2 IPv4 GID ($GIDX)" test -n "$GIDX"
PERF="-d rxe0 -x $GIDX"

if [ "$LAB_ROLE" = 1 ]; then
	check "bench volume created" csi create-volume --name lab-two-bench --capacity-bytes 64Mi \
		--param daxlease.io/mode=devdax --param daxlease.io/share=true $ACC
	VOL=$(json_get volumeId)
	check "bench volume staged (served)" csi node-stage-volume --volume-id "$VOL" --staging-target-path $STG $ACC $CTX
	peer_sync bench-volume "$VOL" >/dev/null || fail "meeting node-2"
	for round in 1 2; do
		for t in "ib_write_bw -s 1048576 -n $MIB" "ib_read_bw -s 1048576 -n $MIB" "ib_read_lat -s 64 -n 1000"; do
			# shellcheck disable=SC2086
			timeout 300 $t $PERF >/tmp/perf-server.log 2>&1 &
			S=$!
			peer_sync "server-$round-${t%% *}" || fail "meeting node-2"
			wait $S || { fail "perftest server ${t%% *}"; cat /tmp/perf-server.log; }
		done
		peer_sync "libdaxlease-$round" || fail "meeting node-2"
	done
	grep 'event=fabric.verbs_window_bound' /tmp/agent.log | sed -n 's/.*took_us=\([0-9]*\).*/\1/p' >/tmp/bind.us
	grep 'event=fabric.verbs_window_invalidated' /tmp/agent.log | sed -n 's/.*took_us=\([0-9]*\).*/\1/p' >/tmp/inv.us
	awk '{ s += $1; n++ } END { if (n) printf "BENCH window_bind_us avg %.0f over %d binds\n", s / n, n }' /tmp/bind.us
	awk '{ s += $1; n++ } END { if (n) printf "BENCH window_invalidate_us avg %.0f over %d invalidates\n", s / n, n }' /tmp/inv.us
	check "window binds were logged by the owner's agent" test -s /tmp/bind.us
	test -s /tmp/bind.us || grep 'fabric\.' /tmp/agent.log | tail -n 20
	peer_sync bench-done || fail "meeting node-2"
	check "bench volume unstaged" csi node-unstage-volume --volume-id "$VOL" --staging-target-path $STG
	check "bench volume deleted" csi delete-volume --volume-id "$VOL"
else
	VOL=$(peer_sync bench-volume) || fail "meeting node-1"
	check "bench volume staged on node-2" csi node-stage-volume --volume-id "$VOL" --staging-target-path $STG $ACC $CTX
	check "bench volume published on node-2" csi node-publish-volume --volume-id "$VOL" \
		--staging-target-path $STG --target-path $TGT $ACC $CTX \
		--context csi.storage.k8s.io/pod.name=bench --context csi.storage.k8s.io/pod.namespace=default \
		--context csi.storage.k8s.io/pod.uid=uid-bench
	: >/tmp/perf.txt
	: >/tmp/dl.txt
	for round in 1 2; do
		for t in "ib_write_bw -s 1048576 -n $MIB" "ib_read_bw -s 1048576 -n $MIB" "ib_read_lat -s 64 -n 1000"; do
			peer_sync "server-$round-${t%% *}" || fail "meeting node-1"
			i=0
			# shellcheck disable=SC2086
			until timeout 300 $t $PERF $PEER_IP >/tmp/perf-client.log 2>&1; do
				i=$((i + 1)); [ $i -lt 50 ] || { fail "perftest ${t%% *}"; cat /tmp/perf-client.log; break; }
				sleep 0.3
			done
			case $t in
			ib_read_lat*) awk -v r=$round '$1 == 64 && NF >= 6 { print "perftest read_lat_typical_us", $5; print "perftest read_lat_avg_us", $6 }' /tmp/perf-client.log ;;
			*) awk -v k="${t%%_bw*}" '$1 == 1048576 && NF >= 4 { sub(/^ib_/, "", k); print "perftest " k "_MBps", $4 }' /tmp/perf-client.log ;;
			esac >>/tmp/perf.txt
		done
		peer_sync "libdaxlease-$round" || fail "meeting node-1"
		timeout 600 daxlease-lab-two bench $TGT "$MIB" >/tmp/dl-round.log 2>&1
		check "libdaxlease bench round $round ran" test $? -eq 0
		cat /tmp/dl-round.log
		sed -n 's/^BENCH libdaxlease /libdaxlease /p' /tmp/dl-round.log >>/tmp/dl.txt
	done
	cat /tmp/perf.txt
	# best of the rounds: the highest bandwidth, the lowest latency
	best() { awk -v k="$2" '$2 == k { v = $3; if (b == "" || (k ~ /lat/ ? v < b : v > b)) b = v } END { print b }' "$1"; }
	for k in write_MBps read_MBps read_lat_typical_us read_lat_avg_us; do
		p=$(best /tmp/perf.txt $k)
		d=$(best /tmp/dl.txt $k)
		case $k in
		*lat*) r=$(awk -v p="$p" -v d="$d" 'BEGIN { if (d > 0 && p > 0) printf "%.3f", p / d }') ;;
		*) r=$(awk -v p="$p" -v d="$d" 'BEGIN { if (d > 0 && p > 0) printf "%.3f", d / p }') ;;
		esac
		goal=$(awk -v r="${r:-0}" 'BEGIN { print (r >= 0.90) ? "met" : "not met" }')
		echo "BENCH $k: libdaxlease ${d:-?} perftest ${p:-?} ratio ${r:-?} (goal >= 0.90: $goal)"
	done
	check "both sides measured" sh -c "test -s /tmp/perf.txt && test -s /tmp/dl.txt"
	check "bench unpublished" csi node-unpublish-volume --volume-id "$VOL" --target-path $TGT
	check "bench unstaged" csi node-unstage-volume --volume-id "$VOL" --staging-target-path $STG
	peer_sync bench-done || fail "meeting node-1"
fi
finish
