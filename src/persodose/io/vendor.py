"""Vendor conventions of emission DICOM (PET, SPECT) that the standard attributes alone miss.

Each reading here is a published convention, cited where it is used:

* **Real World Value Mapping in NM** (Siemens xSPECT/Broad Quantification and others): the
  NM Image IOD has no Units attribute, so quantitative SPECT carries its Bq/mL as a Real
  World Value Mapping Sequence (0040,9096) item (PS3.3 C.7.6.16.2.11) whose Measurement
  Units Code Sequence is the UCUM unit ``Bq/ml``. Several items may be present (Bq/mL and
  an SUV mapping, ``g/ml{SUVbw}``): the Bq/mL item is taken, in any order; ``kBq/ml`` and
  ``MBq/ml`` are scaled.
* **Philips PET in counts**: Units CNTS with the private Activity Concentration Scale Factor
  (7053,1009) of the ``Philips PET Private Group`` block; Rescale Slope times that factor
  turns stored values into Bq/mL (QIBA FDG-PET/CT Technical Committee, "Standardized Uptake
  Value (SUV)" vendor-neutral pseudo-code, 2013; the SUV factor (7053,1000) is not needed
  when the factor is there).
* **GE post-processed PET**: when Series Date/Time is after the Acquisition Date/Time, the
  scan start is the private Scan DateTime (0009,100D) of the ``GEMS_PETD_01`` block (same
  QIBA pseudo-code).
* **Multi-bed and continuous-bed-motion PET** (one series, several acquisition times): each
  slice has its own Acquisition Date/Time and Actual Frame Duration (PS3.3 C.8.9.4; Siemens
  FlowMotion and GE MotionFree write a time and a duration per slice); the series is then
  described by its earliest start and latest end (:func:`slice_times`).
"""

from __future__ import annotations

import datetime
from typing import Any

from persodose.io.dicom import _float as _number  # a DICOM number or None (empty, malformed, not finite)

#: UCUM activity-concentration units of a Real World Value Mapping, to Bq/mL
#: (UCUM: the prefixes k = 1e3, M = 1e6; ``ml`` and ``mL`` are the same unit).
_RWVM_BQML_FACTORS = {"bq/ml": 1.0, "kbq/ml": 1e3, "mbq/ml": 1e6}

#: Private creator and element of the Philips Activity Concentration Scale Factor (QIBA).
PHILIPS_CREATOR = "Philips PET Private Group"
PHILIPS_ACTIVITY_SCALE = (0x7053, 0x09)
PHILIPS_SUV_FACTOR = (0x7053, 0x00)
#: Private creator and element of GE's Scan DateTime (QIBA).
GE_CREATOR = "GEMS_PETD_01"
GE_SCAN_DATETIME = (0x0009, 0x0D)


def private_value(ds: Any, group: int, element_offset: int, creator: str) -> Any:
    """A private element's value by its creator (PS3.5 7.8.1), or ``None`` when absent."""
    if ds is None:
        return None
    try:
        value = ds.get_private_item(group, element_offset, creator).value
    except (KeyError, ValueError, AttributeError, TypeError):
        return None
    if isinstance(value, bytes):  # implicit VR or an unknown private dictionary: bytes
        value = value.decode("latin-1").strip("\x00 ")
    return None if value in (None, "") else value


def rwvm_bqml(ds: Any) -> tuple[float, float] | None:
    """(slope, intercept) to Bq/mL from the Real World Value Mapping item in Bq/mL.

    Items whose unit is not an activity concentration (counts, SUV ``g/ml{SUVbw}``) and
    items given as a lookup table without a slope are passed over.
    """
    seq = _items(ds, "RealWorldValueMappingSequence")
    for item in seq:
        units = _items(item, "MeasurementUnitsCodeSequence")
        code = str(units[0].get("CodeValue", "") or "").strip().lower() if units else ""
        factor = _RWVM_BQML_FACTORS.get(code)
        slope = _number(item.get("RealWorldValueSlope", None))
        if factor is None or slope is None:
            continue
        intercept = _number(item.get("RealWorldValueIntercept", None)) or 0.0
        return slope * factor, intercept * factor
    return None


def rwvm_units(ds: Any) -> list[str]:
    """The unit codes of every Real World Value Mapping item (for messages)."""
    out = []
    for item in _items(ds, "RealWorldValueMappingSequence"):
        units = _items(item, "MeasurementUnitsCodeSequence")
        out.append(str(units[0].get("CodeValue", "?")) if units else "?")
    return out


def philips_activity_scale(ds: Any) -> float | None:
    """Philips' Activity Concentration Scale Factor (7053,1009), Bq/mL per rescaled count."""
    v = _number(private_value(ds, *PHILIPS_ACTIVITY_SCALE, PHILIPS_CREATOR))
    return v if v is not None and v > 0 else None


def ge_scan_datetime(ds: Any) -> datetime.datetime | None:
    """GE's private Scan DateTime (0009,100D), naive, or ``None``."""
    from pydicom.valuerep import DT

    text = private_value(ds, *GE_SCAN_DATETIME, GE_CREATOR)
    if text is None:
        return None
    try:
        v = DT(str(text).strip())
    except (ValueError, TypeError):
        return None
    if v is None:
        return None
    return datetime.datetime(v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond)


def slice_times(starts: list[datetime.datetime | None],
                durations_s: list[float | None]) -> dict | None:
    """Acquisition span of a series whose slices carry their own start and duration.

    Args:
        starts: each slice's acquisition date/time (grid z order), ``None`` when absent.
        durations_s: each slice's Actual Frame Duration, s.

    Returns:
        ``None`` unless every slice has both and there is more than one distinct start
        (one bed); else ``{"start", "end", "span_s", "bed_positions", "mid"}`` with ``mid``
        each slice's mid-frame date/time.
    """
    if not starts or any(s is None for s in starts) or any(d is None for d in durations_s):
        return None
    distinct = sorted(set(starts))
    if len(distinct) < 2:
        return None
    ends = [s + datetime.timedelta(seconds=d) for s, d in zip(starts, durations_s)]
    start, end = min(starts), max(ends)
    return {"start": start, "end": end, "span_s": (end - start).total_seconds(),
            "bed_positions": len(distinct),
            "mid": [s + datetime.timedelta(seconds=d / 2.0) for s, d in zip(starts, durations_s)]}


def _items(ds: Any, keyword: str) -> list:
    if ds is None:
        return []
    try:
        seq = ds.get(keyword, None)
    except Exception:  # noqa: BLE001 - a malformed element
        return []
    try:
        return list(seq) if seq else []
    except TypeError:
        return []
