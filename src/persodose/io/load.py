"""Load a patient image from either a DICOM path or an image file.

A path to a NIfTI/MHA/NRRD file is read with :func:`persodose.io.image.read_image`, where
the unit must be known (persodose tag or the user's ``unit``); anything else is treated as
DICOM (a file or a directory holding one series).
"""

from __future__ import annotations

import os
from pathlib import Path

from persodose.errors import InputError
from persodose.grid import Grid, Kind
from persodose.io.image import (  # noqa: F401 - re-exported
    NEGATIVE_ROUNDING_FRACTION,
    is_image_file,
    read_image,
    require_non_negative_emission,
)


def _exists(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise InputError(f"path does not exist: {p}")
    return p


def load_ct(path: str | os.PathLike):
    """Read a CT (HU) from DICOM or an image file.

    A single DICOM slice (a file, or a folder holding one) is read as a one-slice grid;
    ``grid.shape[0]`` is the number of slices read (``len(info.files)`` for DICOM), for the
    caller to refuse a CT too thin to compute dose in.

    Returns:
        ``(grid, info)`` where ``info`` is the DICOM :class:`~persodose.io.dicom.SeriesInfo`
        or ``None`` for an image file.
    """
    p = _exists(path)
    if p.is_file() and is_image_file(p):
        return read_image(p, kind=Kind.CT), None
    from persodose.io.dicom import read_ct

    series = read_ct(p)
    return series.grid, series.info


def load_emission(path: str | os.PathLike, *, unit: str | None = None,
                  calibration_cps_per_mbq: float | None = None):
    """Read a PET or SPECT image from DICOM (PT or NM) or an image file.

    Negative activity is refused, naming the file and giving the minimum (both
    :func:`~persodose.io.image.read_image`, for activity, counts and TIA images, and the
    DICOM reader, for PET and NM series, check it); negatives above ``-1e-6`` times the
    maximum are float rounding and are set to 0
    (:func:`~persodose.io.image.require_non_negative_emission`).

    Returns:
        ``(grid, info)``; ``info`` is ``None`` for an image file.
    """
    p = _exists(path)
    if p.is_file() and is_image_file(p):
        grid = read_image(p) if unit is None else read_image(p, unit=unit)
        arr = require_non_negative_emission(grid.array, str(p), grid.unit or "")  # any kind
        return (grid if arr is grid.array else grid.with_array(arr)), None
    from persodose.io.dicom import list_series, read_series

    infos = [i for i in list_series(p) if i.modality in ("PT", "NM")]
    if not infos:
        raise InputError(f"no PET or NM image series found in {p}")
    modalities = {i.modality for i in infos}
    return _as_tuple(read_series(p, series_uid=infos[0].series_instance_uid if len(infos) == 1 else None,
                                 modality=modalities.pop() if len(modalities) == 1 else None,
                                 calibration_cps_per_mbq=calibration_cps_per_mbq))


def _as_tuple(series) -> tuple[Grid, object]:
    return series.grid, series.info
