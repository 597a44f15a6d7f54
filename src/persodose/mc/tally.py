"""Tallies: the outcome of one batch, the running sums over batches, and a run's result.

Batch tallies are accumulated as running sums of the energy deposited per primary and of
its square, so that the relative standard uncertainty of each voxel is the standard error
of the batch means (the batch method, e.g. Walters, Kawrakow & Rogers, Med. Phys. 29 (2002)
2745), a run can be saved after any batch and resumed, and runs with different seeds can be
merged (:class:`Tally`).

A run may stop at a target uncertainty instead of a fixed number of primaries
(:class:`UncertaintyTarget`): the median voxel uncertainty over the voxels above a fraction
of the maximum dose, or the uncertainty of the mean dose in a region, whose per-batch
energies the tally keeps (:meth:`Tally.track_region`) because the uncertainty of a sum over
voxels needs the batches' sums, not the voxels' variances (neighbouring voxels are
correlated).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from persodose.errors import GeometryError, InputError
from persodose.grid import Grid
from persodose.mc import transport as tr
from persodose.mc.settings import MCSettings
from persodose.outputs import jsonable

#: Voxels below this density (air around and inside the body) are left out of the voxel
#: criterion of a target uncertainty: their dose per mass is noisy and no tissue's, g/cm3.
TARGET_AIR_DENSITY_G_CM3 = 0.05


def parse_relative_uncertainty(value, what: str = "target uncertainty") -> float:
    """A relative uncertainty from ``"2%"``, ``"2 %"``, ``"0.02"`` or a number (0.02).

    Returns:
        The relative value, strictly between 0 and 1.

    Raises:
        InputError: not a number, NaN, <= 0 or >= 100 % (one line naming ``what``).
    """
    text = str(value).strip()
    percent = text.endswith("%")
    try:
        v = float(text[:-1].strip() if percent else text)
    except ValueError:
        raise InputError(f"{what} {value!r} is not a number: write e.g. 2% or 0.02") from None
    if percent:
        v /= 100.0
    if not (math.isfinite(v) and 0.0 < v < 1.0):
        raise InputError(f"{what} {value!r} must lie above 0 and below 100 % (e.g. 2% or 0.02)")
    return v



def region_mask(labels, names: dict, region: str) -> np.ndarray:
    """The (z, y, x) mask of the label called ``region`` in ``labels`` (a label :class:`Grid`).

    Raises:
        InputError: no labels, a name that is not among them, or a label with no voxel.
    """
    if labels is None:
        raise InputError(f"target region {region!r} needs a label map (--labels)")
    values = [k for k, v in names.items() if str(v) == str(region)]
    if not values:
        known = ", ".join(sorted(str(v) for v in names.values())) or "none"
        raise InputError(f"target region {region!r} is not a label name (labels: {known})")
    mask = np.isin(np.asarray(labels.array), values)
    if not mask.any():
        raise InputError(f"target region {region!r} holds no voxel on the dose grid")
    return mask

@dataclass(frozen=True, eq=False)
class UncertaintyTarget:
    """When a run may stop: a relative standard uncertainty to reach (the batch method).

    The criterion (checked after every batch, once ``min_batches`` are in) is either

    * the median relative uncertainty of the voxels whose dose (energy over mass; voxels
      below :data:`TARGET_AIR_DENSITY_G_CM3` left out) is at least ``above_fraction`` of the
      maximum dose, or
    * with ``region_mask``, the relative uncertainty of the region's mean dose (energy
      deposited in the region over its mass: the organ dose of ICRP and MIRD), from the
      spread of the batches' region energies.

    Attributes:
        relative: the target, e.g. 0.02 for 2 % (strings like ``"2%"`` are accepted).
        above_fraction: voxel criterion: the dose threshold as a fraction of the maximum.
        region_name: the region's name (provenance, messages).
        region_mask: (z, y, x) or flat boolean mask of the region on the phantom's grid.
        min_batches: batches before the criterion is trusted (a spread of 2 batches is
            meaningless).
    """

    relative: float
    above_fraction: float = 0.1
    region_name: str | None = None
    region_mask: np.ndarray | None = None
    min_batches: int = 5

    def __post_init__(self) -> None:
        object.__setattr__(self, "relative", parse_relative_uncertainty(self.relative))
        a = self.above_fraction
        if not (isinstance(a, (int, float)) and math.isfinite(a) and 0.0 <= a < 1.0):
            raise InputError(f"target-above fraction must lie within [0, 1), got {a!r}")
        if int(self.min_batches) < 2:
            raise InputError("a target uncertainty needs at least 2 batches before it is trusted")
        if self.region_mask is not None:
            mask = np.asarray(self.region_mask).astype(bool).ravel()
            if not mask.any():
                raise InputError(f"target region {self.region_name or ''} holds no voxel".replace("  ", " "))
            object.__setattr__(self, "region_mask", mask)
            object.__setattr__(self, "region_name", str(self.region_name or "region"))
        elif self.region_name is not None:
            raise InputError(f"target region {self.region_name!r} needs its mask (a label map)")

    @property
    def region_key(self) -> str | None:
        """The name under which the tally keeps the region's per-batch energies (name and mask digest)."""
        if self.region_mask is None:
            return None
        digest = hashlib.sha1(np.packbits(self.region_mask).tobytes()).hexdigest()[:12]
        return f"{self.region_name}#{digest}"

    def metric(self) -> str:
        """The criterion in words."""
        if self.region_mask is not None:
            return f"relative uncertainty of the mean dose in {self.region_name}"
        return f"median voxel relative uncertainty above {100 * self.above_fraction:g} % of the maximum dose"

    def achieved(self, tally: "Tally", density_g_cm3: np.ndarray) -> float:
        """The criterion's value for ``tally`` (``inf`` while it cannot be told)."""
        if self.region_mask is not None:
            return tally.region_relative_uncertainty(self.region_key)
        return voxel_median_uncertainty(tally, density_g_cm3, self.above_fraction)


def voxel_median_uncertainty(tally: "Tally", density_g_cm3: np.ndarray, above_fraction: float) -> float:
    """Median relative uncertainty of the voxels with dose >= ``above_fraction`` x the maximum.

    Dose is taken as energy over density (all voxels have the same volume); voxels below
    :data:`TARGET_AIR_DENSITY_G_CM3` are left out unless every voxel is that light.
    Returns ``inf`` before two batches or when nothing was deposited.
    """
    if tally.n_batches < 2:
        return math.inf
    rho = np.asarray(density_g_cm3, dtype=np.float64).ravel()
    body = rho >= TARGET_AIR_DENSITY_G_CM3
    if not body.any():
        body = rho > 0
    mean = tally.mean_mev()
    dose = np.zeros(mean.shape)
    np.divide(mean, rho, out=dose, where=body)
    top = float(dose.max()) if dose.size else 0.0
    if not top > 0:
        return math.inf
    sel = dose >= float(above_fraction) * top
    if above_fraction == 0:
        sel &= dose > 0
    return float(np.median(tally.relative_uncertainty()[sel]))


@dataclass
class TargetOutcome:
    """How a run with a target uncertainty ended (for provenance and the console).

    Attributes:
        target: the relative uncertainty aimed at; achieved: the criterion's value at the end.
        met: whether it was reached; metric: the criterion in words; region: its name or None.
        n_batches / n_primaries: batches and primaries in the tally at the end.
        batches_limit / primaries_limit: the most the run could have done.
    """

    target: float
    achieved: float
    met: bool
    metric: str
    region: str | None
    above_fraction: float | None
    n_batches: int
    n_primaries: int
    batches_limit: int
    primaries_limit: int
    min_batches: int

    def record(self) -> dict:
        return _json_safe(asdict(self))

    def summary(self, what: str = "primaries") -> str:
        """One line: met or not, the value reached and at how many primaries."""
        a = self.achieved
        got = "n/a" if a is None or not math.isfinite(a) else f"{100 * a:.3g} %"
        if self.met:
            return (f"target uncertainty {100 * self.target:.3g} % met ({self.metric}: {got}) after "
                    f"{self.n_primaries:.4g} {what} in {self.n_batches} batches "
                    f"(limit {self.primaries_limit:.4g} in {self.batches_limit})")
        return (f"target uncertainty {100 * self.target:.3g} % not met: {self.metric} is {got} at the limit of "
                f"{self.n_primaries:.4g} {what} in {self.n_batches} batches; the results have that uncertainty "
                f"(give more {what} to reach the target)")


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
        control_mev: with the decays' control variate, (n_vox,) per primary what the control
            took back from each voxel less its expectation (``D``, mean zero): the voxel's plain
            estimate is ``energy_per_primary_mev + control_mev``; None without the control.
    """

    batch_id: tuple[int, int]
    energy_per_primary_mev: np.ndarray
    counters_per_primary: np.ndarray
    n_primaries: int
    n_threads: int = 1
    seconds: float = 0.0
    host: str = ""
    control_mev: np.ndarray | None = None

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
        region_sums: per tracked region (:meth:`track_region`), the energy per primary
            deposited in it by each batch, MeV, in ``batch_ids`` order.
        batch_sizes: primaries of each batch, in ``batch_ids`` order (empty in tallies saved
            before it was recorded).
        problem: what the batches were simulated with (:meth:`persodose.mc.problem.MCProblem.signature`:
            source, transport and emissions); a resumed run must match it.
        control_sum_mev, control_sum2_mev2, control_cross_mev2: with the decays' control
            variate, the sums over batches of each voxel's ``D`` (:attr:`BatchResult.control_mev`),
            of ``D^2`` and of ``C D`` (``C`` the controlled estimate): enough for the mean and
            the batch variance of the plain estimate ``C + D`` too. None without the control.
        control_share: (n_vox,) the activity share of each voxel the control applies to (0
            elsewhere), set by the run (:meth:`persodose.mc.problem.MCProblem.check_tally`);
            not saved (the problem gives it again).
        control_min_decays: a voxel keeps the controlled estimate when it expects at least this
            many of the decays done (``control_share * n_primaries``), else its plain estimate
            is reported (:meth:`plain_voxels`).

    The rule of :attr:`control_min_decays` is judged on the decays actually done, after any
    batch: a run stopped early at a target uncertainty is treated as a run of that many decays
    would be. Both estimates are unbiased and the choice depends on no sampled value (only on
    how many batches are in), so the mean stays unbiased. The tracked regions' sums
    (:meth:`track_region`) are those of the controlled estimate.
    """

    sum_mev: np.ndarray
    sum2_mev2: np.ndarray
    n_batches: int = 0
    n_primaries: int = 0
    batch_ids: list = field(default_factory=list)
    counters: np.ndarray = field(default_factory=lambda: np.zeros(tr.C_N))
    region_sums: dict = field(default_factory=dict)
    batch_sizes: list = field(default_factory=list)
    problem: dict = field(default_factory=dict)
    control_sum_mev: np.ndarray | None = None
    control_sum2_mev2: np.ndarray | None = None
    control_cross_mev2: np.ndarray | None = None
    control_share: np.ndarray | None = None
    control_min_decays: float = 0.0

    def plain_voxels(self) -> np.ndarray | None:
        """Boolean (n_vox,) of the voxels whose plain estimate is reported (None: none, no control)."""
        if self.control_sum_mev is None or self.control_share is None:
            return None
        return self.control_share * float(self.n_primaries) < self.control_min_decays

    def _sums(self) -> tuple[np.ndarray, np.ndarray]:
        """Per voxel, the sums over batches of the reported estimate and of its square."""
        plain = self.plain_voxels()
        if plain is None or not plain.any():
            return self.sum_mev, self.sum2_mev2
        d, d2, cd = self.control_sum_mev, self.control_sum2_mev2, self.control_cross_mev2
        return (np.where(plain, self.sum_mev + d, self.sum_mev),
                np.where(plain, self.sum2_mev2 + 2.0 * cd + d2, self.sum2_mev2))

    def track_region(self, key: str, mask: np.ndarray) -> None:
        """Keep, from now on, each batch's energy deposited in the voxels of ``mask`` under ``key``.

        Raises:
            InputError: the tally already holds batches without that region's sums (a
                checkpoint of a run without this target region), or the mask is of another grid.
        """
        mask = np.asarray(mask).astype(bool).ravel()
        if mask.size != self.sum_mev.size:
            raise GeometryError(f"the target region has {mask.size} voxels, the tally {self.sum_mev.size}")
        have = self.region_sums.get(key)
        if have is None and self.n_batches:
            name = key.split("#")[0]
            raise InputError(f"the resumed tally holds {self.n_batches} batches without the energies of target region "
                             f"{name} (made without it, or with another label map): resume with the target it "
                             "was started with, or start a new run")
        if have is not None and len(have) != self.n_batches:
            raise InputError(f"the resumed tally's sums of region {key.split('#')[0]} do not match its batches")
        self.region_sums.setdefault(key, [])
        self.__dict__.setdefault("_tracked", {})[key] = np.flatnonzero(mask)

    def region_relative_uncertainty(self, key: str) -> float:
        """Relative standard uncertainty of the region's mean energy per primary (``inf`` before 2 batches).

        The standard error of the batches' region energies over their mean: the batch method
        applied to the region's sum, which carries the voxels' correlations.
        """
        x = np.asarray(self.region_sums.get(key, []), dtype=np.float64)
        if x.size < 2:
            return math.inf
        mean = float(x.mean())
        if not mean > 0:
            return math.inf
        return float(x.std(ddof=1) / math.sqrt(x.size) / mean)

    @classmethod
    def empty(cls, n_vox: int) -> "Tally":
        return cls(np.zeros(n_vox), np.zeros(n_vox))

    def add_batch(self, per_primary_mev: np.ndarray, counters_per_primary: np.ndarray, n: int, batch_id,
                  control_mev: np.ndarray | None = None) -> None:
        if (control_mev is None) != (self.control_sum_mev is None) and self.n_batches:
            raise InputError("cannot add a batch " + ("with" if control_mev is not None else "without") +
                             " the control variate's second tally to a tally " +
                             ("without" if control_mev is not None else "with") + " it (a checkpoint of an "
                             "older persodose, or of other settings): start a new run")
        if control_mev is not None:
            if self.control_sum_mev is None:
                self.control_sum_mev = np.zeros_like(self.sum_mev)
                self.control_sum2_mev2 = np.zeros_like(self.sum_mev)
                self.control_cross_mev2 = np.zeros_like(self.sum_mev)
            self.control_sum_mev += control_mev
            self.control_sum2_mev2 += control_mev * control_mev
            self.control_cross_mev2 += per_primary_mev * control_mev
        tracked = self.__dict__.get("_tracked", {})
        for key in [k for k in self.region_sums if k not in tracked]:
            del self.region_sums[key]  # not followed in this run: it would no longer match the batches
        for key, idx in tracked.items():
            self.region_sums[key].append(float(per_primary_mev[idx].sum()))
        self.sum_mev += per_primary_mev
        self.sum2_mev2 += per_primary_mev * per_primary_mev
        self.counters += counters_per_primary
        if len(self.batch_sizes) == self.n_batches:  # recorded from the first batch on
            self.batch_sizes.append(int(n))
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
                       result.batch_id, result.control_mev)

    def merge(self, other: "Tally") -> "Tally":
        """Combine two tallies of the same problem with different seeds (batches must differ)."""
        if self.sum_mev.shape != other.sum_mev.shape:
            raise GeometryError("cannot merge tallies of different grids")
        overlap = {tuple(b) for b in self.batch_ids} & {tuple(b) for b in other.batch_ids}
        if overlap:
            raise InputError(f"cannot merge tallies that share batches {sorted(overlap)[:3]}: use another seed")
        regions = {k: list(v) + list(other.region_sums[k]) for k, v in self.region_sums.items()
                   if k in other.region_sums}
        if self.problem and other.problem and self.problem != other.problem:
            raise InputError("cannot merge tallies of different problems (source, transport or emissions differ)")
        sizes = (self.batch_sizes + other.batch_sizes
                 if len(self.batch_sizes) == self.n_batches and len(other.batch_sizes) == other.n_batches else [])
        if (self.control_sum_mev is None) != (other.control_sum_mev is None) and self.n_batches and other.n_batches:
            raise InputError("cannot merge a tally with the control variate's second tally and one without")

        def both(a, b):
            return None if a is None and b is None else (b if a is None else (a if b is None else a + b))

        merged = Tally(self.sum_mev + other.sum_mev, self.sum2_mev2 + other.sum2_mev2,
                       self.n_batches + other.n_batches, self.n_primaries + other.n_primaries,
                       self.batch_ids + other.batch_ids, self.counters + other.counters, regions, sizes,
                       dict(self.problem or other.problem), both(self.control_sum_mev, other.control_sum_mev),
                       both(self.control_sum2_mev2, other.control_sum2_mev2),
                       both(self.control_cross_mev2, other.control_cross_mev2),
                       self.control_share if self.control_share is not None else other.control_share,
                       max(self.control_min_decays, other.control_min_decays))
        tracked = {k: v for k, v in self.__dict__.get("_tracked", {}).items() if k in regions}
        if tracked:
            merged.__dict__["_tracked"] = tracked  # keep following the regions both tallies have
        return merged

    def mean_mev(self) -> np.ndarray:
        """Energy deposited per primary, MeV (mean over batches; the plain estimate in
        :meth:`plain_voxels`)."""
        return self._sums()[0] / max(self.n_batches, 1)

    def relative_uncertainty(self) -> np.ndarray:
        """Relative standard uncertainty of the mean, per voxel (0 where nothing was deposited;
        ``inf`` where the mean is not positive but the batches differ, which only the decays'
        control variate can give, :func:`persodose.mc.transport.decay_chunk`)."""
        b = self.n_batches
        if b < 2:
            return np.full(self.sum_mev.shape, np.inf)
        total, total2 = self._sums()
        mean = total / b
        var = np.clip(total2 / b - mean * mean, 0.0, None) * b / (b - 1)
        se = np.sqrt(var / b)
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(mean > 0, se / mean, np.where(se > 0, np.inf, 0.0))
        return rel

    def energy_balance(self) -> dict[str, float]:
        """Energy per primary, MeV: emitted + annihilation = deposited + escaped."""
        c = self.counters / max(self.n_batches, 1)
        plain = self.plain_voxels()
        if plain is not None and plain.any():
            # the plain voxels' sampled emissions replace their expectation in both counters
            shift = float(self.control_sum_mev[plain].sum()) / max(self.n_batches, 1)
            c = c.copy()
            c[tr.C_DEPOSITED] += shift
            c[tr.C_EMITTED] += shift
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
            control = {} if self.control_sum_mev is None else {
                "control_sum_mev": self.control_sum_mev, "control_sum2_mev2": self.control_sum2_mev2,
                "control_cross_mev2": self.control_cross_mev2}
            np.savez_compressed(fh, sum_mev=self.sum_mev, sum2_mev2=self.sum2_mev2, counters=self.counters,
                                meta=json.dumps({"n_batches": self.n_batches, "n_primaries": self.n_primaries,
                                                 "batch_ids": self.batch_ids, "region_sums": self.region_sums,
                                                 "batch_sizes": self.batch_sizes, "problem": self.problem},
                                                default=str), **control)

    @classmethod
    def load(cls, path: str | Path) -> "Tally":
        try:
            with np.load(path) as f:
                meta = json.loads(str(f["meta"]))
                regions = {str(k): [float(x) for x in v] for k, v in (meta.get("region_sums") or {}).items()}
                control = [f[k].copy() if k in f.files else None
                           for k in ("control_sum_mev", "control_sum2_mev2", "control_cross_mev2")]
                return cls(f["sum_mev"].copy(), f["sum2_mev2"].copy(), int(meta["n_batches"]),
                           int(meta["n_primaries"]), meta["batch_ids"], f["counters"].copy(), regions,
                           [int(v) for v in meta.get("batch_sizes") or []], dict(meta.get("problem") or {}),
                           *control)
        except (OSError, KeyError, ValueError, TypeError, AttributeError) as exc:
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
        source = {k: v for k, v in self.info.items() if k not in ("backend", "batches", "target")}
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
            "target_uncertainty": self.info.get("target"),
            "backend": self.info.get("backend", {"name": "unknown"}),
            "batches_run": self.info.get("batches", []),
            "wall_time_s": float(self.seconds),
            "primaries_per_second": float(self.primaries_per_second),
            "versions": versions(),
        }
        return _json_safe(doc)


_json_safe = jsonable  # the package's one JSON conversion (persodose.outputs.jsonable)
