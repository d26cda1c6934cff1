#!/bin/sh
# The cgroup v2 resource collectors on a real pure-v2 kernel rather than fixture files: a cgroup
# shaped like a kubelet container (systemd driver, containerd) with memory.max, cpu.max and
# pids.max; inside it a CPU hog, a dd holding 16 MiB of anonymous memory and an 8 MiB file on
# tmpfs; then kernsight's /metrics must show each of them for that container.
# Prints `@@ v2:WHAT STATUS DETAIL` lines like run.sh.

. /matrix/settings
. /matrix/lib.sh
MIB=1048576
ID=6b65726e736967687476322d636865636b000000000000000000000000000001
SHORT=$(echo "$ID" | cut -c 1-12)
CGROUP=/sys/fs/cgroup
for level in kubepods.slice kubepods-burstable.slice \
    kubepods-burstable-pod0e5b2f6a_5b7e_4c1e_9d59_6c1f3a1d2e4b.slice "cri-containerd-$ID.scope"; do
    CGROUP="$CGROUP/$level"
    mkdir -p "$CGROUP"
    for controller in memory cpu pids io; do
        echo "+$controller" > "$CGROUP/cgroup.subtree_control" 2> /dev/null
    done
done
# The container's own cgroup holds processes, so it enables nothing for children.
for controller in memory cpu pids io; do echo "-$controller" > "$CGROUP/cgroup.subtree_control" 2> /dev/null; done
echo $((64 * MIB)) > "$CGROUP/memory.max"
echo "20000 100000" > "$CGROUP/cpu.max"
echo 32 > "$CGROUP/pids.max"

# Each workload moves itself into the cgroup before it starts. The memory first: once the hog
# runs, everything in the cgroup shares its 20 ms per 100 ms. dd's 16 MiB buffer, filled from
# /dev/zero, stays resident while dd waits to write it into a pipe nobody reads.
sh -c "echo 0 > $CGROUP/cgroup.procs; dd if=/dev/zero bs=$((16 * MIB)) count=1 2> /dev/null | sleep 600" &
holder=$!
sh -c "echo 0 > $CGROUP/cgroup.procs; dd if=/dev/zero of=/tmp/v2-check-file bs=$MIB count=8 2> /dev/null"
# The kernel's count of memory may lag its charges by a per-CPU batch of 32 pages a CPU
# (MEMCG_CHARGE_BATCH; before 5.13 memory.stat does not fold the CPUs' pending deltas in: on
# 5.10 it showed the 8 MiB file 8 KiB short, dd's 16 MiB 28 KiB short), so the kernel's counts
# are held to what the workloads hold within that, and kernsight's to the kernel's (below).
SLACK=$((32 * 4096 * $(nproc)))
stat_of() { awk -v key="$1" '$1 == key { print $2 }' "$CGROUP/memory.stat"; }
waited=0
until [ "$(stat_of anon)" -ge $((16 * MIB - SLACK)) ] || [ "$waited" -ge 60 ]; do sleep 1; waited=$((waited + 1)); done
sh -c "echo 0 > $CGROUP/cgroup.procs; while :; do :; done" &
hog=$!

start_agent 9465 /tmp/v2-agent.log
# Let the hog run into its quota for a few dozen periods.
sleep 5
wget -q -O /tmp/v2-metrics http://127.0.0.1:9465/metrics
# The kernel's own counts, read at once: kernsight must report what the kernel counts.
kernel_anon=$(stat_of anon)
kernel_shmem=$(stat_of shmem)
kill -TERM "$agent" 2> /dev/null
wait "$agent"
echo "v2 check: $CGROUP"
for file in memory.current memory.stat cpu.max cpu.stat pids.current pids.max cpu.pressure memory.pressure io.pressure; do
    echo "--- $file"
    cat "$CGROUP/$file" 2> /dev/null | head -n 12
done
echo "--- kernsight_container_* series of $SHORT"
grep "^kernsight_container_.*container=\"$SHORT\"" /tmp/v2-metrics

# One series' value of the container: metric name, then label matchers that must all appear.
container_value() { value /tmp/v2-metrics "$@" "container=\"$SHORT\""; }

anon=$(container_value kernsight_container_memory_bytes 'kind="anon"')
shmem=$(container_value kernsight_container_memory_bytes 'kind="shmem"')
max=$(container_value kernsight_container_memory_limit_bytes 'limit="max"')
detail="anon ${anon:-absent} (memory.stat: ${kernel_anon:-absent}, >= $((16 * MIB - SLACK))), shmem ${shmem:-absent} (memory.stat: ${kernel_shmem:-absent}, >= $((8 * MIB - SLACK))), memory.max ${max:-absent} (64 MiB)"
# anon to the kernel's within the batch (the holder's and the hog's shells may still charge a
# page or two between the agent's read and this one); shmem, the file's, exactly.
if within "$anon" "$kernel_anon" "$SLACK" && at_least "$kernel_anon" $((16 * MIB - SLACK)) \
    && equals "$shmem" "$kernel_shmem" && at_least "$kernel_shmem" $((8 * MIB - SLACK)) \
    && equals "$max" $((64 * MIB)); then
    result v2:memory PASS "$detail"
else
    result v2:memory FAIL "$detail"
fi

quota=$(container_value kernsight_container_cpu_quota_seconds)
periods=$(container_value kernsight_container_cpu_throttled_periods_total)
throttled=$(container_value kernsight_container_cpu_throttled_seconds_total)
detail="quota ${quota:-absent} s (0.02), throttled periods ${periods:-absent}, throttled ${throttled:-absent} s"
if equals "$quota" 0.02 && above "$periods" 0 && above "$throttled" 0; then
    result v2:cpu.max PASS "$detail"
else
    result v2:cpu.max FAIL "$detail"
fi

pids=$(container_value kernsight_container_pids)
limit=$(container_value kernsight_container_pids_limit)
detail="pids ${pids:-absent} (>= 2: hog and holder), limit ${limit:-absent} (32)"
if at_least "$pids" 2 && equals "$limit" 32; then result v2:pids PASS "$detail"; else result v2:pids FAIL "$detail"; fi

cpu_some=$(container_value kernsight_container_pressure_stall_seconds_total 'resource="cpu"' 'kind="some"')
memory_some=$(container_value kernsight_container_pressure_stall_seconds_total 'resource="memory"' 'kind="some"')
detail="cpu some ${cpu_some:-absent} s (> 0 under the quota), memory some ${memory_some:-absent} s"
if above "$cpu_some" 0 && [ -n "$memory_some" ]; then result v2:psi PASS "$detail"; else result v2:psi FAIL "$detail"; fi

# The holder's sleep too: everything in the cgroup.
for pid in $(cat "$CGROUP/cgroup.procs"); do kill -KILL "$pid"; done
wait "$hog" "$holder" 2> /dev/null
rm -f /tmp/v2-check-file
