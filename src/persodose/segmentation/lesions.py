"""Lesions from a PET or SPECT image: hot spots found automatically or from seeds, each grown at
a fraction (42 %) of its own maximum.

Rules (each a pure function on arrays in z, y, x):

1. Where: voxels of ``within`` (a mask, e.g. the liver or the body; default: every voxel).
2. Seeds. Given seed points (mm, patient LPS coordinates), each seed's lesion maximum is the
   hottest voxel of ``within`` no farther than :attr:`LesionSettings.seed_search_mm` from the
   seed. Without seeds, hot spots are found automatically: the local maxima of the image
   (the hottest voxel in a cube of :attr:`LesionSettings.min_separation_mm` around it) inside
   ``within`` that are at least :attr:`LesionSettings.background_multiple` times the
   background, the median of the positive voxels of ``within``, and at least
   :attr:`LesionSettings.absolute_threshold` when one is given (e.g. an SUV image and SUV 2.5).
3. Growth: each lesion is the connected region (26-connectivity) of the voxels of ``within``
   at or above ``fraction`` (0.42) times its own maximum that contains its maximum; lesions are
   grown independently. The SINFONIA deliverable D2.2 segments lesions at 42 % of SUVmax;
   for SPECT the maximum of the image is used the same way.
4. Automatic hot spots are taken hottest first; a maximum that lies inside an already grown
   lesion is no new lesion, and a grown region smaller than
   :attr:`LesionSettings.min_volume_ml` is dropped (noise peaks). At most
   :attr:`LesionSettings.max_lesions` are kept.
5. Overlaps: a voxel in two grown regions goes to the lesion whose maximum is nearer (mm;
   equal distances: the higher maximum). So each lesion keeps its own maximum, and two hot
   spots whose 42 % regions touch are split between their maxima rather than the hotter one
   taking both.

Every lesion has its own label value (1, 2, ...) and name (``lesion_1``, ``lesion_2``, ... in
the order found, or the names given with the seeds).

Source:
    Y. Salimi, A. Akhavanallaf, Z. Mansouri, H. Zaidi, SINFONIA (Euratom grant 945196)
    deliverable D2.2 (2023): lesions delineated at 42 % of SUVmax. The 42 % isocontour is the
    fixed threshold of A. K. Erdi et al., "Segmentation of lung lesion volume by adaptive
    positron emission tomography image thresholding", Cancer 80 (1997) 2505-2509.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import ndimage

from persodose.errors import InputError, require_finite
from persodose.grid import Grid, Kind

__all__ = ["LesionSettings", "Lesion", "LesionSegmentation", "find_hot_spots", "grow_lesion", "segment_lesions",
           "parse_seeds"]


@dataclass(frozen=True)
class LesionSettings:
    """Settings of :func:`segment_lesions` (see the module doc for the rules).

    Attributes:
        fraction: each lesion holds the voxels at or above this fraction of its maximum (0.42).
        background_multiple: automatic hot spots are at least this many times the median of
            the positive voxels of ``within``.
        absolute_threshold: and at least this value, in the image's unit (``None``: no such rule).
        min_separation_mm: two automatic maxima are at least this far apart (cube side), mm.
        min_volume_ml: automatic lesions smaller than this are dropped, mL.
        seed_search_mm: a seed's maximum is searched within this distance, mm.
        max_lesions: at most this many lesions.
    """

    fraction: float = 0.42
    background_multiple: float = 3.0
    absolute_threshold: float | None = None
    min_separation_mm: float = 15.0
    min_volume_ml: float = 0.5
    seed_search_mm: float = 10.0
    max_lesions: int = 50

    def __post_init__(self) -> None:
        checks = (("fraction", self.fraction, 0.0, 1.0, False), ("background_multiple", self.background_multiple,
                  0.0, 1e6, True), ("min_separation_mm", self.min_separation_mm, 0.0, 1e4, True),
                  ("min_volume_ml", self.min_volume_ml, 0.0, 1e6, True), ("seed_search_mm", self.seed_search_mm,
                  0.0, 1e3, True), ("max_lesions", self.max_lesions, 1, 100000, True))
        for name, value, lo, hi, closed in checks:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if not ok or not (lo <= value <= hi if closed else lo < value < hi):
                raise InputError(f"lesion setting {name} must be within {lo:g}..{hi:g}, got {value!r}")
        if self.absolute_threshold is not None and not math.isfinite(self.absolute_threshold):
            raise InputError(f"lesion setting absolute_threshold must be finite, got {self.absolute_threshold!r}")


@dataclass(frozen=True)
class Lesion:
    """One lesion found.

    Attributes:
        label: its value in the label map; name: its name.
        max_index_zyx: voxel of its maximum; max_point_mm: that voxel's centre (LPS, mm).
        max_value: the image's maximum in it (the image's unit); threshold: ``fraction x max_value``.
        volume_ml: its volume after overlaps were resolved, mL; mean_value: its mean.
        seed_mm: the seed it was grown from (``None``: found automatically).
    """

    label: int
    name: str
    max_index_zyx: tuple[int, int, int]
    max_point_mm: tuple[float, float, float]
    max_value: float
    threshold: float
    volume_ml: float
    mean_value: float
    seed_mm: tuple[float, float, float] | None = None


@dataclass(frozen=True)
class LesionSegmentation:
    """What :func:`segment_lesions` returns: the label map on the image's geometry, its names
    ``{value: name}``, the lesions, the background used and the settings."""

    labels: Grid
    names: dict[int, str]
    lesions: list[Lesion]
    background: float
    settings: LesionSettings = field(default_factory=LesionSettings)


def parse_seeds(text: str) -> list[tuple[float, float, float]]:
    """Seeds ``"x,y,z;x,y,z"`` (mm, LPS) as a list of points.

    Raises:
        InputError: not three finite numbers per seed.
    """
    seeds = []
    for item in str(text).split(";"):
        if not item.strip():
            continue
        try:
            xyz = tuple(float(v) for v in item.split(","))
        except ValueError:
            xyz = ()
        if len(xyz) != 3 or not all(math.isfinite(v) for v in xyz):
            raise InputError(f"--seeds {text!r}: each seed is x,y,z in mm, seeds separated by ';' (got {item!r})")
        seeds.append(xyz)
    if not seeds:
        raise InputError(f"--seeds {text!r} holds no seed")
    return seeds


def _footprint(spacing_zyx_mm, size_mm: float) -> np.ndarray:
    half = [max(int(round(size_mm / 2.0 / s)), 1) for s in spacing_zyx_mm]
    return np.ones([2 * h + 1 for h in half], dtype=bool)


def find_hot_spots(image: np.ndarray, within: np.ndarray, spacing_zyx_mm, threshold: float,
                   min_separation_mm: float) -> list[tuple[int, int, int]]:
    """Local maxima of ``image`` inside ``within`` at or above ``threshold``, hottest first.

    A local maximum is a voxel equal to the maximum of ``within``'s voxels in a box of side
    ``min_separation_mm`` around it (plateaus give one voxel each: the first in C order).
    """
    img = np.where(within, np.asarray(image, dtype=np.float64), -np.inf)
    peak = ndimage.maximum_filter(img, footprint=_footprint(spacing_zyx_mm, min_separation_mm), mode="constant",
                                  cval=-np.inf)
    cand = within & (img >= threshold) & (img == peak)
    idx = np.argwhere(cand)
    order = np.lexsort((np.arange(len(idx)), -img[tuple(idx.T)]))
    return [tuple(int(v) for v in idx[i]) for i in order]


def grow_lesion(image: np.ndarray, within: np.ndarray, max_index: tuple[int, int, int], fraction: float) -> np.ndarray:
    """The connected region (26-connectivity) of ``within`` at or above ``fraction x image[max_index]``
    containing ``max_index``."""
    above = within & (image >= fraction * float(image[max_index]))
    regions, _ = ndimage.label(above, structure=np.ones((3, 3, 3), dtype=bool))
    value = regions[max_index]
    return regions == value if value else np.zeros(image.shape, dtype=bool)


def _seed_maximum(grid: Grid, image: np.ndarray, within: np.ndarray, seed_mm, search_mm: float):
    """The hottest voxel of ``within`` within ``search_mm`` of ``seed_mm``."""
    centre = grid.physical_to_index(np.asarray(seed_mm, dtype=float))
    if np.any(centre < -0.5) or np.any(centre > np.asarray(grid.shape) - 0.5):
        raise InputError(f"seed {tuple(seed_mm)} mm lies outside the image ({grid.shape} voxels from "
                         f"{grid.origin_xyz_mm} mm)")
    sp = np.asarray(grid.spacing_zyx_mm, dtype=float)
    half = np.ceil(search_mm / sp).astype(int)
    lo = np.maximum(np.rint(centre).astype(int) - half, 0)
    hi = np.minimum(np.rint(centre).astype(int) + half + 1, grid.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    zz, yy, xx = np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij")
    dist = np.sqrt(((zz - centre[0]) * sp[0]) ** 2 + ((yy - centre[1]) * sp[1]) ** 2 + ((xx - centre[2]) * sp[2]) ** 2)
    ok = within[box] & (dist <= max(search_mm, 0.5 * float(sp.max())))
    if not ok.any():
        raise InputError(f"seed {tuple(seed_mm)} mm: no voxel of --within lies within {search_mm:g} mm of it")
    local = np.where(ok, image[box], -np.inf)
    k = np.unravel_index(int(np.argmax(local)), local.shape)
    return tuple(int(a + b) for a, b in zip(lo, k))


def _resolve_overlaps(grid: Grid, image: np.ndarray, regions: list[np.ndarray],
                      maxima: list[tuple[int, int, int]]) -> np.ndarray:
    """Label map (1..n) from possibly overlapping regions: a voxel goes to the lesion whose
    maximum is nearer (mm), equal distances to the higher maximum."""
    out = np.zeros(image.shape, dtype=np.uint16)
    best = np.full(image.shape, -np.inf)
    dist = np.full(image.shape, np.inf)
    sp = np.asarray(grid.spacing_zyx_mm, dtype=float)
    for k, (region, m) in enumerate(zip(regions, maxima), start=1):
        idx = np.argwhere(region)
        d = np.sqrt((((idx - np.asarray(m)) * sp) ** 2).sum(axis=1))
        t = tuple(idx.T)
        value = float(image[m])
        win = (d < dist[t]) | ((d == dist[t]) & (value > best[t]))
        sel = tuple(a[win] for a in t)
        out[sel], best[sel], dist[sel] = k, value, d[win]
    return out


def _check_inputs(emission: Grid, within: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(emission, Grid):
        raise InputError(f"lesion segmentation needs an emission Grid, got {type(emission).__name__}")
    if emission.kind in (Kind.LABELS, Kind.CT, Kind.DENSITY):
        raise InputError(f"lesion segmentation needs a PET or SPECT image, got a {emission.kind.value} grid")
    image = np.asarray(emission.array, dtype=np.float64)
    require_finite(image, "emission image")
    mask = np.ones(image.shape, dtype=bool) if within is None else np.asarray(within, dtype=bool)
    if mask.shape != image.shape:
        raise InputError(f"--within mask of shape {mask.shape} is not on the emission grid {image.shape}")
    if not mask.any():
        raise InputError("--within holds no voxel")
    if not np.any(image[mask] > 0):
        raise InputError("the emission image is zero everywhere inside --within")
    return image, mask


def segment_lesions(emission: Grid, within: np.ndarray | None = None,
                    seeds_mm: Sequence[Sequence[float]] | None = None, names: Sequence[str] | None = None,
                    settings: LesionSettings | None = None) -> LesionSegmentation:
    """Lesions of a PET/SPECT image, each grown at ``settings.fraction`` of its own maximum.

    Args:
        emission: PET or SPECT image (any emission kind: activity concentration, counts, SUV).
        within: boolean mask ``(nz, ny, nx)`` on the image's grid where lesions may lie
            (``None``: everywhere).
        seeds_mm: seed points (x, y, z), mm, LPS; ``None`` finds hot spots automatically.
        names: a name per seed (default ``lesion_1``, ``lesion_2``, ...).
        settings: :class:`LesionSettings` (default: 42 %, 3 x the median background).

    Returns:
        :class:`LesionSegmentation` (no lesion found: an empty label map and no lesion).

    Raises:
        InputError: not an emission grid, non-finite values, an empty ``within``, a seed
            outside the image or away from ``within``, names not matching the seeds.
    """
    s = settings or LesionSettings()
    image, mask = _check_inputs(emission, within)
    background = float(np.median(image[mask & (image > 0)]))
    if seeds_mm is not None:
        seeds = [tuple(float(v) for v in p) for p in seeds_mm]
        if names is not None and len(names) != len(seeds):
            raise InputError(f"{len(names)} lesion name(s) for {len(seeds)} seed(s): give one name per seed")
        if len(seeds) > s.max_lesions:
            raise InputError(f"{len(seeds)} seeds: at most {s.max_lesions} lesions")
        maxima = [_seed_maximum(emission, image, mask, p, s.seed_search_mm) for p in seeds]
        regions = [grow_lesion(image, mask, m, s.fraction) for m in maxima]
    else:
        if names is not None:
            raise InputError("lesion names are given with seeds; automatic lesions are named lesion_1, lesion_2, ...")
        seeds = None
        regions, maxima = _automatic(emission, image, mask, background, s)
    labels = _resolve_overlaps(emission, image, regions, maxima)
    lesion_names = list(names) if names is not None else [f"lesion_{k}" for k in range(1, len(maxima) + 1)]
    lesions = []
    for k, m in enumerate(maxima, start=1):
        inside = labels == k
        point = tuple(float(v) for v in emission.index_to_physical(np.asarray(m, dtype=float)))
        lesions.append(Lesion(k, str(lesion_names[k - 1]), m, point, float(image[m]), s.fraction * float(image[m]),
                              float(inside.sum()) * emission.voxel_volume_ml,
                              float(image[inside].mean()) if inside.any() else math.nan,
                              seeds[k - 1] if seeds is not None else None))
    return LesionSegmentation(emission.with_array(labels, Kind.LABELS), {les.label: les.name for les in lesions},
                              lesions, background, s)


def _automatic(grid: Grid, image: np.ndarray, mask: np.ndarray, background: float, s: LesionSettings):
    """Hot spots hottest first, each grown; maxima inside a grown lesion and small ones dropped."""
    threshold = s.background_multiple * background
    if s.absolute_threshold is not None:
        threshold = max(threshold, s.absolute_threshold)
    claimed = np.zeros(image.shape, dtype=bool)
    regions, maxima = [], []
    for m in find_hot_spots(image, mask, grid.spacing_zyx_mm, threshold, s.min_separation_mm):
        if claimed[m]:
            continue
        region = grow_lesion(image, mask, m, s.fraction)
        claimed |= region
        if region.sum() * grid.voxel_volume_ml < s.min_volume_ml:
            continue
        regions.append(region)
        maxima.append(m)
        if len(maxima) >= s.max_lesions:
            break
    return regions, maxima
