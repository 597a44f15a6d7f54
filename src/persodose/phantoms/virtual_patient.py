"""The built-in virtual adult patient: anatomy, CT, true kinetics and emission images.

``make_virtual_patient`` builds everything in memory (about 5-10 s at 4 mm on 2 cores);
``write_virtual_patient`` writes DICOM (when :mod:`persodose.io.dicom_write` exists),
NIfTI and a JSON manifest atomically.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from persodose.errors import InputError
from persodose.grid import Grid, Kind
from persodose.phantoms import anatomy as _anat
from persodose.phantoms import imaging as _img
from persodose.phantoms.kinetics import (TRACERS, KineticParams, TACModel, frame_schedule, organ_tacs,
                                         physical_half_life_s)

#: Reference patient (ICRP Publication 89 reference adult male).
REFERENCE_PATIENT = {"sex": "M", "age_y": 45, "weight_kg": 73.0, "height_m": 1.76}
#: Injection time of every virtual patient (fixed for reproducibility).
INJECTION_DATETIME = _dt.datetime(2024, 1, 15, 9, 0, 0)
#: Injected activities: 7.4 GBq per cycle of 177Lu-DOTATATE (NETTER-1 regimen); FDG
#: 3.5 MBq/kg (EANM procedure guideline for FDG PET/CT v2.0, 2015, order of magnitude).
LU177_INJECTED_BQ = 7.4e9
FDG_BQ_PER_KG = 3.5e6


@dataclass(frozen=True)
class PatientVariation:
    """What makes a population patient differ from the canonical one (see
    :mod:`persodose.phantoms.population`, which draws it).

    Attributes:
        anatomy: :class:`persodose.phantoms.anatomy.AnatomyParams`.
        kinetics: :class:`persodose.phantoms.kinetics.KineticParams`.
        patient: DICOM patient attributes ``sex``, ``age_y``, ``weight_kg``, ``height_m``
            (FDG activity follows ``weight_kg``).
        lung_hu_offset: shift of the mean lung CT number from -760 HU, HU.
    """

    anatomy: _anat.AnatomyParams
    kinetics: KineticParams
    patient: dict
    lung_hu_offset: float = 0.0


@dataclass
class EmissionFrame:
    """One measured emission image and its truth.

    Attributes:
        modality: ``"NM"`` (SPECT) or ``"PT"``.
        start_datetime: acquisition start.
        duration_s: frame duration, s.
        mid_time_s: frame mid time, s after injection.
        image: SPECT: ``Kind.COUNTS`` (counts per voxel, reconstruction-like, on the coarser
            SPECT grid); PET: ``Kind.ACTIVITY_CONCENTRATION`` Bq/mL decay-corrected to the
            frame start (on the CT grid).
        truth: true activity concentration, Bq/mL, at mid-frame, not decay corrected, on the
            CT grid.
        calibration_cps_per_mbq: SPECT sensitivity used to make the counts (None for PET).
        start_s: frame start, s after injection.
    """

    modality: str
    start_datetime: _dt.datetime
    duration_s: float
    mid_time_s: float
    image: Grid
    truth: Grid
    calibration_cps_per_mbq: float | None
    start_s: float = 0.0


@dataclass
class VirtualPatient:
    """Everything about one virtual patient (see module docstring)."""

    tracer: str
    nuclide: str
    seed: int
    voxel_mm: float
    labels: Grid
    label_names: dict[int, str]
    ct: Grid
    injected_activity_bq: float
    injection_datetime: _dt.datetime
    frames: list[EmissionFrame]
    organ_tac: dict[str, TACModel]
    truth_activity: list[Grid]
    truth_tia: Grid
    organ_masses_g: dict[str, float]
    patient: dict
    ct_tags: dict
    half_life_s: float = 0.0
    lesion_centres_mm: dict = field(default_factory=dict)

    @property
    def density(self) -> Grid:
        """Mass density from the CT via :func:`persodose.physics.materials.hu_to_density`."""
        from persodose.physics.materials import hu_to_density

        return self.ct.with_array(hu_to_density(self.ct.array), Kind.DENSITY)


def _activity_weights(labels: np.ndarray, field_: np.ndarray, amplitude: float = 0.08) -> np.ndarray:
    """Per-voxel share of its label's activity: a mild smooth non-uniformity (+-8 % sd),
    normalised so that the weights of each label sum to exactly one."""
    g = np.clip(1.0 + amplitude * field_, 0.5, 1.5).astype(np.float64)
    sums = np.bincount(labels.ravel(), weights=g.ravel(), minlength=int(labels.max()) + 1)
    sums[sums == 0] = 1.0
    return (g / sums[labels]).astype(np.float32)


def make_virtual_patient(tracer: str = "lu177-dotatate", voxel_mm: float = 4.0, seed: int = 0,
                         variation: PatientVariation | None = None) -> VirtualPatient:
    """Build the virtual patient.

    Args:
        tracer: ``"lu177-dotatate"`` (4 SPECT time points) or ``"fdg"`` (13-frame dynamic PET).
        voxel_mm: isotropic CT voxel size, mm (4 mm gives 264 x 128 x 128).
        seed: ``numpy.random.Generator`` seed; 0 is the canonical patient (no anatomical
            perturbation), other seeds scale organ volumes by +-5 % and move the lesions.
            With ``variation`` the seed only drives the image noise and texture.
        variation: a population patient's :class:`PatientVariation` (``None``: the
            built-in patient of ``seed``).

    Returns:
        :class:`VirtualPatient`.

    Raises:
        InputError: unknown tracer or a non-positive voxel size.
    """
    _check_request(tracer, voxel_mm)
    v = float(voxel_mm)
    # One generator for every random step, drawn in this order: anatomy (seed != 0), CT
    # noise, activity non-uniformity, then the counts of each frame.
    rng = np.random.default_rng(seed)
    nuclide = TRACERS[tracer]
    t_half = physical_half_life_s(nuclide)

    if variation is None:
        an = _anat.build_anatomy(v, None if seed == 0 else rng)
        labels_grid, ct, ct_tags = _labels_and_ct(an, v, rng)
        names = dict(_anat.LABELS)
        patient = dict(REFERENCE_PATIENT)
    else:
        an = _anat.build_anatomy(v, None, variation.anatomy)
        labels_grid, ct, ct_tags = _labels_and_ct(an, v, rng, variation.lung_hu_offset, _lesion_hu(an.extra_labels))
        names = _population_names(an, variation.anatomy)
        patient = dict(variation.patient)
    lab = an.labels
    volumes = _anat.label_volumes_ml(lab, v, names)
    masses = {n: round(m, 2) for n, m in _anat.organ_masses_g(lab, v, names).items()}
    ia = LU177_INJECTED_BQ if tracer == "lu177-dotatate" else FDG_BQ_PER_KG * patient["weight_kg"]
    tacs = organ_tacs(tracer, ia, volumes, t_half, None if variation is None else variation.kinetics)

    per_voxel = _OrganToVoxels(lab, _activity_weights(lab, _img.smooth_field(lab.shape, v, 25.0, rng)),
                               None if variation is None else names)
    truth_tia = labels_grid.with_array(per_voxel({n: m.tia_bq_s() for n, m in tacs.items()}), Kind.TIA)

    modality = "NM" if nuclide == "Lu-177" else "PT"
    em_grid = _emission_grid(modality, labels_grid)
    frames: list[EmissionFrame] = []
    truth_activity: list[Grid] = []
    for ft in frame_schedule(tracer):
        frame, act_mid = _emission_frame(ft, modality, tacs, per_voxel, labels_grid, em_grid, t_half, rng)
        truth_activity.append(labels_grid.with_array(act_mid, Kind.ACTIVITY))
        frames.append(frame)

    return VirtualPatient(
        tracer=tracer, nuclide=nuclide, seed=int(seed), voxel_mm=v, labels=labels_grid,
        label_names=names, ct=ct, injected_activity_bq=float(ia),
        injection_datetime=INJECTION_DATETIME, frames=frames, organ_tac=tacs,
        truth_activity=truth_activity, truth_tia=truth_tia, organ_masses_g=masses, patient=patient,
        ct_tags=ct_tags, half_life_s=t_half, lesion_centres_mm=an.lesion_centres_mm)


def _check_request(tracer: str, voxel_mm) -> None:
    if tracer not in TRACERS:
        raise InputError(f"unknown tracer {tracer!r}: use one of {', '.join(TRACERS)}")
    if not (isinstance(voxel_mm, (int, float)) and 0.5 <= float(voxel_mm) <= 20.0):
        raise InputError(f"voxel_mm must be between 0.5 and 20 mm, got {voxel_mm!r}")


def _population_names(an: _anat.Anatomy, params: _anat.AnatomyParams) -> dict[int, str]:
    """Label names of a population patient: the fixed labels, without the canonical lesion
    labels when the patient has its own lesion list, and the sex, arm and per-lesion labels
    present in the map."""
    present = set(np.unique(an.labels).tolist())
    fixed = dict(_anat.LABELS)
    if params.lesions is not None:
        for k in _anat.LESION_LABELS:
            fixed.pop(k)
    extra = {**_anat.SEX_LABELS, **_anat.ARM_LABELS, **_anat.ORGAN_LABELS, **an.extra_labels}
    return {**fixed, **{k: n for k, n in sorted(extra.items()) if k in present}}


def _lesion_hu(extra_labels: dict[int, str]) -> dict[int, float]:
    """Mean CT number of each per-lesion label (:data:`persodose.phantoms.imaging.LESION_HU`)."""
    return {k: _img.LESION_HU[_anat.lesion_kind(n)] for k, n in extra_labels.items()}


def _labels_and_ct(an: _anat.Anatomy, v: float, rng: np.random.Generator,
                   lung_hu_offset: float = 0.0, label_hu: dict | None = None) -> tuple[Grid, Grid, dict]:
    """Label grid in LPS (vertex at z = 0), the CT in HU on it and the CT's DICOM tag values."""
    if an.origin_xyz_mm is None:
        origin = (float(an.x_mm[0]), float(an.y_mm[0]), float(an.h_mm[0] - _anat.VERTEX_H_MM))
    else:
        origin = tuple(float(q) for q in an.origin_xyz_mm)
    labels_grid = Grid(an.labels, (v, v, v), origin, np.eye(3), Kind.LABELS)
    hu = _img.make_ct(an.labels, an.h_mm, v, an.aux, rng, lung_hu_offset, label_hu)
    return labels_grid, labels_grid.with_array(hu, Kind.CT), _img.make_ct_tags(hu, v)


class _OrganToVoxels:
    """Spread per-organ values over the organ's voxels with fixed per-voxel weights.

    Calling it with ``{organ name: value}`` gives a float32 ``(nz, ny, nx)`` array whose
    sum over each organ's voxels is the organ's value (organs not given are zero).
    """

    def __init__(self, lab: np.ndarray, weights: np.ndarray, names: dict[int, str] | None = None):
        self.lab = lab
        self.weights = weights
        self.nlut = int(lab.max()) + 1
        self.name_to_label = {n: k for k, n in (_anat.ALL_LABELS if names is None else names).items()}

    def __call__(self, values: dict[str, float]) -> np.ndarray:
        lut = np.zeros(self.nlut, dtype=np.float64)
        for n, val in values.items():
            lut[self.name_to_label[n]] = val
        return (lut[self.lab] * self.weights).astype(np.float32)


def _emission_grid(modality: str, labels_grid: Grid) -> Grid:
    """Empty emission grid: SPECT on a coarser 1.2x voxel with a larger transaxial field
    (128 x 128 at 4.8 mm, a 614 mm field, for 4 mm CT voxels); PET on the CT grid."""
    lab_shape = labels_grid.shape
    if modality != "NM":
        return labels_grid.with_array(np.zeros(lab_shape, np.float32), Kind.ACTIVITY_CONCENTRATION)
    v = labels_grid.spacing_zyx_mm[0]
    origin = labels_grid.origin_xyz_mm
    vs = 1.2 * v
    nxy = int(round(1.2 * max(lab_shape[1], lab_shape[2]) * v / vs))
    nzs = int(math.floor(lab_shape[0] * v / vs))
    centre = np.array(origin) + (np.array(lab_shape[::-1]) - 1) * v / 2.0
    s_origin = tuple(centre - (np.array([nxy, nxy, nzs]) - 1) * vs / 2.0)
    return Grid(np.zeros((nzs, nxy, nxy), np.float32), (vs, vs, vs), s_origin, np.eye(3), Kind.COUNTS)


def _emission_frame(ft, modality: str, tacs: dict[str, TACModel], per_voxel: _OrganToVoxels,
                    labels_grid: Grid, em_grid: Grid, t_half: float,
                    rng: np.random.Generator) -> tuple[EmissionFrame, np.ndarray]:
    """One measured frame and its truth; also the true activity per voxel (Bq) at mid-frame."""
    v = labels_grid.spacing_zyx_mm[0]
    voxel_ml = v ** 3 / 1000.0
    act_mid = per_voxel({n: float(m.activity_bq(ft.mid_s)) for n, m in tacs.items()})
    truth = labels_grid.with_array(act_mid / voxel_ml, Kind.ACTIVITY_CONCENTRATION)
    integ = per_voxel({n: m.integral_bq_s(ft.start_s, ft.start_s + ft.duration_s) for n, m in tacs.items()})
    start_dt = INJECTION_DATETIME + _dt.timedelta(seconds=ft.start_s)
    if modality == "NM":
        image = _spect_counts(integ, labels_grid, em_grid, rng)
        cal = _img.SPECT_SENSITIVITY_CPS_PER_MBQ
    else:
        sens = _img.PET_SENSITIVITY_CPS_PER_MBQ * 1e-6
        expected = np.maximum(_img.blur(integ * sens, _img.PET_FWHM_MM, v), 0.0)
        nec = _img.PET_NEC_FRACTION
        counts = rng.poisson(expected * nec).astype(np.float32) / nec
        conc = _img.pet_image_from_counts(counts, sens, ft.duration_s, ft.start_s, t_half, voxel_ml)
        image = em_grid.with_array(conc, Kind.ACTIVITY_CONCENTRATION)
        cal = None
    frame = EmissionFrame(modality, start_dt, ft.duration_s, ft.mid_s, image, truth, cal, ft.start_s)
    return frame, act_mid


def _spect_counts(integ: np.ndarray, labels_grid: Grid, em_grid: Grid, rng: np.random.Generator) -> Grid:
    """SPECT counts on ``em_grid`` from the decays per CT voxel during the frame (``integ``)."""
    v = labels_grid.spacing_zyx_mm[0]
    vs = em_grid.spacing_zyx_mm[0]
    voxel_ml = v ** 3 / 1000.0
    sens = _img.SPECT_SENSITIVITY_CPS_PER_MBQ * 1e-6
    expected = _img.blur(integ * sens, _img.SPECT_FWHM_MM, v) / voxel_ml  # counts per mL
    expected = _img.sample_on(expected, labels_grid.origin_xyz_mm[::-1], labels_grid.spacing_zyx_mm,
                              em_grid.shape, em_grid.origin_xyz_mm[::-1], em_grid.spacing_zyx_mm) * (vs ** 3 / 1000.0)
    counts = rng.poisson(np.maximum(expected, 0.0)).astype(np.float32)
    counts = _img.blur(counts, _img.SPECT_POSTFILTER_FWHM_MM, vs)
    np.maximum(counts, 0.0, out=counts)
    return em_grid.with_array(counts, Kind.COUNTS)


# ----------------------------------------------------------------------------- writing
def _write_image(grid: Grid, path: Path) -> None:
    try:
        from persodose.io.image import write_image
    except ImportError:  # pragma: no cover - the module exists in the package
        import SimpleITK as sitk

        sitk.WriteImage(grid.to_sitk(), str(path), True)
        return
    write_image(grid, path)


def _organ_sums(grid: Grid, labels: np.ndarray, names: dict[int, str]) -> dict[str, float]:
    s = np.bincount(labels.ravel(), weights=grid.array.ravel().astype(np.float64),
                    minlength=max(names) + 1)
    return {n: float(s[k]) for k, n in names.items()}


def write_virtual_patient(vp: VirtualPatient, out_dir) -> Path:
    """Write the patient: DICOM, NIfTI and ``manifest.json``, atomically.

    Layout: ``ct/`` (CT series), ``spect/tp1..tpN/`` (one multi-frame NM file each) or
    ``pet/frameNN/`` (PET series), all sharing one StudyInstanceUID and one
    FrameOfReferenceUID; ``nifti/`` (ct, labels, truth_tia, and per frame the image and the
    truth); ``manifest.json``. DICOM is skipped (and the manifest says so) when
    :mod:`persodose.io.dicom_write` is not importable.

    Returns:
        Path of ``manifest.json``.
    """
    from persodose.outputs import atomic_dir

    out_dir = Path(out_dir)
    try:
        from persodose.io import dicom_write as dw
    except ImportError:
        dw = None
    with atomic_dir(out_dir) as tmp:
        nif = tmp / "nifti"
        nif.mkdir()
        _write_base_nifti(vp, nif)
        dicom_info: dict = {"written": dw is not None}
        study = None
        if dw is not None:
            study = _write_ct_dicom(vp, tmp, dw)
            dicom_info.update(study_instance_uid=study.study_uid, frame_of_reference_uid=study.for_uid)
        else:
            dicom_info["reason"] = "persodose.io.dicom_write is not available"
        frames_doc = [_write_frame(vp, fr, i, tmp, study) for i, fr in enumerate(vp.frames, start=1)]
        manifest = _manifest(vp, frames_doc, dicom_info, dicom_written=dw is not None)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out_dir / "manifest.json"


@dataclass
class _DicomStudy:
    """What every DICOM series of one written patient shares."""

    dw: object  # the persodose.io.dicom_write module
    info: object  # its PatientInfo
    study_uid: str
    for_uid: str
    study_datetime: _dt.datetime | None = None  # Study Date/Time of every series: the CT's


def _write_base_nifti(vp: VirtualPatient, nif: Path) -> None:
    """CT, labels (with the label names beside them) and the true TIA as NIfTI."""
    _write_image(vp.ct, nif / "ct.nii.gz")
    _write_image(vp.labels, nif / "labels.nii.gz")
    # label names beside the map (FILE.json), where persodose's commands look for them
    (nif / "labels.nii.gz.json").write_text(json.dumps({str(k): v for k, v in sorted(vp.label_names.items())},
                                                       indent=1))
    _write_image(vp.truth_tia, nif / "truth_tia.nii.gz")


def _write_ct_dicom(vp: VirtualPatient, tmp: Path, dw) -> _DicomStudy:
    """New study and frame of reference; the CT series in ``ct/``, 2 min before the first frame."""
    p = vp.patient
    info = dw.PatientInfo(sex=p["sex"], age_y=p["age_y"], weight_kg=p["weight_kg"], height_m=p["height_m"])
    ct_time = vp.frames[0].start_datetime - _dt.timedelta(minutes=2)
    study = _DicomStudy(dw, info, dw.new_uid(), dw.new_uid(), ct_time)
    dw.write_ct_series(vp.ct, tmp / "ct", patient=info, study_uid=study.study_uid,
                       frame_of_reference_uid=study.for_uid, acquisition_datetime=ct_time,
                       study_datetime=study.study_datetime,
                       series_description="CT virtual patient",
                       ct_tags={k: v for k, v in vp.ct_tags.items() if k in _img.DICOM_CT_TAG_KEYS})
    return study


def _write_frame_dicom(vp: VirtualPatient, fr: EmissionFrame, tag: str, tmp: Path, study: _DicomStudy) -> Path:
    """One emission frame as DICOM; returns its folder."""
    dw = study.dw
    if fr.modality == "NM":
        dpath = tmp / "spect" / tag / f"{tag}.dcm"
        dpath.parent.mkdir(parents=True, exist_ok=True)
        dw.write_nm_tomo(fr.image, dpath, patient=study.info, study_uid=study.study_uid,
                         frame_of_reference_uid=study.for_uid, acquisition_datetime=fr.start_datetime,
                         frame_duration_s=fr.duration_s, radionuclide=vp.nuclide,
                         units="counts", series_description=f"SPECT {tag}",
                         study_datetime=study.study_datetime,
                         injected_activity_bq=vp.injected_activity_bq,
                         injection_datetime=vp.injection_datetime)
        return dpath.parent
    dpath = tmp / "pet" / tag
    dw.write_pet_series(fr.image, dpath, patient=study.info, study_uid=study.study_uid,
                        frame_of_reference_uid=study.for_uid, acquisition_datetime=fr.start_datetime,
                        frame_duration_s=fr.duration_s, radionuclide=vp.nuclide,
                        injected_activity_bq=vp.injected_activity_bq,
                        injection_datetime=vp.injection_datetime, decay_correction="START",
                        study_datetime=study.study_datetime,
                        series_description=f"PET {tag}")
    return dpath


def _write_frame(vp: VirtualPatient, fr: EmissionFrame, i: int, tmp: Path, study: _DicomStudy | None) -> dict:
    """Frame ``i`` (from 1) as NIfTI (image and truth) and DICOM; returns its manifest entry."""
    nif = tmp / "nifti"
    tag = f"tp{i}" if fr.modality == "NM" else f"frame{i:02d}"
    _write_image(fr.image, nif / f"{tag}_image.nii.gz")
    _write_image(fr.truth, nif / f"{tag}_truth.nii.gz")
    dpath = _write_frame_dicom(vp, fr, tag, tmp, study) if study is not None else None
    mid = fr.mid_time_s
    return {
        "modality": fr.modality,
        "dicom_path": str(dpath.relative_to(tmp)) if dpath is not None else None,
        "image_path": f"nifti/{tag}_image.nii.gz",
        "truth_path": f"nifti/{tag}_truth.nii.gz",
        "image_kind": fr.image.kind.value, "image_unit": fr.image.unit,
        "image_decay_correction": "START (frame start)" if fr.modality == "PT" else "NONE",
        "start_datetime": fr.start_datetime.isoformat(),
        "start_s": fr.start_s, "duration_s": fr.duration_s, "mid_time_s": mid,
        "calibration_cps_per_mbq": fr.calibration_cps_per_mbq,
        "organ_true_activity_bq": {n: float(m.activity_bq(mid)) for n, m in vp.organ_tac.items()},
    }


def _masses_density(vp: VirtualPatient) -> dict:
    extra = {n: d for n, d in _anat.SEX_ORGAN_DENSITY_G_CM3.items() if n in vp.organ_masses_g}
    extra.update({n: _anat.nominal_density_g_cm3(n) for n in vp.organ_masses_g
                  if n not in _anat.NOMINAL_DENSITY_G_CM3 and n not in extra})
    return {**_anat.NOMINAL_DENSITY_G_CM3, **extra} if extra else _anat.NOMINAL_DENSITY_G_CM3


def _manifest(vp: VirtualPatient, frames_doc: list[dict], dicom_info: dict, dicom_written: bool) -> dict:
    """The ``manifest.json`` document."""
    return {
        "format": "persodose virtual patient v1",
        "tracer": vp.tracer, "nuclide": vp.nuclide, "half_life_s": vp.half_life_s,
        "seed": vp.seed, "voxel_mm": vp.voxel_mm,
        "ct_shape_zyx": list(vp.ct.shape), "ct_origin_xyz_mm": list(vp.ct.origin_xyz_mm),
        "injected_activity_bq": vp.injected_activity_bq,
        "injection_datetime": vp.injection_datetime.isoformat(),
        "patient": vp.patient,
        "label_names": {str(k): n for k, n in vp.label_names.items()},
        "organ_masses_g": vp.organ_masses_g,
        "organ_masses_density_g_cm3": _masses_density(vp),
        "organ_tia_bq_s": {n: m.tia_bq_s() for n, m in vp.organ_tac.items()},
        "tac_models": {n: m.to_dict() for n, m in vp.organ_tac.items()},
        "lesion_centres_mm_x_y_height": vp.lesion_centres_mm,
        "frames": frames_doc,
        "ct_tags": vp.ct_tags,
        "dicom": dicom_info,
        "paths": {"ct": "ct" if dicom_written else None, "ct_nifti": "nifti/ct.nii.gz",
                  "labels": "nifti/labels.nii.gz", "truth_tia": "nifti/truth_tia.nii.gz"},
    }
