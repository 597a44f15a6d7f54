"""Runs that stop at a target uncertainty (issue 16): criterion, stopping point, resume (tier 1)."""

import math
import warnings

import numpy as np
import pytest

from persodose.errors import InputError
from persodose.grid import Kind
from persodose.mc import MCSettings, Tally, VoxelPhantom, point_source_problem, run_batches, simulate_decays
from persodose.mc.run import TARGET_BATCHES, TargetNotMetWarning
from persodose.mc.tally import UncertaintyTarget, parse_relative_uncertainty, voxel_median_uncertainty
from persodose.physics.materials import get_material

N_BATCHES = 12


@pytest.fixture(scope="module")
def problem():
    ph = VoxelPhantom.homogeneous((9, 9, 9), 4.0, get_material("water"))
    return point_source_problem(ph, "photon", 0.3, 6000, settings=MCSettings(n_batches=N_BATCHES, seed=11))


@pytest.fixture(scope="module")
def fixed(problem):
    """The full fixed run, one thread (bitwise), with every batch's result and the criterion after it."""
    tally = problem.empty_tally()
    results, voxel = [], []

    def hook(res):
        results.append(res)
        voxel.append(voxel_median_uncertainty(tally, problem.density_g_cm3, 0.1))

    run_batches(problem, tally, on_batch=hook, n_threads=1)
    return tally, results, voxel


def _first(problem, results, k):
    t = problem.empty_tally()
    for r in results[:k]:
        t.add(r)
    return t


def _mask(problem):
    m = np.zeros(problem.shape_zyx, bool)
    m[3:6, 3:6, 3:6] = True
    return m


@pytest.mark.parametrize("text", ["2%", "2 %", " 2% ", "0.02", 0.02])
def test_parse_accepts_percent_and_fraction(text):
    assert parse_relative_uncertainty(text) == pytest.approx(0.02, rel=1e-12)


@pytest.mark.parametrize("text", ["0", "0%", "-1%", "100%", "1", "150 %", "nan", "nan%", "inf", "two", "", "%"])
def test_parse_refuses_in_one_line(text):
    with pytest.raises(InputError) as exc:
        parse_relative_uncertainty(text)
    assert "\n" not in str(exc.value)


def test_stops_at_the_first_batch_that_meets_it_and_equals_the_first_batches_bitwise(problem, fixed):
    _, results, voxel = fixed
    # a target between the criterion's values: the run must stop at the first batch (>= 5) at or below it
    target = voxel[7]
    k = next(b + 1 for b in range(4, N_BATCHES) if voxel[b] <= target)
    assert 5 <= k < N_BATCHES
    tally, run = run_batches(problem, target=UncertaintyTarget(target), n_threads=1)
    assert tally.n_batches == k and run["target"]["met"] is True
    assert run["target"]["n_primaries"] == tally.n_primaries == int(problem.primaries_per_batch[:k].sum())
    assert run["target"]["achieved"] == voxel[k - 1] <= target
    ref = _first(problem, results, k)
    assert np.array_equal(tally.sum_mev, ref.sum_mev) and np.array_equal(tally.sum2_mev2, ref.sum2_mev2)
    assert np.array_equal(tally.counters, ref.counters) and tally.batch_ids == ref.batch_ids


def test_a_loose_target_waits_for_the_minimum_batches(problem):
    with warnings.catch_warnings():
        warnings.simplefilter("error", TargetNotMetWarning)
        tally, run = run_batches(problem, target=UncertaintyTarget("99%", min_batches=6))
    assert tally.n_batches == 6 and run["target"]["met"] and run["target"]["min_batches"] == 6


def test_a_strict_target_runs_to_the_limit_with_a_warning(problem, fixed):
    full, _, voxel = fixed
    with pytest.warns(TargetNotMetWarning, match="not met") as caught:
        tally, run = run_batches(problem, target=UncertaintyTarget(1e-6), n_threads=1)
    assert len(caught) == 1 and "\n" not in str(caught[0].message)
    assert tally.n_batches == N_BATCHES and run["target"]["met"] is False
    assert run["target"]["achieved"] == voxel[-1] > 1e-6
    assert run["target"]["primaries_limit"] == problem.n_primaries == tally.n_primaries
    assert np.array_equal(tally.sum_mev, full.sum_mev)


def test_region_mean_uncertainty_is_the_spread_of_the_batch_region_sums(problem, fixed):
    _, results, _ = fixed
    mask = _mask(problem)
    target = UncertaintyTarget(1e-6, region_name="cube", region_mask=mask)
    with pytest.warns(TargetNotMetWarning):
        tally, run = run_batches(problem, target=target, n_threads=1)
    # direct computation from each batch's energies
    x = np.array([r.energy_per_primary_mev[mask.ravel()].sum() for r in results])
    expected = x.std(ddof=1) / math.sqrt(x.size) / x.mean()
    assert tally.region_sums[target.region_key] == pytest.approx(list(x), rel=1e-12)
    assert run["target"]["achieved"] == pytest.approx(expected, rel=1e-12)
    assert run["target"]["region"] == "cube" and run["target"]["above_fraction"] is None
    # the region's uncertainty is not that of any voxel statistic: here it is well below the voxels' median
    assert expected < 0.5 * voxel_median_uncertainty(tally, problem.density_g_cm3, 0.1)


def test_region_target_stops_where_the_region_sums_say(problem, fixed):
    _, results, _ = fixed
    mask = _mask(problem)
    x = np.array([r.energy_per_primary_mev[mask.ravel()].sum() for r in results])
    rel = [x[:b].std(ddof=1) / math.sqrt(b) / x[:b].mean() for b in range(1, N_BATCHES + 1) if b >= 2]
    rel = [math.inf] + rel  # rel[b - 1] is the value after b batches
    goal = rel[8]
    k = next(b for b in range(5, N_BATCHES + 1) if rel[b - 1] <= goal)
    tally, run = run_batches(problem, target=UncertaintyTarget(goal, region_name="cube", region_mask=mask),
                             n_threads=1)
    assert tally.n_batches == k and run["target"]["met"]


def test_checkpoint_and_resume_with_a_target(problem, fixed, tmp_path):
    _, results, voxel = fixed
    mask = _mask(problem)
    ck = tmp_path / "run.npz"
    loose = UncertaintyTarget("99%", region_name="cube", region_mask=mask)
    tally, _ = run_batches(problem, checkpoint=ck, target=loose, n_threads=1)
    assert tally.n_batches == 5
    back = Tally.load(ck)
    assert back.region_sums == tally.region_sums and len(back.region_sums[loose.region_key]) == 5
    # a stricter target resumes from the checkpoint and ends as the full run's first batches
    with pytest.warns(TargetNotMetWarning):
        resumed, run = run_batches(problem, back, checkpoint=ck, n_threads=1,
                                   target=UncertaintyTarget(1e-6, region_name="cube", region_mask=mask))
    assert run["n_new"] == problem.n_primaries - int(problem.primaries_per_batch[:5].sum())
    ref = _first(problem, results, N_BATCHES)
    assert np.array_equal(resumed.sum_mev, ref.sum_mev)
    x = [float(r.energy_per_primary_mev[mask.ravel()].sum()) for r in results]
    assert Tally.load(ck).region_sums[loose.region_key] == pytest.approx(x, rel=1e-12)
    # a resumed tally that already meets the target runs nothing
    again, run = run_batches(problem, _first(problem, results, 7), target=UncertaintyTarget(voxel[6]))
    assert again.n_batches == 7 and run["n_new"] == 0 and run["target"]["met"]


def test_resume_with_a_region_the_checkpoint_lacks_is_refused(problem, fixed):
    _, results, _ = fixed
    with pytest.raises(InputError, match="without the energies of target region cube"):
        run_batches(problem, _first(problem, results, 3),
                    target=UncertaintyTarget("5%", region_name="cube", region_mask=_mask(problem)))


def test_bad_targets_are_refused(problem):
    few = point_source_problem(VoxelPhantom.homogeneous((5, 5, 5), 4.0, get_material("water")), "photon", 0.3, 100,
                               settings=MCSettings(n_batches=3, seed=1))
    with pytest.raises(InputError, match="at least 5 batches"):
        run_batches(few, target=UncertaintyTarget("5%"))
    with pytest.raises(InputError, match="holds no voxel"):
        UncertaintyTarget("5%", region_name="none", region_mask=np.zeros((9, 9, 9), bool))
    with pytest.raises(InputError, match="needs its mask"):
        UncertaintyTarget("5%", region_name="liver")
    with pytest.raises(InputError, match="target-above"):
        UncertaintyTarget("5%", above_fraction=1.0)
    with pytest.raises(InputError):
        UncertaintyTarget(float("nan"))


def test_merge_keeps_the_region_sums_both_tallies_have(problem, fixed):
    _, results, _ = fixed
    a, b = Tally.empty(problem.n_voxels), Tally.empty(problem.n_voxels)
    for t, rs in ((a, results[:3]), (b, results[3:5])):
        t.track_region("cube#x", _mask(problem))
        t.track_region("only_a#y", _mask(problem)) if t is a else None
        for r in rs:
            t.add(r)
    m = a.merge(b)
    assert list(m.region_sums) == ["cube#x"] and len(m.region_sums["cube#x"]) == 5


def test_simulate_decays_with_a_target_records_it_and_defaults_to_more_batches():
    ph = VoxelPhantom.homogeneous((7, 7, 7), 5.0, get_material("water"))
    src = ph.density.with_array(np.zeros(ph.density.shape), Kind.TIA)
    src.array[2:5, 2:5, 2:5] = 1.0
    res = simulate_decays(ph, src, "F-18", 2 * TARGET_BATCHES * 20, target=UncertaintyTarget("60%"))
    assert res.settings.n_batches == TARGET_BATCHES
    prov = res.provenance()
    t = prov["target_uncertainty"]
    assert t["met"] and t["n_batches"] == prov["batches_done"] == 5 and t["batches_limit"] == TARGET_BATCHES
    assert "target" not in prov["source"]
    # and without one, the provenance says so
    res = simulate_decays(ph, src, "F-18", 200, MCSettings(n_batches=2, seed=3))
    assert res.provenance()["target_uncertainty"] is None and "target" not in res.info


def test_dask_loop_stops_at_the_same_batch_as_the_in_process_loop(problem, fixed):
    distributed = pytest.importorskip("distributed")
    from persodose.mc.distributed import run_problem_dask

    _, results, voxel = fixed
    target = UncertaintyTarget(voxel[7])
    ref, ref_run = run_batches(problem, target=target, n_threads=1)
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0") as client:
        tally, run = run_problem_dask(problem, client=client, target=target)
        assert tally.n_batches == ref.n_batches < N_BATCHES and run["target"] == ref_run["target"]
        assert np.array_equal(tally.sum_mev, ref.sum_mev) and tally.batch_ids == ref.batch_ids
        # a resumed tally that already meets the target needs no cluster
        again, run = run_problem_dask(problem, ref, client=client, target=target)
        assert run["n_new"] == 0 and "met the target" in run["backend"]["note"]


def test_a_resume_with_other_batches_or_settings_is_refused(tmp_path):
    """A checkpoint records its batch sizes and what the batches were simulated with: a fixed
    run resumed with a target (other batch sizes), another estimator or other emissions would
    mix unlike batches, so it is refused in one line; the same settings resume."""
    from persodose.errors import InputError
    from persodose.mc import MCSettings, Tally, VoxelPhantom, simulate_decays
    from persodose.mc.tables import TransportSettings
    from persodose.physics.materials import get_material

    ph = VoxelPhantom.homogeneous((5, 5, 5), 4.0, get_material("water"), 1.0)
    src = ph.density.with_array(np.ones((5, 5, 5)))
    ck = tmp_path / "run.npz"
    simulate_decays(ph, src, "Lu-177", 2000, MCSettings(n_batches=4, seed=3), checkpoint=ck)
    back = Tally.load(ck)
    assert back.batch_sizes == [500] * 4 and back.problem["source"]["nuclide"] == "Lu-177"
    with pytest.raises(InputError, match="batch 0 has 500 primaries"):
        simulate_decays(ph, src, "Lu-177", 2000, MCSettings(n_batches=8, seed=3), resume=Tally.load(ck))
    with pytest.raises(InputError, match="transport"):
        simulate_decays(ph, src, "Lu-177", 2000, MCSettings(n_batches=4, seed=3, transport=TransportSettings(
            photon_estimator="tle")), resume=Tally.load(ck))
    with pytest.raises(InputError, match="emissions"):
        simulate_decays(ph, src, "Lu-177", 2000, MCSettings(n_batches=4, seed=3, emissions="beta"),
                        resume=Tally.load(ck))
    with pytest.raises(InputError, match="source"):
        simulate_decays(ph, src, "Y-90", 2000, MCSettings(n_batches=4, seed=3), resume=Tally.load(ck))
    same = simulate_decays(ph, src, "Lu-177", 4000, MCSettings(n_batches=8, seed=4))
    with pytest.raises(InputError, match="different problems"):
        same.tally.merge(simulate_decays(ph, src, "Y-90", 4000, MCSettings(n_batches=8, seed=5)).tally)
    done = simulate_decays(ph, src, "Lu-177", 2000, MCSettings(n_batches=4, seed=3), resume=Tally.load(ck))
    assert done.tally.n_batches == 4
