"""Monte Carlo throughput: decays per second for Lu-177, Y-90 and F-18.

The issue's reference problem: a 128 x 128 x 128 phantom of 4 mm voxels with lung, soft
tissue and bone (a soft-tissue block with two lungs and a spine-like bone column), the
activity spread uniformly in the soft tissue. Prints the median of several runs, the
machine, and a same-run baseline (the photon-only throughput of the same kernel), and
never fails on time.

    python benchmarks/bench_mc.py [--quick] [--decays N] [--repeats R]
    python benchmarks/bench_mc.py --backend cuda [--chunks 16384 65536 ...]
    python benchmarks/bench_mc.py --breakdown   # Lu-177 by emission type: where the time goes
    python benchmarks/bench_mc.py --run-sizes 4000 400000 2000000   # a run's fixed cost, marginal rate
    python benchmarks/bench_mc.py --eloss-fractions 0.04 0.08 0.16  # Lu-177 against the step length

With ``--backend cuda`` (an NVIDIA GPU) every nuclide is run at each number of chunks per
batch given (one CUDA thread per chunk), so one command also finds the best launch size;
the baseline is then the photon throughput of the same kernel on the GPU.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np


def phantom(n: int, voxel_mm: float):
    from persodose.grid import Grid, Kind
    from persodose.mc import VoxelPhantom
    from persodose.physics.materials import get_material

    mats = (get_material("soft_tissue"), get_material("lung"), get_material("bone"))
    m = np.zeros((n, n, n), np.uint8)
    zz, yy, xx = np.indices((n, n, n))
    c = (n - 1) / 2
    m[((xx - c * 0.55) ** 2 + (yy - c) ** 2) < (0.22 * n) ** 2] = 1
    m[((xx - c * 1.45) ** 2 + (yy - c) ** 2) < (0.22 * n) ** 2] = 1
    m[((xx - c) ** 2 + (yy - c * 1.5) ** 2) < (0.07 * n) ** 2] = 2
    dens = np.array([mt.density_g_cm3 for mt in mats])[m].astype(np.float32)
    sp = (voxel_mm,) * 3
    return (VoxelPhantom(Grid(dens, sp, kind=Kind.DENSITY), Grid(m, sp, kind=Kind.MATERIAL), mats),
            Grid((m == 0).astype(np.float32), sp, kind=Kind.ACTIVITY))


def main() -> None:
    import numba

    from persodose.mc import MCSettings, build_tables, simulate_decays, simulate_point_source

    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="64^3 phantom, fewer decays")
    ap.add_argument("--decays", type=int, default=None, help="decays per run (default 4e5 CPU, 5e7 CUDA)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--backend", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--chunks", type=int, nargs="+", default=None,
                    help="chunks per batch to try (default 32 CPU; 16384 65536 131072 262144 CUDA)")
    ap.add_argument("--breakdown", action="store_true",
                    help="also time Lu-177 with one emission type at a time (MCSettings.emissions)")
    ap.add_argument("--run-sizes", type=int, nargs="+", default=None,
                    help="also time Lu-177 runs of these sizes and fit time = fixed + decays / rate")
    ap.add_argument("--eloss-fractions", type=float, nargs="+", default=None,
                    help="also time Lu-177 at these TransportSettings.max_eloss_fraction (0.04 is validated)")
    args = ap.parse_args()
    n = 64 if args.quick else 128
    decays = args.decays or (50_000_000 if args.backend == "cuda" else 400_000)
    decays //= 8 if args.quick else 1
    chunk_list = args.chunks or ([16384, 65536, 131072, 262144] if args.backend == "cuda" else [32])
    ph, src = phantom(n, 4.0)
    tables = build_tables(ph.material_list, MCSettings().transport)
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, numba threads {numba.get_num_threads()}")
    if args.backend == "cuda":
        from persodose.mc.gpu import device_info

        print(f"device: {device_info()}")
    print(f"phantom: {n}^3 voxels of 4 mm (soft tissue, lung, bone); {decays} decays per run, "
          f"median of {args.repeats}; backend {args.backend}")
    for chunks in chunk_list:
        settings = MCSettings(n_batches=4, chunks_per_batch=chunks, backend=args.backend)
        # warm-up (compilation)
        simulate_decays(ph, src, "Lu-177", max(1000, 4 * chunks), settings, tables=tables)
        simulate_point_source(ph, "photon", 0.2, max(1000, 4 * chunks), settings=settings, tables=tables)
        rows = []
        for nuc in ("Lu-177", "Y-90", "F-18"):
            rates = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                simulate_decays(ph, src, nuc, decays, settings, tables=tables)
                rates.append(decays / (time.perf_counter() - t0))
            rows.append((nuc, statistics.median(rates)))
        base = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            simulate_point_source(ph, "photon", 0.208, decays // 4, settings=settings, tables=tables)
            base.append(decays // 4 / (time.perf_counter() - t0))
        print(f"chunks per batch: {chunks}")
        for nuc, rate in rows:
            print(f"  {nuc:7s} {rate:12.3e} decays/s")
        print(f"  baseline: 208 keV photons from a point, {statistics.median(base):.3e} photons/s (same run)")
        if args.breakdown:
            _breakdown(ph, src, decays, chunks, args, tables)
        if args.run_sizes:
            _run_sizes(ph, src, chunks, args, tables)
        if args.eloss_fractions:
            _eloss_fractions(ph, src, decays, chunks, args)


def _median_seconds(fn, repeats: int) -> float:
    secs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        secs.append(time.perf_counter() - t0)
    return statistics.median(secs)


def _run_sizes(ph, src, chunks, args, tables) -> None:
    """Lu-177 wall time against the run's size, and the straight line through it: the fixed
    cost of a run (tables, source CDF, tallies, uncertainty map) and the rate of the decays."""
    from persodose.mc import MCSettings, simulate_decays

    settings = MCSettings(n_batches=4, chunks_per_batch=chunks, backend=args.backend)
    sizes = sorted(set(args.run_sizes))
    secs = [_median_seconds(lambda n=n: simulate_decays(ph, src, "Lu-177", n, settings, tables=tables),
                            args.repeats) for n in sizes]
    print("  Lu-177 by run size (4 batches):")
    for n, s in zip(sizes, secs):
        print(f"    {n:10d} decays {s:8.3f} s  {n / s:.3e} decays/s")
    if len(sizes) >= 2:
        slope, fixed = np.polyfit(np.asarray(sizes, float), np.asarray(secs), 1)
        print(f"    fit: fixed {fixed:.3f} s per run, {1.0 / slope:.3e} decays/s beyond it")


def _eloss_fractions(ph, src, decays, chunks, args) -> None:
    """Lu-177 throughput and electron steps per decay against the electron step length
    (only 0.04, the default, passes the electron validation: docs/validation_electrons.md)."""
    from persodose.mc import MCSettings, build_tables, simulate_decays
    from persodose.mc.tables import TransportSettings

    print("  Lu-177 by max_eloss_fraction:")
    for f in args.eloss_fractions:
        settings = MCSettings(n_batches=4, chunks_per_batch=chunks, backend=args.backend,
                              transport=TransportSettings(max_eloss_fraction=f))
        tables = build_tables(ph.material_list, settings.transport)
        simulate_decays(ph, src, "Lu-177", max(1000, 4 * chunks), settings, tables=tables)
        out = {}

        def run():
            out["r"] = simulate_decays(ph, src, "Lu-177", decays, settings, tables=tables)

        s = _median_seconds(run, args.repeats)
        print(f"    {f:5.3f}  {decays / s:.3e} decays/s  {1e6 * s / decays:5.2f} us/decay  "
              f"{out['r'].energy_balance['electron_steps']:.2f} electron steps per decay")


def _breakdown(ph, src, decays, chunks, args, tables) -> None:
    """Lu-177 time per decay with all emissions and with each group alone (sum > total: the
    per-decay work of sampling a position and the lines is in every row)."""
    from persodose.mc import MCSettings, simulate_decays

    print("  Lu-177 by emissions (microseconds of wall time per decay on all threads):")
    for em in (None, "beta", "gamma,xray", "ic,auger"):
        settings = MCSettings(n_batches=4, chunks_per_batch=chunks, backend=args.backend, emissions=em)
        simulate_decays(ph, src, "Lu-177", max(1000, 4 * chunks), settings, tables=tables)
        out = {}

        def run(settings=settings):
            out["r"] = simulate_decays(ph, src, "Lu-177", decays, settings, tables=tables)

        s = _median_seconds(run, args.repeats)
        print(f"    {em or 'all':12s} {1e6 * s / decays:6.2f} us/decay  ({decays / s:.3e} decays/s, "
              f"{out['r'].energy_balance['electron_steps']:.2f} electron steps per decay)")


if __name__ == "__main__":
    main()
