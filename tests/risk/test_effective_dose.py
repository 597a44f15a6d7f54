"""Effective dose with the ICRP Publication 103 tissue weighting factors."""

from __future__ import annotations

import math

import pytest

from persodose.errors import InputError
from persodose.risk.effective_dose import (ICRP103_REMAINDER, ICRP103_TISSUE_WEIGHTS, effective_dose,
                                           tissue_for_label)


def test_weights_sum_to_one_and_remainder_has_13_tissues_per_sex():
    assert sum(ICRP103_TISSUE_WEIGHTS.values()) == pytest.approx(1.0, abs=1e-12)
    assert ICRP103_TISSUE_WEIGHTS["lung"] == 0.12 and ICRP103_TISSUE_WEIGHTS["gonads"] == 0.08
    assert ICRP103_TISSUE_WEIGHTS["thyroid"] == 0.04 and ICRP103_TISSUE_WEIGHTS["skin"] == 0.01
    for sex in ("M", "F"):
        assert sum(sex in s for s in ICRP103_REMAINDER.values()) == 13


@pytest.mark.parametrize("name,tissue", [
    ("lung_left", "lung"), ("lung_upper_lobe_right", "lung"), ("liver", "liver"), ("urinary_bladder", "bladder"),
    ("esophagus", "oesophagus"), ("thyroid_gland", "thyroid"), ("kidney_right", "kidneys"), ("red_marrow", "red_marrow"),
    ("skin_fat", "skin"), ("small_bowel", "small_intestine"), ("adrenal_gland_left", "adrenals"),
    ("Gallbladder", "gall_bladder"), ("spine", None), ("lesion_liver", None), ("body", None),
    # the population's added organs (labels 100-112)
    ("rectum", "colon"), ("colon", "colon"), ("salivary_glands", "salivary_glands"), ("thymus", "thymus"),
    ("pancreas", "pancreas"), ("oesophagus", "oesophagus"), ("small_intestine", "small_intestine"),
    ("aorta", None), ("inferior_vena_cava", None), ("portal_vein", None), ("spinal_cord", None)])
def test_label_names_map_to_icrp_tissues(name, tissue):
    assert tissue_for_label(name) == tissue


def test_hand_computed_partial_effective_dose():
    doses = {"lung_left": 0.010, "lung_right": 0.020, "liver": 0.008, "brain": 0.002, "prostate": 0.006,
             "heart": 0.004, "spine": 0.050}
    masses = {"lung_left": 500.0, "lung_right": 1500.0}
    r = effective_dose(doses, masses)
    lung = (0.010 * 500 + 0.020 * 1500) / 2000
    expected = 0.12 * lung + 0.04 * 0.008 + 0.01 * 0.002 + 0.12 / 26 * 0.006 + 0.12 / 13 * 0.004
    assert r.effective_dose_sv == pytest.approx(expected, rel=1e-12)
    assert r.covered_weight == pytest.approx(0.12 + 0.04 + 0.01 + 0.12 / 26 + 0.12 / 13)
    assert not r.complete and r.status.startswith("partial, covering 0.18")
    for t in ("colon", "breast", "gonads", "oesophagus", "thyroid", "salivary_glands", "bone_surface", "stomach"):
        assert t in r.missing_tissues
    assert any(m.startswith("remainder (partly") for m in r.missing_tissues)
    assert r.unmapped_labels == ["spine"]
    assert set(r.remainder_present) == {"prostate", "heart"}


def test_complete_set_gives_the_common_dose_and_uncertainty_propagates():
    names = [t for t in ICRP103_TISSUE_WEIGHTS if t != "remainder"] + list(ICRP103_REMAINDER)
    r = effective_dose({n: 0.003 for n in names}, organ_sd_gy={"lung": 0.001})
    assert r.complete and r.status == "complete"
    assert r.covered_weight == pytest.approx(1.0)
    assert r.effective_dose_sv == pytest.approx(0.003, rel=1e-12)
    assert r.uncertainty_sv == pytest.approx(0.12 * 0.001)
    # skin_fat is flagged as an approximation
    assert any("skin_fat" in n for n in effective_dose({"skin_fat": 0.001}).notes)


def test_bad_organ_doses_are_refused():
    with pytest.raises(InputError):
        effective_dose({})
    with pytest.raises(InputError, match="liver"):
        effective_dose({"liver": -1.0})
    with pytest.raises(InputError):
        effective_dose({"liver": math.nan})
