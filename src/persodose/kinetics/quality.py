"""Quality of a time-activity fit: is the TIA it gives to be trusted?

Every organ-level TIA (:class:`persodose.kinetics.tia.OrganTIA`) carries a
:class:`FitQuality`: goodness of fit, residuals, points against parameters, how much of
the TIA lies outside the measured interval, and a verdict, ``"good"``, ``"poor"`` or
``"unreliable"``, with the reasons. The verdict is the worst of the checks below.

Checks and thresholds (:class:`QualityThresholds`; each says where its value comes from):

* **Convergence.** A fit the optimiser did not finish is *unreliable*.
* **R² < 0** (unweighted coefficient of determination, ``1 - SS_res / SS_tot``): the model
  describes the data worse than their mean does, *unreliable*. This is a property of R², not
  a convention. This is the demo patient's bladder: a mono-exponential that follows the late,
  spill-in dominated points and misses the first one.
* **R² < 0.8**: *poor*. Our choice, not a published value: the dosimetry guidance we consulted
  (EANM uncertainty guidance, Gear et al., EJNMMI 45 (2018) 2456; MIRD Pamphlet No. 16,
  Siegel et al., J Nucl Med 40 (1999) 37S) gives no R² limit. Below 0.8 the model leaves more
  than a fifth of the variance of the curve unexplained, which with organ-level SPECT noise
  of a few per cent means the model's shape is wrong, not that the data are noisy.
* **Largest relative residual > 0.3** (``max |A_i - f(t_i)| / |A_i|``): *poor*. Our choice:
  one point 30 % off the curve is several times the organ-level noise of quantitative
  SPECT, so again the model's shape is in question. R² alone misses this when a large early
  point dominates ``SS_tot``.
* **Too few points**: ``n <= K`` (``K`` fitted parameters) leaves no residual degree of
  freedom. The curve can pass through every point, so nothing checks it, and the
  residual-based parameter covariance (``SSR / (n - K)``, the fit uncertainty propagated in
  the EANM guidance, Gear et al. 2018) is undefined: *poor*. Model selection by AICc needs
  even more, ``n > K + 1`` (Glatting et al., Med Phys 34 (2007) 4285).
* **Extrapolated fraction**, the part of the TIA that the fitted model puts before the first
  and after the last time point, ``1 - integral_{t_1}^{t_n} f / integral_0^inf f``:
  above 0.2, *poor*, from the pharmacokinetic convention that the measured interval should
  hold at least 80 % of the area under the curve extrapolated to infinity (EMEA CPMP Note
  for Guidance on the investigation of bioavailability and bioequivalence,
  CPMP/EWP/QWP/1401/98, 2001). Above 0.5, *unreliable*. This is our choice: more than half
  of the dose would come from the model rather than from the images.
* **Effective half-life against the physical half-life.** After uptake has ended an organ
  cannot lose activity more slowly than the nuclide decays (biological clearance is not
  negative). A slowest effective half-life longer than the physical one (by more than
  0.1 %) is *unreliable*. The fitter bounds the rates at the physical decay constant, so
  for its own fits this shows up as a fit *at the bound* (within 1 %) instead, which is
  *poor*: the data did not clear faster than physical decay (uptake not finished, or
  spill-in from a slower neighbour), and the TIA tail is physical decay alone, an upper
  bound.

Non-parametric TIAs are checked too. For the trapezoid with a physical tail, the
extrapolated fraction is the part before the first point and the physical tail; there is
no R², and the residuals are zero because the curve interpolates the points. A single
time point (Hänscheid) is extrapolated entirely. An organ with no positive activity is
*poor*, since its TIA is set to zero without a curve to check.

Units: times in s after injection, activity in Bq, half-lives in s; fractions and R² are
dimensionless.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from persodose.errors import InputError
from persodose.kinetics.models import ExponentialModel, Trapezoid, decay_constant_per_s, get_model

VERDICTS = ("good", "poor", "unreliable")


@dataclass(frozen=True)
class QualityThresholds:
    """Limits of the fit-quality checks (sources in the module docstring).

    Attributes:
        r_squared_unreliable: R² below this is *unreliable* (0: worse than the data's mean).
        r_squared_poor: R² below this is *poor* (0.8, our choice).
        max_relative_residual_poor: a larger ``|A_i - f(t_i)| / |A_i|`` is *poor* (0.3, our
            choice).
        extrapolated_fraction_poor: a larger extrapolated fraction of the TIA is *poor*
            (0.2, from the 80 % area coverage rule of the EMEA CPMP bioequivalence note, 2001).
        extrapolated_fraction_unreliable: a larger one is *unreliable* (0.5, our choice).
        half_life_excess_unreliable: ``T_eff > T_phys (1 + this)`` is *unreliable*
            (1e-3, slack for rounding).
        half_life_at_bound_poor: ``T_eff >= T_phys (1 - this)`` counts as a fit at the
            physical-decay bound, which is *poor* (0.01).
    """

    r_squared_unreliable: float = 0.0
    r_squared_poor: float = 0.8
    max_relative_residual_poor: float = 0.3
    extrapolated_fraction_poor: float = 0.2
    extrapolated_fraction_unreliable: float = 0.5
    half_life_excess_unreliable: float = 1e-3
    half_life_at_bound_poor: float = 0.01

    def __post_init__(self) -> None:
        for name in ("max_relative_residual_poor", "extrapolated_fraction_poor", "extrapolated_fraction_unreliable",
                     "half_life_excess_unreliable", "half_life_at_bound_poor"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise InputError(f"fit-quality threshold {name} must be a non-negative number, got {v!r}")
        if not self.r_squared_unreliable <= self.r_squared_poor:
            raise InputError("fit-quality thresholds: r_squared_unreliable must not exceed r_squared_poor")
        if not self.extrapolated_fraction_poor <= self.extrapolated_fraction_unreliable:
            raise InputError("fit-quality thresholds: extrapolated_fraction_poor must not exceed "
                             "extrapolated_fraction_unreliable")


DEFAULT_THRESHOLDS = QualityThresholds()


@dataclass(frozen=True)
class FitQuality:
    """Quality verdict of one time-activity fit (checks in the module docstring).

    Attributes:
        r_squared: unweighted coefficient of determination ``1 - SS_res / SS_tot``,
            dimensionless, at most 1 and negative when the model is worse than the data's mean;
            NaN when undefined (non-parametric curve, fewer than 2 points, constant data).
        adjusted_r_squared: ``1 - (1 - R²) (n - 1) / (n - K)``, R² corrected for the number
            of fitted parameters (residual degrees of freedom ``n - K``); NaN when ``n <= K``.
        n_points: number of time points ``n``.
        n_parameters: number of fitted model parameters ``K`` (0 for the trapezoid; 1 for a
            single-time-point formula, which implies one rate).
        max_relative_residual: ``max_i |A_i - f(t_i)| / |A_i|``, dimensionless (the
            denominator is floored at 1e-3 of the largest ``|A_i|``, as in the relative
            weights of the fit); 0 for the trapezoid, which interpolates the points.
        extrapolated_fraction: part of the TIA before the first and after the last time point,
            from the fitted curve, dimensionless in [0, 1] for a non-negative curve; NaN when
            the TIA is not positive.
        effective_half_life_s: effective half-life of the slowest term of the fitted model, s
            (for an uptake-washout curve, the washout); NaN without a parametric model.
        physical_half_life_s: the nuclide's physical half-life, s.
        verdict: ``"good"``, ``"poor"`` or ``"unreliable"``, the worst of the checks.
        reasons: one sentence per failed check (empty when ``verdict == "good"``).
        method: what produced the TIA (model name, ``"trapezoid"``, ``"hanscheid"``,
            ``"none"``).
    """

    r_squared: float
    adjusted_r_squared: float
    n_points: int
    n_parameters: int
    max_relative_residual: float
    extrapolated_fraction: float
    effective_half_life_s: float
    physical_half_life_s: float
    verdict: str
    reasons: tuple[str, ...] = field(default_factory=tuple)
    method: str = ""

    @property
    def unreliable(self) -> bool:
        return self.verdict == "unreliable"

    def summary(self) -> str:
        """One line: the verdict and its reasons, e.g. ``"unreliable: R² = -0.28 < 0 ..."``."""
        return self.verdict if not self.reasons else f"{self.verdict}: " + "; ".join(self.reasons)

    def to_dict(self) -> dict:
        """JSON-friendly (NaN and infinity become None)."""
        def num(v):
            return None if v is None or not math.isfinite(v) else float(v)

        return {"verdict": self.verdict, "reasons": list(self.reasons), "method": self.method,
                "r_squared": num(self.r_squared), "adjusted_r_squared": num(self.adjusted_r_squared),
                "n_points": self.n_points, "n_parameters": self.n_parameters,
                "max_relative_residual": num(self.max_relative_residual),
                "extrapolated_fraction": num(self.extrapolated_fraction),
                "effective_half_life_s": num(self.effective_half_life_s),
                "physical_half_life_s": self.physical_half_life_s}


# ----------------------------------------------------------------------------- statistics
def _data(t_s, a_bq) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(t_s, dtype=float).reshape(-1)
    a = np.asarray(a_bq, dtype=float).reshape(-1)
    if t.size != a.size or t.size == 0:
        raise InputError(f"fit quality: {t.size} times but {a.size} activities")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(a))):
        raise InputError("fit quality: times and activities must be finite")
    order = np.argsort(t, kind="stable")
    return t[order], a[order]


def r_squared(a_bq, fitted_bq) -> float:
    """Unweighted ``1 - SS_res / SS_tot`` (NaN for fewer than 2 points or constant data)."""
    a = np.asarray(a_bq, dtype=float)
    f = np.asarray(fitted_bq, dtype=float)
    ss_tot = float(np.sum((a - a.mean()) ** 2))
    if a.size < 2 or not ss_tot > 0:
        return float("nan")
    return 1.0 - float(np.sum((a - f) ** 2)) / ss_tot


def adjusted_r_squared(r2: float, n_points: int, n_parameters: int) -> float:
    """``1 - (1 - R²) (n - 1) / (n - K)``; NaN when ``n <= K`` or R² is NaN.

    The usual adjustment ``(n - 1) / (n - p - 1)`` of linear regression with ``p``
    regressors and an intercept, written with ``K = p + 1`` fitted parameters so that it
    applies to a non-linear model with ``K`` parameters (residual degrees of freedom ``n - K``).
    """
    if n_points <= n_parameters or math.isnan(r2):
        return float("nan")
    return 1.0 - (1.0 - r2) * (n_points - 1) / (n_points - n_parameters)


def max_relative_residual(a_bq, fitted_bq) -> float:
    """``max |A_i - f_i| / max(|A_i|, 1e-3 max|A|)`` (the floor of the fit's relative weights)."""
    a = np.asarray(a_bq, dtype=float)
    f = np.asarray(fitted_bq, dtype=float)
    scale = float(np.max(np.abs(a))) if a.size else 0.0
    if not scale > 0:
        return float("nan")
    return float(np.max(np.abs(a - f) / np.maximum(np.abs(a), 1e-3 * scale)))


def extrapolated_fraction(model: ExponentialModel, params, t_first_s: float, t_last_s: float) -> float:
    """``1 - integral_{t_first}^{t_last} f / integral_0^inf f`` from the analytic integrals;
    NaN when the total is not positive."""
    total = float(model.integral_0_inf(params))
    if not (math.isfinite(total) and total > 0):
        return float("nan")
    inside = float(model.integral_from(t_first_s, params) - model.integral_from(t_last_s, params))
    return 1.0 - inside / total


# ----------------------------------------------------------------------------- verdict
def _judge(q: dict, thresholds: QualityThresholds, converged: bool = True) -> tuple[str, tuple[str, ...]]:
    """Verdict and reasons from the computed statistics (the checks of the module docstring)."""
    th = thresholds
    bad: list[str] = []
    poor: list[str] = []
    if not converged:
        bad.append("the fit did not converge")
    r2, n, k = q["r_squared"], q["n_points"], q["n_parameters"]
    if not math.isnan(r2):
        if r2 < th.r_squared_unreliable:
            bad.append(f"R² = {r2:.2f} < {th.r_squared_unreliable:g}: the model describes the data worse than "
                       f"their mean")
        elif r2 < th.r_squared_poor:
            poor.append(f"R² = {r2:.2f} < {th.r_squared_poor:g}")
    if n <= k and q["method"] not in ("trapezoid", "none"):
        poor.append(f"too few points: {n} time point(s) for {k} parameter(s), no residual degree of freedom "
                    f"to check the fit")
    res = q["max_relative_residual"]
    if not math.isnan(res) and res > th.max_relative_residual_poor:
        poor.append(f"a point lies {100 * res:.0f} % off the fitted curve "
                    f"(limit {100 * th.max_relative_residual_poor:.0f} %)")
    ext = q["extrapolated_fraction"]
    if not math.isnan(ext):
        msg = f"{100 * ext:.0f} % of the TIA is extrapolated outside the measured times"
        if ext > th.extrapolated_fraction_unreliable:
            bad.append(f"{msg} (limit {100 * th.extrapolated_fraction_unreliable:.0f} %)")
        elif ext > th.extrapolated_fraction_poor:
            poor.append(f"{msg} (limit {100 * th.extrapolated_fraction_poor:.0f} %)")
    t_eff, t_phys = q["effective_half_life_s"], q["physical_half_life_s"]
    if not math.isnan(t_eff):
        h = 3600.0
        if t_eff > t_phys * (1 + th.half_life_excess_unreliable):
            bad.append(f"effective half-life {t_eff / h:.1f} h exceeds the physical half-life {t_phys / h:.1f} h "
                       f"(negative biological clearance is impossible)")
        elif t_eff >= t_phys * (1 - th.half_life_at_bound_poor):
            poor.append(f"effective half-life {t_eff / h:.1f} h at the physical half-life {t_phys / h:.1f} h: the data "
                        f"do not clear faster than physical decay (uptake not finished or spill-in); physical tail")
    verdict = "unreliable" if bad else ("poor" if poor else "good")
    return verdict, tuple(bad + poor)


def fit_quality(model, params, t_s, a_bq, *, half_life_s: float | None = None, converged: bool = True,
                thresholds: QualityThresholds = DEFAULT_THRESHOLDS) -> FitQuality:
    """Quality of a parametric fit, from the fitted model, the times and the activities.

    Pure function: it evaluates the fitted curve at the time points and integrates it
    analytically, nothing else.

    Args:
        model: an :class:`~persodose.kinetics.models.ExponentialModel`, or a model name
            together with ``half_life_s``.
        params: fitted parameters, shape (n_params,) (amplitudes in Bq, rates in 1/s).
        t_s: time points, s after injection, shape (n,).
        a_bq: measured activities, Bq, shape (n,).
        half_life_s: physical half-life, s (needed only when ``model`` is a name).
        converged: whether the optimiser converged (a fit that did not is *unreliable*).
        thresholds: limits of the checks.

    Returns:
        :class:`FitQuality`.

    Raises:
        InputError: mismatched or non-finite data, unknown model, wrong number of parameters.
    """
    if isinstance(model, ExponentialModel):
        mdl = model
    else:
        if half_life_s is None:
            raise InputError("fit_quality: give half_life_s with a model name")
        mdl = get_model(model, half_life_s)
    p = np.asarray(params, dtype=float).reshape(-1)
    if p.size != mdl.n_params:
        raise InputError(f"model {mdl.name!r} takes {mdl.n_params} parameters, got {p.size}")
    t, a = _data(t_s, a_bq)
    with np.errstate(all="ignore"):
        fitted = mdl.evaluate(t, p)
        rates = np.asarray(mdl.rates_per_s(p), dtype=float).reshape(-1)
        t_eff = float(math.log(2.0) / np.min(rates)) if np.all(rates > 0) else float("inf")
        ext = extrapolated_fraction(mdl, p, float(t[0]), float(t[-1]))
    r2 = r_squared(a, fitted)
    q = dict(r_squared=r2, adjusted_r_squared=adjusted_r_squared(r2, t.size, mdl.n_params), n_points=int(t.size),
             n_parameters=mdl.n_params, max_relative_residual=max_relative_residual(a, fitted),
             extrapolated_fraction=ext, effective_half_life_s=t_eff, physical_half_life_s=float(mdl.half_life_s),
             method=mdl.name)
    verdict, reasons = _judge(q, thresholds, converged and bool(np.all(np.isfinite(p))))
    return FitQuality(**q, verdict=verdict, reasons=reasons)


def fit_result_quality(fit, t_s, a_bq, thresholds: QualityThresholds = DEFAULT_THRESHOLDS) -> FitQuality:
    """:func:`fit_quality` of a :class:`~persodose.kinetics.fit.FitResult` (its model,
    parameters, half-life and convergence flag)."""
    return fit_quality(get_model(fit.model, fit.half_life_s), fit.params, t_s, a_bq, converged=fit.converged,
                       thresholds=thresholds)


def trapezoid_quality(t_s, a_bq, half_life_s: float, first_segment: str = "zero",
                      thresholds: QualityThresholds = DEFAULT_THRESHOLDS) -> FitQuality:
    """Quality of a trapezoid TIA with a physical-decay tail (no model to fit, so no R²).

    The extrapolated fraction is ``(head + tail) / total`` of
    :meth:`persodose.kinetics.models.Trapezoid.parts`.
    """
    t, a = _data(t_s, a_bq)
    head, body, tail = (float(v) for v in Trapezoid(half_life_s, first_segment).parts(t, a))
    total = head + body + tail
    ext = (head + tail) / total if total > 0 else float("nan")
    q = dict(r_squared=float("nan"), adjusted_r_squared=float("nan"), n_points=int(t.size), n_parameters=0,
             max_relative_residual=0.0, extrapolated_fraction=ext, effective_half_life_s=float("nan"),
             physical_half_life_s=float(half_life_s), method="trapezoid")
    verdict, reasons = _judge(q, thresholds)
    if reasons:
        reasons = reasons + ("trapezoid: the tail after the last point is physical decay only (an upper bound)",)
    return FitQuality(**q, verdict=verdict, reasons=reasons)


def single_point_quality(t_s, a_bq, half_life_s: float, method: str = "hanscheid",
                         thresholds: QualityThresholds = DEFAULT_THRESHOLDS) -> FitQuality:
    """Quality of a single-time-point TIA: the whole integral is extrapolated from one point."""
    t, _ = _data(t_s, a_bq)
    decay_constant_per_s(half_life_s)
    q = dict(r_squared=float("nan"), adjusted_r_squared=float("nan"), n_points=int(t.size), n_parameters=1,
             max_relative_residual=float("nan"), extrapolated_fraction=1.0, effective_half_life_s=float("nan"),
             physical_half_life_s=float(half_life_s), method=method)
    verdict, reasons = _judge(q, thresholds)
    return FitQuality(**q, verdict=verdict, reasons=reasons + (
        "single time point: the effective half-life is assumed, not measured",))


def no_activity_quality(t_s, half_life_s: float) -> FitQuality:
    """An organ with no positive activity at any time point: TIA 0 without a curve (*poor*)."""
    n = int(np.asarray(t_s, dtype=float).size)
    nan = float("nan")
    return FitQuality(nan, nan, n, 0, nan, nan, nan, float(half_life_s), "poor",
                      ("no positive activity at any time point: TIA set to 0",), "none")


# ----------------------------------------------------------------------------- organs
def unreliable_organs(organ_fits: Mapping[str, object]) -> list[tuple[str, str]]:
    """Organs whose TIA, and so whose dose, is unreliable, with the reasons on one line.

    Args:
        organ_fits: organ name -> :class:`~persodose.kinetics.tia.OrganTIA` (anything with a
            ``quality`` attribute) or :class:`FitQuality`, e.g. the output of
            :func:`persodose.kinetics.tia.organ_tia`.

    Returns:
        ``[(organ, "R² = -0.28 < 0: ...; ..."), ...]`` in the order of ``organ_fits``, only the
        organs whose verdict is ``"unreliable"``.
    """
    out: list[tuple[str, str]] = []
    for name, fit in organ_fits.items():
        q = fit if isinstance(fit, FitQuality) else getattr(fit, "quality", None)
        if q is not None and q.verdict == "unreliable":
            out.append((str(name), "; ".join(q.reasons)))
    return out


__all__ = ["VERDICTS", "QualityThresholds", "DEFAULT_THRESHOLDS", "FitQuality", "r_squared", "adjusted_r_squared",
           "max_relative_residual", "extrapolated_fraction", "fit_quality", "fit_result_quality",
           "trapezoid_quality", "single_point_quality", "no_activity_quality", "unreliable_organs"]
