#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (coverage + ASan + UBSan, against
# Debian's libstdc++ like every library we link) and runs each for a bounded
# time from its committed seed corpus. Any crash, sanitizer report, leak,
# timeout or out-of-memory fails the script, with the input kept as an
# artifact. What CI (.ci/run) calls.
#
#   tests/fuzz/run.sh [TARGET...]      default: every target
#
# Environment:
#   FUZZ_SECONDS    time per target (default 60)
#   FUZZ_JOBS       targets run at once (default: nproc, at most 4)
#   FUZZ_BUILD_DIR  build directory (default build-fuzz)
#   FUZZ_SEED       libFuzzer -seed (default: random each run). CI sets a
#                   fixed seed so a gate run explores the same inputs every
#                   time; run without it to search for new bugs.
#   FUZZ_MERGE=1    afterwards, merge what the run found into
#                   tests/fuzz/corpus/TARGET (minimized), to commit
# Output per target in $FUZZ_BUILD_DIR/fuzz-out/TARGET/: log, corpus/ (the
# inputs this run found), crash-*/leak-*/timeout-*/oom-* artifacts.
set -euo pipefail
cd "$(dirname "$0")/../.."

readonly ALL=(csi_requests api_json kubeconfig state_record)
seconds=${FUZZ_SECONDS:-60}
build_dir=${FUZZ_BUILD_DIR:-build-fuzz}
jobs=${FUZZ_JOBS:-$(nproc)}
((jobs > 4)) && jobs=4
targets=("$@")
((${#targets[@]})) || targets=("${ALL[@]}")

start=$SECONDS
echo "fuzz: building ${targets[*]} with clang into $build_dir"
CC=clang CXX=clang++ BUILD_TARGET=daxlease_fuzz \
  scripts/build.sh "$build_dir" -DDAXLEASE_FUZZ=ON -DDAXLEASE_BUILD_BENCH=OFF
echo "fuzz: built in $((SECONDS - start)) s; ${seconds} s per target, $jobs at once"

out_root=$build_dir/fuzz-out
run_one() {
  local t=$1 out=$out_root/$1 extra=()
  rm -rf "$out" && mkdir -p "$out/corpus"
  # csi_requests covers the generated CSI protobuf code, so its coverage map
  # is large and libFuzzer's entropic scheduler spent a third of the time
  # updating feature frequencies: without it the target runs about 3 times
  # as many inputs (measured 69-115 vs 232-285 exec/s) and reaches more.
  [[ $t == csi_requests ]] && extra=(-entropic=0)
  # -timeout: one input running longer is a hang; -rss_limit_mb: a leak or
  # a runaway allocation; the first corpus dir receives new inputs, so the
  # committed seeds stay as they are.
  "$build_dir/tests/fuzz/${t}_fuzz" -max_total_time="$seconds" -timeout=30 \
    -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$out/" \
    ${FUZZ_SEED:+-seed="$FUZZ_SEED"} "${extra[@]}" \
    "$out/corpus" "tests/fuzz/corpus/$t" >"$out/log" 2>&1
}

pids=() names=()
for t in "${targets[@]}"; do
  [[ -d tests/fuzz/corpus/$t ]] || { echo "fuzz: unknown target $t" >&2; exit 2; }
  while (($(jobs -rp | wc -l) >= jobs)); do wait -n || true; done
  run_one "$t" &
  pids+=($!) names+=("$t")
done

failed=0
printf '%-14s %12s %9s %7s %6s  %s\n' target execs exec/s cov corpus result
for i in "${!pids[@]}"; do
  t=${names[$i]} log=$out_root/${names[$i]}/log rc=0
  wait "${pids[$i]}" || rc=$?
  stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -1; }
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  result=ok
  if ((rc != 0)); then result="FAILED (exit $rc)"; failed=1; fi
  printf '%-14s %12s %9s %7s %6s  %s\n' "$t" "$(stat number_of_executed_units)" \
    "$(stat average_exec_per_sec)" "${cov:-?}" \
    "$(find "$out_root/$t/corpus" "tests/fuzz/corpus/$t" -type f | wc -l)" "$result"
done

for t in "${names[@]}"; do
  out=$out_root/$t
  for a in "$out"/crash-* "$out"/leak-* "$out"/timeout-* "$out"/oom-*; do
    [[ -e $a ]] || continue
    failed=1
    echo "=== $t: $a (reproduce: $build_dir/tests/fuzz/${t}_fuzz $a)"
    grep -v '^#\|^INFO\|^stat::\|^Done ' "$out/log" | tail -60
    echo "--- input (base64):"
    base64 "$a" | head -40
  done
done

if [[ ${FUZZ_MERGE:-} == 1 ]] && ((failed == 0)); then
  for t in "${names[@]}"; do
    "$build_dir/tests/fuzz/${t}_fuzz" -merge=1 "tests/fuzz/corpus/$t" \
      "$out_root/$t/corpus" >"$out_root/$t/merge.log" 2>&1
    echo "fuzz: merged into tests/fuzz/corpus/$t ($(ls "tests/fuzz/corpus/$t" | wc -l) files)"
  done
fi

echo "fuzz: $((SECONDS - start)) s in all"
exit "$failed"
