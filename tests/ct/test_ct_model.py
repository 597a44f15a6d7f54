"""CT source model: spectra, bowties, scanner presets, DICOM acquisition, focal-spot trajectory."""

from __future__ import annotations

import dataclasses
import datetime
import math
import warnings

import numpy as np
import pytest

pytest.importorskip("spekpy")
pytest.importorskip("xraylib")

from persodose.ct import (CTAcquisitionWarning, acquisition_from_dicom, axial_positions,  # noqa: E402
                          bowtie_for_filter_type, filtration_for_hvl, get_scanner, helical_positions,
                          load_bowtie_csv, tube_spectrum)
from persodose.ct.bowtie import bowtie_from_table, filter_mu_per_mm, generic_bowtie  # noqa: E402
from persodose.ct.scanner import SCANNERS, TYPICAL_CT_FILTRATION_MM_AL  # noqa: E402
from persodose.errors import DicomError, InputError, MaterialError  # noqa: E402


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def vp_ct(tmp_path_factory):
    """The virtual patient (8 mm) written to DICOM and read back: (patient, Series)."""
    from persodose.io.dicom import read_ct
    from persodose.phantoms import make_virtual_patient, write_virtual_patient

    vp = make_virtual_patient(voxel_mm=8)
    out = tmp_path_factory.mktemp("vp") / "patient"
    write_virtual_patient(vp, out)
    return vp, read_ct(out / "ct")


@pytest.fixture(scope="module")
def acq(vp_ct):
    return acquisition_from_dicom(vp_ct[1])


@pytest.fixture(scope="module")
def scanner():
    return get_scanner("generic64")


def _vp_slice_z_and_ma(vp):
    nz = vp.ct.shape[0]
    z = vp.ct.index_to_physical(np.array([[k, 0, 0] for k in range(nz)], float))[:, 2]
    ma = np.asarray(vp.ct_tags["xray_tube_current_ma"], float)
    order = np.argsort(z)
    return z[order], ma[order]


def _with_extra(info, drop=(), **set_):
    extra = {k: v for k, v in info.extra.items() if k not in drop}
    extra.update(set_)
    return dataclasses.replace(info, extra=extra)


def _write_small_ct(path, ct_tags, nz=6):
    from persodose.grid import Kind, make_grid
    from persodose.io import dicom_write as dw
    from persodose.io.dicom import read_ct

    grid = make_grid((nz, 8, 8), (5.0, 4.0, 4.0), origin_xyz_mm=(-14.0, -14.0, 0.0), kind=Kind.CT)
    grid = grid.with_array(np.zeros((nz, 8, 8), np.float32))
    dw.write_ct_series(grid, path, patient=dw.PatientInfo(), study_uid=dw.new_uid(),
                       frame_of_reference_uid=dw.new_uid(),
                       acquisition_datetime=datetime.datetime(2024, 1, 2, 10, 0, 0), ct_tags=ct_tags)
    return read_ct(path)


# ----------------------------------------------------------------------------- spectrum
def test_spectrum_120kvp_hvl_and_mean_energy_in_published_ranges():
    s = tube_spectrum(120, anode_angle_deg=7, filtration_mm={"Al": TYPICAL_CT_FILTRATION_MM_AL})
    assert 6.0 <= s.hvl_mm_al <= 9.0  # CT at 120 kVp: 6-9 mm Al
    assert 55.0 <= s.mean_energy_kev <= 65.0
    assert s.energy_mev.max() <= 0.120 + 1e-9
    assert np.all(np.diff(s.energy_mev) > 0)
    # a softer beam with the brief's example filtration, still a CT-like HVL with 2.5 mm Al + 0.9 Ti
    hard = tube_spectrum(120, 12, {"Al": 2.5, "Ti": 0.9})
    assert hard.hvl_mm_al > tube_spectrum(120, 12, {"Al": 2.5}).hvl_mm_al


def test_spectrum_80kvp_softer_than_120():
    s80, s120 = tube_spectrum(80, 7, 7.0), tube_spectrum(120, 7, 7.0)
    assert s80.mean_energy_kev < s120.mean_energy_kev - 5
    assert s80.hvl_mm_al < s120.hvl_mm_al - 1
    assert s80.energy_mev.max() <= 0.080 + 1e-9
    # more output per mAs at the higher kVp
    assert s120.total_fluence_per_mas_cm2 > 1.5 * s80.total_fluence_per_mas_cm2


def test_spectrum_fluence_units_reproduce_spekpy_air_kerma():
    """Fluence per bin (photons/cm2/mAs at 1 m) x E x mu_en/rho(air) = SpekPy's air kerma."""
    from persodose.physics.photon_data import photon_tables

    s = tube_spectrum(120, 7, 7.0)
    mu_en = photon_tables("air").mu_over_rho(s.energy_mev, "mu_en")  # cm2/g
    kerma_ugy = np.sum(s.fluence_per_mas_cm2 * s.energy_mev * mu_en) * 1.602176634e-13 * 1e3 * 1e6
    assert kerma_ugy == pytest.approx(s.air_kerma_ugy_per_mas_1m, rel=0.05)


def test_spectrum_equivalent_filtration_forms_and_sampling():
    a = tube_spectrum(100, 10, 6.0)
    b = tube_spectrum(100, 10, {"aluminium": 6.0})
    np.testing.assert_allclose(a.fluence_per_mas_cm2, b.fluence_per_mas_cm2)
    e = a.sample_energies(200_000, np.random.default_rng(0))
    assert e.mean() == pytest.approx(a.mean_energy_mev, rel=0.01)
    assert e.min() >= a.energy_mev.min() - a.bin_width_mev and e.max() <= 0.100 + 1e-12


@pytest.mark.parametrize("kvp", [10.0, 400.0, float("nan")])
def test_spectrum_kvp_out_of_range(kvp):
    with pytest.raises(InputError, match="outside the spectrum model's range"):
        tube_spectrum(kvp)


def test_spectrum_bad_inputs():
    with pytest.raises(InputError, match="unknown filter material"):
        tube_spectrum(120, 12, {"Unobtainium": 1.0})
    with pytest.raises(InputError, match="anode angle"):
        tube_spectrum(120, 0.0)
    with pytest.raises(InputError, match=">= 0"):
        tube_spectrum(120, 12, {"Al": -1.0})


# ----------------------------------------------------------------------------- bowtie
def test_bowtie_unity_at_centre_and_decreasing_outward(scanner):
    e = np.array([0.03, 0.06, 0.1])
    for name in ("head", "medium", "body"):
        b = scanner.bowtie(name)
        np.testing.assert_allclose(b.relative_fluence(0.0, e), 1.0)
        phi = np.radians(np.linspace(0, 27, 55))
        t = b.relative_fluence(phi, 0.06)
        assert np.all(np.diff(t) <= 1e-12) and t[-1] < 0.5
        np.testing.assert_allclose(b.relative_fluence(-phi, 0.06), t)  # symmetric
        # harder photons pass better
        assert b.relative_fluence(np.radians(10), 0.1) > b.relative_fluence(np.radians(10), 0.04)
    assert np.all(scanner.bowtie("flat").relative_fluence(np.radians([0, 10, 25]), 0.06) == 1.0)


def test_bowtie_head_attenuates_more_at_small_angles_than_body(scanner):
    phi = np.radians([3.0, 6.0, 9.0])
    head = scanner.bowtie("head").relative_fluence(phi, 0.06)
    body = scanner.bowtie("body").relative_fluence(phi, 0.06)
    assert np.all(head < body)
    # the head filter stops growing beyond the 16 cm cylinder (d = 80 mm)
    edge = math.asin(80.0 / scanner.source_to_isocentre_mm)
    th = scanner.bowtie("head").thickness_mm(np.array([edge + 0.01, edge + 0.1]))
    assert th[0] == pytest.approx(th[1])


def test_body_bowtie_flattens_signal_behind_32cm_water(scanner):
    """Primary energy signal behind a 32 cm water cylinder, spectrum-averaged, fan angle 0-8 deg:
    flat with full compensation, partly flattened with the default (partial) compensation."""
    s = scanner.spectrum(120)
    phi = np.radians(np.linspace(0, 8, 17))
    d = scanner.source_to_isocentre_mm * np.sin(phi)
    path = 2 * np.sqrt(160.0**2 - d**2)
    att = np.exp(-filter_mu_per_mm("water", s.energy_mev)[None, :] * path[:, None])
    w = (s.fluence_per_mas_cm2 * s.energy_mev)[None, :]
    full = generic_bowtie("body", scanner.source_to_isocentre_mm, compensation=1.0)
    with_bt = (w * att * full.transmission_table(phi, s.energy_mev)).sum(1)
    without = (w * att).sum(1)
    partial = (w * att * scanner.bowtie("body").transmission_table(phi, s.energy_mev)).sum(1)
    assert np.ptp(with_bt / with_bt[0]) < 0.15  # beam hardening only
    assert np.ptp(without / without[0]) > 0.5
    assert np.ptp(with_bt / with_bt[0]) < np.ptp(partial / partial[0]) < np.ptp(without / without[0])
    # exact at the design energy
    b = full
    sig = b.relative_fluence(phi, 0.06) * np.exp(-filter_mu_per_mm("water", 0.06) * path)
    np.testing.assert_allclose(sig / sig[0], 1.0, rtol=1e-3)


def test_bowtie_csv_table(tmp_path):
    p = tmp_path / "bt.csv"
    p.write_text("# measured profile\nangle_deg, thickness_mm, material\n0,0,Al\n10,5,Al\n20,20,Al\n"
                 "0,1,Teflon\n20,1,Teflon\n", encoding="utf-8")
    b = load_bowtie_csv(p)
    assert b.name == "bt" and len(b.layers) == 2
    mu_al = filter_mu_per_mm("al", 0.05)
    t = b.relative_fluence(np.radians([-15.0, 0.0, 15.0]), 0.05)
    expect = math.exp(-mu_al * 12.5)  # mirrored, interpolated; the flat Teflon layer cancels
    np.testing.assert_allclose(t, [expect, 1.0, expect], rtol=1e-9)
    assert b.relative_fluence(np.radians(30.0), 0.05) == pytest.approx(math.exp(-mu_al * 20.0))
    bad = tmp_path / "bad.csv"
    bad.write_text("angle,thick\n0,1\n", encoding="utf-8")
    with pytest.raises(InputError, match="bad.csv"):
        load_bowtie_csv(bad)
    with pytest.raises(InputError, match="does not exist"):
        load_bowtie_csv(tmp_path / "missing.csv")
    with pytest.raises(MaterialError):
        bowtie_from_table("x", [0, 10], [0, 1], "lead")
    with pytest.raises(InputError, match="at least 2"):
        bowtie_from_table("x", [0], [0], "al")


def test_scanner_custom_bowtie(scanner):
    b = bowtie_from_table("meas", [0, 30], [0, 10], "graphite")
    sc = scanner.with_bowtie("meas", b)
    assert sc.bowtie("meas") is b and "meas" in sc.bowtie_names
    with pytest.raises(InputError, match="unknown bowtie"):
        scanner.bowtie("meas")


# ----------------------------------------------------------------------------- scanner
def test_scanner_presets_geometry():
    assert {"generic64", "ge_lightspeed_vct", "siemens_definition_as"} <= set(SCANNERS)
    assert get_scanner("GE-LightSpeed-VCT").source_to_isocentre_mm == 541.0
    assert get_scanner("siemens_definition_as").source_to_isocentre_mm == 595.0
    for sc in SCANNERS.values():
        # the fan covers a 500 mm field of view
        assert sc.source_to_isocentre_mm * math.sin(sc.fan_half_angle_rad) == pytest.approx(250.0, abs=0.1)
        assert sc.source_to_detector_mm > sc.source_to_isocentre_mm
        assert sc.source
    with pytest.raises(InputError, match="unknown CT scanner"):
        get_scanner("nope")


def test_filtration_for_hvl_recovers_measured_hvl():
    t = filtration_for_hvl(120, 7.5, anode_angle_deg=7)
    assert tube_spectrum(120, 7, {"Al": t}).hvl_mm_al == pytest.approx(7.5, abs=0.03)
    with pytest.raises(InputError, match="not reachable"):
        filtration_for_hvl(120, 40.0)


# ----------------------------------------------------------------------------- acquisition
def test_acquisition_from_virtual_patient(vp_ct, acq):
    vp, series = vp_ct
    assert acq.kvp == 120.0 and acq.mode == "helical"
    assert acq.pitch == pytest.approx(0.984)
    assert acq.total_collimation_mm == pytest.approx(40.0)
    assert acq.rotation_time_s == pytest.approx(0.5)
    assert acq.bowtie == "body" and acq.filter_type == "BODY"
    assert acq.tube_current_source == "XRayTubeCurrent"
    z, ma = _vp_slice_z_and_ma(vp)
    np.testing.assert_allclose(acq.slice_z_mm, z)
    np.testing.assert_allclose(acq.tube_current_ma, ma, atol=0.006)  # XRayTubeCurrentInmA
    np.testing.assert_allclose(acq.relative_current.mean(), 1.0)
    assert np.ptp(acq.tube_current_ma) > 50  # the patient's modulation is really there
    assert acq.ctdivol_mgy == pytest.approx(np.mean(vp.ct_tags["ctdivol_mgy"]), rel=1e-3)
    lo, hi = acq.scan_range_mm
    assert lo == pytest.approx(z[0] - 20.0) and hi == pytest.approx(z[-1] + 20.0)
    # mA between slices is interpolated
    mid = 0.5 * (z[3] + z[4])
    assert acq.tube_current_ma_at(mid) == pytest.approx(0.5 * (acq.tube_current_ma[3] + acq.tube_current_ma[4]))
    # the same from the SeriesInfo alone (slice positions read from the headers)
    acq2 = acquisition_from_dicom(series.info)
    np.testing.assert_allclose(acq2.slice_z_mm, acq.slice_z_mm)
    np.testing.assert_allclose(acq2.tube_current_ma, acq.tube_current_ma)
    np.testing.assert_allclose(acq2.isocentre_xy_mm, acq.isocentre_xy_mm, atol=1e-6)


def test_tube_current_fallbacks(vp_ct, acq):
    info = vp_ct[1].info
    grid = vp_ct[1].grid
    from persodose.io.dicom import Series

    no_ma = Series(grid, _with_extra(info, drop=("xray_tube_current_ma",)))
    a = acquisition_from_dicom(no_ma)
    assert a.tube_current_source == "Exposure/ExposureTime"
    np.testing.assert_allclose(a.relative_current, acq.relative_current, rtol=0.01)
    only_ctdi = Series(grid, _with_extra(info, drop=("xray_tube_current_ma", "exposure_mas")))
    b = acquisition_from_dicom(only_ctdi)
    assert b.tube_current_source == "CTDIvol" and b.tube_current_ma is None
    np.testing.assert_allclose(b.relative_current, acq.relative_current, rtol=0.01)
    nothing = Series(grid, _with_extra(info, drop=("xray_tube_current_ma", "exposure_mas", "ctdivol_mgy")))
    with pytest.warns(CTAcquisitionWarning, match="fixed tube current"):
        c = acquisition_from_dicom(nothing)
    assert c.tube_current_source == "fixed" and np.all(c.relative_current == 1.0)


def test_ftc_warning_when_dicom_has_no_tube_current_tags(tmp_path):
    tags = {"kvp": 100, "spiral_pitch_factor": 1.375, "total_collimation_mm": 20.0, "rotation_time_s": 0.8,
            "filter_type": "HEAD FILTER"}
    series = _write_small_ct(tmp_path / "ct", tags)
    with pytest.warns(CTAcquisitionWarning, match="fixed tube current"):
        a = acquisition_from_dicom(series)
    assert a.kvp == 100 and a.bowtie == "head" and a.pitch == pytest.approx(1.375)
    assert a.tube_current_ma is None and a.provenance["tube_current"] == "default"
    np.testing.assert_allclose(a.isocentre_xy_mm, (0.0, 0.0), atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a2 = acquisition_from_dicom(series, {"tube_current_ma": 150})
    assert a2.tube_current_source == "override" and np.all(a2.tube_current_ma == 150)


def test_kvp_override_and_missing_required_tags(vp_ct):
    series = vp_ct[1]
    a = acquisition_from_dicom(series, {"kvp": 100})
    assert a.kvp == 100 and a.provenance["kvp"] == "override"
    from persodose.io.dicom import Series

    no_kvp = Series(series.grid, _with_extra(series.info, drop=("kvp",)))
    with pytest.raises(InputError, match=r"KVP \(0018,0060\)"):
        acquisition_from_dicom(no_kvp)
    assert acquisition_from_dicom(no_kvp, {"kvp": 80}).kvp == 80
    no_pitch = Series(series.grid, _with_extra(series.info, drop=("spiral_pitch_factor",)))
    with pytest.raises(InputError, match="SpiralPitchFactor"):
        acquisition_from_dicom(no_pitch)
    ax = acquisition_from_dicom(no_pitch, {"mode": "axial"})
    assert ax.mode == "axial" and ax.pitch == 1.0
    no_coll = Series(series.grid, _with_extra(series.info, drop=("total_collimation_mm",)))
    with pytest.raises(InputError, match="TotalCollimationWidth"):
        acquisition_from_dicom(no_coll)
    with pytest.raises(InputError, match="unknown CT acquisition override"):
        acquisition_from_dicom(series, {"kv": 100})
    with pytest.raises(InputError, match="kvp"):
        acquisition_from_dicom(series, {"kvp": -5})


def test_filter_type_mapping(vp_ct):
    assert bowtie_for_filter_type("HEAD FILTER") == "head"
    assert bowtie_for_filter_type("large") == "body"
    assert bowtie_for_filter_type("PED BODY") == "medium"
    assert bowtie_for_filter_type("WEDGE_2") is None
    assert bowtie_for_filter_type("WEDGE_2", {"WEDGE_2": "head"}) == "head"
    from persodose.io.dicom import Series

    series = vp_ct[1]
    odd = Series(series.grid, _with_extra(series.info, filter_type="WEDGE_3"))
    with pytest.warns(CTAcquisitionWarning, match="unknown FilterType 'WEDGE_3'"):
        assert acquisition_from_dicom(odd).bowtie == "body"
    assert acquisition_from_dicom(odd, filter_type_map={"WEDGE_3": "medium"}).bowtie == "medium"
    assert acquisition_from_dicom(odd, {"bowtie": "HEAD"}).bowtie == "head"


def test_localizer_is_refused(tmp_path):
    import pydicom

    series = _write_small_ct(tmp_path / "ct", {"kvp": 120, "spiral_pitch_factor": 1.0,
                                               "total_collimation_mm": 20.0, "rotation_time_s": 0.5})
    f = series.info.files[2]
    ds = pydicom.dcmread(f)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.save_as(f)
    with pytest.raises(DicomError, match="localizer"):
        acquisition_from_dicom(series.info, {"tube_current_ma": 100})


# ----------------------------------------------------------------------------- trajectory
def test_helical_positions_advance_count_angles(acq, scanner):
    n = 36
    sp = helical_positions(acq, scanner, n_per_rotation=n, start_angle_rad=0.3)
    feed = acq.pitch * acq.total_collimation_mm
    lo, hi = acq.scan_range_mm
    expected = int(math.floor((hi - lo) / (feed / n) + 1e-9)) + 1
    assert len(sp) == expected and sp.n_start_angles == 1
    z = sp.table_z_mm
    np.testing.assert_allclose(z[:-n] - z[n:], feed)  # one rotation later: pitch x collimation
    assert z[0] == pytest.approx(hi) and z[-1] >= lo - 1e-9
    np.testing.assert_allclose(np.diff(sp.gantry_angle_rad), 2 * math.pi / n)
    assert sp.gantry_angle_rad[0] == pytest.approx(0.3)
    np.testing.assert_allclose(sp.time_s[n] - sp.time_s[0], acq.rotation_time_s)
    # focal spot at R from the axis, central ray towards it, in the gantry plane
    xc, yc = acq.isocentre_xy_mm
    r = np.hypot(sp.position_xyz_mm[:, 0] - xc, sp.position_xyz_mm[:, 1] - yc)
    np.testing.assert_allclose(r, scanner.source_to_isocentre_mm)
    to_axis = np.stack([xc - sp.position_xyz_mm[:, 0], yc - sp.position_xyz_mm[:, 1]], 1) / r[:, None]
    np.testing.assert_allclose(sp.direction_xyz[:, :2], to_axis, atol=1e-12)
    np.testing.assert_allclose(sp.position_xyz_mm[:, 2], z)
    # angle 0 is anterior (-y), 90 degrees the patient's left (+x)
    sp0 = helical_positions(acq, scanner, n_per_rotation=4, start_angle_rad=0.0)
    np.testing.assert_allclose(sp0.position_xyz_mm[0, :2], (xc, yc - scanner.source_to_isocentre_mm), atol=1e-9)
    np.testing.assert_allclose(sp0.position_xyz_mm[1, :2], (xc + scanner.source_to_isocentre_mm, yc), atol=1e-9)


def test_start_angle_average_and_random(acq, scanner):
    avg = helical_positions(acq, scanner, n_per_rotation=16, start_angle_rad="average", n_start_angles=4)
    one = helical_positions(acq, scanner, n_per_rotation=16, start_angle_rad=0.0)
    assert len(avg) == 4 * len(one)
    firsts = avg.gantry_angle_rad[avg.start_index != np.roll(avg.start_index, 1)]
    np.testing.assert_allclose(np.sort(firsts), 2 * math.pi * np.arange(4) / 4)
    np.testing.assert_allclose(avg.mas.sum(), one.mas.sum(), rtol=1e-12)  # same mAs, shared
    r1 = helical_positions(acq, scanner, 16, "random", rng=np.random.default_rng(5))
    r2 = helical_positions(acq, scanner, 16, "random", rng=np.random.default_rng(5))
    r3 = helical_positions(acq, scanner, 16, "random", rng=np.random.default_rng(6))
    assert r1.gantry_angle_rad[0] == r2.gantry_angle_rad[0] != r3.gantry_angle_rad[0]
    with pytest.raises(InputError, match="start_angle"):
        helical_positions(acq, scanner, 16, "sometimes")


def test_weights_follow_tube_current(vp_ct, acq, scanner):
    vp = vp_ct[0]
    sp = helical_positions(acq, scanner, n_per_rotation=24, start_angle_rad=0.0)
    z, ma = _vp_slice_z_and_ma(vp)
    expect = np.interp(sp.table_z_mm, z, ma)
    np.testing.assert_allclose(sp.weight, expect / expect.mean(), rtol=1e-4)
    assert sp.weight.mean() == pytest.approx(1.0)
    dt = acq.rotation_time_s / 24
    np.testing.assert_allclose(sp.mas, expect * dt, rtol=1e-4)


def test_fixed_tube_current_mas_total(vp_ct, scanner):
    a = acquisition_from_dicom(vp_ct[1], {"tube_current_ma": 200.0})
    sp = helical_positions(a, scanner, n_per_rotation=20, start_angle_rad="average", n_start_angles=3)
    per_start = len(sp) // 3
    assert sp.mas.sum() == pytest.approx(200.0 * per_start * a.rotation_time_s / 20)
    np.testing.assert_allclose(sp.weight, 1.0)


def test_sampled_beams_lie_within_fan_and_cone(acq, scanner):
    sp = helical_positions(acq, scanner, n_per_rotation=16, start_angle_rad=1.0)
    rng = np.random.default_rng(2)
    i = 37
    o, d, e, w = sp.sample_beam(i, 50_000, rng)
    assert o.shape == (50_000, 3) and d.shape == (50_000, 3) and e.shape == w.shape == (50_000,)
    np.testing.assert_allclose(o, np.broadcast_to(sp.position_xyz_mm[i], o.shape))
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0)
    dxy = d[:, :2] / np.linalg.norm(d[:, :2], axis=1, keepdims=True)
    fan = np.arccos(np.clip(dxy @ sp.direction_xyz[i, :2], -1, 1))
    half = scanner.fan_half_angle_rad
    assert fan.max() <= half + 1e-9 and fan.max() > 0.98 * half
    slope = d[:, 2] / np.linalg.norm(d[:, :2], axis=1)
    limit = 0.5 * acq.total_collimation_mm / scanner.source_to_isocentre_mm
    assert np.abs(slope).max() <= limit + 1e-12 and np.abs(slope).max() > 0.98 * limit
    # at the isocentre distance the beam is the collimation wide
    assert np.ptp(slope * scanner.source_to_isocentre_mm) == pytest.approx(acq.total_collimation_mm, rel=0.01)
    assert e.min() > 0 and e.max() <= acq.kvp * 1e-3 + 1e-12
    # weights: relative mA x bowtie transmission; both sampling modes agree on average
    mean_t = sp.mean_bowtie_transmission()
    assert np.all(w <= sp.weight[i] + 1e-12)
    assert w.mean() == pytest.approx(sp.weight[i] * mean_t, rel=0.05)
    o2, d2, e2, w2 = sp.sample_beam(i, 50_000, rng, mode="importance")
    np.testing.assert_allclose(w2, sp.weight[i] * mean_t)
    assert np.average(e, weights=w) == pytest.approx(e2.mean(), rel=0.01)  # bowtie-hardened mean energy
    assert e2.mean() > sp.spectrum.mean_energy_mev  # hardened by the bowtie
    with pytest.raises(InputError, match="position index"):
        sp.sample_beam(len(sp), 10, rng)


def test_sample_whole_scan_follows_tube_current(acq, scanner):
    sp = helical_positions(acq, scanner, n_per_rotation=12, start_angle_rad=0.0)
    o, d, e, w, idx = sp.sample(100_000, np.random.default_rng(3))
    hi = sp.weight > np.median(sp.weight)
    frac_hi = np.isin(idx, np.flatnonzero(hi)).mean()
    assert frac_hi == pytest.approx(sp.weight[hi].sum() / sp.weight.sum(), abs=0.01)
    assert sp.photons_per_mas() > 1e9


def test_axial_positions(vp_ct, scanner):
    a = acquisition_from_dicom(vp_ct[1], {"mode": "axial", "table_increment_mm": 40.0})
    sp = axial_positions(a, scanner, n_per_rotation=8, start_angle_rad=0.0)
    lo, hi = a.slice_range_mm
    n_ax = math.ceil((hi - lo) / 40.0)
    assert len(sp) == 8 * n_ax
    centres = sp.table_z_mm[::8]
    np.testing.assert_allclose(np.diff(centres), 40.0)
    np.testing.assert_allclose(sp.table_z_mm.reshape(n_ax, 8), np.repeat(centres[:, None], 8, axis=1))
    assert 0.5 * (centres[0] + centres[-1]) == pytest.approx(0.5 * (lo + hi))
    assert helical_positions(a, scanner, 8, 0.0).mode == "axial"


def test_collimation_wider_than_scanner_is_refused(vp_ct):
    a = acquisition_from_dicom(vp_ct[1], {"total_collimation_mm": 80.0})
    with pytest.raises(InputError, match="exceeds the maximum"):
        helical_positions(a, get_scanner("generic64"))
