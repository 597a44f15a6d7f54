"""Monte Carlo batches as pure functions, run in-process and on a Dask LocalCluster (tier 1)."""

import dataclasses
import json
import pickle
import random
import sys

import numpy as np
import pytest

pytest.importorskip("distributed")

import numba  # noqa: E402

from persodose.errors import GeometryError, InputError  # noqa: E402
from persodose.grid import Kind  # noqa: E402
from persodose.mc import MCSettings, Tally, VoxelPhantom, simulate_decays  # noqa: E402
from persodose.mc import distributed as mcd  # noqa: E402
from persodose.mc.engine import decay_problem, run_batch  # noqa: E402
from persodose.physics.materials import get_material  # noqa: E402

N_DECAYS = 2000
SETTINGS = MCSettings(n_batches=4, chunks_per_batch=4, seed=21)


def _phantom_and_source():
    ph = VoxelPhantom.homogeneous((7, 7, 7), 4.0, get_material("water"))
    src = ph.density.with_array(np.zeros(ph.density.shape), Kind.TIA)
    src.array[2:5, 2:5, 2:5] = 1.0e3
    return ph, src


@pytest.fixture(scope="module")
def client():
    c = mcd.start_local_cluster(n_workers=2, threads_per_worker=1)
    yield c
    mcd.close_cluster(c)


@pytest.fixture
def one_numba_thread():
    """Run in-process batches with one Numba thread, like the 1-thread workers."""
    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(previous)


@pytest.fixture(scope="module")
def problem():
    ph, src = _phantom_and_source()
    return decay_problem(ph, src, "F-18", N_DECAYS, SETTINGS)


def _same_tally(a: Tally, b: Tally) -> None:
    np.testing.assert_array_equal(a.sum_mev, b.sum_mev)
    np.testing.assert_array_equal(a.sum2_mev2, b.sum2_mev2)
    np.testing.assert_array_equal(a.counters, b.counters)
    assert a.batch_ids == b.batch_ids
    assert (a.n_batches, a.n_primaries) == (b.n_batches, b.n_primaries)


def test_run_batch_is_a_pure_function_of_seed_and_batch(problem):
    r1 = run_batch(problem, 1, n_threads=1)
    r2 = run_batch(problem, 1, n_threads=1)
    assert r1.batch_id == (21, 1) and r1.n_primaries == N_DECAYS // 4 and r1.n_threads == 1
    assert r1.energy_per_primary_mev.dtype == np.float64 and r1.energy_per_primary_mev.shape == (7 * 7 * 7,)
    np.testing.assert_array_equal(r1.energy_per_primary_mev, r2.energy_per_primary_mev)
    np.testing.assert_array_equal(r1.counters_per_primary, r2.counters_per_primary)
    # after a pickle round trip, with read-only arrays as a worker may receive them
    back = pickle.loads(pickle.dumps(problem))
    for arr in (back.density_g_cm3, back.material_index, back.source.voxel_cdf, back.tables.photon):
        arr.flags.writeable = False
    r3 = run_batch(back, 1, n_threads=1)
    np.testing.assert_array_equal(r1.energy_per_primary_mev, r3.energy_per_primary_mev)
    # another batch, or another seed, gives other particles
    r0 = run_batch(problem, 0, n_threads=1)
    assert not np.allclose(r0.energy_per_primary_mev, r1.energy_per_primary_mev)
    other = dataclasses.replace(problem, settings=MCSettings(n_batches=4, chunks_per_batch=4, seed=22))
    assert not np.allclose(run_batch(other, 1, n_threads=1).energy_per_primary_mev, r1.energy_per_primary_mev)
    if numba.config.NUMBA_NUM_THREADS >= 2:  # more threads: the same up to rounding of per-thread sums
        r4 = run_batch(problem, 1, n_threads=2)
        assert r4.n_threads == 2
        np.testing.assert_allclose(r4.energy_per_primary_mev, r1.energy_per_primary_mev, rtol=1e-12, atol=0)
    with pytest.raises(InputError, match="batch 4"):
        run_batch(problem, 4)


def test_a_batch_is_bitwise_the_same_on_every_worker(client, problem):
    local = run_batch(problem, 2, n_threads=1)
    workers = sorted(client.scheduler_info()["workers"])
    assert len(workers) == 2
    futures = [client.submit(run_batch, problem, 2, n_threads=1, workers=[w], allow_other_workers=False, pure=False)
               for w in workers]
    for res in client.gather(futures):
        assert res.batch_id == local.batch_id
        np.testing.assert_array_equal(res.energy_per_primary_mev, local.energy_per_primary_mev)
        np.testing.assert_array_equal(res.counters_per_primary, local.counters_per_primary)
    # a task uses as many Numba threads as its worker has threads (1 here), not the whole pool
    assert set(client.run(lambda: __import__("numba").config.NUMBA_NUM_THREADS).values()) == {
        numba.config.NUMBA_DEFAULT_NUM_THREADS}
    res = client.submit(mcd._batch_task, problem, 0, None, workers=workers[:1], pure=False).result()
    assert res.n_threads == 1 and workers[0] in res.host


def test_dask_run_equals_in_process_run(client, one_numba_thread):
    ph, src = _phantom_and_source()
    ref = simulate_decays(ph, src, "F-18", N_DECAYS, SETTINGS)
    seen = []
    res = mcd.simulate_decays_dask(ph, src, "F-18", N_DECAYS, SETTINGS, client=client,
                                   progress=lambda done, total: seen.append((done, total)))
    _same_tally(res.tally, ref.tally)
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    np.testing.assert_array_equal(res.dose_gy.array, ref.dose_gy.array)
    np.testing.assert_array_equal(res.relative_uncertainty.array, ref.relative_uncertainty.array)
    assert res.energy_balance == ref.energy_balance
    assert res.info["total_decays_of_source"] == ref.info["total_decays_of_source"] == 27e3
    backend = res.info["backend"]
    assert backend["name"] == "dask.distributed" and backend["n_workers"] == 2
    assert backend["one_batch_per_worker"] and backend["numba_threads"] == [1]
    assert [r["batch_id"] for r in res.info["batches"]] == [[21, b] for b in range(4)]
    assert all("tcp://" in r["host"] for r in res.info["batches"])


def test_tally_does_not_depend_on_completion_order(problem):
    results = [run_batch(problem, b, n_threads=1) for b in range(4)]
    ordered = problem.empty_tally()
    for r in results:
        ordered.add(r)
    rng = random.Random(3)
    for _ in range(3):
        shuffled = results[:]
        rng.shuffle(shuffled)
        tally, added = problem.empty_tally(), []
        adder = mcd._InOrder(list(range(4)), tally, lambda r: added.append(r.batch_id[1]))
        for r in shuffled:
            adder.put(r.batch_id[1], r)
        assert adder.complete and added == [0, 1, 2, 3]
        _same_tally(tally, ordered)
    with pytest.raises(InputError):
        adder.put(2, results[2])
    with pytest.raises(InputError, match="already"):
        ordered.add(results[0])


def test_resume_over_dask_after_interrupted_in_process_run(client, one_numba_thread, tmp_path):
    ph, src = _phantom_and_source()
    full = simulate_decays(ph, src, "F-18", N_DECAYS, SETTINGS)
    partial = Tally.empty(full.tally.sum_mev.size)

    def interrupt_after_two(done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        simulate_decays(ph, src, "F-18", N_DECAYS, SETTINGS, resume=partial, progress=interrupt_after_two)
    assert partial.batch_ids == [[21, 0], [21, 1]]
    ck = tmp_path / "run.ckpt"  # any suffix: the checkpoint is written as it is named
    seen = []
    res = mcd.simulate_decays_dask(ph, src, "F-18", N_DECAYS, SETTINGS, resume=partial, checkpoint=ck,
                                   client=client, progress=lambda done, total: seen.append(done))
    assert [r["batch_id"] for r in res.info["batches"]] == [[21, 2], [21, 3]]
    assert seen == [3, 4]
    _same_tally(res.tally, full.tally)
    _same_tally(Tally.load(ck), full.tally)
    assert res.primaries_per_second > 0 and res.seconds > 0


def test_own_local_cluster_is_started_and_closed(monkeypatch, one_numba_thread):
    closed = []
    original = mcd.close_cluster

    def spy(c):
        closed.append(c)
        original(c)

    monkeypatch.setattr(mcd, "close_cluster", spy)
    ph, src = _phantom_and_source()
    settings = MCSettings(n_batches=2, chunks_per_batch=2, seed=5)
    ref = simulate_decays(ph, src, "F-18", 600, settings)
    res = mcd.simulate_decays_dask(ph, src, "F-18", 600, settings, n_workers=1, threads_per_worker=1)
    _same_tally(res.tally, ref.tally)
    assert len(closed) == 1 and closed[0].status in ("closed", "closing")
    assert res.info["backend"]["local_cluster"] is True and res.info["backend"]["n_workers"] == 1


def test_nothing_to_do_starts_no_cluster_and_bad_tally_is_refused(monkeypatch):
    ph, src = _phantom_and_source()
    settings = MCSettings(n_batches=2, chunks_per_batch=2, seed=6)
    done = simulate_decays(ph, src, "F-18", 400, settings)
    monkeypatch.setattr(mcd, "start_local_cluster", lambda *a, **k: pytest.fail("no cluster needed"))
    res = mcd.simulate_decays_dask(ph, src, "F-18", 400, settings, resume=done.tally)
    assert res.info["batches"] == [] and res.primaries_per_second == 0.0
    np.testing.assert_array_equal(res.tally.sum_mev, done.tally.sum_mev)
    with pytest.raises(GeometryError):
        mcd.simulate_decays_dask(ph, src, "F-18", 400, settings, resume=Tally.empty(10))
    with pytest.raises(InputError, match="cannot fill"):
        mcd.simulate_decays_dask(ph, src, "F-18", 1, settings)
    monkeypatch.setitem(sys.modules, "distributed", None)  # dask[distributed] not installed
    with pytest.raises(InputError, match="dask"):
        mcd.simulate_decays_dask(ph, src, "F-18", 400, MCSettings(n_batches=2, seed=7))


def test_provenance_is_json_and_complete(client):
    ph, src = _phantom_and_source()
    res = mcd.simulate_decays_dask(ph, src, "Lu-177", 800, MCSettings(n_batches=2, chunks_per_batch=2, seed=8),
                                   client=client)
    prov = res.provenance()
    text = json.dumps(prov, allow_nan=False)
    assert json.loads(text) == prov
    assert prov["seed"] == 8 and prov["batches_done"] == 2 and prov["n_primaries"] == 800
    assert prov["batch_ids"] == [[8, 0], [8, 1]] and prov["nuclide"] == "Lu-177"
    assert prov["transport_settings"]["electron_cut_mev"] == prov["cutoffs_mev"]["electron_absorption"]
    assert abs(prov["energy_balance_relative_residual"]) < 1e-9
    assert prov["energy_balance_mev_per_primary"]["emitted_mev"] > 0
    assert prov["backend"]["name"] == "dask.distributed" and len(prov["batches_run"]) == 2
    assert "numpy" in prov["versions"] and "dask" in prov["versions"]
    assert prov["primaries_per_second"] > 0 and prov["wall_time_s"] > 0
    # in-process runs have one too, and a fully resumed run (no time spent) stays valid JSON
    again = simulate_decays(ph, src, "Lu-177", 800, MCSettings(n_batches=2, chunks_per_batch=2, seed=8),
                            resume=res.tally)
    prov2 = again.provenance()
    assert prov2["backend"]["name"] == "numba-cpu" and prov2["batches_run"] == []
    json.dumps(prov2, allow_nan=False)
