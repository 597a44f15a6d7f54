"""Dose-volume histograms and dose-volume statistics.

Conventions (ICRU Report 83, "Prescribing, recording, and reporting photon-beam
intensity-modulated radiation therapy", J ICRU 10(1), 2010, section 3.2):

* ``D_x`` is the dose received by at least ``x`` % of the volume: the *minimum* dose in the
  hottest ``x`` % of the volume. Hence ``D98 <= D50 <= D2``; ``D_near-max = D2``,
  ``D_near-min = D98``.
* ``V(d)`` is the percentage of the volume that receives at least ``d``.
* The cumulative DVH gives ``V(d)`` as a function of ``d``; the differential DVH gives the
  percentage of the volume in each dose bin.

Applied to a dose-*rate* map the same statistics are the dose-rate-volume-histogram (DRVH)
statistics of DblurDoseNet (Li et al., Med Phys 49:1216, 2022, doi:10.1002/mp.15397, section
"Evaluation in Test Phantoms", "Dose-rate error"): DR10, DR30, DR70 and DR90 are "the
minimum dose-rate to 10 %, 30 %, 70 %, 90 % of the VOI", i.e. ``D_x`` of the dose-rate
map with ``x`` = 10, 30, 70, 90.

Every voxel of a grid has the same volume, so volume fractions are voxel-count fractions.
Doses are in the unit of the grid (Gy for dose, Gy/s for dose rate).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from persodose.errors import InputError
from persodose.outputs import atomic_file

#: DRVH percentages of DblurDoseNet (Li et al. 2022, "Evaluation in Test Phantoms").
DRVH_PERCENTS = (10.0, 30.0, 70.0, 90.0)
#: Near-maximum, median and near-minimum dose percentages (ICRU 83, section 3.2).
ICRU_PERCENTS = (2.0, 50.0, 98.0)


def dose_at_volume(values: np.ndarray, percent: float | Sequence[float]) -> float | np.ndarray:
    """``D_x``: the minimum dose in the hottest ``x`` % of the voxels.

    With the ``n`` voxel doses sorted in decreasing order ``d_(1) >= ... >= d_(n)``,
    ``D_x = d_(k)`` with ``k = max(1, ceil(x n / 100))``: the hottest ``k`` voxels hold at least
    ``x`` % of the volume and all receive at least ``d_(k)``. No interpolation, so for a
    uniform organ every ``D_x`` equals the uniform dose.

    Args:
        values: doses of the voxels of one structure (any shape, flattened).
        percent: ``x`` in percent, scalar or sequence, each in ``[0, 100]``.

    Returns:
        A float for a scalar ``percent``, otherwise an array of the same length.
    """
    v = np.sort(np.asarray(values, dtype=np.float64).reshape(-1))[::-1]
    if v.size == 0:
        raise InputError("cannot compute a dose-volume statistic of an empty structure")
    p = np.asarray(percent, dtype=np.float64)
    if np.any(p < 0) or np.any(p > 100):
        raise InputError(f"volume percentages must lie in [0, 100], got {percent!r}")
    # A tiny tolerance keeps exact fractions (x n / 100 integral) from rounding up.
    k = np.maximum(1, np.ceil(p * v.size / 100.0 - 1e-9)).astype(int)
    out = v[k - 1]
    return float(out) if np.ndim(out) == 0 else out


def volume_at_dose(values: np.ndarray, dose: float | Sequence[float]) -> float | np.ndarray:
    """``V(d)``: percentage of the voxels whose dose is at least ``d`` (same unit as values)."""
    v = np.sort(np.asarray(values, dtype=np.float64).reshape(-1))
    if v.size == 0:
        raise InputError("cannot compute a dose-volume statistic of an empty structure")
    d = np.asarray(dose, dtype=np.float64)
    out = 100.0 * (v.size - np.searchsorted(v, d, side="left")) / v.size
    return float(out) if np.ndim(out) == 0 else out


@dataclass(frozen=True)
class DVH:
    """Dose-volume histogram of one structure.

    Attributes:
        name: structure name.
        edges: bin edges, shape ``(n_bins + 1,)``, in ``unit``.
        differential_percent: percentage of the volume with dose in ``[edges[i], edges[i+1])``
            (the last bin is closed), shape ``(n_bins,)``; sums to 100 when the bins cover all
            doses.
        cumulative_percent: ``V(edges[i])``, percentage of the volume with dose >= ``edges[i]``,
            shape ``(n_bins + 1,)``; non-increasing, 100 at ``edges[0]`` when it is <= the
            minimum dose.
        volume_ml: volume of the structure, mL (NaN if the voxel volume is unknown).
        n_voxels: number of voxels.
        unit: dose unit.
    """

    name: str
    edges: np.ndarray
    differential_percent: np.ndarray
    cumulative_percent: np.ndarray
    volume_ml: float
    n_voxels: int
    unit: str = "Gy"

    @property
    def centres(self) -> np.ndarray:
        return 0.5 * (self.edges[1:] + self.edges[:-1])


def dvh_edges(max_dose: float, n_bins: int = 200, bin_width: float | None = None,
              min_dose: float = 0.0) -> np.ndarray:
    """Bin edges from ``min(min_dose, 0)`` to just above ``max_dose``.

    Either ``n_bins`` equal bins or bins of ``bin_width`` (same unit as the dose).
    """
    lo = min(0.0, float(min_dose))
    hi = float(max_dose)
    if not np.isfinite(hi) or not np.isfinite(lo):
        raise InputError("dose range for the DVH is not finite")
    if hi <= lo:
        hi = lo + 1.0
    if bin_width is not None:
        if bin_width <= 0:
            raise InputError(f"DVH bin width must be positive, got {bin_width}")
        n = int(np.ceil((hi - lo) / bin_width - 1e-9))
        n = max(n, 1)
        if lo + n * bin_width < hi:
            n += 1
        return lo + bin_width * np.arange(n + 1)
    if int(n_bins) < 1:
        raise InputError(f"DVH needs at least one bin, got {n_bins}")
    return np.linspace(lo, hi, int(n_bins) + 1)


def dvh(values: np.ndarray, edges: np.ndarray, name: str = "", voxel_volume_ml: float = float("nan"),
        unit: str = "Gy") -> DVH:
    """Cumulative and differential DVH of the voxel doses ``values`` on the bins ``edges``.

    The differential DVH is ``numpy.histogram`` of the doses in percent of the voxel count;
    the cumulative DVH is computed exactly at each edge from the sorted doses, so it is
    non-increasing and independent of the bin width.
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0:
        raise InputError(f"structure {name!r} has no voxel: no DVH")
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or e.size < 2 or np.any(np.diff(e) <= 0):
        raise InputError("DVH edges must be a strictly increasing 1-D array of >= 2 values")
    counts, _ = np.histogram(v, bins=e)
    diff = 100.0 * counts / v.size
    cum = np.asarray(volume_at_dose(v, e), dtype=np.float64)
    return DVH(name=name, edges=e, differential_percent=diff, cumulative_percent=cum,
               volume_ml=float(v.size * voxel_volume_ml), n_voxels=int(v.size), unit=unit)


def dvhs_for_labels(dose, labels, names: Mapping[int, str] | None = None, n_bins: int = 200,
                    bin_width: float | None = None) -> dict[str, DVH]:
    """DVHs of every labelled structure on common bin edges.

    Args:
        dose: dose (or dose-rate) :class:`~persodose.grid.Grid`.
        labels: label :class:`~persodose.grid.Grid` on the same geometry.
        names: label value -> structure name; default: every non-zero label present,
            named ``label_<value>``. Labels absent from the map are skipped.
        n_bins, bin_width: see :func:`dvh_edges`; the range is 0 to the maximum dose over
            all the structures.

    Returns:
        ``{name: DVH}`` in label order.
    """
    from persodose.metrics.organ import label_masks  # local import: organ imports dvh

    d = dose.array.astype(np.float64)
    masks = label_masks(dose, labels, names)
    masks = {k: m for k, m in masks.items() if m[1].any()}
    if not masks:
        raise InputError("no labelled structure found in the label map")
    vmax = max(float(d[m].max()) for _, m in masks.values())
    vmin = min(float(d[m].min()) for _, m in masks.values())
    edges = dvh_edges(vmax, n_bins=n_bins, bin_width=bin_width, min_dose=vmin)
    return {name: dvh(d[m], edges, name=name, voxel_volume_ml=dose.voxel_volume_ml, unit=dose.unit)
            for name, m in masks.values()}


def write_dvh_csv(dvhs: Mapping[str, DVH] | Iterable[DVH], path: str | os.PathLike,
                  kind: str = "cumulative") -> None:
    """Write DVHs sharing their bin edges as one CSV (atomically).

    Columns: ``dose_<unit>`` then one column per structure, ``<name>_percent``. For
    ``kind="cumulative"`` the rows are the bin edges and the values ``V(d)`` in %; for
    ``kind="differential"`` the rows are the bin centres and the values the % volume per bin.
    """
    items = list(dvhs.values()) if isinstance(dvhs, Mapping) else list(dvhs)
    if not items:
        raise InputError("no DVH to write")
    e0 = items[0].edges
    for h in items[1:]:
        if h.edges.shape != e0.shape or not np.allclose(h.edges, e0):
            raise InputError("DVHs written to one CSV must share their bin edges")
    if kind == "cumulative":
        x = e0
        cols = [h.cumulative_percent for h in items]
    elif kind == "differential":
        x = items[0].centres
        cols = [h.differential_percent for h in items]
    else:
        raise InputError(f"unknown DVH kind {kind!r}; use cumulative or differential")
    unit = _unit_token(items[0].unit)
    with atomic_file(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([f"dose_{unit}"] + [f"{h.name}_percent" for h in items])
        for i in range(x.size):
            w.writerow([f"{x[i]:.6g}"] + [f"{c[i]:.6g}" for c in cols])


def dvh_figure(dvhs: Mapping[str, DVH] | Iterable[DVH], kind: str = "cumulative",
               title: str | None = None):
    """A matplotlib ``Figure`` with the cumulative (or differential) DVH of several structures."""
    from matplotlib.figure import Figure

    items = list(dvhs.values()) if isinstance(dvhs, Mapping) else list(dvhs)
    fig = Figure(figsize=(6.0, 4.0), layout="constrained")
    ax = fig.add_subplot()
    for h in items:
        if kind == "cumulative":
            ax.plot(h.edges, h.cumulative_percent, label=h.name)
        elif kind == "differential":
            ax.step(h.centres, h.differential_percent, where="mid", label=h.name)
        else:
            raise InputError(f"unknown DVH kind {kind!r}; use cumulative or differential")
    unit = items[0].unit if items else "Gy"
    quantity = "dose rate" if "/s" in unit else "dose"
    ax.set_xlabel(f"{quantity} ({unit})")
    ax.set_ylabel("volume (%)" if kind == "cumulative" else "volume per bin (%)")
    if kind == "cumulative":
        ax.set_ylim(0, 105)
    ax.grid(alpha=0.3)
    if items:
        ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return fig


def _unit_token(unit: str | None) -> str:
    """A unit as a column-name token: ``Gy/s`` -> ``Gy_per_s``, ``Bq s`` -> ``Bq_s``."""
    u = (unit or "").strip()
    if not u:
        return "value"
    return u.replace("/", "_per_").replace(" ", "_")
