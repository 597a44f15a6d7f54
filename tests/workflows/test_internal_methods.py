"""Dose methods through the internal workflow and the CLI: plug-ins and method settings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from persodose.plugins import load_plugin

EXAMPLE_PLUGIN = Path(__file__).resolve().parents[2] / "examples" / "plugins" / "photon_fraction_led.py"


@pytest.fixture(scope="module")
def patient(tmp_path_factory):
    from persodose.phantoms import make_virtual_patient, write_virtual_patient

    root = tmp_path_factory.mktemp("vp") / "patient"
    write_virtual_patient(make_virtual_patient("lu177-dotatate", voxel_mm=10.0, seed=3), root)
    return root


def _argv(root, out, *extra):
    args = ["--plugin", str(EXAMPLE_PLUGIN), "internal", "--ct", str(root / "ct"), "--nuclide", "Lu-177",
            "--labels", str(root / "nifti" / "labels.nii.gz"), "--calibration-cps-per-mbq", "10", "--out", str(out)]
    for k in (1, 2, 3):
        args += ["--emission", str(root / "spect" / f"tp{k}")]
    return args + list(extra)


def _organ_means(out: Path) -> dict:
    rows = json.loads((out / "organs.json").read_text())["rows"]
    return {(r["method"], r["name"]): r["mean_Gy"] for r in rows if r.get("n_voxels")}


def test_plugin_method_and_its_settings_through_the_cli(patient, tmp_path, capsys):
    from persodose.cli.main import main

    runs = {}
    for f, energy in ((0.0, "electron"), (1.0, "all")):
        out = tmp_path / f"out_{f:g}"
        code = main(_argv(patient, out, "--method", "pfled,led", "--method-option", f"pfled.photon_fraction={f}",
                          "--method-option", f"led.energy={energy}"))
        assert code == 0, capsys.readouterr().err
        runs[f] = _organ_means(out)
        prov = json.loads((out / "provenance.json").read_text())
        assert prov["method_settings"]["pfled"] == {"photon_fraction": f}
    for f, means in runs.items():
        organs = [n for (m, n) in means if m == "led"]
        assert len(organs) > 10
        for n in organs:  # the plug-in at f=0 / f=1 is LED electron / LED all, organ by organ
            assert means[("pfled", n)] == pytest.approx(means[("led", n)], rel=1e-5)
    # the settings changed the result: photons add dose
    liver = [n for (m, n) in runs[0.0] if n == "liver"][0]
    assert runs[1.0][("led", liver)] > 1.05 * runs[0.0][("led", liver)]


def test_plugin_method_through_run_internal(patient):
    from persodose.io.load import load_ct
    from persodose.workflows.internal import InternalSettings, load_time_points, run_internal

    load_plugin(EXAMPLE_PLUGIN)
    ct, info = load_ct(patient / "ct")
    points, _ = load_time_points([patient / "spect" / f"tp{k}" for k in (1, 2, 3)], "Lu-177",
                                 calibration_cps_per_mbq=10.0, ct_info=info)
    results = {}
    for f in (0.0, 0.5, 1.0):
        s = InternalSettings("Lu-177", methods=("pfled",), method_options={"pfled": {"photon_fraction": f}})
        results[f] = run_internal(ct, points, s, log=lambda m: None).doses["pfled"].array.astype(np.float64)
    np.testing.assert_allclose(results[0.5], 0.5 * (results[0.0] + results[1.0]), rtol=1e-5,
                               atol=1e-7 * results[1.0].max())
    assert results[1.0].max() > results[0.0].max() > 0


def test_method_settings_are_checked_before_any_work(patient, tmp_path, capsys):
    from persodose.cli.main import main

    for extra, word in ((["--method", "led", "--method-option", "led.energy=photons"], "led.energy"),
                        (["--method", "led", "--method-option", "msv.density_scaling=true"], "msv"),
                        (["--method", "led", "--method-option", "led.nope=1"], "led.nope"),
                        (["--method", "pfled", "--method-option", "pfled.photon_fraction=2"], "photon_fraction"),
                        (["--method", "led", "--method-option", "ledenergy"], "METHOD.SETTING=VALUE")):
        assert main(_argv(patient, tmp_path / "x", *extra)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and word in err[0], err
    assert not (tmp_path / "x").exists()


def test_labels_auto_segments_the_ct(patient, tmp_path, capsys):
    from persodose.cli.main import main

    args = [a for a in _argv(patient, tmp_path / "auto", "--method", "led")]
    i = args.index("--labels")
    args[i + 1] = "auto:threshold"
    assert main(args) == 0, capsys.readouterr().err
    names = {n for (m, n) in _organ_means(tmp_path / "auto")}
    assert {"body", "lung_left", "lung_right", "bone"} <= names
    args[i + 1] = "auto:nosuch"
    args[args.index("--out") + 1] = str(tmp_path / "auto2")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "nosuch" in err and "threshold" in err and not (tmp_path / "auto2").exists()
