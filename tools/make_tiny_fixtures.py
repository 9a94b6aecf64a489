#!/usr/bin/env python3
"""Makes the small checkpoint fixtures of crates/fsct-transformer/tests/fixtures.

They complement ../shared/fixtures (a plain Conv4-cosine state dict at 84 px) with what that one
does not cover: a reference *training* checkpoint `{'epoch', 'state'}` (`.tar`) carrying the legacy
`FCN.*` keys, and the softmax variant. The model is the compact reference of
../shared/reference/fsct_torch.py (which reproduces the original bit for bit), at 16 px so that
d = 64 and the files stay small. Keys are written as the original code writes them: aliased
`trunk.{i}.trunk.{0,1}.*` conv/BN keys and weight-norm `linear.2.L.weight_{g,v}`.

    ../torch-venv/bin/python tools/make_tiny_fixtures.py
"""
import os
import sys

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "shared", "reference"))
from fsct_torch import FSCT  # noqa: E402

OUT = os.path.join(HERE, "..", "crates", "fsct-transformer", "tests", "fixtures")


def reference_state(model):
    """The state dict as the original code lays it out (aliases, weight-norm names)."""
    sd = {}
    for k, v in model.state_dict().items():
        k = k.replace("linear.2.L.parametrizations.weight.original0", "linear.2.L.weight_g")
        k = k.replace("linear.2.L.parametrizations.weight.original1", "linear.2.L.weight_v")
        sd[k] = v
        parts = k.split(".")
        if k.startswith("feature.trunk.") and parts[3] in ("C", "BN"):
            alias = ".".join(parts[:3] + ["trunk", "0" if parts[3] == "C" else "1"] + parts[4:])
            sd[alias] = v
    return sd


def make(name, variant, way, shot, query, as_training_checkpoint):
    torch.manual_seed(3)
    model = FSCT(4, way, shot, query, variant, dim=64)
    # Move BN running stats away from 0/1 and train-mode them so eval really uses them.
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(way, shot + query, 3, 16, 16))
        model.proto_weight.normal_()
    model.eval()
    sd = reference_state(model)
    if as_training_checkpoint:
        sd["FCN.conv.0.weight"] = torch.randn(4, 3, 3, 3)  # legacy autoencoder, ignored on import
        torch.save({"epoch": 7, "state": sd}, os.path.join(OUT, f"{name}.tar"))
    else:
        torch.save(sd, os.path.join(OUT, f"{name}.pt"))
        # As the reference saves models whose (torchvision) backbone is not an nn.Module.
        head = {k: v for k, v in sd.items() if not k.startswith("feature.")}
        torch.save(head, os.path.join(OUT, f"{name}_head_only.pt"))
    g = torch.Generator().manual_seed(5)
    x = torch.randn(way, shot + query, 3, 16, 16, generator=g)
    with torch.no_grad():
        scores = model(x)
    save_file({"x": x.contiguous(), "scores": scores.contiguous()}, os.path.join(OUT, f"{name}_io.safetensors"))
    print(name, tuple(scores.shape))


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    make("tiny_conv4_cosine", "cosine", 3, 2, 2, as_training_checkpoint=True)
    make("tiny_conv4_softmax", "softmax", 3, 2, 2, as_training_checkpoint=False)
