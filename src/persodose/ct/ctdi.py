"""CTDI phantoms simulated with the CT source model: CTDI100, CTDIw and the centre-to-periphery ratio.

Definitions (IEC 60601-2-44; AAPM Report 96, "The measurement, reporting, and management of
radiation dose in CT", 2008):

* CTDI phantoms: PMMA cylinders 150 mm long, 160 mm ("head") or 320 mm ("body") in
  diameter, in air, centred on the isocentre, axis along the rotation axis.
* ``CTDI100 = (1 / nT) * integral_{-50 mm}^{+50 mm} K_air(z) dz`` for one axial rotation, with
  ``nT`` the nominal beam width (total collimation) and ``K_air`` the air kerma in the 100 mm
  pencil chamber; measured at the centre and at four peripheral holes 10 mm below the
  surface (0, 90, 180, 270 degrees).
* ``CTDIw = CTDI100,c / 3 + 2 CTDI100,p / 3`` (P = mean of the four peripheral values);
  ``CTDIvol = CTDIw / pitch``.

Model used here:

* PMMA: NIST composition (H 0.080538, C 0.599848, O 0.319614 by mass, 1.19 g/cm3; NIST
  "Polymethyl Methacrylate (Lucite, Perspex)", ESTAR/XCOM material table). Edge voxels get the
  PMMA volume fraction (4 x 4 sub-samples in plane) as density, air outside.
* The chamber is not modelled: the holes are PMMA (all rods inserted) and the dose to PMMA
  is scored in the voxels whose centre lies within ``max(voxel, 5 mm)`` of the hole axis
  (a 100 mm pencil chamber has an active diameter of about 9 mm), then converted to air
  kerma with ``(mu_en/rho)_air / (mu_en/rho)_PMMA`` averaged over the local primary
  energy-fluence spectrum (:func:`air_to_pmma_conversion`). Scatter (softer, about half of the
  centre dose of the body phantom) is not in that spectrum; the ratio changes by about 1 %
  per 10 keV over 40-80 keV (see :func:`air_to_pmma_conversion`), so the approximation is
  at the percent level.
* Kerma approximation: at CT energies the engine's electrons are range-rejected in the voxel
  where they are set in motion, so the scored dose equals collision kerma to PMMA.
* Source: one axial rotation (:func:`persodose.ct.trajectory.axial_positions`) with the
  acquisition's kVp, bowtie and collimation; the bowtie is ``head`` for the 160 mm phantom and
  ``body`` for the 320 mm one unless given.

Published centre-to-periphery ratios (CTDI100,c / CTDI100,p) at 120 kV, which the tests
check against: about 0.4-0.55 for the 320 mm body phantom and about 0.9-1.0 for the
160 mm head phantom (ImPACT CT patient dosimetry calculator scanner tables; AAPM Report 96,
2008; e.g. McNitt-Gray, RadioGraphics 22 (2002) 1541-1553, who quotes centre values about
half the peripheral ones in the body phantom and about equal in the head phantom).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from persodose.errors import InputError
from persodose.grid import Grid, Kind

__all__ = ["PMMA", "PMMA_DENSITY_G_CM3", "CTDI_LENGTH_MM", "CTDI_INTEGRATION_MM", "PERIPHERAL_DEPTH_MM",
           "CHAMBER_RADIUS_MM", "ctdi_phantom", "ctdi_acquisition", "air_to_pmma_conversion",
           "CTDIResult", "simulate_ctdi", "ctdi_from_dose", "chamber_masks"]

#: PMMA density, g/cm3 (NIST material table).
PMMA_DENSITY_G_CM3 = 1.19
#: Length of the CTDI phantoms, mm (IEC 60601-2-44).
CTDI_LENGTH_MM = 150.0
#: Integration length of CTDI100, mm.
CTDI_INTEGRATION_MM = 100.0
#: Depth of the peripheral holes below the surface, mm.
PERIPHERAL_DEPTH_MM = 10.0
#: Radius within which voxels are scored as the chamber (at least one voxel), mm.
CHAMBER_RADIUS_MM = 5.0


def _pmma():
    from persodose.physics.materials import Material

    return Material(-1, "pmma", math.nan, math.nan, PMMA_DENSITY_G_CM3,
                    {"H": 0.080538, "C": 0.599848, "O": 0.319614},
                    "NIST Polymethyl Methacrylate (Lucite, Perspex): H 0.080538 C 0.599848 O 0.319614, 1.19 g/cm3")


#: PMMA as a :class:`persodose.physics.materials.Material` (NIST composition).
PMMA = _pmma()


def _check_diameter(diameter_mm: float) -> float:
    d = float(diameter_mm)
    if not (math.isfinite(d) and 2 * PERIPHERAL_DEPTH_MM + 10.0 < d <= 600.0):
        raise InputError(f"CTDI phantom diameter must be within 30-600 mm, got {diameter_mm!r}")
    return d


def ctdi_phantom(diameter_mm: float = 320.0, voxel_mm: float = 5.0, length_mm: float = CTDI_LENGTH_MM):
    """A CTDI phantom (PMMA cylinder in air) as a :class:`~persodose.mc.engine.VoxelPhantom`.

    The grid is centred on the LPS origin (the isocentre), axis along z, with an odd number
    of voxels in x and y so that a voxel centre lies on the axis, and one voxel of air
    around the cylinder.

    Args:
        diameter_mm: 160 (head) or 320 (body), or any other diameter, mm.
        voxel_mm: cubic voxel, mm (0.5-20).
        length_mm: cylinder length, mm.

    Returns:
        ``VoxelPhantom`` with materials ``(air, PMMA)``.
    """
    from persodose.mc.engine import VoxelPhantom
    from persodose.physics.materials import get_material

    d = _check_diameter(diameter_mm)
    v = float(voxel_mm)
    if not (math.isfinite(v) and 0.5 <= v <= 20.0):
        raise InputError(f"CTDI phantom voxel must be within 0.5-20 mm, got {voxel_mm!r}")
    length = float(length_mm)
    if not (math.isfinite(length) and length >= CTDI_INTEGRATION_MM):
        raise InputError(f"CTDI phantom length must be >= {CTDI_INTEGRATION_MM:g} mm, got {length_mm!r}")
    nxy = int(math.ceil(d / v)) + 2
    nxy += 1 - nxy % 2
    nz = max(1, int(round(length / v)))
    air = get_material("air")
    # in-plane PMMA fraction by 4 x 4 sub-sampling
    sub = 4
    c = (np.arange(nxy) - (nxy - 1) / 2.0) * v
    off = ((np.arange(sub) + 0.5) / sub - 0.5) * v
    xs = (c[:, None] + off[None, :]).ravel()
    inside = (xs[:, None] ** 2 + xs[None, :] ** 2) <= (0.5 * d) ** 2
    frac = inside.reshape(nxy, sub, nxy, sub).mean(axis=(1, 3))
    rho2d = frac * PMMA_DENSITY_G_CM3 + (1.0 - frac) * air.density_g_cm3
    mat2d = (frac >= 0.5).astype(np.uint8)
    zc = (np.arange(nz) - (nz - 1) / 2.0) * (length / nz)
    origin = (float(c[0]), float(c[0]), float(zc[0]))
    spacing = (length / nz, v, v)
    dens = Grid(np.broadcast_to(rho2d, (nz, nxy, nxy)).astype(np.float32), spacing, origin, np.eye(3),
                Kind.DENSITY, "g/cm3")
    mats = dens.with_array(np.broadcast_to(mat2d, (nz, nxy, nxy)).copy(), Kind.MATERIAL, "")
    return VoxelPhantom(dens, mats, (air, PMMA))


def ctdi_acquisition(kvp: float, total_collimation_mm: float, bowtie: str):
    """An axial single-rotation :class:`~persodose.ct.acquisition.Acquisition` at z = 0.

    Fixed tube current, 1 s rotation, isocentre at (0, 0); only the beam quality, bowtie and
    collimation matter for CTDI per photon.
    """
    from persodose.ct.acquisition import Acquisition

    kvp = float(kvp)
    coll = float(total_collimation_mm)
    if not (math.isfinite(coll) and coll > 0):
        raise InputError(f"collimation must be > 0 mm, got {total_collimation_mm!r}")
    z = np.array([-0.5 * coll, 0.5 * coll])
    rel = np.ones(2)
    z.setflags(write=False)
    rel.setflags(write=False)
    return Acquisition(kvp=kvp, mode="axial", pitch=1.0, total_collimation_mm=coll, rotation_time_s=1.0,
                       bowtie=str(bowtie), slice_z_mm=z, relative_current=rel, tube_current_source="fixed",
                       slice_range_mm=(0.0, 0.0), provenance={"source": "CTDI phantom acquisition"})


def _chord_to_point(src: np.ndarray, point: np.ndarray, radius: float) -> np.ndarray:
    """Path length inside a centred circle of ``radius`` from the entry to ``point`` (inside)."""
    dvec = point[None, :] - src
    dist = np.linalg.norm(dvec, axis=1)
    u = dvec / dist[:, None]
    b = np.sum(src * u, axis=1)
    cc = np.sum(src * src, axis=1) - radius * radius
    disc = np.clip(b * b - cc, 0.0, None)
    t_entry = -b - np.sqrt(disc)
    return np.clip(dist - t_entry, 0.0, None), dist, u


def air_to_pmma_conversion(spectrum, bowtie, source_to_isocentre_mm: float, diameter_mm: float,
                           radius_mm: float, n_angles: int = 360) -> dict:
    """Ratio of mass energy-absorption coefficients air/PMMA at a point of a CTDI phantom.

    The weighting spectrum is the primary energy fluence reaching the point at in-plane
    distance ``radius_mm`` from the axis, summed over a full rotation: tube spectrum x E x
    bowtie transmission at the ray's fan angle x ``exp(-mu_PMMA L)`` x inverse square. Photon
    coefficients from :mod:`persodose.physics.photon_data` (xraylib, EPDL-based).

    Returns:
        dict with ``ratio`` (energy-fluence-weighted ``<mu_en/rho>_air / <mu_en/rho>_PMMA``),
        ``ratio_at_mean_energy`` (the ratio at the mean energy of that fluence),
        ``mean_energy_kev`` of the local primary fluence.
    """
    from persodose.physics.materials import get_material
    from persodose.physics.photon_data import photon_tables

    e = np.asarray(spectrum.energy_mev, dtype=np.float64)
    flu = np.asarray(spectrum.fluence_per_mas_cm2, dtype=np.float64)
    r_ph = 0.5 * float(diameter_mm)
    sid = float(source_to_isocentre_mm)
    th = 2.0 * math.pi * np.arange(int(n_angles)) / int(n_angles)
    src = np.stack([sid * np.sin(th), -sid * np.cos(th)], axis=1)
    point = np.array([0.0, float(radius_mm)])
    path_mm, dist, u = _chord_to_point(src, point, r_ph)
    central = -src / sid
    phi = np.arctan2(central[:, 0] * u[:, 1] - central[:, 1] * u[:, 0], np.sum(central * u, axis=1))
    t_pmma = photon_tables(PMMA)
    t_air = photon_tables(get_material("air"))
    mu_pmma = t_pmma.mu_over_rho(e) * PMMA_DENSITY_G_CM3 * 0.1  # 1/mm
    trans = bowtie.transmission_table(phi, e) * np.exp(-np.outer(path_mm, mu_pmma))  # (angles, E)
    psi = (flu * e)[None, :] * trans / (dist[:, None] ** 2)
    psi_e = psi.sum(axis=0)
    men_air = t_air.mu_over_rho(e, "mu_en")
    men_pmma = t_pmma.mu_over_rho(e, "mu_en")
    ratio = float(np.sum(psi_e * men_air) / np.sum(psi_e * men_pmma))
    phi_e = psi_e / e  # photon fluence
    e_mean = float(np.sum(phi_e * e) / np.sum(phi_e))
    r_mean = float(t_air.mu_over_rho(np.array([e_mean]), "mu_en")[0] / t_pmma.mu_over_rho(np.array([e_mean]), "mu_en")[0])
    return {"ratio": ratio, "ratio_at_mean_energy": r_mean, "mean_energy_kev": 1e3 * e_mean}


def chamber_masks(grid: Grid, diameter_mm: float, isocentre_xy_mm=(0.0, 0.0)) -> dict[str, np.ndarray]:
    """In-plane masks (ny, nx) of the centre and the four peripheral chamber positions.

    Peripheral holes at 0 (anterior, -y), 90 (+x), 180 and 270 degrees, ``PERIPHERAL_DEPTH_MM``
    below the surface; voxels whose centre lies within ``max(CHAMBER_RADIUS_MM, voxel)`` of
    the hole axis.
    """
    _, ny, nx = grid.shape
    pts = grid.index_to_physical(np.stack(np.meshgrid(np.zeros(1), np.arange(ny), np.arange(nx),
                                                      indexing="ij"), axis=-1).reshape(-1, 3))
    x = pts[:, 0].reshape(ny, nx) - isocentre_xy_mm[0]
    y = pts[:, 1].reshape(ny, nx) - isocentre_xy_mm[1]
    rad = max(CHAMBER_RADIUS_MM, max(grid.spacing_zyx_mm[1:]) * 1.0001)
    rp = 0.5 * float(diameter_mm) - PERIPHERAL_DEPTH_MM
    out = {"centre": x ** 2 + y ** 2 <= rad ** 2}
    for name, (cx, cy) in {"p0": (0.0, -rp), "p90": (rp, 0.0), "p180": (0.0, rp), "p270": (-rp, 0.0)}.items():
        out[name] = (x - cx) ** 2 + (y - cy) ** 2 <= rad ** 2
    for k, m in out.items():
        if not m.any():
            raise InputError(f"the dose grid holds no voxel at the CTDI chamber position {k}")
    return out


def _z_weights(grid: Grid, z_centre_mm: float = 0.0) -> np.ndarray:
    """Length (mm) of each slice inside the +-50 mm integration range."""
    nz = grid.shape[0]
    z = grid.index_to_physical(np.array([[k, 0, 0] for k in range(nz)], float))[:, 2] - z_centre_mm
    dz = grid.spacing_zyx_mm[0]
    lo = np.maximum(z - 0.5 * dz, -0.5 * CTDI_INTEGRATION_MM)
    hi = np.minimum(z + 0.5 * dz, 0.5 * CTDI_INTEGRATION_MM)
    return np.clip(hi - lo, 0.0, None)


def ctdi_from_dose(dose_zyx: np.ndarray, grid: Grid, diameter_mm: float, nominal_width_mm: float,
                   conversion: dict[str, float] | None = None, isocentre_xy_mm=(0.0, 0.0),
                   z_centre_mm: float = 0.0) -> dict[str, float]:
    """CTDI100 at the centre and periphery and CTDIw from a dose-to-PMMA map.

    Args:
        dose_zyx: dose to PMMA (any unit) on ``grid``.
        grid: geometry of the dose.
        diameter_mm: phantom diameter, mm.
        nominal_width_mm: nT, mm.
        conversion: ``{"centre": k_c, "periphery": k_p}`` air/PMMA factors (default 1).

    Returns:
        ``centre``, ``p0``..``p270``, ``periphery`` (mean), ``ctdiw``, in the unit of the dose
        (times mm / mm).
    """
    conv = conversion or {"centre": 1.0, "periphery": 1.0}
    masks = chamber_masks(grid, diameter_mm, isocentre_xy_mm)
    wz = _z_weights(grid, z_centre_mm)
    d = np.asarray(dose_zyx, dtype=np.float64)
    out = {}
    for name, m in masks.items():
        profile = d[:, m].mean(axis=1)
        k = conv["centre"] if name == "centre" else conv["periphery"]
        out[name] = float(np.sum(profile * wz) / float(nominal_width_mm)) * k
    out["periphery"] = float(np.mean([out[k] for k in ("p0", "p90", "p180", "p270")]))
    out["ctdiw"] = out["centre"] / 3.0 + 2.0 * out["periphery"] / 3.0
    return out


@dataclass
class CTDIResult:
    """A simulated CTDI measurement.

    Attributes:
        diameter_mm: phantom diameter, mm.
        kvp, bowtie, nominal_width_mm: the beam.
        centre_gy_per_photon, periphery_gy_per_photon, ctdiw_gy_per_photon: CTDI100 (air
            kerma) per photon emitted by the tube into the beam before the bowtie (one axial
            rotation), Gy/photon.
        *_rel_unc: relative standard uncertainties (batch method).
        centre_to_periphery: CTDI100,c / CTDI100,p and its standard uncertainty.
        conversion: air/PMMA factors at the centre and the periphery (local primary spectrum)
            and at the mean energy.
        mean_bowtie_transmission: ``<T>`` of the beam.
        photons_per_mas: SpekPy photons per mAs into the beam (before the bowtie).
        nctdiw_mgy_per_mas: CTDIw per mAs with the SpekPy tube output (uncalibrated model).
        n_photons, n_batches, seconds: run statistics.
    """

    diameter_mm: float
    kvp: float
    bowtie: str
    nominal_width_mm: float
    voxel_mm: float
    centre_gy_per_photon: float
    periphery_gy_per_photon: float
    ctdiw_gy_per_photon: float
    centre_rel_unc: float
    periphery_rel_unc: float
    ctdiw_rel_unc: float
    centre_to_periphery: float
    centre_to_periphery_unc: float
    conversion: dict
    mean_bowtie_transmission: float
    photons_per_mas: float
    nctdiw_mgy_per_mas: float
    n_photons: int
    n_batches: int
    seed: int
    seconds: float
    peripheral_gy_per_photon: dict = field(default_factory=dict)
    conversion_effect_percent: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def simulate_ctdi(kvp: float, total_collimation_mm: float, scanner=None, diameter_mm: float = 320.0,
                  bowtie: str | None = None, n_photons: int = 2_000_000, voxel_mm: float = 5.0,
                  settings=None, n_per_rotation: int = 360) -> CTDIResult:
    """Simulate CTDI100 (centre, periphery), CTDIw and C/P of one axial rotation.

    Args:
        kvp: tube potential, kV.
        total_collimation_mm: nominal beam width nT, mm.
        scanner: :class:`~persodose.ct.scanner.Scanner` (default ``generic64``).
        diameter_mm: 160 or 320 mm (any diameter accepted).
        bowtie: default ``head`` for diameters up to 200 mm, else ``body``.
        n_photons: photons simulated (all batches).
        voxel_mm: phantom voxel, mm.
        settings: :class:`~persodose.mc.engine.MCSettings` (batches, seed).
        n_per_rotation: focal-spot positions of the rotation.

    Returns:
        :class:`CTDIResult` per photon emitted before the bowtie.
    """
    from persodose.ct.scanner import get_scanner
    from persodose.ct.trajectory import axial_positions
    from persodose.ct.dose import ScanSampler, run_beam_batches
    from persodose.mc.engine import MCSettings

    t0 = time.perf_counter()
    scanner = scanner or get_scanner("generic64")
    d = _check_diameter(diameter_mm)
    bowtie = bowtie or ("head" if d <= 200.0 else "body")
    settings = settings or MCSettings(n_batches=10)
    acq = ctdi_acquisition(kvp, total_collimation_mm, bowtie)
    sp = axial_positions(acq, scanner, n_per_rotation=n_per_rotation, start_angle_rad=0.0, n_start_angles=1)
    phantom = ctdi_phantom(d, voxel_mm)
    t_mean = sp.mean_bowtie_transmission()
    grid = phantom.density
    conv_c = air_to_pmma_conversion(sp.spectrum, sp.bowtie, scanner.source_to_isocentre_mm, d, 0.0)
    conv_p = air_to_pmma_conversion(sp.spectrum, sp.bowtie, scanner.source_to_isocentre_mm, d,
                                    0.5 * d - PERIPHERAL_DEPTH_MM)
    conv = {"centre": conv_c["ratio"], "periphery": conv_p["ratio"]}

    per_batch = []

    def reduce(dose_pp: np.ndarray) -> np.ndarray:
        r = ctdi_from_dose(dose_pp, grid, d, acq.total_collimation_mm, conv)
        return np.array([r["centre"], r["periphery"], r["ctdiw"], r["p0"], r["p90"], r["p180"], r["p270"]])

    run = run_beam_batches(phantom, ScanSampler(sp), n_photons, settings, reducer=reduce)
    per_batch = np.asarray(run.reduced) * t_mean  # per photon before the bowtie
    b = per_batch.shape[0]
    mean = per_batch.mean(axis=0)
    cov = np.cov(per_batch, rowvar=False) / b
    se = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    rel = np.where(mean > 0, se / np.where(mean > 0, mean, 1.0), np.inf)
    ratio = mean[0] / mean[1]
    var_r = ratio ** 2 * (cov[0, 0] / mean[0] ** 2 + cov[1, 1] / mean[1] ** 2 - 2 * cov[0, 1] / (mean[0] * mean[1]))
    ppmas = sp.photons_per_mas(0)
    # effect of the air/PMMA conversion choice (local spectrum vs mean energy vs none)
    r_c, r_p = conv_c["ratio"], conv_p["ratio"]
    rm_c, rm_p = conv_c["ratio_at_mean_energy"], conv_p["ratio_at_mean_energy"]
    ctdiw_mean_e = mean[0] / r_c * rm_c / 3 + 2 * mean[1] / r_p * rm_p / 3
    ctdiw_none = mean[0] / r_c / 3 + 2 * mean[1] / r_p / 3
    effect = {"ctdiw_mean_energy_vs_spectrum": 100.0 * (ctdiw_mean_e / mean[2] - 1.0),
              "ctdiw_dose_to_pmma_vs_air_kerma": 100.0 * (ctdiw_none / mean[2] - 1.0),
              "c_over_p_from_conversion": 100.0 * (r_c / r_p - 1.0)}
    return CTDIResult(
        diameter_mm=d, kvp=float(kvp), bowtie=str(bowtie), nominal_width_mm=acq.total_collimation_mm,
        voxel_mm=float(voxel_mm), centre_gy_per_photon=float(mean[0]), periphery_gy_per_photon=float(mean[1]),
        ctdiw_gy_per_photon=float(mean[2]), centre_rel_unc=float(rel[0]), periphery_rel_unc=float(rel[1]),
        ctdiw_rel_unc=float(rel[2]), centre_to_periphery=float(ratio),
        centre_to_periphery_unc=float(math.sqrt(max(var_r, 0.0))),
        conversion={"centre": conv_c, "periphery": conv_p},
        mean_bowtie_transmission=float(t_mean), photons_per_mas=float(ppmas),
        nctdiw_mgy_per_mas=float(mean[2] * ppmas * 1e3),
        n_photons=int(run.tally.n_primaries), n_batches=int(b), seed=int(settings.seed),
        seconds=time.perf_counter() - t0,
        peripheral_gy_per_photon={k: float(v) for k, v in zip(("p0", "p90", "p180", "p270"), mean[3:])},
        conversion_effect_percent=effect)
