#!/bin/sh
# What the large-node guest runs (cargo xtask test-kernels --large-node): the agent in a memory
# cgroup of a given size with a given map budget, once per line of RUNS in /matrix/settings
# (`NAME BUDGET_MIB MEMORY_MAX_BYTES`). Its output reaches the host on the second serial port;
# lines `@@ NAME KEY VALUE` are what the host asserts on, everything else is the guest's log.
. /matrix/settings

export PATH="$PATH:/usr/bin"
echo "@@ guest possible $(cat /sys/devices/system/cpu/possible)"
echo "@@ guest online $(cat /sys/devices/system/cpu/online)"
echo "@@ guest release $(uname -r)"

run() {
    name=$1 budget=$2 memory_max=$3
    echo
    echo "==== $name: bpf.map_memory_budget_mebibytes = $budget, memory.max = $memory_max"
    cgroup=/sys/fs/cgroup/kernsight-$name
    mkdir "$cgroup"
    echo "$memory_max" > "$cgroup/memory.max"
    echo "@@ $name memory_max $(cat "$cgroup/memory.max")"
    printf '[bpf]\nmap_memory_budget_mebibytes = %s\npin_dir = ""\n' "$budget" > "/tmp/$name.toml"
    sh -c 'echo $$ > "$0/cgroup.procs" && exec kernsight run --config "$1" --listen 127.0.0.1:9464' \
        "$cgroup" "/tmp/$name.toml" > "/tmp/$name.log" 2>&1 &
    agent=$!
    waited=0
    served=no
    while [ "$waited" -lt "$AGENT_WAIT" ]; do
        if wget -q -O "/tmp/$name.metrics" http://127.0.0.1:9464/metrics 2> /dev/null; then
            served=yes
            break
        fi
        kill -0 "$agent" 2> /dev/null || break
        sleep 1
        waited=$((waited + 1))
    done
    echo "@@ $name served $served"
    echo "@@ $name seconds $waited"
    if [ "$served" = yes ]; then
        for metric in kernsight_bpf_map_planned_bytes kernsight_bpf_map_budget_bytes; do
            echo "@@ $name $metric $(grep "^$metric " "/tmp/$name.metrics" | cut -d' ' -f2)"
        done
        echo "@@ $name charged_bytes $(grep '^kernsight_bpf_map_memory_bytes{' "/tmp/$name.metrics" |
            awk '{ sum += $2 } END { printf "%.0f", sum }')"
        echo "@@ $name max_cgroups $(grep '^kernsight_bpf_map_budget_shrunk_bound{key="syscalls.max_cgroups"}' \
            "/tmp/$name.metrics" | cut -d' ' -f2)"
        echo "@@ $name probes_attached $(grep -c '^kernsight_probe_attached{.*} 1' "/tmp/$name.metrics")"
    fi
    echo "@@ $name memory_current $(cat "$cgroup/memory.current")"
    echo "@@ $name oom_kills $(grep '^oom_kill ' "$cgroup/memory.events" | cut -d' ' -f2)"
    echo "@@ $name shrink_lines $(grep -c "over bpf.map_memory_budget_mebibytes = $budget:" "/tmp/$name.log")"
    kill "$agent" 2> /dev/null
    wait "$agent"
    echo "---- $name: the agent's log"
    cat "/tmp/$name.log"
    rmdir "$cgroup"
}

echo "$RUNS" | while read -r name budget memory_max; do
    [ -n "$name" ] && run "$name" "$budget" "$memory_max"
done
echo "==== done"
