# Shared by the benchmark scripts (sourced, not run): start a `dht cluster` in the
# background and stop it. Expects $DHT (the binary); sets $CLUSTER_PID and $BOOTSTRAP.

CLUSTER_PID=""
BOOTSTRAP=""
CLUSTER_LOG=$(mktemp)

# start_cluster NODES K MODEL [VNODES]: start it on ephemeral loopback ports and wait
# until every node has joined (at most 30 s). With VNODES above 1, NODES processes of
# VNODES ring positions each.
start_cluster() {
    local vnodes=()
    if [ "${4:-1}" -gt 1 ]; then vnodes=(--vnodes "$4"); fi
    "$DHT" cluster --nodes "$1" --k "$2" --consistency "$3" "${vnodes[@]}" --base-port 0 \
        >"$CLUSTER_LOG" 2>/dev/null &
    CLUSTER_PID=$!
    BOOTSTRAP=""
    for _ in $(seq 1 300); do
        BOOTSTRAP=$(sed -n 's/^bootstrap: //p' "$CLUSTER_LOG")
        [ -n "$BOOTSTRAP" ] && grep -q 'serving until' "$CLUSTER_LOG" && return 0
        sleep 0.1
    done
    echo "the cluster did not start" >&2
    exit 1
}

stop_cluster() {
    if [ -n "$CLUSTER_PID" ]; then
        kill -TERM "$CLUSTER_PID" 2>/dev/null || true
        # A second signal exits without departing, if the first takes over 60 s.
        for _ in $(seq 1 600); do
            kill -0 "$CLUSTER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -TERM "$CLUSTER_PID" 2>/dev/null || true
        wait "$CLUSTER_PID" 2>/dev/null || true
        CLUSTER_PID=""
    fi
}
trap 'stop_cluster; rm -f "$CLUSTER_LOG"' EXIT
