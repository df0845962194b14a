# Shared by the e2e scripts (sourced): prerequisite checks, progress, waits.
# Exit code 77 = skipped (CTest SKIP_RETURN_CODE); under CI=true a missing prerequisite fails.

e2e_t0=$SECONDS
say() { echo "[e2e +$((SECONDS - e2e_t0))s] $*" >&2; }
fail() { say "FAILED: $*"; exit 1; }
skip() {
  if [[ ${CI:-} == true ]]; then fail "prerequisite missing under CI: $*"; fi
  say "SKIPPED: $*"
  exit 77
}

# The fixture writes DIR/skip when the cluster cannot run here; the tests then skip too.
skip_if_no_cluster() {
  local dir=$1
  [[ -f $dir/skip ]] && skip "$(<"$dir/skip")"
  [[ -f $dir/env ]] || fail "no cluster in $dir (the e2e_cluster_start fixture did not run?)"
  return 0
}

# wait_until SECONDS WHAT COMMAND...: polls COMMAND every 0.5 s.
wait_until() {
  local secs=$1 what=$2
  shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || fail "timed out after ${secs}s: $what"
    sleep 0.5
  done
}

# ms since the epoch, for the measured figures.
now_ms() { date +%s%3N; }

# Loop devices the chart's node plugin made: their backing files are its images,
# /var/lib/daxlease/csi/volumes/pvc-*.img inside its container, which the host sees as that
# path while the container runs and as /volumes/pvc-*.img (relative to the hostPath mount)
# once it is gone. Counted before and after: the tests fail when the count grew.
plugin_loops() {
  losetup -l -n -O BACK-FILE 2>/dev/null |
    grep -c -E '^(/var/lib/daxlease/csi)?/volumes/pvc-[^/]*[.]img( [(]deleted[)])?$' || true
}

# A TCP port free on this machine now (the kernel's pick).
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
