#!/usr/bin/env bash
# charts/daxlease without a cluster: `helm lint` with the defaults and with the values users
# change most; the schema refuses bad values; kubeletDir reaches every kubelet path; the agent
# (on by default) and its toggle; manifests/ and the chart's crds/ match the chart
# (scripts/render-manifests.sh).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
helm=$(tests/k8s/install-helm.sh)
chart=charts/daxlease
fail() { echo "chart_test: FAILED: $*" >&2; exit 1; }

"$helm" lint --strict "$chart" >/dev/null || fail "helm lint (defaults)"
"$helm" lint --strict "$chart" --set kubeletDir=/var/lib/k0s/kubelet --set node.agent.enabled=true \
  --set operator.replicas=3 --set 'imagePullSecrets[0].name=regcred' --set global.imageRegistry=registry.example \
  --set node.backend=ndctl --set 'node.ndctlRegions={region0,region1}' >/dev/null || fail "helm lint (overrides)"
for bad in node.backend=nfs kubeletDir=relative/path operator.replicas=0 image.csi.pullPolicy=Sometimes \
           'storageClasses[0].parameters.daxlease\.io/mode=ram' unknownValue=1 node.ports.agentFabric=0 \
           node.imagePool.depth=-1 'node.imagePool.classes={btrfs:1Gi}' 'node.imagePool.classes={ext4:1G}' \
           operator.writeConcurrency=0; do
  if "$helm" template t "$chart" --set "$bad" >/dev/null 2>&1; then fail "the schema accepted --set $bad"; fi
done

out=$("$helm" template t "$chart" --set kubeletDir=/var/lib/k0s/kubelet)
if grep -n '/var/lib/kubelet' <<<"$out"; then fail "kubeletDir=/var/lib/k0s/kubelet still renders /var/lib/kubelet"; fi
grep -q 'path: /var/lib/k0s/kubelet/pods' <<<"$out" || fail "pods dir does not follow kubeletDir"
grep -q -- '--kubelet-registration-path=/var/lib/k0s/kubelet/plugins/dax.daxlease.io/csi.sock' <<<"$out" \
  || fail "registration path does not follow kubeletDir"
grep -q 'mountPropagation: Bidirectional' <<<"$out" || fail "no Bidirectional mount"
# The agent reaches its node plugin's socket (devdax migration media) through its mount of
# the plugins dir, which follows kubeletDir as the socket does.
grep -q -- '--plugin-socket=/var/lib/k0s/kubelet/plugins/dax.daxlease.io/csi.sock' <<<"$out" \
  || fail "the agent's --plugin-socket does not follow kubeletDir"
grep -q 'name: plugins-dir, mountPath: /var/lib/k0s/kubelet/plugins,' <<<"$out" \
  || fail "the agent does not mount the plugins dir where the socket is"

# The agent: on by default, its own DaemonSet and account, the socket daxlease-csi is told.
out=$("$helm" template t "$chart")
grep -q 'name: t-daxlease-agent$' <<<"$out" || fail "no agent DaemonSet/ServiceAccount by default"
grep -q -- '--agent-socket=/run/daxlease/agent.sock' <<<"$out" || fail "daxlease-csi not given the agent's socket"
grep -q -- '--socket=/run/daxlease/agent.sock' <<<"$out" || fail "the agent's socket is not where daxlease-csi looks"
grep -q 'path: /var/lib/daxlease/run,' <<<"$out" || fail "no shared host directory for the agent's socket"
grep -q 'kind: Secret' <<<"$out" || fail "no fabric Secret by default"
out=$("$helm" template t "$chart" --set node.agent.enabled=false)
grep -q -e 'name: t-daxlease-agent' -e 'agent-socket' <<<"$out" && fail "agent rendered while node.agent.enabled=false"
out=$("$helm" template t "$chart" --set node.agent.fabricSecret.create=false --set node.agent.fabricSecret.name=mine)
grep -q 'kind: Secret' <<<"$out" && fail "a fabric Secret rendered with fabricSecret.create=false"
grep -q 'secretName: mine,' <<<"$out" || fail "fabricSecret.name not used"

# The recall channel: on by default at both ends (the operator serves it, the agents present a
# projected token for its audience and lose their lease-status rule); off: neither.
out=$("$helm" template t "$chart")
grep -q -- '--channel-address=0.0.0.0:7391' <<<"$out" || fail "the operator does not serve the recall channel"
grep -q -- '--channel-agent-service-account=default:t-daxlease-agent' <<<"$out" \
  || fail "the operator does not take the agents' account"
grep -q 'resources: \[tokenreviews\]' <<<"$out" || fail "the operator cannot review tokens"
grep -q -- '--channel-record=default/t-daxlease-operator-channel' <<<"$out" || fail "the agent is not told the record"
grep -q 'serviceAccountToken: {audience: daxlease-operator,' <<<"$out" || fail "no projected channel token"
# (The agent's rule is the only one naming daxleases/status alone.)
grep -q 'resources: \[daxleases/status\]' <<<"$out" && fail "agents may still write lease status with the channel on"
out=$("$helm" template t "$chart" --set operator.channel.enabled=false)
grep -q -e '--channel' -e 'tokenreviews' -e 'channel-token' <<<"$out" && fail "channel rendered while off"
grep -q 'resources: \[daxleases/status\]' <<<"$out" || fail "agents cannot answer in lease status with the channel off"

# Pools: the operator's lease writes per volume, always passed; the file backend's image pool
# only when it keeps images (depth > 0), never to the ndctl backend (daxlease-csi refuses it).
out=$("$helm" template t "$chart")
grep -q -- '--write-concurrency=8$' <<<"$out" || fail "the operator is not given --write-concurrency"
grep -q -- '--image-pool' <<<"$out" && fail "an image pool rendered with node.imagePool.depth=0"
out=$("$helm" template t "$chart" --set node.imagePool.depth=2 --set 'node.imagePool.classes={ext4:1Gi,xfs:512Mi}' \
  --set operator.writeConcurrency=16)
grep -q -- '--image-pool-depth=2$' <<<"$out" || fail "node.imagePool.depth not passed"
grep -q -- '--image-pool-classes=ext4:1Gi,xfs:512Mi$' <<<"$out" || fail "node.imagePool.classes not passed"
grep -q -- '--write-concurrency=16$' <<<"$out" || fail "operator.writeConcurrency not passed"
out=$("$helm" template t "$chart" --set node.imagePool.depth=2 --set node.backend=ndctl)
grep -q -- '--image-pool' <<<"$out" && fail "an image pool rendered for the ndctl backend"

# hostPID only where the devdax in-use check needs it (ndctl backend).
# (Output captured first: `helm ... | grep -q` under pipefail fails when grep exits early.)
out=$("$helm" template t "$chart")
grep -q 'hostPID' <<<"$out" && fail "hostPID with the file backend"
out=$("$helm" template t "$chart" --set node.backend=ndctl)
grep -q 'hostPID: true' <<<"$out" || fail "no hostPID with ndctl"

# Least privilege: no wildcard anywhere in the rendered RBAC.
if "$helm" template t "$chart" | grep -nE "^\s*(verbs|resources|apiGroups): \[?.*['\"]?\*"; then
  fail "wildcard in RBAC"
fi

scripts/render-manifests.sh --check || fail "manifests/ drifted from the chart: run scripts/render-manifests.sh"
echo "chart_test: ok"
