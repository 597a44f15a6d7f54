"""Monte Carlo batches on a Dask distributed cluster.

The batches of a run (:func:`persodose.mc.engine.run_batch`) are independent and seeded by
``(seed, batch)``, so they can run anywhere: this module sends them to the workers of a
``dask.distributed`` cluster (a :class:`~distributed.LocalCluster` of processes on this
machine by default) and adds the results into a :class:`~persodose.mc.engine.Tally` in
batch order, so that the tally does not depend on which worker finished first and equals
that of :func:`persodose.mc.engine.simulate_decays` with the same seed (bitwise with one
Numba thread per batch, otherwise up to the rounding of per-thread sums).

Needs the optional dependency ``dask[distributed]``.

Target uncertainty: with a ``target`` the batches are submitted a few at a time (two per
worker in flight) and added in batch order; once the target is met no further batch is
added (those still running are cancelled and their results, if any, dropped), so the tally
is the first ``k`` batches, as in the in-process loop.

Threads: every worker process runs one batch at a time (a worker resource on the clusters
started here, and a lock in :func:`run_batch` everywhere), with as many Numba threads as
the worker has threads, so ``n_workers * threads_per_worker`` threads run in all.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from persodose.errors import InputError
from persodose.grid import Grid
from persodose.mc.phantom import VoxelPhantom
from persodose.mc.problem import MCProblem, decay_problem
from persodose.mc.run import BatchLog, TargetMonitor, _primary_word, default_settings, result_of, run_batch, warm_up
from persodose.mc.settings import MCSettings
from persodose.mc.tables import TransportTables
from persodose.mc.tally import BatchResult, MCResult, Tally, UncertaintyTarget

#: Worker resource held by a running batch on the clusters this module starts (one per worker).
MC_RESOURCE = "persodose_mc"


def _distributed():
    try:
        import distributed
    except ImportError:
        raise InputError("Monte Carlo on a Dask cluster needs dask[distributed]: "
                         "pip install 'dask[distributed]'") from None
    return distributed


def start_local_cluster(n_workers: int | None = None, threads_per_worker: int | None = None,
                        **cluster_kwargs: Any):
    """Start a :class:`distributed.LocalCluster` of worker processes set up for the engine.

    Each worker gets one unit of the :data:`MC_RESOURCE` resource, so that it runs one
    batch at a time; the batches it runs use ``threads_per_worker`` Numba threads
    (``numba.set_num_threads`` in the task). ``NUMBA_NUM_THREADS`` is deliberately not
    set through the nanny's ``env``: that is applied after the worker process has
    started, and a script that imports Numba at module level (re-imported by the
    ``spawn`` start method) would then see two pool sizes and fail.

    Worker processes are spawned: a script calling this must guard its top level with
    ``if __name__ == "__main__":``.

    Args:
        n_workers: worker processes (default: ``os.cpu_count() // threads_per_worker``).
        threads_per_worker: threads of each worker, also its Numba threads (default 1).
        **cluster_kwargs: passed on to ``LocalCluster`` (e.g. ``dashboard_address=":8787"``,
            ``memory_limit``); the HTTP server takes a free port unless asked for.

    Returns:
        A connected ``distributed.Client``; close it with :func:`close_cluster`.
    """
    distributed = _distributed()
    cpus = os.cpu_count() or 1
    tpw = max(1, int(threads_per_worker or 1))
    nw = max(1, int(n_workers or max(1, cpus // tpw)))
    resources = dict(cluster_kwargs.pop("resources", None) or {})
    resources.setdefault(MC_RESOURCE, 1)
    cluster_kwargs.setdefault("dashboard_address", ":0")
    cluster = distributed.LocalCluster(n_workers=nw, threads_per_worker=tpw, processes=True,
                                       resources=resources, **cluster_kwargs)
    try:
        return distributed.Client(cluster)
    except BaseException:
        cluster.close()
        raise


def close_cluster(client) -> None:
    """Close a client from :func:`start_local_cluster` and its cluster."""
    cluster = getattr(client, "cluster", None)
    client.close()
    if cluster is not None:
        cluster.close()


def _batch_task(problem: MCProblem, batch_index: int, numba_threads: int | None) -> BatchResult:
    """What a worker runs: :func:`run_batch` with the worker's share of Numba threads."""
    import dataclasses

    from distributed import get_worker

    try:
        worker = get_worker()
    except ValueError:  # run outside a worker (tests, debugging)
        worker = None
    if numba_threads is None and worker is not None:
        numba_threads = int(worker.state.nthreads)
    res = run_batch(problem, batch_index, n_threads=numba_threads)
    if worker is not None:
        res = dataclasses.replace(res, host=f"{res.host} {worker.address}")
    return res


class _InOrder:
    """Adds batch results into a tally in ascending batch order, whatever order they arrive in.

    Results that arrive early wait (at most the ones ahead of the next expected batch),
    so the floating-point sums of the tally are formed in the same order as in the
    in-process loop.
    """

    def __init__(self, pending: list[int], tally: Tally, on_add: Callable[[BatchResult], Any] | None = None,
                 stop: Callable[[], bool] | None = None):
        self.order = sorted(pending)
        self.tally = tally
        self.on_add = on_add
        self.stop = stop  #: checked before each addition: True ends the run (a target met)
        self.stopped = False
        self.waiting: dict[int, BatchResult] = {}
        self.next = 0

    def put(self, batch_index: int, result: BatchResult) -> None:
        if batch_index not in self.order[self.next:] or batch_index in self.waiting:
            raise InputError(f"batch {batch_index} was not expected")
        self.waiting[batch_index] = result
        while self.next < len(self.order) and self.order[self.next] in self.waiting:
            if self.stop is not None and self.stop():
                self.stopped = True
                return
            res = self.waiting.pop(self.order[self.next])
            self.tally.add(res)
            self.next += 1
            if self.on_add is not None:
                self.on_add(res)

    @property
    def complete(self) -> bool:
        return self.next == len(self.order)


def run_problem_dask(problem: MCProblem, tally: Tally | None = None, *, client=None, n_workers: int | None = None,
                     threads_per_worker: int | None = None, checkpoint: str | Path | None = None,
                     progress: Callable[[int, int], Any] | None = None,
                     on_batch: Callable[[BatchResult], Any] | None = None,
                     target: UncertaintyTarget | None = None) -> tuple[Tally, dict]:
    """Run the batches of ``problem`` not yet in ``tally`` on a Dask cluster.

    The problem is scattered to the workers once, one task per missing batch is
    submitted, and results are gathered as they complete and added into the tally in
    batch order; after each addition the same :class:`~persodose.mc.run.BatchLog` as the
    in-process loop (:func:`~persodose.mc.run.run_batches`) saves the tally to
    ``checkpoint``, calls ``on_batch`` and reports ``progress``.

    Args:
        problem: from :func:`~persodose.mc.engine.decay_problem`,
            :func:`~persodose.mc.engine.point_source_problem` or
            :func:`~persodose.mc.engine.beam_problem`.
        tally: batches already done (resume); default an empty tally.
        client: a ``distributed.Client``; default: start a local cluster for this run
            (:func:`start_local_cluster` with ``n_workers`` and ``threads_per_worker``)
            and close it afterwards.
        n_workers, threads_per_worker: for the local cluster (defaults: one worker per
            missing batch up to the CPU count; the cores shared among the workers).
        checkpoint: ``.npz`` file for the tally after every batch.
        progress: callable ``(batches_done, batches_total)``.
        on_batch: called with each :class:`~persodose.mc.tally.BatchResult` once it is in the tally.
        target: stop once this uncertainty is met (module docstring; as
            :func:`~persodose.mc.run.run_batches`).

    Returns:
        ``(tally, run)``: ``run`` holds ``n_new`` (primaries simulated now), ``seconds``
        (wall time from submission to the last result), ``records`` (one per batch run),
        ``backend`` (a description for provenance) and, with a target, ``target``.
    """
    tally = problem.check_tally(tally if tally is not None else problem.empty_tally())
    monitor = TargetMonitor(problem, tally, target) if target is not None else None
    pending = problem.pending(tally)
    backend: dict = {"name": "dask.distributed"}
    log = BatchLog(problem, tally, checkpoint=checkpoint, progress=progress, on_batch=on_batch)
    if not pending or (monitor is not None and monitor.met()):
        backend["note"] = ("all batches were already in the tally" if not pending else
                           "the tally already met the target") + "; no cluster was used"
        run = log.run(0.0, backend)
        if monitor is not None:
            monitor.finish(run, _primary_word(problem))
        return tally, run
    distributed = _distributed()
    backend["distributed_version"] = distributed.__version__
    # Compile (or load) the kernel here first: the workers then load it from Numba's cache
    # instead of each compiling it from scratch.
    backend["warm_up_s"] = warm_up(problem)
    own = client is None
    t_start = time.perf_counter()
    numba_threads = None  # on a client's cluster: the threads of the worker that runs the batch
    if own:
        cpus = os.cpu_count() or 1
        nw = int(n_workers or min(len(pending), cpus))
        numba_threads = int(threads_per_worker or max(1, cpus // max(nw, 1)))
        client = start_local_cluster(nw, numba_threads)
    try:
        backend["cluster_start_s"] = time.perf_counter() - t_start if own else 0.0
        adder = _InOrder(pending, tally, log.added, monitor.met if monitor is not None else None)
        seconds = _run_on(client, own, problem, pending, numba_threads, adder, backend)
        run = log.run(seconds, backend)
        backend["numba_threads"] = sorted({r["n_threads"] for r in run["records"]})
        if monitor is not None:
            monitor.finish(run, _primary_word(problem))
        return tally, run
    finally:
        if own:
            close_cluster(client)


def _run_on(client, own: bool, problem: MCProblem, pending: list[int], numba_threads: int | None,
            adder: _InOrder, backend: dict) -> float:
    """Submit the pending batches to ``client``'s cluster and feed their results to ``adder``.

    Describes the cluster (``own``: started for this run) in ``backend``; returns the wall
    time from submission to the last result.
    """
    distributed = _distributed()
    workers = client.scheduler_info().get("workers", {})
    use_resource = bool(workers) and all(MC_RESOURCE in (w.get("resources") or {}) for w in workers.values())
    backend.update(scheduler=str(client.scheduler.address), local_cluster=own, n_workers=len(workers),
                   threads_per_worker=sorted({int(w.get("nthreads", 0)) for w in workers.values()}),
                   one_batch_per_worker=use_resource)
    futures: dict = {}
    try:
        t0 = time.perf_counter()
        shared = client.scatter(problem, broadcast=True, hash=False)
        tag = uuid.uuid4().hex[:8]
        extra = {"resources": {MC_RESOURCE: 1}} if use_resource else {}
        todo = iter(pending)

        def submit_next():
            b = next(todo, None)
            if b is None:
                return None
            fut = client.submit(_batch_task, shared, b, numba_threads, key=f"persodose-mc-{problem.seed}-{b}-{tag}",
                                pure=False, **extra)
            futures[fut] = b
            return fut

        # all at once, or with a target a window of two per worker (the rest would be wasted on a stop)
        window = len(pending) if adder.stop is None else max(2, 2 * len(workers))
        first = [f for f in (submit_next() for _ in range(window)) if f is not None]
        completed = distributed.as_completed(first)
        for fut in completed:
            res = fut.result()  # re-raises a worker's exception here
            adder.put(futures.pop(fut), res)
            fut.release()
            if adder.stopped:
                break
            more = submit_next()
            if more is not None:
                completed.add(more)
        return time.perf_counter() - t0
    finally:
        for fut in futures:
            fut.cancel()


def simulate_decays_dask(phantom: VoxelPhantom, source: Grid, nuclide: str, n_decays: int,
                         settings: MCSettings | None = None, tables: TransportTables | None = None,
                         resume: Tally | None = None, checkpoint: str | Path | None = None,
                         progress: Callable[[int, int], Any] | None = None, *, client=None,
                         n_workers: int | None = None, threads_per_worker: int | None = None,
                         on_batch: Callable[[BatchResult], Any] | None = None,
                         target: UncertaintyTarget | None = None) -> MCResult:
    """:func:`persodose.mc.engine.simulate_decays` with the batches run on a Dask cluster.

    Same arguments and result as ``simulate_decays``, plus:

    Args:
        client: a ``distributed.Client`` to use; default: a ``LocalCluster`` of
            ``n_workers`` processes with ``threads_per_worker`` threads (and as many Numba
            threads) each, started for this run and closed afterwards.
        n_workers, threads_per_worker: see :func:`run_problem_dask`.
        target: stop once this uncertainty is met (as in ``simulate_decays``).

    Returns:
        :class:`~persodose.mc.engine.MCResult`; ``info["backend"]`` describes the cluster
        and ``info["batches"]`` the batches it ran (worker, threads, seconds).

    Raises:
        InputError, GeometryError, MaterialError, NuclideError for bad input; InputError
        when dask[distributed] is not installed; a worker's exception as raised there.
    """
    problem = decay_problem(phantom, source, nuclide, n_decays, default_settings(settings, target), tables)
    tally, run = run_problem_dask(problem, resume, client=client, n_workers=n_workers,
                                  threads_per_worker=threads_per_worker, checkpoint=checkpoint, progress=progress,
                                  on_batch=on_batch, target=target)
    return result_of(phantom, problem, tally, run)
