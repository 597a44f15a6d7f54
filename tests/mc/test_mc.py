"""Monte Carlo engine: conservation, reproducibility, physics checks and bad input (tier 1)."""

import math

import numpy as np
import pytest

from persodose.errors import GeometryError, InputError, MaterialError, NuclideError
from persodose.grid import Grid, Kind
from persodose.mc import MCSettings, Tally, VoxelPhantom, simulate_decays, simulate_point_source
from persodose.mc.tables import TransportSettings
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


# --------------------------------------------------------------------------------------------
# Attenuation as the transport uses it, against independent reference data
# --------------------------------------------------------------------------------------------
# NIST XCOM total mass attenuation coefficients WITH coherent scattering, mu/rho in cm2/g, as
# tabulated by J. H. Hubbell and S. M. Seltzer, "Tables of X-Ray Mass Attenuation Coefficients
# and Mass Energy-Absorption Coefficients", NISTIR 5632 (1995; NIST Standard Reference
# Database 126, https://physics.nist.gov/PhysRefData/XrayMassCoef/tab4.html, Table 4):
# "Water, Liquid" and "Bone, Cortical (ICRU-44)" (H 3.4, C 15.5, N 4.2, O 43.5, Na 0.1, Mg 0.2,
# P 10.3, S 0.3, Ca 22.5 % by mass, the composition of persodose's "bone").
# The engine's photon data come from xraylib (persodose.physics.photon_data), so xraylib is not
# an independent reference here; XCOM is. Energies 20 keV - 1.5 MeV only: every absorption
# edge of these materials (Ca K at 4.04 keV and below) lies under 20 keV, so mu/rho is smooth
# over this range and the comparison is not sensitive to where an edge falls between nodes.
XCOM_MU_RHO = {
    "water": [(0.020, 0.8096), (0.030, 0.3756), (0.040, 0.2683), (0.050, 0.2269), (0.060, 0.2059),
              (0.080, 0.1837), (0.100, 0.1707), (0.150, 0.1505), (0.200, 0.1370), (0.300, 0.1186),
              (0.400, 0.1061), (0.500, 0.09687), (0.600, 0.08956), (0.800, 0.07865),
              (1.000, 0.07072), (1.250, 0.06323), (1.500, 0.05754)],
    "bone": [(0.020, 4.001), (0.030, 1.331), (0.040, 0.6655), (0.050, 0.4242), (0.060, 0.3148),
             (0.080, 0.2229), (0.100, 0.1855), (0.150, 0.1480), (0.200, 0.1309), (0.300, 0.1113),
             (0.400, 0.09908), (0.500, 0.09022), (0.600, 0.08332), (0.800, 0.07308),
             (1.000, 0.06566), (1.250, 0.05871), (1.500, 0.05346)],
}
BONE = get_material("bone")


def _xcom(material_name, energy_mev):
    return dict(XCOM_MU_RHO[material_name])[energy_mev]


def test_transport_attenuation_coefficients_match_nist_xcom():
    """mu/rho as the photon kernel computes it (the engine's own tables, bin lookup and linear
    interpolation, tr._eidx / tr._lerp) agrees with NIST XCOM within 0.5 % for water and ICRU-44
    cortical bone from 20 keV to 1.5 MeV. (Measured agreement: better than 0.1 %.) A 3 %
    (or even a 1 %) scaling of the transport tables fails this test."""
    from persodose.mc import transport as tr
    from persodose.mc.engine import point_source_problem

    mats = (WATER, BONE)
    dens = Grid(np.array([[[1.0, 1.92]]], np.float32), (2.0,) * 3, kind=Kind.DENSITY)
    mat_index = Grid(np.array([[[0, 1]]], np.uint8), (2.0,) * 3, kind=Kind.MATERIAL)
    problem = point_source_problem(VoxelPhantom(dens, mat_index, mats), "photon", 0.1, 10,
                                   settings=MCSettings(n_batches=2))
    tab = problem.tables
    # the kernel receives exactly these arrays (log_emin, inv_dlog, n_e, photon, majorant, ...)
    physics = problem._kernel_args()[-1]
    assert physics[0] == tab.log_emin and physics[1] == tab.inv_dlog and physics[2] == tab.energy_mev.size
    np.testing.assert_array_equal(physics[3], tab.photon)
    np.testing.assert_array_equal(physics[4], problem.majorant_per_mm)
    rel_dev = []
    for m, mat in enumerate(mats):
        for e, mu_ref in XCOM_MU_RHO[mat.name]:
            i, fr = tr._eidx(e, tab.log_emin, tab.inv_dlog, tab.energy_mev.size)
            mu = sum(tr._lerp(tab.photon[m, k], i, fr) for k in range(4))  # photo+Compton+Rayleigh+pair
            mu_tot = tr._lerp(tab.photon_total[m], i, fr)
            assert mu_tot == pytest.approx(mu, rel=1e-12)
            rel_dev.append((mat.name, e, mu / mu_ref - 1.0))
            # the Woodcock majorant (1/mm) bounds mu * rho * 0.1 (1/mm) at this energy
            rho = (1.0, 1.92)[m]
            assert tr._lerp(problem.majorant_per_mm, i, fr) >= mu * rho * 0.1
    bad = [d for d in rel_dev if abs(d[2]) > 0.005]
    assert not bad, bad


def _uncollided_fraction(res, energy_mev, n, photons_only):
    """Fraction of the primary photons that left the grid without any interaction.

    The counter adds the energy of every photon that escapes without interacting, secondary
    photons included (bremsstrahlung of the photo- and Compton electrons). With photon-only
    transport there are none, and the count must be a whole number of primaries: binomial(n, T).
    With the full physics at 100 keV in water they add < 1e-6 to T (measured), negligible here.
    """
    count = res.energy_balance["escaped_uncollided_photons_mev"] / energy_mev * n
    if photons_only:
        assert count == pytest.approx(round(count), abs=1e-3)
        count = round(count)
    return count / n


def _transmission_case(material, energy_mev, thickness_mm, n, settings, photons_only):
    """Uncollided fraction of a pencil beam through a slab (one voxel, t x 2 x 2 mm)."""
    ph = VoxelPhantom.homogeneous((1, 1, 1), (thickness_mm, 2.0, 2.0), material)
    res = simulate_point_source(ph, "photon", energy_mev, n, position_xyz_mm=(1.0, 1.0, 1e-6),
                                direction_xyz=(0, 0, 1), settings=settings)
    return _uncollided_fraction(res, energy_mev, n, photons_only)


# Photon-only transport: secondary electrons deposit on the spot, no bremsstrahlung photons,
# so nothing but primary photons can leave uncollided (and the run is fast).
_PHOTONS_ONLY = TransportSettings(electron_cut_mev=3.0, hard_collision_cut_mev=3.0, brems_cut_mev=3.0)


@pytest.mark.parametrize("material_name,energy_mev,thickness_mm,photons_only", [
    ("water", 0.100, 100.0, False),  # photo + Compton + Rayleigh, full default physics
    ("water", 0.500, 180.0, True),   # Compton-dominated
    ("bone", 0.080, 40.0, True),     # photoelectric (mostly Ca, P) ~23 % of mu
    ("bone", 1.000, 140.0, True),
])
def test_narrow_beam_transmission_resolves_a_one_percent_mu_error(material_name, energy_mev, thickness_mm,
                                                                  photons_only):
    """Uncollided transmission of a pencil beam through a slab, T = exp(-mu t), with mu from
    NIST XCOM (independent of the engine's data), to a relative tolerance from the binomial
    statistics of the run.

    With mu t ~ 1.7 (T ~ 0.18, close to the thickness where T is most sensitive to mu relative
    to its noise) and n = 2e6 photons, sigma(T)/T = sqrt((1 - T) / (n T)) ~ 0.0015, while a 1 %
    error in mu changes T by mu t * 0.01 ~ 0.017 relative, i.e. > 10 sigma. Tolerance: 3 sigma
    plus 0.1 % of mu t for the reference (XCOM's 4 significant figures and the measured
    < 0.05 % difference between the engine's interpolated mu and XCOM at these energies).
    """
    material = get_material(material_name)
    mu_per_mm = _xcom(material_name, energy_mev) * material.density_g_cm3 * 0.1
    mu_t = mu_per_mm * thickness_mm
    n = 2_000_000
    settings = MCSettings(n_batches=4, seed=11, transport=_PHOTONS_ONLY if photons_only else TransportSettings())
    t_ref = math.exp(-mu_t)
    sigma_rel = math.sqrt((1.0 - t_ref) / (n * t_ref))
    tol = 3.0 * sigma_rel + 0.001 * mu_t
    # the design resolves a 1 % error of mu: it moves T by more than twice the tolerance
    assert 0.01 * mu_t > 2.0 * tol, (0.01 * mu_t, tol)
    t_mc = _transmission_case(material, energy_mev, thickness_mm, n, settings, photons_only)
    assert abs(t_mc / t_ref - 1.0) < tol, (t_mc, t_ref, sigma_rel, tol)


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
    # random decay positions: the 1/sqrt(N) law of independent decays (stratified positions make
    # the count of a voxel nearly exact, and at 1.4 decays per voxel and batch their spread is
    # not yet in that regime; tests/mc/test_tle.py tests them); without the control variate, which
    # applies from CONTROL_MIN_DECAYS decays per voxel on, so in the large run only
    rnd = TransportSettings(source_sampling="random", control_variate=False)
    small = simulate_decays(ph, src, "F-18", 4000, MCSettings(n_batches=4, seed=2, transport=rnd))
    large = simulate_decays(ph, src, "F-18", 64000, MCSettings(n_batches=4, seed=2, transport=rnd))
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
    """A pencil beam from outside the grid (simulate_beam) enters it and is attenuated as
    exp(-mu t), mu from NIST XCOM (water, 100 keV: 0.1707 cm2/g), to the binomial tolerance of
    the narrow-beam test above (resolves a 1 % error of mu)."""
    from persodose.mc.engine import simulate_beam

    ph = VoxelPhantom.homogeneous((1, 1, 1), (100.0, 4.0, 4.0), WATER)  # 100 mm of water along z
    n = 2_000_000
    res = simulate_beam(ph, _Pencil(0.1), n, MCSettings(n_batches=4, seed=21))
    _balance_ok(res)
    t_mc = _uncollided_fraction(res, 0.1, n, photons_only=False)  # full physics
    mu_t = _xcom("water", 0.1) * 1.0 * 10.0
    t_ref = math.exp(-mu_t)
    tol = 3.0 * math.sqrt((1.0 - t_ref) / (n * t_ref)) + 0.001 * mu_t
    assert 0.01 * mu_t > 2.0 * tol
    assert abs(t_mc / t_ref - 1.0) < tol, (t_mc, t_ref, tol)
    # a beam that misses the grid escapes untouched
    miss = simulate_beam(ph, _Pencil(0.1, origin=(500.0, 0.0, -500.0)), 400, MCSettings(n_batches=2))
    assert miss.energy_balance["deposited_mev"] == 0.0
    assert miss.energy_balance["escaped_uncollided_photons_mev"] == pytest.approx(0.1)
