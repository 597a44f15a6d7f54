"""Dataset kind ``ct-sp``: single-source-position CT dose maps (SINFONIA D2.2 section 2.3).

Per patient:

1. The patient's CT on a cubic dose grid of ``voxel_mm`` (:func:`persodose.ct.dose.patient_phantom`).
2. The helical focal-spot positions of a whole-body scan over the CT's slices at ``kvp`` with the
   patient's own pitch and collimation (its manifest's ``ct_tags``; else the settings),
   ``n_per_rotation`` positions per rotation and one start angle drawn from the patient's seed
   (the start angle is not in DICOM; the deliverable draws it too).
3. ``positions_per_patient`` positions drawn without replacement, spread over the scan
   (one per equal stretch of the position list, random within it).
4. For each, a Monte Carlo map of the position on the patient (SP_MC; ``photons_per_map``
   photons, track-length estimator) and the inputs of :func:`persodose.ct.deepdose.position_inputs`:
   the density of the same slices and SP_uniform (one cylinder map per beam, cached, rotated
   and shifted to the position) times the conversion factor CF.
5. ``patches_per_map`` in-plane patches of ``patch`` x ``patch`` voxels around body voxels (the
   network is fully convolutional; patches make training affordable on a CPU), all
   ``depth`` slices.

Inputs ``(2, depth, patch, patch)``: density (g/cm3) and SP_uniform x CF / unit; target
``(1, depth, patch, patch)``: SP_MC / unit, zero below :data:`persodose.ct.deepdose.BODY_DENSITY_G_CM3`
(air, as in the CT workflow's map). ``unit`` is the uniform map's maximum (Gy per source photon),
stored in each example's meta with the position, CF, the MC noise and the share of the
position's energy that falls inside the crop's slices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from persodose.dl.datasets import PatientData, register_kind
from persodose.errors import InputError

__all__ = ["CTSPSettings", "make_ct_sp_examples", "scan_positions"]


@dataclass(frozen=True)
class CTSPSettings:
    """Settings of the ``ct-sp`` kind.

    Attributes:
        kvp: tube voltage, kV.
        voxel_mm: cubic dose voxel, mm.
        n_per_rotation: focal-spot positions per rotation.
        positions_per_patient: positions simulated per patient.
        photons_per_map: Monte Carlo photons per position (about 1.6 % median voxel noise above
            10 % of the map's maximum at 1e6, 5 mm, 120 kV).
        uniform_photons: photons of the cylinder map (once per beam; cached).
        depth: slices of a map.
        patch: in-plane edge of a training patch, voxels (0: the whole slice padded to 104).
        patches_per_map: patches drawn from each map.
        bowtie: bowtie filter.
        pitch, total_collimation_mm: used when the patient's manifest has no ``ct_tags``.
        scanner: scanner preset (None: the generic one).
    """

    kvp: float = 120.0
    voxel_mm: float = 5.0
    n_per_rotation: int = 8
    positions_per_patient: int = 20
    photons_per_map: int = 1_000_000
    uniform_photons: int = 20_000_000
    depth: int = 33
    patch: int = 48
    patches_per_map: int = 2
    bowtie: str = "body"
    pitch: float = 0.984
    total_collimation_mm: float = 40.0
    scanner: str | None = None

    def __post_init__(self) -> None:
        if self.depth < 3 or self.depth % 2 == 0:
            raise InputError(f"depth must be an odd number >= 3, got {self.depth}")
        if self.positions_per_patient < 1 or self.photons_per_map < 1000 or self.patches_per_map < 1:
            raise InputError("positions_per_patient and patches_per_map must be >= 1 and photons_per_map >= 1000")
        if self.patch != 0 and self.patch < 8:
            raise InputError(f"patch must be 0 (whole slice) or >= 8 voxels, got {self.patch}")


def scan_positions(ct, manifest: dict | None, kvp: float, n_per_rotation: int, start_angle_rad, *,
                   bowtie: str = "body", pitch: float = 0.984, collimation_mm: float = 40.0, scanner=None):
    """``(acquisition, scanner, positions)`` of a whole-body helical scan over ``ct``'s slices.

    Pitch and collimation come from the manifest's ``ct_tags`` (a virtual patient's) when
    present; the tube current is fixed (the per-position maps are per source photon).
    """
    import warnings

    from persodose.ct.acquisition import acquisition_from_dicom
    from persodose.ct.scanner import get_scanner, guess_scanner
    from persodose.ct.trajectory import helical_positions
    from persodose.workflows.ct import _series_for

    tags = (manifest or {}).get("ct_tags") or {}
    ov = {"kvp": float(kvp), "pitch": float(tags.get("spiral_pitch_factor", pitch)),
          "total_collimation_mm": float(tags.get("total_collimation_mm", collimation_mm)),
          "rotation_time_s": float(tags.get("rotation_time_s", 0.5)), "tube_current_ma": 100.0, "bowtie": bowtie}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        acq = acquisition_from_dicom(_series_for(ct, None), ov)
    sc = guess_scanner(None, None) if scanner is None else get_scanner(str(scanner))
    pos = helical_positions(acq, sc, n_per_rotation=int(n_per_rotation), start_angle_rad=start_angle_rad)
    return acq, sc, pos


def _patch_centres(body: np.ndarray, n: int, patch: int, rng) -> list:
    """In-plane centres of ``n`` patches: drawn among the body voxels of the slab's middle slice."""
    mid = body[body.shape[0] // 2]
    ys, xs = np.nonzero(mid)
    if ys.size == 0:
        ys, xs = np.nonzero(body.any(axis=0))
    if ys.size == 0:
        return [(body.shape[1] // 2, body.shape[2] // 2)] * n
    pick = rng.choice(ys.size, size=n, replace=ys.size < n)
    return [(int(ys[k]), int(xs[k])) for k in pick]


def _cut(a: np.ndarray, cy: int, cx: int, patch: int) -> np.ndarray:
    """A ``patch`` x ``patch`` window of the last two axes centred near (cy, cx), zero-padded."""
    h = patch // 2
    pad = [(0, 0)] * (a.ndim - 2) + [(h, h), (h, h)]
    b = np.pad(a, pad)
    return b[..., cy:cy + patch, cx:cx + patch]


@register_kind("ct-sp", settings=CTSPSettings, needs=("ct_nifti",),
               input_channels=("density_g_cm3", "sp_uniform_cf_per_unit"), target_channels=("sp_mc_per_unit",),
               summary="single CT source positions: density + rotated SP_uniform x CF -> patient SP_MC (SINFONIA)")
def make_ct_sp_examples(patient: PatientData, settings: CTSPSettings, seed: int) -> list:
    """SP_MC maps of chosen source positions with their inputs; see the module doc."""
    from dataclasses import replace

    from persodose.ct.deepdose import BODY_DENSITY_G_CM3, DEFAULT_PLANE, UNIFORM_DEPTH, position_inputs, uniform_map
    from persodose.ct.dose import ScanSampler, patient_phantom, run_beam_batches
    from persodose.mc.engine import MCSettings
    from persodose.workflows.ct import CT_TRANSPORT

    rng = np.random.default_rng(seed)
    ct = patient["ct_nifti"]
    phantom, _ = patient_phantom(ct, float(settings.voxel_mm))
    start = float(rng.uniform(0.0, 2.0 * np.pi))
    _, _, pos = scan_positions(ct, patient.manifest, settings.kvp, settings.n_per_rotation, start,
                               bowtie=settings.bowtie, pitch=settings.pitch,
                               collimation_mm=settings.total_collimation_mm, scanner=settings.scanner)
    umap = uniform_map(pos, float(settings.voxel_mm), max(UNIFORM_DEPTH, int(settings.depth)), int(settings.uniform_photons))
    unit = umap.unit_gy
    k = min(int(settings.positions_per_patient), len(pos))
    edges = np.linspace(0, len(pos), k + 1).astype(int)
    chosen = [int(rng.integers(edges[j], max(edges[j] + 1, edges[j + 1]))) for j in range(k)]
    t = pos.mean_bowtie_transmission()
    mc = MCSettings(n_batches=4, seed=int(rng.integers(0, 2 ** 31 - 1)), transport=CT_TRANSPORT)
    plane = DEFAULT_PLANE if settings.patch == 0 else None
    out = []
    for n, i in enumerate(chosen):
        run = run_beam_batches(phantom, ScanSampler(pos, i), int(settings.photons_per_map), replace(mc, seed=mc.seed + n))
        dose = run.dose_per_primary_gy * t
        inp = position_inputs(phantom.density, pos, i, umap, int(settings.depth), plane)
        kz, ky, kx = inp["z_index"], inp["y_index"], inp["x_index"]
        body = inp["valid"] & (inp["density"] >= BODY_DENSITY_G_CM3)
        target = np.where(body, dose[np.ix_(kz, ky, kx)], 0.0) / unit
        unc = run.relative_uncertainty[np.ix_(kz, ky, kx)]
        energy = (dose * phantom.mass_kg).sum(axis=(1, 2))
        inside = float(energy[np.unique(kz[inp["valid"][:, 0, 0]])].sum() / energy.sum()) if energy.sum() > 0 else 0.0
        high = body & (target >= 0.1 * target.max()) if target.max() > 0 else body
        meta = {"position_index": i, "gantry_angle_deg": float(np.degrees(pos.gantry_angle_rad[i]) % 360.0),
                "focal_z_mm": float(pos.position_xyz_mm[i, 2]), "cf": inp["cf"], "delta_mm": inp["delta_mm"],
                "unit_gy_per_photon": unit, "kvp": float(settings.kvp), "photons": int(settings.photons_per_map),
                "start_angle_rad": start, "energy_inside_crop": inside,
                "mc_noise_median_above_10pct": float(np.median(unc[high])) if high.any() else None,
                "uniform_noise": umap.relative_noise}
        x = np.stack([inp["density"], inp["uniform"] / unit]).astype(np.float32)
        y = target[None].astype(np.float32)
        if settings.patch == 0:
            out.append((x, y, meta))
            continue
        for cy, cx in _patch_centres(body, int(settings.patches_per_map), int(settings.patch), rng):
            out.append((_cut(x, cy, cx, settings.patch).copy(), _cut(y, cy, cx, settings.patch).copy(),
                        {**meta, "patch_centre_yx": [cy, cx]}))
    return out
