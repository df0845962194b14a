# Two guests (run.sh boots the pair): an ndctl devdax volume grows under live
# holders. node-1 owns a shared devdax volume (daxlease-csi --backend=ndctl
# creates, stages and publishes it; its agent serves it over RDMA); the rest
# of its first 64 MiB is filled with checksummed 1 MiB blocks; a writer on
# node-1 (local mapping) and one on node-2 (RDMA) run continuously on
# disjoint 1 MiB ranges. node-1 then calls ControllerExpandVolume 64 -> 96
# MiB as the external-resizer does (again while it answers UNAVAILABLE): the
# agent's Reshape recall (both holders flush, unmap, release), the agent lets
# go of the device, the backend makes a new namespace of the new size,
# copies, compares, switches and frees the old one, the agent serves the new
# device; the volume is Ready at epoch + 1 and both writers go on (node-1's
# maps the new device, node-2's connects to the new memory region). Checked:
# one namespace of the volume, another and larger; every block of both
# writers' ranges and every byte of the filled rest, on both nodes (node-1
# from its memory, node-2 over RDMA); node-2 writes the grown tail over RDMA
# and node-1 reads it back. Then everything is removed.
. /lab/lib.sh
BLOCK=4096
N=256 # blocks per writer (1 MiB each)
MiB=1048576
FILL_FIRST=2 # 1 MiB blocks 2..63: the rest of the first 64 MiB
FILL_COUNT=62
TAIL_FIRST=64 # 1 MiB blocks 64..79: in the grown part only
TAIL_COUNT=16
GROWN=96
check "$NODE: link, rxe, agent and plugin up" two_up
[ $FAILS -eq 0 ] || { dump_two_logs; finish; }
STG=$KUBELET/plugins/kubernetes.io/csi/dax.daxlease.io/grow/globalmount
TGT=$KUBELET/pods/grow-$LAB_ROLE/mount
mkdir -p $STG "$(dirname $TGT)"
two_args grow-$LAB_ROLE
status() { kubectl-daxlease --kubeconfig $KUBECONFIG_LAB status "$VOL" >/tmp/status.txt 2>&1; }
# vol_row: "PHASE EPOCH" of the volume (a failed status call, on a loaded
# machine, is asked again: 60 tries)
vol_row() {
	_i=0
	until status; do
		_i=$((_i + 1)); [ $_i -lt 60 ] || return 1; sleep 1
	done
	awk -v v="$VOL" '$1 == v { print $2, $3; exit }' /tmp/status.txt
}
# wait_ready EPOCH: until the volume is Ready at EPOCH (the operator's
# Quiesced -> Reshaping -> Ready may trail the plugin's OK): 120 s
wait_ready() {
	_j=0
	while [ $_j -lt 120 ]; do
		[ "$(vol_row)" = "Ready $1" ] && return 0
		_j=$((_j + 1)); sleep 1
	done
	cat /tmp/status.txt
	return 1
}

two_writers_up lab-two-grow
[ $FAILS -eq 0 ] || { dump_two_logs; tail /tmp/writer.log; kill $W; finish; }
peer_sync grow-writers-on || fail "meeting the peer"
if [ "$LAB_ROLE" = 1 ]; then
	OLD=$(ns_of "$VOL")
	E0=$(vol_row | cut -d' ' -f2)
	check "the volume's epoch before the grow is known ($E0)" test -n "$E0"
	cat /tmp/status.txt
	say "both writers on ($(persisted /tmp/writer.log) here); namespace [$OLD], epoch $E0; grow to $GROWN MiB"
	t0=$(up)
	saw_reshape=0
	rc=1
	i=0
	# As the external-resizer: again while UNAVAILABLE (recall in progress).
	while [ $i -lt 300 ]; do
		csi controller-expand-volume --volume-id "$VOL" --capacity-bytes ${GROWN}Mi
		rc=$?
		[ $rc -eq 0 ] && break
		say "ControllerExpandVolume: rc $rc: $(head -c 300 /tmp/err)"
		# UNAVAILABLE (recall in progress), ABORTED (the copy holds the
		# volume's lock), DEADLINE_EXCEEDED (the copy outlasted the call)
		case $rc in 4 | 10 | 14) ;; *) break ;; esac
		grep -q "DaxRecall $VOL-reshape-e$E0 (Reshape)" /tmp/err && saw_reshape=1
		i=$((i + 1))
		sleep 1
	done
	t1=$(up)
	cat /tmp/out.json
	echo "FIGURE lab_ndctl_grow_under_holders_64_to_${GROWN}_MiB_s=$(echo "$t1 - $t0" | bc)"
	check "ControllerExpandVolume: OK after the recall (rc $rc)" test $rc -eq 0
	check "UNAVAILABLE named the Reshape recall $VOL-reshape-e$E0" test $saw_reshape -eq 1
	cap=$(json_get capacityBytes)
	check "capacity $cap >= $GROWN MiB" test "${cap:-0}" -ge $((GROWN * MiB))
	NEW=$(ns_of "$VOL")
	echo "namespaces of $VOL: before [$OLD] after [$NEW]"
	check "exactly one namespace of the volume (the old one freed)" test "$(echo "$NEW" | grep -c .)" -eq 1
	check "another namespace, larger" test "${NEW%% *}" != "${OLD%% *}" -a "${NEW#* }" -gt "${OLD#* }"
	grep -a -h -E "ndctl.grown|csi.volume.reshaped" /tmp/csi.log.ndctl | tail -n 3
	grep -a -h -E "agent.reshape_recall|agent.stopped_serving|agent.serving|agent.reshaped" /tmp/agent.log | tail -n 5
	# The holders' pause: the Reshape recall made -> the reshape completed
	# (the operator's Ready follows it), from the agent's log times.
	r0=$(log_s /tmp/agent.log agent.reshape_recall)
	r1=$(log_s /tmp/agent.log agent.reshaped)
	[ -n "$r0" ] && [ -n "$r1" ] &&
		echo "FIGURE lab_ndctl_grow_recall_to_reshaped_s=$(awk -v a="$r0" -v b="$r1" 'BEGIN {printf "%.2f", b - a}')"
	echo "FIGURE lab_ndctl_grow_copy_ms=$(grep -a 'event=ndctl.grown' /tmp/csi.log.ndctl | tail -n 1 | sed -n 's/.* ms=\([0-9]*\).*/\1/p')"
	E1=$((E0 + 1))
	check "the volume Ready at epoch + 1 ($E0 -> $E1)" wait_ready $E1
	cat /tmp/status.txt
	peer_sync grown "$E1" >/dev/null || fail "meeting node-2"
else
	E1=$(peer_sync grown) || fail "meeting node-1"
fi
at=$(persisted /tmp/writer.log)
check "the writer goes on after the grow" wait_log /tmp/writer.log "persisted seq=$((at + 30)) " 600
check "its blocks are persisted at the new epoch $E1" grep -q "epoch=$E1\$" /tmp/writer.log
peer_sync grow-stop-writers || fail "meeting the peer"
kill -TERM $W
wait $W
rc=$?
tail -n 2 /tmp/writer.log
check "the writer ended without an error (exit $rc)" test $rc -eq 0
check "no error printed by the writer" sh -c '! grep -qi "error\|fail\|revoked" /tmp/writer.log'
say "$(persisted /tmp/writer.log) blocks persisted"
peer_sync grow-verify || fail "meeting the peer"
verify_all "after the grow"
if [ "$LAB_ROLE" = 2 ]; then
	daxlease-io pattern $TGT $MiB 600 $TAIL_FIRST $TAIL_COUNT >/tmp/tail.log 2>&1 &
	T=$!
	check "node-2 writes the grown tail over RDMA" wait_log /tmp/tail.log "persisted seq=$TAIL_COUNT " 300
	kill -TERM $T
	wait $T
fi
peer_sync grow-tail || fail "meeting the peer"
daxlease-io verify $TGT $MiB $TAIL_FIRST $TAIL_COUNT >/tmp/tail-verify.log 2>&1
cat /tmp/tail-verify.log
check "the grown tail holds node-2's blocks ($NODE)" \
	grep -q "blocks=$TAIL_COUNT valid=$TAIL_COUNT empty=0 corrupt=0" /tmp/tail-verify.log
peer_sync grow-verified || fail "meeting the peer"
check "unpublished on $NODE" csi node-unpublish-volume --volume-id "$VOL" --target-path $TGT
if [ "$LAB_ROLE" = 2 ]; then
	check "unstaged on node-2" csi node-unstage-volume --volume-id "$VOL" --staging-target-path $STG
	peer_sync grow-cleaned || fail "meeting node-1"
else
	peer_sync grow-cleaned || fail "meeting node-2"
	check "unstaged on node-1" csi node-unstage-volume --volume-id "$VOL" --staging-target-path $STG
	check "volume deleted" csi delete-volume --volume-id "$VOL"
	check "no namespace of the volume left" test -z "$(ns_of "$VOL")"
fi
[ $FAILS -eq 0 ] || dump_two_logs 60
finish
