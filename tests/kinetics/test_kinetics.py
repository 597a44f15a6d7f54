"""Kinetic models, TAC fits, AICc selection, voxel-wise fits, dynamic frames and TIA maps."""

import math

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.stats import t as student_t

from persodose.errors import GeometryError, InputError
from persodose.grid import Grid, Kind
from persodose.kinetics import (Hanscheid, SingleTimePoint, Trapezoid, aicc, fit_tac, fit_voxels, get_model,
                                integrate_dynamic, organ_tia, select_model, tia_map)
from persodose.kinetics.fit import VOXEL_CODES
from persodose.phantoms.kinetics import TACModel

H = 3600.0
T_LU = 6.647 * 86400.0  # Lu-177 half-life, ICRP 107
LN2 = math.log(2.0)
T4 = np.array([4.0, 24.0, 96.0, 168.0]) * H
T6 = np.array([1.0, 4.0, 24.0, 48.0, 96.0, 168.0]) * H
T8 = np.array([0.25, 0.5, 1.0, 2.0, 4.0, 24.0, 96.0, 168.0]) * H


def lam(teff_h):
    return LN2 / (teff_h * H)


TRUE = {
    "mono": (np.array([1e8, lam(55.0)]), T4),
    "biexp_uptake": (np.array([1e8, lam(60.0), lam(3.0) - lam(60.0)]), T6),
    "biexp": (np.array([3e7, lam(80.0), 7e7, lam(3.0) - lam(80.0)]), T6),
    "triexp": (np.array([5e7, lam(90.0), 5e7, lam(8.0) - lam(90.0), lam(0.5) - lam(8.0)]), T8),
}


# ----------------------------------------------------------------------------- models
@pytest.mark.parametrize("name", list(TRUE))
def test_analytic_integral_matches_quadrature(name):
    model = get_model(name, T_LU)
    p, _ = TRUE[name]
    f = lambda t: float(model.evaluate(np.array([t]), p)[0])  # noqa: E731
    # every term decays at least as fast as Lu-177: beyond 125 half-lives (20 000 h) < 2^-125 is left
    brk = [0.0, 1 * H, 10 * H, 100 * H, 1000 * H, 5000 * H, 20000 * H]
    num = sum(quad(f, a, b, limit=200, epsabs=0)[0] for a, b in zip(brk[:-1], brk[1:]))
    assert model.integral_0_inf(p) == pytest.approx(num, rel=1e-7)


@pytest.mark.parametrize("name", list(TRUE))
def test_jacobian_matches_complex_step(name):
    model = get_model(name, T_LU)
    p, t = TRUE[name]
    jac = model.jacobian(t, p)
    for i in range(p.size):
        h = abs(p[i]) * 1e-20
        pc = p.astype(complex)
        pc[i] += 1j * h
        np.testing.assert_allclose(jac[:, i], np.imag(model.evaluate(t, pc)) / h, rtol=1e-9, atol=1e-12 * abs(jac).max())


def test_models_vectorised_over_leading_axes():
    model = get_model("biexp_uptake", T_LU)
    p = np.stack([TRUE["biexp_uptake"][0] * [1.0, 1.0, 1.0], TRUE["biexp_uptake"][0] * [2.0, 1.5, 0.7]])
    p = np.broadcast_to(p, (3, 2, 3))
    out = model.evaluate(T6, p)
    assert out.shape == (3, 2, T6.size)
    np.testing.assert_allclose(out[1, 1], model.evaluate(T6, p[1, 1]))
    assert model.integral_0_inf(p).shape == (3, 2)
    with pytest.raises(InputError, match="3 parameters"):
        model.evaluate(T6, np.ones(4))


def test_effective_rate_bounded_by_physical_decay():
    for name in TRUE:
        lo, _ = get_model(name, T_LU).bounds()
        assert lo[1] == pytest.approx(LN2 / T_LU)
    # data that clear more slowly than physical decay: the fit stops at lambda_phys
    a = 1e6 * np.exp(-0.5 * LN2 / T_LU * T4)
    f = fit_tac(T4, a, "mono", T_LU)
    assert f.params[1] == pytest.approx(LN2 / T_LU, rel=1e-6)


def test_trapezoid_first_segment_and_physical_tail():
    a = np.array([2.0e6, 3.0e6, 1.5e6, 1.0e6])
    head0, body, tail = Trapezoid(T_LU).parts(T4, a)
    headc, _, _ = Trapezoid(T_LU, "constant").parts(T4, a)
    assert head0 == pytest.approx(0.5 * a[0] * T4[0])
    assert headc == pytest.approx(a[0] * T4[0])
    assert tail == pytest.approx(a[-1] * T_LU / LN2)
    assert body == pytest.approx(np.trapezoid(a, T4))
    # the integral equals the quadrature of the curve it describes
    tr = Trapezoid(T_LU)
    num = quad(lambda t: float(tr.evaluate([t], T4, a)[0]), 0, T4[-1], points=list(T4), limit=200)[0]
    num += quad(lambda t: float(tr.evaluate([t], T4, a)[0]), T4[-1], T4[-1] + 100 * T_LU, limit=200)[0]
    assert tr.integral(T4, a) == pytest.approx(num, rel=1e-6)
    # a curve with physical decay only is integrated almost exactly with dense points
    t = np.linspace(1.0, 400.0, 400) * H
    ap = 1e6 * np.exp(-LN2 / T_LU * t)
    assert Trapezoid(T_LU, "constant").integral(t, ap) == pytest.approx(1e6 * T_LU / LN2, rel=2e-3)
    with pytest.raises(InputError):
        Trapezoid(T_LU, "linear")


def test_hanscheid_against_exact_mono():
    teff = 60.0 * H
    a0 = 5e8
    exact = a0 / lam(60.0)
    act = lambda t: a0 * math.exp(-lam(60.0) * t)  # noqa: E731
    # exact at t = T_eff and 2 T_eff, maximal overestimate 2/(e ln 2) at t = T_eff / ln 2
    assert Hanscheid().tia(teff, act(teff)) == pytest.approx(exact, rel=1e-12)
    assert Hanscheid().tia(2 * teff, act(2 * teff)) == pytest.approx(exact, rel=1e-12)
    t_max = teff / LN2
    assert Hanscheid().tia(t_max, act(t_max)) / exact == pytest.approx(2 / (math.e * LN2), rel=1e-12)
    for t in np.linspace(0.3, 3.0, 12) * teff:
        assert Hanscheid().tia(t, act(t)) / exact == pytest.approx(Hanscheid.ratio_to_exact(t, teff), rel=1e-12)
        assert Hanscheid().tia(t, act(t)) / exact <= 2 / (math.e * LN2) + 1e-12
    # the population-half-life formula is exact at any time for the right half-life
    stp = SingleTimePoint(teff, T_LU)
    for t in (4 * H, 24 * H, 200 * H):
        assert stp.tia(t, act(t)) == pytest.approx(exact, rel=1e-12)
    with pytest.raises(InputError, match="exceeds the physical"):
        SingleTimePoint(2 * T_LU, T_LU)
    with pytest.raises(InputError):
        Hanscheid().tia(-1.0, 1.0)


# ----------------------------------------------------------------------------- organ fits
@pytest.mark.parametrize("name", list(TRUE))
def test_fit_recovers_noise_free_parameters(name):
    p, t = TRUE[name]
    model = get_model(name, T_LU)
    f = fit_tac(t, model.evaluate(t, p), name, T_LU)
    assert f.converged
    np.testing.assert_allclose(f.params, p, rtol=1e-5)
    assert f.tia_bq_s == pytest.approx(model.integral_0_inf(p), rel=1e-7)
    assert f.r2 == pytest.approx(1.0, abs=1e-10)
    assert f.ssr < 1e-12


@pytest.mark.parametrize("name", ["mono", "biexp_uptake"])
def test_noisy_fits_within_uncertainty(name):
    p, t = TRUE[name]
    model = get_model(name, T_LU)
    truth = model.integral_0_inf(p)
    clean = model.evaluate(t, p)
    # relative weights: the residual-estimated scale has n - K degrees of freedom, so the
    # 95 % interval uses Student's t; with known sigmas the normal 1.96 applies
    t95 = student_t.ppf(0.975, t.size - model.n_params)
    z_rel, z_abs, tias = [], [], []
    for seed in range(40):
        rng = np.random.default_rng(100 + seed)
        y = clean * (1 + 0.05 * rng.standard_normal(t.size))
        f = fit_tac(t, y, name, T_LU)
        assert f.converged and f.tia_sd_bq_s > 0
        z_rel.append(abs(f.tia_bq_s - truth) / f.tia_sd_bq_s)
        fs = fit_tac(t, y, name, T_LU, sigma=0.05 * clean)
        z_abs.append(abs(fs.tia_bq_s - truth) / fs.tia_sd_bq_s)
        tias.append(f.tia_bq_s)
    assert np.mean(np.array(z_rel) < t95) >= 0.85
    assert np.mean(np.array(z_abs) < 1.96) >= 0.85
    assert np.mean(tias) == pytest.approx(truth, rel=0.03)


def test_known_sigma_gives_absolute_covariance():
    p, t = TRUE["mono"]
    model = get_model("mono", T_LU)
    y = model.evaluate(t, p)
    f1 = fit_tac(t, y, "mono", T_LU, sigma=0.01 * y)
    f2 = fit_tac(t, y, "mono", T_LU, sigma=0.02 * y)
    assert f1.weighting == "sigma"
    assert f2.tia_sd_bq_s == pytest.approx(2 * f1.tia_sd_bq_s, rel=1e-6)
    assert f1.tia_sd_bq_s / f1.tia_bq_s == pytest.approx(0.01, rel=0.5)


def test_aicc_formula_and_eligibility():
    assert aicc(2.0, 6, 2) == pytest.approx(6 * math.log(2.0 / 6) + 4 + 12 / 3)
    assert math.isnan(aicc(1.0, 4, 3))
    p, _ = TRUE["mono"]
    y = get_model("mono", T_LU).evaluate(T4, p) * (1 + 0.02 * np.array([1, -1, 0.5, -0.3]))
    best, table = select_model(T4, y, T_LU)
    assert best.model == "mono"
    notes = {r["model"]: r.get("note", "") for r in table}
    for name in ("biexp_uptake", "biexp", "triexp"):
        assert "not eligible" in notes[name]
    assert sum(r["selected"] for r in table) == 1
    with pytest.raises(InputError, match="3 time point"):
        select_model(T4[:3], y[:3], T_LU)


@pytest.mark.parametrize("truth", ["biexp_uptake", "mono"])
def test_aicc_selects_true_model_in_most_trials(truth):
    p = TRUE[truth][0]
    y0 = get_model(truth, T_LU).evaluate(T6, p)
    wins = 0
    for seed in range(50):
        y = y0 * (1 + 0.05 * np.random.default_rng(2000 + seed).standard_normal(T6.size))
        best, table = select_model(T6, y, T_LU)
        wins += best.model == truth
        assert abs(sum(r["akaike_weight"] for r in table) - 1.0) < 1e-9
    assert wins >= 40


def test_fit_errors_are_clear():
    p, _ = TRUE["mono"]
    y = get_model("mono", T_LU).evaluate(T4, p)
    with pytest.raises(InputError, match=r"'biexp'.*4 parameters.*2 time point"):
        fit_tac(T4[:2], y[:2], "biexp", T_LU)
    with pytest.raises(InputError, match="negative time"):
        fit_tac(np.array([-1.0, 2.0, 3.0]), y[:3], "mono", T_LU)
    with pytest.raises(InputError, match="NaN"):
        fit_tac(T4, np.array([1.0, np.nan, 1.0, 1.0]), "mono", T_LU)
    with pytest.raises(InputError, match="4 times but 3"):
        fit_tac(T4, y[:3], "mono", T_LU)
    with pytest.raises(InputError, match="no positive"):
        fit_tac(T4, np.zeros(4), "mono", T_LU)
    with pytest.raises(InputError, match="unknown kinetic model"):
        fit_tac(T4, y, "gamma", T_LU)
    with pytest.raises(InputError, match="half-life"):
        fit_tac(T4, y, "mono", -5.0)
    with pytest.raises(InputError, match="sigma"):
        fit_tac(T4, y, "mono", T_LU, sigma=np.zeros(4))


# ----------------------------------------------------------------------------- voxel level
def test_voxel_mono_equals_organ_fit_on_uniform_organ():
    # organ curve that is not mono-exponential, so that the fit is a compromise
    p = np.array([4e8, lam(50.0), lam(6.0) - lam(50.0)])
    organ = get_model("biexp_uptake", T_LU).evaluate(T4, p)
    n_vox = 60
    vox = np.repeat((organ / n_vox)[:, None], n_vox, axis=1).reshape(4, 3, 4, 5)
    vf = fit_voxels(T4, vox, T_LU, "mono")
    assert np.all(vf.model_used == 1)
    f = fit_tac(T4, organ, "mono", T_LU)
    assert vf.tia_bq_s.sum() == pytest.approx(f.tia_bq_s, rel=1e-6)
    assert f.tia_bq_s != pytest.approx(get_model("biexp_uptake", T_LU).integral_0_inf(p), rel=1e-3)


def test_voxel_fallbacks_and_codes():
    t = T4
    a = np.zeros((4, 5))
    a[:, 0] = 1e5 * np.exp(-lam(40.0) * t)  # mono
    a[:, 1] = 0.0  # nothing
    a[:, 2] = [1e5, 1.2e5, 1.1e5, 1.05e5]  # slower than physical decay
    a[:, 3] = [1e5, 5e4, -10.0, 2e3]  # a non-positive point
    a[:, 4] = 1e5 * np.exp(-lam(100.0) * t)
    vf = fit_voxels(t, a, T_LU, "mono")
    assert vf.model_used.tolist() == [1, 0, 2, 3, 1]
    tr = Trapezoid(T_LU).integral(t, a)
    assert vf.tia_bq_s[0] == pytest.approx(1e5 / lam(40.0), rel=1e-9)
    assert vf.tia_bq_s[1] == 0.0
    assert vf.tia_bq_s[2] == pytest.approx(tr[2]) and vf.tia_bq_s[3] == pytest.approx(tr[3])
    assert vf.tia_bq_s[4] == pytest.approx(1e5 / lam(100.0), rel=1e-9)
    assert vf.counts()[VOXEL_CODES[1]] == 2
    assert np.isnan(vf.r2[1]) and vf.r2[0] == pytest.approx(1.0)
    vt = fit_voxels(t, a, T_LU, "trapezoid", first_segment="constant")
    np.testing.assert_allclose(vt.tia_bq_s[[0, 2, 3, 4]], Trapezoid(T_LU, "constant").integral(t, a)[[0, 2, 3, 4]])
    with pytest.raises(InputError, match="strictly increasing"):
        fit_voxels(t[::-1], a, T_LU)
    with pytest.raises(InputError, match="NaN"):
        fit_voxels(t, np.where(a == 0, np.nan, a), T_LU)
    with pytest.raises(InputError, match="needs at least 4"):
        fit_voxels(t[:3], a[:3], T_LU, "biexp")


def test_voxel_biexp_uptake_recovers_noise_free_tia():
    rng = np.random.default_rng(5)
    n = 200
    wash = lam(rng.uniform(30.0, 120.0, n))
    up = lam(rng.uniform(1.0, 6.0, n))
    amp = rng.uniform(1e4, 1e6, n)
    p = np.stack([amp, wash, up - wash], axis=1)
    model = get_model("biexp_uptake", T_LU)
    a = model.evaluate(T6, p).T  # (n_t, n)
    vf = fit_voxels(T6, a, T_LU, "biexp_uptake")
    truth = model.integral_0_inf(p)
    assert np.mean(vf.model_used == 5) >= 0.95
    ok = vf.model_used == 5
    assert np.median(np.abs(vf.tia_bq_s[ok] / truth[ok] - 1)) < 1e-4
    assert np.max(np.abs(vf.tia_bq_s / truth - 1)) < 0.05


def test_voxel_fit_of_a_full_volume():
    rng = np.random.default_rng(3)
    shape = (250, 128, 128)
    a0 = rng.uniform(1e3, 1e5, shape).astype(np.float32)
    k = (LN2 / rng.uniform(20 * H, 150 * H, shape)).astype(np.float32)
    a = (a0[None] * np.exp(-k[None] * T4[:, None, None, None].astype(np.float32))).astype(np.float32)
    a[:, :20] = 0.0  # some empty voxels
    vf = fit_voxels(T4, a, T_LU, "mono")  # (its speed is a benchmark's business, not a test's)
    assert vf.tia_bq_s.shape == shape
    sel = vf.model_used[20:] == 1
    assert sel.mean() > 0.999
    ratio = vf.tia_bq_s[20:][sel] / (a0[20:][sel] / k[20:][sel])
    assert np.max(np.abs(ratio - 1)) < 1e-4  # float32 input


# ----------------------------------------------------------------------------- dynamic frames
def _frames(first_start_s):
    durs = [30.0] * 4 + [120.0] * 4 + [600.0] * 5
    starts = first_start_s + np.concatenate([[0.0], np.cumsum(durs)[:-1]])
    starts[8:] += 60.0  # a one-minute gap after the 8th frame
    return starts, np.array(durs)


def test_dynamic_integral_matches_analytic_curve():
    t_f18 = 109.77 * 60.0
    # uptake (3 min), washout (200 min) and two fast blood-like terms, gone by the last frames
    curve = TACModel((2e7, -2e7, 5e6, 1e6), (200 * 60.0, 3 * 60.0, 1.0 * 60, 4 * 60.0), t_f18)
    starts, durs = _frames(60.0)
    avg = np.array([curve.integral_bq_s(s, s + d) / d for s, d in zip(starts, durs)])
    end = starts[-1] + durs[-1]
    res = integrate_dynamic(starts, durs, avg, t_f18, tail="mono")
    assert float(res.acquired) == pytest.approx(curve.integral_bq_s(0.0, end), rel=0.01)
    assert float(res.total) == pytest.approx(curve.tia_bq_s(), rel=0.01)
    # the physical tail ignores biological clearance: larger, and exact without clearance
    phys = integrate_dynamic(starts, durs, avg, t_f18)
    assert float(phys.tail) > float(res.tail)
    retained = TACModel((2e7, -2e7), (math.inf, 3 * 60.0), t_f18)
    avg2 = np.array([retained.integral_bq_s(s, s + d) / d for s, d in zip(starts, durs)])
    r2 = integrate_dynamic(starts, durs, avg2, t_f18)
    assert float(r2.total) == pytest.approx(retained.tia_bq_s(), rel=0.01)
    assert float(r2.frames) == pytest.approx(sum(avg2 * durs), rel=1e-12)
    # decay-corrected input (to each frame start, DICOM-style decay factor) gives the same result
    lam_p = LN2 / t_f18
    corr = avg * lam_p * durs / -np.expm1(-lam_p * durs)
    rc = integrate_dynamic(starts, durs, corr, t_f18, decay_corrected_to_s=starts, tail="mono")
    assert float(rc.total) == pytest.approx(float(res.total), rel=1e-9)
    corr0 = avg * lam_p * durs * np.exp(lam_p * starts) / -np.expm1(-lam_p * durs)
    r0 = integrate_dynamic(starts, durs, corr0, t_f18, decay_corrected_to_s=0.0, tail="mono")
    assert float(r0.total) == pytest.approx(float(res.total), rel=1e-9)
    # voxel arrays
    vox = np.stack([avg, avg2], axis=1)[:, :, None] * np.array([1.0, 2.0])
    rv = integrate_dynamic(starts, durs, vox, t_f18)
    assert rv.total.shape == (2, 2)
    assert rv.total[1, 1] == pytest.approx(2 * float(r2.total))


def test_dynamic_integral_errors():
    starts, durs = _frames(0.0)
    a = np.ones(starts.size)
    with pytest.raises(InputError, match="overlap"):
        integrate_dynamic(starts[::-1], durs, a, 6586.2)
    with pytest.raises(InputError, match="duration"):
        integrate_dynamic(starts, -durs, a, 6586.2)
    with pytest.raises(InputError, match="do not match"):
        integrate_dynamic(starts, durs, a[:-1], 6586.2)
    with pytest.raises(InputError, match="tail"):
        integrate_dynamic(starts, durs, a, 6586.2, tail="linear")


# ----------------------------------------------------------------------------- maps
def _frame_grids(kind=Kind.ACTIVITY, spacing=(4.0, 4.0, 4.0)):
    rng = np.random.default_rng(7)
    k = lam(rng.uniform(30, 100, (4, 5, 6)))
    a0 = rng.uniform(1e3, 1e5, (4, 5, 6))
    vol = np.prod(spacing) / 1000.0
    out = []
    for t in T4:
        arr = a0 * np.exp(-k * t)
        out.append(Grid(arr / vol if kind is Kind.ACTIVITY_CONCENTRATION else arr, spacing, kind=kind))
    return out, a0 / k


def test_tia_map_mono_and_concentration_input():
    frames, truth = _frame_grids()
    g, rep = tia_map(frames, T4, T_LU)
    assert g.kind is Kind.TIA and g.unit == "Bq s"
    np.testing.assert_allclose(g.array, truth, rtol=1e-8)
    assert rep["method_used"] == "mono"
    conc, _ = _frame_grids(Kind.ACTIVITY_CONCENTRATION)
    g2, _ = tia_map(conc, list(T4), T_LU, "auto")
    np.testing.assert_allclose(g2.array, truth, rtol=1e-8)
    gt, rep_t = tia_map(frames, T4, T_LU, "trapezoid")
    assert np.all(gt.array > g.array)  # physical tail: an upper bound for clearing voxels
    assert VOXEL_CODES[4] in rep_t["voxel_models"]


def test_tia_map_single_time_point_methods():
    frames, _ = _frame_grids()
    g, rep = tia_map(frames[2:3], T4[2:3], T_LU, "auto")
    assert rep["method_used"] == "hanscheid"
    np.testing.assert_allclose(g.array, frames[2].array * 2 * T4[2] / LN2)
    g2, _ = tia_map(frames[2:3], T4[2:3], T_LU, "stp", effective_half_life_s=60 * H)
    np.testing.assert_allclose(g2.array, frames[2].array * np.exp(lam(60.0) * T4[2]) / lam(60.0))
    with pytest.raises(InputError, match="exactly one"):
        tia_map(frames, T4, T_LU, "hanscheid")
    with pytest.raises(InputError, match="effective_half_life_s"):
        tia_map(frames[:1], T4[:1], T_LU, "stp")


def test_tia_map_input_errors():
    frames, _ = _frame_grids()
    with pytest.raises(InputError, match="strictly increasing"):
        tia_map(frames, T4[[0, 2, 1, 3]], T_LU)
    with pytest.raises(InputError, match="strictly increasing"):
        tia_map(frames, [T4[0], T4[0], T4[2], T4[3]], T_LU)
    with pytest.raises(InputError, match="negative"):
        tia_map(frames, [-1.0, T4[1], T4[2], T4[3]], T_LU)
    with pytest.raises(InputError, match="NaN"):
        tia_map(frames, [np.nan, T4[1], T4[2], T4[3]], T_LU)
    with pytest.raises(InputError, match="4 frame"):
        tia_map(frames, T4[:3], T_LU)
    bad = frames[1].with_array(np.where(frames[1].array > 5e4, np.nan, frames[1].array))
    with pytest.raises(InputError, match="frame 1.*NaN"):
        tia_map([frames[0], bad, frames[2], frames[3]], T4, T_LU)
    moved = Grid(frames[1].array, frames[1].spacing_zyx_mm, (5.0, 0.0, 0.0), kind=Kind.ACTIVITY)
    with pytest.raises(GeometryError):
        tia_map([frames[0], moved, frames[2], frames[3]], T4, T_LU)
    counts = frames[1].with_array(frames[1].array, Kind.COUNTS)
    with pytest.raises(InputError, match="counts"):
        tia_map([frames[0], counts, frames[2], frames[3]], T4, T_LU)
    with pytest.raises(InputError, match="unknown TIA method"):
        tia_map(frames, T4, T_LU, "magic")
    with pytest.raises(InputError, match="label map"):
        tia_map(frames, T4, T_LU, "hybrid")
    with pytest.raises(InputError):
        tia_map([], [], T_LU)


@pytest.fixture(scope="module")
def lu_patient():
    from persodose.phantoms import make_virtual_patient

    return make_virtual_patient("lu177-dotatate", voxel_mm=8)


def test_virtual_patient_organ_tia_from_true_activities(lu_patient):
    vp = lu_patient
    times = [f.mid_time_s for f in vp.frames]
    res = organ_tia(vp.truth_activity, times, vp.labels, vp.label_names, vp.half_life_s)
    for organ in ("kidney_left", "kidney_right", "liver", "spleen"):
        r = res[organ]
        truth = vp.organ_tac[organ].tia_bq_s()
        assert r.tia_bq_s == pytest.approx(truth, rel=0.05), organ
        assert r.chosen_model == "mono"  # 4 points: only the mono-exponential is eligible
        assert r.activities_bq[1] == pytest.approx(float(vp.organ_tac[organ].activity_bq(times[1])), rel=1e-5)
        assert r.to_dict()["fits"]
        assert r.quality is not None and r.to_dict()["quality"]["verdict"] == r.quality.verdict
        if organ.startswith("kidney"):  # 4 points on an uptake-washout curve of T_eff 55 h: nothing to flag
            assert r.quality.verdict == "good", r.quality.summary()
    # true bladder activity: most of its TIA is before the first image (filling and voiding in hours)
    assert res["bladder"].quality.verdict == "unreliable"
    assert res["bladder"].quality.extrapolated_fraction > 0.5
    # hybrid: the voxel map rescaled to the organ fits inside each organ
    g, rep = tia_map(vp.truth_activity, times, vp.half_life_s, "hybrid", vp.labels, names=vp.label_names)
    lab = vp.labels.array
    for organ in ("liver", "kidney_left"):
        v = {n: k for k, n in vp.label_names.items()}[organ]
        assert g.array[lab == v].sum() == pytest.approx(res[organ].tia_bq_s, rel=1e-9)
        assert rep["label_tia_bq_s"][organ] == pytest.approx(res[organ].tia_bq_s, rel=1e-9)
    assert np.isfinite(rep["hybrid_factors"]["liver"])


def test_voxel_biexp_sum_recovers_noise_free_tia():
    rng = np.random.default_rng(2)
    n = 100
    slow, fast = lam(rng.uniform(50, 150, n)), lam(rng.uniform(1, 6, n))
    p = np.stack([rng.uniform(1e4, 1e5, n), slow, rng.uniform(1e4, 1e5, n), fast - slow], axis=1)
    model = get_model("biexp", T_LU)
    vf = fit_voxels(T6, model.evaluate(T6, p).T, T_LU, "biexp")
    assert np.all(vf.model_used == 6)
    np.testing.assert_allclose(vf.tia_bq_s, model.integral_0_inf(p), rtol=1e-6)
