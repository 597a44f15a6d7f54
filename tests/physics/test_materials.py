"""Tests of persodose.physics.materials (Schneider 2000 stoichiometric CT calibration)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from persodose.errors import InputError, MaterialError
from persodose.grid import Grid, Kind
from persodose.physics import materials as mt
from persodose.physics.materials import (
    Calibration,
    Material,
    ct_to_density_and_materials,
    default_materials,
    get_material,
    hu_to_density,
    hu_to_material,
    load_calibration_csv,
    materials_table,
    schneider_calibration,
)

ALL_HU = np.arange(-1024, 3072, dtype=np.float64)


# ----------------------------------------------------------------- density curve
@pytest.mark.parametrize(
    "hu, lo, hi",
    [
        (-1000, 0.0, 0.01),  # air
        (-700, 0.2, 0.5),  # lung
        (-100, 0.90, 0.97),  # adipose
        (40, 1.00, 1.07),  # soft tissue
        (1200, 1.6, 2.0),  # cortical bone
        (1300, 1.6, 2.0),
        (1400, 1.6, 2.0),
    ],
)
def test_density_in_published_ranges(hu, lo, hi):
    rho = float(hu_to_density(np.array([hu]))[0])
    assert lo <= rho <= hi


def test_density_published_knots_reproduced():
    # Schneider 2000 knots (GATE Schneider2000DensitiesTable) and the bone line 1.0762 + 0.000592 (H-101)
    rho = hu_to_density(np.array([-1000.0, -98.0, 14.0, 100.0, 101.0, 1600.0, 850.5]))
    expected = [0.00121, 0.93, 1.03, 1.1199, 1.0762, 1.9642, 1.0762 + (1.9642 - 1.0762) / 1499 * 749.5]
    np.testing.assert_allclose(rho, expected, rtol=1e-6)


def test_density_dtype_shape_and_clamping():
    hu = np.array([[[-5000.0, -1024.0], [5000.0, 3071.0]]])
    rho = hu_to_density(hu)
    assert rho.dtype == np.float32 and rho.shape == hu.shape
    assert rho[0, 0, 0] == rho[0, 0, 1] == pytest.approx(0.00121)
    assert rho[0, 1, 0] == rho[0, 1, 1]  # clamped above the last knot


def test_density_monotone_except_published_step_at_100_hu():
    cal = schneider_calibration()
    assert np.all(np.diff(cal.hu) > 0)
    rho = hu_to_density(ALL_HU).astype(np.float64)
    steps = np.diff(rho)
    decreasing = ALL_HU[:-1][steps < -1e-7]
    # Schneider's soft-tissue line ends at 1.1199 g/cm3 (100 HU), the bone line starts at 1.0762 (101 HU)
    assert decreasing.tolist() == [100.0]
    assert np.all(rho > 0)


def test_density_nan_raises():
    with pytest.raises(InputError):
        hu_to_density(np.array([0.0, np.nan]))


# ----------------------------------------------------------------- classes
def test_thirteen_contiguous_classes():
    mats = default_materials()
    assert [m.index for m in mats] == list(range(13))
    assert mats[0].hu_min == -1024 and mats[-1].hu_max == 3072
    for a, b in zip(mats, mats[1:]):
        assert a.hu_max == b.hu_min
    bones = [m for m in mats if m.name.startswith("ct_bone")]
    assert len(bones) == 8 and bones[0].hu_min == 100
    assert len({m.name for m in mats}) == 13


def test_mass_fractions_sum_to_one_and_are_physical():
    mats = default_materials() + mt.schneider_bin_materials() + list(mt.reference_media().values())
    for m in mats:
        w = np.array(list(m.mass_fractions.values()))
        assert w.sum() == pytest.approx(1.0, abs=1e-9), m.name
        assert np.all(w > 0)


def test_nominal_densities_increase_with_class():
    dens = [m.density_g_cm3 for m in default_materials()]
    assert np.all(np.diff(dens) > 0)
    mats = {m.name: m for m in default_materials()}
    assert 0.9 < mats["ct_adipose"].density_g_cm3 < 0.97
    assert 1.0 < mats["ct_soft_tissue"].density_g_cm3 < 1.1
    assert 1.85 < mats["ct_bone_8"].density_g_cm3 < 2.0  # cortical bone, ICRU 44: 1.92


def test_class_compositions_follow_schneider_table():
    mats = {m.name: m for m in default_materials()}
    # single-bin classes reproduce Table 6 exactly
    assert mats["ct_lung"].mass_fractions["H"] == pytest.approx(0.103)
    assert mats["ct_lung"].mass_fractions["O"] == pytest.approx(0.749)
    assert mats["ct_air"].mass_fractions["N"] == pytest.approx(0.755)
    assert "H" not in mats["ct_air"].mass_fractions
    # the top bone class is Schneider's 1500-1600 HU bin = ICRU 44 cortical bone
    cortical = get_material("bone").mass_fractions
    for el, w in mats["ct_bone_8"].mass_fractions.items():
        assert w == pytest.approx(cortical[el], abs=1e-9)
    # the adipose class is a mix of the adipose bins: carbon between 45.8 % and 68.1 %
    assert 0.458 < mats["ct_adipose"].mass_fractions["C"] < 0.681
    # calcium increases and hydrogen decreases through the bone classes
    ca = [mats[f"ct_bone_{k}"].mass_fractions["Ca"] for k in range(1, 9)]
    h = [mats[f"ct_bone_{k}"].mass_fractions["H"] for k in range(1, 9)]
    assert np.all(np.diff(ca) > 0) and np.all(np.diff(h) < 0)
    assert "Ca" not in mats["ct_soft_tissue"].mass_fractions


def test_every_hu_maps_to_a_class_consistent_with_ranges():
    mats = default_materials()
    idx = hu_to_material(ALL_HU)
    assert idx.dtype == np.uint8 and idx.shape == ALL_HU.shape
    assert set(np.unique(idx).tolist()) == set(range(13))
    lows = np.array([m.hu_min for m in mats])
    highs = np.array([m.hu_max for m in mats])
    assert np.all((lows[idx] <= ALL_HU) & (ALL_HU < highs[idx]))


def test_hu_to_material_clamps_and_boundaries():
    idx = hu_to_material(np.array([-3000.0, -950.0, -950.5, 99.9, 100.0, 1e5]))
    assert idx.tolist() == [0, 1, 0, 4, 5, 12]


def test_custom_materials_and_bad_ones():
    water = get_material("water")
    lo = Material(3, "low", -1000.0, 0.0, 0.5, dict(water.mass_fractions))
    hi = Material(7, "high", 0.0, 100.0, 1.5, dict(water.mass_fractions))
    assert hu_to_material(np.array([-2000.0, -1.0, 0.0, 500.0]), [hi, lo]).tolist() == [3, 3, 7, 7]
    gap = Material(7, "high", 10.0, 100.0, 1.5, dict(water.mass_fractions))
    with pytest.raises(MaterialError):
        hu_to_material(np.array([0.0]), [lo, gap])
    with pytest.raises(MaterialError):
        hu_to_material(np.array([0.0]), [water])  # reference medium has no HU range


def test_material_validation():
    with pytest.raises(MaterialError):
        Material(0, "bad", 0.0, 1.0, 1.0, {"H": 0.5, "O": 0.4})
    with pytest.raises(MaterialError):
        Material(0, "bad", 0.0, 1.0, 1.0, {"Xx": 1.0})
    with pytest.raises(MaterialError):
        Material(0, "bad", 0.0, 1.0, -1.0, {"O": 1.0})


# ----------------------------------------------------------------- CSV override
def test_csv_override(tmp_path):
    path = tmp_path / "cal.csv"
    path.write_text("# my scanner\nHU,density\n-1000,0.001\n0,1.0\n1000,2.0\n")
    cal = load_calibration_csv(path)
    assert isinstance(cal, Calibration) and str(path) in cal.source
    rho = hu_to_density(np.array([-2000.0, -500.0, 500.0, 4000.0]), cal)
    np.testing.assert_allclose(rho, [0.001, 0.5005, 1.5, 2.0], rtol=1e-6)
    ct = Grid(np.full((1, 1, 2), 500.0, dtype=np.int16), kind=Kind.CT)
    density, _, _ = ct_to_density_and_materials(ct, calibration=cal)
    np.testing.assert_allclose(density.array, 1.5, rtol=1e-6)


def test_csv_other_separators(tmp_path):
    path = tmp_path / "cal.txt"
    path.write_text("-1000;0.0012\n\n2000;2.5\n")
    cal = load_calibration_csv(path)
    np.testing.assert_allclose(cal.density_g_cm3, [0.0012, 2.5])


@pytest.mark.parametrize(
    "content, line",
    [
        ("HU,density\n0,1.0\n-10,0.9\n", 3),  # not increasing
        ("HU,density\n0,1.0\n0,1.1\n", 3),  # repeated knot
        ("HU,density\n-1000,-0.1\n0,1.0\n", 2),  # negative density
        ("HU,density\n-1000,nan\n0,1.0\n", 2),  # NaN
        ("-1000,0.001\n0,1.0,7\n", 2),  # three columns
        ("-1000,0.001\nzero,1.0\n", 2),  # text after data
        ("HU,density\n-1000,0.001\n0,1.0\n3000,1000000\n", 4),  # kg/m3-sized, or a typo
        ("HU,density\n-1000,0.001\n3000,22.6\n", 3),  # just above osmium
        ("HU,density\n-1000,0.001\n500,1.2\n0,1.0\n", 4),  # HU going back
        ("HU,density\n-1000,0.001\n0,inf\n", 3),  # infinite
    ],
)
def test_bad_csv_raises_with_file_and_line(tmp_path, content, line):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(InputError) as err:
        load_calibration_csv(path)
    msg = str(err.value)
    assert f"{path}:{line}" in msg and "\n" not in msg


def test_csv_density_range_is_physical(tmp_path):
    from persodose.errors import MaterialError
    from persodose.physics.materials import MAX_CALIBRATION_DENSITY_G_CM3

    assert MAX_CALIBRATION_DENSITY_G_CM3 == pytest.approx(22.59)  # osmium, CRC Handbook
    path = tmp_path / "cal_huge.csv"
    path.write_text("HU,density\n-1000,0.001\n0,1.0\n3000,1000000\n")
    with pytest.raises(MaterialError) as err:
        load_calibration_csv(path)
    msg = str(err.value)
    assert f"{path}:4" in msg and "1e+06 g/cm3" in msg and "osmium" in msg
    path.write_text("HU,density\n-1000,-0.5\n0,1.0\n")
    with pytest.raises(MaterialError, match=rf"{path}:2: negative density -0.5 g/cm3"):
        load_calibration_csv(path)
    path.write_text("HU,density\n-1024,0\n3000,22.59\n")  # vacuum to osmium: accepted
    np.testing.assert_allclose(load_calibration_csv(path).density_g_cm3, [0.0, 22.59])


def test_bad_csv_too_few_rows_and_missing(tmp_path):
    path = tmp_path / "one.csv"
    path.write_text("HU,density\n0,1.0\n")
    with pytest.raises(InputError, match="one.csv: a calibration needs at least 2 rows"):
        load_calibration_csv(path)
    path.write_text("this is not a calibration\n")
    with pytest.raises(InputError, match="one.csv: a calibration needs at least 2 rows .* found 0"):
        load_calibration_csv(path)
    with pytest.raises(InputError, match="nothere.csv"):
        load_calibration_csv(tmp_path / "nothere.csv")


def test_calibration_validates_arrays():
    with pytest.raises(InputError):
        Calibration(np.array([0.0, 0.0]), np.array([1.0, 1.0]))
    with pytest.raises(InputError):
        Calibration(np.array([0.0]), np.array([1.0]))


# ----------------------------------------------------------------- grids
def test_ct_to_density_and_materials_grid():
    hu = np.array([[[-2000, -1000, -700], [-100, 40, 1300]]], dtype=np.int16)
    ct = Grid(hu, (2.0, 3.0, 4.0), (10.0, -5.0, 7.0), kind=Kind.CT)
    density, material, mats = ct_to_density_and_materials(ct)
    assert density.kind is Kind.DENSITY and density.array.dtype == np.float32
    assert density.unit == "g/cm3"
    assert material.kind is Kind.MATERIAL and material.array.dtype == np.uint8
    assert density.same_geometry(ct) and material.same_geometry(ct)
    assert material.array.ravel().tolist() == [0, 0, 1, 2, 4, 11]
    assert density.array[0, 0, 0] == pytest.approx(0.00121)
    assert len(mats) == 13
    assert hu.min() == -2000  # input untouched


def test_ct_nan_and_wrong_kind_raise():
    arr = np.zeros((1, 2, 2), dtype=np.float32)
    arr[0, 1, 1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        ct_to_density_and_materials(Grid(arr, kind=Kind.CT))
    with pytest.raises(InputError):
        ct_to_density_and_materials(Grid(np.zeros((1, 1, 1)), kind=Kind.DOSE))


# ----------------------------------------------------------------- reference media
def test_water_electrons_per_gram():
    assert get_material("water").electrons_per_gram() == pytest.approx(3.343e23, rel=1e-3)


def test_mean_excitation_energies():
    # ICRU 37: water 75.0 eV; NIST dry air 85.7 eV
    assert get_material("water").mean_excitation_energy_ev() == pytest.approx(75.0, abs=0.5)
    assert get_material("air").mean_excitation_energy_ev() == pytest.approx(85.7, abs=0.5)
    assert get_material("bone").mean_excitation_energy_ev() > get_material("soft_tissue").mean_excitation_energy_ev()


def test_electron_density_relative_to_water():
    water = get_material("water")
    bone = get_material("bone")
    # ICRU 44 cortical bone: electron density relative to water about 1.78
    ratio = bone.electrons_per_cm3() / water.electrons_per_cm3()
    assert 1.7 < ratio < 1.85


def test_get_material_names():
    assert get_material("WATER").name == "water"
    assert get_material("Soft Tissue").density_g_cm3 == pytest.approx(1.0)
    assert get_material("lung").density_g_cm3 == pytest.approx(0.26)
    assert get_material("bone").density_g_cm3 == pytest.approx(1.92)
    assert get_material("air").density_g_cm3 == pytest.approx(1.20479e-3)
    assert get_material("CT_Bone_8").index == 12
    assert get_material("schneider_bone_15").mass_fractions["Ca"] == pytest.approx(0.225)
    with pytest.raises(MaterialError) as err:
        get_material("unobtainium")
    assert "water" in str(err.value) and "ct_bone_8" in str(err.value)


def test_materials_table_json():
    table = materials_table(default_materials())
    assert len(table) == 13
    text = json.dumps(table, allow_nan=False)
    back = json.loads(text)
    assert back[4]["name"] == "ct_soft_tissue" and back[4]["hu_min"] == 19.0
    assert sum(back[12]["mass_fractions"].values()) == pytest.approx(1.0, abs=1e-5)
    ref = materials_table([get_material("water")])
    assert ref[0]["hu_min"] is None and ref[0]["index"] == -1
    json.dumps(ref, allow_nan=False)
