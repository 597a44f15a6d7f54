"""CT acquisition header values of one series, as written (no defaults, no physics).

:func:`read_ct_headers` gathers what :func:`persodose.ct.acquisition.acquisition_from_dicom`
needs from a CT series read by :func:`persodose.io.dicom.read_ct`:

* the acquisition attributes that :func:`~persodose.io.dicom.read_ct` put into
  ``SeriesInfo.extra`` (KVP (0018,0060), Spiral Pitch Factor (0018,9311), Total Collimation
  Width (0018,9307), Revolution Time (0018,9305), Filter Type (0018,1160) and, per slice,
  X-Ray Tube Current (0018,1151) / in uA (0018,8151), Exposure (0018,1152), Exposure Time
  (0018,1150) and CTDIvol (0018,9345); DICOM PS3.3 C.8.2.1 and C.8.15.3);
* the slice positions along z and the centre of the reconstructed field, from the series'
  grid when there is one, else from Image Position / Orientation (Patient), Pixel Spacing,
  Rows and Columns in the headers of the series' files (pixel data not read);
* the Image Type (0008,0008) of each file, so that the caller can refuse localizers.

The values are handed over as read; checking them, filling gaps and choosing defaults is
the CT model's job (:mod:`persodose.ct.acquisition`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from persodose.errors import DicomError, InputError

__all__ = ["CTHeaders", "read_ct_headers", "read_protocol_values"]

@dataclass(frozen=True, eq=False)
class CTHeaders:
    """Raw CT acquisition header values of one series (units as in the field names).

    Attributes:
        label: how messages name the series (``SeriesInfo.label()``, else ``"CT series"``).
        slice_z_mm: z (LPS) of each slice, mm, in the series' order (not sorted); empty when
            unknown.
        centre_xy_mm: (x, y) LPS of the centre of the reconstructed field, mm, or ``None``.
        image_types: Image Type values of each file header read (upper case); empty when the
            slice positions came from the grid.
        kvp: KVP, kV, or ``None``.
        spiral_pitch_factor: Spiral Pitch Factor, or ``None``.
        total_collimation_mm: Total Collimation Width, mm, or ``None``.
        rotation_time_s: Revolution Time, s, or ``None``.
        filter_type: Filter Type as written (``""`` if absent).
        xray_tube_current_ma: tube current per slice, mA (see below).
        exposure_mas: Exposure per slice, mAs.
        exposure_time_ms: Exposure Time per slice, ms.
        ctdivol_mgy: CTDIvol per slice, mGy.

    The per-slice fields hold one value for the whole series, or a tuple with one value per
    slice (``None`` where a slice lacks it), or ``None`` when no slice has the attribute.
    Values are as read: the consumer checks that they are positive numbers.
    """

    label: str
    slice_z_mm: np.ndarray
    centre_xy_mm: tuple[float, float] | None
    image_types: tuple[tuple[str, ...], ...]
    kvp: float | None = None
    spiral_pitch_factor: float | None = None
    total_collimation_mm: float | None = None
    rotation_time_s: float | None = None
    filter_type: str = ""
    xray_tube_current_ma: float | tuple[float | None, ...] | None = None
    exposure_mas: float | tuple[float | None, ...] | None = None
    exposure_time_ms: float | tuple[float | None, ...] | None = None
    ctdivol_mgy: float | tuple[float | None, ...] | None = None

    @property
    def holds_localizer(self) -> bool:
        """Whether any file's Image Type says LOCALIZER (a scout image)."""
        return any("LOCALIZER" in t for t in self.image_types)


def read_ct_headers(series: Any) -> CTHeaders:
    """Acquisition header values of a CT series.

    Args:
        series: a :class:`~persodose.io.dicom.Series` (slice positions and field centre from
            its grid) or its :class:`~persodose.io.dicom.SeriesInfo` (slice positions read
            from the headers of ``info.files``); any object with the same attributes
            (``extra``, ``modality``, ``files``, ``label()``) will do.

    Returns:
        :class:`CTHeaders`.

    Raises:
        InputError: the series is not a CT series.
        DicomError: a file header cannot be read.
    """
    info = getattr(series, "info", series)
    extra: Mapping[str, Any] = dict(getattr(info, "extra", {}) or {})
    label = info.label() if hasattr(info, "label") else "CT series"
    modality = getattr(info, "modality", "CT")
    if modality and modality != "CT":
        raise InputError(f"{label} is not a CT series (modality {modality})")
    z, centre, image_types = _slice_geometry(series)
    return CTHeaders(
        label=label, slice_z_mm=z, centre_xy_mm=centre,
        image_types=tuple(tuple(t) for t in image_types),
        kvp=extra.get("kvp"), spiral_pitch_factor=extra.get("spiral_pitch_factor"),
        total_collimation_mm=extra.get("total_collimation_mm"),
        rotation_time_s=extra.get("rotation_time_s"),
        filter_type=str(extra.get("filter_type") or ""),
        xray_tube_current_ma=_per_slice_raw(extra.get("xray_tube_current_ma")),
        exposure_mas=_per_slice_raw(extra.get("exposure_mas")),
        exposure_time_ms=_per_slice_raw(extra.get("exposure_time_ms")),
        ctdivol_mgy=_per_slice_raw(extra.get("ctdivol_mgy")))


def _per_slice_raw(vals: Any):
    """A per-slice value as stored: ``None``, one value (a scalar) or a tuple of values."""
    if vals is None or np.isscalar(vals):
        return vals
    return tuple(vals)


def _slice_geometry(series: Any) -> tuple[np.ndarray, tuple[float, float] | None, list[list[str]]]:
    """Slice z positions, centre (x, y) of the image and ImageType of each slice.

    From the grid when ``series`` is a :class:`~persodose.io.dicom.Series`; else from the
    headers of ``info.files`` (pixel data not read).
    """
    grid = getattr(series, "grid", None)
    info = getattr(series, "info", series)
    files = list(getattr(info, "files", []) or [])
    image_types: list[list[str]] = []
    if grid is not None:
        nz, ny, nx = grid.shape
        idx = np.array([[k, 0, 0] for k in range(nz)], dtype=np.float64)
        z = grid.index_to_physical(idx)[:, 2]
        centre = grid.index_to_physical(np.array([[0, (ny - 1) / 2.0, (nx - 1) / 2.0]]))[0]
        return np.asarray(z, dtype=np.float64), (float(centre[0]), float(centre[1])), image_types
    if not files:
        return np.zeros(0), None, image_types
    import pydicom

    zs, centres = [], []
    for f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True,
                                 specific_tags=["ImagePositionPatient", "ImageOrientationPatient",
                                                "ImageType", "Rows", "Columns", "PixelSpacing"])
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's input
            raise DicomError(f"cannot read CT header {f}: {exc}") from None
        it = ds.get("ImageType", [])
        image_types.append([str(v).upper() for v in ([it] if isinstance(it, str) else it)])
        ipp = ds.get("ImagePositionPatient")
        if ipp is None:
            continue
        zs.append(float(ipp[2]))
        try:
            iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
            ps = np.asarray(ds.PixelSpacing, dtype=float)  # row spacing, column spacing
            c = (np.asarray(ipp, float) + iop[:3] * ps[1] * (int(ds.Columns) - 1) / 2.0
                 + iop[3:] * ps[0] * (int(ds.Rows) - 1) / 2.0)
            centres.append(c[:2])
        except (AttributeError, ValueError, TypeError):
            pass
    centre = tuple(float(v) for v in np.mean(centres, axis=0)) if centres else None
    return np.asarray(zs, dtype=np.float64), centre, image_types


def read_protocol_values(path) -> dict:
    """Head/body header values of one CT file, as written (pixel data not read): Body Part
    Examined (0018,0015), Protocol Name (0018,1030), Series Description (0008,103E) and the
    CTDI Phantom Type Code Sequence (0018,9346; top level or in the first CT Exposure Sequence
    item), for :func:`persodose.ct.protocol.read_protocol_headers`.

    Raises:
        DicomError: the file cannot be read.
    """
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:  # noqa: BLE001 - an unreadable file is the user's input
        raise DicomError(f"cannot read CT header {path}: {exc}") from None
    out = {"body_part": str(ds.get("BodyPartExamined", "") or ""),
           "protocol_name": str(ds.get("ProtocolName", "") or ""),
           "series_description": str(ds.get("SeriesDescription", "") or "")}
    seq = ds.get("CTDIPhantomTypeCodeSequence")
    if not seq:
        exposure = ds.get("CTExposureSequence")
        seq = exposure[0].get("CTDIPhantomTypeCodeSequence") if exposure else None
    if seq:
        out["phantom_code"] = str(seq[0].get("CodeValue", "") or "")
        out["phantom_meaning"] = str(seq[0].get("CodeMeaning", "") or "")
    return out
