# VerbsFabric over Soft-RoCE (daxlease-lab-verbs-fabric-test, a gtest binary):
# 1. the fabric alone on a devdax namespace: grants as type-2 memory windows
#    over one MR with local rights + MW_BIND, RDMA WRITE/READ byte-exact,
#    persist = read-after-write, one LOCAL_INV revokes (a second Invalidate is
#    a no-op, the kernel survives), the late write is refused and the owner's
#    memory untouched, the reconnect is refused, a new epoch gets a new key;
# 2. an fsdax mapping is refused with the reason (no ODP on 6.1's rxe);
# 3. the stack in one process (no API server in the guest): FakeKubeClient,
#    the real operator, two agents each with a VerbsFabric, libdaxlease: a
#    local and an RDMA writer across a recall (both ack, epoch + 1, bytes
#    verified), and a silent RDMA holder revoked at the deadline.
. /lab/lib.sh
check "rxe0 added on eth0" setup_rxe
# json_field KEY: "KEY":"value" from ndctl's JSON on stdin
json_field() { tr -d ' \n' | sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p"; }
ndctl create-namespace -r region0 -m devdax -s 64M >/tmp/ns-dax.json
DAXDEV=$(json_field chardev </tmp/ns-dax.json)
DAXNS=$(json_field dev </tmp/ns-dax.json)
check "devdax namespace $DAXNS (/dev/$DAXDEV)" test -c "/dev/$DAXDEV"
ndctl create-namespace -r region0 -m fsdax -s 64M >/tmp/ns-fs.json
PMEM=$(json_field blockdev </tmp/ns-fs.json)
FSNS=$(json_field dev </tmp/ns-fs.json)
mkdir -p /mnt/verbs-fsdax
check "fsdax namespace $FSNS mounted -o dax" sh -c \
	"mkfs.ext4 -q -F -b 4096 /dev/$PMEM && $MOUNT -o dax /dev/$PMEM /mnt/verbs-fsdax"

export DAXLEASE_LAB_IP=$GUEST_IP DAXLEASE_LAB_DAX=/dev/$DAXDEV DAXLEASE_LAB_FSDAX=/mnt/verbs-fsdax
t0=$(up)
timeout 600 daxlease-lab-verbs-fabric-test >/tmp/verbs-fabric.log 2>&1
rc=$?
# The agents' log lines (logfmt "ts=...", JSON before) would push a
# failure's lines out of the tail: they are shown around each failure only.
grep -v '^\[ RUN' /tmp/verbs-fabric.log | grep -v -e '^{"ts"' -e '^ts=' | tail -n 80
grep -B 12 -A 4 ': Failure$' /tmp/verbs-fabric.log | cut -c1-400 | head -n 120
grep '^FIGURE' /tmp/verbs-fabric.log
say "verbs fabric tests took $(echo "$(up) - $t0" | bc 2>/dev/null || echo '?') s"
check "VerbsFabric lab tests pass" test $rc -eq 0
check "no lab test skipped" sh -c '! grep -q "^\[  SKIPPED" /tmp/verbs-fabric.log'
umount /mnt/verbs-fsdax
ndctl destroy-namespace -f "$FSNS" >/dev/null
ndctl destroy-namespace -f "$DAXNS" >/dev/null
rdma link delete rxe0
finish
