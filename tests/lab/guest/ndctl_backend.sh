# NdctlBackend on the real libndctl (sizes vs the kernel, identity after a
# restart, erase, calls answered during a long erase, no previous tenant's
# data without erase, in-use refusal, foreign namespaces untouched, capacity and
# exhaustion). The region must be empty when this starts and is left empty.
. /lab/lib.sh
export CI=true  # a missing prerequisite fails here instead of skipping
daxlease-lab-ndctl-test >/tmp/ndctl-test.log 2>&1
rc=$?
grep -v '^\[ RUN' /tmp/ndctl-test.log
left=$(ndctl list -N 2>/dev/null | grep -c '"dev"')
say "namespaces left behind: $left"
[ "$left" -eq 0 ] || { ndctl list -N; exit 1; }
exit $rc
