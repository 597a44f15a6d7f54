"""Efficiency of the track-length estimator (TLE) against analog transport, in the same run.

Efficiency is ``epsilon = 1 / (sigma^2 T)``: ``T`` the wall time of the run, ``sigma`` a
relative standard uncertainty from the spread of 10 batch means (the batch method). Two
sigmas are reported: the median over organs of the uncertainty of the organ's mean dose,
and the median over voxels whose dose is at least 10 % of the maximum (the mask is taken
from the TLE map, the less noisy of the two, and used for both). The gain is
``epsilon_TLE / epsilon_analog``. For every organ the two mean doses are compared in units
of their combined standard uncertainty.

Problems, all on the built-in virtual patient (seed 0):

* ``ct``: the whole-body helical CT scan of ``benchmarks/bench_ct.py`` at 5 mm voxels
  (120 kVp, 7 mm Al, body bowtie). Secondary electrons are deposited where they are made
  (electron cut 200 keV, the CT dose's settings), so analog is the collision-kerma estimate
  scored at interaction points and TLE the same quantity scored along every track.
* ``f18-photons``: the photon part of 18F-FDG internal dose: pairs of 511 keV photons
  emitted isotropically from points drawn from the patient's true TIA (positron range and
  non-collinearity neglected), at 4 mm voxels, default transport settings.
* ``f18``, ``lu177``: whole decays (all ICRP-107 emissions) from the true TIA at 4 mm.
  The estimator only changes the photon part, so these gains are smaller.
* ``lu177-sampling``, ``f18-sampling`` (not run by default): Lu-177 decays (analog photons)
  and F-18 decays (track-length photons, as the demo's reference runs them), two ways of
  sampling the decays against each other (``TransportSettings.source_sampling``, the two
  given by ``--samplings``: random, stratified positions, or
  stratified positions with the decays' control variate, ``TransportSettings.control_variate``).

Prints the machine, each problem's time, sigmas, efficiencies and gain, and the organ
agreement. No assertion on time.

    python benchmarks/bench_tle.py [--problems ct f18-photons f18 lu177] [--scale 1.0]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


class ActivityPhotons:
    """Photons of one energy from points drawn from an activity map (picklable beam sampler).

    Each emission point gives two photons in opposite directions (511 keV annihilation
    pairs when ``pairs``), uniform in its voxel, in LPS mm.
    """

    def __init__(self, grid, weights: np.ndarray, energy_mev: float, pairs: bool = True):
        w = np.asarray(weights, dtype=np.float64).ravel()
        self.index = np.flatnonzero(w > 0)
        c = np.cumsum(w[self.index])
        self.cdf = c / c[-1]
        self.shape = grid.shape
        self.origin = np.asarray(grid.origin_xyz_mm, dtype=np.float64)
        self.direction = np.asarray(grid.direction_xyz, dtype=np.float64)
        self.spacing_xyz = np.asarray(grid.spacing_xyz_mm, dtype=np.float64)
        self.energy = float(energy_mev)
        self.pairs = pairs

    def sample(self, n, rng):
        m = (n + 1) // 2 if self.pairs else n
        vox = self.index[np.searchsorted(self.cdf, rng.random(m), side="right").clip(0, self.index.size - 1)]
        iz, iy, ix = np.unravel_index(vox, self.shape)
        idx = np.column_stack([ix, iy, iz]) + rng.random((m, 3)) - 0.5
        pts = self.origin + (idx * self.spacing_xyz) @ self.direction.T
        cos_t = 2.0 * rng.random(m) - 1.0
        phi = 2.0 * math.pi * rng.random(m)
        s = np.sqrt(1.0 - cos_t ** 2)
        d = np.column_stack([s * np.cos(phi), s * np.sin(phi), cos_t])
        if self.pairs:
            pts = np.concatenate([pts, pts])[:n]
            d = np.concatenate([d, -d])[:n]
        return pts, d, np.full(n, self.energy)


def _run(problem, masks):
    from persodose.mc.engine import run_batch

    per_organ, total, total2 = [], 0.0, 0.0
    t0 = time.perf_counter()
    for b in range(problem.n_batches):
        e = run_batch(problem, b).energy_per_primary_mev
        per_organ.append([e[i].sum() for i in masks.values()])
        total = total + e
        total2 = total2 + e * e
    secs = time.perf_counter() - t0
    nb = problem.n_batches
    per_organ = np.array(per_organ)
    mean_o = per_organ.mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel_o = per_organ.std(axis=0, ddof=1) / math.sqrt(nb) / mean_o
        mean_v = total / nb
        var_v = np.maximum(total2 / nb - mean_v ** 2, 0.0) * nb / (nb - 1) / nb
        rel_v = np.sqrt(var_v) / mean_v
    return {"seconds": secs, "organ_mean": mean_o, "organ_rel": rel_o, "voxel_mean": mean_v, "voxel_rel": rel_v}


def _compare(name, make_problem, masks, n, repeats=2, variants=("analog", "tle")):
    """Runs of two variants (analog and TLE) of one problem, alternated ``repeats`` times; the
    shortest time counts.

    Alternating the two keeps a load that varies during the run (a shared machine) from
    favouring either; the tallies of the repeats are identical (same seed).
    """
    from persodose.mc.engine import run_batch

    for est in variants:  # compile / load the kernels outside the timing
        run_batch(make_problem(est, 2000), 0)
    runs, times = {}, {v: [] for v in variants}
    for _ in range(repeats):
        for est in variants:
            runs[est] = _run(make_problem(est, n), masks)
            times[est].append(runs[est]["seconds"])
    for est in runs:
        runs[est]["seconds"] = min(times[est])
    a, t = runs[variants[0]], runs[variants[1]]
    hot = t["voxel_mean"] >= 0.1 * t["voxel_mean"].max()
    ok = np.isfinite(a["organ_rel"]) & np.isfinite(t["organ_rel"]) & (a["organ_mean"] > 0)
    out = {}
    for est, r in runs.items():
        so = float(np.median(r["organ_rel"][ok]))
        sv = float(np.nanmedian(r["voxel_rel"][hot]))
        out[est] = (r["seconds"], so, sv, 1 / (so ** 2 * r["seconds"]), 1 / (sv ** 2 * r["seconds"]))
    z = (t["organ_mean"][ok] / a["organ_mean"][ok] - 1) / np.hypot(a["organ_rel"][ok], t["organ_rel"][ok])
    names = [k for k, g in zip(masks, ok) if g]
    worst = int(np.argmax(np.abs(z)))
    print(f"\n{name}: {n:.3g} primaries per run, {len(names)} organs, {int(hot.sum())} voxels >= 10 % of max")
    print(f"  {'':10s} {'time s':>8s} {'sigma organs':>13s} {'sigma vox>10%':>14s} {'eps organs':>11s} "
          f"{'eps vox':>10s} {'voxels < 0':>11s}")
    for est, (s, so, sv, eo, ev) in out.items():
        neg = int((runs[est]["voxel_mean"] < 0).sum())
        print(f"  {est:10s} {s:8.1f} {100 * so:12.2f}% {100 * sv:13.2f}% {eo:11.3g} {ev:10.3g} {neg:11d}")
    go = out[variants[1]][3] / out[variants[0]][3]
    gv = out[variants[1]][4] / out[variants[0]][4]
    print(f"  gain ({variants[1]} / {variants[0]}): organs x{go:.1f}, voxels above 10 % x{gv:.1f}")
    print(f"  organ means {variants[1]} vs {variants[0]}: {np.mean(np.abs(z) < 3) * 100:.0f} % within 3 sigma, "
          f"median |z| {np.median(np.abs(z)):.2f}, worst {names[worst]} z = {z[worst]:+.1f} "
          f"({100 * (t['organ_mean'][ok][worst] / a['organ_mean'][ok][worst] - 1):+.2f} %)")
    return go, gv


def main() -> None:
    import numba

    from bench_ct import CT_TRANSPORT_KW, organ_masks, whole_body_scan
    import persodose.mc.problem as mc_problem
    from persodose.mc.engine import MCSettings, VoxelPhantom, beam_problem, decay_problem
    from persodose.mc.tables import TransportSettings, build_tables
    from persodose.phantoms import make_virtual_patient

    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", nargs="+", default=["ct", "f18-photons", "f18", "lu177"])
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every run's primaries")
    ap.add_argument("--repeats", type=int, default=2, help="alternated analog/TLE repeats (shortest time counts)")
    ap.add_argument("--seed", type=int, default=1, help="master seed of the runs")
    ap.add_argument("--batches", type=int, default=10,
                    help="batches of the *-sampling problems (the others use 10)")
    ap.add_argument("--control-min-decays", type=float, default=None,
                    help="the control variate's decay-count rule (persodose.mc.problem.CONTROL_MIN_DECAYS) "
                         "for this run, to measure its effect")
    ap.add_argument("--samplings", nargs=2, default=["random", "stratified"],
                    help="the two decay samplings the *-sampling problems compare: random, stratified "
                         "(positions) or control (stratified positions with the control variate)")
    args = ap.parse_args()
    if args.control_min_decays is not None:
        mc_problem.CONTROL_MIN_DECAYS = float(args.control_min_decays)
    print(f"control variate decay-count rule: {mc_problem.CONTROL_MIN_DECAYS:g} decays per voxel")
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"numba threads {numba.get_num_threads()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")

    def settings(est, **kw):
        return MCSettings(n_batches=10, chunks_per_batch=16, seed=args.seed,
                          transport=TransportSettings(photon_estimator=est, **kw))

    if "ct" in args.problems:
        vp, ph, beam, _ = whole_body_scan(5.0)
        ct_kw = CT_TRANSPORT_KW
        tabs = {est: build_tables(ph.material_list, TransportSettings(photon_estimator=est, **ct_kw))
                for est in ("analog", "tle")}
        _compare("ct (whole-body helical scan, 5 mm)",
                 lambda est, n: beam_problem(ph, beam, n, settings(est, **ct_kw), tabs[est]),
                 organ_masks(vp.labels, vp.label_names), int(1e6 * args.scale), args.repeats)

    need = {"f18-photons": "fdg", "f18": "fdg", "lu177": "lu177-dotatate", "lu177-sampling": "lu177-dotatate",
            "f18-sampling": "fdg"}
    for key in [p for p in args.problems if p in need]:
        vp = make_virtual_patient(tracer=need[key], voxel_mm=4.0)
        ph = VoxelPhantom.from_ct(vp.ct)
        masks = organ_masks(vp.labels, vp.label_names)
        tia = vp.truth_tia
        tabs = {est: build_tables(ph.material_list, TransportSettings(photon_estimator=est)) for est in ("analog", "tle")}
        if key == "f18-photons":
            sampler = ActivityPhotons(ph.density, tia.array, 0.511)
            _compare("f18-photons (511 keV pairs from the FDG TIA, 4 mm)",
                     lambda est, n: beam_problem(ph, sampler, n, settings(est), tabs[est]), masks,
                     int(2e6 * args.scale), args.repeats)
        elif key.endswith("-sampling"):
            src = ph.density.with_array(tia.array)
            est = "tle" if key == "f18-sampling" else "analog"

            def sampled(samp, n, est=est, src=src, nuc=vp.nuclide):
                return decay_problem(ph, src, nuc, n, MCSettings(
                    n_batches=args.batches, chunks_per_batch=16, seed=args.seed,
                    transport=TransportSettings(source_sampling="stratified" if samp == "control" else samp,
                                                control_variate=samp == "control", photon_estimator=est)))
            a, b = args.samplings
            _compare(f"{key} ({vp.nuclide} decays, {a} against {b} sampling, {est} photons, 4 mm)",
                     sampled, masks, int((1e6 if key == "f18-sampling" else 2e6) * args.scale), args.repeats,
                     (a, b))
        else:
            nuc = vp.nuclide
            src = ph.density.with_array(tia.array)
            _compare(f"{key} ({nuc} decays from the TIA, all emissions, 4 mm)",
                     lambda est, n: decay_problem(ph, src, nuc, n, settings(est), tabs[est]), masks,
                     int((1e6 if key == "f18" else 2e6) * args.scale), args.repeats)


if __name__ == "__main__":
    main()
