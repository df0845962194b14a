#!/usr/bin/env bash
# Two simulated nodes on one machine: two network namespaces joined by a
# veth pair, and the test kube-apiserver reachable inside each of them at the
# same 127.0.0.1:PORT as on the host, so one kubeconfig works everywhere.
#
#   tests/twonode/netns.sh up DIR SERVER_URL [CHANNEL_PORT]
#                                              create; idempotent per DIR
#   tests/twonode/netns.sh down DIR            remove what `up DIR` made
#   tests/twonode/netns.sh reap [PARENT]       for every PARENT/daxlease-twonode-*
#       (default /var/tmp) whose test process (DIR/owner.pid) is gone: kill the
#       daemons still running from DIR/pids and any process whose command line
#       names a path under DIR, unmount what is under DIR
#       (deepest first), detach the loop devices backed there, `down DIR`, and
#       remove DIR. What a crashed test (no destructor) leaves behind; CTest
#       runs it around the tests of the control plane fixture (daxlease_k8s).
#
# SERVER_URL is the apiserver's https://127.0.0.1:PORT (tests/k8s/
# control-plane.sh, DAXLEASE_K8S_SERVER). up writes DIR/netns.env:
#   NODE_A_NETNS, NODE_B_NETNS    namespace names (/run/netns/NAME)
#   NODE_A_ADDR, NODE_B_ADDR      198.51.100.1 and 198.51.100.2 (TEST-NET-2,
#                                 RFC 5737: documentation only, never routed;
#                                 they exist inside the namespaces only)
# and DIR/netns.pids (the socat bridges: "socat PID" per line), the only
# processes `down` signals, after checking they are still socat.
#
# The bridge: a process in another network namespace cannot reach the host's
# loopback, but it can reach a unix socket by its path. So on the host
#   socat UNIX-LISTEN:DIR/apiserver.sock,fork TCP:127.0.0.1:PORT
# and in each namespace
#   socat TCP-LISTEN:PORT,bind=127.0.0.1,fork UNIX-CONNECT:DIR/apiserver.sock
# The apiserver's certificate names 127.0.0.1, so TLS verifies unchanged.
# With CHANNEL_PORT the operator's recall channel (host 127.0.0.1:CHANNEL_PORT,
# which the operator advertises) is bridged the same way through
# DIR/channel.sock; agents trust the certificate the operator publishes, not
# the address.
# Processes enter a namespace with nsenter --net only (no mount namespace),
# so the mounts the node's daemons make stay visible to the test and to
# cleanup.
set -euo pipefail

say() { echo "[twonode] $*" >&2; }
fail() { say "FAILED: $*"; exit 1; }
usage() { sed -n '6,9p' "$0" >&2; exit 2; }

(($# >= 1)) || usage
cmd=$1
if [[ $cmd != reap ]]; then
  (($# >= 2)) || usage
  mkdir -p "$2"
  dir=$(cd "$2" && pwd -P)
fi

ours() {  # PID is alive and is socat (guards against PID reuse)
  local pid=$1
  [[ -n $pid && -r /proc/$pid/cmdline ]] || return 1
  [[ $(tr '\0' '\n' <"/proc/$pid/cmdline" | head -1) == *socat ]]
}

do_down() {
  local name pid
  if [[ -f $dir/netns.pids ]]; then
    while read -r name pid; do
      ours "$pid" || continue
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do ours "$pid" || break; sleep 0.1; done
      ours "$pid" && kill -KILL "$pid" 2>/dev/null || true
    done <"$dir/netns.pids"
    rm -f "$dir/netns.pids"
  fi
  if [[ -f $dir/netns.env ]]; then
    local ns
    for ns in $(sed -n 's/^NODE_[AB]_NETNS=//p' "$dir/netns.env"); do
      # Deleting a namespace destroys its end of the veth, and so the pair.
      if [[ -e /run/netns/$ns ]]; then
        ip netns delete "$ns" || say "could not delete netns $ns"
      fi
    done
    rm -f "$dir/netns.env"
  fi
  rm -f "$dir/apiserver.sock" "$dir/channel.sock"
}

in_ns() { local ns=$1; shift; nsenter --net="/run/netns/$ns" "$@"; }

# bridge PORT SOCK: the host's 127.0.0.1:PORT reachable at the same address
# inside both namespaces, through DIR/SOCK (one socat on the host, one in
# each namespace; all recorded in netns.pids for `down`).
bridge() {
  local p=$1 sock=$dir/$2 ns
  rm -f "$sock"
  setsid socat "UNIX-LISTEN:$sock,fork,mode=600" "TCP:127.0.0.1:$p" \
    </dev/null >>"$dir/socat.log" 2>&1 &
  echo "socat $!" >>"$dir/netns.pids"
  for ns in "$a" "$b"; do
    setsid nsenter --net="/run/netns/$ns" socat \
      "TCP-LISTEN:$p,bind=127.0.0.1,fork,reuseaddr" "UNIX-CONNECT:$sock" \
      </dev/null >>"$dir/socat.log" 2>&1 &
    echo "socat $!" >>"$dir/netns.pids"
  done
}

do_up() {
  local server=${1:?SERVER_URL} cport=${2:-}
  [[ -z $cport || $cport =~ ^[0-9]+$ ]] || fail "channel port '$cport' is not a number"
  [[ $server =~ ^https://127\.0\.0\.1:([0-9]+)$ ]] || fail "server '$server' is not https://127.0.0.1:PORT"
  local port=${BASH_REMATCH[1]}
  ((EUID == 0)) || fail "needs root (network namespaces)"
  local t
  for t in ip socat nsenter curl; do
    command -v "$t" >/dev/null || fail "$t not installed (scripts/install-deps.sh)"
  done
  [[ -f $dir/netns.env ]] && do_down  # a stale run in this DIR
  # Short unique names: interface names are at most 15 bytes.
  local tag a b
  tag=$(printf '%04x%02x' $((RANDOM)) $((RANDOM % 256)))
  a=dlx-$tag-a
  b=dlx-$tag-b
  cat >"$dir/netns.env" <<ENV
NODE_A_NETNS=$a
NODE_B_NETNS=$b
NODE_A_ADDR=198.51.100.1
NODE_B_ADDR=198.51.100.2
ENV
  : >"$dir/netns.pids"
  ip netns add "$a"
  ip netns add "$b"
  ip link add "dlx${tag}a" type veth peer name "dlx${tag}b"
  ip link set "dlx${tag}a" netns "$a"
  ip link set "dlx${tag}b" netns "$b"
  in_ns "$a" ip addr add 198.51.100.1/24 dev "dlx${tag}a"
  in_ns "$b" ip addr add 198.51.100.2/24 dev "dlx${tag}b"
  local ns
  for ns in "$a" "$b"; do
    in_ns "$ns" ip link set lo up
  done
  in_ns "$a" ip link set "dlx${tag}a" up
  in_ns "$b" ip link set "dlx${tag}b" up

  # The apiserver bridge, and the channel's when asked. setsid + all fds to
  # files: out of ctest's process group, and nobody waits on our stdout.
  bridge "$port" apiserver.sock
  [[ -z $cport ]] || bridge "$cport" channel.sock

  # Ready when each namespace reaches the apiserver (any HTTP answer: the
  # request carries no credentials).
  local code ok
  for ns in "$a" "$b"; do
    ok=
    for _ in $(seq 1 100); do
      code=$(in_ns "$ns" curl -sk -o /dev/null -w '%{http_code}' --max-time 2 \
               "https://127.0.0.1:$port/readyz" 2>/dev/null || true)
      if [[ $code =~ ^[1-5][0-9][0-9]$ ]]; then ok=1; break; fi
      sleep 0.1
    done
    [[ -n $ok ]] || { do_down; fail "the apiserver bridge does not answer inside $ns"; }
  done
  say "up: $a (198.51.100.1) <-> $b (198.51.100.2), apiserver 127.0.0.1:$port in both${cport:+, channel 127.0.0.1:$cport}"
}

alive() {  # PID runs (not a zombie) and started at START (not a reused PID)
  local pid=$1 start=$2 stat
  [[ -n $pid && -r /proc/$pid/stat ]] || return 1
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  stat=${stat##*) }  # the fields after "(comm) ": state is the first
  read -r -a f <<<"$stat"
  [[ ${f[0]} != Z && ${f[19]} == "$start" ]]
}

do_reap() {
  local parent=${1:-/var/tmp} d pid start name m loop
  shopt -s nullglob
  for d in "$parent"/daxlease-twonode-*/; do
    d=${d%/}
    [[ -f $d/owner.pid ]] || continue
    read -r pid start <"$d/owner.pid" || continue
    alive "$pid" "$start" && continue
    say "reaping $d (test process $pid is gone)"
    if [[ -f $d/pids ]]; then
      while read -r name pid start; do
        alive "$pid" "$start" && kill -KILL "$pid" 2>/dev/null || true
      done <"$d/pids"
    fi
    # Clients the test ran through nsenter (not in pids): anything whose
    # command line names a path under DIR.
    local c
    for c in /proc/[0-9]*/cmdline; do
      { tr '\0' ' ' <"$c"; } 2>/dev/null | grep -qF "$d/" || continue
      pid=${c#/proc/}
      pid=${pid%/cmdline}
      [[ $pid != "$$" ]] && kill -KILL "$pid" 2>/dev/null || true
    done
    for _ in 1 2 3; do
      m=$(awk -v d="$d" '$5 == d || index($5, d "/") == 1 {print length($5), $5}' \
            /proc/self/mountinfo | sort -rn | cut -d' ' -f2-)
      [[ -z $m ]] && break
      while read -r name; do umount -l "$name" 2>/dev/null || true; done <<<"$m"
    done
    for loop in $(losetup -nO NAME,BACK-FILE 2>/dev/null | awk -v d="$d" 'index($2, d "/") == 1 {print $1}'); do
      losetup -d "$loop" 2>/dev/null || true
    done
    dir=$d do_down
    rm -rf --one-file-system "$d"
  done
}

case $cmd in
  up) (($# == 3 || $# == 4)) || usage; do_up "$3" "${4:-}" ;;
  down) do_down ;;
  reap) do_reap "${2:-}" ;;
  *) usage ;;
esac
