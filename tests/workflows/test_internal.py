"""The internal-dosimetry workflow: CLI end to end, bad input, registration of time points."""

import json
import shutil

import numpy as np
import pydicom
import pytest

from persodose.errors import InputError
from persodose.grid import Kind
from tests.cli.test_cli import assert_clean_error


@pytest.fixture(scope="module")
def patient(tmp_path_factory):
    from persodose.phantoms import make_virtual_patient, write_virtual_patient

    root = tmp_path_factory.mktemp("vp")
    vp = make_virtual_patient("lu177-dotatate", voxel_mm=10.0, seed=3)
    write_virtual_patient(vp, root / "patient")
    return vp, root / "patient"


def _emissions(root):
    return [root / "spect" / f"tp{k}" for k in range(1, 5)]


def test_internal_cli_end_to_end(cli, patient, tmp_path, monkeypatch):
    vp, root = patient
    monkeypatch.setenv("PERSODOSE_CACHE", str(tmp_path / "cache"))
    args = ["internal", "--ct", root / "ct", "--nuclide", "Lu-177", "--labels", root / "nifti" / "labels.nii.gz",
            "--calibration-cps-per-mbq", "10", "--method", "led,ssv,mc", "--decays", "100000", "--dose-rate",
            "--uncertainty", "calibration=5,activity=8", "--out", tmp_path / "out"]
    for e in _emissions(root):
        args += ["--emission", e]
    proc = cli(*args)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out"
    for name in ("tia.nii.gz", "dose_mc.nii.gz", "dose_ssv_rtdose.dcm", "organs.json", "dvh_mc.csv",
                 "kinetics.json", "comparison.json", "provenance.json", "report.html", "uncertainty_mc.nii.gz"):
        assert (out / name).exists(), name
    assert len(list(out.glob("dose_rate_ssv_*h.nii.gz"))) == 4
    rows = json.loads((out / "organs.json").read_text())["rows"]
    kid = {r["method"]: r["mean_Gy"] for r in rows if r["name"] == "kidney_left"}
    assert kid["mc"] > 0 and kid["ssv"] == pytest.approx(kid["mc"], rel=0.2)
    # every organ dose carries its combined uncertainty, and the budget says where it comes from
    doc = json.loads((out / "organs.json").read_text())
    budget = doc["uncertainty"]["budgets"]["mc"]["kidney_left"]
    lines = {b["component"]: b for b in budget["budget"]}
    assert lines["calibration"]["relative_sd_percent"] == pytest.approx(5.0)
    assert lines["recovery"]["note"] == "not stated" and lines["method statistics"]["relative_sd_percent"] > 0
    assert 0 < lines["time-point activities and kinetic fit"]["relative_sd_percent"] < 8.0
    unc = {r["method"]: r["uncertainty_percent"] for r in rows if r["name"] == "kidney_left"}
    assert unc["mc"] == pytest.approx(budget["relative_sd_percent"]) and unc["mc"] > 5.0
    assert (out / "uncertainty_budget.csv").read_text().count("kidney_left") >= 8
    # a method without an estimate of its own gets its difference from Monte Carlo in the same run
    ssv = {b["component"]: b for b in doc["uncertainty"]["budgets"]["ssv"]["kidney_left"]["budget"]}
    assert ssv["method statistics"]["note"].startswith("difference from Monte Carlo")
    assert ssv["method statistics"]["relative_sd_percent"] == pytest.approx(100 * abs(kid["ssv"] / kid["mc"] - 1), abs=3)
    html = (out / "report.html").read_text()
    assert "Uncertainty budget of the kidney_left dose" in html and "Uncertainty of the organ doses" in html
    ds = pydicom.dcmread(out / "dose_mc_rtdose.dcm")
    ct0 = pydicom.dcmread(next((root / "ct").iterdir()))
    assert ds.FrameOfReferenceUID == ct0.FrameOfReferenceUID and ds.DoseUnits == "GY"
    # the TIA from the images is close to the truth in total (partial-volume losses at the edges)
    from persodose.io.image import read_image

    tia = read_image(out / "tia.nii.gz")
    assert tia.kind is Kind.TIA
    assert tia.total() == pytest.approx(vp.truth_tia.total(), rel=0.15)


def test_internal_bad_input(cli, patient, tmp_path):
    vp, root = patient
    base = ["internal", "--ct", root / "ct", "--nuclide", "Lu-177", "--calibration-cps-per-mbq", "10",
            "--method", "led", "--out", tmp_path / "x"]
    tp1, tp2 = _emissions(root)[:2]
    # the same image twice: duplicated time point
    assert_clean_error(cli(*base, "--emission", tp1, "--emission", tp1), "same time")
    # counts without a calibration
    no_cal = [a for a in base if a not in ("--calibration-cps-per-mbq", "10")]
    assert_clean_error(cli(*no_cal, "--emission", tp1), "calibration")
    # another frame of reference and another patient
    other = tmp_path / "other"
    shutil.copytree(tp2, other)
    f = next(other.iterdir())
    ds = pydicom.dcmread(f)
    ds.FrameOfReferenceUID = pydicom.uid.generate_uid()
    ds.save_as(f)
    assert_clean_error(cli(*base, "--emission", tp1, "--emission", other), "frame of reference")
    ds.PatientID = "SOMEONE-ELSE"
    ds.save_as(f)
    assert_clean_error(cli(*base, "--emission", tp1, "--emission", other), "SOMEONE-ELSE")
    # a nuclide that is not the image's
    assert_clean_error(cli(*[("F-18" if a == "Lu-177" else a) for a in base], "--emission", tp1), "Lu-177")
    # an unknown method
    assert_clean_error(cli(*[("xyz" if a == "led" else a) for a in base], "--emission", tp1), "xyz")
    assert not (tmp_path / "x").exists()


def test_time_points_with_their_own_ct_are_registered(patient):
    """A time point whose patient moved by 20 mm (CT and emission together) is registered back."""
    from persodose.workflows.internal import InternalSettings, TimePoint, run_internal

    vp, _ = patient
    shift = 2  # voxels of 10 mm along x
    frames = vp.truth_activity[:2]
    times = [f.mid_time_s for f in vp.frames[:2]]
    moved_ct = vp.ct.with_array(np.roll(vp.ct.array, shift, axis=2))
    moved_act = frames[1].with_array(np.roll(frames[1].array, shift, axis=2))
    settings = InternalSettings("Lu-177", methods=("led",), dose_voxel_mm=10.0)
    ref = run_internal(vp.ct, [TimePoint(times[0], frames[0], "a"), TimePoint(times[1], frames[1], "b")], settings,
                       labels=vp.labels, label_names=dict(vp.label_names), log=lambda m: None)
    naive = run_internal(vp.ct, [TimePoint(times[0], frames[0], "a"), TimePoint(times[1], moved_act, "b")], settings,
                         labels=vp.labels, label_names=dict(vp.label_names), log=lambda m: None)
    reg = run_internal(vp.ct, [TimePoint(times[0], frames[0], "a"), TimePoint(times[1], moved_act, "b", ct=moved_ct)],
                       settings, labels=vp.labels, label_names=dict(vp.label_names), log=lambda m: None)
    shift_mm = reg.tia_report["registration"][0]["translation_mm"]
    assert abs(abs(shift_mm[0]) - 20.0) < 2.0 and abs(shift_mm[1]) < 2.0 and abs(shift_mm[2]) < 2.0

    def kidney_dose(r):
        return {row.name: row.mean_gy for row in r.organ_tables["led"]}["kidney_left"]

    err_naive = abs(kidney_dose(naive) / kidney_dose(ref) - 1)
    err_reg = abs(kidney_dose(reg) / kidney_dose(ref) - 1)
    assert err_reg < 0.05 and err_reg < err_naive / 3, (err_reg, err_naive)


def test_settings_validation():
    from persodose.workflows.internal import InternalSettings

    with pytest.raises(InputError):
        InternalSettings("Lu-177", methods=("nope",))
    with pytest.raises(InputError):
        InternalSettings("Lu-177", registration="elastic")
    with pytest.raises(InputError):
        InternalSettings("Lu-177", dose_voxel_mm=0.1)
    with pytest.raises(InputError, match="backend"):
        InternalSettings("Lu-177", mc_backend="opencl")


def test_dynamic_pet_frames_integrate_to_the_true_tia():
    """FDG dynamic frames (true activities, no noise) integrated over their intervals with a
    physical-decay tail: the body total against the analytic truth (the tail ignores any
    biological clearance after the last frame, so the estimate may only be high)."""
    from persodose.phantoms import make_virtual_patient
    from persodose.workflows.internal import InternalSettings, TimePoint, run_internal

    vp = make_virtual_patient("fdg", voxel_mm=12.0, seed=0)
    pts = [TimePoint(f.mid_time_s, truth, f"f{k}", duration_s=f.duration_s)
           for k, (f, truth) in enumerate(zip(vp.frames, vp.truth_activity))]
    res = run_internal(vp.ct, pts, InternalSettings("F-18", methods=("led",), tia_method="dynamic", dose_voxel_mm=12.0),
                       labels=vp.labels, label_names=dict(vp.label_names), log=lambda m: None)
    ratio = res.tia.total() / vp.truth_tia.total()
    assert 0.99 < ratio < 1.02, ratio  # measured 0.9998
    assert res.tia_report["parts_bq_s"]["tail"] > 0
    bad = [TimePoint(f.mid_time_s, truth, "x") for f, truth in zip(vp.frames[:2], vp.truth_activity[:2])]
    with pytest.raises(InputError, match="duration"):
        run_internal(vp.ct, bad, InternalSettings("F-18", methods=("led",), tia_method="dynamic", dose_voxel_mm=12.0))


def test_uncertainty_options_of_the_command_line():
    from persodose.cli.internal import uncertainty_options

    got = uncertainty_options(["calibration=5,recovery-per-time-point", "recovery=4%"])
    assert got == {"calibration": 0.05, "recovery_per_time_point": True, "recovery": 0.04}
    for bad in (["calibration"], ["calibration=x"], ["volume=3"], ["mass=120"]):
        with pytest.raises(InputError):
            uncertainty_options(bad)
