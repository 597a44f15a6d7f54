"""Time-integrated activity maps and organ-level TIA from a series of quantitative images.

Inputs are grids of activity per voxel (``Kind.ACTIVITY``, Bq) or activity concentration
(``Kind.ACTIVITY_CONCENTRATION``, Bq/mL, converted with the voxel volume), NOT decay
corrected, one per time point, all on one geometry (co-register and resample them first, see
:mod:`persodose.kinetics.register`), with their acquisition times in s after injection.
SPECT counts must be calibrated to activity before (``Kind.COUNTS`` is refused).

Methods of :func:`tia_map`:

* ``"mono"`` / ``"auto"``: voxel-wise mono-exponential fit with trapezoid fallback
  (:func:`persodose.kinetics.fit.fit_voxels`); ``"auto"`` uses it with >= 2 time points
  and ``"hanscheid"`` with a single one;
* ``"trapezoid"``; ``"biexp_uptake"``, ``"biexp"`` (voxel-wise bi-exponential fits);
* ``"hanscheid"`` (one time point; Hänscheid et al., J Nucl Med 59 (2018) 75);
* ``"stp"`` (one time point and a population effective half-life; Madsen et al., Med Phys
  45 (2018) 2318; Hou et al., J Nucl Med 62 (2021) 1006);
* ``"hybrid"`` (optional; needs labels): the voxel-wise map (mono with trapezoid fallback)
  rescaled inside each labelled organ so that its sum equals the organ-level TIA fitted
  with AICc model selection (:func:`organ_tia`); the voxel map supplies the shape, the
  organ fit the total.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from persodose.errors import InputError, require_finite
from persodose.grid import Grid, Kind
from persodose.kinetics.fit import (DEFAULT_CANDIDATES, FitResult, fit_tac, fit_voxels, select_model)
from persodose.kinetics.models import Hanscheid, SingleTimePoint, Trapezoid, decay_constant_per_s
from persodose.kinetics.quality import (FitQuality, fit_result_quality, no_activity_quality, single_point_quality,
                                        trapezoid_quality)

METHODS = ("auto", "mono", "trapezoid", "biexp_uptake", "biexp", "hanscheid", "stp", "hybrid")


def _check_times(times_s: Sequence[float], n_frames: int) -> np.ndarray:
    t = np.asarray(list(times_s), dtype=float).reshape(-1)
    if t.size != n_frames:
        raise InputError(f"{n_frames} frame(s) but {t.size} time(s)")
    if not np.all(np.isfinite(t)):
        raise InputError(f"frame times contain NaN or infinity: {t.tolist()}")
    if np.any(t < 0):
        raise InputError(f"negative frame time(s) {t[t < 0].tolist()} s: times must be after injection")
    if t.size > 1 and np.any(np.diff(t) <= 0):
        raise InputError(f"frame times must be strictly increasing (no duplicates), got {t.tolist()} s")
    return t


def _activities(frames: Sequence[Grid]) -> tuple[Grid, np.ndarray]:
    """Check the frames and stack them as activity per voxel, Bq, shape (n_t, nz, ny, nx)."""
    frames = list(frames)
    if not frames:
        raise InputError("no frames given")
    ref = frames[0]
    out = np.empty((len(frames),) + ref.shape, dtype=np.float64)
    for i, fr in enumerate(frames):
        if not isinstance(fr, Grid):
            raise InputError(f"frame {i} is not a Grid")
        ref.require_same_geometry(fr, f"frame 0 and frame {i}")
        if fr.kind not in (Kind.ACTIVITY, Kind.ACTIVITY_CONCENTRATION):
            raise InputError(f"frame {i} is {fr.kind.value}: activity (Bq) or activity concentration (Bq/mL) "
                             f"is needed (calibrate counts first)")
        act = fr.to_activity().array
        require_finite(act, f"frame {i}")
        out[i] = act
    return ref, out


def _check_labels(labels: Grid | None, ref: Grid) -> np.ndarray | None:
    if labels is None:
        return None
    if not isinstance(labels, Grid):
        raise InputError("labels must be a Grid")
    ref.require_same_geometry(labels, "frames and labels")
    lab = np.asarray(labels.array)
    if lab.dtype.kind == "f":
        require_finite(lab, "label map")
        if np.any(lab != np.round(lab)):
            raise InputError("label map holds non-integer values")
    lab = lab.astype(np.int64)
    if np.any(lab < 0):
        raise InputError("label map holds negative labels")
    return lab


# ----------------------------------------------------------------------------- organ level
@dataclass
class OrganTIA:
    """Organ-level TIA of one label.

    Attributes:
        name, label: organ name and label value.
        times_s: time points, s.
        activities_bq: organ activity at each time point, Bq.
        table: one dict per candidate model (AICc, parameters, TIA; see
            :func:`persodose.kinetics.fit.select_model`).
        chosen_model: the model used for ``tia_bq_s``.
        tia_bq_s: TIA, Bq s; ``tia_sd_bq_s``: its uncertainty (NaN when unknown).
        fit: the chosen fit (None for trapezoid / single-point / empty organs).
        note: how the model was chosen when AICc could not be used.
        n_voxels: number of voxels of the label.
        quality: the :class:`~persodose.kinetics.quality.FitQuality` of the TIA (verdict
            ``"good"`` / ``"poor"`` / ``"unreliable"`` and its reasons); set by
            :func:`organ_tac_tia` for every organ, whichever method produced the TIA.
    """

    name: str
    label: int
    times_s: list[float]
    activities_bq: list[float]
    table: list[dict]
    chosen_model: str
    tia_bq_s: float
    tia_sd_bq_s: float
    fit: FitResult | None = None
    note: str = ""
    n_voxels: int = 0
    quality: FitQuality | None = None

    @property
    def verdict(self) -> str:
        """``quality.verdict`` (``"good"``, ``"poor"``, ``"unreliable"``); ``""`` when unchecked."""
        return self.quality.verdict if self.quality is not None else ""

    def to_dict(self) -> dict:
        return {"name": self.name, "label": self.label, "n_voxels": self.n_voxels, "times_s": self.times_s,
                "activities_bq": self.activities_bq, "chosen_model": self.chosen_model,
                "tia_bq_s": self.tia_bq_s,
                "tia_sd_bq_s": None if math.isnan(self.tia_sd_bq_s) else self.tia_sd_bq_s,
                "note": self.note, "fits": self.table,
                "quality": None if self.quality is None else self.quality.to_dict()}


def organ_tac_tia(t_s, a_bq, half_life_s: float, candidates=DEFAULT_CANDIDATES, sigma=None,
                  name: str = "organ", label: int = 0) -> OrganTIA:
    """TIA of one organ curve: AICc selection, with fallbacks for too few points.

    With too few points for any candidate (``n <= K + 1`` for all), a mono-exponential is
    fitted without selection when ``n >= 2`` (falling back to the trapezoid if it does not
    converge or is slower than physical decay), and Hänscheid's formula is used for ``n = 1``.

    The result's ``quality`` (:class:`~persodose.kinetics.quality.FitQuality`) checks the
    chosen curve against the data (:mod:`persodose.kinetics.quality`).
    """
    res = _organ_tac_tia(t_s, a_bq, half_life_s, candidates, sigma, name, label)
    res.quality = _quality_of(res, half_life_s)
    return res


def _quality_of(res: OrganTIA, half_life_s: float) -> FitQuality:
    """The :class:`FitQuality` of whichever method produced ``res.tia_bq_s``."""
    t, a = res.times_s, res.activities_bq
    if res.fit is not None:
        return fit_result_quality(res.fit, t, a)
    if res.chosen_model == "trapezoid":
        return trapezoid_quality(t, a, half_life_s)
    if res.chosen_model == "hanscheid":
        return single_point_quality(t, a, half_life_s, "hanscheid")
    return no_activity_quality(t, half_life_s)


def _organ_tac_tia(t_s, a_bq, half_life_s, candidates, sigma, name, label) -> OrganTIA:
    t = np.asarray(t_s, dtype=float)
    a = np.asarray(a_bq, dtype=float)
    base = dict(name=name, label=int(label), times_s=[float(v) for v in t], activities_bq=[float(v) for v in a])
    if not np.any(a > 0):
        return OrganTIA(**base, table=[], chosen_model="none", tia_bq_s=0.0, tia_sd_bq_s=0.0,
                        note="no positive activity")
    try:
        best, table = select_model(t, a, half_life_s, candidates, sigma)
        return OrganTIA(**base, table=table, chosen_model=best.model, tia_bq_s=best.tia_bq_s,
                        tia_sd_bq_s=best.tia_sd_bq_s, fit=best, note="lowest AICc")
    except InputError as exc:
        note = str(exc)
    if t.size == 1:
        return OrganTIA(**base, table=[], chosen_model="hanscheid", tia_bq_s=float(Hanscheid().tia(t[0], a[0])),
                        tia_sd_bq_s=float("nan"), note="single time point: Hänscheid")
    if np.all(a > 0):
        f = fit_tac(t, a, "mono", half_life_s, sigma)
        lam_p = decay_constant_per_s(half_life_s)
        if f.converged and f.params[1] > lam_p * (1 + 1e-6):
            return OrganTIA(**base, table=[f.as_row()], chosen_model="mono", tia_bq_s=f.tia_bq_s,
                            tia_sd_bq_s=f.tia_sd_bq_s, fit=f,
                            note=f"mono-exponential without AICc selection ({note})")
    tr = float(Trapezoid(half_life_s).integral(t, a))
    return OrganTIA(**base, table=[], chosen_model="trapezoid", tia_bq_s=tr, tia_sd_bq_s=float("nan"),
                    note=f"trapezoid with physical tail ({note})")


def organ_tia(frames: Sequence[Grid], times_s: Sequence[float], labels: Grid, names: Mapping[int, str],
              half_life_s: float, candidates=DEFAULT_CANDIDATES, rel_sigma: float | None = None
              ) -> dict[str, OrganTIA]:
    """Organ-level TIA: sum the activity in each label at each time point and fit.

    Args:
        frames: activity (Bq) or activity-concentration (Bq/mL) grids, one per time point.
        times_s: their times, s after injection (strictly increasing).
        labels: label map on the frames' geometry.
        names: label value -> organ name (labels not listed are ignored).
        half_life_s: physical half-life, s.
        candidates: models for AICc selection.
        rel_sigma: optional relative standard deviation of the organ activities (e.g. 0.05);
            relative weights with a residual-estimated scale otherwise.

    Returns:
        organ name -> :class:`OrganTIA` (labels absent from the map are left out).
    """
    ref, act = _activities(frames)
    t = _check_times(times_s, act.shape[0])
    lab = _check_labels(labels, ref)
    decay_constant_per_s(half_life_s)
    nl = int(lab.max()) + 1
    sums = np.stack([np.bincount(lab.ravel(), weights=act[i].ravel(), minlength=nl) for i in range(t.size)])
    nvox = np.bincount(lab.ravel(), minlength=nl)
    out: dict[str, OrganTIA] = {}
    for value, name in names.items():
        v = int(value)
        if v <= 0 or v >= nl or nvox[v] == 0:
            continue
        a = sums[:, v]
        sigma = None if rel_sigma is None else np.maximum(np.abs(a), 1e-12) * float(rel_sigma)
        res = organ_tac_tia(t, a, half_life_s, candidates, sigma, name=str(name), label=v)
        res.n_voxels = int(nvox[v])
        out[str(name)] = res
    return out


def hybrid_rescale(voxel_tia: Grid, labels: Grid, organs: Mapping[str, OrganTIA]) -> tuple[Grid, dict[str, float]]:
    """Rescale a voxel TIA map inside each organ to the organ-level TIA (optional step).

    Returns:
        ``(rescaled grid, organ -> factor)``; organs whose voxel sum is not positive keep
        their voxels unchanged (factor NaN).
    """
    voxel_tia.require_same_geometry(labels, "TIA map and labels")
    lab = np.asarray(labels.array).astype(np.int64)
    arr = np.asarray(voxel_tia.array, dtype=np.float64).copy()
    nl = int(lab.max()) + 1
    sums = np.bincount(lab.ravel(), weights=arr.ravel(), minlength=nl)
    factor = np.ones(nl)
    factors: dict[str, float] = {}
    for name, res in organs.items():
        v = res.label
        if 0 < v < nl and sums[v] > 0:
            factor[v] = res.tia_bq_s / sums[v]
            factors[name] = float(factor[v])
        else:
            factors[name] = float("nan")
    arr *= factor[lab]
    return voxel_tia.with_array(arr, Kind.TIA), factors


# ----------------------------------------------------------------------------- maps
def tia_map(frames: Sequence[Grid], times_s: Sequence[float], half_life_s: float, method: str = "auto",
            labels: Grid | None = None, *, names: Mapping[int, str] | None = None, first_segment: str = "zero",
            effective_half_life_s: float | None = None) -> tuple[Grid, dict]:
    """Voxel-wise time-integrated activity map.

    Args:
        frames: one activity (Bq) or activity-concentration (Bq/mL) grid per time point, not
            decay corrected, same geometry.
        times_s: acquisition times, s after injection (mid-frame), strictly increasing.
        half_life_s: physical half-life, s.
        method: one of :data:`METHODS` (see module docstring).
        labels: optional label map (same geometry): per-label totals go into the report; needed
            for ``"hybrid"``.
        names: label value -> name (default ``label_<k>`` for every label > 0).
        first_segment: trapezoid first segment, ``"zero"`` (default) or ``"constant"``.
        effective_half_life_s: population effective half-life for ``"stp"``, s.

    Returns:
        ``(Grid of Kind.TIA in Bq s per voxel, report dict)``.

    Raises:
        GeometryError: frames (or labels) on different geometries.
        InputError: wrong kinds, NaN, negative/unsorted/duplicated times, unknown method.
    """
    if method not in METHODS:
        raise InputError(f"unknown TIA method {method!r}: use one of {', '.join(METHODS)}")
    decay_constant_per_s(half_life_s)
    ref, act = _activities(frames)
    t = _check_times(times_s, act.shape[0])
    lab = _check_labels(labels, ref)
    n = t.size
    used = method
    if method == "auto":
        used = "mono" if n >= 2 else "hanscheid"
    report: dict = {"method": method, "method_used": used, "n_time_points": n, "times_s": t.tolist(),
                    "half_life_s": float(half_life_s), "first_segment": first_segment}
    if used in ("hanscheid", "stp"):
        if n != 1:
            raise InputError(f"method {used!r} takes exactly one time point, got {n}")
        if used == "hanscheid":
            tia = Hanscheid().tia(t[0], act[0])
            report["formula"] = "A(t)*2t/ln2 (Hanscheid et al., J Nucl Med 59 (2018) 75)"
        else:
            if effective_half_life_s is None:
                raise InputError("method 'stp' needs effective_half_life_s (population effective half-life, s)")
            tia = SingleTimePoint(effective_half_life_s, half_life_s).tia(t[0], act[0])
            report["formula"] = "A(t)*exp(l*t)/l, l = ln2/T_eff (Madsen et al. 2018; Hou et al. 2021)"
            report["effective_half_life_s"] = float(effective_half_life_s)
    else:
        voxel_model = "mono" if used == "hybrid" else used
        vf = fit_voxels(t, act, half_life_s, voxel_model, first_segment)
        tia = vf.tia_bq_s
        report["voxel_models"] = vf.counts()
        if used == "hybrid":
            if lab is None:
                raise InputError("method 'hybrid' needs a label map")
            nm = names if names is not None else {int(v): f"label_{int(v)}" for v in np.unique(lab) if v > 0}
            organs = organ_tia(frames, t, labels, nm, half_life_s)
            g, factors = hybrid_rescale(ref.with_array(tia, Kind.TIA), labels, organs)
            tia = g.array
            report["organs"] = {k: v.to_dict() for k, v in organs.items()}
            report["hybrid_factors"] = factors
    out = ref.with_array(np.asarray(tia, dtype=np.float64), Kind.TIA, "Bq s")
    report["total_tia_bq_s"] = out.total()
    if lab is not None:
        nl = int(lab.max()) + 1
        s = np.bincount(lab.ravel(), weights=out.array.ravel(), minlength=nl)
        nm = names if names is not None else {int(v): f"label_{int(v)}" for v in np.unique(lab) if v > 0}
        report["label_tia_bq_s"] = {str(n_): float(s[int(v)]) for v, n_ in nm.items() if 0 < int(v) < nl}
    return out, report


def dynamic_tia_map(activities: Sequence[Grid], mid_times_s: Sequence[float], durations_s: Sequence[float],
                    half_life_s: float) -> tuple[Grid, dict]:
    """Time-integrated activity of dynamic frames, each integrated over its own interval.

    Each frame's activity (Bq per voxel, decay correction undone) is its frame average,
    integrated exactly over the frame; a linear rise from the injection to the first frame;
    physical decay after the last (:func:`persodose.kinetics.fit.integrate_dynamic`; the
    SINFONIA FDG study's dynamic PET).

    Args:
        activities: activity at each frame, Bq per voxel, on one grid.
        mid_times_s: mid-frame times after injection, s; durations_s: frame durations, s.
        half_life_s: physical half-life, s.

    Returns:
        ``(tia_grid, report)``: Bq s per voxel, and the parts of the integral (Bq s).

    Raises:
        InputError: a frame without duration, or overlapping frames.
    """
    from persodose.kinetics.fit import integrate_dynamic

    times = np.asarray(mid_times_s, dtype=np.float64)
    durations = np.asarray(durations_s, dtype=np.float64)
    if np.any(durations <= 0):
        raise InputError("dynamic integration needs every frame's duration (ActualFrameDuration)")
    starts = times - durations / 2.0
    if np.any(starts[1:] < starts[:-1] + durations[:-1] - 1e-3):
        raise InputError("dynamic frames overlap: integrate them with another --tia-method")
    stack = np.stack([a.array.astype(np.float64) for a in activities])
    parts = integrate_dynamic(starts, durations, stack, half_life_s)
    tia = activities[0].with_array(np.asarray(parts.total, dtype=np.float32), Kind.TIA)
    report = {"method": "dynamic", "method_used": "dynamic (frame integrals, physical-decay tail)",
              "n_time_points": len(times), "times_s": times.tolist(),
              "parts_bq_s": {"before_first": float(np.sum(parts.before_first)), "frames": float(np.sum(parts.frames)),
                             "gaps": float(np.sum(parts.gaps)), "tail": float(np.sum(parts.tail))}}
    return tia, report


__all__ = ["METHODS", "dynamic_tia_map", "OrganTIA", "organ_tac_tia", "organ_tia", "hybrid_rescale", "tia_map"]
