"""Write grids as DICOM image series: CT and PET (one file per slice), NM tomograms (one
multi-frame file).

Used by the virtual-patient generator and for round trips through :mod:`persodose.io.dicom`.
The datasets follow the CT Image, PET Image and NM Image IODs of DICOM PS3.3 (A.3, A.21,
A.5) closely enough for pydicom, GDCM/SimpleITK and the persodose reader; they are not
claimed to pass a full IOD validator. Everything is written into a temporary sibling and
moved into place on success (:func:`persodose.outputs.atomic_dir` / ``atomic_file``).

Geometry (PS3.3 C.7.6.2): slice ``k`` has Image Position (Patient) = origin + k * dz *
(z direction), Image Orientation (Patient) = the grid's x and y directions, Pixel Spacing =
(row spacing = y, column spacing = x). A grid whose z direction is minus the cross product
of its x and y directions is written as it is; reading it back gives the same physical
image with the z axis reversed.
"""

from __future__ import annotations

import datetime
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from persodose.errors import InputError, NuclideError, UnitsError, require_finite
from persodose.grid import Grid, Kind
from persodose.io.rtdose import image_pixel_module
from persodose.outputs import atomic_dir, atomic_file

__all__ = ["PatientInfo", "new_uid", "write_ct_series", "write_pet_series", "write_nm_tomo",
           "nuclide_code"]


@dataclass
class PatientInfo:
    """Patient module values written into every file."""

    patient_id: str = "PD0001"
    patient_name: str = "Virtual^Patient"
    sex: str = "M"
    age_y: int = 45
    weight_kg: float = 73.0
    height_m: float = 1.76
    birth_date: str = "19800101"


def new_uid() -> str:
    """A new DICOM UID (pydicom's generator, under the pydicom root)."""
    from pydicom.uid import generate_uid

    return str(generate_uid())


# ---------------------------------------------------------------------------- helpers
def _ds_num(value: float):
    """A DS value formatted to fit the 16-character limit."""
    from pydicom.valuerep import DSfloat

    return DSfloat(float(value), auto_format=True)


def _ds_list(values: Sequence[float]) -> list:
    return [_ds_num(v) for v in values]


def _da(dt: datetime.datetime) -> str:
    return dt.strftime("%Y%m%d")


def _tm(dt: datetime.datetime) -> str:
    return dt.strftime("%H%M%S.%f")


def _dt(dt: datetime.datetime) -> str:
    return dt.strftime("%Y%m%d%H%M%S.%f")


def _check_datetime(value: Any, name: str) -> datetime.datetime:
    if not isinstance(value, datetime.datetime):
        raise InputError(f"{name} must be a datetime.datetime, got {value!r}")
    return value.replace(tzinfo=None)


def _half_life_s(radionuclide: str | None, half_life_s: float | None) -> float | None:
    """The given half-life, else persodose's nuclide data when that module exists."""
    if half_life_s is not None:
        if not (half_life_s > 0 and math.isfinite(half_life_s)):
            raise InputError(f"half_life_s must be positive, got {half_life_s}")
        return float(half_life_s)
    if not radionuclide:
        return None
    try:
        from persodose.physics.radionuclides import get_nuclide
    except ImportError:
        return None
    return float(get_nuclide(radionuclide).half_life_s)


def nuclide_code(radionuclide: str) -> tuple[str | None, str | None, str]:
    """(code value, coding scheme, code meaning) for a nuclide such as ``"F-18"``.

    Codes come from pydicom's copy of the DICOM code dictionary (SNOMED CT, scheme
    ``"SCT"``; DICOM PS3.16 CID 4020 "PET Radionuclide" and CID 18 "Isotopes in
    Radiopharmaceuticals"), e.g. F-18 -> 77004003 "^18^Fluorine", Ga-68 -> 35337001. When
    the dictionary has no code, only the meaning is returned.

    Raises:
        NuclideError: a name that cannot be parsed.
    """
    from persodose.io.dicom import _NAME_BY_SYMBOL, nuclide_from_dicom_text

    norm = nuclide_from_dicom_text(radionuclide)
    if norm is None:
        raise NuclideError(f"cannot parse radionuclide name {radionuclide!r} (e.g. 'F-18', 'Lu-177')")
    symbol, mass = norm.split("-")
    element = _NAME_BY_SYMBOL[symbol]
    meaning = f"^{mass}^{element}"
    try:
        from pydicom.sr.codedict import codes

        code = getattr(codes.SCT, f"_{mass}{element}")
        return str(code.value), str(code.scheme_designator), str(code.meaning)
    except (ImportError, AttributeError):
        return None, None, meaning


def _file_meta(sop_class_uid: str, sop_instance_uid: str):
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta


def _base(sop_class_uid: str, modality: str, patient: PatientInfo, study_uid: str,
          series_uid: str, frame_of_reference_uid: str, acq: datetime.datetime,
          series_description: str, series_number: int, image_type: list[str]):
    """Patient, study, series, frame-of-reference, equipment and SOP common modules."""
    from pydicom.dataset import Dataset

    sop_uid = new_uid()
    ds = Dataset()
    ds.file_meta = _file_meta(sop_class_uid, sop_uid)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = image_type
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = _da(acq)
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = _tm(acq)
    ds.AccessionNumber = ""
    ds.Modality = modality
    ds.Manufacturer = "persodose"
    ds.ReferringPhysicianName = ""
    ds.SeriesDescription = series_description
    ds.PatientName = patient.patient_name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.PatientAge = f"{int(patient.age_y):03d}Y"
    ds.PatientSize = _ds_num(patient.height_m)
    ds.PatientWeight = _ds_num(patient.weight_kg)
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = series_number
    ds.FrameOfReferenceUID = frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.PatientPosition = "HFS"
    return ds


def _write(ds, path: Path) -> None:
    import pydicom

    pydicom.dcmwrite(path, ds, enforce_file_format=True)


def _slice_geometry(grid: Grid):
    d = grid.direction_xyz
    iop = _ds_list(list(d[:, 0]) + list(d[:, 1]))
    dz, dy, dx = grid.spacing_zyx_mm
    origin = np.asarray(grid.origin_xyz_mm)
    positions = [origin + k * dz * d[:, 2] for k in range(grid.shape[0])]
    return iop, [_ds_num(dy), _ds_num(dx)], positions


def _check_grid(grid: Grid, kinds: tuple[Kind, ...], what: str) -> np.ndarray:
    if not isinstance(grid, Grid):
        raise InputError(f"{what} needs a persodose Grid, got {type(grid).__name__}")
    if grid.kind not in kinds:
        raise UnitsError(f"{what} needs a grid of kind {'/'.join(k.value for k in kinds)}, "
                         f"got {grid.kind.value}")
    arr = np.asarray(grid.array, dtype=np.float64)
    require_finite(arr, f"{what} input grid")
    return arr


def _radiopharmaceutical_item(radionuclide: str, half_life_s: float | None,
                              injected_activity: float | None,
                              injection_datetime: datetime.datetime | None):
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    value, scheme, meaning = nuclide_code(radionuclide)
    code = Dataset()
    if value is not None:
        code.CodeValue = value
        code.CodingSchemeDesignator = scheme
    code.CodeMeaning = meaning
    item = Dataset()
    item.RadionuclideCodeSequence = DicomSequence([code])
    if injection_datetime is not None:
        item.RadiopharmaceuticalStartTime = _tm(injection_datetime)
        item.RadiopharmaceuticalStartDateTime = _dt(injection_datetime)
    if injected_activity is not None:
        item.RadionuclideTotalDose = _ds_num(injected_activity)
    if half_life_s is not None:
        item.RadionuclideHalfLife = _ds_num(half_life_s)
    return item


# ---------------------------------------------------------------------------- CT
_CT_SCALAR_TAGS = {
    # key: (DICOM keyword, converter)
    "kvp": ("KVP", _ds_num),
    "spiral_pitch_factor": ("SpiralPitchFactor", float),
    "total_collimation_mm": ("TotalCollimationWidth", float),
    "single_collimation_mm": ("SingleCollimationWidth", float),
    "rotation_time_s": ("RevolutionTime", float),
    "data_collection_diameter_mm": ("DataCollectionDiameter", _ds_num),
    "filter_type": ("FilterType", str),
    "convolution_kernel": ("ConvolutionKernel", str),
}
_CT_PER_SLICE = ("xray_tube_current_ma", "exposure_time_ms", "exposure_mas", "ctdivol_mgy")
_CT_KEYS = set(_CT_SCALAR_TAGS) | set(_CT_PER_SLICE) | {"manufacturer", "model"}


def _per_slice(value: Any, nz: int, key: str) -> list[float]:
    arr = np.asarray(value, dtype=float).reshape(-1)
    if arr.size == 1:
        arr = np.repeat(arr, nz)
    if arr.size != nz:
        raise InputError(f"ct_tags[{key!r}] has {arr.size} values for {nz} slices")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"ct_tags[{key!r}] holds non-finite values")
    return [float(v) for v in arr]


def write_ct_series(grid: Grid, out_dir, *, patient: PatientInfo, study_uid: str,
                    frame_of_reference_uid: str, acquisition_datetime: datetime.datetime,
                    series_description: str = "CT", ct_tags: dict | None = None,
                    series_uid: str | None = None, series_number: int = 1) -> list[Path]:
    """Write a CT grid (HU) as one CT Image Storage file per slice.

    Stored values are int16 with Rescale Slope 1 and Rescale Intercept -1024, so HU are
    rounded to integers and clipped to [-33792, 31743].

    Args:
        grid: Kind.CT grid in HU, shape (nz, ny, nx).
        out_dir: directory to create (replaced atomically).
        patient, study_uid, frame_of_reference_uid: shared with the other series of the study.
        acquisition_datetime: written as Study/Series/Acquisition/Content date and time.
        ct_tags: optional acquisition parameters: ``kvp``, ``xray_tube_current_ma``
            (scalar or one per slice, mA), ``exposure_time_ms``, ``exposure_mas`` (default
            mA * ms / 1000 when both are given), ``ctdivol_mgy`` (scalar or per slice),
            ``spiral_pitch_factor``, ``total_collimation_mm``, ``single_collimation_mm``,
            ``rotation_time_s`` (RevolutionTime), ``data_collection_diameter_mm``,
            ``filter_type``, ``convolution_kernel``, ``manufacturer``, ``model``.
        series_uid: SeriesInstanceUID (new when None).

    Returns:
        The final paths of the slice files, in z order.
    """
    from pydicom.uid import CTImageStorage

    arr = _check_grid(grid, (Kind.CT,), "write_ct_series")
    acq = _check_datetime(acquisition_datetime, "acquisition_datetime")
    tags = dict(ct_tags or {})
    unknown = set(tags) - _CT_KEYS
    if unknown:
        raise InputError(f"unknown ct_tags keys {sorted(unknown)}; known: {sorted(_CT_KEYS)}")
    nz, ny, nx = grid.shape
    per = {k: _per_slice(tags[k], nz, k) for k in _CT_PER_SLICE if tags.get(k) is not None}
    if "exposure_mas" not in per and "xray_tube_current_ma" in per and "exposure_time_ms" in per:
        per["exposure_mas"] = [i * t / 1000.0 for i, t in
                               zip(per["xray_tube_current_ma"], per["exposure_time_ms"])]
    series_uid = series_uid or new_uid()
    stored = np.clip(np.rint(arr + 1024.0), -32768, 32767).astype("<i2")
    iop, pixel_spacing, positions = _slice_geometry(grid)
    normal = np.cross(grid.direction_xyz[:, 0], grid.direction_xyz[:, 1])
    out_dir = Path(out_dir)
    names = [f"CT_{k + 1:04d}.dcm" for k in range(nz)]
    with atomic_dir(out_dir, marker=False) as tmp:
        for k in range(nz):
            ds = _base(CTImageStorage, "CT", patient, study_uid, series_uid,
                       frame_of_reference_uid, acq, series_description, series_number,
                       ["ORIGINAL", "PRIMARY", "AXIAL"])
            if tags.get("manufacturer"):
                ds.Manufacturer = str(tags["manufacturer"])
            if tags.get("model"):
                ds.ManufacturerModelName = str(tags["model"])
            ds.InstanceNumber = k + 1
            ds.ImagePositionPatient = _ds_list(positions[k])
            ds.ImageOrientationPatient = iop
            ds.SliceLocation = _ds_num(float(positions[k] @ normal))
            ds.SliceThickness = _ds_num(grid.spacing_zyx_mm[0])
            ds.PixelSpacing = pixel_spacing
            ds.GantryDetectorTilt = _ds_num(0.0)
            for key, (keyword, conv) in _CT_SCALAR_TAGS.items():
                if tags.get(key) is not None:
                    setattr(ds, keyword, conv(tags[key]))
            if "xray_tube_current_ma" in per:
                ds.XRayTubeCurrent = int(round(per["xray_tube_current_ma"][k]))
                ds.XRayTubeCurrentInmA = per["xray_tube_current_ma"][k]
            if "exposure_time_ms" in per:
                ds.ExposureTime = int(round(per["exposure_time_ms"][k]))
                ds.ExposureTimeInms = per["exposure_time_ms"][k]
            if "exposure_mas" in per:
                ds.Exposure = int(round(per["exposure_mas"][k]))
                ds.ExposureInmAs = per["exposure_mas"][k]
            if "ctdivol_mgy" in per:
                ds.CTDIvol = per["ctdivol_mgy"][k]
            image_pixel_module(ds, ny, nx, bits=16, signed=True)
            ds.RescaleIntercept = _ds_num(-1024.0)
            ds.RescaleSlope = _ds_num(1.0)
            ds.RescaleType = "HU"
            ds.WindowCenter = _ds_num(40.0)
            ds.WindowWidth = _ds_num(400.0)
            ds.PixelData = stored[k].tobytes()
            _write(ds, tmp / names[k])
    return [out_dir / n for n in names]


# ---------------------------------------------------------------------------- PET
def _decay_constant(half_life_s: float | None) -> float | None:
    return math.log(2.0) / half_life_s if half_life_s else None


def write_pet_series(grid: Grid, out_dir, *, patient: PatientInfo, study_uid: str,
                     frame_of_reference_uid: str, acquisition_datetime: datetime.datetime,
                     frame_duration_s: float, radionuclide: str, injected_activity_bq: float,
                     injection_datetime: datetime.datetime, decay_correction: str = "START",
                     series_description: str = "PET", series_uid: str | None = None,
                     half_life_s: float | None = None, series_number: int = 2) -> list[Path]:
    """Write a PET grid (Bq/mL) as one PET Image Storage file per slice.

    Each slice is stored as int16 with its own Rescale Slope (max |value| / 32767, Rescale
    Intercept 0 as the PET Image module requires), so values are exact to half a slope.
    Units BQML; Decay Correction as given, with Decay Correction DateTime = acquisition
    start (START) or injection (ADMIN). Decay Factor and Frame Reference Time follow the
    usual static-frame definitions: the mean activity over a frame of length T relative to
    its start is A0 (1 - exp(-lambda T)) / (lambda T), reached at
    t = ln(lambda T / (1 - exp(-lambda T))) / lambda (frame-averaged decay, e.g.
    Cherry, Sorenson & Phelps, Physics in Nuclear Medicine, 4th ed., ch. 18).

    Args:
        grid: Kind.ACTIVITY_CONCENTRATION grid, Bq/mL.
        frame_duration_s: acquisition time per bed position, s (ActualFrameDuration).
        radionuclide: e.g. ``"F-18"``; coded in RadionuclideCodeSequence.
        injected_activity_bq: RadionuclideTotalDose, Bq at ``injection_datetime``.
        decay_correction: ``"START"``, ``"ADMIN"`` or ``"NONE"``.
        half_life_s: written as RadionuclideHalfLife; when None taken from
            ``persodose.physics.radionuclides.get_nuclide`` if that exists, else left out.

    Returns:
        The final paths of the slice files, in z order.
    """
    from pydicom.uid import PositronEmissionTomographyImageStorage as PETStorage

    arr = _check_grid(grid, (Kind.ACTIVITY_CONCENTRATION,), "write_pet_series")
    acq = _check_datetime(acquisition_datetime, "acquisition_datetime")
    inj = _check_datetime(injection_datetime, "injection_datetime")
    decay_correction = str(decay_correction).upper()
    if decay_correction not in ("START", "ADMIN", "NONE"):
        raise InputError(f"decay_correction must be START, ADMIN or NONE, got {decay_correction!r}")
    if not (frame_duration_s > 0 and math.isfinite(frame_duration_s)):
        raise InputError(f"frame_duration_s must be positive, got {frame_duration_s}")
    if not (injected_activity_bq > 0 and math.isfinite(injected_activity_bq)):
        raise InputError(f"injected_activity_bq must be positive, got {injected_activity_bq}")
    t_half = _half_life_s(radionuclide, half_life_s)
    lam = _decay_constant(t_half)
    item = _radiopharmaceutical_item(radionuclide, t_half, injected_activity_bq, inj)
    frame_ms = int(round(frame_duration_s * 1000.0))
    if lam is not None:
        x = lam * frame_duration_s
        in_frame = x / (1.0 - math.exp(-x)) if x > 1e-12 else 1.0
        frame_ref_ms = math.log(in_frame) / lam * 1000.0
    else:
        in_frame, frame_ref_ms = 1.0, frame_duration_s * 500.0
    if decay_correction == "START":
        ref_dt, decay_factor = acq, in_frame
    elif decay_correction == "ADMIN":
        ref_dt = inj
        elapsed = (acq - inj).total_seconds()
        decay_factor = in_frame * (math.exp(lam * elapsed) if lam is not None else 1.0)
    else:
        ref_dt, decay_factor = None, None
    nz, ny, nx = grid.shape
    series_uid = series_uid or new_uid()
    iop, pixel_spacing, positions = _slice_geometry(grid)
    out_dir = Path(out_dir)
    names = [f"PT_{k + 1:04d}.dcm" for k in range(nz)]
    from pydicom.sequence import Sequence as DicomSequence

    with atomic_dir(out_dir, marker=False) as tmp:
        for k in range(nz):
            sl = arr[k]
            peak = float(np.max(np.abs(sl)))
            slope = peak / 32767.0 if peak > 0 else 1.0
            stored = np.clip(np.rint(sl / slope), -32768, 32767).astype("<i2")
            ds = _base(PETStorage, "PT", patient, study_uid, series_uid, frame_of_reference_uid,
                       acq, series_description, series_number, ["ORIGINAL", "PRIMARY"])
            ds.SeriesType = ["STATIC", "IMAGE"]
            ds.Units = "BQML"
            ds.CountsSource = "EMISSION"
            ds.CorrectedImage = (["DECY", "ATTN", "SCAT"] if decay_correction != "NONE"
                                 else ["ATTN", "SCAT"])
            ds.DecayCorrection = decay_correction
            if ref_dt is not None:
                ds.DecayCorrectionDateTime = _dt(ref_dt)
                ds.DecayFactor = _ds_num(decay_factor)
            ds.NumberOfSlices = nz
            ds.ImageIndex = k + 1
            ds.InstanceNumber = k + 1
            ds.FrameReferenceTime = _ds_num(frame_ref_ms)
            ds.ActualFrameDuration = frame_ms
            ds.RadiopharmaceuticalInformationSequence = DicomSequence([_copy(item)])
            ds.ImagePositionPatient = _ds_list(positions[k])
            ds.ImageOrientationPatient = iop
            ds.PixelSpacing = pixel_spacing
            ds.SliceThickness = _ds_num(grid.spacing_zyx_mm[0])
            image_pixel_module(ds, ny, nx, bits=16, signed=True)
            ds.RescaleIntercept = _ds_num(0.0)
            ds.RescaleSlope = _ds_num(slope)
            ds.PixelData = stored.tobytes()
            _write(ds, tmp / names[k])
    return [out_dir / n for n in names]


def _copy(ds):
    import copy

    return copy.deepcopy(ds)


# ---------------------------------------------------------------------------- NM
def write_nm_tomo(grid: Grid, out_path, *, patient: PatientInfo, study_uid: str,
                  frame_of_reference_uid: str, acquisition_datetime: datetime.datetime,
                  frame_duration_s: float, radionuclide: str, units: str = "counts",
                  series_description: str = "SPECT", series_uid: str | None = None,
                  half_life_s: float | None = None, injected_activity_bq: float | None = None,
                  injection_datetime: datetime.datetime | None = None,
                  series_number: int = 3, views_per_rotation: int = 60) -> Path:
    """Write a SPECT reconstruction as one multi-frame NM Image Storage file.

    Frames are the z slices (ImageType ORIGINAL\\PRIMARY\\RECON TOMO\\EMISSION, Frame
    Increment Pointer -> Slice Vector). Geometry sits in the Detector Information Sequence
    (Image Position/Orientation (Patient)) with Pixel Spacing, Spacing Between Slices and
    Slice Thickness at the top level. Actual Frame Duration (ms) is written at the top
    level and in the Rotation Information Sequence. Values are uint16: counts are stored as
    they are when they are integers in [0, 65535], else with a Rescale Slope; Bq/mL always
    with a Rescale Slope and Units BQML. Negative values are clipped to 0 (with a warning).

    Args:
        grid: Kind.COUNTS grid (``units="counts"``) or Kind.ACTIVITY_CONCENTRATION grid
            (``units="Bq/mL"``).
        out_path: the file to write (replaced atomically).
        frame_duration_s: whole acquisition time, s; written as the time per view
            (Actual Frame Duration) of ``views_per_rotation`` views in one rotation.
        views_per_rotation: views per detector in the rotation (60 for a 120-view
            dual-head acquisition).
        radionuclide: e.g. ``"Lu-177"``.
        half_life_s: as for :func:`write_pet_series`.
        injected_activity_bq: optional; written as RadionuclideTotalDose in MBq (NM Isotope
            module, PS3.3 C.8.4.10.1.7).
        injection_datetime: optional RadiopharmaceuticalStartDateTime.

    Returns:
        ``out_path`` as a Path.
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence
    from pydicom.tag import Tag
    from pydicom.uid import NuclearMedicineImageStorage

    unit_key = str(units).strip().lower()
    if unit_key in ("counts", "cnts"):
        arr = _check_grid(grid, (Kind.COUNTS,), "write_nm_tomo (counts)")
        bqml = False
    elif unit_key in ("bq/ml", "bqml"):
        arr = _check_grid(grid, (Kind.ACTIVITY_CONCENTRATION,), "write_nm_tomo (Bq/mL)")
        bqml = True
    else:
        raise UnitsError(f"write_nm_tomo units must be 'counts' or 'Bq/mL', got {units!r}")
    acq = _check_datetime(acquisition_datetime, "acquisition_datetime")
    inj = _check_datetime(injection_datetime, "injection_datetime") if injection_datetime else None
    if not (frame_duration_s > 0 and math.isfinite(frame_duration_s)):
        raise InputError(f"frame_duration_s must be positive, got {frame_duration_s}")
    if int(views_per_rotation) < 1:
        raise InputError(f"views_per_rotation must be at least 1, got {views_per_rotation}")
    if np.any(arr < 0):
        warnings.warn("write_nm_tomo: negative values clipped to 0", stacklevel=2)
        arr = np.clip(arr, 0.0, None)
    peak = float(arr.max()) if arr.size else 0.0
    integral = bool(np.all(arr == np.rint(arr)))
    if not bqml and integral and peak <= 65535:
        slope = None
    else:
        slope = peak / 65535.0 if peak > 0 else 1.0
    stored = np.clip(np.rint(arr / (slope or 1.0)), 0, 65535).astype("<u2")
    t_half = _half_life_s(radionuclide, half_life_s)
    nz, ny, nx = grid.shape
    series_uid = series_uid or new_uid()
    d = grid.direction_xyz
    ds = _base(NuclearMedicineImageStorage, "NM", patient, study_uid, series_uid,
               frame_of_reference_uid, acq, series_description, series_number,
               ["ORIGINAL", "PRIMARY", "RECON TOMO", "EMISSION"])
    ds.InstanceNumber = 1
    ds.NumberOfFrames = nz
    ds.FrameIncrementPointer = Tag("SliceVector")
    ds.SliceVector = list(range(1, nz + 1))
    ds.NumberOfSlices = nz
    ds.PixelSpacing = [_ds_num(grid.spacing_zyx_mm[1]), _ds_num(grid.spacing_zyx_mm[2])]
    ds.SpacingBetweenSlices = _ds_num(grid.spacing_zyx_mm[0])
    ds.SliceThickness = _ds_num(grid.spacing_zyx_mm[0])
    ds.ActualFrameDuration = int(round(frame_duration_s * 1000.0 / views_per_rotation))
    det = Dataset()
    det.ImagePositionPatient = _ds_list(grid.origin_xyz_mm)
    det.ImageOrientationPatient = _ds_list(list(d[:, 0]) + list(d[:, 1]))
    ds.NumberOfDetectors = 1
    ds.DetectorInformationSequence = DicomSequence([det])
    rot = Dataset()
    rot.ActualFrameDuration = int(round(frame_duration_s * 1000.0 / views_per_rotation))
    rot.NumberOfFramesInRotation = int(views_per_rotation)
    ds.NumberOfRotations = 1
    ds.RotationInformationSequence = DicomSequence([rot])
    ds.NumberOfEnergyWindows = 1
    activity_mbq = injected_activity_bq / 1e6 if injected_activity_bq is not None else None
    ds.RadiopharmaceuticalInformationSequence = DicomSequence(
        [_radiopharmaceutical_item(radionuclide, t_half, activity_mbq, inj)])
    image_pixel_module(ds, ny, nx, bits=16, signed=False)
    if slope is not None:
        ds.RescaleIntercept = _ds_num(0.0)
        ds.RescaleSlope = _ds_num(slope)
    if bqml:
        ds.Units = "BQML"
    ds.PixelData = stored.tobytes()
    out_path = Path(out_path)
    with atomic_file(out_path) as tmp:
        _write(ds, tmp)
    return out_path
