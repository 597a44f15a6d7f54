"""Tests of persodose.physics.radionuclides against published ICRP-107 / MIRD values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from persodose.errors import InputError, NuclideError
from persodose.physics.radionuclides import (
    TIME_UNIT_S,
    Nuclide,
    available_nuclides,
    get_nuclide,
    normalise_nuclide_name,
)

DAY_S = 86400.0
ELECTRON_MASS_MEV = 0.51099895  # CODATA 2018


# ----------------------------------------------------------------- names
@pytest.mark.parametrize(
    "spelling, canonical",
    [
        ("Lu-177", "Lu-177"), ("Lu177", "Lu-177"), ("177Lu", "Lu-177"), ("lu-177", "Lu-177"),
        ("177-Lu", "Lu-177"), ("LU177", "Lu-177"), (" Lu 177 ", "Lu-177"),
        ("Tc99m", "Tc-99m"), ("99mTc", "Tc-99m"), ("Tc-99m", "Tc-99m"), ("99m-Tc", "Tc-99m"),
        ("F18", "F-18"), ("18F", "F-18"), ("Y-90", "Y-90"), ("90Y", "Y-90"),
        ("I-131", "I-131"), ("131I", "I-131"), ("Ga68", "Ga-68"), ("Ra-223", "Ra-223"),
        ("99Mo", "Mo-99"), ("99mo", "Mo-99"), ("Mo-99", "Mo-99"), ("52mMn", "Mn-52m"),
        ("Eu-152n", "Eu-152n"),
    ],
)
def test_name_spellings(spelling, canonical):
    assert normalise_nuclide_name(spelling) == canonical


@pytest.mark.parametrize("junk", ["", "   ", "abc", "177", "Lu-999", "Xx-12", "Tc-99x", "Lu--177",
                                  "12345Lu", "Lu-177-Lu", None, 177])
def test_junk_raises_nuclide_error(junk):
    with pytest.raises(NuclideError) as err:
        normalise_nuclide_name(junk)
    assert "\n" not in str(err.value)
    assert isinstance(err.value, InputError)


def test_unknown_isotope_hint_lists_same_element():
    with pytest.raises(NuclideError, match="Lu-177"):
        get_nuclide("Lu-999")


def test_available_nuclides_roundtrip():
    names = available_nuclides()
    assert len(names) == 1252  # ICRP 107: 1252 radionuclides of 97 elements
    assert len(set(names)) == 1252
    assert {"Lu-177", "Tc-99m", "F-18", "Y-90", "I-131", "Ra-223"} <= set(names)
    assert all(normalise_nuclide_name(n) == n for n in names)
    assert names.index("Lu-176") < names.index("Lu-177") < names.index("Lu-177m")


def test_cached():
    assert get_nuclide("Lu177") is get_nuclide("177Lu")


# ----------------------------------------------------------------- half-lives
def test_time_units():
    assert TIME_UNIT_S["y"] == 365.25 * DAY_S
    assert TIME_UNIT_S["m"] == 60.0 and TIME_UNIT_S["us"] == 1e-6 and TIME_UNIT_S["ms"] == 1e-3


@pytest.mark.parametrize(
    "name, half_life_s",
    [
        ("Lu-177", 6.647 * DAY_S),
        ("F-18", 109.77 * 60.0),
        ("Tc-99m", 6.015 * 3600.0),
        ("I-131", 8.0207 * DAY_S),
        ("Y-90", 64.1 * 3600.0),
        ("Cs-137", 30.1671 * 365.25 * DAY_S),
        ("Ra-219", 10.0e-3),  # milliseconds
        ("Rn-215", 2.3e-6),  # microseconds
    ],
)
def test_half_lives(name, half_life_s):
    nuc = get_nuclide(name)
    assert nuc.half_life_s == pytest.approx(half_life_s, rel=1e-9)
    assert nuc.decay_constant_per_s == pytest.approx(math.log(2) / half_life_s, rel=1e-9)


def test_every_nuclide_loads():
    for name in available_nuclides():
        nuc = get_nuclide(name)
        assert math.isfinite(nuc.half_life_s) and nuc.half_life_s > 0, name
        assert nuc.half_life_as_published[1] in TIME_UNIT_S


# ----------------------------------------------------------------- emissions
def test_lu177():
    lu = get_nuclide("Lu-177")
    e = lu.mean_energy_per_decay_mev()
    # ICRP 107 / MIRD: mean beta- energy per decay 0.1334 MeV (MIRD 0.13352)
    assert e["beta-"] == pytest.approx(0.1334, rel=2e-3)
    # ICRP 107 photons: gamma 0.0316 MeV + X 0.0035 MeV = 0.0351 MeV per decay
    assert e["gamma"] == pytest.approx(0.03156, rel=2e-3)
    assert lu.photon_energy_per_decay_mev() == pytest.approx(0.0353, rel=1e-2)
    assert lu.photon_energy_per_decay_mev() == pytest.approx(e["gamma"] + e["xray"], rel=1e-12)
    assert "annihilation" not in e and "beta+" not in e
    # electrons: beta- 0.1333 + IC 0.0135 + Auger 0.0011 MeV
    assert lu.electron_energy_per_decay_mev() == pytest.approx(0.1479, rel=2e-3)
    g = lu.lines["gamma"]
    k208 = np.argmin(abs(g.energy_mev - 0.208366))
    assert g.yield_per_decay[k208] == pytest.approx(0.11, abs=0.005)
    assert lu.lines["beta-"].total_yield == pytest.approx(1.0, abs=1e-4)


def test_f18():
    f = get_nuclide("F-18")
    bp = f.lines["beta+"]
    assert bp.total_yield == pytest.approx(0.9673, abs=1e-4)
    assert bp.energy_per_decay_mev / bp.total_yield == pytest.approx(0.2498, rel=1e-3)
    ann = f.lines["annihilation"]
    assert ann.total_yield == pytest.approx(1.9346, abs=1e-4)
    assert np.allclose(ann.energy_mev, ELECTRON_MASS_MEV, rtol=1e-4)
    # two 511 keV photons per positron
    assert f.photon_energy_per_decay_mev() == pytest.approx(2 * ELECTRON_MASS_MEV * 0.9673, rel=1e-4)
    assert len(f.lines["gamma"]) == 0 and len(f.lines["beta-"]) == 0
    e, n = f.beta_spectrum("beta-")
    assert e.size == 0 and n.size == 0


def test_y90():
    y = get_nuclide("Y-90")
    e = y.mean_energy_per_decay_mev()
    # ENSDF/MIRD mean beta 0.9267 MeV; the ICRP-107 file gives 0.9329 MeV per decay
    assert e["beta-"] == pytest.approx(0.9267, rel=1e-2)
    assert e["beta-"] == pytest.approx(0.9329, rel=1e-3)
    assert e.get("gamma", 0.0) < 1e-5  # no gamma of significance
    assert y.photon_energy_per_decay_mev() < 1e-4


def test_i131_and_tc99m_lines():
    i = get_nuclide("I-131").lines["gamma"]
    k = np.argmin(abs(i.energy_mev - 0.3645))
    assert i.energy_mev[k] == pytest.approx(0.3645, abs=5e-4)
    assert i.yield_per_decay[k] == pytest.approx(0.815, abs=0.005)
    t = get_nuclide("Tc-99m").lines["gamma"]
    k = np.argmin(abs(t.energy_mev - 0.1405))
    assert t.energy_mev[k] == pytest.approx(0.1405, abs=5e-4)
    assert t.yield_per_decay[k] == pytest.approx(0.89, abs=0.005)


def test_line_keys_always_present():
    tc = get_nuclide("Tc-99m")
    for key in ("gamma", "xray", "auger", "ic", "annihilation", "alpha", "beta-", "beta+"):
        assert key in tc.lines
    assert len(tc.lines["alpha"]) == 0 and tc.lines["alpha"].energy_per_decay_mev == 0.0
    ra = get_nuclide("Ra-223")
    assert ra.alpha_energy_per_decay_mev() > 5.6  # alpha 5.67 + recoil 0.10 MeV


@pytest.mark.parametrize("name, kind", [("Lu-177", "beta-"), ("Y-90", "beta-"), ("I-131", "beta-"),
                                        ("F-18", "beta+"), ("Ga-68", "beta+")])
def test_beta_spectrum_matches_branches(name, kind):
    nuc = get_nuclide(name)
    branches = nuc.lines[kind]
    count, energy = nuc.beta_spectrum_integrals(kind)
    assert count == pytest.approx(branches.total_yield, rel=1e-2)
    branch_mean = branches.energy_per_decay_mev / branches.total_yield
    assert energy / count == pytest.approx(branch_mean, rel=1e-2)
    e, n = nuc.beta_spectrum(kind)
    assert np.all(np.diff(e) > 0) and np.all(n >= 0)
    assert e.max() > 1.5 * branch_mean  # endpoint well above the mean


def test_beta_spectrum_split_for_mixed_emitter():
    cu = get_nuclide("Cu-64")
    minus_yield = cu.lines["beta-"].total_yield
    plus_yield = cu.lines["beta+"].total_yield
    n_minus, _ = cu.beta_spectrum_integrals("beta-")
    n_plus, _ = cu.beta_spectrum_integrals("beta+")
    assert n_minus == pytest.approx(minus_yield, rel=1e-2)
    assert n_plus == pytest.approx(plus_yield, rel=1e-2)
    e_minus, s_minus = cu.beta_spectrum("beta-")
    e_plus, s_plus = cu.beta_spectrum("beta+")
    np.testing.assert_allclose(s_minus + s_plus, cu.spectrum_per_mev, rtol=1e-12)
    # branch mean energies (not the split spectrum) give the energies: 0.190 and 0.278 MeV
    e = cu.mean_energy_per_decay_mev()
    assert e["beta-"] / minus_yield == pytest.approx(0.1904, rel=1e-2)
    assert e["beta+"] / plus_yield == pytest.approx(0.2782, rel=1e-2)


def test_beta_spectrum_bad_kind():
    with pytest.raises(InputError):
        get_nuclide("Lu-177").beta_spectrum("gamma")


def test_arrays_read_only():
    lu = get_nuclide("Lu-177")
    with pytest.raises(ValueError):
        lu.lines["gamma"].yield_per_decay[0] = 1.0
    assert isinstance(lu, Nuclide)
