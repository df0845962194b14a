# Harness self-test: the guest has a labelled NVDIMM region with free space,
# the project binaries are present, and the kernel offers what the tests need.
. /lab/lib.sh
check "region0 present" test -e /sys/bus/nd/devices/region0
avail=$(cat /sys/bus/nd/devices/region0/available_size 2>/dev/null || echo 0)
say "region0 available_size=$avail"
check "region0 labelled (available_size > 0)" test "$avail" -gt 0
for b in daxlease-csi daxlease-csi-client; do
	check "$b in the guest" test -x /usr/local/bin/$b
done
check "kernel has DAX for ext4/xfs" grep -q -w -e ext4 -e xfs /proc/filesystems
finish
