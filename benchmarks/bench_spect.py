"""Benchmark: 177Lu SPECT camera model (PyTomography projections + OSEM) vs the blur model.

On the canonical virtual patient at 4.8 mm (``make_virtual_patient(voxel_mm=4.8, seed=0)``,
the activity of the first time point) in a 39 cm axial field centred on the liver and kidneys
(the paper's SPECT field), with 1e7 expected counts (the paper: 3e6 to 2e7). Prints the machine,
the time of one simulation + reconstruction per model (blur: median of ``--repeats``; camera:
one run, it takes minutes on 2 cores) and the recovered activity (SPECT image back on the CT
grid, summed in the truth VOI / true activity in the VOI) of kidneys, liver, spleen and lesions.
No assertions.

Usage::

    python benchmarks/bench_spect.py                    # camera defaults (128^2, 120 views, 4x10)
    python benchmarks/bench_spect.py --n-views 60 --iterations 4 --subsets 10
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


def _machine() -> str:
    import torch

    return f"{machine_info()} | torch {torch.__version__} ({torch.get_num_threads()} threads)"


def _field_mm(vp) -> tuple[float, float]:
    """39 cm z range centred on the liver and kidneys (physical z, mm)."""
    lab = vp.labels.array
    ids = [k for k, n in vp.label_names.items() if n in ("liver", "kidney_left", "kidney_right")]
    zi = np.nonzero(np.isin(lab, ids))[0]
    zc = float(vp.labels.index_to_physical(np.array([zi.mean(), 0.0, 0.0]))[2])
    return (zc - 195.0, zc + 195.0)


def _recovered(img_ct, truth, labels, names) -> dict[str, tuple[float, float]]:
    keys = [k for k, n in names.items() if n in ("kidney_left", "kidney_right", "liver", "spleen")
            or n.startswith("lesion")]
    out = {}
    for k in keys:
        m = labels == k
        t = float(truth[m].sum())
        if t > 0:
            out[names[k]] = (t, float(img_ct[m].sum()) / t)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-views", type=int, default=120)
    ap.add_argument("--iterations", type=int, default=4)
    ap.add_argument("--subsets", type=int, default=10)
    ap.add_argument("--counts", type=float, default=1e7)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    from persodose.phantoms.spect_camera import SPECTCamera, simulate_spect, spect_to_ct_grid
    from persodose.phantoms.virtual_patient import make_virtual_patient

    print(_machine())
    vp = make_virtual_patient(voxel_mm=4.8, seed=0)
    act, dens = vp.truth_activity[0], vp.density
    field = _field_mm(vp)
    zc = np.array([vp.labels.index_to_physical(np.array([i, 0.0, 0.0]))[2] for i in range(act.shape[0])])
    in_field = ((zc >= field[0]) & (zc <= field[1]))[:, None, None]
    truth = np.where(in_field, act.array, 0.0)
    act_f = act.with_array(truth)
    cams = {"blur": SPECTCamera(model="blur"),
            "camera": SPECTCamera(n_views=args.n_views, iterations=args.iterations, subsets=args.subsets)}
    print(f"patient {act.shape} at 4.8 mm, field z {field[0]:.0f}..{field[1]:.0f} mm, "
          f"{act_f.total() / 1e6:.0f} MBq in the field, {args.counts:.1e} expected counts")
    print(f"camera: {cams['camera']}")
    times, rec = {}, {}
    for name, cam in cams.items():
        runs = args.repeats if name == "blur" else 1
        ts = []
        for _ in range(runs):
            t0 = time.perf_counter()
            img = simulate_spect(act_f, dens, cam, total_counts=args.counts, rng=np.random.default_rng(0),
                                 axial_range_mm=field)
            ts.append(time.perf_counter() - t0)
        times[name] = statistics.median(ts)
        back = spect_to_ct_grid(img, act)
        rec[name] = _recovered(back.array, truth, vp.labels.array, vp.label_names)
        print(f"{name}: SPECT grid {img.shape}, {times[name]:.1f} s per simulation + reconstruction "
              f"(median of {runs}), image total / truth {img.total() / act_f.total():.3f}")
    print()
    print(f"{'VOI':<20}{'truth MBq':>11}{'camera':>9}{'blur':>9}   (recovered / true activity)")
    for voi, (t, r) in rec["camera"].items():
        print(f"{voi:<20}{t / 1e6:>11.1f}{r:>9.3f}{rec['blur'][voi][1]:>9.3f}")
    print(f"\ntime camera / blur: {times['camera']:.1f} s / {times['blur']:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
