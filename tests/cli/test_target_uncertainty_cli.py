"""--target-uncertainty and --photon-estimator on the command line: internal, ct (and the MC dose method)."""

import dataclasses
import json

import pytest

from persodose.errors import InputError
from tests.cli.test_cli import assert_clean_error


@pytest.fixture(scope="module")
def vp(tmp_path_factory):
    from persodose.phantoms import make_virtual_patient, write_virtual_patient

    root = tmp_path_factory.mktemp("vp_target") / "patient"
    write_virtual_patient(make_virtual_patient("lu177-dotatate", voxel_mm=10.0, seed=3), root)
    return root


def _internal(root, out, *extra):
    return ["internal", "--ct", root / "ct", "--nuclide", "Lu-177", "--labels", root / "nifti" / "labels.nii.gz",
            "--calibration-cps-per-mbq", "10", "--method", "mc", "--emission", root / "spect" / "tp1",
            "--emission", root / "spect" / "tp2", "--out", out, *extra]


def _ct(root, out, *extra):
    return ["ct", "--ct", root / "ct", "--ctdi-photons", "20000", "--dose-voxel-mm", "20", "--out", out, *extra]


@pytest.fixture
def estimator_seen(monkeypatch):
    """Record the photon estimator each MC decay run is given, and run it analog (TLE physics is not tested here)."""
    import persodose.mc as mc
    from persodose.mc.tables import TransportSettings

    seen, original = [], mc.simulate_decays

    def spy(phantom, source, nuclide, n, settings=None, *args, **kwargs):
        seen.append(settings.transport.photon_estimator)
        return original(phantom, source, nuclide, n, dataclasses.replace(settings, transport=TransportSettings()),
                        *args, **kwargs)

    monkeypatch.setattr(mc, "simulate_decays", spy)
    return seen


def test_internal_stops_at_a_region_target_and_says_so(cli, vp, tmp_path, estimator_seen):
    out = tmp_path / "out"
    proc = cli(*_internal(vp, out, "--decays", "60000", "--target-uncertainty", "20 %", "--target-region", "liver",
                          "--photon-estimator", "tle"))
    assert proc.returncode == 0, proc.stderr
    assert "target uncertainty 20 % met (relative uncertainty of the mean dose in liver" in proc.stdout
    prov = json.loads((out / "provenance.json").read_text())
    target = prov["method_info"]["mc"]["target"]
    assert target["met"] and target["region"] == "liver" and target["achieved"] <= 0.2
    # 60000 decays at most, in 50 batches by default: it stopped at the first trusted check
    assert target["batches_limit"] == 50 and target["n_batches"] == 5 and target["n_primaries"] == 6000
    assert prov["method_info"]["mc"]["decays"] == 6000
    assert prov["method_settings"]["mc"]["target_uncertainty"] == 0.2
    # --photon-estimator reaches the transport settings and the provenance
    assert estimator_seen == ["tle"]
    assert prov["method_settings"]["mc"]["photon_estimator"] == "tle"
    assert prov["method_info"]["mc"]["photon_estimator"] == "tle"


def test_internal_strict_target_runs_to_the_limit_with_a_warning(cli, vp, tmp_path):
    out = tmp_path / "out"
    proc = cli(*_internal(vp, out, "--decays", "1000", "--method-option", "mc.batches=5",
                          "--target-uncertainty", "0.001"))
    assert proc.returncode == 0, proc.stderr
    assert "target uncertainty 0.1 % not met" in proc.stderr and "1000 decays in 5 batches" in proc.stderr
    target = json.loads((out / "provenance.json").read_text())["method_info"]["mc"]["target"]
    assert target["met"] is False and target["n_primaries"] == 1000 and target["above_fraction"] == 0.1
    assert (out / "dose_mc.nii.gz").is_file()


@pytest.mark.parametrize("extra,words", [
    (["--target-uncertainty", "0"], ["--target-uncertainty", "above 0"]),
    (["--target-uncertainty", "100%"], ["--target-uncertainty", "below 100 %"]),
    (["--target-uncertainty", "nan"], ["--target-uncertainty"]),
    (["--target-uncertainty", "two"], ["--target-uncertainty", "not a number"]),
    (["--target-region", "liver"], ["--target-region", "needs --target-uncertainty"]),
    (["--target-uncertainty", "2%", "--target-above", "1.5"], ["--target-above"]),
    (["--target-uncertainty", "2%", "--target-region", "pancreas"], ["pancreas", "not a label", "liver"]),
    (["--target-uncertainty", "2%", "--method-option", "mc.batches=3"], ["at least 5 batches"]),
    (["--target-uncertainty", "2%", "--method-option", "mc.target_uncertainty=3%"], ["disagree"]),
    (["--photon-estimator", "exact"], ["--photon-estimator", "analog or tle"]),
])
def test_internal_refusals_are_one_line(cli, vp, tmp_path, extra, words):
    out = tmp_path / "x"
    assert_clean_error(cli(*_internal(vp, out, *extra)), *words)
    assert not out.exists()


def test_internal_target_region_needs_labels(cli, vp, tmp_path):
    args = [a for a in _internal(vp, tmp_path / "x", "--target-uncertainty", "2%", "--target-region", "liver")]
    i = args.index("--labels")
    del args[i:i + 2]
    assert_clean_error(cli(*args), "liver", "--labels")


def test_ct_stops_at_an_organ_target(cli, vp, tmp_path):
    out = tmp_path / "ct"
    proc = cli(*_ct(vp, out, "--photons", "200000", "--target-uncertainty", "30%", "--target-region", "liver",
                    "--labels", vp / "nifti" / "labels.nii.gz"))
    assert proc.returncode == 0, proc.stderr
    assert "scan: target uncertainty 30 % met (relative uncertainty of the mean dose in liver" in proc.stdout
    prov = json.loads((out / "provenance.json").read_text())
    st = prov["statistics"]
    assert st["target"]["met"] and st["n_batches"] == st["target"]["n_batches"] == 5 and st["n_batches_limit"] == 50
    assert st["n_photons"] == 20000 and st["n_photons_limit"] == 200000 and st["photon_estimator"] == "tle"  # the CT default
    organs = {r["name"]: r for r in json.loads((out / "organs.json").read_text())["rows"]}
    # the organ table's uncertainty is the batches' spread of the same five batches
    assert organs["liver"]["uncertainty_percent"] == pytest.approx(100 * st["target"]["achieved"], rel=1e-6)


@pytest.mark.parametrize("extra,words", [
    (["--target-uncertainty", "nan%"], ["--target-uncertainty"]),
    (["--target-uncertainty", "-2%"], ["--target-uncertainty"]),
    (["--target-region", "liver"], ["--target-region", "needs --target-uncertainty"]),
    (["--target-uncertainty", "5%", "--batches", "4"], ["at least 5 --batches"]),
    (["--target-uncertainty", "5%", "--target-region", "liver"], ["liver", "--labels"]),
    (["--photon-estimator", "TLE!"], ["--photon-estimator"]),
])
def test_ct_refusals_are_one_line(cli, vp, tmp_path, extra, words):
    out = tmp_path / "x"
    assert_clean_error(cli(*_ct(vp, out, "--photons", "1000", *extra)), *words)
    assert not out.exists()


def test_ct_photon_estimator_reaches_the_transport_settings(monkeypatch, vp, tmp_path, cli):
    import persodose.workflows.ct as wct

    seen = {}

    def stop(ct, info, *args, settings=None, **kwargs):
        seen["settings"], seen["kwargs"] = settings, kwargs
        raise InputError("stopped here by the test")

    monkeypatch.setattr(wct, "ct_dose", stop)
    proc = cli(*_ct(vp, tmp_path / "x", "--photon-estimator", "tle", "--target-uncertainty", "2 %"))
    assert_clean_error(proc, "stopped here")
    s = seen["settings"]
    assert s.transport.photon_estimator == "tle" and s.n_batches == 50
    assert seen["kwargs"]["target_uncertainty"] == "2 %" and seen["kwargs"]["target_above"] == 0.1


def test_mc_method_settings():
    from persodose.dose.monte_carlo import MCMethodSettings
    from persodose.dose.registry import get_spec

    s = get_spec("mc").make_settings({"target_uncertainty": "2 %", "target_above": "0.2"})
    assert s.target_uncertainty == pytest.approx(0.02) and s.batches == 50 and s.target_above == 0.2
    assert MCMethodSettings().batches == 8 and MCMethodSettings().target() is None
    assert MCMethodSettings(target_uncertainty=0.05, batches=6).target().relative == 0.05
    for bad in ({"target_uncertainty": "0%"}, {"target_region": "liver"}, {"photon_estimator": "x"},
                {"target_uncertainty": "5%", "batches": "4"}, {"target_uncertainty": "5%", "target_above": "1"}):
        with pytest.raises(InputError):
            get_spec("mc").make_settings(bad)
    with pytest.raises(InputError, match="label map"):
        MCMethodSettings(target_uncertainty="5%", target_region="liver").target()


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    """A 9^3 soft-tissue box at 5 mm (density, materials of the built-in table) with a TIA in its central 3^3."""
    import numpy as np

    from persodose.grid import Grid, Kind
    from persodose.io.image import write_image
    from persodose.physics.materials import default_materials

    root = tmp_path_factory.mktemp("box")
    shape = (9, 9, 9)
    dens = Grid(np.ones(shape, np.float32), (5.0, 5.0, 5.0), kind=Kind.DENSITY, unit="g/cm3")
    write_image(dens, root / "density.nii.gz")
    soft = next(i for i, m in enumerate(default_materials()) if m.name == "ct_soft_tissue")
    write_image(dens.with_array(np.full(shape, soft, np.uint8), Kind.MATERIAL, ""), root / "materials.nii.gz")
    tia = np.zeros(shape, np.float32)
    tia[3:6, 3:6, 3:6] = 1e6
    write_image(dens.with_array(tia, Kind.TIA, "Bq s"), root / "tia.nii.gz")
    return root


def _mc(root, out, *extra):
    return ["mc", "--tia", root / "tia.nii.gz", "--density", root / "density.nii.gz", "--materials",
            root / "materials.nii.gz", "--nuclide", "Lu-177", "--out", out, *extra]


def test_mc_stops_and_resumes_with_a_stricter_target(cli, box, tmp_path):
    ck = tmp_path / "run.npz"
    proc = cli(*_mc(box, tmp_path / "a", "--decays", "3000", "--batches", "10", "--target-uncertainty", "99%",
                    "--checkpoint", ck))
    assert proc.returncode == 0, proc.stderr
    assert "target uncertainty 99 % met (median voxel relative uncertainty above 10 % of the maximum" in proc.stdout
    first = json.loads((tmp_path / "a" / "provenance.json").read_text())
    assert first["target_uncertainty"]["n_batches"] == 5 and first["decays_simulated"] == 1500
    from persodose.mc import Tally

    assert Tally.load(ck).n_batches == 5
    # resumed with a target it cannot meet: it runs on to the limit, warns, and writes the results
    # (the CLI prints the warning as "persodose: warning: ..."; under pytest it is caught here)
    from persodose.mc.run import TargetNotMetWarning

    with pytest.warns(TargetNotMetWarning, match="not met.*3000 decays in 10 batches"):
        proc = cli(*_mc(box, tmp_path / "b", "--decays", "3000", "--batches", "10", "--target-uncertainty",
                        "0.0001", "--checkpoint", ck, "--resume"))
    assert proc.returncode == 0, proc.stderr
    second = json.loads((tmp_path / "b" / "provenance.json").read_text())
    assert second["target_uncertainty"]["met"] is False and second["decays_simulated"] == 3000
    assert [b[1] for b in second["batches"]] == list(range(10)) and Tally.load(ck).n_batches == 10


@pytest.mark.parametrize("extra,words", [
    (["--target-uncertainty", "0 %"], ["--target-uncertainty"]),
    (["--target-uncertainty", "nan"], ["--target-uncertainty"]),
    (["--target-above", "0.2"], ["--target-above", "needs --target-uncertainty"]),
    (["--target-uncertainty", "5%", "--batches", "3"], ["at least 5 --batches"]),
])
def test_mc_refusals_are_one_line(cli, box, tmp_path, extra, words):
    assert_clean_error(cli(*_mc(box, tmp_path / "x", "--decays", "1000", *extra)), *words)
    assert not (tmp_path / "x").exists()
