"""Monte Carlo problems: everything a batch needs, small and picklable, and their builders.

A run is described by an :class:`MCProblem` (geometry arrays, source, decay and transport
tables, settings), built by :func:`decay_problem`, :func:`point_source_problem` or
:func:`beam_problem`; :func:`persodose.mc.run.run_batch` turns ``(problem, batch_index)``
into a :class:`~persodose.mc.tally.BatchResult`. The source (:mod:`persodose.mc.primaries`)
supplies its kernel and arguments; the problem supplies the geometry and physics groups.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence, Union

import numpy as np

from persodose.errors import GeometryError, InputError, MaterialError
from persodose.grid import Grid, Kind
from persodose.mc.primaries import _PARTICLES, BatchPlan, BeamSource, DecaySource, PointSource, kernel_array
from persodose.mc.settings import MCSettings
from persodose.mc.sources import decay_tables, voxel_source
from persodose.mc.tables import EL_RANGE, TransportTables, build_tables, settings_array
from persodose.mc.tally import Tally

if TYPE_CHECKING:
    from persodose.mc.phantom import VoxelPhantom


#: The decays' control variate applies in voxels where the CSDA range of the emissions'
#: energy-weighted mean energy is at most this fraction of the smallest voxel side
#: (:meth:`MCProblem.control_density_min`).
CONTROL_RANGE_FRACTION = 0.5
#: ... and a voxel reports the controlled estimate where it expects at least this many of the
#: decays done (:meth:`MCProblem.control_share_min`; the others report their plain estimate,
#: from the second tally, :meth:`persodose.mc.tally.Tally.plain_voxels`). Chosen by measurement
#: (``benchmarks/bench_tle.py --problems f18-sampling lu177-sampling --samplings stratified control
#: --scale 4 --batches 50 --control-min-decays N``, 2026-12-03, docs/benchmarks.md): with 4,
#: Lu-177 (8e6 decays) left 93 of 7.1e5 voxels with a negative mean and 8 none, but 8 took the
#: F-18 voxels above 10 % of the maximum (4e6 decays, about 10 per voxel) from 7.7 to 12.7 %;
#: the negatives are low-dose voxels, set to 0 and counted, so the noise of the references
#: weighs more.
CONTROL_MIN_DECAYS = 4.0


@dataclass(frozen=True, eq=False)
class MCProblem:
    """Everything one batch of a run needs: small, picklable, and shared by all batches.

    Attributes:
        shape_zyx: grid shape (nz, ny, nx).
        spacing_zyx_mm: voxel size, mm.
        density_g_cm3: (n_vox,) float64 densities, g/cm3, flattened in (z, y, x) order.
        material_index: (n_vox,) int64 indices into the tables' materials.
        source: a :class:`DecaySource`, :class:`PointSource` or :class:`BeamSource`.
        tables: the transport tables of the phantom's materials.
        majorant_per_mm: (n_e,) Woodcock majorant of the phantom, 1/mm.
        settings: the run's settings (seed, batches, chunks per batch, transport).
        primaries_per_batch: (n_batches,) int64 primaries of each batch.
    """

    shape_zyx: tuple[int, int, int]
    spacing_zyx_mm: tuple[float, float, float]
    density_g_cm3: np.ndarray
    material_index: np.ndarray
    source: Union[DecaySource, PointSource]
    tables: TransportTables
    majorant_per_mm: np.ndarray
    settings: MCSettings
    primaries_per_batch: np.ndarray

    @property
    def n_voxels(self) -> int:
        return int(self.density_g_cm3.size)

    @property
    def n_batches(self) -> int:
        return int(self.primaries_per_batch.size)

    @property
    def n_primaries(self) -> int:
        return int(self.primaries_per_batch.sum())

    @property
    def seed(self) -> int:
        return int(self.settings.seed)

    def batch_id(self, batch_index: int) -> tuple[int, int]:
        """The ``(seed, batch)`` pair that names a batch in a :class:`Tally`."""
        return (self.seed, int(batch_index))

    def pending(self, tally: Tally) -> list[int]:
        """Indices of the batches not yet in ``tally``, ascending."""
        done = {tuple(int(v) for v in b) for b in tally.batch_ids}
        return [b for b in range(self.n_batches) if self.batch_id(b) not in done]

    def empty_tally(self) -> Tally:
        return self._with_control(Tally.empty(self.n_voxels))

    def tally_width(self) -> int:
        """Length of a thread's tally in the kernels: the grid, and a second grid for what the
        decays' control variate takes back (:func:`persodose.mc.transport.decay_chunk`)."""
        return self.n_voxels * (2 if self.control_variate else 1)

    def _with_control(self, tally: Tally) -> Tally:
        """``tally`` with this problem's control shares and rule (:attr:`Tally.control_share`)."""
        if self.control_variate:
            tally.control_share = self.control_share()
            tally.control_min_decays = CONTROL_MIN_DECAYS
        return tally

    def signature(self) -> dict:
        """What a batch's content depends on besides its index and seed (JSON-ready): the
        source, the transport settings and the emission selection. Stored in the tally."""
        import dataclasses
        import json

        src = self.source.describe(0)
        src = {k: v for k, v in src.items() if not k.startswith("n_") and k != "total_decays_of_source"}
        doc = {"source": src, "transport": dataclasses.asdict(self.settings.transport),
               "emissions": list(getattr(self.settings, "emissions", None) or [])}
        return json.loads(json.dumps(doc, default=str))

    def check_tally(self, tally: Tally) -> Tally:
        """Refuse a tally made on another grid (GeometryError), or whose batches were simulated
        with another source, transport, emission selection or batch size (InputError): added
        to this run they would mix unlike batches, and the batch method would be wrong.

        Tallies saved before sizes and signatures were recorded are checked on the grid only.
        An empty tally takes this problem's signature.
        """
        if tally.sum_mev.size != self.n_voxels:
            raise GeometryError(f"the resumed tally was made on another grid ({tally.sum_mev.size} voxels, "
                                f"the phantom has {self.n_voxels})")
        sig = self.signature()
        if tally.problem and tally.problem != sig:
            diff = sorted(k for k in sig if tally.problem.get(k) != sig[k])
            raise InputError(f"the resumed tally was simulated with other settings ({', '.join(diff)} differ); "
                             f"start a new run or resume with the same settings")
        if len(tally.batch_sizes) == tally.n_batches:
            for (seed, b), n in zip(tally.batch_ids, tally.batch_sizes):
                if int(seed) == int(self.seed) and 0 <= int(b) < self.n_batches \
                        and int(self.primaries_per_batch[int(b)]) != int(n):
                    raise InputError(f"the resumed tally's batch {int(b)} has {int(n)} primaries, this run's has "
                                     f"{int(self.primaries_per_batch[int(b)])}: give the same number of primaries "
                                     f"and batches as the run that wrote it")
        if self.control_variate and tally.n_batches and tally.control_sum_mev is None:
            raise InputError("the resumed tally has no second tally of the control variate (written by an older "
                             "persodose): start a new run")
        if tally.n_batches == 0:
            tally.problem = sig
        return self._with_control(tally)

    def __getstate__(self) -> dict:
        # the per-process caches of kernel arguments and of the control part are not sent to workers
        state = dict(self.__dict__)
        state.pop("_kernel_args_cache", None)
        state.pop("_control_part", None)
        state.pop("_control_share", None)
        state.pop("_cuda_resident", None)
        return state

    @property
    def control_variate(self) -> bool:
        """Whether this run uses the decays' control variate (:func:`persodose.mc.transport.decay_chunk`)."""
        return self.source.kernel == "decays" and bool(self.tables.settings.control_variate)

    def control_density_min(self) -> float:
        """Density (g/cm3) from which the decays' control variate applies to a voxel.

        The control takes a decay's emitted charged-particle energy back from its voxel; that
        lowers the variance where most of the energy stays in the voxel and raises it where most
        leaves. So it applies where the CSDA range of the emissions' energy-weighted mean energy
        (:meth:`~persodose.mc.primaries.DecaySource.charged_weighted_energy_mev`; the longest
        range over the phantom's materials) is at most half the smallest voxel side: soft
        tissue and bone at clinical voxel sizes, not lung for F-18 at 4 mm. Any such rule
        leaves the mean unchanged, since it does not depend on what is sampled. ``inf`` when
        the control is off or nothing is charged.
        """
        cached = self.__dict__.get("_control_density_min")
        if cached is not None:
            return cached
        out = self._control_density_min()
        self.__dict__["_control_density_min"] = out  # frozen dataclass: a per-process cache
        return out

    def _control_density_min(self) -> float:
        if not self.control_variate:
            return math.inf
        e = self.source.charged_weighted_energy_mev()
        if e <= 0:
            return math.inf
        t = self.tables
        used = np.flatnonzero(np.bincount(np.asarray(self.material_index, np.int64)))  # the materials present
        log_e = np.log(np.asarray(t.energy_mev, float))
        r_g_cm2 = max(float(np.interp(math.log(max(e, float(t.energy_mev[0]))), log_e, t.electron[0, m, EL_RANGE]))
                      for m in used)
        return r_g_cm2 * 10.0 / (CONTROL_RANGE_FRACTION * min(float(v) for v in self.spacing_zyx_mm))

    def control_share_min(self, n_decays: int | None = None) -> float:
        """Share of the activity from which a voxel keeps the controlled estimate after
        ``n_decays`` decays (default: the run's limit).

        :data:`CONTROL_MIN_DECAYS` over the decays. Where a voxel expects fewer decays than that,
        one decay that sends its beta out of the voxel takes more back than the voxel's
        expectation returns, and the voxel's mean dose could come out negative; such a voxel
        reports its plain estimate instead, from the second tally of what the control took back
        (:meth:`Tally.plain_voxels <persodose.mc.tally.Tally.plain_voxels>`). The kernels apply
        the control in every voxel of the density rule; the choice is made on the decays
        actually done, so a run stopped early at a target uncertainty is judged as a run of
        that many decays. Like the density rule it depends on nothing sampled.
        """
        return CONTROL_MIN_DECAYS / max(int(self.n_primaries if n_decays is None else n_decays), 1)

    def control_thresholds(self) -> tuple[float, float]:
        """``(density, share)`` from which the kernels apply the decays' control variate
        (``settings_f[16:18]``): the density rule, and share 0 (every active voxel: the
        activity rule is applied at the tally, :meth:`control_share_min`); ``(0, 0)`` when it
        is off or the source is not decays."""
        if not self.control_variate:
            return (0.0, 0.0)
        return (min(self.control_density_min(), 1e30), 0.0)

    def control_share(self) -> np.ndarray:
        """(n_voxels,) activity share of each voxel the kernels apply the control to (0 elsewhere).

        Computed once per problem and process (a run asks for it for its tally, every resumed or
        checked tally and the control part); each call returns a copy, the caller's to keep."""
        cached = self.__dict__.get("_control_share")
        if cached is None:
            src = self.source
            cdf = np.asarray(src.voxel_cdf, float)
            idx = np.asarray(src.voxel_index, np.int64)
            share = np.diff(cdf, prepend=0.0) / cdf[-1]
            cached = np.zeros(self.n_voxels)
            np.add.at(cached, idx, np.where(self.density_g_cm3[idx] >= self.control_density_min(), share, 0.0))
            self.__dict__["_control_share"] = cached  # frozen dataclass: a per-process cache
        return cached.copy()

    def control_part(self) -> np.ndarray:
        """(n_voxels,) MeV per decay that the control variate tallies without sampling: the
        expectation of what the kernel takes back (:meth:`~persodose.mc.primaries.DecaySource.control_expectation_mev`),
        spread over the voxels by activity (:meth:`control_share`)."""
        cached = self.__dict__.get("_control_part")
        if cached is not None:
            return cached
        out = self.control_share() * self.source.control_expectation_mev()
        self.__dict__["_control_part"] = out  # frozen dataclass: a per-process cache
        return out

    def static_args(self) -> tuple[tuple, tuple]:
        """``(geometry, physics)``: the kernel argument groups shared by every batch and source kind.

        Built once per process, as the kernels are compiled for them (:func:`kernel_array`).
        """
        cached = self.__dict__.get("_kernel_args_cache")
        if cached is not None:
            return cached
        arr = kernel_array
        t = self.tables
        ts = t.settings
        settings_f = settings_array(ts, self.density_g_cm3.reshape(self.shape_zyx), self.control_thresholds())
        nz, ny, nx = (int(v) for v in self.shape_zyx)
        sz, sy, sx = (float(v) for v in self.spacing_zyx_mm)
        geometry = (nz, ny, nx, sz, sy, sx, arr(self.density_g_cm3), arr(self.material_index, np.int64))
        physics = (float(t.log_emin), float(t.inv_dlog), int(t.energy_mev.size), arr(t.photon),
                   arr(self.majorant_per_mm), arr(t.compton_sf), arr(t.rayleigh_cum), arr(t.x_nodes),
                   arr(t.electron), settings_f, bool(ts.range_rejection))
        self.__dict__["_kernel_args_cache"] = (geometry, physics)  # frozen dataclass: a per-process cache
        return geometry, physics

    def batch_plan(self, batch_index: int) -> BatchPlan:
        """Batch ``b``: its primaries split over ``chunks_per_batch`` chunks, streams from ``b * chunks``."""
        b = int(batch_index)
        if not 0 <= b < self.n_batches:
            raise InputError(f"batch {b} does not exist (the run has {self.n_batches} batches)")
        chunks = int(self.settings.chunks_per_batch)
        return BatchPlan(b, self.seed, b * chunks, _split(int(self.primaries_per_batch[b]), chunks))

    def kernel_args(self, batch_index: int) -> tuple[str, tuple]:
        """``(kernel, arguments)`` of batch ``b`` (arguments up to the tallies), from the source."""
        geometry, physics = self.static_args()
        return self.source.kernel, self.source.kernel_args(self.batch_plan(batch_index), geometry, physics)

    def _kernel_args(self) -> tuple:
        """``(kind, source, geometry, decay, physics)``: the argument groups (for tests and tools)."""
        geometry, physics = self.static_args()
        source, decay = self.source.arg_groups()
        return self.source.kernel, source, geometry, decay, physics


def _split(n: int, parts: int) -> np.ndarray:
    base = np.full(parts, n // parts, dtype=np.int64)
    base[: n % parts] += 1
    return base


def _primaries_per_batch(n_primaries: int, settings: MCSettings, what: str) -> np.ndarray:
    n_b = int(settings.n_batches)
    if int(n_primaries) < n_b:
        raise InputError(f"{int(n_primaries)} {what} cannot fill {n_b} batches")
    return _split(int(n_primaries), n_b)


def _phantom_arrays(phantom: VoxelPhantom, tables: TransportTables) -> dict:
    if tables.n_materials != len(phantom.material_list):
        raise MaterialError(f"the transport tables hold {tables.n_materials} materials, the phantom "
                            f"{len(phantom.material_list)}")
    return {
        "shape_zyx": tuple(int(v) for v in phantom.density.shape),
        "spacing_zyx_mm": tuple(float(v) for v in phantom.density.spacing_zyx_mm),
        "density_g_cm3": np.ascontiguousarray(phantom.density.array, dtype=np.float64).ravel(),
        "material_index": np.ascontiguousarray(phantom.materials.array, dtype=np.int64).ravel(),
        "tables": tables,
        "majorant_per_mm": tables.majorant_per_mm(phantom.max_density_per_material()),
    }


def _tables_for(phantom: VoxelPhantom, settings: MCSettings, tables: TransportTables | None) -> TransportTables:
    if tables is None:
        return build_tables(phantom.material_list, settings.transport)
    if tables.settings != settings.transport:
        raise InputError("the transport tables were built with other transport settings than the run's")
    return tables


def decay_problem(phantom: VoxelPhantom, source: Grid, nuclide: str, n_decays: int,
                  settings: MCSettings | None = None, tables: TransportTables | None = None) -> MCProblem:
    """Describe a run of ``n_decays`` decays of ``nuclide`` spread like ``source`` in ``phantom``.

    Arguments as in :func:`persodose.mc.run.simulate_decays`; the source weights are activities (Bq),
    time-integrated activities (Bq s) or activity concentrations (Bq/ml, multiplied by
    the voxel volume).

    Raises:
        InputError, GeometryError, MaterialError, NuclideError for bad input.
    """
    settings = settings or MCSettings()
    if int(n_decays) <= 0:
        raise InputError("the number of decays must be positive")
    phantom.density.require_same_geometry(source, "the source and the phantom")
    src = np.asarray(source.array, dtype=np.float64)
    if source.kind is Kind.ACTIVITY_CONCENTRATION:
        src = src * source.voxel_volume_ml
    src_index, src_cdf = voxel_source(src)
    ts = settings.transport
    dt = decay_tables(nuclide, ts.photon_cut_mev, ts.electron_cut_mev, ts.emax_mev, settings.emissions)
    per_batch = _primaries_per_batch(n_decays, settings, "decays")
    tables = _tables_for(phantom, settings, tables)
    total = float(src.sum()) if source.kind is Kind.TIA else None
    return MCProblem(source=DecaySource(src_index, src_cdf, dt, total), settings=settings,
                     primaries_per_batch=per_batch, **_phantom_arrays(phantom, tables))


def point_source_problem(phantom: VoxelPhantom, particle: str, energy_mev: float | tuple[np.ndarray, np.ndarray],
                         n_particles: int, position_xyz_mm: Sequence[float] | None = None,
                         direction_xyz: Sequence[float] | None = None, settings: MCSettings | None = None,
                         tables: TransportTables | None = None) -> MCProblem:
    """Describe a point-source run; arguments as in :func:`persodose.mc.run.simulate_point_source`."""
    settings = settings or MCSettings()
    if particle not in _PARTICLES:
        raise InputError(f"unknown particle {particle!r}; choose photon, electron or positron")
    if int(n_particles) <= 0:
        raise InputError("the number of particles must be positive")
    ts = settings.transport
    if np.isscalar(energy_mev):
        e_nodes = np.array([float(energy_mev)])
        e_cdf = np.array([1.0])
    else:
        e_nodes = np.asarray(energy_mev[0], dtype=np.float64)
        dens_ = np.clip(np.asarray(energy_mev[1], dtype=np.float64), 0, None)
        e_cdf = np.concatenate(([0.0], np.cumsum(0.5 * (dens_[1:] + dens_[:-1]) * np.diff(e_nodes))))
    if not np.all(np.isfinite(e_nodes)) or e_nodes.min() <= 0 or e_nodes.max() > ts.emax_mev:
        raise InputError(f"particle energies must lie within (0, {ts.emax_mev}] MeV")
    nz, ny, nx = phantom.density.shape
    sz, sy, sx = (float(v) for v in phantom.density.spacing_zyx_mm)
    if position_xyz_mm is None:
        pos = np.array([nx * sx / 2.0, ny * sy / 2.0, nz * sz / 2.0])
    else:
        pos = np.asarray(position_xyz_mm, dtype=np.float64)
    if not (0 <= pos[0] < nx * sx and 0 <= pos[1] < ny * sy and 0 <= pos[2] < nz * sz):
        raise InputError("the source position lies outside the phantom")
    isotropic = direction_xyz is None
    d = np.array([0.0, 0.0, 1.0]) if isotropic else np.asarray(direction_xyz, dtype=np.float64)
    norm = float(np.linalg.norm(d))
    if not (math.isfinite(norm) and norm > 0):
        raise InputError("the beam direction must be a non-zero finite vector")
    per_batch = _primaries_per_batch(n_particles, settings, "particles")
    tables = _tables_for(phantom, settings, tables)
    return MCProblem(source=PointSource(particle, e_nodes, e_cdf, pos, d / norm, isotropic), settings=settings,
                     primaries_per_batch=per_batch, **_phantom_arrays(phantom, tables))


def beam_problem(phantom: VoxelPhantom, sampler, n_photons: int, settings: MCSettings | None = None,
                 tables: TransportTables | None = None) -> MCProblem:
    """A problem of photons from external sources (see :class:`BeamSource`)."""
    settings = settings or MCSettings()
    if not hasattr(sampler, "sample"):
        raise InputError("the beam sampler needs a sample(n, rng) method")
    g = phantom.density
    d = g.direction_xyz
    corner = np.asarray(g.origin_xyz_mm) - d @ (0.5 * np.asarray(g.spacing_xyz_mm))
    per_batch = _primaries_per_batch(n_photons, settings, "photons")
    tables = _tables_for(phantom, settings, tables)
    return MCProblem(source=BeamSource(sampler, corner, d.T.copy()), settings=settings, primaries_per_batch=per_batch,
                     **_phantom_arrays(phantom, tables))

