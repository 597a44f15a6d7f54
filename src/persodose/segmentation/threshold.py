"""Analytic segmentation of any CT by CT-number thresholds and connectivity (``"threshold"``).

Delivers the body contour, the left and right lungs, bone and the air cavities inside the
body, with no training data and nothing to download; it is the default of ``--labels auto``.
Each step is a pure function on arrays (``hu`` in HU, ``(nz, ny, nx)``, axial slices along
axis 0) so that other back-ends can reuse them, e.g. the body contour for cropping.

Steps (see each function):

1. :func:`body_mask`: voxels above :data:`persodose.ct.dose.BODY_THRESHOLD_HU` (-500 HU, the
   CT workflow's own body threshold), a small in-plane opening that detaches the couch and
   blankets, the largest connected component, holes filled slice by slice (so lungs, airways
   and gas lie inside the body). The SINFONIA deliverable D2.2 extracts the body contour from
   the axial CT by the same kind of analytic processing before its networks and its CT dose
   calculation (sections "Pre-processing" of the segmentation study and "Data preparation"
   of the CT dosimetry study).
2. :func:`lung_masks`: low-density voxels inside the body (below -400 HU); per slice, regions
   that are pure air (median below -950 HU: trachea above the carina, gas) are not lung; the
   3-D connected components of at least :attr:`ThresholdSettings.lung_min_volume_ml` are the
   lungs, split into left and right by the body midline. This follows the scheme of Hu,
   Hoffman and Reinhardt (threshold, discard the air outside the body, remove the large
   airways, separate left and right lungs).
3. :func:`bone_mask`: voxels above 200 HU inside the body, a small 3-D opening, components
   below a minimum volume removed, and the holes of each slice whose mean is above 120 HU
   (the cancellous interior of vertebral bodies and long bones) filled.
4. Air cavities: the low-density voxels inside the body that are not lung.

CT-number ranges are those of Schneider et al. (2000), Table 6: air -1000 to -950 HU, lung
-950 to -120 HU, bone from 120 HU (bin bone_01: 120-200 HU, overlapping contrast-enhanced
soft tissue; bone_02 onwards from 200 HU). -400 HU lies in the middle of the lung bin and
well above the -500 HU of the body contour's partial-volume edge.

Limitations: iodinated contrast above 200 HU (vessels, kidneys, bladder) and metal count as
bone; a large gas-filled bowel loop with a lung-like median CT number (coarse voxels) can
count as lung; the stomach and bowel contents are body. Arms and couch parts touching the
body stay part of it.

Sources:
    W. Schneider, T. Bortfeld, W. Schlegel, "Correlation between CT numbers and tissue
    parameters needed for Monte Carlo simulations of clinical dose distributions", Phys.
    Med. Biol. 45 (2000) 459-478, Table 6 (also ``persodose/data/schneider2000_materials.csv``).
    S. Hu, E. A. Hoffman, J. M. Reinhardt, "Automatic lung segmentation for accurate
    quantitation of volumetric X-ray CT images", IEEE Trans. Med. Imaging 20(6) (2001) 490-498.
    Y. Salimi, A. Akhavanallaf, Z. Mansouri, H. Zaidi, "Software tool on personalised
    dosimetry in PET-CT and deep learning-guided algorithms for automated construction of
    computational models", SINFONIA (Euratom grant 945196) deliverable D2.2 (2023).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from scipy import ndimage

from persodose.ct.dose import BODY_THRESHOLD_HU
from persodose.errors import InputError
from persodose.grid import Grid, Kind
from persodose.segmentation._settings import SegmenterSettings, setting
from persodose.segmentation.registry import register_segmenter

__all__ = ["ThresholdSettings", "THRESHOLD_LABELS", "threshold_segmenter", "body_mask", "lung_masks",
           "bone_mask", "fill_holes_per_slice"]

#: Label values and names. Names (and, where persodose's phantom has them, values) are those of
#: :data:`persodose.phantoms.LABELS`; ``bone`` and ``air_cavity`` are new.
THRESHOLD_LABELS: dict[int, str] = {1: "body", 4: "lung_left", 5: "lung_right", 40: "bone", 41: "air_cavity"}
_VALUE = {name: value for value, name in THRESHOLD_LABELS.items()}


@dataclass(frozen=True)
class ThresholdSettings(SegmenterSettings):
    """Settings of the ``threshold`` segmenter (CT-number ranges: Schneider et al. 2000)."""

    segmenter_name: ClassVar[str] = "threshold"

    body_threshold_hu: float = setting(
        BODY_THRESHOLD_HU, unit="HU", min=-1000.0, max=0.0,
        doc="voxels above this are body (the CT dose workflow's BODY_THRESHOLD_HU)")
    body_opening_mm: float = setting(
        3.0, unit="mm", min=0.0, max=20.0,
        doc="radius of the in-plane opening that detaches couch and blankets (0: none)")
    lung_threshold_hu: float = setting(
        -400.0, unit="HU", min=-1000.0, max=-120.0,
        doc="voxels inside the body below this are lung or air (Schneider lung bin -950..-120 HU)")
    air_max_hu: float = setting(
        -950.0, unit="HU", min=-1024.0, max=-500.0,
        doc="a region whose median is below this is air, not lung (Schneider air bin up to -950 HU)")
    lung_min_volume_ml: float = setting(
        50.0, unit="mL", min=0.0, max=5000.0,
        doc="low-density components at least this large are lungs, smaller ones air cavities")
    bone_threshold_hu: float = setting(
        200.0, unit="HU", min=100.0, max=2000.0,
        doc="voxels inside the body above this are bone (Schneider bone bins from 200 HU)")
    bone_opening_mm: float = setting(
        1.0, unit="mm", min=0.0, max=10.0,
        doc="radius of the 3-D opening of the bone mask (axes with coarser voxels are not opened)")
    bone_min_volume_ml: float = setting(
        0.05, unit="mL", min=0.0, max=1000.0,
        doc="bone components smaller than this are dropped (noise, calcifications)")
    bone_hole_min_hu: float = setting(
        120.0, unit="HU", min=-100.0, max=1000.0,
        doc="in-slice holes of the bone mask with a mean above this are filled (cancellous bone)")

    def check(self) -> None:
        if not self.air_max_hu < self.lung_threshold_hu:
            raise InputError(f"threshold.air_max_hu ({self.air_max_hu:g} HU) must be below "
                             f"threshold.lung_threshold_hu ({self.lung_threshold_hu:g} HU)")
        if not self.body_threshold_hu < self.bone_threshold_hu:
            raise InputError(f"threshold.body_threshold_hu ({self.body_threshold_hu:g} HU) must be below "
                             f"threshold.bone_threshold_hu ({self.bone_threshold_hu:g} HU)")


# --------------------------------------------------------------------------- helpers
def _footprint(radius_mm: float, spacing_zyx_mm, axes=(0, 1, 2)) -> np.ndarray | None:
    """Ellipsoidal structuring element of ``radius_mm`` on the voxel grid, or ``None`` if empty.

    Only the axes in ``axes`` are extended; an axis whose spacing exceeds the radius is not.
    """
    r = [int(radius_mm // spacing_zyx_mm[a]) if a in axes and radius_mm > 0 else 0 for a in range(3)]
    if not any(r):
        return None
    grids = np.ogrid[-r[0]:r[0] + 1, -r[1]:r[1] + 1, -r[2]:r[2] + 1]
    dist2 = sum((g * float(spacing_zyx_mm[a])) ** 2 for a, g in enumerate(grids))
    return dist2 <= radius_mm ** 2 + 1e-9


def _component_volumes(lab: np.ndarray, n: int) -> np.ndarray:
    """Voxel count of each component ``0..n`` (index 0: background)."""
    return np.bincount(lab.ravel(), minlength=n + 1)


#: Face connectivity within a slice and none across slices: one ``ndimage.label`` call labels
#: the 2-D components of every axial slice at once.
_IN_PLANE = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE[1] = ndimage.generate_binary_structure(2, 1)


def _slice_holes(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """In-slice holes of ``mask``: ``(labels of the background's 2-D components, hole ids)``.

    A hole is a 2-D background component that does not touch the border of its slice.
    """
    lab, n = ndimage.label(~mask, structure=_IN_PLANE)
    border = np.zeros(n + 1, dtype=bool)
    for edge in (lab[:, 0, :], lab[:, -1, :], lab[:, :, 0], lab[:, :, -1]):
        border[edge.ravel()] = True
    border[0] = True
    return lab, np.flatnonzero(~border)


def fill_holes_per_slice(mask: np.ndarray) -> np.ndarray:
    """``mask`` with the holes of each axial slice (axis 0) filled (2-D, face connectivity)."""
    lab, holes = _slice_holes(mask)
    return mask | np.isin(lab, holes) if holes.size else mask.copy()


def _lateral_mm(mask: np.ndarray, body: np.ndarray, spacing_zyx_mm, direction_xyz) -> np.ndarray:
    """LPS x of each voxel of ``mask`` relative to the body's centroid in its slice, mm.

    Positive values are on the patient's left (LPS: +x towards the patient's left).
    """
    z, y, x = np.nonzero(mask)
    counts = body.sum(axis=(1, 2)).astype(np.float64)
    iy = np.arange(body.shape[1], dtype=np.float64)
    ix = np.arange(body.shape[2], dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        cy = (body.sum(axis=2) @ iy) / counts
        cx = (body.sum(axis=1) @ ix) / counts
    d = np.asarray(direction_xyz, dtype=float)
    _, sy, sx = spacing_zyx_mm
    return d[0, 0] * sx * (x - cx[z]) + d[0, 1] * sy * (y - cy[z])


# --------------------------------------------------------------------------- steps
def body_mask(hu: np.ndarray, spacing_zyx_mm, threshold_hu: float = BODY_THRESHOLD_HU,
              opening_mm: float = 3.0) -> np.ndarray:
    """Body contour: the largest component above ``threshold_hu``, holes filled per slice.

    Args:
        hu: CT numbers, HU, ``(nz, ny, nx)``, axial slices along axis 0.
        spacing_zyx_mm: voxel size, mm.
        threshold_hu: body threshold, HU (default: the CT workflow's ``BODY_THRESHOLD_HU``).
        opening_mm: radius of an in-plane opening applied before the component is chosen,
            which detaches thin couch parts and blankets; 0 for none.

    Returns:
        Boolean mask, ``(nz, ny, nx)``.

    Raises:
        InputError: no voxel above the threshold.
    """
    m = hu > threshold_hu
    fp = _footprint(opening_mm, spacing_zyx_mm, axes=(1, 2))
    if fp is not None:
        m = ndimage.binary_opening(m, structure=fp)
    lab, n = ndimage.label(m)
    if n == 0:
        raise InputError(f"the CT holds no body: no voxel above {threshold_hu:g} HU")
    sizes = _component_volumes(lab, n)
    sizes[0] = 0
    return fill_holes_per_slice(lab == int(np.argmax(sizes)))


def _pure_air_regions(low: np.ndarray, hu: np.ndarray, air_max_hu: float) -> np.ndarray:
    """Voxels of the in-slice components of ``low`` whose median CT number is below ``air_max_hu``.

    The median is below the threshold exactly when more than half of the voxels are.
    """
    lab, n = ndimage.label(low, structure=_IN_PLANE)
    below = np.bincount(lab.ravel(), weights=(hu < air_max_hu).ravel(), minlength=n + 1)
    frac = below / np.maximum(_component_volumes(lab, n), 1)
    frac[0] = 0.0
    return (frac > 0.5)[lab]


def lung_masks(hu: np.ndarray, body: np.ndarray, spacing_zyx_mm, direction_xyz=np.eye(3),
               threshold_hu: float = -400.0, air_max_hu: float = -950.0,
               min_volume_ml: float = 50.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Left lung, right lung and the other low-density voxels inside the body.

    Low-density voxels are those of ``body`` below ``threshold_hu`` (the air outside is not in
    the body). Per slice, regions whose median is below ``air_max_hu`` are pure air (trachea
    above the carina, gas pockets), not lung. The 3-D components of the rest that reach
    ``min_volume_ml`` are lung; smaller ones (bowel gas, sinuses) are not. A lung component
    with 90 % or more of its voxels on one side of the body's midline (the body's centroid in
    each slice) is that side's lung;
    a component spanning both sides (lungs touching at the anterior junction) is split at
    the midline. Left and right are the patient's (LPS +x is the patient's left).

    Args:
        hu: CT numbers, HU, ``(nz, ny, nx)``.
        body: body mask from :func:`body_mask`.
        spacing_zyx_mm: voxel size, mm.
        direction_xyz: the grid's direction cosines (see :class:`persodose.grid.Grid`).
        threshold_hu, air_max_hu: HU thresholds (Schneider et al. 2000 lung and air bins).
        min_volume_ml: smallest lung component, mL.

    Returns:
        ``(lung_left, lung_right, other_air)`` boolean masks.
    """
    low = body & (hu < threshold_hu)
    candidates = low & ~_pure_air_regions(low, hu, air_max_hu)
    lab, n = ndimage.label(candidates)
    voxel_ml = float(np.prod(spacing_zyx_mm)) / 1000.0
    sizes = _component_volumes(lab, n) * voxel_ml
    ids = [i for i in range(1, n + 1) if sizes[i] >= min_volume_ml]
    lungs = np.isin(lab, ids) if ids else np.zeros_like(low)
    left = np.zeros_like(low)
    if ids:
        lateral = _lateral_mm(lungs, body, spacing_zyx_mm, direction_xyz)
        comp = lab[lungs]
        is_left = lateral > 0
        frac_left = (np.bincount(comp, weights=is_left, minlength=n + 1)
                     / np.maximum(np.bincount(comp, minlength=n + 1), 1))
        side = np.where(frac_left[comp] >= 0.9, True, np.where(frac_left[comp] <= 0.1, False, is_left))
        left[lungs] = side
    right = lungs & ~left
    return left, right, low & ~lungs


def bone_mask(hu: np.ndarray, body: np.ndarray, spacing_zyx_mm, threshold_hu: float = 200.0,
              opening_mm: float = 1.0, min_volume_ml: float = 0.05,
              hole_min_hu: float = 120.0) -> np.ndarray:
    """Bone: voxels of ``body`` above ``threshold_hu``, opened, small pieces dropped, holes filled.

    Args:
        hu: CT numbers, HU, ``(nz, ny, nx)``.
        body: body mask from :func:`body_mask`.
        spacing_zyx_mm: voxel size, mm.
        threshold_hu: bone threshold, HU (Schneider et al. 2000: bone bins from 200 HU).
        opening_mm: radius of a 3-D opening (removes isolated noisy voxels; axes whose voxels
            are coarser than the radius are not opened, so thin ribs survive coarse grids).
        min_volume_ml: components smaller than this are dropped, mL.
        hole_min_hu: in-slice holes of the mask whose mean CT number exceeds this (cancellous
            bone and red marrow; Schneider's bone bins start at 120 HU) are filled; holes
            holding soft tissue (spinal canal, brain, pelvic cavity) are not.

    Returns:
        Boolean mask, ``(nz, ny, nx)``.
    """
    m = body & (hu > threshold_hu)
    fp = _footprint(opening_mm, spacing_zyx_mm)
    if fp is not None:
        m = ndimage.binary_opening(m, structure=fp)
    if min_volume_ml > 0 and m.any():
        lab, n = ndimage.label(m, structure=np.ones((3, 3, 3), bool))
        sizes = _component_volumes(lab, n) * (float(np.prod(spacing_zyx_mm)) / 1000.0)
        keep = np.flatnonzero(sizes >= min_volume_ml)
        m = np.isin(lab, keep[keep > 0])
    if m.any():
        lab, holes = _slice_holes(m)
        if holes.size:
            flat = lab.ravel()
            total = np.bincount(flat, weights=hu.ravel().astype(np.float64), minlength=lab.max() + 1)
            mean = total / np.maximum(np.bincount(flat, minlength=total.size), 1)
            fill = holes[mean[holes] > hole_min_hu]
            if fill.size:
                m = m | np.isin(lab, fill)
    return m & body


def _check_axial(ct: Grid) -> None:
    """The steps work slice by slice along axis 0, which must run head-feet."""
    if abs(float(ct.direction_xyz[2, 2])) < 0.5:
        raise InputError("the threshold segmenter needs axial slices (array axis 0 along the patient's "
                         "head-feet axis); resample the CT to an axial grid first")


# --------------------------------------------------------------------------- back-end
@register_segmenter("threshold", settings=ThresholdSettings, organs=tuple(THRESHOLD_LABELS.values()))
def threshold_segmenter(ct: Grid, settings: ThresholdSettings) -> tuple[Grid, dict[int, str]]:
    """Body, left and right lungs, bone and air cavities by CT-number thresholds (any CT).

    Args:
        ct: CT grid, HU.
        settings: :class:`ThresholdSettings`.

    Returns:
        ``(labels, names)``: uint8 label map (:data:`THRESHOLD_LABELS`) on the CT geometry; a
        voxel is lung, else air cavity, else bone, else body (the rest of the contour).
    """
    _check_axial(ct)
    s = settings
    hu = np.asarray(ct.array, dtype=np.float32)
    sp = ct.spacing_zyx_mm
    body = body_mask(hu, sp, s.body_threshold_hu, s.body_opening_mm)
    left, right, air = lung_masks(hu, body, sp, ct.direction_xyz, s.lung_threshold_hu, s.air_max_hu,
                                  s.lung_min_volume_ml)
    bone = bone_mask(hu, body, sp, s.bone_threshold_hu, s.bone_opening_mm, s.bone_min_volume_ml,
                     s.bone_hole_min_hu)
    out = np.zeros(hu.shape, dtype=np.uint8)
    out[body] = _VALUE["body"]
    out[bone] = _VALUE["bone"]
    out[air] = _VALUE["air_cavity"]
    out[left] = _VALUE["lung_left"]
    out[right] = _VALUE["lung_right"]
    return ct.with_array(out, Kind.LABELS), dict(THRESHOLD_LABELS)
