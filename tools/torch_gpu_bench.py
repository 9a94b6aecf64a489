#!/usr/bin/env python3
"""The PyTorch side of `tools/gpu-check.sh`'s GPU side-by-side (fsct's side: `cargo bench --bench
vs_pytorch -- --device cuda`).

The reference FS-CT of `../shared/reference/fsct_torch.py` with its Conv4, or with the
torchvision-layout ResNet18 (or 34) of `tools/torch_resnet.py` (trained end to end), on a CUDA GPU: the
same episode, training step (forward, cross-entropy, backward, AdamW) and evaluation step as the
reference's `bench`, each timed up to `sync()`. Prints one JSON line with the
`vs_pytorch` fields, plus the peak CUDA memory PyTorch's allocator held.

    python tools/torch_gpu_bench.py --backbone ResNet18 --image 224 --episodes 10 --warmup 3

Exit code 3 (and a line saying why) when torch has no usable CUDA device.
"""
import argparse, importlib.util, json, statistics, sys, time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent


def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--reference", default=str(ROOT.parent / "shared/reference/fsct_torch.py"))
    p.add_argument("--backbone", default="Conv4", choices=["Conv4", "ResNet18", "ResNet34"])
    p.add_argument("--variant", default="cosine", choices=["cosine", "softmax"])
    p.add_argument("--device", default="cuda", help="cuda; cpu only to smoke-test this script")
    for name, default in [("way", 5), ("shot", 5), ("query", 16), ("image", 84), ("episodes", 10), ("warmup", 3)]:
        p.add_argument(f"--{name}", type=int, default=default)
    a = p.parse_args()
    gpu = a.device == "cuda"
    if gpu and not torch.cuda.is_available():
        print(f"torch {torch.__version__} has no usable CUDA device", file=sys.stderr)
        sys.exit(3)
    ref = load("fsct_torch", a.reference)
    if a.backbone.startswith("ResNet"):
        resnet = load("torch_resnet", ROOT / "tools/torch_resnet.py")
        ref.ConvNet = lambda depth: resnet.ResNet(a.backbone)
        with torch.no_grad():
            dim = resnet.ResNet(a.backbone).eval()(torch.zeros(1, 3, a.image, a.image)).shape[1]
        depth = 4
    else:
        side = a.image // 2 // 2 // 2 // 2
        dim, depth = 64 * side * side, 4
    torch.manual_seed(0)
    dev = torch.device(a.device)
    sync = torch.cuda.synchronize if gpu else (lambda: None)
    model = ref.FSCT(depth, a.way, a.shot, a.query, a.variant, dim=dim).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-5, eps=1e-8)
    target = torch.arange(a.way, device=dev).repeat_interleave(a.query)
    episodes = [torch.randn(a.way, a.shot + a.query, 3, a.image, a.image, device=dev) for _ in range(4)]
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    train, evals = [], []
    for i in range(a.warmup + a.episodes):
        x = episodes[i % len(episodes)]
        model.train()
        sync()
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = F.cross_entropy(model(x), target)
        loss.backward()
        opt.step()
        sync()
        t1 = time.perf_counter()
        model.eval()
        with torch.no_grad():
            model(x).argmax(1).cpu()
        sync()
        t2 = time.perf_counter()
        if i >= a.warmup:
            train.append(t1 - t0)
            evals.append(t2 - t1)
    stat = lambda v: {"median": statistics.median(v), "min": min(v), "max": max(v)}
    print(json.dumps({
        "impl": "pytorch", "torch": torch.__version__, "device": torch.cuda.get_device_name(0) if gpu else "cpu",
        "backbone": a.backbone, "variant": a.variant, "way": a.way, "shot": a.shot, "query": a.query,
        "image": a.image, "train_step_s": stat(train), "eval_step_s": stat(evals),
        "peak_cuda_mib": round(torch.cuda.max_memory_allocated() / 1048576, 1) if gpu else None,
    }))


if __name__ == "__main__":
    main()
