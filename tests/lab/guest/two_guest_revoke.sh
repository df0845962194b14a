# Two guests, after two_guest_recall (the volume stays staged on both
# nodes): a holder on node-2 (daxlease-lab-two holder: libdaxlease over
# RDMA) persists a few bytes and stops answering (SIGSTOP); node-2 recalls
# the volume with a 3 s grace: the holder is revoked at the deadline and
# node-1's agent invalidates its window and confirms the fence. node-1 then
# digests its memory; the holder is continued: its RDMA write through its
# old connection is refused, its next library call is told REVOKED, it
# lives; node-1's memory is byte-for-byte what it was. The volume stays
# staged on both nodes for two_guest_inflight.
. /lab/lib.sh
check "$NODE: link, rxe, agent and plugin up" two_up
VOL=$(cat /run/two-volume 2>/dev/null)
check "the volume of two_guest_recall is known ($VOL)" test -n "$VOL"
[ $FAILS -eq 0 ] || finish
# both nodes are done with two_guest_recall's publishes
peer_sync revoke-start || { fail "meeting the peer"; finish; }
TGT=$KUBELET/pods/holder-$LAB_ROLE/mount
STG=$KUBELET/plugins/kubernetes.io/csi/dax.daxlease.io/two/globalmount
two_args holder
DEV=$(dax_chardev)
digest() { daxlease-lab-daxcheck --digest "$DEV" $((32 << 20)); }

if [ "$LAB_ROLE" = 2 ]; then
	mkdir -p "$(dirname $TGT)"
	check "holder published on node-2" csi node-publish-volume --volume-id "$VOL" \
		--staging-target-path $STG --target-path $TGT $ACC $CTX $POD
	daxlease-lab-two holder $TGT 65536 >/tmp/holder.log 2>&1 &
	H=$!
	check "the holder persisted through RDMA" wait_log /tmp/holder.log "holder: persisted" 300
	i=0
	while [ "$(cut -d' ' -f3 /proc/$H/stat 2>/dev/null)" != T ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
	check "the holder is stopped (SIGSTOP)" test "$(cut -d' ' -f3 /proc/$H/stat)" = T
	check "recall: the silent holder revoked at the deadline, fence confirmed, epoch + 1" \
		daxlease-lab-two recall $KUBECONFIG_LAB "$VOL" 3 0 1
	peer_sync revoked || fail "meeting node-1"
	peer_sync digested || fail "meeting node-1"
	kill -CONT $H
	wait $H
	rc=$?
	cat /tmp/holder.log
	check "the holder lived: late RDMA write refused, next call REVOKED (exit $rc)" test $rc -eq 0
	peer_sync holder-done || fail "meeting node-1"
	check "holder unpublished" csi node-unpublish-volume --volume-id "$VOL" --target-path $TGT
	peer_sync cleaned || fail "meeting node-1"
else
	say "owner memory: $DEV"
	check "the owner's device is known" test -c "$DEV"
	peer_sync revoked || fail "meeting node-2"
	d1=$(digest)
	say "owner memory digest after the revocation: $d1"
	peer_sync digested || fail "meeting node-2"
	peer_sync holder-done || fail "meeting node-2"
	d2=$(digest)
	say "owner memory digest after the holder's late write: $d2"
	check "the owner's memory is untouched by the fenced holder" test -n "$d1" -a "$d1" = "$d2"
	peer_sync cleaned || fail "meeting node-2"
fi
[ $FAILS -eq 0 ] || dump_two_logs 60
finish
