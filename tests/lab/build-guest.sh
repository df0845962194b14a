#!/usr/bin/env bash
# Builds the lab guest: a Debian kernel and an initramfs made of two
# concatenated cpio archives (the kernel unpacks both):
#   base.cpio     busybox, ndctl/daxctl, rdma-core userland, mkfs, util-linux,
#                 the kernel's module closure. Cached under $LAB_CACHE keyed by
#                 the kernel version, the host packages' versions and this
#                 script, so it is rebuilt only when one of them changes; the
#                 three bases used last are kept (worktrees with other recipes).
#   project.cpio  the project's binaries and test programs from BUILD_DIR with
#                 the libraries ldd names, plus tests/lab/guest/. Rebuilt on
#                 every call (a second or two).
#
# usage: build-guest.sh BUILD_DIR OUT_DIR
# env:   DAXLEASE_LAB_CACHE (default /var/cache/daxlease/lab)
# Output: OUT_DIR/vmlinux, OUT_DIR/initrd.img, OUT_DIR/kver.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
BUILD_DIR=$(cd "$1" && pwd)
OUT=$2
LAB_CACHE=${DAXLEASE_LAB_CACHE:-/var/cache/daxlease/lab}
KPKG=linux-image-amd64
mkdir -p "$LAB_CACHE" "$OUT"

log() { echo "lab-build: $*" >&2; }

# Host programs copied into the guest at their own paths (with their libs).
HOST_BINS=(
  /usr/bin/ndctl /usr/bin/daxctl /usr/bin/rdma /usr/sbin/ip /usr/bin/kmod
  /usr/bin/ibv_devices /usr/bin/ibv_devinfo /usr/bin/rping
  /usr/sbin/mkfs.ext4 /usr/sbin/mke2fs /usr/sbin/e2fsck /usr/sbin/resize2fs
  /usr/sbin/tune2fs /usr/sbin/dumpe2fs
  /usr/sbin/mkfs.xfs /usr/sbin/xfs_growfs /usr/sbin/xfs_repair /usr/sbin/xfs_db
  /usr/bin/mount /usr/bin/umount /usr/sbin/losetup /usr/sbin/blkid
  /usr/sbin/blockdev /usr/sbin/wipefs /usr/bin/findmnt /usr/sbin/fsck
  /usr/bin/stat /usr/bin/dd /usr/bin/cmp /usr/bin/sha256sum
  /usr/bin/ib_read_bw /usr/bin/ib_write_bw /usr/bin/ib_read_lat
)
# Kernel modules whose dependency closure goes into the guest.
MODULES=(nfit nd_pmem nd_btt dax_pmem device_dax kmem ext4 xfs loop
  crc32c_generic crc32c_intel crc32_generic crc32_pclmul virtio_pci virtio_net
  rdma_rxe ib_uverbs rdma_ucm)

# --------------------------------------------------------------- kernel
# The kernel package's dependency chain, resolved by apt (host suite).
KIMG=$(apt-cache depends "$KPKG" 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
if [ -z "$KIMG" ]; then # no package lists yet (fresh container)
  apt-get update -qq
  KIMG=$(apt-cache depends "$KPKG" | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
fi
[ -n "$KIMG" ] || { log "cannot resolve $KPKG (apt-get update?)"; exit 1; }
KVERSION=$(apt-cache policy "$KIMG" | awk '/Candidate:/{print $2}')
KDIR=$LAB_CACHE/kernel-$KIMG-$KVERSION
exec 9>"$LAB_CACHE/.lock"
flock 9
if [ ! -f "$KDIR/done" ]; then
  log "fetching $KIMG $KVERSION (once; cached in $KDIR)"
  rm -rf "$KDIR"
  mkdir -p "$KDIR/deb" "$KDIR/x"
  (cd "$KDIR/deb" && apt-get download -qq "$KIMG" 2>&1 | grep -v unsandboxed || true)
  ls "$KDIR"/deb/*.deb >/dev/null
  for d in "$KDIR"/deb/*.deb; do dpkg -x "$d" "$KDIR/x"; done
  [ -d "$KDIR/x/lib/modules" ] || ln -s usr/lib "$KDIR/x/lib"
  KVER=$(ls "$KDIR/x/lib/modules")
  # bzImage -> the uncompressed ELF vmlinux (PVH entry, boots faster under TCG)
  VMLINUZ=$KDIR/x/boot/vmlinuz-$KVER
  OFF=$( (LC_ALL=C grep -obUaP -m1 '\xfd7zXZ\x00' "$VMLINUZ" || true) | awk -F: 'NR==1{print $1}')
  [ -n "$OFF" ] || { log "no xz payload in $VMLINUZ"; exit 1; }
  { tail -c +$((OFF + 1)) "$VMLINUZ" || true; } | xz -dc --single-stream >"$KDIR/vmlinux" 2>/dev/null || true
  head -c 4 "$KDIR/vmlinux" | grep -q ELF || { log "vmlinux extraction failed"; exit 1; }
  # the module closure (an empty modprobe config: the host's must not hide any)
  mkdir -p "$KDIR/empty" "$KDIR/mods"
  depmod -b "$KDIR/x" "$KVER"
  for m in "${MODULES[@]}"; do
    modprobe -C "$KDIR/empty" -d "$KDIR/x" -S "$KVER" --show-depends "$m" 2>/dev/null ||
      log "note: no module $m in $KVER (built in?)"
  done | awk '$1=="insmod"{print $2}' | sort -u | while read -r f; do
    rel=${f#"$KDIR/x"}
    case $rel in /usr/lib/*) rel=/lib${rel#/usr/lib} ;; esac
    mkdir -p "$KDIR/mods$(dirname "$rel")"
    cp "$f" "$KDIR/mods$rel"
  done
  for f in modules.builtin modules.builtin.modinfo modules.order; do
    cp "$KDIR/x/lib/modules/$KVER/$f" "$KDIR/mods/lib/modules/$KVER/" 2>/dev/null || true
  done
  find "$KDIR/mods" -name '*.ko.xz' -exec xz -d {} +
  depmod -b "$KDIR/mods" "$KVER"
  echo "$KVER" >"$KDIR/kver"
  rm -rf "$KDIR/deb" "$KDIR/x" "$KDIR/empty"
  touch "$KDIR/done"
fi
KVER=$(cat "$KDIR/kver")

# --------------------------------------------------------------- staging helpers
copy_libs() { # the shared objects ELF file $2 needs, into root $1
  local root=$1
  ldd "$2" 2>/dev/null | awk '/=>/ && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' |
    while read -r l; do
      case "$l" in
      */ld-linux*) mkdir -p "$root/usr/lib64"; cp -Ln "$l" "$root/usr/lib64/" ;;
      *) mkdir -p "$root/usr/lib/x86_64-linux-gnu"; cp -Ln "$l" "$root/usr/lib/x86_64-linux-gnu/" ;;
      esac
    done
}

# --------------------------------------------------------------- base.cpio
pkgver() { [ -n "$1" ] || return 0; dpkg-query -W -f='${Package}=${Version}\n' "$@" 2>/dev/null || true; }
BASE_KEY=$( {
  echo "$KVER"
  cat "$0"
  for b in "${HOST_BINS[@]}" /bin/busybox; do pkgver "$(dpkg -S "$b" 2>/dev/null | head -1 | cut -d: -f1)"; done
} | sha256sum | cut -c1-16)
BASE=$LAB_CACHE/base-$BASE_KEY.cpio
if [ ! -f "$BASE" ]; then
  log "staging the base root (once per kernel/userland version)"
  R=$(mktemp -d "$LAB_CACHE/root.XXXXXX")
  (
    cd "$R"
    mkdir -p usr/bin usr/sbin usr/lib/x86_64-linux-gnu usr/lib64 etc proc sys dev run tmp mnt root var/lib
    ln -s usr/bin bin
    ln -s usr/sbin sbin
    ln -s usr/lib lib
    ln -s usr/lib64 lib64
  )
  cp /bin/busybox "$R/usr/bin/busybox"
  /bin/busybox --list-full | while read -r p; do
    d=$R/usr/${p#usr/}
    [ -e "$d" ] || [ -L "$d" ] || ln -s /usr/bin/busybox "$d"
  done
  for b in "${HOST_BINS[@]}"; do
    rm -f "$R$b"
    cp -L "$b" "$R$b"
    copy_libs "$R" "$b"
  done
  for a in modprobe insmod rmmod lsmod depmod modinfo; do ln -sf ../bin/kmod "$R/usr/sbin/$a"; done
  mkdir -p "$R/usr/lib/x86_64-linux-gnu/libibverbs" "$R/etc/libibverbs.d"
  cp -L /usr/lib/x86_64-linux-gnu/libibverbs/librxe-rdmav*.so "$R/usr/lib/x86_64-linux-gnu/libibverbs/"
  cp /etc/libibverbs.d/rxe.driver "$R/etc/libibverbs.d/"
  copy_libs "$R" /usr/lib/x86_64-linux-gnu/libibverbs/librxe-rdmav*.so
  # dlopen'ed at exit by glibc's pthread_cancel/unwinding paths
  cp -L /lib/x86_64-linux-gnu/libgcc_s.so.1 "$R/usr/lib/x86_64-linux-gnu/"
  # mke2fs reads its defaults from here
  [ -f /etc/mke2fs.conf ] && cp /etc/mke2fs.conf "$R/etc/"
  cp -a "$KDIR/mods/lib" "$R/usr/"
  printf 'root:x:0:0:root:/root:/bin/sh\n' >"$R/etc/passwd"
  printf 'root:x:0:\n' >"$R/etc/group"
  printf '127.0.0.1 localhost\n' >"$R/etc/hosts"
  (cd "$R" && find . | cpio -o -H newc -R 0:0 --quiet) >"$BASE.tmp"
  mv "$BASE.tmp" "$BASE"
  rm -rf "$R"
fi
# Bases of other kernel/userland/script versions: the three used last stay (two worktrees
# or branches whose build-guest.sh differ each keep theirs instead of evicting the other's
# and rebuilding it on their next run), older ones go. Under the lock; this run's base is
# held open so that a later run that deletes it cannot pull it from under the cat below.
touch "$BASE"
ls -t "$LAB_CACHE"/base-*.cpio | tail -n +4 | xargs -r rm -f --
exec 8<"$BASE"
flock -u 9

# --------------------------------------------------------------- project.cpio
P=$(mktemp -d)
trap 'rm -rf "$P"' EXIT
mkdir -p "$P/usr/local/bin" "$P/lab"
# The project's programs, wherever CMake put them in BUILD_DIR.
for name in daxlease-csi daxlease-csi-client daxlease-lab-rdma daxlease-lab-daxcheck \
  daxlease-lab-ndctl-test daxlease-dax-bench daxlease-lab-verbs-fabric-test \
  daxlease-agent daxlease-io kubectl-daxlease daxlease-lab-two rdma_test; do
  f=$(find "$BUILD_DIR" -name "$name" -type f -perm -u+x -not -path '*/CMakeFiles/*' 2>/dev/null | head -1)
  if [ -n "$f" ]; then
    # without debug info: a fraction of the size, a faster boot under TCG
    strip --strip-debug -o "$P/usr/local/bin/$name" "$f" 2>/dev/null || cp -L "$f" "$P/usr/local/bin/$name"
    copy_libs "$P" "$f"
  else
    log "warning: $name not built in $BUILD_DIR (tests using it will fail)"
  fi
done
cp -L "$HERE"/guest/* "$P/lab/"
chmod +x "$P"/lab/*.sh "$P/lab/init"
mv "$P/lab/init" "$P/init"
(cd "$P" && find . | cpio -o -H newc -R 0:0 --quiet) >"$OUT/project.cpio"
cat - "$OUT/project.cpio" <&8 >"$OUT/initrd.img"
exec 8<&-
rm -f "$OUT/project.cpio"
ln -sf "$KDIR/vmlinux" "$OUT/vmlinux"
echo "$KVER" >"$OUT/kver"
log "guest ready: kernel $KVER, initrd $(du -h "$OUT/initrd.img" | cut -f1)"
