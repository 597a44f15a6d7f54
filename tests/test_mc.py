"""Monte Carlo engine: conservation, reproducibility, physics checks and bad input (tier 1)."""

import math

import numpy as np
import pytest

from persodose.errors import GeometryError, InputError, MaterialError, NuclideError
from persodose.grid import Grid, Kind
from persodose.mc import MCSettings, Tally, VoxelPhantom, simulate_decays, simulate_point_source
from persodose.physics.materials import get_material

WATER = get_material("water")
SOFT = get_material("soft_tissue")
AIR = get_material("air")


def _box(n=21, mm=2.0, material=WATER):
    return VoxelPhantom.homogeneous((n, n, n), mm, material)


def _balance_ok(res, rel=1e-9):
    b = res.energy_balance
    lhs = b["emitted_mev"] + b["annihilation_rest_energy_mev"]
    rhs = b["deposited_mev"] + b["escaped_mev"]
    assert lhs > 0
    assert rhs == pytest.approx(lhs, rel=rel)
    assert b["stack_overflow_mev"] == 0.0
    # the voxel tally holds exactly the deposited energy
    assert float(res.energy_per_primary_mev.array.astype(np.float64).sum()) == pytest.approx(
        b["deposited_mev"], rel=1e-5)


@pytest.mark.parametrize("particle,energy", [("photon", 0.5), ("electron", 1.5), ("positron", 0.8)])
def test_energy_balance_point_sources(particle, energy):
    res = simulate_point_source(_box(), particle, energy, 3000, settings=MCSettings(n_batches=3, seed=3))
    _balance_ok(res)
    assert res.energy_balance["emitted_mev"] == pytest.approx(energy)
    if particle == "positron":
        # every positron annihilates once: 2 x 511 keV of rest energy
        assert res.energy_balance["annihilation_rest_energy_mev"] == pytest.approx(1.02199790, rel=1e-9)


@pytest.mark.parametrize("nuclide", ["Lu-177", "F-18", "Y-90", "I-131"])
def test_energy_balance_decays_and_mean_emission(nuclide):
    ph = _box(15, 4.0)
    src = ph.density.with_array(np.zeros(ph.density.shape), Kind.TIA)
    src.array[5:10, 5:10, 5:10] = 1.0
    res = simulate_decays(ph, src, nuclide, 20000, MCSettings(n_batches=4, seed=1))
    _balance_ok(res)
    # the sampled emission agrees with the ICRP-107 mean energy per decay within statistics
    emitted = res.energy_balance["emitted_mev"]
    expected = res.info["mean_emitted_mev_per_decay"]
    assert emitted == pytest.approx(expected, rel=0.02)


def test_same_seed_same_result_other_seed_differs():
    ph = _box(11, 3.0)
    s = MCSettings(n_batches=2, seed=7)
    a = simulate_point_source(ph, "electron", 1.0, 400, settings=s)
    b = simulate_point_source(ph, "electron", 1.0, 400, settings=s)
    np.testing.assert_allclose(a.tally.sum_mev, b.tally.sum_mev, rtol=1e-12, atol=1e-15)
    c = simulate_point_source(ph, "electron", 1.0, 400, settings=MCSettings(n_batches=2, seed=8))
    assert not np.allclose(a.tally.sum_mev, c.tally.sum_mev)


@pytest.mark.parametrize("energy_mev", [0.14, 1.0])
def test_narrow_beam_transmission_equals_exp_mu_x(energy_mev):
    """Uncollided photons through 10 cm of water: exp(-mu x) from the interaction data."""
    from persodose.physics.photon_data import narrow_beam_transmission

    n_xy, nz, mm = 41, 20, 5.0
    ph = VoxelPhantom.homogeneous((nz, n_xy, n_xy), mm, WATER)
    n = 40000
    res = simulate_point_source(ph, "photon", energy_mev, n, position_xyz_mm=(n_xy * mm / 2, n_xy * mm / 2, 1e-6),
                                direction_xyz=(0, 0, 1), settings=MCSettings(n_batches=4, seed=11))
    t_mc = res.energy_balance["escaped_uncollided_photons_mev"] / energy_mev
    t_ref = narrow_beam_transmission(WATER, energy_mev, nz * mm)
    sigma = math.sqrt(t_ref * (1 - t_ref) / n)
    assert abs(t_mc - t_ref) < 4 * sigma + 0.002, (t_mc, t_ref, sigma)


def test_lu177_sphere_self_dose_is_electron_energy_plus_photon_part():
    """Uniform Lu-177 in a 150 g soft-tissue sphere: energy absorbed per decay in the sphere
    equals the electron energy per decay (non-penetrating) plus the absorbed photon part,
    here estimated with the mean-chord absorbed fraction 1 - exp(-mu_en rho 4V/S)."""
    from persodose.physics.photon_data import photon_tables
    from persodose.physics.radionuclides import get_nuclide

    mm = 2.0
    r_mm = (150.0 / SOFT.density_g_cm3 * 3 / (4 * math.pi)) ** (1 / 3) * 10
    n = int(2 * r_mm / mm) + 6
    c = (n - 1) / 2
    zz, yy, xx = np.indices((n, n, n))
    inside = ((xx - c) ** 2 + (yy - c) ** 2 + (zz - c) ** 2) * mm**2 <= r_mm**2
    dens = np.where(inside, SOFT.density_g_cm3, AIR.density_g_cm3).astype(np.float32)
    mats = np.where(inside, 0, 1).astype(np.uint8)
    ph = VoxelPhantom(Grid(dens, (mm,) * 3, kind=Kind.DENSITY), Grid(mats, (mm,) * 3, kind=Kind.MATERIAL), (SOFT, AIR))
    src = Grid(inside.astype(np.float64), (mm,) * 3, kind=Kind.TIA)
    res = simulate_decays(ph, src, "Lu-177", 40000, MCSettings(n_batches=4, seed=5))
    e_in_sphere = float(res.energy_per_primary_mev.array[inside].astype(np.float64).sum())
    lu = get_nuclide("Lu-177")
    mass_g = float(inside.sum()) * (mm / 10) ** 3 * SOFT.density_g_cm3
    chord_cm = 4.0 / 3.0 * (mass_g / SOFT.density_g_cm3 * 3 / (4 * math.pi)) ** (1 / 3)
    tab = photon_tables(SOFT)
    photon_part = 0.0
    for key in ("gamma", "xray"):
        em = lu.lines[key]
        for e, y in zip(em.energy_mev, em.yield_per_decay):
            if e < 0.001:
                continue
            mu_en = float(tab.mu_over_rho(np.array([e]), "mu_en")[0]) * SOFT.density_g_cm3
            photon_part += e * y * (1 - math.exp(-mu_en * chord_cm))
    expected = lu.electron_energy_per_decay_mev() + photon_part
    assert e_in_sphere == pytest.approx(expected, rel=0.02), (e_in_sphere, expected, photon_part)


def test_uncertainty_falls_with_more_decays_and_resume_merges():
    ph = _box(9, 4.0)
    src = ph.density.with_array(np.ones(ph.density.shape), Kind.ACTIVITY)
    small = simulate_decays(ph, src, "F-18", 4000, MCSettings(n_batches=4, seed=2))
    large = simulate_decays(ph, src, "F-18", 64000, MCSettings(n_batches=4, seed=2))
    centre = (4, 4, 4)
    ratio = small.relative_uncertainty.array[centre] / large.relative_uncertainty.array[centre]
    assert 2.0 < ratio < 8.0  # ideally 4 (sqrt of 16)
    # an interrupted run resumed gives the same tally as an uninterrupted one
    s4 = MCSettings(n_batches=4, seed=9)
    full = simulate_decays(ph, src, "F-18", 4000, s4)
    partial = Tally.empty(full.tally.sum_mev.size)

    def interrupt_after_two(done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        simulate_decays(ph, src, "F-18", 4000, s4, resume=partial, progress=interrupt_after_two)
    assert partial.n_batches == 2
    resumed = simulate_decays(ph, src, "F-18", 4000, s4, resume=partial)
    np.testing.assert_allclose(resumed.tally.sum_mev, full.tally.sum_mev, rtol=1e-12, atol=1e-18)
    assert resumed.tally.n_primaries == full.tally.n_primaries
    # merging runs of different seeds adds their batches; the same seed twice is refused
    other = simulate_decays(ph, src, "F-18", 4000, MCSettings(n_batches=4, seed=10))
    merged = full.tally.merge(other.tally)
    assert merged.n_batches == 8 and merged.n_primaries == 8000
    with pytest.raises(InputError):
        full.tally.merge(full.tally)


def test_checkpoint_round_trip(tmp_path):
    ph = _box(7, 4.0)
    src = ph.density.with_array(np.ones(ph.density.shape), Kind.ACTIVITY)
    ck = tmp_path / "run.npz"
    res = simulate_decays(ph, src, "Lu-177", 2000, MCSettings(n_batches=2, seed=4), checkpoint=ck)
    back = Tally.load(ck)
    np.testing.assert_array_equal(back.sum_mev, res.tally.sum_mev)
    assert back.n_batches == 2 and back.batch_ids == [[4, 0], [4, 1]]
    (tmp_path / "bad.npz").write_bytes(b"junk")
    with pytest.raises(InputError):
        Tally.load(tmp_path / "bad.npz")


def test_bad_input_is_refused():
    ph = _box(5, 4.0)
    ok = ph.density.with_array(np.ones(ph.density.shape), Kind.TIA)
    with pytest.raises(GeometryError):
        simulate_decays(ph, Grid(np.ones((5, 5, 6)), (4, 4, 4), kind=Kind.TIA), "Lu-177", 100)
    neg = ok.with_array(-np.ones(ph.density.shape))
    with pytest.raises(InputError, match="negative"):
        simulate_decays(ph, neg, "Lu-177", 100)
    nan = ok.with_array(np.full(ph.density.shape, np.nan))
    with pytest.raises(InputError, match="NaN"):
        simulate_decays(ph, nan, "Lu-177", 100)
    with pytest.raises(InputError, match="zero"):
        simulate_decays(ph, ok.with_array(np.zeros(ph.density.shape)), "Lu-177", 100)
    with pytest.raises(NuclideError):
        simulate_decays(ph, ok, "Xx-999", 100)
    with pytest.raises(InputError):
        simulate_decays(ph, ok, "Lu-177", 0)
    with pytest.raises(MaterialError):
        VoxelPhantom(ph.density.with_array(np.full(ph.density.shape, 40.0)), ph.materials, ph.material_list)
    with pytest.raises(MaterialError):
        VoxelPhantom(ph.density, ph.materials.with_array(np.full(ph.density.shape, 3, np.uint8)), ph.material_list)
    with pytest.raises(InputError):
        simulate_point_source(ph, "neutron", 1.0, 10)
    with pytest.raises(InputError):
        MCSettings(n_batches=1)


class _Pencil:
    """A picklable beam sampler: a pencil of photons along +z from far outside the grid."""

    def __init__(self, energy_mev, origin=(0.0, 0.0, -500.0)):
        self.energy_mev = energy_mev
        self.origin = origin

    def sample(self, n, rng):
        return (np.tile(self.origin, (n, 1)), np.tile([0.0, 0.0, 1.0], (n, 1)), np.full(n, self.energy_mev))


def test_beam_source_enters_the_grid_and_transmits_exp_mu_x():
    from persodose.mc.engine import simulate_beam
    from persodose.physics.photon_data import narrow_beam_transmission

    ph = VoxelPhantom.homogeneous((20, 41, 41), 5.0, WATER)  # 100 mm of water along z
    n = 40000
    res = simulate_beam(ph, _Pencil(0.1), n, MCSettings(n_batches=4, seed=21))
    _balance_ok(res)
    t_mc = res.energy_balance["escaped_uncollided_photons_mev"] / 0.1
    t_ref = narrow_beam_transmission(WATER, 0.1, 100.0)
    assert abs(t_mc - t_ref) < 4 * math.sqrt(t_ref * (1 - t_ref) / n) + 0.002
    # a beam that misses the grid escapes untouched
    miss = simulate_beam(ph, _Pencil(0.1, origin=(500.0, 0.0, -500.0)), 400, MCSettings(n_batches=2))
    assert miss.energy_balance["deposited_mev"] == 0.0
    assert miss.energy_balance["escaped_uncollided_photons_mev"] == pytest.approx(0.1)
