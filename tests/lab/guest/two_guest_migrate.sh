# Two guests (run.sh boots the pair): an ndctl devdax volume migrates from
# node-1 to node-2 and back under live holders. node-1 owns a shared devdax
# volume (daxlease-csi --backend=ndctl creates, stages and publishes it; its
# agent serves it over RDMA); the rest of its 64 MiB is filled with
# checksummed 1 MiB blocks; a writer on node-1 (local mapping) and one on
# node-2 (RDMA) run continuously on disjoint 1 MiB ranges. A DaxMigration
# (kubectl daxlease migrate) moves it to node-2: the Migrate recall (both
# holders flush, unmap, release), node-2's agent asks its plugin for a
# namespace (CreateMedia) and copies over RDMA, the owner switches at epoch
# + 1, node-1's plugin frees the old namespace (FreeMedia) and only then is
# sourceMediaFreed reported; node-1's writer goes on over RDMA, node-2's maps
# the new device locally. Then back to node-1 the same way, with both
# guests' daxlease-csi SIGKILLed (migrate, plugins-killed). Checked after
# each move: the migration Complete, the volume Ready at the next epoch on
# the new owner, exactly one namespace of the volume, on the new owner
# (`ndctl list` on both guests), both writers persisting at the new epoch;
# at the end every block of both writers' ranges and every byte of the
# filled rest, on both nodes. Then everything is removed, no namespace left.
. /lab/lib.sh
BLOCK=4096
N=256 # blocks per writer (1 MiB each)
MiB=1048576
FILL_FIRST=2 # 1 MiB blocks 2..63: the rest of the volume
FILL_COUNT=62
check "$NODE: link, rxe, agent and plugin up" two_up
[ $FAILS -eq 0 ] || { dump_two_logs; finish; }
STG=$KUBELET/plugins/kubernetes.io/csi/dax.daxlease.io/migrate/globalmount
TGT=$KUBELET/pods/migrate-$LAB_ROLE/mount
mkdir -p $STG "$(dirname $TGT)"
two_args migrate-$LAB_ROLE
KD="kubectl-daxlease --kubeconfig $KUBECONFIG_LAB"
status() { $KD status "$VOL" >/tmp/status.txt 2>&1; }
# vol_row: "PHASE EPOCH OWNER" of the volume (a failed status call, on a
# loaded machine, is asked again: 60 tries)
vol_row() {
	_i=0
	until status; do
		_i=$((_i + 1)); [ $_i -lt 60 ] || return 1; sleep 1
	done
	awk -v v="$VOL" '$1 == v { print $2, $3, $5; exit }' /tmp/status.txt
}
# wait_migrated NAME EPOCH OWNER: until the migration is Complete and the
# volume Ready at EPOCH on OWNER: 600 s. A status call is a process and a
# TLS connection: 10-16 s of a TCG guest's one CPU at host load 20 (FIGURE
# lab_kubectl_daxlease_status_s), and node-1, which runs this, is the
# target on the way back. So the API is asked every 10 s (a Failed
# migration) until this guest's agent logged the move's end (the switch:
# the target serving, the source migrated away), then once a second, one
# call for both rows (it was asked twice a second throughout).
wait_migrated() {
	_end="event=agent.migrated_away migration=$1"
	[ "$NODE" = "$3" ] && _end="event=agent.migration_serving migration=$1"
	_j=0
	while [ $_j -lt 600 ]; do
		if [ $((_j % 10)) -eq 0 ] || grep -aq "$_end" /tmp/agent.log; then
			status
			_p=$(awk -v m="$1" '$1 == m { print $5; exit }' /tmp/status.txt)
			[ "$_p" = Complete ] &&
				[ "$(awk -v v="$VOL" '$1 == v { print $2, $3, $5; exit }' /tmp/status.txt)" = "Ready $2 $3" ] &&
				return 0
			[ "$_p" = Failed ] && break
		fi
		_j=$((_j + 1)); sleep 1
	done
	cat /tmp/status.txt
	return 1
}
# wait_ns_count ID COUNT: until this guest has COUNT namespaces of ID: 300 s
# (the source's free runs beside the switch)
wait_ns_count() {
	_k=0
	while [ "$(ns_of "$1" | grep -c .)" -ne "$2" ]; do
		_k=$((_k + 1)); [ $_k -lt 300 ] || return 1; sleep 1
	done
}
# figures TO: what this guest's agent logged of the move to TO. The target:
# the copy (agent.migration_copied: copy, persist, and where the streams'
# time went) and copy start to serving; the source: its holder's release
# (the Migrate recall acked) to the switch (agent.migrated_away), the
# holders' pause as this node saw it, less the operator's Ready.
figures() {
	if [ "$NODE" = "$1" ]; then
		_c=$(grep -a 'event=agent.migration_pre_copied' /tmp/agent.log | tail -n 1)
		echo "FIGURE lab_ndctl_migrate_to_${1}_pre_copy_ms=$(echo "$_c" | sed -n "s/.* copy_ms=\([0-9]*\).*/\1/p")"
		_c=$(grep -a 'event=agent.migration_copied' /tmp/agent.log | tail -n 1)
		for _f in copy_ms persist_ms read_ms hash_ms write_ms; do
			echo "FIGURE lab_ndctl_migrate_to_${1}_$_f=$(echo "$_c" | sed -n "s/.* $_f=\([0-9]*\).*/\1/p")"
		done
		_a=$(log_s /tmp/agent.log agent.migration_copying)
		_b=$(log_s /tmp/agent.log agent.migration_serving)
		[ -n "$_a" ] && [ -n "$_b" ] &&
			echo "FIGURE lab_ndctl_migrate_to_${1}_copying_to_serving_s=$(awk -v a="$_a" -v b="$_b" 'BEGIN {printf "%.2f", b - a}')"
	else
		_a=$(log_s /tmp/agent.log agent.recall_acked)
		_b=$(log_s /tmp/agent.log agent.migrated_away)
		[ -n "$_a" ] && [ -n "$_b" ] &&
			echo "FIGURE lab_ndctl_migrate_to_${1}_released_to_switched_s=$(awk -v a="$_a" -v b="$_b" 'BEGIN {printf "%.2f", b - a}')"
	fi
}
# mig_media NAME: the DaxMigration's MEDIA cell (the last column; COPIED
# holds a space)
mig_media() {
	status
	awk -v m="$1" '$1 == m { print $NF; exit }' /tmp/status.txt
}
# wait_media NAME VALUE: until mig_media is VALUE: 300 s
wait_media() {
	_j=0
	until [ "$(mig_media "$1")" = "$2" ]; do
		_j=$((_j + 1)); [ $_j -lt 300 ] || { cat /tmp/status.txt; return 1; }
		sleep 1
	done
}
# migrate TO [plugins-killed]: node-1 asks for the migration (either node
# could); both guests then check the namespaces and the writers at the new
# epoch. With plugins-killed (a move to node-1): both guests' daxlease-csi
# are SIGKILLed before it starts. The target's CreateMedia is then refused
# (UNAVAILABLE) and asked again until its plugin is restarted; the target's
# plugin is SIGKILLed and restarted twice more: during the pre-copy (the
# media just made, the volume still Ready) and mid-copy in the pause (phase
# Copying, once the target logged the copy's start, before the switch), the
# new namespace still there each time; the source's FreeMedia after the
# switch is refused until its plugin is restarted, which the migration shows
# (MEDIA FreeFailed, then freed) and the namespace count on the source
# confirms.
migrate() {
	_to=$1 _faults=${2:-}
	if [ -n "$_faults" ]; then
		check "$NODE: daxlease-csi SIGKILLed before the move to $_to" two_csi_kill
		peer_sync "plugins-killed-$_to" || fail "meeting the peer"
	fi
	if [ "$LAB_ROLE" = 1 ]; then
		_s0=$(up)
		_e0=$(vol_row | cut -d' ' -f2)
		echo "FIGURE lab_kubectl_daxlease_status_s=$(echo "$(up) - $_s0" | bc)"
		check "the volume's epoch before the move to $_to is known ($_e0)" test -n "$_e0"
		t0=$(up)
		$KD migrate "$VOL" --to "$_to" >/tmp/mig.txt 2>&1
		cat /tmp/mig.txt
		_m=$(sed -n 's|^daxmigration.daxlease.io/\([^ ]*\) created.*|\1|p' /tmp/mig.txt)
		check "DaxMigration created ($_m)" test -n "$_m"
		_e1=$((_e0 + 1))
		if [ -n "$_faults" ]; then
			check "the target's CreateMedia refused with its plugin down, asked again" \
				wait_log /tmp/agent.log "event=agent.migration_media_create_retry migration=$_m" 300
			check "the target's daxlease-csi restarts" two_csi
			check "the target made the media once its plugin was back" \
				wait_log /tmp/agent.log "event=agent.migration_media_made migration=$_m" 300
			# The pre-copy (phase PreCopying, the volume still Ready) reads
			# into the media just made.
			check "the target's daxlease-csi SIGKILLed during the pre-copy" two_csi_kill
			grep -aq "event=agent.migration_pre_copied migration=$_m" /tmp/agent.log &&
				say "(the pre-copy had already ended at the kill)"
			check "the target's daxlease-csi restarts during the pre-copy" two_csi
			check "the new namespace still there after the restart" test "$(ns_of "$VOL" | grep -c .)" -eq 1
			# The copy in the pause (phase Copying: the holders released;
			# its media asked of the restarted plugin again, bytesCopied
			# from what the pre-copy left): killed while it reads.
			check "the target's pre-copy ended" \
				wait_log /tmp/agent.log "event=agent.migration_pre_copied migration=$_m" 600 10
			check "the target's copy in the pause started (phase Copying)" \
				wait_log /tmp/agent.log "event=agent.migration_copying migration=$_m" 300
			check "the target's daxlease-csi SIGKILLed mid-copy" two_csi_kill
			_mid=1
			grep -aq "event=agent.migration_copied migration=$_m" /tmp/agent.log && _mid=0
			echo "FIGURE lab_ndctl_migrate_plugin_kill_before_copied=$_mid"
			check "the kill came before the switch (phase Copying)" \
				sh -c "! grep -aq 'event=agent.migration_serving migration=$_m' /tmp/agent.log"
			check "the target's daxlease-csi restarts mid-copy" two_csi
			check "the new namespace still there after the mid-copy restart" test "$(ns_of "$VOL" | grep -c .)" -eq 1
		fi
		if ! wait_migrated "$_m" $_e1 "$_to"; then
			# Failed (or not done in time): the rest of the move cannot pass.
			fail "migration to $_to Complete, the volume Ready at epoch $_e1 on $_to"
			peer_sync "moved-$_to" failed >/dev/null || fail "meeting node-2"
			return 1
		fi
		pass "migration to $_to Complete, the volume Ready at epoch $_e1 on $_to"
		t1=$(up)
		cat /tmp/status.txt
		echo "FIGURE lab_ndctl_migrate_64_MiB_to_${_to}_s=$(echo "$t1 - $t0" | bc)"
		grep -a -h -E "agent.migration_(media_made|copied|serving|media_freed)|agent.migrated_away" /tmp/agent.log | tail -n 4
		grep -a -h -E "csi.media" /tmp/csi.log.ndctl | tail -n 2
		if [ -n "$_faults" ]; then
			check "the source's free refused with its plugin down: MEDIA FreeFailed" wait_media "$_m" FreeFailed
			sed -n '/^Media not freed yet:/,$p' /tmp/status.txt
		fi
		peer_sync "moved-$_to" "$_e1" >/dev/null || fail "meeting node-2"
	else
		_e1=$(peer_sync "moved-$_to") || fail "meeting node-1"
		[ "$_e1" != failed ] || { fail "the migration to $_to failed (node-1 saw it)"; return 1; }
		if [ -n "$_faults" ]; then
			check "the source's agent logged the refused free" grep -q 'event=agent.migration_media_free_failed' /tmp/agent.log
			check "the source still has its namespace" test "$(ns_of "$VOL" | grep -c .)" -eq 1
			check "the source's daxlease-csi restarts" two_csi
		fi
		grep -a -h -E "agent.migration_(media_made|copied|serving|media_freed)|agent.migrated_away" /tmp/agent.log | tail -n 4
		grep -a -h -E "csi.media" /tmp/csi.log.ndctl | tail -n 2
	fi
	if [ "$NODE" = "$_to" ]; then
		check "one namespace of the volume on the new owner $NODE" wait_ns_count "$VOL" 1
	else
		check "the old namespace freed on $NODE (ndctl list)" wait_ns_count "$VOL" 0
	fi
	ndctl list -N | tr -d '\n' | head -c 600; echo
	if [ -n "$_faults" ] && [ "$LAB_ROLE" = 1 ]; then
		check "the source's media freed once its plugin was back: MEDIA freed" wait_media "$_m" freed
	fi
	figures "$_to"
	_at=$(persisted /tmp/writer.log)
	check "$NODE's writer goes on after the move to $_to" wait_log /tmp/writer.log "persisted seq=$((_at + 30)) " 600
	check "its blocks are persisted at the new epoch $_e1" grep -q "epoch=$_e1\$" /tmp/writer.log
	peer_sync "writers-after-$_to" || fail "meeting the peer"
}

cpu_sampler &
CPU_SAMPLER=$!
two_writers_up lab-two-migrate
[ $FAILS -eq 0 ] || { dump_two_logs; kill $CPU_SAMPLER; tail /tmp/writer.log; kill $W; finish; }
peer_sync migrate-writers-on || fail "meeting the peer"
if [ "$LAB_ROLE" = 1 ]; then
	check "one namespace of the volume on node-1" test "$(ns_of "$VOL" | grep -c .)" -eq 1
else
	check "no namespace of the volume on node-2" test -z "$(ns_of "$VOL")"
fi
migrate node-2
[ $FAILS -eq 0 ] || { dump_two_logs 60; kill $CPU_SAMPLER; dump_moves "moves-$NODE"; tail /tmp/writer.log; kill $W; finish; }
migrate node-1 plugins-killed
peer_sync migrate-stop-writers || fail "meeting the peer"
kill -TERM $W
wait $W
rc=$?
tail -n 2 /tmp/writer.log
check "the writer ended without an error (exit $rc)" test $rc -eq 0
check "no error printed by the writer" sh -c '! grep -qi "error\|fail\|revoked" /tmp/writer.log'
say "$(persisted /tmp/writer.log) blocks persisted"
peer_sync migrate-verify || fail "meeting the peer"
verify_all "after the migration there and back"
peer_sync migrate-verified || fail "meeting the peer"
check "unpublished on $NODE" csi node-unpublish-volume --volume-id "$VOL" --target-path $TGT
if [ "$LAB_ROLE" = 2 ]; then
	check "unstaged on node-2" csi node-unstage-volume --volume-id "$VOL" --staging-target-path $STG
	peer_sync migrate-cleaned || fail "meeting node-1"
	check "no namespace of the volume on node-2" test -z "$(ns_of "$VOL")"
else
	peer_sync migrate-cleaned || fail "meeting node-2"
	check "unstaged on node-1" csi node-unstage-volume --volume-id "$VOL" --staging-target-path $STG
	check "volume deleted" csi delete-volume --volume-id "$VOL"
	check "no namespace of the volume left on node-1" test -z "$(ns_of "$VOL")"
fi
[ $FAILS -eq 0 ] || dump_two_logs 60
kill $CPU_SAMPLER
dump_moves "moves-$NODE"
finish
