"""Fit-quality verdicts of organ TIAs (persodose.kinetics.quality), issue 9 item 8."""

import json
import math
import warnings

import numpy as np
import pytest
from scipy.integrate import quad

from persodose.errors import InputError
from persodose.kinetics import (FitQuality, QualityThresholds, fit_quality, fit_result_quality, fit_tac, get_model,
                                organ_tac_tia, organ_tia, unreliable_organs)
from persodose.kinetics.models import Trapezoid
from persodose.kinetics.quality import adjusted_r_squared, trapezoid_quality

H = 3600.0
T_LU = 6.647 * 86400.0  # Lu-177 half-life, ICRP 107
LN2 = math.log(2.0)
T4 = np.array([4.0, 24.0, 96.0, 168.0]) * H  # the demo patient's SPECT schedule (mid-frame ~ +10 min)
T8 = np.array([0.25, 0.5, 1.0, 2.0, 4.0, 24.0, 96.0, 168.0]) * H


def lam(teff_h):
    return LN2 / (teff_h * H)


PARAMS = {
    "mono": np.array([1e8, lam(55.0)]),
    "biexp_uptake": np.array([1e8, lam(60.0), lam(3.0) - lam(60.0)]),
    "biexp": np.array([3e7, lam(80.0), 7e7, lam(3.0) - lam(80.0)]),
    "triexp": np.array([5e7, lam(90.0), 5e7, lam(8.0) - lam(90.0), lam(0.5) - lam(8.0)]),
}


# ----------------------------------------------------------------------------- partial integrals
@pytest.mark.parametrize("name", list(PARAMS))
def test_integral_from_matches_quadrature(name):
    model = get_model(name, T_LU)
    p = PARAMS[name]
    f = lambda t: float(model.evaluate(np.array([t]), p)[0])  # noqa: E731
    assert model.integral_from(0.0, p) == pytest.approx(model.integral_0_inf(p), rel=1e-12)
    t1, t2 = 4.0 * H, 168.0 * H
    brk = [t1, 10 * H, 50 * H, t2]
    num = sum(quad(f, a, b, limit=200, epsabs=0)[0] for a, b in zip(brk[:-1], brk[1:]))
    between = model.integral_from(np.array([t1, t2]), p)
    assert between[0] - between[1] == pytest.approx(num, rel=1e-8)
    assert model.integral_from(np.array([t1]), np.stack([p, 2 * p])).shape == (2, 1)


# ----------------------------------------------------------------------------- verdicts
def test_clean_biexponential_organ_is_good():
    model = get_model("biexp", T_LU)
    p = np.array([3e7, lam(40.0), 7e7, lam(3.0) - lam(40.0)])
    a = model.evaluate(T8, p) * (1 + 0.02 * np.random.default_rng(0).standard_normal(T8.size))
    res = organ_tac_tia(T8, a, T_LU)
    q = res.quality
    assert res.chosen_model == "biexp"
    assert q.verdict == "good" and q.reasons == () and res.verdict == "good"
    assert q.n_points == 8 and q.n_parameters == 4
    assert 0.99 < q.r_squared <= 1.0 and q.adjusted_r_squared <= q.r_squared
    assert q.max_relative_residual < 0.1
    assert q.effective_half_life_s == pytest.approx(40.0 * H, rel=0.1)
    # the extrapolated fraction is the model's own: head and tail of the fitted curve
    fm = get_model(res.fit.model, T_LU)
    inside = fm.integral_from(T8[0], res.fit.params) - fm.integral_from(T8[-1], res.fit.params)
    assert q.extrapolated_fraction == pytest.approx(1 - inside / res.tia_bq_s, rel=1e-9)
    assert 0.03 < q.extrapolated_fraction < 0.2
    assert unreliable_organs({"liver": res}) == []


@pytest.mark.parametrize("values_mbq", [
    [280.0, 5.0, 6.0, 7.0],       # washout, then spill-in rising at the late time points
    [276.4, 5.3, 0.7, 0.2],       # the demo patient's bladder (organ sums of the 10 mm SPECT images)
])
def test_spill_in_bladder_with_mono_exponential_is_unreliable(values_mbq):
    res = organ_tac_tia(T4, np.array(values_mbq) * 1e6, T_LU, name="bladder")
    q = res.quality
    assert res.chosen_model == "mono"  # 4 points: the only AICc-eligible model
    assert q.verdict == "unreliable"
    assert q.r_squared < 0
    assert any(r.startswith("R² = ") and "< 0" in r for r in q.reasons)
    assert q.max_relative_residual > 0.9  # the first point is missed by the curve through the late ones
    ((organ, why),) = unreliable_organs({"bladder": res, "kidney": organ_tac_tia(
        T4, 1e8 * np.exp(-lam(50.0) * T4), T_LU)})
    assert organ == "bladder" and "R² = " in why and "\n" not in why


def test_late_rise_hits_the_physical_bound_and_is_flagged():
    res = organ_tac_tia(T4, np.array([280.0, 5.0, 6.0, 7.0]) * 1e6, T_LU)
    assert res.quality.effective_half_life_s == pytest.approx(T_LU, rel=1e-6)
    assert any("do not clear faster than physical decay" in r for r in res.quality.reasons)


def test_two_point_fit_is_flagged_for_too_few_points():
    t = np.array([24.0, 96.0]) * H
    res = organ_tac_tia(t, 1e8 * np.exp(-lam(30.0) * t), T_LU)
    q = res.quality
    assert res.chosen_model == "mono" and q.n_points == 2 and q.n_parameters == 2
    assert q.verdict != "good"
    assert any(r.startswith("too few points: 2 time point(s) for 2 parameter(s)") for r in q.reasons)
    assert q.r_squared == pytest.approx(1.0)  # an exact fit through two points checks nothing
    assert math.isnan(q.adjusted_r_squared)


def test_extrapolated_fraction_is_exact_for_a_mono_exponential_and_graded():
    # ln2/T_eff = 60 h; ext = 1 - (exp(-l t1) - exp(-l tn)) for A0 exp(-l t)
    for times_h, verdict in (([1.0, 2.0, 4.0], "unreliable"), ([1.0, 4.0, 24.0, 48.0, 96.0], "poor"),
                             ([1.0, 4.0, 24.0, 48.0, 96.0, 168.0, 336.0], "good")):
        t = np.array(times_h) * H
        res = organ_tac_tia(t, 1e8 * np.exp(-lam(60.0) * t), T_LU)
        q = res.quality
        l = lam(60.0)
        assert q.extrapolated_fraction == pytest.approx(1 - (math.exp(-l * t[0]) - math.exp(-l * t[-1])), rel=1e-6)
        assert q.verdict == verdict, (times_h, q.summary())
        if verdict != "good":
            assert any("of the TIA is extrapolated outside the measured times" in r for r in q.reasons)
    assert res.quality.r_squared == pytest.approx(1.0)


def test_effective_half_life_longer_than_physical_is_unreliable():
    # parameters from elsewhere (not bounded like persodose's fits): T_eff = 2 T_phys
    a = 1e6 * np.exp(-0.5 * LN2 / T_LU * T4)
    q = fit_quality("mono", [1e6, LN2 / (2 * T_LU)], T4, a, half_life_s=T_LU)
    assert q.verdict == "unreliable" and q.r_squared == pytest.approx(1.0)
    assert any("exceeds the physical half-life" in r for r in q.reasons)
    # persodose's own fit of the same data stops at the bound: flagged, not impossible
    f = fit_tac(T4, a, "mono", T_LU)
    q = fit_result_quality(f, T4, a)
    assert q.verdict in ("poor", "unreliable") and not any("exceeds" in r for r in q.reasons)
    assert any("at the physical half-life" in r for r in q.reasons)


def test_a_misfit_curve_is_poor_by_r_squared_and_residual():
    # the demo patient's whole body (fast blood clearance, then slow): biphasic data, mono model
    a = np.array([932.9, 326.5, 98.3, 39.7]) * 1e6
    q = fit_result_quality(fit_tac(T4, a, "mono", T_LU), T4, a)
    assert 0 <= q.r_squared < 0.8 and q.verdict == "poor"
    assert any(r.startswith("R² = ") for r in q.reasons)
    assert any("off the fitted curve" in r for r in q.reasons)


def test_non_parametric_tias_get_a_verdict_too():
    # rising two points: the mono fit stops at the bound, organ_tac_tia falls back to the trapezoid
    t = np.array([4.0, 24.0]) * H
    res = organ_tac_tia(t, [1e7, 2e7], T_LU)
    assert res.chosen_model == "trapezoid" and res.fit is None
    head, body, tail = Trapezoid(T_LU).parts(t, np.array([1e7, 2e7]))
    assert res.quality.extrapolated_fraction == pytest.approx((head + tail) / (head + body + tail))
    assert res.quality.verdict == "unreliable" and math.isnan(res.quality.r_squared)
    assert any("physical decay only" in r for r in res.quality.reasons)
    one = organ_tac_tia([24.0 * H], [1e7], T_LU)
    assert one.chosen_model == "hanscheid" and one.quality.extrapolated_fraction == 1.0
    assert one.quality.verdict == "unreliable"
    none = organ_tac_tia(T4, np.zeros(4), T_LU)
    assert none.quality.verdict == "poor" and "no positive activity" in none.quality.reasons[0]
    # a trapezoid over a long schedule of a fast organ needs no flag
    tt = np.array([0.5, 1, 2, 4, 8, 24, 48]) * H
    assert trapezoid_quality(tt, 1e8 * np.exp(-lam(2.0) * tt), T_LU).verdict == "good"


def test_quality_serialises_and_thresholds_are_checked():
    res = organ_tac_tia(np.array([24.0, 96.0]) * H, [5e7, 3e7], T_LU)
    d = res.to_dict()["quality"]
    json.dumps(d, allow_nan=False)  # NaN written as null
    assert d["adjusted_r_squared"] is None and d["verdict"] == res.quality.verdict
    assert isinstance(res.quality, FitQuality) and res.quality.summary().startswith(res.quality.verdict)
    strict = QualityThresholds(r_squared_poor=0.9999999)
    a = 1e8 * np.exp(-lam(60.0) * T8) * (1 + 0.01 * np.cos(np.arange(8)))
    assert fit_result_quality(fit_tac(T8, a, "mono", T_LU), T8, a, strict).verdict == "poor"
    with pytest.raises(InputError):
        QualityThresholds(extrapolated_fraction_poor=0.6, extrapolated_fraction_unreliable=0.5)
    with pytest.raises(InputError):
        QualityThresholds(max_relative_residual_poor=float("nan"))
    with pytest.raises(InputError, match="2 parameters"):
        fit_quality("mono", [1.0, 2.0, 3.0], T4, np.ones(4), half_life_s=T_LU)
    with pytest.raises(InputError):
        fit_quality("mono", [1e6, 1e-5], T4, np.ones(3), half_life_s=T_LU)
    assert adjusted_r_squared(0.9, 4, 2) == pytest.approx(1 - 0.1 * 3 / 2)


# ----------------------------------------------------------------------------- demo patient
def test_demo_patient_bladder_from_its_spect_images_is_unreliable():
    """The demo patient's images through the workflow's organ_tia call (10 mm: about 2 s)."""
    from persodose.grid import Kind
    from persodose.phantoms import make_virtual_patient
    from persodose.workflows.internal import dose_grid_for

    vp = make_virtual_patient("lu177-dotatate", voxel_mm=10)
    # counts -> Bq as the DICOM reader does (frame-average activity, no decay correction to undo)
    frames = [fr.image.with_array(fr.image.array / (fr.duration_s * fr.calibration_cps_per_mbq) * 1e6, Kind.ACTIVITY)
              for fr in vp.frames]
    ref = dose_grid_for(vp.ct, max(frames[0].spacing_zyx_mm))
    activities = [f.resample_to(ref) for f in frames]
    times = [fr.mid_time_s for fr in vp.frames]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # as the workflow does around organ_tia
        organs = organ_tia(activities, times, vp.labels.resample_to(ref), vp.label_names, vp.half_life_s)
    assert all(o.quality is not None for o in organs.values())
    bladder = organs["bladder"]
    assert bladder.quality.verdict == "unreliable" and bladder.quality.r_squared < 0
    assert bladder.tia_bq_s < 0.3 * vp.organ_tac["bladder"].tia_bq_s()  # the TIA it gives is far off
    assert "bladder" in dict(unreliable_organs(organs))
    for organ in ("kidney_left", "kidney_right"):
        assert organs[organ].quality.verdict == "good", organs[organ].quality.summary()

