"""HD95 (95th-percentile symmetric Hausdorff distance) against MONAI and by construction."""

from __future__ import annotations

import math

import numpy as np
import pytest

from persodose.errors import GeometryError, InputError
from persodose.grid import Grid, Kind
from persodose.metrics.segmentation import hd95_mm, label_overlap, overlap_scores


def _cube(shape=(24, 24, 24), lo=(6, 6, 6), hi=(16, 16, 16)):
    a = np.zeros(shape, bool)
    a[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
    return a


def test_identical_masks_give_zero():
    a = _cube()
    assert hd95_mm(a, a, (2.0, 2.0, 2.0)) == 0.0


def test_shift_along_an_anisotropic_axis_is_in_mm():
    a = _cube()
    b = np.roll(a, 3, axis=2)
    assert hd95_mm(a, b, (1.0, 1.0, 2.0)) == pytest.approx(6.0)
    assert hd95_mm(a, b, (5.0, 5.0, 0.5)) == pytest.approx(1.5)


def test_symmetric_and_the_larger_direction():
    a = _cube()
    b = a.copy()
    b[6:16, 6:16, 16:20] = True  # b grows on one face: b -> a distances reach 4 voxels
    assert hd95_mm(a, b, (1, 1, 1)) == pytest.approx(hd95_mm(b, a, (1, 1, 1)))
    assert hd95_mm(a, b, (1, 1, 1)) >= 3.0


def test_against_monai():
    monai = pytest.importorskip("monai.metrics")
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    z, y, x = np.meshgrid(*[np.arange(30)] * 3, indexing="ij")
    a = (z - 15) ** 2 / 80 + (y - 14) ** 2 / 50 + (x - 15) ** 2 / 60 <= 1
    b = (z - 16) ** 2 / 70 + (y - 15) ** 2 / 60 + (x - 13) ** 2 / 50 <= 1 + 0.1 * rng.standard_normal(a.shape)
    sp = (3.0, 1.5, 2.0)
    ref = float(monai.compute_hausdorff_distance(torch.tensor(a)[None, None], torch.tensor(b)[None, None],
                                                 percentile=95, spacing=sp))
    assert hd95_mm(a, b, sp) == pytest.approx(ref, rel=1e-6)


def test_empty_mask_is_nan_and_bad_spacing_refused():
    a = _cube()
    assert math.isnan(hd95_mm(a, np.zeros_like(a), (1, 1, 1)))
    with pytest.raises(InputError):
        hd95_mm(a, a, (1, 0, 1))
    with pytest.raises(GeometryError):
        hd95_mm(a, a[:-1], (1, 1, 1))


def test_overlap_scores_and_label_overlap_carry_hd95():
    a = _cube()
    b = np.roll(a, 2, axis=1)
    assert math.isnan(overlap_scores(a, b).hd95_mm)  # no spacing: not computed
    assert overlap_scores(a, b, spacing_mm=(1, 4, 1)).hd95_mm == pytest.approx(8.0)
    lab_t = np.where(a, 3, 0).astype(np.uint8)
    lab_r = np.where(b, 7, 0).astype(np.uint8)
    t = Grid(lab_t, (1.0, 4.0, 1.0), (0, 0, 0), np.eye(3), Kind.LABELS)
    r = t.with_array(lab_r)
    rows = label_overlap(t, r, {3: "liver"}, {7: "liver"})
    assert set(rows) == {"liver"}
    assert rows["liver"].hd95_mm == pytest.approx(8.0)
    assert rows["liver"].dice == pytest.approx(0.8)
    assert math.isnan(label_overlap(t, r, {3: "liver"}, {7: "liver"}, hd95=False)["liver"].hd95_mm)
