"""Tallies: the outcome of one batch, the running sums over batches, and a run's result.

Batch tallies are accumulated as running sums of the energy deposited per primary and of
its square, so that the relative standard uncertainty of each voxel is the standard error
of the batch means (the batch method, e.g. Walters, Kawrakow & Rogers, Med. Phys. 29 (2002)
2745), a run can be saved after any batch and resumed, and runs with different seeds can be
merged (:class:`Tally`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from persodose.errors import GeometryError, InputError
from persodose.grid import Grid
from persodose.mc import transport as tr
from persodose.mc.settings import MCSettings
from persodose.outputs import jsonable


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


_json_safe = jsonable  # the package's one JSON conversion (persodose.outputs.jsonable)
