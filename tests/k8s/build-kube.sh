#!/usr/bin/env bash
# Builds Kubernetes v1.20.2 binaries (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubelet) from Debian bookworm's `kubernetes` source package (Debian
# packages only: no GitHub, no Go module proxy) and prints their paths, one a line.
#
#   tests/k8s/build-kube.sh                      -> $CACHE/bin/kube-apiserver
#   tests/k8s/build-kube.sh kubelet kube-scheduler -> one path per target, in order
#
# Cache: $DAXLEASE_K8S_CACHE (default /var/cache/daxlease/kube-apiserver, or
# ~/.cache/daxlease/kube-apiserver when that cannot be created), outside the
# repository; all targets share one source tree and one Go build cache. Idempotent: a
# binary whose key matches the recipe is reused (~1 s). Cold on 2 idle cores: tree +
# openapi-gen ~30 s, kube-apiserver ~5 min, then kube-controller-manager ~1 min,
# kube-scheduler ~15 s, kubelet ~80 s; ~2.7 GB of disk at the peak. Go runs under
# `nice -n 10` with -p $DAXLEASE_K8S_BUILD_JOBS (default 2): the machine is shared.
#
# Recipe:
#   1. the Debian packages it needs (installed when missing);
#   2. `apt-get source --download-only` through a private apt configuration under the cache
#      (the machine's /etc/apt is not modified);
#   3. vendor/ reflect2 + json-iterator replaced by Debian's newer -dev sources (with the
#      vendored 1.0.1 reflect2 a Go >= 1.18 apiserver segfaults on custom-resource writes);
#   4. pkg/generated/openapi generated with the vendored openapi-gen;
#   5. `go build ./cmd/TARGET` in GOPATH mode, CGO off, for each target not cached.
# Progress (what is built, how long it took) goes to stderr; only paths go to stdout.
set -euo pipefail

readonly SRC_VERSION=1.20.5+really1.20.2-1.1+deb12u1
readonly ORIG_NAME=kubernetes_1.20.5+really1.20.2.orig.tar.gz
readonly ORIG_SHA256=b83c0780efb182d928dc63d46488a847f161f04e40a94b96bf5247dd671ecdfc
readonly GIT_VERSION=v1.20.2
readonly RECIPE=daxlease-1   # change to invalidate cached trees and binaries
readonly NEEDED=(golang-go etcd-server golang-github-modern-go-reflect2-dev
                 golang-github-json-iterator-go-dev dpkg-dev openssl curl)

cache=${DAXLEASE_K8S_CACHE:-/var/cache/daxlease/kube-apiserver}
start=$SECONDS
say() { echo "[build-kube +$((SECONDS - start))s] $*" >&2; }
fail() { say "FAILED: $*"; exit 1; }

targets=("$@")
((${#targets[@]})) || targets=(kube-apiserver)
for t in "${targets[@]}"; do
  case $t in
    kube-apiserver | kube-controller-manager | kube-scheduler | kubelet) ;;
    *) fail "unknown target $t (kube-apiserver, kube-controller-manager, kube-scheduler, kubelet)" ;;
  esac
done

if [[ -z ${DAXLEASE_K8S_CACHE:-} ]] && ! mkdir -p "$cache" 2>/dev/null; then
  cache=${XDG_CACHE_HOME:-$HOME/.cache}/daxlease/kube-apiserver   # not root
fi
mkdir -p "$cache"
cache=$(cd "$cache" && pwd -P)
# Two locks: .lock while the source tree is prepared (short, and what readers of a cached
# binary may wait on), .build-lock while binaries are built (long: a kubelet build must not
# hold up a test that only needs the cached apiserver). Binaries appear atomically (mv).
exec 9>"$cache/.lock"
flock 9

# --- 1. packages -------------------------------------------------------------------------
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
export GOENV=off GOFLAGS= GO111MODULE=off GOPROXY=off GOTOOLCHAIN=local CGO_ENABLED=0
export GOPATH=$cache/gopath GOCACHE=$cache/gocache
tree=$GOPATH/src/k8s.io/kubernetes
tree_key="$RECIPE $ORIG_SHA256 reflect2=$(version_of golang-github-modern-go-reflect2-dev)"
tree_key+=" jsoniter=$(version_of golang-github-json-iterator-go-dev) $(go version)"
bin_key="$tree_key $GIT_VERSION"

cached() { [[ -x $cache/bin/$1 && -f $cache/bin/$1.key && $(<"$cache/bin/$1.key") == "$bin_key" ]]; }
print_paths() { local t; for t in "${targets[@]}"; do echo "$cache/bin/$t"; done; }
all_cached=1
for t in "${targets[@]}"; do cached "$t" || all_cached=; done
if [[ -n $all_cached ]]; then
  say "cached: ${targets[*]}"
  print_paths
  exit 0
fi

# --- 2. source package through a private apt configuration -------------------------------
apt_dir=$cache/apt
orig=$apt_dir/src/$ORIG_NAME
if ! echo "$ORIG_SHA256  $orig" | sha256sum -c --quiet - >/dev/null 2>&1; then
  mkdir -p "$apt_dir"/{sources.list.d,lists/partial,archives/partial,src}
  mirror=${DEBIAN_MIRROR:-$(apt-get indextargets --no-release-info --format '$(REPO_URI) $(RELEASE)' \
    | awk '$2 == "bookworm" {print $1; exit}')}
  [[ -n $mirror ]] || fail "no bookworm mirror in the apt configuration (set DEBIAN_MIRROR)"
  keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  echo "deb-src [signed-by=$keyring] $mirror bookworm main" >"$apt_dir/sources.list"
  apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=$apt_dir/sources.list.d"
            -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir" -o "Dir::Cache::Archives=$apt_dir/archives")
  say "apt-get source kubernetes=$SRC_VERSION from $mirror"
  apt-get "${apt_opts[@]}" update -qq >&2
  (cd "$apt_dir/src" && apt-get "${apt_opts[@]}" source --download-only "kubernetes=$SRC_VERSION" >&2)
  echo "$ORIG_SHA256  $orig" | sha256sum -c --quiet - >&2 || fail "checksum of $orig"
fi

# --- 3 + 4. prepared tree ------------------------------------------------------------------
if [[ ! -f $tree/.daxlease-key || $(<"$tree/.daxlease-key") != "$tree_key" ]]; then
  say "unpacking $ORIG_NAME"
  rm -rf "$tree"
  mkdir -p "$tree"
  tar -xzf "$orig" --strip-components=1 -C "$tree"
  for pkg in github.com/modern-go/reflect2 github.com/json-iterator/go; do
    [[ -d /usr/share/gocode/src/$pkg && -d $tree/vendor/$pkg ]] || fail "missing sources of $pkg"
    rm -f "$tree/vendor/$pkg"/*.go
    find "/usr/share/gocode/src/$pkg" -maxdepth 1 -name '*.go' ! -name '*_test.go' \
      -exec cp {} "$tree/vendor/$pkg/" \;
    say "vendor/$pkg replaced by Debian's $(ls "$tree/vendor/$pkg"/*.go | wc -l) files"
  done

  work=$cache/tmp
  rm -rf "$work" && mkdir -p "$work"
  cd "$tree"
  say "building openapi-gen"
  TMPDIR=$work go build -o "$work/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
  # Inputs as build/root/Makefile.generated_files computes them: every package directory
  # (staging/src seen through vendor/, the rest of vendor/ skipped) with a file tagged
  # "+k8s:openapi-gen=", minus code-generator and sample-apiserver.
  find . \( -path ./vendor -o -path './_*' -o -path './.*' \) -prune -o -type f -name '*.go' -print \
    | sed -e 's|^\./staging/src/|vendor/|' -e 's|^\./||' -e 's|/[^/]*$||' | LC_ALL=C sort -u >"$work/dirs"
  while read -r d; do
    case $d in vendor/k8s.io/code-generator/* | vendor/k8s.io/sample-apiserver/*) continue ;; esac
    if grep -l -s '^// *+k8s:' "$d"/*.go | xargs -r grep -q -s '+k8s:openapi-gen='; then
      echo "k8s.io/kubernetes/$d"
    fi
  done <"$work/dirs" >"$work/openapi-pkgs"
  say "generating OpenAPI definitions from $(wc -l <"$work/openapi-pkgs") packages"
  TMPDIR=$work "$work/openapi-gen" --logtostderr -i "$(paste -sd, "$work/openapi-pkgs")" \
    -p k8s.io/kubernetes/pkg/generated/openapi -O zz_generated.openapi \
    -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt -r "$work/violations" 2>"$work/openapi-gen.log" \
    || { tail -20 "$work/openapi-gen.log" >&2; fail "openapi-gen"; }
  cmp -s api/api-rules/violation_exceptions.list "$work/violations" \
    || fail "openapi-gen's API rule report differs from upstream's (wrong input packages?)"
  rm -rf "$work"
  echo "$tree_key" >"$tree/.daxlease-key"
fi

# --- 5. binaries ----------------------------------------------------------------------------
exec 8>"$cache/.build-lock"
flock 8   # one binary build at a time (parallel ctest invocations, CI + lab)
flock -u 9
cd "$tree"
mkdir -p "$cache/bin" "$cache/build-tmp"
ldflags="-s -w"
for v in k8s.io/kubernetes/vendor/k8s.io/component-base/version k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version; do
  ldflags+=" -X $v.gitVersion=$GIT_VERSION -X $v.gitMajor=1 -X $v.gitMinor=20 -X $v.gitTreeState=clean"
done
for t in "${targets[@]}"; do
  bin=$cache/bin/$t
  if cached "$t"; then say "cached: $bin"; continue; fi   # built while we waited
  t0=$SECONDS
  say "go build ./cmd/$t (cold on 2 cores: apiserver ~5 min, controller-manager ~1 min, kubelet ~80 s)"
  TMPDIR=$cache/build-tmp nice -n 10 go build -p "${DAXLEASE_K8S_BUILD_JOBS:-2}" -trimpath -tags selinux,notest \
    -ldflags "$ldflags" -o "$bin.new" "./cmd/$t" >&2
  mv -f "$bin.new" "$bin"
  echo "$bin_key" >"$bin.key"
  say "built $t in $((SECONDS - t0))s ($("$bin" --version 2>&1 | head -1))"
done
rm -rf "$cache/build-tmp"
print_paths
