"""CT acquisition headers (persodose.io.ct_headers): raw values handed to the CT model."""

from __future__ import annotations

import ast
import dataclasses
import datetime
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from persodose.errors import DicomError, InputError
from persodose.grid import Kind, make_grid
from persodose.io import dicom_write as dw
from persodose.io.ct_headers import CTHeaders, read_ct_headers
from persodose.io.dicom import read_ct

NZ = 5
MA = [110.0, 150.5, 220.0, 180.25, 95.0]


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """A 5-slice CT written by persodose, read back with read_ct."""
    grid = make_grid((NZ, 6, 8), (5.0, 4.0, 3.0), origin_xyz_mm=(-10.0, 20.0, -40.0), kind=Kind.CT)
    grid = grid.with_array(np.zeros((NZ, 6, 8), np.float32))
    tags = {"kvp": 100, "spiral_pitch_factor": 1.375, "total_collimation_mm": 20.0, "rotation_time_s": 0.8,
            "filter_type": "HEAD FILTER", "xray_tube_current_ma": MA, "ctdivol_mgy": [3.0 + k for k in range(NZ)]}
    out = tmp_path_factory.mktemp("cth") / "ct"
    dw.write_ct_series(grid, out, patient=dw.PatientInfo(), study_uid=dw.new_uid(),
                       frame_of_reference_uid=dw.new_uid(),
                       acquisition_datetime=datetime.datetime(2024, 1, 2, 10, 0, 0), ct_tags=tags)
    return grid, read_ct(out)


def test_values_from_the_file_headers(series):
    grid, s = series
    h = read_ct_headers(s.info)  # no grid: slice positions and centre from the headers
    assert isinstance(h, CTHeaders)
    z_grid = grid.index_to_physical(np.array([[k, 0, 0] for k in range(NZ)], float))[:, 2]
    np.testing.assert_allclose(np.sort(h.slice_z_mm), z_grid)
    assert h.centre_xy_mm == pytest.approx((-10.0 + 3.0 * 7 / 2, 20.0 + 4.0 * 5 / 2))
    assert len(h.image_types) == NZ and all("AXIAL" in t for t in h.image_types)
    assert not h.holds_localizer
    assert (h.kvp, h.spiral_pitch_factor, h.total_collimation_mm, h.rotation_time_s) == (100, 1.375, 20.0, 0.8)
    assert h.filter_type == "HEAD FILTER"
    # per-slice values in the series' own slice order, one per slice
    assert isinstance(h.xray_tube_current_ma, tuple) and len(h.xray_tube_current_ma) == NZ
    by_z = dict(zip(np.round(h.slice_z_mm, 3), h.xray_tube_current_ma))
    assert [by_z[round(z, 3)] for z in z_grid] == pytest.approx(MA)
    assert h.exposure_mas is None and h.exposure_time_ms is None
    assert len(h.ctdivol_mgy) == NZ


def test_values_with_the_grid(series):
    grid, s = series
    h = read_ct_headers(s)  # a Series: positions from its grid, no file read
    np.testing.assert_allclose(h.slice_z_mm, grid.index_to_physical(
        np.array([[k, 0, 0] for k in range(NZ)], float))[:, 2])
    assert h.image_types == ()
    assert h.label == s.info.label()
    assert h.centre_xy_mm == pytest.approx(read_ct_headers(s.info).centre_xy_mm)


def test_one_value_for_the_series_stays_one_value():
    stub = SimpleNamespace(extra={"xray_tube_current_ma": 200.0, "kvp": 120.0}, modality="CT", files=[])
    h = read_ct_headers(stub)
    assert h.xray_tube_current_ma == 200.0 and h.kvp == 120.0
    assert h.label == "CT series" and h.slice_z_mm.size == 0 and h.centre_xy_mm is None
    assert h.filter_type == "" and h.ctdivol_mgy is None


def test_localizer_non_ct_and_unreadable_files(series, tmp_path):
    import pydicom

    _, s = series
    files = [Path(f) for f in s.info.files]
    copies = []
    for f in files:
        copies.append(tmp_path / f.name)
        copies[-1].write_bytes(f.read_bytes())
    ds = pydicom.dcmread(copies[1])
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.save_as(copies[1])
    assert read_ct_headers(dataclasses.replace(s.info, files=[str(c) for c in copies])).holds_localizer
    with pytest.raises(InputError, match="not a CT series"):
        read_ct_headers(dataclasses.replace(s.info, modality="PT"))
    (tmp_path / "bad.dcm").write_bytes(b"not dicom")
    with pytest.raises(DicomError, match="cannot read CT header"):
        read_ct_headers(dataclasses.replace(s.info, files=[str(tmp_path / "bad.dcm")]))


def test_ct_package_parses_no_dicom():
    """The CT model takes its header values from io/ (an I/O module does no physics and the
    physics does no I/O): no module of persodose.ct imports pydicom."""
    import persodose.ct

    offenders = []
    for path in Path(persodose.ct.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "pydicom"]
    assert not offenders
