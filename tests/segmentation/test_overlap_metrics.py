"""Tests of persodose.metrics.segmentation (Dice, Jaccard, precision, recall), hand-computed."""

from __future__ import annotations

import math

import numpy as np
import pytest

from persodose.errors import GeometryError, InputError
from persodose.grid import Grid, Kind
from persodose.metrics.segmentation import dice, jaccard, label_overlap, overlap_scores, precision, recall


def _masks():
    a = np.zeros((1, 2, 5), bool)
    b = np.zeros((1, 2, 5), bool)
    a[0, 0, :4] = True       # |A| = 4
    b[0, 0, 2:] = True       # |B| = 3, |A & B| = 2, |A | B| = 5
    return a, b


def test_hand_computed_values():
    a, b = _masks()
    assert dice(a, b) == pytest.approx(2 * 2 / 7)
    assert jaccard(a, b) == pytest.approx(2 / 5)
    assert precision(a, b) == pytest.approx(2 / 4)
    assert recall(a, b) == pytest.approx(2 / 3)
    s = overlap_scores(a, b, voxel_volume_ml=0.5)
    assert (s.test_volume_ml, s.reference_volume_ml, s.intersection_volume_ml) == (2.0, 1.5, 1.0)
    assert s.jaccard == pytest.approx(s.dice / (2 - s.dice))
    assert dice(a, a) == 1.0 and dice(a, ~a) == 0.0


def test_undefined_ratios_are_nan_not_made_up():
    empty = np.zeros((1, 1, 3), bool)
    full = np.ones((1, 1, 3), bool)
    assert math.isnan(dice(empty, empty)) and math.isnan(jaccard(empty, empty))
    assert math.isnan(precision(empty, full)) and recall(empty, full) == 0.0
    assert math.isnan(recall(full, empty)) and precision(full, empty) == 0.0


def test_shape_mismatch_is_refused():
    with pytest.raises(GeometryError):
        dice(np.zeros((1, 2, 2)), np.zeros((1, 2, 3)))


def test_label_overlap_matches_by_name_across_numberings():
    ref = Grid(np.array([[[0, 1, 1, 2, 2]]], np.uint8), kind=Kind.LABELS)
    tst = Grid(np.array([[[0, 7, 7, 7, 9]]], np.uint8), kind=Kind.LABELS)
    rows = label_overlap(tst, ref, {7: "liver", 9: "spleen"}, {1: "liver", 2: "spleen", 3: "heart"})
    assert rows["liver"].dice == pytest.approx(2 * 2 / 5)
    assert rows["spleen"].dice == pytest.approx(2 * 1 / 3)
    by_value = label_overlap(tst, ref)
    assert set(by_value) == {"1", "2", "7", "9"} and by_value["1"].dice == 0.0
    with pytest.raises(InputError):
        label_overlap(tst.with_array(tst.array, Kind.SCALAR), ref)
