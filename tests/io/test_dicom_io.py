"""Round trips and error paths of persodose.io.dicom / persodose.io.dicom_write."""

from __future__ import annotations

import datetime
import math
import os
import warnings

import numpy as np
import pydicom
import pytest

from persodose.errors import DicomError, InputError, UnitsError
from persodose.grid import Grid, Kind
from persodose.io.dicom import (
    DicomWarning,
    list_series,
    nuclide_from_dicom_text,
    read_ct,
    read_nm,
    read_pet,
    read_series,
    require_acquisition_time,
)
from persodose.io.dicom_write import (
    PatientInfo,
    new_uid,
    nuclide_code,
    write_ct_series,
    write_nm_tomo,
    write_pet_series,
)

ACQ = datetime.datetime(2024, 5, 6, 10, 30, 15)
INJ = datetime.datetime(2024, 5, 6, 9, 12, 0)
F18_HALF_LIFE_S = 6586.2  # test input only (ICRP-107: 109.77 min)
PATIENT = PatientInfo(patient_id="PT42", weight_kg=81.5, height_m=1.82, sex="F", age_y=61)


def _ct_grid(nz=12, ny=20, nx=24, seed=0, direction=None):
    rng = np.random.default_rng(seed)
    arr = rng.uniform(-1000.0, 2500.0, (nz, ny, nx)).astype(np.float32)
    return Grid(arr, (2.5, 0.8, 0.7), (-123.45, 67.8, -310.25),
                np.eye(3) if direction is None else direction, kind=Kind.CT)


def _write_ct(grid, out, **kw):
    args = dict(patient=PATIENT, study_uid=new_uid(), frame_of_reference_uid=new_uid(),
                acquisition_datetime=ACQ)
    args.update(kw)
    return write_ct_series(grid, out, **args)


def _pet_grid(nz=8, ny=16, nx=16, seed=1):
    rng = np.random.default_rng(seed)
    arr = rng.uniform(0.0, 3.0e4, (nz, ny, nx))
    arr[nz // 2] *= 1e-3  # a slice with much lower activity: needs its own rescale slope
    return Grid(arr.astype(np.float32), (3.27, 4.07, 4.07), (-300.0, -280.5, 101.0),
                kind=Kind.ACTIVITY_CONCENTRATION)


def _write_pet(grid, out, **kw):
    args = dict(patient=PATIENT, study_uid=new_uid(), frame_of_reference_uid=new_uid(),
                acquisition_datetime=ACQ, frame_duration_s=180.0, radionuclide="F-18",
                injected_activity_bq=3.1e8, injection_datetime=INJ, half_life_s=F18_HALF_LIFE_S)
    args.update(kw)
    return write_pet_series(grid, out, **args)


def _edit(path, **changes):
    ds = pydicom.dcmread(path)
    for key, value in changes.items():
        if value is None:
            if key in ds:
                delattr(ds, key)
        else:
            setattr(ds, key, value)
    ds.save_as(path)


# ---------------------------------------------------------------------------- CT
def test_ct_round_trip_shuffled_files(tmp_path):
    grid = _ct_grid()
    nz = grid.shape[0]
    files = _write_ct(grid, tmp_path / "ct", ct_tags={
        "kvp": 120, "xray_tube_current_ma": np.linspace(80, 300, nz), "ctdivol_mgy": 7.5,
        "spiral_pitch_factor": 0.984, "rotation_time_s": 0.5, "convolution_kernel": "B30f",
        "total_collimation_mm": 38.4, "single_collimation_mm": 0.6, "exposure_time_ms": 500})
    # rename the files in a shuffled order and scramble InstanceNumber
    rng = np.random.default_rng(7)
    perm = rng.permutation(nz)
    for k, f in enumerate(files):
        _edit(f, InstanceNumber=int(perm[k]) + 1)
        os.replace(f, tmp_path / "ct" / f"img_{perm[k]:03d}.dcm")
    s = read_ct(tmp_path / "ct")
    assert s.grid.kind is Kind.CT and s.grid.unit == "HU" and s.grid.array.dtype == np.float32
    assert s.grid.shape == grid.shape
    assert np.max(np.abs(s.grid.array - grid.array)) <= 0.5 + 1e-4
    assert np.allclose(s.grid.origin_xyz_mm, grid.origin_xyz_mm, atol=1e-6)
    assert np.allclose(s.grid.spacing_zyx_mm, grid.spacing_zyx_mm, atol=1e-6)
    assert np.allclose(s.grid.direction_xyz, np.eye(3), atol=1e-9)
    info = s.info
    assert info.modality == "CT" and info.units == "HU" and info.patient_id == "PT42"
    assert info.patient_weight_kg == pytest.approx(81.5) and info.patient_sex == "F"
    assert info.patient_age_y == pytest.approx(61.0) and info.patient_height_m == pytest.approx(1.82)
    assert info.acquisition_datetime == ACQ
    assert info.extra["xray_tube_current_ma"] == pytest.approx(list(np.linspace(80, 300, nz)))
    assert info.extra["ctdivol_mgy"] == pytest.approx([7.5] * nz)
    assert info.extra["exposure_mas"] == pytest.approx(list(np.linspace(80, 300, nz) * 0.5))
    assert info.extra["kvp"] == pytest.approx(120.0)
    assert info.extra["spiral_pitch_factor"] == pytest.approx(0.984)
    assert info.extra["rotation_time_s"] == pytest.approx(0.5)
    assert info.extra["total_collimation_mm"] == pytest.approx(38.4)
    assert info.extra["single_collimation_mm"] == pytest.approx(0.6)
    assert info.extra["convolution_kernel"] == "B30f"
    # files are reported in z order
    zs = [float(pydicom.dcmread(f).ImagePositionPatient[2]) for f in info.files]
    assert zs == sorted(zs)


def test_ct_round_trip_oblique_orientation(tmp_path):
    a = math.radians(30.0)
    rot = np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0, 0, 1.0]])
    tilt = math.radians(20.0)
    rot = np.array([[1, 0, 0], [0, math.cos(tilt), -math.sin(tilt)],
                    [0, math.sin(tilt), math.cos(tilt)]]) @ rot
    grid = _ct_grid(nz=6, direction=rot)
    _write_ct(grid, tmp_path / "ct")
    s = read_ct(tmp_path / "ct")
    assert np.allclose(s.grid.direction_xyz, rot, atol=1e-6)
    assert np.allclose(s.grid.origin_xyz_mm, grid.origin_xyz_mm, atol=1e-5)
    assert np.max(np.abs(s.grid.array - grid.array)) <= 0.5 + 1e-4


def test_ct_series_readable_by_simpleitk(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    grid = _ct_grid(nz=5)
    _write_ct(grid, tmp_path / "ct")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(tmp_path / "ct")))
    img = reader.Execute()
    assert np.allclose(img.GetOrigin(), grid.origin_xyz_mm, atol=1e-4)
    assert np.allclose(img.GetSpacing(), grid.spacing_xyz_mm, atol=1e-4)
    assert np.max(np.abs(sitk.GetArrayFromImage(img) - grid.array)) <= 0.5 + 1e-4


def test_ct_write_of_a_100_slice_series(tmp_path):
    # (its speed is a benchmark's business, not a test's)
    grid = Grid(np.zeros((100, 128, 128), np.float32), (2.0, 1.0, 1.0), kind=Kind.CT)
    files = _write_ct(grid, tmp_path / "ct")
    assert len(files) == 100 and all(f.exists() for f in files)
    assert read_ct(tmp_path / "ct").grid.shape == (100, 128, 128)


def test_ct_clips_to_int16_range(tmp_path):
    grid = _ct_grid(nz=2)
    arr = grid.array.copy()
    arr[0, 0, 0] = 40000.0
    _write_ct(grid.with_array(arr), tmp_path / "ct")
    s = read_ct(tmp_path / "ct")
    assert s.grid.array[0, 0, 0] == pytest.approx(32767 - 1024)


def test_pydicom_ct_small():
    from pydicom.data import get_testdata_file

    path = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    s = read_ct(path)
    assert s.grid.shape == (1, 128, 128)
    expected = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert np.allclose(s.grid.array[0], expected)
    assert np.allclose(s.grid.origin_xyz_mm, (-158.135803, -179.035797, -75.699997))
    assert np.allclose(s.grid.spacing_zyx_mm, (5.0, 0.661468, 0.661468))
    assert np.allclose(s.grid.direction_xyz, np.eye(3))
    assert s.info.acquisition_datetime == datetime.datetime(1997, 4, 30, 11, 29, 36)
    assert s.info.patient_id == "1CT1" and s.info.extra["kvp"] == 120.0


# ---------------------------------------------------------------------------- PET
def test_pet_round_trip_and_suv(tmp_path):
    grid = _pet_grid()
    files = _write_pet(grid, tmp_path / "pt")
    slopes = [float(pydicom.dcmread(f).RescaleSlope) for f in files]
    assert len(set(slopes)) == len(files)  # one slope per slice
    s = read_pet(tmp_path / "pt")
    assert s.grid.kind is Kind.ACTIVITY_CONCENTRATION and s.grid.unit == "Bq/mL"
    for k in range(grid.shape[0]):
        tol = np.max(np.abs(grid.array[k])) / 32767.0 / 2.0 * 1.001
        assert np.max(np.abs(s.grid.array[k] - grid.array[k])) <= tol
    assert np.allclose(s.grid.origin_xyz_mm, grid.origin_xyz_mm, atol=1e-6)
    assert np.allclose(s.grid.spacing_zyx_mm, grid.spacing_zyx_mm, atol=1e-6)
    info = s.info
    assert info.modality == "PT" and info.units == "Bq/mL"
    assert info.radionuclide == "F-18"
    assert info.half_life_s == pytest.approx(F18_HALF_LIFE_S)
    assert info.injected_activity_bq == pytest.approx(3.1e8)
    assert info.injection_datetime == INJ
    assert info.acquisition_datetime == ACQ
    assert info.decay_correction == "START" and info.decay_correction_datetime == ACQ
    assert info.frame_duration_s == pytest.approx(180.0)
    elapsed_s = (ACQ - INJ).total_seconds()  # 4695 s
    hand = 81500.0 / (3.1e8 * math.exp(-math.log(2) * elapsed_s / F18_HALF_LIFE_S))
    assert info.suv_bw_factor == pytest.approx(hand, rel=1e-9)


def test_pet_admin_decay_and_start_time_only(tmp_path):
    files = _write_pet(_pet_grid(nz=3), tmp_path / "pt", decay_correction="ADMIN")
    for f in files:  # an older file: only RadiopharmaceuticalStartTime
        ds = pydicom.dcmread(f)
        del ds.RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalStartDateTime
        del ds.DecayCorrectionDateTime
        ds.save_as(f)
    info = read_pet(tmp_path / "pt").info
    assert info.injection_datetime == INJ
    assert info.decay_correction == "ADMIN" and info.decay_correction_datetime == INJ
    assert info.suv_bw_factor == pytest.approx(81500.0 / 3.1e8, rel=1e-9)


def test_pet_cnts_refused_and_other_units(tmp_path):
    files = _write_pet(_pet_grid(nz=3), tmp_path / "pt")
    uid = pydicom.dcmread(files[0]).SeriesInstanceUID
    for f in files:
        _edit(f, Units="CNTS")
    with pytest.raises(UnitsError, match=f"{uid}.*CNTS"):
        read_pet(tmp_path / "pt")
    s = read_pet(tmp_path / "pt", calibration_cps_per_mbq=1.0e3)
    assert s.grid.kind is Kind.ACTIVITY_CONCENTRATION
    for f in files:
        _edit(f, Units="GML")
    with pytest.raises(UnitsError, match="GML"):
        read_pet(tmp_path / "pt")


# ---------------------------------------------------------------------------- NM
def _nm_grid(kind=Kind.COUNTS, seed=3):
    rng = np.random.default_rng(seed)
    arr = rng.poisson(40.0, (10, 32, 32)).astype(np.float32)
    if kind is Kind.ACTIVITY_CONCENTRATION:
        arr = arr * 1234.5
    return Grid(arr, (4.8, 4.8, 4.8), (-150.0, -140.0, -95.5), kind=kind)


def _write_nm(grid, out, **kw):
    args = dict(patient=PATIENT, study_uid=new_uid(), frame_of_reference_uid=new_uid(),
                acquisition_datetime=ACQ, frame_duration_s=1200.0, radionuclide="Lu-177",
                half_life_s=574300.0)
    args.update(kw)
    return write_nm_tomo(grid, out, **args)


def test_nm_counts_round_trip_and_calibration(tmp_path):
    grid = _nm_grid()
    path = _write_nm(grid, tmp_path / "spect.dcm", injected_activity_bq=7.4e9,
                     injection_datetime=INJ - datetime.timedelta(hours=24))
    ds = pydicom.dcmread(path)
    assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "RECON TOMO", "EMISSION"]
    assert int(ds.NumberOfFrames) == 10
    # a 20-min acquisition of 60 views per detector: 20 s per view, as cameras record it
    rot = ds.RotationInformationSequence[0]
    assert int(rot.ActualFrameDuration) == 20000 and int(rot.NumberOfFramesInRotation) == 60
    s = read_nm(path)
    assert s.grid.kind is Kind.COUNTS and s.info.units == "counts"
    assert np.array_equal(s.grid.array, grid.array)
    assert np.allclose(s.grid.origin_xyz_mm, grid.origin_xyz_mm)
    assert np.allclose(s.grid.spacing_zyx_mm, grid.spacing_zyx_mm)
    assert s.info.radionuclide == "Lu-177" and s.info.frame_duration_s == pytest.approx(1200.0)
    assert s.info.injected_activity_bq == pytest.approx(7.4e9)  # stored in MBq, read as Bq
    assert s.info.injection_datetime == INJ - datetime.timedelta(hours=24)
    cal = 9.6  # cps/MBq
    s_cal = read_nm(path, calibration_cps_per_mbq=cal)
    voxel_ml = 4.8 ** 3 / 1000.0
    counts = float(grid.array[4, 10, 11])
    hand_bqml = counts / (1200.0 * cal) * 1e6 / voxel_ml
    assert s_cal.grid.kind is Kind.ACTIVITY_CONCENTRATION
    assert float(s_cal.grid.array[4, 10, 11]) == pytest.approx(hand_bqml, rel=1e-6)
    # whole-volume activity: total counts / (t * cal) MBq
    total_bq = float(np.sum(s_cal.grid.array, dtype=np.float64)) * voxel_ml
    assert total_bq == pytest.approx(grid.total() / (1200.0 * cal) * 1e6, rel=1e-5)


def test_nm_bqml_round_trip(tmp_path):
    grid = _nm_grid(Kind.ACTIVITY_CONCENTRATION)
    path = _write_nm(grid, tmp_path / "spect.dcm", units="Bq/mL")
    assert pydicom.dcmread(path).Units == "BQML"
    s = read_nm(path, calibration_cps_per_mbq=None)
    assert s.grid.kind is Kind.ACTIVITY_CONCENTRATION and s.info.units == "Bq/mL"
    tol = float(grid.array.max()) / 65535.0 / 2.0 * 1.001
    assert np.max(np.abs(s.grid.array - grid.array)) <= tol


def test_nm_projection_refused(tmp_path):
    path = _write_nm(_nm_grid(), tmp_path / "spect.dcm")
    _edit(path, ImageType=["ORIGINAL", "PRIMARY", "TOMO", "EMISSION"])
    with pytest.raises(DicomError, match="RECON TOMO"):
        read_nm(path)


# ---------------------------------------------------------------------------- several series
def test_two_series_in_one_directory(tmp_path):
    ct_files = _write_ct(_ct_grid(nz=3), tmp_path / "d" / "ct", series_description="CT A")
    _write_pet(_pet_grid(nz=3), tmp_path / "d" / "pt")
    (tmp_path / "d" / "notes.txt").write_text("not DICOM")
    ct_uid = pydicom.dcmread(ct_files[0]).SeriesInstanceUID
    with pytest.raises(DicomError) as exc:
        read_series(tmp_path / "d")
    msg = str(exc.value)
    assert ct_uid in msg and "PT" in msg and "'CT A'" in msg and "3 files" in msg
    assert "\n" not in msg
    # actionable from the command line too: no Python keywords offered as options
    assert "series_uid=" not in msg and "modality=" not in msg
    assert f"{tmp_path / 'd'} holds 2 image series (CT, PT)" in msg
    assert msg.endswith("give a folder that holds only one of them")
    _write_ct(_ct_grid(nz=2), tmp_path / "d" / "ct2", series_description="CT B")
    with pytest.raises(DicomError, match=r"holds 2 CT series: .*'CT A'.*'CT B'.*only one of them"):
        read_ct(tmp_path / "d")
    for f in (tmp_path / "d" / "ct2").iterdir():
        f.unlink()
    assert read_series(tmp_path / "d", modality="CT").info.series_instance_uid == ct_uid
    assert read_ct(tmp_path / "d").grid.kind is Kind.CT
    assert read_pet(tmp_path / "d").grid.kind is Kind.ACTIVITY_CONCENTRATION
    assert read_series(tmp_path / "d", series_uid=ct_uid).info.modality == "CT"
    listed = {i.series_instance_uid: i for i in list_series(tmp_path / "d")}
    assert len(listed) == 2 and len(listed[ct_uid].files) == 3


def test_localizer_dropped_with_warning(tmp_path):
    files = _write_ct(_ct_grid(nz=4), tmp_path / "ct")
    _edit(files[0], ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"],
          ImageOrientationPatient=[1, 0, 0, 0, 0, -1])
    with pytest.warns(DicomWarning, match="localizer"):
        s = read_ct(tmp_path / "ct")
    assert s.grid.shape[0] == 3


def test_mixed_orientation_refused(tmp_path):
    files = _write_ct(_ct_grid(nz=4), tmp_path / "ct")
    _edit(files[0], ImageOrientationPatient=[1, 0, 0, 0, 0, -1])
    uid = pydicom.dcmread(files[1]).SeriesInstanceUID
    with pytest.raises(DicomError, match=f"{uid}.*orientations"):
        read_ct(tmp_path / "ct")


# ---------------------------------------------------------------------------- error paths
def test_missing_path(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(InputError, match="does not exist: .*nope"):
        read_series(missing)
    with pytest.raises(InputError, match="does not exist"):
        list_series(missing)


def test_non_dicom_file(tmp_path):
    f = tmp_path / "image.dcm"
    f.write_bytes(b"hello, this is not DICOM" * 20)
    with pytest.raises(DicomError, match="not a DICOM file: .*image.dcm"):
        read_series(f)
    with pytest.raises(DicomError, match="image.dcm"):
        list_series(f)


def test_non_dicom_files_in_directory_skipped(tmp_path):
    _write_ct(_ct_grid(nz=3), tmp_path / "ct")
    (tmp_path / "ct" / "README").write_text("x")
    (tmp_path / "ct" / "junk.dcm").write_bytes(os.urandom(300))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_ct(tmp_path / "ct").grid.shape[0] == 3


def test_empty_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DicomError, match="no DICOM image series"):
        read_series(tmp_path / "empty")


def test_dicom_without_pixel_data(tmp_path):
    files = _write_ct(_ct_grid(nz=1), tmp_path / "ct")
    ds = pydicom.dcmread(files[0])
    for kw in ("PixelData", "Rows", "Columns"):
        delattr(ds, kw)
    ds.save_as(tmp_path / "nopix.dcm")
    with pytest.raises(DicomError, match="nopix.dcm has no pixel data"):
        read_series(tmp_path / "nopix.dcm")


def test_gantry_tilt_refused(tmp_path):
    files = _write_ct(_ct_grid(nz=6), tmp_path / "ct")
    uid = pydicom.dcmread(files[0]).SeriesInstanceUID
    for f in files:  # positions advance along z but shift in y: 15 degree tilt
        ds = pydicom.dcmread(f)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + (z + 310.25) * math.tan(math.radians(15.0)), z]
        ds.save_as(f)
    with pytest.raises(DicomError, match=rf"{uid}.*gantry tilt of 15\.00 deg"):
        read_ct(tmp_path / "ct")


def test_missing_slice_refused(tmp_path):
    files = _write_ct(_ct_grid(nz=8), tmp_path / "ct")
    uid = pydicom.dcmread(files[0]).SeriesInstanceUID
    files[4].unlink()
    with pytest.raises(DicomError, match=f"{uid}.*missing slice"):
        read_ct(tmp_path / "ct")


def test_uneven_spacing_refused(tmp_path):
    files = _write_ct(_ct_grid(nz=6), tmp_path / "ct")
    ds = pydicom.dcmread(files[3])
    ds.ImagePositionPatient[2] = float(ds.ImagePositionPatient[2]) + 0.6
    ds.save_as(files[3])
    with pytest.raises(DicomError, match="uneven slice spacing"):
        read_ct(tmp_path / "ct")


def test_mixed_patient_ids_refused(tmp_path):
    files = _write_ct(_ct_grid(nz=4), tmp_path / "ct")
    uid = pydicom.dcmread(files[0]).SeriesInstanceUID
    _edit(files[2], PatientID="SOMEONE_ELSE")
    with pytest.raises(DicomError, match=f"{uid}.*PatientID.*SOMEONE_ELSE"):
        read_ct(tmp_path / "ct")


def test_mixed_frame_of_reference_refused(tmp_path):
    files = _write_ct(_ct_grid(nz=4), tmp_path / "ct")
    _edit(files[1], FrameOfReferenceUID=new_uid())
    with pytest.raises(DicomError, match="FrameOfReferenceUID"):
        read_ct(tmp_path / "ct")


def test_require_acquisition_time(tmp_path):
    files = _write_ct(_ct_grid(nz=2), tmp_path / "ct")
    uid = pydicom.dcmread(files[0]).SeriesInstanceUID
    info = read_ct(tmp_path / "ct").info
    assert require_acquisition_time(info) == ACQ
    for f in files:
        _edit(f, AcquisitionDate=None, AcquisitionTime=None, SeriesDate=None, SeriesTime=None)
    info = read_ct(tmp_path / "ct").info
    assert info.acquisition_datetime is None
    with pytest.raises(DicomError, match=f"series {uid} .*has no acquisition date/time"):
        require_acquisition_time(info)


def test_nan_rescale_refused(tmp_path):
    files = _write_ct(_ct_grid(nz=2), tmp_path / "ct")
    ds = pydicom.dcmread(files[0])
    with warnings.catch_warnings():  # pydicom warns about the invalid DS value
        warnings.simplefilter("ignore")
        ds["RescaleSlope"].value = "nan"
        ds.save_as(files[0])
    with pytest.raises(InputError, match="RescaleSlope"):
        read_ct(tmp_path / "ct")


def test_writers_refuse_bad_input(tmp_path):
    with pytest.raises(UnitsError):
        _write_ct(_pet_grid(nz=1), tmp_path / "x")
    bad = _ct_grid(nz=2)
    arr = bad.array.copy()
    arr[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        _write_ct(bad.with_array(arr), tmp_path / "y")
    assert not (tmp_path / "y").exists()
    with pytest.raises(UnitsError):
        _write_nm(_nm_grid(), tmp_path / "z.dcm", units="Bq/mL")


# ---------------------------------------------------------------------------- nuclide names
@pytest.mark.parametrize("text,expected", [
    ("^18^Fluorine", "F-18"), ("Fluorine^18^[18F]", "F-18"), ("Lutetium-177", "Lu-177"),
    ("Lu177", "Lu-177"), ("177Lu", "Lu-177"), ("^99m^Technetium", "Tc-99m"),
    ("Technetium Tc-99m", "Tc-99m"), ("Tc99m", "Tc-99m"), ("Gallium^68^[68Ga]", "Ga-68"),
    ("I-131", "I-131"), ("^90^Yttrium", "Y-90"), ("18F-FDG", "F-18"),
    ("PSMA-617 Lutetium-177", "Lu-177"), ("FDG", None), ("", None),
])
def test_nuclide_from_dicom_text(text, expected):
    assert nuclide_from_dicom_text(text) == expected


def test_nuclide_codes_read_back(tmp_path):
    value, scheme, meaning = nuclide_code("F-18")
    assert (value, scheme, meaning) == ("77004003", "SCT", "^18^Fluorine")
    assert nuclide_code("Ga-68")[0] == "35337001"
    files = _write_pet(_pet_grid(nz=2), tmp_path / "pt", radionuclide="Ga-68", half_life_s=4062.6)
    for f in files:  # only the code value left: the reader maps it back
        ds = pydicom.dcmread(f)
        del ds.RadiopharmaceuticalInformationSequence[0].RadionuclideCodeSequence[0].CodeMeaning
        ds.save_as(f)
    assert read_pet(tmp_path / "pt").info.radionuclide == "Ga-68"


def test_localizer_series_in_directory_dropped(tmp_path):
    ct_files = _write_ct(_ct_grid(nz=4), tmp_path / "d" / "ct")
    ref = pydicom.dcmread(ct_files[0])
    scout_grid = _ct_grid(nz=1, direction=np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]]))
    scout = _write_ct(scout_grid, tmp_path / "d" / "scout", study_uid=ref.StudyInstanceUID,
                      frame_of_reference_uid=ref.FrameOfReferenceUID)
    # 1) flagged LOCALIZER; 2) the same without the flag: one image in another orientation
    _edit(scout[0], ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"])
    with pytest.warns(DicomWarning, match="localizer"):
        s = read_ct(tmp_path / "d")
    assert s.info.series_instance_uid == ref.SeriesInstanceUID and s.grid.shape[0] == 4
    _edit(scout[0], ImageType=["ORIGINAL", "PRIMARY", "AXIAL"])
    with pytest.warns(DicomWarning, match="another orientation"):
        s = read_ct(tmp_path / "d")
    assert s.info.series_instance_uid == ref.SeriesInstanceUID


def test_dataset_without_preamble_read(tmp_path):
    files = _write_ct(_ct_grid(nz=3), tmp_path / "ct")
    raw = tmp_path / "raw"
    raw.mkdir()
    for f in files:
        ds = pydicom.dcmread(f)
        del ds.file_meta
        ds.preamble = None
        pydicom.dcmwrite(raw / f.name, ds, enforce_file_format=False, implicit_vr=True,
                         little_endian=True)
    assert (raw / files[0].name).read_bytes()[:2] == b"\x08\x00"
    a = read_ct(tmp_path / "ct").grid.array
    assert np.array_equal(read_ct(raw).grid.array, a)


# ---------------------------------------------------------------------------- corrupt input
def _one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("which", ["all", "one"])
def test_zero_rescale_slope_refused(tmp_path, which):
    files = _write_ct(_ct_grid(nz=5), tmp_path / "ct")
    for f in (files if which == "all" else files[2:3]):
        _edit(f, RescaleSlope=0)
    with pytest.raises(DicomError) as exc:
        read_ct(tmp_path / "ct")
    msg = _one_line(exc)
    assert (files[0] if which == "all" else files[2]).name in msg
    assert "RescaleSlope 0" in msg and "non-zero" in msg
    if which == "all":
        assert "5 of the 5 slices" in msg and str(tmp_path / "ct") in msg


@pytest.mark.parametrize("modality", ["CT", "PT"])
@pytest.mark.parametrize("which", ["all", "one"])
def test_missing_rescale_refused(tmp_path, modality, which):
    if modality == "CT":
        files, read = _write_ct(_ct_grid(nz=4), tmp_path / "s"), read_ct
    else:
        files, read = _write_pet(_pet_grid(nz=4), tmp_path / "s"), read_pet
    for f in (files if which == "all" else files[1:2]):
        _edit(f, RescaleSlope=None, RescaleIntercept=None)
    with pytest.raises(DicomError) as exc:
        read(tmp_path / "s")
    msg = _one_line(exc)
    assert (files[0] if which == "all" else files[1]).name in msg
    assert "no RescaleSlope and RescaleIntercept" in msg
    assert ("C.8.2.1" if modality == "CT" else "C.8.9.4") in msg
    # only the intercept missing on one slice: refused as well, naming what is missing
    files2 = _write_ct(_ct_grid(nz=3), tmp_path / "s2")
    _edit(files2[2], RescaleIntercept=None)
    with pytest.raises(DicomError, match=rf"{files2[2].name} has no RescaleIntercept,"):
        read_ct(tmp_path / "s2")


def test_nm_without_rescale_reads_stored_values(tmp_path):
    # the NM Image IOD has no Modality LUT: no Rescale Slope/Intercept means 1/0
    grid = _nm_grid()
    path = _write_nm(grid, tmp_path / "spect.dcm")
    assert "RescaleSlope" not in pydicom.dcmread(path)
    assert np.array_equal(read_nm(path).grid.array, grid.array)
    _edit(path, RescaleSlope=0, RescaleIntercept=0)
    with pytest.raises(DicomError, match="spect.dcm has RescaleSlope 0"):
        read_nm(path)


def _pixel_data_offset(raw: bytes) -> int:
    return raw.rfind(b"\xe0\x7f\x10\x00")


@pytest.mark.parametrize("where", ["file_meta", "group_0008", "group_0020", "before_pixels",
                                   "inside_pixels"])
def test_truncated_slice_in_folder_refused_by_name(tmp_path, where):
    files = _write_ct(_ct_grid(nz=6), tmp_path / "ct")
    raw = files[3].read_bytes()
    ds = pydicom.dcmread(files[3])
    cut = {"file_meta": 150,
           "group_0008": 132 + int(ds.file_meta.FileMetaInformationGroupLength) + 12 + 30,
           "group_0020": raw.find(ds.StudyInstanceUID.encode()) + 5,
           "before_pixels": _pixel_data_offset(raw),
           "inside_pixels": len(raw) - 100}[where]
    files[3].write_bytes(raw[:cut])
    (tmp_path / "ct" / "README.txt").write_text("notes")
    (tmp_path / "ct" / "series.json").write_text('{"a": 1}')
    with pytest.raises(DicomError) as exc:
        read_ct(tmp_path / "ct")
    msg = _one_line(exc)
    assert files[3].name in msg and "gap" not in msg
    assert any(w in msg for w in ("truncated", "incomplete")), msg
    if where not in ("before_pixels", "inside_pixels"):  # listing reads headers only
        with pytest.raises(DicomError, match=files[3].name):
            list_series(tmp_path / "ct")


def test_truncated_dataset_without_preamble_refused(tmp_path):
    files = _write_ct(_ct_grid(nz=3), tmp_path / "ct")
    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()
    for f in files:
        ds = pydicom.dcmread(f)
        del ds.file_meta
        ds.preamble = None
        pydicom.dcmwrite(raw_dir / f.name, ds, enforce_file_format=False, implicit_vr=True,
                         little_endian=True)
    victim = raw_dir / files[1].name
    data = victim.read_bytes()
    for cut in (60, data.find(b"\x20\x00\x0d\x00")):  # in SOPClassUID; before StudyInstanceUID
        victim.write_bytes(data[:cut])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom: invalid UI value
            with pytest.raises(DicomError) as exc:
                read_ct(raw_dir)
        assert files[1].name in _one_line(exc)


def test_short_pixel_data_refused(tmp_path):
    files = _write_ct(_ct_grid(nz=4), tmp_path / "ct")
    ds = pydicom.dcmread(files[2])
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    ds.save_as(files[2])
    with pytest.raises(DicomError) as exc:
        read_ct(tmp_path / "ct")
    msg = _one_line(exc)
    assert files[2].name in msg and "pixel data is" in msg and "expected" in msg


def test_dicomdir_json_and_text_still_skipped(tmp_path):
    from pydicom.data import get_testdata_file

    _write_ct(_ct_grid(nz=3), tmp_path / "ct")
    dicomdir = get_testdata_file("DICOMDIR")
    (tmp_path / "ct" / "DICOMDIR").write_bytes(open(dicomdir, "rb").read())
    (tmp_path / "ct" / "sidecar.json").write_text('{"Modality": "CT"}')
    (tmp_path / "ct" / "README.txt").write_text("x" * 500)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_ct(tmp_path / "ct").grid.shape[0] == 3


def test_negative_pet_activity_refused(tmp_path):
    files = _write_pet(_pet_grid(nz=4), tmp_path / "pt")
    _edit(files[2], RescaleIntercept=-5.0e4)
    with pytest.raises(DicomError) as exc:
        read_pet(tmp_path / "pt")
    msg = _one_line(exc)
    assert files[2].name in msg and "negative activity" in msg and "minimum -" in msg
    assert "Bq/mL" in msg and str(tmp_path / "pt") in msg


def test_negative_nm_activity_refused_and_rounding_tolerated(tmp_path):
    grid = _nm_grid()
    arr = grid.array.copy()
    arr[0, :4] = 0.0  # background
    grid = grid.with_array(arr)
    path = _write_nm(grid, tmp_path / "spect.dcm")
    _edit(path, RescaleSlope=1, RescaleIntercept=-5000)
    with pytest.raises(DicomError) as exc:
        read_nm(path, calibration_cps_per_mbq=10.0)
    msg = _one_line(exc)
    assert "spect.dcm" in msg and f"negative counts: minimum {float(grid.array.min()) - 5000:g} counts" in msg
    assert "Rescale Intercept" in msg
    # a negative within float rounding of the maximum is set to 0, not refused
    peak = float(grid.array.max())
    _edit(path, RescaleSlope=1, RescaleIntercept=-peak * 1e-7)
    arr = read_nm(path).grid.array
    assert float(arr.min()) == 0.0 and float(arr[0, 0, 0]) == 0.0


def test_load_emission_refuses_negative_dicom(tmp_path):
    from persodose.io.load import load_emission

    files = _write_pet(_pet_grid(nz=3), tmp_path / "pt")
    for f in files:
        _edit(f, RescaleIntercept=-1.0e6)
    with pytest.raises(InputError, match=r"pt.*negative activity: minimum -"):
        load_emission(tmp_path / "pt")


def test_series_messages_name_the_folder(tmp_path):
    files = _write_ct(_ct_grid(nz=6), tmp_path / "patient" / "ct")
    folder = str(tmp_path / "patient" / "ct")
    files[3].unlink()
    with pytest.raises(DicomError) as exc:
        read_ct(tmp_path / "patient")
    msg = _one_line(exc)
    assert "missing slice" in msg and f"in {folder}" in msg
    files = _write_pet(_pet_grid(nz=3), tmp_path / "pt")
    for f in files:
        _edit(f, Units="GML")
    with pytest.raises(UnitsError, match=rf"in {tmp_path / 'pt'} has Units 'GML'"):
        read_pet(tmp_path / "pt")
    nm = _write_nm(_nm_grid(), tmp_path / "nm" / "spect.dcm")
    assert read_nm(nm).info.label().endswith(f"in {nm}")
    _edit(nm, ActualFrameDuration=None, RotationInformationSequence=None)
    with pytest.raises(DicomError, match=rf"in {nm} has no ActualFrameDuration"):
        read_nm(nm, calibration_cps_per_mbq=10.0)


def test_single_slice_ct_reports_its_slice_count(tmp_path):
    from persodose.io.load import load_ct

    files = _write_ct(_ct_grid(nz=3), tmp_path / "ct")
    one = tmp_path / "one"
    one.mkdir()
    os.replace(files[1], one / files[1].name)
    grid, info = load_ct(one)
    assert grid.shape[0] == 1 and len(info.files) == 1
