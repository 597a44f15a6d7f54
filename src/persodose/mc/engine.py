"""The Monte Carlo engine: phantoms, runs in batches, dose, uncertainty and energy balance.

This module gathers the engine's names where they have always been imported from; the code
lives in modules by concern:

* :mod:`persodose.mc.phantom`: :class:`VoxelPhantom` (density and material per voxel);
* :mod:`persodose.mc.settings`: :class:`MCSettings`, the backends (:func:`check_backend`);
* :mod:`persodose.mc.tally`: :class:`BatchResult`, :class:`Tally` (running sums over
  batches: resumable, mergeable) and :class:`MCResult`;
* :mod:`persodose.mc.primaries`: the source kinds (:class:`DecaySource`,
  :class:`PointSource`, :class:`BeamSource`), each with its kernel and kernel arguments;
* :mod:`persodose.mc.problem`: :class:`MCProblem` (everything a batch needs, picklable)
  and its builders :func:`decay_problem`, :func:`point_source_problem`, :func:`beam_problem`;
* :mod:`persodose.mc.run`: :func:`run_batch` (one batch, a pure function of
  ``(problem, batch_index)``), :func:`run_batches` (the one batch loop, with checkpoint,
  resume, progress and a per-batch hook) and :func:`simulate_decays`,
  :func:`simulate_point_source`, :func:`simulate_beam`.

A run is split into ``n_batches`` independent batches, each seeded from ``(seed, batch)``
and made of chunks with their own random streams. Batch tallies are accumulated as running
sums of the energy deposited per decay and of its square, so that

* the relative standard uncertainty of each voxel is the standard error of the batch
  means (the batch method, e.g. Walters, Kawrakow & Rogers, Med. Phys. 29 (2002) 2745);
* a run can be saved after any batch and resumed, and runs with different seeds can be
  merged (:class:`Tally`).

The in-process loop (:func:`run_batches`) and the Dask tasks of
:mod:`persodose.mc.distributed` both call :func:`run_batch`, so a batch is the same wherever
it runs.

Absorbed dose: ``D = E_dep / m`` with ``E_dep`` in J (1 MeV = 1.602176634e-13 J, exact SI)
and ``m = rho V``. Per decay for a unit source, absolute with the number of decays of a
time-integrated activity (1 Bq s = 1 decay).
"""

from __future__ import annotations

from persodose.mc.phantom import DENSITY_RANGE_G_CM3, VoxelPhantom  # noqa: F401
from persodose.mc.primaries import (_PARTICLES, BatchPlan, BeamSource, DecaySource, PointSource,  # noqa: F401
                                    kernel_array)
from persodose.mc.problem import (MCProblem, _phantom_arrays, _primaries_per_batch, _split,  # noqa: F401
                                  _tables_for, beam_problem, decay_problem, point_source_problem)
from persodose.mc.run import (_KERNEL_LOCK, BatchHook, BatchLog, Progress, _done_of_seed, _finish,  # noqa: F401
                              _launch, _numba_backend, _Workspace, backend_info, decay_info, result_of, run_batch,
                              run_batches, simulate_beam, simulate_decays, simulate_point_source, warm_up)
from persodose.mc.settings import DEFAULT_CHUNKS, MCSettings, check_backend, settings_dict  # noqa: F401
from persodose.mc.sources import DecayTables, decay_tables, voxel_source  # noqa: F401
from persodose.mc.tables import TransportSettings, TransportTables, build_tables  # noqa: F401
from persodose.mc.tally import BatchResult, MCResult, Tally, _json_safe  # noqa: F401
from persodose.physics.constants import MEV_TO_J  # noqa: F401
