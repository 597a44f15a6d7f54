"""SPECT camera model (persodose.phantoms.spect_camera): CDR, attenuation, counts, calibration."""

from __future__ import annotations

import numpy as np
import pytest

from persodose.errors import InputError
from persodose.grid import Kind, make_grid
from persodose.phantoms.spect_camera import (SPECTCamera, acquire_projections, simulate_spect,
                                             spect_grid_for, spect_to_ct_grid)


@pytest.fixture(scope="module")
def pyt():
    return pytest.importorskip("pytomography", reason="the camera model needs persodose[spect] (PyTomography)")


def _cylinder(n=32, nz=8, v=4.8, radius_mm=60.0, bq=1e5, rho=1.0):
    g = make_grid((nz, n, n), (v, v, v), kind=Kind.ACTIVITY)
    _, yy, xx = np.indices(g.shape)
    c = (n - 1) / 2.0
    cyl = ((yy - c) ** 2 + (xx - c) ** 2) * v * v < radius_mm ** 2
    return g.with_array(np.where(cyl, bq, 0.0)), g.with_array(np.where(cyl, rho, 0.0), Kind.DENSITY)


SMALL = dict(matrix=32, n_views=16, subsets=4, iterations=3, radius_mm=100.0)


def _centre(img, nz=8):
    a = img.array
    return float(a[2:nz - 2, 13:19, 13:19].mean())


@pytest.fixture(scope="module")
def cylinder_recons(pyt):
    act, den = _cylinder()
    out = {}
    for ac in (True, False):
        cam = SPECTCamera(attenuation_correction=ac, **SMALL)
        out[ac] = simulate_spect(act, den, cam, total_counts=3e6, rng=np.random.default_rng(3))
    return out


def test_cdr_fwhm_grows_with_depth_and_follows_the_collimator_formula(pyt):
    """Axial width of a point source's projection in each view against FWHM(d)."""
    n, nz, v, r_mm = 64, 21, 2.4, 120.0
    cam = SPECTCamera(voxel_mm=v, matrix=n, n_views=8, subsets=1, radius_mm=r_mm)
    g = make_grid((nz, n, n), (v, v, v), kind=Kind.ACTIVITY)
    a = np.zeros(g.shape)
    a[nz // 2, n // 2, n // 2 + 25] = 1e6  # 25.5 voxels = 61.2 mm off the axis
    proj, _, _ = acquire_projections(g.with_array(a), g.with_array(np.zeros(g.shape), Kind.DENSITY), cam,
                                     duration_s=100.0, rng=np.random.default_rng(0))
    axial = proj.expected_counts.astype(np.float64).sum(axis=1)  # (views, z)
    z = np.arange(nz) * v
    w = axial / axial.sum(axis=1, keepdims=True)
    mean = (w * z).sum(axis=1)
    fwhm = 2.3548 * np.sqrt((w * (z - mean[:, None]) ** 2).sum(axis=1) - v * v / 12.0)
    off = 25.5 * v
    near, far = cam.cdr_fwhm_mm(r_mm - off), cam.cdr_fwhm_mm(r_mm + off)
    assert fwhm.max() > 1.5 * fwhm.min()
    assert fwhm.min() == pytest.approx(near, rel=0.10)
    assert fwhm.max() == pytest.approx(far, rel=0.10)
    # the formula itself: MEGP at 10 cm about 9-10 mm (GE MEGP system resolution at 10 cm)
    assert 8.5 < cam.cdr_fwhm_mm(100.0) < 10.5


def test_expected_counts_follow_sensitivity_and_counts_are_poisson(pyt):
    act, den = _cylinder(nz=16, rho=0.0, radius_mm=30.0)
    a = act.array.copy()
    a[:6] = 0.0
    a[10:] = 0.0  # activity away from the axial ends (the CDR spreads it out of the field there)
    act = act.with_array(a)
    cam = SPECTCamera(**SMALL)
    proj, _, _ = acquire_projections(act, den, cam, duration_s=50.0, rng=np.random.default_rng(1))
    s_a_t = cam.sensitivity_cps_per_mbq * 1e-6 * act.total() * 50.0  # no attenuation: S A T
    assert proj.expected_counts.sum(dtype=np.float64) == pytest.approx(s_a_t, rel=0.01)
    proj2, _, _ = acquire_projections(act, den, cam, total_counts=2e5, rng=np.random.default_rng(2))
    mu = proj2.expected_counts.astype(np.float64)
    assert mu.sum() == pytest.approx(2e5, rel=1e-4)
    assert abs(proj2.counts.sum() - 2e5) < 5 * np.sqrt(2e5)
    hi = mu > 20
    zres = (proj2.counts[hi] - mu[hi]) / np.sqrt(mu[hi])
    assert abs(zres.mean()) < 0.05 and zres.var() == pytest.approx(1.0, abs=0.1)


def test_support_crop_does_not_change_the_projections(pyt):
    """Projecting only the centred square holding the patient is exact."""
    act, den = _cylinder(nz=4, radius_mm=25.0)
    cam = SPECTCamera(matrix=32, n_views=8, subsets=1)
    full_den = den.array.copy()
    full_den[:, 0, 0] = 1e-6  # a trace of matter in a corner: no crop possible
    p_crop, _, _ = acquire_projections(act, den, cam, duration_s=10.0, rng=np.random.default_rng(0))
    p_full, _, _ = acquire_projections(act, den.with_array(full_den), cam, duration_s=10.0,
                                       rng=np.random.default_rng(0))
    assert p_crop.counts.shape[1] < p_full.counts.shape[1] == 32
    lost = 1.0 - p_crop.expected_counts.sum(dtype=np.float64) / p_full.expected_counts.sum(dtype=np.float64)
    assert abs(lost) < 1e-3


def test_uniform_cylinder_recovered_with_attenuation_correction(cylinder_recons):
    assert _centre(cylinder_recons[True]) / 1e5 == pytest.approx(1.0, abs=0.05)


def test_without_attenuation_correction_the_centre_is_low(cylinder_recons):
    assert _centre(cylinder_recons[False]) / 1e5 < 0.85


def test_blur_model_is_calibrated_like_the_camera(cylinder_recons):
    act, den = _cylinder()
    img = simulate_spect(act, den, SPECTCamera(model="blur", matrix=32), total_counts=3e6,
                         rng=np.random.default_rng(3))
    assert img.kind is Kind.ACTIVITY and img.shape == cylinder_recons[True].shape
    assert _centre(img) / 1e5 == pytest.approx(1.0, abs=0.05)
    assert _centre(img) == pytest.approx(_centre(cylinder_recons[True]), rel=0.07)


def test_same_seed_same_image(pyt):
    act, den = _cylinder(nz=4)
    for cam in (SPECTCamera(model="blur", matrix=32), SPECTCamera(matrix=32, n_views=8, subsets=2, iterations=1)):
        a = simulate_spect(act, den, cam, total_counts=1e5, rng=np.random.default_rng(7)).array
        b = simulate_spect(act, den, cam, total_counts=1e5, rng=np.random.default_rng(7)).array
        c = simulate_spect(act, den, cam, total_counts=1e5, rng=np.random.default_rng(8)).array
        assert np.array_equal(a, b)
        assert not np.array_equal(a, c)


def test_spect_grid_and_back_to_ct_keep_the_activity():
    ct = make_grid((40, 50, 50), (3.0, 3.0, 3.0), kind=Kind.ACTIVITY)
    sg = spect_grid_for(ct, SPECTCamera(matrix=40), axial_range_mm=(-20.0, 19.0))
    assert sg.shape == (9, 40, 40) and sg.spacing_zyx_mm == (4.8, 4.8, 4.8)
    centre = sg.index_to_physical((np.asarray(sg.shape) - 1) / 2.0)
    assert np.allclose(centre, [0.0, 0.0, -0.5])
    rng = np.random.default_rng(0)
    arr = np.zeros(sg.shape)  # activity in a central block, inside the CT's field of view
    arr[2:7, 10:30, 10:30] = rng.random((5, 20, 20))
    spect = sg.with_array(arr)
    back = spect_to_ct_grid(spect, ct)
    assert back.kind is Kind.ACTIVITY and back.shape == ct.shape
    assert back.total() == pytest.approx(spect.total(), rel=1e-9)


@pytest.mark.parametrize("bad", [dict(model="mc"), dict(collimator="LEHR"), dict(voxel_mm=0.0),
                                 dict(matrix=4), dict(n_views=10, subsets=12), dict(iterations=0),
                                 dict(radius_mm=-1.0), dict(postfilter_fwhm_mm=-2.0),
                                 dict(sensitivity_cps_per_mbq=float("nan")), dict(matrix=32.5)])
def test_bad_settings_raise(bad):
    with pytest.raises(InputError):
        SPECTCamera(**bad)


def test_bad_inputs_raise():
    act, den = _cylinder(nz=4)
    cam = SPECTCamera(model="blur", matrix=32)
    rng = np.random.default_rng(0)
    with pytest.raises(InputError):
        simulate_spect(act, den, cam, rng=rng)  # neither duration nor counts
    with pytest.raises(InputError):
        simulate_spect(act, den, cam, duration_s=10.0, total_counts=1e6, rng=rng)
    with pytest.raises(InputError):
        simulate_spect(act, den, cam, duration_s=-1.0, rng=rng)
    with pytest.raises(InputError):
        simulate_spect(act.with_array(-act.array), den, cam, duration_s=10.0, rng=rng)
    with pytest.raises(InputError):
        simulate_spect(act.to_concentration(), den, cam, duration_s=10.0, rng=rng)
    with pytest.raises(InputError):
        simulate_spect(act, den, cam, duration_s=10.0, rng=rng, axial_range_mm=(10.0, 0.0))
    small = make_grid((4, 16, 16), (4.8, 4.8, 4.8), kind=Kind.DENSITY)
    with pytest.raises(InputError):
        simulate_spect(act, small, cam, duration_s=10.0, rng=rng)
