#!/usr/bin/env python3
"""The PyTorch side of the ResNet18 row of `tools/compare_pytorch.py`.

The reference script (`../shared/reference/fsct_torch.py`) only builds Conv4/Conv6. This runs
*its* FS-CT head and *its* bench loop (same episode, step, AdamW, timing and JSON) with the
backbone swapped for a torchvision-layout ResNet18 — 7×7/2 stem, 3×3/2 max-pool, four stages of
two BasicBlocks, no average pool, features flattened (512·3·3 = 4608 at 84 px) — trained end to
end with BatchNorm in train mode, like fsct's `ResNet18` built with `train_torchvision`.
torchvision itself is not installed here, so the layout is written out (it is torchvision's
`resnet18` minus `avgpool`/`fc`).

    python tools/torch_resnet18.py --variant cosine --image 84 --episodes 8 --warmup 2 --threads 2
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


class ResNet18(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        layers, cin = [], 64
        for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
            layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(self.stem(x)).flatten(1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--reference", default=str(ROOT.parent / "shared/reference/fsct_torch.py"))
    p.add_argument("--variant", default="cosine", choices=["cosine", "softmax"])
    for name, default in [("way", 5), ("shot", 5), ("query", 16), ("image", 84), ("episodes", 8), ("warmup", 2), ("threads", 2)]:
        p.add_argument(f"--{name}", type=int, default=default)
    a = p.parse_args()

    spec = importlib.util.spec_from_file_location("fsct_torch", a.reference)
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    with torch.no_grad():
        dim = ResNet18()(torch.zeros(1, 3, a.image, a.image)).shape[1]

    # The reference's FSCT builds `self.feature = ConvNet(depth)` and is sized by `dim`: swap both.
    ref.ConvNet = lambda depth: ResNet18()
    base_init = ref.FSCT.__init__

    def init(self, depth, way, shot, query, variant, dim_ignored=None, **kw):
        kw.pop("dim", None)
        base_init(self, depth, way, shot, query, variant, dim=dim, **kw)

    ref.FSCT.__init__ = init
    args = argparse.Namespace(backbone="Conv4", variant=a.variant, way=a.way, shot=a.shot, query=a.query,
                              image=a.image, episodes=a.episodes, warmup=a.warmup, threads=a.threads)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        ref.bench(args)
    result = json.loads([l for l in out.getvalue().splitlines() if l.startswith("{")][-1])
    result["backbone"] = "ResNet18"
    result["feature_dim"] = dim
    print(json.dumps(result))


if __name__ == "__main__":
    main()
