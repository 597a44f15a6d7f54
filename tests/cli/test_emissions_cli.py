"""``--emissions`` and ``--photon-estimator`` on ``persodose mc`` and ``persodose kernel`` (issue 16)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from persodose.io.image import write_image
from tests.cli.test_cli import assert_clean_error


def _phantom(cli, tmp_path, n=8, mm=4.0):
    """Density and material maps of a small soft-tissue cube and a TIA in its centre."""
    from persodose.grid import Grid, Kind

    ct = write_image(Grid(np.full((n, n, n), 40.0, np.float32), (mm,) * 3, kind=Kind.CT), tmp_path / "ct.nii.gz")
    proc = cli("density", "--ct", ct, "--out", tmp_path / "d.nii.gz", "--materials-out", tmp_path / "m.nii.gz")
    assert proc.returncode == 0, proc.stderr
    tia = np.zeros((n, n, n), np.float32)
    tia[3:5, 3:5, 3:5] = 1e9  # Bq s
    tia_path = write_image(Grid(tia, (mm,) * 3, kind=Kind.TIA), tmp_path / "tia.nii.gz")
    return ["--density", tmp_path / "d.nii.gz", "--materials", tmp_path / "m.nii.gz", "--tia", tia_path]


def test_mc_with_a_selection_records_it_and_the_energy_left_out(cli, tmp_path):
    from persodose.mc.sources import decay_tables
    from persodose.mc.tables import TransportSettings

    args = _phantom(cli, tmp_path)
    out = tmp_path / "mc"
    proc = cli("mc", *args, "--nuclide", "Sm-153", "--decays", "20000", "--batches", "4", "--out", out,
               "--emissions", "GAMMA,beta,xray")
    assert proc.returncode == 0, proc.stderr
    ts = TransportSettings()
    dt = decay_tables("Sm-153", ts.photon_cut_mev, ts.electron_cut_mev, ts.emax_mev, "beta,gamma,xray")
    full = decay_tables("Sm-153", ts.photon_cut_mev, ts.electron_cut_mev, ts.emax_mev)
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["settings"]["emissions"] == ["beta", "gamma", "xray"]
    assert prov["settings"]["transport"]["photon_estimator"] == "analog"
    sel = prov["emission_selection"]
    assert sel["emissions"] == ["beta", "gamma", "xray"]
    assert sel["emitted_mev_per_decay"] == pytest.approx(dt.mean_emitted_mev, rel=1e-12)
    assert sel["full_decay_mev_per_decay"] == pytest.approx(full.mean_emitted_mev, rel=1e-12)
    assert sel["left_out_mev_per_decay"] == pytest.approx(0.0463, abs=0.0005)  # Sm-153 IC + Auger (ICRP 107)
    # the run emitted the selected energy: 2e4 decays, spread < 0.4 MeV per decay, 5 sigma
    assert prov["energy_balance_mev_per_decay"]["emitted_mev"] == pytest.approx(dt.mean_emitted_mev,
                                                                                abs=5 * 0.4 / np.sqrt(2e4))
    assert "emissions beta,gamma,xray" in proc.stdout and "left out" in proc.stdout


def test_mc_default_records_all_emissions(cli, tmp_path):
    args = _phantom(cli, tmp_path, n=6)
    out = tmp_path / "mc"
    proc = cli("mc", *args, "--nuclide", "Lu-177", "--decays", "4000", "--batches", "2", "--out", out)
    assert proc.returncode == 0, proc.stderr
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["settings"]["emissions"] == "all"
    assert prov["emission_selection"]["left_out_mev_per_decay"] == 0.0
    assert "left out" not in proc.stdout


def test_photon_estimator_reaches_the_run_settings_and_provenance(cli, tmp_path, monkeypatch):
    """Only the wiring: the run is handed TransportSettings(photon_estimator="tle") (the TLE
    physics has its own tests); the simulation itself runs analog here."""
    import dataclasses

    import persodose.mc as mc
    from persodose.mc.tables import TransportSettings

    seen = []
    real = mc.simulate_decays

    def spy(phantom, source, nuclide, n, settings, **kw):
        seen.append(settings)
        return real(phantom, source, nuclide, n, dataclasses.replace(settings, transport=TransportSettings()), **kw)

    monkeypatch.setattr(mc, "simulate_decays", spy)
    args = _phantom(cli, tmp_path, n=6)
    out = tmp_path / "mc"
    proc = cli("mc", *args, "--nuclide", "Lu-177", "--decays", "4000", "--batches", "2", "--out", out,
               "--photon-estimator", "TLE", "--emissions", "gamma,xray")
    assert proc.returncode == 0, proc.stderr
    assert seen[0].transport.photon_estimator == "tle" and seen[0].emissions == ("gamma", "xray")
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["settings"]["transport"]["photon_estimator"] == "tle"


def test_kernel_options_reach_generate_kernel(cli, tmp_path, monkeypatch):
    from persodose.mc import kernels

    seen = []
    real = kernels.generate_kernel

    def spy(*a, settings=None, **kw):
        seen.append(settings)
        return real(*a, settings=settings, **kw)

    monkeypatch.setattr(kernels, "generate_kernel", spy)
    proc = cli("kernel", "--nuclide", "Lu-177", "--voxel-mm", "4", "--size", "3", "--decays", "2000",
               "--out", tmp_path / "k.txt", "--photon-estimator", "analog", "--emissions", "ic,auger")
    assert proc.returncode == 0, proc.stderr
    assert seen[0].transport.photon_estimator == "analog" and seen[0].emissions == ("ic", "auger")

    def stop(*a, settings=None, **kw):  # TLE physics is not tested here: record and stop
        from persodose.errors import InputError

        seen.append(settings)
        raise InputError("stopped by the test")

    monkeypatch.setattr(kernels, "generate_kernel", stop)
    assert_clean_error(cli("kernel", "--nuclide", "Lu-177", "--voxel-mm", "4", "--size", "3", "--decays", "2000",
                           "--out", tmp_path / "k2.txt", "--photon-estimator", "tle"), "stopped by the test")
    assert seen[1].transport.photon_estimator == "tle" and seen[1].emissions is None


def test_kernel_with_a_selection_writes_it_into_the_table(cli, tmp_path):
    out = tmp_path / "k.txt"
    proc = cli("kernel", "--nuclide", "Sm-153", "--voxel-mm", "4", "--size", "3", "--decays", "5000",
               "--out", out, "--emissions", "beta,gamma,xray")
    assert proc.returncode == 0, proc.stderr
    header = [ln for ln in out.read_text().splitlines() if ln.startswith("# source:")]
    assert header and "emissions beta,gamma,xray: 0.287664 of 0.333976 MeV per decay" in header[0]
    assert "(0.0463122 MeV left out)" in proc.stdout


@pytest.mark.parametrize("option,value,words", [
    ("--emissions", "beta,neutrino", ["--emissions beta,neutrino: ", "'neutrino'",
                                      "beta, positron, gamma, xray, ic, auger, alpha"]),
    ("--emissions", "annihilation", ["positron"]),
    ("--emissions", "positron", ["--emissions positron: Lu-177 emits nothing of positron",
                                 "beta,gamma,xray,ic,auger"]),
    ("--emissions", ",", ["no emissions"]),
    ("--photon-estimator", "kerma", ["--photon-estimator kerma: ", "analog", "tle"]),
])
def test_bad_selection_or_estimator_is_refused_before_any_input_is_read(cli, tmp_path, option, value, words):
    x = tmp_path / "x"
    missing = tmp_path / "not_read.nii.gz"
    for args in (["mc", "--density", missing, "--materials", missing, "--tia", missing, "--nuclide", "Lu-177",
                  "--decays", "10", "--out", x],
                 ["kernel", "--nuclide", "Lu-177", "--voxel-mm", "4", "--size", "3", "--out", x / "k.txt"]):
        assert_clean_error(cli(*args, option, value), *words)
    assert not x.exists()
