#!/bin/sh
# Exact syscall counts on this kernel and architecture, for guests without the integration tests
# (the arm64 smoke test): in a cgroup of the check's own, the workload (the xtask binary built
# for the guest) makes 200,000 + CALLS getppid calls (`__syscall-loop` warms up with 200,000)
# and OPENS failing openat calls (`__open-loop`, on a missing path); /metrics must count exactly
# those for that cgroup, and nothing of them in the root's.
# Prints `@@ syscalls:WHAT STATUS DETAIL` lines like run.sh.

# AGENT_WAIT: seconds to wait for the agent to serve.
. /matrix/settings
result() { echo "@@ $1 $2 $3"; }
WORKLOAD=/usr/bin/kernsight-workload
CALLS=20000
WARMUP=200000
OPENS=300
NAME=kernsight-syscall-check
CGROUP=/sys/fs/cgroup/$NAME
mkdir -p "$CGROUP"

kernsight run --listen 127.0.0.1:9466 --pin-dir '' > /tmp/syscall-agent.log 2>&1 &
agent=$!
waited=0
until wget -q -O /dev/null http://127.0.0.1:9466/readyz 2> /dev/null; do
    kill -0 "$agent" 2> /dev/null && [ "$waited" -lt "$AGENT_WAIT" ] || break
    sleep 1
    waited=$((waited + 1))
done
sh -c "echo 0 > $CGROUP/cgroup.procs; exec $WORKLOAD __syscall-loop $CALLS" > /dev/null
sh -c "echo 0 > $CGROUP/cgroup.procs; exec $WORKLOAD __open-loop $OPENS" < /dev/null > /dev/null
wget -q -O /tmp/syscall-metrics http://127.0.0.1:9466/metrics
kill -TERM "$agent" 2> /dev/null
wait "$agent"

# One series' value: metric name, then label matchers that must all appear.
value() {
    name=$1
    shift
    grep "^$name{" /tmp/syscall-metrics | while read -r series v; do
        ok=yes
        for label in "$@"; do case "$series" in *"$label"*) ;; *) ok=no ;; esac done
        [ "$ok" = yes ] && echo "$v"
    done | head -n 1
}
equals() { [ -n "$1" ] && awk -v v="$1" -v w="$2" 'BEGIN { exit !(v == w) }'; }

echo "--- kernsight_syscall* series of /$NAME"
grep "^kernsight_syscall.*cgroup=\"/$NAME\"" /tmp/syscall-metrics | head -n 40

getppid=$(value kernsight_syscalls_total "cgroup=\"/$NAME\"" 'syscall="getppid"')
want=$((WARMUP + CALLS))
detail="getppid ${getppid:-absent} ($want)"
if equals "$getppid" "$want"; then result syscalls:exact PASS "$detail"; else result syscalls:exact FAIL "$detail"; fi

failed=$(value kernsight_syscall_errors_total "cgroup=\"/$NAME\"" 'syscall="openat"' 'errno="ENOENT"')
detail="openat ENOENT ${failed:-absent} ($OPENS)"
if equals "$failed" "$OPENS"; then result syscalls:errors PASS "$detail"; else result syscalls:errors FAIL "$detail"; fi

rmdir "$CGROUP"
