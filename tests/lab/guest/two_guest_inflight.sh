# Two guests, after two_guest_revoke (the volume stays staged on both
# nodes): a holder on node-2 (daxlease-lab-two inflight: libdaxlease over
# RDMA) persists a 4 MiB range; node-2 recalls the volume with a 2 s grace;
# the holder's pre-flush hook keeps rewriting the range (four 1 MiB RDMA
# WRITEs in flight at a time) instead of flushing, so it is revoked at the
# deadline with a large write in flight: node-1's agent invalidates its
# window under it, the write is refused (its QP and the owner's go to the
# error state) and the library reports REVOKED. node-1 digests the range;
# the holder attaches again: granted at epoch + 1, the library connects a
# fresh QP, the range holds a prefix of the refused write (what was placed
# before the fence) and the previous write whole, and a new 1 MiB write,
# persist and read back are byte-exact. node-1's digest of the range is
# unchanged by all of it after the fence. Then the volume is unstaged and
# deleted.
. /lab/lib.sh
check "$NODE: link, rxe, agent and plugin up" two_up
VOL=$(cat /run/two-volume 2>/dev/null)
check "the volume of two_guest_recall is known ($VOL)" test -n "$VOL"
[ $FAILS -eq 0 ] || finish
peer_sync inflight-start || { fail "meeting the peer"; finish; }
TGT=$KUBELET/pods/inflight-$LAB_ROLE/mount
STG=$KUBELET/plugins/kubernetes.io/csi/dax.daxlease.io/two/globalmount
two_args inflight
DEV=$(dax_chardev)
OFF=$((16 << 20))
# the holder's range on node-1: 4 MiB at OFF
digest() { daxlease-lab-daxcheck --digest "$DEV" $((OFF + (4 << 20))); }

if [ "$LAB_ROLE" = 2 ]; then
	mkdir -p "$(dirname $TGT)"
	rm -f /tmp/inflight.go
	check "holder published on node-2" csi node-publish-volume --volume-id "$VOL" \
		--staging-target-path $STG --target-path $TGT $ACC $CTX $POD
	daxlease-lab-two inflight $TGT $OFF /tmp/inflight.go >/tmp/inflight.log 2>&1 &
	H=$!
	check "the holder persisted through RDMA" wait_log /tmp/inflight.log "inflight: persisted" 300
	check "recall: the holder revoked at the deadline mid-write, fence confirmed, epoch + 1" \
		daxlease-lab-two recall $KUBECONFIG_LAB "$VOL" 2 0 1
	check "the holder was rewriting when the deadline came" grep -q "inflight: recalled; rewriting" /tmp/inflight.log
	peer_sync inflight-revoked || fail "meeting node-1"
	peer_sync inflight-digested || fail "meeting node-1"
	touch /tmp/inflight.go
	wait $H
	rc=$?
	cat /tmp/inflight.log
	check "the holder: write refused mid-flight, REVOKED, reconnected at the new epoch, bytes exact (exit $rc)" test $rc -eq 0
	peer_sync inflight-done || fail "meeting node-1"
	check "holder unpublished" csi node-unpublish-volume --volume-id "$VOL" --target-path $TGT
	check "unstaged on node-2" csi node-unstage-volume --volume-id "$VOL" --staging-target-path $STG
	peer_sync inflight-cleaned || fail "meeting node-1"
else
	check "the owner's device is known ($DEV)" test -c "$DEV"
	peer_sync inflight-revoked || fail "meeting node-2"
	d1=$(digest)
	say "owner memory digest after the fence: $d1"
	peer_sync inflight-digested || fail "meeting node-2"
	peer_sync inflight-done || fail "meeting node-2"
	d2=$(digest)
	say "owner memory digest after the holder reconnected: $d2"
	check "the owner's memory is untouched by the refused write after the fence" test -n "$d1" -a "$d1" = "$d2"
	peer_sync inflight-cleaned || fail "meeting node-2"
	check "unstaged on node-1" csi node-unstage-volume --volume-id "$VOL" --staging-target-path $STG
	check "volume deleted" csi delete-volume --volume-id "$VOL"
fi
[ $FAILS -eq 0 ] || dump_two_logs 60
finish
