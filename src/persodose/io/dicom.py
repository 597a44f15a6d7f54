"""Read DICOM image series (CT, PET, NM/SPECT tomograms) into :class:`~persodose.grid.Grid`.

What is read and how:

* **CT** (one file per slice): stored values are turned into HU with each slice's
  Rescale Slope/Intercept (DICOM PS3.3 C.11.1, Modality LUT), which the CT Image module
  requires (Type 1, PS3.3 C.8.2.1): a slice without them, or with a slope that is zero or
  not a finite number, is refused by name; slices are ordered by their
  position along the slice normal (the cross product of the two Image Orientation (Patient)
  vectors, PS3.3 C.7.6.2.1.1), never by Instance Number. Gantry tilt, missing slices,
  uneven or duplicate slice positions and mixed orientations are refused.
* **PET** (one file per slice): like CT, with a per-slice Rescale Slope (PS3.3 C.8.9.4,
  which lets every slice have its own slope and makes Rescale Slope/Intercept Type 1) and
  Units (0054,1001). The SUVbw factor follows
  the vendor-neutral QIBA pseudo-code ("Standardized Uptake Value (SUV)", QIBA FDG-PET/CT
  Technical Committee, 2013): SUVbw = C[Bq/mL] * weight[g] / A_inj[Bq] with the injected
  activity decayed from injection to the decay-correction reference time.
* **NM tomograms** (one multi-frame file, Image Type value 3 ``RECON TOMO``): geometry from
  the Detector Information Sequence (PS3.3 C.8.4.11), slice spacing from Spacing Between
  Slices or Slice Thickness; values in counts unless Units is ``BQML``; counts are
  converted to Bq/mL with a user calibration (cps/MBq). The NM Image IOD has no Modality
  LUT module, so a missing Rescale Slope/Intercept means 1/0 (stored values as they are); a
  zero or non-finite slope is refused.
* **Vendor conventions** (:mod:`persodose.io.vendor`): NM Real World Value Mappings in
  Bq/ml, kBq/ml or MBq/ml in any item (Siemens xSPECT), Philips PET in counts with its
  Activity Concentration Scale Factor, GE's private Scan DateTime for post-processed PET,
  per-slice acquisition times of multi-bed and continuous-bed-motion PET
  (``SeriesInfo.extra``: ``slice_mid_datetimes``, ``acquisition_span_s``, ``bed_positions``).
* **Negative activity** (PET and NM, in Bq/mL or counts) is refused, naming the file and the
  minimum: activity cannot be negative, and it usually means a wrong Rescale Intercept.
  Values above ``-1e-6`` times the image maximum (float rounding) are set to 0 instead.

Scanning a folder skips files that are not DICOM (text, JSON sidecars, DICOMDIR is read and
ignored) but refuses, by name, a file that is DICOM (``DICM`` prefix, or a dataset written
without the preamble) and cannot be read or is incomplete: an image file without Series
Instance UID or Rows/Columns, a Part-10 file without SOP Class UID, pixel data shorter than
Rows x Columns x frames needs. A truncated slice is never dropped silently.

All problems with the input raise :class:`~persodose.errors.DicomError` (or
:class:`~persodose.errors.UnitsError` for units) with a one-line message naming the file, or
the series together with the folder that holds it (:meth:`SeriesInfo.label`).
"""

from __future__ import annotations

import datetime
import math
import os
import re
import struct
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from persodose.errors import DicomError, InputError, UnitsError, require_finite
from persodose.grid import Grid, Kind

__all__ = [
    "DicomWarning",
    "SeriesInfo",
    "Series",
    "list_series",
    "read_series",
    "read_ct",
    "read_pet",
    "read_nm",
    "require_acquisition_time",
    "nuclide_from_dicom_text",
]

#: Modalities that :func:`read_series` can turn into a grid.
SUPPORTED_MODALITIES = ("CT", "PT", "NM")

#: Largest allowed offset of a slice position from the line through the first slice along
#: the slice normal, as a fraction of the smallest pixel spacing; larger offsets mean gantry
#: tilt (or a sheared stack).
_TILT_TOL_PIXEL_FRACTION = 0.1
#: Slice gaps larger than this multiple of the median gap are missing slices.
_GAP_FACTOR = 1.5
#: Slice gaps that differ from the median by more than this fraction (or by more than
#: ``_SPACING_ATOL_MM``) make the spacing uneven.
_SPACING_RTOL = 0.02
_SPACING_ATOL_MM = 0.02
#: Two slices closer than this along the normal share a position (duplicates), mm.
_DUPLICATE_MM = 1e-3
#: Orientation cosines that differ by less than this are the same orientation.
_ORIENTATION_ATOL = 1e-4


class DicomWarning(UserWarning):
    """Something in a DICOM input was dropped or assumed; the result is still usable."""


# ---------------------------------------------------------------------------- dataclasses
@dataclass
class SeriesInfo:
    """What persodose needs to know about one DICOM image series.

    Attributes:
        modality: ``"CT"``, ``"PT"`` or ``"NM"`` (other modalities only appear in
            :func:`list_series`).
        units: unit of the grid values: ``"HU"``, ``"Bq/mL"`` or ``"counts"`` (for PET with
            an unsupported Units value, that value as written, e.g. ``"GML"``).
        acquisition_datetime: earliest acquisition date/time of the series, naive, as
            written in DICOM (no time-zone conversion); ``None`` when absent.
        radionuclide: normalised name such as ``"F-18"``, ``"Lu-177"``, ``"Tc-99m"``.
        half_life_s: Radionuclide Half Life (0018,1075), s.
        injected_activity_bq: Radionuclide Total Dose (0018,1074), Bq (MBq in NM files per
            PS3.3 C.8.4.10.1.7, converted here).
        injection_datetime: Radiopharmaceutical Start DateTime (or Start Time on the
            series date), naive.
        decay_correction: ``"START"``, ``"ADMIN"`` or ``"NONE"`` (PET), else ``None``.
        decay_correction_datetime: the time the image values are decay-corrected to.
        frame_duration_s: acquisition time behind the image, s: PET Actual Frame Duration
            (0018,1242); NM tomography the whole acquisition (time per view x views).
        suv_bw_factor: g/mL per Bq/mL; multiply Bq/mL to get SUVbw.
        gantry_tilt_deg: Gantry/Detector Tilt (0018,1120), or the tilt measured from the
            slice positions when that is larger, degrees.
        files: the files of the series, in the grid's z order for CT/PET.
        extra: for CT the acquisition parameters; per-slice lists (grid z order) for
            ``xray_tube_current_ma``, ``exposure_time_ms``, ``exposure_mas``,
            ``ctdivol_mgy``; scalars (first slice) for ``kvp``, ``spiral_pitch_factor``,
            ``total_collimation_mm``, ``single_collimation_mm``, ``rotation_time_s``,
            ``data_collection_diameter_mm``, ``filter_type``, ``convolution_kernel``,
            ``manufacturer``, ``model``. Keys are present only when the tag is.
    """

    modality: str
    series_instance_uid: str = ""
    study_instance_uid: str = ""
    frame_of_reference_uid: str = ""
    patient_id: str = ""
    patient_name: str = ""
    patient_weight_kg: float | None = None
    patient_height_m: float | None = None
    patient_sex: str | None = None
    patient_age_y: float | None = None
    acquisition_datetime: datetime.datetime | None = None
    series_description: str = ""
    units: str = ""
    radionuclide: str | None = None
    half_life_s: float | None = None
    injected_activity_bq: float | None = None
    injection_datetime: datetime.datetime | None = None
    decay_correction: str | None = None
    decay_correction_datetime: datetime.datetime | None = None
    frame_duration_s: float | None = None
    suv_bw_factor: float | None = None
    gantry_tilt_deg: float = 0.0
    files: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def label(self) -> str:
        """Short one-line description used in messages, with where the series lies.

        ``series <uid> (<modality>, '<description>') in <place>``, where the place is the
        folder holding the series' files (their common folder), or the file itself for a
        one-file series.
        """
        where = _location(self.files)
        text = f"series {self.series_instance_uid} ({self.modality}, {self.series_description!r})"
        return f"{text} in {where}" if where else text


def _location(files: list[str]) -> str:
    """The one file, or the folder the files have in common ("" for none)."""
    if not files:
        return ""
    if len(files) == 1:
        return str(files[0])
    try:
        return os.path.commonpath([os.path.dirname(str(f)) or "." for f in files])
    except ValueError:  # absolute and relative paths mixed, or different drives
        return os.path.dirname(str(files[0]))


@dataclass
class Series:
    """A grid and the information it was read with."""

    grid: Grid
    info: SeriesInfo


# ---------------------------------------------------------------------------- nuclide names
#: Element names and symbols (IUPAC periodic table) for the elements whose radionuclides
#: are used in nuclear medicine imaging and therapy.
_ELEMENTS = {
    "hydrogen": "H", "carbon": "C", "nitrogen": "N", "oxygen": "O", "fluorine": "F",
    "sodium": "Na", "phosphorus": "P", "potassium": "K", "scandium": "Sc", "titanium": "Ti",
    "chromium": "Cr", "cobalt": "Co", "copper": "Cu", "gallium": "Ga", "germanium": "Ge",
    "arsenic": "As", "selenium": "Se", "bromine": "Br", "krypton": "Kr", "rubidium": "Rb",
    "strontium": "Sr", "yttrium": "Y", "zirconium": "Zr", "molybdenum": "Mo",
    "technetium": "Tc", "indium": "In",
    "iodine": "I", "xenon": "Xe", "samarium": "Sm", "terbium": "Tb", "holmium": "Ho",
    "erbium": "Er", "thulium": "Tm", "lutetium": "Lu", "rhenium": "Re", "thallium": "Tl",
    "lead": "Pb", "bismuth": "Bi", "astatine": "At", "radium": "Ra", "actinium": "Ac",
    "thorium": "Th",
}
_SYMBOLS = {s.lower(): s for s in _ELEMENTS.values()}
_NAME_BY_SYMBOL = {s: n.capitalize() for n, s in _ELEMENTS.items()}

#: Legacy SNOMED-RT (coding scheme "SRT") radionuclide codes still found in older files
#: (DICOM PS3.16 CID 4020, editions before the 2019 move to SNOMED CT).
_LEGACY_SRT_CODES = {"C-111A1": "F-18", "C-131A3": "Ga-68"}

#: Radiopharmaceutical names that fix the nuclide, used only when no nuclide is coded.
_PHARMACEUTICAL_NUCLIDE = {"fdg": "F-18", "fluorodeoxyglucose": "F-18"}

_MASS = r"(\d{1,3})\s*([mM](?![a-z]))?"


def _format_nuclide(symbol: str, mass: str, meta: str | None) -> str:
    return f"{symbol}-{int(mass)}{'m' if meta else ''}"


def nuclide_from_dicom_text(text: str | None) -> str | None:
    """A radionuclide name as written in a DICOM header, in the ``"F-18"``, ``"Tc-99m"`` style.

    Lenient, for headers: ``None`` when nothing is recognised. For a name a user typed, use
    the strict :func:`persodose.physics.radionuclides.normalise_nuclide_name` (it raises).

    Understands DICOM code meanings (``"^18^Fluorine"``, ``"Fluorine^18^[18F]"``,
    ``"^99m^Technetium"``), plain names (``"Lutetium-177"``) and symbols (``"Lu177"``,
    ``"177Lu"``, ``"Tc-99m"``, ``"18F-FDG"``).

    Args:
        text: the name as written.

    Returns:
        The normalised name, or ``None`` when no element and mass number are recognised.
    """
    if text is None:
        return None
    s = str(text).strip()
    if not s:
        return None
    low = s.lower()
    # 1. an element name with a mass number next to it (either side)
    for name in sorted(_ELEMENTS, key=len, reverse=True):
        pos = low.find(name)
        if pos < 0:
            continue
        sym = _ELEMENTS[name]
        after = re.match(r"[\W_]*" + _MASS, s[pos + len(name):])
        if after:
            return _format_nuclide(sym, after.group(1), after.group(2))
        before = re.search(_MASS + r"[\W_]*$", s[:pos])
        if before:
            return _format_nuclide(sym, before.group(1), before.group(2))
        anywhere = re.search(r"(?<![\d.])" + _MASS, s)
        if anywhere:
            return _format_nuclide(sym, anywhere.group(1), anywhere.group(2))
    # 2. mass number before a symbol: "177Lu", "99mTc", "18F-FDG"
    for m in re.finditer(r"(?<![A-Za-z0-9.])(\d{1,3})([mM])?[-\s]?([A-Za-z]{1,2})(?![a-z])", s):
        sym = _SYMBOLS.get(m.group(3).lower())
        if sym:
            return _format_nuclide(sym, m.group(1), m.group(2))
    # 3. symbol before the mass number: "Lu-177", "Lu177", "Tc-99m", "F18"
    for m in re.finditer(r"(?<![A-Za-z])([A-Za-z]{1,2})[-\s]?(\d{1,3})([mM])?(?![A-Za-z0-9])", s):
        sym = _SYMBOLS.get(m.group(1).lower())
        if sym:
            return _format_nuclide(sym, m.group(2), m.group(3))
    return None


_SCT_NUCLIDES: dict[str, str] | None = None


def _sct_nuclide_codes() -> dict[str, str]:
    """SNOMED CT code value -> normalised nuclide, from pydicom's DICOM code dictionary."""
    global _SCT_NUCLIDES
    if _SCT_NUCLIDES is None:
        table: dict[str, str] = {}
        try:
            from pydicom.sr.codedict import codes

            for attr in dir(codes.SCT):
                m = re.fullmatch(r"_(\d{1,3})(m?)([A-Z][a-z]+)", attr)
                if m and m.group(3).lower() in _ELEMENTS:
                    code = getattr(codes.SCT, attr)
                    table[str(code.value)] = _format_nuclide(
                        _ELEMENTS[m.group(3).lower()], m.group(1), m.group(2))
        except Exception:  # pragma: no cover - pydicom without the code dictionary
            table = {}
        _SCT_NUCLIDES = table
    return _SCT_NUCLIDES


def _nuclide_from_code(value: str | None) -> str | None:
    if not value:
        return None
    value = str(value).strip()
    return _LEGACY_SRT_CODES.get(value) or _sct_nuclide_codes().get(value)


# ---------------------------------------------------------------------------- small helpers
def _existing(path: Any) -> Path:
    p = Path(path)
    if not p.exists():
        raise InputError(f"DICOM input does not exist: {p}")
    return p


def _get(ds: Any, keyword: str, default: Any = None) -> Any:
    """A tag's value or ``default`` when absent or empty."""
    if ds is None:
        return default
    try:
        value = ds.get(keyword, None)
    except Exception:  # malformed element
        return default
    if value is None or value == "":
        return default
    return value


def _float(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _str(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _first_item(ds: Any, keyword: str) -> Any:
    seq = _get(ds, keyword)
    if seq is None:
        return None
    try:
        return seq[0] if len(seq) else None
    except TypeError:
        return None


def _image_types(ds: Any) -> list[str]:
    value = _get(ds, "ImageType", [])
    if isinstance(value, str):
        value = value.split("\\")
    return [str(v).strip().upper() for v in value]


def _parse(kind: str, text: Any, where: str) -> Any:
    """Parse a DA/TM/DT string with pydicom's value representations."""
    from pydicom.valuerep import DA, DT, TM

    if text is None:
        return None
    s = str(text).strip()
    if not s:
        return None
    try:
        value = {"DA": DA, "TM": TM, "DT": DT}[kind](s)
    except (ValueError, TypeError) as exc:
        raise DicomError(f"{where}: cannot read {kind} value {s!r} ({exc})") from exc
    if value is None:
        return None
    if kind == "DA":
        return datetime.date(value.year, value.month, value.day)
    if kind == "TM":
        return datetime.time(value.hour, value.minute, value.second, value.microsecond)
    return datetime.datetime(value.year, value.month, value.day, value.hour, value.minute,
                             value.second, value.microsecond)


def _combine(date: datetime.date | None, time: datetime.time | None) -> datetime.datetime | None:
    if date is None or time is None:
        return None
    return datetime.datetime.combine(date, time)


def _where(ds: Any, fallback: str = "") -> str:
    name = getattr(ds, "filename", None)
    return str(name) if isinstance(name, str) and name else fallback


def _acquisition_dt(ds: Any) -> datetime.datetime | None:
    """AcquisitionDateTime, else AcquisitionDate (or SeriesDate/StudyDate) + AcquisitionTime."""
    where = _where(ds)
    dt = _parse("DT", _get(ds, "AcquisitionDateTime"), where + " AcquisitionDateTime")
    if dt is not None:
        return dt
    time = _parse("TM", _get(ds, "AcquisitionTime"), where + " AcquisitionTime")
    if time is None:
        return None
    for tag in ("AcquisitionDate", "SeriesDate", "StudyDate"):
        date = _parse("DA", _get(ds, tag), f"{where} {tag}")
        if date is not None:
            return _combine(date, time)
    return None


def _series_dt(ds: Any) -> datetime.datetime | None:
    where = _where(ds)
    return _combine(_parse("DA", _get(ds, "SeriesDate"), where + " SeriesDate"),
                    _parse("TM", _get(ds, "SeriesTime"), where + " SeriesTime"))


def _age_years(value: Any) -> float | None:
    """Patient's Age (AS: ``nnnD``, ``nnnW``, ``nnnM`` or ``nnnY``) in years."""
    m = re.fullmatch(r"\s*(\d{1,3})\s*([DWMY])?\s*", _str(value).upper())
    if not m:
        return None
    n = float(m.group(1))
    per_year = {"D": 365.25, "W": 365.25 / 7.0, "M": 12.0, "Y": 1.0, None: 1.0}[m.group(2)]
    return n / per_year


def _positive(value: Any) -> float | None:
    v = _float(value)
    return v if v is not None and v > 0 else None


# ---------------------------------------------------------------------------- scanning
#: Media Storage SOP Class of a DICOMDIR (Basic Directory IOD, PS3.10 / PS3.3 F.3): it
#: carries no SOP Class UID in its dataset and is skipped when scanning.
_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
#: Image Storage SOP Classes (PS3.4 B.5) that hold CT, PET or NM pixel data. A file of one of
#: these classes without Series Instance UID or Rows/Columns is incomplete (truncated).
_IMAGE_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.2": "CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.2": "Legacy Converted Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.128": "Positron Emission Tomography Image Storage",
    "1.2.840.10008.5.1.4.1.1.128.1": "Legacy Converted Enhanced PET Image Storage",
    "1.2.840.10008.5.1.4.1.1.130": "Enhanced PET Image Storage",
    "1.2.840.10008.5.1.4.1.1.20": "Nuclear Medicine Image Storage",
}
#: Value representations (PS3.5 6.2), to recognise an explicit-VR element.
_VRS = {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT",
        b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST",
        b"SV", b"TM", b"UC", b"UI", b"UL", b"UN", b"UR", b"US", b"UT", b"UV"}


def _has_dicm_prefix(path: Path) -> bool:
    """A DICOM Part-10 file: 128-byte preamble, then ``DICM`` (PS3.10 7.1)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _looks_like_raw_dataset(path: Path) -> bool:
    """A file without the 128-byte preamble that starts with a group 0002 or 0008 element.

    The first element must look like one: explicit VR (a known two-letter VR after the tag)
    or implicit VR (a 32-bit length that fits in the file), little or big endian.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
        size = path.stat().st_size
    except OSError:
        return False
    if len(head) < 8 or head[:2] not in (b"\x02\x00", b"\x08\x00", b"\x00\x02", b"\x00\x08"):
        return False
    if head[4:6] in _VRS:
        return True
    order = "<" if head[:2] in (b"\x02\x00", b"\x08\x00") else ">"
    (length,) = struct.unpack(order + "I", head[4:8])
    return length == 0xFFFFFFFF or length <= size - 8


def _set_transfer_syntax(ds) -> None:
    """Give a dataset read without file meta the transfer syntax it was read with."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    if "TransferSyntaxUID" in getattr(ds, "file_meta", {}):
        return
    implicit, little = ds.original_encoding
    meta = getattr(ds, "file_meta", None) or FileMetaDataset()
    meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit else
                              ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    ds.file_meta = meta


def _sop_class(ds) -> str:
    """SOP Class UID of the dataset, else the Media Storage SOP Class UID of its file meta."""
    value = _str(_get(ds, "SOPClassUID"))
    if not value:
        value = _str(_get(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID"))
    return value


def _check_complete(ds, path: Path) -> None:
    """Refuse a DICOM file that pydicom read only in part (pydicom stops at the end of a
    truncated file without an error, so the missing attributes tell)."""
    sop = _sop_class(ds)
    if sop == _DICOMDIR_SOP_CLASS or path.name.upper() == "DICOMDIR":
        return
    if not sop:
        what = "no data after its file meta" if len(ds) == 0 else "no SOP Class UID"
        raise DicomError(f"{path} is an incomplete DICOM file ({what}): truncated or corrupt")
    if not re.fullmatch(r"[0-2](\.(0|[1-9][0-9]*))+", sop) or len(sop) > 64:
        raise DicomError(f"{path} has a malformed SOP Class UID {sop!r}: truncated or corrupt")
    name = _IMAGE_SOP_CLASSES.get(sop)
    if name is None:
        return
    if not _is_image(ds):
        raise DicomError(f"{path} has no pixel data (no Rows/Columns) though it is a {name} "
                         "file: truncated or corrupt")
    if not _str(_get(ds, "SeriesInstanceUID")):
        raise DicomError(f"{path} is a {name} file without Series Instance UID: truncated "
                         "or corrupt")


def _read_header(path: Path, *, strict: bool, pixels: bool = False):
    """Read one file; ``None`` for a file that is not DICOM unless ``strict``.

    A file that is DICOM (``DICM`` prefix or a dataset without preamble) but cannot be read,
    or is incomplete, raises :class:`DicomError` whether ``strict`` or not.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=not pixels)
    except InvalidDicomError as exc:
        if not _looks_like_raw_dataset(path):
            if strict:
                raise DicomError(f"not a DICOM file: {path}") from exc
            return None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # force=True warns about the missing preamble
                ds = pydicom.dcmread(path, stop_before_pixels=not pixels, force=True)
        except Exception as exc2:  # noqa: BLE001 - pydicom raises many types for corrupt files
            raise DicomError(f"cannot read {path}: it looks like a DICOM dataset without "
                             f"preamble but is corrupt or truncated ({type(exc2).__name__}: "
                             f"{exc2})".replace("\n", " ")) from None
        if "SOPClassUID" not in ds and "SeriesInstanceUID" not in ds:
            raise DicomError(f"{path} looks like a DICOM dataset without preamble but has no "
                             "SOP Class UID or Series Instance UID: truncated or corrupt")
        _set_transfer_syntax(ds)
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt files raise many types
        if not strict and not _has_dicm_prefix(path):
            return None
        raise DicomError(f"cannot read DICOM file {path} (corrupt or truncated?): "
                         f"{type(exc).__name__}: {exc}".replace("\n", " ")) from None
    _check_complete(ds, path)
    return ds


def _scan(path: Path) -> "OrderedDict[str, list[tuple[Path, Any]]]":
    """Group the DICOM files under ``path`` by SeriesInstanceUID (headers only)."""
    groups: "OrderedDict[str, list[tuple[Path, Any]]]" = OrderedDict()
    if path.is_file():
        files: Iterable[Path] = [path]
        strict = True
    else:
        files = sorted(p for p in path.rglob("*") if p.is_file())
        strict = False
    for f in files:
        ds = _read_header(f, strict=strict)
        if ds is None:
            continue
        uid = _str(_get(ds, "SeriesInstanceUID")) or f"<no SeriesInstanceUID: {f}>"
        groups.setdefault(uid, []).append((f, ds))
    return groups


def _is_image(ds: Any) -> bool:
    return "Rows" in ds and "Columns" in ds


# ---------------------------------------------------------------------------- geometry
def _orientation(ds: Any, where: str) -> np.ndarray:
    iop = _get(ds, "ImageOrientationPatient")
    if iop is None or len(iop) != 6:
        raise DicomError(f"{where} has no valid ImageOrientationPatient")
    v = np.asarray([float(x) for x in iop], dtype=float)
    row, col = v[:3], v[3:]
    if not (np.isclose(np.linalg.norm(row), 1, atol=1e-3) and np.isclose(np.linalg.norm(col), 1, atol=1e-3)
            and abs(float(row @ col)) < 1e-3):
        raise DicomError(f"{where} has a non-orthonormal ImageOrientationPatient {list(v)}")
    row = row / np.linalg.norm(row)
    col = col - (col @ row) * row
    col = col / np.linalg.norm(col)
    return np.concatenate([row, col])


def _position(ds: Any, where: str) -> np.ndarray:
    ipp = _get(ds, "ImagePositionPatient")
    if ipp is None or len(ipp) != 3:
        raise DicomError(f"{where} has no valid ImagePositionPatient")
    return np.asarray([float(x) for x in ipp], dtype=float)


def _pixel_spacing(ds: Any, where: str) -> tuple[float, float]:
    ps = _get(ds, "PixelSpacing")
    if ps is None or len(ps) != 2:
        raise DicomError(f"{where} has no valid PixelSpacing")
    row_mm, col_mm = float(ps[0]), float(ps[1])
    if not (row_mm > 0 and col_mm > 0 and math.isfinite(row_mm) and math.isfinite(col_mm)):
        raise DicomError(f"{where} has an invalid PixelSpacing {row_mm}, {col_mm}")
    return row_mm, col_mm


def _normal_positions(headers: list[Any]) -> np.ndarray | None:
    """Slice positions along the normal, or ``None`` when the geometry tags are missing."""
    try:
        iop = _orientation(headers[0], "")
        n = np.cross(iop[:3], iop[3:])
        return np.asarray([_position(ds, "") @ n for ds in headers])
    except DicomError:
        return None


def _sort_for_listing(items: list[tuple[Path, Any]]) -> list[tuple[Path, Any]]:
    """Best-effort order (no validation): normal position, else InstanceNumber, else name."""
    pos = _normal_positions([ds for _, ds in items])
    if pos is not None:
        order = np.argsort(pos, kind="stable")
        return [items[i] for i in order]

    def key(it):
        inst = _float(_get(it[1], "InstanceNumber"))
        return (inst if inst is not None else math.inf, str(it[0]))

    return sorted(items, key=key)


@dataclass
class _Stack:
    headers: list[Any]
    files: list[Path]
    origin_xyz_mm: tuple[float, float, float]
    spacing_zyx_mm: tuple[float, float, float]
    direction_xyz: np.ndarray
    tilt_deg: float


def _stack_geometry(items: list[tuple[Path, Any]], label: str) -> _Stack:
    """Order single-frame slices along their normal and check that they form a volume."""
    oris = [_orientation(ds, str(f)) for f, ds in items]
    ref = oris[0]
    if any(not np.allclose(o, ref, atol=_ORIENTATION_ATOL) for o in oris[1:]):
        n_distinct = len({tuple(np.round(o, 3)) for o in oris})
        raise DicomError(f"{label} mixes {n_distinct} image orientations; it is not one volume")
    rows = {int(ds.Rows) for _, ds in items}
    cols = {int(ds.Columns) for _, ds in items}
    if len(rows) > 1 or len(cols) > 1:
        raise DicomError(f"{label} mixes image sizes (Rows {sorted(rows)}, Columns {sorted(cols)})")
    spacings = {_pixel_spacing(ds, str(f)) for f, ds in items}
    if len({(round(a, 5), round(b, 5)) for a, b in spacings}) > 1:
        raise DicomError(f"{label} mixes pixel spacings {sorted(spacings)}")
    row_mm, col_mm = next(iter(spacings))
    row_dir, col_dir = ref[:3], ref[3:]
    normal = np.cross(row_dir, col_dir)
    ipp = np.asarray([_position(ds, str(f)) for f, ds in items])
    along = ipp @ normal
    order = np.argsort(along, kind="stable")
    items = [items[i] for i in order]
    ipp, along = ipp[order], along[order]
    tilt_tag = abs(_float(_get(items[0][1], "GantryDetectorTilt")) or 0.0)
    n = len(items)
    if n == 1:
        ds = items[0][1]
        dz = _positive(_get(ds, "SpacingBetweenSlices")) or _positive(_get(ds, "SliceThickness")) or 1.0
        return _Stack([ds], [items[0][0]], tuple(ipp[0]), (dz, row_mm, col_mm),
                      np.column_stack([row_dir, col_dir, normal]), tilt_tag)
    rel = ipp - ipp[0]
    perp = rel - np.outer(rel @ normal, normal)
    perp_mm = np.linalg.norm(perp, axis=1)
    span = abs(float(along[-1] - along[0]))
    tilt_deg = math.degrees(math.atan2(float(perp_mm[-1]), span)) if span > 0 else 0.0
    if float(perp_mm.max()) > _TILT_TOL_PIXEL_FRACTION * min(row_mm, col_mm):
        raise DicomError(
            f"{label} has gantry tilt of {tilt_deg:.2f} deg (slice positions are not along the "
            f"slice normal); resample it to an orthogonal grid before use")
    gaps = np.diff(along)
    if np.any(gaps < _DUPLICATE_MM):
        n_dup = int(np.sum(gaps < _DUPLICATE_MM))
        nts = _get(items[0][1], "NumberOfTimeSlices")
        hint = f" (NumberOfTimeSlices={nts}: dynamic/gated series are not supported)" if nts else ""
        raise DicomError(f"{label} has {n_dup} duplicate slice position(s){hint}; "
                         "several volumes in one series?")
    median = float(np.median(gaps))
    worst = int(np.argmax(gaps))
    if gaps[worst] > _GAP_FACTOR * median:
        raise DicomError(
            f"{label} is missing slice(s): gap of {gaps[worst]:.3f} mm between slice positions "
            f"{along[worst]:.3f} and {along[worst + 1]:.3f} mm (median spacing {median:.3f} mm)")
    dev = np.abs(gaps - median)
    if np.any(dev > max(_SPACING_ATOL_MM, _SPACING_RTOL * median)):
        raise DicomError(
            f"{label} has uneven slice spacing ({gaps.min():.3f} to {gaps.max():.3f} mm); "
            "resample it to a regular grid before use")
    dz = span / (n - 1)
    return _Stack([ds for _, ds in items], [f for f, _ in items], tuple(ipp[0]),
                  (dz, row_mm, col_mm), np.column_stack([row_dir, col_dir, normal]),
                  max(tilt_tag, tilt_deg))


# ---------------------------------------------------------------------------- series info
def _radiopharmaceutical(ds: Any, modality: str, series_start: datetime.datetime | None,
                         info: SeriesInfo) -> None:
    where = _where(ds, info.label())
    item = _first_item(ds, "RadiopharmaceuticalInformationSequence")
    texts: list[str] = []
    code = _first_item(item, "RadionuclideCodeSequence") if item is not None else None
    nuclide = None
    if code is not None:
        meaning = _str(_get(code, "CodeMeaning"))
        if meaning:
            texts.append(meaning)
        nuclide = nuclide_from_dicom_text(meaning) or _nuclide_from_code(_get(code, "CodeValue"))
    if nuclide is None:
        for owner, tag in ((item, "Radiopharmaceutical"), (ds, "Radionuclide")):
            text = _str(_get(owner, tag))
            if text:
                texts.append(text)
                nuclide = (nuclide_from_dicom_text(text)
                           or _PHARMACEUTICAL_NUCLIDE.get(re.sub(r"[^a-z]", "", text.lower())))
                if nuclide:
                    break
    info.radionuclide = nuclide
    if nuclide is None and texts:
        info.extra["radionuclide_text"] = texts[0]
        warnings.warn(f"{info.label()}: cannot tell the radionuclide from {texts[0]!r}",
                      DicomWarning, stacklevel=4)
    if item is None:
        return
    info.half_life_s = _positive(_get(item, "RadionuclideHalfLife"))
    dose = _positive(_get(item, "RadionuclideTotalDose"))
    if dose is not None and modality == "NM":
        # NM Isotope module: MBq (PS3.3 C.8.4.10.1.7). Values this large can only be Bq.
        if dose > 1e5:
            warnings.warn(f"{info.label()}: RadionuclideTotalDose {dose:g} read as Bq, "
                          "not MBq as DICOM specifies for NM", DicomWarning, stacklevel=4)
        else:
            dose *= 1e6
    info.injected_activity_bq = dose
    inj = _parse("DT", _get(item, "RadiopharmaceuticalStartDateTime"),
                 where + " RadiopharmaceuticalStartDateTime")
    if inj is None:
        time = _parse("TM", _get(item, "RadiopharmaceuticalStartTime"),
                      where + " RadiopharmaceuticalStartTime")
        date = None
        for tag in ("SeriesDate", "AcquisitionDate", "StudyDate"):
            date = _parse("DA", _get(ds, tag), f"{where} {tag}")
            if date is not None:
                break
        inj = _combine(date, time)
        if inj is not None and series_start is not None and inj > series_start:
            inj -= datetime.timedelta(days=1)  # injected before midnight, scanned after
    info.injection_datetime = inj


def _suv_factor(info: SeriesInfo) -> float | None:
    """weight[g] / A_inj[Bq] decayed from injection to the decay-correction time (QIBA)."""
    if None in (info.patient_weight_kg, info.injected_activity_bq, info.half_life_s,
                info.injection_datetime, info.decay_correction_datetime):
        return None
    dt_s = (info.decay_correction_datetime - info.injection_datetime).total_seconds()
    decayed_bq = info.injected_activity_bq * 2.0 ** (-dt_s / info.half_life_s)
    return info.patient_weight_kg * 1000.0 / decayed_bq


def _units_label(modality: str, ds: Any) -> str:
    if modality == "CT":
        return "HU"
    units = _str(_get(ds, "Units")).upper()
    if units == "BQML":
        return "Bq/mL"
    if modality == "NM" and _rwvm_bqml(ds) is not None:
        return "Bq/mL"
    if units in ("CNTS", "") and modality in ("PT", "NM"):
        return "counts"
    return units


def _rwvm_bqml(ds: Any) -> tuple[float, float] | None:
    """(slope, intercept) of a Real World Value Mapping to Bq/mL, if the file has one
    (any item, UCUM Bq/ml, kBq/ml or MBq/ml: :func:`persodose.io.vendor.rwvm_bqml`)."""
    from persodose.io.vendor import rwvm_bqml

    return rwvm_bqml(ds)


def _ct_extra(headers: list[Any]) -> dict:
    first = headers[0]
    out: dict[str, Any] = {}

    def per_slice(key: str, precise: str, coarse: str | None) -> None:
        vals = []
        for ds in headers:
            v = _float(_get(ds, precise))
            if v is None and coarse:
                v = _float(_get(ds, coarse))
            vals.append(v)
        if any(v is not None for v in vals):
            out[key] = vals

    per_slice("xray_tube_current_ma", "XRayTubeCurrentInmA", "XRayTubeCurrent")
    per_slice("exposure_time_ms", "ExposureTimeInms", "ExposureTime")
    per_slice("exposure_mas", "ExposureInmAs", "Exposure")
    per_slice("ctdivol_mgy", "CTDIvol", None)
    for key, tag in (("kvp", "KVP"), ("spiral_pitch_factor", "SpiralPitchFactor"),
                     ("total_collimation_mm", "TotalCollimationWidth"),
                     ("single_collimation_mm", "SingleCollimationWidth"),
                     ("rotation_time_s", "RevolutionTime"),
                     ("data_collection_diameter_mm", "DataCollectionDiameter")):
        v = _float(_get(first, tag))
        if v is not None:
            out[key] = v
    for key, tag in (("filter_type", "FilterType"), ("convolution_kernel", "ConvolutionKernel"),
                     ("manufacturer", "Manufacturer"), ("model", "ManufacturerModelName")):
        v = _get(first, tag)
        if v is not None:
            multi = not isinstance(v, str) and hasattr(v, "__iter__")
            out[key] = "\\".join(str(x) for x in v) if multi else _str(v)
    return out


def _frame_duration_s(ds: Any) -> float | None:
    """Acquisition time behind the image, s.

    PET: Actual Frame Duration (0018,1242) of the frame. NM tomography: the time of the
    whole acquisition, i.e. for each item of the Rotation Information Sequence the time per
    view (Actual Frame Duration) times the Number of Frames in Rotation (0054,0053), summed
    over rotations. That is the time base of a tomographic calibration factor in cps/MBq
    (Dewaraja et al., MIRD Pamphlet No. 23, J Nucl Med 53 (2012) 1310). Without a rotation
    item the top-level Actual Frame Duration is taken as the whole acquisition time.
    """
    rotations = _get(ds, "RotationInformationSequence")
    if rotations:
        total = 0.0
        for item in rotations:
            per_view = _positive(_get(item, "ActualFrameDuration"))
            views = _positive(_get(item, "NumberOfFramesInRotation"))
            if per_view is None:
                total = 0.0
                break
            total += per_view / 1000.0 * (views if views is not None else 1.0)
        if total > 0:
            return total
    for owner in (ds, _first_item(ds, "DetectorInformationSequence")):
        v = _positive(_get(owner, "ActualFrameDuration"))
        if v is not None:
            return v / 1000.0
    return None


def _build_info(items: list[tuple[Path, Any]], modality: str | None = None) -> SeriesInfo:
    """SeriesInfo from the (ordered) headers of one series."""
    first = items[0][1]
    modality = modality or _str(_get(first, "Modality")).upper()
    info = SeriesInfo(modality=modality)
    info.series_instance_uid = _str(_get(first, "SeriesInstanceUID"))
    info.study_instance_uid = _str(_get(first, "StudyInstanceUID"))
    info.frame_of_reference_uid = _str(_get(first, "FrameOfReferenceUID"))
    info.patient_id = _str(_get(first, "PatientID"))
    info.patient_name = _str(_get(first, "PatientName"))
    info.patient_weight_kg = _positive(_get(first, "PatientWeight"))
    info.patient_height_m = _positive(_get(first, "PatientSize"))
    sex = _str(_get(first, "PatientSex")).upper()
    info.patient_sex = sex or None
    info.patient_age_y = _age_years(_get(first, "PatientAge"))
    info.series_description = _str(_get(first, "SeriesDescription"))
    info.files = [str(f) for f, _ in items]
    acq = [t for t in (_acquisition_dt(ds) for _, ds in items) if t is not None]
    series_dt = _series_dt(first)
    info.acquisition_datetime = min(acq) if acq else series_dt
    info.units = _units_label(modality, first)
    info.gantry_tilt_deg = abs(_float(_get(first, "GantryDetectorTilt")) or 0.0)
    if modality == "CT":
        info.extra.update(_ct_extra([ds for _, ds in items]))
    if modality in ("PT", "NM"):
        start = _scan_start(first, series_dt, acq, info)
        if modality == "PT" and len(items) > 1:
            _slice_timing(items, info)
        _radiopharmaceutical(first, modality, start, info)
        info.frame_duration_s = _frame_duration_s(first)
        dc = _str(_get(first, "DecayCorrection")).upper() or None
        info.decay_correction = dc
        ref = _parse("DT", _get(first, "DecayCorrectionDateTime"),
                     _where(first, info.label()) + " DecayCorrectionDateTime")
        if ref is None:
            if dc == "ADMIN":
                ref = info.injection_datetime
            elif dc in ("START", "NONE") or modality == "PT":
                ref = start
        info.decay_correction_datetime = ref
        if info.units == "Bq/mL":
            info.suv_bw_factor = _suv_factor(info)
    return info


def _scan_start(first: Any, series_dt: datetime.datetime | None, acq: list,
                info: SeriesInfo) -> datetime.datetime | None:
    """Scan start: Series Date/Time unless it is later than the earliest acquisition time
    (a post-processed series), then GE's private Scan DateTime (0009,100D) when present,
    else the earliest acquisition time (QIBA SUV pseudo-code; :mod:`persodose.io.vendor`)."""
    from persodose.io.vendor import ge_scan_datetime

    start = series_dt
    if start is None or (acq and min(acq) < start):
        ge = ge_scan_datetime(first) if start is not None else None
        if ge is not None:
            info.extra["scan_start_source"] = "GE private Scan DateTime (0009,100D)"
            return ge
        start = min(acq) if acq else start
    return start


def _slice_timing(items: list[tuple[Path, Any]], info: SeriesInfo) -> None:
    """Per-slice acquisition times of a multi-bed or continuous-bed-motion PET series
    (``info.extra``: ``slice_mid_datetimes`` in the items' order, ``acquisition_start``,
    ``acquisition_end``, ``acquisition_span_s``, ``bed_positions``)."""
    from persodose.io.vendor import slice_times

    starts = [_acquisition_dt(ds) for _, ds in items]
    durations = [_frame_duration_s(ds) for _, ds in items]
    timing = slice_times(starts, durations)
    if timing is None:
        return
    info.extra.update(slice_mid_datetimes=timing["mid"], acquisition_start=timing["start"],
                      acquisition_end=timing["end"], acquisition_span_s=timing["span_s"],
                      bed_positions=timing["bed_positions"])


def require_acquisition_time(info: SeriesInfo) -> datetime.datetime:
    """The series' acquisition date/time, or :class:`DicomError` when it has none."""
    if info.acquisition_datetime is None:
        raise DicomError(f"{info.label()} has no acquisition date/time")
    return info.acquisition_datetime


# ---------------------------------------------------------------------------- listing
def list_series(path) -> list[SeriesInfo]:
    """The DICOM image series in a file or under a directory (recursively).

    Files are grouped by SeriesInstanceUID. When scanning a directory, files that are not
    DICOM are skipped silently; a single file that is not DICOM raises :class:`DicomError`,
    and so does a DICOM file that cannot be read or is cut short in its header (named in
    the message). Only headers are read; nothing is validated beyond that (a file cut short
    in its pixel data is found when the series is read).

    Args:
        path: a DICOM file or a directory.

    Returns:
        One :class:`SeriesInfo` per series holding images (Rows/Columns present).
    """
    p = _existing(path)
    out = []
    for uid, items in _scan(p).items():
        items = [it for it in items if _is_image(it[1])]
        if not items:
            continue
        items = _sort_for_listing(items)
        out.append(_build_info(items))
    return out


def _describe(groups: dict[str, list[tuple[Path, Any]]]) -> str:
    parts = []
    for uid, items in groups.items():
        ds = items[0][1]
        parts.append(f"{uid} ({_str(_get(ds, 'Modality'))}, "
                     f"{_str(_get(ds, 'SeriesDescription'))!r}, {len(items)} files)")
    return "; ".join(parts)


def _is_localizer(ds: Any) -> bool:
    return "LOCALIZER" in _image_types(ds)


def _drop_orientation_localizers(groups: "OrderedDict[str, list]", path: Path) -> None:
    """Among several CT series, drop tiny series (<= 3 images) whose orientation differs
    from that of the largest CT series in the same frame of reference (scouts without the
    LOCALIZER flag)."""
    ct = {u: it for u, it in groups.items() if _str(_get(it[0][1], "Modality")).upper() == "CT"}
    if len(ct) < 2:
        return
    main_uid = max(ct, key=lambda u: len(ct[u]))
    try:
        main_ori = _orientation(ct[main_uid][0][1], "")
    except DicomError:
        return
    main_for = _str(_get(ct[main_uid][0][1], "FrameOfReferenceUID"))
    for uid, items in ct.items():
        if uid == main_uid or len(items) > 3:
            continue
        try:
            oris = [_orientation(ds, "") for _, ds in items]
        except DicomError:
            continue
        same_for = _str(_get(items[0][1], "FrameOfReferenceUID")) == main_for
        if same_for and all(not np.allclose(o, main_ori, atol=_ORIENTATION_ATOL) for o in oris):
            warnings.warn(f"{path}: dropping CT series {uid} ({len(items)} image(s) in another "
                          "orientation, taken for a localizer)", DicomWarning, stacklevel=4)
            del groups[uid]


def _choose(path: Path, series_uid: str | None,
            modality: str | None) -> tuple[str, list[tuple[Path, Any]]]:
    groups = _scan(path)
    if path.is_file():
        uid, items = next(iter(groups.items()))
        ds = items[0][1]
        if not _is_image(ds):
            raise DicomError(f"{path} has no pixel data (Modality "
                             f"{_str(_get(ds, 'Modality')) or '?'})")
    images: "OrderedDict[str, list]" = OrderedDict()
    for uid, items in groups.items():
        items = [it for it in items if _is_image(it[1])]
        if items:
            images[uid] = items
    if not images:
        raise DicomError(f"no DICOM image series found in {path}")
    if series_uid is not None:
        if series_uid not in images:
            raise DicomError(f"series {series_uid} not found in {path}; found: {_describe(images)}")
        return series_uid, images[series_uid]
    cands: "OrderedDict[str, list]" = OrderedDict(
        (u, it) for u, it in images.items()
        if _str(_get(it[0][1], "Modality")).upper() in SUPPORTED_MODALITIES)
    if modality is not None:
        cands = OrderedDict((u, it) for u, it in cands.items()
                            if _str(_get(it[0][1], "Modality")).upper() == modality)
    if not cands:
        want = modality or "/".join(SUPPORTED_MODALITIES)
        raise DicomError(f"no {want} image series in {path}; found: {_describe(images)}")
    if len(cands) > 1:
        for uid in list(cands):
            if all(_is_localizer(ds) for _, ds in cands[uid]):
                warnings.warn(f"{path}: dropping localizer series {uid} "
                              f"({len(cands[uid])} image(s))", DicomWarning, stacklevel=3)
                del cands[uid]
        if len(cands) > 1:
            _drop_orientation_localizers(cands, path)
    if len(cands) > 1:
        mods = sorted({_str(_get(it[0][1], "Modality")).upper() for it in cands.values()})
        what = f"{mods[0]} series" if len(mods) == 1 else f"image series ({', '.join(mods)})"
        raise DicomError(f"{path} holds {len(cands)} {what}: {_describe(cands)}; persodose reads "
                         "one series at a time: give a folder that holds only one of them")
    return next(iter(cands.items()))


# ---------------------------------------------------------------------------- reading
def _check_consistent(items: list[tuple[Path, Any]], label: str) -> None:
    for keyword, what in (("PatientID", "PatientID"), ("FrameOfReferenceUID", "FrameOfReferenceUID")):
        values = {_str(_get(ds, keyword)) for _, ds in items}
        if len(values) > 1:
            raise DicomError(f"{label} mixes {what} values {sorted(values)}")


def _check_pixel_length(ds, f: Path) -> None:
    """Refuse uncompressed pixel data shorter than Rows x Columns x frames x bits needs
    (a file cut short inside its pixel data)."""
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        compressed = ts is None or bool(ts.is_compressed)
    except (AttributeError, ValueError):  # not a known transfer syntax
        compressed = True
    if compressed or "PixelData" not in ds:
        return
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        bits = int(_get(ds, "BitsAllocated", 0))
        frames = int(_float(_get(ds, "NumberOfFrames")) or 1)
        samples = int(_get(ds, "SamplesPerPixel", 1))
    except (TypeError, ValueError):
        return
    if bits <= 0:
        raise DicomError(f"{f} has no valid BitsAllocated")
    need = (rows * cols * frames * samples * bits + 7) // 8
    have = len(ds.PixelData or b"")
    if have < need:
        raise DicomError(f"{f}: pixel data is {have} bytes, {need} expected for {frames} frame(s) "
                         f"of {rows}x{cols} at {bits} bits: truncated or corrupt file")


def _load_pixels(f: Path, label: str):
    """Full dataset and its pixel array."""
    ds = _read_header(f, strict=True, pixels=True)
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise DicomError(f"{f} has no pixel data (truncated file?)")
    if int(_get(ds, "SamplesPerPixel", 1)) != 1:
        raise DicomError(f"{f} is not a greyscale image (SamplesPerPixel={ds.SamplesPerPixel})")
    _check_pixel_length(ds, f)
    try:
        arr = ds.pixel_array
    except Exception as exc:
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "?")
        raise DicomError(f"cannot decode the pixel data of {f} (transfer syntax {ts}): "
                         f"{exc}".replace("\n", " ")) from exc
    return ds, arr


#: Where DICOM makes Rescale Slope and Rescale Intercept Type 1, by modality.
_RESCALE_REQUIRED_BY = {"CT": "the CT Image module (DICOM PS3.3 C.8.2.1)",
                        "PT": "the PET Image module (DICOM PS3.3 C.8.9.4)"}


def _rescale_value(ds: Any, keyword: str, f: Path) -> float | None:
    """A Rescale Slope/Intercept as a finite float; ``None`` when absent or empty."""
    if keyword not in ds:
        return None
    try:
        raw = ds[keyword].value
    except Exception as exc:  # noqa: BLE001 - a malformed DS value
        raise DicomError(f"{f} has an unreadable {keyword}: {exc}".replace("\n", " ")) from None
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise DicomError(f"{f} has a {keyword} that is not one number: {raw!r}") from None
    if not math.isfinite(value):
        raise DicomError(f"{f} has a non-finite {keyword} {raw!r}")
    return value


def _rescale(ds: Any, f: Path, modality: str) -> tuple[float, float]:
    """(slope, intercept) of one image's Modality LUT (PS3.3 C.11.1.1.2).

    Both are required for CT and PET (Type 1); for NM, which has no Modality LUT module,
    their absence means slope 1 and intercept 0. The slope must be finite and non-zero
    (a zero slope turns every voxel into the intercept).
    """
    slope = _rescale_value(ds, "RescaleSlope", f)
    intercept = _rescale_value(ds, "RescaleIntercept", f)
    if modality in _RESCALE_REQUIRED_BY and (slope is None or intercept is None):
        missing = " and ".join(k for k, v in (("RescaleSlope", slope), ("RescaleIntercept", intercept))
                               if v is None)
        raise DicomError(f"{f} has no {missing}, which {_RESCALE_REQUIRED_BY[modality]} "
                         "requires; its stored values cannot be turned into "
                         f"{'HU' if modality == 'CT' else 'activity'}")
    if slope == 0.0:
        raise DicomError(f"{f} has RescaleSlope 0, which turns every pixel into the intercept; "
                         "the slope must be a finite, non-zero number")
    return (1.0 if slope is None else slope), (0.0 if intercept is None else intercept)


def _check_rescale(items: list[tuple[Path, Any]], label: str, modality: str) -> None:
    """Check the Rescale Slope/Intercept of every slice from its header, before any pixel
    is read; a series where only some slices have them is refused like one where none has."""
    bad = []
    for f, ds in items:
        try:
            _rescale(ds, f, modality)
        except DicomError as exc:
            bad.append((f, exc))
    if bad:
        f, exc = bad[0]
        more = f" ({len(bad)} of the {len(items)} slices of {label})" if len(bad) > 1 else ""
        raise DicomError(f"{exc}{more}") from None


def _read_stack(items: list[tuple[Path, Any]], info_label: str, modality: str):
    kept = [it for it in items if not _is_localizer(it[1])]
    if len(kept) < len(items):
        if not kept:
            raise DicomError(f"{info_label} holds only localizer images")
        warnings.warn(f"{info_label}: dropping {len(items) - len(kept)} localizer image(s)",
                      DicomWarning, stacklevel=3)
    for f, ds in kept:
        nf = _float(_get(ds, "NumberOfFrames"))
        if nf is not None and nf > 1:
            raise DicomError(f"{f} is a multi-frame (enhanced) {modality} image; "
                             "only single-frame slices are supported")
    _check_rescale(kept, info_label, modality)
    stack = _stack_geometry(kept, info_label)
    nz = len(stack.files)
    rows, cols = int(stack.headers[0].Rows), int(stack.headers[0].Columns)
    out = np.empty((nz, rows, cols), dtype=np.float64)
    full = []
    for k, f in enumerate(stack.files):
        ds, arr = _load_pixels(f, info_label)
        if arr.shape != (rows, cols):
            raise DicomError(f"{f} pixel data has shape {arr.shape}, expected {(rows, cols)}")
        slope, intercept = _rescale(ds, f, modality)
        values = arr.astype(np.float64) * slope + intercept
        if modality == "CT":
            pad = _get(ds, "PixelPaddingValue")
            if pad is not None:
                pad_mask = arr == int(pad)
                if pad_mask.any():
                    values[pad_mask] = -1000.0  # padding outside the field of view -> air
        out[k] = values
        full.append(ds)
    return stack, out, [(f, ds) for f, ds in zip(stack.files, full)]


def _non_negative(values: np.ndarray, files: list[Path] | Path, label: str,
                  unit: str) -> np.ndarray:
    """Refuse negative activity (or counts) in an emission image, naming the file holding
    the minimum; values above ``-1e-6`` times the maximum (float rounding) become 0."""
    from persodose.io.image import require_non_negative_emission

    if not values.size or float(np.min(values)) >= 0.0:
        return values
    if isinstance(files, (list, tuple)):
        k = int(np.unravel_index(int(np.argmin(values)), values.shape)[0])
        where = f"{files[k]} (slice {k + 1} of {len(files)} of {label})"
    else:
        where = label if str(files) in label else f"{files} ({label})"
    return require_non_negative_emission(values, where, unit, error=DicomError,
                                         hint="a wrong Rescale Intercept or a corrupt file?")


def _counts_to_bqml(values: np.ndarray, info: SeriesInfo, voxel_ml: float,
                    calibration_cps_per_mbq: float) -> np.ndarray:
    """A[Bq] = counts / (frame_duration_s * cal[cps/MBq]) * 1e6, per mL of voxel."""
    if not (calibration_cps_per_mbq > 0 and math.isfinite(calibration_cps_per_mbq)):
        raise InputError(f"calibration_cps_per_mbq must be positive, got {calibration_cps_per_mbq}")
    if info.frame_duration_s is None:
        raise DicomError(f"{info.label()} has no ActualFrameDuration; counts cannot be "
                         "converted to Bq/mL")
    activity_bq = values / (info.frame_duration_s * calibration_cps_per_mbq) * 1e6
    return activity_bq / voxel_ml


def _read_ct_pet(items, modality, calibration_cps_per_mbq) -> Series:
    first = _build_info(items[:1], modality)
    first.files = [str(f) for f, _ in items]
    label = first.label()
    _check_consistent(items, label)
    stack, values, full_items = _read_stack(items, label, modality)
    info = _build_info(full_items, modality)
    info.gantry_tilt_deg = stack.tilt_deg
    require_finite(values, f"{label} after rescaling")
    geometry = dict(spacing_zyx_mm=stack.spacing_zyx_mm, origin_xyz_mm=stack.origin_xyz_mm,
                    direction_xyz=stack.direction_xyz)
    if modality == "CT":
        grid = Grid(values.astype(np.float32), kind=Kind.CT, unit="HU", **geometry)
        return Series(grid, info)
    units = {_str(_get(ds, "Units")).upper() for _, ds in full_items}
    if len(units) > 1:
        raise UnitsError(f"{label} mixes Units values {sorted(units)}")
    unit = units.pop()
    if unit in ("BQML", "CNTS"):
        values = _non_negative(values, list(stack.files), label,
                               "Bq/mL" if unit == "BQML" else "counts")
    if unit == "BQML":
        if calibration_cps_per_mbq is not None:
            warnings.warn(f"{label} is already in Bq/mL; calibration_cps_per_mbq ignored",
                          DicomWarning, stacklevel=3)
        grid = Grid(values.astype(np.float32), kind=Kind.ACTIVITY_CONCENTRATION, unit="Bq/mL",
                    **geometry)
        return Series(grid, info)
    if unit == "CNTS" and calibration_cps_per_mbq is None:
        scaled = _philips_counts_to_bqml(values, full_items, label)
        if scaled is not None:
            info.units = "Bq/mL"
            info.extra["units_source"] = "Philips Activity Concentration Scale Factor (7053,1009)"
            info.suv_bw_factor = _suv_factor(info)
            return Series(Grid(scaled.astype(np.float32), kind=Kind.ACTIVITY_CONCENTRATION,
                               unit="Bq/mL", **geometry), info)
    if unit == "CNTS":
        if calibration_cps_per_mbq is None:
            raise UnitsError(f"{label} is in counts (Units CNTS); give calibration_cps_per_mbq "
                             "to convert it to Bq/mL")
        tmp = Grid(np.zeros((1, 1, 1)), **geometry)
        bqml = _counts_to_bqml(values, info, tmp.voxel_volume_ml, calibration_cps_per_mbq)
        info.units = "Bq/mL"
        info.suv_bw_factor = _suv_factor(info)
        grid = Grid(bqml.astype(np.float32), kind=Kind.ACTIVITY_CONCENTRATION, unit="Bq/mL",
                    **geometry)
        return Series(grid, info)
    raise UnitsError(f"{label} has Units {unit or '(none)'!r}; persodose reads PET in BQML "
                     "(activity concentration) only, not SUV or other derived units")


def _philips_counts_to_bqml(values: np.ndarray, items: list[tuple[Path, Any]],
                            label: str) -> np.ndarray | None:
    """Rescaled counts times each slice's Philips Activity Concentration Scale Factor
    (7053,1009), Bq/mL (QIBA SUV pseudo-code; :mod:`persodose.io.vendor`); ``None`` when no
    slice has the factor. A series where only some slices have it is refused."""
    from persodose.io.vendor import philips_activity_scale

    factors = [philips_activity_scale(ds) for _, ds in items]
    if all(f is None for f in factors):
        return None
    missing = [str(f) for (f, _), v in zip(items, factors) if v is None]
    if missing:
        raise UnitsError(f"{label}: {len(missing)} of {len(items)} slices (first {missing[0]}) lack the "
                         "Philips Activity Concentration Scale Factor (7053,1009) the others have")
    return values * np.asarray(factors, dtype=np.float64)[:, None, None]


def _read_nm(items, calibration_cps_per_mbq) -> Series:
    info = _build_info(items[:1], "NM")
    label = info.label()
    _check_consistent(items, label)
    if len(items) != 1:
        raise DicomError(f"{label} has {len(items)} files; an NM tomogram must be one "
                         "multi-frame file")
    f = items[0][0]
    types = _image_types(items[0][1])
    type3 = types[2] if len(types) > 2 else ""
    if "GATED" in type3 or "RECON" not in type3:
        raise DicomError(f"{f} is not a reconstructed NM tomogram (ImageType "
                         f"{'/'.join(types) or 'missing'}; RECON TOMO expected)")
    ds, arr = _load_pixels(f, label)
    info = _build_info([(f, ds)], "NM")
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise DicomError(f"{f} pixel data has shape {arr.shape}; a stack of slices expected")
    vector = _get(ds, "SliceVector")
    if vector is not None and len(vector) == arr.shape[0]:
        order = np.argsort(np.asarray([int(v) for v in vector]), kind="stable")
        arr = arr[order]
    det = _first_item(ds, "DetectorInformationSequence")
    where = str(f)
    if _get(det, "ImageOrientationPatient") is not None:
        iop = _orientation(det, where)
    elif _get(ds, "ImageOrientationPatient") is not None:
        iop = _orientation(ds, where)
    else:
        warnings.warn(f"{f}: no ImageOrientationPatient; assuming axial slices", DicomWarning,
                      stacklevel=3)
        iop = np.array([1.0, 0, 0, 0, 1.0, 0])
    if _get(det, "ImagePositionPatient") is not None:
        ipp = _position(det, where)
    elif _get(ds, "ImagePositionPatient") is not None:
        ipp = _position(ds, where)
    else:
        warnings.warn(f"{f}: no ImagePositionPatient; placing the first voxel at (0, 0, 0)",
                      DicomWarning, stacklevel=3)
        ipp = np.zeros(3)
    row_mm, col_mm = _pixel_spacing(ds, where)
    dz = _positive(_get(ds, "SpacingBetweenSlices")) or _positive(_get(ds, "SliceThickness"))
    if dz is None:
        if arr.shape[0] > 1:
            raise DicomError(f"{f} has neither SpacingBetweenSlices nor SliceThickness")
        dz = 1.0
    normal = np.cross(iop[:3], iop[3:])
    geometry = dict(spacing_zyx_mm=(dz, row_mm, col_mm), origin_xyz_mm=tuple(ipp),
                    direction_xyz=np.column_stack([iop[:3], iop[3:], normal]))
    values = arr.astype(np.float64)
    rwvm = _rwvm_bqml(ds)
    unit = _str(_get(ds, "Units")).upper()
    if rwvm is not None and unit != "BQML":
        if rwvm[0] == 0.0:
            raise DicomError(f"{f} has a Real World Value Mapping to Bq/ml with slope 0")
        values = values * rwvm[0] + rwvm[1]
        unit = "BQML"
    else:
        slope, intercept = _rescale(ds, f, "NM")
        values = values * slope + intercept
        _warn_unused_rwvm(ds, label)
    require_finite(values, f"{label} after rescaling")
    if unit in ("BQML", "", "CNTS"):
        values = _non_negative(values, f, label, "Bq/mL" if unit == "BQML" else "counts")
    if unit == "BQML":
        info.units = "Bq/mL"
        if calibration_cps_per_mbq is not None:
            warnings.warn(f"{label} is already in Bq/mL; calibration_cps_per_mbq ignored",
                          DicomWarning, stacklevel=3)
        grid = Grid(values.astype(np.float32), kind=Kind.ACTIVITY_CONCENTRATION, unit="Bq/mL",
                    **geometry)
        info.suv_bw_factor = _suv_factor(info)
        return Series(grid, info)
    if unit not in ("", "CNTS"):
        raise UnitsError(f"{label} has Units {unit!r}; counts or BQML expected")
    if calibration_cps_per_mbq is None:
        info.units = "counts"
        return Series(Grid(values.astype(np.float32), kind=Kind.COUNTS, unit="counts", **geometry),
                      info)
    voxel_ml = dz * row_mm * col_mm / 1000.0
    bqml = _counts_to_bqml(values, info, voxel_ml, calibration_cps_per_mbq)
    info.units = "Bq/mL"
    info.suv_bw_factor = _suv_factor(info)
    return Series(Grid(bqml.astype(np.float32), kind=Kind.ACTIVITY_CONCENTRATION, unit="Bq/mL",
                       **geometry), info)


def _warn_unused_rwvm(ds: Any, label: str) -> None:
    """Say so when an NM file has Real World Value Mappings but none in Bq/mL (e.g. SUV only)."""
    from persodose.io.vendor import rwvm_units

    units = rwvm_units(ds)
    if units:
        warnings.warn(f"{label}: Real World Value Mapping in {', '.join(units)} is not an activity "
                      "concentration; the stored values are read as counts", DicomWarning, stacklevel=4)


def read_series(path, *, series_uid: str | None = None, modality: str | None = None,
                calibration_cps_per_mbq: float | None = None) -> Series:
    """Read one CT, PET or NM tomogram series into a grid.

    Args:
        path: a DICOM file (read on its own: one slice of a CT/PET series gives a one-slice
            grid) or a directory (searched recursively; files that are not DICOM are
            skipped, DICOM files that cannot be read are refused).
        series_uid: SeriesInstanceUID to read when the directory holds several series.
        modality: ``"CT"``, ``"PT"`` or ``"NM"`` to choose among several series.
        calibration_cps_per_mbq: system sensitivity, counts per second per MBq, to turn
            counts (NM, or PET with Units CNTS) into Bq/mL:
            ``A[Bq] = counts / (frame_duration_s * calibration) * 1e6`` per voxel volume.

    Returns:
        A :class:`Series`: CT in HU (Kind.CT), PET/NM in Bq/mL
        (Kind.ACTIVITY_CONCENTRATION) or NM in counts (Kind.COUNTS).

    Raises:
        InputError: missing path; NaN after rescaling.
        DicomError: not DICOM; a DICOM file in the folder that cannot be read or is
            truncated (never skipped); no pixel data or pixel data too short; CT/PET slices
            without Rescale Slope/Intercept, or a slope of 0; negative activity in PET/NM
            (values above -1e-6 times the maximum are float rounding and set to 0);
            several candidate series; mixed patients or frames of reference, gantry tilt,
            missing or uneven slices, mixed orientations. Messages about a series name it
            with the folder holding it (:meth:`SeriesInfo.label`).
        UnitsError: PET units other than BQML (CNTS without a calibration).
    """
    p = _existing(path)
    if modality is not None:
        modality = str(modality).upper()
        if modality == "PET":
            modality = "PT"
        if modality not in SUPPORTED_MODALITIES:
            raise InputError(f"modality must be one of {SUPPORTED_MODALITIES}, got {modality!r}")
    uid, items = _choose(p, series_uid, modality)
    mod = _str(_get(items[0][1], "Modality")).upper()
    if modality is not None and mod != modality:
        raise DicomError(f"series {uid} in {p} is {mod or 'of unknown modality'}, not {modality}")
    if mod in ("CT", "PT"):
        return _read_ct_pet(items, mod, calibration_cps_per_mbq)
    if mod == "NM":
        return _read_nm(items, calibration_cps_per_mbq)
    raise DicomError(f"series {uid} in {p} has modality {mod or '(none)'}; "
                     f"persodose reads {', '.join(SUPPORTED_MODALITIES)}")


def read_ct(path, **kw) -> Series:
    """:func:`read_series` restricted to CT; the grid is in HU."""
    return read_series(path, modality="CT", **kw)


def read_pet(path, **kw) -> Series:
    """:func:`read_series` restricted to PET (PT); the grid is in Bq/mL."""
    return read_series(path, modality="PT", **kw)


def read_nm(path, calibration_cps_per_mbq: float | None = None, **kw) -> Series:
    """:func:`read_series` restricted to NM tomograms; counts unless calibrated or BQML."""
    return read_series(path, modality="NM", calibration_cps_per_mbq=calibration_cps_per_mbq, **kw)
