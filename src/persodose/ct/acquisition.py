"""CT acquisition parameters from DICOM headers (with user overrides).

What is taken from where (DICOM PS3.3 C.8.2.1 CT Image module, C.8.15.3 CT Acquisition
Details), as read by :func:`persodose.io.dicom.read_ct` into ``SeriesInfo.extra`` and handed
over by :func:`persodose.io.ct_headers.read_ct_headers` (this module parses no DICOM):

=====================  =======================================  =====================
Acquisition field       DICOM attribute                           override key
=====================  =======================================  =====================
kvp                     KVP (0018,0060)                           ``kvp``
pitch                   Spiral Pitch Factor (0018,9311)           ``pitch``
total_collimation_mm    Total Collimation Width (0018,9307)       ``total_collimation_mm``
rotation_time_s         Revolution Time (0018,9305)               ``rotation_time_s``
bowtie                  Filter Type (0018,1160), mapped; else     ``bowtie``
                        the caller's head/body decision
                        (:mod:`persodose.ct.protocol`)
tube current per slice  X-Ray Tube Current (0018,1151) [in uA     ``tube_current_ma``
                        (0018,8151)]; else Exposure (0018,1152) /  (scalar: fixed mA)
                        Exposure Time (0018,1150); else CTDIvol
                        (0018,9345) per slice (relative only)
ctdivol_mgy             CTDIvol (0018,9345), mean over slices     ``ctdivol_mgy``
mode                    helical when a pitch is known             ``mode``
=====================  =======================================  =====================

The tube current along z is the per-slice value at each slice position; it is interpolated
linearly between slices and held beyond the end slices. With none of the tube-current tags
the scan is taken as fixed tube current (FTC) and a warning says so. The Exposure /
Exposure Time fallback gives the correct *shape* of mA(z); some vendors write the
effective mAs (mA x rotation time / pitch) in Exposure, so the absolute mA of that fallback
can be off by the pitch factor. The CTDIvol fallback gives the shape only (CTDIvol is
proportional to mA at fixed kVp, bowtie, collimation, pitch and rotation time; IEC
60601-2-44) and no absolute mA.

The irradiated range is the range of the slice positions extended by ``overrange_mm`` at
each end; by default half the total collimation, the least needed for the beam to cover
the end slices. Real helical over-ranging is scanner-specific and often longer (e.g.
E. Tzedakis et al., Med. Phys. 32 (2005) 1621-1629); override ``overrange_mm`` when known.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from persodose.ct.bowtie import GENERIC_BOWTIES
from persodose.errors import DicomError, InputError
from persodose.io.ct_headers import CTHeaders, read_ct_headers

__all__ = ["Acquisition", "CTAcquisitionWarning", "DEFAULT_FILTER_TYPE_MAP", "acquisition_from_dicom",
           "bowtie_for_filter_type", "OVERRIDE_KEYS"]


class CTAcquisitionWarning(UserWarning):
    """A CT acquisition parameter was assumed (e.g. fixed tube current)."""


#: Vendor Filter Type (0018,1160) words -> generic bowtie, tried in this order on the
#: upper-cased value (first match wins). GE writes e.g. "BODY FILTER" / "HEAD FILTER",
#: Toshiba/Canon "LARGE" / "MEDIUM" / "SMALL"; Siemens "WEDGE_x" / "FLAT" values are not
#: documented per bowtie and map to the scanner's default through "unknown" (a warning).
DEFAULT_FILTER_TYPE_MAP: tuple[tuple[str, str], ...] = (
    ("PED", "medium"), ("MEDIUM", "medium"), ("CARDIAC", "medium"),
    ("HEAD", "head"), ("SMALL", "head"),
    ("BODY", "body"), ("LARGE", "body"),
    ("FLAT", "flat"), ("NONE", "flat"),
)

#: Keys accepted in ``overrides``.
OVERRIDE_KEYS = ("kvp", "pitch", "total_collimation_mm", "rotation_time_s", "bowtie", "tube_current_ma",
                 "ctdivol_mgy", "mode", "overrange_mm", "table_increment_mm", "isocentre_xy_mm",
                 "scan_range_mm")


@dataclass(frozen=True, eq=False)
class Acquisition:
    """What the source model needs to know about one CT acquisition.

    Attributes:
        kvp: tube potential, kV.
        mode: ``"helical"`` or ``"axial"``.
        pitch: spiral pitch factor (table feed per rotation / total collimation); for axial
            scans the table increment / total collimation.
        total_collimation_mm: nominal beam width at isocentre (N x T), mm.
        rotation_time_s: time of one gantry rotation, s.
        bowtie: generic bowtie name (or a scanner's custom bowtie name).
        slice_z_mm: z (table axis, LPS) of the reconstructed slices, mm, increasing, shape (n,).
        relative_current: tube current at each slice divided by its mean, shape (n,).
        tube_current_ma: absolute mA per slice, shape (n,), or ``None`` when unknown.
        tube_current_source: ``"XRayTubeCurrent"``, ``"Exposure/ExposureTime"``,
            ``"CTDIvol"``, ``"override"`` or ``"fixed"`` (FTC).
        ctdivol_mgy: mean CTDIvol, mGy, or ``None``.
        overrange_mm: extension of the irradiated range beyond the end slices, each end, mm.
        isocentre_xy_mm: (x, y) LPS of the rotation axis, mm.
        filter_type: the DICOM Filter Type as written ("" if absent).
        slice_range_mm: (first, last) reconstructed slice z, mm (or the ``scan_range_mm``
            override); ``None`` means the range of ``slice_z_mm``.
        provenance: field -> ``"dicom"``, ``"override"``, ``"derived"`` or ``"default"``.
    """

    kvp: float
    mode: str
    pitch: float
    total_collimation_mm: float
    rotation_time_s: float
    bowtie: str
    slice_z_mm: np.ndarray
    relative_current: np.ndarray
    tube_current_ma: np.ndarray | None = None
    tube_current_source: str = "fixed"
    ctdivol_mgy: float | None = None
    overrange_mm: float = 0.0
    isocentre_xy_mm: tuple[float, float] = (0.0, 0.0)
    filter_type: str = ""
    slice_range_mm: tuple[float, float] | None = None
    provenance: Mapping[str, str] = field(default_factory=dict)

    @property
    def table_feed_per_rotation_mm(self) -> float:
        """Table advance per rotation (helical) or per axial step, mm."""
        return self.pitch * self.total_collimation_mm

    @property
    def scan_range_mm(self) -> tuple[float, float]:
        """Irradiated z range (slice range extended by the over-range), mm."""
        lo, hi = self.slice_range_mm or (float(self.slice_z_mm[0]), float(self.slice_z_mm[-1]))
        return (float(lo - self.overrange_mm), float(hi + self.overrange_mm))

    def relative_current_at(self, z_mm) -> np.ndarray:
        """Relative tube current at table positions ``z_mm`` (linear, held at the ends)."""
        return np.interp(np.asarray(z_mm, dtype=np.float64), self.slice_z_mm, self.relative_current)

    def tube_current_ma_at(self, z_mm) -> np.ndarray | None:
        """Absolute tube current at ``z_mm``, mA, or ``None`` when unknown."""
        if self.tube_current_ma is None:
            return None
        return np.interp(np.asarray(z_mm, dtype=np.float64), self.slice_z_mm, self.tube_current_ma)


def bowtie_for_filter_type(filter_type: str | None,
                           mapping: Mapping[str, str] | tuple[tuple[str, str], ...] | None = None) -> str | None:
    """Generic bowtie for a DICOM Filter Type value, or ``None`` when no word matches.

    Args:
        filter_type: the value as written (any case).
        mapping: word -> bowtie (a dict or ordered pairs); exact matches of the whole
            value are tried first, then words contained in it. Default
            :data:`DEFAULT_FILTER_TYPE_MAP`.
    """
    if not filter_type:
        return None
    pairs = list(mapping.items()) if isinstance(mapping, Mapping) else list(mapping or DEFAULT_FILTER_TYPE_MAP)
    text = str(filter_type).strip().upper()
    for word, bowtie in pairs:
        if text == str(word).strip().upper():
            return bowtie
    for word, bowtie in pairs:
        if str(word).strip().upper() in text:
            return bowtie
    return None


def _positive(value: Any, what: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a number, got {value!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise InputError(f"{what} must be finite and > 0, got {value!r}")
    return v


def _per_slice(vals: Any, n: int) -> np.ndarray | None:
    """Per-slice header values (see :class:`~persodose.io.ct_headers.CTHeaders`) as ``n``
    floats, NaN where missing; ``None`` when absent, of another length or all missing."""
    if vals is None:
        return None
    if np.isscalar(vals):
        vals = [vals] * n
    arr = np.array([np.nan if v is None else float(v) for v in vals], dtype=np.float64)
    if arr.size != n or not np.any(np.isfinite(arr)):
        return None
    return arr


def _fill(arr: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Fill missing (NaN) slice values by linear interpolation along z (ends held)."""
    ok = np.isfinite(arr)
    if np.all(ok):
        return arr
    order = np.argsort(z[ok])
    return np.interp(z, z[ok][order], arr[ok][order])


def acquisition_from_dicom(series: Any, overrides: Mapping[str, Any] | None = None, *,
                           filter_type_map: Mapping[str, str] | None = None,
                           default_bowtie: str = "body", bowtie_rule: str | None = None,
                           warn_default: bool = True) -> Acquisition:
    """Build an :class:`Acquisition` from a CT series read by :func:`persodose.io.dicom.read_ct`.

    The header values come from :func:`persodose.io.ct_headers.read_ct_headers`; this
    function checks them, applies the overrides and chooses the defaults.

    Args:
        series: a :class:`~persodose.io.dicom.Series` (slice positions and isocentre from
            its grid) or its :class:`~persodose.io.dicom.SeriesInfo` (slice positions read
            from the headers of ``info.files``).
        overrides: values that replace or complete the DICOM ones; keys in
            :data:`OVERRIDE_KEYS`. ``tube_current_ma`` as a number means fixed tube current
            (or a sequence with one value per slice); ``scan_range_mm`` = (z_min, z_max)
            replaces the slice range (e.g. when no slice positions are available);
            ``mode`` is ``"helical"`` or ``"axial"``.
        filter_type_map: Filter Type word -> bowtie (default :data:`DEFAULT_FILTER_TYPE_MAP`).
        default_bowtie: bowtie used when the filter type is absent or unknown (with a
            warning when ``warn_default``).
        bowtie_rule: what chose ``default_bowtie`` (e.g. the head/body rule of
            :func:`persodose.ct.protocol.decide_protocol`), said in the warning and kept in
            the provenance as ``bowtie_rule``.
        warn_default: warn when ``default_bowtie`` is used.

    Returns:
        The acquisition.

    Raises:
        InputError: a required value (kVp, collimation, pitch for helical, rotation time) is
            neither in DICOM nor in ``overrides`` (the message names the tag), unknown
            override keys, bad values.
        DicomError: the series holds localizer (scout) images.
    """
    ov = dict(overrides or {})
    unknown = set(ov) - set(OVERRIDE_KEYS)
    if unknown:
        raise InputError(f"unknown CT acquisition override(s) {sorted(unknown)}; known: {', '.join(OVERRIDE_KEYS)}")
    hdr = read_ct_headers(series)
    if hdr.holds_localizer:
        raise DicomError(f"{hdr.label} holds localizer (scout) images; give the axial CT series")
    prov: dict[str, str] = {}  # filled by the steps below, in this order

    z, slice_range = _slice_positions(hdr, ov, prov)
    order = np.argsort(z, kind="stable")
    z_sorted = z[order]
    if z_sorted.size == 1:
        z_sorted = np.array([z_sorted[0], z_sorted[0]])
        order = np.array([0, 0])
    kvp, coll, rot, mode, pitch = _beam(hdr, ov, prov)
    bowtie = _bowtie(hdr, ov, filter_type_map, default_bowtie, prov, bowtie_rule, warn_default)
    ma_out, relative, source = _tube_current(hdr, ov, z, order, z_sorted)
    prov["tube_current"] = "override" if source == "override" else ("default" if source == "fixed" else "dicom")
    ctdivol = _ctdivol(hdr, ov, z.size, prov)
    overrange = _overrange(ov, coll, prov)
    iso = _isocentre(ov, hdr.centre_xy_mm, prov)

    for arr in (z_sorted, relative):
        arr.setflags(write=False)
    if ma_out is not None:
        ma_out.setflags(write=False)
    if slice_range is None:
        slice_range = (float(z_sorted[0]), float(z_sorted[-1]))
    return Acquisition(kvp=kvp, mode=mode, pitch=pitch, total_collimation_mm=coll, rotation_time_s=rot,
                       bowtie=bowtie, slice_z_mm=z_sorted, relative_current=relative, tube_current_ma=ma_out,
                       tube_current_source=source, ctdivol_mgy=ctdivol, overrange_mm=overrange,
                       isocentre_xy_mm=(float(iso[0]), float(iso[1])), filter_type=hdr.filter_type,
                       slice_range_mm=slice_range, provenance=prov)


def _slice_positions(hdr: CTHeaders, ov: Mapping[str, Any],
                     prov: dict[str, str]) -> tuple[np.ndarray, tuple[float, float] | None]:
    """Slice z positions (series order) and the ``scan_range_mm`` override, if given.

    Without slice positions the override's two ends stand for the slices.
    """
    z = hdr.slice_z_mm
    slice_range = None
    if ov.get("scan_range_mm") is not None:
        try:
            lo, hi = (float(v) for v in ov["scan_range_mm"])
        except (TypeError, ValueError):
            raise InputError(f"scan_range_mm must be (z_min, z_max) in mm, got {ov['scan_range_mm']!r}") from None
        if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
            raise InputError(f"scan_range_mm must be (z_min, z_max) with z_max > z_min, got {ov['scan_range_mm']!r}")
        slice_range = (lo, hi)
        if z.size == 0:
            z = np.array([lo, hi])
        prov["scan_range"] = "override"
    elif z.size == 0:
        raise InputError(f"{hdr.label}: no slice positions (ImagePositionPatient); give scan_range_mm")
    else:
        prov["scan_range"] = "dicom"
    return z, slice_range


def _pick(hdr: CTHeaders, ov: Mapping[str, Any], prov: dict[str, str], key: str, value: Any, tag: str) -> float:
    """Override ``key``, else the header ``value`` (named ``tag`` in messages); required."""
    if ov.get(key) is not None:
        prov[key] = "override"
        return _positive(ov[key], key)
    if value is not None:
        prov[key] = "dicom"
        return _positive(value, f"{hdr.label} {tag}")
    raise InputError(f"{hdr.label} has no {tag}; give the '{key}' override")


def _beam(hdr: CTHeaders, ov: Mapping[str, Any], prov: dict[str, str]) -> tuple[float, float, float, str, float]:
    """kVp, total collimation (mm), rotation time (s), mode and pitch.

    Axial scans take the pitch from ``table_increment_mm`` / collimation, else the ``pitch``
    override, else 1; helical scans need a pitch from the header or the overrides.
    """
    kvp = _pick(hdr, ov, prov, "kvp", hdr.kvp, "KVP (0018,0060)")
    coll = _pick(hdr, ov, prov, "total_collimation_mm", hdr.total_collimation_mm,
                 "TotalCollimationWidth (0018,9307)")
    rot = _pick(hdr, ov, prov, "rotation_time_s", hdr.rotation_time_s, "RevolutionTime (0018,9305)")
    mode = str(ov.get("mode") or "").strip().lower()
    if mode and mode not in ("helical", "axial"):
        raise InputError(f"mode must be 'helical' or 'axial', got {ov['mode']!r}")
    if mode == "axial":
        if ov.get("table_increment_mm") is not None:
            pitch = _positive(ov["table_increment_mm"], "table_increment_mm") / coll
            prov["pitch"] = "override"
        elif ov.get("pitch") is not None:
            pitch = _positive(ov["pitch"], "pitch")
            prov["pitch"] = "override"
        else:
            pitch = 1.0
            prov["pitch"] = "default"
        prov["mode"] = "override"
    else:
        pitch = _pick(hdr, ov, prov, "pitch", hdr.spiral_pitch_factor, "SpiralPitchFactor (0018,9311)")
        prov["mode"] = "override" if mode else "derived"
        mode = "helical"
    return kvp, coll, rot, mode, pitch


def _bowtie(hdr: CTHeaders, ov: Mapping[str, Any], filter_type_map: Mapping[str, str] | None,
            default_bowtie: str, prov: dict[str, str], rule: str | None = None, warn: bool = True) -> str:
    """Bowtie: the override, else the one the Filter Type maps to, else ``default_bowtie``
    (chosen by ``rule``; with a warning when ``warn``). Generic bowtie names are lower-cased."""
    filter_type = hdr.filter_type
    if ov.get("bowtie") is not None:
        bowtie = str(ov["bowtie"])
        prov["bowtie"] = "override"
    else:
        bowtie = bowtie_for_filter_type(filter_type, filter_type_map)
        if bowtie is None:
            bowtie = default_bowtie
            why = f"unknown FilterType {filter_type!r}" if filter_type else "no FilterType (0018,1160)"
            chosen = f" ({rule})" if rule else ""
            if warn:
                warnings.warn(f"{hdr.label}: {why}; using the {bowtie!r} bowtie{chosen}; override with "
                              "--bowtie head|body (the 'bowtie' acquisition override)",
                              CTAcquisitionWarning, stacklevel=3)
            prov["bowtie"] = "derived" if rule else "default"
            prov["bowtie_rule"] = rule or "default"
        else:
            prov["bowtie"] = "dicom"
    if bowtie.lower() in GENERIC_BOWTIES:
        bowtie = bowtie.lower()
    return bowtie


def _absolute_tube_current(hdr: CTHeaders, ov: Mapping[str, Any], z: np.ndarray) -> tuple[np.ndarray | None, str]:
    """Tube current per slice (series order), mA, and where it came from: the override, the
    X-Ray Tube Current, else Exposure / Exposure Time; ``(None, "fixed")`` when none is usable.
    Slices that lack a value get one interpolated along z."""
    n_slices = z.size
    ov_ma = ov.get("tube_current_ma")
    if ov_ma is not None:
        arr = np.asarray(ov_ma, dtype=np.float64).reshape(-1)
        if arr.size == 1:
            arr = np.repeat(arr, n_slices)
        if arr.size != n_slices or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
            raise InputError(f"tube_current_ma override needs one positive value or one per slice "
                             f"({n_slices}), got {arr.size}")
        return arr, "override"
    cur = _per_slice(hdr.xray_tube_current_ma, n_slices)
    if cur is not None and np.all(cur[np.isfinite(cur)] > 0):
        return _fill(cur, z), "XRayTubeCurrent"
    mas = _per_slice(hdr.exposure_mas, n_slices)
    t_ms = _per_slice(hdr.exposure_time_ms, n_slices)
    if mas is not None and t_ms is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            derived = mas / (t_ms / 1000.0)
        derived[~(derived > 0)] = np.nan
        if np.any(np.isfinite(derived)):
            return _fill(derived, z), "Exposure/ExposureTime"
    return None, "fixed"


def _tube_current(hdr: CTHeaders, ov: Mapping[str, Any], z: np.ndarray, order: np.ndarray,
                  z_sorted: np.ndarray) -> tuple[np.ndarray | None, np.ndarray, str]:
    """Absolute (or ``None``) and relative tube current at the sorted slices, and the source.

    Without an absolute current the CTDIvol per slice gives the shape; without that the scan
    is taken as fixed tube current, with a warning.
    """
    ma, source = _absolute_tube_current(hdr, ov, z)
    if ma is not None:
        ma_sorted = ma[order] if z.size >= 2 else np.repeat(ma, 2)
        return ma_sorted, ma_sorted / ma_sorted.mean(), source
    ctdi = _per_slice(hdr.ctdivol_mgy, z.size)
    if ctdi is not None and np.all(ctdi[np.isfinite(ctdi)] > 0) and np.nanmax(ctdi) > 0:
        c = _fill(ctdi, z)
        c = c[order] if z.size >= 2 else np.repeat(c, 2)
        return None, c / c.mean(), "CTDIvol"
    warnings.warn(f"{hdr.label}: no tube current (XRayTubeCurrent, Exposure/ExposureTime, CTDIvol) "
                  "per slice; assuming fixed tube current (FTC)", CTAcquisitionWarning,
                  stacklevel=3)
    return None, np.ones(z_sorted.size), "fixed"


def _ctdivol(hdr: CTHeaders, ov: Mapping[str, Any], n_slices: int, prov: dict[str, str]) -> float | None:
    """CTDIvol, mGy: the override, else the mean of the per-slice values, else ``None``."""
    if ov.get("ctdivol_mgy") is not None:
        prov["ctdivol_mgy"] = "override"
        return _positive(ov["ctdivol_mgy"], "ctdivol_mgy")
    c = _per_slice(hdr.ctdivol_mgy, n_slices)
    ctdivol = float(np.nanmean(c)) if c is not None else None
    prov["ctdivol_mgy"] = "dicom" if ctdivol is not None else "absent"
    return ctdivol


def _overrange(ov: Mapping[str, Any], coll: float, prov: dict[str, str]) -> float:
    """Over-range at each end, mm: the override, else half the total collimation."""
    if ov.get("overrange_mm") is not None:
        overrange = float(ov["overrange_mm"])
        if not (math.isfinite(overrange) and overrange >= 0):
            raise InputError(f"overrange_mm must be >= 0, got {ov['overrange_mm']!r}")
        prov["overrange_mm"] = "override"
        return overrange
    prov["overrange_mm"] = "default"
    return 0.5 * coll


def _isocentre(ov: Mapping[str, Any], centre: tuple[float, float] | None,
               prov: dict[str, str]) -> tuple[float, float]:
    """Rotation axis (x, y), mm: the override, else the reconstruction centre, else (0, 0)."""
    if ov.get("isocentre_xy_mm") is not None:
        iso = tuple(float(v) for v in ov["isocentre_xy_mm"])
        if len(iso) != 2 or not all(math.isfinite(v) for v in iso):
            raise InputError(f"isocentre_xy_mm must be (x, y) in mm, got {ov['isocentre_xy_mm']!r}")
        prov["isocentre_xy_mm"] = "override"
        return iso
    if centre is not None:
        prov["isocentre_xy_mm"] = "derived"  # the reconstruction centre
        return centre
    prov["isocentre_xy_mm"] = "default"
    return (0.0, 0.0)
