#!/usr/bin/env bash
# The runtime benchmark matrix behind results/runtime_bench.md: for each consistency model
# and k, a 10-node `dht cluster` (one process), then for each mix, client count and
# routing one `dht bench --baseline --json` run: ringkv and the in-process baseline server
# under the same load, back to back. One JSON line per run goes to $OUT; a Markdown table
# of the ratios is printed at the end. The cluster's CPU time during a run (user + system,
# from /proc, the baseline run included though the cluster is then idle but for its
# heartbeats; for the query mix the untimed preload too) per timed operation is recorded
# as cluster_cpu_us_per_op: steadier than throughput on a shared machine.
#
# Needs a release build (cargo build --release -p ringkv-cli) and jq.
#
#   experiments/runtime_bench.sh                      # the whole matrix
#   MODELS=chain KS=3 CLIENTS="1 64" experiments/runtime_bench.sh
#   OUT=all.jsonl experiments/runtime_bench.sh summary  # the table of the runs in a file
#
# Settings (environment): DHT (the binary), OUT (JSON Lines, appended to), MODELS, KS,
# CLIENTS, ROUTINGS, MIXES, RELAY (1: also run `dht bench --relay`, the floor of keeping
# k copies over sockets, and record its ratios), PIN_CPU (a CPU number: run the cluster's
# threads and the bench on that one CPU, so that no request waits for a cross-CPU wake-up;
# recorded as `pinned`), NODES, SETTLE_S (wait after the cluster starts: the core
# forwards writes in handed-over ranges for 10 s after a membership change), and OPS_1,
# OPS_10, OPS_64 (operations per run for 1, 10 and 64 clients; OPS_OTHER for others).
set -euo pipefail

cd "$(dirname "$0")/.."
DHT=${DHT:-target/release/dht}
OUT=${OUT:-runtime_bench.jsonl}
MODELS=${MODELS:-"chain eventual"}
KS=${KS:-"1 3 5"}
CLIENTS=${CLIENTS:-"1 10 64"}
ROUTINGS=${ROUTINGS:-"random token"}
MIXES=${MIXES:-"insert query"}
NODES=${NODES:-10}
SETTLE_S=${SETTLE_S:-11}
OPS_1=${OPS_1:-3000}
OPS_10=${OPS_10:-10000}
OPS_64=${OPS_64:-20000}
OPS_OTHER=${OPS_OTHER:-10000}
RELAY=${RELAY:-0}
relay_arg=()
if [ "$RELAY" = 1 ]; then relay_arg=(--relay); fi
PIN_CPU=${PIN_CPU:-}
pin=()
if [ -n "$PIN_CPU" ]; then
    command -v taskset >/dev/null || { echo "PIN_CPU needs taskset" >&2; exit 1; }
    pin=(taskset -c "$PIN_CPU")
fi

command -v jq >/dev/null || { echo "jq is required" >&2; exit 1; }

# The table of every run in $OUT, one row per configuration: medians over its runs (several
# sessions appended to one file give several runs per configuration), and the range of
# the throughput ratio.
summary() {
    echo
    echo "| model | k | mix | clients | routing | runs | ringkv ops/s | baseline ops/s | throughput ratio (range) | p50 ratio | p99 ratio | hops | cluster CPU µs/op | errors | relay/baseline throughput (range) | ringkv/relay throughput | relay/baseline p50 | ringkv/relay p50 |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    jq -s -r '
        def r2: . * 100 | round / 100;
        def median: sort | if length % 2 == 1 then .[length / 2 | floor]
            else (.[length / 2 - 1] + .[length / 2]) / 2 end;
        def mid(f): map(f) | median;
        def span(f): (map(f) | min | r2) as $lo | (map(f) | max | r2) as $hi
            | if $lo == $hi then "" else " (\($lo)–\($hi))" end;
        def order: {chain: 0, eventual: 1}[.model] * 1000000 + .k * 10000
            + {insert: 0, query: 1}[.mix] * 1000 + .clients * 10 + {random: 0, token: 1}[.routing]
            + (if .pinned then 5 else 0 end);
        group_by(order) | .[]
        | "| \(.[0].model) | \(.[0].k) | \(.[0].mix) | \(.[0].clients) | \(.[0].routing)\(if .[0].pinned then " (1 CPU)" else "" end) | \(length) | " +
          "\(mid(.ringkv.ops_per_s) | floor) | \(mid(.baseline.ops_per_s) | floor) | " +
          "\(mid(.ratios.throughput) | r2)\(span(.ratios.throughput)) | " +
          "\(mid(.ratios.p50) | r2) | \(mid(.ratios.p99) | r2) | " +
          "\(mid(.ringkv.mean_hops) | r2) | \(mid(.cluster_cpu_us_per_op) | floor) | " +
          "\(map(.ringkv.ops - .ringkv.ok) | add) | " +
          (map(select(.relay_ratios != null)) as $r
           | if ($r | length) == 0 then "– | – | – | – |"
             else "\($r | mid(.relay_ratios.throughput) | r2)\($r | span(.relay_ratios.throughput)) | " +
                  "\($r | mid(.ringkv_over_relay.throughput) | r2) | " +
                  "\($r | mid(.relay_ratios.p50) | r2) | " +
                  "\($r | mid(.ringkv_over_relay.p50) | r2) |" end)' "$OUT"
}
if [ "${1:-}" = "summary" ]; then
    summary
    exit 0
fi
[ -x "$DHT" ] || { echo "no $DHT: cargo build --release -p ringkv-cli" >&2; exit 1; }

TICK_US=$((1000000 / $(getconf CLK_TCK)))

# CPU time (user + system) of process $1 so far, in clock ticks.
cpu_ticks() {
    awk '{print $14 + $15}' "/proc/$1/stat"
}

ops_for() {
    case "$1" in
        1) echo "$OPS_1" ;;
        10) echo "$OPS_10" ;;
        64) echo "$OPS_64" ;;
        *) echo "$OPS_OTHER" ;;
    esac
}

# shellcheck source=experiments/cluster.sh
. experiments/cluster.sh

run=0
for model in $MODELS; do
    for k in $KS; do
        start_cluster "$NODES" "$k" "$model"
        if [ -n "$PIN_CPU" ]; then taskset -a -p -c "$PIN_CPU" "$CLUSTER_PID" >/dev/null; fi
        bootstrap=$BOOTSTRAP
        sleep "$SETTLE_S"
        for mix in $MIXES; do
            for clients in $CLIENTS; do
                for routing in $ROUTINGS; do
                    run=$((run + 1))
                    ops=$(ops_for "$clients")
                    started=$(date +%s)
                    ticks_before=$(cpu_ticks "$CLUSTER_PID")
                    result=$("${pin[@]}" "$DHT" bench --target "$bootstrap" --ops "$ops" --clients "$clients" \
                        --mix "$mix" --routing "$routing" --key-prefix "r$run-" \
                        --baseline "${relay_arg[@]}" --json)
                    ticks=$(($(cpu_ticks "$CLUSTER_PID") - ticks_before))
                    echo "$result" |
                        jq -c --arg model "$model" --argjson k "$k" --arg mix "$mix" \
                            --argjson clients "$clients" --arg routing "$routing" \
                            --argjson started "$started" --argjson ticks "$ticks" \
                            --argjson tick_us "$TICK_US" --arg pinned "$PIN_CPU" \
                            '{model: $model, k: $k, mix: $mix, clients: $clients,
                              routing: $routing, started: $started,
                              pinned: ($pinned != ""),
                              cluster_cpu_us_per_op: ($ticks * $tick_us / .ringkv.ops | floor),
                              ringkv: (.ringkv | {ops, ok, errors, ops_per_s, latency,
                                                  mean_hops, relearns}),
                              baseline: (.baseline | {ops, ok, ops_per_s, latency}),
                              ratios,
                              relay: (.relay | if . then {ops, ok, ops_per_s, latency} else null end),
                              relay_ratios, ringkv_over_relay}' >>"$OUT"
                    tail -n 1 "$OUT" | jq -r '"\(.model) k=\(.k) \(.mix) c=\(.clients) \(.routing): " +
                        "\(.ringkv.ops_per_s | floor)/s vs \(.baseline.ops_per_s | floor)/s, " +
                        "ratio \(.ratios.throughput * 100 | round / 100)" +
                        (if .relay_ratios then ", relay/baseline \(.relay_ratios.throughput * 100 | round / 100)" else "" end)'
                done
            done
        done
        stop_cluster
    done
done

summary
