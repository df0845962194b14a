# Verbs smoke test on the project's lib/rdma over Soft-RoCE (rxe0 on eth0):
# 1. a devdax namespace mapped and pinned with ibv_reg_mr by one process, a
#    second process RDMA-WRITEs and RDMA-READs all of it over rdma_cm, both
#    sides compare byte for byte;
# 2. the same pinned registration of a file on an fsdax (-o dax) mount is
#    refused with EOPNOTSUPP: the reason pinned sharing uses devdax.
. /lab/lib.sh
BYTES=$((4 << 20))
check "rxe0 added on eth0" setup_rxe
check "ibv_devices lists rxe0" sh -c 'ibv_devices | grep -q rxe0'

ndctl create-namespace -r region0 -m devdax -s 64M -n lab-verbs-devdax >/tmp/ns.json
DAX=$(sed -n 's/.*"chardev":"\([^"]*\)".*/\1/p' /tmp/ns.json | head -1)
[ -n "$DAX" ] || DAX=$(tr -d '\n ' </tmp/ns.json | sed -n 's/.*"chardev":"\([^"]*\)".*/\1/p')
check "devdax namespace for the smoke test (/dev/$DAX)" test -c "/dev/$DAX"

daxlease-lab-rdma serve --path /dev/$DAX --ip $GUEST_IP --port 18515 --bytes $BYTES >/tmp/serve.log 2>&1 &
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
daxlease-lab-rdma window-serve --path /dev/$DAX --ip $GUEST_IP --port 18516 --bytes $BYTES >/tmp/wserve.log 2>&1 &
SPID=$!
i=0
while ! grep -q listening /tmp/wserve.log && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
check "peer: WRITE+READ through a granted memory window, refused after revoke" \
	timeout 120 daxlease-lab-rdma window-client --ip $GUEST_IP --port 18516 --bytes $BYTES --seed 91
wait $SPID
src=$?
cat /tmp/wserve.log
check "owner: window revoked, memory holds exactly the granted writes" test $src -eq 0

ndctl create-namespace -r region0 -m fsdax -s 64M -n lab-verbs-fsdax >/tmp/ns.json
PMEM=$(tr -d '\n ' </tmp/ns.json | sed -n 's/.*"blockdev":"\([^"]*\)".*/\1/p')
mkfs.ext4 -F -q -b 4096 /dev/$PMEM && mkdir -p /mnt/verbs && $MOUNT -o dax /dev/$PMEM /mnt/verbs
check "fsdax mount is dax" mounted_dax /mnt/verbs
daxlease-lab-rdma regmr --path /mnt/verbs/f --bytes $BYTES
rc=$?
check "pinned ibv_reg_mr of a file on fsdax is refused with EOPNOTSUPP" test $rc -eq 3
umount /mnt/verbs
rdma link delete rxe0
finish
