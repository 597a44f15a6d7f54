"""Overlap and distance metrics of segmentations: Dice, Jaccard, precision, recall and HD95.

For a test mask ``A`` and a reference mask ``B`` (voxel sets):

* Dice similarity coefficient ``DSC = 2 |A & B| / (|A| + |B|)`` (L. R. Dice, "Measures of the
  amount of ecologic association between species", Ecology 26(3) (1945) 297-302), the first
  of the four figures by which the SINFONIA deliverable D2.2 evaluates its organ
  segmentations (section "Evaluation": Dice, Jaccard, precision, recall; Table 1);
* Jaccard index ``J = |A & B| / |A | B|`` (P. Jaccard, 1912), ``J = DSC / (2 - DSC)``;
* precision (positive predictive value) ``|A & B| / |A|`` and recall (sensitivity)
  ``|A & B| / |B|``.

* HD95, the 95th-percentile symmetric Hausdorff distance, mm: the distances from every
  surface voxel of ``A`` to the nearest surface voxel of ``B`` and from ``B`` to ``A`` (on the
  grid's spacing, Euclidean distance transforms of :func:`scipy.ndimage.distance_transform_edt`),
  the 95th percentile of each direction, the larger of the two (the convention of MONAI's
  ``compute_hausdorff_distance(..., percentile=95)``; Taha and Hanbury 2015, section
  "Hausdorff distance"). A surface voxel is a mask voxel with a 6-neighbour outside the mask
  (or at the array's border). HD95 is NaN when either mask is empty.

A ratio whose denominator is zero (both masks empty; an empty test mask for precision; an
empty reference for recall) is undefined and returned as NaN rather than a made-up 0 or 1.
See A. A. Taha, A. Hanbury, "Metrics for evaluating 3D medical image segmentation: analysis,
selection, and tool", BMC Med. Imaging 15 (2015) 29, for these definitions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np
from scipy import ndimage

from persodose.errors import GeometryError, InputError
from persodose.grid import Grid, Kind

__all__ = ["OverlapScores", "dice", "jaccard", "precision", "recall", "hd95_mm", "overlap_scores", "label_overlap"]


@dataclass(frozen=True)
class OverlapScores:
    """Overlap of a test mask with a reference mask.

    Attributes:
        dice, jaccard, precision, recall: see the module doc (NaN when undefined).
        test_volume_ml, reference_volume_ml, intersection_volume_ml: volumes, mL (voxel
            counts when no voxel volume was given).
        hd95_mm: 95th-percentile symmetric Hausdorff distance, mm (NaN when either mask is
            empty or no spacing was given).
    """

    dice: float
    jaccard: float
    precision: float
    recall: float
    test_volume_ml: float
    reference_volume_ml: float
    intersection_volume_ml: float
    hd95_mm: float = math.nan


def _masks(test, reference) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(test.array if isinstance(test, Grid) else test).astype(bool, copy=False)
    b = np.asarray(reference.array if isinstance(reference, Grid) else reference).astype(bool, copy=False)
    if a.shape != b.shape:
        raise GeometryError(f"masks of different shapes: {a.shape} vs {b.shape}")
    return a, b


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den > 0 else math.nan


def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a 6-neighbour outside it (the array's border counts as outside)."""
    return mask & ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(mask.ndim, 1),
                                          border_value=0)


def hd95_mm(test, reference, spacing_mm=None) -> float:
    """95th-percentile symmetric Hausdorff distance of two masks, mm (see the module doc).

    Args:
        test, reference: boolean masks (arrays or grids) of one shape (nonzero = inside).
        spacing_mm: voxel size along each array axis (z, y, x), mm; default: a grid's
            ``spacing_zyx_mm``, else 1 (the result is then in voxels).

    Returns:
        HD95, mm; 0 for identical masks; NaN when either mask is empty.
    """
    if spacing_mm is None:
        g = test if isinstance(test, Grid) else reference if isinstance(reference, Grid) else None
        spacing_mm = g.spacing_zyx_mm if g is not None else (1.0,) * np.ndim(np.asarray(test))
    a, b = _masks(test, reference)
    if not a.any() or not b.any():
        return math.nan
    sp = tuple(float(x) for x in spacing_mm)
    if len(sp) != a.ndim or not all(math.isfinite(x) and x > 0 for x in sp):
        raise InputError(f"hd95_mm needs {a.ndim} positive spacings, got {spacing_mm!r}")
    box = ndimage.find_objects((a | b).astype(np.uint8))[0]  # crop to both masks, one voxel of margin
    box = tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(box, a.shape))
    sa, sb = _surface(a[box]), _surface(b[box])
    d_ab = ndimage.distance_transform_edt(~sb, sampling=sp)[sa]  # test surface -> reference surface
    d_ba = ndimage.distance_transform_edt(~sa, sampling=sp)[sb]
    return float(max(np.percentile(d_ab, 95), np.percentile(d_ba, 95)))


def overlap_scores(test, reference, voxel_volume_ml: float = 1.0, spacing_mm=None) -> OverlapScores:
    """Dice, Jaccard, precision, recall (and HD95) of two boolean masks (arrays or grids) of one shape.

    Args:
        test: the segmentation being evaluated (nonzero = inside).
        reference: the truth (nonzero = inside).
        voxel_volume_ml: volume of a voxel, mL, for the volumes reported.
        spacing_mm: voxel size (z, y, x), mm: HD95 is computed only when it is given.
    """
    a, b = _masks(test, reference)
    na, nb = int(np.count_nonzero(a)), int(np.count_nonzero(b))
    ni = int(np.count_nonzero(a & b))
    return OverlapScores(dice=_ratio(2 * ni, na + nb), jaccard=_ratio(ni, na + nb - ni),
                         precision=_ratio(ni, na), recall=_ratio(ni, nb),
                         test_volume_ml=na * voxel_volume_ml, reference_volume_ml=nb * voxel_volume_ml,
                         intersection_volume_ml=ni * voxel_volume_ml,
                         hd95_mm=hd95_mm(a, b, spacing_mm) if spacing_mm is not None else math.nan)


def dice(test, reference) -> float:
    """Dice similarity coefficient of two masks, ``2|A&B| / (|A|+|B|)`` (NaN if both empty)."""
    return overlap_scores(test, reference).dice


def jaccard(test, reference) -> float:
    """Jaccard index of two masks, ``|A&B| / |A|B|`` (NaN if both empty)."""
    return overlap_scores(test, reference).jaccard


def precision(test, reference) -> float:
    """Precision (positive predictive value) ``|A&B| / |A|`` (NaN if the test mask is empty)."""
    return overlap_scores(test, reference).precision


def recall(test, reference) -> float:
    """Recall (sensitivity) ``|A&B| / |B|`` (NaN if the reference mask is empty)."""
    return overlap_scores(test, reference).recall


def label_overlap(test: Grid, reference: Grid, test_names: Mapping[int, str] | None = None,
                  reference_names: Mapping[int, str] | None = None, hd95: bool = True) -> dict[str, OverlapScores]:
    """Per-label overlap (and HD95, mm, on the grid's spacing) of two label maps on one geometry.

    With both name maps, labels are matched by name (so two tools numbering organs
    differently compare correctly) and every name present in either map gets a row; otherwise
    labels are matched by value, rows keyed by the value as text (or the name when one map
    names it).

    Args:
        test, reference: :attr:`Kind.LABELS` grids on the same geometry.
        test_names, reference_names: ``{value: name}`` of each map.
        hd95: also the HD95 of each label (``False``: NaN, for speed).

    Returns:
        ``{name: OverlapScores}`` with volumes in mL.

    Raises:
        InputError: not label grids. GeometryError: different geometries.
    """
    for g, what in ((test, "test"), (reference, "reference")):
        if not isinstance(g, Grid) or g.kind is not Kind.LABELS:
            raise InputError(f"label_overlap needs label grids; the {what} is not one")
    test.require_same_geometry(reference, "test and reference label maps")
    ta, ra = np.asarray(test.array), np.asarray(reference.array)
    v = test.voxel_volume_ml
    sp = test.spacing_zyx_mm if hd95 else None
    if test_names is not None and reference_names is not None:
        t_by, r_by = _by_name(test_names), _by_name(reference_names)
        return {name: overlap_scores(np.isin(ta, t_by.get(name, [])), np.isin(ra, r_by.get(name, [])), v, sp)
                for name in sorted(set(t_by) | set(r_by))}
    names = dict(reference_names or {}) | dict(test_names or {})
    values = sorted((set(np.unique(ta).tolist()) | set(np.unique(ra).tolist())) - {0})
    return {names.get(int(x), str(int(x))): overlap_scores(ta == x, ra == x, v, sp) for x in values}


def _by_name(names: Mapping[int, str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for value, name in names.items():
        out.setdefault(str(name), []).append(int(value))
    return out
