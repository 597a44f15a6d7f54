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
from persodose.io.image import is_image_file, read_image


def _exists(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise InputError(f"path does not exist: {p}")
    return p


def load_ct(path: str | os.PathLike):
    """Read a CT (HU) from DICOM or an image file.

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

    Returns:
        ``(grid, info)``; ``info`` is ``None`` for an image file.
    """
    p = _exists(path)
    if p.is_file() and is_image_file(p):
        if unit is None:
            return read_image(p), None
        return read_image(p, unit=unit), None
    from persodose.io.dicom import list_series, read_series

    infos = [i for i in list_series(p) if i.modality in ("PT", "NM")]
    if not infos:
        raise InputError(f"no PET or NM image series found in {p}")
    return _as_tuple(read_series(p, series_uid=infos[0].series_instance_uid if len(infos) == 1 else None,
                                 calibration_cps_per_mbq=calibration_cps_per_mbq))


def _as_tuple(series) -> tuple[Grid, object]:
    return series.grid, series.info
