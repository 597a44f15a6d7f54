"""Scan protocol awareness: head or body, the CTDI phantom, the patient's size and SSDE.

Which CTDI phantom CTDIvol refers to and which bowtie the scanner used decide every organ
dose of a CT run (the calibration of :mod:`persodose.ct.dose` scales the whole map to the
CTDIvol of the phantom): a head scan taken for a body scan gets about twice its dose.

Head or body: the rules, in order of trust (:func:`decide_protocol`)
    1. the user: ``--bowtie head|body`` (and ``--ctdi-phantom 16|32`` for the phantom);
    2. CTDI Phantom Type Code Sequence (0018,9346): DCM 113690 "IEC Head Dosimetry Phantom"
       (160 mm), 113691 "IEC Body Dosimetry Phantom" (320 mm) (DICOM PS3.16 CID 4052; the
       code meaning is matched as well). A 160 mm code with a body word in a later header
       (Filter Type, Body Part Examined, descriptions) is a body scan whose CTDIvol the
       scanner reports in the 16 cm phantom, as scanners do for small patients;
    3. Filter Type (0018,1160), mapped as :data:`persodose.ct.acquisition.DEFAULT_FILTER_TYPE_MAP`;
    4. Body Part Examined (0018,0015);
    5. Protocol Name (0018,1030), then Series Description (0008,103E): keywords
       (:data:`HEAD_WORDS`, :data:`BODY_WORDS`; a text with both says nothing);
    6. the patient (:func:`patient_size`, :func:`looks_like_head`): a head when the scanned
       range fits in the field of view, holds no lung, most of its slices are ringed by bone
       (the skull) and its water-equivalent diameter is that of a head; otherwise body.

Water-equivalent diameter (AAPM Report 220, 2014, eq. 3) over the patient contour of each
axial slice: ``Dw = 2 sqrt((mean(HU)/1000 + 1) A / pi)``, ``A`` the area inside the
contour (the largest connected region above :data:`CONTOUR_HU`, holes filled, so that lungs
and bowel gas count with their own HU and the couch does not count).

SSDE (AAPM Report 204, 2011; Dw in place of the effective diameter, AAPM Report 220): the
exponential fits of Report 204, ``f = a exp(-b Dw[cm])`` with ``a, b = 3.704369,
0.03671937`` for CTDIvol in the 32 cm phantom and ``1.874799, 0.03871313`` in the 16 cm
phantom, over 8-45 cm (the range of the report's tables); ``SSDE = f(Dw) CTDIvol``.
For a head scan in the 16 cm phantom the 16 cm fit of Report 204 (made for the body of
children) is used as it stands; AAPM Report 293's head-specific factors are not
implemented here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from persodose.errors import InputError

__all__ = ["PHANTOM_CODES", "HEAD_WORDS", "BODY_WORDS", "ProtocolHeaders", "PatientSize", "ScanProtocol",
           "read_protocol_headers", "patient_size", "looks_like_head", "decide_protocol", "ssde_factor",
           "SSDE_FIT", "water_equivalent_diameter_mm", "SizeSpecificDose", "size_specific_dose"]

#: CTDI Phantom Type code values (DCM) -> phantom diameter, mm (DICOM PS3.16 CID 4052).
PHANTOM_CODES: dict[str, float] = {"113690": 160.0, "113691": 320.0}
#: Words (upper case, matched inside the text) that say head; ``HEADNECK``-like texts hold both.
HEAD_WORDS = ("HEAD", "BRAIN", "SKULL", "CRAN", "NEURO", "SINUS", "ORBIT", "CEREBR", "KOPF", "SCHAEDEL",
              "SCHADEL", "TETE", "CERVEAU")
#: Words that say body (trunk).
BODY_WORDS = ("BODY", "CHEST", "THORAX", "THORAC", "LUNG", "ABD", "PELV", "TORSO", "LIVER", "KIDNEY",
              "CARD", "HEART", "COLON", "SPINE", "LUMB", "AORT", "BAUCH", "ABDOMEN", "TRUNK", "WHOLEBODY")
#: AAPM Report 204 exponential fits: phantom diameter (mm) -> (a, b per cm).
SSDE_FIT: dict[float, tuple[float, float]] = {320.0: (3.704369, 0.03671937), 160.0: (1.874799, 0.03871313)}
#: Dw range of the AAPM Report 204 tables, mm.
SSDE_DW_RANGE_MM = (80.0, 450.0)

#: Patient contour threshold, HU (air below, tissue above).
CONTOUR_HU = -400.0
#: HU inside the contour counted as lung (or other gas).
LUNG_HU = -400.0
#: HU counted as bone for the skull ring.
BONE_HU = 250.0
#: Patient rule thresholds (see :func:`looks_like_head`).
HEAD_MAX_DW_MM = 220.0
HEAD_MAX_LUNG_FRACTION = 0.08
HEAD_RING_COVERAGE = 0.80
HEAD_MIN_RING_SLICES = 0.30
TRUNCATED_EDGE_FRACTION = 0.05


@dataclass(frozen=True)
class ProtocolHeaders:
    """The header values that say head or body (as written; ``""`` when absent)."""

    phantom_code: str = ""
    phantom_meaning: str = ""
    filter_type: str = ""
    body_part: str = ""
    protocol_name: str = ""
    series_description: str = ""


@dataclass(frozen=True, eq=False)
class PatientSize:
    """Size and anatomy of the scanned range, per axial slice of the CT.

    Attributes:
        slice_z_mm: z (LPS) of each slice, mm, shape (n,), in the CT's slice order.
        dw_mm: water-equivalent diameter of each slice, mm (AAPM Report 220), 0 without a body.
        lung_fraction: fraction of the contour's area below :data:`LUNG_HU`.
        ring_coverage: fraction of 36 angular sectors about the contour's centroid with bone
            in the outer 40 % of the radius (1 for a skull ring).
        truncated_fraction: fraction of the image border covered by the contour.
    """

    slice_z_mm: np.ndarray
    dw_mm: np.ndarray
    lung_fraction: np.ndarray
    ring_coverage: np.ndarray
    truncated_fraction: np.ndarray

    def within(self, z_lo_mm, z_hi_mm) -> "PatientSize":
        """The slices with ``z_lo_mm <= z <= z_hi_mm`` (all of them when none or on bad values)."""
        try:
            lo, hi = sorted((float(z_lo_mm), float(z_hi_mm)))
        except (TypeError, ValueError):
            return self
        keep = (self.slice_z_mm >= lo) & (self.slice_z_mm <= hi)
        if not np.any(keep):
            return self
        return PatientSize(self.slice_z_mm[keep], self.dw_mm[keep], self.lung_fraction[keep],
                           self.ring_coverage[keep], self.truncated_fraction[keep])

    @property
    def dw_mean_mm(self) -> float:
        """Mean Dw over the slices that hold a body, mm."""
        ok = self.dw_mm > 0
        return float(self.dw_mm[ok].mean()) if np.any(ok) else 0.0


@dataclass(frozen=True)
class ScanProtocol:
    """The decision: region, bowtie, CTDI phantom, and which rules made them.

    Attributes:
        region: ``"head"`` or ``"body"``.
        region_rule: the rule that decided the region (``"--bowtie"``, ``"CTDIPhantomTypeCodeSequence"``,
            ``"FilterType"``, ``"BodyPartExamined"``, ``"ProtocolName"``, ``"SeriesDescription"``,
            ``"patient"``), with the value that spoke.
        bowtie: the region's generic bowtie (the acquisition still takes a mapped Filter Type first).
        ctdi_phantom_mm: 160 or 320.
        ctdi_phantom_rule: ``"--ctdi-phantom"``, ``"CTDIPhantomTypeCodeSequence"`` or ``"region"``.
        evidence: one line per header or patient feature looked at.
    """

    region: str
    region_rule: str
    bowtie: str
    ctdi_phantom_mm: float
    ctdi_phantom_rule: str
    evidence: tuple[str, ...] = field(default_factory=tuple)

    @property
    def from_patient(self) -> bool:
        return self.region_rule.startswith("patient")

    def to_dict(self) -> dict:
        return {"region": self.region, "region_rule": self.region_rule, "bowtie": self.bowtie,
                "ctdi_phantom_mm": self.ctdi_phantom_mm, "ctdi_phantom_rule": self.ctdi_phantom_rule,
                "evidence": list(self.evidence)}


# ----------------------------------------------------------------------------- headers
def read_protocol_headers(info: Any) -> ProtocolHeaders:
    """Head/body header values of a CT series (its :class:`~persodose.io.dicom.SeriesInfo`).

    Filter Type and Series Description come from the SeriesInfo; Body Part Examined,
    Protocol Name and the CTDI Phantom Type Code Sequence (top level, or in the first CT
    Exposure Sequence item) from the first file's header (pixel data not read). ``None``
    (an image file) gives empty headers.

    Raises:
        DicomError: the first file cannot be read.
    """
    if info is None:
        return ProtocolHeaders()
    extra = dict(getattr(info, "extra", {}) or {})
    files = list(getattr(info, "files", []) or [])
    values = {"filter_type": str(extra.get("filter_type") or ""),
              "series_description": str(getattr(info, "series_description", "") or "")}
    if files:
        from persodose.io.ct_headers import read_protocol_values

        for key, value in read_protocol_values(files[0]).items():
            if value and not values.get(key):
                values[key] = value
    return ProtocolHeaders(**values)


def _words_say(text: str) -> str | None:
    """``"head"``, ``"body"`` or ``None`` (no word, or words of both) for a header text."""
    t = "".join(ch for ch in str(text).upper() if ch.isalnum())
    head = any(w in t for w in HEAD_WORDS)
    body = any(w in t for w in BODY_WORDS)
    if head == body:
        return None
    return "head" if head else "body"


def _phantom_from_code(h: ProtocolHeaders) -> float | None:
    if h.phantom_code.strip() in PHANTOM_CODES:
        return PHANTOM_CODES[h.phantom_code.strip()]
    meaning = h.phantom_meaning.upper()
    if "HEAD" in meaning:
        return 160.0
    if "BODY" in meaning:
        return 320.0
    return None


# ----------------------------------------------------------------------------- patient
def _contour(slice_hu: np.ndarray) -> np.ndarray:
    """The patient contour of one slice: the largest region above :data:`CONTOUR_HU`, filled."""
    from scipy import ndimage

    mask = slice_hu > CONTOUR_HU
    if not mask.any():
        return mask
    lab, n = ndimage.label(mask)
    if n > 1:
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        mask = lab == int(np.argmax(sizes))
    return ndimage.binary_fill_holes(mask)


def water_equivalent_diameter_mm(slice_hu: np.ndarray, pixel_area_mm2: float,
                                 contour: np.ndarray | None = None) -> float:
    """Dw of one axial slice over the patient contour, mm (AAPM Report 220, eq. 3).

    Args:
        slice_hu: the slice in HU, shape (y, x).
        pixel_area_mm2: area of one pixel, mm2.
        contour: the patient contour (default :func:`_contour` of the slice).
    """
    c = _contour(slice_hu) if contour is None else contour
    if not c.any():
        return 0.0
    hu = np.clip(slice_hu[c].astype(np.float64), -1000.0, None)
    area = float(c.sum()) * pixel_area_mm2
    return 2.0 * math.sqrt(max(hu.mean() / 1000.0 + 1.0, 0.0) * area / math.pi)


def _ring_coverage(slice_hu: np.ndarray, contour: np.ndarray, n_sectors: int = 36) -> float:
    """Fraction of angular sectors with bone in the outer 40 % of the contour's radius."""
    yy, xx = np.nonzero(contour)
    if yy.size < 20:
        return 0.0
    cy, cx = yy.mean(), xx.mean()
    ang = np.arctan2(yy - cy, xx - cx)
    r = np.hypot(yy - cy, xx - cx)
    sector = ((ang + math.pi) / (2 * math.pi) * n_sectors).astype(int) % n_sectors
    r_max = np.zeros(n_sectors)
    np.maximum.at(r_max, sector, r)
    bone = slice_hu[yy, xx] > BONE_HU
    outer = r > 0.6 * r_max[sector]
    hit = np.zeros(n_sectors, bool)
    hit[sector[bone & outer]] = True
    return float(hit.mean())


def patient_size(ct) -> PatientSize:
    """Per-slice Dw, lung fraction, bone-ring coverage and truncation of a CT grid (HU, z,y,x)."""
    arr = np.asarray(ct.array)
    if arr.ndim != 3:
        raise InputError(f"expected a 3-D CT, got shape {arr.shape}")
    nz = arr.shape[0]
    dz, dy, dx = ct.spacing_zyx_mm
    z = ct.index_to_physical(np.array([[k, 0, 0] for k in range(nz)], dtype=np.float64))[:, 2]
    dw, lung, ring, trunc = (np.zeros(nz) for _ in range(4))
    for k in range(nz):
        s = np.asarray(arr[k], dtype=np.float32)
        c = _contour(s)
        if not c.any():
            continue
        dw[k] = water_equivalent_diameter_mm(s, dy * dx, c)
        lung[k] = float(np.count_nonzero(c & (s < LUNG_HU))) / float(c.sum())
        ring[k] = _ring_coverage(s, c)
        edge = np.concatenate([c[0], c[-1], c[:, 0], c[:, -1]])
        trunc[k] = float(edge.mean())
    return PatientSize(np.asarray(z, dtype=np.float64), dw, lung, ring, trunc)


def looks_like_head(size: PatientSize) -> tuple[bool, str]:
    """The patient rule: a head, and the features that said so (one line).

    A head when all hold over the slices with a body: the contour fits in the field of
    view (it covers less than :data:`TRUNCATED_EDGE_FRACTION` of the image border on every
    slice), no slice has more than :data:`HEAD_MAX_LUNG_FRACTION` of its area below
    :data:`LUNG_HU` (lungs fill 20-60 % of a chest slice; sinuses and mastoids a few %),
    at least :data:`HEAD_MIN_RING_SLICES` of the slices are ringed by bone (skull: bone in at
    least :data:`HEAD_RING_COVERAGE` of 36 sectors of the outer contour; ribs leave
    intercostal gaps and the abdomen has none) and the median Dw is at most
    :data:`HEAD_MAX_DW_MM`. The thresholds are this project's, set on the two real head
    CT images of pydicom's test files (Dw 16-18 cm, ring coverage 0.9-1.0) and the virtual
    patients' trunks (docs/validation_ct.md); a child's trunk is as small as an adult head,
    which is why Dw alone does not decide.
    """
    ok = size.dw_mm > 0
    if not np.any(ok):
        return False, "patient: no body in the CT"
    dw_med = float(np.median(size.dw_mm[ok]))
    lung_max = float(size.lung_fraction[ok].max())
    ring_frac = float(np.mean(size.ring_coverage[ok] >= HEAD_RING_COVERAGE))
    trunc_max = float(size.truncated_fraction[ok].max())
    head = (trunc_max < TRUNCATED_EDGE_FRACTION and lung_max <= HEAD_MAX_LUNG_FRACTION
            and ring_frac >= HEAD_MIN_RING_SLICES and dw_med <= HEAD_MAX_DW_MM)
    why = (f"patient: median Dw {dw_med / 10:.1f} cm, max lung fraction {lung_max:.2f}, "
           f"{100 * ring_frac:.0f} % of slices ringed by bone, contour on {100 * trunc_max:.0f} % "
           f"of the image border")
    return head, why


# ----------------------------------------------------------------------------- decision
def _region_from_headers(h: ProtocolHeaders, filter_region: str | None) -> tuple[str | None, str]:
    """Region from the headers after the phantom code (Filter Type, Body Part, descriptions)."""
    if filter_region is not None:
        return filter_region, f"FilterType {h.filter_type!r}"
    for rule, text in (("BodyPartExamined", h.body_part), ("ProtocolName", h.protocol_name),
                       ("SeriesDescription", h.series_description)):
        said = _words_say(text) if text else None
        if said is not None:
            return said, f"{rule} {text!r}"
    return None, ""


def _filter_region(filter_type: str) -> str | None:
    from persodose.ct.acquisition import bowtie_for_filter_type

    bowtie = bowtie_for_filter_type(filter_type)
    return {"head": "head", "body": "body", "medium": "body"}.get(bowtie or "")


def decide_protocol(headers: ProtocolHeaders, size: PatientSize | None = None, *,
                    bowtie_override: str | None = None,
                    ctdi_phantom_mm: float | None = None) -> ScanProtocol:
    """Head or body, and the CTDI phantom (module docstring for the order of the rules).

    Args:
        headers: :func:`read_protocol_headers`.
        size: :func:`patient_size` of the CT (the last rule; ``None``: body when nothing else says).
        bowtie_override: the user's bowtie (``head`` / ``body`` decide the region).
        ctdi_phantom_mm: the user's CTDI phantom, 160 or 320 mm.

    Raises:
        InputError: a CTDI phantom other than 160 or 320 mm.
    """
    if ctdi_phantom_mm is not None and float(ctdi_phantom_mm) not in (160.0, 320.0):
        raise InputError(f"the CTDI phantom must be 16 or 32 cm (160 or 320 mm), got {ctdi_phantom_mm!r} mm")
    evidence = [f"CTDIPhantomTypeCodeSequence {headers.phantom_code or '-'} {headers.phantom_meaning!r}",
                f"FilterType {headers.filter_type!r}", f"BodyPartExamined {headers.body_part!r}",
                f"ProtocolName {headers.protocol_name!r}", f"SeriesDescription {headers.series_description!r}"]
    code_mm = _phantom_from_code(headers)
    later_region, later_rule = _region_from_headers(headers, _filter_region(headers.filter_type))
    user = str(bowtie_override).strip().lower() if bowtie_override is not None else None
    if user in ("head", "body"):
        region, rule = user, f"--bowtie {user}"
    elif code_mm == 320.0:
        region, rule = "body", "CTDIPhantomTypeCodeSequence (32 cm body phantom)"
    elif code_mm == 160.0 and later_region == "body":
        region, rule = "body", f"CTDIPhantomTypeCodeSequence (16 cm) with {later_rule}: body scan in the 16 cm phantom"
    elif code_mm == 160.0:
        region, rule = "head", "CTDIPhantomTypeCodeSequence (16 cm head phantom)"
    elif later_region is not None:
        region, rule = later_region, later_rule
    elif size is not None:
        head, why = looks_like_head(size)
        evidence.append(why)
        region, rule = ("head" if head else "body"), why
    else:
        region, rule = "body", "default (no header and no image says head)"
    if ctdi_phantom_mm is not None:
        phantom, phantom_rule = float(ctdi_phantom_mm), "--ctdi-phantom"
    elif code_mm is not None:
        phantom, phantom_rule = code_mm, "CTDIPhantomTypeCodeSequence"
    else:
        phantom, phantom_rule = (160.0 if region == "head" else 320.0), f"region ({region})"
    return ScanProtocol(region, rule, region, phantom, phantom_rule, tuple(evidence))


# ----------------------------------------------------------------------------- SSDE
def ssde_factor(dw_mm: float | np.ndarray, phantom_mm: float) -> np.ndarray:
    """AAPM Report 204 size conversion factor for CTDIvol in the 160 or 320 mm phantom.

    ``f = a exp(-b Dw[cm])`` (:data:`SSDE_FIT`); NaN outside :data:`SSDE_DW_RANGE_MM`.

    Raises:
        InputError: a phantom other than 160 or 320 mm.
    """
    if float(phantom_mm) not in SSDE_FIT:
        raise InputError(f"SSDE needs the 160 or 320 mm CTDI phantom, got {phantom_mm!r} mm")
    a, b = SSDE_FIT[float(phantom_mm)]
    dw = np.asarray(dw_mm, dtype=np.float64)
    f = a * np.exp(-b * dw / 10.0)
    lo, hi = SSDE_DW_RANGE_MM
    return np.where((dw >= lo) & (dw <= hi), f, np.nan)


@dataclass(frozen=True, eq=False)
class SizeSpecificDose:
    """CTDIvol, the patient's size and SSDE of one scan (AAPM Reports 204 and 220).

    Attributes:
        ctdivol_mgy: the CTDIvol the run is calibrated to, mGy (phantom ``ctdi_phantom_mm``).
        ctdi_phantom_mm: 160 or 320.
        slice_z_mm, dw_mm: Dw of each slice, mm (:class:`PatientSize`).
        dw_mean_mm: mean Dw over the slices with a body, mm.
        factor: AAPM Report 204 conversion factor at ``dw_mean_mm`` (NaN outside 8-45 cm).
        ssde_mgy: ``factor x ctdivol_mgy`` (``None`` outside the fit's range).
        ssde_per_slice_mgy: ``f(Dw(z)) x ctdivol_mgy`` per slice (NaN outside the range).
        method: how the SSDE was obtained (DICOM CID 10023 wording where it applies).
    """

    ctdivol_mgy: float
    ctdi_phantom_mm: float
    slice_z_mm: np.ndarray
    dw_mm: np.ndarray
    dw_mean_mm: float
    factor: float
    ssde_mgy: float | None
    ssde_per_slice_mgy: np.ndarray
    method: str

    def to_dict(self, per_slice: bool = True) -> dict:
        def num(v):
            return None if v is None or not math.isfinite(float(v)) else round(float(v), 4)

        out = {"ctdivol_mGy": num(self.ctdivol_mgy), "ctdi_phantom_mm": self.ctdi_phantom_mm,
               "dw_mean_mm": num(self.dw_mean_mm), "ssde_factor": num(self.factor),
               "ssde_mGy": num(self.ssde_mgy), "ssde_method": self.method}
        if per_slice:
            out.update({"slice_z_mm": [round(float(v), 3) for v in self.slice_z_mm],
                        "dw_mm_per_slice": [round(float(v), 2) for v in self.dw_mm],
                        "ssde_mGy_per_slice": [num(v) for v in self.ssde_per_slice_mgy]})
        return out


def size_specific_dose(size: PatientSize, ctdivol_mgy: float, ctdi_phantom_mm: float) -> SizeSpecificDose:
    """SSDE of a scan from its per-slice Dw and CTDIvol (module docstring).

    The scan's SSDE uses the mean Dw over the reconstructed slices ("Estimated from Water
    Equivalent Diameter", DICOM CID 10023, code 113988, with Dw averaged over the range).
    """
    ok = size.dw_mm > 0
    dw_mean = size.dw_mean_mm
    f = float(ssde_factor(dw_mean, ctdi_phantom_mm))
    per_slice = np.where(ok, ssde_factor(size.dw_mm, ctdi_phantom_mm) * float(ctdivol_mgy), np.nan)
    ssde = f * float(ctdivol_mgy) if math.isfinite(f) else None
    method = (f"AAPM Report 204 fit for the {ctdi_phantom_mm / 10:g} cm phantom at the mean Dw "
              f"(AAPM Report 220) of {int(ok.sum())} slices")
    if ssde is None:
        method += f"; Dw {dw_mean / 10:.1f} cm outside the fit's 8-45 cm: no SSDE"
    return SizeSpecificDose(float(ctdivol_mgy), float(ctdi_phantom_mm), size.slice_z_mm, size.dw_mm, dw_mean, f,
                            ssde, per_slice, method)
