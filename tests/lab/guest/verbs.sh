# Verbs smoke test on the project's lib/rdma over Soft-RoCE (rxe0 on eth0):
# 1. a devdax volume (provisioned and published by daxlease-csi) mapped and pinned with ibv_reg_mr by one process, a
#    second process RDMA-WRITEs and RDMA-READs all of it over rdma_cm, both
#    sides compare byte for byte;
# 2. the same pinned registration of a file on a published fsdax volume is
#    refused with EOPNOTSUPP: the reason pinned sharing uses devdax;
# 3. lib/rdma's unit tests (rdma_test) with rxe0 present, so the ones that
#    need a device run (they skip on a host without RDMA): a CQ's completion
#    channel, a wait asleep in the kernel.
. /lab/lib.sh
BYTES=$((4 << 20))
check "rxe0 added on eth0" setup_rxe
check "ibv_devices lists rxe0" sh -c 'ibv_devices | grep -q rxe0'
timeout 300 rdma_test >/tmp/rdma-test.log 2>&1
rc=$?
grep -e '^\[  FAILED' -e '^\[  SKIPPED' -e '^\[  PASSED' -e 'Failure' -A 3 /tmp/rdma-test.log | head -40
check "lib/rdma unit tests pass on rxe0" test $rc -eq 0
check "no lib/rdma unit test skipped on rxe0" sh -c '! grep -q "^\[  SKIPPED" /tmp/rdma-test.log'

# A devdax volume and an fsdax volume, provisioned and published by daxlease.
check "daxlease-csi --backend=ndctl starts" start_csi ndctl --ndctl-erase-on-delete=false
POD=$KUBELET/pods/pod-v/volumes/kubernetes.io~csi
STG=$KUBELET/plugins/kubernetes.io/csi/dax.daxlease.io
mkdir -p $STG/vd $STG/vf
check "devdax volume created" csi create-volume --name lab-verbs-devdax --capacity-bytes 32Mi --block --param daxlease.io/mode=devdax
VD=$(json_get volumeId)
check "devdax volume staged" csi node-stage-volume --volume-id $VD --staging-target-path $STG/vd --block
check "devdax volume published" csi node-publish-volume --volume-id $VD --staging-target-path $STG/vd --target-path $POD/vd/dev --block
DAX=$POD/vd/dev
check "published devdax volume is a char device ($DAX)" test -c $DAX
check "fsdax volume created" csi create-volume --name lab-verbs-fsdax --capacity-bytes 32Mi --fstype ext4
VF=$(json_get volumeId)
check "fsdax volume staged" csi node-stage-volume --volume-id $VF --staging-target-path $STG/vf --fstype ext4
check "fsdax volume published" csi node-publish-volume --volume-id $VF --staging-target-path $STG/vf --target-path $POD/vf/mount --fstype ext4

daxlease-lab-rdma serve --path $DAX --ip $GUEST_IP --port 18515 --bytes $BYTES >/tmp/serve.log 2>&1 &
SPID=$!
i=0
while ! grep -q listening /tmp/serve.log && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
t0=$(up)
check "second process: RDMA WRITE + READ of 4 MiB into the devdax registration, byte-exact" \
	timeout 120 daxlease-lab-rdma client --ip $GUEST_IP --port 18515 --bytes $BYTES --seed 77
say "client took $(echo "$(up) - $t0" | bc 2>/dev/null || echo '?') s"
wait $SPID
src=$?
cat /tmp/serve.log
check "owner: devdax registered, peer's bytes landed exactly" test $src -eq 0

# The lease shape: registered once with local rights only, a type-2 memory
# window granted to the peer, revoked with one LOCAL_INV; the peer's late
# write is refused and the memory keeps exactly the granted writes.
daxlease-lab-rdma window-serve --path $DAX --ip $GUEST_IP --port 18516 --bytes $BYTES >/tmp/wserve.log 2>&1 &
SPID=$!
i=0
while ! grep -q listening /tmp/wserve.log && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
check "peer: WRITE+READ through a granted memory window, refused after revoke" \
	timeout 120 daxlease-lab-rdma window-client --ip $GUEST_IP --port 18516 --bytes $BYTES --seed 91
wait $SPID
src=$?
cat /tmp/wserve.log
check "owner: window revoked, memory holds exactly the granted writes" test $src -eq 0

check "fsdax volume is mounted -o dax" mounted_dax $POD/vf/mount
daxlease-lab-rdma regmr --path $POD/vf/mount/f --bytes $BYTES
rc=$?
check "pinned ibv_reg_mr of a file on fsdax is refused with EOPNOTSUPP" test $rc -eq 3
rdma link delete rxe0
for v in vd vf; do
	if [ $v = vd ]; then id=$VD; t=$POD/vd/dev; else id=$VF; t=$POD/vf/mount; fi
	csi node-unpublish-volume --volume-id $id --target-path $t
	csi node-unstage-volume --volume-id $id --staging-target-path $STG/$v
	check "$v: volume deleted" csi delete-volume --volume-id $id
done
stop_csi
finish
