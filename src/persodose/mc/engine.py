"""The Monte Carlo engine: phantoms, runs in batches, dose, uncertainty and energy balance.

A run is split into ``n_batches`` independent batches, each seeded from ``(seed, batch)``
and made of chunks with their own random streams. Batch tallies are accumulated as running
sums of the energy deposited per decay and of its square, so that

* the relative standard uncertainty of each voxel is the standard error of the batch
  means (the batch method, e.g. Walters, Kawrakow & Rogers, Med. Phys. 29 (2002) 2745);
* a run can be saved after any batch and resumed, and runs with different seeds can be
  merged (:class:`Tally`).

Absorbed dose: ``D = E_dep / m`` with ``E_dep`` in J (1 MeV = 1.602176634e-13 J, exact SI)
and ``m = rho V``. Per decay for a unit source, absolute with the number of decays of a
time-integrated activity (1 Bq s = 1 decay).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from persodose.errors import GeometryError, InputError, MaterialError
from persodose.grid import Grid, Kind
from persodose.mc import transport as tr
from persodose.mc.sources import decay_tables, voxel_source
from persodose.mc.tables import TransportSettings, TransportTables, build_tables
from persodose.physics.materials import Material

#: 1 MeV in joules (SI 2019, exact).
MEV_TO_J = 1.602176634e-13
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


@dataclass
class MCSettings:
    """Settings of a Monte Carlo run (serialised into its provenance)."""

    n_batches: int = 10  #: independent batches (uncertainty from their spread)
    chunks_per_batch: int = 32  #: parallel work units per batch, each with its own random stream
    seed: int = 12345  #: master seed
    transport: TransportSettings = field(default_factory=TransportSettings)

    def __post_init__(self) -> None:
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
        self.batch_ids.append(list(batch_id))

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
        np.savez_compressed(path, sum_mev=self.sum_mev, sum2_mev2=self.sum2_mev2, counters=self.counters,
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


def _kernel_tables(tables: TransportTables, phantom: VoxelPhantom):
    t = tables.settings
    settings_f = np.array([t.photon_cut_mev, t.electron_cut_mev, t.hard_collision_cut_mev, t.brems_cut_mev,
                           t.max_eloss_fraction, t.max_step_lambda1], dtype=np.float64)
    majorant = tables.majorant_per_mm(phantom.max_density_per_material())
    return settings_f, majorant


def _geometry(phantom: VoxelPhantom):
    nz, ny, nx = phantom.density.shape
    sz, sy, sx = phantom.density.spacing_zyx_mm
    dens = np.ascontiguousarray(phantom.density.array, dtype=np.float64).ravel()
    mat = np.ascontiguousarray(phantom.materials.array, dtype=np.int64).ravel()
    return nz, ny, nx, float(sz), float(sy), float(sx), dens, mat


def _split(n: int, parts: int) -> np.ndarray:
    base = np.full(parts, n // parts, dtype=np.int64)
    base[: n % parts] += 1
    return base


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
    rate = n_new / seconds if seconds > 0 else float("inf")
    return MCResult(e_grid, d_grid, dose_abs, unc, tally, tally.energy_balance(), seconds, rate, settings, info)


class _Workspace:
    """Per-thread tallies and particle stacks, reused across batches."""

    def __init__(self, n_vox: int):
        import numba

        self.n_threads = numba.get_num_threads()
        self.edep = np.zeros((self.n_threads, n_vox))
        self.ctr = np.zeros((self.n_threads, tr.C_N))
        self.stacks = np.zeros((self.n_threads, tr.STACK_SIZE, 8))

    def reset(self) -> None:
        self.edep[:] = 0.0
        self.ctr[:] = 0.0


def _run_batches(phantom, tally, settings, n_primaries, launch, progress=None, checkpoint: Path | None = None):
    """Run the batches not yet in ``tally``; ``launch(ws, stream0, per_chunk)`` runs one batch."""
    n_b = int(settings.n_batches)
    ws = _Workspace(phantom.density.array.size)
    per_batch = _split(int(n_primaries), n_b)
    done = {tuple(b) for b in tally.batch_ids}
    n_new = 0
    t0 = time.perf_counter()
    for b in range(n_b):
        if (int(settings.seed), b) in done:
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
        resume: a tally from an interrupted run with the same settings; its batches are kept.
        checkpoint: a ``.npz`` file the tally is saved to after every batch.
        progress: callable ``(batches_done, batches_total)``.

    Returns:
        :class:`MCResult`; ``dose_gy`` is absolute when ``source`` is a TIA (Bq s).

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
    tables = tables or build_tables(phantom.material_list, ts)
    settings_f, majorant = _kernel_tables(tables, phantom)
    nz, ny, nx, sz, sy, sx, dens, mat = _geometry(phantom)
    tally = resume or Tally.empty(dens.size)
    if tally.sum_mev.size != dens.size:
        raise GeometryError("the resumed tally was made on another grid")

    def launch(ws, stream0, per_chunk):
        tr.run_decays(np.uint64(settings.seed), stream0, per_chunk, src_index, src_cdf, nz, ny, nx, sz, sy, sx,
                      dens, mat, dt.local_mev, dt.beta_yields, dt.beta_minus_e, dt.beta_minus_cdf, dt.beta_plus_e,
                      dt.beta_plus_cdf, dt.line_kind, dt.line_e, dt.line_cum, dt.line_total,
                      tables.log_emin, tables.inv_dlog, tables.energy_mev.size, tables.photon, majorant,
                      tables.compton_sf, tables.rayleigh_cum, tables.x_nodes, tables.electron, settings_f,
                      bool(ts.range_rejection), ws.edep, ws.ctr, ws.stacks)

    n_new, seconds = _run_batches(phantom, tally, settings, n_decays, launch, progress,
                                  Path(checkpoint) if checkpoint else None)
    total = float(src.sum()) if source.kind is Kind.TIA else None
    info = {"nuclide": dt.nuclide, "mean_emitted_mev_per_decay": dt.mean_emitted_mev,
            "n_decays": tally.n_primaries, "total_decays_of_source": total}
    return _finish(phantom, tally, settings, seconds, n_new, total, info)


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
    settings = settings or MCSettings()
    kinds = {"photon": tr.PHOTON, "electron": tr.ELECTRON, "positron": tr.POSITRON}
    if particle not in kinds:
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
    if e_nodes.min() <= 0 or e_nodes.max() > ts.emax_mev:
        raise InputError(f"particle energies must lie within (0, {ts.emax_mev}] MeV")
    nz, ny, nx, sz, sy, sx, dens, mat = _geometry(phantom)
    if position_xyz_mm is None:
        pos = np.array([nx * sx / 2.0, ny * sy / 2.0, nz * sz / 2.0])
    else:
        pos = np.asarray(position_xyz_mm, dtype=np.float64)
    if not (0 <= pos[0] < nx * sx and 0 <= pos[1] < ny * sy and 0 <= pos[2] < nz * sz):
        raise InputError("the source position lies outside the phantom")
    isotropic = direction_xyz is None
    d = np.array([0.0, 0.0, 1.0]) if isotropic else np.asarray(direction_xyz, dtype=np.float64)
    d = d / np.linalg.norm(d)
    tables = tables or build_tables(phantom.material_list, ts)
    settings_f, majorant = _kernel_tables(tables, phantom)
    tally = Tally.empty(dens.size)

    def launch(ws, stream0, per_chunk):
        tr.run_particles(np.uint64(settings.seed), stream0, per_chunk, kinds[particle], e_nodes, e_cdf, pos, d,
                         isotropic, nz, ny, nx, sz, sy, sx, dens, mat, tables.log_emin, tables.inv_dlog,
                         tables.energy_mev.size, tables.photon, majorant, tables.compton_sf, tables.rayleigh_cum,
                         tables.x_nodes, tables.electron, settings_f, bool(ts.range_rejection), ws.edep, ws.ctr,
                         ws.stacks)

    n_new, seconds = _run_batches(phantom, tally, settings, n_particles, launch)
    info = {"particle": particle, "n_particles": tally.n_primaries}
    return _finish(phantom, tally, settings, seconds, n_new, None, info)


def settings_dict(settings: MCSettings) -> dict:
    """Plain dictionary of the settings (for provenance)."""
    return asdict(settings)
