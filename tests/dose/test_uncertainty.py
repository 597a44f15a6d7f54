"""Uncertainty of organ doses: the first-order propagation against a Monte Carlo resampling of its inputs.

The resampling (persodose.dose.uncertainty.resample_dose) draws the calibration factor, the
recovery coefficient, each time point's activity, the mass and the method's statistics from
their distributions, refits the time-activity curve and recomputes the dose; the SD of the
resampled doses must agree with the propagated one within 10 % (relative). With n draws the SD's
own relative sampling error is about 1/sqrt(2n) (2.5 % for n = 800), so 10 % is four of them and
leaves room for the fit's non-linearity.
"""

import math

import numpy as np
import pytest

from persodose.dose.uncertainty import (UncertaintySettings, boundary_faces, delineation_volume_rel_sd,
                                        dose_uncertainty, method_rel_sd, resample_dose, tia_relative_sd)
from persodose.errors import InputError
from persodose.physics.radionuclides import get_nuclide

HALF_LIFE_S = get_nuclide("Lu-177").half_life_s
TOLERANCE = 0.10


def _mono():
    t = np.array([4.0, 24.0, 72.0, 168.0]) * 3600.0
    return t, 5e7 * np.exp(-math.log(2.0) / (50 * 3600.0) * t)


def _propagated(t, a, model, settings, method_rel=0.0, drop=()):
    tia = tia_relative_sd(t, a, HALF_LIFE_S, model, settings.activity)
    u = dose_uncertainty("kidney", "test", 1.0, settings, tia=tia, method_rel=method_rel)
    return math.sqrt(sum(c.relative_sd ** 2 for c in u.components if c.relative_sd is not None and c.name not in drop))


def test_full_chain_propagation_matches_resampling():
    t, a = _mono()
    s = UncertaintySettings(calibration=0.05, activity=0.08, recovery=0.04, mass=0.06)
    prop = _propagated(t, a, "mono", s, method_rel=0.02)
    d = resample_dose(t, a, HALF_LIFE_S, "mono", 300.0, s, method_rel=0.02, n=800, seed=11)
    resampled = float(np.std(d, ddof=1) / np.mean(d))
    assert len(d) >= 790
    assert resampled == pytest.approx(prop, rel=TOLERANCE), (prop, resampled)
    # the check can fail: a budget that forgets the calibration factor is rejected
    assert _propagated(t, a, "mono", s, 0.02, drop=("calibration",)) != pytest.approx(resampled, rel=TOLERANCE)


def test_kinetic_fit_propagation_matches_resampling_for_uptake_and_washout():
    t = np.array([1.0, 4.0, 24.0, 72.0, 168.0]) * 3600.0
    k1, k2 = math.log(2.0) / (60 * 3600.0), math.log(2.0) / (2 * 3600.0)
    a = 4e7 * (np.exp(-k1 * t) - np.exp(-(k1 + k2) * t))
    s = UncertaintySettings(activity=0.10)
    prop = _propagated(t, a, "biexp_uptake", s)
    d = resample_dose(t, a, HALF_LIFE_S, "biexp_uptake", 300.0, s, n=600, seed=5)
    assert float(np.std(d, ddof=1) / np.mean(d)) == pytest.approx(prop, rel=TOLERANCE)
    assert 0.02 < prop < 0.1  # the fit averages the noise of five points


def test_recovery_independent_at_each_time_point_is_propagated_through_the_fit():
    from persodose.dose.uncertainty import organ_uncertainties

    t, a = _mono()
    s = UncertaintySettings(activity=0.04, recovery=0.08, recovery_per_time_point=True)
    rows, kin = _one_organ_inputs(t, a)
    u = organ_uncertainties(rows, np.ones((2, 2, 2), dtype=int), None, kin, HALF_LIFE_S, s)["kidney"]
    lines = {c.name: c for c in u.components}
    assert lines["recovery"].note.startswith("independent") and lines["recovery"].relative_sd < 0.08
    assert "fit residuals beyond the stated noise" not in lines  # the exact curve: no excess
    prop = math.sqrt(lines["recovery"].relative_sd ** 2 + lines["time-point activities and kinetic fit"].relative_sd ** 2)
    d = resample_dose(t, a, HALF_LIFE_S, "mono", 1.0, s, n=600, seed=3)
    assert float(np.std(d, ddof=1) / np.mean(d)) == pytest.approx(prop, rel=TOLERANCE)
    # one coefficient for all time points instead: the full 8 %, not averaged by the fit
    s1 = UncertaintySettings(activity=0.04, recovery=0.08)
    u1 = organ_uncertainties(rows, np.ones((2, 2, 2), dtype=int), None, kin, HALF_LIFE_S, s1)["kidney"]
    assert {c.name: c.relative_sd for c in u1.components}["recovery"] == 0.08


def _one_organ_inputs(t, a):
    from types import SimpleNamespace

    from persodose.kinetics.fit import fit_tac

    row = SimpleNamespace(name="kidney", label=1, method="test", n_voxels=8, mass_weighted_mean_gy=1.0, mean_gy=1.0)
    kin = {"kidney": SimpleNamespace(times_s=t, activities_bq=a, chosen_model="mono",
                                     fit=fit_tac(t, a, "mono", HALF_LIFE_S))}
    return [row], kin


def test_trapezoid_and_single_point_are_linear_in_the_activities():
    t, a = _mono()
    noise, excess, _ = tia_relative_sd(t, a, HALF_LIFE_S, "trapezoid", 0.1)
    d = resample_dose(t, a, HALF_LIFE_S, "trapezoid", 1.0, UncertaintySettings(activity=0.1), n=3000, seed=2)
    assert excess is None and float(np.std(d) / np.mean(d)) == pytest.approx(noise, rel=0.06)
    assert tia_relative_sd(t[:1], a[:1], HALF_LIFE_S, "hanscheid", 0.07)[0] == 0.07
    assert tia_relative_sd(t, a, HALF_LIFE_S, "trapezoid", None)[0] is None  # no noise stated, no fit


def test_residuals_beyond_the_stated_noise_are_a_line_of_their_own():
    t = np.array([4.0, 24.0, 48.0, 72.0, 168.0]) * 3600.0
    a = 5e7 * np.exp(-math.log(2.0) / (50 * 3600.0) * t) * np.array([1.0, 1.3, 0.8, 1.2, 0.9])
    noise, excess, _ = tia_relative_sd(t, a, HALF_LIFE_S, "mono", 0.02)
    assert excess is not None and excess > noise  # 20-30 % scatter against a stated 2 %


def test_delineation_uncertainty_of_a_sphere():
    r = 12.0
    z, y, x = np.mgrid[-16:17, -16:17, -16:17]
    lab = ((x * x + y * y + z * z) <= r * r).astype(np.int64)
    faces = boundary_faces(lab)
    u = delineation_volume_rel_sd(int(faces[1]), int(lab.sum()))
    # dV = 4 pi r^2 delta, delta uniform within +-1/2 voxel: u(V)/V = 3 (1/2) / (sqrt(3) r)
    assert u == pytest.approx(3 * 0.5 / (math.sqrt(3) * r), rel=0.1)
    assert faces[0] > 0  # the background has the array's edge too


def test_budget_shares_and_not_stated_lines():
    s = UncertaintySettings(calibration=0.03)
    u = dose_uncertainty("liver", "mc", 2.0, s, tia=(0.04, None, "fit"), mass_rel_sd=0.0, method_rel=0.0)
    rows = {b["component"]: b for b in u.budget()}
    assert rows["recovery"]["relative_sd_percent"] is None and rows["recovery"]["note"] == "not stated"
    assert u.relative_sd == pytest.approx(0.05) and u.sd_gy == pytest.approx(0.1)
    assert sum(b["share_percent"] or 0.0 for b in u.budget()) == pytest.approx(100.0)
    assert rows["calibration"]["share_percent"] == pytest.approx(36.0)


def test_method_statistics_combine_voxels_as_independent():
    d = np.ones(100)
    assert method_rel_sd(d, np.full(100, 0.1)) == pytest.approx(0.01)
    assert math.isnan(method_rel_sd(np.zeros(4), np.ones(4)))


@pytest.mark.parametrize("bad", [{"calibration": -0.1}, {"calibration": 1.5}, {"activity": "x"}, {"volume": 0.1},
                                 {"recovery_per_time_point": "maybe"}])
def test_bad_settings_are_input_errors(bad):
    with pytest.raises(InputError):
        UncertaintySettings.of(bad)


def test_per_time_point_recovery_is_not_counted_twice_without_stated_noise():
    """No activity noise stated: the fit's covariance scaled by its residuals already measures the scatter that
    independent recovery coefficients cause. Over many data sets, the propagated variance (mean of the
    budgets') must match the spread of the TIAs; adding the recovery line on top would overstate it by about
    sqrt(2)."""
    from persodose.dose.uncertainty import organ_uncertainties

    rng = np.random.default_rng(1)
    t = np.array([4.0, 24.0, 48.0, 72.0, 120.0, 168.0]) * 3600.0
    a0 = 5e7 * np.exp(-math.log(2.0) / (50 * 3600.0) * t)
    s = UncertaintySettings(recovery=0.08, recovery_per_time_point=True)
    tias, var = [], []
    for _ in range(300):
        a = a0 / (1 + 0.08 * rng.standard_normal(t.size))  # one recovery coefficient per time point
        rows, kin = _one_organ_inputs(t, a)
        u = organ_uncertainties(rows, np.ones((2, 2, 2), dtype=int), None, kin, HALF_LIFE_S, s)["kidney"]
        tias.append(kin["kidney"].fit.tia_bq_s)
        var.append(sum(c.relative_sd ** 2 for c in u.components if c.relative_sd is not None and c.name != "mass"))
    lines = {c.name: c for c in u.components}
    assert lines["recovery"].relative_sd is None and lines["recovery"].note.startswith("included in")
    spread = float(np.std(tias, ddof=1) / np.mean(tias))
    # 300 data sets: the SD's own sampling error is about 4 %; 12 % leaves room for the fits' non-linearity
    assert math.sqrt(float(np.mean(var))) == pytest.approx(spread, rel=0.12)


def test_delineation_line_of_a_voxel_dose_map_comes_from_the_map():
    """The mean of a voxel dose map over a VOI does not scale as 1/m: it changes only by the dose of the voxels
    gained or lost at the boundary. For d = r^2 in a sphere of radius R the mean is 3R^2/5 and dD/dR = 6R/5; a
    boundary uniform within +-1/2 voxel gives u(D)/D = (6R/5)(1/2)/sqrt(3) / (3R^2/5) = 1/(sqrt(3) R). A uniform
    map gives 0 (the 1/m rule would give about 3/(2 sqrt(3) R))."""
    from persodose.dose.uncertainty import delineation_dose_rel_sd, organ_uncertainties

    r = 12.0
    z, y, x = np.mgrid[-16:17, -16:17, -16:17].astype(float)
    rr = x * x + y * y + z * z
    lab = (rr <= r * r).astype(np.int64)
    assert delineation_dose_rel_sd(rr, lab == 1) == pytest.approx(1 / (math.sqrt(3) * r), rel=0.1)
    from types import SimpleNamespace

    row = SimpleNamespace(name="kidney", label=1, method="led", n_voxels=int(lab.sum()), mass_weighted_mean_gy=1.0,
                          mean_gy=1.0)
    s = UncertaintySettings()
    u = organ_uncertainties([row], lab, None, {}, HALF_LIFE_S, s, dose_map=np.ones(lab.shape))["kidney"]
    mass = {c.name: c for c in u.components}["mass"]
    assert mass.relative_sd == pytest.approx(0.0, abs=1e-12) and "dose map" in mass.note
    u_mird = organ_uncertainties([row], lab, None, {}, HALF_LIFE_S, s)["kidney"]  # organ level: 1/m
    assert {c.name: c.relative_sd for c in u_mird.components}["mass"] == pytest.approx(
        3 * 0.5 / (math.sqrt(3) * r), rel=0.1)
