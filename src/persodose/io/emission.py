"""Emission images (PET, SPECT) as activity at times after injection, for the kinetics.

DICOM series give their own acquisition times, injection time and decay correction, which is
undone (reference START, ADMIN or NONE; DICOM PS3.3 C.8.9.1, Decay Correction (0054,1102)) so
that each image is the activity present at mid-frame; image files need their times and
units from the user. Each time point may carry its own CT (SPECT/CT at every visit) to be
registered to the planning CT later. Everything is checked against the CT: the same
patient, the same frame of reference, the nuclide of the images.
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from persodose.errors import InputError
from persodose.grid import Grid, Kind

__all__ = ["TimePoint", "load_time_points", "undo_decay_correction"]


@dataclass
class TimePoint:
    """One emission image as activity at a time after injection."""

    time_s: float  #: mid-frame time after injection, s
    activity: Grid  #: Bq per voxel, not decay corrected, on the image's own grid
    label: str
    info: object | None = None
    ct: Grid | None = None  #: this time point's own CT (SPECT/CT or PET/CT at each visit), to register
    duration_s: float = 0.0  #: frame duration, s (for the analytic integration of dynamic frames)
    source: str = ""  #: the file or folder it was read from


def undo_decay_correction(grid: Grid, info, nuclide_half_life_s: float, mid: _dt.datetime,
                           injection: _dt.datetime) -> Grid:
    """Activity concentration present at ``mid`` from a scanner image.

    START/ADMIN: the image is decay corrected to one reference time (every bed of a
    multi-bed series to the same one, as the QIBA SUV pseudo-code reads them), so one factor
    brings it to ``mid``. NONE: each slice holds the activity during its own acquisition;
    slices of several beds are brought to ``mid`` one by one (:func:`_common_time`).
    """
    dc = (getattr(info, "decay_correction", None) or "NONE").upper()
    lam = math.log(2.0) / nuclide_half_life_s
    if dc == "START":
        ref = getattr(info, "decay_correction_datetime", None) or info.acquisition_datetime
    elif dc == "ADMIN":
        ref = getattr(info, "decay_correction_datetime", None) or injection
    else:
        return _common_time(grid, info, lam, mid)  # NONE: each slice's frame-average activity
    dt = (mid - ref).total_seconds()
    return grid.with_array(grid.array.astype(np.float64) * math.exp(-lam * dt))


def _common_time(grid: Grid, info, lam: float, mid: _dt.datetime) -> Grid:
    """An image without decay correction whose slices were acquired at different times
    (multi-bed or continuous bed motion, ``info.extra["slice_mid_datetimes"]`` in grid z
    order): each slice's activity decayed from its own mid-frame time to ``mid``, so that the
    whole image is the activity present at one time. One bed: returned as it is."""
    mids = (getattr(info, "extra", None) or {}).get("slice_mid_datetimes")
    if not mids or len(mids) != grid.shape[0]:
        return grid
    dt = np.array([(mid - m).total_seconds() for m in mids], dtype=np.float64)
    return grid.with_array(grid.array.astype(np.float64) * np.exp(-lam * dt)[:, None, None])


#: Longest acquisition span of one emission series (first slice start to last slice end)
#: taken as one scan: a whole-body multi-bed or continuous-bed-motion PET lasts well under
#: an hour; a series spanning more mixes acquisitions (a persodose choice, not a standard).
MAX_SERIES_SPAN_S = 2 * 3600.0


def _check_identity(p: Path, info, ct_info, ref_info) -> None:
    """The series belongs to the CT's patient and to its own CT's frame of reference."""
    if ct_info is not None and info.patient_id and ct_info.patient_id and info.patient_id != ct_info.patient_id:
        raise InputError(f"{p} belongs to patient {info.patient_id!r}, the CT to {ct_info.patient_id!r}")
    if ref_info is not None:
        if info.patient_id and ref_info.patient_id and info.patient_id != ref_info.patient_id:
            raise InputError(f"{p} belongs to patient {info.patient_id!r}, its CT to {ref_info.patient_id!r}")
        if (info.frame_of_reference_uid and ref_info.frame_of_reference_uid
                and info.frame_of_reference_uid != ref_info.frame_of_reference_uid):
            raise InputError(f"{p} is not in the frame of reference of its CT (FrameOfReferenceUID differs): "
                             "give each time point's own CT with --emission-ct, or register it first")


def _acquisition_window(p: Path, info, override: bool) -> tuple[_dt.datetime | None, float]:
    """Start and duration (s) of the acquisition behind the image.

    One bed: the series' acquisition time and frame duration. Several beds or continuous bed
    motion (per-slice times, :func:`persodose.io.vendor.slice_times`): the earliest start
    and the span to the latest end. A missing time, or a span longer than
    :data:`MAX_SERIES_SPAN_S`, is refused in one line unless ``override`` (times given).
    """
    start = info.acquisition_datetime
    if start is None and not override:
        raise InputError(f"{p} has no acquisition date/time (AcquisitionDateTime, AcquisitionDate/Time or "
                         "SeriesDate/Time): give the time after injection with --times-h")
    span = info.extra.get("acquisition_span_s")
    if span is None:
        return start, float(info.frame_duration_s or 0.0)
    if span > MAX_SERIES_SPAN_S and not override:
        a, b = info.extra["acquisition_start"], info.extra["acquisition_end"]
        raise InputError(f"{p}: its slices were acquired from {a:%Y-%m-%d %H:%M} to {b:%Y-%m-%d %H:%M} "
                         f"({span / 3600:.1f} h), too long for one scan: check the acquisition times, or give "
                         "the time after injection with --times-h")
    return info.extra["acquisition_start"], float(span)


def _dicom_time_point(p: Path, nuc, calibration_cps_per_mbq: float | None, time_h: float | None,
                      injection: _dt.datetime | None, ct_info, ref_info) -> tuple[TimePoint, _dt.datetime | None]:
    """One DICOM PET/NM series as a :class:`TimePoint`, and the injection time it gives.

    ``time_h`` (hours after injection) overrides the series' own times, which may then be
    missing or inconsistent; the decay correction is undone at that time.
    """
    from persodose.io.dicom import list_series, read_series

    candidates = [i for i in list_series(p) if i.modality in ("PT", "NM")]
    if len(candidates) != 1:
        raise InputError(f"{p} must hold exactly one PET or NM series, found {len(candidates)}")
    series = read_series(p, series_uid=candidates[0].series_instance_uid,
                         calibration_cps_per_mbq=calibration_cps_per_mbq)
    info = series.info
    start, duration = _acquisition_window(p, info, time_h is not None)
    if series.grid.kind is Kind.COUNTS:
        raise InputError(f"{p} is in counts: give the camera's calibration (--calibration-cps-per-mbq)")
    if info.radionuclide and info.radionuclide != nuc.name:
        raise InputError(f"{p} is a {info.radionuclide} image, not {nuc.name}")
    _check_identity(p, info, ct_info, ref_info)
    inj = injection or info.injection_datetime
    if inj is None and time_h is None:
        raise InputError(f"{p} has no injection time: give --injection-time")
    injection = injection or inj
    if time_h is not None:
        t_s = time_h * 3600.0
        if t_s <= 0:
            raise InputError(f"{p}: the time after injection must be positive, got {time_h} h")
        mid = injection + _dt.timedelta(seconds=t_s) if injection is not None else None
    else:
        mid = start + _dt.timedelta(seconds=duration / 2.0)
        t_s = (mid - injection).total_seconds()
        if t_s <= 0:
            raise InputError(f"{p} was acquired before the injection ({t_s / 3600:.2f} h): check the injection "
                             "time (--injection-time) or give the time after injection with --times-h")
    conc = series.grid
    if mid is not None and injection is not None:
        conc = undo_decay_correction(series.grid, info, nuc.half_life_s, mid, injection)
    elif (getattr(info, "decay_correction", None) or "NONE").upper() != "NONE":
        raise InputError(f"{p} is decay corrected ({info.decay_correction}) and its time cannot be placed: "
                         "give --injection-time with --times-h")
    tp = TimePoint(t_s, conc.to_activity(), f"{info.modality} {t_s / 3600:.2f} h", info, duration_s=duration)
    return tp, injection


def load_time_points(paths: Sequence[str | Path], nuclide: str, *, calibration_cps_per_mbq: float | None = None,
                     units: str | None = None, times_h: Sequence[float] | None = None,
                     injection: _dt.datetime | None = None, ct_info=None,
                     ct_paths: Sequence[str | Path] | None = None) -> tuple[list[TimePoint], _dt.datetime | None]:
    """Read emission images as activity at mid-frame times after injection.

    DICOM series give their own times, injection time and decay correction; image files need
    ``times_h`` (hours after injection, one per file) and ``units``.

    Raises:
        InputError: missing times, nuclide mismatch, other patient or frame of reference
            than the CT, duplicated times.
    """
    from persodose.io.image import is_image_file, read_image
    from persodose.physics.radionuclides import get_nuclide

    nuc = get_nuclide(nuclide)
    if not paths:
        raise InputError("give at least one emission image")
    if times_h is not None and len(times_h) != len(paths):
        raise InputError(f"{len(times_h)} times for {len(paths)} emission images")
    if ct_paths is not None and len(ct_paths) != len(paths):
        raise InputError(f"{len(ct_paths)} CTs for {len(paths)} emission images: give one CT per time point")
    own_cts = []
    if ct_paths is not None:
        from persodose.io.load import load_ct

        own_cts = [load_ct(c) for c in ct_paths]
    points: list[TimePoint] = []
    for k, path in enumerate(paths):
        p = Path(path)
        if not p.exists():
            raise InputError(f"path does not exist: {p}")
        if p.is_file() and is_image_file(p):
            if times_h is None:
                raise InputError(f"{p} is an image file: give its time after injection (--times-h)")
            grid = read_image(p, unit=units) if units else read_image(p)
            if grid.kind is Kind.ACTIVITY_CONCENTRATION:
                grid = grid.to_activity()
            if grid.kind is not Kind.ACTIVITY:
                raise InputError(f"{p} holds {grid.kind.value}; an emission image must be Bq/mL or Bq (--units)")
            points.append(TimePoint(float(times_h[k]) * 3600.0, grid.check_finite(str(p)), p.name,
                                    ct=own_cts[k][0] if own_cts else None))
            continue
        tp, injection = _dicom_time_point(p, nuc, calibration_cps_per_mbq,
                                          float(times_h[k]) if times_h is not None else None,
                                          injection, ct_info, own_cts[k][1] if own_cts else ct_info)
        tp.ct = own_cts[k][0] if own_cts else None
        points.append(tp)
    for tp, path in zip(points, paths):
        tp.source = str(path)
    points.sort(key=lambda tp: tp.time_s)
    for a, b in zip(points, points[1:]):
        if round(a.time_s, 3) == round(b.time_s, 3):
            raise InputError(f"emission images {a.source} and {b.source} have the same time after injection "
                             f"({a.time_s / 3600:.2f} h): give each time point once")
    return points, injection
