"""Validation of the Monte Carlo engine in CT geometry (issue 5).

1. AAPM Report 195 (TG-195; I. Sechopoulos et al., "Monte Carlo reference data sets for
   imaging research: Executive summary of the report of AAPM Research Committee Task Group
   195", Med. Phys. 42 (2015) 5679-5691), Case 4 (CT):

   * 4.1: a fan beam from one focal-spot position on a long PMMA cylinder (32 cm diameter);
     energy deposited per photon in 10 mm slabs of the whole cross-section, 0-35 mm from the
     beam plane (``tests/data/tg195_case41.csv``);
   * 4.2: the same beam at 36 angles around the cylinder; energy per photon in a centre and a
     peripheral scoring cylinder (10 mm diameter, 100 mm long; ``tests/data/tg195_case42.csv``).

   Both at 56.4 keV and with the TG-195 120 kVp spectrum (``tg195_spectrum_120kvp.csv``),
   10 and 80 mm collimation. Tolerance: 2 % plus three standard uncertainties of our mean.
   By the rotational symmetry of the phantom, one simulation with the source at angle 0 gives
   all 36 angles of 4.2: the peripheral cylinder of source angle ``a`` is the one at polar
   angle ``-a`` in the dose map of angle 0.

2. CTDI phantoms (IEC 60601-2-44: PMMA cylinders 160 and 320 mm in diameter, 150 mm long),
   one axial rotation of a 120 kVp beam: ratio of the dose along 100 mm at the centre to that
   10 mm below the surface, compared with published measured ranges (``docs/validation_ct.md``).

Geometry: voxel grids (LPS = grid axes, z = phantom axis) built with partial-volume
densities at the phantom surface; the source lies inside the grid's air where it matters
(the air between focal spot and phantom attenuates about 1 % at 56 keV), the engine's
vacuum outside. Scoring volumes are integrated with the fraction of each voxel they cover.
Uncertainties are the batch method on the region sums (``run_batch`` per batch).

Tier 1 runs a reduced subset (Case 4.1 VOI 1 at 56.4 keV and a CTDI body ratio) in well under
20 s on 2 cores; ``-m validate`` runs everything at full statistics (minutes).
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass

import numpy as np
import pytest

from persodose.grid import Grid, Kind
from persodose.mc.engine import MCSettings, VoxelPhantom, beam_problem, run_batch
from persodose.mc.tables import TransportSettings, build_tables
from persodose.physics.materials import Material
from tests import DATA_DIR

DATA = DATA_DIR

#: TG-195 PMMA: H 8.0541, C 59.9846, O 31.9613 % by mass, 1.19 g/cm3 (AAPM Report 195, Case 4).
PMMA_TG195 = Material(0, "pmma_tg195", math.nan, math.nan, 1.19,
                      {"H": 0.080541, "C": 0.599846, "O": 0.319613}, "AAPM Report 195 PMMA")
#: TG-195 air: C 0.0124, N 75.5268, O 23.1781, Ar 1.2827 % by mass, 0.001205 g/cm3.
AIR_TG195 = Material(1, "air_tg195", math.nan, math.nan, 0.001205,
                     {"C": 0.000124, "N": 0.755268, "O": 0.231781, "Ar": 0.012827}, "AAPM Report 195 air")
#: NIST PMMA (ESTAR "Polymethyl Methacrylate (Lucite, Perspex)"): H 0.080538, C 0.599848,
#: O 0.319614 by mass, 1.19 g/cm3 - the CTDI phantoms.
PMMA_NIST = Material(0, "pmma_nist", math.nan, math.nan, 1.19,
                     {"H": 0.080538, "C": 0.599848, "O": 0.319614}, "NIST PMMA")

#: All electrons local: at <= 120 keV their CSDA range in PMMA (< 0.2 mm) is far below a voxel.
CT_TRANSPORT = TransportSettings(electron_cut_mev=0.2, hard_collision_cut_mev=0.2, emax_mev=0.2)

SID_TG195_MM = 600.0  #: TG-195 Case 4 focal spot to axis distance, mm
PHANTOM_RADIUS_TG195_MM = 160.0


# ----------------------------------------------------------------------------- reference data
def _rows(name: str) -> list[dict]:
    with open(DATA / name, newline="") as fh:
        return list(csv.DictReader(line for line in fh if not line.startswith("#")))


def tg195_spectrum() -> tuple[np.ndarray, np.ndarray]:
    """TG-195 120 kVp spectrum: (lower bin edges keV, photon probabilities), 0.5 keV bins."""
    rows = _rows("tg195_spectrum_120kvp.csv")
    e = np.array([float(r["energy_kev"]) for r in rows])
    w = np.array([float(r["relative_fluence"]) for r in rows])
    return e, w / w.sum()


def tg195_case41() -> dict[tuple[str, int], np.ndarray]:
    """(spectrum, collimation_mm) -> reference eV/photon of VOIs 1-4."""
    out: dict[tuple[str, int], list] = {}
    for r in _rows("tg195_case41.csv"):
        out.setdefault((r["spectrum"], int(r["collimation_mm"])), []).append(float(r["energy_ev_per_photon"]))
    return {k: np.array(v) for k, v in out.items()}


def tg195_case42() -> dict[str, np.ndarray]:
    """Column name -> 36 reference values eV/photon; ``angle_deg`` -> angles."""
    rows = _rows("tg195_case42.csv")
    return {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}


# ----------------------------------------------------------------------------- energies
@dataclass(frozen=True)
class Energies:
    """Photon energies: one line, or histogram bins (lower edges, width, probabilities), keV."""

    line_kev: float | None = None
    lower_kev: np.ndarray | None = None
    width_kev: float = 0.0
    prob: np.ndarray | None = None

    def sample_mev(self, n: int, rng: np.random.Generator) -> np.ndarray:
        if self.line_kev is not None:
            return np.full(n, self.line_kev * 1e-3)
        i = rng.choice(self.prob.size, size=n, p=self.prob)
        return (self.lower_kev[i] + rng.random(n) * self.width_kev) * 1e-3

    def mean_kev(self) -> float:
        if self.line_kev is not None:
            return self.line_kev
        return float(np.sum(self.prob * (self.lower_kev + 0.5 * self.width_kev)))


MONO56 = Energies(line_kev=56.4)


def spec120_tg195() -> Energies:
    e, p = tg195_spectrum()
    return Energies(lower_kev=e, width_kev=0.5, prob=p)


def spekpy_energies(kvp: float, filtration_mm_al: float) -> Energies:
    from persodose.ct.spectrum import tube_spectrum

    s = tube_spectrum(kvp, anode_angle_deg=12.0, filtration_mm={"Al": filtration_mm_al}, bin_kev=1.0)
    w = s.bin_width_mev * 1e3
    return Energies(lower_kev=s.energy_mev * 1e3 - 0.5 * w, width_kev=w, prob=s.probabilities)


# ----------------------------------------------------------------------------- sampler
class FanBeam:
    """Isotropic point source collimated to a rectangle at the isocentre (picklable).

    The focal spot is at ``sid_mm`` from the z axis at polar angle ``angle_rad`` (angle 0:
    ``(-sid, 0, z0)``), aiming at the axis. Directions are uniform in solid angle inside the
    pyramid through the rectangle ``|u| <= half_fan_mm``, ``|v| <= half_cone_mm`` in the
    plane through the isocentre normal to the central ray (u in the transverse plane, v
    along z): a point of the rectangle is drawn uniformly and kept with probability
    ``(D / r)^3`` (the solid angle of an area element at distance ``r``). An optional
    bowtie keeps a photon of energy E at fan angle phi with probability ``T(phi, E)``
    (:meth:`persodose.ct.bowtie.BowtieFilter.relative_fluence`); results are then per photon
    *leaving the filter*, a normalisation that cancels in ratios.
    """

    def __init__(self, energies: Energies, half_fan_mm: float, half_cone_mm: float,
                 sid_mm: float = SID_TG195_MM, angles_rad=(0.0,), z0_mm: float = 0.0, bowtie=None):
        self.energies = energies
        self.half_fan_mm = float(half_fan_mm)
        self.half_cone_mm = float(half_cone_mm)
        self.sid_mm = float(sid_mm)
        self.angles_rad = np.atleast_1d(np.asarray(angles_rad, dtype=np.float64))
        self.z0_mm = np.broadcast_to(np.asarray(z0_mm, dtype=np.float64), self.angles_rad.shape).copy()
        self.bowtie = bowtie

    def sample(self, n: int, rng: np.random.Generator):
        d = self.sid_mm
        u_out, v_out, e_out = [], [], []
        need = n
        while need > 0:
            m = int(need * 1.3) + 16
            u = (2.0 * rng.random(m) - 1.0) * self.half_fan_mm
            v = (2.0 * rng.random(m) - 1.0) * self.half_cone_mm
            e = self.energies.sample_mev(m, rng)
            p = (d * d / (d * d + u * u + v * v)) ** 1.5
            if self.bowtie is not None:
                p = p * self.bowtie.relative_fluence(np.arctan2(u, d), e)
            keep = rng.random(m) < p
            u_out.append(u[keep][:need])
            v_out.append(v[keep][:need])
            e_out.append(e[keep][:need])
            need -= u_out[-1].size
        u, v, e = np.concatenate(u_out), np.concatenate(v_out), np.concatenate(e_out)
        k = rng.integers(0, self.angles_rad.size, n)
        a = self.angles_rad[k]
        # focal spot at angle a; central ray towards the axis; u perpendicular to it in-plane
        src = np.stack([-d * np.cos(a), -d * np.sin(a), self.z0_mm[k]], axis=1)
        c = np.stack([np.cos(a), np.sin(a), np.zeros(n)], axis=1)
        t = np.stack([-np.sin(a), np.cos(a), np.zeros(n)], axis=1)
        dirs = d * c + u[:, None] * t
        dirs[:, 2] += v
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        return src, dirs, e


# ----------------------------------------------------------------------------- geometry
def _edges(lo: float, hi: float, step: float) -> np.ndarray:
    n = int(round((hi - lo) / step))
    return lo + step * np.arange(n + 1)


def _disk_fraction(xe: np.ndarray, ye: np.ndarray, cx: float, cy: float, r: float, ss: int = 8) -> np.ndarray:
    """Fraction of each (y, x) pixel inside a disk (ss x ss sub-samples), shape (ny, nx)."""
    fx = (np.arange(ss) + 0.5) / ss
    xs = (xe[:-1, None] + fx[None, :] * np.diff(xe)[:, None]).ravel() - cx
    ys = (ye[:-1, None] + fx[None, :] * np.diff(ye)[:, None]).ravel() - cy
    inside = (ys[:, None] ** 2 + xs[None, :] ** 2) <= r * r
    return inside.reshape(ye.size - 1, ss, xe.size - 1, ss).mean(axis=(1, 3))


@dataclass
class CylinderWorld:
    """A PMMA cylinder on the z axis in air, on a voxel grid."""

    phantom: VoxelPhantom
    xe: np.ndarray
    ye: np.ndarray
    ze: np.ndarray
    fraction: np.ndarray  #: (ny, nx) fraction of PMMA in each column


def cylinder_world(radius_mm: float, length_mm: float, x_range, y_half_mm: float, xy_mm: float, z_mm: float,
                   pmma: Material = PMMA_TG195, air: Material = AIR_TG195) -> CylinderWorld:
    """Grid covering x_range x [-y_half, y_half] x [-length/2, length/2]; partial volumes at the surface."""
    xe = _edges(x_range[0], x_range[1], xy_mm)
    ye = _edges(-y_half_mm, y_half_mm, xy_mm)
    ze = _edges(-0.5 * length_mm, 0.5 * length_mm, z_mm)
    f = _disk_fraction(xe, ye, 0.0, 0.0, radius_mm)
    nz = ze.size - 1
    rho2 = f * pmma.density_g_cm3 + (1.0 - f) * air.density_g_cm3
    dens = np.broadcast_to(rho2, (nz,) + f.shape).astype(np.float32)
    mats = np.broadcast_to(np.where(f > 0, 0, 1).astype(np.uint8), dens.shape).copy()
    origin = (xe[0] + 0.5 * xy_mm, ye[0] + 0.5 * xy_mm, ze[0] + 0.5 * z_mm)
    g = Grid(np.ascontiguousarray(dens), (z_mm, xy_mm, xy_mm), origin, np.eye(3), Kind.DENSITY)
    m = g.with_array(mats, Kind.MATERIAL)
    return CylinderWorld(VoxelPhantom(g, m, (pmma, air)), xe, ye, ze, f)


@dataclass(frozen=True)
class Region:
    """A scoring region: flat voxel indices (z, y, x order) and the fraction of each voxel in it."""

    index: np.ndarray
    weight: np.ndarray


def region(world: CylinderWorld, wz: np.ndarray, wxy: np.ndarray) -> Region:
    """The region of weights ``wz[k] * wxy[j, i]`` (separable in z and in the transverse plane)."""
    ny, nx = wxy.shape
    kz = np.flatnonzero(wz)
    jxy = np.flatnonzero(wxy.ravel())
    idx = (kz[:, None] * (ny * nx) + jxy[None, :]).ravel()
    w = (wz[kz][:, None] * wxy.ravel()[jxy][None, :]).ravel()
    return Region(idx.astype(np.int64), w)


def run_regions(world: CylinderWorld, sampler, n_photons: int, regions: list[Region], n_batches: int = 10,
                seed: int = 2015, tables=None) -> tuple[np.ndarray, np.ndarray, float]:
    """Energy per photon (eV) in regions, with batch-method standard uncertainties.

    Returns:
        (means eV (n_regions,), standard uncertainties eV, seconds of transport).
    """
    settings = MCSettings(n_batches=n_batches, chunks_per_batch=8, seed=seed, transport=CT_TRANSPORT)
    problem = beam_problem(world.phantom, sampler, n_photons, settings, tables)
    per_batch = []
    secs = 0.0
    for b in range(problem.n_batches):
        t0 = time.perf_counter()
        res = run_batch(problem, b)
        secs += time.perf_counter() - t0
        e = res.energy_per_primary_mev
        per_batch.append([float(np.dot(e[r.index], r.weight)) for r in regions])
    per_batch = np.array(per_batch) * 1e6  # MeV -> eV
    nb = np.asarray(problem.primaries_per_batch, dtype=np.float64)
    mean = (per_batch * nb[:, None]).sum(axis=0) / nb.sum()
    sd = per_batch.std(axis=0, ddof=1) / math.sqrt(len(nb))
    return mean, sd, secs


def _tables():
    return build_tables((PMMA_TG195, AIR_TG195), CT_TRANSPORT)


# ----------------------------------------------------------------------------- TG-195 case 4
def case41_world(length_mm: float = 610.0, xy_mm: float = 2.0) -> CylinderWorld:
    """Grid from behind the focal spot (x = -604) to past the phantom, fan fully inside.

    ``length_mm / 2`` must be an odd multiple of 5 mm so that the 10 mm slices have edges at
    +-5, 15, 25, 35 mm.
    """
    return cylinder_world(PHANTOM_RADIUS_TG195_MM, length_mm, (-604.0, 164.0), 212.0, xy_mm, 10.0)


def case41_regions(world: CylinderWorld) -> list[Region]:
    """VOIs 1-4; VOIs 2-4 average both sides of the beam plane (half weight each)."""
    zc = 0.5 * (world.ze[1:] + world.ze[:-1])
    col = (world.fraction > 0).astype(np.float64)
    out = []
    for lo, hi in ((-5, 5), (5, 15), (15, 25), (25, 35)):
        wz = ((zc > lo) & (zc < hi)).astype(float)
        if lo > 0:
            wz = 0.5 * (wz + ((zc > -hi) & (zc < -lo)).astype(float))
        if abs(wz.sum() - 1.0) > 1e-9:
            raise ValueError("the grid's z edges do not fall on the VOI edges")
        out.append(region(world, wz, col))
    return out


def case41(energies: Energies, collimation_mm: float, n_photons: int, n_batches: int = 10, world=None,
           tables=None):
    world = world or case41_world()
    beam = FanBeam(energies, PHANTOM_RADIUS_TG195_MM, 0.5 * collimation_mm)
    return run_regions(world, beam, n_photons, case41_regions(world), n_batches, tables=tables)


def case42_regions(world: CylinderWorld, angles_deg: np.ndarray) -> list[Region]:
    """Centre cylinder, then the peripheral cylinder of each source angle (source at angle 0)."""
    zc = 0.5 * (world.ze[1:] + world.ze[:-1])
    wz = ((zc > -50) & (zc < 50)).astype(float)
    if abs(wz.sum() - 10.0) > 1e-9:
        raise ValueError("the grid's z edges do not fall on +-50 mm")
    out = [region(world, wz, _disk_fraction(world.xe, world.ye, 0.0, 0.0, 5.0))]
    for a in np.radians(angles_deg):
        cx, cy = -150.0 * math.cos(-a), -150.0 * math.sin(-a)
        out.append(region(world, wz, _disk_fraction(world.xe, world.ye, cx, cy, 5.0)))
    return out


def case42(energies: Energies, collimation_mm: float, n_photons: int, n_batches: int = 10, tables=None,
           xy_mm: float = 2.0):
    world = cylinder_world(PHANTOM_RADIUS_TG195_MM, 600.0, (-604.0, 164.0), 212.0, xy_mm, 10.0)
    angles = np.arange(0, 360, 10.0)
    beam = FanBeam(energies, PHANTOM_RADIUS_TG195_MM, 0.5 * collimation_mm)
    mean, sd, secs = run_regions(world, beam, n_photons, case42_regions(world, angles), n_batches, tables=tables)
    return mean[0], sd[0], mean[1:], sd[1:], secs


def _close(ours: float, sd: float, ref: float, rel: float = 0.02, k: float = 3.0) -> bool:
    return abs(ours - ref) <= rel * ref + k * sd


# ----------------------------------------------------------------------------- CTDI phantoms
def ctdi_world(diameter_mm: float, xy_mm: float = 2.0, z_mm: float = 5.0) -> CylinderWorld:
    """CTDI phantom (NIST PMMA, 150 mm long) in a grid just larger than it."""
    r = 0.5 * diameter_mm
    half = r + 2 * xy_mm
    return cylinder_world(r, 150.0, (-half, half), half, xy_mm, z_mm, pmma=PMMA_NIST)


def ctdi_regions(world: CylinderWorld, radius_mm: float, n_peripheral: int = 4) -> list[Region]:
    """Centre and peripheral (axis 10 mm below the surface) 'chambers', 100 mm long, 10 mm wide.

    The peripheral region is the mean of ``n_peripheral`` positions (weights 1/n each).
    """
    zc = 0.5 * (world.ze[1:] + world.ze[:-1])
    wz = ((zc > -50) & (zc < 50)).astype(float)
    centre = _disk_fraction(world.xe, world.ye, 0.0, 0.0, 5.0)
    rp = radius_mm - 10.0
    per = sum(_disk_fraction(world.xe, world.ye, rp * math.cos(a), rp * math.sin(a), 5.0)
              for a in 2 * math.pi * np.arange(n_peripheral) / n_peripheral)
    return [region(world, wz, centre), region(world, wz, per / n_peripheral)]


def ctdi_ratio(diameter_mm: float, n_photons: int, collimation_mm: float = 40.0, bowtie: str | None = None,
               sid_mm: float = 570.0, energies: Energies | None = None, n_batches: int = 10, n_angles: int = 72):
    """Centre / periphery dose ratio of one axial rotation (energy per mass of equal chambers)."""
    world = ctdi_world(diameter_mm)
    energies = energies or spekpy_energies(120.0, 7.0)
    bt = None
    if bowtie:
        from persodose.ct.bowtie import generic_bowtie

        bt = generic_bowtie(bowtie, sid_mm)
    # the fan only needs to cover the phantom (rays beyond it cross vacuum); the bowtie is a
    # function of the fan angle, so the photons that do hit the phantom are unchanged
    half_fan = 0.5 * diameter_mm + 10.0
    angles = 2 * math.pi * np.arange(n_angles) / n_angles
    beam = FanBeam(energies, half_fan, 0.5 * collimation_mm, sid_mm=sid_mm, angles_rad=angles, bowtie=bt)
    mean, sd, secs = run_regions(world, beam, n_photons, ctdi_regions(world, 0.5 * diameter_mm), n_batches,
                                 tables=build_tables((PMMA_NIST, AIR_TG195), CT_TRANSPORT))
    ratio = mean[0] / mean[1]
    u = ratio * math.hypot(sd[0] / mean[0], sd[1] / mean[1])
    return ratio, u, mean, sd, secs


# ============================================================================= tests, tier 1
def test_tg195_spectrum_table_reads_as_published():
    """The transcribed 120 kVp table: 0.5 keV bins whose mean is the stated 56.4 keV."""
    e, p = tg195_spectrum()
    assert np.allclose(np.diff(e), 0.5)
    assert p.sum() == pytest.approx(1.0)
    assert spec120_tg195().mean_kev() == pytest.approx(56.4, abs=0.05)
    # the W K-alpha1 line (59.32 keV) is the largest bin
    assert e[np.argmax(p)] <= 59.32 < e[np.argmax(p)] + 0.5


def test_fan_beam_is_isotropic_inside_the_collimated_rectangle():
    """The sampler: directions within the pyramid, solid-angle density, bowtie hardening."""
    rng = np.random.default_rng(3)
    beam = FanBeam(MONO56, 160.0, 5.0)
    o, d, e = beam.sample(200000, rng)
    assert np.allclose(o, [-600.0, 0.0, 0.0])
    assert np.allclose(np.linalg.norm(d, axis=1), 1.0)
    u = 600.0 * d[:, 1] / d[:, 0]
    v = 600.0 * d[:, 2] / d[:, 0]
    assert np.all(np.abs(u) <= 160.0 + 1e-9) and np.all(np.abs(v) <= 5.0 + 1e-9)
    # isotropic: the fraction of photons with |u| < 80 mm is the solid-angle fraction
    uu = np.linspace(-160, 160, 4001)
    dens = (600.0 ** 2 / (600.0 ** 2 + uu ** 2)) ** 1.5
    expect = np.trapezoid(dens[np.abs(uu) < 80], uu[np.abs(uu) < 80]) / np.trapezoid(dens, uu)
    assert np.mean(np.abs(u) < 80) == pytest.approx(expect, abs=0.004)
    assert expect > 0.51  # and not uniform in u (0.5), so the check can fail


def test_tg195_case41_central_slab_56kev_reduced():
    """Tier-1 subset: Case 4.1, 56.4 keV, 10 mm, VOI 1 (the primary beam's slab)."""
    ref = tg195_case41()[("mono56", 10)]
    world = case41_world(length_mm=310.0, xy_mm=4.0)
    mean, sd, _ = case41(MONO56, 10.0, 60000, n_batches=6, world=world)
    assert sd[0] / mean[0] < 0.02
    assert _close(mean[0], sd[0], ref[0]), (mean[0], sd[0], ref[0])
    # and the slabs beside the beam hold only scatter, far less than the beam's slab
    assert mean[1] < 0.35 * mean[0]


def test_ctdi_body_centre_to_periphery_ratio_reduced():
    """Tier-1 subset: 320 mm CTDI phantom, 120 kVp, 7 mm Al, no bowtie: ratio 0.25-0.40.

    Published Monte Carlo for this case: TG-195 Case 4.2 (long 320 mm PMMA cylinder, 120 kVp,
    no bowtie) gives 0.29 (``tg195_case42.csv``, centre / mean periphery); the harder 7 mm Al
    beam raises it a little (docs/validation_ct.md).
    """
    ratio, u, *_ = ctdi_ratio(320.0, 300000, n_batches=6, n_angles=36)
    assert u < 0.05
    assert 0.25 < ratio < 0.40, (ratio, u)


# ============================================================================= tests, tier 2
@pytest.mark.validate
@pytest.mark.parametrize("spectrum", ["mono56", "spec120"])
@pytest.mark.parametrize("collimation", [10, 80])
def test_tg195_case41_full(spectrum, collimation):
    ref = tg195_case41()[(spectrum, collimation)]
    energies = MONO56 if spectrum == "mono56" else spec120_tg195()
    mean, sd, secs = case41(energies, float(collimation), 2_000_000, n_batches=10, tables=_tables())
    diff = mean / ref - 1
    print(f"\nTG-195 4.1 {spectrum} {collimation} mm ({secs:.0f} s): ours {np.round(mean, 1)} eV, "
          f"+- {np.round(sd, 1)}, ref {ref}, diff {np.round(100 * diff, 2)} %")
    for i in range(4):
        assert _close(mean[i], sd[i], ref[i]), (i, mean[i], sd[i], ref[i])


@pytest.mark.validate
@pytest.mark.parametrize("spectrum", ["mono56", "spec120"])
@pytest.mark.parametrize("collimation", [10, 80])
def test_tg195_case42_full(spectrum, collimation):
    ref = tg195_case42()
    energies = MONO56 if spectrum == "mono56" else spec120_tg195()
    c, c_sd, p, p_sd, secs = case42(energies, float(collimation), 16_000_000, n_batches=10, tables=_tables())
    ref_c = ref[f"{spectrum}_c{collimation}_centre"]
    ref_p = ref[f"{spectrum}_c{collimation}_periphery"]
    print(f"\nTG-195 4.2 {spectrum} {collimation} mm ({secs:.0f} s): centre {c:.3f} +- {c_sd:.3f} "
          f"(ref mean {ref_c.mean():.3f}); periphery diff % by angle "
          f"{np.round(100 * (p / ref_p - 1), 1).tolist()}; rel sd % {np.round(100 * p_sd / p, 1).tolist()}; "
          f"sum over angles {p.sum():.2f} +- {math.sqrt(np.sum(p_sd ** 2)):.2f} (ref {ref_p.sum():.2f})")
    assert _close(c, c_sd, ref_c.mean())
    # the sum over the 36 angles (one full rotation in 10 degree steps)
    assert _close(p.sum(), math.sqrt(np.sum(p_sd ** 2)), ref_p.sum())
    for i in range(36):
        assert _close(p[i], p_sd[i], ref_p[i]), (10 * i, p[i], p_sd[i], ref_p[i])


@pytest.mark.validate
@pytest.mark.parametrize("diameter,lo,hi,bt_lo,bt_hi", [(320.0, 0.25, 0.40, 0.40, 0.55), (160.0, 0.70, 0.95, 0.90, 1.00)])
def test_ctdi_ratio_full(diameter, lo, hi, bt_lo, bt_hi):
    """No bowtie: ratio near the TG-195 value; with the generic bowtie (partial compensation,
    persodose.ct.bowtie.DEFAULT_COMPENSATION) in the typical published ranges of scanners."""
    ratio, u, *_ = ctdi_ratio(diameter, 2_000_000, n_batches=10)
    name = "body" if diameter > 200 else "head"
    ratio_bt, u_bt, *_ = ctdi_ratio(diameter, 2_000_000, bowtie=name, n_batches=10)
    print(f"\nCTDI {diameter:.0f} mm centre/periphery: no bowtie {ratio:.3f} +- {u:.3f}, "
          f"generic {name} bowtie {ratio_bt:.3f} +- {u_bt:.3f}")
    assert lo < ratio < hi
    assert ratio_bt > ratio + 3 * math.hypot(u, u_bt)
    assert bt_lo - 3 * u_bt < ratio_bt < bt_hi + 3 * u_bt


@pytest.mark.validate
def test_tg195_centre_to_periphery_ratio_matches_ctdi_geometry():
    """The CTDI machinery with TG-195's beam (10 mm, SID 600 mm, its 120 kVp spectrum) on the
    150 mm long phantom gives about TG-195's long-cylinder ratio (within 10 %: the phantoms
    differ in length and PMMA composition only slightly, the scatter from beyond 75 mm is missing)."""
    ref = tg195_case42()
    ref_ratio = ref["spec120_c10_centre"].mean() / ref["spec120_c10_periphery"].mean()
    ratio, u, *_ = ctdi_ratio(320.0, 2_000_000, collimation_mm=10.0, sid_mm=600.0, energies=spec120_tg195())
    print(f"\nTG-195 ratio {ref_ratio:.3f}; CTDI geometry with the TG-195 beam {ratio:.3f} +- {u:.3f}")
    assert abs(ratio / ref_ratio - 1) < 0.10 + 3 * u / ref_ratio
