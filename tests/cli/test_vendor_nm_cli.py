"""``persodose internal`` on vendor emission DICOM whose acquisition time is missing
(issue 18): one line and exit code 2 naming the override, and ``--times-h`` as the override."""

from __future__ import annotations

import datetime
import json

import numpy as np
import pydicom

from persodose.grid import Grid, Kind
from persodose.io.dicom_write import PatientInfo, new_uid, write_ct_series, write_nm_tomo
from tests.cli.test_cli import assert_clean_error

ACQ = datetime.datetime(2024, 5, 7, 10, 0, 0)
INJ = datetime.datetime(2024, 5, 6, 10, 0, 0)


def _study(tmp_path):
    """A 8x16x16 CT of water and a Bq/mL SPECT on it whose times have been stripped."""
    patient = PatientInfo(patient_id="V18", weight_kg=70.0)
    study, frame = new_uid(), new_uid()
    ct = Grid(np.zeros((8, 16, 16), np.float32), (6.0, 6.0, 6.0), (-45.0, -45.0, -21.0), kind=Kind.CT)
    write_ct_series(ct, tmp_path / "ct", patient=patient, study_uid=study, frame_of_reference_uid=frame,
                    acquisition_datetime=ACQ)
    conc = np.zeros((8, 16, 16), np.float32)
    conc[3:5, 6:10, 6:10] = 5.0e4
    nm = write_nm_tomo(Grid(conc, (6.0, 6.0, 6.0), (-45.0, -45.0, -21.0), kind=Kind.ACTIVITY_CONCENTRATION),
                       tmp_path / "nm" / "nm.dcm", patient=patient, study_uid=study, frame_of_reference_uid=frame,
                       acquisition_datetime=ACQ, frame_duration_s=1200.0, radionuclide="Lu-177", units="Bq/mL",
                       injected_activity_bq=7.4e9, injection_datetime=INJ)
    ds = pydicom.dcmread(nm)
    for kw in ("AcquisitionDateTime", "AcquisitionDate", "AcquisitionTime", "SeriesDate", "SeriesTime"):
        if kw in ds:
            delattr(ds, kw)
    ds.save_as(nm)
    return tmp_path / "ct", tmp_path / "nm"


def test_missing_acquisition_time_is_a_clean_error_and_times_h_overrides(cli, tmp_path):
    ct, nm = _study(tmp_path)
    args = ("internal", "--ct", ct, "--emission", nm, "--nuclide", "Lu-177", "--method", "led")
    proc = cli(*args, "--out", tmp_path / "out")
    assert_clean_error(proc, "no acquisition date/time", "--times-h")
    assert not (tmp_path / "out").exists()  # nothing half-written
    proc = cli(*args, "--out", tmp_path / "out2", "--times-h", "24")
    assert proc.returncode == 0, proc.stderr
    # the workflow asks for RECORD; with no record to point to, the RT Dose is PLAN_OVERVIEW
    # with the CT's slices in its Plan Overview (docs/conformance.md)
    ds = pydicom.dcmread(tmp_path / "out2" / "dose_led_rtdose.dcm", stop_before_pixels=True)
    assert ds.DoseSummationType == "PLAN_OVERVIEW"
    assert len(ds.PlanOverviewSequence[0].ReferencedImageSequence) == 8
    assert json.loads((tmp_path / "out2" / "kinetics.json").read_text())["times_s"] == [24 * 3600.0]
