#!/usr/bin/env bash
# Keys per process on a real ring, with and without virtual nodes, behind
# results/README.md §4e ("On a real ring"): a `dht cluster` of NODES processes (MODEL,
# k = 2), each of R ring positions, takes OPS token-routed inserts; then
# every position's `GET /node` says how many keys it is the primary of and which process
# it belongs to. Prints one JSON line per run: the keys each process is the primary of
# (sorted), the largest and smallest as multiples of the mean, and the load's throughput.
#
# Needs a release build (cargo build --release -p ringkv-cli), curl and jq.
#
#   experiments/vnodes_ring.sh                  # R = 1 and 8 alternating, 3 runs each
#   VNODES="1 4 16" ROUNDS=1 experiments/vnodes_ring.sh
#
# Settings (environment): DHT (the binary), NODES, VNODES (the R values), MODEL (eventual,
# chain or craq; default eventual), OPS, CLIENTS, ROUNDS, SETTLE_S (seconds to wait
# before the load).
set -euo pipefail

cd "$(dirname "$0")/.."
DHT=${DHT:-target/release/dht}
NODES=${NODES:-5}
VNODES=${VNODES:-1 8}
OPS=${OPS:-20000}
CLIENTS=${CLIENTS:-32}
ROUNDS=${ROUNDS:-3}
SETTLE_S=${SETTLE_S:-11}
MODEL=${MODEL:-eventual}

command -v jq >/dev/null || { echo "jq is required" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl is required" >&2; exit 1; }

# shellcheck source=experiments/cluster.sh
. experiments/cluster.sh

for round in $(seq 1 "$ROUNDS"); do
    for r in $VNODES; do
        start_cluster "$NODES" 2 "$MODEL" "$r"
        sleep "$SETTLE_S"
        result=$("$DHT" bench --target "$BOOTSTRAP" --ops "$OPS" --clients "$CLIENTS" \
            --mix insert --key-prefix "v$round-" --json)
        sleep 2
        per_process=$(for node in $(curl -s "http://$BOOTSTRAP/overlay" | jq -r '.overlay[]'); do
            curl -s "http://$node/node" | jq -c '{process, keys: .keys_primary}'
        done | jq -s 'group_by(.process) | map(map(.keys) | add) | sort')
        echo "$result" | jq -c --argjson keys "$per_process" --argjson r "$r" \
            --argjson round "$round" --argjson nodes "$NODES" --arg model "$MODEL" \
            '{round: $round, model: $model, processes: $nodes, vnodes: $r, ok, ops_per_s: (.ops_per_s | floor),
            primary_keys_per_process: $keys,
            max_over_mean: (($keys | max) / (($keys | add) / ($keys | length)) * 100 | round / 100),
            min_over_mean: (($keys | min) / (($keys | add) / ($keys | length)) * 100 | round / 100)}'
        stop_cluster
    done
done
