"""Uncertainty of organ and lesion absorbed doses: propagation through the dosimetry chain and its budget.

The model follows the EANM practical guidance on uncertainty analysis for molecular
radiotherapy absorbed-dose calculations (J. I. Gear et al., Eur J Nucl Med Mol Imaging 45
(2018) 2456-2474): the mean absorbed dose of a volume of interest is the product of its
time-integrated activity (TIA) and a dose factor that depends on the VOI's mass; the TIA is the
area under the time-activity curve fitted to activities, each of which is a count rate divided
by a calibration factor and a recovery coefficient. Uncertainties are propagated to first order
(the law of propagation of uncertainty, JCGM 100:2008 "GUM", section 5.1.2) and listed as a
budget, one line per input, each with its share of the variance.

For one structure the relative variance of the dose is the sum of

* **calibration**: ``u(Q)/Q`` of the camera calibration factor. The same factor divides every
  time point, so the TIA (and the dose) scale with ``1/Q``: fully correlated over time.
* **recovery**: ``u(RC)/RC`` of the partial-volume recovery coefficient; by default one coefficient
  per VOI, applied to every time point (fully correlated over time, like the calibration). With
  ``recovery_per_time_point`` (a VOI delineated anew at each time point) the coefficients are
  independent between time points and the line is propagated through the fit like the noise (the
  fit covariance scales with the square of a relative noise, so its share is exact to first order).
  Without a stated activity noise the fit's covariance, scaled by its residuals, already holds
  that scatter: the recovery line is then a note pointing to the fit line, not counted twice.
* **time-point activities and kinetic fit**: the activity noise at each time point propagated
  through the fit of the chosen model, ``var(TIA) = g^T C g`` with ``C`` the covariance of the
  fit weighted with the stated noise ``sigma_i = u_rel A_i`` (for weighted least squares this is
  exactly the first-order propagation of independent noise through the fit). Where no noise is
  stated, the fit's own covariance (scaled by its residuals) stands for it. With stated noise and
  residuals larger than it (reduced chi-square above 1), the excess is a separate line, "fit
  residuals beyond the stated noise". A trapezoid or single-time-point TIA is linear in the
  activities: the noise is propagated through its gradient.
* **mass**: ``u(m)/m``; for organ-level MIRD the self-dose factor scales as ``1/m`` (absorbed
  fraction 1 for the non-penetrating emissions, which carry most of the dose of a beta emitter).
  The mean of a voxel method's dose map does not: the map stays, only the voxels averaged
  change, so with the dose map (:func:`organ_uncertainties` ``dose_map``, what the internal
  workflow passes for every voxel method) the delineation line is the change of the
  mass-weighted mean dose when the mask is eroded and dilated by one voxel
  (:func:`delineation_dose_rel_sd`). A stated ``mass`` is still applied as ``1/m``. Without a
  stated value (and without a dose map) it comes from the delineation (``1/m``): the boundary
  may sit anywhere within half a voxel of where it is drawn (the same shift everywhere), a
  rectangular distribution of half-width
  ``S * s / 2`` (surface area ``S``, voxel size ``s``), hence ``u(V) = S s / (2 sqrt 3)`` (GUM
  section 4.3.7). ``S`` is 2/3 of the voxel faces on the boundary: a surface element of normal
  ``n`` shows ``|n_x| + |n_y| + |n_z|`` times its area as voxel faces, 3/2 on average over
  orientations (``E|n_i| = 1/2`` for directions uniform on the sphere).
* **method statistics**: a stochastic method's own uncertainty (Monte Carlo batches; a network's
  ensemble spread where a method supplies one), combined over the structure's voxels as if they
  were independent: ``u = sqrt(sum (m_j d_j u_j)^2) / sum(m_j d_j)``, a lower bound where voxels
  are correlated. A method without an estimate of its own (a fast method, a network without an
  ensemble) gets, when Monte Carlo ran in the same run, its relative difference from the Monte
  Carlo dose of the structure as an equivalent estimate (the workflow's choice, stated in the line).

Limitations, stated in every budget: the covariance of the recovery coefficient with the VOI's
volume (Gear et al. 2018, section on the recovery coefficient) is not included; cross-dose from
other structures is not given an uncertainty of its own; the fit's model-selection uncertainty
(another model than the one AICc chose) is not included.

:func:`resample_dose` repeats the chain with inputs drawn from their distributions (the check
of the propagation, used by the tests).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

import numpy as np

from persodose.errors import InputError

#: Budget lines, in the order they are listed.
COMPONENTS = ("calibration", "recovery", "time-point activities and kinetic fit",
              "fit residuals beyond the stated noise", "mass", "method statistics")

LIMITATIONS = ("first-order propagation (GUM 5.1.2), indicative only where a line reaches tens of percent (small "
               "VOIs at coarse voxels: the 1/m dependence is then far from linear); a stated mass uncertainty is "
               "applied as 1/m for every method (right for organ-level MIRD, an overstatement for voxel dose maps, "
               "whose "
               "delineation line is estimated from the map when not stated); recovery-volume covariance not included; "
               "cross-dose and model-selection uncertainty not included; method statistics combine voxels "
               "as independent (a lower bound)")


def _fraction(value, name: str) -> float | None:
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number (a relative standard uncertainty), got {value!r}") from None
    if not (math.isfinite(v) and 0.0 <= v < 1.0):
        raise InputError(f"{name} must be a relative standard uncertainty within 0-100 %, got {100 * v:g} %")
    return v


@dataclass(frozen=True)
class UncertaintySettings:
    """Relative standard uncertainties (fractions, k = 1) of the inputs of the dose.

    ``None`` means "not stated": the budget says so, and that line is left out of the combined
    uncertainty (except the mass, which is then estimated from the delineation, and the
    activities, whose fit covariance then stands for them).

    Attributes:
        calibration: ``u(Q)/Q`` of the camera calibration factor (one factor for every time point).
        activity: ``u(A_i)/A_i`` of each time point's activity (counting noise, reconstruction).
        recovery: ``u(RC)/RC`` of each VOI's recovery coefficient.
        mass: ``u(m)/m`` of every VOI's mass; default from the delineation (module docstring).
        recovery_per_time_point: the recovery coefficients of the time points are independent (a VOI
            per time point) rather than one coefficient for all (default).
    """

    calibration: float | None = None
    activity: float | None = None
    recovery: float | None = None
    mass: float | None = None
    recovery_per_time_point: bool = False

    def __post_init__(self) -> None:
        for name in ("calibration", "activity", "recovery", "mass"):
            object.__setattr__(self, name, _fraction(getattr(self, name), f"uncertainty.{name}"))
        flag = self.recovery_per_time_point
        if isinstance(flag, str):
            if flag.strip().lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise InputError(f"uncertainty.recovery_per_time_point must be true or false, got {flag!r}")
            flag = flag.strip().lower() in ("true", "1", "yes")
        object.__setattr__(self, "recovery_per_time_point", bool(flag))

    @classmethod
    def of(cls, value) -> "UncertaintySettings":
        """From an instance, a dict ``{name: fraction}`` or None."""
        if isinstance(value, cls):
            return value
        if value is None:
            return cls()
        if not isinstance(value, Mapping):
            raise InputError(f"uncertainty settings must be a mapping, got {type(value).__name__}")
        unknown = set(value) - {"calibration", "activity", "recovery", "mass", "recovery_per_time_point"}
        if unknown:
            raise InputError(f"unknown uncertainty setting(s) {sorted(unknown)}: use calibration, activity, "
                             "recovery, mass, recovery_per_time_point")
        return cls(**dict(value))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Component:
    """One line of a budget: a relative standard uncertainty (fraction) or None if not available."""

    name: str
    relative_sd: float | None
    note: str = ""


@dataclass(frozen=True)
class DoseUncertainty:
    """The combined uncertainty of one structure's mean absorbed dose and its budget.

    Attributes:
        name: structure; method: dose method; dose_gy: the dose the budget belongs to, Gy.
        components: the budget lines (:data:`COMPONENTS` order).
    """

    name: str
    method: str
    dose_gy: float
    components: tuple[Component, ...] = field(default_factory=tuple)

    @property
    def complete(self) -> bool:
        """False when a line has no value (not stated, not available): :attr:`relative_sd` is then a lower bound."""
        return all(c.relative_sd is not None for c in self.components)

    @property
    def relative_sd(self) -> float:
        """Combined relative standard uncertainty (k = 1), the root sum of squares of the lines."""
        return math.sqrt(sum(c.relative_sd ** 2 for c in self.components if c.relative_sd is not None))

    @property
    def sd_gy(self) -> float:
        return abs(self.dose_gy) * self.relative_sd

    def budget(self) -> list[dict]:
        """Rows ``{component, relative_sd_percent, share_percent, note}``; share of the variance."""
        var = self.relative_sd ** 2
        rows = []
        for c in self.components:
            share = None if c.relative_sd is None or var <= 0 else 100.0 * c.relative_sd ** 2 / var
            rows.append({"component": c.name,
                         "relative_sd_percent": None if c.relative_sd is None else 100.0 * c.relative_sd,
                         "share_percent": share, "note": c.note})
        return rows

    def to_dict(self) -> dict:
        return {"name": self.name, "method": self.method, "dose_Gy": self.dose_gy, "sd_Gy": self.sd_gy,
                "relative_sd_percent": 100.0 * self.relative_sd, "budget": self.budget()}


# --------------------------------------------------------------------------- the TIA's share
def tia_relative_sd(times_s: Sequence[float], activities_bq: Sequence[float], half_life_s: float,
                    model: str, activity_rel_sd: float | None, fit=None, scatter_rel_sd: float | None = None
                    ) -> tuple[float | None, float | None, str]:
    """Relative standard uncertainty of a TIA from the time-point activities and the fit.

    Args:
        times_s, activities_bq: the structure's time-activity data (s, Bq).
        half_life_s: physical half-life, s.
        model: the model that gave the TIA (a parametric model name, ``"trapezoid"``,
            ``"hanscheid"`` or ``"none"``).
        activity_rel_sd: stated relative noise of each activity, or None.
        fit: the :class:`~persodose.kinetics.fit.FitResult` of the TIA (its covariance stands for the
            noise when none is stated).
        scatter_rel_sd: the whole independent scatter expected between time points (default the
            activity noise; larger when per-time-point recovery is stated), against which residuals
            count as "beyond the stated noise".

    Returns:
        ``(noise, excess, note)``: relative sd from the activities through the fit, relative sd of
        the residuals beyond the stated noise (None when not applicable), and how it was obtained.
    """
    from persodose.kinetics.fit import fit_tac
    from persodose.kinetics.models import PARAMETRIC_MODELS, Trapezoid

    t = np.asarray(times_s, dtype=float)
    a = np.asarray(activities_bq, dtype=float)
    if model == "none" or not np.any(a > 0):
        return 0.0, None, "no activity"
    if model in PARAMETRIC_MODELS:
        if activity_rel_sd is None or activity_rel_sd == 0:
            if fit is None or not math.isfinite(fit.tia_sd_bq_s) or fit.tia_bq_s <= 0:
                return None, None, "fit covariance not available and no activity noise stated"
            return fit.tia_sd_bq_s / fit.tia_bq_s, None, f"{model} fit covariance (scaled by its residuals)"
        sigma = np.maximum(np.abs(a), 1e-12 * np.max(np.abs(a))) * activity_rel_sd
        f = fit_tac(t, a, model, half_life_s, sigma=sigma)
        if f.tia_bq_s <= 0 or not math.isfinite(f.tia_sd_bq_s):
            return None, None, f"{model} fit with the stated noise gave no covariance"
        noise = f.tia_sd_bq_s / f.tia_bq_s
        dof = f.n_points - f.n_params
        scale = (scatter_rel_sd or activity_rel_sd) / activity_rel_sd  # the expected scatter over the noise
        chi2 = f.ssr / dof / scale ** 2 if dof > 0 else 0.0
        excess = noise * scale * math.sqrt(chi2 - 1.0) if chi2 > 1.0 else None
        return noise, excess, f"{model} fit weighted with the stated noise"
    if activity_rel_sd is None:
        return None, None, f"{model}: no fit covariance; state the activity noise"
    if model == "hanscheid":
        return activity_rel_sd, None, "single time point: TIA proportional to the activity"
    trap = Trapezoid(half_life_s)
    total = float(trap.integral(t, a))
    grad = np.array([float(trap.integral(t, np.eye(t.size)[i])) for i in range(t.size)])  # linear in A
    sd = math.sqrt(float(np.sum((grad * a * activity_rel_sd) ** 2)))
    return (sd / total if total > 0 else None), None, "trapezoid: linear in the activities"


# --------------------------------------------------------------------------- geometry
def boundary_faces(labels: np.ndarray) -> np.ndarray:
    """Number of voxel faces on the boundary of each label value (index = label), shape (max+1,).

    A face between two voxels of different labels counts for both; faces on the array's edge
    count for the label there.
    """
    lab = np.asarray(labels).astype(np.int64)
    n = int(lab.max(initial=0)) + 1
    faces = np.zeros(n, dtype=np.int64)
    for axis in range(lab.ndim):
        a = np.moveaxis(lab, axis, 0)
        diff = a[1:] != a[:-1]
        faces += np.bincount(a[1:][diff].ravel(), minlength=n)[:n]
        faces += np.bincount(a[:-1][diff].ravel(), minlength=n)[:n]
        faces += np.bincount(a[0].ravel(), minlength=n)[:n] + np.bincount(a[-1].ravel(), minlength=n)[:n]
    return faces


def delineation_volume_rel_sd(n_faces: int, n_voxels: int, voxel_mm: float = 1.0) -> float:
    """``u(V)/V`` of a VOI whose boundary may lie anywhere within half a voxel of where it is drawn.

    ``u(V) = S s / (2 sqrt 3)`` with the surface ``S = (2/3) n_faces s^2`` (the staircase of voxel
    faces overstates a surface by 3/2 on average, module docstring; rectangular distribution of
    half-width ``S s / 2``, GUM JCGM 100:2008 section 4.3.7); ``V = n_voxels s^3``. Independent of
    ``s``: ``n_faces / (3 sqrt(3) n_voxels)``.
    """
    if n_voxels <= 0:
        return float("nan")
    return float(n_faces) / (3.0 * math.sqrt(3.0) * float(n_voxels))


def delineation_dose_rel_sd(dose: np.ndarray, mask: np.ndarray, weights: np.ndarray | None = None) -> float:
    """``u(D)/D`` of a voxel dose map's mass-weighted mean dose in a VOI from the VOI's delineation.

    The dose map does not change when the VOI is drawn differently; only the voxels averaged do.
    The mean dose is computed over the mask eroded and dilated by one voxel (6-connected). Such an
    erosion moves a boundary of normal ``n`` by ``max |n_i|`` voxel, not 1, so the mean shift
    ``delta`` (voxels) is measured: the volume between the eroded and dilated masks over twice the
    surface (``S`` = 2/3 of the boundary's voxel faces, :func:`delineation_volume_rel_sd`). The
    boundary is taken to lie anywhere within half a voxel of where it is drawn (as for the volume),
    so, linear in the shift, the mean lies within ``+-|D_dilated - D_eroded| / (2 delta) / 2`` of
    ``D``: a rectangular distribution of that half-width, divided by ``sqrt 3`` (GUM JCGM 100:2008
    section 4.3.7). Where erosion leaves nothing, the mask itself stands for the eroded one.

    Args:
        dose: dose map (z, y, x); mask: the VOI (same shape); weights: voxel masses or densities
            (same shape) for a mass-weighted mean, or None.

    Returns:
        The relative standard uncertainty; NaN where the VOI's dose is not positive.
    """
    from scipy import ndimage

    m = np.asarray(mask, dtype=bool)
    if not m.any():
        return float("nan")
    box = tuple(slice(max(int(i.min()) - 2, 0), int(i.max()) + 3) for i in np.nonzero(m))
    m, d = m[box], np.asarray(dose, dtype=np.float64)[box]
    w = np.ones_like(d) if weights is None else np.asarray(weights, dtype=np.float64)[box]
    st = ndimage.generate_binary_structure(m.ndim, 1)

    def mean(k):
        tot = float(np.sum(w[k]))
        return float(np.sum(w[k] * d[k]) / tot) if tot > 0 else float("nan")

    d0 = mean(m)
    if not (d0 > 0):
        return float("nan")
    ero, dil = ndimage.binary_erosion(m, st), ndimage.binary_dilation(m, st)
    if not ero.any():
        ero = m
    surface = 2.0 / 3.0 * float(boundary_faces(m.astype(np.int64))[1])
    delta = float(dil.sum() - ero.sum()) / (2.0 * surface)  # mean boundary shift of erosion/dilation, voxels
    slope = abs(mean(dil) - mean(ero)) / (2.0 * delta)  # dD per voxel of boundary shift
    return slope * 0.5 / math.sqrt(3.0) / d0


def method_rel_sd(dose: np.ndarray, rel_unc: np.ndarray, weights: np.ndarray | None = None) -> float:
    """A structure's relative statistical uncertainty from per-voxel relative uncertainties.

    ``sqrt(sum (w d u)^2) / sum(w d)`` (independent voxels; ``w`` the voxel masses for a
    mass-weighted mean, 1 otherwise). NaN where the dose sums to zero.
    """
    d = np.asarray(dose, dtype=np.float64).ravel()
    u = np.nan_to_num(np.asarray(rel_unc, dtype=np.float64).ravel(), nan=0.0, posinf=0.0)
    w = np.ones_like(d) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    tot = float(np.sum(w * d))
    if tot <= 0:
        return float("nan")
    return float(np.sqrt(np.sum((w * d * u) ** 2)) / tot)


# --------------------------------------------------------------------------- one structure
def dose_uncertainty(name: str, method: str, dose_gy: float, settings: UncertaintySettings, *,
                     tia: tuple[float | None, float | None, str] | None = None,
                     mass_rel_sd: float | None = None, method_rel: float | None = None,
                     method_note: str = "", recovery_rel: float | None = None,
                     recovery_in_fit: bool = False, mass_note: str = "delineation within half a voxel"
                     ) -> DoseUncertainty:
    """The budget of one structure's dose from the relative uncertainties of its inputs.

    Args:
        name, method, dose_gy: the structure, the method and its dose (Gy).
        settings: the stated uncertainties.
        tia: :func:`tia_relative_sd`'s result, or None (no kinetics: a given TIA).
        mass_rel_sd: ``u(m)/m`` from the delineation, used when ``settings.mass`` is not stated.
        method_rel: the method's own statistical uncertainty (Monte Carlo, ensemble), or None.
        recovery_rel: with ``settings.recovery_per_time_point``, the recovery line propagated through the
            fit (:func:`tia_relative_sd` with the recovery's noise); None: the stated value itself.
        recovery_in_fit: per-time-point recovery with no activity noise stated: the fit covariance scaled by its
            residuals already holds that scatter, so the recovery line has no value of its own (a note says where
            it is) and is not counted twice.
    """
    s = settings
    rc_note = "" if s.recovery is not None else "not stated"
    rc_value = s.recovery if recovery_rel is None else recovery_rel
    if recovery_rel is not None:
        rc_note = "independent at each time point, through the fit"
    if recovery_in_fit:
        rc_value, rc_note = None, (f"included in '{COMPONENTS[2]}' (independent at each time point, no "
                                   "activity noise stated: the residual-scaled fit covariance holds this "
                                   "scatter; not added twice)")
    comps = [Component("calibration", s.calibration, "" if s.calibration is not None else "not stated"),
             Component("recovery", rc_value, rc_note)]
    if tia is None:
        comps.append(Component(COMPONENTS[2], None, "no kinetics (TIA given or one image)"))
    else:
        noise, excess, note = tia
        comps.append(Component(COMPONENTS[2], noise, note))
        if excess is not None:
            comps.append(Component(COMPONENTS[3], excess, "residuals larger than the stated noise"))
    if s.mass is not None:
        comps.append(Component("mass", s.mass, "stated (dose taken as 1/m)"))
    else:
        ok = mass_rel_sd is not None and math.isfinite(mass_rel_sd)
        comps.append(Component("mass", mass_rel_sd if ok else None, mass_note if ok else "not available"))
    if method_rel is not None and math.isfinite(method_rel):
        comps.append(Component("method statistics", method_rel, method_note))
    return DoseUncertainty(name, method, float(dose_gy), tuple(comps))


def organ_uncertainties(rows, labels: np.ndarray, density: np.ndarray | None, organ_kinetics: Mapping,
                        half_life_s: float, settings: UncertaintySettings, *, dose: np.ndarray | None = None,
                        rel_unc: np.ndarray | None = None, method_note: str = "",
                        tia_cache: dict | None = None, method_rel_by_name: Mapping[str, float] | None = None,
                        dose_map: np.ndarray | None = None) -> dict[str, DoseUncertainty]:
    """Budgets of every structure of one method's organ table.

    Args:
        rows: :class:`~persodose.metrics.organ.OrganDoseRow` of one method (Gy).
        labels: the label map on the dose grid (z, y, x); density: g/cm3 on it (or None).
        organ_kinetics: structure name -> :class:`~persodose.kinetics.tia.OrganTIA`.
        half_life_s: physical half-life, s.
        settings: the stated uncertainties.
        dose, rel_unc: the method's dose (Gy) and relative voxel uncertainty, for "method statistics".
        tia_cache: a dict shared between the calls for several methods (the fits are the same).
        method_rel_by_name: a method's relative uncertainty per structure from elsewhere (used where
            ``dose``/``rel_unc`` are not given; e.g. its difference from Monte Carlo in the same run).
        dose_map: the method's voxel dose map (Gy, on the label grid): the delineation line of the mass-weighted
            mean then comes from the map (:func:`delineation_dose_rel_sd`) instead of ``1/m``, which holds for
            organ-level MIRD only.

    Returns:
        structure name -> :class:`DoseUncertainty` (structures without voxels left out).
    """
    lab = np.asarray(labels).astype(np.int64)
    faces = boundary_faces(lab)
    tia_cache = {} if tia_cache is None else tia_cache
    out: dict[str, DoseUncertainty] = {}
    for r in rows:
        if not r.n_voxels:
            continue
        value = r.mass_weighted_mean_gy if r.mass_weighted_mean_gy is not None else r.mean_gy
        ok = organ_kinetics.get(r.name)
        tia, rc, rc_in_fit = None, None, False
        if ok is not None:
            per_tp_rc = settings.recovery if settings.recovery_per_time_point and settings.recovery else 0.0
            if r.name not in tia_cache:
                scatter = math.hypot(settings.activity, per_tp_rc) if settings.activity else None
                tia_cache[r.name] = tia_relative_sd(ok.times_s, ok.activities_bq, half_life_s, ok.chosen_model,
                                                    settings.activity, ok.fit, scatter_rel_sd=scatter)
            tia = tia_cache[r.name]
            rc_in_fit = bool(per_tp_rc) and not settings.activity and tia[0] is not None \
                and tia[2].endswith("(scaled by its residuals)")
            if settings.recovery_per_time_point and settings.recovery and not rc_in_fit:
                key = ("recovery", r.name)
                if key not in tia_cache:
                    tia_cache[key] = tia_relative_sd(ok.times_s, ok.activities_bq, half_life_s, ok.chosen_model,
                                                     settings.recovery, ok.fit)[0]
                rc = tia_cache[key]
        if dose_map is not None:
            m_rel = delineation_dose_rel_sd(dose_map, lab == r.label, density)
            m_note = "delineation within half a voxel, from the dose map (mask eroded/dilated by one voxel)"
        else:
            n_faces = int(faces[r.label]) if 0 <= r.label < faces.size else 0
            m_rel = delineation_volume_rel_sd(n_faces, r.n_voxels)
            m_note = "delineation within half a voxel (dose taken as 1/m)"
        meth = None
        if dose is not None and rel_unc is not None:
            mask = lab == r.label
            w = None if density is None else np.asarray(density)[mask]
            meth = method_rel_sd(np.asarray(dose)[mask], np.asarray(rel_unc)[mask], w)
        elif method_rel_by_name is not None:
            meth = method_rel_by_name.get(r.name)
        out[r.name] = dose_uncertainty(r.name, r.method, value, settings, tia=tia, mass_rel_sd=m_rel,
                                       method_rel=meth, method_note=method_note, recovery_rel=rc,
                                       recovery_in_fit=rc_in_fit, mass_note=m_note)
    return out


# --------------------------------------------------------------------------- the check by resampling
def resample_dose(times_s, true_activities_bq, half_life_s: float, model: str, mass_g: float,
                  settings: UncertaintySettings, *, method_rel: float = 0.0, n: int = 2000, seed: int = 0,
                  dose_per_bq_s_g: float = 1.0) -> np.ndarray:
    """Monte Carlo resampling of the chain: draw every input, redo the fit and the dose.

    Each draw: a calibration factor ``Q ~ N(1, u_Q)`` and a recovery coefficient ``RC ~ N(1,
    u_RC)`` shared by all time points (one per time point with ``settings.recovery_per_time_point``),
    independent noise ``A_i (1 + u_A e_i)``, measured activities
    ``A_i' = A_i (1 + u_A e_i) / (Q RC)``; the TIA by the fit of ``model`` weighted with the stated
    noise; the mass ``m ~ N(m, u_m m)``; a method factor ``N(1, u_method)``; the dose
    ``TIA * dose_per_bq_s_g / m``.

    Returns:
        The ``n`` resampled doses (units of ``dose_per_bq_s_g``); draws whose fit failed are left out.
    """
    from persodose.kinetics.fit import fit_tac
    from persodose.kinetics.models import Trapezoid

    rng = np.random.default_rng(seed)
    t = np.asarray(times_s, dtype=float)
    a0 = np.asarray(true_activities_bq, dtype=float)
    s = settings
    u_q, u_rc, u_a, u_m = (s.calibration or 0.0, s.recovery or 0.0, s.activity or 0.0, s.mass or 0.0)
    doses = []
    for _ in range(int(n)):
        q = 1.0 + u_q * rng.standard_normal()
        rc = 1.0 + u_rc * rng.standard_normal(t.size if s.recovery_per_time_point else 1)
        a = a0 * (1.0 + u_a * rng.standard_normal(t.size)) / (q * rc)
        if model == "trapezoid":
            tia = float(Trapezoid(half_life_s).integral(t, a))
        else:
            sigma = np.maximum(np.abs(a), 1e-12) * (u_a if u_a > 0 else 1.0)
            f = fit_tac(t, a, model, half_life_s, sigma=sigma if u_a > 0 else None)
            if not f.converged:
                continue
            tia = f.tia_bq_s
        m = mass_g * (1.0 + u_m * rng.standard_normal())
        doses.append(tia * dose_per_bq_s_g / m * (1.0 + method_rel * rng.standard_normal()))
    return np.asarray(doses)


__all__ = ["COMPONENTS", "LIMITATIONS", "UncertaintySettings", "Component", "DoseUncertainty", "tia_relative_sd",
           "boundary_faces", "delineation_volume_rel_sd", "method_rel_sd", "dose_uncertainty",
           "organ_uncertainties", "resample_dose"]
