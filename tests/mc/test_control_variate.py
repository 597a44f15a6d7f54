"""The decays' control variate (``TransportSettings.control_variate``, issue 16).

Each decay's locally left energy and the kinetic energy of its electrons and positrons are
tallied at their expectation over the voxels by activity, and the kernel takes the sampled
energies back from the birth voxel (``transport.decay_chunk``). These tests check that the
expectation is exactly what the kernel samples, that no mean moves, that the variance falls
where it should, and that the rules of where it applies and the safety net for a negative
voxel mean behave.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from numba import njit

from persodose.mc import transport as tr
from persodose.mc.engine import MCSettings, VoxelPhantom, decay_problem, run_batch
from persodose.mc.problem import CONTROL_MIN_DECAYS
from persodose.mc.rng import seed_state
from persodose.mc.tables import TransportSettings
from persodose.mc.tally import Tally


@njit(cache=False)
def _mean_of_sampler(cdf_e, cdf, n, seed):
    rng = np.empty(2, dtype=np.uint64)
    seed_state(rng, seed, 0)
    s = 0.0
    for _ in range(n):
        s += tr._sample_cdf(cdf_e, cdf, rng)
    return s / n


def _water_block(n=16, mm=4.0, slab_density=None):
    """A water cube of n^3 voxels; optionally its first quarter along x denser (density-scaled water)."""
    from persodose.grid import Kind
    from persodose.physics.materials import get_material

    ph = VoxelPhantom.homogeneous((n, n, n), mm, get_material("soft_tissue"), density_g_cm3=1.0)
    if slab_density is None:
        return ph
    dens = ph.density.array.copy()
    dens[:, :, : n // 4] = slab_density
    return VoxelPhantom(ph.density.with_array(dens, Kind.DENSITY), ph.materials, ph.material_list)


@pytest.mark.parametrize("nuclide", ["F-18", "Lu-177", "Y-90"])
def test_expectation_is_the_mean_of_what_the_kernel_samples(nuclide):
    """``control_expectation_mev`` against the kernel's own spectrum sampler (2e6 draws per
    branch: 0.05 % of the mean) and the exact yields of the discrete electron lines."""
    ph = _water_block(4)
    src = ph.density.with_array(np.ones(ph.density.shape))
    prob = decay_problem(ph, src, nuclide, 100, MCSettings(n_batches=2))
    d = prob.source.decay
    expected = float(d.local_mev)
    for b, (grid, cdf) in enumerate(((d.beta_minus_e, d.beta_minus_cdf), (d.beta_plus_e, d.beta_plus_cdf))):
        if d.beta_yields[b] > 0:
            expected += d.beta_yields[b] * _mean_of_sampler(np.asarray(grid, float), np.asarray(cdf, float),
                                                            2_000_000, 7 + b)
    charged = d.line_kind != tr.PHOTON
    expected += float(np.sum(np.diff(d.line_cum)[charged] * d.line_e[charged])) if d.line_total > 0 else 0.0
    assert prob.source.control_expectation_mev() == pytest.approx(expected, rel=2e-3)
    # and it is not the tabulated mean emitted energy, which holds the photons too (Lu-177)
    if nuclide == "Lu-177":
        assert prob.source.control_expectation_mev() < 0.9 * d.mean_emitted_mev


def test_rules_of_where_it_applies():
    """Density from which it applies: the CSDA range of the energy-weighted mean energy over half the
    voxel side (F-18 at 4 mm: between lung and soft tissue; at 8 mm, half of that); share: CONTROL_MIN_DECAYS decays."""
    ph4 = _water_block(8, 4.0)
    ph8 = _water_block(8, 8.0)
    on = MCSettings(n_batches=2)
    src4 = ph4.density.with_array(np.ones(ph4.density.shape))
    src8 = ph8.density.with_array(np.ones(ph8.density.shape))
    n_low, n_high = int(0.5 * CONTROL_MIN_DECAYS * 512), int(2 * CONTROL_MIN_DECAYS * 512)
    p4 = decay_problem(ph4, src4, "F-18", n_low, on)
    p8 = decay_problem(ph8, src8, "F-18", n_low, on)
    assert 0.26 < p4.control_density_min() < 0.9
    assert p8.control_density_min() == pytest.approx(0.5 * p4.control_density_min(), rel=1e-9)
    assert p4.control_share_min() == pytest.approx(CONTROL_MIN_DECAYS / n_low)
    assert p4.control_share_min(n_high) == pytest.approx(CONTROL_MIN_DECAYS / n_high)
    off = decay_problem(ph4, src4, "F-18", n_low, MCSettings(n_batches=2, transport=TransportSettings(
        control_variate=False)))
    assert not off.control_variate and math.isinf(off.control_density_min())
    assert off.tally_width() == 512 and p4.tally_width() == 1024  # the second tally of what is taken back
    # the kernels apply it in every dense active voxel; the noiseless part covers them all
    assert p4.control_thresholds()[1] == 0.0
    assert p4.control_part().sum() == pytest.approx(p4.source.control_expectation_mev(), rel=1e-12)
    # the activity rule is the tally's: the 512 voxels expect half the rule's decays each (all plain),
    # then twice them (none)
    t = p4.empty_tally()
    t.control_sum_mev = np.zeros(512)
    t.n_primaries = n_low
    assert t.plain_voxels().all()
    t.n_primaries = n_high
    assert not t.plain_voxels().any()


def _regions(shape):
    nz, ny, nx = shape
    z, y, x = np.indices(shape)
    hot = (abs(z - nz // 2) < 3) & (abs(y - ny // 2) < 3) & (abs(x - nx // 2) < 3)
    return {"hot": hot.ravel(), "slab": (x < nx // 4).ravel() & ~hot.ravel(),
            "rest": ~hot.ravel() & (x >= nx // 4).ravel(), "all": np.ones(hot.size, bool)}


def _run(ph, src, nuclide, n, control, seed):
    s = MCSettings(n_batches=10, chunks_per_batch=8, seed=seed,
                   transport=TransportSettings(control_variate=control, photon_estimator="tle"))
    prob = decay_problem(ph, src, nuclide, n, s)
    regs = _regions(ph.density.shape)
    per_batch = []
    tally = prob.empty_tally()
    for b in range(prob.n_batches):
        r = run_batch(prob, b)
        tally.add(r)
        per_batch.append([r.energy_per_primary_mev[m].sum() for m in regs.values()])
    per_batch = np.array(per_batch)
    mean = per_batch.mean(axis=0)
    se = per_batch.std(axis=0, ddof=1) / math.sqrt(prob.n_batches)
    return dict(zip(regs, mean)), dict(zip(regs, se)), tally, regs


def _hot_block_source(ph):
    act = np.full(ph.density.shape, 0.05)
    act[5:11, 5:11, 5:11] = 1.0  # holds the hot region of _regions
    return ph.density.with_array(act)


@pytest.mark.parametrize("nuclide", ["F-18", "Lu-177"])
def test_no_mean_moves(nuclide):
    """Independent runs (other seeds) with and without the control, 2e5 decays: region sums within
    4 combined standard errors (a hot block, a bone-like slab of 1.85 g/cm3 beside water, the rest)."""
    ph = _water_block(16, 4.0, slab_density=1.85)
    src = _hot_block_source(ph)
    m0, s0, _, _ = _run(ph, src, nuclide, 200_000, False, 11)
    m1, s1, _, _ = _run(ph, src, nuclide, 200_000, True, 12)
    for k in m0:
        z = (m1[k] - m0[k]) / math.hypot(s0[k], s1[k])
        assert abs(z) < 4, (k, m0[k], m1[k], z)


@pytest.mark.parametrize("nuclide, at_most", [("F-18", 0.75), ("Lu-177", 0.5)])
def test_the_hot_voxels_get_quieter(nuclide, at_most):
    """Where a voxel gets about one decay per batch (the regime of whole-body references: 4800
    decays, about 12 per hot voxel over 10 batches, above the decay-count rule), the median voxel
    uncertainty of the hot block falls: measured 0.20 -> 0.14 (F-18) and 0.25 -> 0.10 (Lu-177).
    With many decays per voxel and batch the strata already fix the counts and only the beta
    spectrum's spread goes."""
    ph = _water_block(16, 4.0, slab_density=1.85)
    src = _hot_block_source(ph)
    _, _, t0, regs = _run(ph, src, nuclide, 4800, False, 11)
    _, _, t1, _ = _run(ph, src, nuclide, 4800, True, 12)
    u0 = np.median(t0.relative_uncertainty()[regs["hot"]])
    u1 = np.median(t1.relative_uncertainty()[regs["hot"]])
    assert u1 < at_most * u0, (u0, u1)


def test_the_balance_stays_exact_and_the_tally_sums_to_the_deposited_energy():
    """The counters take the same energies back as the tally and get the same expectation: the
    energy balance is exact and the voxel tally sums to the deposited energy, as without it;
    the emitted energy stays the nuclide's mean within statistics."""
    ph = _water_block(8, 4.0)
    src = ph.density.with_array(np.ones(ph.density.shape))
    for nuclide in ("Lu-177", "F-18"):
        prob = decay_problem(ph, src, nuclide, 20_000, MCSettings(n_batches=2, seed=3))
        assert prob.control_variate
        r = run_batch(prob, 0)
        c = r.counters_per_primary
        assert c[tr.C_EMITTED] + c[tr.C_ANNIHILATION] == pytest.approx(c[tr.C_DEPOSITED] + c[tr.C_ESCAPED], rel=1e-9)
        assert r.energy_per_primary_mev.sum() == pytest.approx(c[tr.C_DEPOSITED], rel=1e-9)
        assert c[tr.C_EMITTED] == pytest.approx(prob.source.decay.mean_emitted_mev, rel=0.02)


def test_a_negative_voxel_mean_becomes_zero_dose_with_infinite_uncertainty():
    """The safety net of the result: a voxel whose mean came out negative is 0 in the dose map,
    infinite in the uncertainty map and counted in the info (an analog run never has one)."""
    from persodose.mc.run import _finish

    ph = _water_block(4, 4.0)
    n = ph.density.array.size
    tally = Tally.empty(n)
    for k, v in enumerate((-1.0, -3.0)):
        e = np.full(n, 1.0)
        e[0] = v
        tally.add_batch(e, np.zeros(tr.C_N), 10, (1, k))
    res = _finish(ph, tally, MCSettings(n_batches=2), 1.0, 20, None, {})
    dose = res.dose_per_primary_gy.array.ravel()
    assert dose[0] == 0.0 and (dose[1:] > 0).all()
    assert math.isinf(float(res.relative_uncertainty.array.ravel()[0]))
    assert res.info["negative_voxels_set_to_zero"] == 1
    np.testing.assert_array_equal(res.relative_uncertainty.array.ravel()[1:], 0.0)


def test_the_rule_and_its_thresholds_are_in_the_run_info():
    """The run's info records where the control applied: the density and activity-share
    thresholds and the decays the share rule was judged on (those done, with a target too)."""
    from persodose.mc import run as mc_run
    from persodose.mc.tally import UncertaintyTarget

    ph = _water_block(4)
    src = ph.density.with_array(np.ones(ph.density.shape))
    res = mc_run.simulate_decays(ph, src, "Lu-177", 18_000, MCSettings(n_batches=6),
                                 target=UncertaintyTarget(relative=0.5, min_batches=3))
    cv = res.info["control_variate"]
    assert res.info["n_decays"] == 9_000  # stopped at the target's 3 batches of 6
    assert cv["decays_of_the_rule"] == 9_000 and cv["min_decays"] == CONTROL_MIN_DECAYS
    assert cv["activity_share_min"] == pytest.approx(CONTROL_MIN_DECAYS / 9_000)
    assert cv["plain_voxels"] == 0  # 64 voxels of 140 decays each
    assert 0 < cv["density_min_g_cm3"] < 1.0
    off = mc_run.simulate_decays(ph, src, "Lu-177", 600, MCSettings(n_batches=2, transport=TransportSettings(
        control_variate=False)))
    assert "control_variate" not in off.info


def _cold_corner_run(control: bool, n: int, target=None, seed: int = 5):
    """A hot block in a cube with a cold row that expects about 1.5 decays per voxel at 2e5 decays
    (and 15 at 2e6): one thread, so a run with and one without the control draw the same histories."""
    import numba

    from persodose.mc import run as mc_run

    ph = _water_block(16, 4.0, slab_density=1.85)
    act = np.full(ph.density.shape, 0.05)
    act[5:11, 5:11, 5:11] = 1.0
    act[15, :, 4:] = 0.003
    src = ph.density.with_array(act)
    s = MCSettings(n_batches=20, seed=seed, transport=TransportSettings(control_variate=control))
    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        return mc_run.simulate_decays(ph, src, "Lu-177", n, s, target=target), act
    finally:
        numba.set_num_threads(previous)


def test_voxels_below_the_rule_report_the_plain_estimate_of_the_same_histories():
    """The control draws no random number, so with and without it the same seed transports the same
    particles. In the voxels that expect fewer than CONTROL_MIN_DECAYS of the decays done, the
    tally reports C + D: the analog run's value and uncertainty, to rounding; elsewhere the
    controlled one. The energy balance stays exact and the map sums to the deposited energy."""
    on, act = _cold_corner_run(True, 200_000)
    off, _ = _cold_corner_run(False, 200_000)
    plain = on.tally.plain_voxels().reshape(act.shape)
    cold = np.zeros(act.shape, bool)
    cold[15, :, 4:] = True
    assert (plain & (act > 0.01)).sum() == 0 and plain[cold].all()
    assert on.info["control_variate"]["plain_voxels"] == int(cold.sum())
    a, b = on.energy_per_primary_mev.array, off.energy_per_primary_mev.array
    np.testing.assert_allclose(a[plain], b[plain], rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(on.relative_uncertainty.array[plain], off.relative_uncertainty.array[plain],
                               rtol=1e-6)
    hot = act == 1.0
    assert np.median(on.relative_uncertainty.array[hot]) < 0.8 * np.median(off.relative_uncertainty.array[hot])
    eb = on.energy_balance
    assert eb["emitted_mev"] == pytest.approx(eb["deposited_mev"] + eb["escaped_mev"], rel=1e-9)
    assert float(on.tally.mean_mev().sum()) == pytest.approx(eb["deposited_mev"], rel=1e-9)
    assert "negative_voxels_set_to_zero" not in on.info


def test_a_run_stopped_early_judges_the_rule_on_the_decays_done():
    """A limit of 2e6 decays stopped by its target after 2 of 20 batches (2e5 decays): the cold row
    expects 15 decays per voxel at the limit but 1.5 at the decays done, so it reports the plain
    estimate (the analog run of the same 2 batches), not a controlled one that can go negative."""
    from persodose.mc.tally import UncertaintyTarget

    target = UncertaintyTarget(relative=0.9, min_batches=2)
    on, act = _cold_corner_run(True, 2_000_000, target=target)
    off, _ = _cold_corner_run(False, 2_000_000, target=target)
    assert on.info["n_decays"] == off.info["n_decays"] == 200_000  # the same 2 batches of 1e5
    plain = on.tally.plain_voxels().reshape(act.shape)
    assert plain[15, :, 4:].all() and on.info["control_variate"]["decays_of_the_rule"] == 200_000
    np.testing.assert_allclose(on.energy_per_primary_mev.array[plain], off.energy_per_primary_mev.array[plain],
                               rtol=1e-9, atol=1e-15)
    assert (on.energy_per_primary_mev.array >= 0).all() and "negative_voxels_set_to_zero" not in on.info


def test_the_second_tally_is_saved_merged_and_required_on_resume(tmp_path):
    """The control's sums survive a checkpoint and a merge; a checkpoint without them (an older
    persodose) is refused in one line for a run with the control."""
    from persodose.errors import InputError
    from persodose.mc import run as mc_run

    ph = _water_block(4)
    src = ph.density.with_array(np.ones(ph.density.shape))
    a = mc_run.simulate_decays(ph, src, "Lu-177", 2_000, MCSettings(n_batches=2, seed=1))
    b = mc_run.simulate_decays(ph, src, "Lu-177", 2_000, MCSettings(n_batches=2, seed=2))
    a.tally.save(tmp_path / "a.npz")
    back = Tally.load(tmp_path / "a.npz")
    for k in ("control_sum_mev", "control_sum2_mev2", "control_cross_mev2"):
        np.testing.assert_array_equal(getattr(back, k), getattr(a.tally, k))
    m = a.tally.merge(b.tally)
    np.testing.assert_allclose(m.control_sum_mev, a.tally.control_sum_mev + b.tally.control_sum_mev)
    old = Tally(back.sum_mev, back.sum2_mev2, back.n_batches, back.n_primaries, back.batch_ids, back.counters,
                {}, back.batch_sizes, back.problem)
    with pytest.raises(InputError, match="no second tally of the control variate"):
        mc_run.simulate_decays(ph, src, "Lu-177", 4_000, MCSettings(n_batches=4, seed=1), resume=old)
