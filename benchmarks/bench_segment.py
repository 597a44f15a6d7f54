"""Benchmark: the ``builtin`` segmenter (25 organs, residual U-Net at 3 mm) against ``threshold``.

On a held-out population patient (population seed 2026, patient 4, a test patient: never in the
shipped weights' training) at 3 mm: the time of ``segment(ct, "builtin")`` (resampling, body
box, sliding window, clean-up, labels back on the CT grid; median of ``--repeats``) beside the
analytic ``threshold`` back-end on the same CT (the baseline, measured in the same run), and the
number of organs found. The issue's target: 19 organs at 3 mm in at most 60 s on 2 cores.
No assertions.

Usage::

    python benchmarks/bench_segment.py [--repeats 3] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_convolution import machine_info  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    import torch

    from persodose.phantoms.population import draw_population, make_population_patient
    from persodose.segmentation import segment

    vp = make_population_patient(draw_population(5, 2026)[4], tracer="fdg", voxel_mm=3.0)
    print(f"machine: {machine_info()} | torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"device {a.device}")
    print(f"CT {vp.ct.shape} at 3 mm ({np.prod(vp.ct.shape) / 1e6:.1f} M voxels)")
    for backend, settings in (("threshold", None), ("builtin", {"device": a.device})):
        times = []
        for _ in range(a.repeats):
            t = time.perf_counter()
            res = segment(vp.ct, backend, settings=settings)
            times.append(time.perf_counter() - t)
        found = len(set(np.unique(res.labels.array).tolist()) - {0})
        print(f"{backend:>10}: {statistics.median(times):6.1f} s median of {a.repeats} "
              f"({min(times):.1f}-{max(times):.1f}), {found} structures")


if __name__ == "__main__":
    main()
