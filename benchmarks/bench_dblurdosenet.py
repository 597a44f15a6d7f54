"""Benchmark: DblurDoseNet inference (with its DSV) against DSV alone, on a 512x512x130 CT grid.

The issue's target: 512x512x130 inference with its DSV in at most 60 s on 2 cores (the paper:
20 s on a V100 plus 10 s of DVK; 20 min on a CPU). The grid is the paper's CT grid (0.98 x 0.98
x 3 mm); the ``dblurdosenet`` dose method brings it to the network's 4.8 mm voxel (activity
kept, density interpolated), runs DSV and the network there and interpolates the dose rate
back, so both timings include the same resampling. One time point; DSV alone is the baseline
measured in the same run (the ``dsv`` method at 4.8 mm on the same resampled activity).

Usage::

    python benchmarks/bench_dblurdosenet.py                 # shipped weights, 512x512x130
    python benchmarks/bench_dblurdosenet.py --quick         # 128x128x40
    python benchmarks/bench_dblurdosenet.py --device cuda   # on a GPU
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_convolution import machine_info  # noqa: E402


def _patient(shape, spacing):
    """A torso-like ellipse of soft tissue with a spine, lungs, kidneys and a hot lesion."""
    import numpy as np

    from persodose.grid import Grid, Kind

    nz, ny, nx = shape
    zz, yy, xx = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape), indexing="ij")
    y_mm, x_mm = (yy - ny / 2) * spacing[1], (xx - nx / 2) * spacing[2]
    body = (x_mm / 170) ** 2 + (y_mm / 115) ** 2 <= 1
    rho = np.where(body, 1.04, 0.0012).astype(np.float32)
    rho[((x_mm - 75) / 45) ** 2 + (y_mm / 60) ** 2 <= 1] = 0.26
    rho[(x_mm / 18) ** 2 + ((y_mm - 70) / 18) ** 2 <= 1] = 1.4
    act = np.where(body, 1e3, 0.0).astype(np.float32)
    for cx in (-60.0, 60.0):
        act[(((x_mm - cx) / 30) ** 2 + ((y_mm - 40) / 45) ** 2 <= 1) & (zz > nz * 0.3) & (zz < nz * 0.7)] = 4e4
    act[((x_mm + 20) ** 2 + (y_mm + 30) ** 2 <= 20 ** 2) & (abs(zz - nz / 2) * spacing[0] < 20)] = 2e5
    density = Grid(rho, spacing, kind=Kind.DENSITY)
    return density, density.with_array(act * np.prod(spacing) / 1000.0, Kind.ACTIVITY)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="128x128x40 grid")
    ap.add_argument("--weights", default="dblurdosenet-lu177")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from persodose.dose.kernels import KernelSet
    from persodose.dose.registry import DoseInputs, get_spec
    from persodose.grid import Kind, cubic_grid_over, resample_sum
    from persodose.mc.kernels import cached_kernel

    shape = (40, 128, 128) if args.quick else (130, 512, 512)
    spacing = (3.0, 0.98, 0.98)
    density, act = _patient(shape, spacing)
    t_s = 24 * 3600.0
    tia = act.with_array(act.array * t_s, Kind.TIA)
    k_native = KernelSet.of([cached_kernel("Lu-177", 4.8, "soft_tissue")])
    print("machine :", machine_info(), f"| torch {torch.__version__} threads {torch.get_num_threads()}")
    print(f"problem : CT grid {shape} at {spacing} mm, one time point, device {args.device}")

    # baseline: DSV at the network's voxel on the same resampled activity (what the method computes first)
    net_grid = cubic_grid_over(density, 4.8)
    rho48 = density.resample_to(net_grid)
    a48 = net_grid.with_array(resample_sum(act, net_grid).astype(np.float32), Kind.TIA)
    dsv = get_spec("dsv")

    def run_dsv():
        return dsv.run(DoseInputs(a48, "Lu-177", density=rho48, kernels=k_native)).dose

    spec = get_spec("dblurdosenet")
    inputs = DoseInputs(tia, "Lu-177", density=density, kernels=None, activities=(act,), times_s=(t_s,))
    settings = spec.make_settings({"weights": args.weights, "device": args.device})

    def run_net():  # the method's own path from the native grid: resampling, DSV, network, back
        return spec.run(inputs, settings)

    run_dsv()
    t_dsv = [_time(run_dsv) for _ in range(args.repeats)]
    run_net()
    t_net = [_time(run_net) for _ in range(args.repeats)]
    print(f"network grid {net_grid.shape} at 4.8 mm")
    print(f"DSV alone (4.8 mm, resampled activity given) : median {statistics.median(t_dsv):7.2f} s   runs {t_dsv}")
    print(f"dblurdosenet method (resampling, DSV, network): median {statistics.median(t_net):7.2f} s   runs {t_net}")
    print(f"ratio: {statistics.median(t_net) / statistics.median(t_dsv):.1f}x; target <= 60 s")
    return 0


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return round(time.perf_counter() - t0, 2)


if __name__ == "__main__":
    raise SystemExit(main())
