#!/usr/bin/env bash
# The GPU path on a real GPU, unattended, in one run that ends with one markdown report.
#
#   tools/gpu-check.sh                     # CUDA (--features cuda): an NVIDIA GPU
#   tools/gpu-check.sh --features vulkan   # Vulkan: any Vulkan GPU, or Mesa's software device
#   tools/gpu-check.sh --machine-only      # only step 1: what the machine has and lacks
#
# Steps (each timed; a step that cannot run says why and the others still run):
#   1. what the machine has: GPU, driver, the libraries cubecl loads at run time (CUDA: libcuda,
#      NVRTC; Vulkan: the loader and an ICD);
#   2. build (release): fsct-train, the GPU test set, the memory and vs_pytorch benches;
#   3. the GPU test set (crates/fsct-train/tests/gpu.rs and gpu_half.rs) on this GPU;
#   4. the memory bench: ResNet18 and ResNet34, f32 / checkpointing / mixed f16 / pure f16 / all
#      combined (peak memory in use and reserved, step time); 224 px on CUDA;
#   5. a few episodes of configs/medium_16gb.toml on synthetic data (fsct-train end to end);
#   6. the side-by-side speed against PyTorch on the same GPU, if torch with CUDA is installed.
#
# Output: $OUT/gpu-check.md (the report: one summary table, then each step's table), and a log per
# step in $OUT (default $OUT: target/gpu-check). Sized for about 8 minutes on an H100/H200 with 16
# cores, build included; on the software Vulkan device the sizes shrink (see SIZES below) and it
# takes far longer (the build alone is tens of minutes on 2 cores).
#
# Environment: OUT, GPU_CHECK_PYTHON (a python with torch; default ../torch-venv/bin/python, then
# python3), GPU_CHECK_BENCH_SIZE / _STEPS / _WARMUP / _QUERIES (memory bench overrides).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

FEATURE=cuda
MACHINE_ONLY=0
while [ $# -gt 0 ]; do
    case "$1" in
        --machine-only) MACHINE_ONLY=1; shift ;;
        --features) FEATURE="${2:-}"; shift 2 ;;
        --features=*) FEATURE="${1#--features=}"; shift ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "gpu-check: unknown argument $1 (use --features cuda|vulkan)" >&2; exit 2 ;;
    esac
done
case "$FEATURE" in cuda|vulkan) ;; *) echo "gpu-check: --features must be cuda or vulkan" >&2; exit 2 ;; esac

OUT="${OUT:-$ROOT/target/gpu-check}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
REPORT="$OUT/gpu-check.md"
export CARGO_TERM_COLOR=never
# The Vulkan loader complains without a writable runtime folder.
if [ -z "${XDG_RUNTIME_DIR:-}" ] || [ ! -w "${XDG_RUNTIME_DIR:-/nonexistent}" ]; then
    export XDG_RUNTIME_DIR="$(mktemp -d)"
fi
START=$(date +%s)

# ---- the report's rows ------------------------------------------------------------------------
ROWS=()      # "| step | status | seconds | result |"
SECTIONS=""  # each step's own table or lines
row() { ROWS+=("| $1 | $2 | $3 | $4 |"); echo "gpu-check: [$2] $1 — $4"; }
section() { SECTIONS+=$'\n'"$1"$'\n'; }
md() { printf '%s' "$1" | tr '\n|' ' /' | cut -c1-400; }  # one table cell

# Runs a step: name, log file, command...; sets STEP_OK (0/1), STEP_SECS, STEP_LAST (last lines).
run_step() {
    local name="$1" log="$2"; shift 2
    echo "gpu-check: $name ..."
    local t0=$(date +%s)
    "$@" >"$log" 2>&1
    local rc=$?
    STEP_SECS=$(( $(date +%s) - t0 ))
    STEP_OK=$(( rc == 0 ))
    STEP_LAST="$(grep -v '^\s*$' "$log" | tail -n 3)"
    return $rc
}

# ---- 1. the machine ---------------------------------------------------------------------------
CORES=$(nproc 2>/dev/null || echo "?")
CPU=$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//')
GPU="unknown"
GPU_OK=1
LACKS=""   # what stops the GPU steps
NOTES=""   # what is worth knowing
# A shared library the dynamic loader can find: its cache, LD_LIBRARY_PATH, the usual folders.
have_lib() {
    ldconfig -p 2>/dev/null | grep -q "$1" && return 0
    local dir
    for dir in $(printf '%s' "${LD_LIBRARY_PATH:-}" | tr ':' ' ') /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/lib /usr/local/cuda/lib64; do
        ls "$dir" 2>/dev/null | grep -q "^${1//\\/}" && return 0
    done
    return 1
}

if [ "$FEATURE" = cuda ]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
        GPU="$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -n1)"
    else
        NOTES+="nvidia-smi does not run (no NVIDIA driver, or no GPU visible); "
    fi
    if ! have_lib 'libcuda\.so'; then
        LACKS+="the NVIDIA driver library libcuda.so.1 is not installed (cubecl-cuda loads it at run time); "
        GPU_OK=0
    fi
    if ! have_lib 'libnvrtc\.so'; then
        # cubecl compiles its kernels with NVRTC at run time: take it from the CUDA toolkit or from
        # PyTorch's wheel when the system has none on the loader path.
        found=""
        for dir in ${CUDA_HOME:-/usr/local/cuda}/lib64 /usr/local/cuda*/lib64 \
                   "$ROOT"/../torch-venv/lib/python3*/site-packages/nvidia/cu*/lib \
                   "$ROOT"/../torch-venv/lib/python3*/site-packages/nvidia/cuda_nvrtc/lib; do
            if ls "$dir"/libnvrtc.so* >/dev/null 2>&1; then found="$dir"; break; fi
        done
        if [ -n "$found" ]; then
            export LD_LIBRARY_PATH="$found${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
            NOTES+="NVRTC is not on the loader path: using $found; "
        else
            LACKS+="NVRTC (libnvrtc.so, the CUDA runtime compiler cubecl needs) is not installed: install the CUDA toolkit's nvrtc (e.g. the cuda-nvrtc package or pip nvidia-cuda-nvrtc) and add it to LD_LIBRARY_PATH; "
            GPU_OK=0
        fi
    fi
else
    if ! have_lib 'libvulkan\.so\.1'; then
        LACKS+="the Vulkan loader libvulkan.so.1 is not installed (Debian/Ubuntu: libvulkan1); "
        GPU_OK=0
    fi
    if ! ls /usr/share/vulkan/icd.d/*.json >/dev/null 2>&1 && ! ls /etc/vulkan/icd.d/*.json >/dev/null 2>&1 \
        && [ -z "${VK_ICD_FILENAMES:-}${VK_DRIVER_FILES:-}" ]; then
        LACKS+="no Vulkan driver (ICD) is installed: the GPU vendor's, or Mesa's software device (mesa-vulkan-drivers); "
        GPU_OK=0
    fi
    if command -v vulkaninfo >/dev/null 2>&1; then
        GPU="$(vulkaninfo --summary 2>/dev/null | grep -m1 'deviceName' | cut -d= -f2- | sed 's/^ *//')"
        drv="$(vulkaninfo --summary 2>/dev/null | grep -m1 'driverInfo' | cut -d= -f2- | sed 's/^ *//')"
        [ -n "$drv" ] && GPU="$GPU, $drv"
    fi
    [ -z "$GPU" ] && GPU="unknown (vulkaninfo not installed; the memory bench names the adapter)"
fi
SOFTWARE=0
case "$GPU" in *llvmpipe*|*lavapipe*|*SwiftShader*) SOFTWARE=1 ;; esac
row "machine" "$([ $GPU_OK = 1 ] && echo ok || echo 'lacks')" 0 "$(md "GPU: $GPU; CPU: $CPU, $CORES cores${LACKS:+; LACKS: ${LACKS%; }}${NOTES:+; ${NOTES%; }}")"
[ "$MACHINE_ONLY" = 1 ] && exit $(( 1 - GPU_OK ))

# ---- 2. build ----------------------------------------------------------------------------------
F="--features $FEATURE"
build() {
    cargo build --release --locked $F -p fsct-train --bins &&
        cargo test --release --locked $F -p fsct-train --test gpu --test gpu_half --no-run &&
        cargo bench --locked $F --bench memory --bench vs_pytorch --no-run
}
if run_step "build" "$OUT/build.log" build; then
    row "build (release, --features $FEATURE)" ok "$STEP_SECS" "fsct-train, tests/gpu.rs, tests/gpu_half.rs, benches memory and vs_pytorch"
    BUILT=1
else
    row "build (release, --features $FEATURE)" FAILED "$STEP_SECS" "$(md "$STEP_LAST")"
    BUILT=0
fi
can_run() { [ "$BUILT" = 1 ] && [ "$GPU_OK" = 1 ]; }
why_not() {
    if [ "$BUILT" != 1 ]; then echo "not run: the build failed"; else echo "not run: the machine lacks ${LACKS%; }"; fi
}

# ---- 3. the GPU test set -------------------------------------------------------------------------
if can_run; then
    run_step "GPU test set" "$OUT/tests.log" \
        cargo test --release --locked $F -p fsct-train --test gpu --test gpu_half -- --test-threads 1 --nocapture
    passed=$(grep -o '[0-9]* passed' "$OUT/tests.log" | awk '{s+=$1} END {print s+0}')
    failed=$(grep -o '[0-9]* failed' "$OUT/tests.log" | awk '{s+=$1} END {print s+0}')
    if [ "$STEP_OK" = 1 ]; then
        row "GPU test set (tests/gpu.rs, gpu_half.rs)" ok "$STEP_SECS" "$passed passed"
    else
        row "GPU test set (tests/gpu.rs, gpu_half.rs)" FAILED "$STEP_SECS" "$(md "$passed passed, $failed failed: $(grep -m3 -E 'panicked|differ|error' "$OUT/tests.log")")"
    fi
    section "### GPU test set: each comparison"$'\n\n''```'$'\n'"$(grep -E ' px |ulp|f16 |mixed|losses|reserved|fsct-train --device|^error:|test result' "$OUT/tests.log" | cut -c1-220)"$'\n''```'
else
    row "GPU test set" skipped 0 "$(why_not)"
fi

# ---- 4. the memory bench -------------------------------------------------------------------------
if [ "$SOFTWARE" = 1 ] || [ "$FEATURE" = vulkan -a "$GPU" = "unknown" ]; then
    # SIZES on a software device: the same rows, shapes it runs in minutes.
    B_SIZE=${GPU_CHECK_BENCH_SIZE:-32}; B_STEPS=${GPU_CHECK_BENCH_STEPS:-1}; B_WARMUP=${GPU_CHECK_BENCH_WARMUP:-1}; B_QUERIES=${GPU_CHECK_BENCH_QUERIES:-4}
else
    B_SIZE=${GPU_CHECK_BENCH_SIZE:-224}; B_STEPS=${GPU_CHECK_BENCH_STEPS:-5}; B_WARMUP=${GPU_CHECK_BENCH_WARMUP:-2}; B_QUERIES=${GPU_CHECK_BENCH_QUERIES:-16}
fi
if can_run; then
    rm -f "$ROOT/target/fsct-memory-bench-$FEATURE.md"
    run_step "memory bench" "$OUT/memory-bench.log" env \
        FSCT_BENCH_DEVICES="$FEATURE" FSCT_BENCH_BACKBONES=ResNet18,ResNet34 FSCT_BENCH_SIZE="$B_SIZE" \
        FSCT_BENCH_STEPS="$B_STEPS" FSCT_BENCH_WARMUP="$B_WARMUP" FSCT_BENCH_QUERIES="$B_QUERIES" \
        FSCT_BENCH_CONFIGS="checkpointing,mixed f16,pure f16,all combined" \
        cargo bench --locked $F --bench memory
    table="$ROOT/target/fsct-memory-bench-$FEATURE.md"
    if [ "$STEP_OK" = 1 ] && [ -f "$table" ] && ! grep -q '| failed |' "$table"; then
        row "memory bench (ResNet18/34, $B_SIZE px)" ok "$STEP_SECS" "$(grep '^| ' "$table" | grep -vc '^| Configuration') configurations measured"
    else
        row "memory bench (ResNet18/34, $B_SIZE px)" FAILED "$STEP_SECS" "$(md "$(grep -m2 -E 'failed|error|panicked' "$OUT/memory-bench.log" "$table" 2>/dev/null)")"
    fi
    [ -f "$table" ] && cp "$table" "$OUT/" && section "$(sed 's/^## /### /' "$table")"
else
    row "memory bench" skipped 0 "$(why_not)"
fi

# ---- 5. configs/medium_16gb.toml on synthetic data ------------------------------------------------
if can_run; then
    cfg="$OUT/medium_16gb_synthetic.toml"
    {
        echo "# configs/medium_16gb.toml with synthetic data (written by tools/gpu-check.sh)"
        echo "[data]"
        echo 'kind = "synthetic"'
        echo 'name = "miniImagenet"'
        echo "threads = 8"
        # every section of the preset but [data] and [run]
        awk '/^\[/{keep = ($0 != "[data]" && $0 != "[run]")} keep' configs/medium_16gb.toml
        echo "[run]"
        echo "device = \"$FEATURE\""
    } > "$cfg"
    if [ "$SOFTWARE" = 1 ]; then
        m_args=(--image-size 32 --epochs 1 --train-episodes 2 --val-episodes 1 --test-episodes 2)
    else
        m_args=(--epochs 1 --train-episodes 10 --val-episodes 5 --test-episodes 10)
    fi
    run_step "medium_16gb" "$OUT/medium_16gb.log" \
        target/release/fsct-train --config "$cfg" --output "$OUT/medium_16gb_run" --overwrite "${m_args[@]}"
    metrics="$OUT/medium_16gb_run/metrics.jsonl"
    if [ "$STEP_OK" = 1 ] && [ -f "$metrics" ]; then
        line=$(grep '"kind":"epoch"' "$metrics" | tail -n1)
        step_s=$(printf '%s' "$line" | grep -o '"step_seconds":[0-9.e-]*' | cut -d: -f2 | xargs printf '%.2f' 2>/dev/null)
        scale=$(printf '%s' "$line" | grep -o '"loss_scale":[0-9.e-]*' | cut -d: -f2)
        acc=$(grep -m1 'test:' "$OUT/medium_16gb.log")
        row "configs/medium_16gb.toml, synthetic data (${m_args[*]})" ok "$STEP_SECS" \
            "$(md "ResNet34, checkpointing + mixed f16 + VIC; mean step ${step_s:-?} s; loss scale ${scale:-?}; $acc")"
    else
        row "configs/medium_16gb.toml, synthetic data" FAILED "$STEP_SECS" "$(md "$STEP_LAST")"
    fi
else
    row "configs/medium_16gb.toml, synthetic data" skipped 0 "$(why_not)"
fi

# ---- 6. side by side with PyTorch ----------------------------------------------------------------
PY="${GPU_CHECK_PYTHON:-}"
if [ -z "$PY" ]; then
    if [ -x "$ROOT/../torch-venv/bin/python" ]; then PY="$ROOT/../torch-venv/bin/python"; else PY=python3; fi
fi
torch_state=$("$PY" -c 'import torch; print("cuda" if torch.cuda.is_available() else "nocuda", torch.__version__)' 2>/dev/null)
if [ "$FEATURE" != cuda ]; then
    row "speed against PyTorch" skipped 0 "PyTorch has no Vulkan backend: the side-by-side runs in the CUDA mode of this script"
elif [ -z "$torch_state" ]; then
    row "speed against PyTorch" skipped 0 "torch is not installed for $PY (set GPU_CHECK_PYTHON)"
elif [ "${torch_state%% *}" != cuda ]; then
    row "speed against PyTorch" skipped 0 "$(md "torch ${torch_state#* } sees no CUDA device")"
elif ! can_run; then
    row "speed against PyTorch" skipped 0 "$(why_not)"
else
    table="| model | image | train step PyTorch (s) | train step fsct (s) | fsct/PyTorch | eval step PyTorch (s) | eval step fsct (s) | fsct/PyTorch | PyTorch peak CUDA memory (MiB) |"$'\n'"|---|---|---|---|---|---|---|---|---|"
    ok=1
    t0=$(date +%s)
    for pair in Conv4:84 ResNet18:224; do
        bb=${pair%%:*}; px=${pair##*:}
        common=(--backbone "$bb" --image "$px" --episodes 10 --warmup 3)
        torch_json=$("$PY" tools/torch_gpu_bench.py "${common[@]}" 2>>"$OUT/vs-pytorch.log" | grep '^{' | tail -n1)
        fsct_json=$(cargo bench --locked $F --bench vs_pytorch -- --device cuda "${common[@]}" 2>>"$OUT/vs-pytorch.log" | grep '^{' | tail -n1)
        if [ -z "$torch_json" ] || [ -z "$fsct_json" ]; then ok=0; continue; fi
        table+=$'\n'"$("$PY" - "$torch_json" "$fsct_json" <<'PYEOF'
import json, sys
t, f = json.loads(sys.argv[1]), json.loads(sys.argv[2])
tt, ft = t["train_step_s"]["median"], f["train_step_s"]["median"]
te, fe = t["eval_step_s"]["median"], f["eval_step_s"]["median"]
print("| %s cosine | %s px | %.4f | %.4f | %.2f | %.4f | %.4f | %.2f | %s |"
      % (t["backbone"], t["image"], tt, ft, ft / tt, te, fe, fe / te, t["peak_cuda_mib"]))
PYEOF
)"
    done
    secs=$(( $(date +%s) - t0 ))
    if [ $ok = 1 ]; then
        row "speed against PyTorch (${torch_state#* })" ok "$secs" "Conv4 84 px, ResNet18 224 px, 5-way 5-shot 16 queries"
    else
        row "speed against PyTorch" FAILED "$secs" "$(md "$(tail -n2 "$OUT/vs-pytorch.log")")"
    fi
    section "### Speed against PyTorch on the same GPU"$'\n\n'"PyTorch ${torch_state#* } (tools/torch_gpu_bench.py: the reference FS-CT) against fsct (benches/vs_pytorch.rs --device cuda): the same episode, training step (forward, cross-entropy, backward, AdamW) and evaluation step; medians of 10 steps after 3 warm-up, each timed to a device sync."$'\n\n'"$table"
fi

# ---- the report ------------------------------------------------------------------------------------
TOTAL=$(( $(date +%s) - START ))
{
    echo "## GPU check ($FEATURE): $GPU"
    echo
    echo "tools/gpu-check.sh --features $FEATURE, $(date -u +%Y-%m-%d) UTC, $TOTAL s in all; fsct $(git rev-parse --short HEAD 2>/dev/null || echo '?'), Burn 0.21.0; CPU: $CPU, $CORES cores."
    if [ "$SOFTWARE" = 1 ]; then
        echo
        echo "**A software device** (Mesa's lavapipe): the results prove the GPU code computes correctly; speed and memory figures say nothing about real GPUs, and the shapes are shrunk to fit."
    fi
    echo
    echo "| step | status | seconds | result |"
    echo "|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
    printf '%s\n' "$SECTIONS"
} > "$REPORT"
echo "gpu-check: report written to $REPORT ($TOTAL s)"
cat "$REPORT"
# Exit code: 0 when every step that could run passed.
! printf '%s\n' "${ROWS[@]}" | grep -q '| FAILED |'
