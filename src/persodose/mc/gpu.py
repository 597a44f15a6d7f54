"""CUDA backend of the Monte Carlo engine, compiled from the CPU engine's own Python source.

The physics (photon and charged-particle transport, samplers, rotations, the particle stack,
the per-chunk history loops and the xoroshiro128+ generator) is written once, as the Python
functions registered in :data:`persodose.mc.transport.PHYSICS_FUNCTIONS` and those of
:mod:`persodose.mc.rng`. :func:`_retarget` compiles each of them a second time with
``numba.cuda.jit(device=True)``: it copies the function (same code object) with its module's
globals in which every CPU dispatcher is replaced by its CUDA twin and the tally primitive
:func:`persodose.mc.transport.deposit` by :func:`_atomic_deposit`. Numba freezes globals at
compile time, so the CUDA build sees the CUDA functions and the CPU build (``njit``, cached)
is untouched.

The only differences between the targets are therefore:

* the tally add: one tally shared by all CUDA threads, ``cuda.atomic.add`` in float64
  (compute capability >= 6.0), instead of a row per CPU thread;
* the work split: one CUDA thread per chunk (random stream ``(seed, stream0 + chunk)``,
  seeded exactly like the CPU chunk) instead of ``prange`` over chunks;
* where the per-unit state lives: the generator state and the energy counters in
  ``cuda.local`` arrays (the counters are added atomically to the shared counters when the
  thread ends), the particle stacks in one global array ``(n_chunks, depth, 8)``.

Because a chunk consumes its random stream identically on both targets, a simulated GPU run
(``NUMBA_ENABLE_CUDASIM=1``) reproduces the CPU tally up to the order of floating-point sums;
on a real GPU the device's ``exp``/``log`` and fused multiply-adds differ in the last bits
from the host's, so the histories diverge and the runs agree within statistics.

Unlike the CPU kernels, the CUDA kernels want many chunks (>= 10^4: one thread each) for a
GPU to be busy.
"""

from __future__ import annotations

import math
import types

import numpy as np

from persodose.errors import OptionalDependencyError
from persodose.mc import rng as _rng
from persodose.mc import transport as _tr
from persodose.mc.rng import seed_state
from persodose.mc.transport import C_N, beam_chunk, chunk_strata, decay_chunk, deposit, particle_chunk

if not hasattr(np, "row_stack"):  # pragma: no cover - depends on the installed numpy
    # numpy 2.5 has no ``row_stack`` (the deprecated alias of ``vstack``); numba-cuda releases that still
    # overload it fail at their first kernel compilation (AttributeError in
    # numba/cuda/np/arrayobj.py, seen with numpy 2.5.2 on the H200 image, 2026-12-04). The
    # alias is restored (the same function) so that those releases compile.
    np.row_stack = np.vstack

try:  # numba is the [mc] extra; the built-in numba.cuda or the numba-cuda package provide `cuda`
    from numba import cuda, float64, uint64
except ImportError:  # pragma: no cover - numba missing altogether
    cuda = None

#: Default depth of a CUDA thread's particle stack (the CPU uses STACK_SIZE = 512 per CPU
#: thread). Overflow is safe: the particle is deposited locally and counted in C_OVERFLOW.
GPU_STACK_DEPTH = 128
#: Default CUDA block size.
THREADS_PER_BLOCK = 64

_KERNELS: dict = {}

#: The generator's functions, compiled for CUDA with the physics.
RNG_FUNCTIONS = [_rng._rotl, _rng.splitmix64, _rng.seed_state, _rng.uniform]


def cuda_available() -> bool:
    """True when a CUDA device can run the kernels (or the CUDA simulator is enabled)."""
    if cuda is None:
        return False
    try:
        return bool(cuda.is_available())
    except Exception:  # noqa: BLE001 - a broken driver install means "not available"
        return False


def require_cuda() -> None:
    """Raise :class:`OptionalDependencyError` unless :func:`cuda_available`."""
    if not cuda_available():
        raise OptionalDependencyError(
            "the CUDA Monte Carlo backend needs an NVIDIA GPU with its driver and numba's CUDA target "
            "(pip install numba-cuda[cu12]); none was found: use the CPU backend")


# ----------------------------------------------------------------------------- target primitives
def _atomic_deposit(edep, vox, de):
    """Tally primitive, CUDA version: one tally shared by all threads."""
    cuda.atomic.add(edep, vox, de)


# ----------------------------------------------------------------------------- kernels (Python source)
# Written against the CPU names (seed_state, decay_chunk, particle_chunk); _retarget binds
# them to the CUDA builds.
def _decays_kernel(seed, stream0, decays_per_chunk, src_index, src_cdf, nz, ny, nx, sz, sy, sx, dens, mat,
                   local_mev, beta_yields, beta_minus_e, beta_minus_cdf, beta_plus_e, beta_plus_cdf,
                   line_kind, line_e, line_cum, line_total,
                   log_emin, inv_dlog, n_e, photon, majorant, compton_sf, rayleigh_cum, x_nodes, electron,
                   settings_f, range_rejection, edep, ctr, stacks):
    c = cuda.grid(1)
    if c >= decays_per_chunk.shape[0]:
        return
    state = cuda.local.array(2, uint64)
    seed_state(state, seed, stream0 + c)
    ct = cuda.local.array(C_N, float64)
    for k in range(C_N):
        ct[k] = 0.0
    stratum0, n_strata = chunk_strata(decays_per_chunk, c)
    decay_chunk(state, decays_per_chunk[c], stratum0, n_strata, src_index, src_cdf, nz, ny, nx, sz, sy, sx,
                dens, mat,
                local_mev, beta_yields, beta_minus_e, beta_minus_cdf, beta_plus_e, beta_plus_cdf,
                line_kind, line_e, line_cum, line_total,
                log_emin, inv_dlog, n_e, photon, majorant, compton_sf, rayleigh_cum, x_nodes, electron,
                settings_f, range_rejection, edep, ct, stacks[c])
    for k in range(C_N):
        cuda.atomic.add(ctr, k, ct[k])


def _particles_kernel(seed, stream0, per_chunk, kind, energy_e, energy_cdf, origin_xyz, direction_xyz, isotropic,
                      nz, ny, nx, sz, sy, sx, dens, mat,
                      log_emin, inv_dlog, n_e, photon, majorant, compton_sf, rayleigh_cum, x_nodes, electron,
                      settings_f, range_rejection, edep, ctr, stacks):
    c = cuda.grid(1)
    if c >= per_chunk.shape[0]:
        return
    state = cuda.local.array(2, uint64)
    seed_state(state, seed, stream0 + c)
    ct = cuda.local.array(C_N, float64)
    for k in range(C_N):
        ct[k] = 0.0
    particle_chunk(state, per_chunk[c], kind, energy_e, energy_cdf, origin_xyz, direction_xyz, isotropic,
                   nz, ny, nx, sz, sy, sx, dens, mat,
                   log_emin, inv_dlog, n_e, photon, majorant, compton_sf, rayleigh_cum, x_nodes, electron,
                   settings_f, range_rejection, edep, ct, stacks[c])
    for k in range(C_N):
        cuda.atomic.add(ctr, k, ct[k])


def _beam_kernel(seed, stream0, chunk_start, chunk_n, origins, directions, energies, nz, ny, nx, sz, sy, sx, dens,
                 mat, log_emin, inv_dlog, n_e, photon, majorant, compton_sf, rayleigh_cum, x_nodes, electron,
                 settings_f, range_rejection, edep, ctr, stacks):
    c = cuda.grid(1)
    if c >= chunk_start.shape[0]:
        return
    state = cuda.local.array(2, uint64)
    seed_state(state, seed, stream0 + c)
    ct = cuda.local.array(C_N, float64)
    for k in range(C_N):
        ct[k] = 0.0
    beam_chunk(chunk_start[c], chunk_n[c], origins, directions, energies, nz, ny, nx, sz, sy, sx, dens, mat,
               log_emin, inv_dlog, n_e, photon, majorant, compton_sf, rayleigh_cum, x_nodes, electron,
               settings_f, range_rejection, edep, ct, stacks[c], state)
    for k in range(C_N):
        cuda.atomic.add(ctr, k, ct[k])


#: The kernels by name, as the host side launches them.
_KERNEL_SOURCES = {"decays": _decays_kernel, "particles": _particles_kernel, "beam": _beam_kernel}


def _retarget(cpu_functions, substitutes: dict, kernels=()):
    """Compile the Python source of CPU dispatchers (and plain functions) for CUDA.

    Args:
        cpu_functions: njit dispatchers whose ``py_func`` become CUDA device functions.
        substitutes: CPU dispatcher -> plain Python function to compile instead (the
            target primitives).
        kernels: plain Python functions to compile as CUDA kernels.

    Returns:
        dict mapping each input object to its CUDA dispatcher.
    """
    by_id: dict[int, object] = {}
    built: dict = {}
    copies_globals: list[dict] = []
    globals_of: dict[int, dict] = {}

    def clone(fn):
        g0 = fn.__globals__
        g = globals_of.get(id(g0))
        if g is None:
            g = dict(g0)  # one private copy per module: the module itself is not touched
            globals_of[id(g0)] = g
            copies_globals.append(g)
        f = types.FunctionType(fn.__code__, g, fn.__name__, fn.__defaults__, fn.__closure__)
        f.__qualname__ = fn.__qualname__
        f.__doc__ = fn.__doc__
        return f

    for disp in cpu_functions:
        dev = cuda.jit(device=True)(clone(disp.py_func))
        by_id[id(disp)] = dev
        built[disp] = dev
    for disp, fn in substitutes.items():
        dev = cuda.jit(device=True)(clone(fn))
        by_id[id(disp)] = dev
        built[disp] = dev
    for fn in kernels:
        built[fn] = cuda.jit(clone(fn))
    # bind every name that refers to a CPU dispatcher to its CUDA twin (compilation is lazy)
    for g in copies_globals:
        for name, value in list(g.items()):
            twin = by_id.get(id(value))
            if twin is not None:
                g[name] = twin
    return built


def _kernels() -> dict:
    """The CUDA kernels (by name, see :data:`_KERNEL_SOURCES`), built once per process."""
    if not _KERNELS:
        require_cuda()
        built = _retarget(RNG_FUNCTIONS + list(_tr.PHYSICS_FUNCTIONS), {deposit: _atomic_deposit},
                          kernels=tuple(_KERNEL_SOURCES.values()))
        _KERNELS.update({name: built[fn] for name, fn in _KERNEL_SOURCES.items()})
        _KERNELS["device_functions"] = built
    return _KERNELS


def device_info() -> dict:
    """The CUDA device the kernels run on (for provenance): name, compute capability, versions."""
    require_cuda()
    import numba

    dev = cuda.current_context().device  # the simulator's device has no name
    name = getattr(dev, "name", "CUDA simulator")
    name = name.decode() if isinstance(name, bytes) else str(name)
    info = {"name": "numba-cuda", "device": name, "compute_capability": list(dev.compute_capability),
            "numba": numba.__version__, "simulator": bool(numba.config.ENABLE_CUDASIM)}
    try:
        info["driver_version"] = list(cuda.cudadrv.driver.driver.get_version())
    except Exception:  # noqa: BLE001 - the simulator has no driver
        pass
    return info


# ----------------------------------------------------------------------------- host side
def _is_device_array(a) -> bool:
    # __cuda_array_interface__: numba, CuPy, PyTorch...; copy_to_host: the CUDA simulator's arrays
    return not isinstance(a, np.ndarray) and (hasattr(a, "__cuda_array_interface__") or hasattr(a, "copy_to_host"))


def _to_device(a):
    if _is_device_array(a):
        return a
    return cuda.to_device(np.ascontiguousarray(a))


def to_device(a):
    """A device copy of the host array ``a`` (a device array is returned as it is), for
    arguments that stay on the GPU across launches (:func:`persodose.mc.run._launch`)."""
    require_cuda()
    return _to_device(a)


def _device_stacks(stacks, n_chunks: int, depth: int):
    if stacks is not None and _is_device_array(stacks) and stacks.shape[0] >= n_chunks:
        return stacks
    return cuda.device_array((n_chunks, depth, 8), dtype=np.float64)


def _add_back(host, device_result) -> None:
    """Add a GPU tally into a host tally (row 0 when the host tally has a row per CPU thread)."""
    res = device_result.copy_to_host()
    if host.ndim == 2:
        host[0] += res
    else:
        host += res


def _run(name: str, n_chunks: int, args: tuple, edep, ctr, stacks, stack_depth: int, threads_per_block: int) -> None:
    """Launch kernel ``name`` with one thread per chunk and add its tallies to ``edep``/``ctr``.

    ``args`` are the kernel's arguments before the tallies: numpy arrays are copied to the
    device, device arrays and scalars are passed as they are.
    """
    kernel = _kernels()[name]
    if n_chunks == 0:
        return
    d_edep = cuda.to_device(np.zeros(edep.shape[-1]))
    d_ctr = cuda.to_device(np.zeros(C_N))
    d_args = tuple(_to_device(a) if isinstance(a, np.ndarray) or _is_device_array(a) else a for a in args)
    tpb = max(1, min(int(threads_per_block), n_chunks))
    kernel[math.ceil(n_chunks / tpb), tpb](*d_args, d_edep, d_ctr, _device_stacks(stacks, n_chunks, stack_depth))
    cuda.synchronize()
    _add_back(edep, d_edep)
    _add_back(ctr, d_ctr)


def _geometry_physics(nz, ny, nx, sz, sy, sx, dens, mat, log_emin, inv_dlog, n_e, photon, majorant, compton_sf,
                      rayleigh_cum, x_nodes, electron, settings_f, range_rejection) -> tuple:
    """The geometry and physics arguments with the scalar types the kernels are compiled for."""
    return (int(nz), int(ny), int(nx), float(sz), float(sy), float(sx), dens, mat, float(log_emin), float(inv_dlog),
            int(n_e), photon, majorant, compton_sf, rayleigh_cum, x_nodes, electron, settings_f,
            bool(range_rejection))


def run_decays_cuda(seed, stream0, decays_per_chunk, src_index, src_cdf, nz, ny, nx, sz, sy, sx, dens, mat,
                    local_mev, beta_yields, beta_minus_e, beta_minus_cdf, beta_plus_e, beta_plus_cdf,
                    line_kind, line_e, line_cum, line_total,
                    log_emin, inv_dlog, n_e, photon, majorant, compton_sf, rayleigh_cum, x_nodes, electron,
                    settings_f, range_rejection, edep, ctr, stacks=None, *,
                    stack_depth: int = GPU_STACK_DEPTH, threads_per_block: int = THREADS_PER_BLOCK) -> None:
    """CUDA twin of :func:`persodose.mc.transport.run_decays` (same arguments, same streams).

    One CUDA thread per chunk ``c`` of ``decays_per_chunk``, seeded with
    ``seed_state(state, seed, stream0 + c)`` as on the CPU.

    Args:
        edep: host float64 tally, (n_vox,) or the CPU workspace's (n_threads, n_vox); the
            GPU's energy (MeV) is ADDED to it (to row 0 of a 2-D tally).
        ctr: host float64 counters, (C_N,) or (n_threads, C_N); added likewise.
        stacks: ignored unless a CUDA device array of at least (n_chunks, depth, 8) (the
            CPU workspace's per-thread stacks do not fit one stack per chunk); else one of
            ``stack_depth`` entries per chunk is allocated on the device.
        Other arrays may be numpy arrays (copied to the device at each call) or CUDA device
        arrays (used as they are, e.g. tables moved to the device once per run).

    Raises:
        OptionalDependencyError: no CUDA device.
    """
    gp = _geometry_physics(nz, ny, nx, sz, sy, sx, dens, mat, log_emin, inv_dlog, n_e, photon, majorant,
                           compton_sf, rayleigh_cum, x_nodes, electron, settings_f, range_rejection)
    args = (np.uint64(seed), np.int64(stream0), decays_per_chunk, src_index, src_cdf, *gp[:8], float(local_mev),
            beta_yields, beta_minus_e, beta_minus_cdf, beta_plus_e, beta_plus_cdf, line_kind, line_e, line_cum,
            float(line_total), *gp[8:])
    _run("decays", int(np.shape(decays_per_chunk)[0]), args, edep, ctr, stacks, stack_depth, threads_per_block)


def run_particles_cuda(seed, stream0, per_chunk, kind, energy_e, energy_cdf, origin_xyz, direction_xyz, isotropic,
                       nz, ny, nx, sz, sy, sx, dens, mat,
                       log_emin, inv_dlog, n_e, photon, majorant, compton_sf, rayleigh_cum, x_nodes, electron,
                       settings_f, range_rejection, edep, ctr, stacks=None, *,
                       stack_depth: int = GPU_STACK_DEPTH, threads_per_block: int = THREADS_PER_BLOCK) -> None:
    """CUDA twin of :func:`persodose.mc.transport.run_particles` (same arguments, same streams).

    ``edep``, ``ctr`` and ``stacks`` as in :func:`run_decays_cuda`.

    Raises:
        OptionalDependencyError: no CUDA device.
    """
    gp = _geometry_physics(nz, ny, nx, sz, sy, sx, dens, mat, log_emin, inv_dlog, n_e, photon, majorant,
                           compton_sf, rayleigh_cum, x_nodes, electron, settings_f, range_rejection)
    args = (np.uint64(seed), np.int64(stream0), per_chunk, int(kind), energy_e, energy_cdf, origin_xyz,
            direction_xyz, bool(isotropic), *gp)
    _run("particles", int(np.shape(per_chunk)[0]), args, edep, ctr, stacks, stack_depth, threads_per_block)


def run_beam_cuda(seed, stream0, chunk_start, chunk_n, origins, directions, energies, nz, ny, nx, sz, sy, sx, dens,
                  mat, log_emin, inv_dlog, n_e, photon, majorant, compton_sf, rayleigh_cum, x_nodes, electron,
                  settings_f, range_rejection, edep, ctr, stacks=None, *,
                  stack_depth: int = GPU_STACK_DEPTH, threads_per_block: int = THREADS_PER_BLOCK) -> None:
    """CUDA twin of :func:`persodose.mc.transport.run_beam` (same arguments, same streams).

    Chunk ``c`` transports photons ``chunk_start[c] .. chunk_start[c] + chunk_n[c] - 1`` of
    ``origins``/``directions``/``energies`` (sampled on the host). ``edep``, ``ctr`` and
    ``stacks`` as in :func:`run_decays_cuda`.

    Raises:
        OptionalDependencyError: no CUDA device.
    """
    gp = _geometry_physics(nz, ny, nx, sz, sy, sx, dens, mat, log_emin, inv_dlog, n_e, photon, majorant,
                           compton_sf, rayleigh_cum, x_nodes, electron, settings_f, range_rejection)
    args = (np.uint64(seed), np.int64(stream0), chunk_start, chunk_n, origins, directions, energies, *gp)
    _run("beam", int(np.shape(chunk_start)[0]), args, edep, ctr, stacks, stack_depth, threads_per_block)
