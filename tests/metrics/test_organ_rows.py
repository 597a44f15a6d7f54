"""Typed organ dose rows (fixed units), label sums and the one JSON conversion."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from persodose.errors import InputError
from persodose.grid import Grid, Kind
from persodose.metrics.organ import (ORGAN_SCHEMA, ORGAN_SCHEMA_VERSION, label_sums, organ_dose_rows,
                                     write_organ_rows)
from persodose.outputs import jsonable


def _maps(unit: str):
    dose = np.zeros((4, 4, 4), np.float32)
    dose[:2] = 2.0
    dose[2:] = 4.0
    lab = np.zeros((4, 4, 4), np.int32)
    lab[:2] = 1
    lab[2:, :2] = 2
    rho = np.full((4, 4, 4), 1.0, np.float32)
    rho[:2, :, :2] = 3.0  # organ 1: half its voxels three times denser
    spacing = (10.0, 10.0, 10.0)  # 1 mL voxels
    return (Grid(dose, spacing, kind=Kind.DOSE, unit=unit), Grid(lab, spacing, kind=Kind.LABELS),
            Grid(rho, spacing, kind=Kind.DENSITY))


@pytest.mark.parametrize("unit, factor", [("Gy", 1.0), ("mGy", 1e-3)])
def test_rows_are_in_gy_whatever_the_unit_of_the_map(unit, factor):
    dose, lab, rho = _maps(unit)
    rows = {r.name: r for r in organ_dose_rows(dose, lab, {1: "liver", 2: "spleen"}, rho, method="mc")}
    liver, spleen = rows["liver"], rows["spleen"]
    assert liver.mean_gy == pytest.approx(2.0 * factor) and spleen.mean_gy == pytest.approx(4.0 * factor)
    assert liver.n_voxels == 32 and liver.volume_ml == pytest.approx(32.0)
    assert liver.mass_g == pytest.approx(16 * 3.0 + 16 * 1.0)
    assert liver.d_gy["D50"] == pytest.approx(2.0 * factor) and liver.method == "mc"
    d = liver.to_dict()
    assert d["mean_Gy"] == liver.mean_gy and "mean_mGy" not in d and d["D98_Gy"] == pytest.approx(2.0 * factor)


def test_mass_weighted_mean_is_energy_over_mass():
    dose, lab, rho = _maps("Gy")
    d = dose.array.copy()
    d[:2, :, :2] = 1.0  # the dense half of organ 1 gets 1 Gy, the rest 2 Gy
    row = organ_dose_rows(dose.with_array(d), lab, {1: "liver"}, rho)[0]
    assert row.mean_gy == pytest.approx(1.5)
    assert row.mass_weighted_mean_gy == pytest.approx((48 * 1.0 + 16 * 2.0) / 64)
    scaled = row.scaled(0.5, note="half")
    assert scaled.mean_gy == pytest.approx(0.75) and scaled.d_gy["D2"] == pytest.approx(row.d_gy["D2"] / 2)


def test_a_map_that_is_not_a_dose_is_refused():
    dose, lab, _ = _maps("Gy")
    with pytest.raises(InputError, match="absorbed-dose map"):
        organ_dose_rows(dose.with_array(dose.array, Kind.TIA), lab)


def test_json_has_the_schema_and_no_nan(tmp_path):
    dose, lab, rho = _maps("Gy")
    rows = organ_dose_rows(dose, lab, {1: "liver", 2: "spleen", 3: "absent"}, rho)
    assert math.isnan(rows[2].mean_gy)  # an empty structure
    write_organ_rows(rows, tmp_path / "organs.json")
    text = (tmp_path / "organs.json").read_text()
    assert "NaN" not in text
    doc = json.loads(text)
    assert (doc["schema"], doc["schema_version"], doc["unit"]) == (ORGAN_SCHEMA, ORGAN_SCHEMA_VERSION, "Gy")
    assert doc["rows"][2]["mean_Gy"] is None and doc["rows"][0]["mean_Gy"] == pytest.approx(2.0)
    write_organ_rows(rows, tmp_path / "organs.csv")
    header = (tmp_path / "organs.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["name", "label", "method"] and "mean_Gy" in header


def test_label_sums():
    _, lab, rho = _maps("Gy")
    assert label_sums(rho, lab, {1: "liver", 2: "spleen", 9: "none"}) == {"liver": 64.0, "spleen": 16.0, "none": 0.0}
    assert label_sums(rho, lab) == {1: 64.0, 2: 16.0}
    assert label_sums(np.ones(64), lab, weights=rho.array) == {1: 64.0, 2: 16.0}
    with pytest.raises(InputError, match="differ in size"):
        label_sums(np.ones(3), lab)


def test_jsonable_turns_nan_and_infinity_into_null():
    doc = jsonable({"a": float("nan"), "b": [np.float32(np.inf), 1.5], "c": np.array([np.nan, 2.0])})
    assert doc == {"a": None, "b": [None, 1.5], "c": [None, 2.0]}
    json.dumps(doc, allow_nan=False)
