# Capacity on NdctlBackend through CSI: GetCapacity's maximum_volume_size is
# the largest volume that can really be created (one contiguous range, after
# the map=dev metadata), a volume of exactly that size is created, then the
# region is full and CreateVolume returns RESOURCE_EXHAUSTED (8); after the
# delete the capacity is back.
. /lab/lib.sh
check "daxlease-csi --backend=ndctl starts" start_csi ndctl --ndctl-erase-on-delete=false
csi get-capacity --fstype ext4 && cat /tmp/out.json
max=$(json_get maximumVolumeSize)
avail=$(json_get availableCapacity)
region_avail=$(cat /sys/bus/nd/devices/region0/available_size)
say "maximum_volume_size=$max available_capacity=$avail region available=$region_avail"
check "available_capacity is the region's free space" test "$avail" -eq "$region_avail"
check "maximum_volume_size is below the free total (map=dev metadata)" test "$max" -lt "$avail"
csi create-volume --name lab-too-big --capacity-bytes $((max + 1)) --block --param daxlease.io/mode=devdax
rc=$?
check "one byte more than maximum_volume_size: RESOURCE_EXHAUSTED (rc $rc)" test $rc -eq 8
check "a volume of exactly maximum_volume_size is created" csi create-volume --name lab-fill --capacity-bytes $max --block --param daxlease.io/mode=devdax
id=$(json_get volumeId)
csi get-capacity --fstype ext4 && cat /tmp/out.json
after=$(json_get maximumVolumeSize)
check "region full: maximum_volume_size now ${after:-0} (< 16 MiB)" test "${after:-0}" -lt 16777216
csi create-volume --name lab-more --capacity-bytes 16Mi --fstype ext4
rc=$?
cat /tmp/err
check "region full: CreateVolume returns RESOURCE_EXHAUSTED (rc $rc)" test $rc -eq 8
check "DeleteVolume of the filling volume" csi delete-volume --volume-id $id
csi get-capacity --fstype ext4
check "capacity is back after the delete" test "$(json_get maximumVolumeSize)" -eq "$max"
check "daxlease-csi stops cleanly" stop_csi
[ $FAILS -eq 0 ] || dump_csi_log ndctl 40
finish
