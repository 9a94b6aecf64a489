#!/usr/bin/env python3
"""Makes the checkpoint-variant fixtures of crates/fsct-transformer/tests/fixtures (`micro_*`).

One micro FS-CT (cosine; Conv1 backbone on 2x2 images so d = 64; 2 heads of 8, FFN width 16;
3-way 2-shot 2-query), saved the ways real checkpoints of it come:

| file | how it was saved |
|---|---|
| `micro_cosine_legacy.tar` | the reference's `{'epoch': 11, 'state': sd}` (with an `FCN.*` key) in the legacy, pre-1.6 format (`_use_new_zipfile_serialization=False`) |
| `micro_cosine_legacy_plain.pt` | the plain state dict, legacy format |
| `micro_cosine_dataparallel.pt` | the state dict of `nn.DataParallel(model)`: every key `module.*` |
| `micro_cosine_compiled.pth` | the state dict of `torch.compile(model)`: every key `_orig_mod.*` |
| `micro_cosine_ddp_compiled.tar` | `{'epoch': 5, 'state': ...}` of a compiled model under DDP: `module._orig_mod.*` |
| `micro_cosine_lightning.ckpt` | a Lightning-style checkpoint: `state_dict` with `model.*` keys, optimizer states, hyper-parameters |
| `micro_cosine_model_optimizer.pt` | `{'epoch': 8, 'model': <DataParallel state dict>, 'optimizer': adam.state_dict()}` |
| `micro_cosine_renamed.pt` | the plain state dict with one key renamed, `proto_weight` → `x.proto_weight` |
| `micro_cosine_io.safetensors` | an input episode `x` and the model's `scores` |
| `evil_os_system.pt` | a `torch.save` whose pickle calls `os.system` when loaded in Python (never run here) |

The wrapper prefixes are the ones the wrappers really produce: the script checks that
`nn.DataParallel` and `torch.compile` state-dict keys are the model's keys with `module.` and
`_orig_mod.` in front, then writes the reference layout (aliased conv keys, weight-norm
`weight_g`/`weight_v`) under those prefixes. All files together are a few hundred KB.

    ../torch-venv/bin/python tools/make_variant_fixtures.py
"""
import os
import sys

import torch
import torch.nn as nn
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "shared", "reference"))
sys.path.insert(0, HERE)
from fsct_torch import FSCT  # noqa: E402
from make_tiny_fixtures import reference_state  # noqa: E402

OUT = os.path.join(HERE, "..", "crates", "fsct-transformer", "tests", "fixtures")
WAY, SHOT, QUERY, SIDE = 3, 2, 2, 2


def micro_model():
    torch.manual_seed(11)
    model = FSCT(1, WAY, SHOT, QUERY, "cosine", dim=64, heads=2, dim_head=8, mlp_dim=16)
    model.train()
    with torch.no_grad():
        for _ in range(2):  # move the BN running statistics away from 0/1
            model(torch.randn(WAY, SHOT + QUERY, 3, SIDE, SIDE))
        model.proto_weight.normal_()
    model.eval()
    return model


def prefixed(sd, prefix):
    out = type(sd)()
    for k, v in sd.items():
        out[prefix + k] = v
    return out


class Evil:
    def __reduce__(self):
        return (os.system, ("echo this checkpoint ran code",))


def main():
    os.makedirs(OUT, exist_ok=True)
    model = micro_model()
    sd = reference_state(model)

    # The prefixes the wrappers really add.
    keys = list(model.state_dict())
    assert list(nn.DataParallel(model).state_dict()) == ["module." + k for k in keys]
    assert list(torch.compile(model).state_dict()) == ["_orig_mod." + k for k in keys]
    assert list(nn.DataParallel(torch.compile(model)).state_dict()) == ["module._orig_mod." + k for k in keys]

    def out(name):
        return os.path.join(OUT, name)

    legacy = dict(_use_new_zipfile_serialization=False)
    training = dict(sd)
    training["FCN.conv.0.weight"] = torch.randn(2, 3, 1, 1)  # the reference's unused autoencoder
    torch.save({"epoch": 11, "state": training}, out("micro_cosine_legacy.tar"), **legacy)
    torch.save(sd, out("micro_cosine_legacy_plain.pt"), **legacy)
    torch.save(prefixed(sd, "module."), out("micro_cosine_dataparallel.pt"))
    torch.save(prefixed(sd, "_orig_mod."), out("micro_cosine_compiled.pth"))
    torch.save({"epoch": 5, "state": prefixed(sd, "module._orig_mod.")}, out("micro_cosine_ddp_compiled.tar"))
    renamed = type(sd)((("x." + k) if k == "proto_weight" else k, v) for k, v in sd.items())
    torch.save(renamed, out("micro_cosine_renamed.pt"))

    # An optimizer that has taken a step (on a copy of the model), so its state holds tensors too.
    trainee = micro_model()
    adam = torch.optim.Adam(trainee.parameters(), lr=1e-3)
    trainee.train()
    trainee(torch.randn(WAY, SHOT + QUERY, 3, SIDE, SIDE)).sum().backward()
    adam.step()
    adam_state = adam.state_dict()
    torch.save(
        {
            "epoch": 6,
            "global_step": 60,
            "pytorch-lightning_version": "2.4.0",
            "state_dict": prefixed(sd, "model."),
            "loops": {"fit_loop": {"epoch_progress": {"current": {"completed": 6}}}},
            "callbacks": {},
            "optimizer_states": [adam_state],
            "lr_schedulers": [],
            "hparams_name": "kwargs",
            "hyper_parameters": {"n_way": WAY, "k_shot": SHOT, "lr": 1e-3, "variant": "cosine"},
        },
        out("micro_cosine_lightning.ckpt"),
    )
    torch.save(
        {"epoch": 8, "model": prefixed(sd, "module."), "optimizer": adam_state},
        out("micro_cosine_model_optimizer.pt"),
    )
    loaded = torch.load(out("micro_cosine_legacy_plain.pt"), weights_only=True)
    assert loaded.keys() == sd.keys() and all(torch.equal(loaded[k], v) for k, v in sd.items())
    loaded = torch.load(out("micro_cosine_lightning.ckpt"), weights_only=True)["state_dict"]
    assert all(torch.equal(loaded["model." + k], v) for k, v in sd.items())

    torch.save({"proto_weight": torch.ones(WAY, SHOT, 1), "payload": Evil()}, out("evil_os_system.pt"))

    g = torch.Generator().manual_seed(5)
    x = torch.randn(WAY, SHOT + QUERY, 3, SIDE, SIDE, generator=g)
    with torch.no_grad():
        scores = model(x)
    save_file({"x": x.contiguous(), "scores": scores.contiguous()}, out("micro_cosine_io.safetensors"))
    for name in sorted(os.listdir(OUT)):
        if name.startswith(("micro_", "evil_")):
            print(f"{name}: {os.path.getsize(out(name))} bytes")


if __name__ == "__main__":
    main()
