# The local lab's cluster path (sourced by scripts/local-lab.sh; uses its step/note/ok/show/
# die helpers and LAB_DIR, REPO, BUILD_DIR): the way a user installs and uses daxlease.
#   1. a real single-node Kubernetes v1.20.2 (tests/k8s/cluster.sh: containerd, kubelet,
#      controller-manager, scheduler; built once from Debian's source package, cached);
#   2. the images built from this build tree without a daemon (images/build-images.sh) and
#      the CSI sidecars from their upstream sources (cached), imported into its containerd;
#   3. `helm install daxlease charts/daxlease` (the node plugin, the node agent, the operator);
#   4. a claim of the shared class and a pod that mounts it: kubectl get pvc,pv,pods; the
#      node agent keeps the pod's DaxLease;
#   5. kubectl daxlease status, and a recall of the pod's volume: the agent acks for the pod,
#      the operator completes the recall and the lease is granted again at the next epoch.
# Skipped, with the reason, when the sidecars' sources are not on this machine
# (DAXLEASE_CSI_SIDECAR_SRC, tests/k8s/build-csi-sidecars.sh).

lab_cluster_stop() {
  [[ -n ${CLUSTER_DIR:-} && -d $CLUSTER_DIR ]] || return 0
  note "stopping the cluster (tests/k8s/cluster.sh stop)"
  "$REPO/tests/k8s/cluster.sh" stop "$CLUSTER_DIR" 2>&1 | indent || true
  "$REPO/tests/k8s/cluster.sh" check "$CLUSTER_DIR" 2>&1 | indent || true
}

lab_capacity_published() {
  local c
  c=$(kubectl --kubeconfig "$KUBECONFIG" -n daxlease-system get csistoragecapacities -o \
    'jsonpath={.items[?(@.storageClassName=="daxlease-fsdax-xfs")].capacity}' 2>/dev/null)
  [[ -n $c && $c != 0 ]]
}

lab_cluster() {
  local t0 rc=0 helm prefix
  if [[ -n ${CP_DIR:-} && -f $CP_DIR/pids ]]; then
    "$REPO/tests/k8s/control-plane.sh" stop "$CP_DIR" >/dev/null 2>&1   # the recall step's
  fi
  KUBECTL_DAXLEASE=${KUBECTL_DAXLEASE:-$REPO/$BUILD_DIR/operator/kubectl-daxlease}
  CLUSTER_DIR=$LAB_DIR/cluster
  step "Kubernetes on this machine: build (cached) and start one node"
  note "tests/k8s/build-csi-sidecars.sh: node-driver-registrar, external-provisioner,"
  note "external-resizer, livenessprobe from upstream sources (cold: ~10 min; cached)"
  t0=$SECONDS
  "$REPO/tests/k8s/build-csi-sidecars.sh" 2>&1 >/dev/null | indent || rc=${PIPESTATUS[0]}
  if ((rc == 3)); then
    note "skipped: no kubernetes-csi sidecar sources on this machine (DAXLEASE_CSI_SIDECAR_SRC)"
    CLUSTER_DIR=""
    return 0
  fi
  ((rc == 0)) || die "building the CSI sidecars failed"
  ok "sidecars ready ($((SECONDS - t0)) s)"
  note "tests/k8s/cluster.sh start: kube-controller-manager, kube-scheduler, kubelet built"
  note "from Debian's kubernetes source package (cold: ~8 min; cached), containerd, CNI bridge"
  t0=$SECONDS
  "$REPO/tests/k8s/cluster.sh" start "$CLUSTER_DIR" 2>&1 | indent
  [[ ${PIPESTATUS[0]} -eq 0 ]] || die "the cluster did not start; logs in $CLUSTER_DIR"
  set -a
  # shellcheck disable=SC1091
  source "$CLUSTER_DIR/env"
  set +a
  CP_DIR=$CLUSTER_DIR   # kubectl helpers of local-lab.sh
  ok "node $DAXLEASE_NODE Ready ($((SECONDS - t0)) s)"
  show kubectl --kubeconfig "$KUBECONFIG" get nodes -o wide

  step "Images without a registry or daemon (images/build-images.sh, umoci)"
  prefix=$LAB_DIR/prefix
  cmake --install "$REPO/$BUILD_DIR" --prefix "$prefix" --strip >/dev/null
  "$REPO/images/build-images.sh" --prefix "$prefix" --import "$DAXLEASE_CONTAINERD_SOCK" \
    busybox sidecars csi operator 2>&1 >/dev/null | indent
  [[ ${PIPESTATUS[0]} -eq 0 ]] || die "building the images failed"
  ctr --address "$DAXLEASE_CONTAINERD_SOCK" -n k8s.io images ls -q | grep -v '^sha256:' | indent

  step "helm install daxlease charts/daxlease"
  helm=$("$REPO/tests/k8s/install-helm.sh")
  note "(kubeletDir: this cluster's kubelet root; kubernetesAPI: no kube-proxy runs here, so the"
  note " operator uses the node's network, where its two replicas cannot both bind a metrics port)"
  local t_install
  t_install=$SECONDS
  show "$helm" install daxlease "$REPO/charts/daxlease" --namespace daxlease-system --create-namespace \
    --set kubeletDir="$DAXLEASE_KUBELET_DIR" --set node.stateDir="$LAB_DIR/cluster-state" \
    --set kubernetesAPI.host="$DAXLEASE_K8S_HOST" --set kubernetesAPI.port="$DAXLEASE_K8S_PORT" \
    --set operator.hostNetwork=true --set operator.ports.metrics=0 --wait --timeout 180s ||
    die "helm install failed"
  show kubectl --kubeconfig "$KUBECONFIG" -n daxlease-system get pods -o wide
  # The v1.20 scheduler retries a pod it found no storage for only every 60 s: wait for
  # external-provisioner to publish the node's capacity before the first claim.
  wait_for 60 "CSIStorageCapacity of daxlease-fsdax-xfs published" lab_capacity_published

  step "A claim (StorageClass daxlease-shared) and a pod that mounts it"
  note "(a shared volume: the pod's directory holds the volume under volume/, the descriptor and"
  note " the agent's socket for libdaxlease, docs/csi.md; the agent keeps the pod's DaxLease)"
  printf '   $ kubectl apply -f - (PersistentVolumeClaim data, Pod app)\n'
  kubectl --kubeconfig "$KUBECONFIG" apply -f - 2>&1 <<'YAML' | indent
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: daxlease-shared
  resources: {requests: {storage: 320Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: app}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: app
      image: daxlease/busybox:e2e
      imagePullPolicy: Never
      command: [/bin/sh, -c, "echo hello > /data/volume/hello && ls /data && df -h /data/volume && sleep 3600"]
      volumeMounts: [{name: data, mountPath: /data}]
  volumes: [{name: data, persistentVolumeClaim: {claimName: data}}]
YAML
  local t_pod=$SECONDS
  kubectl --kubeconfig "$KUBECONFIG" wait --for=condition=Ready pod/app --timeout=180s >/dev/null ||
    die "pod app did not start"
  ok "pod app Running with its volume: $((SECONDS - t_pod)) s after its creation, $((SECONDS - t_install)) s after helm install"
  show kubectl --kubeconfig "$KUBECONFIG" get pvc,pv,pods
  show kubectl --kubeconfig "$KUBECONFIG" logs app

  local pv volume recall epoch out
  pv=$(kubectl --kubeconfig "$KUBECONFIG" get pvc data -o 'jsonpath={.spec.volumeName}')
  volume=$(kubectl --kubeconfig "$KUBECONFIG" get pv "$pv" -o 'jsonpath={.spec.csi.volumeHandle}')
  step "kubectl daxlease status, and a recall of $volume"
  # The pod's lease (its generation changes with each recall) is Granted.
  lab_pod_lease() {
    local states
    states=$(kubectl --kubeconfig "$KUBECONFIG" get daxleases -o \
      "jsonpath={range .items[?(@.spec.holderPod==\"default/app\")]}{.status.state}{\"\\n\"}{end}" \
      2>/dev/null)
    grep -qx Granted <<<"$states"
  }
  wait_for 60 "the agent's lease for pod default/app Granted" lab_pod_lease
  kd status "$volume"
  epoch=$(jget daxvolumes "$volume" '{.status.epoch}')
  out=$(kd recall "$volume" --grace 10 --reason Manual) || die "kubectl daxlease recall failed"
  echo "$out"
  recall=${out##*daxrecall.daxlease.io/}
  recall=${recall%% *}
  note "the node agent acks for the pod (no libdaxlease client attached: nothing to flush)"
  wait_for 30 "recall $recall Complete" recall_is "$recall" Complete
  lab_resumed() { (($(jget daxvolumes "$volume" '{.status.epoch}') > epoch)) && lab_pod_lease; }
  wait_for 30 "volume resumed past epoch $epoch, the pod's lease granted again" lab_resumed
  show kubectl --kubeconfig "$KUBECONFIG" get daxrecalls
  kd status "$volume"
  ok "recall $recall complete; pod app still running: $(kubectl --kubeconfig "$KUBECONFIG" get pod app -o 'jsonpath={.status.phase}')"
}
