#!/usr/bin/env python3
"""The physical limit beside each row of `tools/compare_pytorch.py`: FLOPs of a step and the
machine's measured peak.

- `flops`: the floating-point operations of one FS-CT training step (forward, cross-entropy,
  backward; the optimizer's element-wise update is not counted) and of one evaluation step
  (forward), for the same model and episode as the bench, counted by PyTorch's
  `torch.utils.flop_counter.FlopCounterMode` (convolutions, matmuls and their gradients: the
  arithmetic a step cannot avoid; element-wise work is not counted). Both sides compute the same
  model, so the count is the same for fsct.
- `peak`: the machine's measured f32 peak at a thread count, the best of several
  2048 × 2048 × 2048 sgemms in PyTorch (oneDNN/MKL, which use the widest vector unit of the CPU).

A step's bound is FLOPs / peak; a side reaches `bound / its step time` of the peak.

    python tools/step_flops.py flops --backbone ResNet18 --image 84
    python tools/step_flops.py peak --threads 2

Prints one JSON line.
"""
import argparse, importlib.util, json, time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent


def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def step_flops(a):
    ref = load("fsct_torch", a.reference)
    if a.backbone.startswith("ResNet"):
        dim = load("torch_resnet", ROOT / "tools" / "torch_resnet.py").install(ref, a.backbone, a.image)
        depth = 4
    else:
        depth = {"Conv4": 4, "Conv6": 6}[a.backbone]
        side = a.image // 2 // 2 // 2 // 2
        dim = 64 * side * side
    torch.manual_seed(0)
    model = ref.FSCT(depth, a.way, a.shot, a.query, a.variant, dim=dim)
    target = torch.arange(a.way).repeat_interleave(a.query)
    x = torch.randn(a.way, a.shot + a.query, 3, a.image, a.image)
    model.train()
    with FlopCounterMode(display=False) as train:
        F.cross_entropy(model(x), target).backward()
    model.eval()
    with FlopCounterMode(display=False) as evaluation, torch.no_grad():
        model(x).argmax(1)
    return {"backbone": a.backbone, "variant": a.variant, "image": a.image, "way": a.way, "shot": a.shot,
            "query": a.query, "train_gflop": train.get_total_flops() / 1e9,
            "eval_gflop": evaluation.get_total_flops() / 1e9}


def peak(a):
    torch.set_num_threads(a.threads)
    n = 2048
    x, y = torch.randn(n, n), torch.randn(n, n)
    best = float("inf")
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        torch.mm(x, y)
        best = min(best, time.perf_counter() - t0)
    return {"threads": a.threads, "peak_gflops": 2 * n**3 / best / 1e9, "method": f"best of {a.repeats} sgemm {n}^3, torch {torch.__version__}"}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("cmd", choices=["flops", "peak"])
    p.add_argument("--reference", default=str(ROOT.parent / "shared/reference/fsct_torch.py"))
    p.add_argument("--backbone", default="Conv4", choices=["Conv4", "Conv6", "ResNet18", "ResNet34"])
    p.add_argument("--variant", default="cosine", choices=["cosine", "softmax"])
    for name, default in [("way", 5), ("shot", 5), ("query", 16), ("image", 84), ("threads", 2), ("repeats", 10)]:
        p.add_argument(f"--{name}", type=int, default=default)
    a = p.parse_args()
    print(json.dumps(step_flops(a) if a.cmd == "flops" else peak(a)))


if __name__ == "__main__":
    main()
