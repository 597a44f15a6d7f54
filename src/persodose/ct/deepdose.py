"""Deep-dose CT: the single-source-position inputs of the SINFONIA CT-dose network and the
whole-body map assembled from per-position maps.

SINFONIA D2.2, section 2.3: a network takes the patient's density and the dose map of the same
focal-spot position in a large uniform water cylinder (SP_uniform) and gives the patient's Monte
Carlo map of that position (SP_MC); the whole-body dose map (WBDM) is the sum over positions
weighted by the tube current. This module holds everything but the network:

* :func:`uniform_map`: SP_uniform, simulated **once** per beam (kVp, bowtie, collimation,
  scanner, voxel) with the focal spot at gantry angle 0 (anterior) and z = 0 in a water
  cylinder of :data:`CYLINDER_DIAMETER_MM` (the deliverable's 715 mm, larger than any patient),
  averaged over its two mirror symmetries (left-right, cranio-caudal) and cached on disk
  (``$PERSODOSE_CACHE`` or ``~/.cache/persodose``, ``ct-uniform/``).
* :func:`position_inputs`: for one position, the density crop of ``depth`` slices centred on
  the focal spot's slice and SP_uniform rotated about the isocentre to the position's gantry
  angle and shifted to its z (linear interpolation), times the conversion factor CF.
* :func:`conversion_factor`: the deliverable's Eq. 1 writes ``CF = e^(d_MC - d_uniform)`` with
  ``d`` the source-to-surface distances along the central ray of the patient and of the
  cylinder, with no attenuation coefficient (dimensionally it needs one). Here CF is the
  ratio of the primary *energy fluence* of the central ray without and with the extra water
  ``d_MC - d_uniform``: ``CF = sum_E psi(E) / sum_E psi(E) exp(-mu_w(E) (d_MC - d_uniform))``
  over the beam spectrum behind the bowtie's centre, ``mu_w`` the attenuation coefficient of
  water (XCOM through :mod:`persodose.physics.photon_data`). It is what the deliverable's
  factor stands for (the cylinder's skin lies nearer the source than the patient's, so its
  map is attenuated by that water), with the spectrum's own hardening instead of an effective
  energy.

Units: every map is in Gy per source photon of the position (before the bowtie), like
:func:`persodose.ct.dose.single_position_maps`; the network sees them divided by
:attr:`UniformMap.unit_gy` (the cylinder map's maximum) so that its inputs are of order 1.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from persodose.errors import InputError
from persodose.grid import Grid, Kind

__all__ = ["CYLINDER_DIAMETER_MM", "BODY_DENSITY_G_CM3", "UniformMap", "uniform_map", "single_position",
           "conversion_factor", "position_inputs", "crop_slices", "DEFAULT_DEPTH", "DEFAULT_PLANE", "UNIFORM_DEPTH"]

#: Diameter of the uniform water cylinder, mm (SINFONIA D2.2 section 2.3: 715 mm).
CYLINDER_DIAMETER_MM = 715.0
#: Density above which a voxel is the patient's body for the source-to-surface distance and the
#: body mask of the maps, g/cm3 (the CT workflow zeroes the dose below 0.05 g/cm3; lung stays in).
BODY_DENSITY_G_CM3 = 0.05
#: Slices of a per-position map (5 mm: 165 mm, the beam and its scatter tails).
DEFAULT_DEPTH = 33
#: Slices covered by the cylinder map (5 mm: 485 mm); it also gives the tails of the whole-body
#: map beyond a slab (about 10 % of a position's energy lies outside 33 slices, measured on the
#: ct-sp data; how much lies beyond 97 was not measured: a choice).
UNIFORM_DEPTH = 97
#: In-plane voxels of a training map (the patient's slice padded or cropped about its centre).
DEFAULT_PLANE = 104
#: Version of the cached uniform maps (bump when their physics or layout changes).
_UNIFORM_VERSION = 1


@dataclass(frozen=True)
class UniformMap:
    """SP_uniform of one beam: focal spot at gantry angle 0, z = 0, axis on (0, 0).

    Attributes:
        dose: Gy per source photon, (nz, ny, nx), voxel centres at ``(i - n // 2) x voxel``
            in each axis (odd sizes, the isocentre in the middle voxel).
        voxel_mm: cubic voxel.
        n_photons: photons simulated (before the 4-fold symmetry average).
        relative_noise: median relative standard uncertainty over voxels above 10 % of the
            maximum, after the symmetry average.
        key: the beam it was made for (kVp, bowtie, collimation, scanner, voxel, photons).
    """

    dose: np.ndarray
    voxel_mm: float
    n_photons: int
    relative_noise: float
    key: dict

    @property
    def unit_gy(self) -> float:
        """The normalisation of the network's dose channels: the map's maximum, Gy per photon."""
        return float(self.dose.max())

    def sample(self, points_rel_xyz: np.ndarray) -> np.ndarray:
        """The map at points given relative to (isocentre, focal z) in the map's frame, mm (..., 3)."""
        from scipy.ndimage import map_coordinates

        p = np.asarray(points_rel_xyz, dtype=np.float64)
        n = np.asarray(self.dose.shape)
        idx = [p[..., 2] / self.voxel_mm + n[0] // 2, p[..., 1] / self.voxel_mm + n[1] // 2,
               p[..., 0] / self.voxel_mm + n[2] // 2]
        return map_coordinates(self.dose, np.stack([i.ravel() for i in idx]), order=1, mode="constant",
                               cval=0.0).reshape(p.shape[:-1])

    def sample_separable(self, rel_xy: np.ndarray, rel_z: np.ndarray) -> np.ndarray:
        """:meth:`sample` on the product of in-plane points ``rel_xy`` (N, 2) and heights ``rel_z``
        (D,), as (D, N): the same trilinear values (zero outside the map), computed as a linear
        interpolation between slices followed by one bilinear gather shared by all heights."""
        nz, ny, nx = self.dose.shape
        v = self.voxel_mm
        fz = np.asarray(rel_z, dtype=np.float64) / v + nz // 2
        k0 = np.floor(fz).astype(np.int64)
        wz = fz - k0
        lo = np.where((k0 >= 0) & (k0 < nz), 1.0 - wz, 0.0)
        hi = np.where((k0 + 1 >= 0) & (k0 + 1 < nz), wz, 0.0)
        planes = (lo[:, None, None] * self.dose[np.clip(k0, 0, nz - 1)]
                  + hi[:, None, None] * self.dose[np.clip(k0 + 1, 0, nz - 1)])  # (D, ny, nx)
        from scipy.sparse import csr_matrix

        xy = np.asarray(rel_xy, dtype=np.float64)
        fy, fx = xy[:, 1] / v + ny // 2, xy[:, 0] / v + nx // 2
        y0, x0 = np.floor(fy).astype(np.int64), np.floor(fx).astype(np.int64)
        wy, wx = fy - y0, fx - x0
        rows, cols, vals = [], [], []
        for dy, ay in ((0, 1.0 - wy), (1, wy)):
            for dx, ax in ((0, 1.0 - wx), (1, wx)):
                yy, xx = y0 + dy, x0 + dx
                ok = (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
                rows.append(np.flatnonzero(ok))
                cols.append(yy[ok] * nx + xx[ok])
                vals.append((ay * ax)[ok])
        w = csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                       shape=(xy.shape[0], ny * nx))
        return np.asarray((w @ planes.reshape(planes.shape[0], -1).T).T)


def single_position(positions, index: int):
    """A :class:`~persodose.ct.trajectory.SourcePositions` of position ``index`` of ``positions``
    moved to gantry angle 0 and z = 0 (the uniform map's frame), same beam and isocentre."""
    i = int(index)
    r = positions.source_to_isocentre_mm
    xc, yc = positions.isocentre_xy_mm
    arr = dict(position_xyz_mm=np.array([[xc, yc - r, 0.0]]), gantry_angle_rad=np.zeros(1),
               table_z_mm=np.zeros(1), direction_xyz=np.array([[0.0, 1.0, 0.0]]),
               collimation_mm=np.asarray(positions.collimation_mm[i:i + 1], dtype=float),
               weight=np.ones(1), time_s=np.zeros(1), start_index=np.zeros(1, dtype=np.int64), mas=None)
    return dataclasses.replace(positions, **arr, n_start_angles=1, _tables={})


def _cache_root() -> Path:
    return Path(os.environ.get("PERSODOSE_CACHE") or Path.home() / ".cache" / "persodose") / "ct-uniform"


def _cylinder_grid(voxel_mm: float, depth: int, isocentre_xy) -> Grid:
    n = int(math.ceil(CYLINDER_DIAMETER_MM / voxel_mm)) + 3
    n += 1 - n % 2
    nz = int(depth) + 4 + (1 - (int(depth) + 4) % 2)
    xc, yc = isocentre_xy
    origin = (xc - (n // 2) * voxel_mm, yc - (n // 2) * voxel_mm, -(nz // 2) * voxel_mm)
    return Grid(np.zeros((nz, n, n), dtype=np.float32), (voxel_mm,) * 3, origin, kind=Kind.DENSITY, unit="g/cm3")


def uniform_map(positions, voxel_mm: float = 5.0, depth: int = UNIFORM_DEPTH, n_photons: int = 20_000_000,
                seed: int = 20261202, cache: bool = True, log=None) -> UniformMap:
    """SP_uniform of the beam of ``positions`` (module docstring), from the cache or simulated.

    Args:
        positions: any positions of the scan (only the beam, R and the collimation are used).
        voxel_mm: cubic voxel of the map (the dose grid's).
        depth: slices the per-position maps will have (the map covers them and 2 more each side).
        n_photons: photons of the simulation (track-length estimator, 10 batches).
        seed: its seed.
        cache: read and write the on-disk cache.
    """
    from persodose.ct.dose import ScanSampler, run_beam_batches, water_cylinder_phantom
    from persodose.mc.engine import MCSettings
    from persodose.mc.tables import TransportSettings

    key = {"version": _UNIFORM_VERSION, "kvp": float(positions.spectrum.kvp), "bowtie": positions.bowtie.name,
           "collimation_mm": round(float(positions.collimation_mm[0]), 3),
           "source_to_isocentre_mm": float(positions.source_to_isocentre_mm),
           "fan_half_angle_rad": round(float(positions.fan_half_angle_rad), 6), "voxel_mm": float(voxel_mm),
           "depth": int(depth), "n_photons": int(n_photons), "seed": int(seed),
           "diameter_mm": CYLINDER_DIAMETER_MM}
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    path = _cache_root() / f"sp_uniform_{name}.npz"
    if cache and path.is_file():
        z = np.load(path)
        return UniformMap(z["dose"], float(voxel_mm), int(n_photons), float(z["noise"]), key)
    grid = _cylinder_grid(float(voxel_mm), depth, (0.0, 0.0))
    one = dataclasses.replace(single_position(positions, 0), position_xyz_mm=np.array([[0.0, -positions.source_to_isocentre_mm, 0.0]]),
                              isocentre_xy_mm=(0.0, 0.0), _tables={})
    phantom = water_cylinder_phantom(grid, CYLINDER_DIAMETER_MM, (0.0, 0.0))
    if log:
        log(f"SP_uniform: {int(n_photons):.3g} photons in the {CYLINDER_DIAMETER_MM:g} mm water cylinder "
            f"({positions.spectrum.kvp:g} kV, bowtie {positions.bowtie.name}), cached for later runs")
    settings = MCSettings(n_batches=10, seed=int(seed), transport=TransportSettings(photon_estimator="tle"))
    run = run_beam_batches(phantom, ScanSampler(one, 0), int(n_photons), settings)
    dose = run.dose_per_primary_gy * one.mean_bowtie_transmission()
    var = (run.relative_uncertainty * dose) ** 2
    # mirror symmetries of the beam: x -> -x (the fan is symmetric about the central ray), z -> -z
    dose = 0.25 * (dose + dose[:, :, ::-1] + dose[::-1] + dose[::-1, :, ::-1])
    var = 0.0625 * (var + var[:, :, ::-1] + var[::-1] + var[::-1, :, ::-1])
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.sqrt(var) / dose
    high = dose >= 0.1 * dose.max()
    noise = float(np.median(rel[high]))
    dose = dose.astype(np.float32)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, dose=dose, noise=noise, key=json.dumps(key))
        os.replace(tmp, path)
    return UniformMap(dose, float(voxel_mm), int(n_photons), noise, key)


def _water_mu_per_mm(energy_mev: np.ndarray) -> np.ndarray:
    e = np.asarray(energy_mev, dtype=np.float64)
    return _water_mu_cached(e.tobytes()).copy()


@functools.lru_cache(maxsize=16)
def _water_mu_cached(energy_bytes: bytes) -> np.ndarray:
    from persodose.physics.materials import get_material
    from persodose.physics.photon_data import photon_tables

    w = get_material("water")
    e = np.frombuffer(energy_bytes, dtype=np.float64)
    return photon_tables(w).mu_over_rho(e, "total") * w.density_g_cm3 * 0.1


def body_entry_mm(density: Grid, focal_xyz, direction_xyz, max_mm: float) -> float | None:
    """Distance from the focal spot to the first body voxel (density >= BODY_DENSITY_G_CM3)
    along ``direction_xyz``, mm, in 1 mm steps (nearest voxel); None if the ray meets none."""
    from scipy.ndimage import map_coordinates

    s = np.arange(0.0, float(max_mm), 1.0)
    pts = np.asarray(focal_xyz, float)[None, :] + s[:, None] * np.asarray(direction_xyz, float)[None, :]
    idx = density.physical_to_index(pts)  # (n, 3) zyx
    vals = map_coordinates(np.asarray(density.array, dtype=np.float32), idx.T, order=0, mode="constant", cval=0.0)
    hit = np.flatnonzero(vals >= BODY_DENSITY_G_CM3)
    return None if hit.size == 0 else float(s[hit[0]])


def conversion_factor(positions, index: int, density: Grid, search_slices: int = DEFAULT_DEPTH // 2
                      ) -> tuple[float, float]:
    """``(CF, d_MC - d_uniform mm)`` of one position (module docstring).

    ``d_MC`` is the focal spot's distance to the body along the central ray in its own slice;
    when that slice holds no body there (the ends of the scan, over the head or below the feet)
    the nearest slice within ``search_slices`` that does is used (the beam's dose lands there);
    with none, the isocentre is the surface (CF of the cylinder's radius of water).
    """
    i = int(index)
    r = float(positions.source_to_isocentre_mm)
    step = float(density.spacing_zyx_mm[0])
    focal = np.asarray(positions.position_xyz_mm[i], dtype=np.float64)
    d_body = None
    for k in sorted(range(-int(search_slices), int(search_slices) + 1), key=lambda k: (abs(k), k)):
        d_body = body_entry_mm(density, focal + np.array([0.0, 0.0, k * step]), positions.direction_xyz[i], 2.0 * r)
        if d_body is not None:
            break
    d_body = r if d_body is None else d_body
    delta = d_body - (r - 0.5 * CYLINDER_DIAMETER_MM)
    sp = positions.spectrum
    e = np.asarray(sp.energy_mev, dtype=np.float64)
    psi = np.asarray(sp.probabilities, dtype=np.float64) * e * positions.bowtie.relative_fluence(np.zeros(e.size), e)
    cf = float(psi.sum() / np.sum(psi * np.exp(-_water_mu_per_mm(e) * delta)))
    return cf, float(delta)


def crop_slices(n_slices: int, centre: int, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """``(source indices, valid mask)`` of a ``depth``-slice crop centred on slice ``centre``;
    slices outside ``0..n_slices-1`` are marked invalid (padded)."""
    k = np.arange(int(depth)) - int(depth) // 2 + int(centre)
    valid = (k >= 0) & (k < int(n_slices))
    return np.clip(k, 0, int(n_slices) - 1), valid


def _plane_index(n: int, plane: int | None) -> tuple[np.ndarray, np.ndarray]:
    if plane is None:
        return np.arange(n), np.ones(n, bool)
    k = np.arange(int(plane)) - (int(plane) - n) // 2
    return np.clip(k, 0, n - 1), (k >= 0) & (k < n)


def position_inputs(density: Grid, positions, index: int, umap: UniformMap, depth: int = DEFAULT_DEPTH,
                    plane: int | None = None, box: tuple[slice, slice] | None = None) -> dict:
    """The network's inputs for one position, on the patient's dose grid.

    Args:
        density: the patient's density on the (cubic, axial) dose grid, g/cm3.
        positions, index: the position.
        umap: SP_uniform of the beam (same voxel).
        depth: slices of the crop, centred on the slice nearest the focal spot's z.
        plane: in-plane size to pad or crop to about the slice centre (None: the patient's).
        box: in-plane ``(rows, columns)`` slices of that plane to keep (e.g. the body's box).

    Returns:
        dict with ``density`` (depth, ny, nx) g/cm3 (air 0 outside the grid), ``uniform``
        (SP_uniform x CF, Gy per source photon), ``z_index`` and ``y_index``/``x_index``
        (source indices into the grid), ``valid`` (depth, ny, nx) bool, ``cf``,
        ``delta_mm`` and ``centre_slice``.
    """
    if abs(umap.voxel_mm - float(density.spacing_zyx_mm[0])) > 1e-6 or \
            not np.allclose(density.spacing_zyx_mm, density.spacing_zyx_mm[0]):
        raise InputError(f"the uniform map's voxel ({umap.voxel_mm:g} mm) differs from the cubic dose grid's "
                         f"({density.spacing_zyx_mm})")
    i = int(index)
    nz, ny, nx = density.shape
    zf = float(positions.position_xyz_mm[i, 2])
    centre = int(np.rint(density.physical_to_index(np.array([[0.0, 0.0, zf]]))[0, 0]))
    kz, vz = crop_slices(nz, centre, depth)
    ky, vy = _plane_index(ny, plane)
    kx, vx = _plane_index(nx, plane)
    # padded voxels continue the grid's lattice (their positions are the unclipped indices)
    lz = np.arange(depth) - depth // 2 + centre
    ly = np.arange(ky.size) - ((ky.size - ny) // 2 if plane is not None else 0)
    lx = np.arange(kx.size) - ((kx.size - nx) // 2 if plane is not None else 0)
    if box is not None:
        ky, vy, ly = ky[box[0]], vy[box[0]], ly[box[0]]
        kx, vx, lx = kx[box[1]], vx[box[1]], lx[box[1]]
    valid = vz[:, None, None] & vy[None, :, None] & vx[None, None, :]
    yy, xx = np.meshgrid(ly.astype(float), lx.astype(float), indexing="ij")
    a = density.index_to_physical(np.stack([np.zeros(yy.size), yy.ravel(), xx.ravel()], axis=1))
    zcol = density.index_to_physical(np.stack([lz.astype(float), np.zeros(depth), np.zeros(depth)], axis=1))
    if not np.allclose(zcol[:, :2], zcol[0, :2]):
        raise InputError("the dose grid is not axial (its slices are tilted): cannot place the cylinder map")
    th = float(positions.gantry_angle_rad[i])
    xc, yc = positions.isocentre_xy_mm
    dx, dy = a[:, 0] - xc, a[:, 1] - yc
    rel_xy = np.stack([math.cos(th) * dx + math.sin(th) * dy, -math.sin(th) * dx + math.cos(th) * dy], axis=1)
    cf, delta = conversion_factor(positions, i, density)
    uni = umap.sample_separable(rel_xy, zcol[:, 2] - zf).reshape(valid.shape) * cf
    rho = np.asarray(density.array, dtype=np.float32)[np.ix_(kz, ky, kx)]
    rho = np.where(valid, rho, 0.0).astype(np.float32)
    return {"density": rho, "uniform": np.where(valid, uni, 0.0).astype(np.float32), "z_index": kz, "y_index": ky,
            "x_index": kx, "valid": valid, "cf": cf, "delta_mm": delta, "centre_slice": centre}
