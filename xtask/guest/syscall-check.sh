#!/bin/sh
# Exact syscall counts on this kernel and architecture, for guests without the integration tests
# (the arm64 smoke test): in a cgroup of the check's own, the workload (the xtask binary built
# for the guest) makes 200,000 + CALLS getppid calls (`__syscall-loop` warms up with 200,000)
# and OPENS failing openat calls (`__open-loop`, on a missing path); /metrics must count exactly
# those for that cgroup, and nothing of them in the root's.
# Prints `@@ syscalls:WHAT STATUS DETAIL` lines like run.sh.

. /matrix/settings
. /matrix/lib.sh
WORKLOAD=/usr/bin/kernsight-workload
CALLS=20000
WARMUP=200000
OPENS=300
NAME=kernsight-syscall-check
CGROUP=/sys/fs/cgroup/$NAME
mkdir -p "$CGROUP"

start_agent 9466 /tmp/syscall-agent.log
sh -c "echo 0 > $CGROUP/cgroup.procs; exec $WORKLOAD __syscall-loop $CALLS" > /dev/null
sh -c "echo 0 > $CGROUP/cgroup.procs; exec $WORKLOAD __open-loop $OPENS" < /dev/null > /dev/null
wget -q -O /tmp/syscall-metrics http://127.0.0.1:9466/metrics
kill -TERM "$agent" 2> /dev/null
wait "$agent"

echo "--- kernsight_syscall* series of /$NAME"
grep "^kernsight_syscall.*cgroup=\"/$NAME\"" /tmp/syscall-metrics | head -n 40

getppid=$(value /tmp/syscall-metrics kernsight_syscalls_total "cgroup=\"/$NAME\"" 'syscall="getppid"')
want=$((WARMUP + CALLS))
detail="getppid ${getppid:-absent} ($want)"
if equals "$getppid" "$want"; then result syscalls:exact PASS "$detail"; else result syscalls:exact FAIL "$detail"; fi

failed=$(value /tmp/syscall-metrics kernsight_syscall_errors_total "cgroup=\"/$NAME\"" 'syscall="openat"' 'errno="ENOENT"')
detail="openat ENOENT ${failed:-absent} ($OPENS)"
if equals "$failed" "$OPENS"; then result syscalls:errors PASS "$detail"; else result syscalls:errors FAIL "$detail"; fi

rmdir "$CGROUP"
