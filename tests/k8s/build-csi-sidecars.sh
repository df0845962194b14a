#!/usr/bin/env bash
# Builds the standard kubernetes-csi sidecars the chart runs beside daxlease-csi
# (node-driver-registrar, external-provisioner, external-resizer, livenessprobe) from
# their upstream source tarballs, offline (-mod=vendor, no module proxy), with Debian's Go,
# and prints the directory holding the binaries.
#
#   tests/k8s/build-csi-sidecars.sh     -> $CACHE/bin (csi-node-driver-registrar,
#                                          csi-provisioner, csi-resizer, livenessprobe)
#
# Sources: $DAXLEASE_CSI_SIDECAR_SRC, a directory holding the `git archive` tarballs
# NAME-vTAG.tar.xz of the four upstream repositories (each vendors its Go dependencies).
# When unset, the first directory named `vendor/kubernetes-csi` found inside the checkout's
# parent or any ancestor's child (ANCESTOR/*/vendor/kubernetes-csi) is used: a machine that
# keeps third-party sources beside its checkouts needs no configuration, and nothing in the
# repository names a machine-specific path. Without sources, the binaries already in the
# cache are used as they are; with neither the script exits 3 and says so (callers skip, or
# fail under CI=true). Users elsewhere pull the same sidecars as the
# upstream registry.k8s.io/sig-storage images (the chart takes either).
#
# Cache: $DAXLEASE_CSI_SIDECAR_CACHE (default /var/cache/daxlease/csi-sidecars), outside
# the repository; a binary is rebuilt only when its tarball, Go or the Debian json-iterator
# sources change. Cold on 2 idle cores: registrar and livenessprobe < 1 min, provisioner and
# resizer ~4 min each. Go runs under `nice -n 10` with -p $DAXLEASE_K8S_BUILD_JOBS (default 2).
#
# external-provisioner and external-resizer vendor json-iterator 1.1.10 / reflect2 1.0.1,
# which crash at run time with Go >= 1.18: their .go files are replaced by Debian's, as in
# build-kube.sh. Progress goes to stderr; only the binary directory goes to stdout.
set -euo pipefail

readonly RECIPE=daxlease-1
# binary name, tarball prefix, package to build
readonly SIDECARS=(
  "csi-node-driver-registrar node-driver-registrar ./cmd/csi-node-driver-registrar"
  "livenessprobe livenessprobe ./cmd/livenessprobe"
  "csi-provisioner external-provisioner ./cmd/csi-provisioner"
  "csi-resizer external-resizer ./cmd/csi-resizer"
)
readonly NEEDED=(golang-go golang-github-modern-go-reflect2-dev golang-github-json-iterator-go-dev)

here=$(cd "$(dirname "$0")" && pwd)
start=$SECONDS
say() { echo "[build-csi-sidecars +$((SECONDS - start))s] $*" >&2; }
fail() { say "FAILED: $*"; exit 1; }

find_sources() {
  if [[ -n ${DAXLEASE_CSI_SIDECAR_SRC:-} ]]; then
    echo "$DAXLEASE_CSI_SIDECAR_SRC"
    return
  fi
  local d c
  d=$(cd "$here/../.." && pwd -P)
  while [[ $d != / ]]; do
    d=$(dirname "$d")
    for c in "$d"/vendor/kubernetes-csi "$d"/*/vendor/kubernetes-csi; do
      [[ -d $c ]] && { echo "$c"; return 0; }
    done
  done
  return 0 # none found: the caller falls back to the cache (the loop's last test is false)
}
cache=${DAXLEASE_CSI_SIDECAR_CACHE:-/var/cache/daxlease/csi-sidecars}
src=$(find_sources)
if [[ -z $src || ! -d $src ]]; then
  # No sources, but every sidecar built before (from whatever sources then): use those.
  have=0
  for entry in "${SIDECARS[@]}"; do
    read -r name _ <<<"$entry"
    [[ -x $cache/bin/$name && -f $cache/bin/$name.key ]] && have=$((have + 1))
  done
  if ((have == ${#SIDECARS[@]})); then
    say "no sidecar sources${src:+ ($src does not exist)}; using the cached build in $cache/bin"
    echo "$cache/bin"
    exit 0
  fi
  say "no sidecar sources: set DAXLEASE_CSI_SIDECAR_SRC to a directory of kubernetes-csi" \
    "tarballs (node-driver-registrar-v*.tar.xz, external-provisioner-v*, external-resizer-v*," \
    "livenessprobe-v*)${src:+ ($src does not exist)}"
  exit 3
fi

mkdir -p "$cache"
cache=$(cd "$cache" && pwd -P)
exec 9>"$cache/.lock"
flock 9

missing=()
for p in "${NEEDED[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=; [[ $(id -u) -eq 0 ]] || sudo=sudo
  say "installing ${missing[*]}"
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
version_of() { dpkg-query -W -f='${Version}' "$1"; }

export PATH=/usr/lib/go/bin:$PATH
unset GOROOT GOBIN
export GOENV=off GOFLAGS=-mod=vendor GO111MODULE=on GOPROXY=off GOTOOLCHAIN=local CGO_ENABLED=0
export GOPATH=$cache/gopath GOCACHE=$cache/gocache
common_key="$RECIPE reflect2=$(version_of golang-github-modern-go-reflect2-dev)"
common_key+=" jsoniter=$(version_of golang-github-json-iterator-go-dev) $(go version)"

mkdir -p "$cache/bin" "$cache/src" "$cache/tmp"
for entry in "${SIDECARS[@]}"; do
  read -r name prefix pkg <<<"$entry"
  tarballs=("$src/$prefix"-v*.tar.xz)
  [[ -f ${tarballs[0]} ]] || fail "no $prefix-v*.tar.xz in $src"
  tarball=${tarballs[-1]}
  tag=$(basename "$tarball" .tar.xz)
  key="$common_key $(sha256sum <"$tarball" | cut -d' ' -f1)"
  bin=$cache/bin/$name
  if [[ -x $bin && -f $bin.key && $(<"$bin.key") == "$key" ]]; then
    say "cached: $name ($tag)"
    continue
  fi
  t0=$SECONDS
  tree=$cache/src/$tag
  rm -rf "$tree"
  tar -xJf "$tarball" -C "$cache/src"
  [[ -d $tree ]] || fail "$tarball does not unpack into $tag/"
  for dep in github.com/modern-go/reflect2 github.com/json-iterator/go; do
    [[ -d $tree/vendor/$dep ]] || continue
    rm -f "$tree/vendor/$dep"/*.go
    find "/usr/share/gocode/src/$dep" -maxdepth 1 -name '*.go' ! -name '*_test.go' \
      -exec cp {} "$tree/vendor/$dep/" \;
  done
  say "go build $pkg from $tag (cold on 2 cores: registrar, livenessprobe < 1 min;" \
    "provisioner, resizer ~4 min)"
  (cd "$tree" && TMPDIR=$cache/tmp nice -n 10 go build -p "${DAXLEASE_K8S_BUILD_JOBS:-2}" -trimpath \
    -ldflags "-s -w -X main.version=${tag##*-}" -o "$bin.new" "$pkg") >&2 \
    || fail "go build $pkg in $tree"
  mv -f "$bin.new" "$bin"
  echo "$key" >"$bin.key"
  rm -rf "$tree"
  say "built $name ($tag) in $((SECONDS - t0))s"
done
rm -rf "$cache/tmp"
echo "$cache/bin"
