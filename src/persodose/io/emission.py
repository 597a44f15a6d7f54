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
    """Activity concentration present at mid-frame from a scanner image."""
    dc = (getattr(info, "decay_correction", None) or "NONE").upper()
    lam = math.log(2.0) / nuclide_half_life_s
    if dc == "START":
        ref = getattr(info, "decay_correction_datetime", None) or info.acquisition_datetime
    elif dc == "ADMIN":
        ref = getattr(info, "decay_correction_datetime", None) or injection
    else:
        return grid  # NONE: the frame-average activity, taken at mid-frame
    dt = (mid - ref).total_seconds()
    return grid.with_array(grid.array.astype(np.float64) * math.exp(-lam * dt))


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
        from persodose.io.dicom import list_series, read_series, require_acquisition_time

        candidates = [i for i in list_series(p) if i.modality in ("PT", "NM")]
        if len(candidates) != 1:
            raise InputError(f"{p} must hold exactly one PET or NM series, found {len(candidates)}")
        series = read_series(p, series_uid=candidates[0].series_instance_uid,
                             calibration_cps_per_mbq=calibration_cps_per_mbq)
        info = series.info
        start = require_acquisition_time(info)
        if series.grid.kind is Kind.COUNTS:
            raise InputError(f"{p} is in counts: give the camera's calibration (--calibration-cps-per-mbq)")
        if info.radionuclide and info.radionuclide != nuc.name:
            raise InputError(f"{p} is a {info.radionuclide} image, not {nuc.name}")
        ref_info = own_cts[k][1] if own_cts else ct_info
        if ct_info is not None and info.patient_id and ct_info.patient_id and info.patient_id != ct_info.patient_id:
            raise InputError(f"{p} belongs to patient {info.patient_id!r}, the CT to {ct_info.patient_id!r}")
        if ref_info is not None:
            if info.patient_id and ref_info.patient_id and info.patient_id != ref_info.patient_id:
                raise InputError(f"{p} belongs to patient {info.patient_id!r}, its CT to {ref_info.patient_id!r}")
            if (info.frame_of_reference_uid and ref_info.frame_of_reference_uid
                    and info.frame_of_reference_uid != ref_info.frame_of_reference_uid):
                raise InputError(f"{p} is not in the frame of reference of its CT (FrameOfReferenceUID differs): "
                                 "give each time point's own CT with --emission-ct, or register it first")
        inj = injection or info.injection_datetime
        if inj is None and times_h is None:
            raise InputError(f"{p} has no injection time: give --injection-time")
        injection = injection or inj
        duration = info.frame_duration_s or 0.0
        mid = start + _dt.timedelta(seconds=duration / 2.0)
        t_s = float(times_h[k]) * 3600.0 if times_h is not None else (mid - injection).total_seconds()
        if t_s <= 0:
            raise InputError(f"{p} was acquired before the injection ({t_s / 3600:.2f} h)")
        conc = undo_decay_correction(series.grid, info, nuc.half_life_s, mid, injection) if injection else series.grid
        points.append(TimePoint(t_s, conc.to_activity(), f"{info.modality} {t_s / 3600:.2f} h", info,
                                ct=own_cts[k][0] if own_cts else None, duration_s=float(duration)))
    for tp, path in zip(points, paths):
        tp.source = str(path)
    points.sort(key=lambda tp: tp.time_s)
    for a, b in zip(points, points[1:]):
        if round(a.time_s, 3) == round(b.time_s, 3):
            raise InputError(f"emission images {a.source} and {b.source} have the same time after injection "
                             f"({a.time_s / 3600:.2f} h): give each time point once")
    return points, injection
