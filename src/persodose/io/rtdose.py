"""DICOM RT Dose: write a dose :class:`~persodose.grid.Grid` and read one back.

The writer produces a single multi-frame RT Dose Storage instance (SOP class
``1.2.840.10008.5.1.4.1.1.481.2``) made of the modules listed for the RT Dose IOD in
DICOM PS3.3 section A.18 (Patient, General Study, RT Series, Frame of Reference, General
Equipment, General Image, Image Plane, Image Pixel, Multi-frame, RT Dose, SOP Common).

Pixel values are 32-bit unsigned integers; the dose in Gy is ``pixel * DoseGridScaling``
(PS3.3 C.8.8.3, attribute (3004,000E)). The scaling is chosen so that the maximum dose maps
to about 4e9 counts, which keeps the quantisation error below ``1.3e-10`` of the maximum.

Frame positions are encoded with the Grid Frame Offset Vector (3004,000C). PS3.3
C.8.8.3.2 allows two readings of that vector: if its first element is zero the offsets are
relative to Image Position (Patient) along the slice normal ("relative interpretation");
otherwise the elements are the absolute z coordinates of the planes, which is only allowed
for the transverse orientation ``1\\0\\0\\0\\1\\0`` and then the first element equals the z of
Image Position (Patient) ("absolute interpretation"). :func:`write_rtdose` always writes the
relative form; :func:`read_rtdose` reads both.
"""

from __future__ import annotations

import datetime as _dt
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from persodose.errors import DicomError, GeometryError, InputError
from persodose.grid import Grid, Kind
from persodose.outputs import atomic_file

#: RT Dose Storage SOP class UID (DICOM PS3.4 annex B.5).
RT_DOSE_STORAGE = "1.2.840.10008.5.1.4.1.1.481.2"

#: Largest stored pixel value the writer aims for (below 2**32 - 1 so that the rounding of
#: the 16-character DS Dose Grid Scaling can never push the maximum out of range).
_TARGET_MAX_PIXEL = 4.0e9

#: Defined terms of Dose Type (3004,0004), PS3.3 C.8.8.3.
_DOSE_TYPES = ("PHYSICAL", "EFFECTIVE", "ERROR")

#: Defined terms of Dose Summation Type (3004,000A), PS3.3 C.8.8.3.
_SUMMATION_TYPES = (
    "PLAN", "MULTI_PLAN", "PLAN_OVERVIEW", "FRACTION", "BEAM", "BRACHY", "FRACTION_SESSION",
    "BEAM_SESSION", "BRACHY_SESSION", "CONTROL_POINT", "RECORD",
)

#: Dose Summation Types whose Referenced RT Plan Sequence (300C,0002) is Type 1C-required
#: (PS3.3 C.8.8.3, Table C.8-39).
_NEEDS_PLAN = ("PLAN", "MULTI_PLAN", "FRACTION", "BEAM", "BRACHY", "FRACTION_SESSION",
               "BEAM_SESSION", "BRACHY_SESSION", "CONTROL_POINT")

#: Patient and study attributes copied from the reference CT (Patient and General Study
#: modules, PS3.3 C.7.1.1 and C.7.2.1) so that the dose joins the CT's study.
_IDENTITY_KEYWORDS = (
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
    "PatientAge", "PatientWeight", "PatientSize", "StudyInstanceUID", "StudyDate", "StudyTime",
    "StudyID", "StudyDescription", "AccessionNumber", "ReferringPhysicianName",
)

#: Direction tolerance (cosine difference) when comparing orientations.
_ORIENTATION_TOL = 1e-4


def _ds_str(value: float) -> str:
    """Format ``value`` as a DICOM Decimal String (at most 16 characters, PS3.5 6.2)."""
    from pydicom.valuerep import format_number_as_ds

    return format_number_as_ds(float(value))


def _dcmread(path: str | os.PathLike, what: str, pixels: bool = False):
    """Read a DICOM file, turning failures into persodose errors.

    Files without the 128-byte preamble and File Meta header (older RT exports, allowed
    before DICOM PS3.10 was enforced) are read with ``force=True``; the result is accepted
    only when it carries an SOP Class UID or a Modality.

    Args:
        path: file to read.
        what: what the file is meant to be, used in error messages.
        pixels: also read the pixel data.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{what} {p} does not exist or is not a file")
    try:
        return pydicom.dcmread(p, stop_before_pixels=not pixels)
    except InvalidDicomError:
        pass
    except Exception as exc:  # pydicom raises many types on corrupt input
        raise DicomError(f"{what} {p} cannot be read as DICOM: {exc}") from exc
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(p, stop_before_pixels=not pixels, force=True)
            ok = "SOPClassUID" in ds or "Modality" in ds
    except Exception:
        ok = False
    if not ok:
        raise DicomError(f"{what} {p} is not a DICOM file")
    return ds


def _read_header(path: str | os.PathLike, what: str):
    """Read a DICOM header (no pixel data)."""
    return _dcmread(path, what)


def _reference_identity(files: Sequence[str | os.PathLike]) -> dict[str, Any]:
    """Identity, frame of reference and orientation of a reference CT series.

    Every file is read (header only); they must share one StudyInstanceUID, one
    FrameOfReferenceUID and one ImageOrientationPatient.
    """
    if not files:
        raise InputError("reference_ct_files is empty")
    headers = [_read_header(f, "reference CT file") for f in files]
    first = headers[0]
    out: dict[str, Any] = {}
    for kw in _IDENTITY_KEYWORDS:
        if kw in first and first[kw].value not in (None, ""):
            out[kw] = first[kw].value
    for kw in ("FrameOfReferenceUID", "StudyInstanceUID", "ImageOrientationPatient"):
        if kw not in first:
            raise DicomError(f"reference CT file {files[0]} has no {kw}")
    for f, h in zip(files[1:], headers[1:], strict=True):
        if h.get("FrameOfReferenceUID") != first.FrameOfReferenceUID:
            raise DicomError(f"reference CT file {f} has another FrameOfReferenceUID than {files[0]}")
        if h.get("StudyInstanceUID") != first.StudyInstanceUID:
            raise DicomError(f"reference CT file {f} belongs to another study than {files[0]}")
        iop = h.get("ImageOrientationPatient")
        if iop is None or not np.allclose(np.asarray(iop, float),
                                          np.asarray(first.ImageOrientationPatient, float),
                                          atol=_ORIENTATION_TOL):
            raise DicomError(f"reference CT file {f} has another orientation than {files[0]}")
    out["FrameOfReferenceUID"] = str(first.FrameOfReferenceUID)
    out["PositionReferenceIndicator"] = first.get("PositionReferenceIndicator", "")
    out["_iop"] = np.asarray(first.ImageOrientationPatient, dtype=float)
    out["_images"] = [(str(h.SOPClassUID), str(h.SOPInstanceUID)) for h in headers
                      if "SOPClassUID" in h and "SOPInstanceUID" in h]
    return out


def _frames_in_normal_order(dose: Grid) -> tuple[np.ndarray, np.ndarray, float]:
    """Dose array, first-frame LPS position and frame step with frames along +normal.

    The RT Dose frame offsets are measured along the normal ``row x column`` of the image
    plane. A grid whose z axis points the other way is flipped so that the offsets are
    positive and increasing, which every importer reads.
    """
    d = dose.direction_xyz
    normal = np.cross(d[:, 0], d[:, 1])
    sz = dose.spacing_zyx_mm[0]
    along = float(np.dot(d[:, 2], normal))
    if abs(abs(along) - 1.0) > _ORIENTATION_TOL:
        raise GeometryError("dose grid z axis is not perpendicular to its x and y axes")
    arr = np.asarray(dose.array)
    origin = np.asarray(dose.origin_xyz_mm, dtype=float)
    if along < 0:
        origin = origin + d[:, 2] * sz * (arr.shape[0] - 1)
        arr = arr[::-1]
    return arr, origin, sz


def write_rtdose(dose: Grid, out_path: str | os.PathLike, *,
                 reference_ct_files: list[str] | None = None,
                 frame_of_reference_uid: str | None = None, study_uid: str | None = None,
                 patient: dict | None = None, description: str = "persodose dose",
                 dose_type: str = "PHYSICAL", summation_type: str = "PLAN_OVERVIEW",
                 referenced_rt_plan_uid: str | None = None,
                 referenced_treatment_record: tuple[str, str] | None = None) -> Path:
    """Write an absorbed-dose grid as a multi-frame DICOM RT Dose file.

    Args:
        dose: absorbed dose in Gy, array ``(nz, ny, nx)``; ``kind`` DOSE (or SCALAR) and unit
            ``"Gy"``. Negative, NaN or infinite values are refused.
        out_path: file to write (written atomically; parent folders created).
        reference_ct_files: CT slices the dose was computed on. Patient and study identity
            and the FrameOfReferenceUID are copied from the first one; all must share study,
            frame of reference and orientation, and the dose grid's row/column directions must
            equal the CT's ImageOrientationPatient.
        frame_of_reference_uid: FrameOfReferenceUID to use when there is no reference CT (a
            new one is generated when neither is given). Must agree with the CT when both are.
        study_uid: StudyInstanceUID to use without a reference CT (else generated); must agree
            with the CT when both are given.
        patient: extra Patient/Study module attributes as DICOM keywords, for example
            ``{"PatientID": "P1", "PatientName": "Doe^J"}``. With a reference CT a value that
            differs from the CT's raises :class:`InputError`.
        description: SeriesDescription.
        dose_type: Dose Type (3004,0004): PHYSICAL, EFFECTIVE or ERROR.
        summation_type: Dose Summation Type (3004,000A), PLAN_OVERVIEW by default; PLAN,
            RECORD and the other plan terms are kept only with their reference (below), else
            written as PLAN_OVERVIEW (see Notes).
        referenced_rt_plan_uid: SOP Instance UID of the RT Plan the dose belongs to, written
            in the Referenced RT Plan Sequence (300C,0002).
        referenced_treatment_record: ``(SOP Class UID, SOP Instance UID)`` of the record of
            what was given, written in the Referenced Treatment Record Sequence (3008,0030);
            for a radiopharmaceutical therapy, e.g. the Radiopharmaceutical Radiation Dose
            SR of the administration (SOP class 1.2.840.10008.5.1.4.1.1.88.68).

    Returns:
        ``Path`` of the written file.

    Raises:
        InputError: NaN/negative dose, wrong unit, bad argument.
        GeometryError: dose orientation differs from the reference CT, or conflicting UIDs.
        DicomError: unreadable or inconsistent reference CT files.

    Notes:
        Standard: DICOM PS3.3 A.18 (RT Dose IOD) and C.8.8.3 (RT Dose module). The Referenced
        RT Plan Sequence is Type 1C, required for the summation types PLAN, MULTI_PLAN,
        FRACTION, BEAM, BRACHY, FRACTION_SESSION, BEAM_SESSION, BRACHY_SESSION and
        CONTROL_POINT; the Referenced Treatment Record Sequence is Type 1C, required for
        RECORD; the Plan Overview Sequence is Type 1C, required for PLAN_OVERVIEW ("dose
        calculated with respect to plan overview parameters"), and its item may reference the
        images the dose was computed on. A summation type whose reference is not given is
        therefore written as PLAN_OVERVIEW with the reference CT's slices in the Plan
        Overview's Referenced Image Sequence (:func:`_effective_summation_type`): a
        nuclear-medicine or CT dose has no RT Plan or treatment record to point to. UIDs are
        made under the project's root (:func:`persodose.io.dicom_write.new_uid`) (``docs/conformance.md``).
    """
    from pydicom.dataset import Dataset

    from persodose.io.dicom_write import new_uid

    dose_type, summation_type = _check_dose(dose, out_path, dose_type, summation_type)
    ident = _dose_identity(dose, reference_ct_files, frame_of_reference_uid, study_uid)
    images = ident.pop("_images", [])
    summation_type = _effective_summation_type(summation_type, referenced_rt_plan_uid,
                                               referenced_treatment_record, images)
    arr, first_pos, step = _frames_in_normal_order(dose)
    pixels, scaling_str = _encode_dose_pixels(arr, out_path)

    now = _dt.datetime.now()
    sop_uid = new_uid()
    ds = Dataset()
    _sop_common_module(ds, RT_DOSE_STORAGE, sop_uid, now)
    _patient_and_study_modules(ds, now, ident, patient, reference_ct_files)
    _rt_series_module(ds, description, now)
    _general_equipment_module(ds)
    _general_image_module(ds, now)
    _image_plane_module(ds, dose, first_pos, step)
    _, ny, nx = pixels.shape
    image_pixel_module(ds, ny, nx, bits=32, signed=False)
    _multi_frame_and_rt_dose_modules(ds, pixels, step, scaling_str, dose_type, summation_type)
    if referenced_rt_plan_uid:
        _referenced_rt_plan(ds, referenced_rt_plan_uid)
    if referenced_treatment_record:
        _referenced_treatment_record(ds, referenced_treatment_record)
    if summation_type == "PLAN_OVERVIEW":
        _plan_overview(ds, images)
    return write_dataset(ds, RT_DOSE_STORAGE, sop_uid, out_path)


def _effective_summation_type(requested: str, plan_uid: str | None, record, images: list) -> str:
    """The Dose Summation Type written: ``requested`` when its Type 1C reference is given
    (or it needs none), else PLAN_OVERVIEW when the reference CT's images can be referenced.

    PS3.3 C.8.8.3 (Table C.8-39) makes the Referenced RT Plan Sequence Type 1C for the
    plan-based terms (:data:`_NEEDS_PLAN`), the Referenced Treatment Record Sequence for
    RECORD, and the Plan Overview Sequence for PLAN_OVERVIEW, whose item may reference the
    images the dose was computed on instead of an RT Plan or record. A nuclear-medicine or
    CT dose has neither plan nor treatment record, so PLAN_OVERVIEW with the CT's images is
    the one term whose reference persodose holds. Without a reference CT the requested term
    is kept (the file then misses its Type 1C reference; ``docs/conformance.md``).
    """
    missing = ((requested in _NEEDS_PLAN and not plan_uid)
               or (requested == "RECORD" and not record))
    if missing and images:
        return "PLAN_OVERVIEW"
    return requested


def _plan_overview(ds, images: list[tuple[str, str]]) -> None:
    """Plan Overview Sequence (300C,0116) of the RT Dose module (PS3.3 C.8.8.3), required
    when Dose Summation Type is PLAN_OVERVIEW: one item with Plan Overview Index 1 (Type 1),
    one "fraction" (the administration, or the CT scan) in Number of Fractions Included (1C),
    the Type 2 RT Plan Label, Treatment Site, Treatment Site Code Sequence and Prescription
    Overview Sequence empty (there is no plan or prescription), and the Referenced Image
    Sequence (0008,1140) of the CT slices the dose was computed on (1C, the alternative to a
    Referenced Structure Set Sequence). The item's attributes and Types are those of dcmtk's
    ``dcmrt`` module, generated from DICOM PS3.3 2023b (``DRTPlanOverviewSequence``)."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    refs = []
    for sop_class, sop_instance in images:
        ref = Dataset()
        ref.ReferencedSOPClassUID = sop_class
        ref.ReferencedSOPInstanceUID = sop_instance
        refs.append(ref)
    item = Dataset()
    item.PlanOverviewIndex = 1
    item.RTPlanLabel = ""
    item.NumberOfFractionsIncluded = 1
    item.TreatmentSite = ""
    item.TreatmentSiteCodeSequence = Sequence([])
    item.PrescriptionOverviewSequence = Sequence([])
    if refs:  # without a reference CT there is nothing to reference (docs/conformance.md)
        item.ReferencedImageSequence = Sequence(refs)
    ds.PlanOverviewSequence = Sequence([item])


#: RT Plan Storage SOP class UID (DICOM PS3.4 annex B.5).
RT_PLAN_STORAGE = "1.2.840.10008.5.1.4.1.1.481.5"


def _referenced_rt_plan(ds, plan_uid: str) -> None:
    """Referenced RT Plan Sequence (300C,0002) of the RT Dose module (PS3.3 C.8.8.3)."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    item = Dataset()
    item.ReferencedSOPClassUID = RT_PLAN_STORAGE
    item.ReferencedSOPInstanceUID = str(plan_uid)
    ds.ReferencedRTPlanSequence = Sequence([item])


def _referenced_treatment_record(ds, record: tuple[str, str]) -> None:
    """Referenced Treatment Record Sequence (3008,0030) of the RT Dose module (PS3.3 C.8.8.3)."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    try:
        sop_class, sop_instance = (str(v) for v in record)
    except (TypeError, ValueError):
        raise InputError(f"referenced_treatment_record must be (SOP Class UID, SOP Instance UID), "
                         f"got {record!r}") from None
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    ds.ReferencedTreatmentRecordSequence = Sequence([item])


def _check_dose(dose: Grid, out_path, dose_type: str, summation_type: str) -> tuple[str, str]:
    """Refuse what cannot be written as an RT Dose; returns upper-cased Dose Type and Summation Type."""
    if not isinstance(dose, Grid):
        raise InputError(f"write_rtdose needs a Grid, got {type(dose).__name__}")
    if dose.kind not in (Kind.DOSE, Kind.SCALAR):
        raise InputError(f"write_rtdose needs an absorbed-dose grid, got kind {dose.kind.value}")
    if dose.unit not in ("Gy", ""):
        raise InputError(f"write_rtdose needs dose in Gy, got unit {dose.unit!r}")
    dose_type = str(dose_type).upper()
    summation_type = str(summation_type).upper()
    if dose_type not in _DOSE_TYPES:
        raise InputError(f"dose_type must be one of {_DOSE_TYPES}, got {dose_type!r}")
    if summation_type not in _SUMMATION_TYPES:
        raise InputError(f"summation_type must be one of {_SUMMATION_TYPES}, got {summation_type!r}")

    values = np.asarray(dose.array, dtype=np.float64)
    if values.size == 0:
        raise InputError(f"dose for {out_path} is empty")
    n_bad = int(values.size - np.count_nonzero(np.isfinite(values)))
    if n_bad:
        raise InputError(f"dose for {out_path} contains {n_bad} NaN or infinite value(s)")
    if float(values.min()) < 0.0:
        raise InputError(f"dose for {out_path} has negative values (min {values.min():.6g} Gy)")
    return dose_type, summation_type


def _dose_identity(dose: Grid, reference_ct_files: list[str] | None, frame_of_reference_uid: str | None,
                   study_uid: str | None) -> dict[str, Any]:
    """Patient/study identity and frame of reference of the dose: from the reference CT
    (checked against the dose orientation and the given UIDs) or from the given or new UIDs."""
    from persodose.io.dicom_write import new_uid

    ident: dict[str, Any] = {}
    if not reference_ct_files:
        ident["FrameOfReferenceUID"] = frame_of_reference_uid or new_uid()
        ident["StudyInstanceUID"] = study_uid or new_uid()
        ident["PositionReferenceIndicator"] = ""
        return ident
    ident = _reference_identity([str(f) for f in reference_ct_files])
    iop = ident.pop("_iop")
    d = dose.direction_xyz
    if not (np.allclose(d[:, 0], iop[:3], atol=_ORIENTATION_TOL)
            and np.allclose(d[:, 1], iop[3:], atol=_ORIENTATION_TOL)):
        raise GeometryError(
            f"dose grid orientation {np.round(np.r_[d[:, 0], d[:, 1]], 5).tolist()} differs "
            f"from the reference CT {reference_ct_files[0]} orientation {iop.tolist()}")
    if frame_of_reference_uid and frame_of_reference_uid != ident["FrameOfReferenceUID"]:
        raise GeometryError(
            f"frame_of_reference_uid {frame_of_reference_uid} differs from the reference CT "
            f"{reference_ct_files[0]} ({ident['FrameOfReferenceUID']})")
    if study_uid and study_uid != ident["StudyInstanceUID"]:
        raise GeometryError(f"study_uid {study_uid} differs from the reference CT "
                            f"{reference_ct_files[0]} ({ident['StudyInstanceUID']})")
    return ident


def _encode_dose_pixels(arr: np.ndarray, out_path) -> tuple[np.ndarray, str]:
    """Little-endian uint32 pixels ``(nz, ny, nx)`` and the Dose Grid Scaling (DS string) for
    ``arr`` in Gy: the maximum maps to about :data:`_TARGET_MAX_PIXEL`."""
    arr = np.asarray(arr, dtype=np.float64)
    vmax = float(arr.max())
    if vmax > 0:
        scaling_str = _ds_str(vmax / _TARGET_MAX_PIXEL)
        scaling = float(scaling_str)
    else:
        scaling_str, scaling = "1", 1.0
    pixels = np.rint(arr / scaling)
    if pixels.max() > np.iinfo(np.uint32).max:  # pragma: no cover - guarded by the target
        raise InputError(f"dose for {out_path} cannot be encoded in 32 bits")
    return np.ascontiguousarray(pixels.astype("<u4")), scaling_str


def _sop_common_module(ds, sop_class_uid: str, sop_uid: str, now: _dt.datetime) -> None:
    """SOP Common module (PS3.3 C.12.1)."""
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_uid
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S")


def _patient_and_study_modules(ds, now: _dt.datetime, ident: dict[str, Any], patient: dict | None,
                               reference_ct_files: list[str] | None) -> None:
    """Patient (C.7.1.1) and General Study (C.7.2.1) modules, Frame of Reference (C.7.4.1).

    Empty type-2 attributes, then the identity (from the reference CT or the given UIDs),
    then the caller's ``patient`` attributes, which must agree with a reference CT.
    """
    ds.PatientName = ""
    ds.PatientID = ""
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyDate = now.strftime("%Y%m%d")
    ds.StudyTime = now.strftime("%H%M%S")
    ds.ReferringPhysicianName = ""
    ds.StudyID = ""
    ds.AccessionNumber = ""
    for kw, val in ident.items():
        setattr(ds, kw, val)
    if patient:
        from pydicom.datadict import tag_for_keyword

        for kw, val in patient.items():
            if tag_for_keyword(kw) is None:
                raise InputError(f"patient attribute {kw!r} is not a DICOM keyword")
            if reference_ct_files and kw in ident and str(ident[kw]) != str(val):
                raise InputError(f"patient {kw}={val!r} differs from the reference CT "
                                 f"{reference_ct_files[0]} ({ident[kw]!r})")
            setattr(ds, kw, val)


def _rt_series_module(ds, description: str, now: _dt.datetime) -> None:
    """RT Series module (PS3.3 C.8.8.1), with the series date and time; Operators' Name is
    Type 2 (empty: no operator)."""
    from persodose.io.dicom_write import new_uid

    ds.Modality = "RTDOSE"
    ds.SeriesInstanceUID = new_uid()
    ds.OperatorsName = ""
    ds.SeriesNumber = 900
    ds.SeriesDescription = str(description)[:64]
    ds.SeriesDate = now.strftime("%Y%m%d")
    ds.SeriesTime = now.strftime("%H%M%S")


def _general_equipment_module(ds) -> None:
    """General Equipment module (PS3.3 C.7.5.1)."""
    ds.Manufacturer = "persodose"
    ds.ManufacturerModelName = "persodose"
    ds.SoftwareVersions = _persodose_version()


def _general_image_module(ds, now: _dt.datetime) -> None:
    """General Image module (PS3.3 C.7.6.1)."""
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    ds.InstanceNumber = 1


def _image_plane_module(ds, dose: Grid, first_pos: np.ndarray, step: float) -> None:
    """Image Plane module (PS3.3 C.7.6.2): first frame position, orientation, spacing."""
    d = dose.direction_xyz
    ds.ImagePositionPatient = [_ds_str(v) for v in first_pos]
    ds.ImageOrientationPatient = [_ds_str(v) for v in np.r_[d[:, 0], d[:, 1]]]
    sz, sy, sx = dose.spacing_zyx_mm
    ds.PixelSpacing = [_ds_str(sy), _ds_str(sx)]  # row spacing (y), column spacing (x)
    ds.SliceThickness = _ds_str(step)


def _multi_frame_and_rt_dose_modules(ds, pixels: np.ndarray, step: float, scaling_str: str,
                                     dose_type: str, summation_type: str) -> None:
    """Multi-frame (PS3.3 C.7.6.6) and RT Dose (C.8.8.3) modules, with the pixel data."""
    import pydicom

    nz = pixels.shape[0]
    ds.NumberOfFrames = nz
    ds.FrameIncrementPointer = pydicom.tag.Tag("GridFrameOffsetVector")
    ds.DoseUnits = "GY"
    ds.DoseType = dose_type
    ds.DoseSummationType = summation_type
    ds.GridFrameOffsetVector = [_ds_str(k * step) for k in range(nz)]
    ds.DoseGridScaling = scaling_str
    ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OW"


def image_pixel_module(ds, rows: int, cols: int, *, bits: int, signed: bool) -> None:
    """Image Pixel module (PS3.3 C.7.6.3) of a grey-scale image of ``bits``-bit integers."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 1 if signed else 0


def write_dataset(ds, sop_class_uid: str, sop_instance_uid: str, out_path) -> Path:
    """Give ``ds`` its file meta (explicit VR little endian) and write it atomically."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    out_path = Path(out_path)
    with atomic_file(out_path) as tmp:
        pydicom.dcmwrite(tmp, ds, enforce_file_format=True)
    return out_path


def _persodose_version() -> str:
    from importlib import metadata

    try:
        return f"persodose {metadata.version('persodose')}"
    except metadata.PackageNotFoundError:  # pragma: no cover
        return "persodose"


def _frame_offsets(ds, path: Path, ipp: np.ndarray, iop: np.ndarray, n_frames: int) -> np.ndarray:
    """Frame offsets (mm) along the slice normal, relative to the first frame.

    Implements both interpretations of Grid Frame Offset Vector in PS3.3 C.8.8.3.2.
    """
    gfov = ds.get("GridFrameOffsetVector")
    if gfov is None:
        if n_frames == 1:
            return np.zeros(1)
        raise DicomError(f"RT Dose {path} has {n_frames} frames but no GridFrameOffsetVector")
    offs = np.atleast_1d(np.asarray(gfov, dtype=float)).reshape(-1)
    if offs.size > n_frames:
        warnings.warn(f"RT Dose {path} GridFrameOffsetVector has {offs.size} values for "
                      f"{n_frames} frame(s); the first {n_frames} are used", stacklevel=3)
        offs = offs[:n_frames]
    if offs.size != n_frames:
        raise DicomError(f"RT Dose {path} GridFrameOffsetVector has {offs.size} values for "
                         f"{n_frames} frames")
    if offs[0] == 0.0:
        return offs  # relative interpretation
    # Absolute interpretation: only defined for the transverse orientation 1\0\0\0\1\0.
    if not np.allclose(iop, [1, 0, 0, 0, 1, 0], atol=_ORIENTATION_TOL):
        raise DicomError(f"RT Dose {path} has an absolute GridFrameOffsetVector (first value "
                         f"{offs[0]}) with a non-transverse orientation")
    if abs(offs[0] - ipp[2]) > 1e-3 * max(1.0, abs(ipp[2])):
        warnings.warn(f"RT Dose {path}: first GridFrameOffsetVector value {offs[0]} differs from "
                      f"the ImagePositionPatient z {ipp[2]}; frame positions taken relative to "
                      f"the first value", stacklevel=3)
    return offs - offs[0]


def read_rtdose(path: str | os.PathLike) -> Grid:
    """Read a DICOM RT Dose file into a dose grid.

    Args:
        path: RT Dose file (single or multi-frame, relative or absolute Grid Frame Offset
            Vector, PS3.3 C.8.8.3.2).

    Returns:
        ``Grid`` of kind DOSE, float64 array ``(frames, rows, columns)``, values
        ``pixel * DoseGridScaling`` in Gy. DoseUnits RELATIVE (allowed by the standard) keeps
        the unscaled relative values, with unit ``"relative"`` and a warning.

    Raises:
        InputError: missing file. DicomError: not DICOM, not RT Dose, missing or inconsistent
        attributes, non-uniform frame spacing.
    """
    p = Path(path)
    ds = _dcmread(p, "RT Dose", pixels=True)
    if ds.get("Modality") != "RTDOSE" and ds.get("SOPClassUID") != RT_DOSE_STORAGE:
        raise DicomError(f"{p} is not an RT Dose file (Modality {ds.get('Modality')!r})")
    for kw in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows",
               "Columns", "PixelData"):
        if kw not in ds:
            raise DicomError(f"RT Dose {p} has no {kw}")
    if "DoseGridScaling" not in ds:
        raise DicomError(f"RT Dose {p} has no DoseGridScaling")
    try:
        pix = np.asarray(ds.pixel_array)
    except Exception as exc:
        raise DicomError(f"RT Dose {p} pixel data cannot be decoded: {exc}") from exc
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if pix.ndim == 2:
        pix = pix[None]
    if pix.shape != (n_frames, int(ds.Rows), int(ds.Columns)):
        raise DicomError(f"RT Dose {p} pixel data shape {pix.shape} does not match "
                         f"{n_frames} frames of {ds.Rows}x{ds.Columns}")
    scaling = float(ds.DoseGridScaling)
    values = pix.astype(np.float64) * scaling

    ipp = np.asarray(ds.ImagePositionPatient, dtype=float)
    iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
    if ipp.size != 3 or iop.size != 6:
        raise DicomError(f"RT Dose {p} has a malformed ImagePositionPatient/ImageOrientationPatient")
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    if not np.isclose(np.linalg.norm(normal), 1.0, atol=1e-3):
        raise DicomError(f"RT Dose {p} ImageOrientationPatient is not orthonormal")
    sy, sx = (float(v) for v in ds.PixelSpacing)
    offs = _frame_offsets(ds, p, ipp, iop, n_frames)

    if n_frames > 1:
        steps = np.diff(offs)
        step = float(np.mean(steps))
        if step == 0 or np.max(np.abs(steps - step)) > 1e-3 * max(1.0, abs(step)):
            raise DicomError(f"RT Dose {p} frames are not evenly spaced (offsets {offs.tolist()})")
    else:
        st = ds.get("SliceThickness")
        step = float(st) if st not in (None, "") and float(st) > 0 else 1.0
    z_dir = normal if step > 0 else -normal
    origin = ipp  # the first frame lies at ImagePositionPatient in both interpretations
    direction = np.column_stack([row_dir, col_dir, z_dir])

    units = str(ds.get("DoseUnits", "GY")).upper()
    unit = "Gy"
    if units == "RELATIVE":
        warnings.warn(f"RT Dose {p} has DoseUnits RELATIVE; values are relative, not Gy",
                      stacklevel=2)
        unit = "relative"
    elif units == "CGY":  # not a defined term, but written by some systems
        values = values * 0.01
    elif units != "GY":
        raise DicomError(f"RT Dose {p} has unknown DoseUnits {units!r}")
    try:
        return Grid(values, (abs(step), sy, sx), tuple(origin), direction, Kind.DOSE, unit)
    except GeometryError as exc:
        raise DicomError(f"RT Dose {p} has an unusable geometry: {exc}") from exc
