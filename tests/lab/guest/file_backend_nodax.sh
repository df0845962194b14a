# The file backend (loop device + ext4, no DAX) in the guest:
# - the DAX workload check must be able to fail: the same MAP_SYNC + statx DAX
#   check as in csi_lifecycle is run and must FAIL, and the plugin must say
#   it is not DAX;
# - ext4 ONLINE growth, on the same plugin and volume while it is published:
#   ControllerExpandVolume + NodeExpandVolume, the mounted filesystem really
#   grows and a file written before is intact. The host integration test
#   (tests/integration/csi_lifecycle_test.cc) cannot check this where root
#   lacks CAP_SYS_RESOURCE (EXT4_IOC_RESIZE_FS is refused); the guest's root
#   has every capability, so this is where ext4 online growth is covered.
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

say "---- file: ext4 online growth 64 MiB -> 192 MiB while published"
# fs_bytes DIR: the size of the filesystem mounted at DIR (statvfs f_blocks * f_frsize)
fs_bytes() { /usr/bin/stat -f -c '%b %S' "$1" | awk '{ printf "%.0f\n", $1 * $2 }'; }
GROWN=$((192 << 20))
ADDED=$((GROWN - (64 << 20)))
dd if=/dev/urandom of=$TGT/data bs=1M count=4 2>/dev/null && sync
sha_before=$(sha256sum $TGT/data | cut -d' ' -f1)
before=$(fs_bytes $TGT)
say "ext4 size before: $before bytes"
check "file: ControllerExpandVolume to $GROWN" csi controller-expand-volume --volume-id $id --capacity-bytes $GROWN
[ -s /tmp/err ] && cat /tmp/err
cap=$(json_get capacityBytes)
check "file: ControllerExpandVolume capacity $cap >= $GROWN" test "${cap:-0}" -ge $GROWN
check "file: NodeExpandVolume (published path)" csi node-expand-volume --volume-id $id --volume-path $TGT --staging-target-path $STG --capacity-bytes $GROWN
[ -s /tmp/err ] && cat /tmp/err
after=$(fs_bytes $TGT)
say "ext4 size after: $after bytes (added to the volume: $ADDED)"
# most of the added bytes (ext4 spends some of them on group metadata)
check "file: ext4 grew online by >= 80% of the added bytes ($before -> $after)" \
	test $((after - before)) -ge $((ADDED * 8 / 10))
check "file: the staging mount grew too" test "$(fs_bytes $STG)" -eq "$after"
check "file: grown online, not by the offline fallback" sh -c "! grep -q csi.expand.offline_fallback /tmp/csi.log.file"
check "file: data intact after the growth" test "$(sha256sum $TGT/data | cut -d' ' -f1)" = "$sha_before"
check "file: NodeExpandVolume again is OK (idempotent)" csi node-expand-volume --volume-id $id --volume-path $TGT --staging-target-path $STG --capacity-bytes $GROWN
check "file: NodeUnpublishVolume" csi node-unpublish-volume --volume-id $id --target-path $TGT
check "file: NodeUnstageVolume" csi node-unstage-volume --volume-id $id --staging-target-path $STG
check "file: DeleteVolume" csi delete-volume --volume-id $id
check "file: no mount left under $KUBELET" sh -c "! grep -q $KUBELET /proc/mounts"
check "file: no loop device left" sh -c "[ -z \"\$(losetup -a)\" ]"
check "daxlease-csi stops cleanly" stop_csi
[ $FAILS -eq 0 ] || dump_csi_log file 40
finish
