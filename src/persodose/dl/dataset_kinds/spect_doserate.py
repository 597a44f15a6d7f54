"""``spect-doserate``: 177Lu SPECT and density slabs with the Monte Carlo dose rate of the true activity.

The training data of DblurDoseNet (:mod:`persodose.dl.dblurdosenet`; Li et al., Med. Phys.
2022): the label is the dose rate of the patient's *true* activity, not of its SPECT, so that a
network learns to undo the camera's blur as well as to transport the radiation. For each
patient (a folder written by :func:`persodose.phantoms.write_virtual_patient`):

1. density (g/cm3) and materials from the CT (Schneider 2000,
   :func:`persodose.physics.materials.ct_to_density_and_materials`);
2. the SPECT field: ``fov_mm`` (the paper: 39 cm) along z centred on the liver and kidneys
   (the paper's field for Lu-177 DOTATATE); everything below works on the CT grid cut to that
   field plus ``margin_mm`` at each end (the activity outside it neither reaches the camera nor
   deposits measurably in the field's organs: the 208 keV photons of Lu-177 carry 0.036 MeV
   of its 0.18 MeV per decay);
3. at each chosen frame, the true activity (Bq per voxel) at mid-frame, imaged by the SPECT
   camera (:func:`persodose.phantoms.spect_camera.simulate_spect`: projections through the
   CT's attenuation with the collimator-detector response, Poisson noise at a total count drawn
   log-uniformly between ``counts_min`` and ``counts_max`` (the paper: 3 to 20 million), OSEM
   with attenuation and resolution modelling, at 4.8 mm) and brought back to the CT grid;
4. the DSV dose rate of that SPECT (the ``dsv`` dose method: the Lu-177 soft-tissue kernel of
   the grid's voxel, density scaled, zero below 0.1 g/cm3) and the Monte Carlo dose rate of the
   true activity (the ``mc`` dose method with ``decays`` decays; the decays per frame and the
   resulting uncertainty of organ means are in each example's ``meta``);
5. all three normalised by the SPECT's total in the field, in MBq (the paper's unit-sum
   normalisation: dose rates per MBq in the field of view), and ``slabs_per_frame`` slabs of
   ``slab_slices`` slices and ``crop_voxels`` x ``crop_voxels`` in-plane, at random places of
   the field (inside the body), drawn with the example seed.

Inputs: (normalised SPECT, density g/cm3, normalised DSV dose rate); target: the normalised MC
dose rate, Gy/s per MBq. Each example's ``meta`` carries the labels (for organ metrics), the
frame, the normalisation (MBq) and where the slab lies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from persodose.dl.datasets import PatientData, register_kind
from persodose.errors import InputError
from persodose.grid import Grid, Kind

__all__ = ["SpectDoseRateSettings", "make_spect_doserate_examples", "field_of_view", "crop_z", "patient_frames",
           "mc_dose_rate", "dsv_dose_rate"]

#: Organs the SPECT field is centred on (the paper: liver and kidneys centred).
FOV_ORGANS = ("liver", "kidney_left", "kidney_right")


@dataclass(frozen=True)
class SpectDoseRateSettings:
    """Settings of the ``spect-doserate`` kind.

    Attributes:
        frames: 1-based frames (time points) used; empty: all.
        slab_slices: slices of a slab (the network's loss leaves 5 out at each end).
        crop_voxels: in-plane edge of a slab, voxels (a multiple of 16 for the U-Net).
        slabs_per_frame: slabs drawn per frame.
        fov_mm: axial SPECT field, mm (the paper: 390).
        margin_mm: CT kept beyond each end of the field for the transport, mm.
        counts_min: least total SPECT counts of a frame (the paper: 3e6).
        counts_max: most total SPECT counts of a frame (the paper: 2e7).
        camera: ``"camera"`` (projections and OSEM) or ``"blur"`` (the fast blur-and-noise model).
        views: projection angles over 360 degrees (0: the camera's default,
            :class:`persodose.phantoms.spect_camera.SPECTCamera`).
        iterations: OSEM iterations (0: the camera's default).
        subsets: OSEM subsets (0: the camera's default).
        decays: Monte Carlo decays per frame for the label.
        mc_batches: Monte Carlo batches (the label's uncertainty is their spread).
        with_labels: store the truth label slab with each example.
    """

    frames: tuple[int, ...] = ()
    slab_slices: int = 32
    crop_voxels: int = 64
    slabs_per_frame: int = 3
    fov_mm: float = 390.0
    margin_mm: float = 100.0
    counts_min: float = 3e6
    counts_max: float = 2e7
    camera: str = "camera"
    views: int = 0
    iterations: int = 0
    subsets: int = 0
    decays: int = 4_000_000
    mc_batches: int = 8
    with_labels: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "frames", tuple(int(f) for f in self.frames))
        if any(f < 1 for f in self.frames):
            raise InputError(f"spect-doserate.frames are 1-based frame numbers, got {self.frames}")
        if not 11 < self.slab_slices <= 512 or not 16 <= self.crop_voxels <= 1024 or self.crop_voxels % 16:
            raise InputError("spect-doserate: slab_slices must be 12..512 and crop_voxels a multiple of 16 "
                             f"from 16 to 1024, got {self.slab_slices}, {self.crop_voxels}")
        if not 1 <= self.slabs_per_frame <= 1000:
            raise InputError(f"spect-doserate.slabs_per_frame must be 1..1000, got {self.slabs_per_frame}")
        if not (self.fov_mm > 0 and self.margin_mm >= 0 and math.isfinite(self.fov_mm + self.margin_mm)):
            raise InputError(f"spect-doserate: fov_mm must be > 0 and margin_mm >= 0, got {self.fov_mm}, "
                             f"{self.margin_mm}")
        if not 1e3 <= self.counts_min <= self.counts_max <= 1e10:
            raise InputError(f"spect-doserate: counts must satisfy 1e3 <= counts_min <= counts_max <= 1e10, "
                             f"got {self.counts_min}, {self.counts_max}")
        if self.camera not in ("camera", "blur"):
            raise InputError(f"spect-doserate.camera must be 'camera' or 'blur', got {self.camera!r}")
        if min(self.views, self.iterations, self.subsets) < 0:
            raise InputError("spect-doserate: views, iterations and subsets must be >= 0 (0: the camera's default)")
        if not (self.mc_batches >= 2 and self.decays >= self.mc_batches):
            raise InputError(f"spect-doserate: mc_batches must be >= 2 and decays >= mc_batches, got "
                             f"{self.mc_batches}, {self.decays}")
        self.spect_camera()  # the camera settings are checked now, not at the first patient

    def spect_camera(self):
        """The :class:`~persodose.phantoms.spect_camera.SPECTCamera` of these settings."""
        from persodose.phantoms.spect_camera import SPECTCamera

        given = {k: v for k, v in (("n_views", self.views), ("iterations", self.iterations),
                                   ("subsets", self.subsets)) if v}
        return SPECTCamera(model=self.camera, **given)


def field_of_view(labels: np.ndarray, names: dict[int, str], spacing_z_mm: float, fov_mm: float,
                  organs=FOV_ORGANS) -> tuple[int, int]:
    """Slices ``[z0, z1)`` of an axial field of ``fov_mm`` centred on ``organs`` (their voxels' mean z).

    Raises:
        InputError: none of the organs is in the label map.
    """
    ids = [k for k, n in names.items() if n in organs]
    zs = np.nonzero(np.isin(labels, ids).any(axis=(1, 2)))[0] if ids else np.array([])
    if zs.size == 0:
        raise InputError(f"the label map holds none of {', '.join(organs)}: cannot centre the SPECT field")
    counts = np.isin(labels, ids).sum(axis=(1, 2))
    centre = float(np.sum(np.arange(labels.shape[0]) * counts) / np.sum(counts))
    n = min(int(round(fov_mm / spacing_z_mm)), labels.shape[0])
    z0 = int(np.clip(round(centre - n / 2), 0, labels.shape[0] - n))
    return z0, z0 + n


def crop_z(grid: Grid, z0: int, z1: int) -> Grid:
    """The slices ``[z0, z1)`` of ``grid`` as a grid of their own (origin moved along the z axis)."""
    origin = grid.index_to_physical(np.array([z0, 0, 0], float))
    return Grid(np.ascontiguousarray(grid.array[z0:z1]), grid.spacing_zyx_mm, tuple(origin), grid.direction_xyz,
                grid.kind, grid.unit)


def patient_frames(patient: PatientData) -> list[dict]:
    """The manifest's frames (each with ``mid_time_s``), in order."""
    frames = patient.manifest.get("frames") or []
    if not frames:
        raise InputError(f"patient {patient.id}: manifest.json lists no emission frame")
    return frames


def dsv_dose_rate(activity_bq: Grid, density: Grid, nuclide: str) -> Grid:
    """Dose rate (Gy/s) of an activity map (Bq per voxel) by the ``dsv`` method (cached MC kernel)."""
    from persodose.dose.kernels import KernelSet
    from persodose.dose.registry import DoseInputs, get_spec
    from persodose.mc.kernels import cached_kernel

    spec = get_spec("dsv")
    ms = spec.make_settings(None)
    voxel = float(density.spacing_zyx_mm[0])
    kernels = KernelSet.of([cached_kernel(nuclide, voxel, m) for m in spec.media(ms)])
    a = activity_bq.with_array(np.asarray(activity_bq.array, np.float32), Kind.TIA)
    return spec.run(DoseInputs(tia=a, nuclide=nuclide, density=density, kernels=kernels), ms).dose


def mc_dose_rate(activity_bq: Grid, density: Grid, materials: Grid, material_list, nuclide: str, decays: int,
                 batches: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Monte Carlo dose rate (Gy/s) of an activity map (Bq per voxel) and its relative uncertainty."""
    from persodose.dose.monte_carlo import MCMethodSettings
    from persodose.dose.registry import DoseInputs, get_spec

    a = activity_bq.with_array(np.asarray(activity_bq.array, np.float32), Kind.TIA)
    out = get_spec("mc").run(DoseInputs(tia=a, nuclide=nuclide, density=density, materials=materials,
                                        material_list=tuple(material_list), seed=int(seed)),
                             MCMethodSettings(decays=int(decays), batches=int(batches)))
    unc = np.asarray(out.uncertainty.array, np.float32) if out.uncertainty is not None else None
    return np.asarray(out.dose.array, np.float32), unc


def _slab_corners(body: np.ndarray, s: SpectDoseRateSettings, k: int, rng: np.random.Generator, fov: tuple[int, int]):
    """``k`` slab corners (z, y, x) inside the field, their in-plane centres on body voxels."""
    nz, ny, nx = body.shape
    d, c = s.slab_slices, s.crop_voxels
    if d > fov[1] - fov[0] or c > min(ny, nx):
        raise InputError(f"a slab of {d} x {c} x {c} voxels does not fit the field ({fov[1] - fov[0]} slices) "
                         f"and the {ny} x {nx} grid")
    out = []
    for _ in range(k):
        z = int(rng.integers(fov[0], fov[1] - d + 1))
        yx = np.argwhere(body[z + d // 2])
        cy, cx = yx[rng.integers(len(yx))] if len(yx) else (ny // 2, nx // 2)
        out.append((z, int(np.clip(cy - c // 2, 0, ny - c)), int(np.clip(cx - c // 2, 0, nx - c))))
    return out


@register_kind("spect-doserate", settings=SpectDoseRateSettings, needs=("ct_nifti", "labels", "truth_frames"),
               input_channels=("spect_per_mbq", "density_g_cm3", "dsv_gy_s_per_mbq"),
               target_channels=("mc_gy_s_per_mbq",),
               summary="177Lu SPECT + density -> MC dose rate of the true activity (DblurDoseNet)")
def make_spect_doserate_examples(patient: PatientData, settings: SpectDoseRateSettings, seed: int) -> list:
    """SPECT, density and DSV slabs (inputs) and the MC dose rate of the truth (target); see the module doc."""
    from persodose.phantoms.spect_camera import simulate_spect, spect_to_ct_grid
    from persodose.physics.materials import ct_to_density_and_materials

    who = f"patient {patient.id}"
    nuclide = patient.manifest.get("nuclide")
    if nuclide != "Lu-177":
        raise InputError(f"{who}: spect-doserate is for Lu-177 SPECT patients, this one is {nuclide!r}")
    ct, labels = patient["ct_nifti"], patient["labels"]
    labels.require_same_geometry(ct, f"{who}: labels and CT")
    names = {int(k): str(v) for k, v in (patient.manifest.get("label_names") or {}).items()}
    lab_full = np.asarray(labels.array)
    sz = float(ct.spacing_zyx_mm[0])
    f0, f1 = field_of_view(lab_full, names, sz, settings.fov_mm)
    m = int(round(settings.margin_mm / sz))
    z0, z1 = max(f0 - m, 0), min(f1 + m, ct.shape[0])
    ct_c = crop_z(ct, z0, z1)
    density, materials, mats = ct_to_density_and_materials(ct_c)
    lab = lab_full[z0:z1]
    fov = (f0 - z0, f1 - z0)
    rho = np.asarray(density.array, np.float32)
    frames = patient_frames(patient)
    chosen = settings.frames or tuple(range(1, len(frames) + 1))
    if max(chosen) > len(frames):
        raise InputError(f"{who}: frame {max(chosen)} asked for, the patient has {len(frames)}")
    rng = np.random.default_rng(seed)
    camera = settings.spect_camera()
    fov_mm_range = tuple(float(ct_c.index_to_physical(np.array([z, 0, 0], float))[2]) for z in (fov[0], fov[1] - 1))
    out = []
    for fi in chosen:
        truth = crop_z(patient["truth_frames"][fi - 1], z0, z1).to_activity()
        truth = truth.with_array(np.asarray(truth.array, np.float32), Kind.ACTIVITY)
        counts = float(math.exp(rng.uniform(math.log(settings.counts_min), math.log(settings.counts_max))))
        spect = spect_to_ct_grid(simulate_spect(truth, density, camera, total_counts=counts, rng=rng,
                                                axial_range_mm=(min(fov_mm_range), max(fov_mm_range))), ct_c)
        s_arr = np.asarray(spect.array, np.float32)
        s_arr[: fov[0]] = 0.0
        s_arr[fov[1]:] = 0.0
        spect = spect.with_array(s_arr, Kind.ACTIVITY)
        total_mbq = float(np.sum(s_arr, dtype=np.float64)) / 1e6
        if not total_mbq > 0:
            raise InputError(f"{who}: frame {fi}: the SPECT holds no counts in its field")
        dsv = np.asarray(dsv_dose_rate(spect, density, nuclide).array, np.float32)
        mc, unc = mc_dose_rate(truth, density, materials, mats, nuclide, settings.decays, settings.mc_batches,
                               int(rng.integers(2**31)))
        x_full = np.stack([s_arr / total_mbq, rho, dsv / total_mbq])
        y_full = (np.where(rho >= 0.1, mc, 0.0) / total_mbq)[None].astype(np.float32)
        d, c = settings.slab_slices, settings.crop_voxels
        for z, y, x in _slab_corners(rho >= 0.5, settings, settings.slabs_per_frame, rng, fov):
            sl = (slice(z, z + d), slice(y, y + c), slice(x, x + c))
            meta = {"frame": int(fi), "mid_time_s": float(frames[fi - 1].get("mid_time_s", math.nan)),
                    "corner_zyx": [int(z + z0), int(y), int(x)], "spacing_zyx_mm": list(ct.spacing_zyx_mm),
                    "nuclide": nuclide, "spect_total_mbq": total_mbq, "spect_counts": counts,
                    "camera": camera.to_dict(), "decays": int(settings.decays),
                    "mc_median_rel_unc_above_10pct": _median_unc(mc, unc)}
            if settings.with_labels:
                meta["labels"] = lab[sl].astype(np.uint16)
                meta["label_names"] = names
            out.append((x_full[(slice(None),) + sl].astype(np.float32), y_full[(slice(None),) + sl], meta))
    return out


def _median_unc(dose: np.ndarray, unc: np.ndarray | None) -> float:
    if unc is None or not np.any(dose > 0):
        return math.nan
    sel = dose >= 0.1 * float(dose.max())
    return float(np.median(unc[sel]))
