"""Tests of the ``threshold`` segmenter: synthetic chest (exact truth), virtual patient, a real CT.

Dice thresholds on the built-in virtual patient at 10 mm (``make_virtual_patient(voxel_mm=10)``,
seed 0) are the values measured when the back-end was written, less a margin:

=================  ========  =========
structure          measured  required
=================  ========  =========
body outline       0.9994    0.995
lung_left          0.991     0.97
lung_right         0.996     0.97
lungs (both)       0.993     0.98
bone (all bones)   0.988     0.97
=================  ========  =========

(at 4 mm: body 0.9993, lung_left 0.981, lung_right 0.984, bone 0.987.)
"""

from __future__ import annotations

import numpy as np
import pytest

from persodose.ct.dose import BODY_THRESHOLD_HU
from persodose.errors import InputError
from persodose.grid import Grid, Kind
from persodose.metrics.segmentation import dice
from persodose.segmentation import THRESHOLD_LABELS, ThresholdSettings, segment
from persodose.segmentation.threshold import fill_holes_per_slice
from tests.segmentation.conftest import make_chest

V = {name: value for value, name in THRESHOLD_LABELS.items()}


def test_names_are_persodose_organ_names_and_map_to_icrp_tissues():
    from persodose.phantoms import LABELS
    from persodose.risk.effective_dose import tissue_for_label

    for name in ("body", "lung_left", "lung_right"):
        assert LABELS[V[name]] == name  # same value and name as the virtual patient's labels
    assert tissue_for_label("lung_left") == tissue_for_label("lung_right") == "lung"


def test_body_threshold_is_the_ct_workflows():
    assert ThresholdSettings().body_threshold_hu == BODY_THRESHOLD_HU


# ----------------------------------------------------------------------------- synthetic chest
def test_synthetic_chest_structures(chest):
    lab = segment(chest.ct).labels.array
    assert dice(lab > 0, chest.body) > 0.999
    assert dice(lab == V["lung_left"], chest.lung_left) > 0.99
    assert dice(lab == V["lung_right"], chest.lung_right) > 0.99
    assert dice(lab == V["bone"], chest.bone) > 0.99
    assert np.all(lab[chest.gas] == V["air_cavity"])       # small gas pocket: not lung
    assert np.all(lab[chest.trachea] == V["air_cavity"])   # pure-air tube above the lungs
    assert not np.any(lab[chest.canal] == V["bone"])       # soft tissue enclosed by bone stays body
    assert not np.any(lab[chest.couch])                    # the couch is not the patient


def test_left_and_right_follow_the_patient_not_the_array(chest):
    mirrored = make_chest(direction_xyz=np.diag([-1.0, 1.0, 1.0]))
    lab = segment(mirrored.ct).labels.array
    # the same voxels, but index x now runs to the patient's right: the sides swap
    assert np.all(lab[chest.lung_left] == V["lung_right"])
    assert np.all(lab[chest.lung_right] == V["lung_left"])


def test_couch_is_detached_by_the_opening_only(chest):
    lab = segment(chest.ct, settings={"body_opening_mm": 0.0}).labels.array
    assert np.all(lab[chest.couch] > 0)  # without the opening the bridge joins it to the body


def test_cancellous_interior_is_filled_by_the_hole_rule(chest):
    lab = segment(chest.ct, settings={"bone_hole_min_hu": 500.0}).labels.array
    assert dice(lab == V["bone"], chest.bone) < 0.8  # the 180 HU interior is lost


def test_pure_air_rule_keeps_the_trachea_out_of_the_lung(chest):
    lab = segment(chest.ct, settings={"air_max_hu": -1010.0}).labels.array
    assert np.all(lab[chest.trachea] == V["lung_left"])  # without it the trachea joins the lung


def test_lungs_need_their_minimum_volume(chest):
    lab = segment(chest.ct, settings={"lung_min_volume_ml": 200.0}).labels.array  # each lung ~107 mL
    assert not np.any(np.isin(lab, [V["lung_left"], V["lung_right"]]))
    assert np.all(lab[chest.lung_left] == V["air_cavity"])


def test_ct_without_a_body_and_non_axial_ct(chest):
    air = chest.ct.with_array(np.full(chest.ct.shape, -1000.0, np.float32))
    with pytest.raises(InputError, match="no body"):
        segment(air)
    sagittal = Grid(chest.ct.array, chest.ct.spacing_zyx_mm, chest.ct.origin_xyz_mm,
                    np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]), Kind.CT)
    with pytest.raises(InputError, match="axial"):
        segment(sagittal)


# ----------------------------------------------------------------------------- virtual patient
@pytest.fixture(scope="module")
def virtual_patient():
    from persodose.phantoms import make_virtual_patient

    return make_virtual_patient(voxel_mm=10)


def test_virtual_patient_dice(virtual_patient):
    from persodose.phantoms.anatomy import BONE_LABELS

    vp = virtual_patient
    result = segment(vp.ct)
    lab, truth = result.labels.array, np.asarray(vp.labels.array)
    assert result.labels.same_geometry(vp.ct)
    assert dice(lab > 0, truth > 0) >= 0.995
    assert dice(lab > 0, fill_holes_per_slice(truth > 0)) >= 0.995
    assert dice(lab == V["lung_left"], truth == 4) >= 0.97
    assert dice(lab == V["lung_right"], truth == 5) >= 0.97
    assert dice(np.isin(lab, [4, 5]), np.isin(truth, [4, 5])) >= 0.98
    assert dice(lab == V["bone"], np.isin(truth, BONE_LABELS)) >= 0.97


# ----------------------------------------------------------------------------- a real CT
def test_real_ct_slice_from_pydicom():
    """pydicom's CT_small.dcm: one 128 x 128 slice through a thoracic vertebra (0.66 mm, 5 mm)."""
    from pydicom.data import get_testdata_file

    from persodose.io.dicom import read_ct

    ct = read_ct(get_testdata_file("CT_small.dcm")).grid
    result = segment(ct)
    lab, hu = result.labels.array, np.asarray(ct.array)
    assert result.labels.same_geometry(ct)
    body = lab > 0
    assert 0.6 < body.mean() < 0.95  # measured 0.78: the patient fills most of the crop
    # the lungs in the two upper corners are open to the image border: not inside the body
    assert not body[0, :10, :10].any() and not body[0, :10, -10:].any()
    assert hu[0, :10, :10].mean() < -400 and hu[0, :10, -10:].mean() < -400
    bone = lab == V["bone"]
    assert result.volumes_ml()["bone"] > 2.0  # measured 3.5 mL: the vertebra
    assert np.median(hu[bone]) > 300
    assert np.all(bone <= body)
