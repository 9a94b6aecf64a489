#!/usr/bin/env python3
"""Side-by-side timing of fsct and the PyTorch reference on the CPU.

Runs `../shared/reference/fsct_torch.py bench` and fsct's `vs_pytorch` bench one after the
other, alternating, for each configuration, and writes a markdown table of the medians and the
fsct/PyTorch ratios to `target/fsct-vs-pytorch.md` (and stdout).

    python3 tools/compare_pytorch.py --python ../torch-venv/bin/python --rounds 2 --episodes 10
    python3 tools/compare_pytorch.py --configs ResNet18:cosine:224,ResNet34:cosine:224 --episodes 3 --warmup 1

A configuration is `BACKBONE:VARIANT[:IMAGE]` (IMAGE defaults to `--image`). Both sides use the
same episode (5-way 5-shot 16 queries), the same step (forward, cross-entropy, backward, AdamW)
and the same thread count. Each process reports its own peak RSS. The ResNet rows time a
torchvision-layout ResNet18/34 trained end to end on both sides; the reference has no ResNet,
so its PyTorch side is `tools/torch_resnet.py`.

The physical limit beside each row (`tools/step_flops.py`): the FLOPs of the step (PyTorch's
FlopCounterMode: convolutions, matmuls and their gradients) over the machine's measured f32
peak at the same thread count (best 2048³ sgemm in PyTorch); each side's "% of peak" is that
bound over its median step time.
"""
import argparse, datetime, json, os, platform, statistics, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(cmd, env):
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{out.stderr[-2000:]}")
    line = [l for l in out.stdout.splitlines() if l.startswith("{")][-1]
    return json.loads(line)


def cpu_name():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--python", default=str(ROOT.parent / "torch-venv/bin/python"))
    p.add_argument("--reference", default=str(ROOT.parent / "shared/reference/fsct_torch.py"))
    p.add_argument("--configs", default="Conv4:cosine,Conv4:softmax,Conv6:cosine,ResNet18:cosine,ResNet34:cosine")
    p.add_argument("--image", type=int, default=84)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--fsct-bin", help="a built vs_pytorch bench binary to use instead of building one")
    a = p.parse_args()

    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads), OMP_NUM_THREADS=str(a.threads))
    if a.fsct_bin:
        fsct_bin = a.fsct_bin
    else:
        exe = subprocess.run(
            ["cargo", "bench", "--locked", "--bench", "vs_pytorch", "--no-run", "--message-format=json"],
            cwd=ROOT, stdout=subprocess.PIPE, text=True, check=True,  # cargo's progress stays on stderr
        ).stdout
        fsct_bin = [json.loads(l)["executable"] for l in exe.splitlines()
                    if '"executable":"' in l and "vs_pytorch" in l][-1]

    flops_tool = str(ROOT / "tools" / "step_flops.py")
    peak = run([a.python, flops_tool, "peak", "--threads", str(a.threads)], env)
    rows = []
    for cfg in a.configs.split(","):
        parts = cfg.split(":")
        if len(parts) not in (2, 3):
            sys.exit(f"--configs: `{cfg}` is not BACKBONE:VARIANT[:IMAGE] (e.g. ResNet18:cosine:224)")
        backbone, variant = parts[:2]
        image = parts[2] if len(parts) == 3 else str(a.image)
        shape = ["--variant", variant, "--way", "5", "--shot", "5", "--query", "16",
                 "--image", image, "--episodes", str(a.episodes), "--warmup", str(a.warmup)]
        flops = run([a.python, flops_tool, "flops", "--reference", a.reference, "--backbone", backbone,
                     "--variant", variant, "--image", image], env)
        if backbone.startswith("ResNet"):
            # The reference has no ResNet: its FS-CT and bench loop around a torchvision-layout
            # ResNet trained end to end (tools/torch_resnet.py).
            torch_cmd = [a.python, str(ROOT / "tools" / "torch_resnet.py"), "--reference", a.reference,
                         "--backbone", backbone, *shape]
        else:
            torch_cmd = [a.python, a.reference, "bench", "--backbone", backbone, *shape]
        torch_runs, fsct_runs = [], []
        for r in range(a.rounds):
            torch_runs.append(run([*torch_cmd, "--threads", str(a.threads)], env))
            fsct_runs.append(run([fsct_bin, "--backbone", backbone, *shape], env))
            print(f"{cfg} round {r + 1}: torch {torch_runs[-1]['train_step_s']['median']:.3f} s, "
                  f"fsct {fsct_runs[-1]['train_step_s']['median']:.3f} s", file=sys.stderr)
        med = lambda runs, key: statistics.median(x[key]["median"] for x in runs)
        rss = lambda runs: max(x["peak_rss_mib"] for x in runs)
        t = (med(torch_runs, "train_step_s"), med(fsct_runs, "train_step_s"))
        e = (med(torch_runs, "eval_step_s"), med(fsct_runs, "eval_step_s"))
        m = (rss(torch_runs), rss(fsct_runs))
        rows.append((f"{backbone} {variant}, {image} px", t, e, m, torch_runs[0].get("torch", "?"), flops))

    gflops = peak["peak_gflops"]
    head = (f"fsct vs PyTorch {rows[0][4]} on {cpu_name()}, {a.threads} threads, "
            f"{datetime.date.today().isoformat()}; 5-way 5-shot 16 queries; median of "
            f"{a.rounds} alternating runs × {a.episodes} episodes (after {a.warmup} warm-up). "
            f"Measured peak: {gflops:.0f} GFLOP/s ({peak['method']}); bound = FLOPs of the step / peak.\n"
            f"Command: `python3 {' '.join(['tools/compare_pytorch.py', *sys.argv[1:]])}`\n\n")
    table = ("| model | train step PyTorch (s) | train step fsct (s) | fsct/PyTorch | eval step PyTorch (s) "
             "| eval step fsct (s) | fsct/PyTorch | peak RSS PyTorch (MiB) | peak RSS fsct (MiB) | fsct/PyTorch "
             "| train GFLOP | train bound (s) | % of peak PyTorch / fsct | eval GFLOP | eval bound (s) "
             "| % of peak PyTorch / fsct |\n"
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    for name, t, e, m, _, f in rows:
        tb, eb = f["train_gflop"] / gflops, f["eval_gflop"] / gflops
        table += (f"| {name} | {t[0]:.3f} | {t[1]:.3f} | {t[1] / t[0]:.2f} | {e[0]:.3f} | {e[1]:.3f} | "
                  f"{e[1] / e[0]:.2f} | {m[0]:.0f} | {m[1]:.0f} | {m[1] / m[0]:.2f} "
                  f"| {f['train_gflop']:.0f} | {tb:.3f} | {100 * tb / t[0]:.0f} / {100 * tb / t[1]:.0f} "
                  f"| {f['eval_gflop']:.0f} | {eb:.3f} | {100 * eb / e[0]:.0f} / {100 * eb / e[1]:.0f} |\n")
    text = head + table
    out = ROOT / "target" / "fsct-vs-pytorch.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
