"""Benchmark: training steps per second of persodose's networks, CPU against GPU, in one run.

What more compute buys is first a question of how many optimiser steps a second each device
gives. For each network, one training step as the training code does it (forward, loss,
backward, Adam), on random inputs of the shapes and batch sizes the shipped weights were
trained with (read from their sidecars; ``ct-deepdose`` from its dataset kind's defaults),
timed as the median of ``--steps`` steps after ``--warmup`` untimed ones:

* ``kernel-dnn``: batch 32 of (2, 11, 11, 11) -> (343, 1, 1, 1), L2 loss;
* ``segmenter``: MONAI residual U-Net, batch 2 of (2, 64, 64, 64), Dice + cross-entropy;
* ``dblurdosenet``: batch 4 of (3, 32, 64, 64) -> (1, 32, 64, 64), L2 loss;
* ``ct-deepdose``: batch 4 of (2, 33, 48, 48) -> (1, 33, 48, 48), L2 loss.

On CUDA the step runs under bfloat16 autocast as ``persodose train`` does (``amp``); on the CPU
in float32, in ``channels_last_3d`` where the network's spec asks for it. Prints samples/s and
the GPU/CPU ratio when both devices are given. Never fails on time.

    python benchmarks/bench_train_step.py --devices cpu            # here
    python benchmarks/bench_train_step.py --devices cpu cuda       # on a GPU machine
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_convolution import machine_info  # noqa: E402

WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "persodose" / "dl" / "weights"


def _sidecar(name: str) -> dict:
    return json.loads((WEIGHTS / f"{name}.pt.json").read_text())


def _cases(only: list[str] | None):
    """``(name, build(torch) -> (module, loss_fn, x, y, channels_last))`` for each network."""
    from persodose.dl.networks import build_network, get_network

    def registry_net(network: str, settings: dict, batch: int, x_shape, y_shape):
        def build(torch):
            spec, _, module = build_network(network, settings)
            x = torch.rand((batch, *x_shape))
            y = torch.rand((batch, *y_shape))
            return module, torch.nn.functional.mse_loss, x, y, get_network(network).channels_last_cpu
        return build

    def segmenter(torch):
        from monai.losses import DiceCELoss

        from persodose.segmentation.builtin import UNetConfig, build_unet

        sc = _sidecar("segmenter-virtual-3mm")
        u = sc["unet"]
        config = UNetConfig(classes=tuple(u["classes"]), channels=tuple(u["channels"]), res_units=u["res_units"],
                            patch_voxels=u["patch_voxels"], voxel_mm=u["voxel_mm"])
        p = config.patch_voxels
        b = int(sc["train_settings"]["batch_size"])
        x = torch.rand((b, 2, p, p, p))
        y = torch.randint(0, len(config.classes) + 1, (b, 1, p, p, p))
        return build_unet(config), DiceCELoss(to_onehot_y=True, softmax=True, batch=True), x, y, False

    k = _sidecar("kernel-dnn-f18")
    kd = json.loads((WEIGHTS / "kernel-dnn-f18.data-manifest.json").read_text())
    d = _sidecar("dblurdosenet-lu177")
    dd = json.loads((WEIGHTS / "dblurdosenet-lu177.data-manifest.json").read_text())
    from persodose.dl.dataset_kinds.ct_sp import CTSPSettings

    ct = CTSPSettings()
    cases = [
        ("kernel-dnn", registry_net("kernel-dnn", k["network_settings"], int(k["train_settings"]["batch_size"]),
                                    kd["input_shape"], kd["target_shape"])),
        ("segmenter", segmenter),
        ("dblurdosenet", registry_net("dblurdosenet", d["network_settings"], int(d["train_settings"]["batch_size"]),
                                      dd["input_shape"], dd["target_shape"])),
        ("ct-deepdose", registry_net("ct-deepdose", {}, 4, (2, ct.depth, ct.patch, ct.patch),
                                     (1, ct.depth, ct.patch, ct.patch))),
    ]
    return [c for c in cases if not only or c[0] in only]


def _time_steps(torch, build, device: str, steps: int, warmup: int) -> tuple[float, int, str]:
    """Median seconds per step, the batch size, and the loss of the last step."""
    torch.manual_seed(0)
    module, loss_fn, x, y, channels_last = build(torch)
    dev = torch.device(device)
    fmt = torch.channels_last_3d if (channels_last and dev.type == "cpu") else torch.contiguous_format
    module = module.to(dev).to(memory_format=fmt)
    x = x.to(dev).contiguous(memory_format=fmt)
    y = y.to(dev)
    opt = torch.optim.Adam(module.parameters(), lr=1e-4)
    module.train()
    times, loss = [], None
    for i in range(warmup + steps):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            out = module(x)
            if out.shape[2:] != y.shape[2:] and y.dtype.is_floating_point:
                out = out[(...,) + tuple(slice(0, s) for s in y.shape[2:])]
            loss = loss_fn(out.float(), y)
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times), int(x.shape[0]), f"{float(loss.detach()):.3g}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", nargs="+", default=["cpu"])
    ap.add_argument("--networks", nargs="+", default=None,
                    help="kernel-dnn segmenter dblurdosenet ct-deepdose (default: all)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args(argv)
    import torch

    print(machine_info())
    for dev in args.devices:
        if dev.startswith("cuda") and not torch.cuda.is_available():
            print(f"device {dev}: no CUDA device here; left out")
    devices = [d for d in args.devices if not d.startswith("cuda") or torch.cuda.is_available()]
    if any(d.startswith("cuda") for d in devices):
        print(f"cuda: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    rates: dict[tuple[str, str], float] = {}
    for name, build in _cases(args.networks):
        for dev in devices:
            s, b, loss = _time_steps(torch, build, dev, args.steps, args.warmup)
            rates[(name, dev)] = b / s
            print(f"{name:13s} {dev:5s} batch {b:3d}: {s * 1e3:9.1f} ms/step, {b / s:9.1f} samples/s "
                  f"(median of {args.steps}; last loss {loss})", flush=True)
        if len(devices) > 1:
            base = rates[(name, devices[0])]
            print(f"{name:13s} " + ", ".join(f"{d}/{devices[0]} {rates[(name, d)] / base:.1f}x" for d in devices[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
