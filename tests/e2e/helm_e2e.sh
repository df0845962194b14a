#!/usr/bin/env bash
# The path a user takes, on the e2e fixture's single-node cluster (tests/e2e/cluster_up.sh):
#   helm install of the local images (the node plugin, the node agent, the operator), `helm
#   test`; a WaitForFirstConsumer claim mounted by a pod that writes, is deleted and recreated,
#   and reads its data back; the claim expanded while its pod runs and the pod sees the new
#   size; a raw-block claim; the plugin's metrics move; a generic ephemeral volume made and
#   deleted with its pod; a shared volume used by two pods, one through libdaxlease, recalled
#   with `kubectl daxlease recall` while both run (both keep running, their acknowledged data
#   intact, the agent's metrics move); the driver pod killed while a volume is being
#   provisioned, and the claim still binds; `helm upgrade` with changed values (one operator
#   replica, debug logs, one StorageClass fewer); the chart's RBAC against the API calls the
#   audit log recorded during this run; `helm uninstall` leaves no mount, loop device, CSI
#   object, daxlease object or RBAC object behind.
# Prints the measured figures: helm install -> a Running pod with its volume, and pod
# creation -> Running with a fresh claim.
#   tests/e2e/helm_e2e.sh DIR
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
source "$repo/tests/e2e/lib.sh"
mkdir -p "$1"
dir=$(cd "$1" && pwd -P)
skip_if_no_cluster "$dir"
set -a
source "$dir/env"
set +a
helm=$("$repo/tests/k8s/install-helm.sh")
readonly NS=daxlease-e2e RELEASE=daxlease
readonly STATE=$dir/state
# A deleted pod leaves the API only once the kubelet removed its sandbox, and kubelet v1.20
# removes a dead pod's sandbox in its container garbage collection, every minute (a fixed
# period, ContainerGCPeriod), then reports on its 10 s status sync: deletion takes from a
# few seconds up to ~75 s even though the volume is unmounted within a second of the
# container's death (the kubelet log at --v=4 shows "pod sandboxes have not been cleaned
# up" until the GC tick). Waits for a deletion allow for that.
readonly POD_DELETE_TIMEOUT=150s
export KUBECONFIG
k() { kubectl -n "$NS" "$@"; }
version=$(sed -n 's/^project(daxlease VERSION \([0-9.]*\).*/\1/p' "$repo/CMakeLists.txt")

dump() {
  set +e
  echo "=== failure dump" >&2
  k get all,pvc,events -o wide >&2
  kubectl get pv,csinode,csistoragecapacities -A >&2
  local p c
  for p in $(k get pods -o name); do
    for c in $(k get "$p" -o 'jsonpath={.spec.containers[*].name}'); do
      echo "--- $p $c" >&2
      k logs "$p" -c "$c" --tail=30 >&2
    done
    # Why a pod is still there (a container that does not stop, a sandbox not yet removed).
    echo "--- kubelet on $p" >&2
    grep -F "${p#pod/}" "$dir/cluster/kubelet.log" 2>/dev/null | tail -n 15 >&2
  done
  echo "--- processes in uninterruptible sleep" >&2
  ps -eo pid,stat,wchan:32,args | awk 'NR == 1 || $2 ~ /^D/' | cut -c1-200 >&2
}
cleanup() {
  local rc=$?
  set +e
  ((rc == 0)) || dump
  # Leave the cluster as the fixture made it, whatever happened above.
  # The workload pods first, while the node plugin still runs to unmount their volumes.
  k delete pod -l daxlease-e2e=workload --grace-period=1 --timeout="$POD_DELETE_TIMEOUT" >/dev/null 2>&1
  k delete pvc --all --timeout=60s >/dev/null 2>&1
  kubectl delete daxrecalls --all --timeout=30s >/dev/null 2>&1
  "$helm" uninstall "$RELEASE" -n "$NS" --wait --timeout 60s >/dev/null 2>&1
  kubectl delete namespace "$NS" --timeout=60s >/dev/null 2>&1
  exit "$rc"
}
trap cleanup EXIT

agent_metrics_port=$(free_port)
install_values=(
  --set "kubeletDir=$DAXLEASE_KUBELET_DIR"
  --set "node.stateDir=$STATE"
  --set "kubernetesAPI.host=$DAXLEASE_K8S_HOST" --set "kubernetesAPI.port=$DAXLEASE_K8S_PORT"
  --set operator.hostNetwork=true
  # Two hostNetwork replicas on one node would both bind the operator's metrics port: it is
  # turned on at the upgrade, which leaves one replica.
  --set operator.ports.metrics=0
  --set image.csi.pullPolicy=Never --set image.operator.pullPolicy=Never
  --set image.agent.pullPolicy=Never
  # The node pods use the host's network, where other clusters and tests may run: ports of
  # our own.
  --set node.ports.agentFabric="$(free_port)" --set node.ports.agentMetrics="$agent_metrics_port"
  --set node.ports.healthz="$(free_port)" --set node.ports.registrarHealthz="$(free_port)"
  --set node.ports.metrics="$(free_port)"
  # The recall channel (on by default): only the leader listens, on the node's address here.
  --set operator.ports.channel="$(free_port)"
  --set node.provisioner.capacityPollInterval=5s
  --set test.image.repository=daxlease/busybox --set test.image.tag=e2e
)

# A pod running busybox with claim CLAIM at /data (or /dev/xvda for a block claim).
pod_yaml() { # name claim mode command
  local name=$1 claim=$2 mode=$3 cmd=$4 mount
  if [[ $mode == block ]]; then
    mount="volumeDevices: [{name: data, devicePath: /dev/xvda}]"
  else
    mount="volumeMounts: [{name: data, mountPath: /data}]"
  fi
  cat <<EOF
apiVersion: v1
kind: Pod
metadata: {name: $name, labels: {daxlease-e2e: workload}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: main
      image: daxlease/busybox:e2e
      imagePullPolicy: Never
      command: [/bin/sh, -c, "$cmd"]
      $mount
  volumes: [{name: data, persistentVolumeClaim: {claimName: $claim}}]
EOF
}
claim_yaml() { # name class size [Block]
  cat <<EOF
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: $1}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: $2
  volumeMode: ${4:-Filesystem}
  resources: {requests: {storage: $3}}
EOF
}
running() { [[ $(k get pod "$1" -o 'jsonpath={.status.phase}') == Running ]]; }
succeeded() { [[ $(k get pod "$1" -o 'jsonpath={.status.phase}') == Succeeded ]]; }
gone() { ! k get "$@" >/dev/null 2>&1; }

# --- 1. helm lint + install --------------------------------------------------------------
loops_before=$(plugin_loops)
"$helm" lint --strict "$repo/charts/daxlease" >/dev/null || fail "helm lint"
kubectl create namespace "$NS" >/dev/null
# The audit log outlives runs on the same cluster: the RBAC check reads this run's calls only.
audit_since=$(date -u +%Y-%m-%dT%H:%M:%S.%6NZ)
t_install=$(now_ms)
"$helm" install "$RELEASE" "$repo/charts/daxlease" -n "$NS" "${install_values[@]}" >/dev/null
say "helm install done; waiting for the node plugin"
k rollout status daemonset/daxlease-node --timeout=180s >/dev/null || fail "node DaemonSet not ready"
k rollout status daemonset/daxlease-agent --timeout=120s >/dev/null || fail "agent DaemonSet not ready"
wait_until 60 "CSINode lists dax.daxlease.io" \
  sh -c "kubectl get csinode $DAXLEASE_NODE -o jsonpath='{.spec.drivers[*].name}' | grep -q dax.daxlease.io"
k rollout status deployment/daxlease-operator --timeout=120s >/dev/null || fail "operator not ready"
# The scheduler (v1.20) retries a pod it found no storage for only every 60 s: a claim made
# before external-provisioner published the node's capacity would wait that long.
capacity_published() {
  local c
  c=$(k get csistoragecapacities -o \
    'jsonpath={.items[?(@.storageClassName=="daxlease-fsdax-xfs")].capacity}')
  [[ -n $c && $c != 0 ]]
}
wait_until 60 "CSIStorageCapacity of daxlease-fsdax-xfs published" capacity_published
say "node plugin registered, capacity published, operator ready"

# --- 2. WaitForFirstConsumer claim: write, delete the pod, recreate, read back --------------
claim_yaml data daxlease-fsdax-xfs 320Mi | k apply -f - >/dev/null
sleep 1
[[ $(k get pvc data -o 'jsonpath={.status.phase}') == Pending ]] \
  || fail "a WaitForFirstConsumer claim bound before any pod used it"
t_pod=$(now_ms)
pod_yaml writer data fs "echo hello-from-writer >/data/greeting && sync && sleep 3600" | k apply -f - >/dev/null
wait_until 120 "writer Running" running writer
t_running=$(now_ms)
install_to_running=$((t_running - t_install))
pod_to_running=$((t_running - t_pod))
say "MEASURED helm install -> Running pod with its volume: $((install_to_running / 1000)).$(((install_to_running % 1000) / 100)) s"
say "MEASURED pod creation -> Running with a fresh claim: $((pod_to_running / 1000)).$(((pod_to_running % 1000) / 100)) s"
echo "install_to_running_ms=$install_to_running pod_to_running_ms=$pod_to_running" >>"$dir/timings"
[[ $(k get pvc data -o 'jsonpath={.status.phase}') == Bound ]] || fail "claim not Bound"
pv=$(k get pvc data -o 'jsonpath={.spec.volumeName}')
node_affinity=$(kubectl get pv "$pv" -o 'jsonpath={.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0].key}')
[[ $node_affinity == daxlease.io/node ]] || fail "PV $pv has no daxlease.io/node topology (got '$node_affinity')"
wait_until 30 "writer's file" k exec writer -- cat /data/greeting
k delete pod writer --wait=true --timeout="$POD_DELETE_TIMEOUT" >/dev/null
pod_yaml reader data fs "cat /data/greeting; sleep 3600" | k apply -f - >/dev/null
wait_until 120 "reader Running" running reader
wait_until 30 "reader's log" sh -c "kubectl -n $NS logs reader | grep -qx hello-from-writer"
say "data written by one pod read back by its successor"

# --- 3. the claim expanded while the pod runs ---------------------------------------------
size_kib() { k exec reader -- df -k /data | awk 'NR == 2 {print $2}'; }
before=$(size_kib)
k patch pvc data --type merge -p '{"spec":{"resources":{"requests":{"storage":"640Mi"}}}}' >/dev/null
# 320 Mi more, less what the filesystem's metadata takes (xfs keeps its 64 MiB log).
grown() { (($(size_kib) > before + 300 * 1024)); }
wait_until 120 "the pod sees the grown filesystem (was ${before} KiB)" grown
wait_until 60 "claim capacity 640Mi" \
  sh -c "[ \"\$(kubectl -n $NS get pvc data -o jsonpath='{.status.capacity.storage}')\" = 640Mi ]"
say "expanded online: ${before} KiB -> $(size_kib) KiB, seen inside the running pod"

# --- 4. raw block claim, and the plugin's metrics move -------------------------------------
# csi_plugin_operations_seconds_count of one method with code OK, from the node's /metrics.
metrics_port=$(k get daemonset daxlease-node -o \
  'jsonpath={.spec.template.spec.containers[0].ports[?(@.name=="metrics")].containerPort}')
ops_ok() {
  curl -fsS --max-time 5 "http://127.0.0.1:$metrics_port/metrics" |
    awk -v m="method_name=\"/csi.v1.$1\"" 'index($0, "csi_plugin_operations_seconds_count{") == 1 &&
      index($0, m) && index($0, "grpc_status_code=\"OK\"") && index($0, "driver_name=\"dax.daxlease.io\"") {n += $NF}
      END {print n + 0}'
}
creates_before=$(ops_ok Controller/CreateVolume)
publishes_before=$(ops_ok Node/NodePublishVolume)
((creates_before >= 1 && publishes_before >= 1)) \
  || fail "metrics: CreateVolume=$creates_before NodePublishVolume=$publishes_before OK calls after a mounted claim"
claim_yaml raw daxlease-fsdax-ext4 64Mi Block | k apply -f - >/dev/null
pod_yaml block raw block \
  "echo block-data | dd of=/dev/xvda conv=fsync 2>/dev/null && dd if=/dev/xvda bs=10 count=1 2>/dev/null && echo && sleep 3600" \
  | k apply -f - >/dev/null
wait_until 120 "block pod Running" running block
wait_until 30 "block pod read back its write" sh -c "kubectl -n $NS logs block | grep -qx block-data"
say "raw block claim: written and read back through /dev/xvda"
creates_after=$(ops_ok Controller/CreateVolume)
((creates_after > creates_before)) \
  || fail "metrics: CreateVolume OK count $creates_before -> $creates_after after one more claim"
say "metrics: csi_plugin_operations_seconds CreateVolume OK $creates_before -> $creates_after"

# --- 4b. a generic ephemeral volume: the claim lives and dies with its pod ------------------
# (spec.volumes[].ephemeral.volumeClaimTemplate; docs/csi.md "Ephemeral volumes".) The claim
# <pod>-<volume> is made with the pod, owned by it, provisioned and mounted; once the pod is
# gone Kubernetes deletes the claim and the provisioner the volume (checked after step 5:
# the pod's deletion waits for the kubelet's GC minute).
cat <<EOF | k apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata: {name: scratch, labels: {daxlease-e2e: workload}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: main
      image: daxlease/busybox:e2e
      imagePullPolicy: Never
      command: [/bin/sh, -c, "echo scratch-data >/scratch/f && cat /scratch/f && sleep 3600"]
      volumeMounts: [{name: scratch, mountPath: /scratch}]
  volumes:
    - name: scratch
      ephemeral:
        volumeClaimTemplate:
          spec:
            storageClassName: daxlease-fsdax-ext4
            accessModes: [ReadWriteOnce]
            resources: {requests: {storage: 64Mi}}
EOF
wait_until 180 "scratch Running with its ephemeral volume" running scratch
wait_until 30 "scratch wrote and read its volume" sh -c "kubectl -n $NS logs scratch | grep -qx scratch-data"
[[ $(k get pvc scratch-scratch -o 'jsonpath={.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}') == Pod/scratch ]] \
  || fail "ephemeral claim scratch-scratch is not owned by pod scratch"
scratch_pv=$(k get pvc scratch-scratch -o 'jsonpath={.spec.volumeName}')
[[ $(kubectl get pv "$scratch_pv" -o 'jsonpath={.spec.csi.driver}') == dax.daxlease.io ]] \
  || fail "ephemeral claim's volume $scratch_pv is not the driver's"
mounted=$(k exec scratch -- sh -c 'grep " /scratch " /proc/mounts')
[[ -n $mounted ]] || fail "no mount at /scratch in the pod"
k delete pod scratch --wait=false >/dev/null
say "generic ephemeral volume: claim scratch-scratch (PV $scratch_pv) made with the pod, mounted, written; pod deleted"

# --- 5. a shared volume, two pods (one through libdaxlease), a recall while both run ----------
# The agent (its own DaemonSet) keeps one DaxLease per publish. Pod `plain` appends numbered
# lines to a file through the mount and prints each one it synced; pod `lib` (daxlease-io from
# the node image) writes checksummed blocks into the volume's data file through libdaxlease,
# persisting each, for PATTERN_SECONDS, then verifies them all. `kubectl daxlease recall`
# recalls both leases while they run: lib's client flushes and acks, plain's lease (no
# client attached) is acked by its agent at once; the operator completes the recall and
# resumes the volume at the next epoch, and the agent has both publishes granted again.
readonly BLOCK=65536 PATTERN_SECONDS=30
kd() { "$dir/prefix/bin/kubectl-daxlease" --kubeconfig "$KUBECONFIG" "$@"; }   # cluster_up.sh installed it
jget() { kubectl get "$1" "$2" -o "jsonpath=$3" 2>/dev/null; }
recall_is() { [[ $(jget daxrecalls "$1" '{.status.phase}') == "$2" ]]; }
agent_metric() { # series [filter]: the sum of the series' samples (the agent's /metrics)
  curl -fsS --max-time 5 "http://127.0.0.1:$agent_metrics_port/metrics" |
    awk -v s="$1" -v f="${2:-}" '(index($0, s "{") == 1 || index($0, s " ") == 1) && index($0, f) {n += $NF}
      END {print n + 0}'
}
wait_until 30 "the agent's /metrics on port $agent_metrics_port" \
  curl -fsS --max-time 5 "http://127.0.0.1:$agent_metrics_port/metrics"
acks_before=$(agent_metric daxlease_agent_recall_acks_total)
claim_yaml shared daxlease-shared 320Mi | k apply -f - >/dev/null
pod_yaml plain shared fs \
  "i=0; while true; do i=\$((i+1)); echo \$i >>/data/volume/plain.log && sync && echo acked \$i; sleep 0.2; done" \
  | k apply -f - >/dev/null
wait_until 120 "plain Running on the shared volume" running plain
cat <<EOF | k apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata: {name: lib, labels: {daxlease-e2e: workload}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: main
      image: daxlease/daxlease-csi:$version
      imagePullPolicy: Never
      command: [/bin/sh, -c, "daxlease-io pattern /data $BLOCK $PATTERN_SECONDS; echo pattern-exit=\$?; daxlease-io verify /data $BLOCK; echo verify-exit=\$?; sleep 3600"]
      env: [{name: DAXLEASE_IO_PACE_MS, value: "20"}]
      volumeMounts: [{name: data, mountPath: /data}]
  volumes: [{name: data, persistentVolumeClaim: {claimName: shared}}]
EOF
wait_until 120 "lib Running on the shared volume" running lib
pv=$(k get pvc shared -o 'jsonpath={.spec.volumeName}')
volume=$(kubectl get pv "$pv" -o 'jsonpath={.spec.csi.volumeHandle}')
granted_leases() {
  kubectl get daxleases -o "jsonpath={range .items[?(@.spec.volume==\"$volume\")]}{.status.state}{\"\\n\"}{end}" |
    grep -c '^Granted$'
}
two_granted() { (($(granted_leases) == 2)); }
wait_until 60 "two Granted leases of $volume (plain, lib)" two_granted
lib_persisting() { k logs lib | grep -q '^persisted'; }
wait_until 30 "lib persisting blocks through libdaxlease" lib_persisting
status=$(kd status "$volume") || fail "kubectl daxlease status $volume"
grep -q "$NS/plain" <<<"$status" && grep -q "$NS/lib" <<<"$status" \
  || fail "kubectl daxlease status does not show both pods' leases: $status"
epoch_before=$(jget daxvolumes "$volume" '{.status.epoch}')
publishes=$(agent_metric daxlease_agent_publishes)
sessions=$(agent_metric daxlease_agent_sessions)
mapped=$(agent_metric daxlease_agent_mapped_volumes)
((publishes >= 2 && sessions >= 1 && mapped >= 1)) \
  || fail "agent metrics: publishes=$publishes sessions=$sessions mapped_volumes=$mapped with two pods on a served volume"
out=$(kd recall "$volume" --grace 30 --reason Manual) || fail "kubectl daxlease recall"
recall=${out#daxrecall.daxlease.io/}
recall=${recall%% *}
wait_until 60 "recall $recall Complete" recall_is "$recall" Complete
released=$(jget daxrecalls "$recall" '{.status.released}')
revoked=$(jget daxrecalls "$recall" '{.status.revoked}')   # omitted when 0
[[ $released == 2 && ${revoked:-0} == 0 ]] || fail "recall $recall: released=$released revoked=$revoked, want 2 and 0"
kubectl get daxrecalls "$recall" | grep -q Complete || fail "kubectl get daxrecalls does not show $recall Complete"
epoch_resumed() { (($(jget daxvolumes "$volume" '{.status.epoch}') > epoch_before)); }
wait_until 30 "volume $volume resumed past epoch $epoch_before" epoch_resumed
wait_until 60 "both publishes granted again after the recall" two_granted
say "recall $recall of shared volume $volume: Complete, released 2, epoch $epoch_before -> $(jget daxvolumes "$volume" '{.status.epoch}')"
# lib keeps persisting at the new epoch; plain keeps appending.
lib_new_epoch() {
  k logs lib | grep '^persisted' | tail -n 1 |
    awk -v e="$epoch_before" '{sub("epoch=", "", $4); exit !($4 > e)}'
}
wait_until 60 "lib persisting at an epoch past $epoch_before" lib_new_epoch
running plain && running lib || fail "a pod stopped during the recall"
acked=$(k logs plain --tail=1 | awk '/^acked/ {print $2}')
[[ -n $acked ]] || fail "plain acknowledged nothing"
k exec plain -- cat /data/volume/plain.log >"$dir/plain.log"
awk -v n="$acked" '$1 != NR {print "line " NR " is " $1; bad = 1; exit} END {if (!bad && NR < n) {print NR " lines, " n " acknowledged"; bad = 1} exit bad}' \
  "$dir/plain.log" || fail "plain's file lost acknowledged lines"
acks=$(agent_metric daxlease_agent_recall_acks_total)
((acks >= acks_before + 2)) || fail "agent metrics: recall_acks_total $acks_before -> $acks after a recall of two leases"
flushes=$(agent_metric daxlease_agent_recall_flush_seconds_count)
((flushes >= 2)) || fail "agent metrics: recall_flush_seconds_count is $flushes"
# The acks went on the recall channel: the agent presented its pod's projected token, the
# operator reviewed it (the RBAC check below sees tokenreviews and pods used).
channel_acks=$(k logs ds/daxlease-agent | grep 'event=agent.recall_acked' | grep -c 'via=channel' || true)
((channel_acks >= 2)) || fail "the agent acked $channel_acks leases on the recall channel, want 2"
say "recall channel: $channel_acks acks on the channel"
# lib's pattern ends by itself; its verify reads back every block it wrote.
pattern_done() { k logs lib | grep -q '^verify-exit='; }
wait_until $((PATTERN_SECONDS + 60)) "lib's pattern and verify" pattern_done
lib_log=$(k logs lib)
grep -qx 'pattern-exit=0' <<<"$lib_log" || fail "lib's pattern failed: $lib_log"
grep -qx 'verify-exit=0' <<<"$lib_log" || fail "lib's verify failed: $lib_log"
last=$(grep '^persisted' <<<"$lib_log" | awk '{sub("seq=", "", $2); n = $2} END {print n}')
maxseq=$(grep '^blocks=' <<<"$lib_log" | sed 's/.*maxseq=//')
[[ -n $last && $maxseq == "$last" ]] || fail "lib persisted up to seq $last, its verify found up to $maxseq: $lib_log"
say "plain: $acked lines acknowledged, all there; lib: $last blocks persisted across the recall, verified ($(grep '^blocks=' <<<"$lib_log"))"
say "agent metrics: publishes=$publishes sessions=$sessions mapped_volumes=$mapped recall_acks_total $acks_before -> $acks"
kubectl delete daxrecall "$recall" >/dev/null
# Their deletion takes the kubelet's GC minute: it runs while the next steps do (the claim and
# its volume go once both pods are gone; step 10 checks nothing is left).
k delete pod plain lib --wait=false >/dev/null
k delete pvc shared --wait=false >/dev/null

# The ephemeral claim and its volume went with their pod (step 4b).
scratch_gone() { gone pvc scratch-scratch && gone pv "$scratch_pv"; }
wait_until 150 "ephemeral claim scratch-scratch and PV $scratch_pv deleted with pod scratch" scratch_gone
say "ephemeral volume: claim and PV $scratch_pv deleted after its pod"

# --- 6. helm test ----------------------------------------------------------------------------
"$helm" test "$RELEASE" -n "$NS" --timeout 180s >/dev/null || fail "helm test"
say "helm test passed"

# --- 7. the driver pod killed while a volume is provisioned ------------------------------------
claim_yaml crash daxlease-fsdax-xfs 320Mi | k apply -f - >/dev/null
pod_yaml crasher crash fs "echo survived >/data/f && cat /data/f && sleep 3600" | k apply -f - >/dev/null
# The provisioner picks the claim up once the scheduler selects the node.
wait_until 60 "the claim's selected node" \
  sh -c "kubectl -n $NS get pvc crash -o jsonpath='{.metadata.annotations}' | grep -q volume.kubernetes.io/selected-node"
old=$(k get pods -l app.kubernetes.io/component=node -o 'jsonpath={.items[0].metadata.name}')
k delete pod "$old" --grace-period=0 --force >/dev/null 2>&1
say "node pod $old killed while the claim was being provisioned"
wait_until 180 "crasher Running after the driver restarted" running crasher
wait_until 30 "crasher wrote" sh -c "kubectl -n $NS logs crasher | grep -qx survived"
[[ $(k get pods -l app.kubernetes.io/component=node -o 'jsonpath={.items[0].metadata.name}') != "$old" ]] \
  || fail "the node pod was not replaced"
k exec reader -- cat /data/greeting | grep -qx hello-from-writer || fail "reader lost its data across the driver restart"
say "provisioning survived the driver pod's death; mounted volumes stayed usable"

# --- 8. helm upgrade with changed values ----------------------------------------------------
# The values' StorageClass list without daxlease-devdax (--set cannot drop a list element).
python3 - "$repo/charts/daxlease/values.yaml" >"$dir/upgrade-values.yaml" <<'PY'
import sys, yaml
classes = yaml.safe_load(open(sys.argv[1]))["storageClasses"]
yaml.safe_dump({"storageClasses": [c for c in classes if c["name"] != "daxlease-devdax"]}, sys.stdout)
PY
op_metrics_port=$(free_port)
fabric_secret() { k get secret "$RELEASE-agent-fabric" -o 'jsonpath={.data.secret}'; }
secret_before=$(fabric_secret)
[[ -n $secret_before ]] || fail "no agent fabric secret after the install"
t_upgrade=$SECONDS
"$helm" upgrade "$RELEASE" "$repo/charts/daxlease" -n "$NS" "${install_values[@]}" \
  -f "$dir/upgrade-values.yaml" --set operator.replicas=1 --set node.logLevel=debug \
  --set operator.ports.metrics="$op_metrics_port" --wait --timeout 180s >/dev/null
say "helm upgrade --wait returned after $((SECONDS - t_upgrade)) s"
gone storageclass daxlease-devdax || fail "upgrade: StorageClass daxlease-devdax still there"
# Every agent must keep the secret the running ones hold: the chart's lookup keeps it.
[[ $(fabric_secret) == "$secret_before" ]] || fail "upgrade: the agents' fabric secret changed"
# external-provisioner drops the capacity object of a class that is gone.
no_devdax_capacity() {
  [[ -z $(k get csistoragecapacities -o \
    'jsonpath={.items[?(@.storageClassName=="daxlease-devdax")].metadata.name}') ]]
}
wait_until 60 "the CSIStorageCapacity of daxlease-devdax deleted" no_devdax_capacity
[[ $(k get deployment daxlease-operator -o 'jsonpath={.spec.replicas}') == 1 ]] || fail "upgrade: replicas"
k rollout status daemonset/daxlease-node --timeout=180s >/dev/null
level=$(k get daemonset daxlease-node -o 'jsonpath={.spec.template.spec.containers[0].env[?(@.name=="DAXLEASE_LOG_LEVEL")].value}')
[[ $level == debug ]] || fail "upgrade: log level is '$level'"
wait_until 60 "CSINode lists dax.daxlease.io after the upgrade" \
  sh -c "kubectl get csinode $DAXLEASE_NODE -o jsonpath='{.spec.drivers[*].name}' | grep -q dax.daxlease.io"
k exec reader -- cat /data/greeting | grep -qx hello-from-writer || fail "reader lost its data across the upgrade"
say "helm upgrade: operator 1 replica, node plugin at debug, daxlease-devdax gone, volumes untouched"

# --- 8b. the operator's metrics move (on since the upgrade) ----------------------------------
op_metric() { # series filter: the sum of the series' samples whose labels contain FILTER
  curl -fsS --max-time 5 "http://127.0.0.1:$op_metrics_port/metrics" |
    awk -v s="$1{" -v f="$2" 'index($0, s) == 1 && index($0, f) {n += $NF} END {print n + 0}'
}
[[ -n $(kubectl get service -n "$NS" daxlease-operator-metrics -o name) ]] \
  || fail "no operator metrics Service"
wait_until 60 "the operator's /metrics on port $op_metrics_port" \
  curl -fsS --max-time 5 "http://127.0.0.1:$op_metrics_port/metrics"
reconciles_before=$(op_metric controller_runtime_reconcile_total 'controller="daxvolume"')
kubectl apply -f - >/dev/null <<YAML
apiVersion: daxlease.io/v1alpha1
kind: DaxVolume
metadata: {name: e2e-metrics}
spec: {sizeBytes: 67108864, mode: fsdax, fsType: xfs, ownerNode: "$DAXLEASE_NODE", share: false}
YAML
reconciled() {
  (($(op_metric controller_runtime_reconcile_total 'controller="daxvolume"') > reconciles_before))
}
# The new replica leads once the old one's lease is released or expired (leaseDuration 15 s).
wait_until 90 "controller_runtime_reconcile_total{controller=daxvolume} moves past $reconciles_before" reconciled
adds=$(op_metric workqueue_adds_total 'name="daxvolume"')
((adds >= 1)) || fail "operator metrics: workqueue_adds_total is $adds after a reconcile"
kubectl delete daxvolume e2e-metrics --timeout=60s >/dev/null
say "operator metrics: reconcile_total $reconciles_before -> $(op_metric controller_runtime_reconcile_total 'controller="daxvolume"'), workqueue_adds_total $adds"

# --- 9. RBAC: every call allowed, every rule used ------------------------------------------------
kubectl get clusterroles,roles -A -l "app.kubernetes.io/instance=$RELEASE" -o json >"$dir/rbac.json"
python3 "$repo/tests/e2e/rbac_check.py" --audit "$dir/cluster/audit.log" --since "$audit_since" \
  --rbac "$dir/rbac.json" \
  --namespace "$NS" --release "$RELEASE" --expected-unused "$repo/tests/e2e/rbac_expected_unused.txt"

# --- 10. uninstall: nothing left -----------------------------------------------------------------
t_uninstall=$SECONDS
# The workload pods (the node plugin unmounts their volumes), then their claims.
k delete pod -l daxlease-e2e=workload --grace-period=1 --wait=true --timeout="$POD_DELETE_TIMEOUT" >/dev/null
k delete pvc --all --wait=true --timeout=90s >/dev/null
wait_until 90 "PVs deleted by the provisioner" \
  sh -c "! kubectl get pv -o jsonpath='{.items[*].spec.csi.driver}' | grep -q dax.daxlease.io"
t_helm_uninstall=$SECONDS
"$helm" uninstall "$RELEASE" -n "$NS" --wait --timeout 120s >/dev/null
# helm waits for the DaemonSets and the Deployment, not their pods: those go when the garbage
# collector deletes them, their containers stop (the plugin's gRPC drains for up to 10 s) and
# the kubelet's container GC removes their sandboxes (up to a minute, see POD_DELETE_TIMEOUT).
wait_until "${POD_DELETE_TIMEOUT%s}" "node pods gone" sh -c "[ -z \"\$(kubectl -n $NS get pods -o name)\" ]"
say "helm uninstall: pods gone $((SECONDS - t_helm_uninstall)) s after it started"
left=$(kubectl get csidriver,storageclass,clusterrole,clusterrolebinding -o name -l "app.kubernetes.io/instance=$RELEASE")
left+=$(k get serviceaccount,role,rolebinding,csistoragecapacities -o name 2>/dev/null | grep -v serviceaccount/default || true)
left+=$(k get secret "$RELEASE-agent-fabric" -o name 2>/dev/null || true)
left+=$(kubectl get daxvolumes,daxleases -o name)
[[ -z $left ]] || fail "helm uninstall left: $left"
gone csidriver dax.daxlease.io || fail "CSIDriver left"
wait_until 60 "CSINode without dax.daxlease.io" \
  sh -c "! kubectl get csinode $DAXLEASE_NODE -o jsonpath='{.spec.drivers[*].name}' | grep -q dax.daxlease.io"
mounts=$(awk -v s="$STATE" -v k="$DAXLEASE_KUBELET_DIR" 'index($2, s) == 1 || (index($2, k) == 1 && $2 ~ /dax.daxlease.io|kubernetes.io~csi/)' /proc/self/mounts)
[[ -z $mounts ]] || fail "mounts left: $mounts"
loops=$(plugin_loops)
((loops <= loops_before)) || fail "loop devices of the node plugin: $loops_before before the install, $loops after:
$(losetup -l -n -O NAME,BACK-FILE | grep /volumes/pvc-)"
images=$(find "$STATE" -name '*.img' 2>/dev/null)
[[ -z $images ]] || fail "volume images left: $images"
say "helm uninstall: no mount, loop device, volume, CSI or RBAC object left ($((SECONDS - t_uninstall)) s with the claims' deletion)"
trap - EXIT
kubectl delete namespace "$NS" --timeout=60s >/dev/null
rm -rf "$STATE"
say "ok"
