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


# ----------------------------------------------------------------- corrupt files
def _nifti(path, descrip="persodose kind=tia unit=Bq s", patch=None, sform=True, data=None):
    """An uncompressed NIfTI-1 with float32 header fields overwritten at byte offsets
    (NIfTI-1 layout: pixdim[i] at 76 + 4 i, srow_x/y/z at 280/296/312)."""
    import nibabel as nib

    aff = np.diag([10.0, 10.0, 10.0, 1.0])
    img = nib.Nifti1Image(np.ones((4, 4, 4), np.float32) if data is None else data, aff)
    img.header["descrip"] = descrip.encode()
    if sform:
        img.set_qform(None, code=0)
        img.set_sform(aff, code=1)
    else:
        img.set_sform(None, code=0)
        img.set_qform(aff, code=1)
    nib.save(img, str(path))
    if patch:
        raw = bytearray(path.read_bytes())
        for offset, value in patch.items():
            raw[offset:offset + 4] = np.float32(value).tobytes()
        path.write_bytes(bytes(raw))
    return path


def test_unknown_tagged_unit_refused(tmp_path):
    path = _nifti(tmp_path / "tia_furlongs.nii", "persodose kind=tia unit=furlongs")
    with pytest.raises(UnitsError) as err:
        read_image(path)
    msg = str(err.value)
    assert "tia_furlongs.nii" in msg and "'furlongs'" in msg and "\n" not in msg
    with pytest.raises(UnitsError, match=r"tia_gy.nii is tagged kind=tia with unit='Gy', which is a unit of dose"):
        read_image(_nifti(tmp_path / "tia_gy.nii", "persodose kind=tia unit=Gy"))
    # a known unit of the kind is converted; the user's own unit overrides the tag
    assert read_image(_nifti(tmp_path / "mbqh.nii", "persodose kind=tia unit=MBq h")).array.max() == \
        pytest.approx(3.6e9)
    assert read_image(path, unit="Bq s").array.max() == pytest.approx(1.0)
    # scalar grids keep a free-text unit
    g = Grid(np.ones((2, 2, 2), np.float32), kind=Kind.SCALAR, unit="MeV per primary")
    assert read_image(write_image(g, tmp_path / "e.nii.gz")).kind is Kind.SCALAR
    # MHA: the same through the metadata tag
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ones((2, 2, 2), np.float32))
    img.SetMetaData("persodose_kind", "dose")
    img.SetMetaData("persodose_unit", "furlongs")
    sitk.WriteImage(img, str(tmp_path / "dose_furlongs.mha"))
    with pytest.raises(UnitsError, match="dose_furlongs.mha is tagged kind=dose unit='furlongs'"):
        read_image(tmp_path / "dose_furlongs.mha")


@pytest.mark.parametrize("name, patch, sform, words", [
    ("nan_voxel", {80: np.nan, 280: np.nan}, True, ["NaN or infinite"]),
    ("zero_voxel", {84: 0.0, 300: 0.0}, True, ["voxel size of 10, 0, 10 mm"]),
    ("nan_origin", {292: np.nan}, True, ["NaN or infinite"]),
    ("inf_origin", {324: np.inf}, True, ["NaN or infinite"]),
    ("sheared", {284: 3.0}, True, ["not perpendicular"]),
    ("zero_pixdim_qform", {80: 0.0}, False, ["pixdim", "0, 10, 10"]),
    ("nan_pixdim_qform", {84: np.nan}, False, ["pixdim"]),
])
def test_bad_nifti_geometry_refused(tmp_path, capfd, name, patch, sform, words):
    from persodose.errors import GeometryError

    path = _nifti(tmp_path / f"{name}.nii", patch=patch, sform=sform)
    with pytest.raises(GeometryError) as err:
        read_image(path)
    msg = str(err.value)
    assert f"{name}.nii" in msg and "\n" not in msg
    for w in words:
        assert w in msg, msg
    assert capfd.readouterr().err == ""  # nibabel's "setting 0 dims to 1" is not printed


@pytest.mark.parametrize("old, new, words", [
    (b"ElementSpacing = 1 1 1", b"ElementSpacing = -1 1 1", ["not a positive voxel size"]),
    (b"ElementSpacing = 1 1 1", b"ElementSpacing = 0 1 1", ["not a positive voxel size"]),
    (b"ElementSpacing = 1 1 1", b"ElementSpacing = nan 1 1", ["NaN or infinite"]),
    (b"Offset = 0 0 0", b"Offset = nan 0 0", ["NaN or infinite"]),
    (b"Offset = 0 0 0", b"Offset = 0 inf 0", ["NaN or infinite"]),
    (b"TransformMatrix = 1 0 0 0 1 0 0 0 1", b"TransformMatrix = 1 0 0 0 nan 0 0 0 1", ["NaN"]),
])
def test_bad_metaimage_geometry_refused(tmp_path, old, new, words):
    path = write_image(Grid(np.ones((2, 3, 4), np.float32), kind=Kind.DOSE), tmp_path / "dose.mha")
    raw = path.read_bytes()
    header = raw[:raw.index(b"ElementDataFile")]
    assert old in header
    bad = tmp_path / "bad_geometry.mha"
    bad.write_bytes(header.replace(old, new) + raw[len(header):])
    with pytest.raises(InputError) as err:
        read_image(bad)
    msg = str(err.value)
    assert "bad_geometry.mha" in msg and "\n" not in msg
    for w in words:
        assert w in msg, msg


def test_negative_emission_image_refused(tmp_path):
    from persodose.io.load import load_emission

    em = Grid(np.full((3, 4, 4), -3.0, np.float32), (10.0, 10.0, 10.0), kind=Kind.ACTIVITY_CONCENTRATION)
    path = write_image(em, tmp_path / "em_negative.nii.gz")
    for read in (read_image, load_emission):
        with pytest.raises(InputError) as err:
            read(path)
        msg = str(err.value)
        assert "em_negative.nii.gz" in msg and "minimum -3 Bq/mL" in msg and "\n" not in msg
    # float-rounding negatives (above -1e-6 of the maximum) become 0
    arr = np.full((3, 4, 4), 1.0e6, np.float32)
    arr[0, 0, 0] = -0.5
    path = write_image(em.with_array(arr), tmp_path / "em_rounding.nii.gz")
    grid, info = load_emission(path)
    assert info is None and float(grid.array[0, 0, 0]) == 0.0 and float(grid.array.min()) == 0.0
    # a negative TIA likewise; a dose map is not an emission image and is left alone
    with pytest.raises(InputError, match="tia_negative.nii.gz holds negative"):
        read_image(write_image(Grid(-np.ones((2, 2, 2), np.float32), kind=Kind.TIA), tmp_path / "tia_negative.nii.gz"))
    assert read_image(write_image(Grid(-np.ones((2, 2, 2), np.float32), kind=Kind.DOSE), tmp_path / "d.nii.gz")) \
        .array.min() == -1.0
