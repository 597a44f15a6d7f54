"""Write grids as DICOM image series: CT and PET (one file per slice), NM tomograms (one
multi-frame file).

Used by the virtual-patient generator and for round trips through :mod:`persodose.io.dicom`.
The datasets follow the CT Image, PET Image and NM Image IODs of DICOM PS3.3 (A.3, A.21,
A.5): ``dciodvfy`` (dicom3tools) reports no errors for them (``tests/io/test_conformance.py``;
what it said before and after is in ``docs/conformance.md``). The warnings it still gives
are attributes outside the IOD that readers use (Standard Extended SOP Class, PS3.4 B.1.3).
Every series of one study carries the same Study Date and Time (the study's start), so a
PACS sees one study (``dcentvfy``). UIDs are made under :data:`UID_ROOT`. Everything is
written into a temporary sibling and moved into place on success
(:func:`persodose.outputs.atomic_dir` / ``atomic_file``).

Geometry (PS3.3 C.7.6.2): slice ``k`` has Image Position (Patient) = origin + k * dz *
(z direction), Image Orientation (Patient) = the grid's x and y directions, Pixel Spacing =
(row spacing = y, column spacing = x). A grid whose z direction is minus the cross product
of its x and y directions is written as it is; reading it back gives the same physical
image with the z axis reversed.
"""

from __future__ import annotations

import datetime
import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from persodose.errors import InputError, NuclideError, UnitsError, require_finite
from persodose.grid import Grid, Kind
from persodose.io.rtdose import image_pixel_module
from persodose.outputs import atomic_dir, atomic_file

__all__ = ["PatientInfo", "UID_ROOT", "new_uid", "uid_root", "write_ct_series", "write_pet_series",
           "write_nm_tomo", "nuclide_code"]

#: persodose's UID root: the ``2.25`` arc of UUID-derived OIDs (ITU-T X.667 / ISO/IEC 9834-8,
#: DICOM PS3.5 B.2) followed by the integer of the name-based UUID
#: ``uuid5(NAMESPACE_URL, "https://persodose.invalid/dicom-uid-root")``
#: (de0f8919-3216-5ed2-84a0-8683e7328347). Not a registered organisation root; a site that
#: has one sets ``PERSODOSE_UID_ROOT`` (see :func:`uid_root`). 44 characters, which leaves 19
#: random digits per UID (about 63 bits, from :mod:`secrets`).
UID_ROOT = "2.25.295169280203450403979450852253296132935"

#: A UID root: numeric components without leading zeros, dot separated (PS3.5 9.1).
_UID_ROOT_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


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


def uid_root() -> str:
    """The UID root in use: ``PERSODOSE_UID_ROOT`` when set, else :data:`UID_ROOT`.

    Raises:
        InputError: a ``PERSODOSE_UID_ROOT`` that is not a valid root of at most 48
            characters (which keeps 15 random digits per UID).
    """
    root = os.environ.get("PERSODOSE_UID_ROOT", "").strip().rstrip(".")
    if not root:
        return UID_ROOT
    if len(root) > 48 or not _UID_ROOT_RE.match(root):
        raise InputError(f"PERSODOSE_UID_ROOT {root!r} is not a UID root of at most 48 characters "
                         "(digits and dots, no leading zeros, PS3.5 9.1)")
    return root


def new_uid() -> str:
    """A new DICOM UID under :func:`uid_root`: the root, a dot and random digits up to 64
    characters (pydicom's ``generate_uid`` with that prefix, PS3.5 9.1)."""
    from pydicom.uid import generate_uid

    return str(generate_uid(prefix=uid_root() + "."))


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
          series_description: str, series_number: int, image_type: list[str],
          study: datetime.datetime | None = None, body_part: str = "WHOLEBODY"):
    """Patient, study, series, frame-of-reference, equipment and SOP common modules.

    Study Date/Time are ``study`` (the study's start, the same in every series of the study:
    they belong to the Study entity, PS3.3 C.7.2.1), else ``acq``. Body Part Examined
    (PS3.3 C.7.3.1, defined terms in PS3.16 Annex L) is written because General Series'
    Laterality is Type 2C on it: WHOLEBODY is unpaired, so Laterality stays absent.
    """
    from pydicom.dataset import Dataset

    sop_uid = new_uid()
    study = acq if study is None else study
    ds = Dataset()
    ds.file_meta = _file_meta(sop_class_uid, sop_uid)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = image_type
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate, ds.StudyTime = _da(study), _tm(study)
    ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = _da(acq)
    ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = _tm(acq)
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
    if body_part:
        ds.BodyPartExamined = str(body_part)[:16]
    return ds


def _code_item(code):
    """A Code Sequence item (PS3.3 8.8, basic code attributes) of a ``pydicom`` Code."""
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodeValue = str(code.value)
    item.CodingSchemeDesignator = str(code.scheme_designator)
    item.CodeMeaning = str(code.meaning)
    return item


def _nm_pet_patient_orientation(ds) -> None:
    """NM/PET Patient Orientation module (PS3.3 C.8.4.6) for head first supine (HFS):
    recumbent (SCT 102538003, CID 19) modified by supine (SCT 40199007, CID 20), head first
    (SCT 102540008, CID 21) relative to the gantry. It replaces General Series' Patient
    Position, which shall then be absent (Type 2C, PS3.3 C.7.3.1)."""
    from pydicom.sequence import Sequence as DicomSequence
    from pydicom.sr.codedict import codes

    if "PatientPosition" in ds:
        del ds.PatientPosition

    orientation = _code_item(codes.SCT.Recumbent)
    orientation.PatientOrientationModifierCodeSequence = DicomSequence([_code_item(codes.SCT.Supine)])
    ds.PatientOrientationCodeSequence = DicomSequence([orientation])
    ds.PatientGantryRelationshipCodeSequence = DicomSequence([_code_item(codes.SCT.Headfirst)])


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
_CT_KEYS = set(_CT_SCALAR_TAGS) | set(_CT_PER_SLICE) | {"manufacturer", "model", "ctdi_phantom"}

#: CTDI phantom of the CTDIvol (CTDI Phantom Type Code Sequence (0018,9346), CID 4052
#: "Phantom Devices"): the 32 cm body and 16 cm head PMMA phantoms of IEC 60601-2-44.
_CTDI_PHANTOMS = {"body": "IECBodyDosimetryPhantom", "head": "IECHeadDosimetryPhantom"}


def _ctdi_phantom_item(which: Any):
    """Code item of the CTDI phantom ``"body"`` (DCM 113691) or ``"head"`` (DCM 113690)."""
    from pydicom.sr.codedict import codes

    key = str(which).strip().lower()
    if key not in _CTDI_PHANTOMS:
        raise InputError(f"ct_tags['ctdi_phantom'] must be 'body' or 'head', got {which!r}")
    return _code_item(getattr(codes.DCM, _CTDI_PHANTOMS[key]))


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
                    series_uid: str | None = None, series_number: int = 1,
                    study_datetime: datetime.datetime | None = None) -> list[Path]:
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
            ``filter_type``, ``convolution_kernel``, ``manufacturer``, ``model``,
            ``ctdi_phantom`` (``"body"``, the default when ``ctdivol_mgy`` is given, or
            ``"head"``: the CTDI Phantom Type Code Sequence that makes CTDIvol
            interpretable, PS3.3 C.8.2.1).
        series_uid: SeriesInstanceUID (new when None).
        study_datetime: Study Date/Time (the study's start; default ``acquisition_datetime``).

    Returns:
        The final paths of the slice files, in z order.
    """
    from pydicom.sequence import Sequence as DicomSequence
    from pydicom.uid import CTImageStorage

    arr = _check_grid(grid, (Kind.CT,), "write_ct_series")
    acq = _check_datetime(acquisition_datetime, "acquisition_datetime")
    study = _check_datetime(study_datetime, "study_datetime") if study_datetime is not None else None
    tags = dict(ct_tags or {})
    unknown = set(tags) - _CT_KEYS
    if unknown:
        raise InputError(f"unknown ct_tags keys {sorted(unknown)}; known: {sorted(_CT_KEYS)}")
    nz, ny, nx = grid.shape
    per = {k: _per_slice(tags[k], nz, k) for k in _CT_PER_SLICE if tags.get(k) is not None}
    if "exposure_mas" not in per and "xray_tube_current_ma" in per and "exposure_time_ms" in per:
        per["exposure_mas"] = [i * t / 1000.0 for i, t in
                               zip(per["xray_tube_current_ma"], per["exposure_time_ms"])]
    phantom = _ctdi_phantom_item(tags.get("ctdi_phantom") or "body") if "ctdivol_mgy" in per else None
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
                       ["ORIGINAL", "PRIMARY", "AXIAL"], study)
            ds.AcquisitionNumber = 1  # Type 2 in the CT Image module (PS3.3 C.8.2.1)
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
                ds.CTDIPhantomTypeCodeSequence = DicomSequence([_copy(phantom)])
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
                     half_life_s: float | None = None, series_number: int = 2,
                     study_datetime: datetime.datetime | None = None) -> list[Path]:
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
        study_datetime: Study Date/Time (the study's start; default ``acquisition_datetime``).

    Returns:
        The final paths of the slice files, in z order.

    Notes:
        PET Series Collimator Type (0018,1181) is NONE (a 3D acquisition without septa,
        PS3.3 C.8.9.1); the NM/PET Patient Orientation module says head first supine.
    """
    from pydicom.uid import PositronEmissionTomographyImageStorage as PETStorage

    arr = _check_grid(grid, (Kind.ACTIVITY_CONCENTRATION,), "write_pet_series")
    acq = _check_datetime(acquisition_datetime, "acquisition_datetime")
    inj = _check_datetime(injection_datetime, "injection_datetime")
    study = _check_datetime(study_datetime, "study_datetime") if study_datetime is not None else None
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
                       acq, series_description, series_number, ["ORIGINAL", "PRIMARY"], study)
            ds.SeriesType = ["STATIC", "IMAGE"]
            ds.CollimatorType = "NONE"
            _nm_pet_patient_orientation(ds)
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
#: Photopeak energy windows (lower, upper), keV, written in the Energy Window Information
#: Sequence when the caller gives none: 20 % windows on the main photopeak, as recommended
#: for quantitative SPECT (Lu-177 208 keV: Ljungberg et al., MIRD Pamphlet No. 26, J Nucl Med
#: 57 (2016) 151; I-131 364 keV: Dewaraja et al., MIRD Pamphlet No. 24, J Nucl Med 54 (2013)
#: 2182; Tc-99m 140 keV: Dickson et al., EANM practice guideline for quantitative SPECT-CT,
#: Eur J Nucl Med Mol Imaging 50 (2023) 980). Other nuclides get an empty sequence (Type 2).
NM_ENERGY_WINDOWS_KEV = {
    "Lu-177": ((187.2, 228.8),),
    "I-131": ((327.6, 400.4),),
    "Tc-99m": ((126.0, 154.0),),
}

#: Acquisition the NM TOMO Acquisition module describes (PS3.3 C.8.4.12): a dual-head
#: camera with opposed heads, each turning clockwise over 180 degrees from 0 degrees, step
#: and shoot; a reconstruction file records one detector's rotation.
NM_SCAN_ARC_DEG = 180.0
NM_START_ANGLE_DEG = 0.0
NM_ROTATION_DIRECTION = "CW"

#: Collimator Type (0018,1181) defined term: parallel hole (PS3.3 C.8.4.11).
NM_COLLIMATOR_TYPE = "PARA"


def _nm_energy_windows(radionuclide: str, windows_kev) -> list:
    """Energy Window Information Sequence items (NM Isotope module, PS3.3 C.8.4.10)."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    from persodose.io.dicom import nuclide_from_dicom_text

    if windows_kev is None:
        windows_kev = NM_ENERGY_WINDOWS_KEV.get(nuclide_from_dicom_text(radionuclide) or "", ())
    items = []
    for n, window in enumerate(windows_kev, start=1):
        lo, hi = (float(v) for v in window)
        if not (0 < lo < hi and math.isfinite(hi)):
            raise InputError(f"energy window {window!r} must be (lower, upper) keV with 0 < lower < upper")
        rng = Dataset()
        rng.EnergyWindowLowerLimit = _ds_num(lo)
        rng.EnergyWindowUpperLimit = _ds_num(hi)
        item = Dataset()
        item.EnergyWindowRangeSequence = DicomSequence([rng])
        item.EnergyWindowName = f"EM{n}"
        items.append(item)
    return items


def _nm_detector_and_rotation(ds, grid: Grid, frame_duration_s: float, views: int) -> None:
    """NM Detector (C.8.4.11) and NM TOMO Acquisition (C.8.4.12) modules: the reconstruction's
    geometry in the Detector Information Sequence, the rotation (start angle, angular step,
    direction, scan arc, time per view, views) in the Rotation Information Sequence."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    d = grid.direction_xyz
    det = Dataset()
    det.CollimatorType = NM_COLLIMATOR_TYPE
    det.ImagePositionPatient = _ds_list(grid.origin_xyz_mm)
    det.ImageOrientationPatient = _ds_list(list(d[:, 0]) + list(d[:, 1]))
    ds.NumberOfDetectors = 1
    ds.DetectorInformationSequence = DicomSequence([det])
    rot = Dataset()
    rot.StartAngle = _ds_num(NM_START_ANGLE_DEG)
    rot.AngularStep = _ds_num(NM_SCAN_ARC_DEG / views)
    rot.RotationDirection = NM_ROTATION_DIRECTION
    rot.ScanArc = _ds_num(NM_SCAN_ARC_DEG)
    rot.ActualFrameDuration = int(round(frame_duration_s * 1000.0 / views))
    rot.NumberOfFramesInRotation = int(views)
    ds.TypeOfDetectorMotion = "STEP AND SHOOT"
    ds.NumberOfRotations = 1
    ds.RotationInformationSequence = DicomSequence([rot])


def _counts_accumulated(arr: np.ndarray, bqml: bool):
    """Counts Accumulated (0018,0070, IS, Type 2): the image's total counts, rounded; empty
    for Bq/mL images or a total that does not fit an IS (2**31 - 1)."""
    if bqml:
        return None
    total = float(np.sum(arr, dtype=np.float64))
    return int(round(total)) if total < 2**31 - 1 else None


def write_nm_tomo(grid: Grid, out_path, *, patient: PatientInfo, study_uid: str,
                  frame_of_reference_uid: str, acquisition_datetime: datetime.datetime,
                  frame_duration_s: float, radionuclide: str, units: str = "counts",
                  series_description: str = "SPECT", series_uid: str | None = None,
                  half_life_s: float | None = None, injected_activity_bq: float | None = None,
                  injection_datetime: datetime.datetime | None = None,
                  series_number: int = 3, views_per_rotation: int = 60,
                  study_datetime: datetime.datetime | None = None,
                  energy_windows_kev: Sequence[tuple[float, float]] | None = None) -> Path:
    """Write a SPECT reconstruction as one multi-frame NM Image Storage file.

    Frames are the z slices (ImageType ORIGINAL\\PRIMARY\\RECON TOMO\\EMISSION, Frame
    Increment Pointer -> Slice Vector). Geometry sits in the Detector Information Sequence
    (Image Position/Orientation (Patient)) with Pixel Spacing, Spacing Between Slices and
    Slice Thickness at the top level. The acquisition is in the Rotation Information
    Sequence (NM TOMO Acquisition module, PS3.3 C.8.4.12): start angle, angular step
    (:data:`NM_SCAN_ARC_DEG` / views), rotation direction, scan arc, the time per view
    (Actual Frame Duration, ms) and the views; the top-level Actual Frame Duration is only
    for STATIC and WHOLE BODY images (PS3.3 C.8.4.9) and is not written. Values are uint16:
    counts are stored as they are when they are integers in [0, 65535], else with a Rescale
    Slope; Bq/mL always with a Rescale Slope and Units BQML. Negative values are clipped to
    0 (with a warning). Counts Accumulated is the image's total; the Energy Window
    Information Sequence holds ``energy_windows_kev`` (default
    :data:`NM_ENERGY_WINDOWS_KEV`); the collimator is parallel hole; the patient is head
    first supine (NM/PET Patient Orientation module, C.8.4.6).

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
        study_datetime: Study Date/Time (the study's start; default ``acquisition_datetime``).
        energy_windows_kev: (lower, upper) keV of each energy window (default from
            :data:`NM_ENERGY_WINDOWS_KEV` for the nuclide, else none).

    Returns:
        ``out_path`` as a Path.
    """
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
    study = _check_datetime(study_datetime, "study_datetime") if study_datetime is not None else None
    if not (frame_duration_s > 0 and math.isfinite(frame_duration_s)):
        raise InputError(f"frame_duration_s must be positive, got {frame_duration_s}")
    if int(views_per_rotation) < 1:
        raise InputError(f"views_per_rotation must be at least 1, got {views_per_rotation}")
    if np.any(arr < 0):
        warnings.warn("write_nm_tomo: negative values clipped to 0", stacklevel=2)
        arr = np.clip(arr, 0.0, None)
    windows = _nm_energy_windows(radionuclide, energy_windows_kev)
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
    ds = _base(NuclearMedicineImageStorage, "NM", patient, study_uid, series_uid,
               frame_of_reference_uid, acq, series_description, series_number,
               ["ORIGINAL", "PRIMARY", "RECON TOMO", "EMISSION"], study)
    ds.InstanceNumber = 1
    ds.NumberOfFrames = nz
    ds.FrameIncrementPointer = Tag("SliceVector")
    ds.SliceVector = list(range(1, nz + 1))
    ds.NumberOfSlices = nz
    ds.PixelSpacing = [_ds_num(grid.spacing_zyx_mm[1]), _ds_num(grid.spacing_zyx_mm[2])]
    ds.SpacingBetweenSlices = _ds_num(grid.spacing_zyx_mm[0])
    ds.SliceThickness = _ds_num(grid.spacing_zyx_mm[0])
    ds.CountsAccumulated = _counts_accumulated(arr, bqml)
    _nm_detector_and_rotation(ds, grid, frame_duration_s, int(views_per_rotation))
    _nm_pet_patient_orientation(ds)
    ds.NumberOfEnergyWindows = max(len(windows), 1)
    ds.EnergyWindowInformationSequence = DicomSequence(windows)
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
