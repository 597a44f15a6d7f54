"""Recovery-coefficient partial-volume correction (persodose.dose.recovery)."""

from __future__ import annotations

import numpy as np
import pytest

from persodose.dose.recovery import (RecoveryCurve, calibrate_recovery, corrected_organ_means, measure_sphere_rc,
                                     rc_model, recovery_corrected)
from persodose.errors import InputError
from persodose.grid import Kind, make_grid
from persodose.phantoms.spect_camera import SPECTCamera

BLUR = SPECTCamera(model="blur", matrix=64)
VOLS = (0.5, 1, 2, 4, 8, 16, 32, 64, 128, 256)


@pytest.fixture(scope="module")
def blur_curve():
    return calibrate_recovery(BLUR, volumes_ml=VOLS, counts=2e7, seed=0)


def test_rc_rises_with_volume_towards_one(blur_curve):
    rc = np.asarray(blur_curve.rc_measured)
    assert rc[0] < 0.5 < rc[-1]
    assert np.all(np.diff(rc) > -0.03)  # monotone within noise
    # 256 mL (r = 39 mm) with 13 mm FWHM: spill-out ~ 3 sigma / (sqrt(2 pi) r) ~ 17 %
    assert 0.8 < rc[-1] < 1.0 and 0.85 < blur_curve.a < 1.15
    fit = blur_curve(np.asarray(VOLS))
    assert np.max(np.abs(fit - rc)) < 0.06  # the sigmoid describes the calibration


def test_4ml_sphere_corrected_within_10_percent_blur(blur_curve):
    rc = measure_sphere_rc(BLUR, 4.0, counts=2e7, rng=np.random.default_rng(11))
    assert rc < 0.85  # there is something to correct
    corrected = recovery_corrected({"s": rc}, {"s": 4.0}, blur_curve)["s"]
    assert corrected == pytest.approx(1.0, abs=0.10)


@pytest.mark.slow
def test_camera_model_curve_and_4ml_correction():
    pytest.importorskip("pytomography", reason="the camera model needs persodose[spect]")
    cam = SPECTCamera(matrix=32, n_views=12, subsets=3, iterations=4, radius_mm=120.0)
    small = dict(cyl_radius_mm=60.0, cyl_length_mm=80.0)
    curve = calibrate_recovery(cam, volumes_ml=(1, 2, 8, 64), counts=1e7, seed=1, **small)
    rc = np.asarray(curve.rc_measured)
    assert rc[0] < rc[1] < rc[-1] and rc[-1] > 0.7
    meas = measure_sphere_rc(cam, 4.0, counts=1e7, rng=np.random.default_rng(5), **small)
    assert meas < 0.85
    assert recovery_corrected({"s": meas}, {"s": 4.0}, curve)["s"] == pytest.approx(1.0, abs=0.10)


def test_json_round_trip(tmp_path, blur_curve):
    p = blur_curve.to_json(tmp_path / "rc.json")
    back = RecoveryCurve.from_json(p)
    assert back.a == blur_curve.a and back.b_ml == blur_curve.b_ml and back.c == blur_curve.c
    assert back.settings["camera"]["model"] == "blur"
    assert np.allclose(back(np.array([1.0, 10.0])), blur_curve(np.array([1.0, 10.0])))
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(InputError):
        RecoveryCurve.from_json(tmp_path / "bad.json")


def test_fit_recovers_known_parameters_and_rejects_too_few_points():
    v = np.array([0.5, 1, 2, 4, 8, 16, 32, 64, 128, 256.0])
    c = RecoveryCurve.fit(v, rc_model(v, 0.95, 6.0, 1.3))
    assert (c.a, c.b_ml, c.c) == pytest.approx((0.95, 6.0, 1.3), rel=1e-3)
    with pytest.raises(InputError):
        RecoveryCurve.fit([1.0, 2.0], [0.3, 0.5])


def test_corrected_organ_means_divide_by_rc():
    curve = RecoveryCurve(1.0, 10.0, 1.0)
    g = make_grid((10, 10, 10), (10.0, 10.0, 10.0), kind=Kind.DOSE_RATE)  # 1 mL voxels
    lab = np.zeros(g.shape, np.int16)
    lab[:2, :5, :2] = 1  # 20 mL
    lab[5:, :, :] = 2  # 500 mL
    dose = g.with_array(np.where(lab == 1, 2.0, np.where(lab == 2, 4.0, 0.0)))
    out = corrected_organ_means(dose, g.with_array(lab, Kind.LABELS), {1: "small", 2: "big", 3: "absent"}, curve)
    assert set(out) == {"small", "big"}
    assert out["small"] == pytest.approx(2.0 / (1.0 / (1.0 + 10.0 / 20.0)))
    assert out["big"] == pytest.approx(4.0 / (1.0 / (1.0 + 10.0 / 500.0)))
    with pytest.raises(InputError):
        recovery_corrected({"x": 1.0}, {}, curve)
