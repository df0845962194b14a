#!/usr/bin/env bash
# Runs one SPIN check of docs/model/lease.pml and fails unless the result is
# exactly what is expected:
#   check.sh safety   MODEL WORKDIR   all assertions + invalid end states,
#                                     exhaustive; must find no error
#   check.sh liveness MODEL WORKDIR   LTL recall_completes, acceptance cycles
#                                     under weak fairness (-a -f); no error
#   check.sh crash    MODEL WORKDIR   -DCRASHES=1: one operator crash at any
#                                     point (two holders); as safety
#   check.sh broken   MODEL WORKDIR   -DBROKEN_EARLY_COMPLETE; SPIN MUST find
#                                     an assertion violation (proof the check
#                                     can fail)
# Any run that is truncated (depth limit, "search not completed", out of
# memory) fails: a partial search proves nothing.
set -euo pipefail
mode=$1
model=$(readlink -f "$2")
work=$3
cc=${CC:-gcc}
command -v spin >/dev/null || { echo "FAIL: spin is not installed (apt-get install spin)"; exit 1; }
rm -rf "$work/$mode" && mkdir -p "$work/$mode" && cd "$work/$mode"
cp "$model" model.pml

case $mode in
  safety)
    spin_defs=(); cflags=(-DSAFETY -DNOCLAIM -DCOLLAPSE); run=() ;;
  liveness)
    # Holder 1's re-request round is left out here (REQS=0): it comes after
    # the recall and only multiplies the fairness-expanded state space; the
    # safety run covers it.
    spin_defs=(-DREQS=0); cflags=(-DNFAIR=3 -DCOLLAPSE); run=(-a -f -N recall_completes) ;;
  crash)
    # One operator crash at any point (the channel path's soft state lost,
    # everything outstanding re-sent), exhaustive, with two holders (NH=2,
    # the model's default under CRASHES): holder 0 may release, holder 1
    # re-requests and may crash. With three holders the search did not end
    # (5.3 GB, 15 CPU-minutes); two take about 3 M states, 300 MB.
    spin_defs=(-DCRASHES=1); cflags=(-DSAFETY -DNOCLAIM -DCOLLAPSE); run=() ;;
  broken)
    spin_defs=(-DBROKEN_EARLY_COMPLETE); cflags=(-DSAFETY -DNOCLAIM -DCOLLAPSE); run=() ;;
  *) echo "usage: $0 safety|liveness|crash|broken MODEL WORKDIR"; exit 2 ;;
esac

start=$(date +%s)
spin "${spin_defs[@]}" -a model.pml >spin.out 2>&1 || { cat spin.out; echo "FAIL: spin -a"; exit 1; }
"$cc" -O2 -w "${cflags[@]}" -o pan pan.c || { echo "FAIL: compiling pan.c"; exit 1; }
set +e
./pan -m200000 -w24 "${run[@]}" >pan.out 2>&1
rc=$?
set -e
cat pan.out | grep -v '^Depth=' || true
echo "check.sh: mode=$mode pan exit=$rc time=$(( $(date +%s) - start ))s"

fail() { echo "FAIL ($mode): $*"; exit 1; }
grep -q 'Search not completed' pan.out && [ "$mode" != broken ] && fail "search not completed"
grep -qi 'max search depth too small' pan.out && fail "depth limit reached (raise -m)"
grep -qi 'out of memory' pan.out && fail "out of memory: search truncated"
grep -q 'errors: ' pan.out || fail "no verifier summary"
errors=$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' pan.out | tail -1)

case $mode in
  safety|crash)
    grep -q 'assertion violations	+' pan.out || fail "assertions not checked"
    grep -q 'invalid end states	+' pan.out || fail "end states not checked"
    [ "$errors" = 0 ] || { spin "${spin_defs[@]}" -t -p model.pml | tail -60; fail "$errors error(s)"; } ;;
  liveness)
    grep -q 'acceptance   cycles 	+ (fairness enabled)' pan.out || fail "acceptance cycles with fairness not checked"
    grep -q 'never claim         	+ (recall_completes)' pan.out || fail "LTL claim not used"
    [ "$errors" = 0 ] || { spin -t -p -N recall_completes model.pml | tail -60; fail "$errors error(s)"; } ;;
  broken)
    [ "$errors" -ge 1 ] || fail "SPIN did not find the deliberately broken variant's counterexample"
    grep -q 'assertion violated' pan.out || fail "expected an assertion violation"
    # The counterexample must replay.
    spin -DBROKEN_EARLY_COMPLETE -t model.pml >trail.out 2>&1 || true
    grep -q 'assertion violated' trail.out || fail "counterexample trail does not replay"
    echo "OK: counterexample found and replayed, as expected" ;;
esac
echo "PASS ($mode)"
