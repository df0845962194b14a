# The DAX workload check must be able to fail: on the file backend (loop
# device + ext4, no DAX) the same MAP_SYNC + statx DAX check as in
# csi_lifecycle is run and must FAIL, and the plugin must say it is not DAX.
. /lab/lib.sh
check "daxlease-csi --backend=file starts" start_csi file
csi get-plugin-info
check "plugin reports no DAX (manifest dax=false)" grep -q '"dax": *"false"' /tmp/out.json
STG=$KUBELET/plugins/kubernetes.io/csi/dax.daxlease.io/file
TGT=$KUBELET/pods/pod-2/volumes/kubernetes.io~csi/file/mount
mkdir -p $STG
check "file: CreateVolume" csi create-volume --name lab-file --capacity-bytes 64Mi --fstype ext4
id=$(json_get volumeId)
check "file: NodeStageVolume" csi node-stage-volume --volume-id $id --staging-target-path $STG --fstype ext4
check "file: NodePublishVolume" csi node-publish-volume --volume-id $id --staging-target-path $STG --target-path $TGT --fstype ext4
grep " $TGT " /proc/mounts
check "file: the mount is not -o dax" sh -c "! mounted_dax $TGT"
daxlease-lab-daxcheck $TGT/workload.dat $((8 << 20))
rc=$?
check "file: the DAX workload check FAILS on a non-DAX volume (exit $rc, want 1)" test $rc -eq 1
check "file: NodeUnpublishVolume" csi node-unpublish-volume --volume-id $id --target-path $TGT
check "file: NodeUnstageVolume" csi node-unstage-volume --volume-id $id --staging-target-path $STG
check "file: DeleteVolume" csi delete-volume --volume-id $id
check "daxlease-csi stops cleanly" stop_csi
[ $FAILS -eq 0 ] || dump_csi_log file 40
finish
