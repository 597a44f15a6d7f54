"""Fitting time-activity curves, model selection, voxel-wise fits and dynamic-frame integrals.

Units: times in s after injection, activity in Bq (not decay corrected), TIA in Bq s.

Organ or lesion level (:func:`fit_tac`, :func:`select_model`): weighted non-linear least
squares (``scipy.optimize.least_squares``, trust-region reflective with bounds) of a model of
:mod:`persodose.kinetics.models`, solved in dimensionless variables (times divided by the
last time, activities by the largest one) from several data-driven starting points. The
weights are ``1 / sigma`` when the standard deviations are given (absolute: the covariance
is ``(J^T W J)^-1``), otherwise relative, ``sigma_i = |A_i|`` (a constant coefficient of
variation, whose unknown size is estimated from the residuals: the covariance is scaled by
``SSR / (n - K)``). Goodness of fit and model selection use the corrected Akaike
information criterion

    AICc = n ln(SSR / n) + 2 K + 2 K (K + 1) / (n - K - 1),

with ``SSR`` the weighted sum of squared residuals and ``K`` the number of fitted model
parameters (Glatting et al., Med Phys 34 (2007) 4285, "Choosing the optimal fit function:
comparison of the Akaike information criterion and the F-test"; Kletting et al., Med Phys
40 (2013) 102504, NUKFIT). Following Glatting et al., a model is eligible for selection only
when ``n > K + 1``. The TIA uncertainty is propagated from the parameter covariance through
the analytic integral (first-order delta method, ``var = g^T C g``).

Voxel level (:func:`fit_voxels`): vectorised over all voxels, no Python loop over voxels.

Dynamic frames (:func:`integrate_dynamic`): the frame integrals themselves plus the
injection-to-first-frame interval and a tail.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from persodose.errors import InputError, require_finite
from persodose.kinetics.models import ExponentialModel, Trapezoid, decay_constant_per_s, get_model


# ----------------------------------------------------------------------------- results
@dataclass(frozen=True)
class FitResult:
    """One least-squares fit of a time-activity curve.

    Attributes:
        model: model name (see :data:`persodose.kinetics.models.PARAMETRIC_MODELS`).
        half_life_s: physical half-life used, s.
        param_names: names (with units) of ``params``.
        params: best-fit parameters (amplitudes in Bq, rates in 1/s).
        covariance: parameter covariance, same units squared (NaN where undefined).
        stderr: parameter standard errors (square roots of the covariance diagonal).
        n_points: number of data points ``n``.
        n_params: number of fitted parameters ``K``.
        ssr: weighted sum of squared residuals (dimensionless).
        r2: coefficient of determination of the unweighted fit.
        aicc: corrected Akaike information criterion (NaN when ``n <= K + 1``).
        tia_bq_s: analytic TIA from 0 to infinity, Bq s.
        tia_sd_bq_s: its standard uncertainty (delta method), Bq s.
        converged: the optimiser reported success and everything is finite.
        message: optimiser message.
        weighting: ``"relative"`` or ``"sigma"``.
    """

    model: str
    half_life_s: float
    param_names: tuple[str, ...]
    params: np.ndarray
    covariance: np.ndarray
    stderr: np.ndarray
    n_points: int
    n_params: int
    ssr: float
    r2: float
    aicc: float
    tia_bq_s: float
    tia_sd_bq_s: float
    converged: bool
    message: str = ""
    weighting: str = "relative"

    def evaluate(self, t_s) -> np.ndarray:
        """The fitted curve, Bq, at times ``t_s`` (s)."""
        return get_model(self.model, self.half_life_s).evaluate(t_s, self.params)

    @property
    def effective_half_lives_s(self) -> list[float]:
        return [float(v) for v in get_model(self.model, self.half_life_s).effective_half_lives_s(self.params)]

    def as_row(self) -> dict:
        """A JSON-friendly summary (one row of a model-selection table)."""
        return {
            "model": self.model, "n_points": self.n_points, "n_params": self.n_params,
            "params": {n: float(v) for n, v in zip(self.param_names, self.params)},
            "stderr": {n: float(v) for n, v in zip(self.param_names, self.stderr)},
            "effective_half_lives_s": self.effective_half_lives_s,
            "ssr": self.ssr, "r2": self.r2, "aicc": None if math.isnan(self.aicc) else self.aicc,
            "tia_bq_s": self.tia_bq_s, "tia_sd_bq_s": self.tia_sd_bq_s,
            "converged": self.converged, "weighting": self.weighting,
        }


def aicc(ssr: float, n: int, k: int) -> float:
    """Corrected Akaike information criterion (Glatting et al. 2007; formula in the module
    docstring); NaN when ``n - k - 1 <= 0``. ``ssr`` is floored at 1e-300 (exact fits)."""
    if n - k - 1 <= 0:
        return float("nan")
    return n * math.log(max(float(ssr), 1e-300) / n) + 2 * k + 2 * k * (k + 1) / (n - k - 1)


# ----------------------------------------------------------------------------- checks
def _check_tac(t_s, a_bq, sigma=None, what: str = "time-activity curve"):
    t = np.asarray(t_s, dtype=float).reshape(-1)
    a = np.asarray(a_bq, dtype=float).reshape(-1)
    if t.size != a.size:
        raise InputError(f"{what}: {t.size} times but {a.size} activities")
    if t.size == 0:
        raise InputError(f"{what}: no time points")
    require_finite(t, f"{what} times")
    require_finite(a, f"{what} activities")
    if np.any(t < 0):
        raise InputError(f"{what}: negative time(s) {t[t < 0].tolist()} s (times are after injection)")
    if not np.any(a > 0):
        raise InputError(f"{what}: no positive activity to fit")
    s = None
    if sigma is not None:
        s = np.asarray(sigma, dtype=float).reshape(-1)
        if s.size != t.size:
            raise InputError(f"{what}: {s.size} sigmas for {t.size} points")
        require_finite(s, f"{what} sigmas")
        if np.any(s <= 0):
            raise InputError(f"{what}: every sigma must be positive")
    order = np.argsort(t, kind="stable")
    return t[order], a[order], (None if s is None else s[order])


def _scale_vector(model: ExponentialModel, t_scale: float, a_scale: float) -> np.ndarray:
    """Factors turning dimensionless parameters (times / t_scale, activity / a_scale) into SI."""
    s = np.full(model.n_params, 1.0 / t_scale)
    amp = {"mono": (0,), "biexp_uptake": (0,), "biexp": (0, 2), "triexp": (0, 2)}[model.name]
    s[list(amp)] = a_scale
    return s


def _loglin(t: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares line ``ln y = c - k t`` through positive points: returns (exp(c), k)."""
    m = y > 0
    t, y = t[m], y[m]
    if t.size == 0:
        return 1.0, 1.0
    if t.size == 1 or np.ptp(t) == 0:
        return float(y.mean()), 0.0
    slope, c = np.polyfit(t, np.log(y), 1)
    return float(math.exp(c)), float(-slope)


def _starts(name: str, tau: np.ndarray, y: np.ndarray, kp: float) -> list[np.ndarray]:
    """Starting points in dimensionless units (tau = t / t_max, y = a / a_max)."""
    n = tau.size
    m = max(2, int(math.ceil(n / 2)))
    a_tail, k_tail = _loglin(tau[-m:], y[-m:])
    a_all, k_all = _loglin(tau, y)
    k1 = max(k_tail, kp * 1.05)
    pos = tau[tau > 0]
    tau_first = float(pos[0]) if pos.size else 0.1
    if name == "mono":
        return [np.array([a_tail, k1]), np.array([a_all, max(k_all, kp * 1.05)]),
                np.array([y.max(), kp * 1.05])]
    if name == "biexp_uptake":
        return [np.array([a_tail, k1, max(c / tau_first - k1, 0.5 * k1)]) for c in (0.7, 3.0, 10.0)]
    early = y - a_tail * np.exp(-k1 * tau)
    nh = max(2, n - m)
    a2, k2 = _loglin(tau[:nh], early[:nh])
    starts = []
    if name == "biexp":
        if np.sum(early[:nh] > 0) >= 2 and k2 > k1:
            starts.append(np.array([a_tail, k1, a2, k2 - k1]))
        for c in (1.0, 5.0, 20.0):
            starts.append(np.array([a_tail, k1, max(y[0] - a_tail, 0.2 * y[0], 1e-3), max(c * k1, c)]))
        return starts
    # triexp: slow term from the tail, a faster washout, and uptake faster still
    for c2 in (3.0, 20.0):
        for c3 in (1.0, 10.0):
            d2 = max(c2 * k1, c2)
            starts.append(np.array([a_tail, k1, 0.5 * a_tail, d2, max(c3 / tau_first, d2)]))
    return starts


# ----------------------------------------------------------------------------- organ level
def fit_tac(t_s, a_bq, model, half_life_s: float, sigma=None) -> FitResult:
    """Fit one time-activity curve.

    Args:
        t_s: sample times, s after injection, shape (n,).
        a_bq: activities (not decay corrected), Bq, shape (n,).
        model: model name (``"mono"``, ``"biexp_uptake"``, ``"biexp"``, ``"triexp"``) or a
            model instance.
        half_life_s: physical half-life of the nuclide, s.
        sigma: standard deviations of ``a_bq``, Bq (optional; relative weights otherwise).

    Returns:
        :class:`FitResult`.

    Raises:
        InputError: bad data, unknown model, or fewer points than parameters.
    """
    from scipy.optimize import least_squares

    mdl = get_model(model, half_life_s)
    t, a, s = _check_tac(t_s, a_bq, sigma)
    n, k = t.size, mdl.n_params
    if n < k:
        raise InputError(f"model {mdl.name!r} has {k} parameters but only {n} time point(s) were given; "
                         f"it needs at least {k}")
    t_scale = float(t.max()) if t.max() > 0 else 1.0
    a_scale = float(np.max(np.abs(a)))
    tau, y = t / t_scale, a / a_scale
    if s is None:
        w = np.maximum(np.abs(y), 1e-3)  # relative: sigma_i = |A_i| (floored at 0.1 % of the maximum)
        weighting = "relative"
    else:
        w = s / a_scale
        weighting = "sigma"
    kp = mdl.lambda_phys_per_s * t_scale
    lo, hi = mdl.bounds()
    lo = lo / _scale_vector(mdl, t_scale, a_scale)
    lo[1] = kp

    def fun(p):
        return (mdl.evaluate(tau, p) - y) / w

    def jac(p):
        return mdl.jacobian(tau, p) / w[:, None]

    best = None
    for x0 in _starts(mdl.name, tau, y, kp):
        x0 = np.clip(np.asarray(x0, dtype=float), lo * (1 + 1e-9) + 1e-12, None)
        if not np.all(np.isfinite(x0)):
            continue
        try:
            with np.errstate(all="ignore"):  # degenerate multi-exponential starts overflow harmlessly
                res = least_squares(fun, x0, jac=jac, bounds=(lo, hi), method="trf", x_scale="jac",
                                    xtol=1e-10, ftol=1e-12, gtol=1e-10, max_nfev=400)
        except (ValueError, np.linalg.LinAlgError):  # pragma: no cover - defensive
            continue
        if not np.isfinite(res.cost):
            continue
        if best is None or res.cost < best.cost * (1 - 1e-12):
            best = res
    if best is None:  # pragma: no cover - defensive
        raise InputError(f"model {mdl.name!r}: the fit failed from every starting point")

    p_dimless = best.x
    scale = _scale_vector(mdl, t_scale, a_scale)
    params = p_dimless * scale
    r = fun(p_dimless)
    ssr = float(r @ r)
    jw = jac(p_dimless)
    with np.errstate(all="ignore"):
        cov_d = np.linalg.pinv(jw.T @ jw)
        if weighting == "relative":
            cov_d = cov_d * (ssr / (n - k)) if n > k else np.full_like(cov_d, np.nan)
    cov = cov_d * np.outer(scale, scale)
    stderr = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    tia = float(mdl.integral_0_inf(params))
    g = mdl.integral_gradient(params)
    with np.errstate(all="ignore"):
        tia_var = float(g @ cov @ g)
    fitted = mdl.evaluate(t, params)
    ss_tot = float(np.sum((a - a.mean()) ** 2))
    r2 = 1.0 - float(np.sum((a - fitted) ** 2)) / ss_tot if ss_tot > 0 else float("nan")
    converged = bool(best.success and best.status > 0 and np.all(np.isfinite(params)) and math.isfinite(tia))
    return FitResult(
        model=mdl.name, half_life_s=float(half_life_s), param_names=mdl.param_names, params=params,
        covariance=cov, stderr=stderr, n_points=n, n_params=k, ssr=ssr, r2=r2, aicc=aicc(ssr, n, k),
        tia_bq_s=tia, tia_sd_bq_s=math.sqrt(tia_var) if tia_var >= 0 else float("nan"),
        converged=converged, message=str(best.message), weighting=weighting)


DEFAULT_CANDIDATES = ("mono", "biexp_uptake", "biexp", "triexp")


def select_model(t_s, a_bq, half_life_s: float, candidates=DEFAULT_CANDIDATES, sigma=None):
    """Fit every eligible candidate and pick the one with the lowest AICc.

    A candidate with ``K`` parameters is eligible only when ``n > K + 1`` (Glatting et al.
    2007). Akaike weights ``exp(-dAICc/2) / sum`` are added to the table.

    Returns:
        ``(best FitResult, table)``; ``table`` is a list of dicts (one per candidate, the
        ineligible and failed ones with a ``"note"``), ordered as ``candidates``.

    Raises:
        InputError: no candidate is eligible (too few points) or none converged.
    """
    t, a, s = _check_tac(t_s, a_bq, sigma)
    n = t.size
    table: list[dict] = []
    fits: list[FitResult] = []
    for name in candidates:
        mdl = get_model(name, half_life_s)
        k = mdl.n_params
        if not n > k + 1:
            table.append({"model": mdl.name, "n_points": n, "n_params": k, "aicc": None,
                          "note": f"not eligible: needs n > K + 1 = {k + 1} points"})
            continue
        f = fit_tac(t, a, mdl, half_life_s, s)
        row = f.as_row()
        if not f.converged:
            row["note"] = f"did not converge: {f.message}"
        else:
            fits.append(f)
        table.append(row)
    if not fits:
        ks = {str(name): get_model(name, half_life_s).n_params for name in candidates}
        raise InputError(f"no model could be selected from {n} time point(s): candidates and parameter counts "
                         f"{ks} need n > K + 1 (or no fit converged)")
    best = min(fits, key=lambda f: f.aicc)
    aics = np.array([f.aicc for f in fits])
    wts = np.exp(-(aics - aics.min()) / 2.0)
    wts /= wts.sum()
    wmap = {f.model: float(w) for f, w in zip(fits, wts)}
    for row in table:
        row["akaike_weight"] = wmap.get(row["model"], 0.0)
        row["selected"] = row["model"] == best.model
    return best, table


# ----------------------------------------------------------------------------- voxel level
#: Codes of the per-voxel model map returned by :func:`fit_voxels`.
VOXEL_CODES = {
    0: "no activity (all time points zero): TIA 0",
    1: "mono-exponential fit",
    2: "trapezoid + physical tail (fitted clearance slower than physical decay)",
    3: "trapezoid + physical tail (non-positive data)",
    4: "trapezoid + physical tail (requested)",
    5: "bi-exponential uptake-washout fit",
    6: "bi-exponential fit",
    7: "mono-exponential fit (bi-exponential fit failed or was worse)",
}


@dataclass
class VoxelFit:
    """Result of :func:`fit_voxels`.

    Attributes:
        tia_bq_s: TIA per voxel, Bq s, shape of the voxel axes.
        model_used: uint8 code per voxel (see :data:`VOXEL_CODES`).
        r2: coefficient of determination of the fitted voxels (NaN for trapezoid/zero).
        codes: the code table.
    """

    tia_bq_s: np.ndarray
    model_used: np.ndarray
    r2: np.ndarray
    codes: dict = field(default_factory=lambda: dict(VOXEL_CODES))

    def counts(self) -> dict[str, int]:
        """Number of voxels per code description."""
        c = np.bincount(self.model_used.ravel(), minlength=len(self.codes))
        return {self.codes[i]: int(c[i]) for i in self.codes if c[i]}


def _mono_lm(tau: np.ndarray, y: np.ndarray, n_iter: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised mono-exponential fit of positive data ``y`` (n_t, N) at times ``tau``.

    Closed-form log-linear least squares (``ln y = u - k tau``; equal weights in log space
    correspond to a constant relative error), then ``n_iter`` Levenberg-Marquardt steps on
    the relative residuals ``exp(u - k tau) / y - 1``, the objective of :func:`fit_tac` with
    relative weights. Returns ``(u, k, cost)`` with ``A0 = exp(u)`` (in units of y).
    """
    tc = tau - tau.mean()
    ly = np.log(y)
    k = -(tc @ ly) / float(tc @ tc)
    u = ly.mean(axis=0) + k * tau.mean()
    tt = tau[:, None]

    def cost_of(u_, k_):
        r = np.exp(u_ - k_ * tt - ly) - 1.0
        return np.einsum("ij,ij->j", r, r)

    cost = cost_of(u, k)
    mu = np.full(u.shape, 1e-8)
    for _ in range(n_iter):
        f = np.exp(u - k * tt - ly)  # fitted / measured
        r = f - 1.0
        huu = np.einsum("ij,ij->j", f, f)
        ftf = f * tt
        hkk = np.einsum("ij,ij->j", ftf, ftf)
        huk = -np.einsum("ij,ij->j", f, ftf)
        gu = np.einsum("ij,ij->j", f, r)
        gk = -np.einsum("ij,ij->j", ftf, r)
        a11 = huu * (1 + mu)
        a22 = hkk * (1 + mu)
        det = a11 * a22 - huk * huk
        with np.errstate(all="ignore"):
            du = -(a22 * gu - huk * gk) / det
            dk = -(a11 * gk - huk * gu) / det
        un, kn = u + du, k + dk
        cn = cost_of(un, kn)
        ok = np.isfinite(cn) & (cn < cost)
        u = np.where(ok, un, u)
        k = np.where(ok, kn, k)
        cost = np.where(ok, cn, cost)
        mu = np.where(ok, mu * 0.1, mu * 10.0)
    return u, k, cost


def _lm_batch(mdl: ExponentialModel, tau: np.ndarray, y: np.ndarray, p0: np.ndarray, lo: np.ndarray,
              n_iter: int) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised Levenberg-Marquardt (Marquardt's diagonal scaling) with projection on the
    lower bounds, relative residuals ``model / y - 1``; ``y`` (N, n_t) > 0, ``p0`` (N, K)."""
    p = p0.copy()
    w = 1.0 / y

    def cost_of(pp):
        r = mdl.evaluate(tau, pp) * w - 1.0
        c = np.einsum("ij,ij->i", r, r)
        return np.where(np.isfinite(c), c, np.inf), r

    cost, r = cost_of(p)
    mu = np.full(p.shape[0], 1e-2)
    eye = np.eye(p.shape[1])
    for _ in range(n_iter):
        jw = mdl.jacobian(tau, p) * w[..., None]
        g = np.einsum("ntk,nt->nk", jw, r)
        h = np.einsum("ntk,ntl->nkl", jw, jw)
        d = np.einsum("nkk->nk", h)
        amat = h + (mu[:, None] * np.maximum(d, 1e-12))[:, :, None] * eye
        amat = np.where(np.isfinite(amat), amat, 0.0) + 1e-300 * eye
        try:
            step = -np.linalg.solve(amat, np.where(np.isfinite(g), g, 0.0)[..., None])[..., 0]
        except np.linalg.LinAlgError:  # pragma: no cover - singular batch
            step = -np.einsum("nkl,nl->nk", np.linalg.pinv(amat), g)
        pn = np.maximum(p + step, lo)
        cn, rn = cost_of(pn)
        ok = cn < cost
        p = np.where(ok[:, None], pn, p)
        r = np.where(ok[:, None], rn, r)
        cost = np.where(ok, cn, cost)
        mu = np.where(ok, mu * 0.2, mu * 5.0)
    return p, cost


def fit_voxels(t_s, a_bq, half_life_s: float, model: str = "mono", first_segment: str = "zero",
               n_iter: int | None = None, chunk_voxels: int = 400_000) -> VoxelFit:
    """Voxel-wise TIA, vectorised over voxels.

    Args:
        t_s: strictly increasing times, s after injection, shape (n_t,).
        a_bq: activity per voxel (not decay corrected), Bq, shape ``(n_t, ...)``.
        half_life_s: physical half-life, s.
        model: ``"mono"`` (closed-form log-linear start + vectorised Levenberg-Marquardt on
            relative residuals; falls back to trapezoid + physical tail where the fitted
            clearance is slower than physical decay, or where a time point is <= 0),
            ``"trapezoid"``, ``"biexp_uptake"`` or ``"biexp"`` (vectorised LM from a
            mono-exponential start; voxels whose fit is not better than the mono fit keep
            the mono result).
        first_segment: trapezoid first segment, ``"zero"`` (default) or ``"constant"``.
        n_iter: LM iterations (default 6 for mono, which converges linearly to about 1e-7 relative
            for curves that a mono-exponential does not fit exactly; 40 for bi-exponential models).
        chunk_voxels: voxels processed at once (memory bound).

    Returns:
        :class:`VoxelFit`.
    """
    t = np.asarray(t_s, dtype=float).reshape(-1)
    a = np.asarray(a_bq)
    if a.ndim < 1 or a.shape[0] != t.size:
        raise InputError(f"voxel fit: {t.size} times but an activity array of shape {a.shape} "
                         f"(the first axis must be time)")
    require_finite(t, "voxel fit times")
    if np.any(t < 0) or np.any(np.diff(t) <= 0):
        raise InputError(f"voxel fit: times must be non-negative and strictly increasing, got {t.tolist()} s")
    lam_p = decay_constant_per_s(half_life_s)
    trap = Trapezoid(half_life_s, first_segment)
    vshape = a.shape[1:]
    flat = a.reshape(t.size, -1)
    nvox = flat.shape[1]
    tia = np.zeros(nvox, dtype=np.float64)
    code = np.zeros(nvox, dtype=np.uint8)
    r2 = np.full(nvox, np.nan, dtype=np.float32)
    if model not in ("mono", "trapezoid", "biexp_uptake", "biexp"):
        raise InputError(f"unknown voxel model {model!r}: use mono, trapezoid, biexp_uptake or biexp")
    need = {"mono": 2, "trapezoid": 1, "biexp_uptake": 3, "biexp": 4}[model]
    if t.size < need:
        raise InputError(f"voxel model {model!r} needs at least {need} time points, got {t.size}")
    t_scale = float(t[-1]) if t[-1] > 0 else 1.0
    tau = t / t_scale
    kp = lam_p * t_scale
    for c0 in range(0, nvox, chunk_voxels):
        blk = np.asarray(flat[:, c0:c0 + chunk_voxels], dtype=np.float64)
        require_finite(blk, "voxel activities")
        sl = slice(c0, c0 + blk.shape[1])
        zero = ~np.any(blk != 0, axis=0)
        tr = trap.integral(t, blk)
        t_tia = np.where(zero, 0.0, tr)
        t_code = np.where(zero, 0, 4 if model == "trapezoid" else 3).astype(np.uint8)
        t_r2 = np.full(blk.shape[1], np.nan, dtype=np.float32)
        if model != "trapezoid":
            pos = np.all(blk > 0, axis=0)
            idx = np.flatnonzero(pos)
            if idx.size:
                y = blk[:, idx]
                scale = y.max(axis=0)
                y = y / scale
                u, k, _ = _mono_lm(tau, y, 6 if n_iter is None or model != "mono" else n_iter)
                with np.errstate(all="ignore"):
                    mono_tia = np.exp(u) * scale / (k / t_scale)
                ok = np.isfinite(mono_tia) & (k >= kp)
                fitted = np.exp(u[None, :] - k[None, :] * tau[:, None])
                rr = _r2(y, fitted)
                sel_tia = np.where(ok, mono_tia, tr[idx])
                sel_code = np.where(ok, 1, 2).astype(np.uint8)
                sel_r2 = np.where(ok, rr, np.nan)
                if model in ("biexp_uptake", "biexp"):
                    b_tia, b_ok, b_r2 = _biexp_voxels(model, half_life_s, tau, y.T, u, k, ok, kp,
                                                      40 if n_iter is None else n_iter)
                    sel_tia = np.where(b_ok, b_tia * scale * t_scale, sel_tia)
                    sel_code = np.where(b_ok, 5 if model == "biexp_uptake" else 6,
                                        np.where(ok, 7, sel_code)).astype(np.uint8)
                    sel_r2 = np.where(b_ok, b_r2, sel_r2)
                t_tia[idx] = sel_tia
                t_code[idx] = sel_code
                t_r2[idx] = sel_r2
        tia[sl] = t_tia
        code[sl] = t_code
        r2[sl] = t_r2
    return VoxelFit(tia.reshape(vshape), code.reshape(vshape), r2.reshape(vshape))


def _r2(y: np.ndarray, fitted: np.ndarray) -> np.ndarray:
    """Per-column R^2 (unweighted)."""
    ss_res = np.sum((y - fitted) ** 2, axis=0)
    ss_tot = np.sum((y - y.mean(axis=0)) ** 2, axis=0)
    with np.errstate(all="ignore"):
        return np.where(ss_tot > 0, 1.0 - ss_res / ss_tot, np.nan)


def _biexp_voxels(name, half_life_s, tau, y, u, k, mono_ok, kp, n_iter):
    """Vectorised bi-exponential fits (dimensionless units) from a mono start.

    Returns (TIA in dimensionless units, accepted mask, R^2); a voxel is accepted when the
    fit is finite and positive and, where the mono fit is valid (``mono_ok``), its relative
    SSR is below the mono fit's.
    """
    mdl = get_model(name, half_life_s)
    a0 = np.exp(u)
    # slow term from a log-linear fit of the later half of the points
    m = max(2, int(math.ceil(tau.size / 2)))
    tt = tau[-m:]
    tc = tt - tt.mean()
    ly = np.log(y[:, -m:])
    k_tail = -(ly @ tc) / float(tc @ tc)
    a_tail = np.exp(ly.mean(axis=1) + k_tail * tt.mean())
    k1 = np.maximum(k_tail, kp * 1.0001)
    a_tail = np.where(k_tail > kp, a_tail, y[:, -1] * np.exp(k1 * tau[-1]))
    first = float(tau[tau > 0][0]) if np.any(tau > 0) else 0.1
    if name == "biexp_uptake":
        p0 = np.stack([a_tail, k1, np.maximum(3.0 / first - k1, k1)], axis=1)
    else:  # start: slow term from the tail, a fast term carrying the early excess
        a2 = np.maximum(y[:, 0] - a_tail * np.exp(-k1 * tau[0]), 0.1 * y[:, 0])
        p0 = np.stack([a_tail, k1, a2, np.maximum(3.0 * k1, 1.0)], axis=1)
    lo = np.zeros(mdl.n_params)
    lo[1] = kp
    mono_cost = np.einsum("ij,ij->i", a0[:, None] * np.exp(-np.outer(k, tau)) / y - 1.0,
                          a0[:, None] * np.exp(-np.outer(k, tau)) / y - 1.0)
    p, cost = _lm_batch(mdl, tau, y, p0, lo, n_iter)
    with np.errstate(all="ignore"):
        tia = mdl.integral_0_inf(p)
    ok = np.isfinite(tia) & (tia > 0) & np.isfinite(cost) & (~mono_ok | (cost < mono_cost))
    return tia, ok, _r2(y.T, mdl.evaluate(tau, p).T)


# ----------------------------------------------------------------------------- dynamic frames
@dataclass
class DynamicIntegral:
    """Parts of the time integral of dynamic frames, Bq s (arrays of the voxel shape).

    Attributes:
        before_first: injection to the first frame start (linear rise from zero).
        frames: sum of the frame integrals (frame-average activity x duration).
        gaps: gaps between frames (trapezoid between neighbouring frame averages).
        tail: after the last frame end.
        total: the sum of the four.
        tail_method: ``"physical"`` or ``"mono"``.
    """

    before_first: np.ndarray
    frames: np.ndarray
    gaps: np.ndarray
    tail: np.ndarray
    tail_method: str

    @property
    def total(self) -> np.ndarray:
        return self.before_first + self.frames + self.gaps + self.tail

    @property
    def acquired(self) -> np.ndarray:
        """Integral from injection to the end of the last frame, Bq s."""
        return self.before_first + self.frames + self.gaps


def integrate_dynamic(frame_start_s, frame_duration_s, a_bq, half_life_s: float, *,
                      decay_corrected_to_s=None, tail: str = "physical", n_tail_frames: int = 3) -> DynamicIntegral:
    """Time-integrated activity from dynamic (e.g. PET) frames.

    Each frame value is taken as the frame-average activity ``(1/d) int_frame A(t) dt``
    (Bq, NOT decay corrected) by default, so that the frame integral is ``value x d`` exactly.
    If the frames were decay corrected (as PET images usually are), pass the reference time
    of the correction in ``decay_corrected_to_s`` (s after injection; one number, e.g. the
    series start, or one per frame, e.g. each frame's start); the values are then taken to
    be ``int_frame A dt / int_frame exp(-lambda (t - t_ref)) dt`` (the DICOM PET decay
    factor, which includes the decay during the frame), and the frame integral is
    ``value x exp(-lambda (t_s - t_ref)) (1 - exp(-lambda d)) / lambda``.

    Between injection and the first frame start the activity is taken to rise linearly from
    zero to the first frame's average; gaps between frames are bridged by the trapezoid
    between neighbouring frame averages. After the last frame end:

    * ``tail="physical"`` (default, conservative): physical decay only, ``A(t_end) /
      lambda_phys``, with ``A(t_end)`` the last frame's average carried to the frame end
      under physical decay (``avg x lambda d e^{-lambda d} / (1 - e^{-lambda d})``);
    * ``tail="mono"``: a mono-exponential fitted (log-linear, per voxel) to the last
      ``n_tail_frames`` frame averages at their mid times, effective rate clipped to
      ``>= lambda_phys``; voxels with a non-positive value among them (and a single-frame
      series) use the physical tail.

    Args:
        frame_start_s: frame starts, s after injection, increasing, shape (n_frames,).
        frame_duration_s: frame durations, s, positive, shape (n_frames,).
        a_bq: frame values, Bq (or Bq/mL: the result is then Bq s/mL), shape (n_frames, ...).
        half_life_s: physical half-life, s.

    Returns:
        :class:`DynamicIntegral`.
    """
    lam = decay_constant_per_s(half_life_s)
    ts = np.asarray(frame_start_s, dtype=float).reshape(-1)
    d = np.asarray(frame_duration_s, dtype=float).reshape(-1)
    a = np.asarray(a_bq, dtype=float)
    nf = ts.size
    if nf == 0 or d.size != nf or a.shape[:1] != (nf,):
        raise InputError(f"dynamic frames: {ts.size} starts, {d.size} durations and values of shape {a.shape} "
                         f"do not match")
    require_finite(ts, "frame start times")
    require_finite(d, "frame durations")
    require_finite(a, "frame values")
    if np.any(ts < 0):
        raise InputError("dynamic frames: negative frame start time(s) (times are after injection)")
    if np.any(d <= 0):
        raise InputError("dynamic frames: every frame duration must be positive")
    ends = ts + d
    if np.any(ts[1:] < ends[:-1] - 1e-6):
        raise InputError("dynamic frames: frames overlap or are out of order")
    if tail not in ("physical", "mono"):
        raise InputError(f"tail must be 'physical' or 'mono', got {tail!r}")
    ex = (-1,) + (1,) * (a.ndim - 1)
    if decay_corrected_to_s is not None:
        tref = np.broadcast_to(np.asarray(decay_corrected_to_s, dtype=float).reshape(-1), (nf,))
        require_finite(tref, "decay-correction reference time")
        integ = a * (np.exp(-lam * (ts - tref)) * -np.expm1(-lam * d) / lam).reshape(ex)
    else:
        integ = a * d.reshape(ex)
    avg = integ / d.reshape(ex)  # uncorrected frame-average activity
    frames = np.sum(integ, axis=0)
    before = 0.5 * avg[0] * ts[0]
    gap = (ts[1:] - ends[:-1]).clip(0.0)
    gaps = np.sum(0.5 * (avg[1:] + avg[:-1]) * gap.reshape(ex), axis=0) if nf > 1 else np.zeros_like(frames)
    x = lam * d[-1]
    a_end_phys = avg[-1] * (x * math.exp(-x) / -math.expm1(-x))
    tail_v = a_end_phys / lam
    if tail == "mono" and nf >= 2:
        m = min(max(2, int(n_tail_frames)), nf)
        mid = (ts + 0.5 * d)[-m:]
        ya = avg[-m:].reshape(m, -1)
        pos = np.all(ya > 0, axis=0)
        ly = np.log(np.where(pos, ya, 1.0))
        tc = mid - mid.mean()
        k = -(tc @ ly) / float(tc @ tc)
        k = np.maximum(k, lam)
        c = ly.mean(axis=0) + k * mid.mean()
        mono_tail = np.exp(c - k * ends[-1]) / k
        tail_v = np.where(pos.reshape(a.shape[1:]), mono_tail.reshape(a.shape[1:]), tail_v)
    return DynamicIntegral(np.asarray(before), np.asarray(frames), np.asarray(gaps), np.asarray(tail_v), tail)


__all__ = ["FitResult", "aicc", "fit_tac", "select_model", "DEFAULT_CANDIDATES", "VOXEL_CODES", "VoxelFit",
           "fit_voxels", "DynamicIntegral", "integrate_dynamic"]
