#!/usr/bin/env bash
# Builds the daxlease container images as OCI archives without a container daemon (umoci),
# from what is already built on this Debian 12 machine, and optionally imports them into a
# containerd. The Dockerfiles beside this script build the same images for users with their
# own tools; this script is what the e2e tests and the local lab use (no registry, no
# network).
#
#   images/build-images.sh [--prefix DIR] [--import SOCKET] IMAGE...
#
# IMAGE: csi       daxlease/daxlease-csi:VERSION      (daxlease-csi, daxlease-agent,
#                                                       daxlease-io, mkfs/fsck/grow tools)
#        operator  daxlease/daxlease-operator:VERSION (daxlease-operator, kubectl-daxlease)
#        sidecars  registry.k8s.io/sig-storage/{csi-node-driver-registrar:v2.1.0,
#                  csi-provisioner:v2.1.2,csi-resizer:v1.1.0,livenessprobe:v2.2.0}
#                  (binaries from tests/k8s/build-csi-sidecars.sh; the upstream names, so the
#                  chart's defaults work here and against the real registry)
#        busybox   daxlease/busybox:e2e (Debian's busybox-static: the e2e tests' workload pods)
#        pause     k8s.gcr.io/pause:3.2 (Kubernetes' pause.c from the source tree that
#                  tests/k8s/build-kube.sh unpacked, linked statically)
#        all       all of them
# --prefix DIR     a `cmake --install BUILD --prefix DIR` tree (csi, operator); default:
#                  installs build/ (DAXLEASE_BUILD_DIR) into a scratch prefix first
# --import SOCKET  `ctr -n k8s.io images import` each archive into the containerd on SOCKET
#
# Archives: $DAXLEASE_IMAGE_CACHE (default /var/cache/daxlease/images)/NAME_TAG.tar. The
# daxlease images are rebuilt on every call (seconds); pause and the sidecars only when their
# inputs change. An image's root filesystem holds the binaries, every shared library `ldd`
# resolves for them (from this Debian 12 system), and /etc files they read. Prints the
# archives built, one a line.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
cache=${DAXLEASE_IMAGE_CACHE:-/var/cache/daxlease/images}
say() { echo "[build-images] $*" >&2; }
fail() { say "FAILED: $*"; exit 1; }

prefix=""
import_sock=""
images=()
while (($#)); do
  case $1 in
    --prefix) prefix=$(cd "${2:?--prefix DIR}" && pwd); shift 2 ;;
    --import) import_sock=${2:?--import SOCKET}; shift 2 ;;
    all) images+=(pause busybox sidecars csi operator); shift ;;
    pause | busybox | sidecars | csi | operator) images+=("$1"); shift ;;
    *) sed -n '8,26p' "$0" >&2; exit 2 ;;
  esac
done
((${#images[@]})) || { sed -n '8,26p' "$0" >&2; exit 2; }
command -v umoci >/dev/null || fail "umoci missing (scripts/install-deps.sh)"
version=$(sed -n 's/^project(daxlease VERSION \([0-9.]*\).*/\1/p' "$repo/CMakeLists.txt")
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9

# Host path with its directory resolved (Debian 12 is usr-merged: /lib64 -> usr/lib64, ...);
# the images carry the same symlinks, so a file lands where every spelling of it finds it.
resolved() { echo "$(readlink -f "$(dirname "$1")")/$(basename "$1")"; }

# Copies FILE (an absolute host path) into ROOTFS at DEST (default: the same path), with the
# shared libraries and the dynamic loader it needs.
add_file() {
  local rootfs=$1 f=$2 dest=${3:-$(resolved "$2")} lib
  [[ -e $f ]] || fail "$f does not exist"
  mkdir -p "$rootfs$(dirname "$dest")"
  cp -L --preserve=mode "$f" "$rootfs$dest"
  if file -L "$f" 2>/dev/null | grep -q 'dynamically linked'; then
    for lib in $(ldd "$f" | awk '/=> \// {print $3} /^\t\/lib/ {print $1}'); do
      lib=$(resolved "$lib")
      [[ -e $rootfs$lib ]] && continue
      mkdir -p "$rootfs$(dirname "$lib")"
      cp -L "$lib" "$rootfs$lib"
    done
  fi
}

# Packs ROOTFS_SOURCE (a directory laid out as /) as an OCI image NAME:TAG with ENTRYPOINT,
# writes $cache/<name>_<tag>.tar and echoes its path.
pack() {
  local name=$1 tag=$2 src=$3 entrypoint=$4
  local work out
  out=$cache/$(echo "$name" | tr '/:' '__')_$tag.tar
  work=$(mktemp -d "$cache/work.XXXXXX")
  umoci init --layout "$work/oci"
  umoci new --image "$work/oci:$tag"
  umoci unpack --image "$work/oci:$tag" "$work/bundle" >/dev/null
  cp -a "$src/." "$work/bundle/rootfs/"
  umoci repack --image "$work/oci:$tag" "$work/bundle"
  umoci config --image "$work/oci:$tag" --config.entrypoint "$entrypoint" --config.user 0 \
    --config.workingdir / --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --author daxlease --os linux --architecture amd64
  umoci gc --layout "$work/oci"
  tar -C "$work/oci" -cf "$out.new" .
  mv -f "$out.new" "$out"
  rm -rf "$work"
  echo "$out"
}

# Imports an archive as NAME:TAG, NAME fully qualified as the CRI looks images up
# ("daxlease/x" is "docker.io/daxlease/x" to the kubelet).
import() { # archive name tag
  [[ -n $import_sock ]] || return 0
  local name=$2
  [[ ${name%%/*} == *.* ]] || name=docker.io/$name
  ctr --address "$import_sock" -n k8s.io images import --base-name "$name" "$1" >/dev/null
  # The listing is read whole: `ctr ... | grep -q` would fail under pipefail whenever grep
  # matched and exited before ctr wrote its later lines (SIGPIPE).
  local listed
  listed=$(ctr --address "$import_sock" -n k8s.io images ls -q)
  grep -qx "$name:$3" <<<"$listed" || fail "$name:$3 not in containerd after import"
  say "imported $name:$3"
}

# Debian 12 base files the images share: passwd/group (uid 0), nsswitch, the CA bundle.
base_rootfs() {
  local root=$1
  mkdir -p "$root"/{etc,tmp,var/tmp,proc,sys,dev,run,usr/bin,usr/sbin,usr/lib,usr/lib64}
  local d
  for d in bin sbin lib lib64; do ln -s "usr/$d" "$root/$d"; done
  chmod 1777 "$root/tmp" "$root/var/tmp"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
  printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
  if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
    mkdir -p "$root/etc/ssl/certs"
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
  fi
}

ensure_prefix() {
  [[ -n $prefix ]] && return 0
  local build=$repo/${DAXLEASE_BUILD_DIR:-build}
  [[ -f $build/build.ninja ]] || fail "$build is not built (scripts/build.sh build) and no --prefix given"
  prefix=$(mktemp -d /tmp/daxlease-prefix.XXXXXX)
  trap 'rm -rf "$prefix"' EXIT
  cmake --install "$build" --prefix "$prefix" --strip >/dev/null
}

build_pause() {
  local key out src tree
  out=$cache/k8s.gcr.io_pause_3.2.tar
  # The Kubernetes source tree tests/k8s/build-kube.sh unpacks (run it when missing).
  tree=${DAXLEASE_K8S_CACHE:-/var/cache/daxlease/kube-apiserver}/gopath/src/k8s.io/kubernetes
  src=$tree/build/pause/linux/pause.c
  [[ -f $src ]] || "$repo/tests/k8s/build-kube.sh" kube-apiserver >/dev/null
  [[ -f $src ]] || fail "$src missing (tests/k8s/build-kube.sh unpacks it)"
  key="pause-1 $(sha256sum <"$src" | cut -d' ' -f1) $(gcc --version | head -1)"
  if [[ ! -f $out || ! -f $out.key || $(<"$out.key") != "$key" ]]; then
    local root
    root=$(mktemp -d "$cache/root.XXXXXX")
    gcc -Os -Wall -static -DVERSION=v3.2-daxlease -o "$root/pause" "$src"
    strip "$root/pause"
    pack k8s.gcr.io/pause 3.2 "$root" /pause >/dev/null
    rm -rf "$root"
    echo "$key" >"$out.key"
    say "built k8s.gcr.io/pause:3.2"
  fi
  import "$out" k8s.gcr.io/pause 3.2
  echo "$out"
}

build_busybox() {
  local out=$cache/daxlease_busybox_e2e.tar key root applet
  key="busybox-1 $(sha256sum </bin/busybox | cut -d' ' -f1)"
  if [[ ! -f $out || ! -f $out.key || $(<"$out.key") != "$key" ]]; then
    root=$(mktemp -d "$cache/root.XXXXXX")
    base_rootfs "$root"
    cp /bin/busybox "$root/usr/bin/busybox"
    for applet in $(/bin/busybox --list); do
      [[ -e $root/usr/bin/$applet ]] || ln -s busybox "$root/usr/bin/$applet"
    done
    pack daxlease/busybox e2e "$root" /bin/sh >/dev/null
    rm -rf "$root"
    echo "$key" >"$out.key"
    say "built daxlease/busybox:e2e"
  fi
  import "$out" daxlease/busybox e2e
  echo "$out"
}

build_sidecars() {
  local bindir entry name tag out key root
  bindir=$("$repo/tests/k8s/build-csi-sidecars.sh")
  for entry in csi-node-driver-registrar:v2.1.0 csi-provisioner:v2.1.2 csi-resizer:v1.1.0 livenessprobe:v2.2.0; do
    name=${entry%%:*} tag=${entry##*:}
    out=$cache/registry.k8s.io_sig-storage_${name}_$tag.tar
    key="sidecar-1 $(sha256sum <"$bindir/$name" | cut -d' ' -f1)"
    if [[ ! -f $out || ! -f $out.key || $(<"$out.key") != "$key" ]]; then
      root=$(mktemp -d "$cache/root.XXXXXX")
      base_rootfs "$root"
      cp "$bindir/$name" "$root/$name"   # static (CGO off), at / as upstream's images have it
      pack "registry.k8s.io/sig-storage/$name" "$tag" "$root" "/$name" >/dev/null
      rm -rf "$root"
      echo "$key" >"$out.key"
      say "built registry.k8s.io/sig-storage/$name:$tag"
    fi
    import "$out" "registry.k8s.io/sig-storage/$name" "$tag"
    echo "$out"
  done
}

# Tools the CSI driver runs (lib/sys/formatter.cc: mkfs.<fstype>, e2fsck, resize2fs,
# xfs_growfs) and what an operator reaches for in `kubectl exec` (mount, findmnt, losetup, cat,
# ls; sleep for a pod that stays up after its work, as the e2e test's libdaxlease pod).
readonly CSI_TOOLS=(/sbin/mkfs.ext4 /sbin/mke2fs /sbin/e2fsck /sbin/resize2fs /sbin/mkfs.xfs
                    /usr/sbin/xfs_growfs /bin/mount /bin/umount /bin/findmnt /sbin/losetup
                    /sbin/blkid /bin/sh /bin/cat /bin/ls /bin/sleep)

build_daxlease() { # csi|operator
  local what=$1 root bin out
  ensure_prefix
  root=$(mktemp -d "$cache/root.XXXXXX")
  base_rootfs "$root"
  if [[ $what == csi ]]; then
    # daxlease-io: libdaxlease's small client (client/tools), for a pod that uses a shared
    # volume through the library (the e2e tests) and for `kubectl exec` checks.
    for bin in daxlease-csi daxlease-agent daxlease-io; do
      add_file "$root" "$prefix/bin/$bin" "/usr/local/bin/$bin"
    done
    for bin in "${CSI_TOOLS[@]}"; do add_file "$root" "$bin"; done
    [[ -f /etc/mke2fs.conf ]] && cp /etc/mke2fs.conf "$root/etc/"
    out=$(pack daxlease/daxlease-csi "$version" "$root" /usr/local/bin/daxlease-csi)
  else
    for bin in daxlease-operator kubectl-daxlease; do
      add_file "$root" "$prefix/bin/$bin" "/usr/local/bin/$bin"
    done
    out=$(pack daxlease/daxlease-operator "$version" "$root" /usr/local/bin/daxlease-operator)
  fi
  rm -rf "$root"
  say "built daxlease/daxlease-$what:$version ($(du -h "$out" | cut -f1))"
  import "$out" "daxlease/daxlease-$what" "$version"
  echo "$out"
}

for image in "${images[@]}"; do
  t0=$SECONDS
  case $image in
    pause) build_pause ;;
    busybox) build_busybox ;;
    sidecars) build_sidecars ;;
    csi | operator) build_daxlease "$image" ;;
  esac
  say "$image: $((SECONDS - t0))s"
done
