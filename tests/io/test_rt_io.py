"""RT Dose, RT Structure Set and SEG input/output (persodose.io.rtdose/rtstruct/seg)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from persodose.errors import DicomError, GeometryError, InputError
from persodose.grid import Grid, Kind
from persodose.io.rtdose import read_rtdose, write_rtdose
from persodose.io.rtstruct import rtstruct_to_labels, write_rtstruct
from persodose.io.seg import read_seg, write_seg

CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"

# Test CT lattice: 10 axial slices of 16 x 16, non-square pixels, off-origin.
NZ, NY, NX = 10, 16, 16
SPACING_ZYX = (3.0, 1.5, 2.0)
ORIGIN_XYZ = (-20.0, 35.5, -102.0)


def _file_meta(sop_class: str, sop_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


def make_ct_series(folder: Path, *, reverse_files: bool = True) -> tuple[list[str], Grid, Dataset]:
    """Write a small axial CT series with pydicom; return (files, geometry grid, identity).

    The files are written in reverse slice order so that readers must sort by position.
    """
    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    rng = np.random.default_rng(0)
    hu = rng.integers(-1000, 1500, size=(NZ, NY, NX)).astype(np.int16)
    files = []
    order = range(NZ - 1, -1, -1) if reverse_files else range(NZ)
    for k in order:
        sop = generate_uid()
        ds = Dataset()
        ds.file_meta = _file_meta(CT_STORAGE, sop)
        ds.SOPClassUID, ds.SOPInstanceUID = CT_STORAGE, sop
        ds.PatientName, ds.PatientID = "Test^Phantom", "PD-0001"
        ds.PatientBirthDate, ds.PatientSex = "19700101", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.StudyDate, ds.StudyTime, ds.StudyID = "20240102", "101010", "S1"
        ds.AccessionNumber, ds.ReferringPhysicianName = "A1", ""
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = frame, ""
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 1, k + 1
        ds.Manufacturer = "test"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [ORIGIN_XYZ[0], ORIGIN_XYZ[1], ORIGIN_XYZ[2] + k * SPACING_ZYX[0]]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [SPACING_ZYX[1], SPACING_ZYX[2]]
        ds.SliceThickness = SPACING_ZYX[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = NY, NX
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "HU"
        ds.KVP = 120
        ds.PixelData = hu[k].tobytes()
        f = folder / f"ct_{k:03d}.dcm"
        ds.save_as(f, enforce_file_format=True)
        files.append(str(f))
    grid = Grid(hu.astype(np.float32), SPACING_ZYX, ORIGIN_XYZ, np.eye(3), Kind.CT)
    ident = Dataset()
    ident.StudyInstanceUID, ident.FrameOfReferenceUID = study, frame
    return files, grid, ident


@pytest.fixture()
def ct_series(tmp_path):
    return make_ct_series(tmp_path / "ct")


def _dose_on(grid: Grid, seed: int = 1) -> Grid:
    rng = np.random.default_rng(seed)
    values = rng.gamma(2.0, 1.5, size=grid.shape)
    values[0, 0, 0] = 0.0
    return grid.with_array(values, Kind.DOSE)


# ----------------------------------------------------------------------------- RT Dose
def test_rtdose_round_trip_on_ct(tmp_path, ct_series):
    files, ct, ident = ct_series
    dose = _dose_on(ct)
    out = write_rtdose(dose, tmp_path / "out" / "dose.dcm", reference_ct_files=files,
                       description="test dose")
    assert out.is_file()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp left

    ds = pydicom.dcmread(out)
    assert ds.Modality == "RTDOSE"
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.481.2"
    assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID
    assert ds.DoseUnits == "GY" and ds.DoseType == "PHYSICAL"
    # no plan: PLAN_OVERVIEW, its Plan Overview referencing every CT slice (PS3.3 C.8.8.3)
    assert ds.DoseSummationType == "PLAN_OVERVIEW" and "ReferencedRTPlanSequence" not in ds
    overview = ds.PlanOverviewSequence[0]
    assert overview.PlanOverviewIndex == 1 and overview.NumberOfFractionsIncluded == 1
    assert sorted(r.ReferencedSOPInstanceUID for r in overview.ReferencedImageSequence) == sorted(
        pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files)
    assert ds.BitsAllocated == 32 and ds.PixelRepresentation == 0
    assert int(ds.NumberOfFrames) == NZ and (ds.Rows, ds.Columns) == (NY, NX)
    assert ds.FrameIncrementPointer == 0x3004000C
    assert float(ds.GridFrameOffsetVector[0]) == 0.0
    np.testing.assert_allclose(np.asarray(ds.GridFrameOffsetVector, float),
                               np.arange(NZ) * SPACING_ZYX[0])
    np.testing.assert_allclose(np.asarray(ds.PixelSpacing, float), [SPACING_ZYX[1], SPACING_ZYX[2]])
    np.testing.assert_allclose(np.asarray(ds.ImagePositionPatient, float), ORIGIN_XYZ)
    assert float(ds.SliceThickness) == SPACING_ZYX[0]
    # identity copied from the CT
    assert ds.FrameOfReferenceUID == ident.FrameOfReferenceUID
    assert ds.StudyInstanceUID == ident.StudyInstanceUID
    assert ds.PatientID == "PD-0001" and str(ds.PatientName) == "Test^Phantom"
    assert ds.PatientBirthDate == "19700101" and ds.PatientSex == "O"
    assert ds.StudyDate == "20240102"
    assert ds.SeriesDescription == "test dose"
    # values with pydicom alone: pixel * scaling, maximum near the top of the 32-bit range
    scaling = float(ds.DoseGridScaling)
    raw = ds.pixel_array.astype(np.float64) * scaling
    assert ds.pixel_array.max() > 2**31
    assert np.max(np.abs(raw - dose.array)) <= 0.5 * scaling * (1 + 1e-9)

    back = read_rtdose(out)
    assert back.kind is Kind.DOSE and back.unit == "Gy"
    assert back.same_geometry(ct, tol_mm=1e-6)
    assert np.max(np.abs(back.array - dose.array)) / dose.array.max() < 1e-6


def test_rtdose_without_ct_uses_given_uids_and_patient(tmp_path, ct_series):
    _, ct, _ = ct_series
    dose = _dose_on(ct)
    out = write_rtdose(dose, tmp_path / "d.dcm", frame_of_reference_uid="1.2.3.4",
                       study_uid="1.2.3.5", patient={"PatientID": "X9", "PatientName": "A^B"},
                       summation_type="record")
    ds = pydicom.dcmread(out)
    assert ds.FrameOfReferenceUID == "1.2.3.4" and ds.StudyInstanceUID == "1.2.3.5"
    assert ds.PatientID == "X9" and ds.DoseSummationType == "RECORD"
    with pytest.raises(InputError, match="not a DICOM keyword"):
        write_rtdose(dose, tmp_path / "e.dcm", patient={"NoSuchKeyword": 1})
    with pytest.raises(InputError, match="summation_type"):
        write_rtdose(dose, tmp_path / "e.dcm", summation_type="WHATEVER")


def test_rtdose_conflicts_with_ct_are_refused(tmp_path, ct_series):
    files, ct, _ = ct_series
    dose = _dose_on(ct)
    with pytest.raises(GeometryError, match="frame_of_reference_uid"):
        write_rtdose(dose, tmp_path / "d.dcm", reference_ct_files=files,
                     frame_of_reference_uid="1.2.3")
    with pytest.raises(InputError, match="PatientID"):
        write_rtdose(dose, tmp_path / "d.dcm", reference_ct_files=files,
                     patient={"PatientID": "someone else"})
    # dose grid rotated by 90 degrees about z: not the CT's orientation
    rot = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    rotated = Grid(dose.array, dose.spacing_zyx_mm, dose.origin_xyz_mm, rot, Kind.DOSE)
    with pytest.raises(GeometryError, match="orientation"):
        write_rtdose(rotated, tmp_path / "d.dcm", reference_ct_files=files)
    assert not (tmp_path / "d.dcm").exists()


def test_rtdose_reversed_z_axis_is_written_in_normal_order(tmp_path):
    arr = np.random.default_rng(3).uniform(0, 5, size=(4, 3, 5))
    flip = np.diag([1.0, 1.0, -1.0])  # z index runs towards feet: left-handed grid
    dose = Grid(arr, (2.5, 1.0, 1.2), (10.0, -4.0, 30.0), flip, Kind.DOSE)
    back = read_rtdose(write_rtdose(dose, tmp_path / "d.dcm"))
    np.testing.assert_allclose(back.direction_xyz, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(back.origin_xyz_mm, dose.index_to_physical(np.array([3, 0, 0])))
    np.testing.assert_allclose(back.array, arr[::-1], atol=arr.max() * 1e-9)


def test_rtdose_coronal_grid_round_trip(tmp_path):
    arr = np.random.default_rng(4).uniform(0, 2, size=(5, 4, 6))
    coronal = np.column_stack([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])  # x, y, z index axes
    dose = Grid(arr, (4.0, 2.0, 1.5), (-7.0, 12.0, 50.0), coronal, Kind.DOSE)
    out = write_rtdose(dose, tmp_path / "cor.dcm")
    np.testing.assert_allclose(np.asarray(pydicom.dcmread(out).ImageOrientationPatient, float),
                               [1, 0, 0, 0, 0, -1])
    back = read_rtdose(out)
    assert back.same_geometry(dose, tol_mm=1e-9)
    np.testing.assert_allclose(back.array, arr, atol=arr.max() * 1e-9)


def test_rtdose_all_zero_dose(tmp_path, ct_series):
    _, ct, _ = ct_series
    back = read_rtdose(write_rtdose(ct.with_array(np.zeros(ct.shape), Kind.DOSE), tmp_path / "z.dcm"))
    assert back.shape == ct.shape and not back.array.any()


@pytest.mark.parametrize("bad, match", [(np.nan, "NaN"), (-0.5, "negative"), (np.inf, "NaN")])
def test_rtdose_rejects_nan_and_negative(tmp_path, ct_series, bad, match):
    _, ct, _ = ct_series
    values = _dose_on(ct).array.copy()
    values[3, 4, 5] = bad
    with pytest.raises(InputError, match=match):
        write_rtdose(ct.with_array(values, Kind.DOSE), tmp_path / "bad.dcm")
    assert not (tmp_path / "bad.dcm").exists()
    assert list(tmp_path.glob(".bad.dcm*")) == []


def test_rtdose_rejects_non_dose_grid(tmp_path, ct_series):
    _, ct, _ = ct_series
    with pytest.raises(InputError, match="kind"):
        write_rtdose(ct, tmp_path / "ct_as_dose.dcm")


def test_read_pydicom_rtdose_sample():
    path = get_testdata_file("rtdose.dcm")
    ds = pydicom.dcmread(path)
    with pytest.warns(UserWarning, match="RELATIVE"):
        grid = read_rtdose(path)
    assert grid.kind is Kind.DOSE
    assert grid.shape == (15, 10, 10)
    assert grid.spacing_zyx_mm == (5.0, 10.0, 10.0)
    np.testing.assert_allclose(grid.origin_xyz_mm, [189.43125, 199.43125, -761.87])
    np.testing.assert_allclose(grid.direction_xyz, np.eye(3))
    by_hand = ds.pixel_array.astype(np.float64) * float(ds.DoseGridScaling)
    assert grid.array.max() == pytest.approx(by_hand.max())
    assert grid.array.max() == pytest.approx(1254000 * 1e-6)
    np.testing.assert_array_equal(grid.array, by_hand)
    # last frame centre: IPP + last offset along the normal
    np.testing.assert_allclose(grid.index_to_physical(np.array([14, 0, 0])),
                               [189.43125, 199.43125, -761.87 + 70.0])


def test_read_rtdose_absolute_frame_offsets(tmp_path):
    """PS3.3 C.8.8.3.2: a first offset that is not zero means absolute z positions."""
    ds = pydicom.dcmread(get_testdata_file("rtdose.dcm"))
    ds.DoseUnits = "GY"
    z0 = float(ds.ImagePositionPatient[2])
    ds.GridFrameOffsetVector = [z0 + 5.0 * k for k in range(15)]
    ds.save_as(tmp_path / "abs.dcm")
    grid = read_rtdose(tmp_path / "abs.dcm")
    assert grid.unit == "Gy"
    assert grid.spacing_zyx_mm == pytest.approx((5.0, 10.0, 10.0))
    np.testing.assert_allclose(grid.origin_xyz_mm, [189.43125, 199.43125, -761.87])
    # the absolute interpretation is only defined for the transverse orientation
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    ds.save_as(tmp_path / "abs_coronal.dcm")
    with pytest.raises(DicomError, match="absolute GridFrameOffsetVector"):
        read_rtdose(tmp_path / "abs_coronal.dcm")
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    # uneven frames cannot make a grid
    ds.GridFrameOffsetVector = [0.0, 5.0, 12.0] + [12.0 + 5.0 * k for k in range(1, 13)]
    ds.save_as(tmp_path / "uneven.dcm")
    with pytest.raises(DicomError, match="evenly"):
        read_rtdose(tmp_path / "uneven.dcm")


# ----------------------------------------------------------------------------- RT Struct
def _slice_z(k: float) -> float:
    return ORIGIN_XYZ[2] + k * SPACING_ZYX[0]


def _square(x0, x1, y0, y1, z):
    return [x0, y0, z, x1, y0, z, x1, y1, z, x0, y1, z]


def _circle(cx, cy, r, z, n=64):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.column_stack([cx + r * np.cos(t), cy + r * np.sin(t), np.full(n, z)]).ravel().tolist()


def make_rtstruct(path: Path, frame_uid: str, rois: list[tuple[str, list[list[float]]]],
                  roi_frame_uid: str | None = None) -> Path:
    """Write an RT Structure Set with CLOSED_PLANAR contours (one list of points each)."""
    sop = generate_uid()
    ds = Dataset()
    ds.file_meta = _file_meta(RTSTRUCT_STORAGE, sop)
    ds.SOPClassUID, ds.SOPInstanceUID = RTSTRUCT_STORAGE, sop
    ds.Modality = "RTSTRUCT"
    ds.PatientID, ds.PatientName = "PD-0001", "Test^Phantom"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.StructureSetLabel = "test"
    ref = Dataset()
    ref.FrameOfReferenceUID = frame_uid
    ds.ReferencedFrameOfReferenceSequence = Sequence([ref])
    ss_rois, roi_contours = [], []
    for number, (name, contours) in enumerate(rois, start=1):
        item = Dataset()
        item.ROINumber, item.ROIName = number, name
        item.ReferencedFrameOfReferenceUID = roi_frame_uid or frame_uid
        item.ROIGenerationAlgorithm = "MANUAL"
        ss_rois.append(item)
        rc = Dataset()
        rc.ReferencedROINumber = number
        rc.ROIDisplayColor = [255, 0, 0]
        seq = []
        for pts in contours:
            c = Dataset()
            c.ContourGeometricType = "CLOSED_PLANAR"
            c.NumberOfContourPoints = len(pts) // 3
            c.ContourData = [round(float(v), 6) for v in pts]
            seq.append(c)
        rc.ContourSequence = Sequence(seq)
        roi_contours.append(rc)
    ds.StructureSetROISequence = Sequence(ss_rois)
    ds.ROIContourSequence = Sequence(roi_contours)
    ds.save_as(path, enforce_file_format=True)
    return path


# Square edges half-way between voxel centres: x centres -20 + 2 i, y centres 35.5 + 1.5 j.
SQUARE_X = (-20 + 2 * 3 - 1, -20 + 2 * 8 + 1)  # i = 3..8 -> 6 columns
SQUARE_Y = (35.5 + 1.5 * 2 - 0.75, 35.5 + 1.5 * 6 + 0.75)  # j = 2..6 -> 5 rows
SQUARE_SLICES = (2, 3, 4, 5)
CIRCLE_C = (-20 + 2 * 11, 35.5 + 1.5 * 10)
CIRCLE_R = 6.0
CIRCLE_SLICES = (6, 7, 8)


@pytest.fixture()
def rtstruct(tmp_path, ct_series):
    files, ct, ident = ct_series
    square = [_square(*SQUARE_X, *SQUARE_Y, _slice_z(k) + 0.4) for k in SQUARE_SLICES]
    circle = [_circle(*CIRCLE_C, CIRCLE_R, _slice_z(k) - 0.4) for k in CIRCLE_SLICES]
    # a ring: outer square with an inner square hole on slice 1 (even-odd rule)
    ring = [_square(-19.0 + 0, -19.0 + 2 * 8, 35.5 - 0.75, 35.5 + 1.5 * 7 + 0.75, _slice_z(1)),
            _square(-19.0 + 2 * 2, -19.0 + 2 * 5, 35.5 + 1.5 * 2 - 0.75, 35.5 + 1.5 * 4 + 0.75,
                    _slice_z(1))]
    path = make_rtstruct(tmp_path / "rs.dcm", ident.FrameOfReferenceUID,
                         [("Square", square), ("Circle", circle), ("Ring", ring)])
    return path, ct, ident


def test_rtstruct_rasterises_square_circle_and_hole(rtstruct):
    path, ct, ident = rtstruct
    labels, names = rtstruct_to_labels(path, ct,
                                       reference_frame_of_reference_uid=ident.FrameOfReferenceUID)
    assert names == {1: "Square", 2: "Circle", 3: "Ring"}
    assert labels.kind is Kind.LABELS and labels.array.dtype == np.uint16
    assert labels.same_geometry(ct)
    arr = labels.array
    # square: exactly 6 x 5 voxels on each of its 4 slices, at the expected place
    expected = np.zeros(ct.shape, bool)
    expected[list(SQUARE_SLICES), 2:7, 3:9] = True
    np.testing.assert_array_equal(arr == 1, expected)
    # circle: the voxels whose centres are inside the true circle, except those within
    # 0.01 mm of the circle (the 64-gon departs from the circle by < 0.008 mm)
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in ct.shape], indexing="ij")
    pts = ct.index_to_physical(np.stack([zz, yy, xx], -1))
    dist = np.hypot(pts[..., 0] - CIRCLE_C[0], pts[..., 1] - CIRCLE_C[1])
    on_slices = np.isin(zz, CIRCLE_SLICES)
    truth = on_slices & (dist < CIRCLE_R)
    sure = np.abs(dist - CIRCLE_R) > 0.01
    assert np.array_equal((arr == 2)[sure], truth[sure])
    per_slice = (arr == 2).sum(axis=(1, 2))[list(CIRCLE_SLICES)]
    area_vox = np.pi * CIRCLE_R**2 / (SPACING_ZYX[1] * SPACING_ZYX[2])
    assert np.all(np.abs(per_slice - area_vox) < 0.15 * area_vox)
    # ring: outer 8 x 8 minus inner 3 x 3 on slice 1 only
    # (outer: columns i = 1..8, rows j = 0..7; inner hole: i = 3..5, j = 2..4)
    ring = np.zeros(ct.shape, bool)
    ring[1, 0:8, 1:9] = True
    ring[1, 2:5, 3:6] = False
    np.testing.assert_array_equal(arr == 3, ring)
    assert (arr == 3).sum() == 8 * 8 - 3 * 3


def test_rtstruct_roi_selection_order_and_overlap(tmp_path, ct_series):
    files, ct, ident = ct_series
    big = [_square(-21, 11, 34, 60, _slice_z(3))]
    small = [_square(-15, -3, 37.75, 45.25, _slice_z(3))]
    path = make_rtstruct(tmp_path / "ov.dcm", ident.FrameOfReferenceUID,
                         [("Big", big), ("Small", small)])
    with pytest.warns(UserWarning, match="overlaps"):
        labels, names = rtstruct_to_labels(path, ct)
    assert names == {1: "Big", 2: "Small"}
    assert (labels.array == 2).sum() == 30  # later ROI wins inside the small square
    assert (labels.array == 1).sum() == 16 * 16 - 30  # "Big" covers the whole slice 3
    # selection by name (case-insensitive fallback), user order gives the label numbers
    labels, names = rtstruct_to_labels(path, ct, roi_names=["small"])
    assert names == {1: "Small"} and (labels.array == 1).sum() == 30
    with pytest.warns(UserWarning, match="overlaps"):
        labels, names = rtstruct_to_labels(path, ct, roi_names=["Small", "Big"])
    assert names == {1: "Small", 2: "Big"} and (labels.array == 1).sum() == 0
    with pytest.raises(InputError, match="Liver"):
        rtstruct_to_labels(path, ct, roi_names=["Liver"])


def test_rtstruct_frame_of_reference_mismatch(rtstruct):
    path, ct, _ = rtstruct
    with pytest.raises(GeometryError, match="frame of reference"):
        rtstruct_to_labels(path, ct, reference_frame_of_reference_uid=generate_uid())


def test_rtstruct_contours_outside_grid_warn(tmp_path, ct_series):
    files, ct, ident = ct_series
    path = make_rtstruct(tmp_path / "far.dcm", ident.FrameOfReferenceUID,
                         [("Far", [_square(-15, -3, 37.75, 45.25, _slice_z(40))])])
    with pytest.warns(UserWarning, match="outside"):
        labels, names = rtstruct_to_labels(path, ct)
    assert names == {1: "Far"} and not labels.array.any()


def test_rtstruct_pydicom_sample_without_preamble():
    """pydicom's rtstruct.dcm has no File Meta header; its 'patient' ROI is a 400 x 300 mm
    rectangle on z = -200, -190, -180; the two isocentres are POINT contours."""
    path = get_testdata_file("rtstruct.dcm")
    # 10 mm voxels with centres at -245 + 10 i (x) and -195 + 10 j (y): edges fall between
    ref = Grid(np.zeros((3, 40, 50)), (10.0, 10.0, 10.0), (-245.0, -195.0, -200.0), np.eye(3),
               Kind.CT)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        labels, names = rtstruct_to_labels(
            path, ref, reference_frame_of_reference_uid="1.2.826.0.1.3680043.8.498.2010020400001.2")
    messages = [str(w.message) for w in caught]
    assert sum("'Isocenter 1'" in m and "not closed planar" in m for m in messages) == 1
    assert not any("'patient'" in m for m in messages)
    assert names == {1: "patient", 2: "Isocenter 1", 3: "Isocenter 2"}
    assert (labels.array == 1).sum(axis=(1, 2)).tolist() == [40 * 30] * 3
    assert labels.array[:, 5:35, 5:45].min() == 1 and labels.array[:, :5].max() == 0


def test_write_rtstruct_round_trip(tmp_path, ct_series):
    """Outlines half-way between voxel centres redraw to the same label map, holes,
    diagonal-only contacts (saddles) and several islands per slice included."""
    from scipy import ndimage

    files, ct, ident = ct_series
    rng = np.random.default_rng(5)
    lab = np.zeros(ct.shape, np.uint16)
    lab[ndimage.gaussian_filter(rng.normal(size=ct.shape), 1.2) > 0.05] = 2
    lab[2:6, 3:9, 4:10] = 5
    lab[3, 5, 6] = 0  # a one-voxel hole
    lab[7, 1, 1] = lab[7, 2, 2] = 5  # touching only at a corner
    out = write_rtstruct(ct.with_array(lab, Kind.LABELS), {2: "blob", 5: "box"},
                         tmp_path / "rs.dcm", files)
    ds = pydicom.dcmread(out)
    assert ds.Modality == "RTSTRUCT" and ds.PatientID == "PD-0001"
    assert ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID == ident.FrameOfReferenceUID
    back, names = rtstruct_to_labels(out, ct,
                                     reference_frame_of_reference_uid=ident.FrameOfReferenceUID)
    assert names == {1: "blob", 2: "box"}
    expected = np.select([lab == 2, lab == 5], [1, 2], 0)
    np.testing.assert_array_equal(back.array, expected)


# ----------------------------------------------------------------------------- SEG
def _two_labels(ct: Grid) -> Grid:
    lab = np.zeros(ct.shape, np.uint16)
    lab[2:6, 3:9, 4:10] = 1
    lab[5:8, 10:14, 2:6] = 7  # label values need not be consecutive
    lab[9, 0, 0] = 7
    return ct.with_array(lab, Kind.LABELS)


def test_seg_round_trip_exact(tmp_path, ct_series):
    files, ct, ident = ct_series
    labels = _two_labels(ct)
    out = write_seg(labels, {1: "liver", 7: "left kidney"}, tmp_path / "seg.dcm", files)
    ds = pydicom.dcmread(out)
    assert ds.Modality == "SEG" and ds.SegmentationType == "BINARY"
    assert ds.FrameOfReferenceUID == ident.FrameOfReferenceUID
    assert ds.StudyInstanceUID == ident.StudyInstanceUID
    assert [s.SegmentLabel for s in ds.SegmentSequence] == ["liver", "left kidney"]
    back, names = read_seg(out)
    assert names == {1: "liver", 7: "left kidney"}
    assert back.kind is Kind.LABELS and back.array.dtype == np.uint16
    assert back.same_geometry(ct, tol_mm=1e-6)
    np.testing.assert_array_equal(back.array, labels.array)
    on_ref, _ = read_seg(out, reference=ct)
    np.testing.assert_array_equal(on_ref.array, labels.array)


def test_seg_from_cropped_labels_and_off_lattice(tmp_path, ct_series):
    files, ct, _ = ct_series
    full = _two_labels(ct)
    crop_origin = ct.index_to_physical(np.array([2.0, 3.0, 2.0]))
    crop = Grid(full.array[2:8, 3:14, 2:10], ct.spacing_zyx_mm, crop_origin, np.eye(3), Kind.LABELS)
    back, _ = read_seg(write_seg(crop, {1: "a", 7: "b"}, tmp_path / "c.dcm", files))
    expected = full.array.copy()
    expected[9, 0, 0] = 0  # outside the crop
    np.testing.assert_array_equal(back.array, expected)
    shifted = Grid(full.array, ct.spacing_zyx_mm, np.add(ct.origin_xyz_mm, (1.0, 0, 0)),
                   np.eye(3), Kind.LABELS)
    with pytest.raises(GeometryError, match="do not lie on"):
        write_seg(shifted, {1: "a", 7: "b"}, tmp_path / "s.dcm", files)
    with pytest.raises(InputError, match="without a name"):
        write_seg(full, {1: "a"}, tmp_path / "n.dcm", files)
    assert not (tmp_path / "s.dcm").exists() and not (tmp_path / "n.dcm").exists()


@pytest.mark.parametrize("writer", [write_seg, write_rtstruct])
@pytest.mark.parametrize("case", ["names keyed by text", "NaN label", "negative label", "no names"])
def test_label_writers_refuse_bad_labels_alike(tmp_path, ct_series, writer, case):
    """SEG and RTSTRUCT share one check of the label map and its names (InputError, nothing written)."""
    files, ct, _ = ct_series
    lab = _two_labels(ct).array.astype(np.float32)
    names = {1: "a", 7: "b"}
    if case == "names keyed by text":
        names = {"liver": "a", 7: "b"}
    elif case == "NaN label":
        lab[0, 0, 0] = np.nan
    elif case == "negative label":
        lab[0, 0, 0] = -1
    else:
        names = {}
    with pytest.raises(InputError, match="integers|non-integer|negative|no label names"):
        writer(ct.with_array(lab, Kind.LABELS), names, tmp_path / "x.dcm", files)
    assert not (tmp_path / "x.dcm").exists()


# ----------------------------------------------------------------------------- bad files
def test_bad_files_raise_dicom_error(tmp_path, ct_series):
    files, ct, _ = ct_series
    text = tmp_path / "notes.dcm"
    text.write_text("this is not DICOM\n")
    for reader in (read_rtdose, lambda p: read_seg(p), lambda p: rtstruct_to_labels(p, ct)):
        with pytest.raises(DicomError, match="notes.dcm"):
            reader(text)
        with pytest.raises(DicomError, match="ct_0"):
            reader(files[0])  # a CT image is none of these
        with pytest.raises(InputError, match="missing.dcm"):
            reader(tmp_path / "missing.dcm")
    with pytest.raises(DicomError, match="notes.dcm"):
        write_rtdose(_dose_on(ct), tmp_path / "d.dcm", reference_ct_files=[str(text)])
    with pytest.raises(DicomError, match="notes.dcm"):
        write_seg(_two_labels(ct), {1: "a", 7: "b"}, tmp_path / "s.dcm", [str(text)])
    dose = write_rtdose(_dose_on(ct), tmp_path / "dose.dcm")
    with pytest.raises(DicomError, match="not a DICOM Segmentation"):
        read_seg(dose)
