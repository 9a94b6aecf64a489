#!/usr/bin/env python3
"""The PyTorch side of the ResNet rows of `tools/compare_pytorch.py`.

The reference script (`../shared/reference/fsct_torch.py`) only builds Conv4/Conv6. This runs
*its* FS-CT head and *its* bench loop (same episode, step, AdamW, timing and JSON) with the
backbone swapped for a torchvision-layout ResNet18 or ResNet34 — 7×7/2 stem, 3×3/2 max-pool,
four stages of BasicBlocks ([2, 2, 2, 2] or [3, 4, 6, 3]), no average pool, features flattened
(512·3·3 = 4608 at 84 px) — trained end to end with BatchNorm in train mode, like fsct's
`ResNet18`/`ResNet34` built with `train_torchvision`. torchvision itself is not installed here,
so the layout is written out (it is torchvision's `resnet18`/`resnet34` minus `avgpool`/`fc`).

    python tools/torch_resnet.py --backbone ResNet34 --image 224 --episodes 8 --warmup 2 --threads 2
"""
import argparse, contextlib, importlib.util, io, json
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


# BasicBlocks per stage (torchvision's `resnet18` / `resnet34`).
BLOCKS = {"ResNet18": [2, 2, 2, 2], "ResNet34": [3, 4, 6, 3]}


class ResNet(nn.Module):
    def __init__(self, name="ResNet18"):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        layers, cin = [], 64
        for blocks, (cout, stride) in zip(BLOCKS[name], [(64, 1), (128, 2), (256, 2), (512, 2)]):
            layers += [BasicBlock(cin, cout, stride)] + [BasicBlock(cout, cout, 1) for _ in range(blocks - 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(self.stem(x)).flatten(1)


def ResNet18():
    return ResNet("ResNet18")


def install(ref, name, image):
    """Makes the reference's `FSCT` build `ResNet(name)` as its backbone (it builds
    `ConvNet(depth)` and is sized by `dim`); returns the feature size at `image` px."""
    with torch.no_grad():
        dim = ResNet(name).eval()(torch.zeros(1, 3, image, image)).shape[1]
    ref.ConvNet = lambda depth: ResNet(name)
    base_init = ref.FSCT.__init__

    def init(self, depth, way, shot, query, variant, dim_ignored=None, **kw):
        kw.pop("dim", None)
        base_init(self, depth, way, shot, query, variant, dim=dim, **kw)

    ref.FSCT.__init__ = init
    return dim


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--reference", default=str(ROOT.parent / "shared/reference/fsct_torch.py"))
    p.add_argument("--backbone", default="ResNet18", choices=sorted(BLOCKS))
    p.add_argument("--variant", default="cosine", choices=["cosine", "softmax"])
    for name, default in [("way", 5), ("shot", 5), ("query", 16), ("image", 84), ("episodes", 8), ("warmup", 2), ("threads", 2)]:
        p.add_argument(f"--{name}", type=int, default=default)
    a = p.parse_args()

    spec = importlib.util.spec_from_file_location("fsct_torch", a.reference)
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    dim = install(ref, a.backbone, a.image)
    args = argparse.Namespace(backbone="Conv4", variant=a.variant, way=a.way, shot=a.shot, query=a.query,
                              image=a.image, episodes=a.episodes, warmup=a.warmup, threads=a.threads)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        ref.bench(args)
    result = json.loads([l for l in out.getvalue().splitlines() if l.startswith("{")][-1])
    result["backbone"] = a.backbone
    result["feature_dim"] = dim
    print(json.dumps(result))


if __name__ == "__main__":
    main()
