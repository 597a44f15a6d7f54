import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from persodose.errors import GeometryError, InputError
from persodose.grid import AIR_DENSITY_G_CM3, Grid, Kind, make_grid


def rotation_z(deg):
    t = np.deg2rad(deg)
    return np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1.0]])


def test_default_units_and_interpolation():
    assert Kind.DOSE.default_unit == "Gy"
    assert Kind.TIA.default_unit == "Bq s"
    assert Kind.ACTIVITY.interpolation == "sum"
    assert Kind.COUNTS.interpolation == "sum"
    assert Kind.LABELS.interpolation == "nearest"
    assert Kind.ACTIVITY_CONCENTRATION.interpolation == "linear"
    g = Grid(np.zeros((2, 3, 4)), kind=Kind.DENSITY)
    assert g.unit == "g/cm3" and g.shape == (2, 3, 4)


def test_bad_geometry_rejected():
    with pytest.raises(GeometryError):
        Grid(np.zeros((3, 3)))
    with pytest.raises(GeometryError):
        Grid(np.zeros((3, 3, 3)), spacing_zyx_mm=(1, 0, 1))
    with pytest.raises(GeometryError):
        Grid(np.zeros((3, 3, 3)), direction_xyz=np.ones((3, 3)))
    with pytest.raises(GeometryError):
        Grid(np.zeros((3, 3, 3))).with_array(np.zeros((3, 3, 4)))


def test_index_physical_round_trip_with_rotation():
    g = Grid(np.zeros((5, 6, 7)), (3.0, 2.0, 1.5), (10.0, -20.0, 30.0), rotation_z(30), Kind.CT)
    idx = np.array([[1.0, 2.0, 3.0], [4.5, 0.0, 6.0]])
    p = g.index_to_physical(idx)
    np.testing.assert_allclose(g.physical_to_index(p), idx, atol=1e-9)
    # voxel (0,0,1) is one x-step of 1.5 mm along the first direction column
    np.testing.assert_allclose(g.index_to_physical([0, 0, 1]) - np.array(g.origin_xyz_mm),
                               1.5 * rotation_z(30)[:, 0], atol=1e-12)


def test_sitk_round_trip_keeps_geometry():
    g = Grid(np.arange(60, dtype=np.float32).reshape(3, 4, 5), (2.5, 1.0, 0.8), (1, 2, 3), rotation_z(90), Kind.DOSE)
    img = g.to_sitk()
    assert img.GetSpacing() == (0.8, 1.0, 2.5)
    back = Grid.from_sitk(img, Kind.DOSE)
    assert back.same_geometry(g)
    np.testing.assert_array_equal(back.array, g.array)
    # affine agrees with SimpleITK's own index -> point mapping
    ijk = (3, 1, 2)
    expected = img.TransformIndexToPhysicalPoint(ijk)
    np.testing.assert_allclose((g.affine_lps @ np.array([*ijk, 1.0]))[:3], expected, atol=1e-9)


def test_activity_concentration_conversion():
    g = Grid(np.full((2, 2, 2), 1000.0), (2.0, 5.0, 10.0), kind=Kind.ACTIVITY_CONCENTRATION)
    a = g.to_activity()
    assert a.kind is Kind.ACTIVITY
    np.testing.assert_allclose(a.array, 1000.0 * 0.1)  # 0.1 mL voxels
    np.testing.assert_allclose(a.to_concentration().array, g.array)
    with pytest.raises(InputError):
        Grid(np.zeros((2, 2, 2)), kind=Kind.DOSE).to_activity()


def test_linear_resampling_of_constant_and_outside_value():
    src = make_grid((10, 10, 10), (2, 2, 2), kind=Kind.DENSITY, fill=1.04)
    ref = make_grid((10, 10, 10), (3, 3, 3), kind=Kind.DENSITY)
    out = src.resample_to(ref)
    centre = out.array[3:7, 3:7, 3:7]
    np.testing.assert_allclose(centre, 1.04, rtol=1e-6)
    assert np.isclose(out.array[0, 0, 0], AIR_DENSITY_G_CM3)  # outside the source: air
    assert out.kind is Kind.DENSITY and out.same_geometry(ref)


def test_nearest_keeps_label_values():
    lab = np.zeros((8, 8, 8), np.uint16)
    lab[2:6, 2:6, 2:6] = 7
    lab[0, 0, 0] = 3
    src = Grid(lab, (2, 2, 2), kind=Kind.LABELS)
    ref = Grid(np.zeros((5, 5, 5)), (3.3, 3.3, 3.3), (0.7, 0.7, 0.7), kind=Kind.LABELS)
    out = src.resample_to(ref)
    assert set(np.unique(out.array)) <= {0, 3, 7}
    assert out.array.dtype == np.uint16


@settings(max_examples=25, deadline=None)
@given(
    src_sp=st.tuples(*[st.floats(1.0, 6.0)] * 3),
    ref_sp=st.tuples(*[st.floats(1.0, 6.0)] * 3),
    angle=st.one_of(st.just(0.0), st.floats(-45, 45)),
    seed=st.integers(0, 1000),
)
def test_sum_preserving_resampling_keeps_total(src_sp, ref_sp, angle, seed):
    rng = np.random.default_rng(seed)
    arr = np.zeros((8, 9, 10))
    arr[2:6, 2:7, 2:8] = rng.gamma(2.0, 50.0, size=(4, 5, 6))  # activity well inside
    src = Grid(arr, src_sp, (0.0, 0.0, 0.0), rotation_z(angle), Kind.ACTIVITY)
    # a reference that covers the source completely
    ext = max(np.array(arr.shape) * np.array(src_sp)) * 1.6
    n = [int(np.ceil(2 * ext / s)) for s in ref_sp]
    ref = Grid(np.zeros(n), ref_sp, (-ext, -ext, -ext), np.eye(3), Kind.ACTIVITY)
    out = src.resample_to(ref)
    np.testing.assert_allclose(out.total(), src.total(), rtol=1e-9)
    assert out.array.min() >= 0


def test_sum_preserving_block_downsampling_is_exact():
    rng = np.random.default_rng(1)
    arr = rng.poisson(5.0, size=(8, 8, 8)).astype(float)
    src = Grid(arr, (2, 2, 2), (1.0, 1.0, 1.0), kind=Kind.COUNTS)
    ref = Grid(np.zeros((4, 4, 4)), (4, 4, 4), (2.0, 2.0, 2.0), kind=Kind.COUNTS)
    out = src.resample_to(ref)
    expected = arr.reshape(4, 2, 4, 2, 4, 2).sum(axis=(1, 3, 5))
    np.testing.assert_allclose(out.array, expected)


def test_sum_preserving_drops_only_what_leaves_the_fov():
    arr = np.zeros((4, 4, 4))
    arr[0, 0, 0] = 10.0  # will fall outside
    arr[2, 2, 2] = 5.0
    src = Grid(arr, (1, 1, 1), (0, 0, 0), kind=Kind.ACTIVITY)
    ref = Grid(np.zeros((2, 2, 2)), (1, 1, 1), (2, 2, 2), kind=Kind.ACTIVITY)
    assert src.resample_to(ref).total() == pytest.approx(5.0)


def test_sum_preserving_uniform_stays_uniform_without_aliasing():
    # 4.8 mm SPECT voxels onto a 4 mm CT grid: a uniform concentration must stay uniform
    conc = 1000.0  # Bq/mL
    src = Grid(np.full((20, 20, 20), conc * 4.8**3 / 1000.0), (4.8, 4.8, 4.8), (0.0, 0.0, 0.0), kind=Kind.ACTIVITY)
    ref = Grid(np.zeros((30, 30, 30)), (4.0, 4.0, 4.0), (-10.0, -10.0, -10.0), kind=Kind.ACTIVITY)
    out = src.resample_to(ref)
    interior = out.array[5:22, 5:22, 5:22]
    np.testing.assert_allclose(interior, conc * 4.0**3 / 1000.0, rtol=1e-9)
    assert out.total() == pytest.approx(src.total(), rel=1e-12)


def test_sum_preserving_overlap_matches_supersampling_on_average():
    rng = np.random.default_rng(5)
    arr = rng.gamma(2.0, 10.0, size=(6, 7, 8))
    src = Grid(arr, (3.0, 2.5, 2.0), (1.0, 2.0, 3.0), kind=Kind.ACTIVITY)
    ref = Grid(np.zeros((12, 12, 12)), (2.2, 2.2, 2.2), (-5.0, -5.0, -5.0), kind=Kind.ACTIVITY)
    from persodose.grid import resample_sum

    exact = resample_sum(src, ref)
    # the same geometry rotated by a negligible angle takes the supersampling path
    tilted = Grid(arr, src.spacing_zyx_mm, src.origin_xyz_mm, rotation_z(1e-4), Kind.ACTIVITY)
    approx = resample_sum(tilted, ref, max_subdivisions=8)
    assert exact.sum() == pytest.approx(approx.sum(), rel=1e-9)
    # centres of mass agree within a fraction of a voxel
    idx = np.indices(exact.shape).reshape(3, -1)
    com_e = (idx * exact.ravel()).sum(axis=1) / exact.sum()
    com_a = (idx * approx.ravel()).sum(axis=1) / approx.sum()
    np.testing.assert_allclose(com_e, com_a, atol=0.1)
