# The full CSI lifecycle on NdctlBackend, driven by daxlease-csi-client against
# the real daxlease-csi: fsdax ext4, fsdax xfs and devdax volumes are created,
# staged, published, used by a workload (MAP_SYNC mapping + statx DAX), the
# plugin is killed (SIGKILL) and restarted mid-lifecycle, and everything is
# still there; then unpublished, unstaged and deleted, leaving no namespace
# and no mount behind.
. /lab/lib.sh
check "daxlease-csi --backend=ndctl starts" start_csi ndctl
csi get-plugin-info && cat /tmp/out.json
check "plugin reports real DAX (manifest dax=true)" grep -q '"dax": *"true"' /tmp/out.json
csi node-get-info && cat /tmp/out.json
grep -a "csi.started" /tmp/csi.log.ndctl

# name  size  create-flags  access-flags
VOLS="ext4 xfs devdax"
size_of() { case $1 in ext4) echo 64Mi ;; xfs) echo 320Mi ;; devdax) echo 64Mi ;; esac; }
bytes_of() { case $1 in ext4) echo 67108864 ;; xfs) echo 335544320 ;; devdax) echo 67108864 ;; esac; }
create_flags() { case $1 in ext4) echo "--fstype ext4" ;; xfs) echo "--fstype xfs" ;; devdax) echo "--block --param daxlease.io/mode=devdax" ;; esac; }
access_flags() { case $1 in ext4) echo "--fstype ext4" ;; xfs) echo "--fstype xfs" ;; devdax) echo "--block" ;; esac; }
STG=$KUBELET/plugins/kubernetes.io/csi/dax.daxlease.io
POD=$KUBELET/pods/pod-1/volumes/kubernetes.io~csi

for v in $VOLS; do
	say "---- $v: create / stage / publish"
	# shellcheck disable=SC2046
	if csi create-volume --name lab-$v --capacity-bytes $(size_of $v) $(create_flags $v); then
		pass "$v: CreateVolume"
	else
		fail "$v: CreateVolume ($(cat /tmp/err))"; dump_csi_log ndctl; continue
	fi
	cat /tmp/out.json
	id=$(json_get volumeId)
	eval "ID_$v=$id"
	cap=$(json_get capacityBytes)
	check "$v: capacity $cap >= requested $(bytes_of $v)" test "$cap" -ge "$(bytes_of $v)"
	check "$v: a namespace named $id exists" sh -c "ndctl list -N | grep -q '\"name\":\"$id\"'"
	mkdir -p $STG/$v
	# shellcheck disable=SC2046
	check "$v: NodeStageVolume" csi node-stage-volume --volume-id $id --staging-target-path $STG/$v $(access_flags $v)
	[ -s /tmp/err ] && cat /tmp/err
	if [ $v = devdax ]; then tgt=$POD/$v/dev; else tgt=$POD/$v/mount; fi
	eval "TGT_$v=$tgt"
	# shellcheck disable=SC2046
	check "$v: NodePublishVolume" csi node-publish-volume --volume-id $id --staging-target-path $STG/$v --target-path $tgt $(access_flags $v)
	[ -s /tmp/err ] && cat /tmp/err
	if [ $v = devdax ]; then
		check "$v: published target is a device-dax char device" test -c $tgt
		check "$v: workload maps it MAP_SYNC" daxlease-lab-daxcheck $tgt $((4 << 20))
	else
		grep " $STG/$v \| $tgt " /proc/mounts
		check "$v: staging mount is -o dax" mounted_dax $STG/$v
		check "$v: published mount is -o dax" mounted_dax $tgt
		check "$v: workload maps a file MAP_SHARED_VALIDATE|MAP_SYNC, statx DAX set" daxlease-lab-daxcheck $tgt/workload.dat $((8 << 20))
		dd if=/dev/urandom of=$tgt/data bs=1M count=4 2>/dev/null && sync
		sha256sum $tgt/data | cut -d' ' -f1 >/tmp/sha.$v
	fi
done

say "---- plugin killed (SIGKILL) and restarted mid-lifecycle"
crash_csi
check "daxlease-csi restarts after SIGKILL" start_csi ndctl
csi list-volumes && cp /tmp/out.json /tmp/list.json && cat /tmp/list.json
for v in $VOLS; do
	eval "id=\$ID_$v; tgt=\$TGT_$v"
	check "$v: still listed after the restart" grep -q "\"$id\"" /tmp/list.json
	# a CO retries calls after a plugin restart: they must be idempotent
	# shellcheck disable=SC2046
	check "$v: NodeStageVolume again is OK" csi node-stage-volume --volume-id $id --staging-target-path $STG/$v $(access_flags $v)
	# shellcheck disable=SC2046
	check "$v: NodePublishVolume again is OK" csi node-publish-volume --volume-id $id --staging-target-path $STG/$v --target-path $tgt $(access_flags $v)
	if [ $v != devdax ]; then
		check "$v: data intact after the restart" test "$(sha256sum $tgt/data | cut -d' ' -f1)" = "$(cat /tmp/sha.$v)"
		check "$v: still -o dax" mounted_dax $tgt
		check "$v: NodeGetVolumeStats" csi node-get-volume-stats --volume-id $id --volume-path $tgt
	fi
done

for v in $VOLS; do
	say "---- $v: unpublish / unstage / delete"
	eval "id=\$ID_$v; tgt=\$TGT_$v"
	check "$v: NodeUnpublishVolume" csi node-unpublish-volume --volume-id $id --target-path $tgt
	check "$v: NodeUnstageVolume" csi node-unstage-volume --volume-id $id --staging-target-path $STG/$v
	check "$v: DeleteVolume" csi delete-volume --volume-id $id
	[ -s /tmp/err ] && cat /tmp/err
	check "$v: its namespace is gone" sh -c "! ndctl list -N | grep -q '\"name\":\"$id\"'"
	check "$v: DeleteVolume again is OK" csi delete-volume --volume-id $id
done
check "nothing of daxlease left mounted" sh -c "! grep -q -e $KUBELET -e /dev/pmem /proc/mounts"
check "no namespace left" sh -c "! ndctl list -N | grep -q '\"dev\"'"
check "daxlease-csi stops cleanly on SIGTERM" stop_csi
say "plugin log: start-up and DAX mounts"
grep -h -E "csi.started|csi.volume.dax_mounted" /tmp/csi.log.ndctl.prev /tmp/csi.log.ndctl 2>/dev/null
[ $FAILS -eq 0 ] || dump_csi_log ndctl 60
finish
