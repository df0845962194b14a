#!/usr/bin/env bash
# A real Kubernetes control plane (etcd + kube-apiserver v1.20.2) on loopback,
# for the k8s-label tests and the local lab.
#
#   tests/k8s/control-plane.sh start DIR   build (cached) + start; idempotent
#   tests/k8s/control-plane.sh stop DIR    stop what `start DIR` started
#   tests/k8s/control-plane.sh env DIR     print DIR/env (shell assignments)
#
# start writes into DIR:
#   kubeconfig        admin (client certificate, group system:masters)
#   kubeconfig-user   an unprivileged token user ("daxlease-test-user"), so
#                     RBAC denials can be tested
#   env               KUBECONFIG, DAXLEASE_KUBECONFIG, DAXLEASE_K8S_SERVER,
#                     DAXLEASE_K8S_ADMIN_TOKEN, DAXLEASE_K8S_USER_TOKEN,
#                     DAXLEASE_ETCD_ENDPOINT, DAXLEASE_K8S_CA
#   pids              "etcd PID" and "kube-apiserver PID": the only processes
#                     stop will signal (after checking they are still ours)
#   pki/, etcd-data/, *.log
# Ports: free 127.0.0.1 ports picked at random. RBAC is on. The apiserver binary
# comes from build-kube.sh (cache: $DAXLEASE_K8S_CACHE).
# DAXLEASE_K8S_SERVICE_ACCOUNTS=1 turns the ServiceAccount admission plugin on (pods get
# their account's token; needs a controller-manager, as cluster.sh starts) and writes every
# request made by a ServiceAccount to DIR/audit.log (audit level Metadata: who, verb,
# resource, response code), from which the e2e label checks the chart's RBAC. Off by default,
# so the k8s label's tests can create pods on a bare control plane. The apiserver always
# reaches kubelets by InternalIP with the admin certificate (node names need not resolve)
# and serves CSIStorageCapacity (storage.k8s.io/v1alpha1, alpha in v1.20).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
say() { echo "[control-plane] $*" >&2; }
fail() { say "FAILED: $*"; exit 1; }

usage() { sed -n '5,7p' "$0" >&2; exit 2; }
(($# == 2)) || usage
cmd=$1
mkdir -p "$2"
dir=$(cd "$2" && pwd -P)

# Is PID alive and running BINARY (guards against PID reuse)?
ours() {
  local pid=$1 bin=$2
  [[ -n $pid && -r /proc/$pid/cmdline ]] || return 1
  tr '\0' '\n' <"/proc/$pid/cmdline" | head -1 | grep -q -- "$bin"
}

stop_pid() {
  local pid=$1 bin=$2
  ours "$pid" "$bin" || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 100); do
    ours "$pid" "$bin" || return 0
    sleep 0.1
  done
  say "$bin ($pid) ignored SIGTERM for 10 s; SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
}

do_stop() {
  [[ -f $dir/pids ]] || { say "nothing recorded in $dir/pids"; return 0; }
  local name pid
  # apiserver first, then etcd.
  while read -r name pid; do
    say "stopping $name ($pid)"
    stop_pid "$pid" "$name"
  done < <(tac "$dir/pids")
  rm -f "$dir/pids"
  rm -rf "$dir/etcd-data"
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_port() {
  local p
  for _ in $(seq 1 100); do
    p=$((20000 + RANDOM % 30000))
    port_free "$p" && port_free $((p + 1)) && { echo "$p"; return 0; }
  done
  fail "no free port"
}

make_pki() {
  local pki=$dir/pki
  [[ -f $pki/done ]] && return 0
  rm -rf "$pki"
  mkdir -p "$pki"
  (
    cd "$pki"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 365 \
      -subj /CN=daxlease-test-ca 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n' >server.ext
    openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=kube-apiserver 2>/dev/null
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 365 \
      -extfile server.ext 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\n' >client.ext
    openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr \
      -subj "/O=system:masters/CN=daxlease-admin" 2>/dev/null
    openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out admin.crt -days 365 \
      -extfile client.ext 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    admin_token=$(openssl rand -hex 16)
    user_token=$(openssl rand -hex 16)
    {
      echo "$admin_token,daxlease-admin-token,uid-admin,\"system:masters\""
      echo "$user_token,daxlease-test-user,uid-user"
    } >tokens.csv
    echo "$admin_token" >admin.token
    echo "$user_token" >user.token
    chmod 600 ./*.key tokens.csv ./*.token
    rm -f ./*.csr ./*.ext
    touch done
  )
}

write_kubeconfigs() {
  local server=$1
  cat >"$dir/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: daxlease-test
  cluster: {server: "$server", certificate-authority: "$dir/pki/ca.crt"}
users:
- name: admin
  user: {client-certificate: "$dir/pki/admin.crt", client-key: "$dir/pki/admin.key"}
contexts:
- name: daxlease-test
  context: {cluster: daxlease-test, user: admin, namespace: default}
current-context: daxlease-test
KC
  cat >"$dir/kubeconfig-user" <<KC
apiVersion: v1
kind: Config
clusters:
- name: daxlease-test
  cluster: {server: "$server", certificate-authority: "$dir/pki/ca.crt"}
users:
- name: user
  user: {token: "$(<"$dir/pki/user.token")"}
contexts:
- name: daxlease-test
  context: {cluster: daxlease-test, user: user, namespace: default}
current-context: daxlease-test
KC
}

ready() {
  local server=$1
  [[ $(curl -sS --max-time 2 --cacert "$dir/pki/ca.crt" \
        -H "Authorization: Bearer $(<"$dir/pki/admin.token")" "$server/readyz" 2>/dev/null) == ok ]]
}

do_start() {
  if [[ -f $dir/pids && -f $dir/env ]]; then
    local server etcd_pid kas_pid
    server=$(sed -n 's/^DAXLEASE_K8S_SERVER=//p' "$dir/env")
    etcd_pid=$(awk '$1 == "etcd" {print $2}' "$dir/pids")
    kas_pid=$(awk '$1 == "kube-apiserver" {print $2}' "$dir/pids")
    if ours "$etcd_pid" etcd && ours "$kas_pid" kube-apiserver && ready "$server"; then
      say "already running at $server"
      return 0
    fi
  fi
  if [[ -f $dir/pids ]]; then
    say "stale state in $dir: stopping what it recorded, then starting afresh"
    do_stop
  fi
  local kas
  kas=$("$here/build-kube.sh" kube-apiserver)
  command -v etcd >/dev/null || fail "etcd not installed (scripts/install-deps.sh: etcd-server)"
  make_pki
  [[ $(dpkg --print-architecture) == amd64 ]] || export ETCD_UNSUPPORTED_ARCH=$(dpkg --print-architecture)

  local attempt etcd_port kas_port etcd_pid kas_pid server extra=(--disable-admission-plugins=ServiceAccount)
  if [[ ${DAXLEASE_K8S_SERVICE_ACCOUNTS:-0} == 1 ]]; then
    cat >"$dir/audit-policy.yaml" <<'POLICY'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    userGroups: ["system:serviceaccounts"]
  - level: None
POLICY
    extra=(--audit-policy-file="$dir/audit-policy.yaml" --audit-log-path="$dir/audit.log"
               --audit-log-maxsize=200)
  fi
  for attempt in 1 2 3; do
    etcd_port=$(pick_port)
    kas_port=$(pick_port)
    server=https://127.0.0.1:$kas_port
    rm -rf "$dir/etcd-data"
    : >"$dir/pids"
    # setsid: out of ctest's process group; all fds to files so a test
    # runner waiting for our stdout does not wait for the daemons.
    setsid etcd --name daxlease-test --data-dir "$dir/etcd-data" \
      --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
      --listen-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
      --initial-advertise-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
      --initial-cluster "daxlease-test=http://127.0.0.1:$((etcd_port + 1))" \
      --quota-backend-bytes $((2 * 1024 * 1024 * 1024)) \
      </dev/null >"$dir/etcd.log" 2>&1 &
    etcd_pid=$!
    echo "etcd $etcd_pid" >>"$dir/pids"
    local ok=
    for _ in $(seq 1 100); do
      if curl -fsS --max-time 1 "http://127.0.0.1:$etcd_port/health" 2>/dev/null | grep -q '"health":"true"'; then
        ok=1
        break
      fi
      ours "$etcd_pid" etcd || break
      sleep 0.1
    done
    if [[ -z $ok ]]; then
      say "etcd did not come up (attempt $attempt):"
      tail -5 "$dir/etcd.log" >&2
      do_stop
      continue
    fi
    setsid "$kas" --etcd-servers="http://127.0.0.1:$etcd_port" \
      --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$kas_port" --insecure-port=0 \
      --tls-cert-file="$dir/pki/server.crt" --tls-private-key-file="$dir/pki/server.key" \
      --client-ca-file="$dir/pki/ca.crt" --token-auth-file="$dir/pki/tokens.csv" \
      --authorization-mode=Node,RBAC --cert-dir="$dir/pki/generated" \
      --service-account-key-file="$dir/pki/sa.pub" --service-account-signing-key-file="$dir/pki/sa.key" \
      --service-account-issuer=https://kubernetes.default.svc.cluster.local \
      --service-cluster-ip-range=10.0.0.0/24 --endpoint-reconciler-type=none --allow-privileged=true \
      --kubelet-preferred-address-types=InternalIP,Hostname \
      --kubelet-client-certificate="$dir/pki/admin.crt" --kubelet-client-key="$dir/pki/admin.key" \
      --feature-gates=CSIStorageCapacity=true,GenericEphemeralVolume=true \
      --runtime-config=storage.k8s.io/v1alpha1=true \
      "${extra[@]}" --profiling=false \
      </dev/null >"$dir/kube-apiserver.log" 2>&1 &
    kas_pid=$!
    echo "kube-apiserver $kas_pid" >>"$dir/pids"
    ok=
    for _ in $(seq 1 600); do
      if ready "$server"; then
        ok=1
        break
      fi
      ours "$kas_pid" kube-apiserver || break
      sleep 0.1
    done
    if [[ -z $ok ]]; then
      say "kube-apiserver did not become ready (attempt $attempt):"
      tail -15 "$dir/kube-apiserver.log" >&2
      do_stop
      continue
    fi
    write_kubeconfigs "$server"
    cat >"$dir/env" <<ENV
KUBECONFIG=$dir/kubeconfig
DAXLEASE_KUBECONFIG=$dir/kubeconfig
DAXLEASE_K8S_USER_KUBECONFIG=$dir/kubeconfig-user
DAXLEASE_K8S_SERVER=$server
DAXLEASE_K8S_CA=$dir/pki/ca.crt
DAXLEASE_K8S_ADMIN_TOKEN=$(<"$dir/pki/admin.token")
DAXLEASE_K8S_USER_TOKEN=$(<"$dir/pki/user.token")
DAXLEASE_ETCD_ENDPOINT=http://127.0.0.1:$etcd_port
ENV
    say "ready: $server (etcd $etcd_pid on :$etcd_port, kube-apiserver $kas_pid); kubeconfig $dir/kubeconfig"
    return 0
  done
  fail "could not start the control plane; logs in $dir"
}

case $cmd in
  start) do_start ;;
  stop) do_stop ;;
  env) cat "$dir/env" ;;
  *) usage ;;
esac
