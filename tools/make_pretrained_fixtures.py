#!/usr/bin/env python3
"""Fixtures of `fsct_transformer::import::import_backbone` (pretrained ResNet weights).

Writes, into crates/fsct-transformer/tests/fixtures/pretrained/:

- `tv_resnet18_w8.pth`: a torchvision-layout ResNet18 state dict (torchvision's key names, `fc.*`
  and `num_batches_tracked` included) at base width 8 (stages 8/16/32/64 wide instead of
  64/128/256/512, so the file is ~180 KB instead of 45 MB), seeded random weights and non-trivial
  BatchNorm running statistics;
- `feti_resnet18_w8.pt.tar`: a FETI-layout ResNet18 at base width 8, wrapped as the reference's
  `Pretrained_ResNet_FETI.pt.tar` is: `{'state_dict': {'module.resnet.' + key: tensor}}`, with
  an `fc.*` head as simple-CNAPS' checkpoint has;
- `features_w8.safetensors`: a fixed input `input` [4, 3, 64, 64] and the features each net
  computes on it: `tv_eval` / `feti_eval` (BatchNorm on running statistics, `model.eval()`) and
  `tv_batch_stats` (BatchNorm on the batch's statistics: how the reference's frozen torchvision
  backbone runs, its BNs never leaving train mode, spec §1.5).

torchvision is not installed here, so both layouts are written out with torchvision's names.

    /work/torch-venv/bin/python tools/make_pretrained_fixtures.py
"""
from pathlib import Path

import torch
from torch import nn
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "crates/fsct-transformer/tests/fixtures/pretrained"
WIDTH = 8


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


class ResNet(nn.Module):
    """torchvision's `resnet18` (feti=False, without avgpool; `fc` kept for the state dict) or the
    reference's FETI ResNet (5×5/2 stem with padding 1, no max-pool, adaptive pool to 7×7)."""

    def __init__(self, feti, blocks=(2, 2, 2, 2), width=WIDTH):
        super().__init__()
        self.feti = feti
        self.conv1 = nn.Conv2d(3, width, 5 if feti else 7, 2, 1 if feti else 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = width
        for index, n in enumerate(blocks):
            cout, stride = width << index, 1 if index == 0 else 2
            layer = []
            for j in range(n):
                layer.append(BasicBlock(cin, cout, stride if j == 0 else 1))
                cin = cout
            setattr(self, f"layer{index + 1}", nn.Sequential(*layer))
        self.fc = nn.Linear(cin, 100 if not feti else 64)  # torchvision: 1000 classes

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        if not self.feti:
            x = self.maxpool(x)
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return nn.functional.adaptive_avg_pool2d(x, 7) if self.feti else x


def randomise(net, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g) * (2.0 / p[0].numel()) ** 0.5)
            elif name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
        for name, b in net.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.2 * torch.randn(b.shape, generator=g))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))
            elif name.endswith("num_batches_tracked"):
                b.fill_(1234)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    tv, feti = ResNet(feti=False), ResNet(feti=True)
    randomise(tv, 1)
    randomise(feti, 2)
    state = {k: v.contiguous() for k, v in tv.state_dict().items()}
    torch.save(state, OUT / "tv_resnet18_w8.pth")
    wrapped = {"state_dict": {"module.resnet." + k: v.contiguous() for k, v in feti.state_dict().items()}}
    torch.save(wrapped, OUT / "feti_resnet18_w8.pt.tar")
    with torch.no_grad():
        tv.eval(), feti.eval()
        tv_eval, feti_eval = tv(x), feti(x)
        tv.train()
        tv_batch = tv(x)  # updates running stats, as the reference's forward does; saved before
    save_file(
        {"input": x, "tv_eval": tv_eval.contiguous(), "feti_eval": feti_eval.contiguous(),
         "tv_batch_stats": tv_batch.contiguous()},
        str(OUT / "features_w8.safetensors"),
    )
    for f in sorted(OUT.iterdir()):
        print(f"{f.name}: {f.stat().st_size} bytes")


if __name__ == "__main__":
    main()
