# What the guests' scripts share (run.sh, v2-check.sh, syscall-check.sh source it after
# /matrix/settings).

# A result line the host tabulates: `@@ CELL STATUS DETAIL`, STATUS PASS, FAIL or SKIP.
result() { echo "@@ $1 $2 $3"; }

# start_agent PORT LOG: `kernsight run` on 127.0.0.1:PORT with its log in LOG; $agent is its pid.
# Waits for /healthz (the probes' states are final once it serves) at most AGENT_WAIT seconds,
# or until the agent exits; fails when it does not serve. $waited holds the seconds it took.
start_agent() {
    kernsight run --listen "127.0.0.1:$1" --pin-dir '' > "$2" 2>&1 &
    agent=$!
    waited=0
    until wget -q -O /dev/null "http://127.0.0.1:$1/healthz" 2> /dev/null; do
        kill -0 "$agent" 2> /dev/null && [ "$waited" -lt "$AGENT_WAIT" ] || return 1
        sleep 1
        waited=$((waited + 1))
    done
}

# value FILE NAME [MATCHER]...: the value of the first series NAME in the scrape FILE whose
# labels contain every MATCHER (`reason="NO_SOCKET"`); nothing when there is none.
value() {
    file=$1
    name=$2
    shift 2
    grep "^$name{" "$file" | while read -r series v; do
        ok=yes
        for label in "$@"; do case "$series" in *"$label"*) ;; *) ok=no ;; esac done
        [ "$ok" = yes ] && echo "$v"
    done | head -n 1
}

# Comparisons of a value that may be missing (then false).
at_least() { [ -n "$1" ] && awk -v v="$1" -v min="$2" 'BEGIN { exit !(v >= min) }'; }
equals() { [ -n "$1" ] && awk -v v="$1" -v w="$2" 'BEGIN { exit !(v == w) }'; }
within() { [ -n "$1" ] && [ -n "$2" ] && awk -v v="$1" -v w="$2" -v d="$3" 'BEGIN { exit !(v - w <= d && w - v <= d) }'; }
above() { [ -n "$1" ] && awk -v v="$1" -v min="$2" 'BEGIN { exit !(v > min) }'; }
