#!/usr/bin/env bash
# Load on a ring just formed, behind results/runtime_bench.md ("A ring just formed"): a
# `dht cluster` (one process, loopback) takes a `dht bench` load the moment its last node
# has joined, while the core still forwards writes in the ranges the joins handed over
# (10 s after each change). Prints one JSON line per run: throughput, and the node-to-node
# messages the ring sent from its start to the end of the load (from every node's
# /metrics), in all and by kind.
#
# Needs a release build (cargo build --release -p ringkv-cli), curl and jq.
#
#   experiments/fresh_ring.sh                       # eventual, k = 5, 10 nodes, 3 runs
#   MODEL=chain K=3 ROUNDS=1 experiments/fresh_ring.sh
#   DHT=/path/to/other/dht experiments/fresh_ring.sh  # another build, for a comparison
#
# Settings (environment): DHT (the binary), MODEL, K, NODES, OPS, CLIENTS, MIX, ROUTING,
# ROUNDS, SETTLE_S (seconds to wait before the load: 0, or 11 for a ring whose hand-overs
# are over, as experiments/runtime_bench.sh waits).
set -euo pipefail

cd "$(dirname "$0")/.."
DHT=${DHT:-target/release/dht}
MODEL=${MODEL:-eventual}
K=${K:-5}
NODES=${NODES:-10}
OPS=${OPS:-20000}
CLIENTS=${CLIENTS:-64}
MIX=${MIX:-insert}
ROUTING=${ROUTING:-token}
ROUNDS=${ROUNDS:-3}
SETTLE_S=${SETTLE_S:-0}

command -v jq >/dev/null || { echo "jq is required" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl is required" >&2; exit 1; }

# shellcheck source=experiments/cluster.sh
. experiments/cluster.sh

for round in $(seq 1 "$ROUNDS"); do
    start_cluster "$NODES" "$K" "$MODEL"
    bootstrap=$BOOTSTRAP
    sleep "$SETTLE_S"
    result=$("$DHT" bench --target "$bootstrap" --ops "$OPS" --clients "$CLIENTS" \
        --mix "$MIX" --routing "$ROUTING" --key-prefix "fresh$round-" --json)
    # Every node's counters, summed by kind.
    kinds=$(for node in $(echo "$result" | jq -r '.nodes[]'); do
        curl -s "http://$node/metrics"
    done | sed -n 's/^ringkv_messages_sent_by_kind_total{kind="\([a-z_]*\)"} \([0-9]*\)$/\1 \2/p' |
        jq -R -s 'split("\n") | map(select(length > 0) | split(" ") | {(.[0]): (.[1] | tonumber)})
                  | reduce .[] as $x ({}; . as $acc | $x | to_entries[0] as $e
                      | $acc + {($e.key): (($acc[$e.key] // 0) + $e.value)})')
    echo "$result" | jq -c --argjson kinds "$kinds" --arg model "$MODEL" --argjson k "$K" \
        --argjson round "$round" --argjson settle "$SETTLE_S" \
        '{model: $model, k: $k, round: $round, settle_s: $settle, mix, routing, clients,
        ops, ok, ops_per_s: (.ops_per_s | floor), p50_us: .latency.p50_us,
        p99_us: .latency.p99_us, messages: ($kinds | add), by_kind: $kinds}'
    stop_cluster
done
