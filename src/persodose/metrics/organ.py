"""Organ (label) statistics of a dose or dose-rate map.

For every structure of a label map: voxel count, volume, mass (with a density grid),
mean, standard deviation, minimum and maximum, the dose-volume statistics ``D_x`` (ICRU
Report 83, section 3.2: D2 near-maximum, D50 median, D98 near-minimum; plus 10, 30, 70 and
90 %, which on a dose-rate map are the DRVH statistics DR10/DR30/DR70/DR90 of DblurDoseNet,
Li et al., Med Phys 49:1216, 2022, section "Evaluation in Test Phantoms"), ``V(d)`` at
user-given doses and the mass-weighted mean dose.

Column names carry the unit: for a grid in Gy, ``mean_Gy``, ``D2_Gy``, ``V20Gy_percent``;
for a dose-rate grid in Gy/s the statistics are prefixed ``DR`` (``DR10_Gy_per_s``).
The organ mean dose is the mean voxel value inside the structure (SINFONIA D2.2,
"Organ-level dose evaluation"); the mass-weighted mean ``sum(rho_j d_j) / sum(rho_j)`` is
the mean absorbed dose of the structure in the MIRD sense (energy / mass) when voxels differ
in density (MIRD Pamphlet No. 17, Bolch et al., J Nucl Med 40:11S, 1999).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from persodose.errors import InputError
from persodose.grid import Grid, Kind
from persodose.metrics.dvh import DRVH_PERCENTS, ICRU_PERCENTS, _unit_token, dose_at_volume, volume_at_dose
from persodose.outputs import atomic_file, jsonable

#: Percent volumes reported by :func:`organ_table` (ICRU 83 and DblurDoseNet DRVH).
DEFAULT_PERCENTS = tuple(sorted(set(ICRU_PERCENTS) | set(DRVH_PERCENTS)))


def _check_grid(g, what: str) -> Grid:
    if not isinstance(g, Grid):
        raise InputError(f"{what} must be a persodose Grid, got {type(g).__name__}")
    g.check_finite(what)
    return g


def label_masks(dose: Grid, labels: Grid, names: Mapping[int, str] | None = None
                ) -> dict[int, tuple[str, np.ndarray]]:
    """Boolean masks of the structures of a label map.

    Args:
        dose: image the masks will index (its geometry is checked against ``labels``).
        labels: integer label grid (0 = background) on the dose geometry.
        names: label value -> name; default every non-zero label present, named
            ``label_<value>``. A named label absent from the map gets an empty mask.

    Returns:
        ``{label: (name, mask)}`` in increasing label order.

    Raises:
        GeometryError: label map and dose on different geometries.
        InputError: non-integer label values.
    """
    _check_grid(labels, "label map")
    dose.require_same_geometry(labels, "dose and label map")
    lab = np.asarray(labels.array)
    if lab.dtype.kind == "f":
        if not np.all(lab == np.round(lab)):
            raise InputError("label map holds non-integer values")
        lab = lab.astype(np.int64)
    elif lab.dtype.kind == "b":
        lab = lab.astype(np.int64)
    elif lab.dtype.kind not in "iu":
        raise InputError(f"label map must be integer, got dtype {lab.dtype}")
    if names is None:
        present = [int(v) for v in np.unique(lab) if v != 0]
        names = {v: f"label_{v}" for v in present}
    out: dict[int, tuple[str, np.ndarray]] = {}
    for value in sorted(int(k) for k in names):
        out[value] = (str(names[value]), lab == value)
    return out


def structure_stats(values: np.ndarray, unit: str = "Gy", prefix: str = "D",
                    percents: Sequence[float] = DEFAULT_PERCENTS,
                    v_doses: Sequence[float] = (), densities: np.ndarray | None = None,
                    voxel_volume_ml: float = float("nan")) -> dict:
    """Statistics of the voxel doses of one structure (see module doc for the keys).

    Args:
        values: voxel doses, any shape (flattened), ``unit``.
        prefix: ``"D"`` for dose, ``"DR"`` for dose rate.
        percents: volume percentages ``x`` of the ``D_x`` statistics.
        v_doses: doses ``d`` (``unit``) of the ``V(d)`` statistics, in % of the volume.
        densities: voxel densities (g/cm3), same size as ``values``, for the mass and the
            mass-weighted mean.
        voxel_volume_ml: volume of one voxel (mL).

    Returns:
        Flat dict of floats; statistics are NaN for an empty structure.
    """
    u = _unit_token(unit)
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    n = int(v.size)
    row: dict = {"n_voxels": n, "volume_ml": n * voxel_volume_ml}
    if densities is not None:
        rho = np.asarray(densities, dtype=np.float64).reshape(-1)
        row["mass_g"] = float(np.sum(rho) * voxel_volume_ml)
    nan = float("nan")
    row[f"mean_{u}"] = float(np.mean(v)) if n else nan
    row[f"std_{u}"] = float(np.std(v)) if n else nan
    row[f"min_{u}"] = float(np.min(v)) if n else nan
    row[f"max_{u}"] = float(np.max(v)) if n else nan
    dx = dose_at_volume(v, list(percents)) if n and len(percents) else [nan] * len(percents)
    for p, val in zip(percents, np.atleast_1d(dx)):
        row[f"{prefix}{p:g}_{u}"] = float(val)
    vx = volume_at_dose(v, list(v_doses)) if n and len(v_doses) else [nan] * len(v_doses)
    for d, val in zip(v_doses, np.atleast_1d(vx)):
        row[f"V{d:g}{u}_percent"] = float(val)
    if densities is not None:
        tot = float(np.sum(rho))
        row[f"mass_weighted_mean_{u}"] = float(np.sum(rho * v) / tot) if n and tot > 0 else nan
    return row


def mass_weighted_means(dose: Grid, labels: Grid, names: Mapping[int, str], density: Grid) -> dict[str, float]:
    """``{name: mass-weighted mean}`` (the MIRD mean absorbed dose, in the dose grid's unit) of the
    structures of ``names`` present in ``labels``; :func:`organ_table` without the rest of its row."""
    out = {}
    for row in organ_table(dose, labels, names, density=density, percents=()):
        key = next(k for k in row if k.startswith("mass_weighted_mean_"))
        if row["n_voxels"]:
            out[str(row["name"])] = float(row[key])
    return out


def organ_table(dose: Grid, labels: Grid, names: Mapping[int, str] | None = None,
                density: Grid | None = None, percents: Sequence[float] = DEFAULT_PERCENTS,
                v_doses: Sequence[float] = ()) -> list[dict]:
    """One row of statistics per structure of a label map.

    Args:
        dose: dose (Gy) or dose-rate (Gy/s, kind ``DOSE_RATE``) grid.
        labels: label grid on the same geometry.
        names: label value -> structure name (default: every non-zero label present).
        density: density grid (g/cm3) on the same geometry: adds ``mass_g`` and the
            mass-weighted mean.
        percents: volume percentages of the ``D_x`` (``DR_x`` for dose rate) statistics;
            default 2, 10, 30, 50, 70, 90, 98.
        v_doses: doses, in the grid unit, of the ``V(d)`` statistics (% of the volume).

    Returns:
        List of dicts with ``label``, ``name`` and the keys of :func:`structure_stats`.

    Raises:
        GeometryError: grids on different geometries.
        InputError: NaN values, non-integer labels.
    """
    _check_grid(dose, "dose image")
    d = np.asarray(dose.array, dtype=np.float64)
    rho = None
    if density is not None:
        _check_grid(density, "density image")
        dose.require_same_geometry(density, "dose and density")
        rho = np.asarray(density.array, dtype=np.float64)
        if np.any(rho < 0):
            raise InputError("density image holds negative values")
    prefix = "DR" if dose.kind is Kind.DOSE_RATE else "D"
    rows = []
    for value, (name, m) in label_masks(dose, labels, names).items():
        row = {"label": value, "name": name}
        row.update(structure_stats(d[m], unit=dose.unit, prefix=prefix, percents=percents,
                                   v_doses=v_doses, densities=None if rho is None else rho[m],
                                   voxel_volume_ml=dose.voxel_volume_ml))
        rows.append(row)
    return rows


def _columns(rows: Sequence[Mapping]) -> list[str]:
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    return cols


def write_table_csv(rows: Sequence[Mapping], path: str | os.PathLike) -> None:
    """Write rows (dicts) as CSV, atomically; missing and NaN values are empty cells."""
    if not rows:
        raise InputError("no row to write")
    cols = _columns(rows)
    with atomic_file(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if jsonable(r.get(k)) is None else _fmt(jsonable(r.get(k)))) for k in cols})


def _fmt(v):
    return f"{v:.6g}" if isinstance(v, float) else v


def write_table_json(rows: Sequence[Mapping], path: str | os.PathLike, **metadata) -> None:
    """Write rows as JSON ``{"rows": [...], **metadata}`` atomically; NaN becomes ``null``."""
    doc = jsonable(dict(metadata))
    doc["rows"] = [jsonable(r) for r in rows]
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=2, allow_nan=False))


# Names matching the brief.
write_organ_table_csv = write_table_csv
write_organ_table_json = write_table_json


# --------------------------------------------------------------------------- typed organ doses
#: Name and version of the organ-dose table schema written to ``organs.json`` / ``organs*.csv``
#: (README, "Output files"). Version 2: fixed units (Gy) whatever the map's unit.
ORGAN_SCHEMA = "persodose.organ-doses"
ORGAN_SCHEMA_VERSION = 2
#: D_x statistics of an organ dose row, percent of the organ's volume (ICRU 83 and DRVH).
ROW_PERCENTS = DEFAULT_PERCENTS


@dataclass(frozen=True)
class OrganDoseRow:
    """Absorbed dose to one organ or lesion, in fixed units (Gy, g, mL).

    Attributes:
        name: structure name; label: its value in the label map.
        method: the dose method ("mc", "msv", ... or "ct").
        n_voxels, volume_ml, mass_g: size of the structure (mass with a density map).
        mean_gy: mean voxel dose (SINFONIA D2.2's organ dose), Gy.
        std_gy, min_gy, max_gy: spread of the voxel doses, Gy.
        mass_weighted_mean_gy: energy over mass, the MIRD mean absorbed dose, Gy.
        d_gy: ``{"D2": ..., "D50": ..., "D98": ...}``: minimum dose to the hottest x % of the
            volume (ICRU Report 83), Gy, for the percents of :data:`ROW_PERCENTS`.
        uncertainty_percent: statistical uncertainty of the organ dose (Monte Carlo), %.
        tia_fit: verdict of the organ's kinetic fit ("good", "poor", "unreliable"), with the
            reasons in ``note``.
        dose_to_medium_gy: for red marrow in CT, the dose to the bone-marrow mixture before its
            conversion to dose to marrow.
        note: one line on how the value was obtained or why it may be unreliable.
    """

    name: str
    label: int
    method: str
    n_voxels: int
    volume_ml: float
    mass_g: float | None
    mean_gy: float
    std_gy: float
    min_gy: float
    max_gy: float
    mass_weighted_mean_gy: float | None
    d_gy: dict = field(default_factory=dict)
    uncertainty_percent: float | None = None
    tia_fit: str | None = None
    dose_to_medium_gy: float | None = None
    note: str = ""

    def scaled(self, factor: float, **changes) -> "OrganDoseRow":
        """The same row with every dose multiplied by ``factor`` (e.g. a dose-to-medium
        conversion), and ``changes`` applied."""
        mw = None if self.mass_weighted_mean_gy is None else self.mass_weighted_mean_gy * factor
        return dataclasses.replace(self, mean_gy=self.mean_gy * factor, std_gy=self.std_gy * factor,
                                   min_gy=self.min_gy * factor, max_gy=self.max_gy * factor,
                                   mass_weighted_mean_gy=mw, d_gy={k: v * factor for k, v in self.d_gy.items()},
                                   **changes)

    def to_dict(self) -> dict:
        """Flat record with the schema's fixed column names (``mean_Gy``, ``D98_Gy``, ...)."""
        out = {"name": self.name, "label": self.label, "method": self.method, "n_voxels": self.n_voxels,
               "volume_ml": self.volume_ml, "mass_g": self.mass_g, "mean_Gy": self.mean_gy, "std_Gy": self.std_gy,
               "min_Gy": self.min_gy, "max_Gy": self.max_gy, "mass_weighted_mean_Gy": self.mass_weighted_mean_gy}
        out.update({f"{k}_Gy": v for k, v in self.d_gy.items()})
        out.update({"uncertainty_percent": self.uncertainty_percent, "tia_fit": self.tia_fit,
                    "dose_to_medium_Gy": self.dose_to_medium_gy, "note": self.note})
        return out


def _in_gy(dose: Grid) -> Grid:
    """The dose grid in Gy (a grid in mGy is converted)."""
    unit = (dose.unit or "Gy").strip()
    factor = {"Gy": 1.0, "mGy": 1e-3, "cGy": 1e-2}.get(unit)
    if dose.kind is not Kind.DOSE or factor is None:
        raise InputError(f"organ dose rows need an absorbed-dose map in Gy or mGy, got {dose.kind.value} ({unit})")
    return dose if factor == 1.0 else dose.with_array(np.asarray(dose.array, np.float64) * factor, Kind.DOSE, "Gy")


def organ_dose_rows(dose: Grid, labels: Grid, names: Mapping[int, str] | None = None,
                    density: Grid | None = None, method: str = "") -> list[OrganDoseRow]:
    """Typed organ dose rows (Gy) of a dose map: :func:`organ_table` in fixed units.

    Args:
        dose: absorbed dose, Gy or mGy (converted to Gy).
        labels: label map on the dose geometry; names: value -> name.
        density: g/cm3 on the dose geometry, for masses and mass-weighted means.
        method: the method that made the map, recorded in each row.
    """
    g = _in_gy(dose)
    rows = []
    for r in organ_table(g, labels, names, density=density, percents=ROW_PERCENTS):
        rows.append(OrganDoseRow(
            name=r["name"], label=int(r["label"]), method=method, n_voxels=int(r["n_voxels"]),
            volume_ml=float(r["volume_ml"]), mass_g=r.get("mass_g"), mean_gy=r["mean_Gy"], std_gy=r["std_Gy"],
            min_gy=r["min_Gy"], max_gy=r["max_Gy"], mass_weighted_mean_gy=r.get("mass_weighted_mean_Gy"),
            d_gy={f"D{p:g}": r[f"D{p:g}_Gy"] for p in ROW_PERCENTS}))
    return rows


def write_organ_rows(rows: Sequence[OrganDoseRow], path: str | os.PathLike, **metadata) -> None:
    """Write organ dose rows as JSON (``.json``, with the schema name and version) or CSV."""
    records = [r.to_dict() for r in rows]
    if str(path).lower().endswith(".json"):
        write_table_json(records, path, schema=ORGAN_SCHEMA, schema_version=ORGAN_SCHEMA_VERSION, unit="Gy",
                         **metadata)
    else:
        write_table_csv(records, path)


def label_sums(values: Grid | np.ndarray, labels: Grid | np.ndarray, names: Mapping[int, str] | None = None,
               weights: np.ndarray | None = None) -> dict:
    """Sum of ``values`` (times ``weights``) over each label: ``{name: sum}``, float64.

    Without ``names`` the keys are the label values present (0 excluded). Used for organ
    activities (Bq), masses (g) and energies.
    """
    v = np.asarray(values.array if isinstance(values, Grid) else values, dtype=np.float64).ravel()
    lab = np.asarray(labels.array if isinstance(labels, Grid) else labels).ravel().astype(np.int64)
    if v.shape != lab.shape:
        raise InputError(f"values ({v.size} voxels) and labels ({lab.size}) differ in size")
    if weights is not None:
        v = v * np.asarray(weights, dtype=np.float64).ravel()
    sums = np.bincount(lab, weights=v, minlength=int(lab.max(initial=0)) + 1)
    if names is None:
        return {int(k): float(sums[k]) for k in np.unique(lab) if k != 0}
    return {str(n): (float(sums[int(k)]) if 0 <= int(k) < sums.size else 0.0) for k, n in names.items()}
