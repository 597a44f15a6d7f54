import numpy as np
import pytest

from persodose.errors import InputError, UnitsError
from persodose.grid import Grid, Kind
from persodose.io.image import parse_unit, read_image, write_image


@pytest.fixture
def dose_grid():
    rng = np.random.default_rng(0)
    return Grid(rng.random((6, 7, 8)).astype(np.float32), (3.0, 2.0, 1.5), (10.0, -20.0, 30.0), np.eye(3), Kind.DOSE)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".mha", ".nrrd"])
def test_round_trip_keeps_values_geometry_kind(tmp_path, dose_grid, suffix):
    path = write_image(dose_grid, tmp_path / f"dose{suffix}")
    back = read_image(path)
    assert back.kind is Kind.DOSE and back.unit == "Gy"
    assert back.same_geometry(dose_grid)
    np.testing.assert_array_equal(back.array, dose_grid.array)


def test_nifti_affine_is_ras(tmp_path, dose_grid):
    import nibabel as nib

    path = write_image(dose_grid, tmp_path / "d.nii.gz")
    aff = nib.load(str(path)).affine
    # LPS origin (10, -20, 30) is RAS (-10, 20, 30)
    np.testing.assert_allclose(aff[:3, 3], [-10.0, 20.0, 30.0])


def test_user_units_are_converted(tmp_path):
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.full((3, 3, 3), 2.5, np.float32))
    sitk.WriteImage(img, str(tmp_path / "plain.nii.gz"))
    with pytest.raises(UnitsError):
        read_image(tmp_path / "plain.nii.gz")  # nobody said what it is
    g = read_image(tmp_path / "plain.nii.gz", unit="MBq/mL")
    assert g.kind is Kind.ACTIVITY_CONCENTRATION
    np.testing.assert_allclose(g.array, 2.5e6)
    assert read_image(tmp_path / "plain.nii.gz", unit="mGy").array[0, 0, 0] == pytest.approx(2.5e-3)
    with pytest.raises(UnitsError):
        parse_unit("furlongs")


def test_kind_mismatch_and_bad_files(tmp_path, dose_grid):
    path = write_image(dose_grid, tmp_path / "dose.nii.gz")
    with pytest.raises(UnitsError):
        read_image(path, kind=Kind.CT)
    with pytest.raises(InputError):
        read_image(tmp_path / "missing.nii.gz")
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not an image")
    with pytest.raises(InputError):
        read_image(bad)
    with pytest.raises(InputError):
        write_image(dose_grid, tmp_path / "dose.txt")


def test_nan_rejected(tmp_path):
    g = Grid(np.array([[[1.0, np.nan]]], np.float32), kind=Kind.DOSE)
    path = write_image(g, tmp_path / "nan.mha")
    with pytest.raises(InputError, match="NaN"):
        read_image(path)


def test_labels_become_integers(tmp_path):
    lab = Grid(np.array([[[0, 1, 2]]], np.float32), kind=Kind.LABELS)
    path = write_image(lab, tmp_path / "lab.nii.gz")
    back = read_image(path)
    assert back.kind is Kind.LABELS and back.array.dtype == np.uint16
    np.testing.assert_array_equal(back.array, [[[0, 1, 2]]])


def test_tagged_unit_is_converted_to_the_internal_unit(tmp_path):
    """A dose map written in mGy reads back in Gy (a 1000x error otherwise)."""
    g = Grid(np.full((2, 2, 2), 5.0, np.float32), kind=Kind.DOSE, unit="mGy")
    for suffix in (".nii.gz", ".mha"):
        back = read_image(write_image(g, tmp_path / f"d{suffix}"))
        assert back.kind is Kind.DOSE and back.unit == "Gy"
        np.testing.assert_allclose(back.array, 5e-3, rtol=1e-6)
