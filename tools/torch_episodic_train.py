#!/usr/bin/env python3
"""Episodic training of the PyTorch reference FS-CT (tools/fsct_reference.py) on the reference's
JSON split files, the protocol of the reference's train_test.py (spec §3.3–3.6):

- episodes: N random distinct classes, K + M distinct random images of each, x of shape
  (N, K + M, C, H, W), targets = the class's position in the episode;
- transform (eval pipeline of HEAD, no augmentation): Resize(S) (shorter side, bilinear) →
  CenterCrop(S) → ToTensor → Normalize(ImageNet mean, std), on PIL images converted to RGB;
- AdamW(lr 1e-3, weight decay 1e-5), constant learning rate;
- per epoch: model.train() and `--episodes` training steps, then model.eval() + no_grad on
  `--val-episodes` val episodes; a strictly better val accuracy keeps the state as the best;
- at the end: the best state, eval mode, `--test-episodes` episodes of novel, reported as
  mean ± 1.96·σ/√n (σ the population standard deviation) of the per-episode accuracies (%).

The transform is deterministic, so every image is transformed once and kept in memory.
`--seed` seeds torch, numpy and random, and the episode sampling (numpy Generators of its own,
one per split). Prints one JSON line at the end (the study's tools/seed_study.sh reads it):

    /work/torch-venv/bin/python tools/torch_episodic_train.py --root target/fidelity/glyphs \
        --method FSCT_cosine --seed 1 --epochs 6 --episodes 100 --val-episodes 100 \
        --test-episodes 600 --way 5 --shot 5 --query 16 --image-size 28 --threads 2

Needs torch and Pillow.
"""
import argparse
import copy
import json
import math
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fsct_reference import FSCT  # noqa: E402

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def transform(path, size):
    """torchvision's Resize(size) → CenterCrop(size) → ToTensor → Normalize on a PIL image."""
    img = Image.open(path).convert("RGB")
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    if short != size:
        new_long = int(size * long / short)
        new_w, new_h = (size, new_long) if w <= h else (new_long, size)
        img = img.resize((new_w, new_h), Image.BILINEAR)
    w, h = img.size
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    img = img.crop((left, top, left + size, top + size))
    a = np.asarray(img, dtype=np.float32) / 255.0  # H, W, C
    a = (a - MEAN) / STD
    return torch.from_numpy(a.transpose(2, 0, 1).copy())


class Split:
    """One split file: the images of each class (sorted unique labels), transformed."""

    def __init__(self, path, size):
        with open(path, encoding="utf-8-sig") as f:
            meta = json.load(f)
        folder = os.path.dirname(os.path.abspath(path))
        by_label = {}
        for name, label in zip(meta["image_names"], meta["image_labels"]):
            by_label.setdefault(label, []).append(os.path.join(folder, name))  # join keeps absolute names
        self.classes = [torch.stack([transform(p, size) for p in by_label[label]]) for label in sorted(by_label)]

    def episode(self, rng, way, per_class):
        classes = rng.permutation(len(self.classes))[:way]
        return torch.stack(
            [self.classes[c][torch.from_numpy(rng.choice(len(self.classes[c]), per_class, replace=False))] for c in classes]
        )


def evaluate(model, split, rng, n, a):
    model.eval()
    target = torch.arange(a.way).repeat_interleave(a.query)
    accs = []
    with torch.no_grad():
        for _ in range(n):
            x = split.episode(rng, a.way, a.shot + a.query)
            accs.append((model(x).argmax(1) == target).float().mean().item() * 100.0)
    accs = np.array(accs)
    return float(accs.mean()), float(1.96 * accs.std() / math.sqrt(len(accs)))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="folder with base.json, val.json, novel.json")
    p.add_argument("--method", default="FSCT_cosine", choices=["FSCT_cosine", "FSCT_softmax"])
    p.add_argument("--backbone", default="Conv4", choices=["Conv4", "Conv6"])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--episodes", type=int, default=100, help="training episodes per epoch")
    p.add_argument("--val-episodes", type=int, default=100)
    p.add_argument("--test-episodes", type=int, default=600)
    p.add_argument("--way", type=int, default=5)
    p.add_argument("--shot", type=int, default=5)
    p.add_argument("--query", type=int, default=16)
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-5)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()

    start = time.perf_counter()
    torch.set_num_threads(a.threads)
    random.seed(a.seed)
    np.random.seed(a.seed)
    torch.manual_seed(a.seed)
    base = Split(os.path.join(a.root, "base.json"), a.image_size)
    val = Split(os.path.join(a.root, "val.json"), a.image_size)
    novel = Split(os.path.join(a.root, "novel.json"), a.image_size)
    # Episode streams of their own, so that the model's draws do not move them.
    train_rng, val_rng, test_rng = (np.random.default_rng([a.seed, i]) for i in range(3))

    depth = {"Conv4": 4, "Conv6": 6}[a.backbone]
    variant = a.method.split("_")[1]
    # The transformer's width is the backbone's flattened output at this image size.
    dim = FSCT(depth, a.way, a.shot, a.query, variant, dim=1).feature(
        torch.zeros(1, 3, a.image_size, a.image_size)).shape[1]
    torch.manual_seed(a.seed)  # the model's initialisation depends on the seed only
    model = FSCT(depth, a.way, a.shot, a.query, variant, dim=dim)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=a.weight_decay)
    target = torch.arange(a.way).repeat_interleave(a.query)

    best_acc, best_epoch, best_state = 0.0, -1, None
    train_loss, train_acc, val_acc, val_ci = [], [], [], []
    for epoch in range(a.epochs):
        model.train()
        losses, accs = [], []
        for _ in range(a.episodes):
            x = base.episode(train_rng, a.way, a.shot + a.query)
            opt.zero_grad()
            scores = model(x)
            loss = F.cross_entropy(scores, target)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            accs.append((scores.argmax(1) == target).float().mean().item())
        acc, ci = evaluate(model, val, val_rng, a.val_episodes, a)
        train_loss.append(float(np.mean(losses)))
        train_acc.append(float(np.mean(accs)))
        val_acc.append(acc)
        val_ci.append(ci)
        print(f"epoch {epoch}: train loss {train_loss[-1]:.4f}, val {acc:.2f}% ± {ci:.2f}%", file=sys.stderr)
        if acc > best_acc:
            best_acc, best_epoch, best_state = acc, epoch, copy.deepcopy(model.state_dict())

    if best_state is not None:
        model.load_state_dict(best_state)
    test_acc, test_ci = evaluate(model, novel, test_rng, a.test_episodes, a)
    print(f"test: {a.test_episodes} episodes, accuracy {test_acc:.2f}% ± {test_ci:.2f}%", file=sys.stderr)
    print(json.dumps({
        "framework": "pytorch", "torch": torch.__version__, "seed": a.seed, "method": a.method,
        "backbone": a.backbone, "test_acc": test_acc, "test_ci95": test_ci, "best_epoch": best_epoch,
        "best_val_acc": best_acc, "train_loss": train_loss, "train_acc": train_acc, "val_acc": val_acc,
        "val_ci95": val_ci, "seconds": time.perf_counter() - start,
    }))


if __name__ == "__main__":
    main()
