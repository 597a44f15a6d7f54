"""Patient dose of a CT scan by Monte Carlo: beam sampling, transport in batches, CTDI calibration.

Units and normalisation
-----------------------
* A *source photon* is a photon emitted by the focal spot into the fan x cone beam before
  the bowtie (:meth:`persodose.ct.trajectory.SourcePositions.photons_per_mas` counts them).
  The beam is sampled in the source model's ``"importance"`` mode: (fan angle, energy)
  drawn from spectrum x bowtie transmission, every photon with the same weight ``<T>`` (the
  mean bowtie transmission). The transport engine ignores weights, so its "dose per primary"
  is per *transmitted* photon; multiplying by ``<T>`` gives the dose per source photon.
* Whole scan: positions are drawn with probability proportional to the tube current at the
  position's table z (all positions last the same time), so every simulated photon stands
  for the same share of the scan's mAs.
* Absolute calibration (:func:`calibrate`): the CTDI phantom of the scan type is simulated
  with the same scanner model (:func:`persodose.ct.ctdi.simulate_ctdi`), giving CTDIw per
  source photon of one rotation, ``c_w``. A rotation at the mean tube current of the
  reconstructed slices emits ``N_rot = CTDIvol x pitch / c_w`` source photons when the scan's
  CTDIvol (the mean of the per-slice DICOM values, or the user's) is met; position ``i``
  emits ``N_rot x rel(z_i) / (n_per_rotation x n_start_angles)`` and the whole scan
  ``N_scan = N_rot x sum_i rel(z_i) / (n_per_rotation x n_start_angles)``. The patient dose is
  ``D = dose per source photon x N_scan``. When the tube current is known in mA the implied
  tube output ``N_rot / (mA x t_rot)`` (photons/mAs) is reported next to SpekPy's.

Transport: the engine's coupled photon-electron transport; at CT energies secondary
electrons cannot leave a millimetre voxel and are deposited locally by range rejection, so
the result is the collision-kerma approximation of the absorbed dose (secondary-electron
ranges at these energies are below about 0.1 mm, far below the voxel size).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from persodose.errors import InputError
from persodose.grid import Grid, Kind
from persodose.physics.constants import MEV_TO_J  # noqa: F401

__all__ = ["ScanSampler", "BeamRun", "run_beam_batches", "patient_phantom", "water_cylinder_phantom",
           "Calibration", "calibrate", "single_position_maps", "SinglePositionMaps",
           "write_single_position_maps", "BODY_THRESHOLD_HU", "MEV_TO_J"]

#: CT number above which a voxel counts as part of the body (or couch) for the input check, HU.
BODY_THRESHOLD_HU = -500.0


# --------------------------------------------------------------------------- sampler
@dataclass(frozen=True, eq=False)
class ScanSampler:
    """Equal-weight photons of a CT scan for :func:`persodose.mc.engine.simulate_beam` (picklable).

    Attributes:
        positions: the focal-spot positions and their beam.
        index: ``None`` for the whole scan (positions drawn with probability proportional to
            the tube current), or one position index (that position only).
    """

    positions: object
    index: int | None = None

    def __post_init__(self) -> None:
        if self.index is not None and not 0 <= int(self.index) < len(self.positions):
            raise InputError(f"position index {self.index} outside 0..{len(self.positions) - 1}")

    @property
    def weight(self) -> float:
        """The constant weight every photon carries (``<T>``, times the relative mA for one position)."""
        t = self.positions.mean_bowtie_transmission()
        return t if self.index is None else t * float(self.positions.weight[int(self.index)])

    def sample(self, n: int, rng: np.random.Generator):
        """``(origins (n, 3) mm, directions (n, 3), energies_mev (n,), weights (n,))``, LPS.

        Raises:
            InputError: the weights are not all equal (the engine ignores weights).
        """
        if self.index is None:
            o, d, e, w, _ = self.positions.sample(n, rng, mode="importance")
        else:
            o, d, e, w = self.positions.sample_beam(int(self.index), n, rng, mode="importance")
        if w.size and np.ptp(w) > 1e-12 * float(np.max(np.abs(w))):
            raise InputError("the CT beam sampler produced unequal photon weights")
        return o, d, e, w


# --------------------------------------------------------------------------- transport
@dataclass
class BeamRun:
    """A beam transport run done batch by batch.

    Attributes:
        tally: the engine's running sums (energy per primary per voxel).
        dose_per_primary_gy: Gy per simulated (transmitted) photon, (z, y, x).
        relative_uncertainty: per voxel (batch method).
        reduced: per-batch values of the ``reducer`` (one array per batch).
        energy_balance: MeV per primary.
        seconds: transport wall time.
        target: how a run with a target uncertainty ended
            (:meth:`persodose.mc.tally.TargetOutcome.record`), else None.
    """

    tally: object
    dose_per_primary_gy: np.ndarray
    relative_uncertainty: np.ndarray
    reduced: list
    energy_balance: dict
    seconds: float
    target: dict | None = None

    @property
    def photons_per_second(self) -> float:
        return self.tally.n_primaries / self.seconds if self.seconds > 0 else float("inf")


def run_beam_batches(phantom, sampler, n_photons: int, settings=None,
                     reducer: Callable[[np.ndarray], np.ndarray] | None = None,
                     progress: Callable[[int, int], object] | None = None, target=None) -> BeamRun:
    """Transport ``n_photons`` of ``sampler`` through ``phantom``, one engine batch at a time.

    Same physics and random streams as :func:`persodose.mc.engine.simulate_beam` (it runs the
    same :func:`persodose.mc.engine.run_batch`), but hands each batch's dose per primary
    (Gy, (z, y, x)) to ``reducer`` so that quantities over many voxels (organ means, CTDI)
    get their uncertainty from the spread of the batches, not from voxel variances.

    With ``target`` (a :class:`persodose.mc.tally.UncertaintyTarget`) the run stops once it
    is met; ``n_photons`` and ``settings.n_batches`` are then the limit, and the batches run
    are the first ones of the full run (the reducer sees exactly those).

    Warns:
        persodose.mc.run.TargetNotMetWarning: the photons ran out before the target.
    """
    from persodose.mc.engine import MCSettings, beam_problem
    from persodose.mc.run import run_batches

    settings = settings or MCSettings()
    problem = beam_problem(phantom, sampler, int(n_photons), settings)
    mass_kg = phantom.mass_kg
    shape = phantom.density.shape
    reduced = []

    def reduce(res) -> None:  # the engine's per-batch hook
        reduced.append(np.asarray(reducer(res.energy_per_primary_mev.reshape(shape) * MEV_TO_J / mass_kg)))

    tally, run = run_batches(problem, progress=progress, on_batch=reduce if reducer is not None else None,
                             target=target)
    seconds = float(run["seconds"])
    dose = tally.mean_mev().reshape(shape) * MEV_TO_J / mass_kg
    unc = tally.relative_uncertainty().reshape(shape)
    return BeamRun(tally, dose, unc, reduced, tally.energy_balance(), seconds, run.get("target"))


# --------------------------------------------------------------------------- phantoms
def patient_phantom(ct: Grid, dose_voxel_mm: float = 5.0):
    """Density and materials of the patient on a cubic dose grid.

    The CT is resampled onto a cubic grid of ``dose_voxel_mm`` covering its field of view
    (linear interpolation of HU), then converted with the Schneider et al. (2000)
    calibration and classes (:func:`persodose.physics.materials.ct_to_density_and_materials`).
    Whatever the CT shows (couch, immobilisation) is kept.

    Returns:
        ``(phantom, ct_on_dose_grid)``.

    Raises:
        InputError: no voxel above :data:`BODY_THRESHOLD_HU` (no body in the series), bad voxel.
    """
    from persodose.grid import cubic_grid_over
    from persodose.mc.engine import VoxelPhantom

    v = float(dose_voxel_mm)
    if not (math.isfinite(v) and 0.5 <= v <= 20.0):
        raise InputError(f"dose voxel must be within 0.5-20 mm, got {dose_voxel_mm!r}")
    if not np.any(np.asarray(ct.array) > BODY_THRESHOLD_HU):
        raise InputError(f"the CT holds no voxel above {BODY_THRESHOLD_HU:g} HU: no body in the series")
    ref = cubic_grid_over(ct, v)
    ct_d = ct.resample_to(ref)
    return VoxelPhantom.from_ct(ct_d), ct_d


def water_cylinder_phantom(reference: Grid, diameter_mm: float = 400.0,
                           axis_xy_mm: tuple[float, float] = (0.0, 0.0)):
    """A uniform water cylinder (axis along z through ``axis_xy_mm``) in air on ``reference``'s grid.

    Used for the single-position maps in uniform water (the SP_uniform input of the SINFONIA
    CT-dose network); the cylinder is clipped by the grid when the grid is narrower.
    """
    from persodose.mc.engine import VoxelPhantom
    from persodose.physics.materials import get_material

    ny, nx = reference.shape[1:]
    nz = reference.shape[0]
    idx = np.stack(np.meshgrid(np.zeros(1), np.arange(ny), np.arange(nx), indexing="ij"), axis=-1).reshape(-1, 3)
    pts = reference.index_to_physical(idx)
    r2 = (pts[:, 0] - axis_xy_mm[0]) ** 2 + (pts[:, 1] - axis_xy_mm[1]) ** 2
    inside = (r2 <= (0.5 * float(diameter_mm)) ** 2).reshape(ny, nx)
    water, air = get_material("water"), get_material("air")
    rho = np.where(inside, water.density_g_cm3, air.density_g_cm3).astype(np.float32)
    dens = reference.with_array(np.broadcast_to(rho, (nz, ny, nx)).copy(), Kind.DENSITY, "g/cm3")
    mats = reference.with_array(np.broadcast_to(inside.astype(np.uint8), (nz, ny, nx)).copy(), Kind.MATERIAL, "")
    return VoxelPhantom(dens, mats, (air, water))


# --------------------------------------------------------------------------- calibration
@dataclass
class Calibration:
    """Absolute scaling of a CT dose simulation (module docstring).

    Attributes:
        ctdivol_target_mgy: CTDIvol the scan must meet (mean of the DICOM values or the user's).
        ctdivol_source: ``"dicom"``, ``"override"`` or ``"spekpy"`` (no CTDIvol: SpekPy output x mAs).
        ctdiw_gy_per_source_photon: simulated CTDIw of one rotation per source photon.
        source_photons_per_rotation: N_rot at the mean tube current.
        source_photons_scan: N_scan, all positions.
        transmitted_photons_scan: N_scan x <T> (what one simulated photon's dose is scaled by).
        mgy_per_gy_per_simulated_photon: factor taking the engine's Gy per simulated photon
            to the scan's mGy (1e3 x transmitted_photons_scan).
        implied_photons_per_mas: N_rot / (mean mA x t_rot), or None when mA is unknown.
        spekpy_photons_per_mas: the SpekPy model's photons per mAs into the beam.
        tube_output_factor: implied / SpekPy (None when mA is unknown).
        ctdivol_model_mgy: CTDIvol the SpekPy tube output would give (None when mA is unknown).
        mean_tube_current_ma: mean mA over the reconstructed slices (None when unknown).
    """

    ctdivol_target_mgy: float
    ctdivol_source: str
    ctdiw_gy_per_source_photon: float
    pitch: float
    source_photons_per_rotation: float
    source_photons_scan: float
    transmitted_photons_scan: float
    mgy_per_gy_per_simulated_photon: float
    mean_bowtie_transmission: float
    implied_photons_per_mas: float | None
    spekpy_photons_per_mas: float
    tube_output_factor: float | None
    ctdivol_model_mgy: float | None
    mean_tube_current_ma: float | None
    rotations: float
    notes: list = field(default_factory=list)

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def calibrate(acq, positions, ctdiw_gy_per_source_photon: float, ctdivol_mgy: float | None = None,
              ctdivol_source: str | None = None) -> Calibration:
    """Scale factors from simulated CTDIw per photon to the scan's CTDIvol (module docstring).

    Args:
        acq: the :class:`~persodose.ct.acquisition.Acquisition`.
        positions: the scan's :class:`~persodose.ct.trajectory.SourcePositions`.
        ctdiw_gy_per_source_photon: from :func:`persodose.ct.ctdi.simulate_ctdi` with the
            scan's beam (kVp, bowtie, collimation) in the CTDI phantom of the scan type.
        ctdivol_mgy: target CTDIvol; default ``acq.ctdivol_mgy``. Without either, the SpekPy
            tube output and the DICOM mA are used (uncalibrated, noted).

    Raises:
        InputError: neither a CTDIvol nor an absolute tube current is known.
    """
    c_w = float(ctdiw_gy_per_source_photon)
    if not (math.isfinite(c_w) and c_w > 0):
        raise InputError(f"simulated CTDIw per photon must be > 0, got {ctdiw_gy_per_source_photon!r}")
    notes = []
    pitch = float(acq.pitch)
    n_rot_pos = positions.n_per_rotation * positions.n_start_angles
    ppmas = float(positions.photons_per_mas(0))
    t_mean = float(positions.mean_bowtie_transmission())
    ma_mean = float(np.mean(acq.tube_current_ma)) if acq.tube_current_ma is not None else None
    model_ctdivol = None if ma_mean is None else c_w * ppmas * ma_mean * acq.rotation_time_s / pitch * 1e3
    target = ctdivol_mgy if ctdivol_mgy is not None else acq.ctdivol_mgy
    if target is not None:
        target = float(target)
        if not (math.isfinite(target) and target > 0):
            raise InputError(f"CTDIvol must be > 0 mGy, got {target!r}")
        src = ctdivol_source or (acq.provenance.get("ctdivol_mgy", "dicom") if ctdivol_mgy is None else "override")
        n_rot = target * 1e-3 * pitch / c_w
    elif model_ctdivol is not None:
        target, src = model_ctdivol, "spekpy"
        n_rot = ppmas * ma_mean * acq.rotation_time_s
        notes.append("no CTDIvol in the headers: absolute dose from the SpekPy tube output and the DICOM "
                     "tube current (uncalibrated; give --ctdivol)")
    else:
        raise InputError("the CT series has neither CTDIvol (0018,9345) nor an absolute tube current; "
                         "give the scan's CTDIvol (--ctdivol)")
    rel = acq.relative_current_at(positions.table_z_mm)
    n_scan = n_rot * float(np.sum(rel)) / n_rot_pos
    implied = None if ma_mean is None else n_rot / (ma_mean * acq.rotation_time_s)
    return Calibration(
        ctdivol_target_mgy=float(target), ctdivol_source=str(src), ctdiw_gy_per_source_photon=c_w, pitch=pitch,
        source_photons_per_rotation=float(n_rot), source_photons_scan=float(n_scan),
        transmitted_photons_scan=float(n_scan * t_mean), mgy_per_gy_per_simulated_photon=float(1e3 * n_scan * t_mean),
        mean_bowtie_transmission=t_mean, implied_photons_per_mas=implied, spekpy_photons_per_mas=ppmas,
        tube_output_factor=None if implied is None else implied / ppmas, ctdivol_model_mgy=model_ctdivol,
        mean_tube_current_ma=ma_mean, rotations=float(len(positions)) / n_rot_pos, notes=notes)


# --------------------------------------------------------------------------- single positions
@dataclass
class SinglePositionMaps:
    """Dose maps of single focal-spot positions (SINFONIA CT-dose training pairs).

    Attributes:
        indices: the position indices.
        sp_mc: per position, dose on the patient per source photon of that position, Gy.
        sp_uniform: per position, dose in the uniform water cylinder per source photon, Gy
            (``None`` when not computed).
        sp_mc_unc, sp_uniform_unc: voxel relative uncertainties.
        photons_per_position: simulated photons per position (and per phantom).
        source_photons_per_mas: source photons per mAs (calibrated when a calibration was
            given, else SpekPy's): ``map x source_photons_per_mas x 1e3`` is mGy per mAs.
        mas: mAs of each position (None when the tube current is unknown).
        relative_current: relative tube current of each position.
    """

    indices: list
    sp_mc: list
    sp_uniform: list | None
    sp_mc_unc: list
    sp_uniform_unc: list | None
    photons_per_position: int
    source_photons_per_mas: float
    mas: list | None
    relative_current: list
    positions_info: list = field(default_factory=list)
    calibrated: bool = False


def single_position_maps(phantom, positions, indices: Sequence[int], n_photons: int, settings=None,
                         uniform_diameter_mm: float | None = 400.0, calibration: Calibration | None = None,
                         progress: Callable[[int, int], object] | None = None) -> SinglePositionMaps:
    """Dose of chosen focal-spot positions, on the patient (SP_MC) and in a water cylinder (SP_uniform).

    Each map is per source photon emitted at that position, so that the whole-scan dose is
    ``sum_i N_i SP_i`` with ``N_i`` the source photons of position ``i`` (proportional to its
    mAs): the linearity the SINFONIA CT-dose network relies on.

    Args:
        phantom: the patient phantom (dose grid).
        positions: the scan's source positions.
        indices: which positions.
        n_photons: photons per position and phantom.
        settings: MC settings (the seed is offset by the position index).
        uniform_diameter_mm: diameter of the water cylinder (axis on the isocentre); ``None``
            skips SP_uniform.
        calibration: to state the calibrated photons per mAs.
    """
    from dataclasses import replace

    from persodose.mc.engine import MCSettings

    settings = settings or MCSettings(n_batches=4)
    idx = [int(i) for i in indices]
    if not idx:
        raise InputError("no source position chosen for the single-position maps")
    uni = None
    if uniform_diameter_mm is not None:
        uni = water_cylinder_phantom(phantom.density, uniform_diameter_mm, positions.isocentre_xy_mm)
    t = positions.mean_bowtie_transmission()
    sp_mc: list = []
    u_mc: list = []
    sp_u = [] if uni is not None else None
    u_u = [] if uni is not None else None
    info = []
    for k, i in enumerate(idx):
        s = replace(settings, seed=int(settings.seed) + 1 + i)
        sampler = ScanSampler(positions, i)
        run = run_beam_batches(phantom, sampler, n_photons, s)
        sp_mc.append(phantom.density.with_array((run.dose_per_primary_gy * t).astype(np.float32), Kind.DOSE,
                                                "Gy per source photon"))
        u_mc.append(run.relative_uncertainty.astype(np.float32))
        if uni is not None:
            run_u = run_beam_batches(uni, sampler, n_photons, replace(s, seed=int(s.seed) + 7919))
            sp_u.append(uni.density.with_array((run_u.dose_per_primary_gy * t).astype(np.float32), Kind.DOSE,
                                               "Gy per source photon"))
            u_u.append(run_u.relative_uncertainty.astype(np.float32))
        info.append({"index": i, "gantry_angle_deg": float(np.degrees(positions.gantry_angle_rad[i]) % 360.0),
                     "table_z_mm": float(positions.table_z_mm[i]),
                     "focal_spot_xyz_mm": [float(v) for v in positions.position_xyz_mm[i]],
                     "start_index": int(positions.start_index[i]),
                     "mas": None if positions.mas is None else float(positions.mas[i])})
        if progress is not None:
            progress(k + 1, len(idx))
    ppmas = (calibration.implied_photons_per_mas if calibration is not None and calibration.implied_photons_per_mas
             else positions.photons_per_mas(0))
    calibrated = bool(calibration is not None and calibration.implied_photons_per_mas)
    return SinglePositionMaps(idx, sp_mc, sp_u, u_mc, u_u, int(n_photons), float(ppmas),
                              None if positions.mas is None else [float(positions.mas[i]) for i in idx],
                              [float(positions.weight[i]) for i in idx], info, calibrated)


def write_single_position_maps(maps: SinglePositionMaps, out_dir) -> list:
    """Write SP maps as NIfTI (``sp_mc_XXXXX.nii.gz``, ``sp_uniform_XXXXX.nii.gz``) and ``sp_index.json``.

    Maps are in Gy per source photon of the position; the JSON gives the photons per mAs
    that turn them into Gy per mAs, and each position's geometry and mAs.
    """
    import json
    from pathlib import Path

    from persodose.io.image import write_image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for k, i in enumerate(maps.indices):
        p = out / f"sp_mc_{i:05d}.nii.gz"
        write_image(maps.sp_mc[k], p)
        files.append(p.name)
        if maps.sp_uniform is not None:
            q = out / f"sp_uniform_{i:05d}.nii.gz"
            write_image(maps.sp_uniform[k], q)
            files.append(q.name)
    doc = {"unit": "Gy per source photon of the position (before the bowtie)",
           "source_photons_per_mas": maps.source_photons_per_mas,
           "source_photons_per_mas_from": "CTDIvol calibration" if maps.calibrated else "SpekPy tube output (uncalibrated)",
           "photons_simulated_per_position": maps.photons_per_position,
           "positions": maps.positions_info, "files": files,
           "whole_scan": "WBDM (Gy) = sum_i SP_MC_i x source_photons_per_mas x mAs_i"}
    (out / "sp_index.json").write_text(json.dumps(doc, indent=2))
    return files


# --------------------------------------------------------------------------- marrow
def red_marrow_material():
    """Adult red (active) bone marrow, ICRU Report 46 (1992) composition, 1.03 g/cm3:
    H 10.5, C 41.4, N 3.4, O 43.9, P 0.1, S 0.2, Cl 0.2, K 0.2, Fe 0.1 (% by mass)."""
    from persodose.physics.materials import Material

    return Material(index=-1, name="red_marrow_icru46", hu_min=-math.inf, hu_max=math.inf, density_g_cm3=1.03,
                    mass_fractions={"H": 0.105, "C": 0.414, "N": 0.034, "O": 0.439, "P": 0.001, "S": 0.002,
                                    "Cl": 0.002, "K": 0.002, "Fe": 0.001},
                    source="ICRU Report 46 (1992), adult red marrow")


def marrow_dose_factor(dose: np.ndarray, mass_kg: np.ndarray, material_index: np.ndarray, materials,
                       energy_mev: np.ndarray, energy_fluence: np.ndarray) -> float:
    """Dose to red marrow / dose to the voxel medium, for the voxels of a marrow label.

    Collision-kerma (cavity) approximation: in each voxel the marrow dose is the medium dose
    times ``(mu_en/rho)_marrow / (mu_en/rho)_medium``, both averaged over the beam's energy
    fluence; the label's factor weights voxels by the energy they absorb. It neglects the
    extra marrow dose from photoelectrons leaving the bone trabeculae at low energies (which
    the ICRP 116 fluence-to-dose response functions include), so it errs low by a few
    percent to tens of percent at CT energies (ICRP Publication 116, 2010, section 3.4).

    Args:
        dose, mass_kg, material_index: voxel values of the label (same shape).
        materials: the phantom's material list.
        energy_mev, energy_fluence: the beam's spectrum (bin energies and energy fluence).
    """
    from persodose.physics.photon_data import photon_tables

    e = np.asarray(energy_mev, dtype=np.float64)
    w = np.asarray(energy_fluence, dtype=np.float64)
    keep = (e >= 0.001) & (w > 0)
    e, w = e[keep], w[keep] / w[keep].sum()

    def mean_mu_en(material) -> float:
        return float(np.dot(w, photon_tables(material).mu_over_rho(e, "mu_en")))

    marrow = mean_mu_en(red_marrow_material())
    ratio = np.array([marrow / mean_mu_en(m) for m in materials])
    energy = np.asarray(dose, dtype=np.float64) * np.asarray(mass_kg, dtype=np.float64)
    if energy.sum() <= 0:
        return float("nan")
    return float(np.sum(energy * ratio[np.asarray(material_index, dtype=np.int64)]) / energy.sum())
