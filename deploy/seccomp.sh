#!/bin/sh
# Writes kernsight's seccomp profile (deploy/kubernetes/seccomp-agent.json and the chart's copy)
# with `kernsight advise seccomp` from a run of the agent: the static binary of deploy/image.sh,
# the shipped configuration (deploy/kubernetes/kernsight.toml: every default family), TLS with
# client certificates as deploy/kubernetes/web.yml serves it, and the DaemonSet's capabilities
# only (BPF, PERFMON, NET_ADMIN), in a cgroup of its own. A second agent (the observer, root,
# loopback) counts that cgroup's syscalls from before the agent starts to after it exits, and
# `kernsight advise seccomp --cgroup ... --agent ...` turns its counts into the profile:
#
#   deploy/image.sh && deploy/seccomp.sh      (root; about a minute)
#
# KERNSIGHT_SECCOMP_BPF_OBJECT=fallback runs both agents with `bpf.object = "fallback"`, for a
# host whose verifier refuses the full build's syscall programs (the user-space code and its
# syscalls are the same; only the programs handed to bpf(2) differ).
#
# What the observation covers: start-up (loading and attaching every default family, pinning in a
# bpffs directory of its own), the CRI client (a socket that answers nothing), scrapes over TLS
# with and without a client certificate, a web config reload, cgroups and processes coming and
# going, the maintenance loops (WINDOW seconds), and shutdown on SIGTERM. The profile allows
# what the agent did and what runc needs after loading the filter; anything else fails with
# EPERM. agent/tests/integration/deploy.rs runs the image under it.
set -eu

deploy=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$deploy")
binary=$root/target/x86_64-unknown-linux-musl/release/kernsight
# Seconds the agent runs between start-up and SIGTERM: every periodic task runs at least once.
run_for=${KERNSIGHT_SECCOMP_RUN:-30}

say() { echo "deploy/seccomp.sh: $*" >&2; }
[ "$(id -u)" = 0 ] || { say "needs root (it loads eBPF programs)"; exit 1; }
[ -x "$binary" ] || { say "$binary is missing: run deploy/image.sh first"; exit 1; }
for tool in openssl curl setpriv python3; do
    command -v "$tool" >/dev/null || { say "$tool is missing"; exit 1; }
done

# What a node has mounted and the DaemonSet mounts into the pod: tracefs, and bpffs for the pins.
grep -q " /sys/kernel/tracing tracefs " /proc/mounts || mount -t tracefs nodev /sys/kernel/tracing
bpffs=$(awk '$3 == "bpf" { print $2; exit }' /proc/mounts)
if [ -z "$bpffs" ]; then
    mount -t bpf -o mode=0700 bpf /sys/fs/bpf
    bpffs=/sys/fs/bpf
fi
v2=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
[ -n "$v2" ] || { say "no cgroup2 hierarchy mounted: the observer counts by v2 cgroup"; exit 1; }

work=$(mktemp -d)
name=kernsight-seccomp-$$
cgroup=$v2/$name
pins=$bpffs/$name
agent="" observer="" cri=""
cleanup() {
    for pid in $agent $observer $cri; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rmdir "$cgroup/churn" "$cgroup" 2>/dev/null || true
    "$binary" cleanup --pin-dir "$pins" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
mkdir "$cgroup"

say "certificates (a CA, the agent's, a scraper's)"
cd "$work"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=kernsight-ca -keyout ca.key -out ca.crt 2>/dev/null
for who in server client; do
    openssl req -newkey rsa:2048 -nodes -subj "/CN=$who" -keyout "$who.key" -out "$who.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=%s\n' \
        "$([ "$who" = server ] && echo serverAuth || echo clientAuth)" >"$who.ext"
    openssl x509 -req -in "$who.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 \
        -extfile "$who.ext" -out "$who.crt" 2>/dev/null
done
sed -e "s|/etc/kernsight/tls/tls.crt|$work/server.crt|" -e "s|/etc/kernsight/tls/tls.key|$work/server.key|" \
    -e "s|/etc/kernsight/tls/ca.crt|$work/ca.crt|" "$deploy/kubernetes/web.yml" >web.yml

# A CRI socket that accepts and closes: the agent's CRI client connects, writes and reads.
python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen(16)
while True:
    c, _ = s.accept()
    c.recv(65536)
    c.close()
' "$work/cri.sock" &
cri=$!

# The shipped configuration; the pins in a directory of this run, the runtime binaries read from
# the host's / (the pod reads the same files under /host), the CRI socket above.
object=${KERNSIGHT_SECCOMP_BPF_OBJECT:-}
sed -e "s|^pin_dir = .*|pin_dir = \"$pins\"|" -e 's|^runtime_root = .*|runtime_root = "/"|' \
    -e "s|^cri_socket = .*|cri_socket = \"$work/cri.sock\"|" "$deploy/kubernetes/kernsight.toml" >kernsight.toml
grep -q "^pin_dir = \"$pins\"" kernsight.toml || { say "kernsight.toml sets no bpf.pin_dir"; exit 1; }
: >observer.toml
if [ -n "$object" ]; then
    sed -i "/^\[bpf\]/a object = \"$object\"" kernsight.toml
    printf '[bpf]\nobject = "%s"\n' "$object" >observer.toml
fi

# ready PORT PID LOG: waits until the agent at PORT answers /readyz 200.
ready() {
    i=0
    until curl -sf "http://127.0.0.1:$1/readyz" >/dev/null; do
        i=$((i + 1))
        [ $i -lt 120 ] && kill -0 "$2" 2>/dev/null || { say "the agent did not become ready:"; cat "$3" >&2; exit 1; }
        sleep 0.5
    done
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
health=$(free_port)
observer_port=$(free_port)

say "the observer counts the syscalls of cgroup /$name"
"$binary" run --config "$work/observer.toml" --listen "127.0.0.1:$observer_port" --pin-dir '' >observer.log 2>&1 &
observer=$!
ready "$observer_port" "$observer" observer.log

say "the agent, with the DaemonSet's capabilities only, runs for ${run_for}s"
caps=-all,+bpf,+perfmon,+net_admin
# The capabilities are set before the move, so that the observer sees the shell's write and exec
# and then the agent alone.
setpriv --bounding-set="$caps" --inh-caps="$caps" --no-new-privs \
    sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$cgroup" \
    "$binary" run --config "$work/kernsight.toml" --listen "127.0.0.1:$port" \
    --web.config.file "$work/web.yml" --health-listen "127.0.0.1:$health" --log-format json \
    >agent.log 2>&1 &
agent=$!
ready "$health" "$agent" agent.log
scrape() {
    curl -sf --cacert ca.crt --cert client.crt --key client.key "https://127.0.0.1:$port/metrics" >metrics.txt
}
scrape
grep -q '^kernsight_probe_attached{probe="syscalls"} 1' metrics.txt || { say "no syscalls probe in /metrics"; exit 1; }
# Refused: no client certificate, and plain HTTP on the TLS port.
if curl -sf --cacert ca.crt "https://127.0.0.1:$port/metrics" >/dev/null 2>&1 ||
    curl -sf "http://127.0.0.1:$port/metrics" >/dev/null 2>&1; then
    say "the agent served /metrics without a client certificate"
    exit 1
fi
end=$(($(date +%s) + run_for))
while [ "$(date +%s)" -lt "$end" ]; do
    # A cgroup and processes coming and going, as pods do; a changed web config is reloaded.
    mkdir -p "$cgroup/churn" && sh -c 'echo $$ >"$0/cgroup.procs"; /bin/true' "$cgroup/churn"
    rmdir "$cgroup/churn" 2>/dev/null || true
    touch web.yml
    scrape
    curl -sf "http://127.0.0.1:$health/healthz" >/dev/null
    sleep 2
done
kill -TERM "$agent"
wait "$agent" || { say "the agent did not exit cleanly on SIGTERM:"; tail -5 agent.log >&2; exit 1; }
agent=""
# The observer reads its counters when scraped: the agent's last syscalls are in.
"$binary" advise seccomp --cgroup "/$name" --agent "127.0.0.1:$observer_port" >profile.json ||
    { say "advise failed"; exit 1; }
python3 -c 'import json, sys; p = json.load(open(sys.argv[1])); assert p["defaultAction"] == "SCMP_ACT_ERRNO"' profile.json
cp profile.json "$deploy/kubernetes/seccomp-agent.json"
cp profile.json "$deploy/helm/kernsight/files/seccomp-agent.json"
say "wrote deploy/kubernetes/seccomp-agent.json and the chart's copy: $(python3 -c '
import json, sys
print(sum(len(r["names"]) for r in json.load(open(sys.argv[1]))["syscalls"]))' profile.json) syscalls allowed"
