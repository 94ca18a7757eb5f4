#!/usr/bin/env bash
# User-space instructions per operation, counted by valgrind's callgrind: for a ringkv
# cluster, the in-process baseline server and the relay (`dht bench --baseline --relay`),
# under the same load. Instruction counts do not depend on what else the machine is doing,
# so a change's effect shows up to about 1 % where throughput moves by up to 2x from one
# day to the next; they leave out the kernel (system calls, wake-ups), which throughput
# includes. Behind the instruction section of results/runtime_bench.md.
#
# How: the cluster (one process, 10 nodes) runs under callgrind with failure handling off
# (at valgrind's speed its heartbeats would miss their deadlines); after a warm-up its
# counters are zeroed, one `dht bench` run loads it, and its counters are dumped: that is
# ringkv's server side. Three runs of the bench process itself, also under callgrind, give
# the rest by difference: A = `dht bench` (its clients only), B = `--baseline` (clients
# twice, the baseline server once), C = `--baseline --relay` (clients three times, both
# servers once); baseline = B - 2A, relay = C - B - A. Each figure is instructions over the
# run's operations. Only the insert mix: a query run's untimed preload would count too.
#
#   experiments/instructions.sh                        # chain and eventual, k = 3, 1 and 64 clients
#   MODELS=chain ROUTINGS=random CLIENTS=1 experiments/instructions.sh
#
# Settings (environment): DHT (the binary; a release build), OUT (JSON Lines, appended
# to), MODELS, KS, ROUTINGS, CLIENTS, OPS (per run), NODES, PORT (the cluster's base port),
# KEEP (a directory to keep the callgrind outputs in, for callgrind_annotate: which
# functions the instructions went to).
# Needs valgrind (with callgrind_control and callgrind_annotate) and jq.
set -euo pipefail

cd "$(dirname "$0")/.."
DHT=${DHT:-target/release/dht}
OUT=${OUT:-instructions.jsonl}
MODELS=${MODELS:-"chain eventual"}
KS=${KS:-3}
ROUTINGS=${ROUTINGS:-"random token"}
CLIENTS=${CLIENTS:-"1 64"}
OPS=${OPS:-3000}
NODES=${NODES:-10}
PORT=${PORT:-5900}
KEEP=${KEEP:-}

for tool in valgrind callgrind_control callgrind_annotate jq; do
    command -v "$tool" >/dev/null || { echo "$tool is required" >&2; exit 1; }
done
[ -x "$DHT" ] || { echo "no binary at $DHT (cargo build --release -p ringkv-cli)" >&2; exit 1; }
DHT=$(realpath "$DHT")

work=$(mktemp -d)
cluster_pid=
cleanup() {
    if [ -n "$cluster_pid" ]; then kill "$cluster_pid" 2>/dev/null || true; fi
    if [ -n "$KEEP" ]; then
        mkdir -p "$KEEP"
        cp "$work"/*.out* "$KEEP"/ 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# Total instructions recorded in a callgrind output file.
total() {
    # awk reads to the end: quitting early would fail the pipeline (pipefail) on SIGPIPE.
    callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ && !n++ { gsub(",", "", $1); print $1 }'
}

# The bench process under callgrind; prints its total instructions.
bench_counted() {
    local name=$1
    shift
    valgrind --tool=callgrind --callgrind-out-file="$work/$name.out" \
        "$DHT" bench --target "127.0.0.1:$PORT" "$@" --json >"$work/$name.json" 2>"$work/$name.err" ||
        { echo "bench run $name failed:" >&2; tail -5 "$work/$name.err" >&2; exit 1; }
    total "$work/$name.out"
}

run() {
    local model=$1 k=$2 routing=$3 clients=$4
    local tag="$model-$k-$routing-$clients"
    (cd "$work" && exec valgrind --tool=callgrind --callgrind-out-file="$work/cluster-$tag.out" \
        "$DHT" cluster --nodes "$NODES" --k "$k" --consistency "$model" \
        --base-port "$PORT" --no-failure-handling >"$work/cluster.log" 2>&1) &
    cluster_pid=$!
    for _ in $(seq 1 300); do
        grep -q "serving until" "$work/cluster.log" 2>/dev/null && break
        kill -0 "$cluster_pid" 2>/dev/null || break
        sleep 1
    done
    grep -q "serving until" "$work/cluster.log" ||
        { echo "the cluster did not start:" >&2; tail -5 "$work/cluster.log" >&2; exit 1; }
    # The core forwards writes in handed-over ranges for 10 s after a membership change.
    sleep 12
    local load=(--mix insert --routing "$routing" --clients "$clients" --ops "$OPS")
    "$DHT" bench --target "127.0.0.1:$PORT" "${load[@]}" --key-prefix warm- --json >/dev/null
    callgrind_control -z "$cluster_pid" >/dev/null
    local a b c ringkv
    a=$(bench_counted "a-$tag" "${load[@]}" --key-prefix a-)
    callgrind_control -d "$cluster_pid" >/dev/null
    sleep 1
    ringkv=$(total "$work/cluster-$tag.out.1")
    b=$(bench_counted "b-$tag" "${load[@]}" --key-prefix b- --baseline)
    c=$(bench_counted "c-$tag" "${load[@]}" --key-prefix c- --baseline --relay)
    kill -INT "$cluster_pid" 2>/dev/null || true
    wait "$cluster_pid" 2>/dev/null || true
    cluster_pid=
    local ok
    ok=$(jq '.ok' "$work/a-$tag.json")
    jq -n -c --arg model "$model" --argjson k "$k" --arg routing "$routing" \
        --argjson clients "$clients" --argjson ops "$OPS" --argjson ok "$ok" \
        --argjson ringkv "$ringkv" --argjson a "$a" --argjson b "$b" --argjson c "$c" '
        {model: $model, k: $k, mix: "insert", routing: $routing, clients: $clients, ops: $ops, ok: $ok,
         ringkv_per_op: ($ringkv / $ops | floor),
         client_per_op: ($a / $ops | floor),
         baseline_per_op: (($b - 2 * $a) / $ops | floor),
         relay_per_op: (($c - $b - $a) / $ops | floor)}
        | . + {ringkv_over_relay: (.ringkv_per_op / .relay_per_op * 100 | round / 100),
               ringkv_over_baseline: (.ringkv_per_op / .baseline_per_op * 100 | round / 100)}' |
        tee -a "$OUT"
}

for model in $MODELS; do
    for k in $KS; do
        for routing in $ROUTINGS; do
            for clients in $CLIENTS; do
                run "$model" "$k" "$routing" "$clients"
            done
        done
    done
done
