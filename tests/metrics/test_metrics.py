"""Tests of persodose.metrics: voxel metrics, gamma, DVH, organ tables and comparisons."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from persodose.errors import GeometryError, InputError, UnitsError
from persodose.grid import Grid, Kind
from persodose.metrics import (compare, dose_at_volume, dvh, dvh_edges, dvh_figure, dvhs_for_labels,
                               ensemble_noise, gamma_index, gamma_pass_rate, joint_histogram,
                               joint_histogram_figure, mae, me, mrae, nrmse, organ_table, psnr, regression,
                               relative_absolute_error, relative_error, rmse, ssim, volume_at_dose,
                               voxel_metrics, write_dvh_csv, write_organ_table_csv,
                               write_organ_table_json)

REF = np.array([1.0, 2.0, 3.0, 4.0])
TST = np.array([1.5, 2.0, 2.0, 5.0])


# ----------------------------------------------------------------------------- voxel metrics
def test_absolute_errors_hand_computed():
    # differences t - r = [0.5, 0, -1, 1]
    assert me(REF, TST) == pytest.approx(0.125)
    assert mae(REF, TST) == pytest.approx(0.625)
    assert rmse(REF, TST) == pytest.approx(0.75)


def test_nrmse_normalisations():
    # RMS of the reference = sqrt(30 / 4); range = 3; max = 4; mean = 2.5
    assert nrmse(REF, TST) == pytest.approx(0.75 / math.sqrt(7.5))
    assert nrmse(REF, TST, norm="range") == pytest.approx(0.25)
    assert nrmse(REF, TST, norm="max") == pytest.approx(0.1875)
    assert nrmse(REF, TST, norm="mean") == pytest.approx(0.3)
    with pytest.raises(InputError):
        nrmse(REF, TST, norm="bogus")


def test_relative_errors_and_threshold():
    # (t - r) / r = [0.5, 0, -1/3, 0.25]; default threshold 1 % of max keeps all voxels
    assert relative_error(REF, TST) == pytest.approx(100 * (0.5 - 1 / 3 + 0.25) / 4)
    assert mrae(REF, TST) == pytest.approx(100 * (0.5 + 1 / 3 + 0.25) / 4)
    assert relative_absolute_error(REF, TST) == pytest.approx(mrae(REF, TST))
    # absolute threshold 1.5 drops the first voxel
    assert mrae(REF, TST, threshold=1.5) == pytest.approx(100 * (1 / 3 + 0.25) / 3)
    # fractional threshold 0.6 x max = 2.4 keeps the last two voxels
    assert relative_error(REF, TST, threshold_fraction=0.6) == pytest.approx(100 * (0.25 - 1 / 3) / 2)
    with pytest.raises(InputError):
        mrae(REF, TST, threshold=10.0)


def test_mask_restricts_voxels():
    mask = np.array([True, True, False, False])
    assert mae(REF, TST, mask) == pytest.approx(0.25)
    assert me(REF, TST, mask) == pytest.approx(0.25)
    with pytest.raises(InputError):
        mae(REF, TST, np.zeros(4, bool))
    with pytest.raises(GeometryError):
        mae(REF, TST, np.ones(3, bool))


def test_psnr_hand_computed_and_identical():
    # data range 3, MSE 0.5625: 10 log10(9 / 0.5625) = 10 log10(16)
    assert psnr(REF, TST) == pytest.approx(10 * math.log10(16.0))
    assert psnr(REF, REF.copy()) == math.inf


def test_identical_inputs_give_perfect_scores():
    rng = np.random.default_rng(1)
    a = rng.random((8, 9, 10)) * 5
    assert mae(a, a.copy()) == 0.0
    assert rmse(a, a.copy()) == 0.0
    assert ssim(a, a.copy()) == pytest.approx(1.0)
    m = voxel_metrics(a, a.copy())
    assert m["mae"] == 0 and m["psnr_db"] == math.inf and m["ssim"] == pytest.approx(1.0)
    assert m["regression_slope"] == pytest.approx(1.0) and m["regression_r2"] == pytest.approx(1.0)


def test_ssim_drops_with_noise_and_mask():
    rng = np.random.default_rng(2)
    z, y, x = np.mgrid[0:10, 0:12, 0:12]
    a = np.exp(-((z - 5) ** 2 + (y - 6) ** 2 + (x - 6) ** 2) / 20.0)
    noisy = a + rng.normal(0, 0.1, a.shape)
    s = ssim(a, noisy)
    assert 0.0 < s < 0.9
    assert ssim(a, a + rng.normal(0, 0.01, a.shape)) > s
    centre = np.zeros(a.shape, bool)
    centre[3:7, 4:8, 4:8] = True
    assert ssim(a, noisy, centre) != pytest.approx(s)
    with pytest.raises(GeometryError):
        ssim(np.ones((2, 2, 2)), np.ones((2, 2, 2)))


def test_regression_hand_computed():
    fit = regression(REF, TST)
    assert fit["slope"] == pytest.approx(1.05)
    assert fit["intercept"] == pytest.approx(0.0, abs=1e-12)
    assert fit["r2"] == pytest.approx(5.25 ** 2 / (5 * 7.6875))


def test_joint_histogram_counts_and_figure():
    r = np.array([0.0, 0.0, 1.0, 1.0])
    t = np.array([0.0, 1.0, 1.0, 1.0])
    counts, xe, ye = joint_histogram(r, t, bins=2, value_range=(0.0, 1.0))
    np.testing.assert_array_equal(counts, [[1, 1], [0, 2]])
    np.testing.assert_allclose(xe, [0, 0.5, 1])
    fig = joint_histogram_figure(REF, TST, bins=4)
    from matplotlib.figure import Figure

    assert isinstance(fig, Figure) and len(fig.axes) == 2  # histogram + colour bar


def test_nan_and_shape_errors():
    bad = TST.copy()
    bad[1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        mae(REF, bad)
    with pytest.raises(GeometryError):
        mae(REF, np.ones(5))


# ----------------------------------------------------------------------------- DVH
def test_dose_at_volume_hand_computed():
    v = np.arange(1.0, 11.0)  # 1..10, one voxel each
    assert dose_at_volume(v, 2) == 10.0
    assert dose_at_volume(v, 10) == 10.0
    assert dose_at_volume(v, 30) == 8.0
    assert dose_at_volume(v, 50) == 6.0
    assert dose_at_volume(v, 70) == 4.0
    assert dose_at_volume(v, 90) == 2.0
    assert dose_at_volume(v, 98) == 1.0
    assert volume_at_dose(v, 5.0) == pytest.approx(60.0)
    assert volume_at_dose(v, 5.5) == pytest.approx(50.0)
    with pytest.raises(InputError):
        dose_at_volume(v, 120)


def test_dose_volume_ordering_and_uniform_organ():
    rng = np.random.default_rng(3)
    v = rng.gamma(2.0, 1.5, size=1000)
    d2, d50, d98 = dose_at_volume(v, [2, 50, 98])
    assert d98 <= d50 <= d2
    assert d98 < d2
    u = np.full(57, 3.25)
    assert set(np.atleast_1d(dose_at_volume(u, [2, 10, 50, 90, 98]))) == {3.25}


def test_dvh_monotone_starts_at_100():
    rng = np.random.default_rng(4)
    v = rng.gamma(3.0, 1.0, size=500)
    edges = dvh_edges(v.max(), n_bins=40)
    h = dvh(v, edges, name="x", voxel_volume_ml=0.008)
    assert h.cumulative_percent[0] == pytest.approx(100.0)
    assert np.all(np.diff(h.cumulative_percent) <= 0)
    assert h.differential_percent.sum() == pytest.approx(100.0)
    assert h.volume_ml == pytest.approx(4.0)
    # cumulative at an edge equals V(edge)
    assert h.cumulative_percent[10] == pytest.approx(volume_at_dose(v, edges[10]))
    e = dvh_edges(3.0, bin_width=0.5)
    np.testing.assert_allclose(e, np.arange(0, 3.01, 0.5))


# ----------------------------------------------------------------------------- organ tables
def _phantom():
    """A 4x6x6 label phantom: label 1 uniform 2 Gy, label 2 ramp, label 3 (named) absent."""
    labels = np.zeros((4, 6, 6), np.int16)
    labels[:, :3, :3] = 1
    labels[:, 3:, 3:] = 2
    dose = np.zeros(labels.shape)
    dose[labels == 1] = 2.0
    dose[labels == 2] = np.arange(1.0, 37.0)  # 36 voxels: 1..36 Gy
    density = np.ones(labels.shape)
    ramp = dose[labels == 2]
    dens2 = np.where(ramp > 18, 3.0, 1.0)
    density[labels == 2] = dens2
    geo = dict(spacing_zyx_mm=(2.0, 2.0, 2.0), origin_xyz_mm=(0.0, 0.0, 0.0))
    return (Grid(dose, kind=Kind.DOSE, **geo), Grid(labels, kind=Kind.LABELS, **geo),
            Grid(density, kind=Kind.DENSITY, **geo), ramp, dens2)


def test_organ_table_on_label_phantom():
    dose, labels, density, ramp, dens2 = _phantom()
    rows = organ_table(dose, labels, {1: "liver", 2: "kidney", 3: "spleen"}, density, v_doses=(10.0,))
    by = {r["name"]: r for r in rows}
    liver, kidney, spleen = by["liver"], by["kidney"], by["spleen"]
    assert liver["n_voxels"] == 36 and liver["volume_ml"] == pytest.approx(36 * 0.008)
    for k in ("mean_Gy", "min_Gy", "max_Gy", "D2_Gy", "D50_Gy", "D98_Gy", "mass_weighted_mean_Gy"):
        assert liver[k] == pytest.approx(2.0)
    assert liver["std_Gy"] == 0.0
    assert liver["mass_g"] == pytest.approx(36 * 0.008)
    assert kidney["mean_Gy"] == pytest.approx(18.5)
    assert kidney["D50_Gy"] == 19.0  # hottest 18 of 36 voxels: 19..36
    assert kidney["D10_Gy"] == 33.0  # hottest ceil(3.6) = 4 voxels
    assert kidney["V10Gy_percent"] == pytest.approx(100 * 27 / 36)
    assert kidney["mass_weighted_mean_Gy"] == pytest.approx(np.sum(dens2 * ramp) / np.sum(dens2))
    assert kidney["mass_weighted_mean_Gy"] > kidney["mean_Gy"]
    assert spleen["n_voxels"] == 0 and math.isnan(spleen["mean_Gy"])


def test_organ_table_on_virtual_patient_labels():
    from persodose.phantoms import LABELS, NOMINAL_DENSITY_G_CM3, build_anatomy, organ_masses_g

    anat = build_anatomy(voxel_mm=8.0)
    lab = anat.labels
    geo = dict(spacing_zyx_mm=(8.0, 8.0, 8.0))
    rho = np.zeros(lab.shape)
    dose = np.zeros(lab.shape)
    for value, name in LABELS.items():
        rho[lab == value] = NOMINAL_DENSITY_G_CM3[name]
        dose[lab == value] = 0.1 * value  # organ-uniform dose, Gy
    rows = organ_table(Grid(dose, kind=Kind.DOSE, **geo), Grid(lab, kind=Kind.LABELS, **geo), LABELS,
                       Grid(rho, kind=Kind.DENSITY, **geo))
    masses = organ_masses_g(lab, 8.0)
    assert len(rows) == len(LABELS)
    for row in rows:
        assert row["mass_g"] == pytest.approx(masses[row["name"]])
        if row["n_voxels"]:
            assert row["mean_Gy"] == pytest.approx(0.1 * row["label"])
            assert row["D98_Gy"] == row["D50_Gy"] == row["D2_Gy"] == pytest.approx(0.1 * row["label"])


def test_drvh_percentiles_on_dose_rate_grid():
    # 100 voxels with dose rates 1..100 (x 1e-6 Gy/s): DRx = minimum of the hottest x %.
    rate = (np.arange(1.0, 101.0) * 1e-6).reshape(4, 5, 5)
    g = Grid(rate, kind=Kind.DOSE_RATE)
    lab = Grid(np.ones(rate.shape, np.uint8), kind=Kind.LABELS)
    row = organ_table(g, lab, {1: "lesion"})[0]
    assert row["DR10_Gy_per_s"] == pytest.approx(91e-6)
    assert row["DR30_Gy_per_s"] == pytest.approx(71e-6)
    assert row["DR70_Gy_per_s"] == pytest.approx(31e-6)
    assert row["DR90_Gy_per_s"] == pytest.approx(11e-6)


def test_organ_table_writers(tmp_path):
    dose, labels, density, *_ = _phantom()
    rows = organ_table(dose, labels, {1: "liver", 2: "kidney", 3: "spleen"}, density)
    write_organ_table_csv(rows, tmp_path / "organs.csv")
    write_organ_table_json(rows, tmp_path / "organs.json", unit="Gy")
    with open(tmp_path / "organs.csv") as fh:
        got = list(csv.DictReader(fh))
    assert [r["name"] for r in got] == ["liver", "kidney", "spleen"]
    assert float(got[1]["mean_Gy"]) == pytest.approx(18.5)
    assert got[2]["mean_Gy"] == ""
    doc = json.loads((tmp_path / "organs.json").read_text())
    assert doc["unit"] == "Gy" and doc["rows"][2]["mean_Gy"] is None


def test_dvhs_for_labels_csv_and_figure(tmp_path):
    dose, labels, *_ = _phantom()
    hs = dvhs_for_labels(dose, labels, {1: "liver", 2: "kidney"}, bin_width=1.0)
    assert set(hs) == {"liver", "kidney"}
    liver = hs["liver"]
    # uniform 2 Gy: 100 % up to 2 Gy, 0 % above
    assert liver.cumulative_percent[liver.edges <= 2.0].min() == pytest.approx(100.0)
    assert liver.cumulative_percent[liver.edges > 2.0].max() == 0.0
    write_dvh_csv(hs, tmp_path / "dvh.csv")
    write_dvh_csv(hs, tmp_path / "ddvh.csv", kind="differential")
    with open(tmp_path / "dvh.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["dose_Gy", "liver_percent", "kidney_percent"]
    assert float(rows[1][1]) == 100.0 and float(rows[1][2]) == 100.0
    assert len(rows) == len(liver.edges) + 1
    fig = dvh_figure(hs)
    assert len(fig.axes[0].lines) == 2


# ----------------------------------------------------------------------------- comparison
def test_compare_organ_errors_and_voxel_metrics():
    dose, labels, *_ = _phantom()
    test = dose.with_array(dose.array * 1.1)
    out = compare(dose, test, labels, {1: "liver", 2: "kidney"})
    assert out["mask_voxels"] == 72
    assert out["voxel"]["re_percent"] == pytest.approx(10.0)
    assert out["voxel"]["mrae_percent"] == pytest.approx(10.0)
    assert out["voxel"]["regression_slope"] == pytest.approx(1.1)
    liver = out["organs"][0]
    assert liver["name"] == "liver"
    assert liver["reference_mean_Gy"] == pytest.approx(2.0)
    assert liver["test_mean_Gy"] == pytest.approx(2.2)
    assert liver["me_Gy"] == pytest.approx(0.2)
    assert liver["re_percent"] == pytest.approx(10.0)
    assert liver["rae_percent"] == pytest.approx(10.0)
    assert liver["D90_rae_percent"] == pytest.approx(10.0)
    assert out["gamma"] is None
    under = compare(dose, dose.with_array(dose.array * 0.8), labels, {1: "liver"})
    assert under["organs"][0]["re_percent"] == pytest.approx(-20.0)
    assert under["organs"][0]["rae_percent"] == pytest.approx(20.0)


def test_compare_errors():
    dose, labels, *_ = _phantom()
    moved = Grid(dose.array, dose.spacing_zyx_mm, (5.0, 0.0, 0.0), kind=Kind.DOSE)
    with pytest.raises(GeometryError):
        compare(dose, moved)
    bad = dose.array.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        compare(dose, dose.with_array(bad))
    with pytest.raises(UnitsError):
        compare(dose, dose.with_array(dose.array, unit="mGy"))
    with pytest.raises(GeometryError):
        mae(dose, moved)


def test_ensemble_noise_definition():
    # two voxels, two realisations: mu = [2, 4], unbiased variances [2, 2]
    r1 = np.array([1.0, 3.0])
    r2 = np.array([3.0, 5.0])
    assert ensemble_noise([r1, r2]) == pytest.approx(100 * math.sqrt(2) / 3)
    # differs from the mean voxel coefficient of variation (53.0 %)
    assert ensemble_noise([r1, r2]) != pytest.approx(100 * np.mean(np.sqrt(2) / np.array([2, 4])))
    assert ensemble_noise([r1, r2], np.array([True, False])) == pytest.approx(100 * math.sqrt(2) / 2)
    with pytest.raises(InputError):
        ensemble_noise([r1])


# ----------------------------------------------------------------------------- gamma
def _gaussian(shift_mm: float, spacing=2.0, shape=(15, 15, 41), sigma=8.0) -> Grid:
    nz, ny, nx = shape
    z, y, x = ((np.arange(n) - (n - 1) / 2) * spacing for n in shape)
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    a = 10.0 * np.exp(-(zz ** 2 + yy ** 2 + (xx - shift_mm) ** 2) / (2 * sigma ** 2))
    origin = (-(nx - 1) / 2 * spacing, -(ny - 1) / 2 * spacing, -(nz - 1) / 2 * spacing)
    return Grid(a, (spacing,) * 3, origin, kind=Kind.DOSE)


def test_gamma_identical_and_small_shift_pass():
    ref = _gaussian(0.0)
    assert gamma_pass_rate(ref, _gaussian(0.0)) == 100.0
    res = gamma_index(ref, _gaussian(2.0))
    assert res.pass_rate_percent == 100.0
    assert 0 < res.mean_gamma < 1
    assert res.n_evaluated == int(np.sum(ref.array >= 1.0))  # 10 % cutoff of a 10 Gy peak


def test_gamma_large_shift_fails_in_gradients():
    ref = _gaussian(0.0)
    res = gamma_index(ref, _gaussian(5.0))
    assert res.pass_rate_percent < 90.0
    # central row along the shift: the steepest points (|x| = sigma = 8 mm) fail
    row = res.gamma[7, 7, :]
    x = (np.arange(41) - 20) * 2.0
    assert np.all(row[np.abs(np.abs(x) - 8.0) < 1e-9] > 1.0)
    assert np.nanmax(res.gamma) <= 2.0  # capped at max_gamma
    # a looser criterion passes more points
    assert gamma_pass_rate(ref, _gaussian(5.0), 5, 5) > res.pass_rate_percent


def test_gamma_random_subset_and_errors():
    ref = _gaussian(0.0)
    res = gamma_index(ref, _gaussian(5.0), random_subset=300, seed=3)
    assert res.n_evaluated == 300
    again = gamma_index(ref, _gaussian(5.0), random_subset=300, seed=3)
    np.testing.assert_array_equal(np.isfinite(res.gamma), np.isfinite(again.gamma))
    rot = Grid(ref.array, ref.spacing_zyx_mm, ref.origin_xyz_mm, np.diag([-1.0, -1.0, 1.0]), Kind.DOSE)
    with pytest.raises(GeometryError):
        gamma_index(ref, rot)


def test_compare_with_gamma():
    ref = _gaussian(0.0)
    out = compare(ref, _gaussian(2.0), gamma=True)
    assert out["gamma"]["gamma_pass_rate_percent"] == 100.0
    assert out["voxel"]["ssim"] < 1.0


# Hand-computed gamma with unequal dose and distance criteria.
#
# Global gamma of a reference point r (Low et al. 1998; see persodose.metrics.gamma):
#     gamma(r)^2 = min_u [ u^2 / DTA^2 + (D_t(r + u) - D_r(r))^2 / DD^2 ],  DD = dose % x max(D_r).
# Dose varying along x only: the minimum lies along x.
#
# * Uniform fields D_r = D, D_t = k D: the dose difference is the same everywhere, the
#   minimum is at u = 0, gamma = |k - 1| D / DD = 100 |k - 1| / dose %.
# * Linear ramp D_r(x) = D0 + g x and test D_t(x) = k D_r(x - s) (scaled by k, shifted by s):
#   D_t(r + u) - D_r(r) = k g u + c(r), c(r) = (k - 1) D_r(r) - k g s, and minimising the
#   quadratic in u gives  gamma(r) = |c(r)| / sqrt(DD^2 + (k g DTA)^2)  at u* = -k g c DTA^2 / (DD^2 + (k g DTA)^2).
#   The test grid extends 20 mm beyond the reference grid on both sides, so u* is always
#   inside it, and linear interpolation of a linear dose is exact: the formula holds at every
#   evaluated point. pymedphys searches distances in steps of DTA / interp_fraction, so it can
#   only over-estimate gamma; with interp_fraction = 10 it does by < 0.007 near gamma = 1 and
#   < 0.065 up to gamma = 2.9 (measured against the formula; the step grows with distance).
def _ramp(x0_mm: float, n: int, dose_of_x) -> tuple[Grid, np.ndarray]:
    x = x0_mm + np.arange(n) * 1.0  # 1 mm along x, 3 x 3 voxels of 2 mm in y and z
    a = np.broadcast_to(dose_of_x(x), (3, 3, n)).astype(np.float64)
    return Grid(a, (2.0, 2.0, 1.0), (x0_mm, -2.0, -2.0), kind=Kind.DOSE), x


def test_gamma_uniform_dose_difference_hand_computed_2pct_3mm():
    """A uniform +2.5 % dose error: gamma = 2.5 / 2 = 1.25 everywhere at 2 %/3 mm (pass rate 0 %).
    With the dose criterion doubled (4 %) it would be 0.625, with dose and distance swapped
    (3 %/2 mm) 0.833: both would pass 100 %."""
    ref, _ = _ramp(0.0, 11, lambda x: np.full_like(x, 10.0))
    tst, _ = _ramp(0.0, 11, lambda x: np.full_like(x, 10.25))
    res = gamma_index(ref, tst, dose_percent=2.0, distance_mm=3.0)
    assert res.dose_percent == 2.0 and res.distance_mm == 3.0
    assert res.n_evaluated == ref.array.size
    np.testing.assert_allclose(res.gamma, 1.25, rtol=1e-9)
    assert res.mean_gamma == pytest.approx(1.25, rel=1e-9)
    assert res.pass_rate_percent == 0.0
    assert gamma_pass_rate(ref, tst, 2.0, 3.0) == 0.0
    # 1 %/4 mm: gamma = 2.5 / 1 = 2.5 (below max_gamma = 3, so not capped)
    np.testing.assert_allclose(gamma_index(ref, tst, 1.0, 4.0, max_gamma=3.0).gamma, 2.5, rtol=1e-9)
    # the same error passes at 3 %/3 mm (gamma = 0.833)
    assert gamma_pass_rate(ref, tst, 3.0, 3.0) == 100.0


@pytest.mark.parametrize("dose_percent,distance_mm,n_pass", [(2.0, 3.0, 66), (1.0, 4.0, 62)])
def test_gamma_scaled_and_shifted_ramp_hand_computed(dose_percent, distance_mm, n_pass):
    """Ramp 2 -> 10 Gy over 160 mm (g = 0.05 Gy/mm), test scaled by k = 1.09 and shifted by
    s = 4 mm: gamma(r) = |0.09 D_r(r) - 0.218| / sqrt(DD^2 + (0.0545 DTA)^2), DD = dose % x 10 Gy / 100.

    By hand: 2 %/3 mm: sqrt(0.2^2 + 0.1635^2) = 0.25833, gamma <= 1 for D_r <= (0.25833 + 0.218)
    / 0.09 = 5.2925 Gy, i.e. x <= 65.85 mm: 66 of the 161 x positions pass (40.99 %).
    1 %/4 mm: sqrt(0.1^2 + 0.218^2) = 0.23984, D_r <= 5.0871 Gy, x <= 61.74 mm: 62 pass (38.51 %).
    The dose criterion doubled would give 105/161 (65.2 %) and 75/161 (46.6 %), the criteria
    swapped (3 %/2 mm, 4 %/1 mm) 80/161 (49.7 %) and 99/161 (61.5 %)."""
    d0, g, k, s = 2.0, 0.05, 1.09, 4.0
    ref, x = _ramp(0.0, 161, lambda x: d0 + g * x)
    tst, _ = _ramp(-20.0, 201, lambda x: k * (d0 + g * (x - s)))
    res = gamma_index(ref, tst, dose_percent=dose_percent, distance_mm=distance_mm, lower_percent_dose_cutoff=10.0,
                      max_gamma=3.0)
    assert res.dose_percent == dose_percent and res.distance_mm == distance_mm
    dd = dose_percent / 100.0 * 10.0  # global: % of the reference maximum (10 Gy)
    expected = np.abs((k - 1.0) * (d0 + g * x) - k * g * s) / math.sqrt(dd**2 + (k * g * distance_mm) ** 2)
    assert expected.max() < 3.0  # nothing capped at max_gamma
    assert int(np.sum(expected <= 1.0)) == n_pass  # the hand count above
    # the search can only over-estimate gamma, by < 0.01 near gamma = 1; no passing point is
    # that close to 1, so the pass rate is exactly the hand-computed one
    assert np.min(1.0 - expected[expected <= 1.0]) > 0.01
    assert res.n_evaluated == ref.array.size  # every point is above the 10 % cutoff (2 Gy >= 1 Gy)
    diff = res.gamma - expected[None, None, :]
    assert diff.min() > -1e-6  # a discrete search never finds a smaller gamma than the minimum
    assert diff[:, :, np.abs(expected - 1.0) < 0.2].max() < 0.01  # where pass/fail is decided
    assert diff.max() < 0.08
    expected_rate = 100.0 * n_pass / 161
    assert res.pass_rate_percent == pytest.approx(expected_rate, abs=1e-9)
    assert res.mean_gamma == pytest.approx(expected.mean(), abs=0.02)
