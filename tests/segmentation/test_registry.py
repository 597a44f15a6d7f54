"""Tests of persodose.segmentation.registry: registration, look-up, settings, segment(), resolve_labels()."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from persodose.errors import InputError, OptionalDependencyError
from persodose.grid import Grid, Kind
from persodose.segmentation import (DEFAULT_BACKEND, SegmenterSettings, ThresholdSettings, available_segmenters,
                                    get_segmenter, is_auto_spec, register_segmenter, resolve_labels, segment,
                                    setting)
from persodose.segmentation import registry


@pytest.fixture
def private_registry(monkeypatch):
    """A copy of the registry, so that test registrations vanish after the test."""
    registry.SEGMENTERS.load()
    monkeypatch.setattr(registry.SEGMENTERS, "_items", registry.SEGMENTERS.snapshot())
    return registry.SEGMENTERS._items


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


# ----------------------------------------------------------------------------- look-up
def test_threshold_is_registered_and_the_default():
    assert "threshold" in available_segmenters()
    assert DEFAULT_BACKEND == "threshold"
    info = get_segmenter("Threshold")  # case-insensitive
    assert info.name == "threshold" and info.installed
    assert set(info.organs) == {"body", "lung_left", "lung_right", "bone", "air_cavity"}
    assert info.settings_type is ThresholdSettings


def test_unknown_segmenter_lists_the_known_ones():
    with pytest.raises(InputError) as exc:
        get_segmenter("totalsegmentator-xl")
    msg = _one_line(exc)
    assert "totalsegmentator-xl" in msg and "threshold" in msg


def test_every_registered_setting_has_unit_doc_and_default():
    for name in available_segmenters():
        rows = get_segmenter(name).settings_type.describe()
        for row in rows:
            assert row.doc, f"{name}.{row.name} has no doc"
            assert row.default is not dataclasses.MISSING, f"{name}.{row.name} has no default"
            if row.name.endswith(("_hu", "_mm", "_ml")):
                assert row.unit == {"_hu": "HU", "_mm": "mm", "_ml": "mL"}[row.name[-3:]], (name, row)


# ----------------------------------------------------------------------------- contract
@pytest.mark.parametrize("name", available_segmenters())
def test_contract_every_installed_segmenter(name, chest):
    info = get_segmenter(name)
    if not info.installed:
        pytest.skip(f"{name} needs {info.missing_requirements()}")
    before = chest.ct.array.copy()
    result = segment(chest.ct, backend=name)
    assert np.array_equal(chest.ct.array, before)  # the input is never modified
    assert result.labels.kind is Kind.LABELS and result.labels.same_geometry(chest.ct)
    assert np.issubdtype(result.labels.array.dtype, np.integer)
    assert set(result.names.values()) <= set(info.organs) and 0 not in result.names
    present = set(np.unique(result.labels.array).tolist()) - {0}
    assert present <= set(result.names)
    assert result.backend == name and result.provenance()["segmenter"] == name


# ----------------------------------------------------------------------------- segment()
def test_segment_refuses_grids_that_are_not_ct(chest):
    dose = chest.ct.with_array(np.zeros(chest.ct.shape, np.float32), Kind.DOSE)
    with pytest.raises(InputError, match="CT grid in HU.*dose"):
        segment(dose)
    bad = chest.ct.array.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        segment(chest.ct.with_array(bad))


def test_organs_keeps_only_the_named_labels(chest):
    full = segment(chest.ct)
    lungs = segment(chest.ct, organs=["lung_left", "lung_right"])
    assert set(lungs.names.values()) == {"lung_left", "lung_right"}
    kept = np.isin(full.labels.array, [4, 5])
    assert np.array_equal(lungs.labels.array, np.where(kept, full.labels.array, 0))
    assert segment(chest.ct, organs="bone").names == {40: "bone"}


def test_unknown_organ_lists_what_the_backend_delivers(chest):
    with pytest.raises(InputError) as exc:
        segment(chest.ct, organs=["liver"])
    msg = _one_line(exc)
    assert "'liver'" in msg and "lung_left" in msg and "bone" in msg


def test_settings_from_strings_are_parsed_and_recorded(chest):
    result = segment(chest.ct, settings={"lung_threshold_hu": "-450", "body_opening_mm": "0"})
    assert result.settings["lung_threshold_hu"] == -450.0
    assert result.settings["body_opening_mm"] == 0.0
    assert result.settings["bone_threshold_hu"] == 200.0  # defaults kept


@pytest.mark.parametrize("settings, pattern", [
    ({"lung_treshold_hu": -450}, r"threshold\.lung_treshold_hu.*threshold has: .*lung_threshold_hu"),
    ({"lung_threshold_hu": 50}, r"threshold\.lung_threshold_hu must be within -1000\.\.-120 HU, got 50"),
    ({"lung_threshold_hu": "minus four hundred"}, r"cannot read"),
    ({"bone_opening_mm": float("nan")}, r"finite"),
    ({"air_max_hu": -300, "lung_threshold_hu": -400}, r"air_max_hu must be within|must be below"),
    ({"air_max_hu": -600, "lung_threshold_hu": -700}, r"must be below"),
    ({"body_threshold_hu": True}, r"must be a number"),
])
def test_bad_settings_are_one_line_input_errors(chest, settings, pattern):
    with pytest.raises(InputError, match=pattern) as exc:
        segment(chest.ct, settings=settings)
    _one_line(exc)


def test_settings_instance_is_used_as_given(chest):
    s = ThresholdSettings(bone_threshold_hu=900.0)
    assert segment(chest.ct, settings=s).settings["bone_threshold_hu"] == 900.0


# ----------------------------------------------------------------------------- registration
@dataclasses.dataclass(frozen=True)
class _HalfSettings(SegmenterSettings):
    split_hu: float = setting(0.0, unit="HU", doc="voxels above are 'dense'", min=-1000.0, max=3000.0)


def _half(ct: Grid, settings: _HalfSettings):
    return ct.with_array((np.asarray(ct.array) > settings.split_hu).astype(np.uint8), Kind.LABELS), {1: "dense"}


def test_a_registered_segmenter_is_found_and_run(private_registry, chest):
    register_segmenter("half", _half, settings=_HalfSettings, organs=("dense",))
    assert "half" in available_segmenters()
    result = segment(chest.ct, backend="half", settings={"split_hu": "100"})
    assert result.names == {1: "dense"}
    assert np.array_equal(result.labels.array, chest.ct.array > 100)
    labels, names = resolve_labels("auto:half", chest.ct)
    assert names == {1: "dense"} and np.array_equal(labels.array, chest.ct.array > 0)


def test_decorator_form_and_name_clash(private_registry):
    @register_segmenter("clash", organs=("x",))
    def first(ct, settings):
        """First one."""
        return ct.with_array(np.zeros(ct.shape, np.uint8), Kind.LABELS), {}

    assert get_segmenter("clash").summary == "First one."
    register_segmenter("clash", first, organs=("x",))  # the same function again: allowed (reload)
    with pytest.raises(ValueError, match="already registered"):
        register_segmenter("clash", _half, organs=("x",))
    with pytest.raises(ValueError, match="organs"):
        register_segmenter("no-organs", _half)
    with pytest.raises(ValueError, match="SegmenterSettings"):
        register_segmenter("bad-settings", _half, settings=dict, organs=("x",))


def test_missing_requirement_is_reported_before_running(private_registry, chest):
    calls = []

    def needs_net(ct, settings):
        calls.append(1)
        raise AssertionError("must not run")

    register_segmenter("net", needs_net, organs=("liver",), requires=("persodose_no_such_module_xyz",),
                       extra="dl")
    info = get_segmenter("net")
    assert not info.installed and info.missing_requirements() == ["persodose_no_such_module_xyz"]
    with pytest.raises(OptionalDependencyError, match=r"persodose\[dl\]"):
        segment(chest.ct, backend="net")
    assert calls == []


def test_a_segmenter_returning_the_wrong_geometry_is_a_bug(private_registry, chest):
    def off_grid(ct, settings):
        return Grid(np.zeros((2, 2, 2), np.uint8), kind=Kind.LABELS), {1: "x"}

    register_segmenter("off-grid", off_grid, organs=("x",))
    with pytest.raises(ValueError, match="off the CT's geometry"):
        segment(chest.ct, backend="off-grid")


# ----------------------------------------------------------------------------- resolve_labels
def test_resolve_labels_auto_and_auto_name_give_the_threshold_labels(chest):
    labels, names = resolve_labels("auto", chest.ct)
    labels2, names2 = resolve_labels(" AUTO:threshold ", chest.ct)
    direct = segment(chest.ct)
    assert names == names2 == direct.names
    assert np.array_equal(labels.array, direct.labels.array)
    assert np.array_equal(labels2.array, direct.labels.array)
    assert labels.same_geometry(chest.ct)


@pytest.mark.parametrize("spec, pattern", [
    ("auto:nope", r"unknown segmenter 'nope'; known: .*threshold"),
    ("auto:", r"give a segmenter after 'auto:'"),
    ("labels.nii.gz", r"'auto' or 'auto:NAME'"),
    ("automatic", r"'auto' or 'auto:NAME'"),
])
def test_resolve_labels_refuses_other_specs(chest, spec, pattern):
    with pytest.raises(InputError, match=pattern) as exc:
        resolve_labels(spec, chest.ct)
    _one_line(exc)


def test_is_auto_spec():
    assert is_auto_spec("auto") and is_auto_spec("Auto:threshold") and is_auto_spec("auto:")
    assert not is_auto_spec("auto.nii") and not is_auto_spec("labels/auto") and not is_auto_spec("automatic")
