#!/usr/bin/env bash
# Steps per second of data-parallel training on the CPU: 1 peer against 2 peers, one compute
# thread each (issue 19), measured side by side — the runs alternate, ROUNDS times each, so that
# a busy machine slows both alike — on the quickstart's episodes (Conv4, 5-way 5-shot 5-query,
# 28 px), 1 epoch of EPISODES episodes (one per peer per step).
#
#   tools/bench-parallel.sh [ROUNDS] [EPISODES]     (defaults 3 and 40; release build)
#
# Prints one line per run and the bench line: mean seconds per optimizer step (`step_seconds`
# of metrics.jsonl: forward, backward, all-reduce and update, episode loading excluded), steps
# and episodes per second.
set -euo pipefail

rounds=${1:-3}
episodes=${2:-40}
repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${FSCT_TRAIN_BIN:-$repo/target/release/fsct-train}
[ -x "$bin" ] || (cd "$repo" && cargo build --release -p fsct-train)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# run NAME RAYON_THREADS DEVICES PER_STEP
run() {
    local out=$work/$1-$3-$4
    RAYON_NUM_THREADS=$2 "$bin" --config "$repo/configs/quickstart.toml" --output "$out" -q \
        --epochs 1 --train-episodes "$episodes" --val-episodes 2 --test-episodes 2 \
        --threads 1 --devices "$3" --set episodes.per_step="$4" > /dev/null
    sed -n 's/.*"step_seconds":\([0-9.e-]*\).*/\1/p' "$out/metrics.jsonl"
}

declare -a one acc two
for r in $(seq "$rounds"); do
    s1=$(run "r$r" 1 cpu:0 1)
    sa=$(run "r$r" 1 cpu:0 2)
    s2=$(run "r$r" 2 cpu:0,cpu:1 2)
    one+=("$s1")
    acc+=("$sa")
    two+=("$s2")
    printf 'round %d: 1 peer %.3f s/step; 1 peer accumulating 2 episodes %.3f s/step; 2 peers %.3f s/step\n' \
        "$r" "$s1" "$sa" "$s2"
done
mean() { printf '%s\n' "$@" | awk '{s += $1} END {printf "%.4f", s / NR}'; }
m1=$(mean "${one[@]}")
ma=$(mean "${acc[@]}")
m2=$(mean "${two[@]}")
cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -n 1)
load=$(cut -d' ' -f1 /proc/loadavg)
awk -v m1="$m1" -v ma="$ma" -v m2="$m2" -v cpu="$cpu" -v n="$(nproc)" -v r="$rounds" -v load="$load" 'BEGIN {
    printf "bench (%s, %d cores, load %s, %d rounds each, alternating): 1 peer × 1 thread: %.2f steps/s (%.2f episodes/s); 1 peer × 1 thread accumulating 2: %.2f steps/s (%.2f episodes/s); 2 peers × 1 thread: %.2f steps/s (%.2f episodes/s); 2 peers against 1: %.2f× the episodes/s\n",
        cpu, n, load, r, 1 / m1, 1 / m1, 1 / ma, 2 / ma, 1 / m2, 2 / m2, (2 / m2) / (1 / m1)
}'
