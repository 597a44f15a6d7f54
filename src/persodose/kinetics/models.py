"""Time-activity curve models with analytic time integrals.

All quantities are SI: times in s after injection, activity in Bq (NOT decay corrected: the
curves describe the activity present in the organ, physical decay included), time-integrated
activity (TIA) in Bq s.

Parametric models (:class:`MonoExponential`, :class:`BiExponentialUptake`,
:class:`BiExponential`, :class:`TriExponential`) are sums of exponentials whose rate
constants are *effective* rates ``lambda_eff = lambda_bio + lambda_phys`` (1/s). Every
effective rate is bounded below by the physical decay constant ``lambda_phys = ln 2 /
T_phys``: biological clearance cannot be negative (a radiopharmaceutical cannot leave an
organ more slowly than it decays). Rates are ordered by construction (the later rates are
written as the earlier one plus a non-negative increment), which removes the label
switching between terms and makes box bounds sufficient. The integral from 0 to infinity
of ``A exp(-lambda t)`` is ``A / lambda`` (elementary calculus); the sum models are the
standard compartmental forms used in dosimetry, e.g. MIRD Pamphlet No. 21 (Bolch et al.,
J Nucl Med 50 (2009) 477) and the NUKFIT function family (Kletting et al., Med Phys 40
(2013) 102504).

Non-parametric and single-time-point estimates:

* :class:`Trapezoid`: trapezoidal rule between the measured points, a first segment
  either rising linearly from zero at ``t = 0`` (default, ``first_segment="zero"``: makes no
  assumption of instantaneous uptake and cannot overestimate the area before the first
  point for an organ that fills up) or constant back-extrapolation of the first point
  (``"constant"``), and after the last point a tail with physical decay only,
  ``A(t_n) / lambda_phys`` (no biological clearance: conservative, an upper bound for a
  curve that clears).
* :class:`Hanscheid`: ``TIA = A(t) 2 t / ln 2`` (Hänscheid et al., J Nucl Med 59 (2018) 75):
  for a mono-exponential curve it is exact at ``t = T_eff`` and ``t = 2 T_eff`` and
  overestimates by at most 6.2 % in between (maximum at ``t = T_eff / ln 2``).
* :class:`SingleTimePoint`: ``TIA = A(t) exp(lambda_eff t) / lambda_eff`` with a
  population effective half-life (Madsen et al., Med Phys 45 (2018) 2318; Hou et al.,
  J Nucl Med 62 (2021) 1006): exact for a mono-exponential curve of that half-life.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from persodose.errors import InputError

LN2 = math.log(2.0)


def decay_constant_per_s(half_life_s: float, what: str = "physical half-life") -> float:
    """``ln 2 / T``, 1/s, after checking that ``T`` (s) is a positive finite number."""
    try:
        t = float(half_life_s)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a number of seconds, got {half_life_s!r}") from None
    if not (math.isfinite(t) and t > 0):
        raise InputError(f"{what} must be a positive finite number of seconds, got {half_life_s!r}")
    return LN2 / t


def _params(params, k: int, name: str) -> np.ndarray:
    p = np.asarray(params)
    if p.shape[-1:] != (k,):
        raise InputError(f"model {name!r} takes {k} parameters in the last axis, got shape {p.shape}")
    return p


def _exp(t: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """``exp(-lam[..., None] * t)``, shape ``(..., n_t)``."""
    return np.exp(-lam[..., None] * t)


@dataclass(frozen=True)
class ExponentialModel:
    """Base class of the sum-of-exponentials models.

    Attributes:
        half_life_s: physical half-life of the nuclide, s (sets the lower bound of the
            effective rates).

    Class attributes:
        name: registry name (``"mono"``, ``"biexp_uptake"``, ``"biexp"``, ``"triexp"``).
        param_names: parameter names with units, in the order of the last params axis.
        formula: the curve, for reports.
    """

    half_life_s: float
    name: ClassVar[str] = ""
    param_names: ClassVar[tuple[str, ...]] = ()
    formula: ClassVar[str] = ""
    _amplitude_index: ClassVar[tuple[int, ...]] = ()

    def __post_init__(self) -> None:
        decay_constant_per_s(self.half_life_s)

    @property
    def lambda_phys_per_s(self) -> float:
        """Physical decay constant, 1/s."""
        return LN2 / float(self.half_life_s)

    @property
    def n_params(self) -> int:
        return len(self.param_names)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds of the parameters (amplitudes >= 0, first rate >=
        lambda_phys, rate increments >= 0)."""
        lo = np.zeros(self.n_params)
        lo[1] = self.lambda_phys_per_s
        return lo, np.full(self.n_params, np.inf)

    def evaluate(self, t_s, params) -> np.ndarray:
        """Activity, Bq, shape ``params.shape[:-1] + (n_t,)`` for times ``t_s`` (n_t,) in s."""
        raise NotImplementedError

    def jacobian(self, t_s, params) -> np.ndarray:
        """``d evaluate / d params``, shape ``params.shape[:-1] + (n_t, n_params)``."""
        raise NotImplementedError

    def integral_0_inf(self, params) -> np.ndarray:
        """Time-integrated activity from 0 to infinity, Bq s, shape ``params.shape[:-1]``."""
        raise NotImplementedError

    def integral_gradient(self, params) -> np.ndarray:
        """``d integral_0_inf / d params`` by complex-step differentiation (exact to rounding
        for these analytic functions; Squire and Trapp, SIAM Review 40 (1998) 110)."""
        p = np.asarray(params, dtype=float)
        out = np.empty(p.shape, dtype=float)
        for i in range(self.n_params):
            h = 1e-30 * max(1.0, float(np.max(np.abs(p[..., i])))) if p.size else 1e-30
            pc = p.astype(complex)
            pc[..., i] += 1j * h
            out[..., i] = np.imag(self.integral_0_inf(pc)) / h
        return out

    def rates_per_s(self, params) -> np.ndarray:
        """Effective rate constants of the terms, 1/s, shape ``(..., n_terms)``."""
        raise NotImplementedError

    def terms(self, params) -> tuple[np.ndarray, np.ndarray]:
        """The curve as a sum of exponentials ``sum_j c_j exp(-l_j t)``.

        Returns:
            ``(c, l)``: signed amplitudes c_j (Bq) and effective rates l_j (1/s), each of
            shape ``(..., n_terms)`` (an uptake term has a negative amplitude).
        """
        raise NotImplementedError

    def integral_from(self, t_s, params) -> np.ndarray:
        """Time-integrated activity from ``t_s`` to infinity, Bq s.

        ``integral_t^inf c exp(-l u) du = c exp(-l t) / l`` for each term (elementary
        calculus); ``integral_from(0, p)`` equals :meth:`integral_0_inf`, and the integral
        between ``t1`` and ``t2`` is ``integral_from(t1) - integral_from(t2)``.

        Args:
            t_s: start time(s), s, shape (n_t,) or scalar.
            params: parameters, shape ``(..., n_params)``.

        Returns:
            shape ``params.shape[:-1] + (n_t,)`` (``params.shape[:-1]`` for a scalar time).
        """
        c, lam = self.terms(params)
        t = np.asarray(t_s, dtype=float)
        if t.ndim == 0:
            return np.sum(c * np.exp(-lam * t) / lam, axis=-1)
        return np.sum(c[..., None, :] * np.exp(-lam[..., None, :] * t[:, None]) / lam[..., None, :], axis=-1)

    def effective_half_lives_s(self, params) -> np.ndarray:
        """``ln 2 / rates``, s."""
        return LN2 / self.rates_per_s(params)

    def describe(self, params) -> dict:
        """Parameters of one fit as a plain dict (names with units), plus effective half-lives."""
        p = np.asarray(params, dtype=float).reshape(-1)
        d = {n: float(v) for n, v in zip(self.param_names, p)}
        d["effective_half_lives_s"] = [float(v) for v in self.effective_half_lives_s(p)]
        return d


@dataclass(frozen=True)
class MonoExponential(ExponentialModel):
    """``A(t) = A0 exp(-lambda_eff t)``, ``lambda_eff >= lambda_phys``; TIA = ``A0 / lambda_eff``."""

    name: ClassVar[str] = "mono"
    param_names: ClassVar[tuple[str, ...]] = ("a0_bq", "lambda_eff_per_s")
    formula: ClassVar[str] = "A0*exp(-l*t)"

    def evaluate(self, t_s, params):
        p = _params(params, 2, self.name)
        t = np.asarray(t_s, dtype=float)
        return p[..., 0, None] * _exp(t, p[..., 1])

    def jacobian(self, t_s, params):
        p = _params(params, 2, self.name)
        t = np.asarray(t_s, dtype=float)
        e = _exp(t, p[..., 1])
        return np.stack([e, -t * p[..., 0, None] * e], axis=-1)

    def integral_0_inf(self, params):
        p = _params(params, 2, self.name)
        return p[..., 0] / p[..., 1]

    def rates_per_s(self, params):
        p = _params(params, 2, self.name)
        return p[..., 1:2]

    def terms(self, params):
        p = _params(params, 2, self.name)
        return p[..., 0:1], p[..., 1:2]


@dataclass(frozen=True)
class BiExponentialUptake(ExponentialModel):
    """Uptake and washout: ``A(t) = A (exp(-l1 t) - exp(-l2 t))`` with ``l2 = l1 + dl``.

    ``l1 >= lambda_phys`` is the effective washout rate, ``l2`` the (faster) effective
    uptake rate. TIA = ``A (1/l1 - 1/l2)``.
    """

    name: ClassVar[str] = "biexp_uptake"
    param_names: ClassVar[tuple[str, ...]] = ("a_bq", "lambda_washout_eff_per_s", "delta_lambda_uptake_per_s")
    formula: ClassVar[str] = "A*(exp(-l1*t)-exp(-(l1+dl)*t))"

    def evaluate(self, t_s, params):
        p = _params(params, 3, self.name)
        t = np.asarray(t_s, dtype=float)
        return p[..., 0, None] * (_exp(t, p[..., 1]) - _exp(t, p[..., 1] + p[..., 2]))

    def jacobian(self, t_s, params):
        p = _params(params, 3, self.name)
        t = np.asarray(t_s, dtype=float)
        e1, e2 = _exp(t, p[..., 1]), _exp(t, p[..., 1] + p[..., 2])
        a = p[..., 0, None]
        return np.stack([e1 - e2, a * t * (e2 - e1), a * t * e2], axis=-1)

    def integral_0_inf(self, params):
        p = _params(params, 3, self.name)
        return p[..., 0] * (1.0 / p[..., 1] - 1.0 / (p[..., 1] + p[..., 2]))

    def rates_per_s(self, params):
        p = _params(params, 3, self.name)
        return np.stack([p[..., 1], p[..., 1] + p[..., 2]], axis=-1)

    def terms(self, params):
        p = _params(params, 3, self.name)
        return np.stack([p[..., 0], -p[..., 0]], axis=-1), self.rates_per_s(p)


@dataclass(frozen=True)
class BiExponential(ExponentialModel):
    """Sum of two clearing terms: ``A1 exp(-l1 t) + A2 exp(-l2 t)``, ``l2 = l1 + dl``.

    TIA = ``A1/l1 + A2/l2``; ``A1, A2 >= 0``; ``l1 >= lambda_phys`` is the slow rate.
    """

    name: ClassVar[str] = "biexp"
    param_names: ClassVar[tuple[str, ...]] = ("a1_bq", "lambda1_eff_per_s", "a2_bq", "delta_lambda2_per_s")
    formula: ClassVar[str] = "A1*exp(-l1*t)+A2*exp(-(l1+dl)*t)"

    def evaluate(self, t_s, params):
        p = _params(params, 4, self.name)
        t = np.asarray(t_s, dtype=float)
        return p[..., 0, None] * _exp(t, p[..., 1]) + p[..., 2, None] * _exp(t, p[..., 1] + p[..., 3])

    def jacobian(self, t_s, params):
        p = _params(params, 4, self.name)
        t = np.asarray(t_s, dtype=float)
        e1, e2 = _exp(t, p[..., 1]), _exp(t, p[..., 1] + p[..., 3])
        a1, a2 = p[..., 0, None], p[..., 2, None]
        return np.stack([e1, -t * (a1 * e1 + a2 * e2), e2, -t * a2 * e2], axis=-1)

    def integral_0_inf(self, params):
        p = _params(params, 4, self.name)
        return p[..., 0] / p[..., 1] + p[..., 2] / (p[..., 1] + p[..., 3])

    def rates_per_s(self, params):
        p = _params(params, 4, self.name)
        return np.stack([p[..., 1], p[..., 1] + p[..., 3]], axis=-1)

    def terms(self, params):
        p = _params(params, 4, self.name)
        return np.stack([p[..., 0], p[..., 2]], axis=-1), self.rates_per_s(p)


@dataclass(frozen=True)
class TriExponential(ExponentialModel):
    """Uptake with biphasic washout: ``A1 e^{-l1 t} + A2 e^{-l2 t} - (A1 + A2) e^{-l3 t}``.

    ``l1 >= lambda_phys`` (slow washout), ``l2 = l1 + d2``, ``l3 = l2 + d3`` (uptake, the
    fastest); the curve starts at zero. TIA = ``A1/l1 + A2/l2 - (A1 + A2)/l3``.
    """

    name: ClassVar[str] = "triexp"
    param_names: ClassVar[tuple[str, ...]] = ("a1_bq", "lambda1_eff_per_s", "a2_bq", "delta_lambda2_per_s",
                                              "delta_lambda3_per_s")
    formula: ClassVar[str] = "A1*exp(-l1*t)+A2*exp(-l2*t)-(A1+A2)*exp(-l3*t)"

    @staticmethod
    def _rates(p):
        l1 = p[..., 1]
        l2 = l1 + p[..., 3]
        return l1, l2, l2 + p[..., 4]

    def evaluate(self, t_s, params):
        p = _params(params, 5, self.name)
        t = np.asarray(t_s, dtype=float)
        l1, l2, l3 = self._rates(p)
        a1, a2 = p[..., 0, None], p[..., 2, None]
        return a1 * _exp(t, l1) + a2 * _exp(t, l2) - (a1 + a2) * _exp(t, l3)

    def jacobian(self, t_s, params):
        p = _params(params, 5, self.name)
        t = np.asarray(t_s, dtype=float)
        l1, l2, l3 = self._rates(p)
        e1, e2, e3 = _exp(t, l1), _exp(t, l2), _exp(t, l3)
        a1, a2 = p[..., 0, None], p[..., 2, None]
        s = a1 + a2
        return np.stack([e1 - e3, -t * (a1 * e1 + a2 * e2 - s * e3), e2 - e3, -t * (a2 * e2 - s * e3),
                         t * s * e3], axis=-1)

    def integral_0_inf(self, params):
        p = _params(params, 5, self.name)
        l1, l2, l3 = self._rates(p)
        return p[..., 0] / l1 + p[..., 2] / l2 - (p[..., 0] + p[..., 2]) / l3

    def rates_per_s(self, params):
        p = _params(params, 5, self.name)
        return np.stack(self._rates(p), axis=-1)

    def terms(self, params):
        p = _params(params, 5, self.name)
        return np.stack([p[..., 0], p[..., 2], -(p[..., 0] + p[..., 2])], axis=-1), self.rates_per_s(p)


#: Registry of the parametric models by name.
PARAMETRIC_MODELS: dict[str, type[ExponentialModel]] = {
    m.name: m for m in (MonoExponential, BiExponentialUptake, BiExponential, TriExponential)
}


def get_model(name, half_life_s: float) -> ExponentialModel:
    """A parametric model by name (or the instance itself, checked against ``half_life_s``).

    Raises:
        InputError: unknown name, or an instance built for another physical half-life.
    """
    if isinstance(name, ExponentialModel):
        if abs(float(name.half_life_s) / float(half_life_s) - 1.0) > 1e-9:
            raise InputError(f"model {name.name!r} was built for half-life {name.half_life_s} s, "
                             f"not {half_life_s} s")
        return name
    try:
        cls = PARAMETRIC_MODELS[str(name)]
    except KeyError:
        raise InputError(f"unknown kinetic model {name!r}: use one of {', '.join(PARAMETRIC_MODELS)}") from None
    return cls(float(half_life_s))


# ----------------------------------------------------------------------------- non-parametric
@dataclass(frozen=True)
class Trapezoid:
    """Trapezoidal integration with a physical-decay tail (see module docstring).

    Attributes:
        half_life_s: physical half-life, s.
        first_segment: ``"zero"`` (default: linear from ``A = 0`` at ``t = 0`` to the first
            point) or ``"constant"`` (the first point's activity back to ``t = 0``).
    """

    half_life_s: float
    first_segment: str = "zero"
    name: ClassVar[str] = "trapezoid"

    def __post_init__(self) -> None:
        decay_constant_per_s(self.half_life_s)
        if self.first_segment not in ("zero", "constant"):
            raise InputError(f"first_segment must be 'zero' or 'constant', got {self.first_segment!r}")

    @property
    def lambda_phys_per_s(self) -> float:
        return LN2 / float(self.half_life_s)

    def parts(self, t_s, a_bq) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Head (0 to t_1), body (t_1 to t_n) and tail (t_n to infinity) integrals, Bq s.

        Args:
            t_s: increasing sample times, s, shape (n_t,).
            a_bq: activities, Bq, shape (n_t, ...) (any trailing voxel axes).
        """
        t = np.asarray(t_s, dtype=float)
        a = np.asarray(a_bq, dtype=float)
        if a.shape[:1] != t.shape:
            raise InputError(f"{t.size} times but activities of shape {a.shape}")
        tt = t.reshape((-1,) + (1,) * (a.ndim - 1))
        head = a[0] * t[0] * (0.5 if self.first_segment == "zero" else 1.0)
        body = np.sum(0.5 * (a[1:] + a[:-1]) * np.diff(tt, axis=0), axis=0)
        tail = a[-1] / self.lambda_phys_per_s
        return head, body, tail

    def integral(self, t_s, a_bq) -> np.ndarray:
        """TIA from 0 to infinity, Bq s, shape ``a_bq.shape[1:]``."""
        head, body, tail = self.parts(t_s, a_bq)
        return head + body + tail

    def evaluate(self, t_eval_s, t_s, a_bq) -> np.ndarray:
        """The piecewise curve integrated by :meth:`integral`, at times ``t_eval_s`` (1-D
        ``a_bq`` only)."""
        t = np.asarray(t_s, dtype=float)
        a = np.asarray(a_bq, dtype=float)
        te = np.asarray(t_eval_s, dtype=float)
        a_start = 0.0 if self.first_segment == "zero" else a[0]
        out = np.interp(te, np.concatenate([[0.0], t]), np.concatenate([[a_start], a]))
        late = te > t[-1]
        return np.where(late, a[-1] * np.exp(-self.lambda_phys_per_s * (te - t[-1])), out)


# ----------------------------------------------------------------------------- single time point
@dataclass(frozen=True)
class Hanscheid:
    """Single-time-point TIA ``A(t) 2 t / ln 2`` (Hänscheid et al., J Nucl Med 59 (2018) 75).

    Derived for a mono-exponential curve ``A(t) = A0 exp(-lambda t)``: the exact TIA is
    ``A(t) exp(lambda t) / lambda``; with ``x = lambda t`` the ratio approximate/exact is
    ``2 x / (ln 2 e^x)``, equal to 1 at ``t = T_eff`` and ``t = 2 T_eff`` and at most
    ``2 / (e ln 2) = 1.0615`` (at ``t = T_eff / ln 2``).
    """

    name: ClassVar[str] = "hanscheid"

    def tia(self, t_s, a_bq) -> np.ndarray:
        """TIA, Bq s, from the activity ``a_bq`` (Bq, any shape) measured at ``t_s`` (s)."""
        t = float(t_s)
        if not (math.isfinite(t) and t > 0):
            raise InputError(f"the single time point must be a positive time after injection, got {t_s!r} s")
        return np.asarray(a_bq, dtype=float) * (2.0 * t / LN2)

    @staticmethod
    def ratio_to_exact(t_s: float, effective_half_life_s: float) -> float:
        """Hänscheid / exact TIA for a mono-exponential curve of ``effective_half_life_s``."""
        x = LN2 * float(t_s) / float(effective_half_life_s)
        return 2.0 * x / (LN2 * math.exp(x))


@dataclass(frozen=True)
class SingleTimePoint:
    """Single-time-point TIA with a population effective half-life.

    ``TIA = A(t) exp(lambda_eff t) / lambda_eff``, ``lambda_eff = ln 2 / T_eff`` (Madsen et
    al., Med Phys 45 (2018) 2318; Hou et al., J Nucl Med 62 (2021) 1006).

    Attributes:
        effective_half_life_s: population effective half-life, s.
        half_life_s: physical half-life, s (optional; when given, ``T_eff <= T_phys`` is
            checked, since biological clearance cannot be negative).
    """

    effective_half_life_s: float
    half_life_s: float | None = None
    name: ClassVar[str] = "stp"

    def __post_init__(self) -> None:
        decay_constant_per_s(self.effective_half_life_s, "effective half-life")
        if self.half_life_s is not None:
            decay_constant_per_s(self.half_life_s)
            if float(self.effective_half_life_s) > float(self.half_life_s) * (1 + 1e-9):
                raise InputError(f"effective half-life {self.effective_half_life_s} s exceeds the physical "
                                 f"half-life {self.half_life_s} s (negative biological clearance)")

    def tia(self, t_s, a_bq) -> np.ndarray:
        """TIA, Bq s, from the activity ``a_bq`` (Bq, any shape) measured at ``t_s`` (s)."""
        t = float(t_s)
        if not (math.isfinite(t) and t >= 0):
            raise InputError(f"the single time point must be a time after injection, got {t_s!r} s")
        lam = LN2 / float(self.effective_half_life_s)
        return np.asarray(a_bq, dtype=float) * (math.exp(lam * t) / lam)


__all__ = ["LN2", "decay_constant_per_s", "ExponentialModel", "MonoExponential", "BiExponentialUptake",
           "BiExponential", "TriExponential", "PARAMETRIC_MODELS", "get_model", "Trapezoid", "Hanscheid",
           "SingleTimePoint"]
