# CSI snapshots, restores and clones on NdctlBackend (real namespaces), driven
# by daxlease-csi-client against the real daxlease-csi: an fsdax ext4 volume
# snapshotted while published (frozen), changed after the cut, the plugin
# killed and restarted (the snapshot is still listed ready), restored into a
# larger volume (ext4 grown, the data of the cut), cloned (the data of now);
# a devdax volume snapshotted and restored (the bytes of the cut, read
# through mappings); kill -9 in the middle of a snapshot copy and of a
# restore copy (paced) leaves neither snapshot nor volume; everything
# deleted, no namespace left.
. /lab/lib.sh
CHECK=daxlease-lab-daxcheck
STG=$KUBELET/plugins/kubernetes.io/csi/dax.daxlease.io
POD=$KUBELET/pods/pod-1/volumes/kubernetes.io~csi
MARKERS=$CSI_STATE/ndctl/ndctl-copies

ns_count() { ndctl list -N 2>/dev/null | grep -c '"dev"'; }
snap_ns() { ndctl list -N 2>/dev/null | grep -o '"name":"s:[^"]*"' | sed 's/"name":"s://; s/"$//'; }
MOUNT_CAP='"volumeCapabilities":[{"mount":{"fsType":"ext4"},"accessMode":{"mode":"SINGLE_NODE_WRITER"}}]'
BLOCK_CAP='"volumeCapabilities":[{"block":{},"accessMode":{"mode":"SINGLE_NODE_WRITER"}}]'


check "daxlease-csi --backend=ndctl starts" start_csi ndctl
csi call ControllerGetCapabilities --json '{}' && cat /tmp/out.json
check "advertises CREATE_DELETE_SNAPSHOT" grep -q CREATE_DELETE_SNAPSHOT /tmp/out.json
check "advertises LIST_SNAPSHOTS" grep -q LIST_SNAPSHOTS /tmp/out.json
check "advertises CLONE_VOLUME" grep -q CLONE_VOLUME /tmp/out.json
NS0=$(ns_count)

say "---- fsdax ext4: snapshot while published"
check "src: CreateVolume" csi create-volume --name snap-src --capacity-bytes 64Mi --fstype ext4
SRC=$(first_get volumeId)
stage_publish src "$SRC" mount
SRC_TGT=$TGT
dd if=/dev/urandom of=$SRC_TGT/data bs=1M count=4 2>/dev/null && sync
SHA_CUT=$(sha256sum $SRC_TGT/data | cut -d' ' -f1)
t0=$(up)
check "CreateSnapshot of the published volume" csi call CreateSnapshot --json "{\"name\":\"lab-snap-1\",\"sourceVolumeId\":\"$SRC\"}"
cat /tmp/out.json /tmp/err
say "CreateSnapshot took $t0 -> $(up) s"
check "snapshot ready_to_use" grep -q '"readyToUse": *true' /tmp/out.json
SNAP=$(first_get snapshotId)
check "a raw namespace s:$SNAP holds it" sh -c "snap_ns() { ndctl list -N | grep -o '\"name\":\"s:[^\"]*\"'; }; snap_ns | grep -q 's:$SNAP\"'"
check "the source is writable again (thawed)" dd if=/dev/urandom of=$SRC_TGT/data bs=1M count=4 conv=notrunc 2>/dev/null
sync
SHA_NOW=$(sha256sum $SRC_TGT/data | cut -d' ' -f1)
check "the source changed after the cut" test "$SHA_NOW" != "$SHA_CUT"

say "---- plugin killed (SIGKILL) and restarted"
crash_csi
check "daxlease-csi restarts" start_csi ndctl
csi call ListSnapshots --json '{}' && cat /tmp/out.json
check "the snapshot is listed after the restart" grep -q "\"$SNAP\"" /tmp/out.json
check "and ready_to_use" grep -q '"readyToUse": *true' /tmp/out.json

say "---- restore into a larger volume (128 MiB)"
check "restore: CreateVolume from the snapshot" csi call CreateVolume --json "{\"name\":\"snap-restore\",\"capacityRange\":{\"requiredBytes\":\"134217728\"},$MOUNT_CAP,\"volumeContentSource\":{\"snapshot\":{\"snapshotId\":\"$SNAP\"}}}"
cat /tmp/out.json /tmp/err
RST=$(first_get volumeId)
cap=$(json_get capacityBytes)
check "restore: capacity $cap >= 128 MiB" test "${cap:-0}" -ge 134217728
stage_publish restore "$RST" mount
RST_TGT=$TGT
check "restore: the data of the cut" test "$(sha256sum $RST_TGT/data | cut -d' ' -f1)" = "$SHA_CUT"
kb=$(df -k $RST_TGT | awk 'NR==2 {print $2}')
check "restore: ext4 grew to the volume ($kb KiB > 100 MiB)" test "${kb:-0}" -gt 102400
check "restore: mounted -o dax" mounted_dax $RST_TGT

say "---- clone of the published source"
check "clone: CreateVolume from the volume" csi call CreateVolume --json "{\"name\":\"snap-clone\",$MOUNT_CAP,\"volumeContentSource\":{\"volume\":{\"volumeId\":\"$SRC\"}}}"
cat /tmp/out.json /tmp/err
CLN=$(first_get volumeId)
stage_publish clone "$CLN" mount
CLN_TGT=$TGT
check "clone: the data of now" test "$(sha256sum $CLN_TGT/data | cut -d' ' -f1)" = "$SHA_NOW"

say "---- devdax: snapshot and restore"
check "dd: CreateVolume" csi create-volume --name snap-dd --capacity-bytes 64Mi --block --param daxlease.io/mode=devdax
DD=$(first_get volumeId)
stage_publish dd "$DD" block
DD_TGT=$TGT
D_CUT=$($CHECK --fill $DD_TGT 8388608 7)
check "dd: pattern written ($D_CUT)" test -n "$D_CUT"
csi call CreateSnapshot --json "{\"name\":\"lab-snap-dd\",\"sourceVolumeId\":\"$DD\"}"
check "dd: CreateSnapshot while published is FAILED_PRECONDITION" grep -q -i "FAILED_PRECONDITION\|unpublish" /tmp/err
check "dd: NodeUnpublishVolume" csi node-unpublish-volume --volume-id $DD --target-path $DD_TGT
check "dd: CreateSnapshot (staged, not published)" csi call CreateSnapshot --json "{\"name\":\"lab-snap-dd\",\"sourceVolumeId\":\"$DD\"}"
cat /tmp/out.json /tmp/err
DSNAP=$(first_get snapshotId)
check "dd: NodePublishVolume again" csi node-publish-volume --volume-id $DD --staging-target-path $STG/dd --target-path $DD_TGT --block
D_NOW=$($CHECK --fill $DD_TGT 8388608 9)
check "dd: changed after the cut" test "$D_NOW" != "$D_CUT"
check "dd restore: CreateVolume from the snapshot" csi call CreateVolume --json "{\"name\":\"snap-dd-restore\",\"parameters\":{\"daxlease.io/mode\":\"devdax\"},$BLOCK_CAP,\"volumeContentSource\":{\"snapshot\":{\"snapshotId\":\"$DSNAP\"}}}"
cat /tmp/out.json /tmp/err
DDR=$(first_get volumeId)
stage_publish ddr "$DDR" block
DDR_TGT=$TGT
check "dd restore: the bytes of the cut" test "$($CHECK --digest $DDR_TGT 8388608)" = "$D_CUT"

say "---- kill -9 in the middle of a snapshot copy, and of a restore copy"
# kill_mid_copy WHAT STARTED CSI-CALL-ARGS...: runs `csi call ARGS` on a
# plugin paced at 8 MiB/s, waits (10 s at most) for the copy to start (the
# shell condition STARTED holds: check WHAT), kills the plugin with SIGKILL
# a second into the copy and starts it again unpaced.
kill_mid_copy() {
  copy_what=$1 copy_started=$2 # not `what`: check() sets that
  shift 2
  crash_csi
  check "daxlease-csi restarts paced (8 MiB/s)" start_csi ndctl --copy-bytes-per-second=8388608
  csi call "$@" &
  i=0
  while ! eval "$copy_started" && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  check "$copy_what" eval "$copy_started"
  sleep 1
  crash_csi
  wait
  check "daxlease-csi restarts" start_csi ndctl
}
NS1=$(ns_count)
kill_mid_copy "the snapshot's namespace appeared" '[ "$(ns_count)" -gt "$NS1" ]' \
  CreateSnapshot --json "{\"name\":\"lab-snap-killed\",\"sourceVolumeId\":\"$RST\"}"
csi call ListSnapshots --json '{}' && cp /tmp/out.json /tmp/list.json && cat /tmp/list.json
check "the killed snapshot is not listed" sh -c "! grep -q lab-snap-killed /tmp/list.json && test \$(grep -c snapshotId /tmp/list.json) -eq 2"
check "its namespace is gone" test "$(ns_count)" -eq "$NS1"
grep -a -E "partial|snapshot_removed|recover" /tmp/csi.log.ndctl | head -5
kill_mid_copy "the restore's copy marker appeared" '[ -n "$(ls $MARKERS 2>/dev/null)" ]' \
  CreateVolume --json "{\"name\":\"snap-killed-restore\",$MOUNT_CAP,\"volumeContentSource\":{\"snapshot\":{\"snapshotId\":\"$SNAP\"}}}"
check "the half-restored volume's namespace is gone" test "$(ns_count)" -eq "$NS1"
check "and its marker" test -z "$(ls $MARKERS 2>/dev/null)"
csi list-volumes && cat /tmp/out.json
check "the half-restored volume is not listed" sh -c "! grep -q snap-killed-restore /tmp/out.json"
check "the CO's retry restores it whole" csi call CreateVolume --json "{\"name\":\"snap-killed-restore\",$MOUNT_CAP,\"volumeContentSource\":{\"snapshot\":{\"snapshotId\":\"$SNAP\"}}}"
KR=$(first_get volumeId)
stage_publish kr "$KR" mount
check "retried restore: the data of the cut" test "$(sha256sum $TGT/data | cut -d' ' -f1)" = "$SHA_CUT"
unpublish_unstage kr "$KR" "$TGT"

say "---- cleanup"
unpublish_unstage src "$SRC" "$SRC_TGT"
unpublish_unstage restore "$RST" "$RST_TGT"
unpublish_unstage clone "$CLN" "$CLN_TGT"
unpublish_unstage dd "$DD" "$DD_TGT"
unpublish_unstage ddr "$DDR" "$DDR_TGT"
for v in "$SRC" "$RST" "$CLN" "$DD" "$DDR" "$KR"; do
	check "DeleteVolume $v" csi delete-volume --volume-id $v
done
check "a snapshot outlives its source: restore after the delete" csi call CreateVolume --json "{\"name\":\"snap-late\",$MOUNT_CAP,\"volumeContentSource\":{\"snapshot\":{\"snapshotId\":\"$SNAP\"}}}"
LATE=$(first_get volumeId)
check "DeleteVolume $LATE" csi delete-volume --volume-id $LATE
for s in "$SNAP" "$DSNAP"; do
	check "DeleteSnapshot $s" csi call DeleteSnapshot --json "{\"snapshotId\":\"$s\"}"
	check "DeleteSnapshot $s again is OK" csi call DeleteSnapshot --json "{\"snapshotId\":\"$s\"}"
done
check "no namespace left" test "$(ns_count)" -eq "$NS0"
check "nothing of daxlease left mounted" sh -c "! grep -q -e $KUBELET -e /dev/pmem /proc/mounts"
check "daxlease-csi stops cleanly on SIGTERM" stop_csi
grep -a -h -E "ndctl.snapshot|ndctl.created_from|csi.snapshot" /tmp/csi.log.ndctl.prev /tmp/csi.log.ndctl 2>/dev/null | head -20
[ $FAILS -eq 0 ] || dump_csi_log ndctl 80
finish
