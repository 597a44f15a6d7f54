"""CT-to-CT registration (SimpleITK) and resampling of every kind of grid through it."""

import math

import numpy as np
import pytest

sitk = pytest.importorskip("SimpleITK")

from persodose.errors import InputError  # noqa: E402
from persodose.grid import Grid, Kind  # noqa: E402
from persodose.kinetics.register import (affine_of, apply_transform, register_ct,  # noqa: E402
                                         rotation_angle_deg)

SHIFT_MM = (12.0, 8.0, -16.0)
ANGLE_DEG = 3.0


@pytest.fixture(scope="module")
def patient():
    from persodose.phantoms import make_virtual_patient

    return make_virtual_patient("lu177-dotatate", voxel_mm=8)


def _known_transform(grid: Grid):
    """3 degrees about the x axis through the volume centre, then a translation (12, 8, -16) mm."""
    s = sitk.Euler3DTransform()
    centre = np.asarray(grid.origin_xyz_mm) + (np.asarray(grid.shape[::-1]) - 1) * np.asarray(grid.spacing_xyz_mm) / 2
    s.SetCenter(tuple(float(c) for c in centre))
    s.SetRotation(math.radians(ANGLE_DEG), 0.0, 0.0)
    s.SetTranslation(SHIFT_MM)
    return s


@pytest.fixture(scope="module")
def moved(patient):
    """A moving CT with moving(y) = fixed(S(y)): the registration must find T = S^-1."""
    ct = patient.ct
    s = _known_transform(ct)
    img = sitk.Cast(ct.to_sitk(), sitk.sitkFloat32)
    arr = sitk.GetArrayFromImage(sitk.Resample(img, img, s, sitk.sitkLinear, -1000.0))
    return ct.with_array(arr), s


@pytest.fixture(scope="module")
def rigid(patient, moved):
    return register_ct(patient.ct, moved[0], "rigid", seed=0)


def _body_points(patient):
    idx = np.argwhere(patient.labels.array > 0)[::7].astype(float)
    return patient.ct.index_to_physical(idx)


def test_rigid_registration_recovers_known_motion(patient, moved, rigid):
    _, s = moved
    m, b = affine_of(rigid)
    ms, bs = affine_of(s.GetInverse())
    pts = _body_points(patient)
    err = np.linalg.norm(pts @ m.T + b - (pts @ ms.T + bs), axis=1)
    assert err.max() < 1.5
    assert rotation_angle_deg(m @ ms.T) < 0.5
    assert rotation_angle_deg(m) == pytest.approx(ANGLE_DEG, abs=0.5)
    # the unregistered images are far apart: the check can fail
    assert np.linalg.norm(bs) > 15.0


def test_registration_is_deterministic(patient, moved, rigid):
    again = register_ct(patient.ct, moved[0], "rigid", seed=0)
    assert again.GetParameters() == rigid.GetParameters()
    assert again.GetFixedParameters() == rigid.GetFixedParameters()


def test_affine_registration(patient, moved):
    _, s = moved
    aff = register_ct(patient.ct, moved[0], "affine", seed=0)
    m, b = affine_of(aff)
    ms, bs = affine_of(s.GetInverse())
    pts = _body_points(patient)
    err = np.linalg.norm(pts @ m.T + b - (pts @ ms.T + bs), axis=1)
    assert np.percentile(err, 95) < 1.5


def test_apply_transform_brings_ct_back(patient, moved, rigid):
    fixed = patient.ct
    back = apply_transform(moved[0], rigid, fixed)
    body = patient.labels.array > 0
    before = np.abs(moved[0].array - fixed.array)[body].mean()
    after = np.abs(back.array - fixed.array)[body].mean()
    assert back.kind is Kind.CT and back.same_geometry(fixed)
    assert after < 0.5 * before
    # outside the moving field of view CT is air
    far = sitk.TranslationTransform(3, (0.0, 0.0, 5000.0))
    assert np.all(apply_transform(fixed, far, fixed).array == -1000.0)


def test_apply_transform_kinds(patient):
    s = _known_transform(patient.ct)
    full = patient.truth_activity[1]
    # keep all the activity well inside the field of view (the phantom's body reaches the FOV edges)
    inner = np.zeros_like(full.array)
    inner[6:-6, 6:-6, 6:-6] = full.array[6:-6, 6:-6, 6:-6]
    act = full.with_array(inner)
    out = apply_transform(act, s, patient.ct)
    assert out.kind is Kind.ACTIVITY
    m, b = affine_of(s)
    nz = np.argwhere(act.array != 0)
    pts = act.index_to_physical(nz.astype(float))
    idx = patient.ct.physical_to_index((pts - b) @ np.linalg.inv(m).T)
    inside = np.all((idx > -0.5) & (idx < np.asarray(patient.ct.shape) - 0.5), axis=1)
    expected = act.array[tuple(nz[inside].T)].sum(dtype=np.float64)
    assert expected == pytest.approx(act.total(), rel=1e-12)  # everything stays inside
    assert out.total() == pytest.approx(act.total(), rel=1e-9)
    # activity moved partly out of the field of view is lost, never created
    cut = apply_transform(full, s, patient.ct)
    assert 0.9 * full.total() < cut.total() < full.total()
    # pure translation inside the FOV: exact sum preservation by overlap weights
    tr = sitk.TranslationTransform(3, (4.0, -3.0, 2.0))
    assert apply_transform(act, tr, patient.ct).total() == pytest.approx(act.total(), rel=1e-9)
    # labels: nearest neighbour, no new values
    lab = apply_transform(patient.labels, s, patient.labels)
    assert lab.kind is Kind.LABELS
    assert set(np.unique(lab.array)) <= set(np.unique(patient.labels.array))
    # a non-rigid affine: concentration resampled linearly, total rescaled to what is inside
    aff = sitk.AffineTransform(3)
    aff.SetMatrix((1.03, 0, 0, 0, 0.98, 0, 0, 0, 1.0))
    aff.SetCenter(s.GetCenter())
    out_aff = apply_transform(act, aff, patient.ct)
    ma, ba = affine_of(aff)
    idx = patient.ct.physical_to_index((pts - ba) @ np.linalg.inv(ma).T)
    inside = np.all((idx > -0.5) & (idx < np.asarray(patient.ct.shape) - 0.5), axis=1)
    assert out_aff.total() == pytest.approx(act.array[tuple(nz[inside].T)].sum(dtype=np.float64), rel=1e-9)


def test_registration_errors(patient):
    ct = patient.ct
    with pytest.raises(InputError, match="rigid"):
        register_ct(ct, ct, "bspline")
    with pytest.raises(InputError, match="expects a CT"):
        register_ct(ct, patient.truth_activity[0])
    with pytest.raises(InputError, match="seed"):
        register_ct(ct, ct, seed=-1)
    bs = sitk.BSplineTransform(3)
    bs.SetTransformDomainOrigin(ct.origin_xyz_mm)
    bs.SetTransformDomainMeshSize((2, 2, 2))
    bs.SetTransformDomainPhysicalDimensions(tuple(float(n * 8.0) for n in ct.shape[::-1]))
    bs.SetParameters(tuple(np.random.default_rng(0).uniform(-20.0, 20.0, len(bs.GetParameters()))))
    with pytest.raises(InputError, match="affine"):
        apply_transform(ct, bs, ct)
