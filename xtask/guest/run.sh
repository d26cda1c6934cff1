#!/bin/sh
# What each kernel-matrix guest runs (cargo xtask test-kernels). Its output reaches the host on
# the second serial port; lines `@@ CELL STATUS DETAIL` (STATUS: PASS, FAIL or SKIP) are the
# results the host tabulates, everything else is kept as the guest's log.
#
# /matrix/settings sets TEST_TIMEOUT (seconds for one area of the integration tests) and
# AGENT_WAIT (seconds); /matrix/tests.list has one area per line: its name, then the full names
# of the tests of /tests/integration to run in it.
. /matrix/settings
. /matrix/lib.sh

section() { echo; echo "==== $*"; }

result boot PASS "$(uname -r), $(nproc) CPUs, $(cat /sys/fs/cgroup/cgroup.subtree_control)"

# Software emulation (TCG) can run a stale copy of code the kernel is patching on the other
# virtual CPU: an int3 Oops in __schedule or ttwu_do_activate, at the sched_switch and
# sched_wakeup tracepoints. The kernel patches their jump labels and static calls when a
# tracepoint gets its first or second probe or loses one of those, which each test's agent did
# as it attached and detached. Two probes held on each for the whole run (the event's, and the
# command-line recorder that enabling an event starts) leave those sites alone afterwards; with
# the ring buffer off they record nothing.
echo 0 > /sys/kernel/tracing/tracing_on
for event in sched_switch sched_wakeup sched_wakeup_new; do
    echo 1 > "/sys/kernel/tracing/events/sched/$event/enable"
done
export PATH="$PATH:/usr/bin"
KERNSIGHT=/usr/bin/kernsight

section "kernsight --version"
$KERNSIGHT --version

section "kernsight check"
if $KERNSIGHT check --help > /dev/null 2>&1; then
    $KERNSIGHT check
    status=$?
    $KERNSIGHT check -o json
    if [ "$status" = 0 ]; then result check PASS "exit 0"; else result check FAIL "exit $status"; fi
else
    result check SKIP "this kernsight has no check subcommand"
fi

section "kernsight run (smoke)"
if start_agent 9464 /tmp/agent.log; then
    result agent PASS "serving after ${waited}s"
    if wget -q -O /dev/null http://127.0.0.1:9464/readyz 2> /dev/null; then
        result ready PASS "/readyz 200"
    else
        result ready FAIL "/readyz not 200 (a probe is not attached)"
    fi
    wget -q -O /tmp/metrics http://127.0.0.1:9464/metrics
    grep '^kernsight_probe_attached{' /tmp/metrics | while read -r series value; do
        probe=${series#*probe=\"}
        probe=${probe%%\"*}
        if [ "$value" = 1 ]; then
            result "probe:$probe" PASS attached
        elif grep -q "^kernsight_probe_enabled{probe=\"$probe\"} 0" /tmp/metrics; then
            # Off in the default configuration (net_xdp: opt-in).
            result "probe:$probe" SKIP "off by default"
        elif grep -q "^kernsight_probe_supported{probe=\"$probe\"} 0" /tmp/metrics; then
            why=$(grep 'this kernel cannot run it' /tmp/agent.log | grep "\"$probe\"" | tail -n 1 |
                sed 's/.*this kernel cannot run it: //' | cut -c 1-300)
            result "probe:$probe" FAIL "unsupported: ${why:-this kernel cannot run it}"
        else
            why=$(grep 'probe failed to attach' /tmp/agent.log | grep "\"$probe\"" | tail -n 1 |
                sed 's/.*probe failed to attach: //' | cut -c 1-300)
            result "probe:$probe" FAIL "${why:-not attached}"
        fi
    done
    kill -TERM "$agent"
    wait "$agent"
    echo "agent exit status $?"
else
    why=$(grep -i 'error' /tmp/agent.log | tail -n 1 | cut -c 1-300)
    result agent FAIL "${why:-not serving after ${waited}s}"
fi
cat /tmp/agent.log

if [ -x /matrix/v2-check.sh ]; then
    section "pure cgroup v2 resource collectors"
    sh /matrix/v2-check.sh
fi

if [ -x /matrix/syscall-check.sh ]; then
    section "exact syscall counts"
    sh /matrix/syscall-check.sh
fi

section "integration tests"
export KERNSIGHT_PRIVILEGED_TESTS=required RUST_BACKTRACE=0
# One run of the integration binary per area, naming its tests exactly (a filter `oom::` would
# also run `trace_oom::`). Its output goes to the host with each line prefixed by `@| `.
while read -r area tests; do
    [ -n "$area" ] || continue
    section "tests $area::"
    started=$(date +%s)
    # shellcheck disable=SC2086 # one argument per test name
    timeout "$TEST_TIMEOUT" /tests/integration --exact --test-threads=1 $tests < /dev/null > /tmp/test.log 2>&1
    status=$?
    took=$(($(date +%s) - started))
    sed 's/^/@| /' /tmp/test.log
    # The log of a binary killed mid-test may end without a newline.
    echo
    if [ "$status" = 0 ]; then
        result "area:$area" PASS "${took}s"
    elif [ "$status" = 124 ] || [ "$status" = 143 ]; then
        result "area:$area" FAIL "${took}s: timed out after ${TEST_TIMEOUT}s"
    else
        result "area:$area" FAIL "${took}s: exit $status"
    fi
done < /matrix/tests.list
section "done"
