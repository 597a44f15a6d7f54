"""Running a problem: one batch (:func:`run_batch`), the batch loop (:func:`run_batches`), and runs.

A run is split into ``n_batches`` independent batches, each seeded from ``(seed, batch)``
and made of chunks with their own random streams. :func:`run_batch` is a pure function of
``(problem, batch_index)``; :func:`run_batches` is the one loop that runs, in this process,
the batches of any problem (decays, point sources, beams; on the CPU or CUDA backend) not
yet in a tally, adds them in batch order, and after every batch saves the checkpoint, calls
the per-batch hook and reports progress (:class:`BatchLog`, which the Dask loop of
:mod:`persodose.mc.distributed` uses as well). :func:`simulate_decays`,
:func:`simulate_point_source` and :func:`simulate_beam` build a problem and run it through it.

Target uncertainty: given an :class:`~persodose.mc.tally.UncertaintyTarget`, the loop checks
the criterion before each batch (once ``min_batches`` are in) and stops when it is met; the
problem's primaries and batches are then the limit. As batch ``b`` depends only on
``(seed, b)``, a run stopped after ``k`` batches holds exactly the first ``k`` batches of the
full run (and can be resumed to more). When the limit comes first a
:class:`TargetNotMetWarning` says so and the results stand.

Absorbed dose: ``D = E_dep / m`` with ``E_dep`` in J (1 MeV = 1.602176634e-13 J, exact SI)
and ``m = rho V``. Per decay for a unit source, absolute with the number of decays of a
time-integrated activity (1 Bq s = 1 decay).
"""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from persodose.grid import Grid, Kind
from persodose.mc import transport as tr
from persodose.mc.phantom import VoxelPhantom
from persodose.mc.primaries import BatchPlan
from persodose.mc.problem import MCProblem, beam_problem, decay_problem, point_source_problem
from persodose.mc.settings import MCSettings
from persodose.mc.tables import TransportTables
from persodose.errors import InputError
from persodose.mc.tally import BatchResult, MCResult, Tally, TargetOutcome, UncertaintyTarget
from persodose.physics.constants import MEV_TO_J

#: Progress callback: ``(batches of this seed done, batches of the run)``.
Progress = Callable[[int, int], Any]
#: Per-batch hook: called with each :class:`BatchResult` once it is in the tally.
BatchHook = Callable[[BatchResult], Any]

#: Batches of a run with a target uncertainty when the caller does not choose: more, smaller
#: batches than a fixed run (10), so that the run can stop close to the target.
TARGET_BATCHES = 50


class TargetNotMetWarning(UserWarning):
    """A run with a target uncertainty reached its limit of primaries first (its results stand)."""


class TargetMonitor:
    """A target uncertainty bound to a problem and its tally: is it met, and how did the run end.

    Registers the target's region with the tally (its per-batch energies are kept, and saved
    with the checkpoint), so that the region's uncertainty comes from the batches' sums.

    Raises:
        InputError: the run has fewer batches than the target's ``min_batches``, the resumed
            tally lacks the region's sums.
        GeometryError: the region mask is of another grid.
    """

    def __init__(self, problem: MCProblem, tally: Tally, target: UncertaintyTarget):
        if problem.n_batches < int(target.min_batches):
            raise InputError(f"a target uncertainty needs at least {target.min_batches} batches; the run has "
                             f"{problem.n_batches} (give more batches)")
        self.problem, self.tally, self.target = problem, tally, target
        if target.region_mask is not None:
            tally.track_region(target.region_key, target.region_mask)

    def achieved(self) -> float:
        return self.target.achieved(self.tally, self.problem.density_g_cm3)

    def met(self) -> bool:
        """True once ``min_batches`` are in and the criterion is at or below the target."""
        if self.tally.n_batches < int(self.target.min_batches):
            return False
        return self.achieved() <= self.target.relative

    def outcome(self) -> TargetOutcome:
        t, p = self.target, self.problem
        return TargetOutcome(target=float(t.relative), achieved=float(self.achieved()), met=self.met(),
                             metric=t.metric(), region=t.region_name,
                             above_fraction=None if t.region_mask is not None else float(t.above_fraction),
                             n_batches=int(self.tally.n_batches), n_primaries=int(self.tally.n_primaries),
                             batches_limit=int(p.n_batches), primaries_limit=int(p.n_primaries),
                             min_batches=int(t.min_batches))

    def finish(self, run: dict, what: str = "primaries") -> TargetOutcome:
        """Put the outcome in ``run`` (``run["target"]``); warn when the target was not met."""
        out = self.outcome()
        run["target"] = out.record()
        if not out.met:
            warnings.warn(out.summary(what), TargetNotMetWarning, stacklevel=3)
        return out


class _Workspace:
    """Per-thread tallies and particle stacks, reused across batches."""

    def __init__(self, n_vox: int, n_threads: int | None = None):
        import numba

        self.n_threads = int(n_threads or numba.get_num_threads())
        self.edep = np.zeros((self.n_threads, n_vox))
        self.ctr = np.zeros((self.n_threads, tr.C_N))
        self.stacks = np.zeros((self.n_threads, tr.STACK_SIZE, 8))

    def fits(self, n_vox: int, n_threads: int) -> bool:
        return self.n_threads == n_threads and self.edep.shape[1] == n_vox

    def reset(self) -> None:
        self.edep[:] = 0.0
        self.ctr[:] = 0.0


#: One batch at a time per process: a Dask worker running several tasks at once must not
#: start several parallel kernels (oversubscription; some Numba threading layers also
#: refuse concurrent launches).
_KERNEL_LOCK = threading.Lock()


#: The kernels of each source kind (:attr:`persodose.mc.primaries.DecaySource.kernel`, ...).
_CPU_KERNELS = {"decays": "run_decays", "particles": "run_particles", "beam": "run_beam"}
_CUDA_KERNELS = {"decays": "run_decays_cuda", "particles": "run_particles_cuda", "beam": "run_beam_cuda"}


def _launch(problem: MCProblem, ws: _Workspace, batch: BatchPlan) -> None:
    """Run the kernel of ``problem``'s source on ``batch``, on the settings' backend, into ``ws``."""
    geometry, physics = problem.static_args()
    kernel = problem.source.kernel
    args = problem.source.kernel_args(batch, geometry, physics)
    if problem.settings.backend == "cuda":
        from persodose.mc import gpu

        gpu.require_cuda()
        resident = _device_resident(problem, gpu)
        args = tuple(resident.get(id(a), a) if isinstance(a, np.ndarray) else a for a in args)
        getattr(gpu, _CUDA_KERNELS[kernel])(*args, ws.edep, ws.ctr)
    else:
        getattr(tr, _CPU_KERNELS[kernel])(*args, ws.edep, ws.ctr, ws.stacks)


def _device_resident(problem: MCProblem, gpu) -> dict:
    """``id(host array) -> device copy`` of the arrays every batch of ``problem`` passes unchanged
    (geometry, physics tables, the source's arrays and decay tables), copied to the GPU once per
    problem and process instead of at every launch (a 128^3 phantom's density, materials and
    source CDF alone are about 50 MB). Kept in the problem's per-process cache
    (:meth:`MCProblem.__getstate__` leaves it out), so the host arrays it is keyed by stay alive."""
    cached = problem.__dict__.get("_cuda_resident")
    if cached is not None:
        return cached
    groups = (*problem.static_args(), *problem.source.arg_groups())
    resident = {id(a): gpu.to_device(a) for g in groups for a in g if isinstance(a, np.ndarray)}
    problem.__dict__["_cuda_resident"] = resident  # frozen dataclass: a per-process cache
    return resident


def run_batch(problem: MCProblem, batch_index: int, *, n_threads: int | None = None,
              workspace: _Workspace | None = None) -> BatchResult:
    """Simulate one batch of a problem: a pure function of ``(problem, batch_index)``.

    Batch ``b`` simulates ``problem.primaries_per_batch[b]`` primaries split over
    ``chunks_per_batch`` chunks; chunk ``c`` draws from the random stream
    ``(seed, b * chunks_per_batch + c)`` (:mod:`persodose.mc.rng`), so the particles
    simulated depend only on the seed and the batch index, never on where or when the
    batch runs. Run with one Numba thread the result is bitwise identical everywhere
    (same library versions and CPU); with more threads the chunks' deposits are summed
    per thread in an order that depends on scheduling, which changes the result only by
    floating-point rounding (relative ~1e-15).

    Args:
        problem: from :func:`decay_problem`, :func:`point_source_problem` or :func:`beam_problem`.
        batch_index: 0 <= b < n_batches.
        n_threads: Numba threads for this batch (default: the process's setting; capped
            at ``NUMBA_NUM_THREADS``).
        workspace: per-thread buffers to reuse between batches (optional).

    Returns:
        :class:`BatchResult` with energies and counters per primary.

    Raises:
        InputError: no such batch.
    """
    import numba

    batch = problem.batch_plan(batch_index)
    n = int(problem.primaries_per_batch[batch.index])
    with _KERNEL_LOCK:
        previous = numba.get_num_threads()
        if n_threads is not None:
            numba.set_num_threads(max(1, min(int(n_threads), numba.config.NUMBA_NUM_THREADS)))
        try:
            # the GPU adds its tally into row 0: one row, not one per CPU thread to zero and sum
            used = 1 if problem.settings.backend == "cuda" else numba.get_num_threads()
            width = problem.tally_width()
            ws = workspace if workspace is not None and workspace.fits(width, used) else None
            ws = ws or _Workspace(width, used)
            ws.reset()
            t0 = time.perf_counter()
            _launch(problem, ws, batch)
            seconds = time.perf_counter() - t0
        finally:
            numba.set_num_threads(previous)
    edep = ws.edep.sum(axis=0) / n
    ctr = ws.ctr.sum(axis=0) / n
    control = None
    if problem.control_variate:  # the control variate's expectation (transport.decay_chunk)
        part = problem.control_part()
        edep, taken = edep[:problem.n_voxels].copy(), edep[problem.n_voxels:]
        edep += part
        control = taken - part  # D: what was taken back less its expectation (the plain estimate is C + D)
        ctr[tr.C_DEPOSITED] += float(part.sum())
        ctr[tr.C_EMITTED] += float(part.sum())
    return BatchResult(problem.batch_id(batch.index), edep, ctr, n, used, seconds, socket.gethostname(), control)


def warm_up(problem: MCProblem) -> float:
    """Compile (or load from Numba's cache) the kernel that ``problem`` uses; returns seconds.

    Runs one primary through a copy of the problem. The kernels are compiled with
    ``cache=True``: once one process has compiled them on a machine, other processes
    (Dask workers included) load the machine code from the cache in about a second.
    """
    t0 = time.perf_counter()
    tiny = dataclasses.replace(problem, primaries_per_batch=np.ones(problem.n_batches, dtype=np.int64))
    run_batch(tiny, 0, n_threads=1)
    return time.perf_counter() - t0


# --------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------

def _done_of_seed(tally: Tally, seed: int) -> int:
    return sum(1 for b in tally.batch_ids if int(b[0]) == int(seed))


class BatchLog:
    """What follows the addition of a batch to the tally, in every loop (here and on Dask).

    After each batch, in this order: the batch is counted and recorded (provenance), the
    tally is saved to ``checkpoint`` (so a hook or progress callback that raises leaves the
    batch saved), ``on_batch(result)`` is called, then ``progress(done, total)``.
    """

    def __init__(self, problem: MCProblem, tally: Tally, *, checkpoint: str | Path | None = None,
                 progress: Progress | None = None, on_batch: BatchHook | None = None):
        self.problem, self.tally = problem, tally
        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.progress, self.on_batch = progress, on_batch
        self.n_new = 0
        self.records: list[dict] = []

    def added(self, result: BatchResult) -> None:
        """Book ``result``, already added to the tally."""
        self.n_new += result.n_primaries
        self.records.append(result.record())
        if self.checkpoint is not None:
            self.tally.save(self.checkpoint)
        if self.on_batch is not None:
            self.on_batch(result)
        if self.progress is not None:
            self.progress(_done_of_seed(self.tally, self.problem.seed), self.problem.n_batches)

    def run(self, seconds: float, backend: dict) -> dict:
        """The description of the run: primaries simulated now, wall time, batch records, backend."""
        return {"n_new": self.n_new, "seconds": seconds, "records": self.records, "backend": backend}


def run_batches(problem: MCProblem, tally: Tally | None = None, *, progress: Progress | None = None,
                checkpoint: str | Path | None = None, on_batch: BatchHook | None = None,
                n_threads: int | None = None, target: UncertaintyTarget | None = None) -> tuple[Tally, dict]:
    """Run, in this process, the batches of ``problem`` not yet in ``tally``, adding them in batch order.

    The one loop of every in-process run, whatever the source kind or backend. With a
    ``target`` it stops before the next batch once the target uncertainty is met (module
    docstring); a resumed tally that already meets it runs no batch.

    Args:
        problem: from :func:`decay_problem`, :func:`point_source_problem` or :func:`beam_problem`.
        tally: batches already done (resume; updated in place); default an empty tally.
        progress: callable ``(batches_done, batches_total)`` after each batch.
        checkpoint: a ``.npz`` file the tally is saved to after each batch.
        on_batch: per-batch hook, called with each :class:`BatchResult` (see :class:`BatchLog`).
        n_threads: Numba threads per batch (see :func:`run_batch`).
        target: stop once this uncertainty is met (:class:`~persodose.mc.tally.UncertaintyTarget`);
            the problem's primaries and batches are then the limit.

    Returns:
        ``(tally, run)``: ``run`` holds ``n_new`` (primaries simulated now), ``seconds``
        (wall time), ``records`` (one per batch run), ``backend`` (for provenance) and, with
        a target, ``target`` (:meth:`~persodose.mc.tally.TargetOutcome.record`).

    Raises:
        GeometryError: ``tally`` was made on another grid.
        InputError: a target with fewer batches than its ``min_batches``.

    Warns:
        TargetNotMetWarning: the limit was reached before the target.
    """
    import numba

    tally = problem.check_tally(tally if tally is not None else problem.empty_tally())
    monitor = TargetMonitor(problem, tally, target) if target is not None else None
    log = BatchLog(problem, tally, checkpoint=checkpoint, progress=progress, on_batch=on_batch)
    ws = _Workspace(problem.tally_width(), min(int(n_threads), numba.config.NUMBA_NUM_THREADS) if n_threads else None)
    t0 = time.perf_counter()
    for b in problem.pending(tally):
        if monitor is not None and monitor.met():
            break
        res = run_batch(problem, b, n_threads=n_threads, workspace=ws)
        tally.add(res)
        log.added(res)
    seconds = time.perf_counter() - t0
    run = log.run(seconds, backend_info(problem.settings))
    if monitor is not None:
        monitor.finish(run, _primary_word(problem))
    return tally, run


def _primary_word(problem: MCProblem) -> str:
    """What one primary is, for messages: decays, particles or photons."""
    return {"decays": "decays", "particles": "particles", "beam": "photons"}.get(problem.source.kernel, "primaries")


def _numba_backend(n_threads: int | None = None) -> dict:
    import numba

    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        layer = None
    return {"name": "numba-cpu", "numba_threads": int(n_threads or numba.get_num_threads()),
            "threading_layer": layer, "host": socket.gethostname()}


def backend_info(settings: MCSettings) -> dict:
    """What ran a problem's batches (for provenance): the Numba CPU threads, or the CUDA device."""
    if settings.backend == "cuda":
        from persodose.mc import gpu

        return {**gpu.device_info(), "chunks_per_batch": int(settings.chunks_per_batch),
                "host": socket.gethostname()}
    return _numba_backend()


def _finish(phantom: VoxelPhantom, tally: Tally, settings: MCSettings, seconds: float, n_new: int,
            total_decays: float | None, info: dict) -> MCResult:
    shape = phantom.density.shape
    e_mev = tally.mean_mev().reshape(shape)
    negative = e_mev < 0
    if negative.any():
        # only the decays' control variate gives a negative mean: a voxel whose own decays sent
        # more energy out than its expectation returned, its uncertainty beyond 100 % (inf in the
        # uncertainty map). A dose map is not negative: such voxels are set to 0 and counted.
        e_mev = np.where(negative, 0.0, e_mev)
        info = {**info, "negative_voxels_set_to_zero": int(negative.sum())}
    dose_pp = e_mev * MEV_TO_J / phantom.mass_kg
    geo = phantom.density
    e_grid = geo.with_array(e_mev.astype(np.float32), Kind.SCALAR, unit="MeV per primary")
    d_grid = geo.with_array(dose_pp, Kind.DOSE, unit="Gy per primary")
    dose_abs = geo.with_array((dose_pp * total_decays).astype(np.float32), Kind.DOSE) if total_decays else None
    unc = geo.with_array(tally.relative_uncertainty().reshape(shape).astype(np.float32), Kind.SCALAR,
                         unit="relative standard uncertainty")
    if seconds > 0:
        rate = n_new / seconds
    else:
        rate = 0.0 if n_new == 0 else float("inf")
    return MCResult(e_grid, d_grid, dose_abs, unc, tally, tally.energy_balance(), seconds, rate, settings, info)


def decay_info(problem: MCProblem, tally: Tally) -> dict:
    """The ``info`` of a decay run's :class:`MCResult` (without backend details)."""
    return problem.source.describe(tally.n_primaries)


def result_of(phantom: VoxelPhantom, problem: MCProblem, tally: Tally, run: dict) -> MCResult:
    """The :class:`MCResult` of a run of ``problem`` (``run`` from :func:`run_batches` or the Dask loop)."""
    info = problem.source.describe(tally.n_primaries)
    info.update(backend=run["backend"], batches=run["records"])
    if problem.control_variate:
        dens, _ = problem.control_thresholds()
        plain = tally.plain_voxels()
        info["control_variate"] = {"density_min_g_cm3": float(dens), "min_decays": float(tally.control_min_decays),
                                   "decays_of_the_rule": int(tally.n_primaries),
                                   "activity_share_min": float(problem.control_share_min(tally.n_primaries)),
                                   "plain_voxels": int(np.count_nonzero(plain & (tally.control_share > 0)))
                                   if plain is not None else 0}
    if run.get("target") is not None:
        info["target"] = run["target"]
    return _finish(phantom, tally, problem.settings, run["seconds"], run["n_new"], problem.source.total_decays, info)


def _simulate(phantom: VoxelPhantom, problem: MCProblem, resume: Tally | None, checkpoint: str | Path | None,
              progress: Progress | None, on_batch: BatchHook | None, target: UncertaintyTarget | None) -> MCResult:
    tally, run = run_batches(problem, resume, progress=progress, checkpoint=checkpoint, on_batch=on_batch,
                             target=target)
    return result_of(phantom, problem, tally, run)


def default_settings(settings: MCSettings | None, target: UncertaintyTarget | None) -> MCSettings:
    """``settings``, or the defaults: :data:`TARGET_BATCHES` batches with a target, else :class:`MCSettings`'s."""
    if settings is not None:
        return settings
    return MCSettings(n_batches=TARGET_BATCHES) if target is not None else MCSettings()


def simulate_decays(phantom: VoxelPhantom, source: Grid, nuclide: str, n_decays: int,
                    settings: MCSettings | None = None, tables: TransportTables | None = None,
                    resume: Tally | None = None, checkpoint: str | Path | None = None,
                    progress: Progress | None = None, *, on_batch: BatchHook | None = None,
                    target: UncertaintyTarget | None = None) -> MCResult:
    """Simulate ``n_decays`` decays of ``nuclide`` spread like ``source`` in ``phantom``.

    Args:
        phantom: density and materials.
        source: activity, activity concentration or time-integrated activity on the
            phantom's geometry (any non-negative weights; a TIA in Bq s also gives the
            absolute dose).
        nuclide: any ICRP-107 nuclide name.
        n_decays: decays to simulate in all batches (the most, with a ``target``).
        settings: batches (the most, with a ``target``), seed, transport settings; default
            :class:`MCSettings` (:data:`TARGET_BATCHES` batches with a ``target``).
        tables: prebuilt tables (must match ``settings.transport`` and the phantom's materials).
        resume: a tally from an interrupted run with the same settings; its batches are kept
            (it is updated in place).
        checkpoint: a ``.npz`` file the tally is saved to after every batch.
        progress: callable ``(batches_done, batches_total)``.
        on_batch: called with each :class:`BatchResult` once it is in the tally.
        target: stop once this uncertainty is met (:class:`~persodose.mc.tally.UncertaintyTarget`);
            how the run ended is in ``info["target"]`` and the provenance.

    Returns:
        :class:`MCResult`; ``dose_gy`` is absolute when ``source`` is a TIA (Bq s).

    Warns:
        TargetNotMetWarning: the limit was reached before the target.

    Raises:
        InputError, GeometryError, MaterialError, NuclideError for bad input.
    """
    problem = decay_problem(phantom, source, nuclide, n_decays, default_settings(settings, target), tables)
    return _simulate(phantom, problem, resume, checkpoint, progress, on_batch, target)


def simulate_point_source(phantom: VoxelPhantom, particle: str, energy_mev: float | tuple[np.ndarray, np.ndarray],
                          n_particles: int, position_xyz_mm: Sequence[float] | None = None,
                          direction_xyz: Sequence[float] | None = None, settings: MCSettings | None = None,
                          tables: TransportTables | None = None, *, resume: Tally | None = None,
                          checkpoint: str | Path | None = None, progress: Progress | None = None,
                          on_batch: BatchHook | None = None, target: UncertaintyTarget | None = None) -> MCResult:
    """Particles of one kind from a point: isotropic, or a pencil beam along ``direction_xyz``.

    Args:
        particle: ``"photon"``, ``"electron"`` or ``"positron"``.
        energy_mev: a single energy, or ``(energies, weights)`` of a spectrum (histogram
            nodes and their relative densities, interpolated linearly).
        position_xyz_mm: position in mm from the grid's corner in the (x, y, z) index axes;
            default the centre of the grid.
        direction_xyz: unit vector in the (x, y, z) index axes for a pencil beam.
        resume, checkpoint, progress, on_batch, target: as in :func:`simulate_decays`.
    """
    problem = point_source_problem(phantom, particle, energy_mev, n_particles, position_xyz_mm, direction_xyz,
                                   default_settings(settings, target), tables)
    return _simulate(phantom, problem, resume, checkpoint, progress, on_batch, target)


def simulate_beam(phantom: VoxelPhantom, sampler, n_photons: int, settings: MCSettings | None = None,
                  tables: TransportTables | None = None, progress: Progress | None = None, *,
                  resume: Tally | None = None, checkpoint: str | Path | None = None,
                  on_batch: BatchHook | None = None, target: UncertaintyTarget | None = None) -> MCResult:
    """Transport photons from external sources through ``phantom``.

    Args:
        sampler: see :class:`persodose.mc.primaries.BeamSource`.
        resume, checkpoint, progress, on_batch, target: as in :func:`simulate_decays`.

    Returns:
        :class:`MCResult` per source photon: ``energy_per_primary_mev`` and
        ``dose_per_primary_gy`` (Gy per photon emitted by the sampler).
    """
    problem = beam_problem(phantom, sampler, n_photons, default_settings(settings, target), tables)
    return _simulate(phantom, problem, resume, checkpoint, progress, on_batch, target)
