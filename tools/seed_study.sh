#!/usr/bin/env bash
# Seed study (docs/fidelity.md): fsct's training against the PyTorch reference's
# (tools/torch_episodic_train.py around tools/fsct_reference.py) on the same image files, over
# several seeds, for FSCT_cosine and FSCT_softmax with Conv4.
#
#   bash tools/seed_study.sh
#
# Steps: builds fsct-train (release) once, writes fsct's glyph dataset as PNG files + JSON
# splits if absent (examples/write_glyph_dataset.rs), then for each method and seed runs the
# PyTorch trainer and fsct-train (configs/fidelity_glyphs.toml with the seed, method and output
# overridden by flags), one after the other, and prints a markdown table of the test accuracies.
# Runs whose results are already in $OUT are not run again (FORCE=1 reruns them), so an
# interrupted study continues where it stopped.
#
# Settings (environment):
#   SEEDS="1 2 3 4 5"  METHODS="FSCT_cosine FSCT_softmax"  EPOCHS=6  EPISODES=100
#   VAL_EPISODES=100  TEST_EPISODES=600  THREADS=2
#   DATA=target/fidelity/glyphs  OUT=runs/fidelity  PYTHON=python3 (needs torch and Pillow)
#   FSCT_TRAIN=path/to/fsct-train (skips the build)  JOBS=1 (runs at a time; THREADS each)
# docs/fidelity.md's table: THREADS=1 JOBS=20 on a 16-core machine (a few minutes); the defaults, one
# run at a time with 2 threads, take about an hour on 2 cores.
set -euo pipefail

cd "$(dirname "$0")/.."
SEEDS=${SEEDS:-"1 2 3 4 5"}
METHODS=${METHODS:-"FSCT_cosine FSCT_softmax"}
EPOCHS=${EPOCHS:-6}
EPISODES=${EPISODES:-100}
VAL_EPISODES=${VAL_EPISODES:-100}
TEST_EPISODES=${TEST_EPISODES:-600}
THREADS=${THREADS:-2}
DATA=${DATA:-target/fidelity/glyphs}
OUT=${OUT:-runs/fidelity}
PYTHON=${PYTHON:-python3}
FORCE=${FORCE:-0}
CONFIG=configs/fidelity_glyphs.toml

if [[ -z "${FSCT_TRAIN:-}" ]]; then
    cargo build --release -p fsct-train
    FSCT_TRAIN=target/release/fsct-train
fi
if [[ ! -f "$DATA/novel.json" ]]; then
    cargo run --release --example write_glyph_dataset -- --out "$DATA" \
        --classes 100 --images-per-class 40 --native-size 32 --seed 4040
fi
mkdir -p "$OUT"
TIMES="$OUT/durations.tsv"

# Appends "framework method seed seconds" to $TIMES.
timed() {
    local framework=$1 method=$2 seed=$3 t0
    shift 3
    t0=$(date +%s%N)
    "$@"
    printf '%s\t%s\t%s\t%.1f\n' "$framework" "$method" "$seed" \
        "$(( ($(date +%s%N) - t0) / 1000000 ))e-3" >> "$TIMES"
}

torch_run() {
    local method=$1 seed=$2 json="$OUT/torch_${1}_${2}.json"
    echo "== PyTorch $method seed $seed" >&2
    "$PYTHON" tools/torch_episodic_train.py --root "$DATA" --method "$method" --seed "$seed" \
        --epochs "$EPOCHS" --episodes "$EPISODES" --val-episodes "$VAL_EPISODES" \
        --test-episodes "$TEST_EPISODES" --way 5 --shot 5 --query 16 --image-size 28 \
        --threads "$THREADS" > "$json.tmp" 2> "$OUT/torch_${method}_${seed}.log"
    mv "$json.tmp" "$json"
}

fsct_run() {
    local method=$1 seed=$2 dir="$OUT/fsct_${1}_${2}"
    echo "== fsct $method seed $seed" >&2
    RAYON_NUM_THREADS="$THREADS" "$FSCT_TRAIN" --config "$CONFIG" --seed "$seed" --method "$method" \
        --output "$dir" --epochs "$EPOCHS" --train-episodes "$EPISODES" \
        --val-episodes "$VAL_EPISODES" --test-episodes "$TEST_EPISODES" --image-size 28 \
        --threads "$THREADS" --overwrite > "$OUT/fsct_${method}_${seed}.log" 2>&1
}

# JOBS runs at a time (default 1: one after the other, the right thing on a 2-core machine).
JOBS=${JOBS:-1}
running=0
launch() {
    if (( JOBS > 1 )); then
        timed "$@" &
        running=$((running + 1))
        if (( running >= JOBS )); then wait -n; running=$((running - 1)); fi
    else
        timed "$@"
    fi
}
for method in $METHODS; do
    for seed in $SEEDS; do
        if [[ "$FORCE" == 1 || ! -s "$OUT/torch_${method}_${seed}.json" ]]; then
            launch pytorch "$method" "$seed" torch_run "$method" "$seed"
        fi
        if [[ "$FORCE" == 1 || ! -s "$OUT/fsct_${method}_${seed}/results.txt" ]]; then
            launch fsct "$method" "$seed" fsct_run "$method" "$seed"
        fi
    done
done
wait

# The table: per method and framework, each seed's test accuracy ± 95% CI, then the mean, the
# standard deviation over seeds (ddof = 1), min and max; then the mean training loss per epoch.
"$PYTHON" - "$OUT" "$SEEDS" "$METHODS" <<'EOF'
import json, re, statistics, sys
out, seeds, methods = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()

def torch_run(m, s):
    r = json.load(open(f"{out}/torch_{m}_{s}.json"))
    return r["test_acc"], r["test_ci95"], r["best_epoch"], r["train_loss"], r["val_acc"]

def fsct_run(m, s):
    d = f"{out}/fsct_{m}_{s}"
    line = open(f"{d}/results.txt").read().strip().splitlines()[-1]
    acc, ci = map(float, re.search(r"Test Acc = ([\d.]+)% \+- ([\d.]+)%", line).groups())
    metrics = [json.loads(l) for l in open(f"{d}/metrics.jsonl") if l.strip()]
    metrics = [r for r in metrics if r.get("kind", "epoch") == "epoch"]
    val = [r["val_acc"] for r in metrics]
    best = val.index(max(val))  # the first epoch of the maximum: a strictly better one replaces the best
    return acc, ci, best, [r["train_loss"] for r in metrics], val

frameworks = [("PyTorch reference", torch_run), ("fsct", fsct_run)]
print("| method | framework | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | std | min | max |")
print("|---|---|" + "---|" * len(seeds) + "---|---|---|---|")
curves = {}
for m in methods:
    for name, run in frameworks:
        runs = [run(m, s) for s in seeds]
        accs = [r[0] for r in runs]
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        cells = [f"{a:.2f} ± {c:.2f}" for a, c, *_ in runs]
        print(f"| {m} | {name} | " + " | ".join(cells)
              + f" | {statistics.mean(accs):.2f} | {std:.2f} | {min(accs):.2f} | {max(accs):.2f} |")
        curves[(m, name)] = runs
print()
print("Best epoch (0-based) per seed:")
for (m, name), runs in curves.items():
    print(f"- {m}, {name}: " + ", ".join(str(r[2]) for r in runs))
print()
print("Mean over seeds, per epoch: training loss / validation accuracy (%)")
print()
epochs = len(next(iter(curves.values()))[0][3])
print("| method | framework | " + " | ".join(f"ep {e}" for e in range(epochs)) + " |")
print("|---|---|" + "---|" * epochs)
for (m, name), runs in curves.items():
    cells = [f"{statistics.mean(r[3][e] for r in runs):.3f} / {statistics.mean(r[4][e] for r in runs):.1f}"
             for e in range(epochs)]
    print(f"| {m} | {name} | " + " | ".join(cells) + " |")
EOF
