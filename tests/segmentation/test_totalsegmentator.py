"""The ``totalsegmentator`` back-end at its API boundary.

TotalSegmentator is not installed here and its weights cannot be fetched: a fake
``totalsegmentator`` package is put in ``sys.modules``; it records the arguments of
``python_api.totalsegmentator`` and returns a known multi-label image. What is tested: the
weights check (before any call), the call's arguments, the image handed over (axis order,
affine), the class mapping and the registration. The real network is never run.
"""

from __future__ import annotations

import importlib.machinery
import sys
import types

import numpy as np
import pytest

from persodose.errors import InputError, OptionalDependencyError
from persodose.grid import Kind
from persodose.segmentation import get_segmenter, segment
from persodose.segmentation import totalsegmentator as ts
from persodose.risk.effective_dose import tissue_for_label

from tests.segmentation.conftest import make_chest

nib = pytest.importorskip("nibabel")


def _module(name):
    m = types.ModuleType(name)
    m.__spec__ = importlib.machinery.ModuleSpec(name, None)
    return m


@pytest.fixture
def fake_ts(monkeypatch, tmp_path):
    """A fake totalsegmentator package (python_api, config) and an empty weights folder."""
    return install_fake_totalsegmentator(monkeypatch, tmp_path)


def install_fake_totalsegmentator(monkeypatch, tmp_path):
    """Put a fake totalsegmentator package in sys.modules and point TOTALSEG_WEIGHTS_PATH at an
    empty folder; returns ``(calls, weights folder)``."""
    calls = {"api": [], "config": {}}
    pkg, api = _module("totalsegmentator"), _module("totalsegmentator.python_api")
    cfg = _module("totalsegmentator.config")
    pkg.__path__ = []
    ids = {v: k for k, v in ts.TOTAL_CLASSES.items()}

    def totalsegmentator(input, output=None, **kw):
        calls["api"].append((input, output, kw))
        data = np.zeros(input.shape, dtype=np.uint8)  # x, y, z
        nx = input.shape[0]
        data[: nx // 4, :10, :] = ids["lung_upper_lobe_left"]
        data[: nx // 4, 10:20, :] = ids["lung_lower_lobe_left"]
        data[nx - nx // 4:, :10, :] = ids["lung_middle_lobe_right"]
        data[nx // 2, 50:60, :] = ids["vertebrae_L1"]
        data[nx // 2, 60:70, :] = ids["vertebrae_T12"]
        data[nx // 2 + 1, 50:60, :] = ids["rib_left_3"]
        data[nx // 2 + 2, 50:60, :] = ids["sternum"]
        data[nx // 2 + 3, 50:60, :] = ids["colon"]
        data[nx // 2 + 4, 50:60, :] = ids["kidney_cyst_right"]
        data[nx // 2 + 5, 50:60, :] = ids["kidney_right"]
        return nib.Nifti1Image(data, input.affine)

    def setup_totalseg():
        calls["config"]["setup"] = True

    def set_config_key(key, value):
        calls["config"][key] = value

    api.totalsegmentator = totalsegmentator
    cfg.setup_totalseg, cfg.set_config_key = setup_totalseg, set_config_key
    pkg.python_api, pkg.config = api, cfg
    for name, m in (("totalsegmentator", pkg), ("totalsegmentator.python_api", api),
                    ("totalsegmentator.config", cfg)):
        monkeypatch.setitem(sys.modules, name, m)
    weights = tmp_path / "weights"
    weights.mkdir()
    monkeypatch.setenv("TOTALSEG_WEIGHTS_PATH", str(weights))
    return calls, weights


def _add_fast_weights(weights):
    d = weights / "Dataset297_TotalSegmentator_total_3mm_1559subj" / "nnUNetTrainer__nnUNetPlans__3d_fullres" / "fold_0"
    d.mkdir(parents=True)
    (d / "checkpoint_final.pth").write_bytes(b"")


def test_every_total_class_is_mapped_to_a_persodose_label():
    assert len(ts.TOTAL_CLASSES) == 117
    assert (ts.TOTAL_CLASSES[10], ts.TOTAL_CLASSES[26], ts.TOTAL_CLASSES[50], ts.TOTAL_CLASSES[92],
            ts.TOTAL_CLASSES[117]) == ("lung_upper_lobe_left", "vertebrae_S1", "vertebrae_C1", "rib_left_1",
                                       "costal_cartilages")
    assert set(ts.TOTAL_TO_PERSODOSE) == set(ts.TOTAL_CLASSES.values())
    assert set(ts.TOTAL_TO_PERSODOSE.values()) == set(ts.TOTALSEG_LABELS.values())
    assert len(set(ts.TOTALSEG_LABELS.values())) == len(ts.TOTALSEG_LABELS)


@pytest.mark.parametrize("cls, organ, tissue", [
    ("lung_upper_lobe_left", "lung_left", "lung"), ("lung_middle_lobe_right", "lung_right", "lung"),
    ("lung_lower_lobe_right", "lung_right", "lung"), ("vertebrae_C3", "spine", None), ("vertebrae_S1", "spine", None),
    ("rib_right_12", "ribs", None), ("sternum", "ribs", None), ("femur_left", "femoral_head_left", None),
    ("hip_right", "pelvis", None), ("sacrum", "pelvis", None), ("humerus_left", "arm_bones", None),
    ("colon", "colon", "colon"), ("small_bowel", "small_intestine", "small_intestine"),
    ("duodenum", "small_intestine", "small_intestine"), ("esophagus", "oesophagus", "oesophagus"),
    ("urinary_bladder", "bladder", "bladder"), ("thyroid_gland", "thyroid", "thyroid"),
    ("gallbladder", "gall_bladder", "gall_bladder"), ("adrenal_gland_left", "adrenals", "adrenals"),
    ("kidney_cyst_left", "kidney_left", "kidneys"), ("iliopsoas_left", "muscle", "muscle"),
    ("portal_vein_and_splenic_vein", "portal_vein", None), ("brain", "brain", "brain"),
])
def test_class_to_organ_and_icrp_tissue(cls, organ, tissue):
    assert ts.TOTAL_TO_PERSODOSE[cls] == organ
    assert tissue_for_label(organ) == tissue


def test_persodose_values_are_the_phantoms_where_it_has_the_organ():
    from persodose.phantoms.anatomy import ARM_LABELS, LABELS, ORGAN_LABELS, SEX_LABELS

    known = {**LABELS, **ORGAN_LABELS, **SEX_LABELS, **ARM_LABELS}
    by_name = {v: k for k, v in known.items()}
    for value, name in ts.TOTALSEG_LABELS.items():
        if name in by_name:
            assert by_name[name] == value, name
        else:
            assert value not in known, (value, name)


def test_map_total_labels_refuses_values_of_another_task():
    with pytest.raises(InputError, match="no class of its 'total' task"):
        ts.map_total_labels(np.array([0, 1, 118]))


def test_not_installed_says_which_extra(monkeypatch):
    if get_segmenter("totalsegmentator").installed:
        pytest.skip("TotalSegmentator is installed here")
    with pytest.raises(OptionalDependencyError, match=r"persodose\[totalseg\]"):
        segment(make_chest().ct, backend="totalsegmentator")


def test_missing_weights_is_one_line_and_nothing_is_called(fake_ts):
    calls, weights = fake_ts
    with pytest.raises(InputError) as err:
        segment(make_chest().ct, backend="totalsegmentator")
    msg = str(err.value)
    assert "\n" not in msg and str(weights) in msg and "Dataset297_TotalSegmentator_total_3mm_1559subj" in msg
    assert "totalseg_download_weights -t total_fast" in msg and "TOTALSEG_WEIGHTS_PATH" in msg
    assert calls["api"] == []
    with pytest.raises(InputError, match="Dataset291_TotalSegmentator_part1"):
        segment(make_chest().ct, backend="totalsegmentator", settings={"fast": "false"})


def test_weights_dir_follows_totalsegmentator(monkeypatch, tmp_path):
    monkeypatch.delenv("TOTALSEG_WEIGHTS_PATH", raising=False)
    monkeypatch.setenv("TOTALSEG_HOME_DIR", str(tmp_path / "home"))
    assert ts.weights_dir() == tmp_path / "home" / "nnunet" / "results"
    monkeypatch.setenv("TOTALSEG_WEIGHTS_PATH", str(tmp_path / "w"))
    assert ts.weights_dir() == tmp_path / "w"
    folder = tmp_path / "w" / "Dataset297_TotalSegmentator_total_3mm_1559subj"
    folder.mkdir(parents=True)
    assert ts.missing_weights(True) == ["Dataset297_TotalSegmentator_total_3mm_1559subj"]  # no checkpoint yet
    (folder / "checkpoint_final.pth").write_bytes(b"")
    assert ts.missing_weights(True) == []


def test_call_arguments_image_and_mapping(fake_ts):
    calls, weights = fake_ts
    _add_fast_weights(weights)
    chest = make_chest()
    result = segment(chest.ct, backend="totalsegmentator")
    (image, output, kw), = calls["api"]
    assert output is None
    assert kw["ml"] is True and kw["fast"] is True and kw["task"] == "total" and kw["device"] == "cpu"
    assert kw["statistics"] is False and kw["radiomics"] is False
    assert calls["config"] == {"setup": True, "send_usage_stats": False}
    np.testing.assert_array_equal(np.asarray(image.dataobj), chest.ct.array.transpose(2, 1, 0))
    np.testing.assert_allclose(image.affine, chest.ct.affine_ras)
    lab = np.asarray(result.labels.array)
    assert result.labels.kind is Kind.LABELS and result.labels.same_geometry(chest.ct)
    names = result.names
    by_name = {v: k for k, v in names.items()}
    assert set(names.values()) == {"lung_left", "lung_right", "spine", "ribs", "colon", "kidney_right"}
    nx = chest.ct.shape[2]
    assert np.all(lab[:, :20, : nx // 4] == by_name["lung_left"])  # two lobes -> one lung (z, y, x)
    assert np.all(lab[:, 50:70, nx // 2] == by_name["spine"])  # two vertebrae -> spine
    assert np.all(lab[:, 50:60, nx // 2 + 1] == by_name["ribs"])  # rib
    assert np.all(lab[:, 50:60, nx // 2 + 2] == by_name["ribs"])  # sternum
    assert np.all(lab[:, 50:60, nx // 2 + 4] == by_name["kidney_right"])  # cyst -> its kidney
    assert result.volumes_ml()["lung_left"] == pytest.approx(
        chest.ct.shape[0] * 20 * (nx // 4) * chest.ct.voxel_volume_ml)


def test_settings_reach_the_call(fake_ts):
    calls, weights = fake_ts
    _add_fast_weights(weights)
    segment(make_chest().ct, backend="totalsegmentator", settings={"device": "gpu", "threads": "3"},
            organs=["lung_left"])
    kw = calls["api"][-1][2]
    assert kw["device"] == "gpu" and kw["nr_thr_resamp"] == 3
    with pytest.raises(InputError, match="device"):
        segment(make_chest().ct, backend="totalsegmentator", settings={"device": "tpu"})


def test_wrong_shape_from_the_api_is_an_error(fake_ts, monkeypatch):
    calls, weights = fake_ts
    _add_fast_weights(weights)
    monkeypatch.setattr(sys.modules["totalsegmentator.python_api"], "totalsegmentator",
                        lambda input, output=None, **kw: nib.Nifti1Image(np.zeros((3, 3, 3), np.uint8), np.eye(4)))
    with pytest.raises(InputError, match="returned labels of shape"):
        segment(make_chest().ct, backend="totalsegmentator")
