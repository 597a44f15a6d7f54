"""Monte Carlo internals: module layout, one batch loop, per-source kernel arguments, kernel cache key.

Small problems only (a few hundred primaries in a 6^3 phantom): these tests check the
plumbing, not the physics (tests/mc/test_mc.py and the validation tests do that).
"""

from __future__ import annotations

import ast
import inspect
import pickle
from pathlib import Path

import numpy as np
import pytest

import persodose.mc as mc
from persodose.errors import GeometryError
from persodose.grid import Grid, Kind
from persodose.mc import run as mcrun
from persodose.mc import transport as tr
from persodose.mc import version as mcv
from persodose.mc.engine import (BatchResult, MCSettings, Tally, VoxelPhantom, beam_problem, decay_problem,
                                 point_source_problem, run_batch, run_batches, simulate_beam, simulate_decays,
                                 simulate_point_source)
from persodose.mc.primaries import BatchPlan, BeamSource, DecaySource, PointSource
from persodose.mc.tables import settings_array
from persodose.physics.materials import get_material

WATER, BONE = get_material("water"), get_material("bone")
MC_DIR = Path(mc.__file__).parent


def _phantom(n=6, mm=3.0):
    m = np.zeros((n, n, n), np.uint8)
    m[:, :, n // 2:] = 1
    dens = np.where(m == 1, 1.85, 1.0).astype(np.float64)
    sp = (mm,) * 3
    return VoxelPhantom(Grid(dens, sp, kind=Kind.DENSITY), Grid(m, sp, kind=Kind.MATERIAL), (WATER, BONE))


class _Fan:
    """A picklable fan of 30-100 keV photons aimed along +y at the phantom."""

    def sample(self, n, rng):
        d = np.column_stack([rng.uniform(-0.1, 0.1, n), np.ones(n), rng.uniform(-0.1, 0.1, n)])
        return np.tile([0.0, -60.0, 0.0], (n, 1)), d / np.linalg.norm(d, axis=1)[:, None], rng.uniform(0.03, 0.1, n)


def _settings(seed=5, n_batches=3, **kw):
    return MCSettings(n_batches=n_batches, chunks_per_batch=4, seed=seed, **kw)


def _problems():
    ph = _phantom()
    src = ph.density.with_array(np.ones(ph.density.shape), Kind.TIA)
    return {
        "decays": decay_problem(ph, src, "Lu-177", 120, _settings()),
        "particles": point_source_problem(ph, "electron", 0.5, 90, settings=_settings()),
        "beam": beam_problem(ph, _Fan(), 90, _settings()),
    }


@pytest.fixture
def one_numba_thread():
    import numba

    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(previous)


# ----------------------------------------------------------------------------- layout
ENGINE_NAMES = [
    "BatchResult", "BeamSource", "DEFAULT_CHUNKS", "DENSITY_RANGE_G_CM3", "DecaySource", "DecayTables", "MCProblem",
    "MCResult", "MCSettings", "MEV_TO_J", "PointSource", "Tally", "TransportSettings", "TransportTables",
    "VoxelPhantom", "_KERNEL_LOCK", "_PARTICLES", "_Workspace", "_done_of_seed", "_finish", "_json_safe", "_launch",
    "_numba_backend", "_phantom_arrays", "_primaries_per_batch", "_split", "_tables_for", "backend_info",
    "beam_problem", "build_tables", "check_backend", "decay_info", "decay_problem", "decay_tables",
    "point_source_problem", "run_batch", "settings_dict", "simulate_beam", "simulate_decays",
    "simulate_point_source", "voxel_source", "warm_up",
]
MC_NAMES = ["MCProblem", "MCResult", "MCSettings", "Tally", "TransportSettings", "VoxelPhantom", "beam_problem",
            "build_tables", "decay_problem", "point_source_problem", "run_batch", "simulate_beam", "simulate_decays",
            "simulate_point_source"]


def test_every_name_is_still_importable_from_where_it_was():
    import persodose.mc.engine as engine

    assert [n for n in ENGINE_NAMES if not hasattr(engine, n)] == []
    assert [n for n in MC_NAMES if not hasattr(mc, n)] == []
    # one object each, wherever it is imported from
    from persodose.mc import phantom, problem, settings, tally

    assert engine.VoxelPhantom is phantom.VoxelPhantom is mc.VoxelPhantom
    assert engine.MCSettings is settings.MCSettings and engine.Tally is tally.Tally
    assert engine.MCProblem is problem.MCProblem and engine.simulate_decays is mcrun.simulate_decays


@pytest.mark.parametrize("module", ["engine", "phantom", "settings", "tally", "primaries", "problem", "run",
                                    "kernels", "distributed", "version"])
def test_no_function_longer_than_80_lines(module):
    tree = ast.parse((MC_DIR / f"{module}.py").read_text())
    long = [(node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 80]
    assert long == []


# ----------------------------------------------------------------------------- kernel arguments
def _arr(a, dtype=np.float64):
    return np.require(a, dtype=dtype, requirements=("C", "W", "A"))


def _legacy_static_args(p):
    """The geometry and physics groups as MCProblem._kernel_args built them before the split."""
    t, ts = p.tables, p.tables.settings
    settings_f = settings_array(ts, np.asarray(p.density_g_cm3).reshape(p.shape_zyx), p.control_thresholds())
    geometry = (*(int(v) for v in p.shape_zyx), *(float(v) for v in p.spacing_zyx_mm), _arr(p.density_g_cm3),
                _arr(p.material_index, np.int64))
    physics = (float(t.log_emin), float(t.inv_dlog), int(t.energy_mev.size), _arr(t.photon), _arr(p.majorant_per_mm),
               _arr(t.compton_sf), _arr(t.rayleigh_cum), _arr(t.x_nodes), _arr(t.electron), settings_f,
               bool(ts.range_rejection))
    return geometry, physics


def _legacy_args(p, b):
    """The arguments batch ``b`` of problem ``p`` had before each source built its own."""
    chunks = int(p.settings.chunks_per_batch)
    per_chunk = np.full(chunks, int(p.primaries_per_batch[b]) // chunks, np.int64)
    per_chunk[: int(p.primaries_per_batch[b]) % chunks] += 1
    geometry, physics = _legacy_static_args(p)
    seed, stream0, s = np.uint64(p.seed), b * chunks, p.source
    if isinstance(s, DecaySource):
        d = s.decay
        decay = (float(d.local_mev), _arr(d.beta_yields), _arr(d.beta_minus_e), _arr(d.beta_minus_cdf),
                 _arr(d.beta_plus_e), _arr(d.beta_plus_cdf), _arr(d.line_kind, np.int64), _arr(d.line_e),
                 _arr(d.line_cum), float(d.line_total))
        return (seed, stream0, per_chunk, _arr(s.voxel_index, np.int64), _arr(s.voxel_cdf), *geometry, *decay,
                *physics)
    if isinstance(s, PointSource):
        point = (int(tr.ELECTRON if s.particle == "electron" else tr.PHOTON), _arr(s.energy_nodes_mev),
                 _arr(s.energy_cdf), _arr(s.position_xyz_mm), _arr(s.direction_xyz), bool(s.isotropic))
        return (seed, stream0, per_chunk, *point, *geometry, *physics)
    o, d, e = s.photons(int(per_chunk.sum()), np.random.default_rng([p.seed, b, 0xBEA]))
    starts = np.concatenate(([0], np.cumsum(per_chunk)[:-1])).astype(np.int64)
    return (seed, stream0, starts, per_chunk, o, d, e, *geometry, *physics)


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
                and a.shape == b.shape and np.array_equal(a, b))
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("kind", ["decays", "particles", "beam"])
def test_each_source_builds_the_arguments_its_kernels_take(kind):
    p = _problems()[kind]
    name, args = p.kernel_args(2)
    assert name == kind == p.source.kernel
    legacy = _legacy_args(p, 2)
    assert len(args) == len(legacy)
    assert [i for i, (a, b) in enumerate(zip(args, legacy)) if not _same(a, b)] == []
    # both targets take them, then the tallies: edep, ctr and (CPU) the stacks
    cpu = inspect.signature(getattr(tr, mcrun._CPU_KERNELS[kind]).py_func).parameters
    assert len(cpu) == len(args) + 3
    from persodose.mc import gpu

    cuda = [q for q in inspect.signature(getattr(gpu, mcrun._CUDA_KERNELS[kind])).parameters.values()
            if q.kind is q.POSITIONAL_OR_KEYWORD]
    assert [q.name for q in cuda[len(args):]] == ["edep", "ctr", "stacks"]
    assert list(cpu)[: len(args)] == [q.name for q in cuda[: len(args)]]


def test_kernel_argument_groups_are_tuples_cached_per_process_and_not_pickled():
    p = _problems()["decays"]
    kind, source, geometry, decay, physics = p._kernel_args()
    assert kind == "decays" and all(isinstance(g, tuple) for g in (source, geometry, decay, physics))
    assert p.static_args()[0] is geometry and p.source.arg_groups()[1] is decay  # built once
    back = pickle.loads(pickle.dumps(p))
    assert "_kernel_args_cache" not in back.__dict__ and "_arg_groups" not in back.source.__dict__
    # arrays that arrive read-only are made writeable (another Numba type would compile again)
    back.density_g_cm3.setflags(write=False)
    assert back.static_args()[0][6].flags.writeable
    assert _problems()["beam"].source.arg_groups() == ((), ())
    assert isinstance(_problems()["particles"].source, PointSource) and BeamSource.kernel == "beam"


def test_batch_plan_names_streams_and_chunks():
    p = _problems()["particles"]
    plan = p.batch_plan(1)
    assert isinstance(plan, BatchPlan) and (plan.index, plan.seed, plan.stream0) == (1, 5, 4)
    assert plan.per_chunk.dtype == np.int64 and plan.per_chunk.tolist() == [8, 8, 7, 7] and plan.n_primaries == 30
    with pytest.raises(Exception, match="does not exist"):
        p.batch_plan(3)


# ----------------------------------------------------------------------------- the batch loop
@pytest.mark.parametrize("kind", ["decays", "particles", "beam"])
def test_one_loop_hook_progress_checkpoint_and_resume(kind, tmp_path, one_numba_thread):
    p = _problems()[kind]
    full, run = run_batches(p)
    assert run["n_new"] == p.n_primaries and [r["batch_id"] for r in run["records"]] == [[5, 0], [5, 1], [5, 2]]
    assert run["backend"]["name"] == "numba-cpu"
    # interrupted after batch 1 (the hook raises): the checkpoint already holds it
    ck = tmp_path / "ck.npz"
    events = []

    class Stop(Exception):
        pass

    def hook(res: BatchResult):
        events.append(("hook", res.batch_id[1], Tally.load(ck).n_batches))
        if res.batch_id[1] == 1:
            raise Stop

    with pytest.raises(Stop):
        run_batches(p, checkpoint=ck, on_batch=hook, progress=lambda d, n: events.append(("progress", d, n)))
    assert events == [("hook", 0, 1), ("progress", 1, 3), ("hook", 1, 2)]
    resumed, run2 = run_batches(p, Tally.load(ck), checkpoint=ck, on_batch=lambda r: events.append(r.batch_id[1]),
                                progress=lambda d, n: events.append(("progress", d, n)))
    assert events[3:] == [2, ("progress", 3, 3)] and run2["n_new"] == int(p.primaries_per_batch[2])
    for t in (resumed, Tally.load(ck)):
        assert t.batch_ids == full.batch_ids and np.array_equal(t.sum_mev, full.sum_mev)
        assert np.array_equal(t.sum2_mev2, full.sum2_mev2) and np.array_equal(t.counters, full.counters)
    # nothing left to do: no batch runs
    again, run3 = run_batches(p, resumed, on_batch=lambda r: pytest.fail("ran a batch"))
    assert again is resumed and run3["n_new"] == 0 and run3["records"] == []


def test_every_simulate_goes_through_the_one_loop(monkeypatch, tmp_path):
    calls = []
    real = mcrun.run_batches

    def spy(problem, tally=None, **kw):
        calls.append((problem.source.kernel, sorted(k for k, v in kw.items() if v is not None)))
        return real(problem, tally, **kw)

    monkeypatch.setattr(mcrun, "run_batches", spy)
    ph = _phantom()
    src = ph.density.with_array(np.ones(ph.density.shape), Kind.TIA)
    hooked = []
    simulate_decays(ph, src, "F-18", 60, _settings(), on_batch=hooked.append)
    r = simulate_point_source(ph, "photon", 0.2, 60, settings=_settings(), checkpoint=tmp_path / "p.npz",
                              on_batch=hooked.append)
    simulate_beam(ph, _Fan(), 60, _settings(), progress=lambda d, n: None, on_batch=hooked.append)
    assert calls == [("decays", ["on_batch"]), ("particles", ["checkpoint", "on_batch"]),
                     ("beam", ["on_batch", "progress"])]
    assert [h.batch_id[1] for h in hooked] == [0, 1, 2] * 3
    # a point-source run resumes from its checkpoint like a decay run
    back = simulate_point_source(ph, "photon", 0.2, 60, settings=_settings(), resume=Tally.load(tmp_path / "p.npz"))
    assert back.info["batches"] == [] and np.array_equal(back.tally.sum_mev, r.tally.sum_mev)
    with pytest.raises(GeometryError):
        simulate_beam(_phantom(5), _Fan(), 60, _settings(), resume=r.tally)


def test_cuda_backend_goes_through_the_same_loop(monkeypatch):
    """With backend="cuda" the loop launches the source's CUDA twin with the same arguments (no GPU needed)."""
    from persodose.mc import gpu

    launched = []

    def fake_cuda(*args, **kw):
        launched.append(args[:-2])
        args[-2][0, 0] += 1.0  # edep, row 0 as the real launcher adds into
        args[-1][0, tr.C_DEPOSITED] += 1.0

    copied = []

    def fake_to_device(a):  # the shared arrays go to the device once per problem, not per launch
        copied.append(id(a))
        return a

    monkeypatch.setattr(gpu, "require_cuda", lambda: None)
    monkeypatch.setattr(gpu, "to_device", fake_to_device)
    monkeypatch.setattr(gpu, "device_info", lambda: {"name": "numba-cuda", "device": "fake"})
    for name in mcrun._CUDA_KERNELS.values():
        monkeypatch.setattr(gpu, name, fake_cuda)
    ph = _phantom()
    res = simulate_beam(ph, _Fan(), 30, _settings(backend="cuda"))
    assert len(launched) == 3 and res.info["backend"]["device"] == "fake"
    assert res.tally.counters[tr.C_DEPOSITED] == pytest.approx(3 / 10)
    cpu = beam_problem(ph, _Fan(), 30, _settings())
    assert all(_same(a, b) for a, b in zip(launched[1], cpu.kernel_args(1)[1]))
    assert copied and len(copied) == len(set(copied))  # each shared array once for the 3 batches


def test_run_batch_is_unchanged_by_the_loop(one_numba_thread):
    p = _problems()["particles"]
    tally, _ = run_batches(p)
    direct = [run_batch(p, b) for b in range(p.n_batches)]
    assert np.array_equal(tally.sum_mev, sum(r.energy_per_primary_mev for r in direct))


# ----------------------------------------------------------------------------- physics version
def test_physics_tag_holds_the_physics_and_data_versions(monkeypatch):
    v = mcv.data_versions()
    assert v["physics"] == str(mcv.PHYSICS_VERSION) and set(v) == {"physics", *mcv.DATA_PACKAGES}
    tag = mcv.physics_tag()
    assert tag.startswith(f"phys{mcv.PHYSICS_VERSION}-") and v["icrp107-database"] in tag and v["xraylib"] in tag
    assert mcv.physics_tag({"physics": "1", "icrp107-database": "0.0.3", "xraylib": "4.3+local/x"}) == \
        "phys1-icrp107-0.0.3-xraylib-4.3_local_x"
    monkeypatch.setattr(mcv, "PHYSICS_VERSION", mcv.PHYSICS_VERSION + 1)
    assert mcv.physics_tag() != tag


def test_a_changed_physics_or_data_version_misses_the_kernel_cache(monkeypatch, tmp_path):
    from persodose.dose.kernels import VoxelKernel
    from persodose.mc import kernels

    computed = []

    def fake_generate(name, voxel_mm, medium, size, n_decays, settings=None):
        computed.append(name)
        z, y, x = np.indices((size,) * 3) - size // 2
        s = (1.0 + len(computed)) / (1.0 + z * z + y * y + x * x)
        return VoxelKernel(s.astype(np.float32), (voxel_mm,) * 3, medium=medium, density_g_cm3=1.04, nuclide=name), 0

    monkeypatch.setattr(kernels, "generate_kernel", fake_generate)
    first = kernels.cached_kernel("Lu-177", 4.0, size=3, n_decays=100, cache_dir=tmp_path)
    hit = kernels.cached_kernel("Lu-177", 4.0, size=3, n_decays=100, cache_dir=tmp_path)
    assert computed == ["Lu-177"] and np.allclose(hit.s_mgy_per_mbq_s, first.s_mgy_per_mbq_s, rtol=1e-5)
    path = kernels.kernel_cache_path("Lu-177", 4.0, "soft_tissue", 3, 100, 12345, tmp_path)
    assert path.exists() and mcv.physics_tag() in path.name
    monkeypatch.setattr(mcv, "PHYSICS_VERSION", mcv.PHYSICS_VERSION + 1)  # a transport fix
    bumped = kernels.cached_kernel("Lu-177", 4.0, size=3, n_decays=100, cache_dir=tmp_path)
    assert computed == ["Lu-177"] * 2 and not np.allclose(bumped.s_mgy_per_mbq_s, first.s_mgy_per_mbq_s)
    real = mcv.data_versions
    monkeypatch.setattr(mcv, "data_versions", lambda: {**real(), "xraylib": "99.0"})  # new photon data
    kernels.cached_kernel("Lu-177", 4.0, size=3, n_decays=100, cache_dir=tmp_path)
    assert computed == ["Lu-177"] * 3 and len(list((tmp_path / "kernels").iterdir())) == 3


def test_control_rule_is_computed_once_per_problem_and_its_share_is_the_callers_copy():
    """The control variate's density rule and activity shares are per-run constants: computed
    once per problem (a run asked for them up to five times: 0.8 -> 0.4 s fixed cost of a
    128^3 run), equal to a fresh problem's, handed out as copies, and not pickled."""
    import pickle

    p = _problems()["decays"]
    assert p.control_variate
    first = p.control_share()
    first[:] = -1.0  # the caller's copy: the problem's value must not change
    again = p.control_share()
    fresh = pickle.loads(pickle.dumps(p))
    assert "_control_share" not in fresh.__dict__
    assert np.array_equal(again, fresh.control_share()) and again.min() >= 0.0 and again.sum() > 0.0
    assert again is not p.control_share()
    assert p.control_density_min() == fresh.control_density_min() == p.control_thresholds()[0]
