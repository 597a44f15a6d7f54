"""CT Monte Carlo throughput: a whole-body helical scan of the virtual patient.

Problem: the virtual patient (:func:`persodose.phantoms.make_virtual_patient`) at 5 mm voxels,
converted to densities and materials with the default Schneider calibration
(:meth:`persodose.mc.VoxelPhantom.from_ct`); a helical scan over its whole length: focal spot
on a circle of radius 541 mm about the patient's long axis, 40 mm collimation at the
isocentre (cone), 50 degree fan, pitch 1, 120 kVp with 7 mm Al (SpekPy,
:func:`persodose.ct.spectrum.tube_spectrum`) and the generic body bowtie
(:func:`persodose.ct.bowtie.generic_bowtie`). Photons are sampled by the small picklable
:class:`HelicalBeam` below (independent of ``persodose.ct.dose``).

Prints the machine, photons per second (median of runs), the relative uncertainty of each
organ's mean dose (batch method, 10 batches) and the photons / time needed for every organ
to reach 2 %, and a same-run baseline: the same beam on a water box of the same grid. No
assertion on time.

    python benchmarks/bench_ct.py [--photons N] [--repeats R] [--voxel-mm V]
    python benchmarks/bench_ct.py --backend cuda --photons 50000000   # on an NVIDIA GPU
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time

import numpy as np


class HelicalBeam:
    """Photons of a helical CT scan (picklable; ``sample(n, rng)`` for ``simulate_beam``).

    Each photon picks a uniform position along the helix (angle ``2 pi t L / feed``, table
    position ``z0 + t L``), then a direction uniform in solid angle inside the fan (half
    angle ``half_fan_rad`` in the transverse plane) x cone (``half_cone_mm`` at the isocentre),
    kept with the bowtie's transmission ``T(phi, E)`` (rejection).
    """

    def __init__(self, energies_mev, probabilities, bin_mev, centre_xy_mm, z_start_mm, z_end_mm,
                 sid_mm=541.0, half_fan_rad=math.radians(25.0), half_cone_mm=20.0, feed_mm=40.0, bowtie=None):
        self.e = np.asarray(energies_mev, dtype=np.float64)
        self.p = np.asarray(probabilities, dtype=np.float64) / np.sum(probabilities)
        self.bin_mev = float(bin_mev)
        self.cx, self.cy = (float(v) for v in centre_xy_mm)
        self.z0, self.z1 = float(z_start_mm), float(z_end_mm)
        self.sid = float(sid_mm)
        self.half_u = self.sid * math.tan(half_fan_rad)
        self.half_v = float(half_cone_mm)
        self.turns = (self.z1 - self.z0) / float(feed_mm)
        self.bowtie = bowtie

    def sample(self, n, rng):
        d = self.sid
        us, vs, es = [], [], []
        need = n
        while need > 0:
            m = int(need * 1.6) + 16
            u = (2 * rng.random(m) - 1) * self.half_u
            v = (2 * rng.random(m) - 1) * self.half_v
            e = self.e[rng.choice(self.e.size, m, p=self.p)] + (rng.random(m) - 0.5) * self.bin_mev
            p = (d * d / (d * d + u * u + v * v)) ** 1.5
            if self.bowtie is not None:
                p = p * self.bowtie.relative_fluence(np.arctan2(u, d), e)
            k = rng.random(m) < p
            us.append(u[k][:need])
            vs.append(v[k][:need])
            es.append(e[k][:need])
            need -= us[-1].size
        u, v, e = np.concatenate(us), np.concatenate(vs), np.concatenate(es)
        t = rng.random(n)
        a = 2 * math.pi * self.turns * t
        src = np.stack([self.cx - d * np.cos(a), self.cy - d * np.sin(a), self.z0 + t * (self.z1 - self.z0)], 1)
        dirs = np.stack([d * np.cos(a) - u * np.sin(a), d * np.sin(a) + u * np.cos(a), v], 1)
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        return src, dirs, e


def organ_masks(labels, names):
    flat = labels.array.ravel()
    out = {}
    for k, name in sorted(names.items()):
        if k == 0:
            continue
        idx = np.flatnonzero(flat == k)
        if idx.size:
            out[name] = idx
    return out


def run(phantom, beam, n, tables, masks, n_batches=10, seed=1, backend="cpu"):
    from persodose.mc.engine import MCSettings, beam_problem, run_batch
    from persodose.mc.tables import TransportSettings

    ts = TransportSettings(**CT_TRANSPORT_KW)
    chunks = 16 if backend == "cpu" else None  # None: the backend's default launch size
    settings = MCSettings(n_batches=n_batches, chunks_per_batch=chunks, seed=seed, transport=ts, backend=backend)
    problem = beam_problem(phantom, beam, n, settings, tables)
    per = []
    t0 = time.perf_counter()
    for b in range(problem.n_batches):
        e = run_batch(problem, b).energy_per_primary_mev
        per.append([e[i].sum() for i in masks.values()])
    secs = time.perf_counter() - t0
    per = np.array(per)
    mean = per.mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = per.std(axis=0, ddof=1) / math.sqrt(n_batches) / mean
    return n / secs, dict(zip(masks, rel)), secs


#: Transport of the CT benchmarks: electrons deposited where they are made (the kerma
#: approximation at CT energies), tables up to 200 keV.
CT_TRANSPORT_KW = dict(electron_cut_mev=0.2, hard_collision_cut_mev=0.2, emax_mev=0.2)


def whole_body_scan(voxel_mm: float, spectrum_file: str | None = None):
    """``(virtual patient, phantom, beam, z range mm)``: the benchmarks' whole-body helical scan
    (module docstring) of the built-in patient at ``voxel_mm``. ``spectrum_file``: the 120 kVp
    spectrum read from an ``.npz`` written by ``--write-spectrum`` (for a machine without SpekPy)."""
    from persodose.ct.bowtie import generic_bowtie
    from persodose.ct.spectrum import tube_spectrum
    from persodose.mc.engine import VoxelPhantom
    from persodose.phantoms import make_virtual_patient

    vp = make_virtual_patient(voxel_mm=voxel_mm)
    ph = VoxelPhantom.from_ct(vp.ct)
    g = ph.density
    nz, ny, nx = g.shape
    sp = g.spacing_zyx_mm
    centre = np.asarray(g.origin_xyz_mm) + (np.array([nx, ny, nz]) - 1) * np.array(sp[::-1]) / 2
    z_lo = g.origin_xyz_mm[2] - sp[0] / 2
    z_hi = z_lo + nz * sp[0]
    if spectrum_file:
        with np.load(spectrum_file) as f:
            energy, prob, width = f["energy_mev"], f["probabilities"], float(f["bin_width_mev"])
    else:
        spec = tube_spectrum(120.0, anode_angle_deg=12.0, filtration_mm={"Al": 7.0})
        energy, prob, width = spec.energy_mev, spec.probabilities, spec.bin_width_mev
    beam = HelicalBeam(energy, prob, width, centre[:2], z_lo, z_hi,
                       bowtie=generic_bowtie("body", 541.0))
    return vp, ph, beam, (z_lo, z_hi)


def main() -> None:
    import numba

    from persodose.grid import Kind
    from persodose.mc.engine import VoxelPhantom
    from persodose.mc.tables import TransportSettings, build_tables
    from persodose.physics.materials import get_material

    ap = argparse.ArgumentParser()
    ap.add_argument("--photons", type=int, default=2_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--voxel-mm", type=float, default=5.0)
    ap.add_argument("--backend", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--spectrum", default=None, help="the 120 kVp spectrum from an .npz (no SpekPy needed)")
    ap.add_argument("--write-spectrum", default=None, metavar="NPZ",
                    help="write the SpekPy 120 kVp spectrum of the scan to NPZ and stop")
    args = ap.parse_args()
    if args.write_spectrum:
        from persodose.ct.spectrum import tube_spectrum

        spec = tube_spectrum(120.0, anode_angle_deg=12.0, filtration_mm={"Al": 7.0})
        np.savez(args.write_spectrum, energy_mev=spec.energy_mev, probabilities=spec.probabilities,
                 bin_width_mev=spec.bin_width_mev)
        print(f"wrote {args.write_spectrum}")
        return

    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"numba threads {numba.get_num_threads()}, backend {args.backend}")
    vp, ph, beam, (z_lo, z_hi) = whole_body_scan(args.voxel_mm, args.spectrum)
    g = ph.density
    nz, ny, nx = g.shape
    sp = g.spacing_zyx_mm
    print(f"phantom: virtual patient CT, {nx} x {ny} x {nz} voxels of {sp[0]:g} mm "
          f"({len(ph.material_list)} materials); helical scan {z_hi - z_lo:.0f} mm, pitch 1, 40 mm, "
          f"{beam.turns:.1f} rotations, 120 kVp 7 mm Al, body bowtie; {args.photons} photons per run, "
          f"median of {args.repeats}")
    t0 = time.perf_counter()
    beam.sample(1_000_000, np.random.default_rng(0))
    print(f"beam sampling on the host (numpy, one thread): {time.perf_counter() - t0:.2f} s per 1e6 photons "
          f"(every batch's photons are sampled before its launch, on either backend)")
    ts = TransportSettings(**CT_TRANSPORT_KW)
    tables = build_tables(ph.material_list, ts)
    masks = organ_masks(vp.labels, vp.label_names)
    run(ph, beam, 20000, tables, masks, backend=args.backend)  # warm-up (compilation / cache load)

    rates, rels = [], None
    for r in range(args.repeats):
        rate, rel, _ = run(ph, beam, args.photons, tables, masks, seed=r + 1, backend=args.backend)
        rates.append(rate)
        rels = rel if rels is None else rels
    rate = statistics.median(rates)
    print(f"patient: {rate:.3e} photons/s (runs: {', '.join(f'{x:.3e}' for x in rates)})")
    need = {k: args.photons * (v / 0.02) ** 2 for k, v in rels.items() if np.isfinite(v)}
    print("organ-mean relative uncertainty after one run, and photons for 2 %:")
    for k in sorted(need, key=need.get):
        print(f"  {k:24s} {100 * rels[k]:6.2f} %   {need[k]:.2e} photons  {need[k] / rate:8.1f} s")
    worst = max(need, key=need.get)
    print(f"all organs below 2 %: {need[worst]:.2e} photons, {need[worst] / rate:.0f} s at this rate "
          f"(limited by {worst})")

    water = get_material("water")
    wph = VoxelPhantom(g.with_array(np.full(g.shape, 1.0, np.float32), Kind.DENSITY),
                       g.with_array(np.zeros(g.shape, np.uint8), Kind.MATERIAL), (water,))
    wtab = build_tables((water,), ts)
    run(wph, beam, 20000, wtab, masks, backend=args.backend)
    base = [run(wph, beam, args.photons, wtab, masks, seed=r + 1, backend=args.backend)[0] for r in range(args.repeats)]
    print(f"baseline: same beam on a water box of the same grid, {statistics.median(base):.3e} photons/s (same run)")


if __name__ == "__main__":
    main()
