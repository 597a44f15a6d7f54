"""CUDA backend of the Monte Carlo engine (persodose.mc.gpu).

Everywhere (CPU only): the CUDA kernels, compiled from the same Python source as the CPU
kernels, run in Numba's CUDA simulator (in a subprocess, since NUMBA_ENABLE_CUDASIM must be
set before numba is imported) and reproduce the CPU tallies stream by stream. With an NVIDIA
GPU (marker ``gpu``): CPU and GPU agree within statistics on a larger problem.
"""

import json
import math
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from persodose.errors import OptionalDependencyError
from persodose.grid import Grid, Kind
from persodose.mc import VoxelPhantom
from persodose.mc import gpu
from persodose.mc import transport as tr
from persodose.mc.sources import decay_tables, voxel_source
from persodose.mc.tables import TransportSettings, build_tables, settings_array
from persodose.physics.materials import get_material


def _phantom(n=8, mm=2.0):
    """Water box with a bone slab in its upper half (two materials, two densities)."""
    water, bone = get_material("water"), get_material("bone")
    m = np.zeros((n, n, n), np.uint8)
    m[:, :, n // 2:] = 1
    dens = np.where(m == 1, bone.density_g_cm3, water.density_g_cm3).astype(np.float64)
    sp = (mm,) * 3
    return VoxelPhantom(Grid(dens, sp, kind=Kind.DENSITY), Grid(m, sp, kind=Kind.MATERIAL), (water, bone))


def _physics_args(ph, ts=None):
    """The geometry and physics arguments shared by run_decays and run_particles."""
    ts = ts or TransportSettings()
    tab = build_tables(ph.material_list, ts)
    settings_f = settings_array(ts)
    nz, ny, nx = ph.density.shape
    sz, sy, sx = (float(v) for v in ph.density.spacing_zyx_mm)
    geometry = (nz, ny, nx, sz, sy, sx, np.ascontiguousarray(ph.density.array, np.float64).ravel(),
                np.ascontiguousarray(ph.materials.array, np.int64).ravel())
    physics = (tab.log_emin, tab.inv_dlog, tab.energy_mev.size, tab.photon,
               tab.majorant_per_mm(ph.max_density_per_material()), tab.compton_sf, tab.rayleigh_cum, tab.x_nodes,
               tab.electron, settings_f, bool(ts.range_rejection))
    return ts, geometry, physics


def _decay_args(ph, nuclide, source, ts):
    dt = decay_tables(nuclide, ts.photon_cut_mev, ts.electron_cut_mev, ts.emax_mev)
    src_index, src_cdf = voxel_source(source)
    return (src_index, src_cdf), (dt.local_mev, dt.beta_yields, dt.beta_minus_e, dt.beta_minus_cdf, dt.beta_plus_e,
                                  dt.beta_plus_cdf, dt.line_kind, dt.line_e, dt.line_cum, dt.line_total)


def _point_args(kind, energy_mev, ph, direction=None):
    nz, ny, nx = ph.density.shape
    sz, sy, sx = ph.density.spacing_zyx_mm
    pos = np.array([nx * sx / 2 + 0.3, ny * sy / 2 - 0.2, nz * sz / 2 + 0.1])
    d = np.array([0.0, 0.0, 1.0] if direction is None else direction, dtype=np.float64)
    return (kind, np.array([energy_mev]), np.array([1.0]), pos, d / np.linalg.norm(d), direction is None)


def _beam_photons(ph, n, seed=0):
    """``n`` photons of 40-140 keV from a point 60 mm beside the phantom, aimed at it with some spread."""
    nz, ny, nx = ph.density.shape
    sz, sy, sx = ph.density.spacing_zyx_mm
    r = np.random.default_rng(seed)
    origins = np.tile([-60.0, ny * sy / 2, nz * sz / 2], (n, 1))
    target = np.column_stack([np.full(n, nx * sx / 2), r.uniform(0.1, 0.9, n) * ny * sy,
                              r.uniform(0.1, 0.9, n) * nz * sz])
    target[: n // 10, 1] = -40.0  # a tenth misses the grid altogether
    d = target - origins
    return origins, d / np.linalg.norm(d, axis=1, keepdims=True), r.uniform(0.04, 0.14, n)


def _beam_args(ph, per_chunk, seed=0):
    """``(chunk_start, chunk_n, origins, directions, energies)`` for run_beam and run_beam_cuda."""
    per_chunk = np.asarray(per_chunk, np.int64)
    starts = np.concatenate(([0], np.cumsum(per_chunk)[:-1])).astype(np.int64)
    return (starts, per_chunk, *_beam_photons(ph, int(per_chunk.sum()), seed))


def _balance(ctr):
    lhs = ctr[tr.C_EMITTED] + ctr[tr.C_ANNIHILATION]
    rhs = ctr[tr.C_DEPOSITED] + ctr[tr.C_ESCAPED]
    return lhs, rhs


# ----------------------------------------------------------------------------- everywhere
def test_every_physics_function_is_registered_for_both_targets():
    """A jitted helper left out of PHYSICS_FUNCTIONS would be called as a CPU function from CUDA."""
    from numba.core.registry import CPUDispatcher

    registered = {id(f) for f in tr.PHYSICS_FUNCTIONS}
    drivers = {"run_decays", "run_particles", "run_beam", "deposit"}
    missing = [name for name, obj in vars(tr).items()
               if isinstance(obj, CPUDispatcher) and name not in drivers and id(obj) not in registered
               and obj.py_func.__module__ == tr.__name__]
    assert not missing, missing
    assert tr.transport_photon in tr.PHYSICS_FUNCTIONS and tr.decay_chunk in tr.PHYSICS_FUNCTIONS
    assert tr.beam_chunk in tr.PHYSICS_FUNCTIONS


def test_retarget_binds_cuda_twins_and_leaves_cpu_module_alone():
    """The CUDA build of a physics function sees the CUDA primitive; the CPU build keeps the CPU one."""
    pytest.importorskip("numba.cuda")
    built = gpu._retarget([tr.transport_charged, tr._push], {tr.deposit: gpu._atomic_deposit})
    cuda_charged = built[tr.transport_charged].py_func
    assert cuda_charged.__code__ is tr.transport_charged.py_func.__code__  # the same source, compiled twice
    assert cuda_charged.__globals__["deposit"] is built[tr.deposit]
    assert built[tr.deposit].py_func.__code__ is gpu._atomic_deposit.__code__
    assert cuda_charged.__globals__["_push"] is built[tr._push]
    # helpers not given to _retarget stay as they were (so everything must be registered)
    assert cuda_charged.__globals__["_rotate"] is tr._rotate
    # the module the CPU kernels are compiled from is untouched
    assert tr.transport_charged.py_func.__globals__["deposit"] is tr.deposit
    assert tr.transport_charged.py_func.__globals__["_push"] is tr._push


def test_cuda_requested_without_device_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(gpu, "cuda_available", lambda: False)
    monkeypatch.setattr(gpu, "_KERNELS", {})
    ph = _phantom(4)
    ts, geometry, physics = _physics_args(ph)
    with pytest.raises(OptionalDependencyError, match="CUDA") as err:
        gpu.run_particles_cuda(np.uint64(1), 0, np.array([2]), *_point_args(tr.PHOTON, 0.3, ph), *geometry,
                               *physics, np.zeros(ph.density.array.size), np.zeros(tr.C_N))
    assert "\n" not in str(err.value)
    assert isinstance(gpu.cuda_available(), bool)


_SIM_SCRIPT = textwrap.dedent("""
    import json, os, sys, warnings
    assert os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
    # uint64 scalar arithmetic of the generator wraps on purpose (the simulator runs it in numpy)
    warnings.filterwarnings("ignore", message="overflow encountered", category=RuntimeWarning)
    import numpy as np
    sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[1])))
    import test_mc_gpu as t
    from persodose.mc import gpu, transport as tr

    assert gpu.cuda_available()
    built = gpu._kernels()["device_functions"]
    charged = built[tr.transport_charged]
    checks = {
        "simulated": type(charged).__name__ == "FakeCUDAKernel",
        "atomic_deposit_bound": charged.fn.__globals__["deposit"] is built[tr.deposit]
        and built[tr.deposit].fn.__code__ is gpu._atomic_deposit.__code__,
    }
    ph = t._phantom()
    ts, geometry, physics = t._physics_args(ph)
    n_vox = ph.density.array.size
    per_chunk = np.array([9, 8, 8, 8, 9, 8])  # 50 primaries on 6 streams
    cases = {
        "electron": (tr.ELECTRON, 1.0, None),
        "photon": (tr.PHOTON, 0.5, None),
        "positron": (tr.POSITRON, 0.8, (1.0, 0.3, -0.2)),
    }
    out = {}

    def cpu_run(launch, args):
        edep = np.zeros((2, n_vox)); ctr = np.zeros((2, tr.C_N)); stacks = np.zeros((2, tr.STACK_SIZE, 8))
        launch(*args, edep, ctr, stacks)
        return edep.sum(axis=0), ctr.sum(axis=0)

    def gpu_run(launch, args):
        edep = np.zeros(n_vox); ctr = np.zeros(tr.C_N)
        launch(*args, edep, ctr, None, stack_depth=64, threads_per_block=4)  # 2 blocks, the last one partial
        return edep, ctr

    for name, (kind, e, direction) in cases.items():
        point = t._point_args(kind, e, ph, direction)
        args = (np.uint64(42), 6, per_chunk, *point, *geometry, *physics)
        out[name] = cpu_run(tr.run_particles, args) + gpu_run(gpu.run_particles_cuda, args)
    # the same streams shifted by one chunk: another tally (the seeding really is per stream)
    args = (np.uint64(42), 7, per_chunk, *t._point_args(tr.ELECTRON, 1.0, ph), *geometry, *physics)
    out["electron_other_streams"] = gpu_run(gpu.run_particles_cuda, args) * 2
    src = np.zeros(ph.density.shape); src[3:5, 3:5, 2:6] = 1.0
    source, decay = t._decay_args(ph, "Lu-177", src, ts)
    args = (np.uint64(3), 0, np.array([4, 4, 4]), *source, *geometry, *decay, *physics)
    out["Lu-177"] = cpu_run(tr.run_decays, args) + gpu_run(gpu.run_decays_cuda, args)
    args = (np.uint64(9), 2, *t._beam_args(ph, per_chunk), *geometry, *physics)
    out["beam"] = cpu_run(tr.run_beam, args) + gpu_run(gpu.run_beam_cuda, args)
    # the track-length estimator: the same source compiled for both targets
    _, geometry, physics = t._physics_args(ph, t.TransportSettings(photon_estimator="tle"))
    args = (np.uint64(42), 6, per_chunk, *t._point_args(tr.PHOTON, 0.5, ph), *geometry, *physics)
    out["photon_tle"] = cpu_run(tr.run_particles, args) + gpu_run(gpu.run_particles_cuda, args)
    args = (np.uint64(9), 2, *t._beam_args(ph, per_chunk), *geometry, *physics)
    out["beam_tle"] = cpu_run(tr.run_beam, args) + gpu_run(gpu.run_beam_cuda, args)
    np.savez(sys.argv[2], **{f"{k}__{i}": v for k, arrs in out.items() for i, v in enumerate(arrs)})
    print(json.dumps(checks))
""")


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """CPU and simulated-GPU tallies of the same streams: {case: (edep_cpu, ctr_cpu, edep_gpu, ctr_gpu)}."""
    pytest.importorskip("numba.cuda")
    d = tmp_path_factory.mktemp("cudasim")
    script = d / "run_sim.py"
    script.write_text(_SIM_SCRIPT)
    out = d / "tallies.npz"
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    here = os.path.abspath(__file__)
    proc = subprocess.run([sys.executable, str(script), here, str(out)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    checks = json.loads(proc.stdout.strip().splitlines()[-1])
    with np.load(out) as f:
        cases = {}
        for key in f.files:
            name, i = key.split("__")
            cases.setdefault(name, [None] * 4)[int(i)] = f[key]
    return checks, cases


def test_simulated_gpu_uses_the_cuda_build(simulated):
    checks, _ = simulated
    assert checks == {"simulated": True, "atomic_deposit_bound": True}


@pytest.mark.parametrize("case", ["electron", "photon", "positron", "Lu-177", "beam", "photon_tle", "beam_tle"])
def test_simulated_gpu_reproduces_cpu_tally_stream_by_stream(simulated, case):
    """Same seeds, same split into streams: the same histories, so the same tally up to float rounding."""
    _, cases = simulated
    e_cpu, c_cpu, e_gpu, c_gpu = cases[case]
    assert c_gpu[tr.C_DEPOSITED] > 0 and (c_gpu[tr.C_STEPS] > 0 or case.endswith("_tle"))
    assert c_gpu[tr.C_STEPS] == c_cpu[tr.C_STEPS]  # the same number of electron steps
    np.testing.assert_allclose(c_gpu, c_cpu, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(e_gpu, e_cpu, rtol=1e-9, atol=1e-12 * e_cpu.sum())
    assert np.count_nonzero(e_gpu) > 3


@pytest.mark.parametrize("case", ["electron", "photon", "positron", "Lu-177", "beam"])
def test_simulated_gpu_conserves_energy(simulated, case):
    """emitted + annihilation rest energy = deposited + escaped; the voxel tally holds the deposit."""
    _, cases = simulated
    _, _, e_gpu, c_gpu = cases[case]
    lhs, rhs = _balance(c_gpu)
    assert lhs > 0 and rhs == pytest.approx(lhs, rel=1e-12)
    assert e_gpu.sum() == pytest.approx(c_gpu[tr.C_DEPOSITED], rel=1e-12)
    assert c_gpu[tr.C_OVERFLOW] == 0.0
    if case == "positron":
        assert c_gpu[tr.C_ANNIHILATION] == pytest.approx(50 * 2 * tr.MC2, rel=1e-12)
    if case in ("photon", "beam"):
        assert c_gpu[tr.C_ESCAPED] > 0
    if case == "beam":  # the tenth aimed beside the grid escapes uncollided
        assert c_gpu[tr.C_UNCOLLIDED] >= 0.05 * c_gpu[tr.C_EMITTED]


def test_simulated_gpu_streams_differ(simulated):
    _, cases = simulated
    assert not np.allclose(cases["electron"][2], cases["electron_other_streams"][2])


def _nvvm_available() -> bool:
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return False
    try:
        from numba.cuda.cudadrv import nvvm

        nvvm.NVVM()
        return True
    except Exception:  # noqa: BLE001 - no CUDA toolkit
        return False


@pytest.mark.skipif(not _nvvm_available(), reason="needs NVVM (CUDA toolkit, e.g. pip nvidia-cuda-nvcc-cu12)")
def test_cuda_kernels_compile_to_ptx(monkeypatch, tmp_path):
    """The real CUDA compiler accepts the three kernels (no GPU needed; compute capability 9.0)."""
    import types

    import numba
    import numba.cuda.dispatcher as dispatcher
    from numba import cuda

    # device functions ask the current device for its compute capability
    monkeypatch.setattr(dispatcher, "get_current_device", lambda: types.SimpleNamespace(compute_capability=(9, 0)))
    built = gpu._retarget(gpu.RNG_FUNCTIONS + list(tr.PHYSICS_FUNCTIONS), {tr.deposit: gpu._atomic_deposit},
                          kernels=tuple(gpu._KERNEL_SOURCES.values()))
    ph = _phantom(4)
    ts, geometry, physics = _physics_args(ph)
    source, decay = _decay_args(ph, "Lu-177", np.ones(ph.density.shape), ts)
    tallies = (np.zeros(ph.density.array.size), np.zeros(tr.C_N), np.zeros((2, 64, 8)))
    per = np.ones(2, np.int64)
    for kernel, args in ((gpu._decays_kernel, (np.uint64(1), np.int64(0), per, *source, *geometry, *decay, *physics)),
                         (gpu._particles_kernel, (np.uint64(1), np.int64(0), per, *_point_args(1, 1.0, ph),
                                                  *geometry, *physics)),
                         (gpu._beam_kernel, (np.uint64(1), np.int64(0), *_beam_args(ph, per), *geometry, *physics))):
        sig = tuple(numba.typeof(a) for a in args + tallies)
        ptx, _ = cuda.compile_ptx(built[kernel].py_func, sig, cc=(9, 0))
        assert "atom.global.add.f64" in ptx
        ptxas = shutil.which("ptxas")
        if ptxas:  # the assembler accepts it for Hopper too (what the driver would do at load time)
            src = tmp_path / f"{kernel.__name__}.ptx"
            src.write_text(ptx)
            proc = subprocess.run([ptxas, "-arch=sm_90", str(src), "-o", str(src.with_suffix(".cubin"))],
                                  capture_output=True, text=True)
            assert proc.returncode == 0, proc.stderr[-2000:]
            assert src.with_suffix(".cubin").stat().st_size > 0


# ----------------------------------------------------------------------------- with a GPU
def _batches(launch, make_args, n_batches, chunks, n_per_batch, n_vox, gpu_run):
    """Per-batch energy per primary (n_batches, n_vox) and counters (n_batches, C_N)."""
    per_chunk = np.full(chunks, n_per_batch // chunks, dtype=np.int64)
    per_chunk[: n_per_batch % chunks] += 1
    e_out, c_out = [], []
    for b in range(n_batches):
        if gpu_run:
            edep, ctr = np.zeros(n_vox), np.zeros(tr.C_N)
            launch(*make_args(b * chunks, per_chunk), edep, ctr, None)
        else:
            import numba

            nt = numba.get_num_threads()
            edep, ctr = np.zeros((nt, n_vox)), np.zeros((nt, tr.C_N))
            launch(*make_args(b * chunks, per_chunk), edep, ctr, np.zeros((nt, tr.STACK_SIZE, 8)))
            edep, ctr = edep.sum(axis=0), ctr.sum(axis=0)
        e_out.append(edep / n_per_batch)
        c_out.append(ctr / n_per_batch)
    return np.array(e_out), np.array(c_out)


def _z(a, b):
    """|difference of batch means| in standard errors."""
    ma, mb = a.mean(axis=0), b.mean(axis=0)
    se = np.sqrt(a.var(axis=0, ddof=1) / len(a) + b.var(axis=0, ddof=1) / len(b))
    return np.abs(ma - mb) / np.where(se > 0, se, np.inf)


#: batches, chunks (CUDA threads) per batch, primaries per batch
_GPU_PROBLEM = (10, 2048, 20000)


@pytest.mark.gpu
@pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" or not gpu.cuda_available(),
                    reason="needs an NVIDIA GPU with CUDA")
@pytest.mark.parametrize("case", ["electron", "photon", "Lu-177", "Y-90", "F-18", "I-131", "beam"])
def test_gpu_agrees_with_cpu_within_statistics(case):
    ph = _phantom(15, 2.0)
    ts, geometry, physics = _physics_args(ph)
    n_vox = ph.density.array.size
    n_batches, chunks, n = _GPU_PROBLEM
    if case in ("Lu-177", "Y-90", "F-18", "I-131"):  # decays: beta-, hard beta-, beta+, beta- with gammas
        src = np.zeros(ph.density.shape)
        src[6:9, 6:9, 5:10] = 1.0
        source, decay = _decay_args(ph, case, src, ts)
        pairs = (tr.run_decays, gpu.run_decays_cuda)

        def make_args(stream0, per_chunk):
            return (np.uint64(77), stream0, per_chunk, *source, *geometry, *decay, *physics)
    elif case == "beam":
        pairs = (tr.run_beam, gpu.run_beam_cuda)

        def make_args(stream0, per_chunk):  # each batch its own photons, the same on both targets
            return (np.uint64(77), stream0, *_beam_args(ph, per_chunk, seed=stream0), *geometry, *physics)
    else:
        point = _point_args(tr.ELECTRON if case == "electron" else tr.PHOTON, 1.0 if case == "electron" else 0.5, ph)
        pairs = (tr.run_particles, gpu.run_particles_cuda)

        def make_args(stream0, per_chunk):
            return (np.uint64(77), stream0, per_chunk, *point, *geometry, *physics)

    e_cpu, c_cpu = _batches(pairs[0], make_args, n_batches, chunks, n, n_vox, gpu_run=False)
    e_gpu, c_gpu = _batches(pairs[1], make_args, n_batches, chunks, n, n_vox, gpu_run=True)
    for c in c_gpu:  # exact energy bookkeeping on the device
        lhs, rhs = _balance(c)
        assert rhs == pytest.approx(lhs, rel=1e-9)
    assert float(c_gpu[:, tr.C_OVERFLOW].max()) == 0.0
    # totals and the energy in concentric shells around the source centre
    zz, yy, xx = np.indices(ph.density.shape)
    r = np.sqrt((zz - 7) ** 2 + (yy - 7) ** 2 + (xx - 7) ** 2).ravel()
    shells = [r < 1.5, (r >= 1.5) & (r < 3.5), (r >= 3.5) & (r < 6.5), r >= 6.5]
    def quantities(e, c):
        return np.column_stack([c[:, tr.C_DEPOSITED], c[:, tr.C_ESCAPED]] + [e[:, s].sum(axis=1) for s in shells])

    q_cpu, q_gpu = quantities(e_cpu, c_cpu), quantities(e_gpu, c_gpu)
    keep = q_cpu.mean(axis=0) > 1e-6
    assert np.all(_z(q_cpu[:, keep], q_gpu[:, keep]) < 4.5), (q_cpu.mean(axis=0), q_gpu.mean(axis=0))
    # voxel by voxel where the tally is well determined: no more outliers than chance allows
    good = e_cpu.mean(axis=0) > 1e-3 * e_cpu.mean(axis=0).max()
    zv = _z(e_cpu[:, good], e_gpu[:, good])
    assert np.mean(zv > 3.5) < 0.02 + 3 * math.sqrt(0.0005 / max(int(good.sum()), 1))


def test_engine_cuda_backend_refuses_cleanly_without_a_gpu_and_runs_in_the_simulator(tmp_path):
    """The engine's backend="cuda": a one-line error without CUDA; through Numba's CUDA simulator
    (a subprocess, the variable must be set before numba.cuda is imported) it runs the engine path
    end to end and conserves energy."""
    import subprocess
    import sys

    from persodose.errors import PersodoseError
    from persodose.mc import MCSettings, VoxelPhantom, simulate_point_source
    from persodose.mc.gpu import cuda_available
    from persodose.physics.materials import get_material

    ph = VoxelPhantom.homogeneous((5, 5, 5), 4.0, get_material("water"))
    if not cuda_available():
        with pytest.raises(PersodoseError, match="GPU"):
            simulate_point_source(ph, "electron", 0.3, 10, settings=MCSettings(n_batches=2, backend="cuda"))
    with pytest.raises(PersodoseError):
        MCSettings(backend="opencl")
    code = (
        "from persodose.mc import MCSettings, VoxelPhantom, simulate_point_source\n"
        "from persodose.physics.materials import get_material\n"
        "ph = VoxelPhantom.homogeneous((5, 5, 5), 4.0, get_material('water'))\n"
        "r = simulate_point_source(ph, 'positron', 0.3, 8, settings=MCSettings(n_batches=2, chunks_per_batch=4, "
        "backend='cuda'))\n"
        "b = r.energy_balance\n"
        "assert abs(b['emitted_mev'] + b['annihilation_rest_energy_mev'] - b['deposited_mev'] - b['escaped_mev']) < 1e-9\n"
        "be = r.info['backend']\n"
        "assert be['name'] == 'numba-cuda' and be['simulator'] is True and be['chunks_per_batch'] == 4, be\n"
        "assert MCSettings(backend='cuda').chunks_per_batch == 131072 and MCSettings().chunks_per_batch == 32\n"
        "import numpy as np\n"
        "from persodose.mc import simulate_beam\n"
        "class Fan:\n"
        "    def sample(self, n, rng):\n"
        "        d = np.column_stack([rng.uniform(-0.1, 0.1, n), np.ones(n), rng.uniform(-0.1, 0.1, n)])\n"
        "        return np.tile([0.0, -80.0, 0.0], (n, 1)), d / np.linalg.norm(d, axis=1)[:, None], np.full(n, 0.07)\n"
        "rb = simulate_beam(ph, Fan(), 12, settings=MCSettings(n_batches=2, chunks_per_batch=3, backend='cuda'))\n"
        "rc = simulate_beam(ph, Fan(), 12, settings=MCSettings(n_batches=2, chunks_per_batch=3))\n"
        "assert rb.info['backend']['name'] == 'numba-cuda' and rc.info['backend']['name'] == 'numba-cpu'\n"
        "assert np.allclose(rb.energy_per_primary_mev.array, rc.energy_per_primary_mev.array, rtol=1e-9, atol=1e-12)\n"
        "assert rb.energy_per_primary_mev.array.sum() > 0\n"
        "print('OK', b['annihilation_rest_energy_mev'])\n"
    )
    env = dict(__import__("os").environ, NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-2000:]


def test_cuda_batches_keep_static_arrays_on_the_device_and_one_tally_row(tmp_path):
    """A CUDA run copies the arrays every batch shares (geometry, physics, the source and its
    decay tables) to the device once per problem, not at every launch; the copies are not
    pickled with the problem; the host tally is one row, not one per CPU thread; and batches
    run with the cache give the tallies of a problem run without it. Run through Numba's CUDA
    simulator (a subprocess: the variable must be set before numba.cuda is imported)."""
    import subprocess
    import sys

    code = textwrap.dedent("""
        import pickle
        import numpy as np
        from persodose.grid import Grid, Kind
        from persodose.mc import MCSettings, VoxelPhantom
        from persodose.mc.problem import decay_problem
        from persodose.mc.run import run_batch
        from persodose.physics.materials import get_material

        ph = VoxelPhantom.homogeneous((6, 6, 6), 3.0, get_material('water'))
        src = ph.density.with_array(np.ones((6, 6, 6), np.float32), Kind.ACTIVITY)
        settings = MCSettings(n_batches=3, chunks_per_batch=4, backend='cuda')
        p = decay_problem(ph, src, 'Lu-177', 24, settings)
        r0 = run_batch(p, 0)
        cache = p.__dict__['_cuda_resident']
        geometry, physics = p.static_args()
        source, decay = p.source.arg_groups()
        shared = [a for g in (geometry, physics, source, decay) for a in g if isinstance(a, np.ndarray)]
        assert shared and all(id(a) in cache for a in shared), 'a shared array was not made resident'
        copies = [cache[id(a)] for a in shared]
        r1 = run_batch(p, 1)
        assert p.__dict__['_cuda_resident'] is cache and all(cache[id(a)] is c for a, c in zip(shared, copies))
        assert r0.n_threads == 1 and r1.n_threads == 1, (r0.n_threads, r1.n_threads)
        assert '_cuda_resident' not in pickle.loads(pickle.dumps(p)).__dict__
        fresh = pickle.loads(pickle.dumps(p))  # no cache: every array copied at the launch
        fresh.__dict__['_cuda_resident'] = {}
        r1b = run_batch(fresh, 1)
        assert np.array_equal(r1.energy_per_primary_mev, r1b.energy_per_primary_mev)
        print('OK')
    """)
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-2000:]
