# Growth of ndctl volumes (real namespaces), driven by daxlease-csi-client
# against the real daxlease-csi: a map=dev namespace cannot grow in place, so
# ControllerExpandVolume makes a new namespace of the new size, copies the
# volume into it, compares both, switches (a marker rename) and frees the
# old one; the filesystem grows at the next stage (NodeExpandVolume).
# The plugin advertises OFFLINE expansion; a staged volume answers
# FAILED_PRECONDITION and stays as it was. Then a kill -9 of the plugin at
# each step of a grow (DAXLEASE_CRASH_POINT): after the restart exactly one
# namespace of the volume is left, the old or the new, it stages and holds
# the data, and the CO's retry grows it. fsdax ext4 and devdax; nothing left.
. /lab/lib.sh
CHECK=daxlease-lab-daxcheck
STG=$KUBELET/plugins/kubernetes.io/csi/dax.daxlease.io
POD=$KUBELET/pods/pod-1/volumes/kubernetes.io~csi
GROWS=$CSI_STATE/ndctl/ndctl-grows
MiB=1048576

ns_count() { ndctl list -N 2>/dev/null | grep -c '"dev"'; }
# ns_of ID: the namespaces named ID ("namespaceX.Y size" per line)
ns_of() {
	ndctl list -N 2>/dev/null | tr -d ' \n' | sed 's/},{/}\n{/g' | grep "\"name\":\"$1\"" |
		sed -n 's/.*"dev":"\([^"]*\)".*"size":\([0-9]*\).*/\1 \2/p'
}

# fs_kb DIR: the filesystem's size in KiB
fs_kb() { df -k "$1" | awk 'NR==2 {print $2}'; }

check "daxlease-csi --backend=ndctl starts" start_csi ndctl
csi get-plugin-capabilities && cat /tmp/out.json
check "advertises OFFLINE volume expansion" grep -q OFFLINE /tmp/out.json
csi call ControllerGetCapabilities --json '{}'
check "advertises EXPAND_VOLUME" grep -q EXPAND_VOLUME /tmp/out.json
NS0=$(ns_count)

say "---- fsdax ext4: 64 MiB, data written, staged: FAILED_PRECONDITION"
check "CreateVolume 64 MiB ext4" csi create-volume --name grow-fs --capacity-bytes 64Mi --fstype ext4
VOL=$(first_get volumeId)
stage_publish fs "$VOL" mount
dd if=/dev/urandom of=$TGT/data bs=1M count=24 2>/dev/null && sync
SHA=$(sha256sum $TGT/data | cut -d' ' -f1)
KB0=$(fs_kb $TGT)
csi controller-expand-volume --volume-id "$VOL" --capacity-bytes 128Mi
rc=$?
cat /tmp/err
check "ControllerExpandVolume of the staged volume: FAILED_PRECONDITION (9)" test $rc -eq 9
check "the answer says unstage" grep -q unstage /tmp/err
check "still one namespace of $VOL" test "$(ns_of "$VOL" | wc -l)" -eq 1
unpublish_unstage fs "$VOL" "$TGT"

say "---- offline grow 64 -> 128 MiB"
OLD=$(ns_of "$VOL")
t0=$(up)
check "ControllerExpandVolume 128 MiB" csi controller-expand-volume --volume-id "$VOL" --capacity-bytes 128Mi
cat /tmp/out.json /tmp/err
t1=$(up)
echo "FIGURE ndctl_grow_64_to_128_MiB_s=$(awk -v a=$t0 -v b=$t1 'BEGIN {printf "%.2f", b - a}')"
cap=$(json_get capacityBytes)
check "capacity $cap >= 128 MiB" test "${cap:-0}" -ge $((128 * MiB))
check "node expansion required (the filesystem grows at stage)" grep -q '"nodeExpansionRequired": *true' /tmp/out.json
NEW=$(ns_of "$VOL")
echo "namespaces of $VOL: before [$OLD] after [$NEW]"
check "exactly one namespace of $VOL" test "$(echo "$NEW" | wc -l)" -eq 1
check "a new namespace, larger" test "${NEW%% *}" != "${OLD%% *}" -a "${NEW#* }" -gt "${OLD#* }"
check "no grow marker left" test -z "$(ls $GROWS 2>/dev/null)"
check "ControllerExpandVolume again is OK (idempotent)" csi controller-expand-volume --volume-id "$VOL" --capacity-bytes 128Mi
check "and made nothing new" test "$(ns_of "$VOL")" = "$NEW"
stage_publish fs "$VOL" mount
check "NodeExpandVolume grows ext4" csi node-expand-volume --volume-id "$VOL" --volume-path $TGT --staging-target-path $STG/fs --capacity-bytes 128Mi
cat /tmp/err
KB1=$(fs_kb $TGT)
check "ext4 grew ($KB0 -> $KB1 KiB)" test "${KB1:-0}" -gt $((KB0 + 50000))
check "the data is intact" test "$(sha256sum $TGT/data | cut -d' ' -f1)" = "$SHA"
check "mounted -o dax" mounted_dax $TGT
unpublish_unstage fs "$VOL" "$TGT"

say "---- kill -9 of the plugin at each step of a grow"
size=128
for point in ndctl.grow.marked ndctl.grow.created ndctl.grow.copied ndctl.grow.switched ndctl.grow.old_freed; do
	size=$((size + 32))
	BEFORE=$(ns_of "$VOL")
	stop_csi
	export DAXLEASE_CRASH_POINT=$point
	check "$point: daxlease-csi starts with the crash point" start_csi ndctl
	unset DAXLEASE_CRASH_POINT
	csi controller-expand-volume --volume-id "$VOL" --capacity-bytes ${size}Mi
	rc=$?
	i=0
	while kill -0 $CSI_PID 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
	kill -KILL $CSI_PID 2>/dev/null
	wait $CSI_PID 2>/dev/null
	CSI_PID=
	check "$point: the kill landed (rc $rc)" grep -q "base.crash_point.*$point" /tmp/csi.log.ndctl
	echo "after the kill: [$(ns_of "$VOL" | tr '\n' ' ')] markers [$(ls $GROWS 2>/dev/null)]"
	check "$point: daxlease-csi restarts" start_csi ndctl
	AFTER=$(ns_of "$VOL")
	echo "after the restart: [$AFTER]"
	check "$point: exactly one namespace of the volume" test "$(echo "$AFTER" | grep -c .)" -eq 1
	check "$point: the old or the new one" sh -c "test '$AFTER' = '$BEFORE' || test '${AFTER#* }' -gt '${BEFORE#* }'"
	check "$point: no marker left" test -z "$(ls $GROWS 2>/dev/null)"
	stage_publish fs "$VOL" mount
	check "$point: the data is intact" test "$(sha256sum $TGT/data | cut -d' ' -f1)" = "$SHA"
	unpublish_unstage fs "$VOL" "$TGT"
	check "$point: the CO's retry grows it" csi controller-expand-volume --volume-id "$VOL" --capacity-bytes ${size}Mi
	cat /tmp/err
	cap=$(json_get capacityBytes)
	check "$point: capacity $cap >= $size MiB" test "${cap:-0}" -ge $((size * MiB))
	check "$point: one namespace after the retry" test "$(ns_of "$VOL" | grep -c .)" -eq 1
done
stage_publish fs "$VOL" mount
check "NodeExpandVolume after the crashes" csi node-expand-volume --volume-id "$VOL" --volume-path $TGT --staging-target-path $STG/fs --capacity-bytes ${size}Mi
check "the data is intact at the end" test "$(sha256sum $TGT/data | cut -d' ' -f1)" = "$SHA"
check "ext4 is $(fs_kb $TGT) KiB > $(((size - 40) * 1024))" test "$(fs_kb $TGT)" -gt $(((size - 40) * 1024))
unpublish_unstage fs "$VOL" "$TGT"

say "---- devdax: 64 -> 96 MiB, the bytes kept"
check "dd: CreateVolume" csi create-volume --name grow-dd --capacity-bytes 64Mi --block --param daxlease.io/mode=devdax
DD=$(first_get volumeId)
stage_publish dd "$DD" block
D_SUM=$($CHECK --fill $TGT 8388608 5)
check "dd: pattern written ($D_SUM)" test -n "$D_SUM"
unpublish_unstage dd "$DD" "$TGT"
check "dd: ControllerExpandVolume 96 MiB" csi controller-expand-volume --volume-id "$DD" --capacity-bytes 96Mi
cat /tmp/out.json /tmp/err
check "dd: no node expansion (block)" sh -c "! grep -q '\"nodeExpansionRequired\": *true' /tmp/out.json"
stage_publish dd "$DD" block
check "dd: the bytes kept" test "$($CHECK --digest $TGT 8388608)" = "$D_SUM"
unpublish_unstage dd "$DD" "$TGT"

say "---- no room for both namespaces: RESOURCE_EXHAUSTED, nothing changed"
BEFORE=$(ns_of "$DD")
csi controller-expand-volume --volume-id "$DD" --capacity-bytes 1900Mi
rc=$?
cat /tmp/err
check "dd: a grow past the region: RESOURCE_EXHAUSTED (8)" test $rc -eq 8
check "dd: the namespace is unchanged" test "$(ns_of "$DD")" = "$BEFORE"

say "---- cleanup"
for v in "$VOL" "$DD"; do check "DeleteVolume $v" csi delete-volume --volume-id $v; done
check "no namespace left" test "$(ns_count)" -eq "$NS0"
check "nothing of daxlease left mounted" sh -c "! grep -q -e $KUBELET -e /dev/pmem /proc/mounts"
check "daxlease-csi stops cleanly on SIGTERM" stop_csi
grep -a -h -E "ndctl.grow|base.crash_point" /tmp/csi.log.ndctl.prev /tmp/csi.log.ndctl 2>/dev/null | head -20
[ $FAILS -eq 0 ] || dump_csi_log ndctl 80
finish
