# Two guests (run.sh boots the pair): node-1 owns a shared devdax volume
# (daxlease-csi --backend=ndctl creates, stages and publishes it; its
# daxlease-agent serves it over RDMA, --fabric=verbs); a writer on node-1
# through its local mapping and a writer on node-2 through RDMA
# (libdaxlease: daxlease-io pattern, checksummed blocks, each persisted) on
# disjoint ranges run continuously; node-2 recalls the volume midway through
# the real API server (the operator runs on the host): both flush and
# release, nobody is revoked, the volume is Ready again at epoch + 1, both
# writers go on without an error, and every block of both ranges is checked
# on both nodes (node-1 from its memory, node-2 through RDMA).
. /lab/lib.sh
BLOCK=4096
N=256 # blocks per writer: 1 MiB each, rewritten many times over
check "$NODE: link, rxe, agent and plugin up" two_up
[ $FAILS -eq 0 ] || { dump_two_logs; finish; }
STG=$KUBELET/plugins/kubernetes.io/csi/dax.daxlease.io/two/globalmount
TGT=$KUBELET/pods/writer-$LAB_ROLE/mount
mkdir -p $STG "$(dirname $TGT)"
two_args writer-$LAB_ROLE

# rxe on 6.1 has no on-demand paging: the node says it shares devdax only,
# and a shared fsdax volume is refused at CreateVolume naming the reason.
csi node-get-info
check "$NODE reports daxlease.io/fsdax-sharing=false (no ODP)" \
	grep -q '"daxlease.io/fsdax-sharing": *"false"' /tmp/out.json
if [ "$LAB_ROLE" = 1 ]; then
	csi create-volume --name lab-two-fsdax --capacity-bytes 64Mi --fstype ext4 \
		--param daxlease.io/share=true $ACC
	cat /tmp/err
	check "a shared fsdax volume is refused, naming ODP" grep -q "no on-demand paging (ODP)" /tmp/err
	check "shared devdax volume created" csi create-volume --name $TWO_VOL_NAME --capacity-bytes 64Mi \
		--param daxlease.io/mode=devdax --param daxlease.io/share=true \
		--param daxlease.io/recallGraceSeconds=20 $ACC
	VOL=$(json_get volumeId)
	check "staged on its owner (served by the agent)" csi node-stage-volume --volume-id "$VOL" --staging-target-path $STG $ACC $CTX
	check "published on its owner (a directory, local mapping)" csi node-publish-volume --volume-id "$VOL" \
		--staging-target-path $STG --target-path $TGT $ACC $CTX $POD
	DAXLEASE_IO_TIMEOUT_MS=120000 daxlease-io pattern $TGT $BLOCK 1200 0 $N >/tmp/writer.log 2>&1 &
	W=$!
	check "node-1's local writer persists" wait_log /tmp/writer.log "persisted seq=50 " 300
	peer_sync volume "$VOL" >/dev/null || fail "meeting node-2"
else
	VOL=$(peer_sync volume) || fail "meeting node-1"
	say "volume $VOL"
	check "staged on node-2 (remote)" csi node-stage-volume --volume-id "$VOL" --staging-target-path $STG $ACC $CTX
	check "published on node-2 (descriptor + agent socket)" csi node-publish-volume --volume-id "$VOL" \
		--staging-target-path $STG --target-path $TGT $ACC $CTX $POD
	cat $TGT/daxlease.json
	DAXLEASE_IO_TIMEOUT_MS=120000 daxlease-io pattern $TGT $BLOCK 1200 $N $N >/tmp/writer.log 2>&1 &
	W=$!
	check "node-2's RDMA writer persists" wait_log /tmp/writer.log "persisted seq=50 " 600
fi
[ $FAILS -eq 0 ] || { dump_two_logs; tail /tmp/writer.log; kill $W; finish; }
peer_sync writers-on || fail "meeting the peer"
if [ "$LAB_ROLE" = 2 ]; then
	say "both writers on (node-1 $(persisted /tmp/writer.log) here); recall"
	t0=$(up)
	check "recall: both released, none revoked, epoch + 1" \
		daxlease-lab-two recall $KUBECONFIG_LAB "$VOL" 20 2 0
	say "recall took $(echo "$(up) - $t0" | bc) s (guest clock)"
fi
peer_sync recalled || fail "meeting the peer"
at=$(persisted /tmp/writer.log)
check "the writer goes on after the recall" wait_log /tmp/writer.log "persisted seq=$((at + 30)) " 600
peer_sync stop-writers || fail "meeting the peer"
kill -TERM $W
wait $W
rc=$?
tail -n 2 /tmp/writer.log
check "the writer ended without an error (exit $rc)" test $rc -eq 0
check "no error printed by the writer" sh -c '! grep -qi "error\|fail" /tmp/writer.log'
say "$(persisted /tmp/writer.log) blocks persisted"
peer_sync verify || fail "meeting the peer"
daxlease-io verify $TGT $BLOCK 0 $((2 * N)) >/tmp/verify.log 2>&1
cat /tmp/verify.log
check "every block of both ranges valid ($NODE)" grep -q "blocks=$((2 * N)) valid=$((2 * N)) empty=0 corrupt=0" /tmp/verify.log
peer_sync verified || fail "meeting the peer"
check "unpublished on $NODE" csi node-unpublish-volume --volume-id "$VOL" --target-path $TGT
echo "$VOL" >/run/two-volume
[ $FAILS -eq 0 ] || dump_two_logs 60
finish
