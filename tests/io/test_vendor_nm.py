"""Vendor layouts of emission DICOM (issue 18): each fixture is written by persodose and then
edited into the layout one vendor uses (the conventions are cited in persodose.io.vendor):

* Siemens xSPECT-like NM: counts with a Real World Value Mapping to Bq/ml after an SUV one;
* GE Q.Metrix-like SPECT stored as PT (Lu-177, Bq/mL, no decay correction), and a GE
  post-processed PET whose Series Time is after the acquisition (private Scan DateTime);
* Philips PET in counts with the Activity Concentration Scale Factor (7053,1009);
* multi-bed and continuous-bed-motion PET (per-slice acquisition times and durations);
* missing or inconsistent acquisition times: one-line messages, ``times_h`` overrides.
"""

from __future__ import annotations

import datetime
import math
import warnings

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from persodose.errors import InputError, UnitsError
from persodose.grid import Grid, Kind
from persodose.io.dicom import DicomWarning, read_nm, read_pet
from persodose.io.dicom_write import PatientInfo, new_uid, write_nm_tomo, write_pet_series
from persodose.io.emission import MAX_SERIES_SPAN_S, load_time_points

ACQ = datetime.datetime(2024, 5, 7, 10, 0, 0)
INJ = datetime.datetime(2024, 5, 6, 9, 0, 0)  # Lu-177: 25 h before the scan
F18_INJ = datetime.datetime(2024, 5, 7, 9, 0, 0)
LU177_HALF_LIFE_S = 6.647 * 86400.0  # test input (ICRP-107: 6.647 d)
F18_HALF_LIFE_S = 6586.2  # test input (ICRP-107: 109.77 min)
PATIENT = PatientInfo(patient_id="V18", weight_kg=70.0, height_m=1.75, sex="M", age_y=60)


def _grid(kind, nz=6, n=12, scale=1.0, seed=4):
    rng = np.random.default_rng(seed)
    arr = rng.poisson(50.0, (nz, n, n)).astype(np.float32) * scale
    return Grid(arr, (4.0, 4.0, 4.0), (-24.0, -24.0, -12.0), kind=kind)


def _pet(out, grid=None, nuclide="F-18", half_life=F18_HALF_LIFE_S, inj=F18_INJ, **kw):
    grid = grid if grid is not None else _grid(Kind.ACTIVITY_CONCENTRATION, scale=100.0)
    args = dict(patient=PATIENT, study_uid=new_uid(), frame_of_reference_uid=new_uid(),
                acquisition_datetime=ACQ, frame_duration_s=180.0, radionuclide=nuclide,
                injected_activity_bq=3.0e8, injection_datetime=inj, half_life_s=half_life)
    args.update(kw)
    return grid, write_pet_series(grid, out, **args)


def _nm(out, grid, **kw):
    args = dict(patient=PATIENT, study_uid=new_uid(), frame_of_reference_uid=new_uid(),
                acquisition_datetime=ACQ, frame_duration_s=1200.0, radionuclide="Lu-177",
                half_life_s=LU177_HALF_LIFE_S, injected_activity_bq=7.4e9, injection_datetime=INJ)
    args.update(kw)
    return write_nm_tomo(grid, out, **args)


def _rwvm_item(unit: str, slope: float) -> Dataset:
    """A Real World Value Mapping item (PS3.3 C.7.6.16.2.11) with a UCUM unit."""
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = unit, "UCUM", unit
    item = Dataset()
    item.LUTExplanation, item.LUTLabel = unit, unit[:16]
    item.RealWorldValueFirstValueMapped, item.RealWorldValueLastValueMapped = 0, 65535
    item.RealWorldValueIntercept, item.RealWorldValueSlope = 0.0, slope
    item.MeasurementUnitsCodeSequence = Sequence([code])
    return item


def _set_times(path, when: datetime.datetime, duration_ms: int | None = None):
    ds = pydicom.dcmread(path)
    ds.AcquisitionDate, ds.AcquisitionTime = when.strftime("%Y%m%d"), when.strftime("%H%M%S.%f")
    if "AcquisitionDateTime" in ds:
        del ds.AcquisitionDateTime
    if duration_ms is not None:
        ds.ActualFrameDuration = duration_ms
    ds.save_as(path)


# ---------------------------------------------------------------------------- Siemens NM + RWVM
@pytest.mark.parametrize("unit, factor", [("Bq/ml", 1.0), ("kBq/ml", 1e-3)])
def test_siemens_nm_real_world_value_mapping_after_an_suv_item(tmp_path, unit, factor):
    """xSPECT-like: NM in counts (no Units: the NM IOD has none) with an SUV mapping first
    and the Bq/ml (or kBq/ml) mapping second; the activity mapping is the one read."""
    counts = _grid(Kind.COUNTS)
    path = _nm(tmp_path / "nm.dcm", counts)
    ds = pydicom.dcmread(path)
    ds.Manufacturer = "SIEMENS NM"
    if "Units" in ds:
        del ds.Units
    ds.RealWorldValueMappingSequence = Sequence([_rwvm_item("g/ml{SUVbw}", 1e-4), _rwvm_item(unit, 12.5 * factor)])
    ds.save_as(path)
    s = read_nm(path)
    assert s.grid.kind is Kind.ACTIVITY_CONCENTRATION and s.info.units == "Bq/mL"
    np.testing.assert_allclose(s.grid.array, counts.array * 12.5, rtol=1e-6)


def test_nm_with_only_an_suv_mapping_is_counts_with_a_warning(tmp_path):
    counts = _grid(Kind.COUNTS)
    path = _nm(tmp_path / "nm.dcm", counts)
    ds = pydicom.dcmread(path)
    ds.RealWorldValueMappingSequence = Sequence([_rwvm_item("g/ml{SUVbw}", 1e-4)])
    ds.save_as(path)
    with pytest.warns(DicomWarning, match="g/ml{SUVbw}.*read as counts"):
        s = read_nm(path)
    assert s.grid.kind is Kind.COUNTS
    with pytest.raises(InputError, match="in counts: give the camera's calibration"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DicomWarning)
            load_time_points([path], "Lu-177")


# ---------------------------------------------------------------------------- GE
def test_ge_spect_stored_as_pt_reads_as_activity_at_mid_scan(tmp_path):
    """Q.Metrix-like: Lu-177 SPECT exported as PT in Bq/mL without decay correction; the
    time point is mid-acquisition after injection and the activity is the image's."""
    conc = _grid(Kind.ACTIVITY_CONCENTRATION, scale=250.0)
    _, files = _pet(tmp_path / "qmetrix", grid=conc, nuclide="Lu-177", half_life=LU177_HALF_LIFE_S, inj=INJ,
                    frame_duration_s=1200.0, decay_correction="NONE", series_description="Q.Metrix SPECT")
    for f in files:
        ds = pydicom.dcmread(f)
        ds.Manufacturer = "GE MEDICAL SYSTEMS"
        ds.save_as(f)
    points, injection = load_time_points([tmp_path / "qmetrix"], "Lu-177")
    (tp,) = points
    assert injection == INJ and tp.info.modality == "PT"
    assert tp.time_s == pytest.approx((ACQ - INJ).total_seconds() + 600.0)
    voxel_ml = 4.0 ** 3 / 1000.0
    assert tp.activity.total() == pytest.approx(float(conc.array.sum(dtype=np.float64)) * voxel_ml, rel=1e-3)


def _add_ge_scan_datetime(ds, when: datetime.datetime):
    block = ds.private_block(0x0009, "GEMS_PETD_01", create=True)
    block.add_new(0x0D, "DT", when.strftime("%Y%m%d%H%M%S.%f"))


def test_ge_post_processed_pet_uses_the_private_scan_datetime(tmp_path):
    """Series Time after the Acquisition Time (a post-processed series): the scan start,
    which START decay correction refers to without a Decay Correction DateTime, is GE's
    private Scan DateTime (0009,100D) (QIBA SUV pseudo-code)."""
    _, files = _pet(tmp_path / "ge")
    for f in files:
        ds = pydicom.dcmread(f)
        ds.Manufacturer = "GE MEDICAL SYSTEMS"
        del ds.DecayCorrectionDateTime
        late = ACQ + datetime.timedelta(hours=2)
        ds.SeriesTime = late.strftime("%H%M%S")
        ds.AcquisitionTime = (ACQ + datetime.timedelta(minutes=30)).strftime("%H%M%S")
        if "AcquisitionDateTime" in ds:
            del ds.AcquisitionDateTime
        _add_ge_scan_datetime(ds, ACQ)
        ds.save_as(f)
    info = read_pet(tmp_path / "ge").info
    assert info.decay_correction_datetime == ACQ
    assert "GE private" in info.extra["scan_start_source"]
    decayed = 3.0e8 * 2.0 ** (-(ACQ - F18_INJ).total_seconds() / F18_HALF_LIFE_S)
    assert info.suv_bw_factor == pytest.approx(70.0e3 / decayed, rel=1e-9)
    # without the private tag: the earliest acquisition time, 30 min later
    for f in files:
        ds = pydicom.dcmread(f)
        del ds[0x0009, 0x100D]
        ds.save_as(f)
    assert read_pet(tmp_path / "ge").info.decay_correction_datetime == ACQ + datetime.timedelta(minutes=30)


# ---------------------------------------------------------------------------- Philips
def _philips_counts(files, factor: float, skip: int | None = None):
    """Units CNTS: the Rescale Slope divided by ``factor`` and the factor in (7053,1009)."""
    for k, f in enumerate(files):
        ds = pydicom.dcmread(f)
        ds.Manufacturer = "Philips Medical Systems"
        ds.Units = "CNTS"
        ds.RescaleSlope = f"{float(ds.RescaleSlope) / factor:.10g}"
        if k != skip:
            block = ds.private_block(0x7053, "Philips PET Private Group", create=True)
            block.add_new(0x09, "DS", f"{factor:.10g}")
            block.add_new(0x00, "DS", "0.000233")
        ds.save_as(f)


def test_philips_counts_with_activity_concentration_scale_factor(tmp_path):
    grid, files = _pet(tmp_path / "philips")
    _philips_counts(files, 37.5)
    s = read_pet(tmp_path / "philips")
    assert s.grid.kind is Kind.ACTIVITY_CONCENTRATION and s.info.units == "Bq/mL"
    assert "7053,1009" in s.info.extra["units_source"]
    tol = float(grid.array.max()) / 32767.0  # one stored step of the writer
    assert np.max(np.abs(s.grid.array - grid.array)) <= tol
    assert s.info.suv_bw_factor is not None


def test_philips_counts_missing_the_factor_on_one_slice_refused(tmp_path):
    _, files = _pet(tmp_path / "philips")
    _philips_counts(files, 37.5, skip=2)
    with pytest.raises(UnitsError, match=r"1 of 6 slices .* lack the Philips Activity Concentration Scale Factor"):
        read_pet(tmp_path / "philips")


# ---------------------------------------------------------------------------- multi-bed, CBM
def _two_beds(files, gap_s: float, duration_s: float = 180.0):
    for k, f in enumerate(files):
        _set_times(f, ACQ + datetime.timedelta(seconds=gap_s if k >= len(files) // 2 else 0.0),
                   int(duration_s * 1000))


@pytest.mark.parametrize("decay_correction", ["START", "NONE"])
def test_multi_bed_pet_is_one_time_point_at_the_middle_of_all_beds(tmp_path, decay_correction):
    """Two beds of 180 s, the second starting 180 s after the first: the time point is the
    middle of the 360 s; START images (both beds corrected to the scan start) get one
    factor, NONE images each bed its own (from the bed's mid-frame to the common time)."""
    conc, files = _pet(tmp_path / "wb", decay_correction=decay_correction)
    _two_beds(files, 180.0)
    (tp,), _ = load_time_points([tmp_path / "wb"], "F-18")
    mid = ACQ + datetime.timedelta(seconds=180.0)
    assert tp.time_s == pytest.approx((mid - F18_INJ).total_seconds())
    assert tp.duration_s == pytest.approx(360.0)
    assert tp.info.extra["bed_positions"] == 2
    lam = math.log(2.0) / F18_HALF_LIFE_S  # persodose's F-18 half-life equals the file's
    got = tp.activity.array / (4.0 ** 3 / 1000.0)
    if decay_correction == "START":
        expect = conc.array * math.exp(-lam * 180.0)
    else:  # bed 1 mid at +90 s, bed 2 at +270 s, both brought to +180 s
        f = np.where(np.arange(conc.shape[0]) >= conc.shape[0] // 2, math.exp(lam * 90.0), math.exp(-lam * 90.0))
        expect = conc.array * f[:, None, None]
    tol = float(conc.array.max()) / 32767.0
    assert np.max(np.abs(got - expect)) <= tol


def test_continuous_bed_motion_pet_uses_each_slices_time_and_duration(tmp_path):
    """FlowMotion-like: every slice its own acquisition time (20 s apart) and duration
    (60 to 110 s): the acquisition runs from the first start to the latest end."""
    _, files = _pet(tmp_path / "cbm")
    durations = [60.0, 70.0, 80.0, 90.0, 100.0, 110.0]
    for k, f in enumerate(files):
        _set_times(f, ACQ + datetime.timedelta(seconds=20.0 * k), int(durations[k] * 1000))
    (tp,), _ = load_time_points([tmp_path / "cbm"], "F-18")
    end = max(20.0 * k + d for k, d in enumerate(durations))  # 210 s
    assert tp.duration_s == pytest.approx(end)
    assert tp.time_s == pytest.approx((ACQ - F18_INJ).total_seconds() + end / 2.0)
    assert tp.info.extra["bed_positions"] == 6


# ---------------------------------------------------------------------------- missing/inconsistent times
def _strip_times(path):
    ds = pydicom.dcmread(path)
    for kw in ("AcquisitionDateTime", "AcquisitionDate", "AcquisitionTime", "SeriesDate", "SeriesTime"):
        if kw in ds:
            delattr(ds, kw)
    ds.save_as(path)


def test_missing_acquisition_time_is_one_line_and_times_h_overrides(tmp_path):
    conc = _grid(Kind.ACTIVITY_CONCENTRATION, scale=1000.0)
    path = _nm(tmp_path / "nm.dcm", conc, units="Bq/mL")
    _strip_times(path)
    with pytest.raises(InputError) as exc:
        load_time_points([path], "Lu-177")
    msg = str(exc.value)
    assert "\n" not in msg and "no acquisition date/time" in msg and "--times-h" in msg
    (tp,), injection = load_time_points([path], "Lu-177", times_h=[24.0])
    assert tp.time_s == pytest.approx(24 * 3600.0) and injection == INJ
    with pytest.raises(InputError, match="time after injection must be positive"):
        load_time_points([path], "Lu-177", times_h=[0.0])


def test_beds_hours_apart_refused_unless_times_are_given(tmp_path):
    _, files = _pet(tmp_path / "mixed")
    _two_beds(files, MAX_SERIES_SPAN_S + 3600.0)
    with pytest.raises(InputError) as exc:
        load_time_points([tmp_path / "mixed"], "F-18")
    msg = str(exc.value)
    assert "\n" not in msg and "too long for one scan" in msg and "--times-h" in msg
    (tp,), _ = load_time_points([tmp_path / "mixed"], "F-18", times_h=[1.5])
    assert tp.time_s == pytest.approx(5400.0)


def test_scan_before_injection_says_how_to_override(tmp_path):
    _, files = _pet(tmp_path / "early", inj=ACQ + datetime.timedelta(hours=1))
    with pytest.raises(InputError, match=r"acquired before the injection .*--injection-time.*--times-h"):
        load_time_points([tmp_path / "early"], "F-18")
