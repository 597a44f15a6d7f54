"""Full comparison of a test dose map with a reference, and the ensemble noise.

:func:`compare` gathers the voxel metrics of :mod:`persodose.metrics.voxel` inside a body
mask, optionally the gamma pass rate, and organ-wise errors:

* SINFONIA D2.2 ("Organ-level dose evaluation"): organ dose = mean voxel value in the organ;
  ``ME = D_test - D_ref``, ``RE = 100 ME / D_ref`` (%), ``RAE = |RE|`` (%), ``MAE = |ME|``
  (the deliverable averages these per-organ values over patients).
* DblurDoseNet (Li et al., Med Phys 49:1216, 2022, doi:10.1002/mp.15397, "Evaluation in Test
  Phantoms"): per-VOI NRMSE (normalised by the RMS of the reference in the VOI) and the
  "dose-rate error", the absolute error relative to the ground truth, of the mean and of the
  DRVH statistics DR10/DR30/DR70/DR90 (``<P>x_rae_percent``).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from persodose.errors import InputError, UnitsError
from persodose.grid import Grid, Kind
from persodose.metrics.dvh import DRVH_PERCENTS, _unit_token, dose_at_volume
from persodose.metrics.organ import label_masks
from persodose.metrics.voxel import nrmse, voxel_metrics

#: Default body-mask threshold, fraction of the reference maximum (used without labels).
BODY_THRESHOLD_FRACTION = 1e-3


def _check(g, what: str) -> Grid:
    if not isinstance(g, Grid):
        raise InputError(f"{what} must be a persodose Grid, got {type(g).__name__}")
    return g.check_finite(what)


def body_mask(reference: Grid, labels: Grid | None = None,
              threshold_fraction: float = BODY_THRESHOLD_FRACTION) -> np.ndarray:
    """Voxels used for the voxel metrics: ``labels > 0`` if a label map is given, else
    ``reference > threshold_fraction * max(reference)``."""
    if labels is not None:
        _check(labels, "label map")
        reference.require_same_geometry(labels, "reference dose and label map")
        return np.asarray(labels.array) > 0
    ref = np.asarray(reference.array, dtype=np.float64)
    return ref > threshold_fraction * float(np.max(ref))


def organ_errors(reference: Grid, test: Grid, labels: Grid, names: Mapping[int, str] | None = None,
                 percents: Sequence[float] = DRVH_PERCENTS) -> list[dict]:
    """Organ-wise comparison rows (see module doc); empty organs are skipped.

    Keys (``u`` = unit token, ``P`` = ``DR`` for dose-rate grids else ``D``): ``label``,
    ``name``, ``n_voxels``, ``reference_mean_u``, ``test_mean_u``, ``me_u``, ``mae_u``,
    ``re_percent``, ``rae_percent``, ``nrmse``, ``reference_Px_u``, ``test_Px_u``,
    ``Px_rae_percent``. Relative errors are NaN when the reference value is 0.
    """
    u = _unit_token(reference.unit)
    prefix = "DR" if reference.kind is Kind.DOSE_RATE else "D"
    r = np.asarray(reference.array, dtype=np.float64)
    t = np.asarray(test.array, dtype=np.float64)
    rows = []
    for value, (name, m) in label_masks(reference, labels, names).items():
        if not m.any():
            continue
        rm, tm = float(np.mean(r[m])), float(np.mean(t[m]))
        err = tm - rm
        re = 100.0 * err / rm if rm != 0 else float("nan")
        row = {"label": value, "name": name, "n_voxels": int(m.sum()),
               f"reference_mean_{u}": rm, f"test_mean_{u}": tm, f"me_{u}": err, f"mae_{u}": abs(err),
               "re_percent": re, "rae_percent": abs(re)}
        try:
            row["nrmse"] = nrmse(r, t, m, norm="rms")
        except InputError:
            row["nrmse"] = float("nan")
        if percents:
            rd = np.atleast_1d(dose_at_volume(r[m], list(percents)))
            td = np.atleast_1d(dose_at_volume(t[m], list(percents)))
            for p, a, b in zip(percents, rd, td):
                row[f"reference_{prefix}{p:g}_{u}"] = float(a)
                row[f"test_{prefix}{p:g}_{u}"] = float(b)
                row[f"{prefix}{p:g}_rae_percent"] = (100.0 * abs(float(b) - float(a)) / abs(float(a))
                                                     if a != 0 else float("nan"))
        rows.append(row)
    return rows


def compare(reference: Grid, test: Grid, labels: Grid | None = None,
            names: Mapping[int, str] | None = None, gamma: bool = False,
            gamma_options: Mapping | None = None,
            body_threshold_fraction: float = BODY_THRESHOLD_FRACTION,
            threshold_fraction: float | None = None, nrmse_norm: str = "rms") -> dict:
    """Compare a test dose (or dose-rate) map with a reference.

    Args:
        reference: reference grid (ground truth, e.g. Monte Carlo).
        test: test grid on the same geometry and in the same unit.
        labels: optional label grid; its non-zero voxels form the body mask and each label
            gets organ-wise errors.
        names: label value -> organ name (default ``label_<value>`` for all present).
        gamma: also compute the gamma pass rate (slow on large grids; off by default).
        gamma_options: keyword arguments of :func:`persodose.metrics.gamma.gamma_index`.
        body_threshold_fraction: body mask without labels: reference > this x max.
        threshold_fraction: relative-error threshold (see :mod:`persodose.metrics.voxel`).
        nrmse_norm: NRMSE normalisation of the whole-body value.

    Returns:
        ``{"unit", "mask", "mask_voxels", "voxel": {...}, "gamma": {...} | None,
        "organs": [...]}``.

    Raises:
        GeometryError: grids on different geometries.
        UnitsError: reference and test in different units.
        InputError: NaN or infinite values, an empty body mask.
    """
    _check(reference, "reference dose")
    _check(test, "test dose")
    reference.require_same_geometry(test, "reference and test doses")
    if (reference.unit or "") != (test.unit or ""):
        raise UnitsError(f"reference is in {reference.unit!r} but test in {test.unit!r}")
    mask = body_mask(reference, labels, body_threshold_fraction)
    if not mask.any():
        raise InputError("the body mask is empty (no labelled voxel or no dose above the threshold)")
    out: dict = {
        "unit": reference.unit,
        "mask": "labels > 0" if labels is not None else f"reference > {body_threshold_fraction:g} x max",
        "mask_voxels": int(mask.sum()),
        "voxel": voxel_metrics(reference.array, test.array, mask, threshold_fraction, nrmse_norm),
        "gamma": None,
        "organs": [],
    }
    if gamma:
        from persodose.metrics.gamma import gamma_index

        out["gamma"] = gamma_index(reference, test, **dict(gamma_options or {})).summary()
    if labels is not None:
        out["organs"] = organ_errors(reference, test, labels, names)
    return out


def ensemble_noise(realisations: Sequence[Grid | np.ndarray], mask: Grid | np.ndarray | None = None) -> float:
    """Ensemble noise of M noise realisations of one image, percent (DblurDoseNet).

    Li et al. 2022, "Evaluation in Test Phantoms", "Ensemble noise"::

        mu_j  = (1/M) sum_m x_m[j]
        Noise = sqrt( (1/n) sum_{j in VOI} (1/(M-1)) sum_m (x_m[j] - mu_j)^2 ) / ((1/n) sum_{j in VOI} mu_j) x 100 %

    i.e. the root of the VOI-averaged unbiased voxel variance divided by the VOI mean (not the
    average of voxel-wise coefficients of variation).

    Args:
        realisations: M >= 2 images (grids on one geometry, or arrays of one shape).
        mask: VOI (boolean array or grid); default all voxels.

    Raises:
        InputError: fewer than two realisations, NaNs, empty mask, zero mean.
        GeometryError: realisations (or mask) on different geometries / shapes.
    """
    from persodose.metrics.voxel import prepare

    reals = list(realisations)
    if len(reals) < 2:
        raise InputError(f"ensemble noise needs at least 2 realisations, got {len(reals)}")
    arrays = []
    m = None
    for i, x in enumerate(reals):
        _, _, mm = prepare(reals[0], x, mask)
        if i == 0:
            m = mm
        arrays.append(np.asarray(x.array if isinstance(x, Grid) else x, dtype=np.float64)[m])
    stack = np.stack(arrays)  # (M, n)
    mu = stack.mean(axis=0)
    var = stack.var(axis=0, ddof=1)
    mean_mu = float(np.mean(mu))
    if mean_mu == 0.0:
        raise InputError("ensemble noise: the mean image is zero in the VOI")
    return 100.0 * float(np.sqrt(np.mean(var))) / mean_mu
