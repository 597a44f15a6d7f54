"""The Monte Carlo engine: phantoms, runs in batches, dose, uncertainty and energy balance.

A run is split into ``n_batches`` independent batches, each seeded from ``(seed, batch)``
and made of chunks with their own random streams. Batch tallies are accumulated as running
sums of the energy deposited per decay and of its square, so that

* the relative standard uncertainty of each voxel is the standard error of the batch
  means (the batch method, e.g. Walters, Kawrakow & Rogers, Med. Phys. 29 (2002) 2745);
* a run can be saved after any batch and resumed, and runs with different seeds can be
  merged (:class:`Tally`).

A run is described by a small picklable :class:`MCProblem` (geometry arrays, source,
decay and transport tables, settings) and one pure function, :func:`run_batch`, that
turns ``(problem, batch_index)`` into a :class:`BatchResult`. The in-process loop of
:func:`simulate_decays` and the Dask tasks of :mod:`persodose.mc.distributed` both call
it, so a batch is the same wherever it runs.

Absorbed dose: ``D = E_dep / m`` with ``E_dep`` in J (1 MeV = 1.602176634e-13 J, exact SI)
and ``m = rho V``. Per decay for a unit source, absolute with the number of decays of a
time-integrated activity (1 Bq s = 1 decay).
"""

from __future__ import annotations

import dataclasses
import json
import math
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, Union

import numpy as np

from persodose.errors import GeometryError, InputError, MaterialError
from persodose.grid import Grid, Kind
from persodose.mc import transport as tr
from persodose.mc.sources import DecayTables, decay_tables, voxel_source
from persodose.mc.tables import TransportSettings, TransportTables, build_tables
from persodose.physics.materials import Material
from persodose.physics.constants import MEV_TO_J  # noqa: F401

#: Densities accepted in a phantom, g/cm3 (below: vacuum is not supported; above: no tissue or implant of interest).
DENSITY_RANGE_G_CM3 = (1e-4, 25.0)


@dataclass(frozen=True, eq=False)
class VoxelPhantom:
    """Geometry of a transport: density and material index per voxel.

    Attributes:
        density: Kind.DENSITY grid, g/cm3.
        materials: Kind.MATERIAL grid of indices into ``material_list``.
        material_list: the materials (elemental mass fractions).
    """

    density: Grid
    materials: Grid
    material_list: tuple[Material, ...]

    def __post_init__(self) -> None:
        self.density.require_same_geometry(self.materials, "density and material maps")
        d = np.asarray(self.density.array)
        if not np.all(np.isfinite(d)):
            raise InputError("the density map contains NaN or infinity")
        lo, hi = DENSITY_RANGE_G_CM3
        if d.min() < lo or d.max() > hi:
            raise MaterialError(f"densities must lie within {lo}-{hi} g/cm3; the map spans "
                                f"{float(d.min()):.4g}-{float(d.max()):.4g} g/cm3")
        m = np.asarray(self.materials.array)
        if m.dtype.kind not in "iu":
            raise MaterialError("the material map must hold integer indices")
        if m.min() < 0 or m.max() >= len(self.material_list):
            raise MaterialError(f"material index {int(m.max())} has no material (only {len(self.material_list)} given)")

    @classmethod
    def from_ct(cls, ct: Grid, calibration=None) -> "VoxelPhantom":
        """Phantom from a CT in HU with the default Schneider calibration and classes."""
        from persodose.physics.materials import ct_to_density_and_materials

        density, materials, mats = ct_to_density_and_materials(ct, calibration=calibration)
        return cls(density, materials, tuple(mats))

    @classmethod
    def homogeneous(cls, shape_zyx: Sequence[int], spacing_mm: float | Sequence[float], material: Material,
                    density_g_cm3: float | None = None) -> "VoxelPhantom":
        """A box of one material (centred on the origin)."""
        from persodose.grid import make_grid

        sp = (spacing_mm,) * 3 if np.isscalar(spacing_mm) else tuple(spacing_mm)
        rho = material.density_g_cm3 if density_g_cm3 is None else density_g_cm3
        dens = make_grid(shape_zyx, sp, kind=Kind.DENSITY, fill=rho)
        mats = dens.with_array(np.zeros(dens.shape, np.uint8), Kind.MATERIAL)
        return cls(dens, mats, (material,))

    @property
    def mass_kg(self) -> np.ndarray:
        """Mass of each voxel, kg (z, y, x)."""
        return self.density.array.astype(np.float64) * self.density.voxel_volume_ml * 1e-3

    def max_density_per_material(self) -> np.ndarray:
        m = self.materials.array.ravel().astype(np.int64)
        d = self.density.array.ravel().astype(np.float64)
        out = np.zeros(len(self.material_list))
        np.maximum.at(out, m, d)
        return out


#: Default chunks per batch: a few per CPU core (load balance), and for CUDA one thread per
#: chunk, about 2.6 waves of an H100: the kernels use ~150 registers per thread (ptxas for
#: sm_90, ``python benchmarks/gpu_resources.py``), so 384 threads per SM, 50688 on 132 SMs,
#: are resident at once; several waves even out threads whose histories run long. The
#: particle stacks take 8 KiB per chunk on the device (1 GiB at 131072 chunks).
DEFAULT_CHUNKS = {"cpu": 32, "cuda": 131072}


def check_backend(backend: str, *, require_device: bool = True) -> str:
    """``backend`` if it is known (and, with ``require_device``, can run here).

    Raises:
        InputError: an unknown backend.
        OptionalDependencyError: ``"cuda"`` with ``require_device`` on a machine without a
            usable NVIDIA GPU (one line, before any work is done).
    """
    if backend not in DEFAULT_CHUNKS:
        raise InputError(f"unknown Monte Carlo backend {backend!r}; choose {' or '.join(DEFAULT_CHUNKS)}")
    if backend == "cuda" and require_device:
        from persodose.mc import gpu

        gpu.require_cuda()
    return backend


@dataclass
class MCSettings:
    """Settings of a Monte Carlo run (serialised into its provenance)."""

    n_batches: int = 10  #: independent batches (uncertainty from their spread)
    #: parallel work units per batch, each with its own random stream; default
    #: :data:`DEFAULT_CHUNKS` of the backend (the same chunks give the same streams on both)
    chunks_per_batch: int | None = None
    seed: int = 12345  #: master seed
    transport: TransportSettings = field(default_factory=TransportSettings)
    #: "cpu" (Numba, parallel over chunks) or "cuda" (one GPU thread per chunk)
    backend: str = "cpu"

    def __post_init__(self) -> None:
        check_backend(self.backend, require_device=False)  # settings may be made where they do not run
        if self.chunks_per_batch is None:
            self.chunks_per_batch = DEFAULT_CHUNKS[self.backend]
        if int(self.n_batches) < 2:
            raise InputError("n_batches must be at least 2 (uncertainty needs several batches)")
        if int(self.chunks_per_batch) < 1:
            raise InputError("chunks_per_batch must be at least 1")
        if not (0 <= int(self.seed) < 2**63):
            raise InputError("seed must be a non-negative 63-bit integer")


@dataclass
class Tally:
    """Running sums over batches: resumable and mergeable.

    Attributes:
        sum_mev: sum over batches of the energy deposited per primary in each voxel, MeV.
        sum2_mev2: sum of its squares.
        n_batches: batches done; batch_ids: which (seed, batch) pairs are in.
        n_primaries: primaries (decays or particles) simulated in all batches.
        counters: energy bookkeeping in MeV per primary, summed over batches.
    """

    sum_mev: np.ndarray
    sum2_mev2: np.ndarray
    n_batches: int = 0
    n_primaries: int = 0
    batch_ids: list = field(default_factory=list)
    counters: np.ndarray = field(default_factory=lambda: np.zeros(tr.C_N))

    @classmethod
    def empty(cls, n_vox: int) -> "Tally":
        return cls(np.zeros(n_vox), np.zeros(n_vox))

    def add_batch(self, per_primary_mev: np.ndarray, counters_per_primary: np.ndarray, n: int, batch_id) -> None:
        self.sum_mev += per_primary_mev
        self.sum2_mev2 += per_primary_mev * per_primary_mev
        self.counters += counters_per_primary
        self.n_batches += 1
        self.n_primaries += int(n)
        self.batch_ids.append([int(v) for v in batch_id])

    def has_batch(self, batch_id) -> bool:
        """True when the batch ``(seed, batch)`` is already in the tally."""
        key = tuple(int(v) for v in batch_id)
        return any(tuple(b) == key for b in self.batch_ids)

    def add(self, result: "BatchResult") -> None:
        """Add one :class:`BatchResult` (refuses a batch that is already in, or another grid).

        Raises:
            GeometryError: the batch was simulated on another grid.
            InputError: the batch is already in the tally.
        """
        if result.energy_per_primary_mev.shape != self.sum_mev.shape:
            raise GeometryError(f"batch {list(result.batch_id)} was simulated on another grid "
                                f"({result.energy_per_primary_mev.size} voxels, the tally has {self.sum_mev.size})")
        if self.has_batch(result.batch_id):
            raise InputError(f"batch {list(result.batch_id)} is already in the tally")
        self.add_batch(result.energy_per_primary_mev, result.counters_per_primary, result.n_primaries,
                       result.batch_id)

    def merge(self, other: "Tally") -> "Tally":
        """Combine two tallies of the same problem with different seeds (batches must differ)."""
        if self.sum_mev.shape != other.sum_mev.shape:
            raise GeometryError("cannot merge tallies of different grids")
        overlap = {tuple(b) for b in self.batch_ids} & {tuple(b) for b in other.batch_ids}
        if overlap:
            raise InputError(f"cannot merge tallies that share batches {sorted(overlap)[:3]}: use another seed")
        return Tally(self.sum_mev + other.sum_mev, self.sum2_mev2 + other.sum2_mev2,
                     self.n_batches + other.n_batches, self.n_primaries + other.n_primaries,
                     self.batch_ids + other.batch_ids, self.counters + other.counters)

    def mean_mev(self) -> np.ndarray:
        """Energy deposited per primary, MeV (mean over batches)."""
        return self.sum_mev / max(self.n_batches, 1)

    def relative_uncertainty(self) -> np.ndarray:
        """Relative standard uncertainty of the mean, per voxel (0 where nothing was deposited)."""
        b = self.n_batches
        if b < 2:
            return np.full(self.sum_mev.shape, np.inf)
        mean = self.sum_mev / b
        var = np.clip(self.sum2_mev2 / b - mean * mean, 0.0, None) * b / (b - 1)
        se = np.sqrt(var / b)
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(mean > 0, se / mean, 0.0)
        return rel

    def energy_balance(self) -> dict[str, float]:
        """Energy per primary, MeV: emitted + annihilation = deposited + escaped."""
        c = self.counters / max(self.n_batches, 1)
        return {
            "emitted_mev": float(c[tr.C_EMITTED]),
            "annihilation_rest_energy_mev": float(c[tr.C_ANNIHILATION]),
            "deposited_mev": float(c[tr.C_DEPOSITED]),
            "escaped_mev": float(c[tr.C_ESCAPED]),
            "deposited_below_cutoff_mev": float(c[tr.C_BELOW_CUT]),
            "stack_overflow_mev": float(c[tr.C_OVERFLOW]),
            "electron_steps": float(c[tr.C_STEPS]),
            "escaped_uncollided_photons_mev": float(c[tr.C_UNCOLLIDED]),
        }

    def save(self, path: str | Path) -> None:
        """Write the tally to ``path`` (an ``.npz`` archive, whatever the suffix).

        The file is written to a temporary sibling and moved into place, so an
        interrupted save never leaves a truncated checkpoint behind.
        """
        from persodose.outputs import atomic_file

        with atomic_file(path) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, sum_mev=self.sum_mev, sum2_mev2=self.sum2_mev2, counters=self.counters,
                                meta=json.dumps({"n_batches": self.n_batches, "n_primaries": self.n_primaries,
                                                 "batch_ids": self.batch_ids}))

    @classmethod
    def load(cls, path: str | Path) -> "Tally":
        try:
            with np.load(path) as f:
                meta = json.loads(str(f["meta"]))
                return cls(f["sum_mev"].copy(), f["sum2_mev2"].copy(), int(meta["n_batches"]),
                           int(meta["n_primaries"]), meta["batch_ids"], f["counters"].copy())
        except (OSError, KeyError, ValueError) as exc:
            raise InputError(f"cannot read Monte Carlo checkpoint {path}: {exc}") from None


@dataclass
class MCResult:
    """Outcome of a run.

    Attributes:
        energy_per_primary_mev: energy deposited per primary in each voxel, MeV.
        dose_per_primary_gy: absorbed dose per primary (decay or particle), Gy.
        dose_gy: absolute dose (Gy) when a number of decays was known (a TIA source), else None.
        relative_uncertainty: relative standard uncertainty per voxel.
        tally: the running sums (for resume / merge).
        energy_balance: MeV per primary.
        seconds: wall time of the simulation.
        primaries_per_second: throughput.
    """

    energy_per_primary_mev: Grid
    dose_per_primary_gy: Grid
    dose_gy: Grid | None
    relative_uncertainty: Grid
    tally: Tally
    energy_balance: dict
    seconds: float
    primaries_per_second: float
    settings: MCSettings
    info: dict = field(default_factory=dict)

    def provenance(self) -> dict:
        """Everything needed to trace or repeat the run, as a JSON-serialisable dictionary.

        Holds the seed, the batches done and their ``(seed, batch)`` ids, the number of
        primaries, the transport settings and cut-offs (MeV), the energy balance (MeV per
        primary) with its relative residual, the source (nuclide or particle), the
        software versions (:func:`persodose.outputs.versions`), the backend that ran the
        batches, the wall time (s) and the throughput (primaries/s). Non-finite numbers
        become ``None`` so that ``json.dumps(..., allow_nan=False)`` accepts the result.
        """
        from persodose.outputs import versions

        ts = self.settings.transport
        bal = dict(self.energy_balance)
        into = bal.get("emitted_mev", 0.0) + bal.get("annihilation_rest_energy_mev", 0.0)
        out = bal.get("deposited_mev", 0.0) + bal.get("escaped_mev", 0.0)
        source = {k: v for k, v in self.info.items() if k not in ("backend", "batches")}
        doc = {
            "engine": "persodose.mc",
            "seed": int(self.settings.seed),
            "n_batches_requested": int(self.settings.n_batches),
            "chunks_per_batch": int(self.settings.chunks_per_batch),
            "batches_done": int(self.tally.n_batches),
            "batch_ids": [[int(v) for v in b] for b in self.tally.batch_ids],
            "n_primaries": int(self.tally.n_primaries),
            "nuclide": self.info.get("nuclide"),
            "source": source,
            "transport_settings": asdict(ts),
            "cutoffs_mev": {"electron_absorption": ts.electron_cut_mev, "photon_absorption": ts.photon_cut_mev,
                            "hard_collision": ts.hard_collision_cut_mev, "bremsstrahlung": ts.brems_cut_mev},
            "energy_balance_mev_per_primary": bal,
            "energy_balance_relative_residual": (into - out) / into if into > 0 else None,
            "backend": self.info.get("backend", {"name": "unknown"}),
            "batches_run": self.info.get("batches", []),
            "wall_time_s": float(self.seconds),
            "primaries_per_second": float(self.primaries_per_second),
            "versions": versions(),
        }
        return _json_safe(doc)


def _json_safe(obj: Any) -> Any:
    """Plain JSON types: numpy scalars and arrays to Python, non-finite floats to None."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _json_safe(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


# --------------------------------------------------------------------------------------------
# Problems: everything a batch needs, picklable
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class DecaySource:
    """Radionuclide decays spread over voxels.

    Attributes:
        voxel_index: (n_src,) int64 flat indices (z, y, x order) of the voxels with activity.
        voxel_cdf: (n_src,) float64 cumulative of their weights (decays are drawn from it).
        decay: the nuclide's sampling tables (ICRP 107, see :mod:`persodose.mc.sources`).
        total_decays: decays of the source (Bq s summed over a TIA), or None when the
            source is only relative.
    """

    voxel_index: np.ndarray
    voxel_cdf: np.ndarray
    decay: DecayTables
    total_decays: float | None = None


@dataclass(frozen=True, eq=False)
class PointSource:
    """Primary particles of one kind from a point.

    Attributes:
        particle: ``"photon"``, ``"electron"`` or ``"positron"``.
        energy_nodes_mev: (n,) energies, MeV; one node for a monoenergetic source.
        energy_cdf: (n,) cumulative of the spectrum on the nodes.
        position_xyz_mm: (3,) mm from the grid's corner, (x, y, z) index axes.
        direction_xyz: (3,) unit vector of a pencil beam (ignored when isotropic).
        isotropic: emit isotropically.
    """

    particle: str
    energy_nodes_mev: np.ndarray
    energy_cdf: np.ndarray
    position_xyz_mm: np.ndarray
    direction_xyz: np.ndarray
    isotropic: bool


@dataclass(frozen=True, eq=False)
class BeamSource:
    """Photons from external sources (a CT tube's focal-spot positions, any beam model).

    Attributes:
        sampler: a picklable object with ``sample(n, rng)`` returning at least
            ``(origins (n, 3), directions (n, 3), energies_mev (n,))`` in LPS mm, photons of
            equal weight (for example :class:`persodose.ct.trajectory.SourcePositions` in
            ``"importance"`` mode, through :class:`persodose.ct.dose.ScanSampler`).
        corner_xyz_mm: LPS position of the grid's corner (voxel [0, 0, 0]'s outer corner).
        to_grid: 3x3 matrix taking LPS vectors to the grid's (x, y, z) index axes.
    """

    sampler: object
    corner_xyz_mm: np.ndarray
    to_grid: np.ndarray

    def photons(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """n photons in grid coordinates (mm from the corner, index-axis directions)."""
        out = self.sampler.sample(int(n), rng)
        o = np.asarray(out[0], dtype=np.float64)
        d = np.asarray(out[1], dtype=np.float64)
        e = np.asarray(out[2], dtype=np.float64)
        if o.shape != (n, 3) or d.shape != (n, 3) or e.shape != (n,):
            raise InputError("a beam sampler must return origins (n, 3), directions (n, 3) and energies (n,)")
        if not (np.all(np.isfinite(o)) and np.all(np.isfinite(d)) and np.all(e > 0)):
            raise InputError("a beam sampler returned non-finite positions or directions, or energies <= 0")
        local_o = (o - self.corner_xyz_mm) @ self.to_grid.T
        local_d = d @ self.to_grid.T
        local_d /= np.linalg.norm(local_d, axis=1, keepdims=True)
        return (np.ascontiguousarray(local_o), np.ascontiguousarray(local_d), np.ascontiguousarray(e))


_PARTICLES = {"photon": tr.PHOTON, "electron": tr.ELECTRON, "positron": tr.POSITRON}


@dataclass(frozen=True, eq=False)
class MCProblem:
    """Everything one batch of a run needs: small, picklable, and shared by all batches.

    Attributes:
        shape_zyx: grid shape (nz, ny, nx).
        spacing_zyx_mm: voxel size, mm.
        density_g_cm3: (n_vox,) float64 densities, g/cm3, flattened in (z, y, x) order.
        material_index: (n_vox,) int64 indices into the tables' materials.
        source: a :class:`DecaySource` or a :class:`PointSource`.
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
        return Tally.empty(self.n_voxels)

    def check_tally(self, tally: Tally) -> Tally:
        """Refuse a tally made on another grid (GeometryError)."""
        if tally.sum_mev.size != self.n_voxels:
            raise GeometryError(f"the resumed tally was made on another grid ({tally.sum_mev.size} voxels, "
                                f"the phantom has {self.n_voxels})")
        return tally

    def __getstate__(self) -> dict:
        # the per-process cache of kernel arguments is not sent to workers
        state = dict(self.__dict__)
        state.pop("_kernel_args_cache", None)
        return state

    def _kernel_args(self) -> tuple:
        """Kernel arguments, built once per process.

        Arrays are made C-contiguous and writeable: arrays received from another process
        may arrive read-only, which Numba types differently and would compile again.
        """
        cached = self.__dict__.get("_kernel_args_cache")
        if cached is not None:
            return cached

        def arr(a, dtype=np.float64):
            return np.require(a, dtype=dtype, requirements=("C", "W", "A"))

        t = self.tables
        ts = t.settings
        settings_f = np.array([ts.photon_cut_mev, ts.electron_cut_mev, ts.hard_collision_cut_mev, ts.brems_cut_mev,
                               ts.max_eloss_fraction, ts.max_step_lambda1], dtype=np.float64)
        nz, ny, nx = (int(v) for v in self.shape_zyx)
        sz, sy, sx = (float(v) for v in self.spacing_zyx_mm)
        geometry = (nz, ny, nx, sz, sy, sx, arr(self.density_g_cm3), arr(self.material_index, np.int64))
        physics = (float(t.log_emin), float(t.inv_dlog), int(t.energy_mev.size), arr(t.photon),
                   arr(self.majorant_per_mm), arr(t.compton_sf), arr(t.rayleigh_cum), arr(t.x_nodes),
                   arr(t.electron), settings_f, bool(ts.range_rejection))
        src = self.source
        if isinstance(src, DecaySource):
            d = src.decay
            source = (arr(src.voxel_index, np.int64), arr(src.voxel_cdf))
            decay = (float(d.local_mev), arr(d.beta_yields), arr(d.beta_minus_e), arr(d.beta_minus_cdf),
                     arr(d.beta_plus_e), arr(d.beta_plus_cdf), arr(d.line_kind, np.int64), arr(d.line_e),
                     arr(d.line_cum), float(d.line_total))
            args = ("decays", source, geometry, decay, physics)
        elif isinstance(src, BeamSource):
            args = ("beam", (), geometry, (), physics)
        else:
            source = (int(_PARTICLES[src.particle]), arr(src.energy_nodes_mev), arr(src.energy_cdf),
                      arr(src.position_xyz_mm), arr(src.direction_xyz), bool(src.isotropic))
            args = ("particles", source, geometry, (), physics)
        self.__dict__["_kernel_args_cache"] = args
        return args


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

    Arguments as in :func:`simulate_decays`; the source weights are activities (Bq),
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
    dt = decay_tables(nuclide, ts.photon_cut_mev, ts.electron_cut_mev, ts.emax_mev)
    per_batch = _primaries_per_batch(n_decays, settings, "decays")
    tables = _tables_for(phantom, settings, tables)
    total = float(src.sum()) if source.kind is Kind.TIA else None
    return MCProblem(source=DecaySource(src_index, src_cdf, dt, total), settings=settings,
                     primaries_per_batch=per_batch, **_phantom_arrays(phantom, tables))


def point_source_problem(phantom: VoxelPhantom, particle: str, energy_mev: float | tuple[np.ndarray, np.ndarray],
                         n_particles: int, position_xyz_mm: Sequence[float] | None = None,
                         direction_xyz: Sequence[float] | None = None, settings: MCSettings | None = None,
                         tables: TransportTables | None = None) -> MCProblem:
    """Describe a point-source run; arguments as in :func:`simulate_point_source`."""
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


# --------------------------------------------------------------------------------------------
# One batch
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class BatchResult:
    """The outcome of one batch.

    Attributes:
        batch_id: ``(seed, batch)``.
        energy_per_primary_mev: (n_vox,) float64 energy deposited per primary in each voxel, MeV.
        counters_per_primary: (C_N,) float64 energy bookkeeping per primary, MeV (see
            :meth:`Tally.energy_balance`; electron steps are a count).
        n_primaries: primaries simulated in the batch.
        n_threads: Numba threads that ran it.
        seconds: wall time of the transport, s.
        host: machine (and Dask worker, when one ran it).
    """

    batch_id: tuple[int, int]
    energy_per_primary_mev: np.ndarray
    counters_per_primary: np.ndarray
    n_primaries: int
    n_threads: int = 1
    seconds: float = 0.0
    host: str = ""

    def record(self) -> dict:
        """A small JSON-ready summary (for provenance)."""
        return {"batch_id": [int(v) for v in self.batch_id], "n_primaries": int(self.n_primaries),
                "n_threads": int(self.n_threads), "seconds": float(self.seconds), "host": self.host}


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


def _launch(problem: MCProblem, ws: _Workspace, stream0: int, per_chunk: np.ndarray) -> None:
    kind, source, geometry, decay, physics = problem._kernel_args()
    seed = np.uint64(problem.seed)
    if kind == "decays":
        args = (seed, stream0, per_chunk, *source, *geometry, *decay, *physics)
    elif kind == "beam":
        # the photons of batch b come from numpy's generator seeded with (seed, b): the same
        # batch gives the same photons wherever it runs, on either backend
        b = int(stream0) // int(problem.settings.chunks_per_batch)
        n = int(per_chunk.sum())
        o, d, e = problem.source.photons(n, np.random.default_rng([int(problem.seed), b, 0xBEA]))
        starts = np.concatenate(([0], np.cumsum(per_chunk)[:-1])).astype(np.int64)
        args = (seed, stream0, starts, per_chunk.astype(np.int64), o, d, e, *geometry, *physics)
    else:
        args = (seed, stream0, per_chunk, *source, *geometry, *physics)
    if problem.settings.backend == "cuda":
        from persodose.mc import gpu

        gpu.require_cuda()
        launch = {"decays": gpu.run_decays_cuda, "beam": gpu.run_beam_cuda}.get(kind, gpu.run_particles_cuda)
        launch(*args, ws.edep, ws.ctr)
    else:
        launch = {"decays": tr.run_decays, "beam": tr.run_beam}.get(kind, tr.run_particles)
        launch(*args, ws.edep, ws.ctr, ws.stacks)


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
        problem: from :func:`decay_problem` or :func:`point_source_problem`.
        batch_index: 0 <= b < n_batches.
        n_threads: Numba threads for this batch (default: the process's setting; capped
            at ``NUMBA_NUM_THREADS``).
        workspace: per-thread buffers to reuse between batches (optional).

    Returns:
        :class:`BatchResult` with energies and counters per primary.
    """
    import numba

    b = int(batch_index)
    if not 0 <= b < problem.n_batches:
        raise InputError(f"batch {b} does not exist (the run has {problem.n_batches} batches)")
    n = int(problem.primaries_per_batch[b])
    chunks = int(problem.settings.chunks_per_batch)
    per_chunk = _split(n, chunks)
    with _KERNEL_LOCK:
        previous = numba.get_num_threads()
        if n_threads is not None:
            numba.set_num_threads(max(1, min(int(n_threads), numba.config.NUMBA_NUM_THREADS)))
        try:
            used = numba.get_num_threads()
            ws = workspace if workspace is not None and workspace.fits(problem.n_voxels, used) else None
            ws = ws or _Workspace(problem.n_voxels, used)
            ws.reset()
            t0 = time.perf_counter()
            _launch(problem, ws, b * chunks, per_chunk)
            seconds = time.perf_counter() - t0
        finally:
            numba.set_num_threads(previous)
    return BatchResult(problem.batch_id(b), ws.edep.sum(axis=0) / n, ws.ctr.sum(axis=0) / n, n, used, seconds,
                       socket.gethostname())


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


def _run_problem(problem: MCProblem, tally: Tally, progress: Callable[[int, int], Any] | None = None,
                 checkpoint: Path | None = None, n_threads: int | None = None) -> tuple[int, float, list[dict]]:
    """Run, in this process, the batches not yet in ``tally``, adding them in batch order.

    Returns:
        (primaries simulated now, wall time s, records of the batches run).
    """
    import numba

    problem.check_tally(tally)
    ws = _Workspace(problem.n_voxels, min(int(n_threads), numba.config.NUMBA_NUM_THREADS) if n_threads else None)
    n_new, records = 0, []
    t0 = time.perf_counter()
    for b in problem.pending(tally):
        res = run_batch(problem, b, n_threads=n_threads, workspace=ws)
        tally.add(res)
        n_new += res.n_primaries
        records.append(res.record())
        if checkpoint is not None:
            tally.save(checkpoint)
        if progress is not None:
            progress(_done_of_seed(tally, problem.seed), problem.n_batches)
    return n_new, time.perf_counter() - t0, records


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


def _run_batches(phantom, tally, settings, n_primaries, launch, progress=None, checkpoint: Path | None = None):
    """Legacy loop: run the batches not yet in ``tally``; ``launch(ws, stream0, per_chunk)`` runs one batch.

    Kept for callers that drive their own kernels; the engine itself uses :func:`run_batch`.
    """
    n_b = int(settings.n_batches)
    ws = _Workspace(phantom.density.array.size)
    per_batch = _split(int(n_primaries), n_b)
    n_new = 0
    t0 = time.perf_counter()
    for b in range(n_b):
        if tally.has_batch((int(settings.seed), b)):
            continue
        if per_batch[b] == 0:
            raise InputError(f"{n_primaries} primaries cannot fill {n_b} batches")
        ws.reset()
        per_chunk = _split(int(per_batch[b]), int(settings.chunks_per_batch))
        launch(ws, b * int(settings.chunks_per_batch), per_chunk)
        n = int(per_batch[b])
        tally.add_batch(ws.edep.sum(axis=0) / n, ws.ctr.sum(axis=0) / n, n, (int(settings.seed), b))
        n_new += n
        if checkpoint is not None:
            tally.save(checkpoint)
        if progress is not None:
            progress(b + 1, n_b)
    return n_new, time.perf_counter() - t0


def _finish(phantom: VoxelPhantom, tally: Tally, settings: MCSettings, seconds: float, n_new: int,
            total_decays: float | None, info: dict) -> MCResult:
    shape = phantom.density.shape
    e_mev = tally.mean_mev().reshape(shape)
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
    src = problem.source
    return {"nuclide": src.decay.nuclide, "mean_emitted_mev_per_decay": src.decay.mean_emitted_mev,
            "n_decays": tally.n_primaries, "total_decays_of_source": src.total_decays}


def simulate_decays(phantom: VoxelPhantom, source: Grid, nuclide: str, n_decays: int,
                    settings: MCSettings | None = None, tables: TransportTables | None = None,
                    resume: Tally | None = None, checkpoint: str | Path | None = None,
                    progress=None) -> MCResult:
    """Simulate ``n_decays`` decays of ``nuclide`` spread like ``source`` in ``phantom``.

    Args:
        phantom: density and materials.
        source: activity, activity concentration or time-integrated activity on the
            phantom's geometry (any non-negative weights; a TIA in Bq s also gives the
            absolute dose).
        nuclide: any ICRP-107 nuclide name.
        n_decays: decays to simulate in all batches.
        settings: batches, seed, transport settings.
        tables: prebuilt tables (must match ``settings.transport`` and the phantom's materials).
        resume: a tally from an interrupted run with the same settings; its batches are kept
            (it is updated in place).
        checkpoint: a ``.npz`` file the tally is saved to after every batch.
        progress: callable ``(batches_done, batches_total)``.

    Returns:
        :class:`MCResult`; ``dose_gy`` is absolute when ``source`` is a TIA (Bq s).

    Raises:
        InputError, GeometryError, MaterialError, NuclideError for bad input.
    """
    problem = decay_problem(phantom, source, nuclide, n_decays, settings, tables)
    tally = problem.check_tally(resume if resume is not None else problem.empty_tally())
    n_new, seconds, records = _run_problem(problem, tally, progress, Path(checkpoint) if checkpoint else None)
    info = decay_info(problem, tally)
    info.update(backend=backend_info(problem.settings), batches=records)
    return _finish(phantom, tally, problem.settings, seconds, n_new, problem.source.total_decays, info)


def simulate_point_source(phantom: VoxelPhantom, particle: str, energy_mev: float | tuple[np.ndarray, np.ndarray],
                          n_particles: int, position_xyz_mm: Sequence[float] | None = None,
                          direction_xyz: Sequence[float] | None = None, settings: MCSettings | None = None,
                          tables: TransportTables | None = None) -> MCResult:
    """Particles of one kind from a point: isotropic, or a pencil beam along ``direction_xyz``.

    Args:
        particle: ``"photon"``, ``"electron"`` or ``"positron"``.
        energy_mev: a single energy, or ``(energies, weights)`` of a spectrum (histogram
            nodes and their relative densities, interpolated linearly).
        position_xyz_mm: position in mm from the grid's corner in the (x, y, z) index axes;
            default the centre of the grid.
        direction_xyz: unit vector in the (x, y, z) index axes for a pencil beam.
    """
    problem = point_source_problem(phantom, particle, energy_mev, n_particles, position_xyz_mm, direction_xyz,
                                   settings, tables)
    tally = problem.empty_tally()
    n_new, seconds, records = _run_problem(problem, tally)
    info = {"particle": particle, "n_particles": tally.n_primaries, "backend": backend_info(problem.settings),
            "batches": records}
    return _finish(phantom, tally, problem.settings, seconds, n_new, None, info)


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


def simulate_beam(phantom: VoxelPhantom, sampler, n_photons: int, settings: MCSettings | None = None,
                  tables: TransportTables | None = None, progress=None) -> MCResult:
    """Transport photons from external sources through ``phantom``.

    Returns:
        :class:`MCResult` per source photon: ``energy_per_primary_mev`` and
        ``dose_per_primary_gy`` (Gy per photon emitted by the sampler).
    """
    problem = beam_problem(phantom, sampler, n_photons, settings, tables)
    tally = problem.empty_tally()
    n_new, seconds, records = _run_problem(problem, tally, progress)
    info = {"source": "beam", "n_photons": tally.n_primaries, "backend": backend_info(problem.settings),
            "batches": records}
    return _finish(phantom, tally, problem.settings, seconds, n_new, None, info)


def settings_dict(settings: MCSettings) -> dict:
    """Plain dictionary of the settings (for provenance)."""
    return asdict(settings)
