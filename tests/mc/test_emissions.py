"""Emission selection of decay runs (issue 16): parsing, validation, energy bookkeeping, kernel cache key.

The decay data are ICRP Publication 107 (ICRP 2008, Ann. ICRP 38(3)) as read by
:mod:`persodose.physics.radionuclides`; the expected energies below are summed from that module's
lines directly, independently of :func:`persodose.mc.sources.decay_tables`.
"""

from __future__ import annotations

import numpy as np
import pytest

from persodose.errors import InputError
from persodose.mc import MCSettings, TransportSettings
from persodose.mc.settings import EMISSION_CATEGORIES, normalise_emissions
from persodose.mc.sources import CATEGORY_LINES, decay_tables
from persodose.physics.radionuclides import get_nuclide

TS = TransportSettings()


def tables(nuclide, emissions=None):
    return decay_tables(nuclide, TS.photon_cut_mev, TS.electron_cut_mev, TS.emax_mev, emissions)


def lines_energy(nuclide, keys) -> float:
    nuc = get_nuclide(nuclide)
    return sum(float(np.dot(nuc.lines[k].energy_mev, nuc.lines[k].yield_per_decay)) for k in keys)


# ---------------------------------------------------------------------------------------
# Parsing and validation
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("given,expected", [
    (None, None),
    ("all", None),
    (" ALL ", None),
    ("beta,gamma,xray", ("beta", "gamma", "xray")),
    ("Xray, GAMMA ,beta,beta", ("beta", "gamma", "xray")),  # case, spaces, order and repeats do not matter
    (["ic", "Auger"], ("ic", "auger")),
    (",".join(EMISSION_CATEGORIES), None),  # every category is all
])
def test_selection_is_normalised(given, expected):
    assert normalise_emissions(given) == expected
    assert MCSettings(emissions=given).emissions == expected


@pytest.mark.parametrize("given,words", [
    ("beta,gama", ["'gama'", "beta, positron, gamma, xray, ic, auger, alpha"]),
    ("annihilation", ["'annihilation'", "positron"]),
    ("", ["no emissions"]),
    (" , ", ["no emissions"]),
    ("all,beta", ["'all'"]),
])
def test_bad_selection_is_one_line_input_error(given, words):
    with pytest.raises(InputError) as err:
        MCSettings(emissions=given)
    msg = str(err.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg


def test_categories_map_to_every_transported_icrp_type_once():
    assert tuple(CATEGORY_LINES) == EMISSION_CATEGORIES
    keys = [k for v in CATEGORY_LINES.values() for k in v]
    assert len(keys) == len(set(keys))
    assert set(keys) == {"beta-", "beta_delayed", "beta+", "gamma", "xray", "ic", "auger", "alpha", "alpha_recoil"}
    assert "annihilation" not in keys  # made by the transport from the positrons


def test_a_selection_that_emits_nothing_of_the_nuclide_is_refused():
    with pytest.raises(InputError) as err:
        tables("Sm-153", "positron,alpha")
    msg = str(err.value)
    assert "\n" not in msg and "Sm-153" in msg and "beta,gamma,xray,ic,auger" in msg
    with pytest.raises(InputError, match="F-18"):
        tables("F-18", "beta,gamma")


# ---------------------------------------------------------------------------------------
# Energy bookkeeping against the ICRP-107 data
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("nuclide", ["Sm-153", "Lu-177", "I-131"])
def test_beta_and_photons_emit_the_icrp107_sum_of_those_categories(nuclide):
    nuc = get_nuclide(nuclide)
    dt = tables(nuclide, "beta,gamma,xray")
    photons = lines_energy(nuclide, ("gamma", "xray"))
    n_int, e_int = nuc.beta_spectrum_integrals("beta-")
    # the engine samples the spectrum's shape, with the branch yields' total as β- per decay
    beta_spectrum = (nuc.lines["beta-"].total_yield + nuc.lines["beta_delayed"].total_yield) * e_int / n_int
    beta_icrp = lines_energy(nuclide, ("beta-", "beta_delayed"))  # ICRP-107 branch mean energies
    assert dt.mean_emitted_mev == pytest.approx(photons + beta_spectrum, rel=1e-9)
    assert dt.mean_emitted_mev == pytest.approx(photons + beta_icrp, rel=0.015)  # spectrum vs branch means
    assert dt.emissions == ("beta", "gamma", "xray")
    # what is left out is exactly the conversion and Auger electrons
    assert dt.left_out_mev == pytest.approx(lines_energy(nuclide, ("ic", "auger")), rel=1e-9)
    assert dt.full_emitted_mev == pytest.approx(tables(nuclide).mean_emitted_mev, rel=1e-12)


def test_sm153_leaves_out_46_kev_of_conversion_and_auger_electrons():
    """The issue's figure: 46 keV of Sm-153's 270 keV electron energy per decay (ICRP 107)."""
    dt = tables("Sm-153", "beta,gamma,xray")
    assert dt.left_out_mev == pytest.approx(0.0463, abs=0.0005)
    assert get_nuclide("Sm-153").electron_energy_per_decay_mev() == pytest.approx(0.270, abs=0.001)


@pytest.mark.parametrize("nuclide,part", [("Lu-177", "beta,gamma,xray"), ("F-18", "positron"),
                                          ("Cu-64", "beta,auger,xray"), ("Ra-223", "alpha,ic")])
def test_a_selection_and_its_complement_add_up_to_the_full_decay(nuclide, part):
    chosen = normalise_emissions(part)
    rest = [c for c in EMISSION_CATEGORIES if c not in chosen]
    full = tables(nuclide)
    have = [c for c in rest if lines_energy(nuclide, CATEGORY_LINES[c]) > 0]
    other = tables(nuclide, have).mean_emitted_mev if have else 0.0
    assert tables(nuclide, part).mean_emitted_mev + other == pytest.approx(full.mean_emitted_mev, rel=1e-12)


def test_locally_deposited_energy_is_filtered_by_category():
    """local_mev holds emissions below the cut-offs and alphas: each only with its own category."""
    nuc = get_nuclide("Lu-177")
    auger = nuc.lines["auger"]
    below = auger.energy_mev < TS.electron_cut_mev
    dt = tables("Lu-177", "auger")
    assert below.any() and (~below).any()
    assert dt.local_mev == pytest.approx(float(np.dot(auger.energy_mev[below], auger.yield_per_decay[below])), rel=1e-12)
    assert dt.line_total == pytest.approx(float(auger.yield_per_decay[~below].sum()), rel=1e-12)
    assert np.all(dt.beta_yields == 0)
    xr = nuc.lines["xray"]
    low = xr.energy_mev < TS.photon_cut_mev
    x = tables("Lu-177", "xray")
    assert low.any()  # Lu-177 has M X-rays below the photon cut
    assert x.local_mev == pytest.approx(float(np.dot(xr.energy_mev[low], xr.yield_per_decay[low])), rel=1e-12)
    assert x.line_total == pytest.approx(float(xr.yield_per_decay[~low].sum()), rel=1e-12)
    a = tables("Ra-223", "alpha")  # alphas and recoils never travel: all local
    assert a.local_mev == pytest.approx(lines_energy("Ra-223", ("alpha", "alpha_recoil")), rel=1e-12)
    assert a.line_total == 0 and np.all(a.beta_yields == 0)
    assert tables("Ra-223", "gamma,xray").local_mev < 0.01 * a.local_mev


@pytest.mark.parametrize("nuclide", ["Lu-177", "F-18", "Cu-64", "Ra-223"])
def test_all_emissions_give_exactly_the_tables_of_before(nuclide):
    ref = tables(nuclide)
    assert ref.emissions is None and ref.left_out_mev == 0.0
    for same in ("all", list(EMISSION_CATEGORIES)):
        dt = tables(nuclide, same)
        for name in ("beta_yields", "beta_minus_e", "beta_minus_cdf", "beta_plus_e", "beta_plus_cdf",
                     "line_kind", "line_e", "line_cum"):
            np.testing.assert_array_equal(getattr(dt, name), getattr(ref, name))
        assert (dt.local_mev, dt.line_total, dt.mean_emitted_mev) == (ref.local_mev, ref.line_total,
                                                                    ref.mean_emitted_mev)


def test_a_run_emits_the_selected_energy_within_statistics():
    from persodose.mc import VoxelPhantom, simulate_decays
    from persodose.physics.materials import get_material

    ph = VoxelPhantom.homogeneous((7, 7, 7), 4.0, get_material("soft_tissue"), density_g_cm3=1.04)
    src = ph.density.with_array(np.zeros(ph.density.shape), "tia")
    src.array[3, 3, 3] = 1.0
    n = 40_000
    res = simulate_decays(ph, src, "Sm-153", n, MCSettings(n_batches=4, chunks_per_batch=4, seed=3,
                                                           emissions="beta,gamma,xray"))
    expected = tables("Sm-153", "beta,gamma,xray").mean_emitted_mev
    assert res.info["mean_emitted_mev_per_decay"] == pytest.approx(expected, rel=1e-12)
    # per-decay emitted energy has a spread below 0.4 MeV (β- up to 0.8 MeV, 103 keV gamma), so the
    # mean of 4e4 decays is within 0.4/sqrt(4e4) = 0.002 MeV at one sigma; 5 sigma allowed
    assert res.energy_balance["emitted_mev"] == pytest.approx(expected, abs=5 * 0.4 / np.sqrt(n))
    assert res.energy_balance["emitted_mev"] < tables("Sm-153").mean_emitted_mev - 0.03  # IC/Auger really gone


# ---------------------------------------------------------------------------------------
# Kernels: provenance and cache key
# ---------------------------------------------------------------------------------------

def test_kernel_source_names_the_selection_and_its_energy():
    from persodose.mc.kernels import generate_kernel

    k, _ = generate_kernel("Sm-153", 4.0, size=3, n_decays=3000, settings=MCSettings(seed=1),
                           emissions="gamma,Beta,xray")
    assert "emissions beta,gamma,xray: 0.287664 of 0.333976 MeV per decay" in k.source
    full, _ = generate_kernel("Sm-153", 4.0, size=3, n_decays=3000, settings=MCSettings(seed=1))
    assert "emissions" not in full.source
    assert k.s_mgy_per_mbq_s[1, 1, 1] < 0.9 * full.s_mgy_per_mbq_s[1, 1, 1]  # IC/Auger stay in the voxel


def test_kernel_cache_key_holds_the_selection_and_keeps_the_key_of_all(tmp_path):
    from persodose.mc import kernels
    from persodose.mc.version import physics_tag

    old = tmp_path / "kernels" / f"Lu-177_soft_tissue_4mm_3_100_12345_{physics_tag()}.txt"  # the key before selections
    for same in (None, "all", ",".join(reversed(EMISSION_CATEGORIES))):
        assert kernels.kernel_cache_path("Lu-177", 4.0, "soft_tissue", 3, 100, 12345, tmp_path, same) == old
    sel = kernels.kernel_cache_path("Lu-177", 4.0, "soft_tissue", 3, 100, 12345, tmp_path, "beta,gamma,xray")
    assert sel != old and sel.name == f"Lu-177_soft_tissue_4mm_3_100_12345_em-beta+gamma+xray_{physics_tag()}.txt"
    assert kernels.kernel_cache_path("Lu-177", 4.0, "soft_tissue", 3, 100, 12345, tmp_path, "XRAY,beta,gamma") == sel
    with pytest.raises(InputError):
        kernels.kernel_cache_path("Lu-177", 4.0, "soft_tissue", 3, 100, 12345, tmp_path, "beta,neutrino")


def test_cached_kernel_keeps_selected_and_full_kernels_apart(monkeypatch, tmp_path):
    from persodose.dose.kernels import VoxelKernel
    from persodose.mc import kernels

    computed = []

    def fake_generate(name, voxel_mm, medium, size, n_decays, settings=None):
        computed.append(settings.emissions)
        s = np.full((size,) * 3, 1.0 + len(computed), np.float32)
        return VoxelKernel(s, (voxel_mm,) * 3, medium=medium, density_g_cm3=1.04, nuclide=name), 0

    monkeypatch.setattr(kernels, "generate_kernel", fake_generate)
    full = kernels.cached_kernel("Lu-177", 4.0, size=3, n_decays=100, cache_dir=tmp_path)
    sel = kernels.cached_kernel("Lu-177", 4.0, size=3, n_decays=100, cache_dir=tmp_path, emissions="beta,gamma,xray")
    again = kernels.cached_kernel("Lu-177", 4.0, size=3, n_decays=100, cache_dir=tmp_path, emissions="xray,gamma,beta")
    assert computed == [None, ("beta", "gamma", "xray")]
    assert float(full.s_mgy_per_mbq_s[0, 0, 0]) == 2.0 and float(sel.s_mgy_per_mbq_s[0, 0, 0]) == 3.0
    assert float(again.s_mgy_per_mbq_s[0, 0, 0]) == 3.0
    assert len(list((tmp_path / "kernels").iterdir())) == 2
