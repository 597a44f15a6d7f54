"""End to end: the demo job on a coarse virtual patient, through DICOM and back."""

import json

import numpy as np

from persodose.demo import DemoSettings, run_demo


def test_demo_runs_end_to_end_and_its_checks_hold(tmp_path):
    out = tmp_path / "demo"
    fast = DemoSettings(voxel_mm=8.0, seed=1, mc_decays=200_000, mc_reference_decays=(), kernel_decays=100_000,
                        kernel_cache=str(tmp_path / "kernels"), ct_photons=100_000, ct_dose_voxel_mm=10.0)
    report = run_demo(out, fast, log=lambda m: None)
    html = report.read_text()
    assert html.startswith("<!DOCTYPE html>") and html.count("data:image/png;base64") >= 8
    assert "DIFFERENT" not in html  # the SEG round trip
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["settings"]["seed"] == 1 and prov["timings_s"]["total"] > 0
    # resampling onto the CT keeps the activity of every frame; the CT reads back within int16 rounding
    ratios, hu_err = _resampling_and_hu_checks(prov["checks"]["lu177-dotatate"])
    assert len(ratios) == 4
    np.testing.assert_allclose(ratios, 1.0, atol=1e-6)
    assert hu_err <= 0.5 + 1e-6
    assert len(_resampling_and_hu_checks(prov["checks"]["fdg"])[0]) == 13
    for tracer in ("lu177-dotatate", "fdg"):
        assert (out / tracer / "density.nii.gz").exists()
        assert (out / tracer / "labels_seg.dcm").exists()
        table = json.loads((out / tracer / "materials.json").read_text())
        assert len(table) == 13
    # no temporary directories left beside the output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo", "kernels"]
    # the internal-dosimetry outputs of both runs, with the method comparison against MC
    for sub in ("internal_from_images", "internal_true_tia"):
        d = out / "lu177-dotatate" / sub
        for name in ("dose_mc.nii.gz", "dose_msv_rtdose.dcm", "organs.json", "comparison.json", "report.html"):
            assert (d / name).exists(), (sub, name)
    for name in ("dose_mgy.nii.gz", "dose_rtdose.dcm", "effective_dose.json", "report.html"):
        assert (out / "fdg" / "ct_dose" / name).exists(), name
    eff = json.loads((out / "fdg" / "ct_dose" / "effective_dose.json").read_text())
    assert "partial" in json.dumps(eff)  # the phantom lacks colon, breast, gonads...: never a full E
    comp = json.loads((out / "lu177-dotatate" / "internal_true_tia" / "comparison.json").read_text())
    assert set(comp) == {"led", "ssv", "dsv", "msv", "dnn"}  # dnn: the shipped predicted-kernel weights


def _resampling_and_hu_checks(checks):
    """The demo's own checks, as recorded in its provenance: activity kept, CT read back."""
    ratios = [float(c["result"]) for c in checks if "kept by resampling" in c["check"]]
    hu_err = float(next(c for c in checks if "HU error" in c["check"])["result"].split()[0])
    return ratios, hu_err
