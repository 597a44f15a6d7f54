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
from persodose.mc.transport import C_N, decay_chunk, deposit, particle_chunk

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
    decay_chunk(state, decays_per_chunk[c], src_index, src_cdf, nz, ny, nx, sz, sy, sx, dens, mat,
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
    """The CUDA kernels, built once per process."""
    if not _KERNELS:
        require_cuda()
        rng_functions = [_rng._rotl, _rng.splitmix64, _rng.seed_state, _rng.uniform]
        built = _retarget(rng_functions + list(_tr.PHYSICS_FUNCTIONS), {deposit: _atomic_deposit},
                          kernels=(_decays_kernel, _particles_kernel))
        _KERNELS["decays"] = built[_decays_kernel]
        _KERNELS["particles"] = built[_particles_kernel]
        _KERNELS["device_functions"] = built
    return _KERNELS


# ----------------------------------------------------------------------------- host side
def _is_device_array(a) -> bool:
    # __cuda_array_interface__: numba, CuPy, PyTorch...; copy_to_host: the CUDA simulator's arrays
    return not isinstance(a, np.ndarray) and (hasattr(a, "__cuda_array_interface__") or hasattr(a, "copy_to_host"))


def _to_device(a):
    if _is_device_array(a):
        return a
    return cuda.to_device(np.ascontiguousarray(a))


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


def _launch(kernel, n_chunks: int, threads_per_block: int, args) -> None:
    tpb = max(1, min(int(threads_per_block), n_chunks))
    kernel[math.ceil(n_chunks / tpb), tpb](*args)
    cuda.synchronize()


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
    k = _kernels()["decays"]
    n_chunks = int(np.shape(decays_per_chunk)[0])
    if n_chunks == 0:
        return
    d_edep = cuda.to_device(np.zeros(edep.shape[-1]))
    d_ctr = cuda.to_device(np.zeros(C_N))
    arrays = [_to_device(a) for a in (decays_per_chunk, src_index, src_cdf, dens, mat, beta_yields, beta_minus_e,
                                      beta_minus_cdf, beta_plus_e, beta_plus_cdf, line_kind, line_e, line_cum,
                                      photon, majorant, compton_sf, rayleigh_cum, x_nodes, electron, settings_f)]
    (d_per, d_si, d_sc, d_dens, d_mat, d_by, d_bme, d_bmc, d_bpe, d_bpc, d_lk, d_le, d_lc,
     d_ph, d_maj, d_csf, d_rc, d_xn, d_el, d_sf) = arrays
    args = (np.uint64(seed), np.int64(stream0), d_per, d_si, d_sc, int(nz), int(ny), int(nx), float(sz), float(sy),
            float(sx), d_dens, d_mat, float(local_mev), d_by, d_bme, d_bmc, d_bpe, d_bpc, d_lk, d_le, d_lc,
            float(line_total), float(log_emin), float(inv_dlog), int(n_e), d_ph, d_maj, d_csf, d_rc, d_xn, d_el, d_sf,
            bool(range_rejection), d_edep, d_ctr, _device_stacks(stacks, n_chunks, stack_depth))
    _launch(k, n_chunks, threads_per_block, args)
    _add_back(edep, d_edep)
    _add_back(ctr, d_ctr)


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
    k = _kernels()["particles"]
    n_chunks = int(np.shape(per_chunk)[0])
    if n_chunks == 0:
        return
    d_edep = cuda.to_device(np.zeros(edep.shape[-1]))
    d_ctr = cuda.to_device(np.zeros(C_N))
    (d_per, d_ee, d_ec, d_o, d_d, d_dens, d_mat, d_ph, d_maj, d_csf, d_rc, d_xn, d_el, d_sf) = [
        _to_device(a) for a in (per_chunk, energy_e, energy_cdf, origin_xyz, direction_xyz, dens, mat, photon,
                                majorant, compton_sf, rayleigh_cum, x_nodes, electron, settings_f)]
    args = (np.uint64(seed), np.int64(stream0), d_per, int(kind), d_ee, d_ec, d_o, d_d, bool(isotropic),
            int(nz), int(ny), int(nx), float(sz), float(sy), float(sx), d_dens, d_mat, float(log_emin),
            float(inv_dlog), int(n_e), d_ph, d_maj, d_csf, d_rc, d_xn, d_el, d_sf, bool(range_rejection),
            d_edep, d_ctr, _device_stacks(stacks, n_chunks, stack_depth))
    _launch(k, n_chunks, threads_per_block, args)
    _add_back(edep, d_edep)
    _add_back(ctr, d_ctr)
