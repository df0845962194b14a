# Two guests: remote bandwidth and latency through libdaxlease (node-2
# reading and writing node-1's shared devdax volume over RDMA:
# daxlease-lab-two bench) against perftest between the same two guests in
# the same run (ib_write_bw, ib_read_bw: 1 MiB messages; ib_read_lat: 64
# bytes), two interleaved rounds, best of each side; prints the ratios (goal
# >= 0.90; under TCG the absolute figures mean little, the ratio does), and
# node-1's window bind and invalidate latencies from its agent's log. A
# benchmark: the goal is reported, not asserted; the checks are that each
# side ran.
#
# A perftest pair can fail under heavy load (the server failed reading the
# client's keys, then the client could not connect): such a pair is started
# again, up to PERF_ATTEMPTS times, and every retry is reported
# (BENCH perftest_retries). Only perftest is retried: a libdaxlease round
# that fails fails the test.
. /lab/lib.sh
MIB=${LAB_TWO_BENCH_MIB:-32}
PERF_ATTEMPTS=3
# peer_tell LINE (node-2) / peer_hear (node-1): one line from node-2 to
# node-1 (peer_sync carries node-1's data only).
peer_tell() {
	_i=0
	until echo "$1" | nc "$PEER_IP" 7403 2>/dev/null; do
		_i=$((_i + 1)); [ $_i -lt 3000 ] || return 1; sleep 0.2
	done
}
peer_hear() { timeout 900 nc -l -p 7403; }
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

# One round of libdaxlease's bench ROUND: both sides meet, node-2 runs it.
libdaxlease_round() {
	peer_sync "libdaxlease-$1" || fail "meeting the peer"
	[ "$LAB_ROLE" = 1 ] && return
	timeout 600 daxlease-lab-two bench $TGT "$MIB" >/tmp/dl-round.log 2>&1
	check "libdaxlease bench round $1 ran" test $? -eq 0
	cat /tmp/dl-round.log
	sed -n 's/^BENCH libdaxlease /libdaxlease /p' /tmp/dl-round.log >>/tmp/dl.txt
}

if [ "$LAB_ROLE" = 1 ]; then
	check "bench volume created" csi create-volume --name lab-two-bench --capacity-bytes 64Mi \
		--param daxlease.io/mode=devdax --param daxlease.io/share=true $ACC
	VOL=$(json_get volumeId)
	check "bench volume staged (served)" csi node-stage-volume --volume-id "$VOL" --staging-target-path $STG $ACC $CTX
	peer_sync bench-volume "$VOL" >/dev/null || fail "meeting node-2"
	for round in 1 2; do
		# libdaxlease's latency loop (its run's last part) and ib_read_lat
		# back to back: under a load that changes by the minute, a pair
		# minutes apart compares two different machines.
		for t in "ib_write_bw -s 1048576 -n $MIB" "ib_read_bw -s 1048576 -n $MIB" libdaxlease "ib_read_lat -s 64 -n 1000"; do
			if [ "$t" = libdaxlease ]; then
				libdaxlease_round "$round"
				continue
			fi
			a=1
			while :; do
				# shellcheck disable=SC2086
				timeout 300 $t $PERF >/tmp/perf-server.log 2>&1 &
				S=$!
				peer_sync "server-$round-${t%% *}-$a" || fail "meeting node-2"
				# node-2's client is done (its exit status): a server that
				# outlives it (no client reached it) is stopped.
				c=$(peer_hear) || { fail "hearing node-2"; c=1; }
				i=0
				while kill -0 $S 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
				kill $S 2>/dev/null
				wait $S
				s=$?
				[ "$c" = 0 ] && { [ $s = 0 ] || say "perftest server ${t%% *} exited $s after a successful client"; break; }
				say "perftest ${t%% *} round $round attempt $a: client exit $c, server exit $s; server log:"
				tail -n 5 /tmp/perf-server.log
				a=$((a + 1))
				[ $a -le $PERF_ATTEMPTS ] || { fail "perftest ${t%% *} round $round: no pair completed in $PERF_ATTEMPTS attempts"; break; }
			done
		done
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
	: >/tmp/perf-retries.txt
	for round in 1 2; do
		# libdaxlease's latency loop (its run's last part) and ib_read_lat
		# back to back: under a load that changes by the minute, a pair
		# minutes apart compares two different machines.
		for t in "ib_write_bw -s 1048576 -n $MIB" "ib_read_bw -s 1048576 -n $MIB" libdaxlease "ib_read_lat -s 64 -n 1000"; do
			if [ "$t" = libdaxlease ]; then
				libdaxlease_round "$round"
				continue
			fi
			a=1
			while :; do
				peer_sync "server-$round-${t%% *}-$a" || fail "meeting node-1"
				# the server may not listen yet: connect again for a while
				i=0
				# shellcheck disable=SC2086
				until timeout 300 $t $PERF $PEER_IP >/tmp/perf-client.log 2>&1; do
					i=$((i + 1)); [ $i -lt 50 ] || break
					sleep 0.3
				done
				c=1; [ $i -lt 50 ] && c=0
				peer_tell $c || fail "telling node-1"
				[ $c = 0 ] && break
				echo "perftest ${t%% *} round $round attempt $a failed; client log:"
				tail -n 5 /tmp/perf-client.log
				echo "perftest_retry ${t%% *} round $round attempt $a" >>/tmp/perf-retries.txt
				a=$((a + 1))
				[ $a -le $PERF_ATTEMPTS ] || { fail "perftest ${t%% *} round $round: no pair completed in $PERF_ATTEMPTS attempts"; break; }
			done
			case $t in
			ib_read_lat*) awk -v r=$round '$1 == 64 && NF >= 6 { print "perftest read_lat_typical_us", $5; print "perftest read_lat_avg_us", $6; print "perftest read_lat_min_us", $3 }' /tmp/perf-client.log ;;
			*) awk -v k="${t%%_bw*}" '$1 == 1048576 && NF >= 4 { sub(/^ib_/, "", k); print "perftest " k "_MBps", $4 }' /tmp/perf-client.log ;;
			esac >>/tmp/perf.txt
			case $t in ib_read_lat*) grep -a -i -e 'warn' -e 't_min' -e '^ *64 ' /tmp/perf-client.log | sed 's/^/perftest-raw /' ;; esac
		done
	done
	cat /tmp/perf.txt
	# best of the rounds: the highest bandwidth, the lowest latency
	best() { awk -v k="$2" '$2 == k { v = $3; if (b == "" || (k ~ /lat/ ? v < b : v > b)) b = v } END { print b }' "$1"; }
	for k in write_MBps read_MBps read_lat_typical_us read_lat_avg_us read_lat_min_us; do
		p=$(best /tmp/perf.txt $k)
		d=$(best /tmp/dl.txt $k)
		case $k in
		*lat*) r=$(awk -v p="$p" -v d="$d" 'BEGIN { if (d > 0 && p > 0) printf "%.3f", p / d }') ;;
		*) r=$(awk -v p="$p" -v d="$d" 'BEGIN { if (d > 0 && p > 0) printf "%.3f", d / p }') ;;
		esac
		goal=$(awk -v r="${r:-0}" 'BEGIN { print (r >= 0.90) ? "met" : "not met" }')
		echo "BENCH $k: libdaxlease ${d:-?} perftest ${p:-?} ratio ${r:-?} (goal >= 0.90: $goal)"
	done
	echo "BENCH perftest_retries $(wc -l </tmp/perf-retries.txt) (pairs started again after a perftest failure)"
	cat /tmp/perf-retries.txt
	check "both sides measured" sh -c "test -s /tmp/perf.txt && test -s /tmp/dl.txt"
	check "bench unpublished" csi node-unpublish-volume --volume-id "$VOL" --target-path $TGT
	check "bench unstaged" csi node-unstage-volume --volume-id "$VOL" --staging-target-path $STG
	peer_sync bench-done || fail "meeting node-1"
fi
finish
