"""Benchmark: the ``dnn`` dose method (predicted kernels) on a whole-body 3 mm FDG patient, against MSV.

The issue's target: whole-body 3 mm FDG dose with the shipped weights in at most 60 s on 2
cores. The patient is the built-in virtual patient at 3 mm (``make_virtual_patient(tracer="fdg",
voxel_mm=3)``) with its true TIA; MSV (four kernels, the fastest heterogeneity-aware classical
method) is the baseline measured in the same run on the same grid, its kernels already cached
(as the ``dnn`` method's soft-tissue kernel is). Prints each method's time (median of
``--repeat``), the split of ``dnn`` into near field (network) and far field (FFT), and the grid.

Usage::

    python benchmarks/bench_dnn.py                  # shipped weights, CPU
    python benchmarks/bench_dnn.py --device cuda    # on a GPU
    python benchmarks/bench_dnn.py --voxel-mm 6     # a quick run (the network resamples to 3 mm)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_convolution import machine_info  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--voxel-mm", type=float, default=3.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--weights", default="")
    args = ap.parse_args(argv)
    import numpy as np

    from persodose.dose.kernels import KernelSet
    from persodose.dose.registry import DoseInputs, get_spec
    from persodose.mc.kernels import cached_kernel
    from persodose.phantoms import make_virtual_patient
    from persodose.physics.materials import ct_to_density_and_materials

    print(machine_info())
    vp = make_virtual_patient(tracer="fdg", voxel_mm=args.voxel_mm, seed=0)
    density, _, _ = ct_to_density_and_materials(vp.ct)
    tia = vp.truth_tia
    kernels = KernelSet.of([cached_kernel("F-18", args.voxel_mm, m) for m in ("soft_tissue", "lung", "bone_low", "bone")])
    if abs(args.voxel_mm - 3.0) > 1e-6:
        cached_kernel("F-18", 3.0, "soft_tissue")  # the network's voxel: computed before timing
    inputs = DoseInputs(tia=tia, nuclide="F-18", density=density, kernels=kernels)
    print(f"grid {tia.shape} at {args.voxel_mm:g} mm, {int(np.count_nonzero(tia.array))} voxels with activity")
    times = {"msv": [], "dnn": []}
    info = {}
    opts = {"msv": None, "dnn": {"device": args.device, **({"weights": args.weights} if args.weights else {})}}
    for _ in range(max(1, args.repeat)):
        for name in ("msv", "dnn"):
            t = time.perf_counter()
            out = get_spec(name).run(inputs, opts[name])
            times[name].append(time.perf_counter() - t)
            if name == "dnn":
                info = out.info
    for name, ts in times.items():
        print(f"{name}: {statistics.median(ts):.1f} s (median of {len(ts)}: {', '.join(f'{t:.1f}' for t in ts)})")
    print(f"dnn near field (network) {info.get('near_field_s')} s, far field (FFT) {info.get('far_field_s')} s "
          f"in the last run; weights {Path(info.get('weights', '')).name}")
    print(f"dnn / msv: {statistics.median(times['dnn']) / statistics.median(times['msv']):.2f}; target: dnn <= 60 s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
